//! The `tern` command line: version, configuration checks, generated defaults, shutdown.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `toml` to a file in a fresh temp dir and runs `tern check-config` on it.
fn check(toml: &str) -> (bool, String, String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tern.toml");
    std::fs::write(&path, toml).expect("write config");
    let out = tern(&["check-config", path.to_str().expect("utf-8 path")]);
    (
        out.status.success(),
        text(&out.stdout),
        text(&out.stderr),
        path,
        dir,
    )
}

#[test]
fn version_flag() {
    let out = tern(&["--version"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("tern "), "{stdout:?}");
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout:?}");
}

#[test]
fn check_config_accepts_valid_file() {
    let (ok, stdout, stderr, _, _dir) = check(
        "data_dir = \"/tmp/tern\"\n[[listener]]\nbind = \"127.0.0.1:1884\"\nmax_connections = 10\n\
         [session]\nmax_packet_size = \"64KiB\"\nqueue_overflow = \"drop-new\"\nconnect_timeout = \"5s\"\n",
    );
    assert!(ok, "stderr: {stderr}");
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn check_config_accepts_empty_file() {
    let (ok, _, stderr, _, _dir) = check("");
    assert!(ok, "an empty file means all defaults; stderr: {stderr}");
}

/// A bad file is reported with the file, the key and the reason; exit code is non-zero.
#[test]
fn check_config_reports_file_key_and_reason() {
    let cases = [
        ("[session]\nbogus = 1\n", "session.bogus", "unknown"),
        (
            "[session]\nmax_packet_size = \"lots\"\n",
            "session.max_packet_size",
            "",
        ),
        (
            "[session]\nqueue_overflow = \"explode\"\n",
            "session.queue_overflow",
            "",
        ),
        (
            "[session]\nconnect_timeout = \"soon\"\n",
            "session.connect_timeout",
            "",
        ),
        ("[[listener]]\nbind = \"not an address\"\n", "bind", ""),
        ("unknown_top_level = true\n", "unknown_top_level", "unknown"),
    ];
    for (toml, key, reason) in cases {
        let (ok, _, stderr, path, _dir) = check(toml);
        assert!(!ok, "{toml:?} accepted");
        assert!(
            stderr.contains(path.to_str().unwrap_or_default()),
            "no file name in {stderr:?}"
        );
        assert!(stderr.contains(key), "no key {key} in {stderr:?}");
        assert!(
            stderr.to_lowercase().contains(reason),
            "no reason {reason:?} in {stderr:?}"
        );
    }
}

#[test]
fn check_config_reports_syntax_error_and_missing_file() {
    let (ok, _, stderr, path, _dir) = check("[session\n");
    assert!(!ok);
    assert!(
        stderr.contains(path.to_str().unwrap_or_default()),
        "{stderr:?}"
    );
    let out = tern(&["check-config", "/nonexistent/tern.toml"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/tern.toml"),
        "{:?}",
        text(&out.stderr)
    );
}

/// `generate-config` prints the defaults as TOML that `check-config` accepts.
#[test]
fn generated_config_passes_check() {
    let out = tern(&["generate-config"]);
    assert!(out.status.success());
    let toml = text(&out.stdout);
    for key in [
        "[session]",
        "[[listener]]",
        "max_packet_size",
        "queue_overflow",
        "sys_interval",
    ] {
        assert!(toml.contains(key), "generated config lacks {key}");
    }
    let (ok, _, stderr, _, _dir) = check(&toml);
    assert!(ok, "generated config rejected: {stderr}");
}

/// `serve` with a bad config file refuses to start and names the problem.
#[test]
fn serve_rejects_bad_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[session]\nreceive_maximum = \"many\"\n").expect("write");
    let child = Command::new(tern_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = wait_output(child, EXIT_TIMEOUT, "tern serve with a bad config");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("session.receive_maximum"),
        "{}",
        text(&out.stderr)
    );
}

/// SIGTERM shuts down gracefully (exit 0); connected v5 clients get DISCONNECT 0x8B (Server
/// shutting down), 3.1.1 clients are closed.
#[tokio::test]
async fn sigterm_graceful_shutdown() {
    let mut hub = Hub::start();
    let (mut v5, _) = RawClient::connect_ok(hub.addr(), Connect::v5("bye5")).await;
    let (mut v4, _) = RawClient::connect_ok(hub.addr(), Connect::v4("bye4")).await;
    hub.terminate();
    let got = v5.expect_closed(EXIT_TIMEOUT).await;
    assert!(
        matches!(got.as_slice(), [Incoming::Disconnect { reason: 0x8B, .. }]),
        "v5 got {got:?}"
    );
    let got = v4.expect_closed(EXIT_TIMEOUT).await;
    assert!(got.is_empty(), "3.1.1 got {got:?}");
    let status = hub.wait_exit(EXIT_TIMEOUT);
    assert!(status.success(), "exit status {status}\n{}", hub.logs());
}

/// SIGINT (Ctrl-C) is a graceful shutdown too.
#[test]
fn sigint_graceful_shutdown() {
    let mut hub = Hub::start();
    let status = Command::new("kill")
        .args(["-INT", &hub.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let status = hub.wait_exit(EXIT_TIMEOUT);
    assert!(status.success(), "exit status {status}\n{}", hub.logs());
}

/// The hub serves a data dir given on the command line and creates it when missing.
#[test]
fn serve_creates_data_dir() {
    let hub = Hub::start();
    assert!(
        hub.data_dir().is_dir(),
        "{} not created",
        hub.data_dir().display()
    );
    hub.finish();
}

/// SIGTERM arriving right after `listening on` is printed is still a graceful shutdown: the
/// signal handlers are in place before the hub announces itself.
#[test]
fn sigterm_right_after_start_is_graceful() {
    for _ in 0..5 {
        Hub::start().finish();
    }
}
