//! Broker behaviour checked by the Eclipse Paho interoperability suites (`client_test.py` for
//! MQTT 3.1.1, `client_test5.py` for MQTT 5.0), re-expressed against the real `tern` binary,
//! plus the neighbouring edge cases such suites tend to trip on.
//!
//! Each test names the normative statements it checks. Where the Paho suite relies on
//! behaviour the specification leaves open (QoS 0 queueing, one copy or several for
//! overlapping subscriptions), the test accepts every conforming outcome. Where the Paho
//! client relies on behaviour that contradicts MQTT 5.0 (a v5 session with no Session Expiry
//! Interval outliving its connection), the test follows the specification and sets the
//! interval explicitly.

mod common;

use std::time::Duration;

use common::*;

/// The Paho suites' topic names and filters.
const TOPICS: [&str; 5] = ["TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA"];
const WILD_PLUS_PLUS: &str = "+/+";
const WILD_TOPIC_A_HASH: &str = "TopicA/#";
const WILD_TOPIC_A_PLUS: &str = "TopicA/+";

/// A CONNECT for `level` with clean session / clean start set.
fn conn(level: u8, id: &str) -> Connect {
    if level == V5 {
        Connect::v5(id)
    } else {
        Connect::v4(id)
    }
}

/// A CONNECT that keeps its session after the connection: clean session 0 (3.1.1), clean
/// start 0 with a Session Expiry Interval of five minutes (5.0, where an absent interval means
/// the session ends with the connection, §3.1.2.11.2).
fn persistent(level: u8, id: &str) -> Connect {
    let c = conn(level, id).clean(false);
    if level == V5 {
        c.session_expiry(300)
    } else {
        c
    }
}

/// Receives every PUBLISH until the hub is quiet for [`QUIET`], acknowledging each.
async fn drain(c: &mut RawClient) -> Vec<Publish> {
    let mut got = Vec::new();
    while let Some(p) = c.try_recv_publish(QUIET).await {
        c.ack(&p).await;
        got.push(p);
    }
    got
}

/// Receives at least `n` PUBLISHes (each within [`RECV_TIMEOUT`]), then any more arriving
/// until the hub is quiet for [`QUIET`]; all acknowledged.
async fn recv_at_least(c: &mut RawClient, n: usize) -> Vec<Publish> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(c.recv_publish_acked().await);
    }
    got.extend(drain(c).await);
    got
}

/// Receives exactly `n` PUBLISHes (acknowledged), then requires the hub to stay quiet.
async fn recv_exactly(c: &mut RawClient, n: usize) -> Vec<Publish> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(c.recv_publish_acked().await);
    }
    let extra = drain(c).await;
    assert!(
        extra.is_empty(),
        "expected {n} messages, got more: {extra:?}"
    );
    got
}

/// Sorted `(topic, qos)` pairs of `msgs`.
fn topic_qos(msgs: &[Publish]) -> Vec<(String, u8)> {
    let mut v: Vec<_> = msgs.iter().map(|p| (p.topic.clone(), p.qos)).collect();
    v.sort();
    v
}

/// Connect, disconnect, reconnect; a subscriber publishing to itself at QoS 0, 1 and 2
/// receives all three at their QoS (MQTT-3.3.5-1, MQTT-3.8.4-6). A second CONNECT on the
/// connection is a protocol violation that closes it (MQTT-3.1.0-2), and a CONNECT with a
/// wrong protocol name is never accepted (MQTT-3.1.2-1).
#[tokio::test]
async fn basic_all_qos_second_connect_and_bad_protocol_name() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let id = format!("myclientid-{level}");
        let (c, _) = RawClient::connect_ok(hub.addr(), conn(level, &id)).await;
        c.disconnect().await;
        let (mut c, _) = RawClient::connect_ok(hub.addr(), conn(level, &id)).await;
        c.subscribe(TOPICS[0], 2).await;
        for qos in 0..=2 {
            let payload = format!("qos {qos}");
            let rc = c
                .publish(Pub::new(TOPICS[0], payload.as_bytes()).qos(qos, 0))
                .await;
            assert_eq!(rc, 0, "v{level}: ack of the QoS {qos} publish");
        }
        let got = recv_exactly(&mut c, 3).await;
        let mut seen: Vec<(u8, Vec<u8>)> = got.iter().map(|p| (p.qos, p.payload.clone())).collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..=2)
                .map(|q| (q, format!("qos {q}").into_bytes()))
                .collect::<Vec<_>>(),
            "v{level}"
        );

        // A second CONNECT on the same connection.
        c.send(&conn(level, &id).encode()).await;
        let got = c.expect_closed(RECV_TIMEOUT).await;
        let ok = match got.as_slice() {
            [] => true,
            [Incoming::Disconnect { reason, .. }] => level == V5 && *reason == 0x82,
            _ => false,
        };
        assert!(ok, "v{level}: second CONNECT: got {got:?}");

        // Protocol name "hj" instead of "MQTT".
        let mut body = Vec::new();
        put_str(&mut body, "hj");
        body.push(level);
        body.push(0x02);
        put_u16(&mut body, 0);
        if level == V5 {
            body.push(0);
        }
        put_str(&mut body, &id);
        let mut c = RawClient::tcp(hub.addr()).await;
        c.level = level;
        c.send(&packet(0x10, &body)).await;
        let got = c.expect_closed(RECV_TIMEOUT).await;
        assert!(
            !got.iter()
                .any(|p| matches!(p, Incoming::ConnAck { code: 0, .. })),
            "v{level}: CONNECT with protocol name \"hj\" was accepted: {got:?}"
        );
    }
    hub.finish();
}

/// Retained messages at QoS 0, 1 and 2 reach a later wildcard subscriber with RETAIN = 1 at
/// their own QoS (MQTT-3.3.1-6, MQTT-3.3.1-8) and, in 5.0, with their User Properties in the
/// order published (MQTT-3.3.2-18). Empty retained payloads at every QoS clear them
/// (MQTT-3.3.1-10/11).
#[tokio::test]
async fn retained_messages_at_every_qos_stored_and_cleared() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let id = format!("retainer-{level}");
        let user = Props::new().user("a", "2").user("c", "3");
        let (mut c, _) = RawClient::connect_ok(hub.addr(), conn(level, &id)).await;
        for (qos, topic) in [(0, TOPICS[1]), (1, TOPICS[2]), (2, TOPICS[3])] {
            let payload = format!("qos {qos}");
            let rc = c
                .publish(
                    Pub::new(topic, payload.as_bytes())
                        .qos(qos, 0)
                        .retain(true)
                        .props(user.clone()),
                )
                .await;
            assert!(
                rc == 0 || rc == 0x10,
                "v{level}: retained publish acked {rc:#04x}"
            );
        }
        c.subscribe(WILD_PLUS_PLUS, 2).await;
        let got = recv_exactly(&mut c, 3).await;
        c.disconnect().await;
        let mut want = vec![
            (TOPICS[1].to_owned(), 0),
            (TOPICS[2].to_owned(), 1),
            (TOPICS[3].to_owned(), 2),
        ];
        want.sort();
        assert_eq!(topic_qos(&got), want, "v{level}");
        for p in &got {
            assert!(p.retain, "v{level}: {} not flagged retained", p.topic);
            if level == V5 {
                assert_eq!(
                    p.props.user(),
                    vec![("a".into(), "2".into()), ("c".into(), "3".into())],
                    "v{level}: user properties of {}",
                    p.topic
                );
            }
        }

        // Clear them with empty retained payloads, at each QoS.
        let (mut c, _) = RawClient::connect_ok(hub.addr(), conn(level, &id)).await;
        for (qos, topic) in [(0, TOPICS[1]), (1, TOPICS[2]), (2, TOPICS[3])] {
            c.publish(Pub::new(topic, b"").qos(qos, 0).retain(true))
                .await;
        }
        c.disconnect().await;
        let (mut c, _) = RawClient::connect_ok(hub.addr(), conn(level, &id)).await;
        c.subscribe(WILD_PLUS_PLUS, 2).await;
        let left = drain(&mut c).await;
        assert!(
            left.is_empty(),
            "v{level}: retained messages not cleared: {left:?}"
        );
        c.disconnect().await;
    }
    hub.finish();
}

/// Messages published while a persistent session is offline are kept and delivered at
/// reconnection: QoS 1 and 2 always, QoS 0 optionally (MQTT-3.1.2-5, MQTT-4.1.0-1), with
/// Session Present = 1 (MQTT-3.2.2-2).
#[tokio::test]
async fn offline_messages_queued_for_a_persistent_session() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let id = format!("offline-{level}");
        let (mut a, _) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        a.subscribe(WILD_PLUS_PLUS, 2).await;
        a.disconnect().await;

        let (mut b, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("b-{level}"))).await;
        for (qos, topic) in [(0, TOPICS[1]), (1, TOPICS[2]), (2, TOPICS[3])] {
            let payload = format!("qos {qos}");
            b.publish(Pub::new(topic, payload.as_bytes()).qos(qos, 0))
                .await;
        }
        b.disconnect().await;

        let (mut a, present) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        assert!(present, "v{level}: session not present");
        let got = topic_qos(&recv_at_least(&mut a, 2).await);
        let want_min = vec![(TOPICS[2].to_owned(), 1), (TOPICS[3].to_owned(), 2)];
        let mut want_max = want_min.clone();
        want_max.push((TOPICS[1].to_owned(), 0));
        want_max.sort();
        assert!(
            got == want_min || got == want_max,
            "v{level}: queued messages {got:?}"
        );
        a.disconnect().await;
    }
    hub.finish();
}

/// The will is published when the connection drops without DISCONNECT (MQTT-3.1.2-8), to a
/// subscriber that connected with keepalive 0 (which is never timed out, §3.1.2.10).
#[tokio::test]
async fn will_published_when_client_terminates() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let id = format!("will-b-{level}");
        let (mut b, _) = RawClient::connect_ok(hub.addr(), conn(level, &id).keep_alive(0)).await;
        b.subscribe(TOPICS[2], 2).await;
        let (a, _) = RawClient::connect_ok(
            hub.addr(),
            conn(level, &format!("will-a-{level}"))
                .keep_alive(2)
                .will(Will {
                    qos: 2,
                    ..Will::new(TOPICS[2], b"client not disconnected")
                }),
        )
        .await;
        a.drop_connection().await;
        let p = b.recv_publish_acked().await;
        assert_eq!(p.topic, TOPICS[2]);
        assert_eq!(p.payload, b"client not disconnected");
        assert_eq!(p.qos, 2, "v{level}: will QoS");
        assert!(drain(&mut b).await.is_empty(), "v{level}: will sent twice");
        b.disconnect().await;
    }
    hub.finish();
}

/// A client that sends nothing for 1.5 × its keepalive is disconnected and its will is
/// published (MQTT-3.1.2-22/24, MQTT-3.1.2-8); a 5.0 client told why gets reason 0x8D Keep
/// Alive timeout (§3.14.2.1). A subscriber with keepalive 0 is not timed out meanwhile.
#[tokio::test]
async fn keepalive_expiry_disconnects_and_publishes_will() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let (mut b, _) = RawClient::connect_ok(
            hub.addr(),
            conn(level, &format!("ka-b-{level}")).keep_alive(0),
        )
        .await;
        b.subscribe(TOPICS[4], 2).await;
        let (mut a, _) = RawClient::connect_ok(
            hub.addr(),
            conn(level, &format!("ka-a-{level}"))
                .keep_alive(1)
                .will(Will::new(TOPICS[4], b"keepalive expiry")),
        )
        .await;
        let got = a.expect_closed(RECV_TIMEOUT).await;
        let ok = match got.as_slice() {
            [] => true,
            [Incoming::Disconnect { reason, .. }] => level == V5 && *reason == 0x8D,
            _ => false,
        };
        assert!(ok, "v{level}: keepalive expiry: got {got:?}");
        let p = b.recv_publish_acked().await;
        assert_eq!(p.payload, b"keepalive expiry", "v{level}");
        b.send(&PINGREQ).await;
        assert_eq!(
            b.recv().await,
            Incoming::PingResp,
            "v{level}: keepalive-0 client"
        );
        b.disconnect().await;
    }
    hub.finish();
}

/// Overlapping filters in one SUBSCRIBE (`TopicA/#` at QoS 2, `TopicA/+` at QoS 1): the
/// server sends either one copy at the maximum QoS (MQTT-3.3.5-1) or one copy per matching
/// subscription, each at its own QoS — never anything else.
#[tokio::test]
async fn overlapping_subscriptions_in_one_subscribe() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let (mut c, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("overlap-{level}"))).await;
        let codes = c
            .subscribe_with(
                &[(WILD_TOPIC_A_HASH, 2), (WILD_TOPIC_A_PLUS, 1)],
                &Props::new(),
            )
            .await;
        assert_eq!(codes, vec![2, 1], "v{level}: SUBACK");
        c.publish(Pub::new(TOPICS[3], b"overlapping topic filters").qos(2, 0))
            .await;
        let mut qos: Vec<u8> = recv_at_least(&mut c, 1)
            .await
            .iter()
            .map(|p| p.qos)
            .collect();
        qos.sort();
        assert!(
            qos == vec![2] || qos == vec![1, 2],
            "v{level}: copies at QoS {qos:?}"
        );
        c.disconnect().await;
    }
    hub.finish();
}

/// 5.0 overlapping subscriptions with Subscription Identifiers: one copy carries the
/// identifiers of all matching subscriptions (MQTT-3.3.4-4), several copies carry one each
/// (MQTT-3.3.4-5), at that subscription's QoS.
#[tokio::test]
async fn v5_overlapping_subscriptions_carry_their_identifiers() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("overlap-ids")).await;
    let id = |n| Props::new().varint(prop::SUBSCRIPTION_ID, n);
    assert_eq!(
        c.subscribe_with(&[(WILD_TOPIC_A_HASH, 2)], &id(1)).await,
        vec![2]
    );
    assert_eq!(
        c.subscribe_with(&[(WILD_TOPIC_A_PLUS, 1)], &id(2)).await,
        vec![1]
    );
    assert_eq!(
        c.subscribe_with(&[(TOPICS[3], 0)], &Props::new()).await,
        vec![0]
    );
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("overlap-ids-pub")).await;
    p.publish(Pub::new(TOPICS[3], b"m").qos(2, 0)).await;
    let got = recv_at_least(&mut c, 1).await;
    match got.as_slice() {
        [one] => {
            assert_eq!(one.qos, 2);
            let mut ids = one.props.subscription_ids();
            ids.sort();
            assert_eq!(ids, vec![1, 2], "single copy: {one:?}");
        }
        many => {
            assert!(many.len() <= 3, "too many copies: {many:?}");
            let mut seen: Vec<(Vec<u32>, u8)> = many
                .iter()
                .map(|p| (p.props.subscription_ids(), p.qos))
                .collect();
            seen.sort();
            let mut want = vec![(vec![1], 2), (vec![2], 1)];
            if many.len() == 3 {
                want.push((vec![], 0));
            }
            want.sort();
            assert_eq!(seen, want, "one copy per subscription: {many:?}");
        }
    }
    p.disconnect().await;
    c.disconnect().await;
    hub.finish();
}

/// The Paho redelivery flow: a persistent subscriber publishes QoS 1 and 2 messages to its
/// own wildcard subscription, completes its own publish flows but acknowledges none of the
/// deliveries, and disconnects. On reconnection the hub re-sends both unacknowledged PUBLISH
/// packets with DUP = 1 and their original packet ids (MQTT-4.4.0-1, MQTT-3.3.1-1), and each
/// is delivered once.
#[tokio::test]
async fn unacknowledged_deliveries_resent_on_reconnect() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let id = format!("myclientid2-{level}");
        let (mut b, _) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        b.subscribe(WILD_TOPIC_A_HASH, 2).await;
        b.publish(Pub::new(TOPICS[1], b"").qos(1, 0)).await;
        b.publish(Pub::new(TOPICS[3], b"").qos(2, 0)).await;
        let mut first = vec![b.recv_publish().await, b.recv_publish().await];
        first.sort_by_key(|p| p.qos);
        assert_eq!(topic_qos(&first), {
            let mut v = vec![(TOPICS[1].to_owned(), 1), (TOPICS[3].to_owned(), 2)];
            v.sort();
            v
        });
        b.disconnect().await;

        let (mut b, present) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        assert!(present, "v{level}: session not present");
        let mut again = vec![b.recv_publish_acked().await, b.recv_publish_acked().await];
        again.sort_by_key(|p| p.qos);
        for (old, new) in first.iter().zip(&again) {
            assert_eq!(new.topic, old.topic, "v{level}");
            assert_eq!(new.qos, old.qos, "v{level}");
            assert_eq!(new.pid, old.pid, "v{level}: packet id of {}", new.topic);
            assert!(new.dup, "v{level}: re-sent {} without DUP", new.topic);
        }
        assert!(drain(&mut b).await.is_empty(), "v{level}: delivered twice");
        b.disconnect().await;
    }
    hub.finish();
}

/// A filter the server refuses gets SUBACK 0x80 in 3.1.1 (MQTT-3.9.3-2 / §3.9.3) and a
/// failure reason code (≥ 0x80) in 5.0 (§3.9.3), while the other filters of the same
/// SUBSCRIBE are still granted (MQTT-3.8.4-5); the refused filter delivers nothing.
#[tokio::test]
async fn subscribe_failure_return_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite #\ntopic deny nosubscribe\ntopic deny test/nosubscribe\n",
    )
    .expect("write ACL");
    let hub = Hub::with_config(&format!(
        "[[listener]]\nallow_anonymous = true\nacl_file = \"{}\"\n",
        acl.display()
    ));
    for level in [V311, V5] {
        let (mut c, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("subfail-{level}"))).await;
        let codes = c
            .subscribe_with(
                &[("nosubscribe", 2), ("test/nosubscribe", 1), (TOPICS[0], 1)],
                &Props::new(),
            )
            .await;
        if level == V311 {
            assert_eq!(codes, vec![0x80, 0x80, 1], "v{level}");
        } else {
            assert!(
                codes.len() == 3 && codes[0] >= 0x80 && codes[1] >= 0x80 && codes[2] == 1,
                "v{level}: {codes:?}"
            );
        }
        c.disconnect().await;
    }
    hub.finish();
}

/// Filters starting with a wildcard do not match topic names starting with `$`
/// (MQTT-4.7.2-1): a client publishing `$TopicA/B` gets its acknowledgement but its `+/+`
/// and `#` subscriptions deliver nothing.
#[tokio::test]
async fn dollar_topics_not_matched_by_leading_wildcards() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let (mut b, _) = RawClient::connect_ok(
            hub.addr(),
            conn(level, &format!("dollar-{level}")).keep_alive(0),
        )
        .await;
        b.subscribe(WILD_PLUS_PLUS, 2).await;
        b.subscribe("#", 2).await;
        b.subscribe("+/#", 2).await;
        let rc = b.publish(Pub::new("$TopicA/B", b"").qos(1, 0)).await;
        assert!(rc == 0 || rc == 0x10, "v{level}: PUBACK {rc:#04x}");
        let got = drain(&mut b).await;
        assert!(
            got.iter().all(|p| !p.topic.starts_with('$')),
            "v{level}: a leading wildcard matched a $ topic: {got:?}"
        );
        b.disconnect().await;
    }
    hub.finish();
}

/// 5.0 UNSUBSCRIBE: removes only the named subscription (UNSUBACK 0x00), a filter with no
/// subscription gets 0x11 No subscription existed (§3.11.3), and delivery stops for it only
/// (MQTT-3.10.4-1).
#[tokio::test]
async fn v5_unsubscribe_reason_codes_and_effect() {
    let hub = Hub::start();
    let (mut b, _) = RawClient::connect_ok(hub.addr(), Connect::v5("unsub-b")).await;
    for t in &TOPICS[..3] {
        b.subscribe(t, 2).await;
    }
    let pid = b.pid();
    b.send(&unsubscribe_packet(
        V5,
        pid,
        &[TOPICS[0], "never/subscribed"],
    ))
    .await;
    let codes = b
        .recv_matching("UNSUBACK", |p| match p {
            Incoming::UnsubAck {
                pid: got, codes, ..
            } if *got == pid => Some(codes.clone()),
            _ => None,
        })
        .await;
    assert_eq!(codes, vec![0x00, 0x11]);
    assert_eq!(
        b.unsubscribe(TOPICS[0]).await,
        vec![0x11],
        "second unsubscribe"
    );

    let (mut a, _) = RawClient::connect_ok(hub.addr(), Connect::v5("unsub-a")).await;
    a.publish(Pub::new(TOPICS[0], b"topic 0 - unsubscribed").qos(1, 0))
        .await;
    a.publish(Pub::new(TOPICS[1], b"topic 1").qos(1, 0)).await;
    a.publish(Pub::new(TOPICS[2], b"topic 2").qos(1, 0)).await;
    let got = recv_exactly(&mut b, 2).await;
    let mut topics: Vec<_> = got.iter().map(|p| p.topic.as_str()).collect();
    topics.sort();
    assert_eq!(topics, vec![TOPICS[2], TOPICS[1]]);
    a.disconnect().await;
    b.disconnect().await;
    hub.finish();
}

/// 3.1.1 UNSUBACK has no payload, and unsubscribing a filter that was never subscribed is
/// still acknowledged (MQTT-3.10.4-5).
#[tokio::test]
async fn v311_unsuback_for_unknown_filter() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("unsub-311")).await;
    assert_eq!(c.unsubscribe("never/subscribed").await, Vec::<u8>::new());
    c.disconnect().await;
    hub.finish();
}

/// The Paho session expiry flow (MQTT 5.0 §3.1.2.11.2, §3.14.2.2.2): interval 0 ends the
/// session at disconnect; a non-zero interval keeps it for that long and no longer; a
/// non-zero interval set at CONNECT can be raised at DISCONNECT, and 0 at DISCONNECT ends it.
#[tokio::test]
async fn v5_session_expiry_flow() {
    let hub = Hub::start();
    let id = "myclientid";
    let connect = |clean: bool, expiry: u32| Connect::v5(id).clean(clean).session_expiry(expiry);

    let (mut c, present) = RawClient::connect_ok(hub.addr(), connect(true, 0)).await;
    assert!(!present);
    c.subscribe(TOPICS[0], 2).await;
    c.disconnect().await;
    let (c, present) = RawClient::connect_ok(hub.addr(), connect(false, 0)).await;
    assert!(!present, "interval 0: session must end with the connection");
    c.disconnect().await;

    let (mut c, present) = RawClient::connect_ok(hub.addr(), connect(true, 2)).await;
    assert!(!present);
    c.subscribe(TOPICS[0], 2).await;
    c.disconnect().await;
    let (c, present) = RawClient::connect_ok(hub.addr(), connect(false, 2)).await;
    assert!(present, "interval 2: session must still exist");
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (c, present) = RawClient::connect_ok(hub.addr(), connect(false, 2)).await;
    assert!(!present, "interval 2: session must have expired");
    c.disconnect().await;

    // Interval 1 at CONNECT, raised to 5 at DISCONNECT.
    let (mut c, present) = RawClient::connect_ok(hub.addr(), connect(true, 1)).await;
    assert!(!present);
    c.subscribe(TOPICS[0], 2).await;
    c.send(&disconnect_v5(
        0,
        &Props::new().u32(prop::SESSION_EXPIRY, 5),
    ))
    .await;
    c.expect_closed(RECV_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (mut c, present) = RawClient::connect_ok(hub.addr(), connect(false, 1)).await;
    assert!(
        present,
        "interval raised to 5 at DISCONNECT: session must still exist"
    );
    c.send(&disconnect_v5(
        0,
        &Props::new().u32(prop::SESSION_EXPIRY, 0),
    ))
    .await;
    c.expect_closed(RECV_TIMEOUT).await;
    let (c, present) = RawClient::connect_ok(hub.addr(), connect(false, 1)).await;
    assert!(
        !present,
        "interval 0 at DISCONNECT: session must have ended"
    );
    c.disconnect().await;
    hub.finish();
}

/// User Properties (in order, MQTT-3.3.2-18), Payload Format Indicator (MQTT-3.3.2-4),
/// Content Type (MQTT-3.3.2-20), Response Topic and Correlation Data (MQTT-3.3.2-15/16)
/// arrive unchanged at QoS 0, 1 and 2, live and from an offline session's queue.
#[tokio::test]
async fn v5_properties_forwarded_at_every_qos_live_and_queued() {
    let hub = Hub::start();
    let props = Props::new()
        .user("a", "2")
        .user("c", "3")
        .byte(prop::PAYLOAD_FORMAT, 1)
        .str(prop::CONTENT_TYPE, "My name")
        .str(prop::RESPONSE_TOPIC, "reply/here")
        .bin(prop::CORRELATION_DATA, b"\x00\x01corr")
        .user("a", "1");
    let check = |p: &Publish, what: &str| {
        assert_eq!(
            p.props.user(),
            vec![
                ("a".into(), "2".into()),
                ("c".into(), "3".into()),
                ("a".into(), "1".into())
            ],
            "{what}: user properties"
        );
        assert_eq!(p.props.u32(prop::PAYLOAD_FORMAT), Some(1), "{what}");
        assert_eq!(p.props.str(prop::CONTENT_TYPE), Some("My name"), "{what}");
        assert_eq!(
            p.props.str(prop::RESPONSE_TOPIC),
            Some("reply/here"),
            "{what}"
        );
        assert_eq!(
            p.props.bin(prop::CORRELATION_DATA),
            Some(&b"\x00\x01corr"[..]),
            "{what}"
        );
    };

    let (mut a, _) = RawClient::connect_ok(hub.addr(), Connect::v5("props-a")).await;
    a.subscribe(TOPICS[0], 2).await;
    let (mut q, _) = RawClient::connect_ok(hub.addr(), persistent(V5, "props-q")).await;
    q.subscribe(TOPICS[0], 2).await;
    q.disconnect().await;
    for qos in 0..=2 {
        a.publish(Pub::new(TOPICS[0], b"").qos(qos, 0).props(props.clone()))
            .await;
    }
    let got = recv_exactly(&mut a, 3).await;
    let mut qoss: Vec<u8> = got.iter().map(|p| p.qos).collect();
    qoss.sort();
    assert_eq!(qoss, vec![0, 1, 2]);
    for p in &got {
        check(p, &format!("live QoS {}", p.qos));
    }
    a.disconnect().await;

    let (mut q, present) = RawClient::connect_ok(hub.addr(), persistent(V5, "props-q")).await;
    assert!(present);
    let got = recv_at_least(&mut q, 2).await;
    assert!(got.len() >= 2, "queued: {got:?}");
    for p in &got {
        check(p, &format!("queued QoS {}", p.qos));
    }
    q.disconnect().await;
    hub.finish();
}

/// Message Expiry (MQTT-3.3.2-5/6): messages for an offline session whose interval has
/// passed are not delivered; the others arrive with the interval reduced by the time they
/// waited. Retained messages follow the same rule, and a subscriber gets a retained message
/// with its Subscription Identifier (MQTT-3.3.4-3).
#[tokio::test]
async fn v5_publication_expiry_for_queued_and_retained_messages() {
    let hub = Hub::start();
    let (mut b, _) = RawClient::connect_ok(hub.addr(), persistent(V5, "expiry-b")).await;
    b.subscribe(TOPICS[0], 2).await;
    b.disconnect().await;

    let (mut a, _) = RawClient::connect_ok(hub.addr(), Connect::v5("expiry-a")).await;
    let expiry = |s| Props::new().u32(prop::MESSAGE_EXPIRY, s);
    a.publish(
        Pub::new(TOPICS[0], b"qos 1 - expire")
            .qos(1, 0)
            .props(expiry(1)),
    )
    .await;
    a.publish(
        Pub::new(TOPICS[0], b"qos 2 - expire")
            .qos(2, 0)
            .props(expiry(1)),
    )
    .await;
    a.publish(
        Pub::new(TOPICS[0], b"qos 1 - don't expire")
            .qos(1, 0)
            .props(expiry(60)),
    )
    .await;
    a.publish(
        Pub::new(TOPICS[0], b"qos 2 - don't expire")
            .qos(2, 0)
            .props(expiry(60)),
    )
    .await;
    a.publish(
        Pub::new(TOPICS[1], b"retained - expire")
            .qos(1, 0)
            .retain(true)
            .props(expiry(1)),
    )
    .await;
    a.publish(
        Pub::new(TOPICS[3], b"retained - don't expire")
            .qos(1, 0)
            .retain(true)
            .props(expiry(60)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (mut b, present) = RawClient::connect_ok(hub.addr(), persistent(V5, "expiry-b")).await;
    assert!(present);
    let got = recv_at_least(&mut b, 2).await;
    let payloads: Vec<&[u8]> = got.iter().map(|p| p.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        vec![&b"qos 1 - don't expire"[..], &b"qos 2 - don't expire"[..]]
    );
    for p in &got {
        let left = p
            .props
            .u32(prop::MESSAGE_EXPIRY)
            .expect("Message Expiry Interval forwarded");
        assert!(left < 60, "interval not reduced: {left}");
    }

    let sub_id = Props::new().varint(prop::SUBSCRIPTION_ID, 42);
    assert_eq!(
        b.subscribe_with(&[(WILD_TOPIC_A_PLUS, 1)], &sub_id).await,
        vec![1]
    );
    let got = recv_at_least(&mut b, 1).await;
    assert_eq!(got.len(), 1, "retained: {got:?}");
    assert_eq!(got[0].payload, b"retained - don't expire");
    assert!(got[0].retain);
    assert_eq!(got[0].props.subscription_ids(), vec![42]);
    let left = got[0]
        .props
        .u32(prop::MESSAGE_EXPIRY)
        .expect("retained expiry");
    assert!(left < 60, "retained interval not reduced: {left}");
    b.disconnect().await;
    a.disconnect().await;
    hub.finish();
}

/// The Paho subscribe-options flow (MQTT 5.0 §3.8.3.1): No Local (MQTT-3.8.3-3), Retain As
/// Published (MQTT-3.3.1-12/13), Retain Handling 1 (only for a new subscription), 2 (never)
/// and 0 (at every subscribe) (MQTT-3.3.1-9/10/11).
#[tokio::test]
async fn v5_subscribe_options_flow() {
    let hub = Hub::start();
    // No Local on both clients: only the other one gets the message.
    let (mut a, _) = RawClient::connect_ok(hub.addr(), Connect::v5("opts-a")).await;
    let (mut b, _) = RawClient::connect_ok(hub.addr(), Connect::v5("opts-b")).await;
    let nl = sub_opts(2, true, false, 0);
    assert_eq!(
        a.subscribe_with(&[(TOPICS[0], nl)], &Props::new()).await,
        vec![2]
    );
    assert_eq!(
        b.subscribe_with(&[(TOPICS[0], nl)], &Props::new()).await,
        vec![2]
    );
    a.publish(Pub::new(TOPICS[0], b"noLocal test").qos(1, 0))
        .await;
    assert_eq!(recv_exactly(&mut b, 1).await[0].payload, b"noLocal test");
    assert!(
        drain(&mut a).await.is_empty(),
        "No Local: own message came back"
    );
    a.disconnect().await;
    b.disconnect().await;

    // Retain As Published.
    let (mut a, _) = RawClient::connect_ok(hub.addr(), Connect::v5("opts-a")).await;
    let rap = sub_opts(2, false, true, 0);
    assert_eq!(
        a.subscribe_with(&[(TOPICS[0], rap)], &Props::new()).await,
        vec![2]
    );
    a.publish(Pub::new(TOPICS[0], b"retain as published false").qos(1, 0))
        .await;
    a.publish(
        Pub::new(TOPICS[0], b"retain as published true")
            .qos(1, 0)
            .retain(true),
    )
    .await;
    let got = recv_exactly(&mut a, 2).await;
    assert_eq!(
        got.iter().map(|p| p.retain).collect::<Vec<_>>(),
        vec![false, true]
    );
    a.publish(Pub::new(TOPICS[0], b"").qos(1, 0).retain(true))
        .await;
    drain(&mut a).await;
    a.disconnect().await;

    // Retain Handling.
    let (mut a, _) = RawClient::connect_ok(hub.addr(), Connect::v5("opts-a")).await;
    for (qos, topic) in [(0, TOPICS[1]), (1, TOPICS[2]), (2, TOPICS[3])] {
        a.publish(Pub::new(topic, b"r").qos(qos, 0).retain(true))
            .await;
    }
    let rh = |h| sub_opts(2, false, false, h);
    let qos_set = |msgs: &[Publish]| {
        let mut q: Vec<u8> = msgs.iter().map(|p| p.qos).collect();
        q.sort();
        q
    };
    a.subscribe_with(&[(WILD_PLUS_PLUS, rh(1))], &Props::new())
        .await;
    assert_eq!(
        qos_set(&recv_at_least(&mut a, 3).await),
        vec![0, 1, 2],
        "RH 1, new"
    );
    a.subscribe_with(&[(WILD_PLUS_PLUS, rh(1))], &Props::new())
        .await;
    assert!(
        drain(&mut a).await.is_empty(),
        "RH 1, existing subscription"
    );
    a.disconnect().await;

    let (mut a, _) = RawClient::connect_ok(hub.addr(), Connect::v5("opts-a")).await;
    a.subscribe_with(&[(WILD_PLUS_PLUS, rh(2))], &Props::new())
        .await;
    assert!(drain(&mut a).await.is_empty(), "RH 2, new");
    a.subscribe_with(&[(WILD_PLUS_PLUS, rh(2))], &Props::new())
        .await;
    assert!(drain(&mut a).await.is_empty(), "RH 2, existing");
    a.disconnect().await;

    let (mut a, _) = RawClient::connect_ok(hub.addr(), Connect::v5("opts-a")).await;
    a.subscribe_with(&[(WILD_PLUS_PLUS, rh(0))], &Props::new())
        .await;
    let got = recv_at_least(&mut a, 3).await;
    assert_eq!(qos_set(&got), vec![0, 1, 2], "RH 0, new");
    // Sent because of a subscription: RETAIN = 1 even without Retain As Published
    // (MQTT-3.3.1-9 with §3.3.1.3).
    assert!(got.iter().all(|p| p.retain), "{got:?}");
    a.subscribe_with(&[(WILD_PLUS_PLUS, rh(0))], &Props::new())
        .await;
    assert_eq!(
        qos_set(&recv_at_least(&mut a, 3).await),
        vec![0, 1, 2],
        "RH 0, existing"
    );
    a.disconnect().await;
    hub.finish();
}

/// The hub never sends a packet larger than the client's Maximum Packet Size
/// (MQTT-3.1.2-24): a message that does not fit is dropped for that client (MQTT-3.1.2-25),
/// live, retained or queued, and the ones after it still flow — a dropped QoS 1 message does
/// not hold a Receive Maximum slot.
#[tokio::test]
async fn v5_maximum_packet_size_drops_without_blocking() {
    let hub = Hub::start();
    let limit = 128u32;
    let small_conn = || {
        Connect::v5("mps").clean(false).props(
            Props::new()
                .u32(prop::SESSION_EXPIRY, 300)
                .u32(prop::MAXIMUM_PACKET_SIZE, limit)
                .u16(prop::RECEIVE_MAXIMUM, 1),
        )
    };
    let big = vec![b'x'; 400];
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("mps-pub")).await;
    p.publish(Pub::new("mps/retained", &big).qos(1, 0).retain(true))
        .await;

    let (mut c, _) = RawClient::connect_ok(hub.addr(), small_conn()).await;
    c.subscribe("mps/#", 1).await;
    // Only a retained message that fits may arrive: none does.
    assert!(
        drain(&mut c).await.is_empty(),
        "retained message over the limit sent"
    );
    for payload in [&big[..], b"small 1", &big[..], b"small 2"] {
        p.publish(Pub::new("mps/live", payload).qos(1, 0)).await;
    }
    let got = recv_at_least(&mut c, 2).await;
    let payloads: Vec<&[u8]> = got.iter().map(|p| p.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"small 1"[..], &b"small 2"[..]]);
    c.disconnect().await;

    // Queued for the offline session.
    p.publish(Pub::new("mps/q", &big).qos(1, 0)).await;
    p.publish(Pub::new("mps/q", b"small 3").qos(1, 0)).await;
    let (mut c, present) = RawClient::connect_ok(hub.addr(), small_conn()).await;
    assert!(present);
    let got = recv_at_least(&mut c, 1).await;
    let payloads: Vec<&[u8]> = got.iter().map(|p| p.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"small 3"[..]]);
    c.disconnect().await;
    p.disconnect().await;
    hub.finish();
}

/// Receive Maximum counts a QoS 2 delivery until its PUBCOMP, not its PUBREC (MQTT-3.3.4-9,
/// §4.9): with Receive Maximum 1 the next PUBLISH waits for the PUBCOMP.
#[tokio::test]
async fn v5_receive_maximum_holds_qos2_until_pubcomp() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("rm-q2").props(Props::new().u16(prop::RECEIVE_MAXIMUM, 1)),
    )
    .await;
    c.subscribe("rm/q2", 2).await;
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rm-q2-pub")).await;
    for n in [b"1", b"2"] {
        p.publish(Pub::new("rm/q2", n).qos(2, 0)).await;
    }
    let first = c.recv_publish().await;
    assert_eq!(first.payload, b"1");
    c.expect_no_publish(QUIET).await;
    c.send(&ack_packet(0x50, first.pid)).await;
    c.expect_ack(PUBREL, first.pid).await;
    c.expect_no_publish(QUIET).await;
    c.send(&ack_packet(0x70, first.pid)).await;
    let second = c.recv_publish_acked().await;
    assert_eq!(second.payload, b"2");
    c.disconnect().await;
    p.disconnect().await;
    hub.finish();
}

/// 3.1.1 and 5.0 zero-length client ids: 3.1.1 with clean session 0 is refused with CONNACK
/// 0x02 (MQTT-3.1.3-8); 5.0 with clean start 0 either gets an assigned identifier
/// (MQTT-3.1.3-6, MQTT-3.2.2-16) or CONNACK 0x85 Client Identifier not valid (MQTT-3.1.3-8).
#[tokio::test]
async fn zero_length_client_id_with_persistent_session() {
    let hub = Hub::start();
    let (mut c, ack) = RawClient::connect(hub.addr(), Connect::v4("").clean(false)).await;
    assert!(
        matches!(
            ack,
            Incoming::ConnAck {
                code: 0x02,
                session_present: false,
                ..
            }
        ),
        "{ack:?}"
    );
    c.expect_closed(RECV_TIMEOUT).await;
    let (c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("")).await;
    c.disconnect().await;

    let (c, ack) = RawClient::connect(hub.addr(), Connect::v5("").clean(false)).await;
    match ack {
        Incoming::ConnAck { code: 0, props, .. } => {
            assert!(
                props
                    .str(prop::ASSIGNED_CLIENT_ID)
                    .is_some_and(|id| !id.is_empty()),
                "no Assigned Client Identifier: {props:?}"
            );
            c.disconnect().await;
        }
        Incoming::ConnAck { code: 0x85, .. } => {}
        other => panic!("v5 empty client id, clean start 0: {other:?}"),
    }
    hub.finish();
}

/// A will with a delay is published when the session ends before the delay, and a new
/// connection with Clean Start = 1 ends the old session (MQTT 5.0 §3.1.2.5, §3.1.3.2.2).
#[tokio::test]
async fn v5_clean_start_reconnect_ends_session_and_sends_delayed_will() {
    let hub = Hub::start();
    let (mut w, _) = RawClient::connect_ok(hub.addr(), Connect::v5("wd-watch")).await;
    w.subscribe("wd/will", 1).await;
    let will = Will {
        props: Props::new().u32(prop::WILL_DELAY, 60),
        ..Will::new("wd/will", b"gone")
    };
    let (c, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("wd-client").session_expiry(300).will(will),
    )
    .await;
    c.drop_connection().await;
    w.expect_no_publish(QUIET).await;
    let (c, present) = RawClient::connect_ok(hub.addr(), Connect::v5("wd-client")).await;
    assert!(!present);
    let p = w.recv_publish_acked().await;
    assert_eq!(p.payload, b"gone");
    c.disconnect().await;
    w.disconnect().await;
    hub.finish();
}

/// Shared subscriptions (MQTT 5.0 §4.8.2) from 3.1.1 and 5.0 clients alike: each message
/// goes to exactly one member, at min(publish QoS, that member's QoS) (MQTT-4.8.2-3 with
/// §4.3), and a member's ordinary subscription to the same topic (a separate subscription)
/// still gets every message, told apart by Subscription Identifiers.
#[tokio::test]
async fn shared_subscription_members_of_both_versions() {
    let hub = Hub::start();
    let (mut m4, _) = RawClient::connect_ok(hub.addr(), Connect::v4("share-4")).await;
    let (mut m5, _) = RawClient::connect_ok(hub.addr(), Connect::v5("share-5")).await;
    m4.subscribe("$share/g/sh/t", 1).await;
    let id = |n| Props::new().varint(prop::SUBSCRIPTION_ID, n);
    assert_eq!(
        m5.subscribe_with(&[("$share/g/sh/t", 2)], &id(1)).await,
        vec![2]
    );
    assert_eq!(m5.subscribe_with(&[("sh/t", 2)], &id(2)).await, vec![2]);
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("share-pub")).await;
    for n in 0..6u8 {
        p.publish(Pub::new("sh/t", &[n]).qos(2, 0)).await;
    }
    // The plain subscription guarantees six messages to m5; m4's share is buffered meanwhile.
    let got5 = recv_at_least(&mut m5, 6).await;
    let got4 = drain(&mut m4).await;
    assert!(
        got4.iter().all(|p| p.qos == 1),
        "3.1.1 member at QoS 1: {got4:?}"
    );
    assert!(
        got5.iter().all(|p| p.qos == 2),
        "5.0 member at QoS 2: {got5:?}"
    );
    let shared5 = got5
        .iter()
        .filter(|p| p.props.subscription_ids().contains(&1));
    let plain5 = got5
        .iter()
        .filter(|p| p.props.subscription_ids().contains(&2));
    let mut shared: Vec<u8> = got4.iter().chain(shared5).map(|p| p.payload[0]).collect();
    shared.sort();
    assert_eq!(
        shared,
        (0..6).collect::<Vec<_>>(),
        "each message to exactly one member"
    );
    let mut plain: Vec<u8> = plain5.map(|p| p.payload[0]).collect();
    plain.sort();
    assert_eq!(
        plain,
        (0..6).collect::<Vec<_>>(),
        "the plain subscription gets every message"
    );
    p.disconnect().await;
    m4.disconnect().await;
    m5.disconnect().await;
    hub.finish();
}

/// A session's expiry and will-delay timers belong to that session only: after it ends
/// (expiry 0 at DISCONNECT), a new session under the same client id keeps its own Session
/// Expiry Interval (§3.1.2.11.2) and Will Delay Interval (§3.1.3.2.2), whatever timers the
/// old one left running.
#[tokio::test]
async fn v5_timers_of_an_ended_session_do_not_touch_its_successor() {
    let hub = Hub::start();
    let (mut w, _) = RawClient::connect_ok(hub.addr(), Connect::v5("stale-watch")).await;
    w.subscribe("stale/will", 1).await;
    let will = |delay| Will {
        props: Props::new().u32(prop::WILL_DELAY, delay),
        ..Will::new("stale/will", format!("delay {delay}").as_bytes())
    };
    // Old session: expiry 2 s, will delay 2 s; dropped, so both timers start.
    let (c, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("stale").session_expiry(2).will(will(2)),
    )
    .await;
    c.drop_connection().await;
    // Resumed (cancelling the will), then ended by DISCONNECT with expiry 0.
    let (mut c, present) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("stale").clean(false).session_expiry(2),
    )
    .await;
    assert!(present);
    c.send(&disconnect_v5(
        0,
        &Props::new().u32(prop::SESSION_EXPIRY, 0),
    ))
    .await;
    c.expect_closed(RECV_TIMEOUT).await;
    // New session: expiry 60 s, will delay 60 s, dropped.
    let (c, present) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("stale").session_expiry(60).will(will(60)),
    )
    .await;
    assert!(!present);
    c.drop_connection().await;
    // Past the old timers' deadlines: no will, and the session is still there.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    w.expect_no_publish(QUIET).await;
    let (c, present) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("stale").clean(false).session_expiry(60),
    )
    .await;
    assert!(
        present,
        "the new session was ended by the old session's expiry timer"
    );
    c.disconnect().await;
    w.expect_no_publish(QUIET).await;
    w.disconnect().await;
    hub.finish();
}

/// The client's Maximum Packet Size bounds every packet, not only PUBLISH: the hub leaves
/// out the Reason String rather than exceed it (MQTT-3.1.2-25; MQTT-3.4.2-2 for PUBACK,
/// MQTT-3.14.2-3 for DISCONNECT), and still sends the packet itself.
#[tokio::test]
async fn v5_small_maximum_packet_size_strips_reason_strings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite #\ntopic deny denied/#\n").expect("write ACL");
    let hub = Hub::with_config(&format!(
        "[[listener]]\nallow_anonymous = true\nacl_file = \"{}\"\n",
        acl.display()
    ));
    let limit = 16;
    let connect = Connect::v5("mps-ack").props(Props::new().u32(prop::MAXIMUM_PACKET_SIZE, limit));
    let props_size = |props: &Properties| props.0.iter().map(|(_, v)| prop_len(v)).sum::<usize>();

    // A refused QoS 1 PUBLISH: PUBACK 0x87, whose usual Reason String does not fit.
    let (mut c, _) = RawClient::connect_ok(hub.addr(), connect.clone()).await;
    let pid = c.pid();
    c.send(&Pub::new("denied/x", b"p").qos(1, pid).encode(V5))
        .await;
    let (reason, props) = c
        .recv_matching("PUBACK", |p| match p {
            Incoming::Ack {
                kind: PUBACK,
                pid: got,
                reason,
                props,
            } if *got == pid => Some((*reason, props.clone())),
            _ => None,
        })
        .await;
    assert_eq!(reason, 0x87);
    // Fixed header 2 + packet id 2 + reason 1 + property length 1.
    let size = 6 + props_size(&props);
    assert!(size <= 16, "PUBACK of {size} bytes: {props:?}");

    // A protocol error the hub answers with DISCONNECT (or a SUBACK failure code).
    let pid = c.pid();
    c.send(&subscribe_packet(
        V5,
        pid,
        &[("bad/#/filter", 1)],
        &Props::new(),
    ))
    .await;
    match c.recv().await {
        Incoming::SubAck { codes, props, .. } => {
            assert!(codes.iter().all(|c| *c >= 0x80), "{codes:?}");
            let size = 6 + props_size(&props);
            assert!(size <= 16, "SUBACK of {size} bytes: {props:?}");
        }
        Incoming::Disconnect { reason, props } => {
            assert!(reason >= 0x80, "DISCONNECT {reason:#04x}");
            // Fixed header 2 + reason 1 + property length 1.
            let size = 4 + props_size(&props);
            assert!(size <= 16, "DISCONNECT of {size} bytes: {props:?}");
        }
        other => panic!("expected SUBACK or DISCONNECT, got {other:?}"),
    }
    hub.finish();
}

/// Encoded size of one property (identifier byte plus value).
fn prop_len(v: &PropValue) -> usize {
    1 + match v {
        PropValue::Byte(_) => 1,
        PropValue::U16(_) => 2,
        PropValue::U32(_) => 4,
        PropValue::Varint(n) => match n {
            0..=127 => 1,
            128..=16_383 => 2,
            16_384..=2_097_151 => 3,
            _ => 4,
        },
        PropValue::Str(s) => 2 + s.len(),
        PropValue::Bin(b) => 2 + b.len(),
        PropValue::Pair(k, v) => 4 + k.len() + v.len(),
    }
}

/// Resolves hub → client topic aliases within one connection, failing on an alias used
/// before this connection set it.
#[derive(Default)]
struct AliasMap(std::collections::HashMap<u32, String>);

impl AliasMap {
    fn resolve(&mut self, p: &Publish) -> String {
        match p.props.u32(prop::TOPIC_ALIAS) {
            Some(alias) if p.topic.is_empty() => self.0.get(&alias).cloned().unwrap_or_else(|| {
                panic!("alias {alias} used before this connection set it: {p:?}")
            }),
            Some(alias) => {
                self.0.insert(alias, p.topic.clone());
                p.topic.clone()
            }
            None => p.topic.clone(),
        }
    }
}

/// Topic alias mappings live only as long as the network connection (MQTT-3.3.2-7,
/// §3.3.2.3.4): after a reconnection the hub does not use an alias of the previous connection
/// towards the client, and a client using one gets DISCONNECT 0x82 Protocol Error.
#[tokio::test]
async fn v5_topic_aliases_do_not_survive_reconnection() {
    let hub = Hub::start();
    let connect = || {
        Connect::v5("alias-re").clean(false).props(
            Props::new()
                .u32(prop::SESSION_EXPIRY, 300)
                .u16(prop::TOPIC_ALIAS_MAXIMUM, 4),
        )
    };
    let (mut c, _) = RawClient::connect_ok(hub.addr(), connect()).await;
    c.subscribe("alias/re", 1).await;
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("alias-re-pub")).await;
    for n in 0..3u8 {
        p.publish(Pub::new("alias/re", &[n]).qos(1, 0)).await;
    }
    let mut aliases = AliasMap::default();
    for n in 0..3u8 {
        let m = c.recv_publish_acked().await;
        assert_eq!(
            (aliases.resolve(&m), m.payload),
            ("alias/re".to_owned(), vec![n])
        );
    }
    // The client sets its own alias 1 on this connection.
    let set = Props::new().u16(prop::TOPIC_ALIAS, 1);
    c.publish(Pub::new("alias/own", b"x").qos(1, 0).props(set.clone()))
        .await;
    c.disconnect().await;

    // Queued while offline, delivered on the new connection: full topic name first.
    for n in 3..6u8 {
        p.publish(Pub::new("alias/re", &[n]).qos(1, 0)).await;
    }
    let (mut c, present) = RawClient::connect_ok(hub.addr(), connect()).await;
    assert!(present);
    let mut aliases = AliasMap::default();
    for n in 3..6u8 {
        let m = c.recv_publish_acked().await;
        assert_eq!(
            (aliases.resolve(&m), m.payload),
            ("alias/re".to_owned(), vec![n])
        );
    }
    // The client's alias 1 from the previous connection is unknown now.
    let pid = c.pid();
    c.send(&Pub::new("", b"y").qos(1, pid).props(set).encode(V5))
        .await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(got.as_slice(), [Incoming::Disconnect { reason: 0x82, .. }]),
        "stale client alias: {got:?}"
    );
    p.disconnect().await;
    hub.finish();
}

/// Re-subscribing replaces the subscription, Subscription Identifier included
/// (MQTT-3.8.4-3, §3.8.2.1.2): without one, later messages carry none. A Subscription
/// Identifier of 0 is a Protocol Error (§3.8.2.1.2).
#[tokio::test]
async fn v5_resubscribe_replaces_subscription_identifier() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("subid-re")).await;
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("subid-re-pub")).await;
    let id = |n| Props::new().varint(prop::SUBSCRIPTION_ID, n);
    assert_eq!(c.subscribe_with(&[("subid/t", 1)], &id(5)).await, vec![1]);
    p.publish(Pub::new("subid/t", b"1").qos(1, 0)).await;
    assert_eq!(
        c.recv_publish_acked().await.props.subscription_ids(),
        vec![5]
    );
    assert_eq!(c.subscribe_with(&[("subid/t", 1)], &id(9)).await, vec![1]);
    p.publish(Pub::new("subid/t", b"2").qos(1, 0)).await;
    assert_eq!(
        c.recv_publish_acked().await.props.subscription_ids(),
        vec![9]
    );
    assert_eq!(
        c.subscribe_with(&[("subid/t", 1)], &Props::new()).await,
        vec![1]
    );
    p.publish(Pub::new("subid/t", b"3").qos(1, 0)).await;
    let m = c.recv_publish_acked().await;
    assert_eq!(m.payload, b"3");
    assert_eq!(m.props.subscription_ids(), Vec::<u32>::new());
    assert!(drain(&mut c).await.is_empty());

    let pid = c.pid();
    c.send(&subscribe_packet(V5, pid, &[("subid/zero", 1)], &id(0)))
        .await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(
            got.as_slice(),
            [Incoming::Disconnect {
                reason: 0x81 | 0x82,
                ..
            }]
        ),
        "Subscription Identifier 0: {got:?}"
    );
    p.disconnect().await;
    hub.finish();
}

/// No Local applies per subscription (MQTT-3.8.3-3): a client's own message still reaches it
/// through an overlapping subscription without No Local.
#[tokio::test]
async fn v5_no_local_is_per_subscription() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("nl-overlap")).await;
    let id = |n| Props::new().varint(prop::SUBSCRIPTION_ID, n);
    let no_local = sub_opts(1, true, false, 0);
    assert_eq!(
        c.subscribe_with(&[("nl/#", no_local)], &id(1)).await,
        vec![1]
    );
    assert_eq!(c.subscribe_with(&[("nl/x", 1)], &id(2)).await, vec![1]);
    c.publish(Pub::new("nl/x", b"own").qos(1, 0)).await;
    c.publish(Pub::new("nl/y", b"own, no-local only").qos(1, 0))
        .await;
    let got = recv_at_least(&mut c, 1).await;
    assert!(
        !got.is_empty(),
        "own message lost despite a subscription without No Local"
    );
    for m in &got {
        assert_eq!(m.payload, b"own", "No Local subscription delivered: {m:?}");
        assert!(
            m.props.subscription_ids().contains(&2),
            "copy not attributed to the subscription without No Local: {m:?}"
        );
    }
    c.disconnect().await;
    hub.finish();
}

/// Order across a reconnection (MQTT-4.6.0-1, MQTT-4.4.0-1): the unacknowledged messages of
/// the previous connection are re-sent first, in their original order, then the messages
/// queued while offline, in publish order — for 3.1.1 and 5.0.
#[tokio::test]
async fn inflight_resent_before_queued_in_order() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let id = format!("order-{level}");
        let (mut c, _) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        c.subscribe("order/t", 1).await;
        let (mut p, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("order-pub-{level}"))).await;
        for n in 0..2u8 {
            p.publish(Pub::new("order/t", &[n]).qos(1, 0)).await;
        }
        // Received, never acknowledged.
        for n in 0..2u8 {
            assert_eq!(c.recv_publish().await.payload, vec![n]);
        }
        c.disconnect().await;
        for n in 2..5u8 {
            p.publish(Pub::new("order/t", &[n]).qos(1, 0)).await;
        }
        let (mut c, present) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        assert!(present);
        let got = recv_exactly(&mut c, 5).await;
        let payloads: Vec<u8> = got.iter().map(|m| m.payload[0]).collect();
        assert_eq!(payloads, vec![0, 1, 2, 3, 4], "v{level}");
        assert!(got[0].dup && got[1].dup, "v{level}: re-sent without DUP");
        assert!(
            got[2..].iter().all(|m| !m.dup),
            "v{level}: first delivery with DUP"
        );
        c.disconnect().await;
        p.disconnect().await;
    }
    hub.finish();
}

/// Request Problem Information = 0: the hub sends no Reason String on any packet other than
/// PUBLISH, CONNACK or DISCONNECT (MQTT-3.1.2-29) — here a PUBACK and a PUBREC refusing a
/// publish — while a client that did not ask gets one.
#[tokio::test]
async fn v5_request_problem_information_zero_suppresses_ack_reason_strings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite #\ntopic deny denied/#\n").expect("write ACL");
    let hub = Hub::with_config(&format!(
        "[[listener]]\nallow_anonymous = true\nacl_file = \"{}\"\n",
        acl.display()
    ));
    for problem_info in [None, Some(0)] {
        let mut props = Props::new();
        if let Some(v) = problem_info {
            props = props.byte(prop::REQUEST_PROBLEM_INFO, v);
        }
        let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rpi").props(props)).await;
        for (qos, kind) in [(1, PUBACK), (2, PUBREC)] {
            let pid = c.pid();
            c.send(&Pub::new("denied/x", b"p").qos(qos, pid).encode(V5))
                .await;
            let (reason, props) = c
                .recv_matching("publish acknowledgement", |p| match p {
                    Incoming::Ack {
                        kind: k,
                        pid: got,
                        reason,
                        props,
                    } if *k == kind && *got == pid => Some((*reason, props.clone())),
                    _ => None,
                })
                .await;
            assert!(reason >= 0x80, "refusal expected, got {reason:#04x}");
            if problem_info == Some(0) {
                assert_eq!(
                    props.get(prop::REASON_STRING),
                    None,
                    "QoS {qos}: Reason String despite Request Problem Information = 0"
                );
                assert!(props.user().is_empty(), "QoS {qos}: {props:?}");
            }
        }
        c.disconnect().await;
    }
    hub.finish();
}

/// Message expiry also applies while a message waits behind a full Receive Maximum window
/// of a connected client (MQTT-3.3.2-5): once its interval has passed it is not sent.
#[tokio::test]
async fn v5_message_expires_while_waiting_for_the_window() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("exp-window").props(Props::new().u16(prop::RECEIVE_MAXIMUM, 1)),
    )
    .await;
    c.subscribe("expw/t", 1).await;
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("exp-window-pub")).await;
    p.publish(Pub::new("expw/t", b"first").qos(1, 0)).await;
    let first = c.recv_publish().await;
    assert_eq!(first.payload, b"first");
    let expiry = Props::new().u32(prop::MESSAGE_EXPIRY, 1);
    p.publish(Pub::new("expw/t", b"expires").qos(1, 0).props(expiry))
        .await;
    p.publish(Pub::new("expw/t", b"last").qos(1, 0)).await;
    c.expect_no_publish(QUIET).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    c.send(&ack_packet(0x40, first.pid)).await;
    let got = recv_at_least(&mut c, 1).await;
    let payloads: Vec<&[u8]> = got.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"last"[..]]);
    p.disconnect().await;
    c.disconnect().await;
    hub.finish();
}

/// An assigned client identifier names a real session (MQTT-3.2.2-16): a client that
/// connected with an empty id and a Session Expiry Interval can resume that session with
/// the identifier from the CONNACK.
#[tokio::test]
async fn v5_assigned_client_id_session_can_be_resumed() {
    let hub = Hub::start();
    let (mut c, ack) = RawClient::connect(hub.addr(), Connect::v5("").session_expiry(300)).await;
    let Incoming::ConnAck { code: 0, props, .. } = ack else {
        panic!("refused: {ack:?}")
    };
    let id = props
        .str(prop::ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier")
        .to_owned();
    c.subscribe("assigned/t", 1).await;
    c.disconnect().await;
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("assigned-pub")).await;
    p.publish(Pub::new("assigned/t", b"kept").qos(1, 0)).await;
    let (mut c, present) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5(&id).clean(false).session_expiry(300),
    )
    .await;
    assert!(present, "session of assigned id {id} not present");
    assert_eq!(c.recv_publish_acked().await.payload, b"kept");
    c.disconnect().await;
    p.disconnect().await;
    hub.finish();
}

/// Shared subscriptions are unsubscribed by their full `$share/{group}/{filter}` name:
/// UNSUBACK 0x00 the first time, 0x11 No subscription existed the second (§3.11.3), and
/// delivery to that member stops.
#[tokio::test]
async fn v5_unsubscribe_shared_subscription() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("unshare")).await;
    c.subscribe("$share/g/unshare/t", 1).await;
    assert_eq!(c.unsubscribe("unshare/t").await, vec![0x11], "plain filter");
    assert_eq!(c.unsubscribe("$share/g/unshare/t").await, vec![0x00]);
    assert_eq!(c.unsubscribe("$share/g/unshare/t").await, vec![0x11]);
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("unshare-pub")).await;
    p.publish(Pub::new("unshare/t", b"x").qos(1, 0)).await;
    assert!(drain(&mut c).await.is_empty());
    p.disconnect().await;
    c.disconnect().await;
    hub.finish();
}

/// Session takeover with Clean Start 0 (MQTT-3.1.4-3, MQTT-4.4.0-1): the old connection is
/// closed (5.0: DISCONNECT 0x8E Session taken over), and its unacknowledged deliveries are
/// re-sent on the new one with DUP = 1 and their packet ids, once each.
#[tokio::test]
async fn takeover_resends_unacknowledged_deliveries() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let id = format!("takeover-{level}");
        let (mut old, _) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        old.subscribe("takeover/t", 2).await;
        let (mut p, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("takeover-pub-{level}"))).await;
        p.publish(Pub::new("takeover/t", b"q1").qos(1, 0)).await;
        p.publish(Pub::new("takeover/t", b"q2").qos(2, 0)).await;
        let first = [old.recv_publish().await, old.recv_publish().await];

        let (mut new, present) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        assert!(present, "v{level}: session not present after takeover");
        let got = old.expect_closed(RECV_TIMEOUT).await;
        let ok = match got.as_slice() {
            [] => level == V311,
            [Incoming::Disconnect { reason, .. }] => level == V5 && *reason == 0x8E,
            _ => false,
        };
        assert!(ok, "v{level}: old connection got {got:?}");
        let again = [
            new.recv_publish_acked().await,
            new.recv_publish_acked().await,
        ];
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(
                (&b.payload, b.qos, b.pid),
                (&a.payload, a.qos, a.pid),
                "v{level}"
            );
            assert!(b.dup, "v{level}: re-sent without DUP: {b:?}");
        }
        assert!(drain(&mut new).await.is_empty(), "v{level}: duplicates");
        new.disconnect().await;
        p.disconnect().await;
    }
    hub.finish();
}

/// A client may re-map one of its topic aliases by sending it with a new topic name
/// (§3.3.2.3.4): later PUBLISHes with an empty topic use the newest mapping.
#[tokio::test]
async fn v5_inbound_topic_alias_can_be_remapped() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("remap-sub")).await;
    sub.subscribe("remap/#", 1).await;
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("remap-pub")).await;
    let alias = || Props::new().u16(prop::TOPIC_ALIAS, 1);
    for (topic, payload) in [("remap/one", "1"), ("", "2"), ("remap/two", "3"), ("", "4")] {
        c.publish(Pub::new(topic, payload.as_bytes()).qos(1, 0).props(alias()))
            .await;
    }
    let got: Vec<(String, Vec<u8>)> = recv_exactly(&mut sub, 4)
        .await
        .into_iter()
        .map(|m| (m.topic, m.payload))
        .collect();
    let want: Vec<(String, Vec<u8>)> = [
        ("remap/one", "1"),
        ("remap/one", "2"),
        ("remap/two", "3"),
        ("remap/two", "4"),
    ]
    .iter()
    .map(|(t, p)| ((*t).to_owned(), p.as_bytes().to_vec()))
    .collect();
    assert_eq!(got, want);
    c.disconnect().await;
    sub.disconnect().await;
    hub.finish();
}

/// The largest Subscription Identifier, 268,435,455 (§3.8.2.1.2), comes back unchanged.
#[tokio::test]
async fn v5_largest_subscription_identifier_round_trips() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("subid-max")).await;
    let max = 268_435_455;
    let id = Props::new().varint(prop::SUBSCRIPTION_ID, max);
    assert_eq!(c.subscribe_with(&[("subid/max", 1)], &id).await, vec![1]);
    c.publish(Pub::new("subid/max", b"m").qos(1, 0)).await;
    assert_eq!(
        c.recv_publish_acked().await.props.subscription_ids(),
        vec![max]
    );
    c.disconnect().await;
    hub.finish();
}

/// The Paho suites' wildcard filters against their topic names (MQTT 4.7.1): `+` matches
/// one whole level, including an empty one; `#` matches the parent level and everything
/// below. Each filter carries its own Subscription Identifier, so the identifiers a message
/// arrives with say exactly which filters matched it (MQTT-3.3.4-3/4/5).
#[tokio::test]
async fn v5_paho_wildcard_matrix() {
    let hub = Hub::start();
    let filters = ["TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#"];
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("matrix")).await;
    for (n, f) in (1u32..).zip(filters) {
        let id = Props::new().varint(prop::SUBSCRIPTION_ID, n);
        assert_eq!(c.subscribe_with(&[(f, 0)], &id).await, vec![0], "{f}");
    }
    let expected: [(&str, &[u32]); 5] = [
        ("TopicA", &[3, 7]),
        ("TopicA/B", &[1, 3, 6, 7]),
        ("Topic/C", &[2, 3, 6]),
        ("TopicA/C", &[1, 2, 3, 6, 7]),
        ("/TopicA", &[3, 4, 5, 6]),
    ];
    for (topic, want) in expected {
        c.publish(Pub::new(topic, b"m")).await;
        let mut ids: Vec<u32> = recv_at_least(&mut c, 1)
            .await
            .iter()
            .inspect(|m| assert_eq!(m.topic, topic))
            .flat_map(|m| m.props.subscription_ids())
            .collect();
        ids.sort();
        assert_eq!(ids, want, "filters matching {topic:?}");
    }
    c.disconnect().await;
    hub.finish();
}

/// DISCONNECT with reason 0x04 (Disconnect with Will Message) still honours the Will Delay
/// Interval (§3.1.3.2.2): the will is not published at once but after the delay.
#[tokio::test]
async fn v5_disconnect_with_will_honours_will_delay() {
    let hub = Hub::start();
    let (mut w, _) = RawClient::connect_ok(hub.addr(), Connect::v5("wd04-watch")).await;
    w.subscribe("wd04/will", 1).await;
    let will = Will {
        props: Props::new().u32(prop::WILL_DELAY, 2),
        ..Will::new("wd04/will", b"late")
    };
    let (mut c, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("wd04").session_expiry(60).will(will),
    )
    .await;
    c.send(&disconnect_v5(0x04, &Props::new())).await;
    c.expect_closed(RECV_TIMEOUT).await;
    w.expect_no_publish(QUIET).await;
    let p = w.recv_publish_acked().await;
    assert_eq!(p.payload, b"late");
    w.disconnect().await;
    hub.finish();
}

/// A persistent session keeps its subscriptions with all their options — QoS, No Local,
/// Retain As Published, Subscription Identifier (MQTT-3.1.2-4/5 with §3.8.3.1, §3.8.2.1.2)
/// — across a reconnection and across a restart of the hub.
#[tokio::test]
async fn v5_subscription_options_survive_reconnect_and_restart() {
    let mut hub = Hub::start();
    let connect = || persistent(V5, "opts-keep");
    let (mut c, _) = RawClient::connect_ok(hub.addr(), connect()).await;
    let id = Props::new().varint(prop::SUBSCRIPTION_ID, 7);
    let opts = sub_opts(1, true, true, 0);
    assert_eq!(c.subscribe_with(&[("keep/#", opts)], &id).await, vec![1]);
    c.disconnect().await;

    for round in ["reconnect", "restart"] {
        if round == "restart" {
            hub.stop();
            hub.restart();
        }
        let (mut c, present) = RawClient::connect_ok(hub.addr(), connect()).await;
        assert!(present, "{round}: session not present");
        // No Local: its own message does not come back.
        c.publish(Pub::new("keep/own", b"own").qos(1, 0)).await;
        // Retain As Published and the identifier, at the subscription's QoS.
        let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("opts-keep-pub")).await;
        p.publish(Pub::new("keep/other", b"r").qos(2, 0).retain(true))
            .await;
        let got = recv_at_least(&mut c, 1).await;
        assert_eq!(got.len(), 1, "{round}: {got:?}");
        let m = &got[0];
        assert_eq!(m.payload, b"r", "{round}: No Local lost: {got:?}");
        assert!(m.retain, "{round}: Retain As Published lost");
        assert_eq!(m.qos, 1, "{round}: subscription QoS lost");
        assert_eq!(
            m.props.subscription_ids(),
            vec![7],
            "{round}: identifier lost"
        );
        p.publish(Pub::new("keep/other", b"").qos(1, 0).retain(true))
            .await;
        drain(&mut c).await;
        p.disconnect().await;
        c.disconnect().await;
    }
    hub.finish();
}

/// Exactly once across a reconnection (MQTT-4.3.3-2 and §4.3.3 method B): a QoS 2 PUBLISH
/// re-sent with DUP = 1 on the new connection before PUBREL is acknowledged again but not
/// delivered again; its PUBREL then completes it.
#[tokio::test]
async fn qos2_publish_resent_after_reconnect_delivered_once() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let (mut sub, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("eo-sub-{level}"))).await;
        sub.subscribe("eo/t", 2).await;
        let id = format!("eo-pub-{level}");
        let (mut c, _) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        let publish = Pub::new("eo/t", b"once").qos(2, 7);
        c.send(&publish.encode(level)).await;
        assert!(c.expect_ack(PUBREC, 7).await < 0x80);
        c.drop_connection().await;

        let (mut c, present) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        assert!(present);
        let mut again = publish.clone();
        again.dup = true;
        c.send(&again.encode(level)).await;
        assert!(
            c.expect_ack(PUBREC, 7).await < 0x80,
            "v{level}: PUBREC for the re-send"
        );
        c.send(&ack_packet(0x62, 7)).await;
        assert_eq!(c.expect_ack(PUBCOMP, 7).await, 0, "v{level}: PUBCOMP");
        let got = recv_at_least(&mut sub, 1).await;
        assert_eq!(got.len(), 1, "v{level}: delivered {} times", got.len());
        c.disconnect().await;
        sub.disconnect().await;
    }
    hub.finish();
}

/// A retained PUBLISH with an empty payload clears the retained message but is still
/// forwarded to current subscribers like any other message (MQTT-3.3.1-10 with §3.3.1.3),
/// with RETAIN = 0 unless the subscription asked for Retain As Published (MQTT-3.3.1-12/13).
#[tokio::test]
async fn empty_retained_publish_is_forwarded_to_current_subscribers() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let (mut s, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("clear-sub-{level}"))).await;
        s.subscribe("clear/t", 1).await;
        let (mut p, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("clear-pub-{level}"))).await;
        p.publish(Pub::new("clear/t", b"kept").qos(1, 0).retain(true))
            .await;
        p.publish(Pub::new("clear/t", b"").qos(1, 0).retain(true))
            .await;
        let got = recv_at_least(&mut s, 2).await;
        let seen: Vec<(&[u8], bool)> = got
            .iter()
            .map(|m| (m.payload.as_slice(), m.retain))
            .collect();
        assert_eq!(
            seen,
            vec![(&b"kept"[..], false), (&b""[..], false)],
            "v{level}"
        );
        s.disconnect().await;
        p.disconnect().await;
    }
    hub.finish();
}

/// A v5 will carries its properties through (MQTT-3.1.3-10 with §3.1.3.2): Payload Format
/// Indicator, Content Type, Response Topic, Correlation Data, and its Message Expiry
/// Interval, which counts from publication.
#[tokio::test]
async fn v5_will_properties_including_expiry_forwarded() {
    let hub = Hub::start();
    let (mut w, _) = RawClient::connect_ok(hub.addr(), Connect::v5("wprops-watch")).await;
    w.subscribe("wprops/will", 1).await;
    let will = Will {
        qos: 1,
        props: Props::new()
            .byte(prop::PAYLOAD_FORMAT, 1)
            .u32(prop::MESSAGE_EXPIRY, 3600)
            .str(prop::CONTENT_TYPE, "text/plain")
            .str(prop::RESPONSE_TOPIC, "wprops/reply")
            .bin(prop::CORRELATION_DATA, b"c0")
            .user("k", "v"),
        ..Will::new("wprops/will", b"bye")
    };
    let (c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("wprops").will(will)).await;
    c.drop_connection().await;
    let m = w.recv_publish_acked().await;
    assert_eq!(m.payload, b"bye");
    assert_eq!(m.props.u32(prop::PAYLOAD_FORMAT), Some(1));
    assert_eq!(m.props.str(prop::CONTENT_TYPE), Some("text/plain"));
    assert_eq!(m.props.str(prop::RESPONSE_TOPIC), Some("wprops/reply"));
    assert_eq!(m.props.bin(prop::CORRELATION_DATA), Some(&b"c0"[..]));
    assert_eq!(m.props.user(), vec![("k".to_owned(), "v".to_owned())]);
    let left = m
        .props
        .u32(prop::MESSAGE_EXPIRY)
        .expect("will Message Expiry forwarded");
    assert!((1..=3600).contains(&left), "will expiry {left}");
    w.disconnect().await;
    hub.finish();
}

/// Clean Start = 1 while the old connection is still open: the old one is closed
/// (MQTT-3.1.4-3), the new connection gets Session Present = 0 (MQTT-3.2.2-2) and none of the
/// old subscriptions (MQTT-3.1.2-4).
#[tokio::test]
async fn clean_start_takeover_of_a_connected_session_discards_it() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let id = format!("cs-take-{level}");
        let (mut old, _) = RawClient::connect_ok(hub.addr(), persistent(level, &id)).await;
        old.subscribe("cstake/t", 1).await;
        let (mut new, present) = RawClient::connect_ok(hub.addr(), conn(level, &id)).await;
        assert!(!present, "v{level}: Session Present with Clean Start");
        old.expect_closed(RECV_TIMEOUT).await;
        let (mut p, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("cs-take-pub-{level}"))).await;
        p.publish(Pub::new("cstake/t", b"x").qos(1, 0)).await;
        assert!(
            drain(&mut new).await.is_empty(),
            "v{level}: old subscription kept"
        );
        new.disconnect().await;
        p.disconnect().await;
    }
    hub.finish();
}

/// Receive Maximum also bounds retained messages sent at subscription time and the
/// messages sent after a reconnection (MQTT-3.3.4-9): with a window of 2, never more than two
/// unacknowledged QoS 1 PUBLISHes, and each acknowledgement lets exactly one more through.
#[tokio::test]
async fn v5_receive_maximum_bounds_retained_and_resumed_deliveries() {
    let hub = Hub::start();
    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rmx-pub")).await;
    for n in 0..5u8 {
        let topic = format!("rmx/r{n}");
        p.publish(Pub::new(&topic, &[n]).qos(1, 0).retain(true))
            .await;
    }
    let connect = || {
        Connect::v5("rmx").clean(false).props(
            Props::new()
                .u32(prop::SESSION_EXPIRY, 300)
                .u16(prop::RECEIVE_MAXIMUM, 2),
        )
    };
    // Retained messages at subscription time.
    let (mut c, _) = RawClient::connect_ok(hub.addr(), connect()).await;
    c.subscribe("rmx/#", 1).await;
    let mut window = vec![c.recv_publish().await, c.recv_publish().await];
    c.expect_no_publish(QUIET).await;
    let mut seen = 2;
    while seen < 5 {
        let done = window.remove(0);
        c.send(&ack_packet(0x40, done.pid)).await;
        window.push(c.recv_publish().await);
        seen += 1;
        c.expect_no_publish(Duration::from_millis(200)).await;
    }
    for m in window.drain(..) {
        c.send(&ack_packet(0x40, m.pid)).await;
    }
    c.expect_no_publish(QUIET).await;
    // Two in flight at disconnect, three more queued while offline.
    for n in 0..2u8 {
        p.publish(Pub::new("rmx/live", &[n]).qos(1, 0)).await;
    }
    let _unacked = [c.recv_publish().await, c.recv_publish().await];
    c.disconnect().await;
    for n in 2..5u8 {
        p.publish(Pub::new("rmx/live", &[n]).qos(1, 0)).await;
    }
    let (mut c, present) = RawClient::connect_ok(hub.addr(), connect()).await;
    assert!(present);
    let mut window = vec![c.recv_publish().await, c.recv_publish().await];
    c.expect_no_publish(QUIET).await;
    let mut payloads: Vec<u8> = window.iter().map(|m| m.payload[0]).collect();
    while payloads.len() < 5 {
        let done = window.remove(0);
        c.send(&ack_packet(0x40, done.pid)).await;
        let m = c.recv_publish().await;
        payloads.push(m.payload[0]);
        window.push(m);
        c.expect_no_publish(Duration::from_millis(200)).await;
    }
    assert_eq!(payloads, vec![0, 1, 2, 3, 4]);
    for m in window {
        c.send(&ack_packet(0x40, m.pid)).await;
    }
    c.disconnect().await;
    p.disconnect().await;
    hub.finish();
}

/// An AUTH packet from a 5.0 client that did not name an Authentication Method in CONNECT
/// is a Protocol Error (§3.15, §4.12): DISCONNECT 0x82 (or 0x81), then close. In 3.1.1
/// packet type 15 is reserved (§2.2.1): the connection is closed.
#[tokio::test]
async fn unexpected_auth_packet_closes_connection() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let (mut c, _) =
            RawClient::connect_ok(hub.addr(), conn(level, &format!("auth-{level}"))).await;
        // AUTH, reason 0x18 Continue authentication, no properties.
        c.send(&packet(0xF0, &[0x18, 0x00])).await;
        let got = c.expect_closed(RECV_TIMEOUT).await;
        let ok = match got.as_slice() {
            [] => level == V311,
            [Incoming::Disconnect { reason, .. }] => level == V5 && matches!(reason, 0x81 | 0x82),
            _ => false,
        };
        assert!(ok, "v{level}: AUTH: got {got:?}");
    }
    hub.finish();
}

/// A persistent session's queue that spills to the store (a 4 KiB in-memory window) still
/// delivers in order (MQTT-4.6.0-6), keeps every message's properties and Subscription
/// Identifier (MQTT-3.3.2-18, MQTT-3.3.4-3), and applies Message Expiry to the paged-in
/// messages, with the interval reduced by the waiting time (MQTT-3.3.2-5/6).
#[tokio::test]
async fn v5_spilled_offline_queue_keeps_order_properties_and_expiry() {
    let hub = Hub::with_session("queue_window = \"4KiB\"");
    let (mut c, _) = RawClient::connect_ok(hub.addr(), persistent(V5, "spill")).await;
    let id = Props::new().varint(prop::SUBSCRIPTION_ID, 11);
    assert_eq!(c.subscribe_with(&[("spill/t", 1)], &id).await, vec![1]);
    c.disconnect().await;

    let (mut p, _) = RawClient::connect_ok(hub.addr(), Connect::v5("spill-pub")).await;
    let count = 120u16;
    let payload = |n: u16| format!("{n:04}-{}", "x".repeat(120)).into_bytes();
    for n in 0..count {
        // Every third message expires after one second.
        let expiry = if n % 3 == 1 { 1 } else { 3600 };
        let props = Props::new()
            .user("n", &n.to_string())
            .user("z", "last")
            .str(prop::CONTENT_TYPE, "text/x")
            .bin(prop::CORRELATION_DATA, &n.to_be_bytes())
            .u32(prop::MESSAGE_EXPIRY, expiry);
        p.publish(Pub::new("spill/t", &payload(n)).qos(1, 0).props(props))
            .await;
    }
    p.disconnect().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (mut c, present) = RawClient::connect_ok(hub.addr(), persistent(V5, "spill")).await;
    assert!(present);
    let want: Vec<u16> = (0..count).filter(|n| n % 3 != 1).collect();
    let got = recv_exactly(&mut c, want.len()).await;
    for (m, n) in got.iter().zip(&want) {
        assert_eq!(m.payload, payload(*n), "order or payload at {n}");
        assert_eq!(
            m.props.user(),
            vec![
                ("n".to_owned(), n.to_string()),
                ("z".to_owned(), "last".to_owned())
            ],
            "message {n}"
        );
        assert_eq!(
            m.props.str(prop::CONTENT_TYPE),
            Some("text/x"),
            "message {n}"
        );
        assert_eq!(
            m.props.bin(prop::CORRELATION_DATA),
            Some(&n.to_be_bytes()[..]),
            "message {n}"
        );
        assert_eq!(m.props.subscription_ids(), vec![11], "message {n}");
        let left = m.props.u32(prop::MESSAGE_EXPIRY).expect("expiry forwarded");
        assert!(left < 3600, "message {n}: interval not reduced ({left})");
    }
    c.disconnect().await;
    hub.finish();
}
