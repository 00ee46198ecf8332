//! `tern-sim`: device-fleet simulator and benchmark driver.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tern_sim::chaos::{BridgeMode, ChaosConfig, SpawnHub, Upstream};
use tern_sim::{QoS, RunConfig, SessionMode};

#[derive(Parser)]
#[command(
    name = "tern-sim",
    version,
    about = "Device-fleet simulator for the Tern hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a fleet publishing telemetry and check what a subscriber receives,
    /// optionally under chaos (hub kills, dropped connections, upstream outages). Exits
    /// with status 3 when acknowledged messages were lost.
    Run {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        target: String,
        /// Number of publishing devices.
        #[arg(long, default_value_t = 10)]
        devices: usize,
        /// Messages per second per device (0: as fast as possible).
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Publish QoS, 0 or 1.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Seconds to publish.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Messages per device at most.
        #[arg(long)]
        count: Option<u64>,
        /// Number of checking subscribers on `tern/sim/+/telemetry`.
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        /// Seed for start offsets and temperatures.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        chaos: ChaosArgs,
    },
    /// Consume what a Tern bridge forwards upstream: decode envelopes and `each`-mode
    /// messages, drop duplicates by id, report gaps per gateway.
    Consume {
        /// Upstream broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        target: String,
        /// Topic filter to subscribe to (repeatable).
        #[arg(long = "topic", default_value = "#")]
        topics: Vec<String>,
        /// MQTT client id.
        #[arg(long, default_value = "tern-sim-consume")]
        client_id: String,
        /// Subscription QoS.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// Seconds to listen at most.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Stop as soon as this many unique messages arrived.
        #[arg(long)]
        expect: Option<u64>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the hub's upstream bridge: drain rate of a preloaded backlog and latency at
    /// steady load, per mode, against a mosquitto started on a free loopback port.
    BridgeBench {
        /// The hub binary.
        #[arg(long, default_value = "target/release/tern")]
        hub: std::path::PathBuf,
        /// The mosquitto binary.
        #[arg(long, default_value = "mosquitto")]
        mosquitto: std::path::PathBuf,
        /// Backlog to drain, in messages.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Payload bytes per message (at least 24).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Messages per second of the latency run (0: skip it).
        #[arg(long, default_value_t = 2000)]
        latency_rate: u64,
        /// Seconds of the latency run.
        #[arg(long, default_value_t = 10)]
        latency_secs: u64,
        /// Modes to run (each, each-wide, postcard, json-lines, postcard-zstd); all by default.
        #[arg(long = "mode")]
        modes: Vec<String>,
        /// Print the rows as JSON too.
        #[arg(long)]
        json: bool,
    },
    /// Run the fixed benchmark scenarios and print a markdown table.
    Bench {
        /// Broker address; repeat it to measure several brokers side by side in one run
        /// (one after the other, each with the same scenarios).
        #[arg(long = "target", default_value = "127.0.0.1:1883")]
        targets: Vec<String>,
        /// 2 s per scenario instead of 5 s.
        #[arg(long)]
        quick: bool,
    },
    /// Devices running transactions of K half messages (commit, or roll back a fraction)
    /// and a subscriber checking that committed ones arrive whole and in order and
    /// rolled-back ones never.
    Tx {
        /// Broker address (a Tern hub with transactions enabled).
        #[arg(long, default_value = "127.0.0.1:1883")]
        target: String,
        /// Devices running transactions concurrently.
        #[arg(long, default_value_t = 10)]
        devices: usize,
        /// Messages per transaction; repeat for several phases.
        #[arg(long = "messages", default_values_t = [1u32, 10, 100])]
        messages: Vec<u32>,
        /// Seconds each phase starts new transactions.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Fraction of transactions rolled back, 0 to 1.
        #[arg(long, default_value_t = 0.1)]
        rollback: f64,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Seed for the rollback decisions.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also run the same devices publishing plain QoS 1 messages.
        #[arg(long)]
        compare_plain: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status of `run` when acknowledged messages were lost.
const EXIT_LOST: i32 = 3;

/// Faults for `run`, and the brokers the simulator owns to inject them.
#[derive(clap::Args)]
struct ChaosArgs {
    /// Persistent sessions (clean start off, expiry 600 s) with reconnects, without
    /// faults; every chaos option implies it.
    #[arg(long)]
    persistent: bool,
    /// Start this hub binary (`tern`) on a free loopback port, data in a temporary
    /// directory, instead of using --target.
    #[arg(long, value_name = "TERN_BINARY")]
    spawn_hub: Option<PathBuf>,
    /// Configuration file for the spawned hub (listener and data directory replaced).
    #[arg(long, value_name = "FILE", requires = "spawn_hub")]
    hub_config: Option<PathBuf>,
    /// SIGKILL the spawned hub every SECS seconds and restart it on the same port and data.
    #[arg(long, value_name = "SECS", value_parser = secs, requires = "spawn_hub")]
    kill_hub_every: Option<Duration>,
    /// Every SECS seconds shut down a random device's socket (no DISCONNECT).
    #[arg(long, value_name = "SECS", value_parser = secs)]
    drop_connections_every: Option<Duration>,
    /// Start mosquitto as the upstream broker, bridge the spawned hub to it, and check
    /// there.
    #[arg(long, requires = "spawn_hub")]
    upstream: bool,
    /// Stop the upstream mosquitto every SECS seconds (implies --upstream).
    #[arg(long, value_name = "SECS", value_parser = secs, requires = "spawn_hub")]
    upstream_outage_every: Option<Duration>,
    /// How long each upstream outage lasts.
    #[arg(long, value_name = "SECS", value_parser = secs, default_value = "2")]
    upstream_outage_for: Duration,
    /// Bridge mode: each or envelope.
    #[arg(long, default_value = "each", value_parser = ["each", "envelope"])]
    bridge_mode: String,
    /// The mosquitto binary for --upstream.
    #[arg(long, default_value = "mosquitto")]
    mosquitto: PathBuf,
}

impl ChaosArgs {
    fn sessions(&self) -> SessionMode {
        if self.persistent {
            SessionMode::Persistent
        } else {
            SessionMode::Clean
        }
    }

    fn config(self) -> ChaosConfig {
        let upstream = (self.upstream || self.upstream_outage_every.is_some()).then(|| Upstream {
            mosquitto: self.mosquitto,
            outage_every: self.upstream_outage_every,
            outage_for: self.upstream_outage_for,
            mode: if self.bridge_mode == "envelope" {
                BridgeMode::Envelope
            } else {
                BridgeMode::Each
            },
        });
        ChaosConfig {
            hub: self.spawn_hub.map(|binary| SpawnHub {
                binary,
                config: self.hub_config,
            }),
            kill_hub_every: self.kill_hub_every,
            drop_connections_every: self.drop_connections_every,
            upstream,
        }
    }
}

/// Parses a positive number of seconds.
fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?}: seconds must be above 0"));
    }
    Duration::try_from_secs_f64(v).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            target,
            devices,
            rate,
            qos,
            payload,
            duration,
            count,
            subscribers,
            seed,
            json,
            chaos,
        } => {
            anyhow::ensure!(
                payload <= tern_sim::payload::MAX_PAD,
                "--payload at most 65536"
            );
            anyhow::ensure!(duration >= 0.0 && duration.is_finite(), "bad --duration");
            let cfg = RunConfig {
                target,
                devices,
                subscribers,
                rate,
                qos: if qos == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                },
                payload,
                duration: Duration::from_secs_f64(duration),
                count,
                seed,
                progress: true,
                sessions: chaos.sessions(),
                chaos: chaos.config(),
            };
            let summary = tern_sim::run(cfg).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("{summary}");
            }
            if summary.lost_acknowledged() {
                std::process::exit(EXIT_LOST);
            }
        }
        Command::Consume {
            target,
            topics,
            client_id,
            qos,
            duration,
            expect,
            json,
        } => {
            anyhow::ensure!(duration >= 0.0 && duration.is_finite(), "bad --duration");
            let config = tern_sim::consume::ConsumeConfig {
                target,
                client_id,
                filters: topics,
                qos,
                duration: Duration::from_secs_f64(duration),
                expect,
                ..Default::default()
            };
            let summary = tern_sim::consume::run(config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{summary}");
            }
        }
        Command::BridgeBench {
            hub,
            mosquitto,
            messages,
            payload,
            latency_rate,
            latency_secs,
            modes,
            json,
        } => {
            use tern_sim::bridge_bench::BenchMode;
            let modes = if modes.is_empty() {
                BenchMode::ALL.to_vec()
            } else {
                modes
                    .iter()
                    .map(|m| match m.as_str() {
                        "each" => Ok(BenchMode::Each),
                        "each-wide" => Ok(BenchMode::EachWide),
                        "postcard" => Ok(BenchMode::Postcard),
                        "json-lines" => Ok(BenchMode::JsonLines),
                        "postcard-zstd" => Ok(BenchMode::PostcardZstd),
                        other => Err(anyhow::anyhow!("unknown --mode {other:?}")),
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            let config = tern_sim::bridge_bench::BridgeBenchConfig {
                hub,
                mosquitto,
                messages,
                payload,
                latency_rate,
                latency_secs,
                modes,
            };
            let rows = tern_sim::bridge_bench::bridge_bench(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            }
        }
        Command::Bench { targets, quick } => {
            for target in &targets {
                if targets.len() > 1 {
                    println!("\n### {target}\n");
                }
                tern_sim::bench(target, quick).await?;
            }
        }
        Command::Tx {
            target,
            devices,
            messages,
            duration,
            rollback,
            payload,
            seed,
            compare_plain,
            json,
        } => {
            anyhow::ensure!(duration >= 0.0 && duration.is_finite(), "bad --duration");
            let config = tern_sim::tx::TxConfig {
                target,
                devices,
                sizes: messages,
                duration: Duration::from_secs_f64(duration),
                rollback,
                payload,
                seed,
                compare_plain,
            };
            let summary = tern_sim::tx::run(config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{summary}");
            }
            anyhow::ensure!(
                summary.rows.iter().all(tern_sim::tx::TxRow::is_clean),
                "a transaction promise was broken (see the verdict)"
            );
        }
    }
    Ok(())
}
