//! Turning bytes into a compiled, validated [`Component`]: recognising the input (component,
//! wit-bindgen core module, precompiled `.cwasm`), componentizing core modules, compiling
//! once into the artifact cache, and checking that the result implements the filter world.
//!
//! Cache: `<cache_dir>/<key>.cwasm` where `key` is the SHA-256 of [`CACHE_FINGERPRINT`] and
//! the SHA-256 of the bytes the operator gave. The fingerprint names the wasmtime version,
//! the target and our engine settings; wasmtime itself also refuses an artifact built by
//! another version or configuration, and then the filter is compiled again and the entry
//! replaced. Entries are written to a temporary file and renamed, so a crash never leaves
//! a truncated artifact under a final name.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime::{Config, Engine, Precompiled};

use crate::filter_host::{FilterError, HostInner};

/// The one interface a filter may import.
pub(crate) const HOST_INTERFACE: &str = "tern:filter/host@0.2.0";
/// The functions a filter must export.
const EXPORTS: [&str; 2] = ["init", "process"];

/// With the target architecture and OS, changes whenever something that affects compiled
/// code changes: the wasmtime version (pinned in the workspace manifest) and
/// [`engine_config`]. Bump the `/N` when changing `engine_config`.
const CACHE_FINGERPRINT: &str = "tern-filter-cache/1;wasmtime=48.0.8";

/// Environment variable that makes the engine write `/tmp/perf-<pid>.map` for `perf`.
const PERFMAP_ENV: &str = "TERN_FILTER_PERFMAP";

/// The engine settings of every filter host and of [`precompile`], so `.cwasm` files made by
/// `tern filter compile` load in the hub.
pub(crate) fn engine_config(target: Option<&str>) -> Result<Config, FilterError> {
    let mut config = Config::new();
    // The synchronous call path does not need the component-model-async machinery; leaving
    // it on costs ~400 ns per call (FILTERS.md).
    config.concurrency_support(false);
    config.epoch_interruption(true);
    // On-demand instance allocation (the default) with copy-on-write memory images; see
    // `filter.rs` for why not the pooling allocator.
    config.memory_init_cow(true);
    // `perf` names the functions of filters (guests built with their name section) when
    // this is set: `TERN_FILTER_PERFMAP=1 perf record ...`. Compiled code is unchanged.
    if std::env::var_os(PERFMAP_ENV).is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if let Some(target) = target {
        config
            .target(target)
            .map_err(|e| FilterError::Engine(format!("target {target:?}: {e}")))?;
    }
    Ok(config)
}

/// SHA-256 of a filter file's bytes: identifies a filter version for the cache and for
/// reuse across redeploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Digest(pub(crate) [u8; 32]);

impl Digest {
    pub(crate) fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The cache file name for this input on this engine.
    pub(crate) fn cache_file(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            CACHE_FINGERPRINT,
            std::env::consts::ARCH,
            std::env::consts::OS,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hasher.update(self.0);
        let key: [u8; 32] = hasher.finalize().into();
        let mut name = String::with_capacity(64 + 6);
        for byte in key {
            name.push_str(&format!("{byte:02x}"));
        }
        name.push_str(".cwasm");
        name
    }
}

/// What the operator gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// A WebAssembly component.
    Component,
    /// A core module (built by wit-bindgen, with its `component-type` custom section).
    CoreModule,
    /// A `.cwasm` made by [`precompile`] (or a previous cache entry).
    Precompiled,
}

fn classify(bytes: &[u8]) -> Result<Input, FilterError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];
    match Engine::detect_precompiled(bytes) {
        Some(Precompiled::Component) => return Ok(Input::Precompiled),
        Some(Precompiled::Module) => return Err(FilterError::PrecompiledModule),
        None => {}
    }
    match (bytes.get(..4), bytes.get(4..8)) {
        (Some(magic), Some(version)) if magic == MAGIC => {
            if version == CORE_VERSION {
                Ok(Input::CoreModule)
            } else if version == COMPONENT_VERSION {
                Ok(Input::Component)
            } else {
                Err(FilterError::NotWasm)
            }
        }
        _ => Err(FilterError::NotWasm),
    }
}

/// Loads `bytes` (whose digest is `digest`) as a validated filter component, from the cache
/// when it holds it, compiling it (once) otherwise.
pub(crate) fn load(
    host: &HostInner,
    bytes: &[u8],
    digest: &Digest,
) -> Result<Component, FilterError> {
    let input = classify(bytes)?;
    let path = host.cache_dir.join(digest.cache_file());
    let component = match input {
        Input::Precompiled => {
            if !path.exists() {
                write_atomically(&host.cache_dir, &path, bytes)?;
            }
            deserialize_cached(&host.engine, &path)?
        }
        Input::Component | Input::CoreModule => {
            let cached = if path.exists() {
                match deserialize_cached(&host.engine, &path) {
                    Ok(component) => Some(component),
                    Err(err) => {
                        tracing::warn!(
                            path = %path.display(),
                            cause = %err,
                            "stale filter cache entry; compiling again"
                        );
                        None
                    }
                }
            } else {
                None
            };
            match cached {
                Some(component) => component,
                None => compile_into_cache(host, bytes, input, &path)?,
            }
        }
    };
    check_world(&host.engine, &component)?;
    Ok(component)
}

#[cfg(feature = "compiler")]
fn compile_into_cache(
    host: &HostInner,
    bytes: &[u8],
    input: Input,
    path: &Path,
) -> Result<Component, FilterError> {
    let component_bytes = match input {
        Input::CoreModule => std::borrow::Cow::Owned(componentize(bytes)?),
        Input::Component | Input::Precompiled => std::borrow::Cow::Borrowed(bytes),
    };
    host.compiles.fetch_add(1, Ordering::Relaxed);
    let artifact = host
        .engine
        .precompile_component(&component_bytes)
        .map_err(|e| FilterError::Compile(format!("{e:?}")))?;
    match write_atomically(&host.cache_dir, path, &artifact) {
        Ok(()) => deserialize_cached(&host.engine, path),
        Err(err) => {
            // Still serve the filter; only the next start pays for compiling again.
            tracing::warn!(cause = %err, "cannot write the filter cache; compiling in memory");
            host.compiles.fetch_add(1, Ordering::Relaxed);
            Component::new(&host.engine, &component_bytes)
                .map_err(|e| FilterError::Compile(format!("{e:?}")))
        }
    }
}

#[cfg(not(feature = "compiler"))]
fn compile_into_cache(
    _host: &HostInner,
    _bytes: &[u8],
    _input: Input,
    _path: &Path,
) -> Result<Component, FilterError> {
    Err(FilterError::CompilerMissing)
}

/// A core module built by wit-bindgen, wrapped into a component by wit-component.
#[cfg(feature = "compiler")]
fn componentize(module: &[u8]) -> Result<Vec<u8>, FilterError> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| FilterError::Componentize(format!("{e:#}")))
}

/// Compiles `wasm` (a component or a wit-bindgen core module) for `target` (a target
/// triple; `None` = this machine) with the hub's engine settings, for
/// `tern filter compile`. The output loads in a hub of the same version and target, also
/// one built without the `compiler` feature.
#[cfg(feature = "compiler")]
pub fn precompile(wasm: &[u8], target: Option<&str>) -> Result<Vec<u8>, FilterError> {
    let engine = Engine::new(&engine_config(target)?).map_err(|e| {
        let hint = if target.is_some() && !cfg!(feature = "cross-compile") {
            " (this build compiles for its own architecture only; other targets need the \
             `cross-compile` feature)"
        } else {
            ""
        };
        FilterError::Engine(format!("{e:#}{hint}"))
    })?;
    let component = match classify(wasm)? {
        Input::Component => std::borrow::Cow::Borrowed(wasm),
        Input::CoreModule => std::borrow::Cow::Owned(componentize(wasm)?),
        Input::Precompiled => {
            return Err(FilterError::Compile("already precompiled".into()));
        }
    };
    // Check the world with a throw-away compile for this machine (a CLI can afford it): a
    // wrong filter is refused here, not on the gateway.
    let host_engine =
        Engine::new(&engine_config(None)?).map_err(|e| FilterError::Engine(format!("{e:#}")))?;
    let checked = Component::new(&host_engine, &component)
        .map_err(|e| FilterError::Compile(format!("{e:?}")))?;
    check_world(&host_engine, &checked)?;
    engine
        .precompile_component(&component)
        .map_err(|e| FilterError::Compile(format!("{e:?}")))
}

/// Without a compiler there is nothing to precompile with.
#[cfg(not(feature = "compiler"))]
pub fn precompile(_wasm: &[u8], _target: Option<&str>) -> Result<Vec<u8>, FilterError> {
    Err(FilterError::CompilerMissing)
}

/// Checks a compiled component's imports and exports against the filter world. The exact
/// function signatures are checked when the instance is pre-linked.
fn check_world(engine: &Engine, component: &Component) -> Result<(), FilterError> {
    let ty = component.component_type();
    let imports = ty.imports(engine).filter_map(|(name, item)| match item.ty {
        // Type imports (the `level` enum, the `needs` flags) grant nothing.
        ComponentItem::Type(_) | ComponentItem::Resource(_) => None,
        _ => Some(name.to_owned()),
    });
    let exports = ty.exports(engine).map(|(name, item)| {
        (
            name.to_owned(),
            matches!(item.ty, ComponentItem::ComponentFunc(_)),
        )
    });
    world_problems(imports, exports)
}

/// Every import other than [`HOST_INTERFACE`] and every missing export is a problem; all of
/// them are listed in one error.
fn world_problems(
    imports: impl Iterator<Item = String>,
    exports: impl Iterator<Item = (String, bool)>,
) -> Result<(), FilterError> {
    let mut problems = Vec::new();
    for name in imports {
        if name != HOST_INTERFACE {
            problems.push(format!(
                "imports `{name}` (a filter may import only `{HOST_INTERFACE}`)"
            ));
        }
    }
    let exports: Vec<(String, bool)> = exports.collect();
    for wanted in EXPORTS {
        match exports.iter().find(|(name, _)| name == wanted) {
            Some((_, true)) => {}
            Some((_, false)) => problems.push(format!("export `{wanted}` is not a function")),
            None => problems.push(format!("does not export `{wanted}`")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(FilterError::World(problems.join("; ")))
    }
}

/// Writes `bytes` to `path` through a temporary file in `dir` and a rename.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), FilterError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let io = |path: &Path| {
        let path: PathBuf = path.to_owned();
        move |source| FilterError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        FilterError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// Loads a compiled artifact from the cache directory.
#[expect(
    unsafe_code,
    reason = "wasmtime cannot validate precompiled machine code; see the SAFETY comment"
)]
fn deserialize_cached(engine: &Engine, path: &Path) -> Result<Component, FilterError> {
    // SAFETY: `Component::deserialize_file` trusts the file to be an artifact produced by
    // wasmtime. Every file it reads here is in the hub's own cache directory, written only by
    // `load` (via `write_atomically`, never partially): either compiled by this host's engine
    // (same `engine_config`) or a `.cwasm` the operator configured, made by `precompile` with
    // the same settings — the operator's artifacts are trusted like the hub binary itself.
    // Wasmtime checks the artifact's header (version, target, engine flags) and refuses a
    // mismatch with an error, which we report or answer by compiling again.
    unsafe { Component::deserialize_file(engine, path) }
        .map_err(|e| FilterError::Deserialize(format!("{}: {e}", path.display())))
}

/// Reads a filter file; the error names the path.
pub(crate) fn read_wasm(path: &Path) -> Result<Vec<u8>, FilterError> {
    std::fs::read(path).map_err(|source| FilterError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_recognised_by_their_header() {
        assert!(matches!(
            classify(b"\0asm\x01\0\0\0"),
            Ok(Input::CoreModule)
        ));
        assert!(matches!(
            classify(b"\0asm\x0d\0\x01\0"),
            Ok(Input::Component)
        ));
        assert!(matches!(
            classify(b"\0asm\x02\0\0\0"),
            Err(FilterError::NotWasm)
        ));
        assert!(matches!(classify(b"\x7fELF"), Err(FilterError::NotWasm)));
        assert!(matches!(classify(b""), Err(FilterError::NotWasm)));
    }

    #[test]
    fn world_problems_name_every_foreign_import_and_missing_export() {
        let ok = world_problems(
            [HOST_INTERFACE.to_owned()].into_iter(),
            [("init".to_owned(), true), ("process".to_owned(), true)].into_iter(),
        );
        assert!(ok.is_ok());
        let err = world_problems(
            ["wasi:filesystem/types@0.2.0".to_owned()].into_iter(),
            [("init".to_owned(), false)].into_iter(),
        )
        .expect_err("foreign world accepted");
        let text = err.to_string();
        for part in [
            "imports `wasi:filesystem/types@0.2.0`",
            "export `init` is not a function",
            "does not export `process`",
        ] {
            assert!(text.contains(part), "{text}");
        }
    }

    #[cfg(feature = "compiler")]
    #[test]
    fn precompile_refuses_an_unknown_target() {
        let err = precompile(b"\0asm\x0d\0\x01\0", Some("no-such-triple")).expect_err("target");
        assert!(matches!(err, FilterError::Engine(_)), "{err}");
    }

    #[test]
    fn cache_names_depend_on_the_bytes() {
        let a = Digest::of(b"a").cache_file();
        assert_ne!(a, Digest::of(b"b").cache_file());
        assert_eq!(a, Digest::of(b"a").cache_file());
        assert!(a.ends_with(".cwasm") && a.len() == 64 + 6);
    }
}
