//! Broker processes the simulator owns: the hub binary and mosquitto, each on a loopback
//! port, started, stopped and restarted by PID.
//!
//! Every wait is bounded by [`START_TIMEOUT`] or [`STOP_TIMEOUT`]; a child still running
//! when its handle is dropped is killed (SIGKILL) and reaped, so no broker outlives the
//! run that started it.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

/// Longest wait for a process to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a process to exit after SIGTERM before it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a start or stop is checked on.
const POLL: Duration = Duration::from_millis(10);
/// Log lines of the hub quoted in an error when it does not start.
const LOG_TAIL: usize = 10;

/// A free loopback port (free when this returns; the caller binds it soon after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running child; SIGKILL and reap when dropped.
#[derive(Debug)]
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL by PID, then reap.
    fn kill(mut self) -> anyhow::Result<()> {
        self.0.kill().context("SIGKILL")?;
        self.0.wait().context("reaping")?;
        Ok(())
    }

    /// SIGTERM by PID; SIGKILL when the process is still there after [`STOP_TIMEOUT`].
    async fn terminate(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.pid());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.0.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        self.kill()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `addr` accepts TCP connections, or `child` exits, or [`START_TIMEOUT`].
async fn wait_listening(child: &mut Child, addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start: {status}");
        }
        if Instant::now() >= deadline {
            bail!("{what} not listening on {addr} after {START_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// What a [`Mosquitto`] keeps across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: every start is a fresh broker.
    Off,
    /// Sessions, subscriptions and queued messages, saved to the working directory at a
    /// graceful stop (SIGTERM) and loaded at the next start.
    OnDisk,
}

/// mosquitto on a loopback port. Queues are unbounded (`max_queued_messages 0`) so the
/// broker never drops a message for a slow or offline subscriber.
#[derive(Debug)]
pub struct Mosquitto {
    binary: PathBuf,
    conf: PathBuf,
    addr: SocketAddr,
    proc: Option<Proc>,
}

impl Mosquitto {
    /// Starts mosquitto on `127.0.0.1:port`, configuration (and persistence) in `dir`.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        port: u16,
        persistence: Persistence,
    ) -> anyhow::Result<Self> {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let persistence = match persistence {
            Persistence::Off => "persistence false\n".to_owned(),
            // Started as root, mosquitto switches to the `mosquitto` user, which cannot
            // write to a private temporary directory; `user root` keeps it as it was
            // started (and means nothing when not started as root).
            Persistence::OnDisk => format!(
                "user root\npersistence true\npersistence_location {}/\n",
                dir.display()
            ),
        };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}\
                 max_queued_messages 0\n"
            ),
        )?;
        let mut mosquitto = Self {
            binary: binary.to_path_buf(),
            conf,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            proc: None,
        };
        mosquitto.restart().await?;
        Ok(mosquitto)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it is running (started and not stopped by this handle).
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Stops it with SIGTERM by PID (SIGKILL after [`STOP_TIMEOUT`]); with
    /// [`Persistence::OnDisk`] it saves its state first.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        match self.proc.take() {
            Some(proc) => proc.terminate().await,
            None => Ok(()),
        }
    }

    /// Starts it again on the same port and configuration (stops it first if running).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::anyhow!(
                        "{} not found: install mosquitto (apt-get install mosquitto) \
                         or name the binary with --mosquitto",
                        self.binary.display()
                    )
                } else {
                    anyhow::Error::new(e).context(format!("starting {}", self.binary.display()))
                }
            })?;
        let waited = wait_listening(&mut child, self.addr, "mosquitto").await;
        self.proc = Some(Proc(child));
        waited
    }
}

/// The hub binary (`tern serve`) on a loopback port, its data directory and log in a
/// directory the caller owns. Restarts keep the port and the data.
#[derive(Debug)]
pub struct HubProcess {
    binary: PathBuf,
    dir: PathBuf,
    addr: SocketAddr,
    proc: Option<Proc>,
}

impl HubProcess {
    /// Writes `config` (TOML) to `dir/tern.toml` and starts `binary serve` on a free
    /// loopback port with its data in `dir/data` and its log (`RUST_LOG=warn` unless
    /// set) appended to `dir/hub.log`. Returns once the hub printed `listening on`.
    pub async fn start(binary: &Path, dir: &Path, config: &str) -> anyhow::Result<Self> {
        if !binary.is_file() {
            bail!(
                "hub binary {} not found (cargo build -p tern-hub)",
                binary.display()
            );
        }
        std::fs::write(dir.join("tern.toml"), config)?;
        let mut hub = Self {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            proc: None,
        };
        hub.spawn().await?;
        Ok(hub)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("hub.log")
    }

    /// SIGKILL by PID, then reap: no graceful shutdown, no final commit.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        match self.proc.take() {
            Some(proc) => proc.kill(),
            None => Ok(()),
        }
    }

    /// Starts it again on the same port and data directory (killing it first if it
    /// runs); returns once it listens.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--config")
            .arg(self.dir.join("tern.toml"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("hub stdout")?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Reads stdout to its end (the hub's death), so the pipe never fills.
        std::thread::Builder::new()
            .name("tern-sim-hub-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                }
            })?;
        // Killed when dropped, so an error below leaves nothing running.
        let mut proc = Proc(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let listening = loop {
            if let Ok(Some(addr)) = tokio::time::timeout(POLL, rx.recv()).await {
                break addr;
            }
            if let Some(status) = proc.0.try_wait()? {
                bail!(
                    "the hub exited at start ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the hub did not print `listening on` within {START_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                );
            }
        };
        self.addr = listening
            .parse()
            .with_context(|| format!("the hub printed a bad address {listening:?}"))?;
        self.proc = Some(proc);
        Ok(())
    }

    /// The last lines of the log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }
}
