//! `tern status` against a running hub binary: the grouped table, the JSON form with
//! counters that reflect traffic, and the failure modes (no `$SYS`, nothing listening).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn status(hub: &Hub, extra: &[&str]) -> Output {
    let target = hub.addr().to_string();
    let mut args = vec!["status", "--target", &target];
    args.extend_from_slice(extra);
    tern(&args)
}

fn status_json(hub: &Hub) -> serde_json::Value {
    let out = status(hub, &["--json"]);
    assert!(
        out.status.success(),
        "tern status failed: {}\n{}",
        text(&out.stderr),
        hub.logs()
    );
    serde_json::from_slice(&out.stdout).expect("tern status --json prints JSON")
}

#[test]
fn json_reports_counters_that_follow_traffic() {
    let hub = Hub::with_session("sys_interval = \"1s\"");
    for i in 0..3 {
        mosquitto_pub(&hub, V5, "sensors/d1/temp", &format!("2{i}.5"), 1, &[]);
    }
    // `$SYS` is republished every second: poll until a round includes the three publishes.
    let deadline = Instant::now() + Duration::from_secs(15);
    let json = loop {
        let json = status_json(&hub);
        if json["messages"]["received"]
            .as_u64()
            .is_some_and(|n| n >= 3)
        {
            break json;
        }
        assert!(
            Instant::now() < deadline,
            "messages/received never reached 3: {json:#}\n{}",
            hub.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(json["broker"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["broker"]["uptime"].is_u64(), "{json:#}");
    assert!(
        json["store"]["appends"].as_u64().is_some_and(|n| n >= 3),
        "{json:#}"
    );
    assert!(
        json["connections"]["accepted"]
            .as_u64()
            .is_some_and(|n| n >= 3),
        "{json:#}"
    );
    assert!(json["clients"]["connected"].is_u64(), "{json:#}");
    assert!(json["filters"]["batches"].is_u64(), "{json:#}");
    hub.finish();
}

#[test]
fn table_groups_values_by_section() {
    let hub = Hub::with_session("sys_interval = \"1s\"");
    let out = status(&hub, &["--wait", "500ms"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        hub.logs()
    );
    assert!(
        stdout.starts_with(&format!("tern status of {}\n", hub.addr())),
        "{stdout}"
    );
    let titles: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty() && !l.starts_with(' '))
        .collect();
    for section in ["broker", "clients", "messages", "store", "filters"] {
        assert!(titles.contains(&section), "no {section} section: {stdout}");
    }
    assert_eq!(titles.first(), Some(&"broker"), "{stdout}");
    let version = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("version "))
        .expect("a version line");
    assert_eq!(
        version.split_whitespace().nth(1),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["retained/count", "0"]),
        "{stdout}"
    );
    hub.finish();
}

#[test]
fn no_sys_values_is_a_failure() {
    let hub = Hub::with_session("sys_interval = \"0s\"");
    let out = status(&hub, &["--wait", "300ms"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("no $SYS values"),
        "{}",
        text(&out.stderr)
    );
    hub.finish();
}

#[test]
fn unreachable_hub_is_a_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let target = format!("127.0.0.1:{port}");
    let out = tern(&["status", "--target", &target, "--connect-timeout", "2s"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("tern status:"),
        "{}",
        text(&out.stderr)
    );
}
