//! `tern status` against a running hub binary. Through the admin API (the default): the
//! summary of clients, rates, store, filters and bridges (one bridge to a real mosquitto),
//! its JSON form with rates that follow traffic published while it measures, the address
//! and token taken from a configuration file, and a wrong token. Over MQTT (`--target`):
//! the grouped `$SYS` table, the JSON form, and the failure modes (no `$SYS`, nothing
//! listening).

mod common;

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "status-t0ken";

/// A hub with the admin API, a pass-through pipeline on `f/#` and a bridge `cloud` of
/// `f/#` to `upstream`.
fn observed_hub(upstream: &Mosquitto) -> (Hub, SocketAddr) {
    let pass = guests::toml_path(&guests::wasm(guests::Guest::Pass));
    let hub = Hub::with_config(&format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken = {TOKEN:?}\n\n\
         [[pipeline]]\ntopics = [\"f/#\"]\n\
         filters = [ {{ name = \"keep\", wasm = {pass}, config = \"\" }} ]\n\n\
         [[bridge]]\nname = \"cloud\"\naddress = {:?}\nclient_id = \"gw-status\"\n\
         topics = [\"f/#\"]\n",
        upstream.address()
    ));
    let admin = hub.admin_addr();
    hub.wait_log("bridge connected");
    (hub, admin)
}

/// Publishes up to `n` QoS 1 messages on `f/x`, `pause` apart, until `until` says stop.
async fn publish_paced(hub: &Hub, n: usize, pause: Duration, until: impl Fn() -> bool) {
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5(&unique("pub"))).await;
    for i in 0..n {
        if until() {
            break;
        }
        let payload = format!("{i}");
        assert_eq!(
            c.publish(Pub::new("f/x", payload.as_bytes()).qos(1, 0))
                .await,
            0
        );
        tokio::time::sleep(pause).await;
    }
    c.disconnect().await;
}

#[tokio::test]
async fn summary_from_the_admin_api() {
    let upstream = Mosquitto::start();
    let (hub, admin) = observed_hub(&upstream);
    publish_paced(&hub, 3, Duration::ZERO, || false).await;
    let url = format!("http://{admin}");
    // The bridge has forwarded the three once its status says so.
    let deadline = Instant::now() + Duration::from_secs(15);
    let stdout = loop {
        let out = tern(&[
            "status",
            "--admin",
            &url,
            "--token",
            TOKEN,
            "--interval",
            "200ms",
        ]);
        assert_ok(&out, &hub);
        let stdout = text(&out.stdout);
        if stdout.contains("forwarded 3 ") {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "bridge never showed 3 forwarded:\n{stdout}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in\n{stdout}"))
            .to_owned()
    };
    assert!(
        stdout.starts_with(&format!("tern {} at {url}, up ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(line("clients").contains("0 connected"), "{stdout}");
    assert!(line("messages").contains("/s in"), "{stdout}");
    assert!(line("store").contains(" records "), "{stdout}");
    assert!(
        line("filters").contains("1 pipelines; deploys 1 ok, 0 refused"),
        "{stdout}"
    );
    assert!(line("[0] config #0").contains("topics f/#"), "{stdout}");
    assert!(line("keep").contains("3 in, 3 kept"), "{stdout}");
    assert!(line("bridges").ends_with(" 1"), "{stdout}");
    let cloud = line("cloud");
    assert!(
        cloud.contains("cloud") && cloud.contains(" connected, backlog 0"),
        "{stdout}"
    );
    hub.finish();
}

#[tokio::test]
async fn json_rates_follow_traffic_during_the_interval() {
    let upstream = Mosquitto::start();
    let (hub, admin) = observed_hub(&upstream);
    let url = format!("http://{admin}");
    let status = tokio::task::spawn_blocking(move || {
        tern(&[
            "status",
            "--admin",
            &url,
            "--token",
            TOKEN,
            "--json",
            "--interval",
            "2s",
        ])
    });
    // Publishes until `tern status` is done, so traffic covers its whole interval
    // (bounded: 400 messages, 20 s).
    publish_paced(&hub, 400, Duration::from_millis(50), || {
        status.is_finished()
    })
    .await;
    let out = status.await.expect("tern status ran");
    assert_ok(&out, &hub);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("tern status --json prints JSON");
    assert_eq!(json["health"]["version"], env!("CARGO_PKG_VERSION"));
    let rate = json["rates"]["per_second"]["messages_in"]
        .as_f64()
        .expect("a rate");
    assert!(rate > 0.0, "no message rate while publishing: {json:#}");
    assert_eq!(json["rates"]["interval_secs"], 2.0);
    assert!(
        json["store"]["appends"].as_u64().is_some_and(|n| n >= 1),
        "{json:#}"
    );
    assert_eq!(
        json["filters"]["pipelines"][0]["filters"][0]["name"],
        "keep"
    );
    assert_eq!(json["bridges"][0]["name"], "cloud");
    assert!(json["clients"].is_array(), "{json:#}");
    hub.finish();
}

#[test]
fn address_and_token_come_from_the_configuration_and_a_wrong_token_fails() {
    let hub = Hub::with_config(&format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken = {TOKEN:?}\n"
    ));
    let admin = hub.admin_addr();
    // The operator's view of the same hub: its admin address and a token file.
    let token_file = hub.dir().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token file");
    let config = hub.dir().join("status.toml");
    write_admin_config(&config, &admin.to_string(), &token_file);
    let config = config.display().to_string();
    let out = tern(&["status", "--config", &config, "--interval", "100ms"]);
    assert_ok(&out, &hub);
    assert!(
        text(&out.stdout).starts_with(&format!(
            "tern {} at http://{admin}",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        text(&out.stdout)
    );

    let url = format!("http://{admin}");
    let out = tern(&[
        "status",
        "--admin",
        &url,
        "--token",
        "wrong",
        "--interval",
        "100ms",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    hub.finish();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails unless `out` (of `tern status`) is a success, with its stderr and `hub`'s log.
fn assert_ok(out: &Output, hub: &Hub) {
    assert!(
        out.status.success(),
        "tern status failed: {}\n{}",
        text(&out.stderr),
        hub.logs()
    );
}

/// `tern status` over MQTT (`$SYS`).
fn status(hub: &Hub, extra: &[&str]) -> Output {
    let target = hub.addr().to_string();
    let mut args = vec!["status", "--target", &target];
    args.extend_from_slice(extra);
    tern(&args)
}

fn status_json(hub: &Hub) -> serde_json::Value {
    let out = status(hub, &["--json"]);
    assert_ok(&out, hub);
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
    assert_ok(&out, &hub);
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
