//! The client against a scripted broker: a mock transport that replays
//! encoded broker packets, records what the client writes, and injects faults
//! (reads of one byte at a time, a write failure after N writes, end of stream
//! mid-packet, read timeouts, malformed bytes).

use std::convert::Infallible;

use embedded_io::ErrorKind;
use tern_client::{
    Buffers, Client, ConfigBuilder, Error, Event, ProtocolError, ProtocolVersion, QoS, ReasonCode,
};
use tern_mqtt::{
    ConnAck, ConnAckProperties, DecodeOptions, Disconnect, Packet, PubAck, Publish, SubAck, decode,
};

mod common;
use common::{AsyncMock, Mock, MockError, block_on};

fn encode(packet: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = packet
        .encode(version, &mut buf)
        .expect("encode test packet");
    buf.truncate(n);
    buf
}

fn parse(bytes: &[u8], version: ProtocolVersion) -> Packet<'_> {
    decode(bytes, &DecodeOptions::new(version))
        .expect("decode")
        .0
}

const V5: ProtocolVersion = ProtocolVersion::V5;

fn connack(session_present: bool) -> Packet<'static> {
    Packet::ConnAck(ConnAck {
        session_present,
        ..Default::default()
    })
}

fn publish_in<'a>(topic: &'a str, payload: &'a [u8], qos: QoS, packet_id: u16) -> Packet<'a> {
    Packet::Publish(Publish {
        qos,
        packet_id,
        topic,
        payload,
        ..Default::default()
    })
}

#[test]
fn connect_sends_v5_connect_and_reads_connack() {
    let config = ConfigBuilder::new("dev-1")
        .unwrap()
        .keep_alive(30)
        .clean_start(false)
        .session_expiry(600)
        .will("dev/1/status", b"offline", QoS::AtLeastOnce, true)
        .unwrap()
        .credentials("user", Some(b"pw"))
        .unwrap()
        .build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 4> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(true));
    let info = client.connect(&mut io, 0).unwrap();
    assert!(info.session_present);
    assert_eq!(info.resent, 0);
    assert!(client.session().is_connected());
    let sent = io.sent();
    assert_eq!(sent.len(), 1);
    let Packet::Connect(c) = parse(&sent[0], V5) else {
        panic!("expected CONNECT")
    };
    assert_eq!(c.client_id, "dev-1");
    assert_eq!(c.keep_alive, 30);
    assert!(!c.clean_start);
    assert_eq!(c.properties.session_expiry_interval, Some(600));
    assert_eq!(c.properties.receive_maximum, Some(4));
    assert_eq!(c.properties.maximum_packet_size, Some(256));
    let will = c.will.expect("will");
    assert_eq!(
        (will.topic, will.payload, will.retain),
        ("dev/1/status", &b"offline"[..], true)
    );
    assert_eq!(c.username, Some("user"));
}

#[test]
fn v311_connect_and_refusal_return_code() {
    let v = ProtocolVersion::V311;
    let config = ConfigBuilder::new("old").unwrap().protocol(v).build();
    let (mut rx, mut tx) = ([0u8; 128], [0u8; 128]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock {
        version: v,
        ..Mock::default()
    };
    io.push(Packet::ConnAck(ConnAck {
        reason_code: ReasonCode::NotAuthorized,
        ..Default::default()
    }));
    assert_eq!(
        client.connect(&mut io, 0),
        Err(Error::Refused(ReasonCode::NotAuthorized))
    );
    assert!(!client.session().is_connected());
    let sent = io.sent();
    assert!(matches!(parse(&sent[0], v), Packet::Connect(c) if c.protocol_version == v));
}

#[test]
fn fragmented_reads_one_byte_at_a_time() {
    let config = ConfigBuilder::new("frag").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 4> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock {
        chunk: 1,
        ..Mock::default()
    };
    io.push(connack(false));
    io.push(publish_in("a/b", b"hello", QoS::AtLeastOnce, 9));
    io.push(publish_in("a/c", b"", QoS::AtMostOnce, 0));
    client.connect(&mut io, 0).unwrap();
    let mut got = Vec::new();
    for _ in 0..200 {
        if let Some(Event::Message(m)) = client.poll(&mut io, 1).unwrap() {
            got.push((m.topic.to_string(), m.payload.to_vec(), m.qos));
        }
        if got.len() == 2 {
            break;
        }
    }
    assert_eq!(
        got,
        vec![
            ("a/b".to_string(), b"hello".to_vec(), QoS::AtLeastOnce),
            ("a/c".to_string(), Vec::new(), QoS::AtMostOnce)
        ]
    );
    let sent = io.sent();
    assert!(
        matches!(parse(&sent[1], V5), Packet::PubAck(a) if a.packet_id == 9),
        "QoS 1 delivery is acknowledged"
    );
}

#[test]
fn publish_qos1_then_puback_frees_the_slot() {
    let config = ConfigBuilder::new("pub").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    let props = [("site", "north"), ("kind", "temp")];
    let a = client
        .publish(&mut io, "s/1", b"1", QoS::AtLeastOnce, &props, 0)
        .unwrap();
    let b = client
        .publish(&mut io, "s/2", b"2", QoS::AtLeastOnce, &[], 0)
        .unwrap();
    assert_ne!(a, b);
    assert_eq!(
        client.publish(&mut io, "s/3", b"3", QoS::AtLeastOnce, &[], 0),
        Err(Error::InflightFull)
    );
    assert_eq!(
        client.publish(&mut io, "s/0", b"0", QoS::AtMostOnce, &[], 0),
        Ok(0)
    );
    let sent = io.sent();
    let Packet::Publish(p) = parse(&sent[1], V5) else {
        panic!("expected PUBLISH")
    };
    assert_eq!(
        (p.topic, p.qos, p.packet_id, p.dup),
        ("s/1", QoS::AtLeastOnce, a, false)
    );
    let props: Vec<_> = p.properties.user_properties.iter().collect();
    assert_eq!(props, vec![("site", "north"), ("kind", "temp")]);

    io.push(Packet::PubAck(PubAck {
        packet_id: a,
        ..Default::default()
    }));
    assert_eq!(
        client.poll(&mut io, 0).unwrap(),
        Some(Event::Published {
            packet_id: a,
            reason: ReasonCode::Success
        })
    );
    assert_eq!(client.session().inflight_len(), 1);
    assert!(
        client
            .publish(&mut io, "s/3", b"3", QoS::AtLeastOnce, &[], 0)
            .is_ok()
    );
    assert_eq!(
        client.publish(&mut io, "s/3", b"3", QoS::ExactlyOnce, &[], 0),
        Err(Error::Unsupported)
    );
    assert!(matches!(
        client.publish(&mut io, "s/+", b"3", QoS::AtMostOnce, &[], 0),
        Err(Error::Topic(_))
    ));
}

#[test]
fn write_failure_keeps_the_publish_and_reconnect_resends_it_with_dup() {
    let config = ConfigBuilder::new("resend")
        .unwrap()
        .clean_start(false)
        .session_expiry(60)
        .build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 512]);
    let mut client: Client<'_, 4> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    // CONNECT and the first publish succeed, the second publish's write fails.
    let mut io = Mock {
        writes_left: Some(2),
        ..Mock::default()
    };
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    let first = client
        .publish(&mut io, "t/1", b"one", QoS::AtLeastOnce, &[], 0)
        .unwrap();
    let err = client
        .publish(&mut io, "t/2", b"two", QoS::AtLeastOnce, &[], 0)
        .unwrap_err();
    assert_eq!(err, Error::Transport(MockError(ErrorKind::BrokenPipe)));
    assert_eq!(client.session().inflight_len(), 2);

    let mut io = Mock::default();
    io.push(connack(true));
    let info = client.connect(&mut io, 10).unwrap();
    assert_eq!(info.resent, 2);
    let sent = io.sent();
    assert_eq!(sent.len(), 3);
    let Packet::Publish(p1) = parse(&sent[1], V5) else {
        panic!("expected PUBLISH")
    };
    let Packet::Publish(p2) = parse(&sent[2], V5) else {
        panic!("expected PUBLISH")
    };
    assert_eq!(
        (p1.packet_id, p1.dup, p1.payload),
        (first, true, &b"one"[..])
    );
    assert_eq!((p2.dup, p2.payload, p2.topic), (true, &b"two"[..], "t/2"));
}

#[test]
fn end_of_stream_mid_packet_is_connection_closed() {
    let config = ConfigBuilder::new("trunc").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    let bytes = encode(&publish_in("x/y", b"payload", QoS::AtMostOnce, 0), V5);
    io.input.extend(&bytes[..bytes.len() - 3]);
    io.eof = true;
    let mut result = Ok(false);
    for _ in 0..4 {
        result = client.poll(&mut io, 0).map(|e| e.is_some());
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(Error::ConnectionClosed));
    assert!(!client.session().is_connected());
}

#[test]
fn truncated_connack_during_connect() {
    let config = ConfigBuilder::new("trunc").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 64], [0u8; 64]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.input.extend([0x20, 0x03, 0x00]);
    io.eof = true;
    assert_eq!(client.connect(&mut io, 0), Err(Error::ConnectionClosed));
    // The same bytes on a read timeout instead of end of stream.
    let mut io = Mock::default();
    io.input.extend([0x20, 0x03, 0x00]);
    assert_eq!(client.connect(&mut io, 0), Err(Error::Timeout));
}

#[test]
fn malformed_packets_are_protocol_errors() {
    let cases: &[(&str, &[u8])] = &[
        ("reserved packet type 0", &[0x00, 0x00]),
        ("QoS 3 publish", &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]),
        (
            "bad remaining length",
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        ("PINGRESP with flags", &[0xD1, 0x00]),
        (
            "trailing bytes in PUBACK",
            &[0x40, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
        ),
        (
            "invalid UTF-8 topic",
            &[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00],
        ),
    ];
    for (name, bytes) in cases {
        let config = ConfigBuilder::new("mal").unwrap().build();
        let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
        let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
        let mut io = Mock::default();
        io.push(connack(false));
        client.connect(&mut io, 0).unwrap();
        io.input.extend(*bytes);
        let result = client.poll(&mut io, 0).map(|e| e.is_some());
        assert!(
            matches!(result, Err(Error::Protocol(ProtocolError::Malformed(_)))),
            "{name}: {result:?}"
        );
    }
}

#[test]
fn unexpected_packets_are_protocol_errors() {
    let config = ConfigBuilder::new("unexp").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    // A PUBLISH before CONNACK.
    let mut io = Mock::default();
    io.push(publish_in("a", b"", QoS::AtMostOnce, 0));
    assert!(matches!(
        client.connect(&mut io, 0),
        Err(Error::Protocol(ProtocolError::Unexpected(_)))
    ));
    // A second CONNACK.
    let mut io = Mock::default();
    io.push(connack(false));
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    assert!(matches!(
        client.poll(&mut io, 0),
        Err(Error::Protocol(ProtocolError::Unexpected(_)))
    ));
    // PINGREQ from the broker.
    let mut io = Mock::default();
    io.push(connack(false));
    io.input.extend([0xC0, 0x00]);
    client.connect(&mut io, 0).unwrap();
    assert!(matches!(
        client.poll(&mut io, 0),
        Err(Error::Protocol(ProtocolError::Unexpected(_)))
    ));
    assert_eq!(
        client.publish(&mut io, "a", b"", QoS::AtMostOnce, &[], 0),
        Err(Error::NotConnected)
    );
}

#[test]
fn broker_disconnect_reports_its_reason() {
    let config = ConfigBuilder::new("dc").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    io.push(Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::SessionTakenOver,
        ..Default::default()
    }));
    client.connect(&mut io, 0).unwrap();
    assert_eq!(
        client.poll(&mut io, 0).map(|e| e.is_some()),
        Err(Error::Disconnected(ReasonCode::SessionTakenOver))
    );
    assert!(!client.session().is_connected());
}

#[cfg(feature = "qos2")]
#[test]
fn incoming_qos2_is_delivered_once_and_completed() {
    use tern_mqtt::PubRel;
    let config = ConfigBuilder::new("q2").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    io.push(publish_in("q/2", b"x", QoS::ExactlyOnce, 5));
    let mut redelivery = publish_in("q/2", b"x", QoS::ExactlyOnce, 5);
    if let Packet::Publish(p) = &mut redelivery {
        p.dup = true;
    }
    io.push(redelivery);
    io.push(Packet::PubRel(PubRel {
        packet_id: 5,
        ..Default::default()
    }));
    assert!(
        matches!(client.poll(&mut io, 0), Ok(Some(Event::Message(m))) if m.qos == QoS::ExactlyOnce)
    );
    assert_eq!(
        client.poll(&mut io, 0),
        Ok(None),
        "redelivery reported once"
    );
    assert_eq!(client.poll(&mut io, 0), Ok(None));
    let sent = io.sent();
    let kinds: Vec<_> = sent.iter().map(|b| parse(b, V5).packet_type()).collect();
    use tern_mqtt::PacketType as T;
    assert_eq!(kinds, vec![T::Connect, T::PubRec, T::PubRec, T::PubComp]);
    let Packet::PubComp(c) = parse(&sent[3], V5) else {
        panic!("expected PUBCOMP")
    };
    assert_eq!((c.packet_id, c.reason_code), (5, ReasonCode::Success));
}

#[test]
fn subscribe_reports_suback_codes() {
    let config = ConfigBuilder::new("sub").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    let id = client
        .subscribe(
            &mut io,
            &[("a/#", QoS::AtLeastOnce), ("b/+", QoS::AtMostOnce)],
            0,
        )
        .unwrap();
    let codes = [ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized];
    io.push(Packet::SubAck(SubAck {
        packet_id: id,
        reason_codes: (&codes).into(),
        ..Default::default()
    }));
    match client.poll(&mut io, 0) {
        Ok(Some(Event::Subscribed {
            packet_id,
            reason_codes,
        })) => {
            assert_eq!(packet_id, id);
            assert_eq!(reason_codes.iter().collect::<Vec<_>>(), codes.to_vec());
        }
        other => panic!("expected SUBACK event, got {other:?}"),
    }
    assert_eq!(
        client.subscribe(&mut io, &[], 0),
        Err(Error::TooManyFilters)
    );
    assert!(matches!(
        client.subscribe(&mut io, &[("a/#/b", QoS::AtMostOnce)], 0),
        Err(Error::Topic(_))
    ));
    let sent = io.sent();
    let Packet::Subscribe(s) = parse(&sent[1], V5) else {
        panic!("expected SUBSCRIBE")
    };
    let filters: Vec<_> = s
        .filters
        .iter()
        .map(|f| (f.filter, f.options.qos))
        .collect();
    assert_eq!(
        filters,
        vec![("a/#", QoS::AtLeastOnce), ("b/+", QoS::AtMostOnce)]
    );
}

#[test]
fn keepalive_pings_and_times_out() {
    let config = ConfigBuilder::new("ka").unwrap().keep_alive(1).build();
    let (mut rx, mut tx) = ([0u8; 128], [0u8; 128]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    assert_eq!(client.session().next_deadline_ms(), Some(1000));
    assert_eq!(client.poll(&mut io, 999), Ok(None));
    assert_eq!(client.poll(&mut io, 1000), Ok(None));
    let sent = io.sent();
    assert_eq!(
        parse(&sent[1], V5),
        Packet::PingReq,
        "PINGREQ after one quiet interval"
    );
    // PINGRESP clears the outstanding ping.
    io.input.extend([0xD0, 0x00]);
    assert_eq!(client.poll(&mut io, 1500), Ok(None));
    assert_eq!(client.poll(&mut io, 2000), Ok(None));
    assert_eq!(parse(&io.sent()[0], V5), Packet::PingReq);
    // No answer to this one.
    assert_eq!(client.poll(&mut io, 2999), Ok(None));
    assert_eq!(client.poll(&mut io, 3000), Err(Error::Timeout));
    assert!(!client.session().is_connected());
}

#[test]
fn server_keep_alive_and_receive_maximum_win() {
    let config = ConfigBuilder::new("srv").unwrap().keep_alive(60).build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 8> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(Packet::ConnAck(ConnAck {
        properties: ConnAckProperties {
            server_keep_alive: Some(5),
            receive_maximum: Some(1),
            ..Default::default()
        },
        ..Default::default()
    }));
    client.connect(&mut io, 0).unwrap();
    assert_eq!(client.session().next_deadline_ms(), Some(5000));
    client
        .publish(&mut io, "a", b"", QoS::AtLeastOnce, &[], 0)
        .unwrap();
    assert_eq!(
        client.publish(&mut io, "a", b"", QoS::AtLeastOnce, &[], 0),
        Err(Error::InflightFull)
    );
}

#[test]
fn buffers_too_small_are_reported() {
    let config = ConfigBuilder::new("small").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 32], [0u8; 64]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    assert!(matches!(
        client.publish(&mut io, "a", &[0u8; 100], QoS::AtMostOnce, &[], 0),
        Err(Error::BufferTooSmall { available: 64, .. })
    ));
    // A QoS 1 publish that does not fit is not kept in flight.
    assert!(matches!(
        client.publish(&mut io, "a", &[0u8; 100], QoS::AtLeastOnce, &[], 0),
        Err(Error::BufferTooSmall { .. })
    ));
    assert_eq!(client.session().inflight_len(), 0);
    io.push(publish_in("big", &[7u8; 100], QoS::AtMostOnce, 0));
    let mut result = Ok(false);
    for _ in 0..4 {
        result = client.poll(&mut io, 0).map(|e| e.is_some());
        if result.is_err() {
            break;
        }
    }
    assert!(
        matches!(result, Err(Error::BufferTooSmall { available: 32, .. })),
        "{result:?}"
    );
}

#[test]
fn publish_postcard_serializes_into_scratch() {
    #[derive(serde::Serialize)]
    struct Reading {
        sensor: u16,
        millidegrees: i32,
    }
    let config = ConfigBuilder::new("pc").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 128], [0u8; 128]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    let reading = Reading {
        sensor: 3,
        millidegrees: -1500,
    };
    let mut scratch = [0u8; 16];
    client
        .publish_postcard(
            &mut io,
            "r",
            &reading,
            QoS::AtMostOnce,
            &[],
            &mut scratch,
            0,
        )
        .unwrap();
    let sent = io.sent();
    let Packet::Publish(p) = parse(&sent[1], V5) else {
        panic!("expected PUBLISH")
    };
    assert_eq!(p.payload, postcard_bytes(&reading).as_slice());
    let mut tiny = [0u8; 1];
    assert_eq!(
        client.publish_postcard(&mut io, "r", &reading, QoS::AtMostOnce, &[], &mut tiny, 0),
        Err(Error::Serialize)
    );

    fn postcard_bytes(r: &Reading) -> Vec<u8> {
        let mut buf = [0u8; 16];
        postcard::to_slice(r, &mut buf).unwrap().to_vec()
    }
}

/// Deterministic noise after a good CONNACK: whatever the bytes, the client
/// returns events or errors and never panics.
#[test]
fn random_broker_bytes_never_panic() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for case in 0..3000 {
        let config = ConfigBuilder::new("noise").unwrap().keep_alive(1).build();
        let (mut rx, mut tx) = ([0u8; 64], [0u8; 96]);
        let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
        let mut io = Mock {
            chunk: 1 + (case % 7),
            ..Mock::default()
        };
        io.push(connack(case % 2 == 0));
        client.connect(&mut io, 0).unwrap();
        let _ = client.publish(&mut io, "n", b"x", QoS::AtLeastOnce, &[], 0);
        let len = usize::try_from(next() % 48).unwrap();
        // Start with a plausible first byte half the time.
        let first = [0x30, 0x32, 0x34, 0x40, 0x62, 0x90, 0xB0, 0xD0, 0xE0];
        if case % 2 == 0 {
            io.input
                .push_back(first[usize::try_from(next() % 9).unwrap()]);
        }
        io.input.extend((0..len).map(|_| next().to_le_bytes()[0]));
        io.eof = case % 3 == 0;
        for step in 0..64u64 {
            if client.poll(&mut io, step * 100).is_err() {
                break;
            }
        }
    }
}

#[test]
fn async_client_connects_publishes_and_receives() {
    let config = ConfigBuilder::new("async").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: tern_client::AsyncClient<'_, 2> =
        tern_client::AsyncClient::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = AsyncMock(Mock {
        chunk: 3,
        ..Mock::default()
    });
    io.0.push(connack(false));
    block_on(client.connect(&mut io, 0)).unwrap();
    let id = block_on(client.publish(&mut io, "a/b", b"1", QoS::AtLeastOnce, &[], 0)).unwrap();
    io.0.push(Packet::PubAck(PubAck {
        packet_id: id,
        ..Default::default()
    }));
    io.0.push(publish_in("c/d", b"2", QoS::AtLeastOnce, 3));
    let mut events = Vec::new();
    for _ in 0..20 {
        match block_on(client.poll(&mut io, 0)) {
            Ok(Some(Event::Published { packet_id, .. })) => {
                events.push(format!("acked {packet_id}"))
            }
            Ok(Some(Event::Message(m))) => events.push(format!("message {}", m.topic)),
            Ok(_) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        events,
        vec![format!("acked {id}"), "message c/d".to_string()]
    );
    block_on(client.disconnect(&mut io)).unwrap();
    let sent = io.0.sent();
    assert!(matches!(
        parse(sent.last().unwrap(), V5),
        Packet::Disconnect(_)
    ));
}

/// `Error` converts between transport error types.
#[test]
fn map_transport_keeps_variants() {
    let e: Error<Infallible> = Error::InflightFull;
    let mapped: Error<MockError> = e.map_transport(|n| match n {});
    assert_eq!(mapped, Error::InflightFull);
}

#[test]
fn broker_maximum_qos_zero_refuses_qos1_publish() {
    let config = ConfigBuilder::new("maxqos").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 128], [0u8; 128]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(Packet::ConnAck(ConnAck {
        properties: ConnAckProperties {
            maximum_qos: Some(QoS::AtMostOnce),
            ..Default::default()
        },
        ..Default::default()
    }));
    client.connect(&mut io, 0).unwrap();
    assert_eq!(
        client.publish(&mut io, "a", b"", QoS::AtLeastOnce, &[], 0),
        Err(Error::Unsupported)
    );
    assert_eq!(
        client.publish(&mut io, "a", b"", QoS::AtMostOnce, &[], 0),
        Ok(0)
    );
}

/// After a reconnect that resumes the session, a QoS 2 redelivery whose
/// PUBREC was already sent is not reported again; a new session forgets it.
#[cfg(feature = "qos2")]
#[test]
fn qos2_state_survives_a_resumed_session_only() {
    let config = ConfigBuilder::new("q2s")
        .unwrap()
        .clean_start(false)
        .build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    io.push(publish_in("q", b"x", QoS::ExactlyOnce, 8));
    client.connect(&mut io, 0).unwrap();
    assert!(matches!(
        client.poll(&mut io, 0),
        Ok(Some(Event::Message(_)))
    ));

    let mut io = Mock::default();
    io.push(connack(true));
    io.push(publish_in("q", b"x", QoS::ExactlyOnce, 8));
    client.connect(&mut io, 0).unwrap();
    assert_eq!(client.poll(&mut io, 0), Ok(None), "already received");

    let mut io = Mock::default();
    io.push(connack(false));
    io.push(publish_in("q", b"x", QoS::ExactlyOnce, 8));
    client.connect(&mut io, 0).unwrap();
    assert!(matches!(
        client.poll(&mut io, 0),
        Ok(Some(Event::Message(_)))
    ));
}

/// Without the `qos2` feature the client never asks for QoS 2, and a broker
/// that sends it anyway breaks the protocol.
#[cfg(not(feature = "qos2"))]
#[test]
fn without_qos2_subscribing_at_qos2_is_unsupported_and_receiving_it_an_error() {
    let config = ConfigBuilder::new("no-q2").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack(false));
    client.connect(&mut io, 0).unwrap();
    assert_eq!(
        client.subscribe(&mut io, &[("q/#", QoS::ExactlyOnce)], 0),
        Err(Error::Unsupported)
    );
    assert_eq!(io.sent().len(), 1, "nothing but the CONNECT was written");
    io.push(publish_in("q/2", b"x", QoS::ExactlyOnce, 5));
    assert_eq!(
        client.poll(&mut io, 0).map(|e| e.is_some()),
        Err(Error::Protocol(ProtocolError::QoSNotGranted))
    );
    assert!(!client.session().is_connected());
}
