//! Quality of service: QoS 0, 1 and 2 in both directions, packet identifiers, QoS
//! downgrade, redelivery on reconnect and in-flight windows.

mod common;

use std::collections::HashSet;

use common::*;

/// Success, or v5 0x10 No matching subscribers (also a success).
fn success(reason: u8) -> bool {
    reason == 0x00 || reason == 0x10
}

/// The hub acknowledges client publishes per QoS: none for 0, PUBACK for 1,
/// PUBREC → PUBREL → PUBCOMP for 2, each with the client's packet id.
#[tokio::test]
async fn inbound_qos_flows_acknowledged() {
    let hub = Hub::start();
    for connect in [Connect::v4("in4"), Connect::v5("in5")] {
        let (mut c, _) = RawClient::connect_ok(hub.addr(), connect).await;
        c.send(&Pub::new("in/t", b"0").encode(c.level)).await;
        c.send(&Pub::new("in/t", b"1").qos(1, 7).encode(c.level))
            .await;
        assert!(success(c.expect_ack(PUBACK, 7).await));
        c.send(&Pub::new("in/t", b"2").qos(2, 8).encode(c.level))
            .await;
        assert!(success(c.expect_ack(PUBREC, 8).await));
        c.send(&ack_packet(0x62, 8)).await;
        assert_eq!(c.expect_ack(PUBCOMP, 8).await, 0);
        c.disconnect().await;
    }
    hub.finish();
}

/// Delivered QoS = min(publish QoS, subscription QoS) for all nine combinations
/// (MQTT-3.8.4-6 / v5 §4.3), and the hub runs the outbound QoS 2 flow.
#[tokio::test]
async fn delivered_qos_is_minimum_of_publish_and_subscription() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let (mut sub, _) = RawClient::connect_ok(
            hub.addr(),
            Connect {
                level,
                ..Connect::v4("min-sub")
            },
        )
        .await;
        for sq in 0..3u8 {
            sub.subscribe(&format!("min/{sq}"), sq).await;
        }
        let (mut publ, _) = RawClient::connect_ok(
            hub.addr(),
            Connect {
                level,
                ..Connect::v4("min-pub")
            },
        )
        .await;
        for sq in 0..3u8 {
            for pq in 0..3u8 {
                let payload = format!("{sq}{pq}");
                publ.publish(Pub::new(&format!("min/{sq}"), payload.as_bytes()).qos(pq, 0))
                    .await;
                let p = sub.recv_publish().await;
                assert_eq!(p.payload, payload.as_bytes());
                assert_eq!(p.qos, sq.min(pq), "sub QoS {sq}, publish QoS {pq}");
                assert!(!p.dup, "first delivery must have DUP=0");
                if p.qos > 0 {
                    assert_ne!(p.pid, 0, "QoS > 0 delivery needs a non-zero packet id");
                }
                sub.ack(&p).await;
            }
        }
        sub.expect_no_publish(QUIET).await;
        sub.disconnect().await;
        publ.disconnect().await;
    }
    hub.finish();
}

/// Messages from one publisher on one topic arrive in order (MQTT-4.6.0-6).
#[tokio::test]
async fn qos1_messages_arrive_in_order() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("order-sub")).await;
    sub.subscribe("order/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("order-pub")).await;
    for i in 0..30u32 {
        publ.publish(Pub::new("order/t", i.to_string().as_bytes()).qos(1, 0))
            .await;
    }
    for i in 0..30u32 {
        let p = sub.recv_publish_acked().await;
        assert_eq!(p.payload, i.to_string().as_bytes());
    }
    hub.finish();
}

/// Unacknowledged outbound messages carry distinct non-zero packet ids.
#[tokio::test]
async fn outbound_packet_ids_are_unique_while_in_flight() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("ids-sub")).await;
    sub.subscribe("ids/#", 2).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("ids-pub")).await;
    for i in 0..10u8 {
        let qos = 1 + i % 2;
        publ.publish(Pub::new("ids/t", &[i]).qos(qos, 0)).await;
    }
    let mut ids = HashSet::new();
    for _ in 0..10 {
        let p = sub.recv_publish().await;
        assert_ne!(p.pid, 0);
        assert!(
            ids.insert(p.pid),
            "packet id {} reused while unacknowledged",
            p.pid
        );
    }
    hub.finish();
}

/// QoS 2 is exactly once: a re-sent PUBLISH (DUP=1, same packet id) before PUBREL is not
/// delivered a second time.
#[tokio::test]
async fn qos2_duplicate_publish_delivered_once() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("eo-sub")).await;
    sub.subscribe("eo/t", 2).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("eo-pub")).await;
    let first = Pub::new("eo/t", b"once").qos(2, 42);
    publ.send(&first.encode(V311)).await;
    publ.expect_ack(PUBREC, 42).await;
    let dup = Pub { dup: true, ..first };
    publ.send(&dup.encode(V311)).await;
    publ.expect_ack(PUBREC, 42).await;
    publ.send(&ack_packet(0x62, 42)).await;
    publ.expect_ack(PUBCOMP, 42).await;
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.payload, b"once");
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

/// MQTT-4.4.0-1: on reconnect of a persistent session the hub re-sends unacknowledged
/// PUBLISH packets with DUP=1 and their original packet ids, and unacknowledged PUBRELs.
#[tokio::test]
async fn unacked_messages_resent_with_dup_on_reconnect() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let id = format!("dup-{level}");
        let connect = || {
            let c = Connect {
                level,
                ..Connect::v4(&id)
            }
            .clean(false);
            if level == V5 { c.session_expiry(60) } else { c }
        };
        // v5: Clean Start = 1 with an expiry starts a fresh session that outlives the
        // connection; 3.1.1 needs clean session = 0 for that (this hub has no prior one).
        let first = connect().clean(level == V5);
        let (mut sub, present) = RawClient::connect_ok(hub.addr(), first).await;
        assert!(!present, "a new session is never present");
        let topic = format!("dup/{level}");
        sub.subscribe(&format!("{topic}/#"), 2).await;

        let (mut publ, _) =
            RawClient::connect_ok(hub.addr(), Connect::v4(&format!("dup-pub-{level}"))).await;
        publ.publish(Pub::new(&format!("{topic}/q1"), b"one").qos(1, 0))
            .await;
        publ.publish(Pub::new(&format!("{topic}/q2"), b"two").qos(2, 0))
            .await;
        publ.publish(Pub::new(&format!("{topic}/q2rel"), b"three").qos(2, 0))
            .await;

        let q1 = sub.recv_publish().await;
        let q2 = sub.recv_publish().await;
        let q2rel = sub.recv_publish().await;
        assert_eq!((q1.qos, q2.qos, q2rel.qos), (1, 2, 2));
        // Acknowledge only the first step of the third message, then vanish.
        sub.send(&ack_packet(0x50, q2rel.pid)).await;
        sub.expect_ack(PUBREL, q2rel.pid).await;
        sub.drop_connection().await;

        let (mut sub, present) = RawClient::connect_ok(hub.addr(), connect()).await;
        assert!(present, "persistent session must be present on reconnect");
        let mut got_q1 = None;
        let mut got_q2 = None;
        let mut got_rel = false;
        while got_q1.is_none() || got_q2.is_none() || !got_rel {
            match sub.recv().await {
                Incoming::Publish(p) if p.payload == b"one" => got_q1 = Some(p),
                Incoming::Publish(p) if p.payload == b"two" => got_q2 = Some(p),
                Incoming::Ack {
                    kind: PUBREL, pid, ..
                } if pid == q2rel.pid => got_rel = true,
                other => panic!("unexpected packet after reconnect: {other:?}"),
            }
        }
        let (r1, r2) = (
            got_q1.unwrap_or_else(|| unreachable!()),
            got_q2.unwrap_or_else(|| unreachable!()),
        );
        assert!(r1.dup && r2.dup, "re-sent PUBLISH must have DUP=1");
        assert_eq!((r1.pid, r2.pid), (q1.pid, q2.pid), "original packet ids");
        assert_eq!((r1.qos, r2.qos), (1, 2));
        sub.ack(&r1).await;
        sub.ack(&r2).await;
        sub.send(&ack_packet(0x70, q2rel.pid)).await;
        sub.expect_no_publish(QUIET).await;
        sub.disconnect().await;

        // Everything acknowledged: nothing is re-sent on the next reconnect.
        let (mut sub, _) = RawClient::connect_ok(hub.addr(), connect()).await;
        sub.expect_silence(QUIET).await;
        sub.disconnect().await;
    }
    hub.finish();
}

/// MQTT 5.0 §4.9: with Receive Maximum = 2 the hub keeps at most two QoS 1/2 messages
/// unacknowledged, and sends the next as soon as one is acknowledged.
#[tokio::test]
async fn v5_receive_maximum_limits_in_flight_messages() {
    let hub = Hub::start();
    let connect = Connect::v5("rm-sub").props(Props::new().u16(prop::RECEIVE_MAXIMUM, 2));
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), connect).await;
    sub.subscribe("rm/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rm-pub")).await;
    for i in 0..5u8 {
        publ.publish(Pub::new("rm/t", &[i]).qos(1, 0)).await;
    }
    let a = sub.recv_publish().await;
    let b = sub.recv_publish().await;
    assert_eq!(
        (a.payload.as_slice(), b.payload.as_slice()),
        (&[0u8][..], &[1u8][..])
    );
    sub.expect_no_publish(QUIET).await;
    sub.ack(&a).await;
    let c = sub.recv_publish().await;
    assert_eq!(c.payload, [2]);
    sub.expect_no_publish(QUIET).await;
    sub.ack(&b).await;
    sub.ack(&c).await;
    for i in 3..5u8 {
        assert_eq!(sub.recv_publish_acked().await.payload, [i]);
    }
    hub.finish();
}

/// `max_inflight` bounds the outbound window for 3.1.1 clients too.
#[tokio::test]
async fn max_inflight_limits_v311_window() {
    let hub = Hub::with_session("max_inflight = 2");
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("mi-sub")).await;
    sub.subscribe("mi/t", 2).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("mi-pub")).await;
    for i in 0..4u8 {
        publ.publish(Pub::new("mi/t", &[i]).qos(2, 0)).await;
    }
    let a = sub.recv_publish().await;
    let _b = sub.recv_publish().await;
    sub.expect_no_publish(QUIET).await;
    sub.ack(&a).await;
    assert_eq!(sub.recv_publish().await.payload, [2]);
    hub.finish();
}

/// The hub announces its Receive Maximum; a v5 client exceeding it gets DISCONNECT 0x93.
#[tokio::test]
async fn v5_client_exceeding_hub_receive_maximum_disconnected() {
    let hub = Hub::with_session("receive_maximum = 2");
    let (mut c, ack) = RawClient::connect(hub.addr(), Connect::v5("rm-over")).await;
    let Incoming::ConnAck { code: 0, props, .. } = ack else {
        panic!("refused: {ack:?}")
    };
    assert_eq!(props.u32(prop::RECEIVE_MAXIMUM), Some(2));
    for pid in 1..=3u16 {
        // QoS 2 without PUBREL: each stays unacknowledged.
        if !c
            .try_send(&Pub::new("rm/over", b"x").qos(2, pid).encode(V5))
            .await
        {
            break;
        }
    }
    let got = c.expect_closed(RECV_TIMEOUT).await;
    let reasons: Vec<u8> = got
        .iter()
        .filter_map(|p| match p {
            Incoming::Disconnect { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec![0x93], "packets before close: {got:?}");
    hub.finish();
}

/// rumqttc clients, both protocol versions, all QoS levels end to end.
#[tokio::test]
async fn rumqttc_round_trip_all_qos() {
    let hub = Hub::start();
    let mut sub4 = V4Client::connect(&hub, "rq-sub4").await;
    sub4.subscribe("rq/#", rumqttc::QoS::ExactlyOnce).await;
    let mut sub5 = V5Client::connect(&hub, "rq-sub5").await;
    sub5.subscribe("rq/#", rumqttc::v5::mqttbytes::QoS::ExactlyOnce)
        .await;
    let mut pub4 = V4Client::connect(&hub, "rq-pub4").await;
    let mut pub5 = V5Client::connect(&hub, "rq-pub5").await;
    let qos4 = [
        rumqttc::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
    ];
    let qos5 = [
        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    ];
    for (i, (q4, q5)) in qos4.into_iter().zip(qos5).enumerate() {
        pub4.client
            .publish(format!("rq/v4/{i}"), q4, false, format!("v4-{i}"))
            .await
            .expect("publish");
        if i > 0 {
            pub4.wait_publish_done().await;
        }
        pub5.client
            .publish(format!("rq/v5/{i}"), q5, false, format!("v5-{i}"))
            .await
            .expect("publish");
        if i > 0 {
            pub5.wait_publish_done().await;
        }
        let mut got4 = Vec::new();
        let mut got5 = Vec::new();
        for _ in 0..2 {
            let p = sub4
                .recv_publish(RECV_TIMEOUT)
                .await
                .expect("v4 subscriber publish");
            assert_eq!(p.qos, q4);
            got4.push(String::from_utf8_lossy(&p.payload).into_owned());
            let p = sub5
                .recv_publish(RECV_TIMEOUT)
                .await
                .expect("v5 subscriber publish");
            assert_eq!(p.qos, q5);
            got5.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
        got4.sort();
        got5.sort();
        let want = vec![format!("v4-{i}"), format!("v5-{i}")];
        assert_eq!(got4, want);
        assert_eq!(got5, want);
    }
    hub.finish();
}

/// PUBREL for a packet id the hub does not know: PUBCOMP anyway (3.1.1), with reason 0x92
/// Packet Identifier not found (v5).
#[tokio::test]
async fn pubrel_for_unknown_packet_id() {
    let hub = Hub::start();
    for (connect, want) in [(Connect::v4("rel4"), 0x00), (Connect::v5("rel5"), 0x92)] {
        let (mut c, _) = RawClient::connect_ok(hub.addr(), connect).await;
        c.send(&ack_packet(0x62, 999)).await;
        assert_eq!(c.expect_ack(PUBCOMP, 999).await, want);
        c.disconnect().await;
    }
    hub.finish();
}

/// QoS 1/2 PUBLISH with packet id 0 is malformed (MQTT-2.3.1-1).
#[tokio::test]
async fn qos1_publish_with_packet_id_zero_rejected() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pid0")).await;
    c.send(&Pub::new("pid0/t", b"x").qos(1, 0).encode(V5)).await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(
            got.as_slice(),
            [Incoming::Disconnect {
                reason: 0x81 | 0x82,
                ..
            }]
        ),
        "got {got:?}"
    );
    hub.finish();
}

/// MQTT-4.6.0-2/3: acknowledgements are sent in the order the PUBLISH packets arrived.
#[tokio::test]
async fn acks_sent_in_publish_order() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("ack-order")).await;
    let mut bytes = Vec::new();
    for pid in 1..=20u16 {
        let qos = if pid % 2 == 0 { 2 } else { 1 };
        bytes.extend(
            Pub::new("ack/order", &pid.to_be_bytes())
                .qos(qos, pid)
                .encode(V311),
        );
    }
    c.send(&bytes).await;
    for pid in 1..=20u16 {
        match c.recv().await {
            Incoming::Ack { kind, pid: got, .. } => {
                assert_eq!(got, pid, "ack out of order");
                assert_eq!(kind, if pid % 2 == 0 { PUBREC } else { PUBACK });
            }
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    hub.finish();
}

/// A large payload (256 KiB, under the default 1 MiB limit) arrives intact.
#[tokio::test]
async fn large_payload_intact() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("large-sub")).await;
    sub.subscribe("large/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v4("large-pub")).await;
    let payload: Vec<u8> = (0..256 * 1024u32)
        .map(|i| i.to_le_bytes()[0] ^ i.to_le_bytes()[1])
        .collect();
    publ.publish(Pub::new("large/t", &payload).qos(1, 0)).await;
    let p = sub.recv_publish_acked().await;
    assert!(
        p.payload == payload,
        "payload of {} bytes differs",
        p.payload.len()
    );
    hub.finish();
}

/// A stream of 1000 QoS 1 messages through rumqttc arrives complete and in order.
#[tokio::test]
async fn rumqttc_thousand_messages_in_order() {
    let hub = Hub::start();
    let mut sub = V5Client::connect(&hub, "stream-sub").await;
    sub.subscribe("stream/t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    let publ = V4Client::connect(&hub, "stream-pub").await;
    let client = publ.client.clone();
    tokio::spawn(async move {
        for i in 0..1000u32 {
            if client
                .publish(
                    "stream/t",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    i.to_be_bytes().to_vec(),
                )
                .await
                .is_err()
            {
                return;
            }
        }
    });
    for i in 0..1000u32 {
        let p = sub
            .recv_publish(RECV_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("message {i} missing"));
        assert_eq!(&p.payload[..], &i.to_be_bytes()[..]);
    }
    hub.finish();
}

/// A packet id is free again once its QoS 2 flow completed: the next PUBLISH with the same
/// id is a new message.
#[tokio::test]
async fn qos2_packet_id_reusable_after_pubcomp() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("reuse-sub")).await;
    sub.subscribe("reuse/t", 2).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("reuse-pub")).await;
    for payload in [&b"first"[..], b"second"] {
        assert!(success(
            publ.publish(Pub::new("reuse/t", payload).qos(2, 5)).await
        ));
        assert_eq!(sub.recv_publish_acked().await.payload, payload);
    }
    hub.finish();
}

/// Inbound QoS 2 state survives a reconnect of a persistent session: the PUBREL sent on the
/// new connection completes the flow (PUBCOMP 0x00) and the message is delivered once.
#[tokio::test]
async fn inbound_qos2_state_survives_reconnect() {
    let hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v4("in2-sub")).await;
    sub.subscribe("in2/t", 2).await;
    let connect = || Connect::v5("in2-pub").clean(false).session_expiry(60);
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), connect().clean(true)).await;
    publ.send(&Pub::new("in2/t", b"once").qos(2, 77).encode(V5))
        .await;
    publ.expect_ack(PUBREC, 77).await;
    publ.drop_connection().await;
    let (mut publ, present) = RawClient::connect_ok(hub.addr(), connect()).await;
    assert!(present);
    publ.send(&ack_packet(0x62, 77)).await;
    assert_eq!(publ.expect_ack(PUBCOMP, 77).await, 0x00);
    assert_eq!(sub.recv_publish_acked().await.payload, b"once");
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}
