//! Helpers shared by the simulator's integration tests.

#![allow(dead_code, reason = "each test binary uses some of the helpers")]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `TERN_TEST_BIN`, or `target/debug/tern`, built when missing.
pub fn tern_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TERN_TEST_BIN") {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sim sits in the workspace")
        .to_path_buf();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("debug").join("tern");
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "tern-hub", "--bin", "tern"])
            .current_dir(&root)
            .status()
            .expect("run cargo to build the tern hub");
        assert!(
            status.success(),
            "`cargo build -p tern-hub` failed: {status}"
        );
    }
    assert!(bin.is_file(), "tern binary not found at {}", bin.display());
    bin
}

/// Fails the test with the way to install mosquitto when it is not on the PATH.
pub fn require_mosquitto() {
    match Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) => panic!(
            "mosquitto is needed for this test and could not be run ({e}): install it \
             (`apt-get install mosquitto`, or `cargo xtask test`, which installs it)"
        ),
    }
}

/// A mosquitto broker, killed when the test ends.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn start_mosquitto() -> Mosquitto {
    start_mosquitto_on(free_port())
}

pub fn start_mosquitto_on(port: u16) -> Mosquitto {
    start_mosquitto_with(port, "")
}

/// mosquitto on `port` without persistence, `settings` (configuration lines) added.
pub fn start_mosquitto_with(port: u16, settings: &str) -> Mosquitto {
    require_mosquitto();
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{settings}"),
    )
    .expect("write mosquitto.conf");
    let mut child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("mosquitto exited at start: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen on {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Mosquitto {
        child,
        port,
        _dir: dir,
    }
}
