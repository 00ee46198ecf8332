//! `tern-sim tx` against real brokers on free loopback ports: the Tern hub keeps
//! every transaction promise (committed transactions whole and in order, rolled-back
//! ones never delivered), and the checker does notice a broker that keeps none
//! (mosquitto delivers half messages at once, rolled back or not).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tern_sim::tx::{TxConfig, TxSummary, run};

/// A broker process, killed by its PID when the test ends.
struct Broker {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `TERN_TEST_BIN`, or `target/debug/tern`, built when missing.
fn tern_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TERN_TEST_BIN") {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sim sits in the workspace")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "tern-hub", "--bin", "tern"])
        .current_dir(&root)
        .status()
        .expect("run cargo to build the tern hub");
    assert!(
        status.success(),
        "`cargo build -p tern-hub` failed: {status}"
    );
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("debug").join("tern");
    assert!(bin.is_file(), "tern binary not found at {}", bin.display());
    bin
}

fn start_hub() -> Broker {
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
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Broker {
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

fn start_mosquitto() -> Broker {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .expect("write mosquitto.conf");
    let bin = if Path::new("/usr/sbin/mosquitto").is_file() {
        PathBuf::from("/usr/sbin/mosquitto")
    } else {
        PathBuf::from("mosquitto")
    };
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto (install the mosquitto package)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("mosquitto exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker {
        child,
        addr: format!("127.0.0.1:{port}"),
        _dir: dir,
    }
}

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
    let mut cfg = config(&hub.addr, vec![1, 10, 100], 0.3);
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
    let summary = run(config(&broker.addr, vec![10], 0.5)).await.expect("run");
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
