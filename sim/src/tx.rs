//! `tern-sim tx`: devices running transactions of K half messages through the
//! firmware client's transaction API, and a subscriber checking what arrives.
//!
//! One phase per transaction size K. Every device loops: begin a transaction,
//! publish K half messages (QoS 1, in-flight window [`WINDOW`]), wait for their
//! PUBACKs, then commit, or roll back with probability `rollback` (always when
//! the hub refused a half message), and wait for the outcome's PUBACK: the
//! commit latency is the time from sending the commit to that PUBACK. The
//! subscriber proves the hub's promises: a committed transaction arrives
//! whole, each message once and in publish order, and not before its commit
//! was sent; a rolled-back transaction never arrives. `--compare-plain` runs
//! the same devices publishing plain QoS 1 messages for the cost comparison.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use embedded_io_adapters::tokio_1::FromTokio;
use serde::{Deserialize, Serialize};
use tern_client::{
    AsyncClient, Buffers, ConfigBuilder, Event, QoS, ReasonCode, TxAction, TxId, TxOutcome,
    TxResolution, TxSequence,
};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::run::Rng;
use crate::stats::{Latency, new_histogram};

/// QoS 1 publishes a device keeps awaiting PUBACK.
pub const WINDOW: usize = 16;
/// How long devices may take to finish the transaction in progress once the
/// phase ends.
const FINISH_DRAIN: Duration = Duration::from_secs(10);
/// How long the subscriber waits for stragglers once every device is done.
const RECV_DRAIN: Duration = Duration::from_secs(5);
/// The subscriber stops early when nothing arrived for this long after the end.
const RECV_IDLE: Duration = Duration::from_millis(750);
/// Once everything committed arrived, how long the subscriber keeps listening
/// for late leaks and duplicates.
const RECV_SETTLE: Duration = Duration::from_millis(250);
/// Concurrent connection attempts.
const CONNECTS: usize = 64;
/// Largest transaction size accepted on the command line (the hub's default
/// `max_messages` is 10 000).
pub const MAX_MESSAGES_PER_TX: u32 = 10_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct TxConfig {
    /// Broker address, `host:port`.
    pub target: String,
    /// Devices running transactions concurrently.
    pub devices: usize,
    /// Messages per transaction, one phase each.
    pub sizes: Vec<u32>,
    /// How long each phase starts new transactions.
    pub duration: Duration,
    /// Fraction of transactions rolled back instead of committed, `0..=1`.
    pub rollback: f64,
    /// Payload bytes per message (at least the 30-byte header).
    pub payload: usize,
    /// Seeds the rollback decisions.
    pub seed: u64,
    /// Also run the devices publishing plain QoS 1 messages.
    pub compare_plain: bool,
}

impl Default for TxConfig {
    fn default() -> Self {
        Self {
            target: "127.0.0.1:1883".into(),
            devices: 10,
            sizes: vec![1, 10, 100],
            duration: Duration::from_secs(5),
            rollback: 0.1,
            payload: 64,
            seed: 1,
            compare_plain: false,
        }
    }
}

/// One transaction-size phase.
#[derive(Debug, Clone, Serialize)]
pub struct TxRow {
    /// Messages per transaction (K).
    pub messages_per_tx: u32,
    /// Devices.
    pub devices: usize,
    /// Seconds from the start to the last outcome.
    pub secs: f64,
    /// Transactions committed (PUBACK success).
    pub committed: u64,
    /// Transactions rolled back (PUBACK success).
    pub rolled_back: u64,
    /// Of those, rolled back because the hub refused a half message.
    pub rolled_back_refused: u64,
    /// Commits or rollbacks the hub answered with an error code.
    pub failed_outcomes: u64,
    /// Transactions still open when the phase ended (no outcome in time).
    pub unresolved: u64,
    /// Committed plus rolled back, per second.
    pub tx_per_sec: f64,
    /// Half messages acknowledged per second.
    pub messages_per_sec: f64,
    /// Sending a commit to its PUBACK.
    pub commit_latency: Latency,
    /// Messages the subscriber received.
    pub received: u64,
    /// Committed transactions missing messages at the subscriber.
    pub incomplete: u64,
    /// Committed transactions whose messages arrived out of publish order.
    pub out_of_order: u64,
    /// Committed transactions with a message received before the commit was sent.
    pub early: u64,
    /// Messages of rolled-back transactions the subscriber received.
    pub leaked: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Messages of another run or not decodable.
    pub foreign: u64,
    /// Check requests the devices answered.
    pub checks: u64,
    /// Devices or subscribers that failed.
    pub errors: u64,
    /// First error, if any.
    pub first_error: Option<String>,
}

impl TxRow {
    /// Whether the hub kept every promise in this phase, answering every
    /// commit and rollback in time.
    pub fn is_clean(&self) -> bool {
        self.errors == 0
            && self.failed_outcomes == 0
            && self.unresolved == 0
            && self.incomplete == 0
            && self.out_of_order == 0
            && self.early == 0
            && self.leaked == 0
            && self.duplicates == 0
            && self.foreign == 0
    }
}

/// The plain QoS 1 comparison.
#[derive(Debug, Clone, Serialize)]
pub struct PlainRow {
    /// Devices.
    pub devices: usize,
    /// Seconds from the start to the last PUBACK.
    pub secs: f64,
    /// Publishes acknowledged.
    pub acknowledged: u64,
    /// Acknowledged publishes per second.
    pub messages_per_sec: f64,
    /// Publish to PUBACK.
    pub ack_latency: Latency,
    /// Messages the subscriber received.
    pub received: u64,
    /// Devices or subscribers that failed.
    pub errors: u64,
    /// First error, if any.
    pub first_error: Option<String>,
}

/// Everything `tern-sim tx` measured.
#[derive(Debug, Clone, Serialize)]
pub struct TxSummary {
    /// Payload bytes per message.
    pub payload: usize,
    /// Rollback fraction asked for.
    pub rollback: f64,
    /// One row per transaction size.
    pub rows: Vec<TxRow>,
    /// The plain QoS 1 comparison (`--compare-plain`).
    pub plain: Option<PlainRow>,
}

/// The payload of every message: which transaction and position it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct TxMessage<'a> {
    run: u32,
    device: u32,
    /// Transaction number within the device (the tx id's counter); for plain
    /// publishes the sequence number.
    tx: u32,
    index: u32,
    #[serde(borrow)]
    pad: &'a [u8],
}

impl TxMessage<'static> {
    /// A message whose encoding is `target` bytes long (or the header alone,
    /// when `target` is smaller).
    fn padded(run: u32, device: u32, tx: u32, index: u32, target: usize) -> Self {
        let mut m = Self {
            run,
            device,
            tx,
            index,
            pad: &[],
        };
        let mut scratch = [0u8; 32];
        // The header without the one-byte length of the empty filler.
        let base = postcard::to_slice(&m, &mut scratch).map_or(0, |b| b.len() - 1);
        m.pad = crate::payload::filler(base, target);
        m
    }
}

/// What the phase runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tx { size: u32 },
    Plain,
}

impl Mode {
    fn topic_root(self) -> &'static str {
        match self {
            Self::Tx { .. } => "tern/sim/tx",
            Self::Plain => "tern/sim/tx-plain",
        }
    }
}

/// How a device's transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Committed,
    RolledBack,
    /// The hub answered the commit or rollback with an error code.
    Failed,
    /// No outcome before the phase's hard end.
    Unresolved,
}

/// One transaction as its device saw it.
#[derive(Debug, Clone, Copy)]
struct TxRecord {
    tx: u32,
    size: u32,
    ending: Ending,
    /// When the commit was sent, microseconds since the phase epoch.
    commit_sent_us: u64,
}

/// What one device did in a phase.
#[derive(Debug, Default)]
struct DeviceLog {
    records: Vec<TxRecord>,
    acked_messages: u64,
    rolled_back_refused: u64,
    checks: u64,
    /// Outcome (or, plain, PUBACK) latencies in microseconds.
    latencies_us: Vec<u64>,
    /// Microseconds since the epoch of the last outcome or PUBACK.
    last_ack_us: u64,
}

/// One message as the subscriber saw it.
#[derive(Debug, Default)]
struct Arrivals {
    /// Indices in arrival order.
    indices: Vec<u32>,
    first_us: u64,
}

#[derive(Debug, Default)]
struct SubscriberLog {
    received: u64,
    foreign: u64,
    by_tx: HashMap<(u32, u32), Arrivals>,
}

struct Phase {
    cfg: TxConfig,
    mode: Mode,
    run: u32,
    epoch: Instant,
    connected: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Phase {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn fail(&self, what: &str, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(format!("{what}: {e:#}"));
        }
    }
}

/// An event the device loop acts on, owned so the client can be used again.
#[derive(Debug)]
enum Seen {
    Published(u16, ReasonCode),
    Resolved(TxResolution),
    Check(TxId),
    Other,
}

type Client<'a> = AsyncClient<'a, WINDOW>;
type Io = crate::run::Io;

async fn open(target: &str) -> anyhow::Result<Io> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    Ok(FromTokio::new(stream))
}

/// The next event, or `None` at `deadline`.
async fn next_event(
    client: &mut Client<'_>,
    io: &mut Io,
    phase: &Phase,
    deadline: Instant,
) -> anyhow::Result<Option<Seen>> {
    let polled = tokio::time::timeout_at(deadline, client.poll(io, phase.now_ms())).await;
    let Ok(event) = polled else {
        return Ok(None);
    };
    Ok(Some(
        match event.map_err(|e| anyhow::anyhow!("poll: {e:?}"))? {
            Some(Event::Published { packet_id, reason }) => Seen::Published(packet_id, reason),
            Some(Event::TxResolved(r)) => Seen::Resolved(r),
            Some(Event::TxCheck(id)) => Seen::Check(id),
            _ => Seen::Other,
        },
    ))
}

/// Answers a check request for a transaction this device no longer has open:
/// it rolls it back, as firmware that lost its state after a reboot would.
async fn answer_check(
    client: &mut Client<'_>,
    io: &mut Io,
    phase: &Phase,
    id: &TxId,
    log: &mut DeviceLog,
) -> anyhow::Result<()> {
    log.checks += 1;
    client
        .rollback(io, id, phase.now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("rollback after check: {e:?}"))?;
    Ok(())
}

async fn device(
    phase: Arc<Phase>,
    index: u32,
    connects: Arc<Semaphore>,
    start: watch::Receiver<Option<Instant>>,
) -> DeviceLog {
    let mut log = DeviceLog::default();
    if let Err(e) = device_inner(&phase, index, &connects, start, &mut log).await {
        phase.fail(&format!("device {index}"), &e);
    }
    log
}

async fn device_inner(
    phase: &Phase,
    index: u32,
    connects: &Semaphore,
    mut start: watch::Receiver<Option<Instant>>,
    log: &mut DeviceLog,
) -> anyhow::Result<()> {
    let cfg = &phase.cfg;
    let client_id = format!("sim-tx-{:08x}-{index}", phase.run);
    let topic = format!("{}/{index}", phase.mode.topic_root());
    let mut rx = vec![0u8; 1024];
    let mut tx = vec![0u8; (cfg.payload + 256) * (WINDOW + 1) + 512];
    let config = ConfigBuilder::new(&client_id)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .keep_alive(30)
        .build();
    let mut client = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = {
        let _permit = connects.acquire().await?;
        let mut io = open(&cfg.target).await?;
        tokio::time::timeout(
            Duration::from_secs(10),
            client.connect(&mut io, phase.now_ms()),
        )
        .await
        .context("CONNACK timeout")?
        .map_err(|e| anyhow::anyhow!("connect: {e:?}"))?;
        if matches!(phase.mode, Mode::Tx { .. }) {
            client
                .subscribe_tx_checks(&mut io, phase.now_ms())
                .await
                .map_err(|e| anyhow::anyhow!("subscribe to checks: {e:?}"))?;
        }
        io
    };
    phase.connected.fetch_add(1, Ordering::Relaxed);
    let t0 = loop {
        if let Some(t) = *start.borrow_and_update() {
            break t;
        }
        start.changed().await?;
    };
    let end = t0 + cfg.duration;
    let hard_end = end + FINISH_DRAIN;
    match phase.mode {
        Mode::Tx { size } => {
            let mut rng = Rng::new(cfg.seed ^ (u64::from(index) << 32) ^ u64::from(size));
            transactions(
                phase,
                &mut client,
                &mut io,
                Run {
                    index,
                    topic: &topic,
                    size,
                    end,
                    hard_end,
                },
                &mut rng,
                log,
            )
            .await?;
        }
        Mode::Plain => {
            plain(
                phase,
                &mut client,
                &mut io,
                Run {
                    index,
                    topic: &topic,
                    size: 1,
                    end,
                    hard_end,
                },
                log,
            )
            .await?;
        }
    }
    let _ = client.disconnect(&mut io).await;
    Ok(())
}

/// What one device runs, and until when.
#[derive(Debug, Clone, Copy)]
struct Run<'t> {
    index: u32,
    topic: &'t str,
    size: u32,
    /// No new transaction (or plain publish) starts after this.
    end: Instant,
    /// Nothing is awaited after this.
    hard_end: Instant,
}

/// The packet id of a publish sent with `in_flight` others awaiting their PUBACK, or
/// `None` when the broker's Receive Maximum is below the window: the window shrinks to
/// `in_flight`. Any other error (or a full window with nothing in flight) fails the device.
fn in_window<E: core::fmt::Debug>(
    published: Result<u16, tern_client::Error<E>>,
    in_flight: usize,
    window: &mut usize,
    what: &str,
) -> anyhow::Result<Option<u16>> {
    match published {
        Ok(packet_id) => Ok(Some(packet_id)),
        Err(tern_client::Error::InflightFull) if in_flight > 0 => {
            *window = in_flight;
            Ok(None)
        }
        Err(e) => bail!("{what}: {e:?}"),
    }
}

async fn transactions(
    phase: &Phase,
    client: &mut Client<'_>,
    io: &mut Io,
    run: Run<'_>,
    rng: &mut Rng,
    log: &mut DeviceLog,
) -> anyhow::Result<()> {
    let cfg = &phase.cfg;
    let prefix = format!("r{:08x}", phase.run);
    let mut ids = TxSequence::new(&prefix, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut scratch = vec![0u8; cfg.payload + 64];
    let mut window = WINDOW;
    let mut pending: Vec<u16> = Vec::with_capacity(WINDOW);
    while Instant::now() < run.end {
        let tx_no = ids.next_counter();
        let id = ids.begin();
        let mut record = TxRecord {
            tx: tx_no,
            size: run.size,
            ending: Ending::Unresolved,
            commit_sent_us: 0,
        };
        let (mut sent, mut acked, mut refused) = (0u32, 0u32, 0u32);
        pending.clear();
        while acked + refused < run.size {
            while sent < run.size && pending.len() < window {
                let m = TxMessage::padded(phase.run, run.index, tx_no, sent, cfg.payload);
                let payload = postcard::to_slice(&m, &mut scratch)?;
                let published = client
                    .publish_in_tx(
                        io,
                        &id,
                        run.topic,
                        payload,
                        QoS::AtLeastOnce,
                        &[],
                        phase.now_ms(),
                    )
                    .await;
                let Some(packet_id) =
                    in_window(published, pending.len(), &mut window, "half message")?
                else {
                    break;
                };
                pending.push(packet_id);
                sent += 1;
            }
            match next_event(client, io, phase, run.hard_end).await? {
                None => {
                    log.records.push(record);
                    return Ok(());
                }
                Some(Seen::Published(packet_id, reason)) => {
                    if let Some(pos) = pending.iter().position(|&p| p == packet_id) {
                        pending.swap_remove(pos);
                        if reason.is_error() {
                            refused += 1;
                        } else {
                            acked += 1;
                            log.acked_messages += 1;
                            log.last_ack_us = phase.now_us();
                        }
                    }
                }
                Some(Seen::Check(check)) if check != id => {
                    answer_check(client, io, phase, &check, log).await?;
                }
                Some(_) => {}
            }
        }
        let action = if refused > 0 {
            log.rolled_back_refused += 1;
            TxAction::Rollback
        } else if rng.unit() < cfg.rollback {
            TxAction::Rollback
        } else {
            TxAction::Commit
        };
        let sent_at = Instant::now();
        record.commit_sent_us = phase.now_us();
        let packet_id = match action {
            TxAction::Commit => client.commit(io, &id, phase.now_ms()).await,
            TxAction::Rollback => client.rollback(io, &id, phase.now_ms()).await,
        }
        .map_err(|e| anyhow::anyhow!("{action:?}: {e:?}"))?;
        loop {
            match next_event(client, io, phase, run.hard_end).await? {
                None => {
                    log.records.push(record);
                    return Ok(());
                }
                Some(Seen::Resolved(r)) if r.packet_id == packet_id => {
                    record.ending = match (r.outcome, action) {
                        (TxOutcome::Applied, TxAction::Commit) => Ending::Committed,
                        (TxOutcome::Applied, TxAction::Rollback) => Ending::RolledBack,
                        _ => Ending::Failed,
                    };
                    if action == TxAction::Commit {
                        log.latencies_us
                            .push(u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(0));
                    }
                    log.last_ack_us = phase.now_us();
                    break;
                }
                Some(Seen::Check(check)) if check != id => {
                    answer_check(client, io, phase, &check, log).await?;
                }
                Some(_) => {}
            }
        }
        log.records.push(record);
    }
    Ok(())
}

async fn plain(
    phase: &Phase,
    client: &mut Client<'_>,
    io: &mut Io,
    run: Run<'_>,
    log: &mut DeviceLog,
) -> anyhow::Result<()> {
    let cfg = &phase.cfg;
    let mut scratch = vec![0u8; cfg.payload + 64];
    let mut window = WINDOW;
    let mut pending: Vec<(u16, Instant)> = Vec::with_capacity(WINDOW);
    let mut seq = 0u32;
    loop {
        let publishing = Instant::now() < run.end;
        if !publishing && pending.is_empty() {
            return Ok(());
        }
        while publishing && pending.len() < window {
            let m = TxMessage::padded(phase.run, run.index, seq, 0, cfg.payload);
            let payload = postcard::to_slice(&m, &mut scratch)?;
            let published = client
                .publish(
                    io,
                    run.topic,
                    payload,
                    QoS::AtLeastOnce,
                    &[],
                    phase.now_ms(),
                )
                .await;
            let Some(packet_id) = in_window(published, pending.len(), &mut window, "publish")?
            else {
                break;
            };
            pending.push((packet_id, Instant::now()));
            seq = seq.wrapping_add(1);
        }
        let deadline = if publishing { run.end } else { run.hard_end };
        match next_event(client, io, phase, deadline).await? {
            None if !publishing => return Ok(()),
            Some(Seen::Published(packet_id, reason)) => {
                if let Some(pos) = pending.iter().position(|&(p, _)| p == packet_id) {
                    let (_, at) = pending.swap_remove(pos);
                    if !reason.is_error() {
                        log.acked_messages += 1;
                        log.latencies_us
                            .push(u64::try_from(at.elapsed().as_micros()).unwrap_or(0));
                        log.last_ack_us = phase.now_us();
                    }
                }
            }
            _ => {}
        }
    }
}

/// The checking subscriber: records every message by transaction until told
/// how many to expect and then nothing arrived for a while (shorter once the
/// expected number arrived), or the drain time is over.
async fn subscriber(
    phase: Arc<Phase>,
    ready: tokio::sync::oneshot::Sender<()>,
    done: watch::Receiver<Option<u64>>,
) -> SubscriberLog {
    let mut log = SubscriberLog::default();
    if let Err(e) = subscriber_inner(&phase, ready, done, &mut log).await {
        phase.fail("subscriber", &e);
    }
    log
}

async fn subscriber_inner(
    phase: &Phase,
    ready: tokio::sync::oneshot::Sender<()>,
    mut done: watch::Receiver<Option<u64>>,
    log: &mut SubscriberLog,
) -> anyhow::Result<()> {
    let cfg = &phase.cfg;
    let client_id = format!("sim-tx-{:08x}-sub", phase.run);
    let filter = format!("{}/+", phase.mode.topic_root());
    let mut rx = vec![0u8; 64 * 1024 + cfg.payload];
    let mut tx = vec![0u8; 4096];
    let config = ConfigBuilder::new(&client_id)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .keep_alive(30)
        .receive_maximum(u16::MAX)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .build();
    let mut client = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = open(&cfg.target).await?;
    client
        .connect(&mut io, phase.now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e:?}"))?;
    crate::run::subscribe_filters(&mut client, &mut io, &[(&filter, QoS::AtLeastOnce)], || {
        phase.now_ms()
    })
    .await?;
    let _ = ready.send(());
    let mut ended: Option<(Instant, u64)> = None;
    let mut last_recv = Instant::now();
    loop {
        if let Some((at, expected)) = ended {
            let now = Instant::now();
            let idle = if log.received >= expected {
                RECV_SETTLE
            } else {
                RECV_IDLE
            };
            if now >= at + RECV_DRAIN || now >= last_recv.max(at) + idle {
                break;
            }
        } else if let Some(expected) = *done.borrow_and_update() {
            ended = Some((Instant::now(), expected));
            continue;
        }
        tokio::select! {
            biased;
            r = client.poll(&mut io, phase.now_ms()) => {
                if let Some(Event::Message(m)) = r.map_err(|e| anyhow::anyhow!("poll: {e:?}"))? {
                    match postcard::from_bytes::<TxMessage<'_>>(m.payload) {
                        Ok(t) if t.run == phase.run => {
                            log.received += 1;
                            let now_us = phase.now_us();
                            let arrivals = log.by_tx.entry((t.device, t.tx)).or_insert_with(|| Arrivals {
                                indices: Vec::new(),
                                first_us: now_us,
                            });
                            arrivals.indices.push(t.index);
                            last_recv = Instant::now();
                        }
                        _ => log.foreign += 1,
                    }
                }
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = done.changed(), if ended.is_none() => {}
        }
    }
    let _ = client.disconnect(&mut io).await;
    Ok(())
}

/// What the subscriber's arrivals say about the devices' transactions.
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    incomplete: u64,
    out_of_order: u64,
    early: u64,
    leaked: u64,
    duplicates: u64,
    /// Arrivals of no transaction any device began.
    foreign: u64,
}

/// Checks every transaction of every device (`logs[d]` is device `d`) against
/// what arrived.
fn verify(logs: &[&[TxRecord]], arrivals: &HashMap<(u32, u32), Arrivals>) -> Verdict {
    let mut v = Verdict::default();
    let mut known = 0usize;
    for (device, records) in logs.iter().enumerate() {
        let device = u32::try_from(device).unwrap_or(u32::MAX);
        for r in *records {
            let got = arrivals.get(&(device, r.tx));
            known += usize::from(got.is_some());
            let indices = got.map_or(&[][..], |a| &a.indices[..]);
            match r.ending {
                Ending::Committed => {
                    let mut seen = vec![false; usize::try_from(r.size).unwrap_or(0)];
                    let mut first = Vec::with_capacity(seen.len());
                    for &i in indices {
                        match seen.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
                            Some(s) if !*s => {
                                *s = true;
                                first.push(i);
                            }
                            Some(_) => v.duplicates += 1,
                            None => v.foreign += 1,
                        }
                    }
                    if first.len() < seen.len() {
                        v.incomplete += 1;
                    }
                    if first.windows(2).any(|w| w[0] > w[1]) {
                        v.out_of_order += 1;
                    }
                    if got.is_some_and(|a| a.first_us < r.commit_sent_us) {
                        v.early += 1;
                    }
                }
                Ending::RolledBack => {
                    v.leaked += u64::try_from(indices.len()).unwrap_or(u64::MAX);
                }
                // A failed or unanswered outcome promises nothing either way.
                Ending::Failed | Ending::Unresolved => {}
            }
        }
    }
    let unknown: u64 = arrivals
        .len()
        .saturating_sub(known)
        .try_into()
        .unwrap_or(u64::MAX);
    v.foreign += unknown;
    v
}

/// What one phase left behind.
struct Finished {
    phase: Phase,
    devices: Vec<DeviceLog>,
    subscriber: SubscriberLog,
    /// When the devices were told to start, microseconds since the phase epoch.
    start_us: u64,
}

impl Finished {
    /// Seconds from the start to the last acknowledgement.
    fn active_secs(&self) -> f64 {
        let last = self
            .devices
            .iter()
            .map(|l| l.last_ack_us)
            .max()
            .unwrap_or(0);
        Duration::from_micros(last.saturating_sub(self.start_us)).as_secs_f64()
    }

    fn errors(&self) -> (u64, Option<String>) {
        (
            self.phase.failed.load(Ordering::Relaxed),
            self.phase.first_error.lock().ok().and_then(|e| e.clone()),
        )
    }
}

/// Runs one phase: subscriber first, then the devices, then the subscriber's drain.
async fn phase(cfg: &TxConfig, mode: Mode, run: u32) -> anyhow::Result<Finished> {
    let devices = u32::try_from(cfg.devices).context("too many devices")?;
    let phase = Arc::new(Phase {
        cfg: cfg.clone(),
        mode,
        run,
        epoch: Instant::now(),
        connected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = watch::channel(None);
    let sub = tokio::spawn(subscriber(phase.clone(), ready_tx, done_rx));
    // The subscriber failing to subscribe is recorded as an error; run anyway.
    let _ = ready_rx.await;

    let (start_tx, start_rx) = watch::channel(None);
    let connects = Arc::new(Semaphore::new(CONNECTS));
    let devs: Vec<_> = (0..devices)
        .map(|i| tokio::spawn(device(phase.clone(), i, connects.clone(), start_rx.clone())))
        .collect();
    let connect_deadline = Instant::now() + Duration::from_secs(30);
    while phase.connected.load(Ordering::Relaxed) + phase.failed.load(Ordering::Relaxed)
        < u64::from(devices)
        && Instant::now() < connect_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start_us = phase.now_us();
    let _ = start_tx.send(Some(Instant::now()));
    let mut logs = Vec::with_capacity(devs.len());
    for d in devs {
        logs.push(d.await?);
    }
    let expected: u64 = logs
        .iter()
        .flat_map(|l| &l.records)
        .filter(|r| r.ending == Ending::Committed)
        .map(|r| u64::from(r.size))
        .sum::<u64>()
        + if mode == Mode::Plain {
            logs.iter().map(|l| l.acked_messages).sum()
        } else {
            0
        };
    let _ = done_tx.send(Some(expected));
    let subscriber = sub.await?;
    let phase = Arc::try_unwrap(phase).map_err(|_| anyhow::anyhow!("phase still shared"))?;
    Ok(Finished {
        phase,
        devices: logs,
        subscriber,
        start_us,
    })
}

#[allow(
    clippy::cast_precision_loss,
    reason = "counts and microseconds are far below 2^52"
)]
fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn latency_of(logs: &[DeviceLog]) -> Latency {
    let mut h = new_histogram();
    for us in logs.iter().flat_map(|l| &l.latencies_us) {
        h.saturating_record((*us).max(1));
    }
    Latency::of(&h)
}

/// Runs every phase and returns the summary.
pub async fn run(cfg: TxConfig) -> anyhow::Result<TxSummary> {
    if cfg.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if cfg.sizes.is_empty() || cfg.sizes.iter().any(|&k| k == 0 || k > MAX_MESSAGES_PER_TX) {
        bail!("--messages must be 1 to {MAX_MESSAGES_PER_TX}");
    }
    if !(0.0..=1.0).contains(&cfg.rollback) {
        bail!("--rollback must be within 0 and 1");
    }
    if cfg.payload > crate::payload::MAX_PAD {
        bail!("--payload at most {}", crate::payload::MAX_PAD);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let run_id = u32::try_from(
        Rng::new(cfg.seed ^ u64::from(now.subsec_nanos()) ^ now.as_secs()).next_u64() >> 32,
    )
    .unwrap_or(0);
    let mut rows = Vec::new();
    for (n, &size) in cfg.sizes.iter().enumerate() {
        let run = run_id.wrapping_add(u32::try_from(n).unwrap_or(0));
        let finished = phase(&cfg, Mode::Tx { size }, run).await?;
        rows.push(tx_row(&finished, size));
    }
    let plain = if cfg.compare_plain {
        let run = run_id.wrapping_add(u32::try_from(cfg.sizes.len()).unwrap_or(0));
        let finished = phase(&cfg, Mode::Plain, run).await?;
        let acknowledged = finished.devices.iter().map(|l| l.acked_messages).sum();
        let secs = finished.active_secs();
        let (errors, first_error) = finished.errors();
        Some(PlainRow {
            devices: cfg.devices,
            secs,
            acknowledged,
            messages_per_sec: per_sec(acknowledged, secs),
            ack_latency: latency_of(&finished.devices),
            received: finished.subscriber.received,
            errors,
            first_error,
        })
    } else {
        None
    };
    Ok(TxSummary {
        payload: cfg.payload,
        rollback: cfg.rollback,
        rows,
        plain,
    })
}

fn tx_row(finished: &Finished, size: u32) -> TxRow {
    let logs = &finished.devices;
    let sub = &finished.subscriber;
    let records: Vec<&[TxRecord]> = logs.iter().map(|l| &l.records[..]).collect();
    let verdict = verify(&records, &sub.by_tx);
    let count = |e: Ending| {
        let n = records
            .iter()
            .copied()
            .flatten()
            .filter(|r| r.ending == e)
            .count();
        u64::try_from(n).unwrap_or(u64::MAX)
    };
    let (committed, rolled_back) = (count(Ending::Committed), count(Ending::RolledBack));
    let secs = finished.active_secs();
    let acked: u64 = logs.iter().map(|l| l.acked_messages).sum();
    let (errors, first_error) = finished.errors();
    TxRow {
        messages_per_tx: size,
        devices: finished.phase.cfg.devices,
        secs,
        committed,
        rolled_back,
        rolled_back_refused: logs.iter().map(|l| l.rolled_back_refused).sum(),
        failed_outcomes: count(Ending::Failed),
        unresolved: count(Ending::Unresolved),
        tx_per_sec: per_sec(committed + rolled_back, secs),
        messages_per_sec: per_sec(acked, secs),
        commit_latency: latency_of(logs),
        received: sub.received,
        incomplete: verdict.incomplete,
        out_of_order: verdict.out_of_order,
        early: verdict.early,
        leaked: verdict.leaked,
        duplicates: verdict.duplicates,
        foreign: verdict.foreign + sub.foreign,
        checks: logs.iter().map(|l| l.checks).sum(),
        errors,
        first_error,
    }
}

impl std::fmt::Display for TxSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "payload {} B, rollback fraction {:.2}",
            self.payload, self.rollback
        )?;
        writeln!(
            f,
            "| K | devices | tx/s | msgs/s | commit p50 ms | commit p99 ms | committed | rolled back | verdict |"
        )?;
        writeln!(f, "|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
        for r in &self.rows {
            let verdict = if r.is_clean() {
                "whole, in order, no leaks".to_string()
            } else {
                format!(
                    "incomplete {} out-of-order {} early {} leaked {} duplicates {} foreign {} failed {} unresolved {} errors {}",
                    r.incomplete,
                    r.out_of_order,
                    r.early,
                    r.leaked,
                    r.duplicates,
                    r.foreign,
                    r.failed_outcomes,
                    r.unresolved,
                    r.errors
                )
            };
            writeln!(
                f,
                "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
                r.messages_per_tx,
                r.devices,
                r.tx_per_sec,
                r.messages_per_sec,
                r.commit_latency.p50_ms,
                r.commit_latency.p99_ms,
                r.committed,
                r.rolled_back,
                verdict
            )?;
        }
        if let Some(p) = &self.plain {
            writeln!(
                f,
                "plain QoS 1: {} devices, {:.0} msgs/s, PUBACK p50 {:.2} ms p99 {:.2} ms, {} received",
                p.devices,
                p.messages_per_sec,
                p.ack_latency.p50_ms,
                p.ack_latency.p99_ms,
                p.received
            )?;
            for r in &self.rows {
                if r.messages_per_sec > 0.0 {
                    writeln!(
                        f,
                        "  K = {}: {:.2}x the plain message rate",
                        r.messages_per_tx,
                        r.messages_per_sec / p.messages_per_sec.max(f64::MIN_POSITIVE)
                    )?;
                }
            }
        }
        let errors = self.rows.iter().filter_map(|r| r.first_error.as_deref());
        for e in errors.chain(self.plain.iter().filter_map(|p| p.first_error.as_deref())) {
            writeln!(f, "first error: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tx: u32, size: u32, ending: Ending, commit_sent_us: u64) -> TxRecord {
        TxRecord {
            tx,
            size,
            ending,
            commit_sent_us,
        }
    }

    fn arrivals(indices: &[u32], first_us: u64) -> Arrivals {
        Arrivals {
            indices: indices.to_vec(),
            first_us,
        }
    }

    #[test]
    fn whole_ordered_commits_and_silent_rollbacks_are_clean() {
        let d0 = [
            record(0, 3, Ending::Committed, 100),
            record(1, 3, Ending::RolledBack, 200),
            record(2, 3, Ending::Unresolved, 0),
        ];
        let d1 = [record(0, 1, Ending::Committed, 50)];
        let mut got = HashMap::new();
        got.insert((0, 0), arrivals(&[0, 1, 2], 150));
        got.insert((1, 0), arrivals(&[0], 60));
        // An unresolved transaction promises nothing.
        got.insert((0, 2), arrivals(&[0], 70));
        assert_eq!(verify(&[&d0, &d1], &got), Verdict::default());
    }

    #[test]
    fn every_broken_promise_is_counted() {
        let d0 = [
            record(0, 3, Ending::Committed, 100),
            record(1, 3, Ending::Committed, 100),
            record(2, 2, Ending::Committed, 100),
            record(3, 2, Ending::RolledBack, 100),
            record(4, 2, Ending::Committed, 100),
            record(5, 2, Ending::Failed, 100),
        ];
        let mut got = HashMap::new();
        got.insert((0, 0), arrivals(&[0, 2], 150)); // a message missing
        got.insert((0, 1), arrivals(&[1, 0, 2, 2], 150)); // out of order, a duplicate
        got.insert((0, 2), arrivals(&[0, 1], 90)); // before the commit
        got.insert((0, 3), arrivals(&[0, 1], 150)); // rolled back, delivered
        // Transaction 4 never arrived at all; 5 failed and promises nothing.
        got.insert((0, 5), arrivals(&[0], 150));
        got.insert((7, 0), arrivals(&[0], 150)); // no such device
        assert_eq!(
            verify(&[&d0], &got),
            Verdict {
                incomplete: 2,
                out_of_order: 1,
                early: 1,
                leaked: 2,
                duplicates: 1,
                foreign: 1,
            }
        );
    }

    #[test]
    fn payload_is_padded_and_decodes() {
        for target in [0, 32, 64, 1000] {
            let m = TxMessage::padded(7, 3, 12, 99, target);
            let mut buf = vec![0u8; target + 64];
            let bytes = postcard::to_slice(&m, &mut buf).unwrap();
            if target >= 32 {
                assert_eq!(bytes.len(), target);
            } else {
                assert!(bytes.len() <= 32, "{target}: {}", bytes.len());
            }
            assert_eq!(postcard::from_bytes::<TxMessage<'_>>(bytes).unwrap(), m);
        }
    }
}
