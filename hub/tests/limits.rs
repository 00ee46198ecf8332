//! Limits and hostile input: max connections, max packet size, bounded queues, malformed
//! packets. Each limit gives the client a clear answer and leaves a counter behind.

mod common;

use std::time::Duration;

use common::*;

const SYS_FAST: &str = "sys_interval = \"1s\"\n";

/// Waits for a counter to reach at least `min`.
async fn assert_counter_at_least(hub: &Hub, topic: &str, min: u64) {
    let got = wait_sys_counter(hub, topic, Duration::from_secs(5), |v| v >= min).await;
    assert!(
        got.is_some_and(|v| v >= min),
        "{topic} = {got:?}, expected >= {min}"
    );
}

/// A connection beyond `max_connections` is closed before any MQTT exchange and counted in
/// `$SYS/broker/connections/refused`; a freed slot can be used again.
#[tokio::test]
async fn max_connections_enforced() {
    let hub = Hub::with_config(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nmax_connections = 2\n[session]\n{SYS_FAST}"
    ));
    let (a, _) = RawClient::connect_ok(hub.addr(), Connect::v4("mc-a")).await;
    let (_b, _) = RawClient::connect_ok(hub.addr(), Connect::v4("mc-b")).await;
    let mut c = RawClient::tcp(hub.addr()).await;
    // The write may already fail if the hub closed the socket first.
    let _ = c.try_send(&Connect::v4("mc-c").encode()).await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        got.iter()
            .all(|p| !matches!(p, Incoming::ConnAck { code: 0, .. })),
        "third connection accepted: {got:?}"
    );
    a.disconnect().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_counter_at_least(&hub, "$SYS/broker/connections/refused", 1).await;
    hub.finish();
}

/// A packet above `max_packet_size`: v5 clients get DISCONNECT 0x95 (Packet too large),
/// 3.1.1 clients are closed; the hub keeps serving.
#[tokio::test]
async fn oversized_packet_disconnects() {
    let hub = Hub::with_session("max_packet_size = 1024");
    let big = vec![b'x'; 2000];
    let (mut v5, _) = RawClient::connect_ok(hub.addr(), Connect::v5("big5")).await;
    v5.send(&Pub::new("big/t", &big).encode(V5)).await;
    let got = v5.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(got.as_slice(), [Incoming::Disconnect { reason: 0x95, .. }]),
        "got {got:?}"
    );
    let (mut v4, _) = RawClient::connect_ok(hub.addr(), Connect::v4("big4")).await;
    let _ = v4.try_send(&Pub::new("big/t", &big).encode(V311)).await;
    let got = v4.expect_closed(RECV_TIMEOUT).await;
    assert!(got.is_empty(), "3.1.1 gets no packet, got {got:?}");

    let (mut ok, _) = RawClient::connect_ok(hub.addr(), Connect::v5("fits")).await;
    ok.subscribe("big/t", 0).await;
    ok.publish(Pub::new("big/t", &[b'y'; 900])).await;
    assert_eq!(ok.recv_publish().await.payload.len(), 900);
    hub.finish();
}

/// Publishes `n` QoS 1 messages to an offline persistent session subscribed to `topic`,
/// then reconnects it and returns the payloads it receives.
async fn overflow_offline_queue(hub: &Hub, topic: &str, n: u8) -> Vec<u8> {
    let connect = || Connect::v4("overflow").clean(false);
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), connect()).await;
    sub.subscribe(topic, 1).await;
    sub.disconnect().await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("overflow-pub")).await;
    for i in 0..n {
        publ.publish(Pub::new(topic, &[i]).qos(1, 0)).await;
    }
    let (mut sub, present) = RawClient::connect_ok(hub.addr(), connect()).await;
    assert!(present);
    let mut got = Vec::new();
    while let Some(p) = sub.try_recv_publish(QUIET).await {
        sub.ack(&p).await;
        got.push(p.payload[0]);
    }
    got
}

/// `queue_overflow = "drop-oldest"`: a full session queue discards its oldest message; the
/// drops are counted in `$SYS/broker/messages/dropped`.
#[tokio::test]
async fn queue_overflow_drop_oldest() {
    let hub = Hub::with_session(&format!(
        "max_queued_messages = 3\nmax_backlog_messages = 3\nqueue_overflow = \"drop-oldest\"\n{SYS_FAST}"
    ));
    assert_eq!(
        overflow_offline_queue(&hub, "ovf/t", 5).await,
        vec![2, 3, 4]
    );
    assert_counter_at_least(&hub, "$SYS/broker/messages/dropped", 2).await;
    hub.finish();
}

/// `queue_overflow = "drop-new"`: a full session queue refuses the new message.
#[tokio::test]
async fn queue_overflow_drop_new() {
    let hub = Hub::with_session(&format!(
        "max_queued_messages = 3\nmax_backlog_messages = 3\nqueue_overflow = \"drop-new\"\n{SYS_FAST}"
    ));
    assert_eq!(
        overflow_offline_queue(&hub, "ovf/t", 5).await,
        vec![0, 1, 2]
    );
    assert_counter_at_least(&hub, "$SYS/broker/messages/dropped", 2).await;
    hub.finish();
}

/// Malformed packets get v5 DISCONNECT 0x81 (Malformed Packet) — 3.1.1: the connection is
/// closed — are logged as warnings and counted in `$SYS/broker/errors/malformed`.
#[tokio::test]
async fn malformed_packets_disconnect_and_count() {
    let hub = Hub::with_session(SYS_FAST);
    let mut qos3 = Pub::new("m/t", b"x").qos(1, 1).encode(V5);
    qos3[0] |= 0x06; // both QoS bits set (MQTT-3.3.1-4)
    let mut bad_utf8 = Pub::new("m/\u{7f}", b"x").encode(V5);
    let topic_last = 2 + 2 + 2; // header, length prefix, "m/"
    bad_utf8[topic_last] = 0xFF;
    let cases: [(&str, Vec<u8>); 4] = [
        ("PUBLISH with QoS 3", qos3),
        ("PUBLISH topic with invalid UTF-8", bad_utf8),
        // Topic length 200 in a 5-byte body.
        (
            "string longer than the packet",
            packet(0x30, &[0x00, 0xC8, b'a', b'b', 0]),
        ),
        // Remaining length encoded in 5 bytes.
        (
            "remaining length over 4 bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        ),
    ];
    for (what, bytes) in &cases {
        let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("mal5")).await;
        c.send(bytes).await;
        let got = c.expect_closed(RECV_TIMEOUT).await;
        assert!(
            matches!(got.as_slice(), [Incoming::Disconnect { reason: 0x81, .. }]),
            "{what}: got {got:?}"
        );
        let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("mal4")).await;
        let _ = c.try_send(bytes).await;
        let got = c.expect_closed(RECV_TIMEOUT).await;
        assert!(got.is_empty(), "{what} (3.1.1): got {got:?}");
    }
    let n = u64::try_from(cases.len() * 2).unwrap_or(u64::MAX);
    assert_counter_at_least(&hub, "$SYS/broker/errors/malformed", n).await;
    // ... and logged.
    let logs = hub.logs();
    let logged = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.to_lowercase().contains("malformed"))
        .count();
    assert!(
        logged >= cases.len(),
        "expected a warning per malformed packet, log:\n{logs}"
    );
    hub.finish();
}

/// MQTT-3.3.2-2: a PUBLISH topic with wildcards is invalid (v5: DISCONNECT 0x90 Topic Name
/// invalid; 3.1.1: close).
#[tokio::test]
async fn wildcard_in_publish_topic_disconnects() {
    let hub = Hub::start();
    for topic in ["a/+", "a/#"] {
        let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("wild5")).await;
        c.send(&Pub::new(topic, b"x").encode(V5)).await;
        let got = c.expect_closed(RECV_TIMEOUT).await;
        assert!(
            matches!(got.as_slice(), [Incoming::Disconnect { reason: 0x90, .. }]),
            "{topic}: {got:?}"
        );
        let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("wild4")).await;
        c.send(&Pub::new(topic, b"x").encode(V311)).await;
        c.expect_closed(RECV_TIMEOUT).await;
    }
    hub.finish();
}

/// Small deterministic pseudo-random generator (xorshift) for garbage input.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

/// 100 connections sending garbage (random bytes, truncated and corrupted CONNECTs, huge
/// lengths) do not take the hub down; it keeps serving afterwards.
#[tokio::test]
async fn survives_garbage_connections() {
    let hub = Hub::with_session("connect_timeout = \"2s\"");
    let addr = hub.addr();
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        tasks.push(tokio::spawn(async move {
            let mut g = Garbage(0x9E37_79B9_7F4A_7C15 ^ (i + 1));
            let connect = Connect::v5(&format!("g{i}")).encode();
            let bytes = match i % 5 {
                0 => g.bytes(64 + usize::try_from(i).unwrap_or(0)),
                1 => connect[..connect.len() / 2].to_vec(),
                2 => {
                    let mut c = connect.clone();
                    let len = u64::try_from(c.len()).unwrap_or(1);
                    let at = usize::try_from(g.next() % len).unwrap_or(0);
                    c[at] ^= 0xA5;
                    c
                }
                3 => {
                    let mut c = connect.clone();
                    c.extend(g.bytes(32));
                    c
                }
                _ => vec![0x10, 0xFF, 0xFF, 0xFF, 0x7F],
            };
            let mut c = RawClient::tcp(addr).await;
            c.level = V5;
            let _ = c.try_send(&bytes).await;
            // Read whatever comes back until close or a short timeout; never answer.
            for _ in 0..4 {
                if c.try_recv(Duration::from_millis(250)).await == Err(RecvError::Closed) {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("garbage task");
    }
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("after-garbage")).await;
    sub.subscribe("alive/t", 1).await;
    sub.publish(Pub::new("alive/t", b"still serving").qos(1, 0))
        .await;
    assert_eq!(sub.recv_publish_acked().await.payload, b"still serving");
    hub.finish();
}

/// Invalid PUBLISH topics: empty without alias (MQTT-4.7.3-1), containing U+0000
/// (MQTT-1.5.4-2); a client-sent Subscription Identifier is a Protocol Error (MQTT-3.3.4-6).
#[tokio::test]
async fn invalid_publish_topics_and_properties_rejected() {
    let hub = Hub::start();
    let cases: [(&str, u8, Vec<u8>); 4] = [
        ("empty topic (3.1.1)", V311, Pub::new("", b"x").encode(V311)),
        (
            "empty topic, no alias (5.0)",
            V5,
            Pub::new("", b"x").encode(V5),
        ),
        ("NUL in topic", V5, Pub::new("a\u{0}b", b"x").encode(V5)),
        (
            "subscription identifier from client",
            V5,
            Pub::new("a/b", b"x")
                .props(Props::new().varint(prop::SUBSCRIPTION_ID, 3))
                .encode(V5),
        ),
    ];
    for (what, level, bytes) in cases {
        let (mut c, _) = RawClient::connect_ok(
            hub.addr(),
            Connect {
                level,
                ..Connect::v4("badpub")
            },
        )
        .await;
        eprintln!("case: {what}");
        c.send(&bytes).await;
        let got = c.expect_closed(RECV_TIMEOUT).await;
        let ok = match got.as_slice() {
            [] => level != V5,
            [Incoming::Disconnect { reason, .. }] => matches!(reason, 0x81 | 0x82 | 0x90),
            _ => false,
        };
        assert!(ok, "{what}: got {got:?}");
    }
    hub.finish();
}

/// The queue bound also applies to an online client whose in-flight window is full: with
/// `drop-oldest`, the messages behind the window are the newest ones. (With the queue in
/// memory: under `queue_in_store` a clean session's queue is bounded by
/// `max_backlog_messages`.)
#[tokio::test]
async fn online_backlog_bounded_by_queue() {
    let hub = Hub::with_session(&format!(
        "max_inflight = 1\nmax_queued_messages = 2\nqueue_overflow = \"drop-oldest\"\nqueue_in_store = false\n{SYS_FAST}"
    ));
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("backlog-sub")).await;
    sub.subscribe("backlog/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("backlog-pub")).await;
    for i in 0..6u8 {
        publ.publish(Pub::new("backlog/t", &[i]).qos(1, 0)).await;
    }
    let mut got = Vec::new();
    while let Some(p) = sub.try_recv_publish(QUIET).await {
        sub.ack(&p).await;
        got.push(p.payload[0]);
    }
    assert_eq!(got, vec![0, 4, 5], "first in flight, then the two newest");
    assert_counter_at_least(&hub, "$SYS/broker/messages/dropped", 3).await;
    hub.finish();
}

/// `queue_overflow = "backpressure"` (the default) with the queue in memory
/// (`queue_in_store = false`): a connected subscriber slower than its publisher loses
/// nothing — the publisher's acknowledgements wait for room instead — while the same
/// backlog under `drop-oldest` (`online_backlog_bounded_by_queue`) loses messages.
#[tokio::test]
async fn backpressure_keeps_every_message_for_a_slow_subscriber() {
    let hub = Hub::with_session(&format!(
        "max_inflight = 1\nmax_queued_messages = 2\nqueue_full_wait = \"30s\"\nqueue_in_store = false\n{SYS_FAST}"
    ));
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("bp-sub")).await;
    sub.subscribe("bp/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("bp-pub")).await;
    const N: u8 = 20;
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            assert_eq!(publ.publish(Pub::new("bp/t", &[i]).qos(1, 0)).await, 0);
        }
        publ
    });
    let mut got = Vec::new();
    while got.len() < usize::from(N) {
        let Some(p) = sub.try_recv_publish(Duration::from_secs(10)).await else {
            break;
        };
        // A slow consumer: the publisher is far ahead of it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        sub.ack(&p).await;
        got.push(p.payload[0]);
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every message, in order");
    publisher.await.expect("publisher");
    let dropped = wait_sys_counter(
        &hub,
        "$SYS/broker/messages/dropped",
        Duration::from_secs(5),
        |_| true,
    )
    .await;
    assert_eq!(dropped, Some(0));
    hub.finish();
}

/// `queue_in_store` (the default): a clean subscriber that reads nothing does not hold up
/// its publisher's acknowledgements — what it has not taken waits in the store, as log
/// positions beyond a small window — and it still gets every message, in order, once it
/// reads.
#[tokio::test]
async fn a_stalled_clean_subscriber_does_not_hold_up_publishers() {
    let hub = Hub::with_session(&format!(
        "max_inflight = 1\nmax_queued_messages = 2\nqueue_wait_level = 1\nqueue_window = \"1KiB\"\nqueue_full_wait = \"30s\"\n{SYS_FAST}"
    ));
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("is-sub")).await;
    sub.subscribe("is/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("is-pub")).await;
    const N: u8 = 200;
    // Every PUBACK arrives while the subscriber reads nothing (with the queue in memory
    // the third publish would wait up to `queue_full_wait`, 30 s, for room).
    let acked = tokio::time::timeout(RECV_TIMEOUT, async {
        for i in 0..N {
            assert_eq!(publ.publish(Pub::new("is/t", &[i]).qos(1, 0)).await, 0);
        }
    })
    .await;
    assert!(acked.is_ok(), "publisher held up by the subscriber");
    let mut got = Vec::new();
    while let Some(p) = sub.try_recv_publish(QUIET).await {
        sub.ack(&p).await;
        got.push(p.payload[0]);
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every message, in order");
    assert_counter_at_least(&hub, "$SYS/broker/queues/messages_paged", 100).await;
    hub.finish();
}

/// `queue_in_store`: a clean session's positions are not protected from retention. What
/// the store deleted before the subscriber read it is counted in
/// `$SYS/broker/queues/messages_lost`; the rest arrives in order, and nothing is both.
#[tokio::test]
async fn a_clean_backlog_older_than_retention_is_counted_as_lost() {
    let hub = Hub::with_config(&format!(
        "[store]\nmax_age = \"1s\"\n\n[session]\nmax_inflight = 1\nmax_queued_messages = 2\nqueue_window = \"1KiB\"\n{SYS_FAST}"
    ));
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("il-sub")).await;
    sub.subscribe("il/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("il-pub")).await;
    const N: u8 = 100;
    for i in 0..N {
        assert_eq!(publ.publish(Pub::new("il/t", &[i]).qos(1, 0)).await, 0);
    }
    // Retention (checked every second) deletes everything older than a second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got = Vec::new();
    while let Some(p) = sub.try_recv_publish(QUIET).await {
        sub.ack(&p).await;
        got.push(p.payload[0]);
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert!(
        got.len() < usize::from(N),
        "the store deleted part of it: {got:?}"
    );
    let lost = usize::from(N) - got.len();
    let counted = wait_sys_counter(
        &hub,
        "$SYS/broker/queues/messages_lost",
        Duration::from_secs(5),
        |v| v >= lost as u64,
    )
    .await;
    assert_eq!(counted, Some(lost as u64), "received {got:?}");
    hub.finish();
}

/// Under `backpressure` an offline persistent session does not hold publishers up: its full
/// queue drops the oldest message as `drop-oldest` does.
#[tokio::test]
async fn backpressure_falls_back_to_drop_oldest_for_offline_sessions() {
    let hub = Hub::with_session(&format!(
        "max_queued_messages = 3\nmax_backlog_messages = 3\nqueue_overflow = \"backpressure\"\nqueue_full_wait = \"30s\"\n{SYS_FAST}"
    ));
    assert_eq!(
        overflow_offline_queue(&hub, "bpo/t", 5).await,
        vec![2, 3, 4]
    );
    assert_counter_at_least(&hub, "$SYS/broker/messages/dropped", 2).await;
    hub.finish();
}

/// `$SYS` statistics follow activity: connected clients and received messages.
#[tokio::test]
async fn sys_counters_track_activity() {
    let hub = Hub::with_session(SYS_FAST);
    let (mut a, _) = RawClient::connect_ok(hub.addr(), Connect::v4("sys-a")).await;
    let (_b, _) = RawClient::connect_ok(hub.addr(), Connect::v5("sys-b")).await;
    for i in 0..5u8 {
        a.publish(Pub::new("sys/t", &[i]).qos(1, 0)).await;
    }
    // The watcher itself is the third client.
    let connected = wait_sys_counter(
        &hub,
        "$SYS/broker/clients/connected",
        Duration::from_secs(5),
        |v| v == 3,
    )
    .await;
    assert_eq!(connected, Some(3));
    assert_counter_at_least(&hub, "$SYS/broker/messages/received", 5).await;
    let version = {
        let (mut w, _) = RawClient::connect_ok(hub.addr(), Connect::v4("sys-version")).await;
        w.subscribe("$SYS/broker/version", 0).await;
        w.recv_publish().await
    };
    assert!(version.retain, "statistics are retained");
    assert_eq!(version.payload, env!("CARGO_PKG_VERSION").as_bytes());
    hub.finish();
}

/// `sys_interval = "0s"` turns the statistics off.
#[tokio::test]
async fn sys_interval_zero_disables_statistics() {
    let hub = Hub::with_session("sys_interval = \"0s\"");
    let (mut w, _) = RawClient::connect_ok(hub.addr(), Connect::v4("no-sys")).await;
    w.subscribe("$SYS/#", 0).await;
    w.expect_no_publish(Duration::from_millis(1500)).await;
    hub.finish();
}
