//! `cargo xtask`: the project's one entry point for checks, fuzzing and benchmarks.
//!
//! ```text
//! cargo xtask test [--quick]   prerequisites, fmt, clippy, rustdoc, no_std builds, tests, short fuzz runs
//! cargo xtask build-filters [--out DIR]
//!                              filter guests as components in DIR (default target/filters)
//! cargo xtask fuzz [SECS]      every fuzz target for SECS seconds each (default 60)
//! cargo xtask bench [ARGS..]   criterion benchmarks (`cargo bench --workspace --bench '*' -- ARGS`)
//! cargo xtask dist [--target T ..]
//!                              release archives of `tern` for the host, aarch64 and armv7
//!                              Linux in target/packages ([`dist`])
//! cargo xtask footprint [--clients N,N..] [--binary PATH]
//!                              RSS of a running hub, idle and with idle clients ([`footprint`])
//! ```
//!
//! `--quick` skips clippy, rustdoc and fuzzing. Every step prints a header and its duration; the first
//! failing step stops the run with a non-zero exit status that names it.
//!
//! Prerequisites are installed when that is possible and stop the run with a message naming
//! what is missing otherwise: the cross targets (via `rustup target add`), the mosquitto
//! broker and command-line clients used by the interop tests (via `apt-get` when running as
//! root), and `cargo-fuzz` (via `cargo install`) before fuzzing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

mod dist;
mod footprint;

/// Targets the no_std and wasm builds need (also listed in `rust-toolchain.toml`).
const TARGETS: [&str; 3] = [
    "thumbv7em-none-eabihf",
    "riscv32imc-unknown-none-elf",
    "wasm32-unknown-unknown",
];
/// Executables the integration tests run, and where apt finds them.
/// Flash budget of the firmware client's size-check image (`.text`, bytes): connect, QoS 1
/// publish, subscribe on a Cortex-M4F at opt-level "z" with LTO.
const FIRMWARE_TEXT_BUDGET: u64 = 12 * 1024;
const MOSQUITTO_TOOLS: [&str; 3] = ["mosquitto", "mosquitto_pub", "mosquitto_sub"];
const MOSQUITTO_PACKAGES: [&str; 2] = ["mosquitto", "mosquitto-clients"];
/// Seconds each fuzz target runs inside `cargo xtask test`.
const TEST_FUZZ_SECS: u64 = 30;
/// Default seconds per target for `cargo xtask fuzz`.
const FUZZ_SECS: u64 = 60;
/// Crates of the filters workspace whose tests run on the host (`cargo xtask test`).
const FILTER_NATIVE_CRATES: [&str; 7] = [
    "tern-sql92",
    "tern-filter-abi",
    "tern-filter",
    "tern-filter-sql92",
    "tern-filter-router",
    "tern-filter-pass",
    "tern-filter-hostile",
];
/// Folders (relative to the workspace root) whose `fuzz/` directory holds cargo-fuzz targets.
const FUZZ_CRATES: [&str; 7] = [
    "mqtt",
    "firmware-client",
    "hub",
    "filters/sql92",
    "filters/abi",
    "filters/router",
    "envelope",
];
/// The filter guests `build-filters` turns into components: the library name cargo gives
/// the core module, and the component's file name.
const FILTER_GUESTS: [FilterGuest; 4] = [
    FilterGuest {
        artifact: "tern_filter_sql92.wasm",
        component: "sql92.wasm",
    },
    FilterGuest {
        artifact: "tern_filter_router.wasm",
        component: "router.wasm",
    },
    FilterGuest {
        artifact: "tern_filter_pass.wasm",
        component: "pass.wasm",
    },
    FilterGuest {
        artifact: "tern_filter_hostile.wasm",
        component: "hostile.wasm",
    },
];

/// One filter guest crate of the filters workspace.
struct FilterGuest {
    /// File name of the core module in `filters/target/wasm32-unknown-unknown/release/`.
    artifact: &'static str,
    /// File name of the component `build-filters` writes.
    component: &'static str,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage:
  cargo xtask test [--quick]   fmt, clippy, rustdoc, no_std builds, tests, short fuzz runs
  cargo xtask build-filters [--out DIR]
                               build the filter guests as components in DIR
                               (default target/filters)
  cargo xtask fuzz [SECS]      run every fuzz target for SECS seconds (default 60)
  cargo xtask bench [ARGS..]   criterion benchmarks; ARGS go to criterion
  cargo xtask dist [--target T ..]
                               release archives (target/packages) for the host,
                               aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf
  cargo xtask footprint [--clients N,N..] [--binary PATH]
                               hub RSS idle and with N idle clients (default 1000,10000)
                               of the host dist build, or of the `tern` at PATH";

fn run(args: &[String]) -> Result<()> {
    let root = workspace_root()?;
    let mut steps = Steps::default();
    match args.first().map(String::as_str) {
        Some("test") => {
            let quick = match &args[1..] {
                [] => false,
                [flag] if flag == "--quick" => true,
                other => bail!("unexpected arguments {other:?}\n{USAGE}"),
            };
            test(&root, quick, &mut steps)?;
        }
        Some("build-filters") => {
            let out = match &args[1..] {
                [] => root.join("target").join("filters"),
                [flag, dir] if flag == "--out" => PathBuf::from(dir),
                other => bail!("unexpected arguments {other:?}\n{USAGE}"),
            };
            build_filters(&root, &out, &mut steps)?;
        }
        Some("fuzz") => {
            let secs = match &args[1..] {
                [] => FUZZ_SECS,
                [secs] => secs
                    .parse()
                    .with_context(|| format!("SECS must be a number, got {secs:?}"))?,
                other => bail!("unexpected arguments {other:?}\n{USAGE}"),
            };
            fuzz(&root, secs, &mut steps)?;
        }
        Some("bench") => {
            let mut cmd = cargo(&root);
            // Only the criterion bench targets: libtest harnesses would reject criterion flags.
            cmd.args(["bench", "--workspace", "--bench", "*"]);
            // `cargo xtask bench -- ARGS` and `cargo xtask bench ARGS` both reach criterion.
            let extra = match &args[1..] {
                [dashes, rest @ ..] if dashes == "--" => rest,
                rest => rest,
            };
            if !extra.is_empty() {
                cmd.arg("--").args(extra);
            }
            steps.run("criterion benchmarks", &mut cmd)?;
        }
        Some("dist") => {
            let mut targets = Vec::new();
            let mut rest = args[1..].iter();
            while let Some(arg) = rest.next() {
                match (arg.as_str(), rest.next()) {
                    ("--target", Some(target)) => targets.push(target.clone()),
                    _ => bail!("unexpected arguments {:?}\n{USAGE}", &args[1..]),
                }
            }
            dist::dist(&root, &targets, &mut steps)?;
        }
        Some("footprint") => {
            let mut options = footprint::Options::default();
            let mut rest = args[1..].iter();
            while let Some(arg) = rest.next() {
                match (arg.as_str(), rest.next()) {
                    ("--clients", Some(counts)) => options.clients = Some(counts.clone()),
                    ("--binary", Some(binary)) => options.binary = Some(PathBuf::from(binary)),
                    _ => bail!("unexpected arguments {:?}\n{USAGE}", &args[1..]),
                }
            }
            footprint::footprint(&root, &options, &mut steps)?;
        }
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
    }
    steps.summary();
    Ok(())
}

fn test(root: &Path, quick: bool, steps: &mut Steps) -> Result<()> {
    steps.step("prerequisites", prerequisites)?;
    steps.run(
        "rustfmt",
        cargo(root).args(["fmt", "--all", "--", "--check"]),
    )?;
    if !quick {
        steps.run(
            "clippy",
            cargo(root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
        // Module docs are part of the code: broken or private intra-doc links fail.
        steps.run(
            "rustdoc",
            cargo(root)
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )?;
    }
    steps.run(
        "no_std build: tern-mqtt",
        cargo(root).args([
            "build",
            "-p",
            "tern-mqtt",
            "--no-default-features",
            "--target",
            "thumbv7em-none-eabihf",
        ]),
    )?;
    for target in ["thumbv7em-none-eabihf", "riscv32imc-unknown-none-elf"] {
        for features in ["", "async,qos2,tx"] {
            steps.run(
                &format!("no_std build: tern-client ({target}, features [{features}])"),
                cargo(root).args([
                    "build",
                    "-p",
                    "tern-client",
                    "--no-default-features",
                    "--features",
                    features,
                    "--target",
                    target,
                ]),
            )?;
        }
    }
    // The client without QoS 2 receive (the size-check configuration) behaves as documented.
    steps.run(
        "tern-client tests without qos2",
        cargo(root).args([
            "test",
            "-p",
            "tern-client",
            "--no-default-features",
            "--features",
            "std,async",
            "--lib",
            "--test",
            "mock",
        ]),
    )?;
    // A real Cortex-M firmware image (connect + QoS 1 publish + subscribe) must link and fit
    // the flash budget; its section sizes are what `docs/benchmarks.md` reports.
    let size_check = root.join("firmware-client").join("size-check");
    steps.run(
        "firmware size-check build",
        cargo(&size_check).args(["build", "--release"]),
    )?;
    firmware_size_gate(&size_check)?;
    let filters = root.join("filters");
    if filters.join("Cargo.toml").is_file() {
        // The wasm build, then the guests as components in target/filters.
        build_filters(root, &root.join("target").join("filters"), steps)?;
        // The pure libraries behind the guests also run their tests natively. The explicit
        // host `--target` overrides the wasm default from filters/.cargo/config.toml.
        let host = host_triple()?;
        steps.run(
            "filters: rustfmt",
            cargo(&filters).args(["fmt", "--all", "--", "--check"]),
        )?;
        if !quick {
            steps.run(
                "filters: clippy (wasm)",
                cargo(&filters).args(["clippy", "--release", "--", "-D", "warnings"]),
            )?;
            steps.run(
                "filters: rustdoc",
                cargo(&filters)
                    .args(["doc", "--no-deps", "--target", &host])
                    .env("RUSTDOCFLAGS", "-D warnings"),
            )?;
            steps.run(
                "filters: clippy (host, all targets)",
                cargo(&filters).args([
                    "clippy",
                    "--target",
                    &host,
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]),
            )?;
        }
        let mut cmd = cargo(&filters);
        cmd.args(["test", "--target", &host]);
        for krate in FILTER_NATIVE_CRATES {
            cmd.args(["-p", krate]);
        }
        steps.run("filters: native tests", &mut cmd)?;
    } else {
        println!("note: no filters/Cargo.toml yet; skipping the wasm filter build");
    }
    steps.run("tests", cargo(root).args(["test", "--workspace"]))?;
    if !quick {
        fuzz(root, TEST_FUZZ_SECS, steps)?;
    }
    Ok(())
}

/// Builds the filters workspace for wasm32 and writes each guest as a component to `out`.
fn build_filters(root: &Path, out: &Path, steps: &mut Steps) -> Result<()> {
    let filters = root.join("filters");
    // Run inside filters/ so its own .cargo/config.toml (wasm target, profile) applies; it
    // has its own target directory, filters/target.
    steps.run(
        "filters: wasm build",
        cargo(&filters).args(["build", "--release"]),
    )?;
    let modules = filters
        .join("target")
        .join("wasm32-unknown-unknown")
        .join("release");
    steps.step("filters: components", || {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for guest in &FILTER_GUESTS {
            encode_component(&modules.join(guest.artifact), &out.join(guest.component))?;
        }
        Ok(())
    })
}

/// Turns the core module at `module` into a validated component at `out`. A missing module,
/// or one without the WIT exports (a crate not written yet), is skipped with a note.
fn encode_component(module: &Path, out: &Path) -> Result<()> {
    let name = module.display();
    let bytes = match std::fs::read(module) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            println!("note: skipping {name}: not built (no such guest crate yet?)");
            return Ok(());
        }
        Err(err) => return Err(err).with_context(|| format!("reading {name}")),
    };
    let (_, bindgen) = wit_component::metadata::decode(&bytes)
        .with_context(|| format!("reading the component type of {name}"))?;
    if bindgen.resolve.worlds[bindgen.world].exports.is_empty() {
        println!(
            "note: skipping {name}: it exports no filter world (a placeholder crate without \
             `tern_filter::export!`?)"
        );
        return Ok(());
    }
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&bytes)
        .with_context(|| format!("decoding {name}"))?
        .encode()
        .with_context(|| format!("encoding {name} as a component"))?;
    std::fs::write(out, &component).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: {} bytes (core module {} bytes)",
        out.display(),
        component.len(),
        bytes.len()
    );
    Ok(())
}

/// Runs every cargo-fuzz target of every fuzz crate for `secs` seconds.
fn fuzz(root: &Path, secs: u64, steps: &mut Steps) -> Result<()> {
    let mut targets = Vec::new();
    for krate in FUZZ_CRATES {
        let dir = root.join(krate).join("fuzz");
        let target_dir = dir.join("fuzz_targets");
        if !target_dir.is_dir() {
            continue;
        }
        let mut names: Vec<String> = std::fs::read_dir(&target_dir)
            .with_context(|| format!("reading {}", target_dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension() == Some(OsStr::new("rs")))
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        for name in names {
            targets.push((format!("{krate}/fuzz"), name));
        }
    }
    if targets.is_empty() {
        println!(
            "note: no fuzz targets found (expected e.g. mqtt/fuzz/fuzz_targets/decode.rs); skipping fuzzing"
        );
        return Ok(());
    }
    let toolchain = steps.step("fuzz prerequisites", fuzz_prerequisites)?;
    let fuzz_target_dir = root.join("target").join("fuzz");
    for (dir, target) in targets {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root);
        match &toolchain {
            FuzzToolchain::Nightly => {
                cmd.arg("+nightly");
            }
            FuzzToolchain::Bootstrap => {
                cmd.env("RUSTC_BOOTSTRAP", "1");
            }
        }
        // One target directory for every fuzz crate: the sanitizer builds of the shared
        // dependencies (libfuzzer-sys, arbitrary, serde) are made once, not once per crate.
        cmd.args(["fuzz", "run", &target, "--fuzz-dir", &dir, "--target-dir"])
            .arg(&fuzz_target_dir)
            .arg("--")
            .arg(format!("-max_total_time={secs}"));
        steps.run(&format!("fuzz {dir}:{target} ({secs}s)"), &mut cmd)?;
    }
    Ok(())
}

/// How cargo-fuzz gets the nightly-only compiler flags it needs.
enum FuzzToolchain {
    /// A nightly toolchain is installed: `cargo +nightly fuzz`.
    Nightly,
    /// Only the pinned stable toolchain: unlock its `-Z` flags with `RUSTC_BOOTSTRAP=1`.
    Bootstrap,
}

fn fuzz_prerequisites() -> Result<FuzzToolchain> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let toolchain = if nightly {
        FuzzToolchain::Nightly
    } else {
        println!("note: no nightly toolchain; running cargo-fuzz with RUSTC_BOOTSTRAP=1");
        FuzzToolchain::Bootstrap
    };
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_fuzz {
        println!("installing cargo-fuzz (cargo install cargo-fuzz --locked)");
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .stdin(Stdio::null())
            .status()
            .context("running cargo install")?;
        if !status.success() {
            bail!("cargo-fuzz is missing and `cargo install cargo-fuzz --locked` failed");
        }
    }
    Ok(toolchain)
}

/// Fails when the size-check image's `.text` exceeds [`FIRMWARE_TEXT_BUDGET`].
fn firmware_size_gate(size_check: &Path) -> Result<()> {
    let sysroot = capture(Command::new("rustc").args(["--print", "sysroot"]))?;
    let host = capture(Command::new("rustc").args(["--print", "host-tuple"]))?;
    let llvm_size = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host.trim())
        .join("bin/llvm-size");
    let image = size_check.join("target/thumbv7em-none-eabihf/release/tern-client-size-check");
    let out = capture(Command::new(&llvm_size).arg("-A").arg(&image)).with_context(|| {
        format!(
            "{} failed (the llvm-tools component: `rustup component add llvm-tools`)",
            llvm_size.display()
        )
    })?;
    let text = out
        .lines()
        .find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(".text")).then(|| parts.next()?.parse::<u64>().ok())?
        })
        .context("no .text section in llvm-size output")?;
    println!("firmware size-check: .text {text} B (budget {FIRMWARE_TEXT_BUDGET} B)");
    if text > FIRMWARE_TEXT_BUDGET {
        bail!("firmware client .text is {text} B, over the {FIRMWARE_TEXT_BUDGET} B budget");
    }
    Ok(())
}

/// Installs what the tests need, or fails naming what is missing and how to get it.
fn prerequisites() -> Result<()> {
    let components = capture(Command::new("rustup").args(["component", "list", "--installed"]))
        .context("`rustup` is needed to add the llvm-tools component")?;
    if !components
        .lines()
        .any(|l| l.trim().starts_with("llvm-tools"))
    {
        println!("adding rust component: llvm-tools");
        let status = Command::new("rustup")
            .args(["component", "add", "llvm-tools"])
            .stdin(Stdio::null())
            .status()
            .context("running rustup")?;
        if !status.success() {
            bail!("`rustup component add llvm-tools` failed (needed for the firmware size gate)");
        }
    }
    let installed = capture(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("`rustup` is needed to add the cross-compilation targets (https://rustup.rs)")?;
    let missing: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        println!("adding rust targets: {}", missing.join(" "));
        let status = Command::new("rustup")
            .args(["target", "add"])
            .args(&missing)
            .stdin(Stdio::null())
            .status()
            .context("running rustup")?;
        if !status.success() {
            bail!(
                "missing rust targets {missing:?}; `rustup target add {}` failed",
                missing.join(" ")
            );
        }
    }

    let missing: Vec<&str> = MOSQUITTO_TOOLS
        .iter()
        .copied()
        .filter(|t| find_executable(t).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install_hint = format!(
        "missing {}: the interop tests need the mosquitto broker and clients.\n\
         Install them with `sudo apt-get install mosquitto mosquitto-clients` \
         (Debian/Ubuntu), `brew install mosquitto` (macOS) or your system's package manager, \
         then run `cargo xtask test` again.",
        missing.join(", ")
    );
    apt_install(&MOSQUITTO_PACKAGES, &install_hint)?;
    let still: Vec<&str> = MOSQUITTO_TOOLS
        .iter()
        .copied()
        .filter(|t| find_executable(t).is_none())
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get finished but {} is still not found",
            still.join(", ")
        );
    }
    Ok(())
}

/// Installs Debian `packages` with apt-get when running as root on a system that has it;
/// otherwise, or when apt-get fails, stops with `hint` (which says what to install).
fn apt_install(packages: &[&str], hint: &str) -> Result<()> {
    let is_root = capture(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0");
    if !is_root || find_executable("apt-get").is_none() {
        bail!("{hint}");
    }
    println!("installing {} with apt-get", packages.join(" "));
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(packages);
    for args in [vec!["update"], install] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("`apt-get {}` failed\n{hint}", args.join(" "));
        }
    }
    Ok(())
}

/// The host target triple, from `rustc -vV` (the rustc cargo would use).
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let info = capture(Command::new(rustc).arg("-vV")).context("running `rustc -vV`")?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .context("`rustc -vV` printed no `host:` line")
}

/// Looks `name` up in `PATH`, plus the sbin directories (the broker lives in /usr/sbin and
/// non-root `PATH`s often lack it).
fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd` and returns its stdout; fails if it cannot start or exits non-zero.
fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("{cmd:?} exited with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask manifest directory has no parent")
}

/// A cargo command in the workspace root, using the cargo that runs xtask.
fn cargo(root: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).stdin(Stdio::null());
    cmd
}

/// Free space on the file system of the current directory, as `df` reports it: builds of
/// this workspace are large, and a step that fails on a full disk should say so.
struct FreeDisk(Option<u64>);

impl FreeDisk {
    /// Asks `df` (POSIX output, KiB blocks); unknown when `df` is missing or says nothing.
    fn now() -> Self {
        let kib = Command::new("df")
            .args(["-Pk", "."])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let line = text.lines().nth(1)?.to_owned();
                line.split_whitespace().nth(3)?.parse::<u64>().ok()
            });
        FreeDisk(kib)
    }
}

impl std::fmt::Display for FreeDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(kib) => write!(f, "{:.1} GiB free", kib as f64 / (1024.0 * 1024.0)),
            None => f.write_str("free disk unknown"),
        }
    }
}

/// The steps run so far, with their durations, for the closing summary.
#[derive(Default)]
struct Steps {
    done: Vec<(String, Duration)>,
    started: Option<Instant>,
}

impl Steps {
    /// Runs one named step, printing a header and its duration.
    fn step<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.started.get_or_insert_with(Instant::now);
        println!("\n==> {name}");
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        let free = FreeDisk::now();
        match result {
            Ok(v) => {
                println!("<== {name}: ok ({:.1}s, {free})", took.as_secs_f64());
                self.done.push((name.to_string(), took));
                Ok(v)
            }
            Err(err) => Err(err.context(format!(
                "step `{name}` failed after {:.1}s ({free})",
                took.as_secs_f64()
            ))),
        }
    }

    /// Runs a command as a step; a non-zero exit fails the step.
    fn run(&mut self, name: &str, cmd: &mut Command) -> Result<()> {
        let shown = format!("{cmd:?}");
        self.step(name, || {
            println!("$ {shown}");
            let status = cmd
                .status()
                .with_context(|| format!("cannot start {shown}"))?;
            if !status.success() {
                bail!("{shown} exited with {status}");
            }
            Ok(())
        })
    }

    fn summary(&self) {
        if self.done.is_empty() {
            return;
        }
        println!("\nxtask summary:");
        for (name, took) in &self.done {
            println!("  {:>7.1}s  {name}", took.as_secs_f64());
        }
        if let Some(start) = self.started {
            println!("  {:>7.1}s  total", start.elapsed().as_secs_f64());
        }
    }
}
