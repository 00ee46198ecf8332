//! Chaos runs against the real hub binary (and a real mosquitto upstream): hub kills,
//! dropped device connections and upstream outages, each a few seconds long on loopback.
//! Whatever the faults, no acknowledged message may be missing at the checking
//! subscribers; duplicates are allowed (QoS 1 is at least once).

use std::process::Command;
use std::time::Duration;

use tern_sim::chaos::{BridgeMode, ChaosConfig, ChaosReport, CheckPoint, SpawnHub, Upstream};
use tern_sim::{QoS, RunConfig, Summary};

use tern_testkit::{free_port, mosquitto_binary, start_mosquitto_with, tern_binary};

fn spawn_hub() -> Option<SpawnHub> {
    Some(SpawnHub {
        binary: tern_binary(),
        config: None,
    })
}

fn fleet(seconds: u64, chaos: ChaosConfig) -> RunConfig {
    RunConfig {
        devices: 5,
        subscribers: 1,
        rate: 40.0,
        qos: QoS::AtLeastOnce,
        payload: 64,
        duration: Duration::from_secs(seconds),
        seed: 11,
        chaos,
        ..RunConfig::default()
    }
}

/// Runs five devices at 40 msg/s for `seconds` under `chaos` and checks what every
/// chaos run must show: something acknowledged, all of it delivered. Returns the summary
/// and its chaos report.
async fn run_without_loss(seconds: u64, chaos: ChaosConfig) -> (Summary, ChaosReport) {
    let s = tern_sim::run(fleet(seconds, chaos)).await.expect("run");
    println!("{s}");
    assert_eq!(s.errors, 0, "{s}");
    assert!(s.acknowledged > 0, "{s}");
    assert!(s.acknowledged <= s.sent, "{s}");
    assert_eq!(s.lost, 0, "{s}");
    assert_eq!(s.zero_loss, Some(true), "{s}");
    assert!(s.received >= s.acknowledged, "{s}");
    assert_eq!(s.foreign, 0, "{s}");
    let report = s.chaos.clone().expect("a chaos report");
    (s, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_kills_lose_nothing_acknowledged() {
    let (summary, chaos) = run_without_loss(
        5,
        ChaosConfig {
            hub: spawn_hub(),
            kill_hub_every: Some(Duration::from_millis(1500)),
            ..ChaosConfig::default()
        },
    )
    .await;
    assert_eq!(chaos.checked_at, CheckPoint::Hub);
    // Kills at 1.5 s, 3 s and 4.5 s of a 5 s run.
    assert_eq!(chaos.hub_kills, 3, "{summary}");
    assert_eq!(chaos.hub_restarts, 3, "{summary}");
    assert_eq!(chaos.recovery.len(), 3, "{summary}");
    for r in &chaos.recovery {
        assert!(r.listening_ms.is_some(), "{summary}");
        assert!(r.first_connack_ms.is_some(), "{summary}");
    }
    // Every device and the subscriber lose their connection at each kill. A client still
    // reconnecting at the next kill reconnects once for both, and devices done
    // publishing by the last one need not come back: at least the first kill counts.
    assert!(chaos.device_reconnects >= 5, "{summary}");
    assert!(chaos.subscriber_reconnects >= 1, "{summary}");
    // The hub keeps persistent sessions across SIGKILL.
    assert_eq!(chaos.sessions_not_resumed, 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_reconnect_and_resend() {
    let (summary, chaos) = run_without_loss(
        3,
        ChaosConfig {
            hub: spawn_hub(),
            drop_connections_every: Some(Duration::from_millis(200)),
            ..ChaosConfig::default()
        },
    )
    .await;
    assert_eq!(chaos.hub_kills, 0, "{summary}");
    assert!(chaos.connection_drops >= 5, "{summary}");
    // Only established connections are dropped, and each dropped device reconnects to
    // go on publishing (the last drop may hit a device that has just finished).
    assert!(
        chaos.device_reconnects + 1 >= chaos.connection_drops,
        "{summary}"
    );
    assert!(
        chaos.device_reconnects <= chaos.connection_drops,
        "{summary}"
    );
    assert_eq!(chaos.subscriber_reconnects, 0, "{summary}");
    assert_eq!(chaos.sessions_not_resumed, 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_outages_lose_nothing_acknowledged() {
    let (summary, chaos) = run_without_loss(
        5,
        ChaosConfig {
            hub: spawn_hub(),
            upstream: Some(Upstream {
                mosquitto: mosquitto_binary(),
                outage_every: Some(Duration::from_secs(2)),
                outage_for: Duration::from_millis(800),
                mode: BridgeMode::Each,
            }),
            ..ChaosConfig::default()
        },
    )
    .await;
    assert_eq!(chaos.checked_at, CheckPoint::Upstream);
    // Outages at 2 s and 4 s, 0.8 s each.
    assert_eq!(chaos.upstream_outages, 2, "{summary}");
    assert!(chaos.upstream_down_secs >= 1.6, "{summary}");
    // The upstream subscriber comes back (once per outage, unless it is still trying
    // when the next one starts).
    assert!(chaos.subscriber_reconnects >= 1, "{summary}");
    assert_eq!(chaos.device_reconnects, 0, "{summary}");
    assert_eq!(chaos.sessions_not_resumed, 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_bridge_survives_hub_kills_and_an_outage() {
    let (summary, chaos) = run_without_loss(
        4,
        ChaosConfig {
            hub: spawn_hub(),
            kill_hub_every: Some(Duration::from_millis(1300)),
            upstream: Some(Upstream {
                mosquitto: mosquitto_binary(),
                outage_every: Some(Duration::from_secs(2)),
                outage_for: Duration::from_secs(1),
                mode: BridgeMode::Envelope,
            }),
            ..ChaosConfig::default()
        },
    )
    .await;
    assert_eq!(chaos.checked_at, CheckPoint::Upstream);
    assert_eq!(chaos.hub_kills, 3, "{summary}");
    assert_eq!(chaos.upstream_outages, 1, "{summary}");
}

/// `tern-sim run` exits with status 3 when a broker acknowledged messages it then did not
/// deliver: mosquitto with a queue of one message per client drops what a slow QoS 1
/// subscriber cannot take.
#[test]
fn exit_status_says_acknowledged_messages_were_lost() {
    let mosquitto = start_mosquitto_with(
        free_port(),
        "max_inflight_messages 1\nmax_queued_messages 1\n",
    );
    let port = mosquitto.port();
    let output = Command::new(env!("CARGO_BIN_EXE_tern-sim"))
        .args(["run", "--target", &format!("127.0.0.1:{port}")])
        .args([
            "--devices",
            "10",
            "--rate",
            "0",
            "--duration",
            "1",
            "--json",
        ])
        .output()
        .expect("run tern-sim");
    drop(mosquitto);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("JSON summary");
    assert!(summary["lost"].as_u64().expect("lost") > 0, "{stdout}");
    assert_eq!(
        summary["zero_loss"],
        serde_json::Value::Bool(false),
        "{stdout}"
    );
    assert_eq!(output.status.code(), Some(3), "{stdout}");
}
