//! MQTT 5.0 features: topic aliases, subscription identifiers, no-local, message expiry,
//! maximum packet size, property pass-through, reason strings, server keep alive.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::*;

/// The CONNACK properties of a fresh v5 connection.
async fn connack_props(hub: &Hub, connect: Connect) -> (RawClient, Properties) {
    let (c, ack) = RawClient::connect(hub.addr(), connect).await;
    match ack {
        Incoming::ConnAck { code: 0, props, .. } => (c, props),
        other => panic!("refused: {other:?}"),
    }
}

/// The hub announces its limits in CONNACK (MQTT 5.0 §3.2.2.3).
#[tokio::test]
async fn connack_announces_limits() {
    let hub =
        Hub::with_session("topic_alias_maximum = 7\nmax_packet_size = 4096\nreceive_maximum = 9");
    let (c, props) = connack_props(&hub, Connect::v5("limits")).await;
    assert_eq!(props.u32(prop::TOPIC_ALIAS_MAXIMUM), Some(7));
    assert_eq!(props.u32(prop::MAXIMUM_PACKET_SIZE), Some(4096));
    assert_eq!(props.u32(prop::RECEIVE_MAXIMUM), Some(9));
    // Features this hub supports are not announced as unavailable.
    for feature in [
        prop::WILDCARD_SUB_AVAILABLE,
        prop::SUB_ID_AVAILABLE,
        prop::SHARED_SUB_AVAILABLE,
        prop::RETAIN_AVAILABLE,
    ] {
        assert_ne!(
            props.u32(feature),
            Some(0),
            "property {feature:#04x} says unavailable"
        );
    }
    c.disconnect().await;
    hub.finish();
}

/// Client → hub topic aliases: an alias set with a topic can be used with an empty topic.
#[tokio::test]
async fn inbound_topic_alias() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("alias-sub")).await;
    sub.subscribe("alias/#", 1).await;
    let (mut publ, props) = connack_props(&hub, Connect::v5("alias-pub")).await;
    assert!(
        props.u32(prop::TOPIC_ALIAS_MAXIMUM).unwrap_or(0) >= 2,
        "hub offers no topic aliases"
    );
    let alias = |n: u16| Props::new().u16(prop::TOPIC_ALIAS, n);
    publ.publish(Pub::new("alias/one", b"1").qos(1, 0).props(alias(1)))
        .await;
    publ.publish(Pub::new("", b"2").qos(1, 0).props(alias(1)))
        .await;
    publ.publish(Pub::new("alias/two", b"3").qos(1, 0).props(alias(2)))
        .await;
    // Re-mapping alias 1 to another topic.
    publ.publish(Pub::new("alias/three", b"4").qos(1, 0).props(alias(1)))
        .await;
    publ.publish(Pub::new("", b"5").qos(1, 0).props(alias(1)))
        .await;
    publ.publish(Pub::new("", b"6").qos(1, 0).props(alias(2)))
        .await;
    let want = [
        "alias/one",
        "alias/one",
        "alias/two",
        "alias/three",
        "alias/three",
        "alias/two",
    ];
    for (i, topic) in want.into_iter().enumerate() {
        let p = sub.recv_publish_acked().await;
        assert_eq!(p.topic, topic, "message {}", i + 1);
        assert_eq!(
            p.props.get(prop::TOPIC_ALIAS),
            None,
            "inbound alias must not be forwarded"
        );
    }
    hub.finish();
}

/// Alias 0 or above the announced maximum: DISCONNECT 0x94; an empty topic with an unknown
/// alias: DISCONNECT 0x82 (MQTT-3.3.2-7/8, §3.3.4).
#[tokio::test]
async fn invalid_topic_alias_disconnects() {
    let hub = Hub::with_session("topic_alias_maximum = 4");
    let cases: [(Pub, u8); 3] = [
        (
            Pub::new("bad/alias", b"x").props(Props::new().u16(prop::TOPIC_ALIAS, 0)),
            0x94,
        ),
        (
            Pub::new("bad/alias", b"x").props(Props::new().u16(prop::TOPIC_ALIAS, 5)),
            0x94,
        ),
        (
            Pub::new("", b"x").props(Props::new().u16(prop::TOPIC_ALIAS, 3)),
            0x82,
        ),
    ];
    for (publish, reason) in cases {
        let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("bad-alias")).await;
        c.send(&publish.encode(V5)).await;
        let got = c.expect_closed(RECV_TIMEOUT).await;
        match got.as_slice() {
            [Incoming::Disconnect { reason: r, .. }] => assert_eq!(*r, reason, "{publish:?}"),
            other => panic!("expected DISCONNECT {reason:#04x}, got {other:?}"),
        }
    }
    hub.finish();
}

/// Hub → client topic aliases: only when the client allows them (Topic Alias Maximum),
/// never above that maximum, and every aliased empty topic resolves to the right name.
#[tokio::test]
async fn outbound_topic_aliases() {
    let hub = Hub::start();
    let (mut none, _) = RawClient::connect_ok(hub.addr(), Connect::v5("no-alias")).await;
    none.subscribe("out/#", 0).await;
    let connect = Connect::v5("alias-ok").props(Props::new().u16(prop::TOPIC_ALIAS_MAXIMUM, 2));
    let (mut some, _) = RawClient::connect_ok(hub.addr(), connect).await;
    some.subscribe("out/#", 0).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("alias-src")).await;
    let topics = [
        "out/a", "out/a", "out/b", "out/a", "out/c", "out/b", "out/c", "out/c",
    ];
    for t in topics {
        publ.publish(Pub::new(t, t.as_bytes())).await;
    }
    let mut aliases: HashMap<u32, String> = HashMap::new();
    let mut used_empty_topic = false;
    for t in topics {
        let p = none.recv_publish().await;
        assert_eq!(p.topic, t);
        assert_eq!(
            p.props.get(prop::TOPIC_ALIAS),
            None,
            "MQTT-3.3.2-9: alias sent to a client that allows none"
        );
        let p = some.recv_publish().await;
        let resolved = match p.props.u32(prop::TOPIC_ALIAS) {
            Some(a) => {
                assert!((1..=2).contains(&a), "alias {a} outside 1..=2");
                if p.topic.is_empty() {
                    used_empty_topic = true;
                    aliases
                        .get(&a)
                        .cloned()
                        .unwrap_or_else(|| panic!("alias {a} used before it was set"))
                } else {
                    aliases.insert(a, p.topic.clone());
                    p.topic.clone()
                }
            }
            None => p.topic.clone(),
        };
        assert_eq!(resolved, t);
        assert_eq!(p.payload, t.as_bytes());
    }
    assert!(
        used_empty_topic,
        "the hub never used a topic alias towards the client"
    );
    hub.finish();
}

/// Subscription identifiers are returned with every matching message (MQTT-3.3.4-3/4);
/// a subscription without one adds none.
#[tokio::test]
async fn subscription_identifiers() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("sid")).await;
    let id = |n: u32| Props::new().varint(prop::SUBSCRIPTION_ID, n);
    assert_eq!(sub.subscribe_with(&[("sid/+", 1)], &id(7)).await, vec![1]);
    assert_eq!(sub.subscribe_with(&[("sid/#", 1)], &id(300)).await, vec![1]);
    sub.subscribe("plain/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("sid-pub")).await;
    publ.publish(Pub::new("sid/x", b"both").qos(1, 0)).await;
    let mut ids = BTreeSet::new();
    while let Some(p) = sub.try_recv_publish(QUIET).await {
        sub.ack(&p).await;
        ids.extend(p.props.subscription_ids());
    }
    assert_eq!(ids, BTreeSet::from([7, 300]));
    publ.publish(Pub::new("sid/x/y", b"one").qos(1, 0)).await;
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.props.subscription_ids(), vec![300]);
    publ.publish(Pub::new("plain/t", b"none").qos(1, 0)).await;
    let p = sub.recv_publish_acked().await;
    assert!(p.props.subscription_ids().is_empty());
    hub.finish();
}

/// No Local: a subscriber does not get its own messages back (MQTT-3.8.3-3), but gets
/// everyone else's; without the option it does get its own.
#[tokio::test]
async fn no_local() {
    let hub = Hub::start();
    let (mut me, _) = RawClient::connect_ok(hub.addr(), Connect::v5("nl-me")).await;
    me.subscribe_with(&[("nl/t", sub_opts(1, true, false, 0))], &Props::new())
        .await;
    me.publish(Pub::new("nl/t", b"mine").qos(1, 0)).await;
    me.expect_no_publish(QUIET).await;
    let (mut other, _) = RawClient::connect_ok(hub.addr(), Connect::v5("nl-other")).await;
    other.subscribe("nl/t", 1).await;
    other.publish(Pub::new("nl/t", b"theirs").qos(1, 0)).await;
    assert_eq!(me.recv_publish_acked().await.payload, b"theirs");
    assert_eq!(
        other.recv_publish_acked().await.payload,
        b"theirs",
        "no-local is per subscription"
    );
    hub.finish();
}

/// Message expiry: an expired message is not delivered to an offline session, a pending one
/// arrives with its remaining lifetime (MQTT-3.3.2-5/6), an expired retained message is gone.
#[tokio::test]
async fn message_expiry() {
    let hub = Hub::start();
    let connect = || Connect::v5("mexp").clean(false).session_expiry(60);
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), connect()).await;
    sub.subscribe("mexp/#", 1).await;
    sub.disconnect().await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("mexp-pub")).await;
    let expiry = |s: u32| Props::new().u32(prop::MESSAGE_EXPIRY, s);
    publ.publish(Pub::new("mexp/short", b"short").qos(1, 0).props(expiry(1)))
        .await;
    publ.publish(Pub::new("mexp/long", b"long").qos(1, 0).props(expiry(60)))
        .await;
    publ.publish(
        Pub::new("mexp/ret", b"ret")
            .qos(1, 0)
            .retain(true)
            .props(expiry(1)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let (mut sub, present) = RawClient::connect_ok(hub.addr(), connect()).await;
    assert!(present);
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.payload, b"long");
    let left = p
        .props
        .u32(prop::MESSAGE_EXPIRY)
        .expect("remaining expiry forwarded");
    assert!(
        (1..=58).contains(&left),
        "remaining expiry {left}, expected about 58"
    );
    sub.expect_no_publish(QUIET).await;

    let (mut late, _) = RawClient::connect_ok(hub.addr(), Connect::v5("mexp-late")).await;
    late.subscribe("mexp/ret", 1).await;
    late.expect_no_publish(QUIET).await;
    hub.finish();
}

/// The client's Maximum Packet Size is respected: a larger message is not sent to it
/// (MQTT-3.1.2-25), smaller ones are.
#[tokio::test]
async fn client_maximum_packet_size_respected() {
    let hub = Hub::start();
    let connect = Connect::v5("small").props(Props::new().u32(prop::MAXIMUM_PACKET_SIZE, 128));
    let (mut small, _) = RawClient::connect_ok(hub.addr(), connect).await;
    small.subscribe("mps/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("mps-pub")).await;
    publ.publish(Pub::new("mps/t", &[7u8; 500]).qos(1, 0)).await;
    publ.publish(Pub::new("mps/t", b"fits").qos(1, 0)).await;
    let p = small.recv_publish_acked().await;
    assert_eq!(p.payload, b"fits");
    small.expect_no_publish(QUIET).await;
    hub.finish();
}

/// User properties (order kept, repeats allowed), content type, response topic, correlation
/// data and payload format indicator arrive unchanged (MQTT-3.3.2-17/18/20).
#[tokio::test]
async fn publish_properties_passed_through() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pp-sub")).await;
    sub.subscribe("pp/t", 2).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pp-pub")).await;
    let props = Props::new()
        .byte(prop::PAYLOAD_FORMAT, 1)
        .str(prop::CONTENT_TYPE, "application/json")
        .str(prop::RESPONSE_TOPIC, "pp/reply")
        .bin(prop::CORRELATION_DATA, &[0, 1, 2, 255])
        .user("b", "2")
        .user("a", "1")
        .user("b", "3");
    publ.publish(Pub::new("pp/t", b"{\"v\":1}").qos(2, 0).props(props))
        .await;
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.props.u32(prop::PAYLOAD_FORMAT), Some(1));
    assert_eq!(p.props.str(prop::CONTENT_TYPE), Some("application/json"));
    assert_eq!(p.props.str(prop::RESPONSE_TOPIC), Some("pp/reply"));
    assert_eq!(
        p.props.bin(prop::CORRELATION_DATA),
        Some(&[0u8, 1, 2, 255][..])
    );
    let user: Vec<(String, String)> = [("b", "2"), ("a", "1"), ("b", "3")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(p.props.user(), user);
    assert_eq!(p.payload, b"{\"v\":1}");
    hub.finish();
}

/// Errors carry a Reason String (MQTT 5.0 §3.14.2.2.3) unless the client asked for none,
/// in which case SUBACK must not carry one (MQTT-3.1.2-29).
#[tokio::test]
async fn reason_strings_on_errors() {
    let hub = Hub::with_session("topic_alias_maximum = 2");
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rs")).await;
    c.send(
        &Pub::new("rs/t", b"x")
            .props(Props::new().u16(prop::TOPIC_ALIAS, 9))
            .encode(V5),
    )
    .await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    match got.as_slice() {
        [
            Incoming::Disconnect {
                reason: 0x94,
                props,
            },
        ] => {
            let text = props
                .str(prop::REASON_STRING)
                .expect("DISCONNECT without a Reason String");
            assert!(!text.is_empty());
        }
        other => panic!("expected DISCONNECT 0x94, got {other:?}"),
    }

    let quiet = Connect::v5("rs-quiet").props(Props::new().byte(prop::REQUEST_PROBLEM_INFO, 0));
    let (mut q, _) = RawClient::connect_ok(hub.addr(), quiet).await;
    let pid = q.pid();
    q.send(&subscribe_packet(V5, pid, &[("rs/#/x", 0)], &Props::new()))
        .await;
    if let Ok(Incoming::SubAck { props, .. }) = q.try_recv(RECV_TIMEOUT).await {
        assert_eq!(
            props.get(prop::REASON_STRING),
            None,
            "Reason String despite Request Problem Information = 0"
        );
    }
    hub.finish();
}

/// Server Keep Alive: the hub's value overrides the client's (MQTT-3.2.2-21) and is enforced.
#[tokio::test]
async fn server_keep_alive_overrides_client() {
    let hub = Hub::with_session("server_keep_alive = \"1s\"");
    let (mut c, props) = connack_props(&hub, Connect::v5("ska").keep_alive(120)).await;
    assert_eq!(props.u32(prop::SERVER_KEEP_ALIVE), Some(1));
    let start = Instant::now();
    c.expect_closed(Duration::from_secs(5)).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed <= Duration::from_millis(3500),
        "{elapsed:?}"
    );
    hub.finish();
}

/// rumqttc v5: user properties and content type survive the hub.
#[tokio::test]
async fn rumqttc_v5_properties() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let hub = Hub::start();
    let mut sub = V5Client::connect(&hub, "rq5-sub").await;
    sub.subscribe("rq5/t", QoS::AtLeastOnce).await;
    let publ = V5Client::connect(&hub, "rq5-pub").await;
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    publ.client
        .publish_with_properties("rq5/t", QoS::AtLeastOnce, false, "hi", props)
        .await
        .expect("publish");
    let p = sub.recv_publish(RECV_TIMEOUT).await.expect("publish");
    let got = p.properties.expect("properties");
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        got.user_properties,
        vec![("k".to_string(), "v".to_string())]
    );
    hub.finish();
}
