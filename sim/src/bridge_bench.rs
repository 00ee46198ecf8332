//! `tern-sim bridge-bench`: the upstream bridge measured end to end, on loopback, with a
//! real hub (a release `tern` binary) and a real mosquitto, both started here on free
//! ports and stopped by PID.
//!
//! For each bridge mode:
//!
//! 1. **Drain.** The hub starts with the bridge configured and mosquitto down; `messages`
//!    QoS 1 messages are published to the hub; once the bridge's `$SYS` backlog counts all
//!    of them, mosquitto starts with a QoS 0 subscriber on `#`, and the drain is timed from
//!    the first message the subscriber receives to the last (envelopes are decoded and
//!    their messages counted).
//! 2. **Latency.** A fresh hub and mosquitto, the bridge connected; a publisher sends
//!    `latency_rate` QoS 1 messages per second for `latency_secs`, each carrying its send
//!    time; the subscriber on mosquitto records device → upstream latency in an HDR
//!    histogram.
//!
//! Every wait is bounded; a step that times out is reported in the row, not hung on.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::process::{HubProcess, Mosquitto, Persistence, START_TIMEOUT, free_port};
use crate::stats::{Latency, new_histogram};

/// Topic the devices publish to (the bridge forwards `bench/#`).
const TOPIC: &str = "bench/t";
/// Longest wait for a preload or a drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Publishes in flight while preloading.
const PRELOAD_INFLIGHT: u16 = 1000;

/// One bridge configuration to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// `mode = "each"`, default window (100).
    Each,
    /// `mode = "each"`, `inflight = 1000`.
    EachWide,
    /// `mode = "envelope"`, postcard.
    Postcard,
    /// `mode = "envelope"`, JSON lines.
    JsonLines,
    /// `mode = "envelope"`, postcard, zstd level 3.
    PostcardZstd,
}

impl BenchMode {
    /// Every mode, in table order.
    pub const ALL: [BenchMode; 5] = [
        BenchMode::Each,
        BenchMode::EachWide,
        BenchMode::Postcard,
        BenchMode::JsonLines,
        BenchMode::PostcardZstd,
    ];

    /// Row label.
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Each => "each (inflight 100)",
            BenchMode::EachWide => "each (inflight 1000)",
            BenchMode::Postcard => "envelope postcard",
            BenchMode::JsonLines => "envelope json-lines",
            BenchMode::PostcardZstd => "envelope postcard + zstd",
        }
    }

    /// The mode's lines of the `[[bridge]]` table.
    fn toml(self) -> &'static str {
        match self {
            BenchMode::Each => "mode = \"each\"\n",
            BenchMode::EachWide => "mode = \"each\"\ninflight = 1000\n",
            BenchMode::Postcard => "mode = \"envelope\"\n",
            BenchMode::JsonLines => "mode = \"envelope\"\nenvelope_format = \"json-lines\"\n",
            BenchMode::PostcardZstd => "mode = \"envelope\"\ncompression = \"zstd\"\n",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BridgeBenchConfig {
    /// The hub binary (build it with `cargo build --release -p tern-hub`).
    pub hub: PathBuf,
    /// The mosquitto binary.
    pub mosquitto: PathBuf,
    /// Backlog size of the drain measurement.
    pub messages: u64,
    /// Payload bytes of every message (at least 24: the send time travels in it).
    pub payload: usize,
    /// Messages per second of the latency measurement (0 skips it).
    pub latency_rate: u64,
    /// Seconds of the latency measurement.
    pub latency_secs: u64,
    /// Modes to measure.
    pub modes: Vec<BenchMode>,
}

/// One mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeBenchRow {
    /// Mode label.
    pub mode: String,
    /// Seconds to publish the backlog into the hub.
    pub preload_s: f64,
    /// Seconds from the first message upstream to the last.
    pub drain_s: f64,
    /// Messages per second drained.
    pub drain_rate: f64,
    /// Bytes that crossed mosquitto during the drain (payloads only).
    pub upstream_bytes: u64,
    /// Messages that did not arrive within the bound (0 expected).
    pub missing: u64,
    /// Device → upstream latency at steady load.
    pub latency: Latency,
    /// Latency samples (messages received of the steady load).
    pub latency_samples: u64,
}

/// Header of the markdown table.
pub const HEADER: &str = "| mode | preload s | drain s | drain msg/s | upstream MB | missing | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";

impl BridgeBenchRow {
    /// One markdown table row.
    pub fn row(&self) -> String {
        #[allow(clippy::cast_precision_loss, reason = "megabytes for display")]
        let mb = self.upstream_bytes as f64 / 1e6;
        format!(
            "| {} | {:.1} | {:.2} | {:.0} | {:.1} | {} | {:.2} | {:.2} | {:.2} |",
            self.mode,
            self.preload_s,
            self.drain_s,
            self.drain_rate,
            mb,
            self.missing,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms
        )
    }
}

/// Runs every configured mode, printing the table as it goes.
pub async fn bridge_bench(config: &BridgeBenchConfig) -> anyhow::Result<Vec<BridgeBenchRow>> {
    anyhow::ensure!(config.payload >= 24, "--payload at least 24");
    anyhow::ensure!(
        config.hub.is_file(),
        "hub binary {} not found (cargo build --release -p tern-hub)",
        config.hub.display()
    );
    println!("{HEADER}");
    let mut rows = Vec::new();
    for &mode in &config.modes {
        let row = run_mode(config, mode).await?;
        println!("{}", row.row());
        rows.push(row);
    }
    Ok(rows)
}

async fn run_mode(config: &BridgeBenchConfig, mode: BenchMode) -> anyhow::Result<BridgeBenchRow> {
    let mut row = BridgeBenchRow {
        mode: mode.name().to_owned(),
        preload_s: 0.0,
        drain_s: 0.0,
        drain_rate: 0.0,
        upstream_bytes: 0,
        missing: 0,
        latency: Latency::default(),
        latency_samples: 0,
    };
    drain(config, mode, &mut row).await?;
    if config.latency_rate > 0 && config.latency_secs > 0 {
        latency(config, mode, &mut row).await?;
    }
    Ok(row)
}

/// The drain measurement.
async fn drain(
    config: &BridgeBenchConfig,
    mode: BenchMode,
    row: &mut BridgeBenchRow,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let up_port = free_port()?;
    let hub = start_hub(config, dir.path(), mode, up_port).await?;
    let started = Instant::now();
    publish(hub.addr(), config.messages, config.payload, None).await?;
    row.preload_s = started.elapsed().as_secs_f64();
    let backlog = "$SYS/broker/bridges/bench/backlog";
    wait_sys(hub.addr(), backlog, |v| v >= config.messages, DRAIN_TIMEOUT)
        .await
        .context("the bridge never counted the whole backlog")?;

    let upstream =
        Mosquitto::start(&config.mosquitto, dir.path(), up_port, Persistence::Off).await?;
    let consumer = Consumer::start(upstream.addr(), false).await?;
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        let count = consumer.counts.messages.load(Ordering::Relaxed);
        if count >= config.messages {
            break;
        }
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
        // Stuck for 10 s, or out of time: report what is missing.
        if tokio::time::Instant::now() >= deadline
            || last_change.elapsed() > Duration::from_secs(10)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = &consumer.counts;
    let received = c.messages.load(Ordering::Relaxed);
    row.missing = config.messages.saturating_sub(received);
    row.upstream_bytes = c.bytes.load(Ordering::Relaxed);
    let first = *consumer.first.lock().await;
    let last = *consumer.last.lock().await;
    if let (Some(first), Some(last)) = (first, last) {
        row.drain_s = last.duration_since(first).as_secs_f64().max(1e-6);
        #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
        let rate = received as f64 / row.drain_s;
        row.drain_rate = rate;
    }
    consumer.stop();
    drop(upstream);
    drop(hub);
    Ok(())
}

/// The latency measurement.
async fn latency(
    config: &BridgeBenchConfig,
    mode: BenchMode,
    row: &mut BridgeBenchRow,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let up_port = free_port()?;
    let upstream =
        Mosquitto::start(&config.mosquitto, dir.path(), up_port, Persistence::Off).await?;
    let consumer = Consumer::start(upstream.addr(), true).await?;
    let hub = start_hub(config, dir.path(), mode, up_port).await?;
    wait_sys(
        hub.addr(),
        "$SYS/broker/bridges/bench/connected",
        |v| v == 1,
        START_TIMEOUT,
    )
    .await
    .context("the bridge did not connect")?;
    let total = config.latency_rate * config.latency_secs;
    publish(hub.addr(), total, config.payload, Some(config.latency_rate)).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.counts.messages.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let histogram = consumer.latency.lock().await;
    row.latency = Latency::of(&histogram);
    row.latency_samples = histogram.len();
    drop(histogram);
    consumer.stop();
    drop(upstream);
    drop(hub);
    Ok(())
}

/// The hub with one bridge, `bench`, to `127.0.0.1:<up_port>`.
async fn start_hub(
    config: &BridgeBenchConfig,
    dir: &Path,
    mode: BenchMode,
    up_port: u16,
) -> anyhow::Result<HubProcess> {
    let toml = format!(
        "[session]\nsys_interval = \"1s\"\n\n[[bridge]]\nname = \"bench\"\n\
         address = \"127.0.0.1:{up_port}\"\nclient_id = \"gw-bench\"\ntopics = [\"bench/#\"]\n\
         reconnect = {{ min = \"20ms\", max = \"100ms\" }}\n{}",
        mode.toml()
    );
    HubProcess::start(&config.hub, dir, &toml).await
}

/// Microseconds since the Unix epoch.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A payload of `size` bytes starting with the send time (20 decimal digits, µs).
fn payload(size: usize) -> Vec<u8> {
    let mut p = format!("{:020}:", now_us()).into_bytes();
    p.resize(size, b'x');
    p
}

/// The send time at the start of a [`payload`].
fn sent_us(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(..20)?).ok()?.parse().ok()
}

/// Publishes `n` QoS 1 messages to the hub at `addr`, as fast as the window allows or
/// `rate` per second; returns once every PUBACK arrived.
async fn publish(addr: SocketAddr, n: u64, size: usize, rate: Option<u64>) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(
        format!("bench-pub-{}", now_us()),
        addr.ip().to_string(),
        addr.port(),
    );
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_outgoing_inflight_upper_limit(PRELOAD_INFLIGHT);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let sender = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for i in 0..n {
            if let Some(rate) = rate.filter(|&r| r > 0) {
                let at = start + Duration::from_micros(i * 1_000_000 / rate);
                tokio::time::sleep_until(at).await;
            }
            client
                .publish(TOPIC, QoS::AtLeastOnce, false, payload(size))
                .await
                .context("queue publish")?;
        }
        anyhow::Ok(client)
    });
    let mut acked = 0;
    let wait = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while acked < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(err) => bail!("publisher connection: {err}"),
            }
        }
        Ok(())
    });
    wait.await.context("publishing took too long")??;
    let client = sender.await.context("publisher task")??;
    let _ = client.disconnect().await;
    Ok(())
}

/// Waits until the retained `$SYS` value at `topic` satisfies `ok`.
async fn wait_sys(
    addr: SocketAddr,
    topic: &str,
    ok: impl Fn(u64) -> bool,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let mut options = MqttOptions::new(
        format!("bench-sys-{}", now_us()),
        addr.ip().to_string(),
        addr.port(),
    );
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client.subscribe(topic, QoS::AtMostOnce).await?;
    let found = tokio::time::timeout(timeout, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await? {
                let value: u64 = String::from_utf8_lossy(&p.payload).trim().parse()?;
                if ok(value) {
                    return anyhow::Ok(value);
                }
            }
        }
    })
    .await
    .with_context(|| format!("waiting for {topic}"))??;
    let _ = client.disconnect().await;
    Ok(found)
}

/// What the upstream subscriber counted.
#[derive(Debug, Default)]
struct Counts {
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// A QoS 0 subscriber on `#` at mosquitto: counts messages (decoding envelopes) and, when
/// asked, records their latency.
struct Consumer {
    counts: Arc<Counts>,
    first: Arc<Mutex<Option<Instant>>>,
    last: Arc<Mutex<Option<Instant>>>,
    latency: Arc<Mutex<Histogram<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    async fn start(addr: SocketAddr, record_latency: bool) -> anyhow::Result<Self> {
        let mut options = MqttOptions::new(
            format!("bench-up-{}", now_us()),
            addr.ip().to_string(),
            addr.port(),
        );
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(256 << 20));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        client.subscribe("#", QoS::AtMostOnce).await?;
        // Wait for the SUBACK so nothing is missed.
        tokio::time::timeout(START_TIMEOUT, async {
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                    return anyhow::Ok(());
                }
            }
        })
        .await
        .context("SUBACK from mosquitto")??;
        let counts = Arc::new(Counts::default());
        let first = Arc::new(Mutex::new(None));
        let last = Arc::new(Mutex::new(None));
        let latency = Arc::new(Mutex::new(new_histogram()));
        let task = {
            let (counts, first, last, latency) = (
                Arc::clone(&counts),
                Arc::clone(&first),
                Arc::clone(&last),
                Arc::clone(&latency),
            );
            tokio::spawn(async move {
                let _client = client;
                loop {
                    let Ok(event) = eventloop.poll().await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let Event::Incoming(Packet::Publish(p)) = event else {
                        continue;
                    };
                    let now = Instant::now();
                    let now_us = now_us();
                    first.lock().await.get_or_insert(now);
                    counts
                        .bytes
                        .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    let mut sent = Vec::new();
                    let n = match tern_envelope::decode(&p.payload) {
                        Ok(envelope) => {
                            if record_latency {
                                sent.extend(
                                    envelope.messages.iter().filter_map(|m| sent_us(&m.payload)),
                                );
                            }
                            envelope.messages.len() as u64
                        }
                        Err(_) => {
                            if record_latency {
                                sent.extend(sent_us(&p.payload));
                            }
                            1
                        }
                    };
                    if record_latency {
                        let mut h = latency.lock().await;
                        for s in sent {
                            let _ = h.record(now_us.saturating_sub(s).max(1));
                        }
                    }
                    counts.messages.fetch_add(n, Ordering::Relaxed);
                    *last.lock().await = Some(now);
                }
            })
        };
        Ok(Self {
            counts,
            first,
            last,
            latency,
            task,
        })
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The rows as a markdown table (header included).
pub fn table(rows: &[BridgeBenchRow]) -> String {
    let mut out = format!("{HEADER}\n");
    for row in rows {
        let _ = writeln!(out, "{}", row.row());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_its_send_time() {
        let p = payload(64);
        assert_eq!(p.len(), 64);
        let sent = sent_us(&p).expect("time");
        assert!(now_us() >= sent && now_us() - sent < 10_000_000);
        assert_eq!(sent_us(b"not a time at all...."), None);
    }
}
