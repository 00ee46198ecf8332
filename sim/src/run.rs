//! `tern-sim run`: a fleet of publishing devices and the subscribers that
//! check what arrives, optionally under chaos ([`crate::chaos`]): hub kills,
//! dropped connections and upstream outages, with persistent sessions that
//! survive them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use embedded_io_adapters::tokio_1::FromTokio;
use serde::Serialize;
use tern_client::{AsyncClient, Buffers, ConfigBuilder, ConnectInfo, Event, QoS};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::chaos::{
    BridgeMode, Brokers, ChaosConfig, ChaosReport, ChaosState, CheckPoint, ENVELOPE_FILTER, Peer,
};
use crate::payload::Telemetry;
use crate::stats::{Latency, Ledger, SeqSet, new_histogram};

/// QoS 1 publishes a device keeps awaiting PUBACK.
pub const WINDOW: usize = 16;
/// Topic filter of the checking subscribers.
pub const FILTER: &str = "tern/sim/+/telemetry";
/// Concurrent connection attempts.
const CONNECTS: usize = 64;
/// Longest wait for the first CONNACK of a client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a CONNACK when reconnecting (the broker may be restarting).
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First pause between reconnection attempts; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(20);
/// Longest pause between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_millis(500);
/// Session Expiry Interval of persistent sessions, seconds: long enough to outlive any
/// outage of a run, short enough that a broker forgets the run's sessions soon after.
const SESSION_EXPIRY_SECS: u32 = 600;

/// How long the end of a run waits for stragglers.
#[derive(Debug, Clone, Copy)]
struct Drains {
    /// Publishers wait this long for outstanding PUBACKs after publishing ends.
    ack: Duration,
    /// Subscribers wait this long for stragglers once every device is done.
    recv: Duration,
    /// A subscriber stops early when nothing arrived for this long after the end.
    idle: Duration,
}

/// Drains of a run without faults.
const CALM: Drains = Drains {
    ack: Duration::from_secs(3),
    recv: Duration::from_secs(5),
    idle: Duration::from_millis(750),
};

/// Drains of a chaos run: a fault just before the end costs a restart, reconnects and
/// resends, and an upstream backlog must drain.
const CHAOTIC: Drains = Drains {
    ack: Duration::from_secs(15),
    recv: Duration::from_secs(20),
    idle: Duration::from_secs(5),
};

/// How simulated clients treat their MQTT sessions and lost connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionMode {
    /// Clean start; a lost connection ends the client (counted in `errors`).
    #[default]
    Clean,
    /// Clean start off and a session expiry of ten minutes. A lost connection is
    /// re-established with backoff: devices resend their unacknowledged QoS 1
    /// publishes with DUP, subscribers resume their subscription and queue.
    Persistent,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Broker address, `host:port` (unused when the chaos configuration spawns the hub).
    pub target: String,
    /// Publishing devices.
    pub devices: usize,
    /// Checking subscribers (each receives everything).
    pub subscribers: usize,
    /// Messages per second per device; 0 publishes as fast as the in-flight
    /// window (QoS 1) or the socket (QoS 0) allows.
    pub rate: f64,
    /// Publish QoS (the subscribers subscribe with the same QoS).
    pub qos: QoS,
    /// Payload size in bytes.
    pub payload: usize,
    /// How long devices publish.
    pub duration: Duration,
    /// Messages per device at most.
    pub count: Option<u64>,
    /// Seeds start offsets, temperatures and fault choices.
    pub seed: u64,
    /// Print a progress line every second to stderr.
    pub progress: bool,
    /// Sessions of devices and subscribers; chaos runs always use persistent ones.
    pub sessions: SessionMode,
    /// Faults to inject and brokers to own.
    pub chaos: ChaosConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            target: "127.0.0.1:1883".into(),
            devices: 10,
            subscribers: 1,
            rate: 10.0,
            qos: QoS::AtLeastOnce,
            payload: 64,
            duration: Duration::from_secs(10),
            count: None,
            seed: 1,
            progress: false,
            sessions: SessionMode::Clean,
            chaos: ChaosConfig::default(),
        }
    }
}

/// Outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Publishing devices.
    pub devices: usize,
    /// Checking subscribers.
    pub subscribers: usize,
    /// Publish QoS.
    pub qos: u8,
    /// Payload bytes.
    pub payload: usize,
    /// Publishes written (a resend after a reconnect is not counted again).
    pub sent: u64,
    /// Publishes acknowledged (QoS 1: PUBACK with a success code; QoS 0: sent).
    pub acknowledged: u64,
    /// Publishes refused by the broker (PUBACK with an error code).
    pub refused: u64,
    /// Messages received by all subscribers, duplicates included.
    pub received: u64,
    /// Acknowledged messages a subscriber never received (summed over subscribers).
    pub lost: u64,
    /// Messages a subscriber received more than once.
    pub duplicates: u64,
    /// Messages of another run or unknown device.
    pub foreign: u64,
    /// Devices or subscribers that failed (connect or connection errors).
    pub errors: u64,
    /// First error message, if any.
    pub first_error: Option<String>,
    /// Seconds devices spent publishing.
    pub publish_secs: f64,
    /// Acknowledged publishes per second.
    pub published_per_sec: f64,
    /// Received messages per second (all subscribers), from the start of
    /// publishing to the last message received.
    pub delivered_per_sec: f64,
    /// End-to-end latency, send to receive.
    pub latency: Latency,
    /// QoS 1 with at least one subscriber: every subscriber reported, and none
    /// missed an acknowledged message. `None` when nothing was acknowledged by
    /// a broker (QoS 0) or nobody checked.
    pub zero_loss: Option<bool>,
    /// What the faults did, when any were injected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<ChaosReport>,
}

impl Summary {
    /// Whether acknowledged messages were lost: the run failed its check.
    pub fn lost_acknowledged(&self) -> bool {
        self.zero_loss == Some(false)
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    last_recv_us: AtomicU64,
}

struct Shared {
    cfg: RunConfig,
    run: u32,
    /// Where devices connect.
    target: String,
    /// Where subscribers connect: the hub, or the upstream broker behind its bridge.
    check_target: String,
    check_at: CheckPoint,
    /// Whether subscribers also take bridge envelopes apart.
    envelopes: bool,
    drains: Drains,
    counters: Counters,
    chaos: ChaosState,
    /// Unix micros at `epoch`.
    unix_base_us: u64,
    epoch: Instant,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.unix_base_us + micros(self.epoch.elapsed())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn persistent(&self) -> bool {
        self.cfg.sessions == SessionMode::Persistent
    }

    /// Counts a failed client (or fault) and keeps the first error for the summary.
    fn fail(&self, what: &str, e: &anyhow::Error) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(format!("{what}: {e:#}"));
        }
    }

    /// A client configuration for `client_id` in the run's session mode.
    fn client_config<'a>(&self, client_id: &'a str) -> anyhow::Result<tern_client::Config<'a>> {
        let builder = ConfigBuilder::new(client_id)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .keep_alive(30)
            .receive_maximum(u16::MAX)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(match self.cfg.sessions {
            SessionMode::Clean => builder.build(),
            SessionMode::Persistent => builder
                .clean_start(false)
                .session_expiry(SESSION_EXPIRY_SECS)
                .build(),
        })
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// splitmix64: small, seedable, good enough for jitter and temperatures.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        #[allow(
            clippy::cast_precision_loss,
            reason = "53 bits fit an f64 mantissa exactly"
        )]
        let x = (self.next_u64() >> 11) as f64;
        x / (1u64 << 53) as f64
    }
}

const SITES: [&str; 4] = ["north", "south", "east", "west"];

pub(crate) type Io = FromTokio<TcpStream>;

/// Who a connection is for: device `index` (whose socket chaos may drop) or a subscriber.
#[derive(Debug, Clone, Copy)]
enum Role {
    Device(u32),
    Subscriber,
}

/// Opens a socket to `target`. For a device of a run that drops connections, also returns
/// a second handle on the socket, for [`ChaosState::register`].
async fn open(
    shared: &Shared,
    target: &str,
    role: Role,
) -> anyhow::Result<(Io, Option<std::net::TcpStream>)> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    match role {
        Role::Device(_) if shared.cfg.chaos.drop_connections_every.is_some() => {
            let std = stream.into_std()?;
            let handle = std.try_clone()?;
            Ok((FromTokio::new(TcpStream::from_std(std)?), Some(handle)))
        }
        Role::Device(_) | Role::Subscriber => Ok((FromTokio::new(stream), None)),
    }
}

/// Opens a socket and completes CONNECT / CONNACK within `timeout`; the client resends
/// its unacknowledged publishes right after the CONNACK. A device's connection becomes
/// one chaos may drop once it is established.
async fn connect(
    shared: &Shared,
    client: &mut AsyncClient<'_, WINDOW>,
    target: &str,
    role: Role,
    timeout: Duration,
) -> anyhow::Result<(Io, ConnectInfo)> {
    let (mut io, handle) = open(shared, target, role).await?;
    let info = tokio::time::timeout(timeout, client.connect(&mut io, shared.now_ms()))
        .await
        .context("CONNACK timeout")?
        .map_err(|e| anyhow::anyhow!("connect: {e:?}"))?;
    if let (Role::Device(index), Some(handle)) = (role, handle) {
        shared.chaos.register(index, handle);
    }
    Ok((io, info))
}

/// Exponential backoff with jitter between reconnection attempts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: RECONNECT_MIN,
        }
    }

    /// The next pause (±25 %), doubling the one after.
    fn pause(&mut self, rng: &mut Rng) -> Duration {
        let pause = self.next.mul_f64(0.75 + 0.5 * rng.unit());
        self.next = (self.next * 2).min(RECONNECT_MAX);
        pause
    }

    fn reset(&mut self) {
        self.next = RECONNECT_MIN;
    }
}

/// Whether a publish error means the connection is gone (rather than a local problem).
fn connection_gone<E>(e: &tern_client::Error<E>) -> bool {
    matches!(
        e,
        tern_client::Error::Transport(_)
            | tern_client::Error::ConnectionClosed
            | tern_client::Error::Timeout
            | tern_client::Error::NotConnected
            | tern_client::Error::Disconnected(_)
            | tern_client::Error::Protocol(_)
    )
}

/// What one device did.
#[derive(Debug, Default)]
struct DeviceOutcome {
    /// Sequence numbers acknowledged.
    acked: SeqSet,
    /// Publishes written.
    sent: u64,
    /// Publishes refused by the broker.
    refused: u64,
}

/// One device: connects, waits for the common start, publishes, then waits
/// for its outstanding PUBACKs.
async fn device(
    shared: Arc<Shared>,
    index: u32,
    connects: Arc<Semaphore>,
    mut start: watch::Receiver<Option<Instant>>,
) -> DeviceOutcome {
    let mut outcome = DeviceOutcome::default();
    if let Err(e) = device_inner(&shared, index, &connects, &mut start, &mut outcome).await {
        shared.fail(&format!("device {index}"), &e);
    }
    outcome
}

#[allow(
    clippy::too_many_lines,
    reason = "one linear state machine reads better in one place"
)]
async fn device_inner(
    shared: &Shared,
    index: u32,
    connects: &Semaphore,
    start: &mut watch::Receiver<Option<Instant>>,
    out: &mut DeviceOutcome,
) -> anyhow::Result<()> {
    let cfg = &shared.cfg;
    let mut rng = Rng::new(cfg.seed ^ (u64::from(index) << 32) ^ 0x7465_726e);
    let client_id = format!("sim-{:08x}-{index}", shared.run);
    let topic = format!("tern/sim/{index}/telemetry");
    let site = SITES[usize::try_from(index).unwrap_or(0) % SITES.len()];
    let mut rx = vec![0u8; 1024];
    let mut tx = vec![0u8; (cfg.payload + 160) * (WINDOW + 1) + 256];
    let mut scratch = vec![0u8; cfg.payload + 64];
    let mut client: AsyncClient<'_, WINDOW> = AsyncClient::new(
        shared.client_config(&client_id)?,
        Buffers::new(&mut rx, &mut tx),
    );
    let role = Role::Device(index);
    // `None` while disconnected (persistent sessions only).
    let mut io = {
        let _permit = connects.acquire().await?;
        let (io, _) = connect(shared, &mut client, &shared.target, role, CONNECT_TIMEOUT).await?;
        Some(io)
    };
    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    let t0 = loop {
        if let Some(t) = *start.borrow_and_update() {
            break t;
        }
        start.changed().await?;
    };
    let end = t0 + cfg.duration;
    let hard_end = end + shared.drains.ack;
    let interval = if cfg.rate > 0.0 {
        Duration::from_secs_f64(1.0 / cfg.rate)
    } else {
        Duration::ZERO
    };
    let mut next_due = t0 + interval.mul_f64(rng.unit());
    let limit = cfg.count.unwrap_or(u64::MAX);
    let mut temperature = 15.0 + 10.0 * rng.unit();
    // Publishes awaiting PUBACK: packet id and sequence number.
    let mut pending: Vec<(u16, u64)> = Vec::with_capacity(WINDOW);
    // Publishes the client keeps in flight whose write failed, so their packet id is
    // unknown here. A PUBACK for an unknown id is theirs; it is credited only when there
    // is exactly one, so an acknowledgement is never credited to the wrong message.
    let mut orphans: Vec<u64> = Vec::new();
    let mut window = WINDOW;
    let mut backoff = Backoff::new();
    let mut seq: u64 = 0;
    loop {
        let now = Instant::now();
        let publishing = now < end && seq < limit;
        let inflight = client.session().inflight_len();
        if (!publishing && inflight == 0) || now >= hard_end {
            break;
        }
        let Some(conn) = io.as_mut() else {
            match connect(shared, &mut client, &shared.target, role, RECONNECT_TIMEOUT).await {
                Ok((new, info)) => {
                    io = Some(new);
                    backoff.reset();
                    shared.chaos.reconnected(Peer::Device, info);
                }
                Err(_) => {
                    let pause = backoff.pause(&mut rng);
                    tokio::time::sleep_until((Instant::now() + pause).min(hard_end)).await;
                }
            }
            continue;
        };
        let mut burst = 0;
        let mut gone = None;
        while publishing
            && seq < limit
            && burst < 64
            && Instant::now() >= next_due
            && (cfg.qos == QoS::AtMostOnce || client.session().inflight_len() < window)
        {
            temperature += (rng.unit() - 0.5) * 0.2;
            #[allow(clippy::cast_possible_truncation, reason = "a temperature fits an f32")]
            let temp = temperature as f32;
            let temp_text = format!("{temp:.2}");
            let t = Telemetry::padded(shared.run, index, seq, shared.now_us(), temp, cfg.payload);
            let before = client.session().inflight_len();
            let id = client
                .publish_postcard(
                    conn,
                    &topic,
                    &t,
                    cfg.qos,
                    &[
                        ("site", site),
                        ("kind", "telemetry"),
                        ("temperature", &temp_text),
                    ],
                    &mut scratch,
                    shared.now_ms(),
                )
                .await;
            let id = match id {
                Ok(id) => Some(id),
                // The broker's Receive Maximum is below our window.
                Err(tern_client::Error::InflightFull) if before > 0 => {
                    window = before;
                    break;
                }
                Err(e) if shared.persistent() && connection_gone(&e) => {
                    gone = Some(e);
                    if client.session().inflight_len() == before {
                        // Not kept: published again after the reconnect.
                        break;
                    }
                    // Kept in flight: resent by the next connect.
                    None
                }
                Err(e) => bail!("publish: {e:?}"),
            };
            out.sent += 1;
            shared.counters.sent.fetch_add(1, Ordering::Relaxed);
            match (cfg.qos, id) {
                (QoS::AtMostOnce, _) => {
                    out.acked.insert(seq);
                    shared.counters.acked.fetch_add(1, Ordering::Relaxed);
                }
                (_, Some(id)) => pending.push((id, seq)),
                (_, None) => orphans.push(seq),
            }
            seq += 1;
            burst += 1;
            next_due += interval;
            let now = Instant::now();
            if interval > Duration::ZERO && next_due + Duration::from_secs(1) < now {
                // Far behind (window full for long): do not burst to catch up.
                next_due = now;
            }
            if gone.is_some() {
                break;
            }
        }
        if gone.is_some() {
            shared.chaos.unregister(index);
            io = None;
            continue;
        }
        let can_publish = publishing
            && seq < limit
            && (cfg.qos == QoS::AtMostOnce || client.session().inflight_len() < window);
        let wake = if can_publish {
            next_due.min(end)
        } else if publishing {
            end
        } else {
            hard_end
        };
        tokio::select! {
            biased;
            r = client.poll(conn, shared.now_ms()) => match r {
                Ok(Some(Event::Published { packet_id, reason })) => {
                    let seq = match pending.iter().position(|(id, _)| *id == packet_id) {
                        Some(pos) => Some(pending.swap_remove(pos).1),
                        None if orphans.len() == 1 => orphans.pop(),
                        None => None,
                    };
                    if let Some(seq) = seq {
                        if reason.is_error() {
                            out.refused += 1;
                        } else {
                            out.acked.insert(seq);
                            shared.counters.acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) if shared.persistent() => {
                    shared.chaos.unregister(index);
                    io = None;
                }
                Err(e) => bail!("poll: {e:?}"),
            },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    if let Some(conn) = io.as_mut() {
        let _ = client.disconnect(conn).await;
    }
    shared.chaos.unregister(index);
    Ok(())
}

/// One checking subscriber. Runs until told the devices are done and then
/// everything acknowledged arrived, nothing arrived for a while, or the drain
/// time is over.
async fn subscriber(
    shared: Arc<Shared>,
    index: usize,
    ready: tokio::sync::mpsc::Sender<()>,
    mut done: watch::Receiver<Option<Arc<Vec<SeqSet>>>>,
) -> Ledger {
    let mut ledger = Ledger::new(shared.cfg.devices);
    if let Err(e) = subscriber_inner(&shared, index, &ready, &mut done, &mut ledger).await {
        shared.fail(&format!("subscriber {index}"), &e);
        drop(ready);
    }
    ledger
}

/// Subscribes on a fresh connection and waits for the SUBACK.
async fn subscribe(
    shared: &Shared,
    client: &mut AsyncClient<'_, WINDOW>,
    io: &mut Io,
) -> anyhow::Result<()> {
    let qos = shared.cfg.qos;
    let mut filters = vec![(FILTER, qos)];
    if shared.envelopes {
        filters.push((ENVELOPE_FILTER, qos));
    }
    subscribe_filters(client, io, &filters, || shared.now_ms()).await
}

/// Subscribes to `filters` and waits for the SUBACK (at most [`CONNECT_TIMEOUT`]); a
/// refused filter is an error. `now_ms` reads the session clock.
pub(crate) async fn subscribe_filters<const N: usize>(
    client: &mut AsyncClient<'_, N>,
    io: &mut Io,
    filters: &[(&str, QoS)],
    now_ms: impl Fn() -> u64,
) -> anyhow::Result<()> {
    let sub = client
        .subscribe(io, filters, now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("subscribe: {e:?}"))?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let ev = tokio::time::timeout_at(deadline, client.poll(io, now_ms()))
            .await
            .context("SUBACK timeout")?
            .map_err(|e| anyhow::anyhow!("poll: {e:?}"))?;
        if let Some(Event::Subscribed {
            packet_id,
            reason_codes,
        }) = ev
            && packet_id == sub
        {
            if reason_codes.iter().any(|r| r.is_error()) {
                bail!("subscription refused");
            }
            return Ok(());
        }
    }
}

/// Records one received message: a telemetry payload, or (upstream, envelope mode) an
/// envelope of them.
fn record(shared: &Shared, ledger: &mut Ledger, topic: &str, payload: &[u8]) {
    let now_us = shared.now_us();
    let mut one = |payload: &[u8]| match crate::payload::decode(payload) {
        Some(t) if t.run == shared.run => {
            ledger.record(t.device, t.seq, now_us.saturating_sub(t.sent_us));
            shared.counters.received.fetch_add(1, Ordering::Relaxed);
        }
        _ => ledger.foreign += 1,
    };
    if shared.envelopes && !topic.starts_with("tern/sim/") {
        match tern_envelope::decode(payload) {
            Ok(envelope) => envelope.messages.iter().for_each(|m| one(&m.payload)),
            Err(_) => ledger.foreign += 1,
        }
    } else {
        one(payload);
    }
    shared
        .counters
        .last_recv_us
        .fetch_max(micros(shared.epoch.elapsed()), Ordering::Relaxed);
}

#[allow(
    clippy::too_many_lines,
    reason = "one linear state machine reads better in one place"
)]
async fn subscriber_inner(
    shared: &Shared,
    index: usize,
    ready: &tokio::sync::mpsc::Sender<()>,
    done: &mut watch::Receiver<Option<Arc<Vec<SeqSet>>>>,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    let cfg = &shared.cfg;
    let drains = shared.drains;
    let client_id = format!("sim-{:08x}-sub-{index}", shared.run);
    let mut rng = Rng::new(cfg.seed ^ 0x7375_6273 ^ u64::try_from(index).unwrap_or(0));
    let mut rx = vec![0u8; 64 * 1024 + cfg.payload];
    let mut tx = vec![0u8; 4096];
    let mut client: AsyncClient<'_, WINDOW> = AsyncClient::new(
        shared.client_config(&client_id)?,
        Buffers::new(&mut rx, &mut tx),
    );
    let peer = match shared.check_at {
        CheckPoint::Hub => Peer::HubSubscriber,
        CheckPoint::Upstream => Peer::UpstreamSubscriber,
    };
    let target = &shared.check_target;
    let (mut first, _) = connect(
        shared,
        &mut client,
        target,
        Role::Subscriber,
        CONNECT_TIMEOUT,
    )
    .await?;
    subscribe(shared, &mut client, &mut first).await?;
    // `None` while disconnected (persistent sessions only).
    let mut io = Some(first);
    ready.send(()).await?;
    let mut ended: Option<(Instant, Arc<Vec<SeqSet>>)> = None;
    let mut complete = false;
    let mut last_recv = Instant::now();
    let mut backoff = Backoff::new();
    let mut resubscribe = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some((at, _)) = &ended {
            let now = Instant::now();
            if complete || now >= *at + drains.recv || now >= last_recv.max(*at) + drains.idle {
                break;
            }
        } else if let Some(acked) = done.borrow_and_update().clone() {
            complete = ledger.lost(&acked) == 0;
            ended = Some((Instant::now(), acked));
            continue;
        }
        let Some(conn) = io.as_mut() else {
            match connect(
                shared,
                &mut client,
                target,
                Role::Subscriber,
                RECONNECT_TIMEOUT,
            )
            .await
            {
                Ok((mut new, info)) => {
                    backoff.reset();
                    shared.chaos.reconnected(peer, info);
                    // A broker that forgot the session starts a new one without the
                    // subscription: subscribe again (what it had queued is gone, and the
                    // loss check will say so). Until a SUBACK, every connection does.
                    resubscribe |= !info.session_present;
                    if !resubscribe || subscribe(shared, &mut client, &mut new).await.is_ok() {
                        resubscribe = false;
                        io = Some(new);
                    }
                }
                Err(_) => {
                    let pause = backoff.pause(&mut rng);
                    tokio::time::sleep(pause).await;
                }
            }
            continue;
        };
        tokio::select! {
            biased;
            r = client.poll(conn, shared.now_ms()) => match r {
                Ok(Some(Event::Message(m))) => {
                    record(shared, ledger, m.topic, m.payload);
                    last_recv = Instant::now();
                }
                Ok(_) => {}
                Err(_) if shared.persistent() => io = None,
                Err(e) => bail!("poll: {e:?}"),
            },
            _ = tick.tick() => {
                if let Some((_, acked)) = &ended {
                    complete = ledger.lost(acked) == 0;
                }
            }
            _ = done.changed(), if ended.is_none() => {}
        }
    }
    if let Some(conn) = io.as_mut() {
        let _ = client.disconnect(conn).await;
    }
    Ok(())
}

/// Runs the simulation and returns its summary.
#[allow(
    clippy::too_many_lines,
    reason = "the phases of a run, in order, read better in one place"
)]
pub async fn run(cfg: RunConfig) -> anyhow::Result<Summary> {
    if cfg.devices == 0 {
        bail!("--devices must be at least 1");
    }
    cfg.chaos.validate()?;
    let mut cfg = cfg;
    if cfg.chaos.is_active() {
        cfg.sessions = SessionMode::Persistent;
    }
    let devices = u32::try_from(cfg.devices).context("too many devices")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let run_id = u32::try_from(
        Rng::new(cfg.seed ^ u64::from(now.subsec_nanos()) ^ now.as_secs()).next_u64() >> 32,
    )
    .unwrap_or(0);
    let brokers = if cfg.chaos.hub.is_some() {
        Some(Brokers::start(&cfg.chaos, run_id).await?)
    } else {
        None
    };
    let target = brokers
        .as_ref()
        .and_then(Brokers::hub_addr)
        .unwrap_or_else(|| cfg.target.clone());
    let upstream = brokers.as_ref().and_then(Brokers::upstream_addr);
    let check_at = if upstream.is_some() {
        CheckPoint::Upstream
    } else {
        CheckPoint::Hub
    };
    let envelopes = cfg
        .chaos
        .upstream
        .as_ref()
        .is_some_and(|u| u.mode == BridgeMode::Envelope);
    let shared = Arc::new(Shared {
        run: run_id,
        check_target: upstream.unwrap_or_else(|| target.clone()),
        target,
        check_at,
        envelopes,
        drains: if cfg.chaos.is_active() { CHAOTIC } else { CALM },
        counters: Counters::default(),
        chaos: ChaosState::new(cfg.devices),
        unix_base_us: micros(now),
        epoch: Instant::now(),
        first_error: std::sync::Mutex::new(None),
        cfg,
    });
    let cfg = &shared.cfg;

    // Subscribers first, so nothing is published before they listen. They
    // run on their own thread and runtime so that a hundred busy devices do
    // not starve them of CPU: the broker, not the simulator, should be what
    // limits delivery.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(cfg.subscribers.max(1));
    let (done_tx, done_rx) = watch::channel(None);
    let (ledgers_tx, ledgers_rx) = tokio::sync::oneshot::channel();
    {
        let shared = shared.clone();
        let n = cfg.subscribers;
        std::thread::Builder::new()
            .name("tern-sim-subscribers".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(n.clamp(1, 2))
                    .enable_all()
                    .build();
                let ledgers = match rt {
                    Ok(rt) => rt.block_on(async move {
                        let subs: Vec<_> = (0..n)
                            .map(|i| {
                                tokio::spawn(subscriber(
                                    shared.clone(),
                                    i,
                                    ready_tx.clone(),
                                    done_rx.clone(),
                                ))
                            })
                            .collect();
                        drop(ready_tx);
                        let mut out = Vec::with_capacity(n);
                        for s in subs {
                            if let Ok(l) = s.await {
                                out.push(l);
                            }
                        }
                        out
                    }),
                    Err(e) => {
                        shared.fail("subscriber runtime", &e.into());
                        Vec::new()
                    }
                };
                let _ = ledgers_tx.send(ledgers);
            })?;
    }
    let mut ready = 0;
    while ready < cfg.subscribers && ready_rx.recv().await.is_some() {
        ready += 1;
    }

    let (start_tx, start_rx) = watch::channel(None);
    let connects = Arc::new(Semaphore::new(CONNECTS));
    let mut devs = Vec::new();
    for i in 0..devices {
        devs.push(tokio::spawn(device(
            shared.clone(),
            i,
            connects.clone(),
            start_rx.clone(),
        )));
    }
    // Wait until every device connected (or failed), at most 30 s.
    let connect_deadline = Instant::now() + Duration::from_secs(30);
    while shared.counters.connected.load(Ordering::Relaxed)
        + shared.counters.failed.load(Ordering::Relaxed)
        < u64::from(devices) + (cfg.subscribers - ready) as u64
        && Instant::now() < connect_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let _ = start_tx.send(Some(t0));

    // The fault schedule runs beside the devices; it owns the brokers until it ends.
    let (stop_tx, stop_rx) = watch::channel(false);
    let conductor = brokers.map(|mut brokers| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let end = t0 + shared.cfg.duration;
            let result = crate::chaos::conduct(
                &mut brokers,
                &shared.cfg.chaos,
                &shared.chaos,
                shared.cfg.seed,
                t0,
                end,
                stop_rx,
            )
            .await;
            if let Err(e) = &result {
                shared.fail("chaos", e);
            }
            brokers
        })
    });

    let progress = cfg.progress.then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
            let mut last = 0;
            let chaos = shared.cfg.chaos.is_active();
            loop {
                tick.tick().await;
                let c = &shared.counters;
                let recv = c.received.load(Ordering::Relaxed);
                let faults = if chaos {
                    format!(
                        "  faults {}  reconnects {}",
                        shared.chaos.faults(),
                        shared.chaos.reconnects()
                    )
                } else {
                    String::new()
                };
                eprintln!(
                    "{:>4}s  sent {}  acked {}  received {}  ({}/s)  errors {}{faults}",
                    t0.elapsed().as_secs(),
                    c.sent.load(Ordering::Relaxed),
                    c.acked.load(Ordering::Relaxed),
                    recv,
                    recv - last,
                    c.failed.load(Ordering::Relaxed),
                );
                last = recv;
            }
        })
    });

    let mut acked_sets = Vec::with_capacity(cfg.devices);
    let (mut sent, mut refused) = (0, 0);
    for d in devs {
        let outcome = d.await?;
        acked_sets.push(outcome.acked);
        sent += outcome.sent;
        refused += outcome.refused;
    }
    let _ = stop_tx.send(true);
    // Faults end before the drain: an outage in progress ends, the hub is up.
    let brokers = match conductor {
        Some(c) => Some(c.await?),
        None => None,
    };
    let publish_secs = (Instant::now().min(t0 + cfg.duration) - t0).as_secs_f64();
    let acked_sets = Arc::new(acked_sets);
    let acknowledged: u64 = acked_sets.iter().map(SeqSet::len).sum();
    let _ = done_tx.send(Some(acked_sets.clone()));

    let mut latency = new_histogram();
    let (mut received, mut lost, mut duplicates, mut foreign) = (0, 0, 0, 0);
    let ledgers = ledgers_rx.await?;
    for ledger in &ledgers {
        received += ledger.total;
        duplicates += ledger.duplicates;
        foreign += ledger.foreign;
        lost += ledger.lost(&acked_sets);
        latency.add(&ledger.latency_us).ok();
    }
    if let Some(p) = progress {
        p.abort();
    }
    drop(brokers);
    let last_recv_us = shared.counters.last_recv_us.load(Ordering::Relaxed);
    let recv_secs = (Duration::from_micros(last_recv_us).saturating_sub(t0 - shared.epoch))
        .as_secs_f64()
        .max(publish_secs.min(1e-3));
    #[allow(
        clippy::cast_precision_loss,
        reason = "message counts are far below 2^52"
    )]
    let per_sec = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let first_error = shared.first_error.lock().ok().and_then(|e| e.clone());
    let zero_loss = (cfg.qos == QoS::AtLeastOnce && cfg.subscribers > 0)
        .then_some(lost == 0 && ledgers.len() == cfg.subscribers);
    Ok(Summary {
        devices: cfg.devices,
        subscribers: cfg.subscribers,
        qos: cfg.qos as u8,
        payload: cfg.payload,
        sent,
        acknowledged,
        refused,
        received,
        lost,
        duplicates,
        foreign,
        errors: shared.counters.failed.load(Ordering::Relaxed),
        first_error,
        publish_secs,
        published_per_sec: per_sec(acknowledged, publish_secs),
        delivered_per_sec: per_sec(received, recv_secs),
        latency: Latency::of(&latency),
        zero_loss,
        chaos: cfg
            .chaos
            .is_active()
            .then(|| shared.chaos.report(shared.check_at)),
    })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = &self.latency;
        writeln!(
            f,
            "devices {}  subscribers {}  qos {}  payload {} B",
            self.devices, self.subscribers, self.qos, self.payload
        )?;
        writeln!(
            f,
            "sent {}  acknowledged {}  refused {}  received {}  lost {}  duplicates {}  errors {}",
            self.sent,
            self.acknowledged,
            self.refused,
            self.received,
            self.lost,
            self.duplicates,
            self.errors
        )?;
        writeln!(
            f,
            "throughput {:.0} msgs/s published, {:.0} msgs/s delivered",
            self.published_per_sec, self.delivered_per_sec
        )?;
        write!(
            f,
            "latency p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        )?;
        if let Some(c) = &self.chaos {
            let checked = match c.checked_at {
                CheckPoint::Hub => "at the hub",
                CheckPoint::Upstream => "upstream, behind the bridge",
            };
            write!(
                f,
                "\nchaos: hub kills {}  restarts {}  connection drops {}  upstream outages {} \
                 ({:.1} s down)",
                c.hub_kills,
                c.hub_restarts,
                c.connection_drops,
                c.upstream_outages,
                c.upstream_down_secs
            )?;
            write!(
                f,
                "\nreconnects: devices {}  subscribers {}  sessions not resumed {}  (checked {checked})",
                c.device_reconnects, c.subscriber_reconnects, c.sessions_not_resumed
            )?;
            if !c.recovery.is_empty() {
                let restarts: Vec<String> = c
                    .recovery
                    .iter()
                    .map(|r| {
                        let ms =
                            |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
                        format!("{}/{}", ms(r.listening_ms), ms(r.first_connack_ms))
                    })
                    .collect();
                write!(
                    f,
                    "\nrecovery (ms, restart → listening / first CONNACK): {}  max {:.0}",
                    restarts.join(" "),
                    c.recovery_max_ms
                )?;
            }
        }
        if let Some(zero) = self.zero_loss {
            let verdict = if zero { "yes" } else { "NO" };
            write!(f, "\nzero loss of acknowledged messages: {verdict}")?;
        }
        if let Some(e) = &self.first_error {
            write!(f, "\nfirst error: {e}")?;
        }
        Ok(())
    }
}
