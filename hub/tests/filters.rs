//! WebAssembly filters through the hub, end to end: pipelines from the configuration run on
//! the ingest path (a subscriber sees only what passes, routes land on their topics and
//! bridge routes are stored for the bridge), misbehaving guests meet the pipeline's failure
//! policy while the hub stays up, and pipelines are replaced at run time without losing or
//! reordering messages.

mod common;

use std::path::Path;
use std::time::Duration;

use common::guests::{Guest, toml_path, wasm};
use common::*;

/// One filter of a pipeline: name, guest, config string.
struct FilterSpec<'a> {
    name: &'a str,
    wasm: String,
    config: &'a str,
}

fn filter<'a>(name: &'a str, guest: Guest, config: &'a str) -> FilterSpec<'a> {
    FilterSpec {
        name,
        wasm: toml_path(&wasm(guest)),
        config,
    }
}

/// A `[[pipeline]]` table.
fn pipeline(topics: &[&str], on_failure: &str, filters: &[FilterSpec<'_>]) -> String {
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    let mut toml = format!(
        "[[pipeline]]\ntopics = [{}]\non_failure = {on_failure:?}\nfilters = [\n",
        topics.join(", ")
    );
    for f in filters {
        toml.push_str(&format!(
            "  {{ name = {:?}, wasm = {}, config = {:?} }},\n",
            f.name, f.wasm, f.config
        ));
    }
    toml.push_str("]\n");
    toml
}

/// A v5 QoS 1 publish with user properties.
fn publish(topic: &str, payload: &str, props: &[(&str, &str)]) -> Pub {
    let mut p = Props::new();
    for (k, v) in props {
        p = p.user(k, v);
    }
    Pub::new(topic, payload.as_bytes()).qos(1, 0).props(p)
}

/// Receives every PUBLISH until the connection stays quiet, acknowledging each; returns
/// (topic, payload) pairs.
async fn drain(sub: &mut RawClient) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while let Some(p) = sub.try_recv_publish(QUIET).await {
        sub.ack(&p).await;
        got.push((
            p.topic.clone(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
    got
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

async fn subscriber(hub: &Hub, id: &str, filter: &str) -> RawClient {
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5(id)).await;
    sub.subscribe(filter, 1).await;
    sub
}

async fn publisher(hub: &Hub, id: &str) -> RawClient {
    RawClient::connect_ok(hub.addr(), Connect::v5(id)).await.0
}

/// A selector keeps what matches; topics outside the pipeline are not filtered; a dropped
/// QoS 1 message is still acknowledged with success.
#[tokio::test]
async fn sql92_pipeline_delivers_only_matching_messages() {
    let hub = Hub::with_config(&pipeline(
        &["sensors/#"],
        "pass",
        &[filter(
            "hot",
            Guest::Sql92,
            "temperature > 30 AND site = 'north'",
        )],
    ));
    let mut sub = subscriber(&hub, "sql-sub", "#").await;
    let mut publ = publisher(&hub, "sql-pub").await;
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let cases: [Case<'_>; 6] = [
        (
            "sensors/a/t",
            "hot-north",
            &[("temperature", "35"), ("site", "north")],
        ),
        (
            "sensors/a/t",
            "cold-north",
            &[("temperature", "25"), ("site", "north")],
        ),
        (
            "sensors/b/t",
            "hot-south",
            &[("temperature", "40"), ("site", "south")],
        ),
        ("sensors/c/t", "no-props", &[]),
        (
            "sensors/d/t",
            "float",
            &[("temperature", "30.5"), ("site", "north")],
        ),
        ("other/x", "unfiltered", &[]),
    ];
    for (topic, payload, props) in cases {
        assert_eq!(
            publ.publish(publish(topic, payload, props)).await,
            0,
            "{payload}"
        );
    }
    assert_eq!(
        drain(&mut sub).await,
        pairs(&[
            ("sensors/a/t", "hot-north"),
            ("sensors/d/t", "float"),
            ("other/x", "unfiltered"),
        ])
    );
    publ.disconnect().await;
    sub.disconnect().await;
    hub.finish();
}

/// Scans the stopped hub's store for messages a filter routed to a bridge: (bridge, topic,
/// payload).
fn bridge_messages(data_dir: &Path) -> Vec<(String, String, String)> {
    let (store, _) =
        tern_hub::store::Store::open(data_dir, tern_hub::store::StoreConfig::default())
            .expect("open the stopped hub's store");
    let mut found = Vec::new();
    for seq in 0..store.tail() {
        if let Some(m) = store.get(seq).expect("read log")
            && let Some(bridge) = m.bridge
        {
            found.push((
                bridge,
                m.topic,
                String::from_utf8_lossy(&m.payload).into_owned(),
            ));
        }
    }
    store.close().expect("close store");
    found
}

/// Router rules rewrite topics with captures: local routes are delivered on the new topic
/// (not the original), bridge routes are stored for that bridge and not delivered locally,
/// unmatched messages keep their topic.
#[tokio::test]
async fn router_routes_to_local_topics_and_bridges() {
    let rules = "sensors/{device}/temp -> local:devices/{device}/temperature, \
                 bridge:cloud site-7/{device}/temperature";
    let mut hub = Hub::with_config(&pipeline(
        &["sensors/#"],
        "pass",
        &[filter("route", Guest::Router, rules)],
    ));
    let mut sub = subscriber(&hub, "route-sub", "#").await;
    let mut publ = publisher(&hub, "route-pub").await;
    assert_eq!(
        publ.publish(publish("sensors/d1/temp", "21.5", &[])).await,
        0
    );
    assert_eq!(
        publ.publish(publish("sensors/d2/humidity", "40", &[]))
            .await,
        0
    );
    assert_eq!(
        drain(&mut sub).await,
        pairs(&[
            ("devices/d1/temperature", "21.5"),
            ("sensors/d2/humidity", "40"),
        ])
    );
    publ.disconnect().await;
    sub.disconnect().await;
    hub.stop();
    assert_eq!(
        bridge_messages(hub.data_dir()),
        vec![(
            "cloud".to_string(),
            "site-7/d1/temperature".to_string(),
            "21.5".to_string()
        )]
    );
}

/// Filters of a chain run in order: only what the selector keeps reaches the router.
#[tokio::test]
async fn chain_runs_filters_in_order() {
    let hub = Hub::with_config(&pipeline(
        &["sensors/#"],
        "pass",
        &[
            filter("hot", Guest::Sql92, "temperature > 30"),
            filter(
                "route",
                Guest::Router,
                "sensors/{device}/temp -> local:alerts/{device}",
            ),
        ],
    ));
    let mut sub = subscriber(&hub, "chain-sub", "#").await;
    let mut publ = publisher(&hub, "chain-pub").await;
    publ.publish(publish("sensors/d1/temp", "cold", &[("temperature", "10")]))
        .await;
    publ.publish(publish("sensors/d2/temp", "hot", &[("temperature", "45")]))
        .await;
    assert_eq!(drain(&mut sub).await, pairs(&[("alerts/d2", "hot")]));
    publ.disconnect().await;
    sub.disconnect().await;
    hub.finish();
}

/// Hostile guests: traps, endless loops, memory bombs, wrong verdict counts, garbage and
/// errors meet their pipeline's policy — for the failing message only — and the hub keeps
/// serving.
#[tokio::test]
async fn hostile_filters_meet_the_failure_policy_and_the_hub_stays_up() {
    let config = [
        pipeline(
            &["trap/#"],
            "drop",
            &[filter("trapper", Guest::Hostile, "trap-on:poison")],
        ),
        pipeline(
            &["loop/#"],
            "pass",
            &[filter("looper", Guest::Hostile, "loop-on:poison")],
        ),
        pipeline(
            &["bomb/#"],
            "dead-letter:dead/bomb",
            &[filter("bomber", Guest::Hostile, "bomb")],
        ),
        pipeline(
            &["count/#"],
            "pass",
            &[filter("miscounter", Guest::Hostile, "wrong-count")],
        ),
        pipeline(
            &["garbage/#"],
            "drop",
            &[filter("garbler", Guest::Hostile, "garbage")],
        ),
        pipeline(
            &["err/#"],
            "dead-letter:dead/err",
            &[filter("erring", Guest::Hostile, "err")],
        ),
    ]
    .concat();
    let hub = Hub::with_config(&config);
    let mut sub = subscriber(&hub, "hostile-sub", "#").await;
    let mut publ = publisher(&hub, "hostile-pub").await;

    // Three publishes in one write form one batch: the poison one is isolated.
    let mut burst = Vec::new();
    let mut pids = Vec::new();
    for (payload, props) in [
        ("t1", vec![]),
        ("t-poison", vec![("poison", "1")]),
        ("t2", vec![]),
    ] {
        let mut p = publish("trap/x", payload, &props);
        let pid = publ.pid();
        p = p.qos(1, pid);
        pids.push(pid);
        burst.extend(p.encode(V5));
    }
    publ.send(&burst).await;
    for pid in pids {
        assert_eq!(publ.expect_ack(PUBACK, pid).await, 0);
    }
    publ.publish(publish("loop/x", "l-poison", &[("poison", "1")]))
        .await;
    publ.publish(publish("loop/x", "l-ok", &[])).await;
    publ.publish(publish("bomb/x", "b", &[])).await;
    publ.publish(publish("count/x", "c", &[])).await;
    publ.publish(publish("garbage/x", "g", &[])).await;
    publ.publish(publish("err/x", "e", &[])).await;
    publ.publish(publish("fine/x", "f", &[])).await;

    let mut got = Vec::new();
    let mut dead = Vec::new();
    while let Some(p) = sub.try_recv_publish(QUIET).await {
        sub.ack(&p).await;
        if p.topic.starts_with("dead/") {
            dead.push(p.clone());
        }
        got.push((
            p.topic.clone(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
    assert_eq!(
        got,
        pairs(&[
            ("trap/x", "t1"),
            ("trap/x", "t2"),
            ("loop/x", "l-poison"),
            ("loop/x", "l-ok"),
            ("dead/bomb", "b"),
            ("count/x", "c"),
            ("dead/err", "e"),
            ("fine/x", "f"),
        ])
    );
    // Dead letters say which filter failed and where the message was going.
    for (p, name, original) in [
        (&dead[0], "bomber", "bomb/x"),
        (&dead[1], "erring", "err/x"),
    ] {
        let users = p.props.user();
        let error = users
            .iter()
            .find(|(k, _)| k == "tern-filter-error")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(error.starts_with(name), "{error:?} names {name}");
        assert!(
            users
                .iter()
                .any(|(k, v)| k == "tern-original-topic" && v == original),
            "{users:?}"
        );
    }
    for name in [
        "trapper",
        "looper",
        "bomber",
        "miscounter",
        "garbler",
        "erring",
    ] {
        assert!(
            hub.logs().contains(name),
            "no log line names filter {name}\n{}",
            hub.logs()
        );
    }
    publ.disconnect().await;
    sub.disconnect().await;
    hub.finish();
}

/// Start-up refuses a pipeline whose filter rejects its config, with the filter's name and
/// the reason; nothing is served.
#[test]
fn startup_refuses_a_filter_whose_init_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (config, reason) in [
        (
            pipeline(
                &["a/#"],
                "pass",
                &[filter("picky", Guest::Hostile, "init-fail")],
            ),
            "refused by config",
        ),
        (
            pipeline(
                &["a/#"],
                "pass",
                &[filter("picky", Guest::Sql92, "temperature >")],
            ),
            "column",
        ),
    ] {
        let path = dir.path().join("tern.toml");
        std::fs::write(&path, config).expect("write config");
        let out = serve_to_exit(&dir.path().join("data"), &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started anyway: {stderr}");
        assert!(stderr.contains("picky"), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening on"),
            "announced a listener"
        );
    }
}

/// Publishes `n` QoS 1 messages numbered from `first`, `window` per write, each with user
/// properties `n` (its number) and `keep`.
async fn publish_numbered(publ: &mut RawClient, first: u32, n: u32, window: u32, keep: &str) {
    let mut next = first;
    while next < first + n {
        let mut burst = Vec::new();
        let mut pids = Vec::new();
        for i in next..(next + window).min(first + n) {
            let pid = publ.pid();
            pids.push(pid);
            let number = i.to_string();
            burst.extend(
                publish("load/x", &number, &[("n", &number), ("keep", keep)])
                    .qos(1, pid)
                    .encode(V5),
            );
        }
        publ.send(&burst).await;
        for pid in &pids {
            assert_eq!(publ.expect_ack(PUBACK, *pid).await, 0);
        }
        next += window;
    }
}

/// Receives `n` messages (acknowledging them) and returns their payloads.
async fn receive_payloads(sub: &mut RawClient, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let Some(p) = sub.try_recv_publish(RECV_TIMEOUT).await else {
            break;
        };
        sub.ack(&p).await;
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    got
}

/// A pipeline replaced at run time (new config on SIGHUP, then a refused one) takes effect
/// between batches: every message published before, during and after is delivered once and
/// in order, a refused replacement keeps the running pipeline.
#[tokio::test]
async fn hot_replace_under_load_loses_and_reorders_nothing() {
    let toml = |selector: &str| {
        pipeline(
            &["load/#"],
            "pass",
            &[filter("sel", Guest::Sql92, selector)],
        )
    };
    let hub = Hub::with_config(&toml("keep = 'yes'"));
    let mut sub = subscriber(&hub, "load-sub", "load/#").await;
    let mut publ = publisher(&hub, "load-pub").await;

    // A second publisher keeps the ingest path busy while the replacement happens.
    let addr = hub.addr();
    let background = tokio::spawn(async move {
        let (mut p, _) = RawClient::connect_ok(addr, Connect::v5("load-pub-2")).await;
        publish_numbered(&mut p, 100_000, 1500, 50, "no").await;
        p.disconnect().await;
    });
    publish_numbered(&mut publ, 0, 1000, 25, "yes").await;
    hub.rewrite_config(&toml("keep = 'yes' OR keep = 'also'"));
    hub.sighup();
    publish_numbered(&mut publ, 1000, 1000, 25, "yes").await;
    hub.wait_log("pipelines reloaded");
    publish_numbered(&mut publ, 2000, 10, 5, "also").await;
    background.await.expect("background publisher");

    // A replacement that does not parse is refused; the running pipeline stays.
    hub.rewrite_config(&toml("keep = "));
    hub.sighup();
    hub.wait_log("reload refused");
    publish_numbered(&mut publ, 2010, 10, 5, "also").await;

    let got = receive_payloads(&mut sub, 2020).await;
    let expected: Vec<String> = (0..2020).map(|i| i.to_string()).collect();
    assert_eq!(got.len(), expected.len(), "messages lost");
    assert_eq!(got, expected, "messages reordered");
    sub.expect_no_publish(QUIET).await;
    publ.disconnect().await;
    sub.disconnect().await;
    hub.finish();
}

/// A filter's wasm file replaced on disk is picked up without a signal.
#[tokio::test]
async fn replaced_wasm_file_is_deployed_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deployed = dir.path().join("current.wasm");
    std::fs::copy(wasm(Guest::Pass), &deployed).expect("copy guest");
    let hub = Hub::with_config(&pipeline(
        &["watch/#"],
        "pass",
        &[FilterSpec {
            name: "swappable",
            wasm: toml_path(&deployed),
            config: "drop-all",
        }],
    ));
    let mut sub = subscriber(&hub, "watch-sub", "watch/#").await;
    let mut publ = publisher(&hub, "watch-pub").await;
    publ.publish(publish("watch/x", "before", &[])).await;
    assert_eq!(drain(&mut sub).await, pairs(&[("watch/x", "before")]));

    // Written aside and renamed into place, as a deploy script would.
    let staged = dir.path().join("staged.wasm");
    std::fs::copy(wasm(Guest::Hostile), &staged).expect("copy guest");
    std::fs::rename(&staged, &deployed).expect("replace guest");
    hub.wait_log("pipelines reloaded");
    publ.publish(publish("watch/x", "after", &[])).await;
    assert_eq!(drain(&mut sub).await, Vec::<(String, String)>::new());
    publ.disconnect().await;
    sub.disconnect().await;
    // Gives the watcher a moment: nothing else changed, so nothing else reloads.
    std::thread::sleep(Duration::from_millis(100));
    hub.finish();
}

/// Runs `tern filter test` and returns its JSON lines.
fn filter_test(guest: Guest, config: &str, input: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("messages.jsonl");
    std::fs::write(&file, input).expect("write input");
    let out = tern_within(
        &[
            "filter",
            "test",
            "--wasm",
            &wasm(guest).display().to_string(),
            "--config",
            config,
            "--input",
            &file.display().to_string(),
        ],
        COMPILE_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tern filter test failed: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// `tern filter test` prints one verdict per sample message, as the hub would decide it.
#[test]
fn filter_test_command_prints_verdicts() {
    let input = r#"{"topic": "sensors/d1/temp", "properties": {"temperature": "35"}}
{"topic": "sensors/d2/temp", "properties": [["temperature", "12"]]}

{"topic": "sensors/d3/temp"}
"#;
    let verdicts: Vec<(u64, String)> = filter_test(Guest::Sql92, "temperature > 30", input)
        .iter()
        .map(|v| {
            (
                v["line"].as_u64().unwrap_or(0),
                v["verdict"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (1, "kept".to_owned()),
            (2, "dropped".to_owned()),
            (4, "dropped".to_owned()),
        ]
    );

    let routed = filter_test(
        Guest::Router,
        "sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature",
        "{\"topic\": \"sensors/d1/temp\", \"payload\": \"21.5\"}\n",
    );
    assert_eq!(routed[0]["verdict"], "changed");
    assert_eq!(routed[0]["outputs"][0]["bridge"], "cloud");
    assert_eq!(routed[0]["outputs"][0]["topic"], "site-7/d1/temperature");

    let failed = filter_test(Guest::Hostile, "trap", "{\"topic\": \"a\"}\n");
    assert_eq!(failed[0]["verdict"], "failed");
    assert!(
        failed[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed:?}"
    );
}

/// A bad config is refused by `tern filter test` with the filter's reason.
#[test]
fn filter_test_command_reports_a_rejected_config() {
    let out = tern_within(
        &[
            "filter",
            "test",
            "--wasm",
            &wasm(Guest::Sql92).display().to_string(),
            "--config",
            "temperature >",
            "--input",
            "/dev/null",
        ],
        COMPILE_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("column"), "{stderr}");
}

/// A filter compiled ahead of time with `tern filter compile` deploys like the original.
#[tokio::test]
async fn precompiled_filter_deploys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwasm = dir.path().join("sql92.cwasm");
    let out = tern_within(
        &[
            "filter",
            "compile",
            &wasm(Guest::Sql92).display().to_string(),
            "--output",
            &cwasm.display().to_string(),
        ],
        COMPILE_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hub = Hub::with_config(&pipeline(
        &["sensors/#"],
        "pass",
        &[FilterSpec {
            name: "hot",
            wasm: toml_path(&cwasm),
            config: "temperature > 30",
        }],
    ));
    let mut sub = subscriber(&hub, "cwasm-sub", "sensors/#").await;
    let mut publ = publisher(&hub, "cwasm-pub").await;
    publ.publish(publish("sensors/a", "cold", &[("temperature", "3")]))
        .await;
    publ.publish(publish("sensors/a", "hot", &[("temperature", "33")]))
        .await;
    assert_eq!(drain(&mut sub).await, pairs(&[("sensors/a", "hot")]));
    publ.disconnect().await;
    sub.disconnect().await;
    hub.finish();
}
