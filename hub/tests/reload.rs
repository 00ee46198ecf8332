//! Configuration reload of the bridges of a running `tern` binary (SIGHUP) against a real
//! mosquitto: a changed bridge forwards what is published afterwards under its new
//! settings without losing what came before; a bridge added by a reload starts
//! forwarding, a removed one stops and keeps its backlog, which it forwards once a later
//! reload adds it back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

/// Bound for the messages of one step to arrive upstream.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// One message as the cloud consumer received it: topic, payload, `tern-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    topic: String,
    payload: String,
    id: Option<String>,
}

/// A consumer on mosquitto subscribed to `#` at QoS 1.
struct Cloud {
    rx: mpsc::UnboundedReceiver<Got>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Cloud {
    async fn connect(port: u16) -> Cloud {
        let mut options = MqttOptions::new(unique("cloud"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (suback_tx, mut suback_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let id = p.properties.and_then(|props| {
                            props
                                .user_properties
                                .into_iter()
                                .find(|(k, _)| k == "tern-id")
                                .map(|(_, v)| v)
                        });
                        let _ = tx.send(Got {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            id,
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = suback_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        client
            .subscribe_many([Filter::new("#", QoS::AtLeastOnce)])
            .await
            .expect("subscribe");
        tokio::time::timeout(RECV_TIMEOUT, suback_rx.recv())
            .await
            .expect("SUBACK from mosquitto in time")
            .expect("consumer running");
        Cloud {
            rx,
            _client: client,
            task,
        }
    }

    /// Receives until every payload of `wanted` has arrived at least once; returns all
    /// that arrived (copies included).
    async fn until_all(&mut self, wanted: &[String]) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
        let mut got: Vec<Got> = Vec::new();
        while !wanted.iter().all(|w| got.iter().any(|g| g.payload == *w)) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(g)) => got.push(g),
                _ => panic!("upstream got {got:?}, still waiting for some of {wanted:?}"),
            }
        }
        got
    }

    /// Asserts that nothing arrives for a while.
    async fn expect_quiet(&mut self) {
        if let Ok(Some(g)) = tokio::time::timeout(QUIET * 2, self.rx.recv()).await {
            panic!("unexpected upstream message {g:?}");
        }
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.task.abort();
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
    let mut cloud = Cloud::connect(upstream.port()).await;
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
        let expected = if after.contains(&g.payload) {
            "site-b/sensors/t"
        } else {
            // A copy of an earlier message the old connection had not seen acknowledged.
            assert!(before.contains(&g.payload), "{g:?}");
            continue;
        };
        assert_eq!(g.topic, expected, "{got:?}");
        assert!(g.id.is_some(), "{g:?}");
    }
    cloud.expect_quiet().await;
    hub.finish();
}

/// A bridge added by a reload starts forwarding; removed by the next one, it stops and
/// its backlog stays; added back, it forwards that backlog first, in order, then new
/// messages.
#[tokio::test]
async fn bridges_are_added_removed_and_added_back_by_reload() {
    let upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port()).await;
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
    cloud.expect_quiet().await;

    hub.rewrite_config(&config(&bridge(&upstream.address(), "gw/")));
    hub.sighup();
    wait_log_count(&hub, "bridges reloaded", 3);
    assert!(
        reload_lines(&hub)[2].contains("added=[\"cloud\"]"),
        "{:?}",
        reload_lines(&hub)
    );
    let got = cloud.until_all(&backlog).await;
    let order: Vec<&str> = got
        .iter()
        .map(|g| g.payload.as_str())
        .filter(|p| backlog.iter().any(|b| b == p))
        .collect();
    assert_eq!(order.first(), Some(&"m3"), "{got:?}");
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
