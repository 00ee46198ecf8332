//! The simulator against the real hub binary: a handful of devices at QoS 1
//! for about a second, no acknowledged message lost.

use std::time::Duration;

use tern_sim::{QoS, RunConfig};
use tern_testkit::start_hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_fleet_loses_nothing_acknowledged() {
    let hub = start_hub();
    let summary = tern_sim::run(RunConfig {
        target: hub.addr().to_string(),
        devices: 5,
        subscribers: 1,
        rate: 50.0,
        qos: QoS::AtLeastOnce,
        payload: 100,
        duration: Duration::from_secs(1),
        count: None,
        seed: 7,
        progress: false,
        ..RunConfig::default()
    })
    .await
    .expect("run");
    println!("{summary}");
    assert_eq!(summary.errors, 0, "{summary}");
    assert!(summary.sent >= 100, "{summary}");
    assert!(summary.acknowledged > 0, "{summary}");
    assert!(summary.acknowledged <= summary.sent, "{summary}");
    assert_eq!(summary.lost, 0, "{summary}");
    assert!(summary.received >= summary.acknowledged, "{summary}");
    assert_eq!(summary.foreign, 0, "{summary}");
    assert!(summary.published_per_sec > 0.0, "{summary}");
    assert!(summary.latency.p50_ms > 0.0, "{summary}");
    assert!(
        summary.latency.p50_ms <= summary.latency.p99_ms,
        "{summary}"
    );
    assert!(
        summary.latency.p99_ms <= summary.latency.max_ms,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_bounds_each_device() {
    let hub = start_hub();
    let summary = tern_sim::run(RunConfig {
        target: hub.addr().to_string(),
        devices: 3,
        subscribers: 2,
        rate: 0.0,
        qos: QoS::AtLeastOnce,
        payload: 64,
        duration: Duration::from_secs(10),
        count: Some(40),
        seed: 3,
        progress: false,
        ..RunConfig::default()
    })
    .await
    .expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert_eq!(summary.sent, 120, "{summary}");
    assert_eq!(summary.acknowledged, 120, "{summary}");
    assert_eq!(summary.lost, 0, "{summary}");
    // Two subscribers each receive everything.
    assert!(summary.received >= 240, "{summary}");
}
