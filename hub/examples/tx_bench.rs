//! Transactions per second against an in-process hub on loopback, over MQTT 5 (rumqttc):
//! transactions of 1, 10 and 100 messages (half messages, then `$tern/tx/{id}/commit`, all
//! QoS 1), and the same messages published as plain QoS 1 for comparison.
//!
//! Each producer pipelines its publishes (up to the hub's Receive Maximum in flight); a run
//! ends when every PUBACK has arrived, all of them 0x00. Figures go to `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release -p tern-hub --example tx_bench -- [MESSAGES] [PRODUCERS] [every-commit]
//! ```

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::watch;

/// Messages per run unless given on the command line.
const DEFAULT_MESSAGES: usize = 20_000;
/// Payload of every message.
const PAYLOAD: [u8; 64] = [b'x'; 64];
/// Longest a run may take before it is reported as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// What one run measured.
struct Run {
    acks: usize,
    elapsed: Duration,
}

/// Connects a producer and counts its PUBACKs (failing ones abort the run).
async fn producer(port: u16, id: &str) -> (AsyncClient, watch::Receiver<usize>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_request_channel_capacity(1024);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let (count_tx, count_rx) = watch::channel(0usize);
    tokio::spawn(async move {
        let mut acks = 0usize;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    assert!(
                        ack.reason == PubAckReason::Success,
                        "PUBACK {:?} {:?}",
                        ack.reason,
                        ack.properties
                    );
                    acks += 1;
                    let _ = count_tx.send(acks);
                }
                Ok(_) => {}
                // The run waits for its acknowledgements before disconnecting; an early end
                // shows as a failed run in `wait_acks`.
                Err(_) => return,
            }
        }
    });
    (client, count_rx)
}

async fn wait_acks(mut count: watch::Receiver<usize>, want: usize) {
    tokio::time::timeout(RUN_TIMEOUT, count.wait_for(|n| *n >= want))
        .await
        .expect("run finished in time")
        .expect("producer running");
}

/// `producers` producers at once, each running `each`; returns the acknowledgements and
/// the time until the last one.
async fn concurrently<F, Fut>(producers: usize, each: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = usize> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..producers).map(|p| tokio::spawn(each(p))).collect();
    let mut acks = 0;
    for task in tasks {
        acks += task.await.expect("producer task");
    }
    Run {
        acks,
        elapsed: started.elapsed(),
    }
}

/// `transactions` transactions of `per_tx` half messages each, committed; returns the
/// acknowledgements received.
async fn transactions(port: u16, name: String, per_tx: usize, transactions: usize) -> usize {
    let (client, count) = producer(port, &name).await;
    for t in 0..transactions {
        let id = format!("t{t}");
        for _ in 0..per_tx {
            let properties = PublishProperties {
                user_properties: vec![("tern-tx".to_owned(), id.clone())],
                ..PublishProperties::default()
            };
            client
                .publish_with_properties(
                    "bench/tx",
                    QoS::AtLeastOnce,
                    false,
                    &PAYLOAD[..],
                    properties,
                )
                .await
                .expect("queue half message");
        }
        client
            .publish(
                format!("$tern/tx/{id}/commit"),
                QoS::AtLeastOnce,
                false,
                Vec::new(),
            )
            .await
            .expect("queue commit");
    }
    let acks = transactions * (per_tx + 1);
    wait_acks(count, acks).await;
    let _ = client.disconnect().await;
    acks
}

/// `messages` plain QoS 1 publishes; returns the acknowledgements received.
async fn plain(port: u16, name: String, messages: usize) -> usize {
    let (client, count) = producer(port, &name).await;
    for _ in 0..messages {
        client
            .publish("bench/plain", QoS::AtLeastOnce, false, &PAYLOAD[..])
            .await
            .expect("queue publish");
    }
    wait_acks(count, messages).await;
    let _ = client.disconnect().await;
    messages
}

fn per_sec(n: usize, elapsed: Duration) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    let n = n as f64;
    n / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let messages: usize = match args.next() {
        Some(n) => n.parse()?,
        None => DEFAULT_MESSAGES,
    };
    let producers: usize = match args.next() {
        Some(n) => n.parse::<usize>()?.max(1),
        None => 1,
    };
    let every_commit = args.next().as_deref() == Some("every-commit");
    let dir = tempfile::tempdir()?;
    let mut config = tern_hub::Config {
        data_dir: dir.path().join("data"),
        ..tern_hub::Config::default()
    };
    config.listener[0].bind = "127.0.0.1:0".parse()?;
    config.session.sys_interval = tern_hub::config::HumanDuration(Duration::ZERO);
    if every_commit {
        config.store.fsync = tern_hub::config::Fsync::EveryCommit;
    }
    let listeners = tern_hub::bind_listeners(&config).await?;
    let port = listeners[0].local_addr()?.port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let hub = tokio::spawn(tern_hub::run(listeners, config, async {
        let _ = stop_rx.await;
    }));

    let fsync = if every_commit {
        "every-commit"
    } else {
        "interval"
    };
    println!(
        "store.fsync = {fsync}, {messages} messages of {} B per run, {producers} producer(s)",
        PAYLOAD.len()
    );
    println!("| mode | messages/tx | transactions/s | messages/s | elapsed |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let share = (messages / producers).max(1);
    let base = concurrently(producers, |p| plain(port, format!("plain-{p}"), share)).await;
    assert_eq!(base.acks, share * producers);
    let base_rate = per_sec(base.acks, base.elapsed);
    println!(
        "| plain QoS 1 | – | – | {base_rate:.0} | {:.2} s |",
        base.elapsed.as_secs_f64()
    );
    for per_tx in [1usize, 10, 100] {
        let count = (share / per_tx).max(1);
        let r = concurrently(producers, |p| {
            transactions(port, format!("tx-{per_tx}-{p}"), per_tx, count)
        })
        .await;
        assert_eq!(r.acks, producers * count * (per_tx + 1));
        let rate = per_sec(producers * count * per_tx, r.elapsed);
        println!(
            "| transactions | {per_tx} | {:.0} | {rate:.0} ({:.0} % of plain) | {:.2} s |",
            per_sec(producers * count, r.elapsed),
            100.0 * rate / base_rate,
            r.elapsed.as_secs_f64()
        );
    }
    let _ = stop_tx.send(());
    hub.await??;
    Ok(())
}
