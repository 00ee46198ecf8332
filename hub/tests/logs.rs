//! Logging of the `tern` binary: `[log] format = "json"` writes one JSON object per line
//! with level, target, timestamp and fields; `[log] level` sets what is logged, and
//! `RUST_LOG` overrides it when set.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::*;

/// Runs `tern serve` with `config` until it announces its listener, stops it with SIGTERM,
/// and returns its stderr. `rust_log` is the `RUST_LOG` it gets (unset when `None`).
fn serve_and_stop(config: &str, rust_log: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tern.toml");
    std::fs::write(&file, config).expect("write config");
    let mut cmd = Command::new(tern_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&file)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let mut child = cmd.spawn().expect("spawn tern serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read the first stdout line");
    assert!(first.starts_with("listening on "), "{first:?}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let out = wait_output(child, EXIT_TIMEOUT, "tern serve");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    stderr
}

#[test]
fn json_format_writes_one_object_per_line() {
    let stderr = serve_and_stop(
        "[log]\nformat = \"json\"\n\n[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"t\"\n",
        None,
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        assert!(line["level"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    let admin = lines
        .iter()
        .find(|l| l["fields"]["message"] == "admin API listening")
        .unwrap_or_else(|| panic!("no admin line in {stderr}"));
    assert_eq!(admin["level"], "INFO");
    assert_eq!(admin["target"], "tern_hub::admin");
    let addr: std::net::SocketAddr = admin["fields"]["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address field: {admin}"));
    assert!(addr.ip().is_loopback(), "{admin}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "shutdown complete"),
        "{stderr}"
    );
}

#[test]
fn level_comes_from_the_configuration_and_rust_log_overrides_it() {
    let quiet = serve_and_stop("[log]\nlevel = \"warn\"\n", None);
    assert!(
        !quiet.contains(" INFO ") && !quiet.contains("shutdown complete"),
        "info lines at level warn:\n{quiet}"
    );
    let text = serve_and_stop("[log]\nlevel = \"warn\"\n", Some("info"));
    assert!(
        text.contains(" INFO ") && text.contains("shutdown complete"),
        "RUST_LOG=info did not override the level:\n{text}"
    );
    assert!(!text.contains(" DEBUG "), "{text}");
    let directives = serve_and_stop(
        "[log]\nlevel = \"warn,tern_hub::admin=info\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\
         token = \"t\"\n",
        None,
    );
    assert!(
        directives.contains("admin API listening") && !directives.contains("shutdown complete"),
        "directives not applied per target:\n{directives}"
    );
}

#[test]
fn an_invalid_level_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tern.toml");
    std::fs::write(&file, "[log]\nlevel = \"sensors=loud\"\n").expect("write config");
    let out = tern(&["check-config", &file.display().to_string()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("key `log.level`"), "{stderr}");
}
