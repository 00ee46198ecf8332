//! Retained messages: store, replace, clear, delivery on subscribe, v5 retain options.

mod common;

use common::*;

async fn retain(c: &mut RawClient, topic: &str, payload: &[u8], qos: u8) {
    c.publish(Pub::new(topic, payload).qos(qos, 0).retain(true))
        .await;
}

/// MQTT-3.3.1-5/8: a retained message is stored and sent with RETAIN=1 to new subscribers,
/// at min(message QoS, subscription QoS).
#[tokio::test]
async fn retained_message_delivered_on_subscribe() {
    let hub = Hub::start();
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("r-pub")).await;
    retain(&mut publ, "r/a", b"alpha", 2).await;
    retain(&mut publ, "r/b", b"beta", 1).await;
    publ.disconnect().await;

    for level in [V311, V5] {
        let (mut sub, _) = RawClient::connect_ok(
            hub.addr(),
            Connect {
                level,
                ..Connect::v4("r-sub")
            },
        )
        .await;
        sub.subscribe("r/a", 1).await;
        let p = sub.recv_publish_acked().await;
        assert_eq!(
            (p.topic.as_str(), p.payload.as_slice()),
            ("r/a", &b"alpha"[..])
        );
        assert!(p.retain, "retained delivery must have RETAIN=1");
        assert_eq!(p.qos, 1);
        sub.subscribe("r/#", 2).await;
        let mut got = Vec::new();
        for _ in 0..2 {
            let p = sub.recv_publish_acked().await;
            assert!(p.retain);
            got.push((p.topic, p.qos));
        }
        got.sort();
        assert_eq!(got, vec![("r/a".to_string(), 2), ("r/b".to_string(), 1)]);
        sub.expect_no_publish(QUIET).await;
        sub.disconnect().await;
    }
    hub.finish();
}

/// A live message to an existing subscription is sent with RETAIN=0 even if it was
/// published retained (MQTT-3.3.1-9); a newer retained message replaces the older.
#[tokio::test]
async fn retained_replaced_and_live_delivery_not_flagged() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("rl-sub")).await;
    sub.subscribe("rl/t", 0).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("rl-pub")).await;
    retain(&mut publ, "rl/t", b"one", 0).await;
    retain(&mut publ, "rl/t", b"two", 1).await;
    for want in [&b"one"[..], b"two"] {
        let p = sub.recv_publish_acked().await;
        assert_eq!(p.payload, want);
        assert!(!p.retain, "live delivery must have RETAIN=0");
    }
    let (mut late, _) = RawClient::connect_ok(hub.addr(), Connect::v4("rl-late")).await;
    late.subscribe("rl/t", 1).await;
    let p = late.recv_publish_acked().await;
    assert_eq!((p.payload.as_slice(), p.retain), (&b"two"[..], true));
    late.expect_no_publish(QUIET).await;
    hub.finish();
}

/// MQTT-3.3.1-10/11: a retained PUBLISH with an empty payload clears the retained message
/// and is itself not stored.
#[tokio::test]
async fn empty_payload_clears_retained() {
    let hub = Hub::start();
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("clr-pub")).await;
    retain(&mut publ, "clr/t", b"value", 1).await;
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("clr-sub1")).await;
    sub.subscribe("clr/t", 1).await;
    assert_eq!(sub.recv_publish_acked().await.payload, b"value");
    retain(&mut publ, "clr/t", b"", 1).await;
    let (mut sub2, _) = RawClient::connect_ok(hub.addr(), Connect::v5("clr-sub2")).await;
    sub2.subscribe("clr/#", 1).await;
    sub2.expect_no_publish(QUIET).await;
    hub.finish();
}

/// v5 Retain Handling: 0 sends retained messages on every subscribe, 1 only when the
/// subscription is new, 2 never (MQTT 5.0 §3.8.3.1).
#[tokio::test]
async fn v5_retain_handling() {
    let hub = Hub::start();
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rh-pub")).await;
    retain(&mut publ, "rh/t", b"kept", 0).await;
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rh-sub")).await;
    let subscribe = |rh: u8| [("rh/t", sub_opts(0, false, false, rh))];

    // 0: on every subscribe, including a repeated one.
    for _ in 0..2 {
        assert_eq!(
            sub.subscribe_with(&subscribe(0), &Props::new()).await,
            vec![0]
        );
        assert_eq!(sub.recv_publish().await.payload, b"kept");
    }
    sub.unsubscribe("rh/t").await;
    // 1: only when the subscription did not exist.
    assert_eq!(
        sub.subscribe_with(&subscribe(1), &Props::new()).await,
        vec![0]
    );
    assert_eq!(sub.recv_publish().await.payload, b"kept");
    assert_eq!(
        sub.subscribe_with(&subscribe(1), &Props::new()).await,
        vec![0]
    );
    sub.expect_no_publish(QUIET).await;
    sub.unsubscribe("rh/t").await;
    // 2: never.
    assert_eq!(
        sub.subscribe_with(&subscribe(2), &Props::new()).await,
        vec![0]
    );
    sub.expect_no_publish(QUIET).await;
    // ...but live messages still flow.
    publ.publish(Pub::new("rh/t", b"live")).await;
    assert_eq!(sub.recv_publish().await.payload, b"live");
    hub.finish();
}

/// v5 Retain As Published: with the option set, forwarded messages keep their RETAIN flag;
/// without it, RETAIN is 0 (MQTT-3.3.1-12/13).
#[tokio::test]
async fn v5_retain_as_published() {
    let hub = Hub::start();
    let (mut rap, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rap-1")).await;
    rap.subscribe_with(&[("rap/t", sub_opts(1, false, true, 2))], &Props::new())
        .await;
    let (mut plain, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rap-0")).await;
    plain
        .subscribe_with(&[("rap/t", sub_opts(1, false, false, 2))], &Props::new())
        .await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rap-pub")).await;
    retain(&mut publ, "rap/t", b"r", 1).await;
    publ.publish(Pub::new("rap/t", b"n").qos(1, 0)).await;

    let a = rap.recv_publish_acked().await;
    let b = rap.recv_publish_acked().await;
    assert_eq!((a.payload.as_slice(), a.retain), (&b"r"[..], true));
    assert_eq!((b.payload.as_slice(), b.retain), (&b"n"[..], false));
    let a = plain.recv_publish_acked().await;
    let b = plain.recv_publish_acked().await;
    assert_eq!((a.payload.as_slice(), a.retain), (&b"r"[..], false));
    assert_eq!((b.payload.as_slice(), b.retain), (&b"n"[..], false));
    hub.finish();
}

/// Retained messages through rumqttc (v5 publisher, v4 subscriber).
#[tokio::test]
async fn rumqttc_retained() {
    let hub = Hub::start();
    let mut publ = V5Client::connect(&hub, "rq-ret-pub").await;
    publ.client
        .publish(
            "rq/ret",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            true,
            "stay",
        )
        .await
        .expect("publish");
    publ.wait_publish_done().await;
    let mut sub = V4Client::connect(&hub, "rq-ret-sub").await;
    sub.subscribe("rq/#", rumqttc::QoS::AtLeastOnce).await;
    let p = sub
        .recv_publish(RECV_TIMEOUT)
        .await
        .expect("retained publish");
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("rq/ret", &b"stay"[..], true)
    );
    hub.finish();
}
