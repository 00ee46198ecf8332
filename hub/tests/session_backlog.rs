//! Store-backed session queues, against the real `tern` binary: a persistent subscriber's
//! backlog is not bounded by an in-memory message count. Messages beyond the queue's window
//! stay in the store and are paged in as the subscriber drains them, in order, across a
//! `kill -9` of the hub, and for a subscriber that is connected but slow.

mod common;

use std::time::Duration;

use common::*;

/// Messages published while the subscriber is away: five times the old in-memory cap of
/// 10 000.
const BACKLOG: usize = 50_000;

/// QoS 1 publishes sent before their PUBACKs are collected (below Receive Maximum 64).
const PIPELINE: usize = 32;

/// A persistent v5 session: clean start 0, session expiry one hour.
fn persistent(id: &str) -> Connect {
    Connect::v5(id).clean(false).session_expiry(3600)
}

/// Publishes `count` QoS 1 messages with payloads `"0"`, `"1"`, ... on `topic`, pipelined,
/// and requires every PUBACK to report success.
async fn publish_numbered(addr: std::net::SocketAddr, topic: &str, count: usize) {
    let (mut publisher, _) = RawClient::connect_ok(addr, Connect::v5("publisher")).await;
    let mut next = 0;
    while next < count {
        let end = (next + PIPELINE).min(count);
        let mut bytes = Vec::new();
        let mut pids = Vec::with_capacity(end - next);
        for n in next..end {
            let pid = publisher.pid();
            bytes.extend(
                Pub::new(topic, n.to_string().as_bytes())
                    .qos(1, pid)
                    .encode(V5),
            );
            pids.push(pid);
        }
        publisher.send(&bytes).await;
        for (pid, n) in pids.into_iter().zip(next..end) {
            let code = publisher.expect_ack(PUBACK, pid).await;
            assert!(code < 0x80, "publish {n} refused: {code:#04x}");
        }
        next = end;
    }
    publisher.disconnect().await;
}

/// Receives `count` QoS 1 messages, acknowledging each, and returns their payloads as
/// numbers.
async fn receive_numbered(sub: &mut RawClient, count: usize) -> Vec<usize> {
    let mut got = Vec::with_capacity(count);
    for i in 0..count {
        let Some(p) = sub.try_recv_publish(RECV_TIMEOUT).await else {
            panic!(
                "message {i} of {count} did not arrive (after {:?})",
                got.last()
            );
        };
        assert_eq!(p.qos, 1, "delivered at the granted QoS");
        sub.ack(&p).await;
        let text = String::from_utf8(p.payload).expect("utf8 payload");
        got.push(text.parse().expect("numbered payload"));
    }
    got
}

/// Asserts `got` is exactly `0..count`, naming the first place it is not.
fn assert_in_order(got: &[usize], count: usize) {
    if let Some(i) = (0..count).find(|&i| got.get(i) != Some(&i)) {
        panic!(
            "expected messages 0..{count} in order; at index {i} got {:?} (received {})",
            got.get(i),
            got.len()
        );
    }
    assert_eq!(got.len(), count);
}

/// How long the hub may take to stop after a backlog was delivered: the store first
/// commits the queue and in-flight records of every delivery (three per message), which a
/// debug build on a busy machine takes seconds for.
const STOP_AFTER_BACKLOG: Duration = Duration::from_secs(90);

/// `$SYS` counters every second, so the test can see the queue being paged in.
const FAST_SYS: &str = "sys_interval = \"1s\"";

async fn offline_backlog_is_delivered(kill_while_offline: bool) {
    let mut hub = Hub::with_session(FAST_SYS);
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), persistent("backlog-sub")).await;
    sub.subscribe("backlog/#", 1).await;
    sub.disconnect().await;

    publish_numbered(hub.addr(), "backlog/n", BACKLOG).await;
    if kill_while_offline {
        hub.kill_9();
        hub.restart();
    }

    let (mut sub, present) = RawClient::connect_ok(hub.addr(), persistent("backlog-sub")).await;
    assert!(present, "session kept");
    let got = receive_numbered(&mut sub, BACKLOG).await;
    assert_in_order(&got, BACKLOG);
    sub.expect_no_publish(QUIET).await;

    // The backlog came from the store, not from memory.
    let pages = wait_sys_counter(
        &hub,
        "$SYS/broker/queues/pages_read",
        Duration::from_secs(5),
        |n| n > 0,
    )
    .await;
    assert!(pages.is_some_and(|n| n > 0), "pages read: {pages:?}");
    let lost = wait_sys_counter(
        &hub,
        "$SYS/broker/messages/dropped",
        Duration::from_secs(5),
        |_| true,
    )
    .await;
    assert_eq!(lost, Some(0), "messages dropped");
    sub.disconnect().await;
    hub.stop_within(STOP_AFTER_BACKLOG);
}

#[tokio::test]
async fn an_offline_persistent_subscriber_gets_a_backlog_beyond_the_old_cap_in_order() {
    offline_backlog_is_delivered(false).await;
}

#[tokio::test]
async fn an_offline_backlog_survives_kill_9_and_pages_in_after_restart() {
    offline_backlog_is_delivered(true).await;
}

#[tokio::test]
async fn a_slow_connected_subscriber_with_a_small_window_gets_everything_in_order() {
    // A window of a few messages, publishers that wait only briefly for a connected
    // subscriber's queue (100 messages) before the store takes the rest.
    let mut hub = Hub::with_session(
        "queue_window = \"4KiB\"\nmax_queued_messages = 100\nqueue_full_wait = \"10ms\"",
    );
    const COUNT: usize = 5_000;
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), persistent("slow-sub")).await;
    sub.subscribe("slow/#", 1).await;
    // Connected but not reading until everything is published: the slowest subscriber.
    publish_numbered(hub.addr(), "slow/n", COUNT).await;
    let got = receive_numbered(&mut sub, COUNT).await;
    assert_in_order(&got, COUNT);
    sub.expect_no_publish(QUIET).await;
    sub.disconnect().await;
    hub.stop_within(STOP_AFTER_BACKLOG);
}
