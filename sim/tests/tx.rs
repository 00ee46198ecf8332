//! `tern-sim tx` against real brokers on free loopback ports: the Tern hub keeps
//! every transaction promise (committed transactions whole and in order, rolled-back
//! ones never delivered), and the checker does notice a broker that keeps none
//! (mosquitto delivers half messages at once, rolled back or not).

use std::time::Duration;

use tern_sim::tx::{TxConfig, TxSummary, run};
use tern_testkit::{start_hub, start_mosquitto};

fn config(target: &str, sizes: Vec<u32>, rollback: f64) -> TxConfig {
    TxConfig {
        target: target.to_string(),
        devices: 3,
        sizes,
        duration: Duration::from_millis(800),
        rollback,
        payload: 100,
        seed: 11,
        compare_plain: false,
    }
}

fn show(summary: &TxSummary) -> String {
    format!("{summary}\n{summary:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_delivers_committed_transactions_whole_and_rolled_back_ones_never() {
    let hub = start_hub();
    let mut cfg = config(&hub.addr().to_string(), vec![1, 10, 100], 0.3);
    cfg.compare_plain = true;
    let summary = run(cfg).await.expect("run");
    println!("{summary}");
    for row in &summary.rows {
        let s = show(&summary);
        assert!(row.is_clean(), "K = {}: {s}", row.messages_per_tx);
        assert_eq!(row.unresolved, 0, "{s}");
        assert!(row.committed > 0, "{s}");
        // Exactly the committed messages arrived (a leak or a loss would change this).
        assert_eq!(
            row.received,
            row.committed * u64::from(row.messages_per_tx),
            "{s}"
        );
        assert!(row.tx_per_sec > 0.0 && row.messages_per_sec > 0.0, "{s}");
        assert!(
            row.commit_latency.p50_ms > 0.0
                && row.commit_latency.p50_ms <= row.commit_latency.p99_ms,
            "{s}"
        );
    }
    let rolled_back: u64 = summary.rows.iter().map(|r| r.rolled_back).sum();
    assert!(rolled_back > 0, "{}", show(&summary));
    let plain = summary.plain.as_ref().expect("plain comparison");
    assert_eq!(plain.errors, 0, "{}", show(&summary));
    assert!(plain.acknowledged > 0, "{}", show(&summary));
    assert_eq!(plain.received, plain.acknowledged, "{}", show(&summary));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_flags_a_broker_that_delivers_half_messages() {
    let broker = start_mosquitto();
    let summary = run(config(&broker.addr().to_string(), vec![10], 0.5))
        .await
        .expect("run");
    println!("{summary}");
    let row = &summary.rows[0];
    let s = show(&summary);
    assert_eq!(row.errors, 0, "{s}");
    assert!(row.committed > 0 && row.rolled_back > 0, "{s}");
    // mosquitto knows nothing of `tern-tx`: every half message is delivered at once,
    // so rolled-back ones leak.
    assert!(row.leaked > 0 && row.leaked <= row.rolled_back * 10, "{s}");
    assert_eq!(row.incomplete, 0, "{s}");
    assert!(!row.is_clean(), "{s}");
}
