//! `tern-sim bench`: fixed scenarios, one after another, as a markdown table.

use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use tern_client::{AsyncClient, Buffers, ConfigBuilder, Event, QoS};
use tokio::time::Instant;

use crate::run::{RunConfig, Summary, run};

/// One scenario of the benchmark.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name for the table.
    pub name: String,
    /// The run it performs.
    pub config: RunConfig,
}

/// The fixed scenario list: fan-in at QoS 0 and 1 (1, 10, 100 publishers;
/// 64 B and 1 KiB), then fan-out (1 publisher, 10 and 100 subscribers).
/// Every publisher runs at full speed.
pub fn scenarios(target: &str, quick: bool) -> Vec<Scenario> {
    let duration = Duration::from_secs(if quick { 2 } else { 5 });
    let base = RunConfig {
        target: target.to_owned(),
        rate: 0.0,
        duration,
        progress: false,
        ..RunConfig::default()
    };
    let mut out = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        for payload in [64, 1024] {
            for devices in [1, 10, 100] {
                out.push(Scenario {
                    name: format!("fan-in qos{} {devices}→1 {}", qos as u8, size(payload)),
                    config: RunConfig {
                        devices,
                        subscribers: 1,
                        qos,
                        payload,
                        ..base.clone()
                    },
                });
            }
        }
    }
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        for subscribers in [10, 100] {
            out.push(Scenario {
                name: format!("fan-out qos{} 1→{subscribers} 64 B", qos as u8),
                config: RunConfig {
                    devices: 1,
                    subscribers,
                    qos,
                    payload: 64,
                    ..base.clone()
                },
            });
        }
    }
    out
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Header of the markdown table.
pub const HEADER: &str = "| scenario | published msg/s | delivered msg/s | p50 ms | p99 ms | lost | dup | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";

/// One markdown table row.
pub fn row(name: &str, s: &Summary) -> String {
    format!(
        "| {name} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
        s.published_per_sec,
        s.delivered_per_sec,
        s.latency.p50_ms,
        s.latency.p99_ms,
        s.lost,
        s.duplicates,
        s.errors
    )
}

/// Runs every scenario, printing the table as it goes; returns the summaries.
pub async fn bench(target: &str, quick: bool) -> anyhow::Result<Vec<(String, Summary)>> {
    println!("{HEADER}");
    let mut out = Vec::new();
    for sc in scenarios(target, quick) {
        let s = run(sc.config).await?;
        println!("{}", row(&sc.name, &s));
        out.push((sc.name, s));
        // Let the broker work off the backlog of this scenario before the next.
        settle(target).await;
    }
    Ok(out)
}

/// Waits (at most 10 s) until a message published to a probe topic comes
/// back within 20 ms, or at least 300 ms.
pub async fn settle(target: &str) {
    let start = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(10), probe_until_quick(target)).await;
    tokio::time::sleep_until(start + Duration::from_millis(300)).await;
}

async fn probe_until_quick(target: &str) -> anyhow::Result<()> {
    const TOPIC: &str = "tern/sim-probe/settle";
    let stream = tokio::net::TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let mut io = FromTokio::new(stream);
    let (mut rx, mut tx) = (vec![0u8; 4096], vec![0u8; 4096]);
    let config = ConfigBuilder::new("tern-sim-probe")
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .build();
    let mut client: AsyncClient<'_, 4> = AsyncClient::new(config, Buffers::new(&mut rx, &mut tx));
    let epoch = Instant::now();
    let now = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    client
        .connect(&mut io, now())
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    client
        .subscribe(&mut io, &[(TOPIC, QoS::AtMostOnce)], now())
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    loop {
        let sent = Instant::now();
        client
            .publish(&mut io, TOPIC, b"probe", QoS::AtMostOnce, &[], now())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        loop {
            if let Some(Event::Message(m)) = client
                .poll(&mut io, now())
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                && m.topic == TOPIC
            {
                break;
            }
        }
        if sent.elapsed() < Duration::from_millis(20) {
            let _ = client.disconnect(&mut io).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
