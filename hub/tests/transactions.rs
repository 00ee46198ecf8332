//! Transactional (half) messages end to end against the `tern` binary
//! (`docs/transactions.md`): a committed transaction reaches subscribers and a bridge as one
//! ordered batch, half messages and rolled-back transactions never do, check requests
//! resolve transactions whose producer went away (commit, rollback, and the policy when
//! nobody answers), open and committed transactions survive SIGKILL, and foreign, unknown
//! and over-limit requests get their reason codes with nothing changed.

mod common;

use common::*;

/// User property naming the transaction.
const TX: &str = "tern-tx";
const PUBACK: u8 = 4;

/// A hub whose check-back runs fast: first check after `check_after`, then every
/// `check_interval`, `max_checks` before `policy`.
fn fast_checks(check_after: &str, max_checks: u32, policy: &str) -> String {
    format!(
        "[transactions]\ncheck_after = \"{check_after}\"\ncheck_interval = \"{check_after}\"\n\
         max_checks = {max_checks}\non_unresolved = \"{policy}\"\n"
    )
}

/// Publishes `p` at QoS 1 and returns the PUBACK's reason code and reason string.
async fn publish_ack(c: &mut RawClient, p: Pub) -> (u8, Option<String>) {
    let pid = c.pid();
    c.send(&p.qos(1, pid).encode(V5)).await;
    c.recv_matching(&format!("PUBACK for {pid}"), |packet| match packet {
        Incoming::Ack {
            kind: PUBACK,
            pid: got,
            reason,
            props,
        } if *got == pid => Some((*reason, props.str(prop::REASON_STRING).map(str::to_owned))),
        _ => None,
    })
    .await
}

/// A half message of `tx` on `topic`.
fn half(topic: &str, payload: &str, tx: &str) -> Pub {
    Pub::new(topic, payload.as_bytes()).props(Props::new().user(TX, tx))
}

/// Publishes the half messages `payloads` of `tx` on `topic`; each must be accepted.
async fn prepare(c: &mut RawClient, topic: &str, tx: &str, payloads: &[String]) {
    for payload in payloads {
        assert_eq!(
            publish_ack(c, half(topic, payload, tx)).await,
            (0, None),
            "half message {payload} of {tx}"
        );
    }
}

/// Ends `tx` with `outcome` ("commit" or "rollback"); returns the PUBACK.
async fn end(c: &mut RawClient, tx: &str, outcome: &str) -> (u8, Option<String>) {
    publish_ack(c, Pub::new(&format!("$tern/tx/{tx}/{outcome}"), b"")).await
}

fn payloads(tx: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tx}:{i}")).collect()
}

/// A v5 subscriber on `filter` at QoS 1.
async fn subscriber(hub: &Hub, filter: &str) -> RawClient {
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5(&unique("sub"))).await;
    c.subscribe(filter, 1).await;
    c
}

/// The client `producer`, connected.
async fn connect_producer(hub: &Hub) -> RawClient {
    RawClient::connect_ok(hub.addr(), Connect::v5("producer"))
        .await
        .0
}

/// The PUBACK of a commit or rollback of a transaction the hub does not know (any more).
fn unknown_tx() -> (u8, Option<String>) {
    (0x80, Some("unknown transaction".into()))
}

/// A plain message on `orders/1` from `producer` reaches `sub`, and nothing after it.
async fn marker_arrives_alone(producer: &mut RawClient, sub: &mut RawClient) {
    assert_eq!(
        publish_ack(producer, Pub::new("orders/1", b"marker")).await,
        (0, None)
    );
    assert_eq!(receive(sub, 1).await, ["marker"]);
    sub.expect_no_publish(QUIET).await;
}

/// Receives `n` publishes (acknowledging them) and returns their payloads.
async fn receive(c: &mut RawClient, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let p = c.recv_publish().await;
        assert!(
            p.props.user().iter().all(|(k, _)| k != TX),
            "committed message still carries {TX}: {p:?}"
        );
        c.ack(&p).await;
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    got
}

#[tokio::test]
async fn commit_is_one_ordered_batch_and_half_messages_stay_invisible_until_then() {
    let hub = Hub::start();
    let mut sub = subscriber(&hub, "orders/#").await;
    let mut producer = connect_producer(&hub).await;
    let batch = payloads("t1", 5);
    prepare(&mut producer, "orders/1", "t1", &batch).await;
    // A plain message after the half messages arrives; nothing of the transaction does.
    marker_arrives_alone(&mut producer, &mut sub).await;

    assert_eq!(end(&mut producer, "t1", "commit").await, (0, None));
    assert_eq!(receive(&mut sub, 5).await, batch);
    sub.expect_no_publish(QUIET).await;
    // Finished: a second commit is refused and changes nothing.
    assert_eq!(end(&mut producer, "t1", "commit").await, unknown_tx());
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn rolled_back_transaction_is_never_visible() {
    let hub = Hub::start();
    let mut sub = subscriber(&hub, "orders/#").await;
    let mut producer = connect_producer(&hub).await;
    prepare(&mut producer, "orders/1", "t1", &payloads("t1", 3)).await;
    assert_eq!(end(&mut producer, "t1", "rollback").await, (0, None));
    marker_arrives_alone(&mut producer, &mut sub).await;
    assert_eq!(end(&mut producer, "t1", "commit").await, unknown_tx());
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn foreign_and_unknown_requests_are_refused_and_change_nothing() {
    let hub = Hub::start();
    let mut sub = subscriber(&hub, "orders/#").await;
    let (mut owner, _) = RawClient::connect_ok(hub.addr(), Connect::v5("owner")).await;
    let (mut other, _) = RawClient::connect_ok(hub.addr(), Connect::v5("other")).await;
    let batch = payloads("t1", 2);
    prepare(&mut owner, "orders/1", "t1", &batch).await;

    for outcome in ["commit", "rollback"] {
        assert_eq!(
            end(&mut other, "t1", outcome).await,
            (0x87, Some("transaction belongs to another client".into())),
            "{outcome} by another client"
        );
    }
    assert_eq!(
        end(&mut other, "never-opened", "commit").await,
        unknown_tx()
    );
    // Other `$tern/` topics are the hub's.
    assert_eq!(
        publish_ack(&mut other, Pub::new("$tern/tx/check/owner", b"t1"))
            .await
            .0,
        0x90
    );
    // Nobody may listen to another client's check requests.
    assert_eq!(
        other
            .subscribe_with(&[("$tern/tx/check/owner", 1)], &Props::new())
            .await,
        [0x87]
    );
    sub.expect_no_publish(QUIET).await;

    // The owner's transaction is intact.
    assert_eq!(end(&mut owner, "t1", "commit").await, (0, None));
    assert_eq!(receive(&mut sub, 2).await, batch);
    hub.finish();
}

#[tokio::test]
async fn limits_refuse_with_quota_exceeded_and_keep_what_was_accepted() {
    let hub = Hub::with_config("[transactions]\nmax_open_per_client = 2\nmax_messages = 3\n");
    let mut sub = subscriber(&hub, "orders/#").await;
    let mut producer = connect_producer(&hub).await;
    let batch = payloads("t1", 3);
    prepare(&mut producer, "orders/1", "t1", &batch).await;
    prepare(&mut producer, "orders/1", "t2", &payloads("t2", 1)).await;
    assert_eq!(
        publish_ack(&mut producer, half("orders/1", "t3:0", "t3")).await,
        (0x97, Some("too many open transactions".into()))
    );
    assert_eq!(
        publish_ack(&mut producer, half("orders/1", "t1:3", "t1")).await,
        (0x97, Some("transaction too large".into()))
    );
    assert_eq!(
        publish_ack(&mut producer, half("orders/1", "x", "bad/id")).await,
        (0x83, Some("invalid transaction id".into()))
    );
    // A QoS 0 half message is dropped: it opens nothing.
    producer
        .send(&half("orders/1", "q0", "t4").encode(V5))
        .await;
    assert_eq!(end(&mut producer, "t4", "commit").await, unknown_tx());
    sub.expect_no_publish(QUIET).await;

    assert_eq!(end(&mut producer, "t1", "commit").await, (0, None));
    assert_eq!(receive(&mut sub, 3).await, batch);
    // Committing t1 freed a slot.
    prepare(&mut producer, "orders/1", "t3", &payloads("t3", 1)).await;
    hub.finish();
}

/// Receives the next check request on `c` and returns its transaction id.
async fn check_request(c: &mut RawClient) -> String {
    let p = c.recv_publish().await;
    assert!(p.topic.starts_with("$tern/tx/check/"), "{p:?}");
    assert_eq!(p.qos, 1);
    c.ack(&p).await;
    let tx = String::from_utf8(p.payload.clone()).expect("UTF-8 id");
    assert_eq!(p.props.user(), [(TX.to_owned(), tx.clone())]);
    tx
}

#[tokio::test]
async fn check_requests_resolve_transactions_of_a_producer_that_went_away() {
    let hub = Hub::with_config(&fast_checks("300ms", 50, "rollback"));
    let mut sub = subscriber(&hub, "orders/#").await;
    {
        let mut producer = connect_producer(&hub).await;
        prepare(&mut producer, "orders/1", "keep", &payloads("keep", 3)).await;
        prepare(&mut producer, "orders/1", "drop", &payloads("drop", 2)).await;
        // Gone without an outcome.
    }
    let mut producer = connect_producer(&hub).await;
    producer.subscribe("$tern/tx/check/producer", 1).await;
    let mut answered = Vec::new();
    while answered.len() < 2 {
        let tx = check_request(&mut producer).await;
        if answered.contains(&tx) {
            continue; // a repeat sent before our answer arrived
        }
        let outcome = if tx == "keep" { "commit" } else { "rollback" };
        assert_eq!(end(&mut producer, &tx, outcome).await, (0, None), "{tx}");
        answered.push(tx);
    }
    answered.sort();
    assert_eq!(answered, ["drop", "keep"]);
    assert_eq!(receive(&mut sub, 3).await, payloads("keep", 3));
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn unanswered_checks_apply_the_rollback_policy() {
    let hub = Hub::with_config(&fast_checks("200ms", 2, "rollback"));
    let mut sub = subscriber(&hub, "orders/#").await;
    let mut producer = connect_producer(&hub).await;
    producer.subscribe("$tern/tx/check/producer", 1).await;
    prepare(&mut producer, "orders/1", "t1", &payloads("t1", 2)).await;
    // Two checks arrive and go unanswered; then the policy rolls the transaction back.
    assert_eq!(check_request(&mut producer).await, "t1");
    assert_eq!(check_request(&mut producer).await, "t1");
    hub.wait_log("unresolved transaction ended by the on_unresolved policy");
    assert_eq!(end(&mut producer, "t1", "commit").await, unknown_tx());
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn unanswered_checks_apply_the_commit_policy() {
    let hub = Hub::with_config(&fast_checks("200ms", 1, "commit"));
    let mut sub = subscriber(&hub, "orders/#").await;
    let mut producer = connect_producer(&hub).await;
    let batch = payloads("t1", 4);
    prepare(&mut producer, "orders/1", "t1", &batch).await;
    producer.disconnect().await;
    // Nobody answers the check; the policy commits the whole transaction.
    assert_eq!(receive(&mut sub, 4).await, batch);
    hub.wait_log("unresolved transaction ended by the on_unresolved policy");
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

/// The hub is killed between prepare and commit: the transaction is still open after the
/// restart, and its commit delivers all of it, in order.
async fn killed_between_prepare_and_commit(store: &str) {
    let mut hub = Hub::with_config(store);
    let mut producer = connect_producer(&hub).await;
    let batch = payloads("t1", 20);
    prepare(&mut producer, "orders/1", "t1", &batch).await;
    hub.kill_9();
    hub.restart();
    let mut sub = subscriber(&hub, "orders/#").await;
    let mut producer = connect_producer(&hub).await;
    sub.expect_no_publish(QUIET).await;
    assert_eq!(end(&mut producer, "t1", "commit").await, (0, None));
    assert_eq!(receive(&mut sub, 20).await, batch);
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn open_transaction_survives_sigkill_with_the_journal() {
    killed_between_prepare_and_commit("").await;
}

#[tokio::test]
async fn open_transaction_survives_sigkill_with_fsync_every_commit() {
    killed_between_prepare_and_commit("[store]\nfsync = \"every-commit\"\n").await;
}

/// The hub is killed right after the commit's PUBACK: after the restart a persistent
/// subscriber gets exactly the committed messages, once; the rolled-back and the
/// still-open transaction show nothing, and the open one can still be committed.
async fn killed_after_commit(store: &str) {
    let mut hub = Hub::with_config(store);
    let connect_sub = || Connect::v5("durable-sub").clean(false).session_expiry(3600);
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), connect_sub()).await;
    sub.subscribe("orders/#", 1).await;
    sub.disconnect().await;
    let mut producer = connect_producer(&hub).await;
    let committed = payloads("done", 10);
    prepare(&mut producer, "orders/1", "undone", &payloads("undone", 3)).await;
    prepare(&mut producer, "orders/1", "open", &payloads("open", 2)).await;
    prepare(&mut producer, "orders/1", "done", &committed).await;
    assert_eq!(end(&mut producer, "undone", "rollback").await, (0, None));
    assert_eq!(end(&mut producer, "done", "commit").await, (0, None));
    hub.kill_9();
    hub.restart();

    let (mut sub, present) = RawClient::connect_ok(hub.addr(), connect_sub()).await;
    assert!(present, "persistent session restored");
    assert_eq!(receive(&mut sub, 10).await, committed);
    sub.expect_no_publish(QUIET).await;
    let mut producer = connect_producer(&hub).await;
    assert_eq!(end(&mut producer, "done", "commit").await, unknown_tx());
    assert_eq!(end(&mut producer, "undone", "commit").await, unknown_tx());
    assert_eq!(end(&mut producer, "open", "commit").await, (0, None));
    assert_eq!(receive(&mut sub, 2).await, payloads("open", 2));
    hub.finish();
}

#[tokio::test]
async fn committed_transaction_survives_sigkill_once_with_the_journal() {
    killed_after_commit("").await;
}

#[tokio::test]
async fn committed_transaction_survives_sigkill_once_with_fsync_every_commit() {
    killed_after_commit("[store]\nfsync = \"every-commit\"\n").await;
}

#[tokio::test]
async fn check_timers_resume_after_a_restart() {
    let mut hub = Hub::with_config(&fast_checks("300ms", 50, "rollback"));
    {
        let mut producer = connect_producer(&hub).await;
        prepare(&mut producer, "orders/1", "t1", &payloads("t1", 2)).await;
    }
    hub.kill_9();
    hub.restart();
    let mut sub = subscriber(&hub, "orders/#").await;
    let mut producer = connect_producer(&hub).await;
    producer.subscribe("$tern/tx/check/producer", 1).await;
    assert_eq!(check_request(&mut producer).await, "t1");
    assert_eq!(end(&mut producer, "t1", "commit").await, (0, None));
    assert_eq!(receive(&mut sub, 2).await, payloads("t1", 2));
    hub.finish();
}

#[tokio::test]
async fn bridge_forwards_a_committed_transaction_upstream_in_order() {
    let upstream = Mosquitto::start();
    let (mut cloud, _) = RawClient::connect_ok(
        std::net::SocketAddr::from(([127, 0, 0, 1], upstream.port())),
        Connect::v5(&unique("cloud")),
    )
    .await;
    cloud.subscribe("#", 1).await;
    let hub = Hub::with_config(&format!(
        "[[bridge]]\nname = \"cloud\"\naddress = {:?}\nclient_id = \"gw-tx\"\n\
         topics = [\"orders/#\"]\nreconnect = {{ min = \"50ms\", max = \"400ms\" }}\n",
        upstream.address()
    ));
    hub.wait_log("bridge connected");
    let mut producer = connect_producer(&hub).await;
    prepare(&mut producer, "orders/1", "gone", &payloads("gone", 5)).await;
    let batch = payloads("t1", 50);
    prepare(&mut producer, "orders/1", "t1", &batch).await;
    cloud.expect_no_publish(QUIET).await;
    assert_eq!(end(&mut producer, "gone", "rollback").await, (0, None));
    assert_eq!(end(&mut producer, "t1", "commit").await, (0, None));
    assert_eq!(receive(&mut cloud, 50).await, batch);
    cloud.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn pipelined_transactions_commit_whole_and_in_order() {
    let hub = Hub::start();
    let mut sub = subscriber(&hub, "orders/#").await;
    let mut producer = connect_producer(&hub).await;
    // Everything goes out before any PUBACK is read: each commit must still see all of its
    // half messages, which may be committing in the same store group.
    let mut pids = Vec::new();
    let mut expected = Vec::new();
    for t in 0..10 {
        let tx = format!("p{t}");
        for payload in payloads(&tx, 5) {
            let pid = producer.pid();
            producer
                .send(&half("orders/1", &payload, &tx).qos(1, pid).encode(V5))
                .await;
            pids.push(pid);
            expected.push(payload);
        }
        let pid = producer.pid();
        let commit = Pub::new(&format!("$tern/tx/{tx}/commit"), b"").qos(1, pid);
        producer.send(&commit.encode(V5)).await;
        pids.push(pid);
    }
    for pid in pids {
        assert_eq!(producer.expect_ack(PUBACK, pid).await, 0, "PUBACK {pid}");
    }
    assert_eq!(receive(&mut sub, 50).await, expected);
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn commit_of_a_producer_that_disconnects_at_once_is_applied_and_settled() {
    let hub = Hub::start();
    let mut sub = subscriber(&hub, "orders/#").await;
    let mut producer = connect_producer(&hub).await;
    let batch = payloads("t1", 3);
    prepare(&mut producer, "orders/1", "t1", &batch).await;
    let pid = producer.pid();
    producer
        .send(&Pub::new("$tern/tx/t1/commit", b"").qos(1, pid).encode(V5))
        .await;
    drop(producer);
    assert_eq!(receive(&mut sub, 3).await, batch);
    // Settled: not left reserved by the connection that went away. The reservation is
    // released just after the commit is applied, so a second commit may briefly be told the
    // transaction is still being finished (nothing changes either way); it must then be
    // unknown, not stay reserved.
    let mut producer = connect_producer(&hub).await;
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let answer = end(&mut producer, "t1", "commit").await;
        if answer != (0x80, Some("transaction is being finished".to_owned()))
            || tokio::time::Instant::now() > deadline
        {
            assert_eq!(answer, unknown_tx());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    hub.finish();
}

/// An identity the ACL grants write on `$tern/tx/#` may end another client's transaction;
/// the owner needs no grant for its own, and an identity without the grant gets 0x87.
#[tokio::test]
async fn acl_permitted_identity_may_end_another_clients_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite orders/#\n\
         client ops\ntopic readwrite orders/#\ntopic write $tern/tx/#\n",
    )
    .expect("write ACL");
    let hub = Hub::with_config(&format!(
        "[[listener]]\nallow_anonymous = true\nacl_file = {:?}\n",
        acl.display().to_string()
    ));
    let mut sub = subscriber(&hub, "orders/#").await;
    let (mut owner, _) = RawClient::connect_ok(hub.addr(), Connect::v5("owner")).await;
    let (mut stranger, _) = RawClient::connect_ok(hub.addr(), Connect::v5("stranger")).await;
    let (mut ops, _) = RawClient::connect_ok(hub.addr(), Connect::v5("ops")).await;
    let batch = payloads("t1", 2);
    prepare(&mut owner, "orders/1", "t1", &batch).await;
    prepare(&mut owner, "orders/1", "t2", &payloads("t2", 1)).await;

    assert_eq!(
        end(&mut stranger, "t1", "commit").await,
        (0x87, Some("transaction belongs to another client".into()))
    );
    // Named owner (`tern-tx-owner`) or the only other holder of the id.
    let named =
        Pub::new("$tern/tx/t1/commit", b"").props(Props::new().user("tern-tx-owner", "owner"));
    assert_eq!(publish_ack(&mut ops, named).await, (0, None));
    assert_eq!(receive(&mut sub, 2).await, batch);
    assert_eq!(end(&mut ops, "t2", "rollback").await, (0, None));
    sub.expect_no_publish(QUIET).await;
    assert_eq!(end(&mut owner, "t2", "commit").await, unknown_tx());
    // The owner's own transactions need no grant on `$tern/tx/#`.
    prepare(&mut owner, "orders/1", "t3", &payloads("t3", 1)).await;
    assert_eq!(end(&mut owner, "t3", "commit").await, (0, None));
    assert_eq!(receive(&mut sub, 1).await, payloads("t3", 1));
    hub.finish();
}
