//! Broker processes for integration tests: the `tern` hub binary and mosquitto, each
//! started on a free loopback port and killed by PID when its [`Broker`] handle drops.
//!
//! The tests of `tern-client` and `tern-sim` (and any other crate that runs real
//! brokers) share these helpers; `tern-sim`'s own `process` module is the library
//! counterpart for runs that stop and restart brokers gracefully.
//!
//! Every helper panics with a message saying what is missing (a broker that does not
//! start, mosquitto not installed): a test that needs a broker fails without one, it is
//! never skipped.
//!
//! ```no_run
//! let hub = tern_testkit::start_hub();
//! let stream = std::net::TcpStream::connect(hub.addr()).expect("connect");
//! # drop(stream);
//! ```

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Longest wait for a broker to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a starting mosquitto is probed.
const POLL: Duration = Duration::from_millis(20);

/// A broker process, killed (by its PID) and reaped when dropped.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    addr: SocketAddr,
    /// Data directory and configuration; removed after the process is gone (fields drop
    /// after `Drop::drop` has killed the child).
    _dir: TempDir,
}

impl Broker {
    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .to_path_buf()
}

/// The `tern` binary: `TERN_TEST_BIN` if set, otherwise built once per test process
/// with `cargo build -p tern-hub --bin tern` (so it is never stale).
pub fn tern_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("TERN_TEST_BIN") {
            return PathBuf::from(bin);
        }
        let root = workspace_root();
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
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let bin = target.join("debug").join("tern");
        assert!(bin.is_file(), "tern binary not found at {}", bin.display());
        bin
    })
    .clone()
}

/// A free loopback port (free when this returns; the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The hub binary on a free loopback port with default settings and its data in a
/// temporary directory. Returns once it printed `listening on <addr>`.
pub fn start_hub() -> Broker {
    spawn_hub(None)
}

/// [`start_hub`] with `config` (TOML) as its configuration file.
pub fn start_hub_with_config(config: &str) -> Broker {
    spawn_hub(Some(config))
}

fn spawn_hub(config: Option<&str>) -> Broker {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(tern_binary());
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    if let Some(config) = config {
        let path = dir.path().join("tern.toml");
        std::fs::write(&path, config).expect("write tern.toml");
        command.arg("--config").arg(path);
    }
    let mut child = command
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the tern hub");
    let stdout = child.stdout.take().expect("hub stdout");
    let (tx, rx) = mpsc::channel();
    // Reads stdout to its end (the hub's exit), so the pipe never fills.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => addr.parse().expect("hub prints a socket address"),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the hub did not print `listening on <addr>` within {START_TIMEOUT:?}");
        }
    };
    Broker {
        child,
        addr,
        _dir: dir,
    }
}

/// mosquitto: `/usr/sbin/mosquitto` when installed there, otherwise the first on `PATH`.
pub fn mosquitto_binary() -> PathBuf {
    let installed = Path::new("/usr/sbin/mosquitto");
    if installed.is_file() {
        return installed.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|p| p.join("mosquitto"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "mosquitto is needed for this test and is not installed: install it \
                 (`apt-get install mosquitto`, or `cargo xtask test`, which installs it)"
            )
        })
}

/// mosquitto on a free loopback port, anonymous, without persistence.
pub fn start_mosquitto() -> Broker {
    // Ports are picked by binding port 0; serialize so two tests of one process do not
    // race for the same one between the probe and mosquitto's bind.
    static PORTS: Mutex<()> = Mutex::new(());
    let _guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    start_mosquitto_on(free_port())
}

/// [`start_mosquitto`] on `port` (say, the port of one that was stopped).
pub fn start_mosquitto_on(port: u16) -> Broker {
    start_mosquitto_with(port, "")
}

/// mosquitto on `port` without persistence, `settings` (configuration lines) added.
/// Returns once it accepts connections.
pub fn start_mosquitto_with(port: u16, settings: &str) -> Broker {
    let binary = mosquitto_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{settings}"),
    )
    .expect("write mosquitto.conf");
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto");
    // Killed when dropped, so a failed start leaves nothing running.
    let mut broker = Broker {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    };
    let started = Instant::now();
    while TcpStream::connect(broker.addr).is_err() {
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!("mosquitto exited at start: {status}");
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "mosquitto did not listen on {} within {START_TIMEOUT:?}",
            broker.addr
        );
        std::thread::sleep(POLL);
    }
    broker
}
