//! Filter guests for the integration tests: the standard filters and the test guests of the
//! filters workspace, built once per test binary for `wasm32-unknown-unknown`.
//!
//! The hub accepts the core modules cargo writes (it turns them into components itself), so
//! the tests need nothing but cargo. The filters workspace has its own target directory, so
//! this nested build never waits for the lock of the build that runs the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A guest crate of the filters workspace.
#[derive(Clone, Copy, Debug)]
pub enum Guest {
    /// `tern-filter-sql92`: config is a selector.
    Sql92,
    /// `tern-filter-router`: config is a route table.
    Router,
    /// `tern-filter-pass`: keeps every message.
    Pass,
    /// `tern-filter-hostile`: misbehaves as its config says.
    Hostile,
}

impl Guest {
    fn artifact(self) -> &'static str {
        match self {
            Guest::Sql92 => "tern_filter_sql92.wasm",
            Guest::Router => "tern_filter_router.wasm",
            Guest::Pass => "tern_filter_pass.wasm",
            Guest::Hostile => "tern_filter_hostile.wasm",
        }
    }
}

fn filters_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("filters")
}

/// Path of the built core module of `guest` (builds every guest on first use).
pub fn wasm(guest: Guest) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let filters = filters_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&filters)
            .env_remove("CARGO_TARGET_DIR")
            .args([
                "build",
                "--target-dir",
                "target",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "-p",
                "tern-filter-sql92",
                "-p",
                "tern-filter-router",
                "-p",
                "tern-filter-pass",
                "-p",
                "tern-filter-hostile",
            ])
            .status()
            .expect("run cargo to build the filter guests");
        assert!(
            status.success(),
            "building the filter guests failed: {status}"
        );
        filters.join("target/wasm32-unknown-unknown/release")
    });
    let path = dir.join(guest.artifact());
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A TOML string literal of `path` (for `wasm = ...`).
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}
