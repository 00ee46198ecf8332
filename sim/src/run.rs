//! `tern-sim run`: a fleet of publishing devices and the subscribers that
//! check what arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use embedded_io_adapters::tokio_1::FromTokio;
use serde::Serialize;
use tern_client::{AsyncClient, Buffers, ConfigBuilder, Event, QoS};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::payload::Telemetry;
use crate::stats::{Latency, Ledger, SeqSet, new_histogram};

/// QoS 1 publishes a device keeps awaiting PUBACK.
pub const WINDOW: usize = 16;
/// Topic filter of the checking subscribers.
pub const FILTER: &str = "tern/sim/+/telemetry";
/// How long publishers wait for outstanding PUBACKs after the run ends.
const ACK_DRAIN: Duration = Duration::from_secs(3);
/// How long subscribers wait for stragglers once every device is done.
const RECV_DRAIN: Duration = Duration::from_secs(5);
/// A subscriber stops early when nothing arrived for this long after the end.
const RECV_IDLE: Duration = Duration::from_millis(750);
/// Concurrent connection attempts.
const CONNECTS: usize = 64;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Broker address, `host:port`.
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
    /// Seeds start offsets and temperatures.
    pub seed: u64,
    /// Print a progress line every second to stderr.
    pub progress: bool,
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
    /// Publishes written.
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
    counters: Counters,
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

    fn fail(&self, what: &str, e: &anyhow::Error) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(format!("{what}: {e:#}"));
        }
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

async fn open(target: &str) -> anyhow::Result<FromTokio<TcpStream>> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    Ok(FromTokio::new(stream))
}

/// One device: connects, waits for the common start, publishes, then waits
/// for its outstanding PUBACKs. Returns the sequence numbers acknowledged.
async fn device(
    shared: Arc<Shared>,
    index: u32,
    connects: Arc<Semaphore>,
    mut start: watch::Receiver<Option<Instant>>,
) -> (SeqSet, u64, u64) {
    let mut acked = SeqSet::new();
    let mut sent = 0;
    let mut refused = 0;
    if let Err(e) = device_inner(
        &shared,
        index,
        &connects,
        &mut start,
        &mut acked,
        &mut sent,
        &mut refused,
    )
    .await
    {
        shared.fail(&format!("device {index}"), &e);
    }
    (acked, sent, refused)
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
    acked: &mut SeqSet,
    sent: &mut u64,
    refused: &mut u64,
) -> anyhow::Result<()> {
    let cfg = &shared.cfg;
    let mut rng = Rng::new(cfg.seed ^ (u64::from(index) << 32) ^ 0x7465_726e);
    let client_id = format!("sim-{:08x}-{index}", shared.run);
    let topic = format!("tern/sim/{index}/telemetry");
    let site = SITES[usize::try_from(index).unwrap_or(0) % SITES.len()];
    let mut rx = vec![0u8; 1024];
    let mut tx = vec![0u8; (cfg.payload + 160) * (WINDOW + 1) + 256];
    let mut scratch = vec![0u8; cfg.payload + 64];
    let config = ConfigBuilder::new(&client_id)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .keep_alive(30)
        .build();
    let mut client: AsyncClient<'_, WINDOW> =
        AsyncClient::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = {
        let _permit = connects.acquire().await?;
        let mut io = open(&cfg.target).await?;
        tokio::time::timeout(
            Duration::from_secs(10),
            client.connect(&mut io, shared.now_ms()),
        )
        .await
        .context("CONNACK timeout")?
        .map_err(|e| anyhow::anyhow!("connect: {e:?}"))?;
        io
    };
    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    let t0 = loop {
        if let Some(t) = *start.borrow_and_update() {
            break t;
        }
        start.changed().await?;
    };
    let end = t0 + cfg.duration;
    let hard_end = end + ACK_DRAIN;
    let interval = if cfg.rate > 0.0 {
        Duration::from_secs_f64(1.0 / cfg.rate)
    } else {
        Duration::ZERO
    };
    let mut next_due = t0 + interval.mul_f64(rng.unit());
    let limit = cfg.count.unwrap_or(u64::MAX);
    let mut temperature = 15.0 + 10.0 * rng.unit();
    let mut pending: Vec<(u16, u64)> = Vec::with_capacity(WINDOW);
    let mut window = WINDOW;
    let mut seq: u64 = 0;
    loop {
        let now = Instant::now();
        let publishing = now < end && seq < limit;
        if (!publishing && pending.is_empty()) || now >= hard_end {
            break;
        }
        let mut burst = 0;
        while publishing
            && seq < limit
            && burst < 64
            && Instant::now() >= next_due
            && (cfg.qos == QoS::AtMostOnce || pending.len() < window)
        {
            temperature += (rng.unit() - 0.5) * 0.2;
            #[allow(clippy::cast_possible_truncation, reason = "a temperature fits an f32")]
            let temp = temperature as f32;
            let temp_text = format!("{temp:.2}");
            let t = Telemetry::padded(shared.run, index, seq, shared.now_us(), temp, cfg.payload);
            let id = client
                .publish_postcard(
                    &mut io,
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
                Ok(id) => id,
                // The broker's Receive Maximum is below our window.
                Err(tern_client::Error::InflightFull) if !pending.is_empty() => {
                    window = pending.len();
                    break;
                }
                Err(e) => bail!("publish: {e:?}"),
            };
            *sent += 1;
            shared.counters.sent.fetch_add(1, Ordering::Relaxed);
            if cfg.qos == QoS::AtMostOnce {
                acked.insert(seq);
                shared.counters.acked.fetch_add(1, Ordering::Relaxed);
            } else {
                pending.push((id, seq));
            }
            seq += 1;
            burst += 1;
            next_due += interval;
            let now = Instant::now();
            if interval > Duration::ZERO && next_due + Duration::from_secs(1) < now {
                // Far behind (window full for long): do not burst to catch up.
                next_due = now;
            }
        }
        let can_publish =
            publishing && seq < limit && (cfg.qos == QoS::AtMostOnce || pending.len() < window);
        let wake = if can_publish {
            next_due.min(end)
        } else if publishing {
            end
        } else {
            hard_end
        };
        tokio::select! {
            biased;
            r = client.poll(&mut io, shared.now_ms()) => {
                if let Some(Event::Published { packet_id, reason }) =
                    r.map_err(|e| anyhow::anyhow!("poll: {e:?}"))?
                    && let Some(pos) = pending.iter().position(|(id, _)| *id == packet_id)
                {
                    let (_, s) = pending.swap_remove(pos);
                    if reason.is_error() {
                        *refused += 1;
                    } else {
                        acked.insert(s);
                        shared.counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    let _ = client.disconnect(&mut io).await;
    Ok(())
}

/// One checking subscriber. Runs until told the devices are done and then
/// everything acknowledged arrived, nothing arrived for a while, or the drain
/// time is over.
async fn subscriber(
    shared: Arc<Shared>,
    index: usize,
    ready: tokio::sync::mpsc::Sender<()>,
    mut done: watch::Receiver<Option<u64>>,
) -> Ledger {
    let mut ledger = Ledger::new(shared.cfg.devices);
    if let Err(e) = subscriber_inner(&shared, index, &ready, &mut done, &mut ledger).await {
        shared.fail(&format!("subscriber {index}"), &e);
        drop(ready);
    }
    ledger
}

async fn subscriber_inner(
    shared: &Shared,
    index: usize,
    ready: &tokio::sync::mpsc::Sender<()>,
    done: &mut watch::Receiver<Option<u64>>,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    let cfg = &shared.cfg;
    let client_id = format!("sim-{:08x}-sub-{index}", shared.run);
    let mut rx = vec![0u8; 64 * 1024 + cfg.payload];
    let mut tx = vec![0u8; 4096];
    let config = ConfigBuilder::new(&client_id)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .keep_alive(30)
        .receive_maximum(u16::MAX)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .build();
    let mut client: AsyncClient<'_, WINDOW> =
        AsyncClient::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = open(&cfg.target).await?;
    client
        .connect(&mut io, shared.now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e:?}"))?;
    let sub = client
        .subscribe(&mut io, &[(FILTER, cfg.qos)], shared.now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("subscribe: {e:?}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, client.poll(&mut io, shared.now_ms()))
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
            break;
        }
    }
    ready.send(()).await?;
    let mut ended: Option<(Instant, u64)> = None;
    let mut last_recv = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some((at, expected)) = ended {
            let now = Instant::now();
            if ledger.unique() >= expected
                || now >= at + RECV_DRAIN
                || now >= last_recv.max(at) + RECV_IDLE
            {
                break;
            }
        } else if let Some(expected) = *done.borrow_and_update() {
            ended = Some((Instant::now(), expected));
            continue;
        }
        tokio::select! {
            biased;
            r = client.poll(&mut io, shared.now_ms()) => {
                if let Some(Event::Message(m)) = r.map_err(|e| anyhow::anyhow!("poll: {e:?}"))? {
                    let now_us = shared.now_us();
                    match crate::payload::decode(m.payload) {
                        Some(t) if t.run == shared.run => {
                            ledger.record(t.device, t.seq, now_us.saturating_sub(t.sent_us));
                            shared.counters.received.fetch_add(1, Ordering::Relaxed);
                            shared.counters.last_recv_us.fetch_max(micros(shared.epoch.elapsed()), Ordering::Relaxed);
                            last_recv = Instant::now();
                        }
                        _ => ledger.foreign += 1,
                    }
                }
            }
            _ = tick.tick() => {}
            _ = done.changed(), if ended.is_none() => {}
        }
    }
    let _ = client.disconnect(&mut io).await;
    Ok(())
}

/// Runs the simulation and returns its summary.
pub async fn run(cfg: RunConfig) -> anyhow::Result<Summary> {
    if cfg.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let devices = u32::try_from(cfg.devices).context("too many devices")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let run_id = u32::try_from(
        Rng::new(cfg.seed ^ u64::from(now.subsec_nanos()) ^ now.as_secs()).next_u64() >> 32,
    )
    .unwrap_or(0);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        run: run_id,
        counters: Counters::default(),
        unix_base_us: micros(now),
        epoch: Instant::now(),
        first_error: std::sync::Mutex::new(None),
    });

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

    let progress = cfg.progress.then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
            let mut last = 0;
            loop {
                tick.tick().await;
                let c = &shared.counters;
                let recv = c.received.load(Ordering::Relaxed);
                eprintln!(
                    "{:>4}s  sent {}  acked {}  received {}  ({}/s)  errors {}",
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
        let (set, s, r) = d.await?;
        acked_sets.push(set);
        sent += s;
        refused += r;
    }
    let publish_secs = (Instant::now().min(t0 + cfg.duration) - t0).as_secs_f64();
    let acknowledged: u64 = acked_sets.iter().map(SeqSet::len).sum();
    let _ = done_tx.send(Some(acknowledged));

    let mut latency = new_histogram();
    let (mut received, mut lost, mut duplicates, mut foreign) = (0, 0, 0, 0);
    for ledger in ledgers_rx.await? {
        received += ledger.total;
        duplicates += ledger.duplicates;
        foreign += ledger.foreign;
        lost += ledger.lost(&acked_sets);
        latency.add(&ledger.latency_us).ok();
    }
    if let Some(p) = progress {
        p.abort();
    }
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
        if let Some(e) = &self.first_error {
            write!(f, "\nfirst error: {e}")?;
        }
        Ok(())
    }
}
