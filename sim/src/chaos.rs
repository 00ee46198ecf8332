//! Chaos for `tern-sim run`: the faults a run injects while its devices publish, the
//! brokers it owns to inject them, and what it reports about them.
//!
//! Three faults, each on its own period, all within the publishing phase:
//!
//! - **Hub kills** ([`ChaosConfig::kill_hub_every`]): the run starts the hub binary itself
//!   ([`SpawnHub`]) and, every period, sends it SIGKILL by PID and starts it again on the
//!   same port and data directory. Each restart is timed: spawn → listening, and spawn →
//!   the first CONNACK any client gets.
//! - **Dropped connections** ([`ChaosConfig::drop_connections_every`]): every period, one
//!   random connected device's socket is shut down in both directions from outside the
//!   device task, with no DISCONNECT, as a network fault would.
//! - **Upstream outages** ([`Upstream`]): the run starts mosquitto as the cloud broker and
//!   the hub with a `[[bridge]]` to it; the checking subscribers subscribe upstream. Every
//!   period mosquitto is stopped (SIGTERM by PID) for a window, then started again on the
//!   same port. mosquitto keeps its sessions on disk across the stop, so what the check
//!   measures is the hub's bridge, not mosquitto's memory.
//!
//! Under chaos every client uses a persistent session and reconnects (see
//! [`crate::run::SessionMode`]); the run's verdict is whether any acknowledged message
//! never reached a checking subscriber.

use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tern_client::ConnectInfo;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::process::{HubProcess, Mosquitto, Persistence, free_port};
use crate::run::Rng;

/// Topic filter the bridge forwards.
const BRIDGED: &str = "tern/sim/#";
/// Topic filter of the envelopes the bridge publishes (no remote prefix).
pub const ENVELOPE_FILTER: &str = "tern/envelope/#";

/// Faults to inject, and the brokers to own for them. The default injects nothing.
#[derive(Debug, Clone, Default)]
pub struct ChaosConfig {
    /// Start the hub binary instead of using `RunConfig::target`.
    pub hub: Option<SpawnHub>,
    /// SIGKILL and restart the spawned hub this often.
    pub kill_hub_every: Option<Duration>,
    /// Shut down one random device connection this often.
    pub drop_connections_every: Option<Duration>,
    /// Bridge to a mosquitto the run owns and check there.
    pub upstream: Option<Upstream>,
}

/// The hub binary to start.
#[derive(Debug, Clone)]
pub struct SpawnHub {
    /// Path of the `tern` binary.
    pub binary: PathBuf,
    /// A configuration file to start it with (its listeners and data directory are
    /// replaced by a loopback port and a temporary directory).
    pub config: Option<PathBuf>,
}

/// How the bridge forwards to the upstream broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BridgeMode {
    /// One upstream PUBLISH per message.
    #[default]
    Each,
    /// Batches in postcard envelopes.
    Envelope,
}

/// The upstream side of a run.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Path of the `mosquitto` binary.
    pub mosquitto: PathBuf,
    /// Start an outage this often (none when `None`: the bridge is only checked).
    pub outage_every: Option<Duration>,
    /// How long each outage lasts.
    pub outage_for: Duration,
    /// Bridge mode.
    pub mode: BridgeMode,
}

impl ChaosConfig {
    /// Whether the run owns brokers or injects faults, so clients must survive them.
    pub fn is_active(&self) -> bool {
        self.hub.is_some() || self.drop_connections_every.is_some() || self.upstream.is_some()
    }

    /// Refuses combinations that cannot run.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = |d: Option<Duration>, flag: &str| match d {
            Some(d) if d.is_zero() => Err(anyhow::anyhow!("{flag} must be above 0")),
            _ => Ok(()),
        };
        positive(self.kill_hub_every, "--kill-hub-every")?;
        positive(self.drop_connections_every, "--drop-connections-every")?;
        if self.kill_hub_every.is_some() && self.hub.is_none() {
            anyhow::bail!("--kill-hub-every needs --spawn-hub: the simulator must own the hub");
        }
        if let Some(up) = &self.upstream {
            if self.hub.is_none() {
                anyhow::bail!("an upstream check needs --spawn-hub to configure the bridge");
            }
            positive(up.outage_every, "--upstream-outage-every")?;
            if up.outage_every.is_some_and(|every| up.outage_for >= every) {
                anyhow::bail!("--upstream-outage-for must be shorter than --upstream-outage-every");
            }
        }
        Ok(())
    }
}

/// Where the checking subscribers subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckPoint {
    /// At the broker the devices publish to.
    Hub,
    /// At the upstream broker, behind the hub's bridge.
    Upstream,
}

/// One hub restart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Recovery {
    /// Milliseconds from the new process's spawn until it printed `listening on`
    /// (`None`: it did not start).
    pub listening_ms: Option<f64>,
    /// Milliseconds from the spawn until the first client got a CONNACK (`None`: none did).
    pub first_connack_ms: Option<f64>,
}

/// What the faults did, in the run summary.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// Where the loss check ran.
    pub checked_at: CheckPoint,
    /// SIGKILLs sent to the hub.
    pub hub_kills: u64,
    /// Hub restarts that came up listening.
    pub hub_restarts: u64,
    /// Per restart, in order.
    pub recovery: Vec<Recovery>,
    /// Slowest restart → first CONNACK, ms (0 without restarts).
    pub recovery_max_ms: f64,
    /// Device connections shut down.
    pub connection_drops: u64,
    /// Upstream stops.
    pub upstream_outages: u64,
    /// Seconds the upstream broker was down in total.
    pub upstream_down_secs: f64,
    /// Device connections re-established.
    pub device_reconnects: u64,
    /// Subscriber connections re-established.
    pub subscriber_reconnects: u64,
    /// Reconnects whose CONNACK said the broker had no session (it forgot it).
    pub sessions_not_resumed: u64,
}

/// A hub restart being timed.
#[derive(Debug, Clone, Copy)]
struct Restart {
    spawned: Instant,
    /// `None` until the new process printed `listening on`.
    listening: Option<Duration>,
    first_connack: Option<Duration>,
}

/// Fault state shared with the clients: the sockets the conductor may drop, and counters.
#[derive(Debug)]
pub struct ChaosState {
    /// Per device, a handle on its current socket (the same connection, another fd).
    sockets: Vec<Mutex<Option<std::net::TcpStream>>>,
    restarts: Mutex<Vec<Restart>>,
    kills: AtomicU64,
    drops: AtomicU64,
    outages: AtomicU64,
    down_us: AtomicU64,
    device_reconnects: AtomicU64,
    subscriber_reconnects: AtomicU64,
    sessions_not_resumed: AtomicU64,
}

/// Who reconnected, for [`ChaosState::reconnected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A device, to the hub.
    Device,
    /// A checking subscriber at the hub.
    HubSubscriber,
    /// A checking subscriber upstream.
    UpstreamSubscriber,
}

impl ChaosState {
    /// State for `devices` devices.
    pub fn new(devices: usize) -> Self {
        Self {
            sockets: (0..devices).map(|_| Mutex::new(None)).collect(),
            restarts: Mutex::new(Vec::new()),
            kills: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            down_us: AtomicU64::new(0),
            device_reconnects: AtomicU64::new(0),
            subscriber_reconnects: AtomicU64::new(0),
            sessions_not_resumed: AtomicU64::new(0),
        }
    }

    /// Keeps a second handle on device `index`'s new socket, so a drop can shut it.
    pub fn register(&self, index: u32, socket: std::net::TcpStream) {
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.sockets.get(i))
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(socket);
        }
    }

    /// Forgets device `index`'s socket (it is closed or about to be).
    pub fn unregister(&self, index: u32) {
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.sockets.get(i))
            && let Ok(mut slot) = slot.lock()
        {
            *slot = None;
        }
    }

    /// Records a CONNACK that re-established a lost connection.
    pub fn reconnected(&self, peer: Peer, info: ConnectInfo) {
        let counter = match peer {
            Peer::Device => &self.device_reconnects,
            Peer::HubSubscriber | Peer::UpstreamSubscriber => &self.subscriber_reconnects,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !info.session_present {
            self.sessions_not_resumed.fetch_add(1, Ordering::Relaxed);
        }
        if peer == Peer::UpstreamSubscriber {
            return;
        }
        let now = Instant::now();
        if let Ok(mut restarts) = self.restarts.lock()
            && let Some(last) = restarts.last_mut()
            && last.first_connack.is_none()
        {
            last.first_connack = Some(now.saturating_duration_since(last.spawned));
        }
    }

    /// Connections re-established so far (devices and subscribers), for progress lines.
    pub fn reconnects(&self) -> u64 {
        self.device_reconnects.load(Ordering::Relaxed)
            + self.subscriber_reconnects.load(Ordering::Relaxed)
    }

    /// Faults injected so far (kills, drops, outages), for progress lines.
    pub fn faults(&self) -> u64 {
        self.kills.load(Ordering::Relaxed)
            + self.drops.load(Ordering::Relaxed)
            + self.outages.load(Ordering::Relaxed)
    }

    /// Shuts down the socket of a random connected device; `false` when none is connected.
    fn drop_one(&self, rng: &mut Rng) -> bool {
        let n = self.sockets.len();
        if n == 0 {
            return false;
        }
        let start = usize::try_from(rng.next_u64() % n as u64).unwrap_or(0);
        for i in (start..n).chain(0..start) {
            let socket = self.sockets[i].lock().ok().and_then(|mut s| s.take());
            if let Some(socket) = socket
                && socket.shutdown(Shutdown::Both).is_ok()
            {
                self.drops.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// The report.
    pub fn report(&self, checked_at: CheckPoint) -> ChaosReport {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let restarts = self.restarts.lock().map(|r| r.clone()).unwrap_or_default();
        let recovery: Vec<Recovery> = restarts
            .iter()
            .map(|r| Recovery {
                listening_ms: r.listening.map(ms),
                first_connack_ms: r.first_connack.map(ms),
            })
            .collect();
        ChaosReport {
            checked_at,
            hub_kills: self.kills.load(Ordering::Relaxed),
            hub_restarts: u64::try_from(restarts.iter().filter(|r| r.listening.is_some()).count())
                .unwrap_or(u64::MAX),
            recovery_max_ms: recovery
                .iter()
                .filter_map(|r| r.first_connack_ms)
                .fold(0.0, f64::max),
            recovery,
            connection_drops: self.drops.load(Ordering::Relaxed),
            upstream_outages: self.outages.load(Ordering::Relaxed),
            upstream_down_secs: Duration::from_micros(self.down_us.load(Ordering::Relaxed))
                .as_secs_f64(),
            device_reconnects: self.device_reconnects.load(Ordering::Relaxed),
            subscriber_reconnects: self.subscriber_reconnects.load(Ordering::Relaxed),
            sessions_not_resumed: self.sessions_not_resumed.load(Ordering::Relaxed),
        }
    }
}

/// The brokers a run owns, in a temporary directory removed at the end. Dropping this
/// kills them.
#[derive(Debug)]
pub struct Brokers {
    hub: Option<HubProcess>,
    upstream: Option<Mosquitto>,
    /// Declared last: removed after the processes using it are gone.
    _dir: tempfile::TempDir,
}

impl Brokers {
    /// Starts what `cfg` asks for (mosquitto first, so the bridge finds it).
    pub async fn start(cfg: &ChaosConfig, run: u32) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let mut upstream = None;
        let mut bridge = String::new();
        if let Some(up) = &cfg.upstream {
            let port = free_port()?;
            let mosquitto_dir = dir.path().join("mosquitto");
            std::fs::create_dir(&mosquitto_dir)?;
            upstream = Some(
                Mosquitto::start(&up.mosquitto, &mosquitto_dir, port, Persistence::OnDisk).await?,
            );
            let mode = match up.mode {
                BridgeMode::Each => "mode = \"each\"\n",
                BridgeMode::Envelope => {
                    "mode = \"envelope\"\n\
                     batch = { max_messages = 200, max_bytes = \"32KiB\", linger = \"20ms\" }\n"
                }
            };
            bridge = format!(
                "\n[[bridge]]\nname = \"sim\"\naddress = \"127.0.0.1:{port}\"\n\
                 client_id = \"tern-sim-gw-{run:08x}\"\ntopics = [\"{BRIDGED}\"]\n\
                 reconnect = {{ min = \"50ms\", max = \"500ms\" }}\n{mode}"
            );
        }
        let hub = match &cfg.hub {
            Some(spawn) => {
                let base = match &spawn.config {
                    Some(path) => std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                    None => String::new(),
                };
                let hub_dir = dir.path().join("hub");
                std::fs::create_dir(&hub_dir)?;
                Some(
                    HubProcess::start(&spawn.binary, &hub_dir, &format!("{base}\n{bridge}"))
                        .await?,
                )
            }
            None => None,
        };
        Ok(Self {
            hub,
            upstream,
            _dir: dir,
        })
    }

    /// The spawned hub's address.
    pub fn hub_addr(&self) -> Option<String> {
        self.hub.as_ref().map(|h| h.addr().to_string())
    }

    /// The upstream broker's address.
    pub fn upstream_addr(&self) -> Option<String> {
        self.upstream.as_ref().map(|m| m.addr().to_string())
    }

    /// SIGKILLs the hub and starts it again, timing the restart.
    async fn kill_and_restart(&mut self, state: &ChaosState) -> anyhow::Result<()> {
        let Some(hub) = self.hub.as_mut() else {
            return Ok(());
        };
        hub.kill().context("killing the hub")?;
        state.kills.fetch_add(1, Ordering::Relaxed);
        // Recorded before the spawn: the old process is gone, so any CONNACK from now on
        // comes from the new one.
        let spawned = Instant::now();
        if let Ok(mut restarts) = state.restarts.lock() {
            restarts.push(Restart {
                spawned,
                listening: None,
                first_connack: None,
            });
        }
        hub.restart().await.context("restarting the hub")?;
        if let Ok(mut restarts) = state.restarts.lock()
            && let Some(last) = restarts.last_mut()
        {
            last.listening = Some(spawned.elapsed());
        }
        Ok(())
    }
}

/// Injects the faults of `cfg` from `t0` until `end`, or until `stop` turns true. Every
/// outage that starts also ends before this returns, and only outages that fit before
/// `end` start.
pub async fn conduct(
    brokers: &mut Brokers,
    cfg: &ChaosConfig,
    state: &ChaosState,
    seed: u64,
    t0: Instant,
    end: Instant,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(seed ^ 0x0063_6861_6f73);
    let first = |every: Option<Duration>| every.map(|e| t0 + e);
    let mut next_kill = first(cfg.kill_hub_every);
    let mut next_drop = first(cfg.drop_connections_every);
    let outage = cfg
        .upstream
        .as_ref()
        .and_then(|u| Some((u.outage_every?, u.outage_for)));
    let mut next_outage = outage.map(|(every, _)| t0 + every);
    // The outage in progress: when mosquitto stopped, and when it starts again.
    let mut down: Option<(Instant, Instant)> = None;
    loop {
        let due = [
            next_kill,
            next_drop,
            next_outage,
            down.map(|(_, until)| until),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(due) = due.filter(|&d| d < end || down.is_some()) else {
            return Ok(());
        };
        if down.is_none() && *stop.borrow() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            changed = stop.changed(), if down.is_none() => {
                if changed.is_err() {
                    return Ok(());
                }
                continue;
            }
        }
        let now = Instant::now();
        if let Some((stopped, until)) = down
            && now >= until
        {
            if let Some(up) = brokers.upstream.as_mut() {
                up.restart().await.context("restarting mosquitto")?;
            }
            down = None;
            state.down_us.fetch_add(
                u64::try_from(stopped.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        if let Some((every, len)) = outage
            && let Some(at) = next_outage
            && now >= at
        {
            next_outage = Some(at + every);
            if now + len < end
                && let Some(up) = brokers.upstream.as_mut()
                && up.is_running()
            {
                let stopped = Instant::now();
                up.stop().await.context("stopping mosquitto")?;
                state.outages.fetch_add(1, Ordering::Relaxed);
                down = Some((stopped, Instant::now() + len));
            }
        }
        if let (Some(every), Some(at)) = (cfg.kill_hub_every, next_kill)
            && now >= at
        {
            next_kill = Some(at + every);
            brokers.kill_and_restart(state).await?;
        }
        if let (Some(every), Some(at)) = (cfg.drop_connections_every, next_drop)
            && now >= at
        {
            next_drop = Some(at + every);
            state.drop_one(&mut rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn spawn() -> Option<SpawnHub> {
        Some(SpawnHub {
            binary: PathBuf::from("tern"),
            config: None,
        })
    }

    fn upstream(every: Option<Duration>, length: Duration) -> Option<Upstream> {
        Some(Upstream {
            mosquitto: PathBuf::from("mosquitto"),
            outage_every: every,
            outage_for: length,
            mode: BridgeMode::Each,
        })
    }

    #[test]
    fn validate_refuses_what_cannot_run() {
        let secs = Duration::from_secs;
        assert!(ChaosConfig::default().validate().is_ok());
        assert!(!ChaosConfig::default().is_active());
        let kill_without_hub = ChaosConfig {
            kill_hub_every: Some(secs(1)),
            ..ChaosConfig::default()
        };
        assert!(kill_without_hub.validate().is_err());
        let zero = ChaosConfig {
            drop_connections_every: Some(Duration::ZERO),
            ..ChaosConfig::default()
        };
        assert!(zero.validate().is_err());
        let upstream_without_hub = ChaosConfig {
            upstream: upstream(None, secs(1)),
            ..ChaosConfig::default()
        };
        assert!(upstream_without_hub.validate().is_err());
        let outage_too_long = ChaosConfig {
            hub: spawn(),
            upstream: upstream(Some(secs(2)), secs(2)),
            ..ChaosConfig::default()
        };
        assert!(outage_too_long.validate().is_err());
        let fine = ChaosConfig {
            hub: spawn(),
            kill_hub_every: Some(secs(5)),
            drop_connections_every: Some(secs(1)),
            upstream: upstream(Some(secs(3)), secs(1)),
        };
        assert!(fine.validate().is_ok());
        assert!(fine.is_active());
    }

    #[test]
    fn a_drop_shuts_the_registered_socket_once() {
        let state = ChaosState::new(3);
        let mut rng = Rng::new(5);
        assert!(!state.drop_one(&mut rng), "nothing registered yet");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let device =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut broker_side, _) = listener.accept().expect("accept");
        state.register(1, device.try_clone().expect("clone"));
        assert!(state.drop_one(&mut rng));
        // The broker sees the connection end without any packet.
        let mut buf = [0u8; 8];
        assert_eq!(broker_side.read(&mut buf).expect("read"), 0);
        assert_eq!(state.report(CheckPoint::Hub).connection_drops, 1);
        assert!(
            !state.drop_one(&mut rng),
            "a dropped socket is not dropped twice"
        );
        state.register(2, device);
        state.unregister(2);
        assert!(
            !state.drop_one(&mut rng),
            "an unregistered socket is not dropped"
        );
    }

    #[test]
    fn recovery_is_timed_from_the_restart_to_the_first_connack() {
        let state = ChaosState::new(1);
        let resumed = ConnectInfo {
            session_present: true,
            resent: 0,
        };
        let forgotten = ConnectInfo {
            session_present: false,
            resent: 0,
        };
        state.reconnected(Peer::Device, resumed);
        assert!(state.report(CheckPoint::Hub).recovery.is_empty());
        if let Ok(mut restarts) = state.restarts.lock() {
            restarts.push(Restart {
                spawned: Instant::now(),
                listening: Some(Duration::from_millis(40)),
                first_connack: None,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
        state.reconnected(Peer::UpstreamSubscriber, resumed);
        state.reconnected(Peer::Device, resumed);
        state.reconnected(Peer::HubSubscriber, forgotten);
        let report = state.report(CheckPoint::Hub);
        assert_eq!(report.hub_restarts, 1);
        let first = report.recovery[0].first_connack_ms.expect("a CONNACK");
        assert!(first >= 5.0, "{first}");
        assert_eq!(report.recovery_max_ms, first);
        assert_eq!(report.device_reconnects, 2);
        assert_eq!(report.subscriber_reconnects, 2);
        assert_eq!(report.sessions_not_resumed, 1);
    }
}
