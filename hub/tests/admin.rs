//! The admin HTTP API of a running `tern` binary: the Prometheus scrape with named series
//! that follow traffic, the bearer token, the client list and an operator disconnect
//! (v5 DISCONNECT 0x98), the JSON status endpoints, and filter pipelines deployed, refused,
//! replaced and removed through the API (persisting across SIGHUP and restart).
//!
//! Requests go over a minimal HTTP/1.1 client on a raw TCP stream (`Connection: close`),
//! so nothing here depends on an HTTP library.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "t0ken-for-tests";

/// A hub with the admin API on a free loopback port, `extra` appended to its config.
fn admin_hub(admin_keys: &str, extra: &str) -> (Hub, SocketAddr) {
    let hub = Hub::with_config(&format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n{admin_keys}\n{extra}"
    ));
    let addr = hub.admin_addr();
    (hub, addr)
}

/// One HTTP response: status, lower-cased headers, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request with a bearer `token` (if any) and reads the whole response.
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Reply {
    let authorization = token.map(|t| format!("Bearer {t}"));
    request(addr, method, path, authorization.as_deref()).await
}

/// Sends one request with `authorization` as its `Authorization` header.
async fn http_with(addr: SocketAddr, method: &str, path: &str, authorization: &str) -> Reply {
    request(addr, method, path, Some(authorization)).await
}

/// Sends one request and reads the whole response (bounded by [`RECV_TIMEOUT`], a `PUT` by
/// [`COMPILE_TIMEOUT`]).
async fn request(addr: SocketAddr, method: &str, path: &str, authorization: Option<&str>) -> Reply {
    request_body(addr, method, path, authorization, None).await
}

/// Sends one request with the bearer token and `body`, and reads the whole response.
async fn send(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let authorization = format!("Bearer {TOKEN}");
    request_body(addr, method, path, Some(&authorization), Some(body)).await
}

/// Sends one request, with a body if given, and reads the whole response.
async fn request_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&[u8]>,
) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to admin API");
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(authorization) = authorization {
            request.push_str(&format!("Authorization: {authorization}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        stream.write_all(&bytes).await.expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        raw
    };
    // A PUT may compile a filter, which in a debug hub on a loaded machine can take well
    // over the usual bound.
    let bound = if method == "PUT" {
        COMPILE_TIMEOUT
    } else {
        RECV_TIMEOUT
    };
    let raw = tokio::time::timeout(bound, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete response in {bound:?}"));
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "unexpected chunked response"
    );
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The value of the sample `series` (name with its labels, as printed) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

fn must(scrape: &str, series: &str) -> f64 {
    sample(scrape, series).unwrap_or_else(|| panic!("series {series} missing in\n{scrape}"))
}

async fn scrape(addr: SocketAddr) -> String {
    let reply = http(addr, "GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{:?}",
        reply.headers
    );
    reply.body
}

#[tokio::test]
async fn metrics_name_the_series_and_follow_publishes() {
    let (hub, admin) = admin_hub(&format!("token = {TOKEN:?}"), "");
    let before = scrape(admin).await;
    for family in [
        "# TYPE tern_clients_connected gauge",
        "# TYPE tern_connections_accepted_total counter",
        "# TYPE tern_messages_received_total counter",
        "# TYPE tern_store_commit_wait_seconds histogram",
        "# HELP tern_store_appends_total ",
        "# TYPE tern_security_auth_failed_total counter",
        "# TYPE tern_transactions_committed_total counter",
        "# TYPE tern_transactions_refused_unknown_total counter",
    ] {
        assert!(before.contains(family), "{family} missing in\n{before}");
    }
    for series in [
        "tern_bytes_received_total",
        "tern_bytes_sent_total",
        "tern_connections_refused_total",
        "tern_messages_dropped_total{reason=\"delivery\"}",
        "tern_messages_dropped_total{reason=\"filter\"}",
        "tern_store_records",
        "tern_store_bytes",
        "tern_store_errors_total",
        "tern_store_trimmed_total",
        "tern_filter_deploys_total{result=\"ok\"}",
    ] {
        must(&before, series);
    }

    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("metrics-sub")).await;
    sub.subscribe("metrics/#", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("metrics-pub")).await;
    for i in 0..3 {
        let code = publ
            .publish(Pub::new("metrics/t", format!("m{i}").as_bytes()).qos(1, 0))
            .await;
        assert_eq!(code, 0, "PUBACK reason");
    }
    for _ in 0..3 {
        let p = sub.recv_publish().await;
        sub.ack(&p).await;
    }

    // Deliveries are counted as they are written: poll a bounded number of scrapes.
    let deadline = Instant::now() + RECV_TIMEOUT;
    let after = loop {
        let after = scrape(admin).await;
        let sent_qos1 = must(&after, "tern_messages_sent_total{qos=\"1\"}");
        if sent_qos1 >= must(&before, "tern_messages_sent_total{qos=\"1\"}") + 3.0
            || Instant::now() >= deadline
        {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let grew = |series: &str, by: f64| {
        let (b, a) = (must(&before, series), must(&after, series));
        assert!(a >= b + by, "{series}: {b} -> {a}, expected +{by}");
    };
    grew("tern_messages_received_total{qos=\"1\"}", 3.0);
    grew("tern_messages_sent_total{qos=\"1\"}", 3.0);
    grew("tern_store_appends_total", 3.0);
    grew("tern_store_commit_wait_seconds_count", 3.0);
    grew("tern_store_commit_wait_seconds_bucket{le=\"+Inf\"}", 3.0);
    grew("tern_connections_accepted_total", 2.0);
    grew("tern_bytes_received_total", 1.0);
    assert_eq!(must(&after, "tern_clients_connected"), 2.0);
    assert_eq!(
        must(&after, "tern_messages_received_total{qos=\"0\"}"),
        must(&before, "tern_messages_received_total{qos=\"0\"}"),
        "no QoS 0 publish was sent"
    );
    publ.disconnect().await;
    sub.disconnect().await;
    hub.finish();
}

#[tokio::test]
async fn every_endpoint_but_health_and_ready_needs_the_token() {
    let (hub, admin) = admin_hub(&format!("token = {TOKEN:?}"), "");
    for path in ["/metrics", "/clients", "/filters", "/bridges", "/store"] {
        let none = http(admin, "GET", path, None).await;
        assert_eq!(none.status, 401, "{path} without a token: {}", none.body);
        assert!(
            none.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{path}: {:?}",
            none.headers
        );
        let wrong = http(admin, "GET", path, Some("t0ken-for-test")).await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let basic = http_with(admin, "GET", path, &format!("Basic {TOKEN}")).await;
        assert_eq!(basic.status, 401, "{path} with another scheme");
        let right = http(admin, "GET", path, Some(TOKEN)).await;
        assert_eq!(right.status, 200, "{path} with the token: {}", right.body);
    }
    let lower = http_with(admin, "GET", "/store", &format!("bearer {TOKEN}")).await;
    assert_eq!(lower.status, 200, "the scheme is case-insensitive");
    let delete = http(admin, "DELETE", "/clients/anyone", None).await;
    assert_eq!(delete.status, 401);
    for path in ["/health", "/ready"] {
        let reply = http(admin, "GET", path, None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    assert_eq!(
        http(admin, "GET", "/health", None).await.json()["status"],
        "ok"
    );
    let scrape = scrape(admin).await;
    assert_eq!(must(&scrape, "tern_admin_unauthorized_total"), 16.0);
    hub.wait_log("admin request refused");
    hub.finish();
}

#[tokio::test]
async fn metrics_can_be_open_while_control_stays_closed() {
    let (hub, admin) = admin_hub(&format!("token = {TOKEN:?}\nmetrics_auth = false"), "");
    let open = http(admin, "GET", "/metrics", None).await;
    assert_eq!(open.status, 200);
    must(&open.body, "tern_clients_connected");
    assert_eq!(http(admin, "GET", "/clients", None).await.status, 401);
    hub.finish();
}

#[tokio::test]
async fn control_endpoints_refuse_everyone_without_a_token() {
    let (hub, admin) = admin_hub("enabled = true", "");
    assert_eq!(http(admin, "GET", "/health", None).await.status, 200);
    assert_eq!(http(admin, "GET", "/metrics", None).await.status, 200);
    for token in [None, Some(""), Some("anything")] {
        assert_eq!(http(admin, "GET", "/clients", token).await.status, 401);
    }
    hub.finish();
}

#[tokio::test]
async fn clients_are_listed_and_an_operator_disconnects_one() {
    let (hub, admin) = admin_hub(&format!("token = {TOKEN:?}"), "");
    let (mut v5, _) = RawClient::connect_ok(hub.addr(), Connect::v5("dev-5")).await;
    v5.subscribe("a/#", 0).await;
    v5.subscribe("b/+", 1).await;
    let (mut v4, _) = RawClient::connect_ok(hub.addr(), Connect::v4("dev-4")).await;

    let list = http(admin, "GET", "/clients", Some(TOKEN)).await.json();
    let clients = list["clients"].as_array().expect("clients array");
    let find = |id: &str| {
        clients
            .iter()
            .find(|c| c["client_id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed in {list}"))
            .clone()
    };
    let five = find("dev-5");
    assert_eq!(five["protocol"], "mqtt5");
    assert_eq!(five["connected"], true);
    assert_eq!(five["subscriptions"], 2);
    assert_eq!(five["queued"], 0);
    assert!(five["connected_since_ms"].as_u64().is_some_and(|ms| ms > 0));
    let address: SocketAddr = five["address"]
        .as_str()
        .expect("address string")
        .parse()
        .expect("address parses");
    assert!(address.ip().is_loopback());
    assert_eq!(find("dev-4")["protocol"], "mqtt3.1.1");

    let gone = http(admin, "DELETE", "/clients/dev-5", Some(TOKEN)).await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    let got = v5.expect_closed(RECV_TIMEOUT).await;
    assert!(
        got.iter()
            .any(|p| matches!(p, Incoming::Disconnect { reason: 0x98, .. })),
        "expected DISCONNECT 0x98, got {got:?}"
    );
    // 3.1.1 has no DISCONNECT from the server: the connection just closes.
    assert_eq!(
        http(admin, "DELETE", "/clients/dev-4", Some(TOKEN))
            .await
            .status,
        200
    );
    let got = v4.expect_closed(RECV_TIMEOUT).await;
    assert!(
        !got.iter().any(|p| matches!(p, Incoming::Disconnect { .. })),
        "{got:?}"
    );
    let unknown = http(admin, "DELETE", "/clients/nobody", Some(TOKEN)).await;
    assert_eq!(unknown.status, 404);

    // Neither is listed as connected once their connections are gone.
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let list = http(admin, "GET", "/clients", Some(TOKEN)).await.json();
        let connected = list["clients"]
            .as_array()
            .expect("clients array")
            .iter()
            .filter(|c| c["connected"] == true)
            .count();
        if connected == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still connected: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.wait_log("client disconnected by an operator");
    hub.finish();
}

#[tokio::test]
async fn ready_store_filters_and_bridges_answer_json() {
    // An upstream nobody listens on: the bridge exists and stays disconnected.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let bridge = format!(
        "[[bridge]]\nname = \"up\"\naddress = \"127.0.0.1:{closed_port}\"\nclient_id = \"gw\"\n\
         topics = [\"sensors/#\"]\nreconnect = {{ min = \"50ms\", max = \"400ms\" }}\n"
    );
    let (hub, admin) = admin_hub(&format!("token = {TOKEN:?}"), &bridge);

    // The admin server starts before the MQTT listeners: /ready turns 200 once they are bound.
    let deadline = Instant::now() + RECV_TIMEOUT;
    let ready = loop {
        let ready = http(admin, "GET", "/ready", None).await;
        if ready.status == 200 || Instant::now() >= deadline {
            break ready;
        }
        assert_eq!(ready.status, 503, "{}", ready.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready.status, 200, "{}", ready.body);
    let ready = ready.json();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["store_open"], true);

    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("gw-dev")).await;
    assert_eq!(
        publ.publish(Pub::new("sensors/1", b"21").qos(1, 0)).await,
        0
    );

    let store = http(admin, "GET", "/store", Some(TOKEN)).await.json();
    assert!(store["appends"].as_u64().is_some_and(|n| n >= 1), "{store}");
    assert!(store["records"].as_u64().is_some_and(|n| n >= 1), "{store}");
    assert!(store["errors"].as_u64() == Some(0), "{store}");

    // The bridge notices the log entry and its failed connects on its own schedule: poll,
    // bounded.
    let deadline = Instant::now() + RECV_TIMEOUT;
    let up = loop {
        let bridges = http(admin, "GET", "/bridges", Some(TOKEN)).await.json();
        let list = bridges["bridges"].as_array().expect("bridges array");
        assert_eq!(list.len(), 1, "{bridges}");
        let up = list[0].clone();
        let settled = up["backlog"].as_u64().is_some_and(|n| n >= 1)
            && up["last_error"].as_str().is_some_and(|e| e != "none");
        if settled || Instant::now() >= deadline {
            break up;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(up["name"], "up");
    assert_eq!(up["connected"], 0);
    assert!(up["backlog"].as_u64().is_some_and(|n| n >= 1), "{up}");
    assert!(
        up["last_error"].as_str().is_some_and(|e| e != "none"),
        "{up}"
    );

    let scrape = scrape(admin).await;
    assert_eq!(must(&scrape, "tern_bridge_connected{bridge=\"up\"}"), 0.0);
    assert!(must(&scrape, "tern_bridge_backlog{bridge=\"up\"}") >= 1.0);

    let filters = http(admin, "GET", "/filters", Some(TOKEN)).await.json();
    assert_eq!(filters["pipelines"], serde_json::json!([]));
    publ.disconnect().await;
    hub.finish();
}

/// A `[[pipeline]]` table on `topic` whose one filter, `keep`, is the pass-through guest;
/// `extra` (TOML lines) goes before the filters.
fn keep_pipeline(topic: &str, extra: &str) -> String {
    let pass = guests::toml_path(&guests::wasm(guests::Guest::Pass));
    format!(
        "[[pipeline]]\ntopics = [{topic:?}]\n{extra}\
         filters = [ {{ name = \"keep\", wasm = {pass}, config = \"\" }} ]\n"
    )
}

#[tokio::test]
async fn filters_are_listed_with_their_counters() {
    let pipeline = keep_pipeline("f/#", "on_failure = \"pass\"\n");
    let (hub, admin) = admin_hub(&format!("token = {TOKEN:?}"), &pipeline);
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("filtered")).await;
    for i in 0..2 {
        let payload = format!("{i}");
        assert_eq!(
            publ.publish(Pub::new("f/x", payload.as_bytes()).qos(1, 0))
                .await,
            0
        );
    }

    let filters = http(admin, "GET", "/filters", Some(TOKEN)).await.json();
    let keep = &filters["pipelines"][0]["filters"][0];
    assert_eq!(keep["name"], "keep", "{filters}");
    assert!(
        keep["messages"]["in"].as_u64().is_some_and(|n| n >= 2),
        "{filters}"
    );
    assert!(
        keep["messages"]["kept"].as_u64().is_some_and(|n| n >= 2),
        "{filters}"
    );
    assert_eq!(keep["failures"]["trap"], 0);
    assert_eq!(filters["deploys"]["ok"], 1);

    let scrape = scrape(admin).await;
    let labels = "pipeline=\"0\",filter=\"keep\"";
    assert!(must(&scrape, &format!("tern_filter_batches_total{{{labels}}}")) >= 1.0);
    assert!(
        must(
            &scrape,
            &format!("tern_filter_messages_total{{{labels},outcome=\"in\"}}")
        ) >= 2.0
    );
    assert_eq!(
        must(
            &scrape,
            &format!("tern_filter_failures_total{{{labels},kind=\"trap\"}}")
        ),
        0.0
    );
    assert!(must(&scrape, "tern_filter_batch_seconds_count") >= 1.0);
    publ.disconnect().await;
    hub.finish();
}

#[tokio::test]
async fn the_token_can_come_from_a_file_and_a_missing_file_stops_the_hub() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token file");
    let (hub, admin) = admin_hub(
        &format!("token_file = {}", guests::toml_path(&token_file)),
        "",
    );
    assert_eq!(http(admin, "GET", "/store", Some(TOKEN)).await.status, 200);
    assert_eq!(
        http(admin, "GET", "/store", Some("other")).await.status,
        401
    );
    hub.finish();

    let missing = dir.path().join("missing.token");
    let config = dir.path().join("tern.toml");
    write_admin_config(&config, "127.0.0.1:0", &missing);
    let data = dir.path().join("data");
    let out = serve_to_exit(&data, &config);
    assert!(!out.status.success(), "the hub started without its token");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin.token_file") && stderr.contains("missing.token"),
        "{stderr}"
    );
}

/// Uploads `bytes` as a module; returns its SHA-256.
async fn upload(admin: SocketAddr, bytes: &[u8]) -> String {
    let sha = sha256_hex(bytes);
    let reply = send(admin, "PUT", &format!("/modules/{sha}"), bytes).await;
    assert!(
        reply.status == 201 || reply.status == 200,
        "upload: {reply:?}"
    );
    assert_eq!(reply.json()["sha256"], sha.as_str());
    sha
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The body of `PUT /filters/{name}`: one sql92 filter on `sensors/#`.
fn sql_pipeline(module: &str, selector: &str) -> Vec<u8> {
    serde_json::json!({
        "topics": ["sensors/#"],
        "on_failure": "drop",
        "filters": [{ "name": "hot", "module": module, "config": selector }],
    })
    .to_string()
    .into_bytes()
}

/// Publishes one hot and one cold reading on `sensors/t`; returns the payloads `sub` gets.
async fn hot_and_cold(publ: &mut RawClient, sub: &mut RawClient, tag: &str) -> Vec<String> {
    for (payload, temperature) in [("hot", "35"), ("cold", "20")] {
        let p = Props::new().user("temperature", temperature);
        let body = format!("{payload}-{tag}");
        let ack = publ
            .publish(Pub::new("sensors/t", body.as_bytes()).qos(1, 0).props(p))
            .await;
        assert_eq!(ack, 0, "{body}");
    }
    let mut got = Vec::new();
    while let Some(p) = sub.try_recv_publish(QUIET).await {
        sub.ack(&p).await;
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    got
}

/// A publisher (`pub_id`) and a subscriber to `sensors/#` (`sub_id`) on the hub at `addr`.
async fn sensor_clients(addr: SocketAddr, pub_id: &str, sub_id: &str) -> (RawClient, RawClient) {
    let mut sub = RawClient::connect_ok(addr, Connect::v5(sub_id)).await.0;
    sub.subscribe("sensors/#", 1).await;
    let publ = RawClient::connect_ok(addr, Connect::v5(pub_id)).await.0;
    (publ, sub)
}

/// [`hot_and_cold`] through fresh clients (see [`sensor_clients`]), disconnected after.
async fn hot_and_cold_once(addr: SocketAddr, pub_id: &str, sub_id: &str, tag: &str) -> Vec<String> {
    let (mut publ, mut sub) = sensor_clients(addr, pub_id, sub_id).await;
    let got = hot_and_cold(&mut publ, &mut sub, tag).await;
    publ.disconnect().await;
    sub.disconnect().await;
    got
}

/// A deploy through the API filters at once; a refused replacement (bad selector, bytes
/// that are not wasm, a missing module) answers 4xx with the reason and the old version
/// keeps filtering; removal lets everything through again.
#[tokio::test]
async fn pipelines_are_deployed_refused_and_removed_through_the_api() {
    let (hub, admin) = admin_hub(&format!("token = {TOKEN:?}"), "");
    let sql = std::fs::read(guests::wasm(guests::Guest::Sql92)).expect("read sql92 guest");
    let module = upload(admin, &sql).await;
    // Uploading the same bytes again is idempotent; a wrong digest is refused.
    assert_eq!(
        send(admin, "PUT", &format!("/modules/{module}"), &sql)
            .await
            .status,
        200
    );
    let wrong = sha256_hex(b"other bytes");
    let mismatch = send(admin, "PUT", &format!("/modules/{wrong}"), &sql).await;
    assert_eq!(mismatch.status, 400, "{mismatch:?}");
    assert_eq!(mismatch.json()["reason"], "digest_mismatch");

    let (mut publ, mut sub) = sensor_clients(hub.addr(), "api-pub", "api-sub").await;
    assert_eq!(
        hot_and_cold(&mut publ, &mut sub, "0").await,
        ["hot-0", "cold-0"]
    );

    let created = send(
        admin,
        "PUT",
        "/filters/heat",
        &sql_pipeline(&module, "temperature > 30"),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let created = created.json();
    assert_eq!(created["name"], "heat");
    assert_eq!(created["source"], "api");
    assert_eq!(created["filters"][0]["module"], module.as_str());
    assert_eq!(hot_and_cold(&mut publ, &mut sub, "1").await, ["hot-1"]);

    let rejected = send(
        admin,
        "PUT",
        "/filters/heat",
        &sql_pipeline(&module, "temperature >>> 30"),
    )
    .await;
    assert_eq!(rejected.status, 422, "{rejected:?}");
    assert_eq!(rejected.json()["reason"], "config_rejected");
    assert_eq!(rejected.json()["filter"], "hot");

    let junk = upload(admin, b"definitely not WebAssembly").await;
    let not_wasm = send(admin, "PUT", "/filters/heat", &sql_pipeline(&junk, "x > 1")).await;
    assert_eq!(not_wasm.status, 422, "{not_wasm:?}");
    assert_eq!(not_wasm.json()["reason"], "load");

    let missing = sha256_hex(b"never uploaded");
    let absent = send(
        admin,
        "PUT",
        "/filters/heat",
        &sql_pipeline(&missing, "x > 1"),
    )
    .await;
    assert_eq!(absent.status, 422, "{absent:?}");
    assert_eq!(absent.json()["reason"], "missing_module");

    let invalid = send(
        admin,
        "PUT",
        "/filters/heat",
        br#"{"topics":[],"filters":[]}"#,
    )
    .await;
    assert_eq!(invalid.status, 400, "{invalid:?}");
    let bad_name = send(admin, "PUT", "/filters/.x", &sql_pipeline(&module, "x > 1")).await;
    assert_eq!(bad_name.status, 400, "{bad_name:?}");

    // Every refusal left the first version in force.
    assert_eq!(hot_and_cold(&mut publ, &mut sub, "2").await, ["hot-2"]);
    let listed = http(admin, "GET", "/filters", Some(TOKEN)).await.json();
    let pipeline = &listed["pipelines"][0];
    assert_eq!(pipeline["source"], "api", "{listed}");
    assert_eq!(pipeline["name"], "heat");
    assert_eq!(pipeline["topics"], serde_json::json!(["sensors/#"]));
    assert_eq!(pipeline["on_failure"], "drop");
    assert_eq!(pipeline["filters"][0]["config"], "temperature > 30");
    assert!(
        pipeline["filters"][0]["messages"]["dropped"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{listed}"
    );
    assert!(
        listed["deploys"]["refused"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    );

    // A module in use cannot be deleted; an unused one can.
    let modules = http(admin, "GET", "/modules", Some(TOKEN)).await.json();
    let used = modules["modules"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["sha256"] == module.as_str()))
        .unwrap_or_else(|| panic!("module not listed: {modules}"));
    assert_eq!(used["used_by"][0]["pipeline"], "heat");
    assert_eq!(used["bytes"], sql.len());
    let in_use = send(admin, "DELETE", &format!("/modules/{module}"), b"").await;
    assert_eq!(in_use.status, 409, "{in_use:?}");
    assert_eq!(
        send(admin, "DELETE", &format!("/modules/{junk}"), b"")
            .await
            .status,
        200
    );

    let replaced = send(
        admin,
        "PUT",
        "/filters/heat",
        &sql_pipeline(&module, "temperature < 30"),
    )
    .await;
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert_eq!(hot_and_cold(&mut publ, &mut sub, "3").await, ["cold-3"]);

    let removed = send(admin, "DELETE", "/filters/heat", b"").await;
    assert_eq!(removed.status, 200, "{removed:?}");
    assert_eq!(
        hot_and_cold(&mut publ, &mut sub, "4").await,
        ["hot-4", "cold-4"]
    );
    assert_eq!(
        send(admin, "DELETE", "/filters/heat", b"").await.status,
        404
    );
    let unauthorized = request_body(
        admin,
        "PUT",
        "/filters/heat",
        None,
        Some(&sql_pipeline(&module, "x > 1")),
    )
    .await;
    assert_eq!(unauthorized.status, 401);
    publ.disconnect().await;
    sub.disconnect().await;
    hub.finish();
}

/// An API pipeline is not the configuration file's: a SIGHUP that reloads the file keeps
/// it, and a restart deploys it again (after the file's own pipelines).
#[tokio::test]
async fn api_pipelines_survive_sighup_and_restart() {
    let file_pipeline = keep_pipeline("other/#", "");
    let admin_keys = format!("token = {TOKEN:?}");
    let (mut hub, admin) = admin_hub(&admin_keys, &file_pipeline);
    let sql = std::fs::read(guests::wasm(guests::Guest::Sql92)).expect("read sql92 guest");
    let module = upload(admin, &sql).await;
    let created = send(
        admin,
        "PUT",
        "/filters/heat",
        &sql_pipeline(&module, "temperature > 30"),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json()["index"], 1, "after the file's pipeline");

    // The file changes (its pipeline goes away) and is reloaded: the API's stays.
    hub.rewrite_config(&format!("[admin]\nbind = \"127.0.0.1:0\"\n{admin_keys}\n"));
    hub.sighup();
    hub.wait_log("pipelines reloaded");
    let listed = http(admin, "GET", "/filters", Some(TOKEN)).await.json();
    let pipelines = listed["pipelines"].as_array().expect("pipelines");
    assert_eq!(pipelines.len(), 1, "{listed}");
    assert_eq!(pipelines[0]["name"], "heat");
    assert_eq!(
        hot_and_cold_once(hub.addr(), "keep-pub", "keep-sub", "a").await,
        ["hot-a"]
    );

    hub.stop();
    hub.restart();
    let admin = hub.admin_addr();
    let listed = http(admin, "GET", "/filters", Some(TOKEN)).await.json();
    assert_eq!(listed["pipelines"][0]["name"], "heat", "{listed}");
    assert_eq!(
        hot_and_cold_once(hub.addr(), "keep-pub2", "keep-sub2", "b").await,
        ["hot-b"]
    );
    hub.finish();
}
