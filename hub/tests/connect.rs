//! CONNECT handling: protocol versions, client identifiers, keepalive, takeover.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn accepts_mqtt_3_1_1() {
    let hub = Hub::start();
    let (c, ack) = RawClient::connect(hub.addr(), Connect::v4("c311")).await;
    assert_eq!(
        ack,
        Incoming::ConnAck {
            session_present: false,
            code: 0,
            props: Properties::default()
        }
    );
    c.disconnect().await;
    let client = V4Client::connect(&hub, "rumqttc-v4").await;
    assert_eq!(client.connack.code, rumqttc::ConnectReturnCode::Success);
    client.disconnect().await;
    hub.finish();
}

#[tokio::test]
async fn accepts_mqtt_5() {
    let hub = Hub::start();
    let (c, ack) = RawClient::connect(hub.addr(), Connect::v5("c5")).await;
    let Incoming::ConnAck {
        session_present,
        code,
        ..
    } = ack
    else {
        unreachable!()
    };
    assert_eq!((session_present, code), (false, 0));
    c.disconnect().await;
    let client = V5Client::connect(&hub, "rumqttc-v5").await;
    assert_eq!(
        client.connack.code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
    );
    client.disconnect().await;
    hub.finish();
}

/// MQTT-3.1.2-2: an unsupported protocol level gets CONNACK 0x01 and the connection closes.
#[tokio::test]
async fn rejects_protocol_level_3_with_connack_0x01() {
    let hub = Hub::start();
    let mut c = RawClient::tcp(hub.addr()).await;
    c.level = 3;
    c.send(
        &Connect {
            level: 3,
            ..Connect::v4("old")
        }
        .encode(),
    )
    .await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(
            got.as_slice(),
            [Incoming::ConnAck {
                code: 0x01,
                session_present: false,
                ..
            }]
        ),
        "expected CONNACK 0x01 then close, got {got:?}"
    );
    hub.finish();
}

/// MQTT 5.0 §3.1.2.2: an unknown protocol version gets CONNACK 0x84 (Unsupported Protocol
/// Version) and the connection closes.
#[tokio::test]
async fn rejects_protocol_level_6_with_connack_0x84() {
    let hub = Hub::start();
    let mut c = RawClient::tcp(hub.addr()).await;
    c.level = V5;
    c.send(
        &Connect {
            level: 6,
            ..Connect::v5("future")
        }
        .encode(),
    )
    .await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(
            got.as_slice(),
            [Incoming::ConnAck {
                code: 0x84,
                session_present: false,
                ..
            }]
        ),
        "expected CONNACK 0x84 then close, got {got:?}"
    );
    hub.finish();
}

/// MQTT-3.1.0-1: the first packet must be CONNECT; anything else closes the connection.
#[tokio::test]
async fn first_packet_not_connect_closes_connection() {
    let hub = Hub::start();
    let mut c = RawClient::tcp(hub.addr()).await;
    c.send(&PINGREQ).await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        got.iter()
            .all(|p| !matches!(p, Incoming::PingResp | Incoming::ConnAck { code: 0, .. })),
        "hub answered a packet sent before CONNECT: {got:?}"
    );
    let mut c = RawClient::tcp(hub.addr()).await;
    c.send(&Pub::new("t", b"x").encode(V311)).await;
    c.expect_closed(RECV_TIMEOUT).await;
    hub.finish();
}

/// A second CONNECT on an established connection is a protocol violation (MQTT-3.1.0-2).
#[tokio::test]
async fn second_connect_closes_connection() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("twice")).await;
    c.send(&Connect::v5("twice").encode()).await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    for p in &got {
        if let Incoming::Disconnect { reason, .. } = p {
            assert_eq!(*reason, 0x82, "v5 DISCONNECT reason for a second CONNECT");
        } else {
            panic!("unexpected packet after second CONNECT: {p:?}");
        }
    }
    hub.finish();
}

/// A connection that never sends CONNECT is closed after `connect_timeout`.
#[tokio::test]
async fn silent_connection_closed_after_connect_timeout() {
    let hub = Hub::with_session("connect_timeout = \"1s\"");
    let mut c = RawClient::tcp(hub.addr()).await;
    let start = Instant::now();
    let got = c.expect_closed(Duration::from_secs(5)).await;
    assert!(got.is_empty(), "unexpected packets: {got:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "closed too early: {:?}",
        start.elapsed()
    );
    hub.finish();
}

/// MQTT 5.0 §3.1.3.1: an empty client id is accepted and the hub assigns one, returned in the
/// Assigned Client Identifier property.
#[tokio::test]
async fn v5_empty_client_id_gets_assigned_identifier() {
    let hub = Hub::start();
    let (c, ack) = RawClient::connect(hub.addr(), Connect::v5("")).await;
    let Incoming::ConnAck { code: 0, props, .. } = ack else {
        panic!("refused: {ack:?}")
    };
    let first = props
        .str(prop::ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier")
        .to_string();
    assert!(!first.is_empty());
    let (c2, ack2) = RawClient::connect(hub.addr(), Connect::v5("")).await;
    let Incoming::ConnAck {
        code: 0,
        props: props2,
        ..
    } = ack2
    else {
        panic!("refused: {ack2:?}")
    };
    let second = props2
        .str(prop::ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier");
    assert_ne!(first, second, "assigned identifiers must be unique");
    c.disconnect().await;
    c2.disconnect().await;
    hub.finish();
}

/// MQTT-3.1.3-6/7: 3.1.1 accepts an empty client id only with clean session = 1.
#[tokio::test]
async fn v311_empty_client_id_needs_clean_session() {
    let hub = Hub::start();
    let (c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("")).await;
    c.disconnect().await;

    let mut c = RawClient::tcp(hub.addr()).await;
    c.send(&Connect::v4("").clean(false).encode()).await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(
            got.as_slice(),
            [Incoming::ConnAck {
                code: 0x02,
                session_present: false,
                ..
            }]
        ),
        "expected CONNACK 0x02 (identifier rejected) then close, got {got:?}"
    );
    hub.finish();
}

/// MQTT-3.1.2-24: a client silent for 1.5 × keepalive is disconnected, not earlier.
#[tokio::test]
async fn keepalive_enforced_at_one_and_a_half_times() {
    let hub = Hub::start();
    for connect in [
        Connect::v4("ka4").keep_alive(1),
        Connect::v5("ka5").keep_alive(1),
    ] {
        let v5 = connect.level == V5;
        let (mut c, _) = RawClient::connect_ok(hub.addr(), connect).await;
        let start = Instant::now();
        let got = c.expect_closed(Duration::from_secs(5)).await;
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1400),
            "closed after {elapsed:?}, before 1.5 s"
        );
        assert!(
            elapsed <= Duration::from_millis(3500),
            "closed only after {elapsed:?}"
        );
        for p in got {
            match p {
                Incoming::Disconnect { reason, .. } if v5 => assert_eq!(reason, 0x8D),
                other => panic!("unexpected packet before keepalive close: {other:?}"),
            }
        }
    }
    hub.finish();
}

/// PINGREQ inside the keepalive window keeps the connection open and is answered.
#[tokio::test]
async fn pings_keep_connection_alive() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("pinger").keep_alive(1)).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        c.send(&PINGREQ).await;
        assert_eq!(c.recv().await, Incoming::PingResp);
    }
    c.disconnect().await;
    hub.finish();
}

/// MQTT-3.1.4-2: a second connection with the same client id takes over; the first is closed
/// (v5: DISCONNECT 0x8E Session taken over).
#[tokio::test]
async fn duplicate_client_id_takes_over() {
    let hub = Hub::start();
    let (mut old, _) = RawClient::connect_ok(hub.addr(), Connect::v5("dup")).await;
    let (mut new, _) = RawClient::connect_ok(hub.addr(), Connect::v5("dup")).await;
    let got = old.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(got.as_slice(), [Incoming::Disconnect { reason: 0x8E, .. }]),
        "old connection should get DISCONNECT 0x8E, got {got:?}"
    );
    new.subscribe("dup/t", 0).await;
    new.publish(Pub::new("dup/t", b"still here")).await;
    assert_eq!(new.recv_publish().await.payload, b"still here");

    let (mut old4, _) = RawClient::connect_ok(hub.addr(), Connect::v4("dup4")).await;
    let (new4, _) = RawClient::connect_ok(hub.addr(), Connect::v4("dup4")).await;
    let got = old4.expect_closed(RECV_TIMEOUT).await;
    assert!(
        got.is_empty(),
        "3.1.1 takeover closes without a packet, got {got:?}"
    );
    new4.disconnect().await;
    hub.finish();
}

/// MQTT-3.1.2-3: the reserved CONNECT flag must be 0, otherwise the connection is closed.
#[tokio::test]
async fn reserved_connect_flag_closes_connection() {
    let hub = Hub::start();
    let mut bytes = Connect::v4("reserved").encode();
    // Fixed header (2 bytes) + protocol name (6) + level (1) → connect flags at index 9.
    bytes[9] |= 0x01;
    let mut c = RawClient::tcp(hub.addr()).await;
    c.send(&bytes).await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        got.iter()
            .all(|p| !matches!(p, Incoming::ConnAck { code: 0, .. })),
        "malformed CONNECT accepted: {got:?}"
    );
    hub.finish();
}

/// Expects the hub to refuse `connect`: either a CONNACK with a failure code (then close) or
/// a plain close. Returns the CONNACK code if one was sent.
async fn expect_refused(hub: &Hub, connect_bytes: &[u8], level: u8) -> Option<u8> {
    let mut c = RawClient::tcp(hub.addr()).await;
    c.level = level;
    let _ = c.try_send(connect_bytes).await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    match got.as_slice() {
        [] => None,
        [
            Incoming::ConnAck {
                code,
                session_present: false,
                ..
            },
        ] if *code >= 0x80 || (level != V5 && *code != 0) => Some(*code),
        other => panic!("expected refusal, got {other:?}"),
    }
}

/// Invalid CONNECT packets are refused (MQTT-3.1.2-11/13/22, MQTT 5.0 §3.1.2.11).
#[tokio::test]
async fn invalid_connect_packets_refused() {
    let hub = Hub::start();
    // Will QoS 3.
    let mut will = Will::new("w", b"x");
    will.qos = 3;
    expect_refused(&hub, &Connect::v4("wq3").will(will).encode(), V311).await;
    // Will QoS set without the will flag.
    let mut bytes = Connect::v4("wq-no-flag").encode();
    bytes[9] |= 0x08;
    expect_refused(&hub, &bytes, V311).await;
    // Will retain set without the will flag.
    let mut bytes = Connect::v5("wr-no-flag").encode();
    bytes[9] |= 0x20;
    expect_refused(&hub, &bytes, V5).await;
    // 3.1.1: password without user name.
    let mut c = Connect::v4("pw-no-user");
    c.password = Some(b"secret".to_vec());
    expect_refused(&hub, &c.encode(), V311).await;
    // v5: Receive Maximum 0, Maximum Packet Size 0, and a repeated property are Protocol Errors.
    for props in [
        Props::new().u16(prop::RECEIVE_MAXIMUM, 0),
        Props::new().u32(prop::MAXIMUM_PACKET_SIZE, 0),
        Props::new()
            .u32(prop::SESSION_EXPIRY, 1)
            .u32(prop::SESSION_EXPIRY, 2),
    ] {
        let code = expect_refused(&hub, &Connect::v5("bad-prop").props(props).encode(), V5).await;
        assert!(
            matches!(code, None | Some(0x81 | 0x82)),
            "CONNACK code {code:?}"
        );
    }
    // The hub still accepts a valid CONNECT afterwards.
    let (c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("valid")).await;
    c.disconnect().await;
    hub.finish();
}

/// User name and password are accepted (no authentication configured); v5 allows a password
/// without a user name.
#[tokio::test]
async fn credentials_accepted_without_auth() {
    let hub = Hub::start();
    let mut c = Connect::v4("creds");
    c.username = Some("user".into());
    c.password = Some(b"pass".to_vec());
    let (c, _) = RawClient::connect_ok(hub.addr(), c).await;
    c.disconnect().await;
    let mut c = Connect::v5("pw-only");
    c.password = Some(b"pass".to_vec());
    let (c, _) = RawClient::connect_ok(hub.addr(), c).await;
    c.disconnect().await;
    hub.finish();
}

/// Keep alive 0 turns the keepalive mechanism off (MQTT 3.1.2.10).
#[tokio::test]
async fn keepalive_zero_never_times_out() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("ka0").keep_alive(0)).await;
    c.expect_silence(Duration::from_millis(2500)).await;
    c.send(&PINGREQ).await;
    assert_eq!(c.recv().await, Incoming::PingResp);
    hub.finish();
}

/// MQTT-3.14.2-2: a v5 client that connected with Session Expiry 0 must not set a non-zero
/// expiry at DISCONNECT; the hub answers with DISCONNECT 0x82.
#[tokio::test]
async fn v5_disconnect_cannot_raise_zero_session_expiry() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("raise")).await;
    c.send(&disconnect_v5(
        0,
        &Props::new().u32(prop::SESSION_EXPIRY, 60),
    ))
    .await;
    let got = c.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(got.as_slice(), [Incoming::Disconnect { reason: 0x82, .. }]),
        "got {got:?}"
    );
    hub.finish();
}

/// An Authentication Method the hub does not support is refused (MQTT 5.0 §4.12: CONNACK
/// 0x8C Bad authentication method or 0x87 Not authorized, then close).
#[tokio::test]
async fn v5_unsupported_authentication_method_refused() {
    let hub = Hub::start();
    let connect = Connect::v5("auth").props(Props::new().str(0x15, "SCRAM-SHA-1"));
    let code = expect_refused(&hub, &connect.encode(), V5).await;
    assert!(matches!(code, Some(0x8C | 0x87)), "CONNACK code {code:?}");
    hub.finish();
}

/// Long client identifiers (beyond the 23 bytes every server must accept) are accepted.
#[tokio::test]
async fn long_client_identifier_accepted() {
    let hub = Hub::start();
    let id = "gateway-".repeat(16);
    let (c, _) = RawClient::connect_ok(hub.addr(), Connect::v4(&id)).await;
    c.disconnect().await;
    hub.finish();
}

/// Any control packet counts as keepalive activity, not only PINGREQ.
#[tokio::test]
async fn publishing_keeps_connection_alive() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("busy").keep_alive(1)).await;
    for i in 0..5u8 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        c.send(&Pub::new("busy/t", &[i]).encode(V5)).await;
    }
    c.send(&PINGREQ).await;
    assert_eq!(c.recv().await, Incoming::PingResp);
    hub.finish();
}
