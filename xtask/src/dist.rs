//! `cargo xtask dist`: the release archives of the hub for gateways.
//!
//! Builds the `tern` binary with the `dist` profile (fat LTO, one codegen unit, stripped) for
//! the host and the two 64/32-bit ARM Linux targets, checks that each binary is an ELF file
//! for the right machine, and writes `target/packages/tern-<version>-<target>.tar.gz` (binary,
//! systemd unit, example configuration, README) with a `.sha256` file next to it that
//! `sha256sum -c` accepts.
//!
//! Cross builds link with Debian's GNU cross toolchains. What is missing is installed when
//! possible (`rustup target add`; `apt-get install` when running as root) and named
//! otherwise. C dependencies (mimalloc, ring) get the same compiler through `CC_<target>`.
//!
//! 32-bit ARM has no Cranelift backend: there the hub compiles filters to Pulley bytecode
//! and runs them in wasmtime's interpreter (see the README and `docs/benchmarks.md`).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};

use crate::{Steps, apt_install, capture, cargo, find_executable, host_triple};

/// The cargo profile of the archives (declared in the workspace `Cargo.toml`).
const PROFILE: &str = "dist";
/// Version of the archives: the workspace version, shared by every member.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Files of the source tree that go into every archive, next to the binary.
const ARCHIVE_FILES: [&str; 3] = ["packaging/tern.service", "packaging/tern.toml", "README.md"];

/// The gateway targets built by default besides the host, with their cross toolchains.
const CROSS_TARGETS: [CrossToolchain; 2] = [
    CrossToolchain {
        triple: "aarch64-unknown-linux-gnu",
        tool_prefix: "aarch64-linux-gnu",
        packages: ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
    },
    CrossToolchain {
        triple: "armv7-unknown-linux-gnueabihf",
        tool_prefix: "arm-linux-gnueabihf",
        packages: ["gcc-arm-linux-gnueabihf", "libc6-dev-armhf-cross"],
    },
];

/// A Debian GNU cross toolchain for one Rust target.
struct CrossToolchain {
    /// Rust target triple.
    triple: &'static str,
    /// Prefix of the tools: `<prefix>-gcc`, `<prefix>-ar`.
    tool_prefix: &'static str,
    /// Debian packages of the cross compiler and of the target's C library.
    packages: [&'static str; 2],
}

impl CrossToolchain {
    fn gcc(&self) -> String {
        format!("{}-gcc", self.tool_prefix)
    }

    fn ar(&self) -> String {
        format!("{}-ar", self.tool_prefix)
    }
}

/// ELF header fields that identify the architecture of a binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ElfArch {
    /// `EI_CLASS`: 1 = 32-bit, 2 = 64-bit.
    class: u8,
    /// `e_machine`.
    machine: u16,
}

impl ElfArch {
    /// The architecture a Linux target triple's binaries have.
    fn of_triple(triple: &str) -> Option<Self> {
        let arch = triple.split('-').next()?;
        let (class, machine) = match arch {
            "x86_64" => (2, 62),
            "aarch64" => (2, 183),
            "i686" | "i586" => (1, 3),
            "riscv64gc" => (2, 243),
            a if a.starts_with("arm") || a.starts_with("thumbv7") => (1, 40),
            _ => return None,
        };
        Some(Self { class, machine })
    }

    /// Reads the architecture from the header of the ELF file at `path`.
    fn of_file(path: &Path) -> Result<Self> {
        let mut header = [0u8; 20];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut header))
            .with_context(|| format!("reading the ELF header of {}", path.display()))?;
        if header[..4] != *b"\x7fELF" {
            bail!("{} is not an ELF file", path.display());
        }
        // EI_DATA 1 = little endian: every target built here is.
        let machine = match header[5] {
            1 => u16::from_le_bytes([header[18], header[19]]),
            _ => u16::from_be_bytes([header[18], header[19]]),
        };
        Ok(Self {
            class: header[4],
            machine,
        })
    }
}

/// One target to build: how to link it and what its binary must be.
struct Build {
    triple: String,
    /// `None` for the host, which needs no cross toolchain.
    cross: Option<&'static CrossToolchain>,
    arch: ElfArch,
}

impl Build {
    fn new(triple: &str, host: &str) -> Result<Self> {
        let arch = ElfArch::of_triple(triple)
            .with_context(|| format!("no known ELF architecture for target {triple:?}"))?;
        let cross = if triple == host {
            None
        } else {
            let known = CROSS_TARGETS.iter().find(|t| t.triple == triple);
            let Some(known) = known else {
                let names: Vec<&str> = CROSS_TARGETS.iter().map(|t| t.triple).collect();
                bail!(
                    "no cross toolchain known for {triple:?}: `dist` builds the host ({host}) \
                     and {}",
                    names.join(", ")
                );
            };
            Some(known)
        };
        Ok(Self {
            triple: triple.to_owned(),
            cross,
            arch,
        })
    }

    /// `cargo build` of the `tern` binary for this target, with the cross linker and C
    /// compiler set unless the environment already names them.
    fn command(&self, root: &Path) -> Command {
        let mut cmd = cargo(root);
        cmd.args([
            "build",
            "--locked",
            "-p",
            "tern-hub",
            "--bin",
            "tern",
            "--profile",
            PROFILE,
            "--target",
            &self.triple,
        ]);
        if let Some(cross) = self.cross {
            let upper = self.triple.to_uppercase().replace('-', "_");
            let lower = self.triple.replace('-', "_");
            for (var, value) in [
                (format!("CARGO_TARGET_{upper}_LINKER"), cross.gcc()),
                (format!("CC_{lower}"), cross.gcc()),
                (format!("AR_{lower}"), cross.ar()),
            ] {
                if std::env::var_os(&var).is_none() {
                    cmd.env(var, value);
                }
            }
        }
        cmd
    }
}

/// The targets built when none are named: the host and the gateway targets.
fn default_targets(host: &str) -> Vec<String> {
    let mut targets = vec![host.to_owned()];
    for cross in &CROSS_TARGETS {
        if cross.triple != host {
            targets.push(cross.triple.to_owned());
        }
    }
    targets
}

/// `cargo xtask dist [--target T ...]`.
pub(crate) fn dist(root: &Path, targets: &[String], steps: &mut Steps) -> Result<()> {
    let host = host_triple()?;
    let targets = if targets.is_empty() {
        default_targets(&host)
    } else {
        targets.to_vec()
    };
    let builds = targets
        .iter()
        .map(|t| Build::new(t, &host))
        .collect::<Result<Vec<_>>>()?;
    steps.step("dist prerequisites", || prerequisites(&builds))?;
    let target_dir = target_dir(root);
    let out = target_dir.join("packages");
    let mut made = Vec::new();
    for build in &builds {
        steps.run(
            &format!("dist build: tern for {}", build.triple),
            &mut build.command(root),
        )?;
        let binary = target_dir.join(&build.triple).join(PROFILE).join("tern");
        let archive = steps.step(&format!("dist archive: {}", build.triple), || {
            check_arch(&binary, build.arch)?;
            package(root, &binary, &build.triple, &out)
        })?;
        made.push((build.triple.as_str(), file_size(&binary)?, archive));
    }
    println!("\nrelease archives ({PROFILE} profile, stripped):");
    println!(
        "  {:<32} {:>12} {:>12}  file",
        "target", "binary", "archive"
    );
    for (triple, binary, archive) in &made {
        println!(
            "  {triple:<32} {:>12} {:>12}  {}",
            human(*binary),
            human(file_size(archive)?),
            archive.display()
        );
    }
    Ok(())
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `<root>/target`).
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Rust targets and cross toolchains: installed when missing, or named.
fn prerequisites(builds: &[Build]) -> Result<()> {
    let installed = capture(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("`rustup` is needed to add the cross-compilation targets (https://rustup.rs)")?;
    let missing: Vec<&str> = builds
        .iter()
        .filter(|b| b.cross.is_some())
        .map(|b| b.triple.as_str())
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        println!("adding rust targets: {}", missing.join(" "));
        let status = Command::new("rustup")
            .args(["target", "add"])
            .args(&missing)
            .status()
            .context("running rustup")?;
        if !status.success() {
            bail!("`rustup target add {}` failed", missing.join(" "));
        }
    }
    let lacking: Vec<&CrossToolchain> = builds
        .iter()
        .filter_map(|b| b.cross)
        .filter(|c| !toolchain_ready(c))
        .collect();
    if lacking.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = lacking.iter().flat_map(|c| c.packages).collect();
    let hint = format!(
        "the cross builds need {} with the target C libraries: install the Debian/Ubuntu \
         packages `{}` (`sudo apt-get install {}`), or set CARGO_TARGET_<TRIPLE>_LINKER and \
         CC_<triple> to another cross gcc",
        lacking
            .iter()
            .map(|c| c.gcc())
            .collect::<Vec<_>>()
            .join(" and "),
        packages.join(" "),
        packages.join(" ")
    );
    apt_install(&packages, &hint)?;
    if let Some(still) = lacking.iter().find(|c| !toolchain_ready(c)) {
        bail!(
            "apt-get finished but {} cannot find the target's C library (crt1.o)\n{hint}",
            still.gcc()
        );
    }
    Ok(())
}

/// Whether the cross gcc runs and finds the target's C start files.
fn toolchain_ready(cross: &CrossToolchain) -> bool {
    if find_executable(&cross.gcc()).is_none() {
        return false;
    }
    // gcc prints the full path of a file it finds and the bare name otherwise.
    capture(Command::new(cross.gcc()).arg("-print-file-name=crt1.o"))
        .is_ok_and(|path| Path::new(path.trim()).is_absolute())
}

/// Fails unless `binary` is an ELF file for `expected`; shows `file`'s view when present.
fn check_arch(binary: &Path, expected: ElfArch) -> Result<()> {
    let found = ElfArch::of_file(binary)?;
    if let Ok(description) = capture(Command::new("file").arg("-b").arg(binary)) {
        println!("{}: {}", binary.display(), description.trim());
    }
    if found != expected {
        bail!(
            "{} is ELF class {} machine {}, expected class {} machine {}",
            binary.display(),
            found.class,
            found.machine,
            expected.class,
            expected.machine
        );
    }
    Ok(())
}

/// Writes `<out>/tern-<version>-<triple>.tar.gz` and its `.sha256`; returns the archive.
fn package(root: &Path, binary: &Path, triple: &str, out: &Path) -> Result<PathBuf> {
    let name = format!("tern-{VERSION}-{triple}");
    let staging = out.join(&name);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    std::fs::copy(binary, staging.join("tern"))
        .with_context(|| format!("copying {}", binary.display()))?;
    for file in ARCHIVE_FILES {
        let from = root.join(file);
        let to = staging.join(Path::new(file).file_name().context("file name")?);
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
    }
    let archive = out.join(format!("{name}.tar.gz"));
    // Owner and order fixed, so the archive depends only on its files (and their times).
    let status = Command::new("tar")
        .arg("-C")
        .arg(out)
        .args([
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--sort=name",
            "-czf",
        ])
        .arg(&archive)
        .arg(&name)
        .status()
        .context("running tar (GNU tar is needed to write the archives)")?;
    if !status.success() {
        bail!(
            "tar exited with {status} while writing {}",
            archive.display()
        );
    }
    std::fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    let bytes =
        std::fs::read(&archive).with_context(|| format!("reading {}", archive.display()))?;
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sums = out.join(format!("{name}.tar.gz.sha256"));
    std::fs::write(&sums, format!("{digest}  {name}.tar.gz\n"))
        .with_context(|| format!("writing {}", sums.display()))?;
    println!("{}\n{}", archive.display(), sums.display());
    Ok(archive)
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

/// `12.3 MiB`-style size for the summaries.
pub(crate) fn human(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    let tenths = (bytes * 10 + MIB / 2) / MIB;
    format!("{}.{} MiB", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_mib_with_one_decimal() {
        assert_eq!(human(24_879_960), "23.7 MiB");
        assert_eq!(human(3 << 19), "1.5 MiB");
        assert_eq!(human(0), "0.0 MiB");
    }

    #[test]
    fn triples_map_to_their_elf_machine() {
        assert_eq!(
            ElfArch::of_triple("aarch64-unknown-linux-gnu"),
            Some(ElfArch {
                class: 2,
                machine: 183
            })
        );
        assert_eq!(
            ElfArch::of_triple("armv7-unknown-linux-gnueabihf"),
            Some(ElfArch {
                class: 1,
                machine: 40
            })
        );
        assert_eq!(ElfArch::of_triple("wasm32-unknown-unknown"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_running_xtask_is_a_host_elf() {
        let host = host_triple().expect("host triple");
        let expected = ElfArch::of_triple(&host).expect("a known Linux architecture");
        let me = std::env::current_exe().expect("current exe");
        assert_eq!(ElfArch::of_file(&me).expect("ELF header"), expected);
    }

    #[test]
    fn unknown_cross_targets_are_refused_with_the_supported_list() {
        let err = Build::new("riscv64gc-unknown-linux-gnu", "x86_64-unknown-linux-gnu")
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("aarch64-unknown-linux-gnu"), "{err}");
        assert!(
            Build::new("x86_64-unknown-linux-gnu", "x86_64-unknown-linux-gnu")
                .expect("host")
                .cross
                .is_none()
        );
    }
}
