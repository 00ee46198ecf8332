//! Configuration reload of the bridges of a running `tern` binary (SIGHUP) against a real
//! mosquitto: a changed bridge forwards what is published afterwards under its new
//! settings without losing what came before; a bridge added by a reload starts
//! forwarding, a removed one stops and keeps its backlog, which it forwards once a later
//! reload adds it back.

mod common;

use std::time::{Duration, Instant};

use common::cloud::{Cloud, Got};
use common::*;

/// Bound for the messages of one step to arrive upstream.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

impl Cloud {
    /// Receives until every payload of `wanted` has arrived at least once; returns all
    /// that arrived (copies included).
    async fn until_all(&mut self, wanted: &[String]) -> Vec<Got> {
        self.collect_until(ARRIVAL_TIMEOUT, |got| {
            wanted.iter().all(|w| got.iter().any(|g| g.text() == *w))
        })
        .await
    }
}

/// A hub configuration with `bridges` (TOML tables).
fn config(bridges: &str) -> String {
    format!("[session]\nsys_interval = \"1s\"\n\n{bridges}")
}

/// A `[[bridge]]` named `cloud` forwarding `sensors/#` under `prefix`.
fn bridge(address: &str, prefix: &str) -> String {
    format!(
        "[[bridge]]\nname = \"cloud\"\naddress = {address:?}\nclient_id = \"gw-cloud\"\n\
         topics = [\"sensors/#\"]\nremote_prefix = {prefix:?}\n\
         reconnect = {{ min = \"50ms\", max = \"400ms\" }}\n"
    )
}

/// Publishes `payloads` on `sensors/t` at QoS 1, each acknowledged by the hub.
async fn publish(hub: &Hub, payloads: &[String]) {
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5(&unique("dev"))).await;
    for payload in payloads {
        assert_eq!(
            c.publish(Pub::new("sensors/t", payload.as_bytes()).qos(1, 0))
                .await,
            0,
            "PUBACK reason of {payload}"
        );
    }
    c.disconnect().await;
}

fn payloads(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// Waits until the hub's log holds `needle` at least `count` times.
fn wait_log_count(hub: &Hub, needle: &str, count: usize) {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    while hub.logs().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "log never held {needle:?} {count} times\n--- hub log ---\n{}",
            hub.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The reload lines of the log (`bridges reloaded ...`).
fn reload_lines(hub: &Hub) -> Vec<String> {
    hub.logs()
        .lines()
        .filter(|l| l.contains("bridges reloaded"))
        .map(str::to_owned)
        .collect()
}

/// Changing `remote_prefix` and sending SIGHUP restarts the bridge with the new prefix:
/// what was published before arrived under the old prefix, what is published after under
/// the new one, with no message lost, and the log names the bridge and the changed key.
#[tokio::test]
async fn a_changed_bridge_forwards_under_its_new_settings() {
    let upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), &unique("cloud")).await;
    let hub = Hub::with_config(&config(&bridge(&upstream.address(), "site-a/")));
    hub.wait_log("bridge connected");

    let before = payloads(0..5);
    publish(&hub, &before).await;
    let got = cloud.until_all(&before).await;
    assert!(got.iter().all(|g| g.topic == "site-a/sensors/t"), "{got:?}");

    hub.rewrite_config(&config(&bridge(&upstream.address(), "site-b/")));
    hub.sighup();
    wait_log_count(&hub, "bridge restarting with new settings", 1);
    wait_log_count(&hub, "bridges reloaded", 1);
    let line = reload_lines(&hub).join("\n");
    assert!(
        line.contains("changed=[(\"cloud\", [\"remote_prefix\"])]") && line.contains("added=[]"),
        "{line}"
    );

    let after = payloads(5..10);
    publish(&hub, &after).await;
    let got = cloud.until_all(&after).await;
    for g in &got {
        let expected = if after.contains(&g.text()) {
            "site-b/sensors/t"
        } else {
            // A copy of an earlier message the old connection had not seen acknowledged.
            assert!(before.contains(&g.text()), "{g:?}");
            continue;
        };
        assert_eq!(g.topic, expected, "{got:?}");
        assert!(g.prop("tern-id").is_some(), "{g:?}");
    }
    cloud.expect_quiet(QUIET * 2).await;
    hub.finish();
}

/// A bridge added by a reload starts forwarding; removed by the next one, it stops and
/// its backlog stays; added back, it forwards that backlog first, in order, then new
/// messages.
#[tokio::test]
async fn bridges_are_added_removed_and_added_back_by_reload() {
    let upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), &unique("cloud")).await;
    let hub = Hub::with_config(&config(""));

    hub.rewrite_config(&config(&bridge(&upstream.address(), "gw/")));
    hub.sighup();
    wait_log_count(&hub, "bridges reloaded", 1);
    hub.wait_log("bridge connected");
    let first = payloads(0..3);
    publish(&hub, &first).await;
    let got = cloud.until_all(&first).await;
    assert!(got.iter().all(|g| g.topic == "gw/sensors/t"), "{got:?}");

    hub.rewrite_config(&config(""));
    hub.sighup();
    wait_log_count(&hub, "bridges reloaded", 2);
    assert!(
        reload_lines(&hub)[1].contains("removed=[\"cloud\"]"),
        "{:?}",
        reload_lines(&hub)
    );
    let backlog = payloads(3..6);
    publish(&hub, &backlog).await;
    cloud.expect_quiet(QUIET * 2).await;

    hub.rewrite_config(&config(&bridge(&upstream.address(), "gw/")));
    hub.sighup();
    wait_log_count(&hub, "bridges reloaded", 3);
    assert!(
        reload_lines(&hub)[2].contains("added=[\"cloud\"]"),
        "{:?}",
        reload_lines(&hub)
    );
    let got = cloud.until_all(&backlog).await;
    let order: Vec<String> = got
        .iter()
        .map(Got::text)
        .filter(|p| backlog.iter().any(|b| b == p))
        .collect();
    assert_eq!(order.first().map(String::as_str), Some("m3"), "{got:?}");
    let later = payloads(6..8);
    publish(&hub, &later).await;
    cloud.until_all(&later).await;
    hub.finish();
}

/// A change outside `[[pipeline]]` and `[[bridge]]` is not applied, and the reload says
/// which sections need a restart.
#[test]
fn restart_only_sections_are_reported() {
    let hub = Hub::with_config(&config(""));
    hub.rewrite_config("[session]\nsys_interval = \"2s\"\n\n[log]\nformat = \"json\"\n");
    hub.sighup();
    hub.wait_log("restart to apply");
    let logs = hub.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("restart to apply"))
        .expect("line present");
    assert!(line.contains("sections=[\"session\", \"log\"]"), "{line}");
    hub.finish();
}
