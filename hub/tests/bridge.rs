//! The upstream bridge against a real mosquitto started by each test: forwarding in `each`
//! and `envelope` mode, filter routes to one bridge, TLS with a CA made by the test, and
//! the store-and-forward promises: nothing lost, order kept, duplicates carrying the same
//! id, through upstream outages, repeated upstream restarts and a SIGKILLed hub.
//!
//! The cloud side is [`Cloud`] (`common::cloud`): an MQTT 5 client with a persistent session
//! on mosquitto, so messages the bridge delivers while it is reconnecting wait for it in
//! mosquitto.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cloud::{Cloud, Got};
use common::guests::{Guest, toml_path, wasm};
use common::*;

/// Overall bound for a bulk transfer to arrive upstream.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

impl Cloud {
    /// Receives exactly `n` messages.
    async fn collect(&mut self, n: usize) -> Vec<Got> {
        self.collect_until(DRAIN_TIMEOUT, |g| g.len() >= n).await
    }
}

/// A `[[bridge]]` table to the mosquitto at `address`, with extra TOML lines.
fn bridge(name: &str, address: &str, extra: &str) -> String {
    format!(
        "[[bridge]]\nname = {name:?}\naddress = {address:?}\nclient_id = \"gw-{name}\"\n\
         reconnect = {{ min = \"50ms\", max = \"400ms\" }}\n{extra}\n"
    )
}

/// Hub configuration: `$SYS` every second, then `tables`.
fn hub_config(tables: &str) -> String {
    format!("[session]\nsys_interval = \"1s\"\n\n{tables}")
}

/// Publishes `payloads` on `topic` at QoS 1 through one connection, up to 32 in flight.
async fn publish_all(hub: &Hub, topic: &str, payloads: impl IntoIterator<Item = String>) {
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5(&unique("dev"))).await;
    let mut in_flight = std::collections::VecDeque::new();
    for payload in payloads {
        let pid = c.pid();
        c.send(&Pub::new(topic, payload.as_bytes()).qos(1, pid).encode(V5))
            .await;
        in_flight.push_back(pid);
        if in_flight.len() >= 32 {
            let pid = in_flight.pop_front().expect("in flight");
            assert_eq!(c.expect_ack(PUBACK, pid).await, 0, "PUBACK reason");
        }
    }
    while let Some(pid) = in_flight.pop_front() {
        assert_eq!(c.expect_ack(PUBACK, pid).await, 0, "PUBACK reason");
    }
    c.disconnect().await;
}

const PUBACK: u8 = 4;

fn numbered(range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    range.map(|i| format!("m{i}"))
}

/// Checks an at-least-once stream of `m<i>` payloads: every id always names the same
/// payload, the first copies of `m0..m<n>` arrive in order, nothing is missing. Returns the
/// number of duplicates.
fn check_stream(got: &[Got], n: usize) -> usize {
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    let mut next = 0;
    let mut duplicates = 0;
    for g in got {
        let text = g.text();
        let index: usize = text
            .strip_prefix('m')
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("unexpected payload {text:?}"));
        if let Some(id) = g.prop("tern-id") {
            let previous = by_id.insert(id.to_owned(), text.clone());
            assert!(
                previous.is_none_or(|p| p == text),
                "id {id} named two messages"
            );
        }
        if index == next {
            next += 1;
        } else {
            assert!(
                index < next,
                "m{index} arrived before m{next}: order broken or m{next} lost"
            );
            duplicates += 1;
        }
    }
    assert_eq!(next, n, "not every message arrived");
    duplicates
}

/// Feeds `each`-mode messages to the cloud-side de-duplicator of `tern-envelope` and
/// asserts that it sees no gap. Returns (accepted, duplicates).
fn dedup_each(got: &[Got]) -> (u64, u64) {
    let mut dedup = tern_envelope::consumer::Deduplicator::new();
    for g in got {
        let p =
            tern_envelope::each::provenance(g.user.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .expect("valid tern-id / tern-prev")
                .expect("a tern-id");
        dedup.observe(&p.id, p.coverage);
    }
    let reports = dedup.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].gaps.is_empty(), "{reports:?}");
    (reports[0].accepted, reports[0].duplicates)
}

/// Whether the first copies of `m0..m<n>` in `earlier` then `later` are all there.
fn all_arrived(earlier: &[Got], later: &[Got], n: usize) -> bool {
    let mut next = 0;
    for g in earlier.iter().chain(later) {
        if g.payload == format!("m{next}").as_bytes() {
            next += 1;
        }
    }
    next >= n
}

/// `each` mode over MQTT 5: topics mapped under `remote_prefix`, order kept, ids
/// `<gateway_id>:<seq>` chained with `tern-prev`, the publisher's properties kept, other
/// topics not forwarded, and the bridge's state under `$SYS`.
#[tokio::test]
async fn each_mode_forwards_in_order_with_prefix_and_ids() {
    let upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-each").await;
    let hub = Hub::with_config(&hub_config(&bridge(
        "cloud",
        &upstream.address(),
        "topics = [\"sensors/#\"]\nremote_prefix = \"gw/\"\ngateway_id = \"site-7\"",
    )));
    hub.wait_log("bridge connected");
    let (mut dev, _) = RawClient::connect_ok(hub.addr(), Connect::v5("dev-props")).await;
    let props = Props::new().str(0x03, "text/plain").user("unit", "C");
    assert_eq!(
        dev.publish(Pub::new("sensors/t1", b"first").qos(1, 0).props(props))
            .await,
        0
    );
    assert_eq!(
        dev.publish(Pub::new("other/x", b"not forwarded").qos(1, 0))
            .await,
        0
    );
    dev.disconnect().await;
    publish_all(&hub, "sensors/a/b", numbered(0..300)).await;

    let got = cloud.collect(301).await;
    let first = &got[0];
    assert_eq!(first.topic, "gw/sensors/t1");
    assert_eq!(first.text(), "first");
    assert_eq!(first.content_type.as_deref(), Some("text/plain"));
    assert_eq!(first.prop("unit"), Some("C"));
    let first_id = first.prop("tern-id").expect("tern-id");
    let first_seq: u64 = first_id
        .strip_prefix("site-7:")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("id {first_id}"));
    assert!(got[1..].iter().all(|g| g.topic == "gw/sensors/a/b"));
    assert_eq!(
        check_stream(&got[1..], 300),
        0,
        "no resend without a failure"
    );
    // Chained: each message names the seq of the one before (other/x lies between).
    let mut prev = first_seq;
    for g in &got[1..] {
        let seq: u64 = g
            .prop("tern-id")
            .and_then(|id| id.strip_prefix("site-7:"))
            .and_then(|s| s.parse().ok())
            .expect("id");
        assert_eq!(g.prop("tern-prev"), Some(prev.to_string().as_str()));
        assert!(seq > prev);
        prev = seq;
    }
    assert_eq!(
        got[1].prop("tern-id"),
        Some(format!("site-7:{}", first_seq + 2).as_str())
    );
    cloud.expect_quiet(QUIET).await;

    assert_eq!(
        wait_sys_counter(
            &hub,
            "$SYS/broker/bridges/cloud/forwarded",
            RECV_TIMEOUT,
            |v| v == 301
        )
        .await,
        Some(301)
    );
    assert_eq!(
        wait_sys_counter(
            &hub,
            "$SYS/broker/bridges/cloud/connected",
            RECV_TIMEOUT,
            |v| v == 1
        )
        .await,
        Some(1)
    );
    // `tern status` shows the bridge as its own group.
    let target = hub.addr().to_string();
    let out = tern(&["status", "--target", &target, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let cloud_status = &json["bridges"]["cloud"];
    assert_eq!(cloud_status["connected"], 1, "{json}");
    assert_eq!(cloud_status["forwarded"], 301, "{json}");
    assert_eq!(cloud_status["backlog"], 0, "{json}");
    assert_eq!(cloud_status["backlog_bytes"], 0, "{json}");
    assert_eq!(cloud_status["dropped"], 0, "{json}");
    assert_eq!(cloud_status["trimmed"], 0, "{json}");
    hub.finish();
}

/// MQTT 3.1.1 upstream at QoS 0: forwarded in order, without properties.
#[tokio::test]
async fn v311_upstream_at_qos0_forwards_without_ids() {
    let upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-v311").await;
    let hub = Hub::with_config(&hub_config(&bridge(
        "cloud",
        &upstream.address(),
        "topics = [\"#\"]\nprotocol = \"v311\"\nqos = 0",
    )));
    hub.wait_log("bridge connected");
    publish_all(&hub, "t/1", numbered(0..200)).await;
    let got = cloud.collect(200).await;
    assert!(got.iter().all(|g| g.topic == "t/1" && g.user.is_empty()));
    assert_eq!(check_stream(&got, 200), 0);
    hub.finish();
}

/// `envelope` mode: batches decode with `tern-envelope`, messages in order with their
/// original topics mapped, ranges chained without gaps; both formats.
#[tokio::test]
async fn envelope_mode_batches_decode_in_order() {
    for format in ["postcard", "json-lines"] {
        let upstream = Mosquitto::start();
        let mut cloud = Cloud::connect(upstream.port(), "cloud-env").await;
        let hub = Hub::with_config(&hub_config(&bridge(
            "cloud",
            &upstream.address(),
            &format!(
                "topics = [\"sensors/#\"]\nremote_prefix = \"gw/\"\nmode = \"envelope\"\n\
                 envelope_format = {format:?}\nbatch = {{ max_messages = 50, max_bytes = \"64KiB\", linger = \"20ms\" }}"
            ),
        )));
        hub.wait_log("bridge connected");
        publish_all(&hub, "sensors/e", numbered(0..1000)).await;
        let mut dedup = tern_envelope::consumer::Deduplicator::new();
        let mut messages = Vec::new();
        let mut envelopes = 0;
        while messages.len() < 1000 {
            let got = cloud.collect(1).await.remove(0);
            assert_eq!(got.topic, "gw/tern/envelope/gw-cloud");
            let envelope = tern_envelope::decode(&got.payload)
                .unwrap_or_else(|e| panic!("{format}: undecodable envelope: {e}"));
            assert_eq!(envelope.gateway, "gw-cloud");
            assert!(envelope.messages.len() <= 50);
            for v in dedup.observe_envelope(&envelope) {
                assert_eq!(v, tern_envelope::consumer::Verdict::New);
            }
            envelopes += 1;
            messages.extend(envelope.messages);
        }
        assert!(
            envelopes >= 20,
            "{format}: 1000 messages in {envelopes} envelopes"
        );
        let payloads: Vec<String> = messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        assert_eq!(payloads, numbered(0..1000).collect::<Vec<_>>(), "{format}");
        assert!(
            messages
                .iter()
                .all(|m| m.topic == "gw/sensors/e" && m.qos == 1)
        );
        let report = dedup.reports();
        assert!(
            report.iter().all(|g| g.gaps.is_empty()),
            "{format}: {report:?}"
        );
        hub.finish();
    }
}

/// A filter route `bridge:cloud` is forwarded by `cloud` alone, under the routed topic; a
/// second bridge whose topics match the original topic does not forward it.
#[tokio::test]
async fn filter_route_is_forwarded_by_its_bridge_only() {
    let upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-route").await;
    let pipeline = format!(
        "[[pipeline]]\ntopics = [\"sensors/#\"]\non_failure = \"pass\"\nfilters = [\n  \
         {{ name = \"route\", wasm = {}, config = \"sensors/{{device}}/temp -> bridge:cloud site-7/{{device}}/temperature\" }},\n]\n",
        toml_path(&wasm(Guest::Router))
    );
    let tables = format!(
        "{pipeline}\n{}\n{}",
        bridge(
            "cloud",
            &upstream.address(),
            "topics = []\nremote_prefix = \"c/\""
        ),
        bridge(
            "backup",
            &upstream.address(),
            "topics = [\"sensors/#\"]\nremote_prefix = \"b/\""
        ),
    );
    let hub = Hub::with_config(&hub_config(&tables));
    hub.wait_log("bridge connected");
    let (mut dev, _) = RawClient::connect_ok(hub.addr(), Connect::v5("dev-route")).await;
    assert_eq!(
        dev.publish(Pub::new("sensors/d1/temp", b"21.5").qos(1, 0))
            .await,
        0
    );
    assert_eq!(
        dev.publish(Pub::new("sensors/d2/humidity", b"40").qos(1, 0))
            .await,
        0
    );
    dev.disconnect().await;
    let mut got: Vec<(String, String)> = cloud
        .collect(2)
        .await
        .iter()
        .map(|g| (g.topic.clone(), g.text()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("b/sensors/d2/humidity".to_string(), "40".to_string()),
            ("site-7/d1/temperature".to_string(), "21.5".to_string()),
        ]
    );
    cloud.expect_quiet(QUIET).await;
    hub.finish();
}

/// Upstream down while devices publish: everything arrives once it is back, in order.
#[tokio::test]
async fn upstream_outage_loses_nothing() {
    let mut upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-outage").await;
    let hub = Hub::with_config(&hub_config(&bridge(
        "cloud",
        &upstream.address(),
        "topics = [\"sensors/#\"]",
    )));
    hub.wait_log("bridge connected");
    publish_all(&hub, "sensors/o", numbered(0..100)).await;
    let first = cloud.collect(100).await;
    upstream.stop();
    hub.wait_log("bridge disconnected");
    publish_all(&hub, "sensors/o", numbered(100..1100)).await;
    assert_eq!(
        wait_sys_counter(
            &hub,
            "$SYS/broker/bridges/cloud/connected",
            RECV_TIMEOUT,
            |v| v == 0
        )
        .await,
        Some(0)
    );
    upstream.restart();
    publish_all(&hub, "sensors/o", numbered(1100..1200)).await;
    let mut got = first;
    let rest = cloud
        .collect_until(DRAIN_TIMEOUT, |g| all_arrived(&got, g, 1200))
        .await;
    got.extend(rest);
    let duplicates = check_stream(&got, 1200);
    assert_eq!(dedup_each(&got), (1200, duplicates as u64));
    hub.wait_log("bridge reconnected");
    hub.finish();
}

/// Hub killed with SIGKILL while it drains a backlog, then restarted: every message
/// arrives, duplicates carry the id of the first copy.
#[tokio::test]
async fn hub_killed_mid_drain_resends_with_same_ids() {
    const N: usize = 20_000;
    let mut upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-kill").await;
    let mut hub = Hub::with_config(&hub_config(&bridge(
        "cloud",
        &upstream.address(),
        "topics = [\"sensors/#\"]\ninflight = 200",
    )));
    hub.wait_log("bridge connected");
    upstream.stop();
    publish_all(&hub, "sensors/k", numbered(0..N)).await;
    upstream.restart();
    let before = cloud
        .collect_until(DRAIN_TIMEOUT, |g| g.len() >= 2000)
        .await;
    hub.kill_9();
    hub.restart();
    let mut got = before;
    let rest = cloud
        .collect_until(DRAIN_TIMEOUT, |g| all_arrived(&got, g, N))
        .await;
    got.extend(rest);
    let duplicates = check_stream(&got, N);
    let (accepted, dropped) = dedup_each(&got);
    assert_eq!((accepted, dropped), (N as u64, duplicates as u64));
    eprintln!("{duplicates} duplicates after SIGKILL");
    // The restarted hub resumed mid-drain: its cursor was short of the last message.
    let logs = hub.logs();
    let cursor: u64 = logs
        .lines()
        .rfind(|l| l.contains("bridge starting"))
        .and_then(|l| l.split("cursor=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|c| c.parse().ok())
        .expect("a `bridge starting` line with the cursor");
    assert!(
        cursor < N as u64,
        "the drain had finished before the kill (cursor {cursor})"
    );
    hub.finish();
}

/// mosquitto restarted again and again while the bridge drains: nothing lost, order kept.
#[tokio::test]
async fn upstream_restarted_repeatedly_during_drain() {
    const N: usize = 20_000;
    let mut upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-flap").await;
    let hub = Hub::with_config(&hub_config(&bridge(
        "cloud",
        &upstream.address(),
        "topics = [\"sensors/#\"]",
    )));
    hub.wait_log("bridge connected");
    upstream.stop();
    publish_all(&hub, "sensors/f", numbered(0..N)).await;
    upstream.restart();
    let mut got = Vec::new();
    for _ in 0..4 {
        let more = cloud
            .collect_until(DRAIN_TIMEOUT, |g| g.len() >= 1000)
            .await;
        got.extend(more);
        upstream.stop();
        tokio::time::sleep(Duration::from_millis(200)).await;
        upstream.restart();
    }
    let rest = cloud
        .collect_until(DRAIN_TIMEOUT, |g| all_arrived(&got, g, N))
        .await;
    got.extend(rest);
    let duplicates = check_stream(&got, N);
    assert_eq!(dedup_each(&got), (N as u64, duplicates as u64));
    let reconnects = wait_sys_counter(
        &hub,
        "$SYS/broker/bridges/cloud/reconnects",
        RECV_TIMEOUT,
        |v| v >= 4,
    )
    .await;
    assert!(reconnects.is_some_and(|r| r >= 4), "{reconnects:?}");
    hub.finish();
}

/// A CA, a certificate it signs for `sans`, and that certificate's key, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(ca_name: &str, sans: &[&str]) -> (Pki, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (cert, key) = leaf(&issuer, sans);
    (
        Pki {
            ca: ca_cert.pem(),
            cert,
            key,
        },
        issuer,
    )
}

/// A certificate signed by `issuer` for `sans` and its key, as PEM.
fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, sans: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

/// TLS to mosquitto with a CA made by the test, the bridge authenticating with a client
/// certificate; a bridge trusting another CA does not connect.
#[tokio::test]
async fn tls_upstream_with_test_ca_and_client_certificate() {
    let (server, issuer) = pki("Tern test CA", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = leaf(&issuer, &["gw-cloud"]);
    let (other, _) = pki("Some other CA", &["localhost"]);
    let plain_port = free_port();
    let upstream = Mosquitto::start_with_files(
        |dir| {
            for (name, text) in [
                ("ca.pem", &server.ca),
                ("server.pem", &server.cert),
                ("server.key", &server.key),
            ] {
                std::fs::write(dir.join(name), text).expect("write PEM");
            }
        },
        |dir| {
            format!(
                "cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n\
                 require_certificate true\nlistener {plain_port} 127.0.0.1\n",
                dir.display()
            )
        },
    );
    let mut cloud = Cloud::connect(plain_port, "cloud-tls").await;
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = hub_dir.path().join(name);
        std::fs::write(&path, text).expect("write PEM");
        toml_path(&path)
    };
    let ca = write("ca.pem", &server.ca);
    let cert = write("client.pem", &client_cert);
    let key = write("client.key", &client_key);
    let other_ca = write("other-ca.pem", &other.ca);
    let tables = format!(
        "{}\n{}",
        bridge(
            "cloud",
            &upstream.address(),
            &format!("topics = [\"sensors/#\"]\ntls = {{ ca = {ca}, cert = {cert}, key = {key} }}"),
        ),
        bridge(
            "untrusted",
            &upstream.address(),
            &format!(
                "topics = [\"sensors/#\"]\ntls = {{ ca = {other_ca}, cert = {cert}, key = {key} }}"
            ),
        ),
    );
    let hub = Hub::with_config(&hub_config(&tables));
    hub.wait_log("bridge connected bridge=\"cloud\"");
    hub.wait_log("bridge cannot connect; will retry bridge=\"untrusted\"");
    publish_all(&hub, "sensors/tls", numbered(0..100)).await;
    let got = cloud.collect(100).await;
    assert_eq!(check_stream(&got, 100), 0);
    cloud.expect_quiet(QUIET).await;
    assert_eq!(
        wait_sys_counter(
            &hub,
            "$SYS/broker/bridges/untrusted/connected",
            RECV_TIMEOUT,
            |v| v == 0
        )
        .await,
        Some(0)
    );
    hub.finish();
}

/// A bridge removed from the configuration: its cursor is deleted at the next start (with
/// a warning) so it does not pin the log.
#[tokio::test]
async fn cursor_of_a_removed_bridge_is_deleted() {
    let upstream = Mosquitto::start();
    let mut hub = Hub::with_config(&hub_config(&bridge(
        "old",
        &upstream.address(),
        "topics = [\"sensors/#\"]",
    )));
    hub.wait_log("bridge connected");
    hub.stop();
    hub.rewrite_config(&hub_config(""));
    hub.restart();
    hub.wait_log("cursor of a bridge that is no longer configured deleted bridge=\"old\"");
    hub.stop();
    let (store, recovered) =
        tern_hub::store::Store::open(hub.data_dir(), tern_hub::store::StoreConfig::default())
            .expect("open the stopped hub's store");
    assert!(recovered.cursors.is_empty(), "{:?}", recovered.cursors);
    store.close().expect("close store");
}

/// A TLS file that cannot be used stops the hub at start-up, before it listens, naming the
/// configuration file, the key, the bridge and the file.
#[test]
fn unusable_tls_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("tern.toml");
    let missing = dir.path().join("missing-ca.pem");
    std::fs::write(
        &config,
        bridge(
            "cloud",
            "127.0.0.1:1",
            &format!("topics = [\"a\"]\ntls = {{ ca = {} }}", toml_path(&missing)),
        ),
    )
    .expect("write config");
    let data = dir.path().join("data");
    let out = serve_to_exit(&data, &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "announced a listener"
    );
    assert!(stderr.contains("key `bridge.tls`"), "{stderr}");
    assert!(stderr.contains("bridge \"cloud\""), "{stderr}");
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
}

/// A message the upstream refuses (v5 PUBACK 0x87, Not authorized) is never skipped: the
/// bridge reconnects and sends it again, the messages behind it wait, and the refusal is
/// visible in `$SYS`.
#[tokio::test]
async fn refused_message_is_retried_not_skipped() {
    let upstream = Mosquitto::start_with_files(
        |dir| std::fs::write(dir.join("acl"), "topic readwrite ok/#\n").expect("write acl"),
        |dir| format!("acl_file {}/acl\n", dir.display()),
    );
    let mut cloud = Cloud::connect(upstream.port(), "cloud-acl").await;
    let hub = Hub::with_config(&hub_config(&bridge(
        "cloud",
        &upstream.address(),
        "topics = [\"sensors/#\", \"ok/#\"]",
    )));
    hub.wait_log("bridge connected");
    let (mut dev, _) = RawClient::connect_ok(hub.addr(), Connect::v5("dev-acl")).await;
    assert_eq!(dev.publish(Pub::new("ok/first", b"1").qos(1, 0)).await, 0);
    let first = cloud.collect(1).await;
    assert_eq!(first[0].topic, "ok/first");
    assert_eq!(
        dev.publish(Pub::new("sensors/denied", b"2").qos(1, 0))
            .await,
        0
    );
    assert_eq!(dev.publish(Pub::new("ok/after", b"3").qos(1, 0)).await, 0);
    dev.disconnect().await;
    hub.wait_log("upstream refused a message");
    // Behind the refused message, nothing moves.
    cloud.expect_quiet(QUIET).await;
    let refused = wait_sys_counter(
        &hub,
        "$SYS/broker/bridges/cloud/refused",
        RECV_TIMEOUT,
        |v| v >= 2,
    )
    .await;
    assert!(
        refused.is_some_and(|r| r >= 2),
        "resent and refused again: {refused:?}"
    );
    assert_eq!(
        wait_sys_counter(
            &hub,
            "$SYS/broker/bridges/cloud/forwarded",
            RECV_TIMEOUT,
            |v| v == 1
        )
        .await,
        Some(1)
    );
    hub.finish();
}

/// Payload of message `i` in the outbox tests: `p<i>:` and padding, `PAYLOAD` bytes.
fn padded(range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    const PAYLOAD: usize = 200;
    range.map(|i| {
        let head = format!("p{i}:");
        format!("{head}{}", "x".repeat(PAYLOAD - head.len()))
    })
}

/// Index `i` of a [`padded`] payload.
fn padded_index(got: &Got) -> usize {
    got.text()
        .strip_prefix('p')
        .and_then(|rest| rest.split(':').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("unexpected payload {:?}", got.text()))
}

/// The seq of an `each`-mode message's `tern-id`.
fn id_seq(got: &Got) -> u64 {
    got.prop("tern-id")
        .and_then(|id| id.rsplit_once(':'))
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or_else(|| panic!("no tern-id on {:?}", got.text()))
}

/// Waits until the bridge's `$SYS` values satisfy `ok` (topics without the
/// `$SYS/broker/bridges/<name>/` prefix); returns the last values seen.
async fn bridge_sys(
    hub: &Hub,
    name: &str,
    ok: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    let prefix = format!("$SYS/broker/bridges/{name}/");
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("")).await;
    c.subscribe(&format!("{prefix}+"), 0).await;
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let mut values = BTreeMap::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(p) = c.try_recv_publish(left).await else {
            panic!("bridge {name} $SYS never satisfied the condition: {values:?}");
        };
        let Some(key) = p.topic.strip_prefix(&prefix) else {
            continue;
        };
        if let Ok(v) = String::from_utf8_lossy(&p.payload).trim().parse::<u64>() {
            values.insert(key.to_owned(), v);
        }
        // Each round publishes every value, `last_error` last: judge complete rounds.
        if key == "last_error" && ok(&values) {
            return values;
        }
    }
}

/// Outbox bound: with the upstream down, devices keep publishing far beyond the bridge's
/// `outbox.max_bytes`. Every publish is accepted, the bridge gives up the oldest messages
/// (counted in `dropped`, logged) and keeps its backlog within the bound; once upstream is
/// back, the newest messages arrive in order and the consumer sees exactly one gap, where
/// the given-up messages were.
#[tokio::test]
async fn outbox_bound_gives_up_the_oldest_and_consumers_see_the_gap() {
    const BEFORE: usize = 10;
    const N: usize = 3000;
    const MAX_BYTES: u64 = 64 * 1024;
    let mut upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-bound").await;
    let hub = Hub::with_config(&hub_config(&bridge(
        "cloud",
        &upstream.address(),
        "topics = [\"sensors/#\"]\noutbox = { max_bytes = \"64KiB\" }",
    )));
    hub.wait_log("bridge connected");
    publish_all(&hub, "sensors/b", padded(0..BEFORE)).await;
    let first = cloud.collect(BEFORE).await;
    upstream.stop();
    hub.wait_log("bridge disconnected");
    publish_all(&hub, "sensors/b", padded(BEFORE..N)).await;
    let outage = (N - BEFORE) as u64;
    // Everything published during the outage is either waiting or given up.
    let sys = bridge_sys(&hub, "cloud", |v| {
        v.get("dropped").copied().unwrap_or(0) + v.get("backlog").copied().unwrap_or(0) == outage
    })
    .await;
    let dropped = sys["dropped"];
    let waiting = sys["backlog"];
    assert!(dropped > 0, "{sys:?}");
    assert!(sys["backlog_bytes"] <= MAX_BYTES, "{sys:?}");
    assert!(sys["dropped_bytes"] >= dropped * 200, "{sys:?}");
    assert_eq!(sys["connected"], 0);
    hub.wait_log("bridge lost messages before forwarding them");

    upstream.restart();
    let rest = cloud
        .collect_until(DRAIN_TIMEOUT, |g| {
            g.last().is_some_and(|l| padded_index(l) == N - 1)
        })
        .await;
    // Messages still unacknowledged when the upstream went away are sent again (at least
    // once): only as copies of messages from before the outage, with the same id.
    let (resent, rest): (Vec<_>, Vec<_>) = rest.into_iter().partition(|g| padded_index(g) < BEFORE);
    for copy in &resent {
        let original = &first[padded_index(copy)];
        assert_eq!(id_seq(copy), id_seq(original), "a resend keeps its id");
    }
    // The newest `waiting` messages, in order, once each.
    let indices: Vec<usize> = rest.iter().map(padded_index).collect();
    let first_kept = N - usize::try_from(waiting).expect("small");
    assert_eq!(indices, (first_kept..N).collect::<Vec<_>>());
    assert_eq!(
        first_kept - BEFORE,
        usize::try_from(dropped).expect("small")
    );
    cloud.expect_quiet(QUIET).await;

    // The consumer's view: one gap, from after the last message before the outage to
    // right before the first kept one.
    let mut dedup = tern_envelope::consumer::Deduplicator::new();
    for (g, expected) in first
        .iter()
        .map(|g| (g, tern_envelope::consumer::Verdict::New))
        .chain(
            resent
                .iter()
                .map(|g| (g, tern_envelope::consumer::Verdict::Duplicate)),
        )
        .chain(
            rest.iter()
                .map(|g| (g, tern_envelope::consumer::Verdict::New)),
        )
    {
        let p =
            tern_envelope::each::provenance(g.user.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .expect("valid tern-id / tern-prev")
                .expect("a tern-id");
        assert_eq!(dedup.observe(&p.id, p.coverage), expected);
    }
    let report = dedup.reports().remove(0);
    let last_before = id_seq(first.last().expect("messages before the outage"));
    let first_after = id_seq(&rest[0]);
    assert_eq!(
        report.gaps,
        [tern_envelope::SeqRange {
            first: last_before + 1,
            last: first_after - 1
        }]
    );
    let sys = bridge_sys(&hub, "cloud", |v| v.get("backlog") == Some(&0)).await;
    assert_eq!(sys["dropped"], dropped, "nothing given up once connected");
    let forwarded = sys["forwarded"];
    let at_least = (BEFORE as u64) + waiting;
    assert!(
        (at_least..=at_least + resent.len() as u64).contains(&forwarded),
        "forwarded {forwarded}, expected {at_least} plus at most {} resends",
        resent.len()
    );
    hub.finish();
}

/// `compression = "zstd"`: envelopes carry the flag (binary) or are a zstd frame (JSON
/// lines), the content type says so, and they decode to the messages published.
#[tokio::test]
async fn zstd_envelopes_decode_to_the_originals() {
    for format in ["postcard", "json-lines"] {
        let upstream = Mosquitto::start();
        let mut cloud = Cloud::connect(upstream.port(), "cloud-zstd").await;
        let hub = Hub::with_config(&hub_config(&bridge(
            "cloud",
            &upstream.address(),
            &format!(
                "topics = [\"sensors/#\"]\nmode = \"envelope\"\nenvelope_format = {format:?}\n\
                 compression = \"zstd\"\ncompression_level = 5\n\
                 batch = {{ max_messages = 100, max_bytes = \"64KiB\", linger = \"20ms\" }}"
            ),
        )));
        hub.wait_log("bridge connected");
        publish_all(&hub, "sensors/z", padded(0..500)).await;
        let mut dedup = tern_envelope::consumer::Deduplicator::new();
        let mut payloads = Vec::new();
        let mut wire = 0;
        while payloads.len() < 500 {
            let got = cloud.collect(1).await.remove(0);
            assert_eq!(
                got.content_type.as_deref(),
                Some(if format == "postcard" {
                    "application/vnd.tern.envelope+postcard+zstd"
                } else {
                    "application/vnd.tern.envelope+jsonl+zstd"
                })
            );
            if format == "postcard" {
                assert_eq!(&got.payload[..6], b"TERN\x01\x01", "flag set");
            } else {
                assert_eq!(&got.payload[..4], &tern_envelope::compress::ZSTD_MAGIC);
            }
            wire += got.payload.len();
            let envelope = tern_envelope::decode(&got.payload)
                .unwrap_or_else(|e| panic!("{format}: undecodable envelope: {e}"));
            for v in dedup.observe_envelope(&envelope) {
                assert_eq!(v, tern_envelope::consumer::Verdict::New);
            }
            payloads.extend(
                envelope
                    .messages
                    .into_iter()
                    .map(|m| String::from_utf8(m.payload).expect("utf-8")),
            );
        }
        assert_eq!(payloads, padded(0..500).collect::<Vec<_>>(), "{format}");
        assert!(
            wire < 500 * 200 / 4,
            "{format}: 500 padded messages in {wire} bytes"
        );
        assert!(dedup.reports().iter().all(|g| g.gaps.is_empty()));
        hub.finish();
    }
}

/// Messages the store trims (age limit) before the bridge could forward them: counted as
/// `trimmed`, shown to consumers as a gap, and the bridge goes on with what follows.
#[tokio::test]
async fn messages_trimmed_by_the_store_are_counted_and_the_bridge_goes_on() {
    const N: usize = 12_000;
    let mut upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-trim").await;
    let hub = Hub::with_config(&format!(
        "[store]\nmax_age = \"2s\"\n\n{}",
        hub_config(&bridge(
            "cloud",
            &upstream.address(),
            "topics = [\"sensors/#\"]\noutbox = { max_age = \"1h\" }",
        ))
    ));
    hub.wait_log("bridge connected");
    publish_all(&hub, "sensors/t", numbered(0..10)).await;
    let mut got = cloud.collect(10).await;
    upstream.stop();
    hub.wait_log("bridge disconnected");
    publish_all(&hub, "sensors/t", numbered(10..N)).await;
    // The store drops them at the age limit; the bridge holds only part of them in memory.
    tokio::time::sleep(Duration::from_secs(4)).await;
    upstream.restart();
    hub.wait_log("bridge lost messages before forwarding them");
    publish_all(&hub, "sensors/t", numbered(N..N + 10)).await;
    got.extend(
        cloud
            .collect_until(DRAIN_TIMEOUT, |g| {
                g.last().is_some_and(|l| l.text() == format!("m{}", N + 9))
            })
            .await,
    );
    let sys = bridge_sys(&hub, "cloud", |v| v.get("backlog") == Some(&0)).await;
    let trimmed = sys["trimmed"];
    assert!(trimmed > 0, "{sys:?}");
    assert_eq!(sys["dropped"], 0, "{sys:?}");
    // What arrived is in order, once each, and the messages after the outage are there.
    let indices: Vec<usize> = got
        .iter()
        .map(|g| g.text()[1..].parse().expect("m<i>"))
        .collect();
    if let Some(at) = indices.windows(2).position(|w| w[0] >= w[1]) {
        let around = &indices[at.saturating_sub(5)..(at + 6).min(indices.len())];
        panic!(
            "order or duplicates at {at} of {}: {around:?} (first {:?}, trimmed {trimmed}, \
             mosquitto redeliveries set aside {})",
            indices.len(),
            &indices[..indices.len().min(30)],
            cloud.redelivered()
        );
    }
    assert_eq!(
        indices[indices.len() - 10..],
        (N..N + 10).collect::<Vec<_>>()
    );
    assert_eq!(
        got.len() as u64 + trimmed,
        (N + 10) as u64,
        "every message arrived or was counted as trimmed"
    );
    let mut dedup = tern_envelope::consumer::Deduplicator::new();
    for g in &got {
        let p =
            tern_envelope::each::provenance(g.user.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .expect("valid tern-id / tern-prev")
                .expect("a tern-id");
        dedup.observe(&p.id, p.coverage);
    }
    let report = dedup.reports().remove(0);
    assert_eq!(report.gaps.len(), 1, "{report:?}");
    hub.finish();
}

/// `replay = "live-first"`: after an outage, messages published once the link is back go
/// upstream while the backlog is still draining; the backlog is marked `tern-replay`, each
/// of the two keeps its order, everything arrives exactly once and the chain has no gap.
#[tokio::test]
async fn live_first_sends_new_messages_during_the_replay() {
    const N: usize = 600;
    const LIVE: usize = 20;
    let mut upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-live-first").await;
    let hub = Hub::with_config(&hub_config(&bridge(
        "cloud",
        &upstream.address(),
        // Two publishes in flight: the replay takes a while (each window waits for its
        // PUBACKs), so live messages overtake it.
        "topics = [\"sensors/#\"]\nreplay = \"live-first\"\ninflight = 2",
    )));
    hub.wait_log("bridge connected");
    upstream.stop();
    hub.wait_log("bridge disconnected");
    publish_all(&hub, "sensors/backlog", numbered(0..N)).await;
    upstream.restart();
    let mut got = cloud.collect(1).await;
    hub.wait_log("bridge replaying the backlog behind live messages");
    publish_all(&hub, "sensors/live", (0..LIVE).map(|i| format!("live{i}"))).await;
    got.extend(
        cloud
            .collect_until(DRAIN_TIMEOUT, |g| {
                all_arrived(&got, g, N)
                    && g.iter().filter(|m| m.topic == "sensors/live").count() == LIVE
            })
            .await,
    );
    hub.wait_log("bridge replay finished");
    cloud.expect_quiet(QUIET).await;

    let (backlog, live): (Vec<&Got>, Vec<&Got>) =
        got.iter().partition(|g| g.topic == "sensors/backlog");
    assert_eq!(
        backlog.iter().map(|g| g.text()).collect::<Vec<_>>(),
        numbered(0..N).collect::<Vec<_>>(),
        "the backlog in order, once each"
    );
    assert_eq!(
        live.iter().map(|g| g.text()).collect::<Vec<_>>(),
        (0..LIVE).map(|i| format!("live{i}")).collect::<Vec<_>>(),
        "live messages in order, once each"
    );
    assert!(backlog.iter().all(|g| g.prop("tern-replay") == Some("1")));
    assert!(live.iter().all(|g| g.prop("tern-replay").is_none()));
    // Live messages went before the end of the replay.
    let last_live = got.iter().rposition(|g| g.topic == "sensors/live");
    let last_backlog = got.iter().rposition(|g| g.topic == "sensors/backlog");
    assert!(
        last_live < last_backlog,
        "live messages waited for the replay"
    );
    assert_eq!(dedup_each(&got), ((N + LIVE) as u64, 0));
    hub.finish();
}

/// Hub killed with SIGKILL during a live-first replay (envelope mode), restarted: the
/// replay resumes from the stored state, nothing is lost, and a message sent twice
/// carries the same id; replayed envelopes carry the replay flag.
#[tokio::test]
async fn hub_killed_during_live_first_replay_loses_nothing() {
    const N: usize = 10_000;
    const LIVE: usize = 50;
    let mut upstream = Mosquitto::start();
    let mut cloud = Cloud::connect(upstream.port(), "cloud-live-kill").await;
    let mut hub = Hub::with_config(&hub_config(&bridge(
        "cloud",
        &upstream.address(),
        "topics = [\"sensors/#\"]\nreplay = \"live-first\"\nmode = \"envelope\"\ninflight = 1\n\
         batch = { max_messages = 5, max_bytes = \"64KiB\", linger = \"5ms\" }",
    )));
    hub.wait_log("bridge connected");
    upstream.stop();
    hub.wait_log("bridge disconnected");
    publish_all(&hub, "sensors/backlog", numbered(0..N)).await;
    upstream.restart();
    hub.wait_log("bridge replaying the backlog behind live messages");
    publish_all(&hub, "sensors/live", (0..LIVE).map(|i| format!("live{i}"))).await;
    // Some live messages are through, the replay is not finished: kill.
    let mut envelopes = cloud
        .collect_until(DRAIN_TIMEOUT, |g| {
            g.iter()
                .filter_map(|e| tern_envelope::decode(&e.payload).ok())
                .any(|e| e.messages.iter().any(|m| m.topic == "sensors/live"))
        })
        .await;
    // The replay's state is saved at most 100 ms after it changes; the replay itself
    // (2000 envelopes, one in flight) takes far longer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    hub.kill_9();
    hub.restart();
    hub.wait_log("bridge resuming a live-first replay");
    publish_all(
        &hub,
        "sensors/live",
        (LIVE..2 * LIVE).map(|i| format!("live{i}")),
    )
    .await;

    // Collect until every message arrived, checking ids as they come.
    let mut by_id: BTreeMap<u64, String> = BTreeMap::new();
    let mut dedup = tern_envelope::consumer::Deduplicator::new();
    let mut duplicates = 0;
    let mut replayed_flags = (0, 0);
    let mut seen = |envelopes: &[Got], by_id: &mut BTreeMap<u64, String>| {
        for got in envelopes {
            let envelope = tern_envelope::decode(&got.payload).expect("an envelope");
            let backlog = envelope
                .messages
                .iter()
                .filter(|m| m.topic == "sensors/backlog")
                .count();
            if envelope.replay {
                replayed_flags.0 += 1;
                assert_eq!(backlog, envelope.messages.len(), "only backlog is replayed");
            } else {
                replayed_flags.1 += 1;
            }
            for (m, verdict) in envelope
                .messages
                .iter()
                .zip(dedup.observe_envelope(&envelope))
            {
                let text = String::from_utf8_lossy(&m.payload).into_owned();
                if let Some(first) = by_id.insert(m.seq, text.clone()) {
                    assert_eq!(first, text, "id {} named two messages", m.seq);
                    assert_eq!(verdict, tern_envelope::consumer::Verdict::Duplicate);
                    duplicates += 1;
                }
            }
        }
    };
    seen(&envelopes, &mut by_id);
    let total = N + 2 * LIVE;
    while by_id.len() < total {
        envelopes = cloud.collect(1).await;
        seen(&envelopes, &mut by_id);
    }
    let texts: std::collections::BTreeSet<&str> = by_id.values().map(String::as_str).collect();
    for i in 0..N {
        assert!(texts.contains(format!("m{i}").as_str()), "m{i} lost");
    }
    for i in 0..2 * LIVE {
        assert!(texts.contains(format!("live{i}").as_str()), "live{i} lost");
    }
    assert!(
        replayed_flags.0 > 0 && replayed_flags.1 > 0,
        "{replayed_flags:?}"
    );
    let report = dedup.reports().remove(0);
    assert!(report.gaps.is_empty(), "{report:?}");
    eprintln!("{duplicates} duplicates after SIGKILL mid-replay");
    hub.finish();
}
