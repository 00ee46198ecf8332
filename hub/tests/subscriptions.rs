//! Subscriptions: wildcards, `$` topics, re-subscription, unsubscribe, overlaps.

mod common;

use std::time::Duration;

use common::*;

/// Publishes `topic` with its own name as payload.
async fn send(c: &mut RawClient, topic: &str) {
    c.publish(Pub::new(topic, topic.as_bytes())).await;
}

/// Collects the topics of all PUBLISHes arriving within `QUIET`.
async fn drain_topics(c: &mut RawClient) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(p) = c.try_recv_publish(QUIET).await {
        topics.push(p.topic);
    }
    topics.sort();
    topics
}

/// `+` matches exactly one level, including an empty one (MQTT 4.7.1.3).
#[tokio::test]
async fn single_level_wildcard() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("plus-sub")).await;
    sub.subscribe("s/+/temp", 0).await;
    sub.subscribe("+", 0).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("plus-pub")).await;
    for t in [
        "s/a/temp",
        "s/a/b/temp",
        "s/temp",
        "s//temp",
        "s/a/temp/x",
        "top",
        "top/x",
        "/x",
    ] {
        send(&mut publ, t).await;
    }
    assert_eq!(
        drain_topics(&mut sub).await,
        vec!["s//temp", "s/a/temp", "top"]
    );
    hub.finish();
}

/// `#` matches the parent level and any number of child levels (MQTT 4.7.1.2).
#[tokio::test]
async fn multi_level_wildcard() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("hash-sub")).await;
    sub.subscribe("sport/#", 0).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("hash-pub")).await;
    for t in [
        "sport",
        "sport/tennis",
        "sport/tennis/player1",
        "sports",
        "other/sport",
    ] {
        send(&mut publ, t).await;
    }
    assert_eq!(
        drain_topics(&mut sub).await,
        vec!["sport", "sport/tennis", "sport/tennis/player1"]
    );
    let (mut all, _) = RawClient::connect_ok(hub.addr(), Connect::v4("hash-all")).await;
    all.subscribe("#", 0).await;
    send(&mut publ, "a/b/c").await;
    send(&mut publ, "/leading").await;
    assert_eq!(drain_topics(&mut all).await, vec!["/leading", "a/b/c"]);
    hub.finish();
}

/// MQTT-4.7.2-1: filters starting with a wildcard do not match topics starting with `$`;
/// an explicit `$SYS/#` subscription does.
#[tokio::test]
async fn dollar_topics_not_matched_by_leading_wildcards() {
    let hub = Hub::with_session("sys_interval = \"1s\"");
    let (mut wild, _) = RawClient::connect_ok(hub.addr(), Connect::v4("wild")).await;
    wild.subscribe("#", 0).await;
    wild.subscribe("+/broker/#", 0).await;
    wild.subscribe("+/+/+", 0).await;
    let (mut sys, _) = RawClient::connect_ok(hub.addr(), Connect::v4("sys")).await;
    sys.subscribe("$SYS/#", 0).await;
    let p = sys.recv_publish().await;
    assert!(
        p.topic.starts_with("$SYS/broker/"),
        "unexpected topic {}",
        p.topic
    );
    // Let at least one more publication round pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while let Some(p) = wild.try_recv_publish(Duration::from_millis(100)).await {
        assert!(
            !p.topic.starts_with('$'),
            "wildcard subscription matched {}",
            p.topic
        );
    }
    hub.finish();
}

/// MQTT-3.8.4-3: subscribing again to the same filter replaces the subscription, so its
/// QoS can be raised or lowered, and messages are not duplicated.
#[tokio::test]
async fn resubscribe_upgrades_and_downgrades_qos() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("re-sub")).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("re-pub")).await;
    for qos in [0u8, 2, 1, 0] {
        sub.subscribe("re/t", qos).await;
        publ.publish(Pub::new("re/t", &[qos]).qos(2, 0)).await;
        let p = sub.recv_publish_acked().await;
        assert_eq!((p.payload.as_slice(), p.qos), (&[qos][..], qos));
        sub.expect_no_publish(QUIET).await;
    }
    hub.finish();
}

/// UNSUBSCRIBE stops delivery; v5 UNSUBACK reports 0x00 for a removed subscription and
/// 0x11 (No subscription existed) otherwise.
#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("un-sub")).await;
    sub.subscribe("un/+", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("un-pub")).await;
    publ.publish(Pub::new("un/a", b"before").qos(1, 0)).await;
    assert_eq!(sub.recv_publish_acked().await.payload, b"before");
    assert_eq!(sub.unsubscribe("un/+").await, vec![0x00]);
    publ.publish(Pub::new("un/a", b"after").qos(1, 0)).await;
    sub.expect_no_publish(QUIET).await;
    assert_eq!(sub.unsubscribe("un/+").await, vec![0x11]);

    let (mut sub4, _) = RawClient::connect_ok(hub.addr(), Connect::v4("un-sub4")).await;
    sub4.subscribe("un4/#", 0).await;
    assert_eq!(
        sub4.unsubscribe("un4/#").await,
        Vec::<u8>::new(),
        "3.1.1 UNSUBACK has no payload"
    );
    publ.publish(Pub::new("un4/x", b"after")).await;
    sub4.expect_no_publish(QUIET).await;
    hub.finish();
}

/// Overlapping subscriptions: the message is delivered with the maximum QoS of the matching
/// subscriptions (MQTT-3.3.5-1); 5.0 allows one copy per subscription, no more.
#[tokio::test]
async fn overlapping_subscriptions_deliver_max_qos() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let (mut sub, _) = RawClient::connect_ok(
            hub.addr(),
            Connect {
                level,
                ..Connect::v4("ov-sub")
            },
        )
        .await;
        sub.subscribe("ov/#", 0).await;
        sub.subscribe("ov/+", 2).await;
        sub.subscribe("ov/x", 1).await;
        let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("ov-pub")).await;
        publ.publish(Pub::new("ov/x", b"m").qos(2, 0)).await;
        let mut copies = Vec::new();
        while let Some(p) = sub.try_recv_publish(QUIET).await {
            sub.ack(&p).await;
            copies.push(p.qos);
        }
        assert!(
            !copies.is_empty() && copies.len() <= 3,
            "copies: {copies:?}"
        );
        assert_eq!(
            copies.iter().max(),
            Some(&2),
            "one copy must carry QoS 2: {copies:?}"
        );
        sub.disconnect().await;
        publ.disconnect().await;
    }
    hub.finish();
}

/// One SUBSCRIBE with several filters gets one return code per filter, in order.
#[tokio::test]
async fn subscribe_many_filters_in_one_packet() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("many")).await;
    let codes = sub
        .subscribe_with(&[("m/a", 2), ("m/b", 0), ("m/+", 1)], &Props::new())
        .await;
    assert_eq!(codes, vec![2, 0, 1]);
    hub.finish();
}

/// Invalid topic filters (`#` not last, wildcards inside a level) are never granted.
#[tokio::test]
async fn invalid_filters_not_granted() {
    let hub = Hub::start();
    for (level, filter) in [(V311, "a/#/b"), (V5, "a/b#"), (V5, "a+/b")] {
        let (mut sub, _) = RawClient::connect_ok(
            hub.addr(),
            Connect {
                level,
                ..Connect::v4("bad-filter")
            },
        )
        .await;
        let pid = sub.pid();
        sub.send(&subscribe_packet(level, pid, &[(filter, 0)], &Props::new()))
            .await;
        match sub.try_recv(RECV_TIMEOUT).await {
            Ok(Incoming::SubAck { codes, .. }) => {
                assert_eq!(codes.len(), 1);
                assert!(codes[0] >= 0x80, "{filter} granted with {:#04x}", codes[0]);
            }
            Ok(Incoming::Disconnect { reason, .. }) => assert!(reason >= 0x80),
            Err(RecvError::Closed) => {}
            other => panic!("{filter}: unexpected answer {other:?}"),
        }
    }
    hub.finish();
}

/// MQTT-3.8.3-3: a SUBSCRIBE without any filter is a protocol violation.
#[tokio::test]
async fn empty_subscribe_closes_connection() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("empty-sub")).await;
    c.send(&subscribe_packet(V311, 1, &[], &Props::new())).await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        got.iter().all(|p| !matches!(p, Incoming::SubAck { .. })),
        "{got:?}"
    );
    hub.finish();
}

/// rumqttc: wildcard subscription through both client libraries.
#[tokio::test]
async fn rumqttc_wildcards() {
    let hub = Hub::start();
    let mut sub = V4Client::connect(&hub, "rq-wild").await;
    let ack = sub
        .subscribe("home/+/temp", rumqttc::QoS::AtLeastOnce)
        .await;
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtLeastOnce
        )]
    );
    let mut publ = V5Client::connect(&hub, "rq-wild-pub").await;
    for room in ["kitchen", "attic/roof"] {
        publ.client
            .publish(
                format!("home/{room}/temp"),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                room,
            )
            .await
            .expect("publish");
        publ.wait_publish_done().await;
    }
    let p = sub.recv_publish(RECV_TIMEOUT).await.expect("publish");
    assert_eq!(p.topic, "home/kitchen/temp");
    assert!(sub.recv_publish(QUIET).await.is_none());
    hub.finish();
}

/// Expects the connection to be closed for a protocol violation (v5: DISCONNECT 0x81 or
/// 0x82 first).
async fn expect_violation(c: &mut RawClient, what: &str) {
    let got = c.expect_closed(RECV_TIMEOUT).await;
    let ok = match got.as_slice() {
        [] => c.level != V5,
        [Incoming::Disconnect { reason, .. }] => matches!(reason, 0x81 | 0x82),
        _ => false,
    };
    assert!(ok, "{what}: got {got:?}");
}

/// Malformed SUBSCRIBE / UNSUBSCRIBE packets close the connection: wrong fixed-header flags
/// (MQTT-3.8.1-1), requested QoS 3 and reserved option bits (MQTT-3.8.3-5), Retain Handling 3,
/// an UNSUBSCRIBE without filters (MQTT-3.10.3-2).
#[tokio::test]
async fn malformed_subscribe_closes_connection() {
    let hub = Hub::start();
    let mut flags = subscribe_packet(V311, 1, &[("a/b", 0)], &Props::new());
    flags[0] = 0x80;
    let cases: Vec<(&str, u8, Vec<u8>)> = vec![
        ("SUBSCRIBE flags 0000", V311, flags),
        (
            "QoS 3 (3.1.1)",
            V311,
            subscribe_packet(V311, 1, &[("a/b", 3)], &Props::new()),
        ),
        (
            "QoS 3 (5.0)",
            V5,
            subscribe_packet(V5, 1, &[("a/b", 3)], &Props::new()),
        ),
        (
            "reserved option bits",
            V5,
            subscribe_packet(V5, 1, &[("a/b", 0xC0)], &Props::new()),
        ),
        (
            "Retain Handling 3",
            V5,
            subscribe_packet(V5, 1, &[("a/b", 0x30)], &Props::new()),
        ),
        (
            "UNSUBSCRIBE without filters",
            V311,
            unsubscribe_packet(V311, 1, &[]),
        ),
    ];
    for (what, level, bytes) in cases {
        let (mut c, _) = RawClient::connect_ok(
            hub.addr(),
            Connect {
                level,
                ..Connect::v4("malsub")
            },
        )
        .await;
        c.send(&bytes).await;
        expect_violation(&mut c, what).await;
    }
    hub.finish();
}

/// MQTT-3.8.3-4: No Local on a shared subscription is a Protocol Error.
#[tokio::test]
async fn no_local_on_shared_subscription_rejected() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("nl-shared")).await;
    c.send(&subscribe_packet(
        V5,
        1,
        &[("$share/g/t", sub_opts(0, true, false, 0))],
        &Props::new(),
    ))
    .await;
    expect_violation(&mut c, "no-local shared").await;
    hub.finish();
}

/// Unsubscribing one of two overlapping filters keeps the other.
#[tokio::test]
async fn unsubscribe_removes_only_that_filter() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("partial")).await;
    sub.subscribe("part/#", 1).await;
    sub.subscribe("part/+", 1).await;
    sub.unsubscribe("part/+").await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("partial-pub")).await;
    publ.publish(Pub::new("part/x", b"m").qos(1, 0)).await;
    assert_eq!(sub.recv_publish_acked().await.payload, b"m");
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

/// A client may publish to its own `$` topic: it is accepted, delivered to an explicit
/// `$app/#` subscription and not to `#` or `+/+`.
#[tokio::test]
async fn client_published_dollar_topic() {
    let hub = Hub::start();
    let (mut wild, _) = RawClient::connect_ok(hub.addr(), Connect::v4("dollar-wild")).await;
    wild.subscribe("#", 1).await;
    wild.subscribe("+/+", 1).await;
    let (mut exact, _) = RawClient::connect_ok(hub.addr(), Connect::v4("dollar-exact")).await;
    exact.subscribe("$app/#", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("dollar-pub")).await;
    let reason = publ.publish(Pub::new("$app/x", b"d").qos(1, 0)).await;
    assert!(reason < 0x80, "PUBACK reason {reason:#04x}");
    assert_eq!(exact.recv_publish_acked().await.topic, "$app/x");
    wild.expect_no_publish(QUIET).await;
    hub.finish();
}

/// Topic names are opaque UTF-8: spaces, non-ASCII and case are preserved and matched exactly.
#[tokio::test]
async fn topic_names_are_exact_utf8() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("utf8")).await;
    sub.subscribe("Haus/Küche temp/+", 0).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("utf8-pub")).await;
    for t in [
        "Haus/Küche temp/°C",
        "haus/Küche temp/x",
        "Haus/Kuche temp/x",
    ] {
        send(&mut publ, t).await;
    }
    assert_eq!(drain_topics(&mut sub).await, vec!["Haus/Küche temp/°C"]);
    hub.finish();
}

/// One message fans out to every subscriber.
#[tokio::test]
async fn fan_out_to_many_subscribers() {
    let hub = Hub::start();
    let mut subs = Vec::new();
    for i in 0..40 {
        let level = if i % 2 == 0 { V311 } else { V5 };
        let (mut s, _) = RawClient::connect_ok(
            hub.addr(),
            Connect {
                level,
                ..Connect::v4(&format!("fan-{i}"))
            },
        )
        .await;
        s.subscribe(if i % 3 == 0 { "fan/#" } else { "fan/t" }, 1)
            .await;
        subs.push(s);
    }
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("fan-pub")).await;
    publ.publish(Pub::new("fan/t", b"all").qos(1, 0)).await;
    for s in &mut subs {
        assert_eq!(s.recv_publish_acked().await.payload, b"all");
    }
    hub.finish();
}
