//! The simulator against the real hub binary: a handful of devices at QoS 1
//! for about a second, no acknowledged message lost.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tern_sim::{QoS, RunConfig};

mod common;
use common::tern_binary;

/// Kills the hub when the test ends, passing or not.
struct Hub {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub() -> Hub {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(tern_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the tern hub");
    let stdout = child.stdout.take().expect("hub stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => Hub {
            child,
            addr,
            _dir: dir,
        },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the hub did not print `listening on <addr>`");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_fleet_loses_nothing_acknowledged() {
    let hub = start_hub();
    let summary = tern_sim::run(RunConfig {
        target: hub.addr.clone(),
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
        target: hub.addr.clone(),
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
