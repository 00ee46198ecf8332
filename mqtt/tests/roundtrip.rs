//! Property tests over every packet type in both protocol versions.
//!
//! Property: for any packet the specification allows in a version, `encode` writes
//! exactly `encoded_len` bytes, `decode` of those bytes gives back an equal packet
//! and consumes all of them, every strict prefix decodes as `Incomplete` (never as
//! malformed), and a maximum packet size one byte short is `PacketTooLarge`.
//!
//! Packets borrow their data, so the strategies leak the strings and slices they
//! generate (`&'static` data); a test run leaks a few megabytes at most.

use proptest::prelude::*;
use proptest::sample::select;
use tern_mqtt::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    DecodeOptions, Disconnect, DisconnectProperties, Error, List, MAX_PACKET_SIZE, MAX_VARINT,
    Packet, PacketType, PayloadFormat, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish,
    PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter,
    SubscribeProperties, SubscriptionOptions, UnsubAck, Unsubscribe, UnsubscribeProperties,
    UserProperty, Will, WillProperties, decode, frame_len,
};

type S<T> = BoxedStrategy<T>;

fn leak_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn leak_slice<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

/// Any MQTT string: any characters but U+0000.
fn string() -> S<&'static str> {
    "[^\u{0}]{0,12}".prop_map(leak_str).boxed()
}

fn binary() -> S<&'static [u8]> {
    prop::collection::vec(any::<u8>(), 0..24)
        .prop_map(leak_slice)
        .boxed()
}

/// A valid topic name: levels without wildcards, not empty.
fn topic_name() -> S<&'static str> {
    prop::collection::vec("[a-z0-9 $é/]{0,5}", 1..4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
        .prop_map(leak_str)
        .boxed()
}

/// A valid topic filter without the shared-subscription form.
fn plain_filter() -> S<String> {
    let level = prop_oneof![Just("+".to_owned()), "[a-z0-9]{0,4}"];
    (prop::collection::vec(level, 1..4), any::<bool>())
        .prop_map(|(levels, hash)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            f
        })
        .prop_filter("non-empty, not a share prefix", |f| {
            !f.is_empty() && !f.starts_with("$share/")
        })
        .boxed()
}

fn filter(version: ProtocolVersion) -> S<&'static str> {
    match version {
        ProtocolVersion::V311 => plain_filter().prop_map(leak_str).boxed(),
        ProtocolVersion::V5 => (proptest::option::of("[a-z0-9]{1,5}"), plain_filter())
            .prop_map(|(group, f)| match group {
                Some(g) => leak_str(format!("$share/{g}/{f}")),
                None => leak_str(f),
            })
            .boxed(),
    }
}

fn qos() -> S<QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]).boxed()
}

fn packet_id() -> S<u16> {
    (1..=u16::MAX).boxed()
}

fn reason(packet: PacketType) -> S<ReasonCode> {
    let allowed: Vec<ReasonCode> = ReasonCode::ALL
        .into_iter()
        .filter(|c| c.is_allowed_in(packet))
        .collect();
    select(allowed).boxed()
}

fn user_properties() -> S<List<'static, UserProperty<'static>>> {
    prop::collection::vec((string(), string()), 0..3)
        .prop_map(|v| List::new(leak_slice(v)))
        .boxed()
}

fn nonzero_u16() -> S<u16> {
    (1..=u16::MAX).boxed()
}

fn nonzero_u32() -> S<u32> {
    (1..=u32::MAX).boxed()
}

fn payload_format() -> S<PayloadFormat> {
    select(vec![PayloadFormat::Unspecified, PayloadFormat::Utf8]).boxed()
}

use proptest::option::of;

fn connect_properties() -> S<ConnectProperties<'static>> {
    (
        of(any::<u32>()),
        of(nonzero_u16()),
        of(nonzero_u32()),
        of(any::<u16>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(string()),
        of(binary()),
        user_properties(),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, method, data, user)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                // Authentication Data requires an Authentication Method.
                authentication_method: if data.is_some() {
                    method.or(Some("m"))
                } else {
                    method
                },
                authentication_data: data,
                user_properties: user,
            },
        )
        .boxed()
}

fn will_properties() -> S<WillProperties<'static>> {
    (
        of(any::<u32>()),
        of(payload_format()),
        of(any::<u32>()),
        of(string()),
        of(topic_name()),
        of(binary()),
        user_properties(),
    )
        .prop_map(|(delay, pfi, mei, ct, rt, cd, user)| WillProperties {
            will_delay_interval: delay,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: user,
        })
        .boxed()
}

fn connect(version: ProtocolVersion) -> S<Packet<'static>> {
    let v5 = version == ProtocolVersion::V5;
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        will_properties(),
    )
        .prop_map(move |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties: if v5 {
                properties
            } else {
                WillProperties::default()
            },
        });
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        of(will),
        of(string()),
        of(binary()),
        connect_properties(),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, props)| {
                Packet::Connect(Connect {
                    protocol_version: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    // 3.1.1 allows a password only with a user name.
                    username: if !v5 && password.is_some() {
                        username.or(Some("u"))
                    } else {
                        username
                    },
                    password,
                    properties: if v5 {
                        props
                    } else {
                        ConnectProperties::default()
                    },
                })
            },
        )
        .boxed()
}

fn connack_properties() -> S<ConnAckProperties<'static>> {
    let a = (
        of(any::<u32>()),
        of(nonzero_u16()),
        of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
        of(any::<bool>()),
        of(nonzero_u32()),
        of(string()),
        of(any::<u16>()),
        of(string()),
    );
    let b = (
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<u16>()),
        of(string()),
        of(string()),
        of(string()),
        of(binary()),
        user_properties(),
    );
    (a, b)
        .prop_map(
            |((sei, rm, mq, ra, mps, aci, tam, rs), (wsa, sia, ssa, ska, ri, sr, am, ad, user))| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: if ad.is_some() { am.or(Some("m")) } else { am },
                    authentication_data: ad,
                    user_properties: user,
                }
            },
        )
        .boxed()
}

fn connack(version: ProtocolVersion) -> S<Packet<'static>> {
    match version {
        ProtocolVersion::V311 => (
            any::<bool>(),
            (0u8..=5).prop_filter_map("return code", ReasonCode::from_connack_return_code),
        )
            .prop_map(|(session_present, reason_code)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code,
                    ..Default::default()
                })
            })
            .boxed(),
        ProtocolVersion::V5 => (
            any::<bool>(),
            reason(PacketType::ConnAck),
            connack_properties(),
        )
            .prop_map(|(session_present, reason_code, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code,
                    properties,
                })
            })
            .boxed(),
    }
}

fn publish_properties() -> S<PublishProperties<'static>> {
    (
        of(payload_format()),
        of(any::<u32>()),
        of(nonzero_u16()),
        of(topic_name()),
        of(binary()),
        user_properties(),
        prop::collection::vec(1..=MAX_VARINT, 0..3),
        of(string()),
    )
        .prop_map(
            |(pfi, mei, alias, rt, cd, user, ids, ct)| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: alias,
                response_topic: rt,
                correlation_data: cd,
                user_properties: user,
                subscription_identifiers: List::new(leak_slice(ids)),
                content_type: ct,
            },
        )
        .boxed()
}

fn publish(version: ProtocolVersion) -> S<Packet<'static>> {
    let v5 = version == ProtocolVersion::V5;
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        publish_properties(),
        binary(),
        any::<bool>(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, id, props, payload, alias_only)| {
                let properties = if v5 {
                    props
                } else {
                    PublishProperties::default()
                };
                let at_most_once = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    // 5.0 allows an empty topic name together with a topic alias.
                    topic: if alias_only && properties.topic_alias.is_some() {
                        ""
                    } else {
                        topic
                    },
                    packet_id: if at_most_once { 0 } else { id },
                    properties,
                    payload,
                })
            },
        )
        .boxed()
}

fn ack_properties(version: ProtocolVersion) -> S<AckProperties<'static>> {
    match version {
        ProtocolVersion::V311 => Just(AckProperties::default()).boxed(),
        ProtocolVersion::V5 => (of(string()), user_properties())
            .prop_map(|(reason_string, user_properties)| AckProperties {
                reason_string,
                user_properties,
            })
            .boxed(),
    }
}

fn ack_reason(packet: PacketType, version: ProtocolVersion) -> S<ReasonCode> {
    match version {
        ProtocolVersion::V311 => Just(ReasonCode::Success).boxed(),
        ProtocolVersion::V5 => reason(packet),
    }
}

macro_rules! ack_strategy {
    ($fn:ident, $ty:ident) => {
        fn $fn(version: ProtocolVersion) -> S<Packet<'static>> {
            (
                packet_id(),
                ack_reason(PacketType::$ty, version),
                ack_properties(version),
            )
                .prop_map(|(packet_id, reason_code, properties)| {
                    Packet::$ty($ty {
                        packet_id,
                        reason_code,
                        properties,
                    })
                })
                .boxed()
        }
    };
}

ack_strategy!(puback, PubAck);
ack_strategy!(pubrec, PubRec);
ack_strategy!(pubrel, PubRel);
ack_strategy!(pubcomp, PubComp);

fn subscription_options(version: ProtocolVersion) -> S<SubscriptionOptions> {
    let handling = select(vec![
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendIfNewSubscription,
        RetainHandling::DoNotSend,
    ]);
    (qos(), any::<bool>(), any::<bool>(), handling)
        .prop_map(move |(qos, no_local, rap, retain_handling)| match version {
            ProtocolVersion::V311 => SubscriptionOptions {
                qos,
                ..Default::default()
            },
            ProtocolVersion::V5 => SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: rap,
                retain_handling,
            },
        })
        .boxed()
}

fn subscribe(version: ProtocolVersion) -> S<Packet<'static>> {
    let v5 = version == ProtocolVersion::V5;
    let entry =
        (filter(version), subscription_options(version)).prop_map(|(filter, mut options)| {
            // No Local is a protocol error on a shared subscription.
            if filter.starts_with("$share/") {
                options.no_local = false;
            }
            SubscribeFilter { filter, options }
        });
    let properties = (of(1..=MAX_VARINT), user_properties()).prop_map(move |(id, user)| {
        if v5 {
            SubscribeProperties {
                subscription_identifier: id,
                user_properties: user,
            }
        } else {
            SubscribeProperties::default()
        }
    });
    (packet_id(), prop::collection::vec(entry, 1..4), properties)
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters: List::new(leak_slice(filters)),
                properties,
            })
        })
        .boxed()
}

fn suback(version: ProtocolVersion) -> S<Packet<'static>> {
    let code = match version {
        ProtocolVersion::V311 => select(vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed(),
        ProtocolVersion::V5 => reason(PacketType::SubAck),
    };
    (
        packet_id(),
        prop::collection::vec(code, 0..4),
        ack_properties(version),
    )
        .prop_map(|(packet_id, codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes: List::new(leak_slice(codes)),
                properties,
            })
        })
        .boxed()
}

fn unsubscribe(version: ProtocolVersion) -> S<Packet<'static>> {
    let v5 = version == ProtocolVersion::V5;
    (
        packet_id(),
        prop::collection::vec(filter(version), 1..4),
        user_properties(),
    )
        .prop_map(move |(packet_id, filters, user)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters: List::new(leak_slice(filters)),
                properties: if v5 {
                    UnsubscribeProperties {
                        user_properties: user,
                    }
                } else {
                    UnsubscribeProperties::default()
                },
            })
        })
        .boxed()
}

fn unsuback(version: ProtocolVersion) -> S<Packet<'static>> {
    let codes = match version {
        ProtocolVersion::V311 => Just(Vec::new()).boxed(),
        ProtocolVersion::V5 => prop::collection::vec(reason(PacketType::UnsubAck), 0..4).boxed(),
    };
    (packet_id(), codes, ack_properties(version))
        .prop_map(|(packet_id, codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes: List::new(leak_slice(codes)),
                properties,
            })
        })
        .boxed()
}

fn disconnect(version: ProtocolVersion) -> S<Packet<'static>> {
    match version {
        ProtocolVersion::V311 => Just(Packet::Disconnect(Disconnect::default())).boxed(),
        ProtocolVersion::V5 => (
            reason(PacketType::Disconnect),
            of(any::<u32>()),
            of(string()),
            of(string()),
            user_properties(),
        )
            .prop_map(|(reason_code, sei, rs, sr, user)| {
                Packet::Disconnect(Disconnect {
                    reason_code,
                    properties: DisconnectProperties {
                        session_expiry_interval: sei,
                        reason_string: rs,
                        server_reference: sr,
                        user_properties: user,
                    },
                })
            })
            .boxed(),
    }
}

fn auth() -> S<Packet<'static>> {
    (
        reason(PacketType::Auth),
        of(string()),
        of(binary()),
        of(string()),
        user_properties(),
    )
        .prop_map(|(reason_code, method, data, rs, user)| {
            Packet::Auth(Auth {
                reason_code,
                properties: AuthProperties {
                    authentication_method: if data.is_some() {
                        method.or(Some("m"))
                    } else {
                        method
                    },
                    authentication_data: data,
                    reason_string: rs,
                    user_properties: user,
                },
            })
        })
        .boxed()
}

fn ping() -> S<Packet<'static>> {
    select(vec![Packet::PingReq, Packet::PingResp]).boxed()
}

/// Asserts the round-trip property stated at the top of this file.
fn check(packet: &Packet<'_>, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let len = packet
        .encoded_len(version)
        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let mut buf = vec![0u8; len];
    let written = packet
        .encode(version, &mut buf)
        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(written, len);
    // A CONNECT decodes whatever version the options name; use the other one to show it.
    let decode_version = match (packet, version) {
        (Packet::Connect(_), ProtocolVersion::V5) => ProtocolVersion::V311,
        (Packet::Connect(_), ProtocolVersion::V311) => ProtocolVersion::V5,
        _ => version,
    };
    let opts = DecodeOptions::new(decode_version);
    let decoded = decode(&buf, &opts);
    prop_assert_eq!(decoded, Ok((*packet, len)));
    prop_assert_eq!(frame_len(&buf, MAX_PACKET_SIZE), Ok(len));
    for cut in 0..len {
        let err = decode(&buf[..cut], &opts).err();
        prop_assert!(
            matches!(err, Some(Error::Incomplete { .. })),
            "prefix of {} bytes: {:?}",
            cut,
            err
        );
        prop_assert_eq!(frame_len(&buf[..cut], MAX_PACKET_SIZE).err(), err);
    }
    let max = u32::try_from(len - 1).unwrap_or(u32::MAX);
    let tight = DecodeOptions {
        max_packet_size: max,
        ..opts
    };
    prop_assert_eq!(
        decode(&buf, &tight),
        Err(Error::PacketTooLarge { size: len, max })
    );
    Ok(())
}

macro_rules! roundtrip_tests {
    ($($name:ident: $strategy:expr, $version:expr;)*) => {
        proptest! {
            $(
                #[test]
                fn $name(packet in $strategy) {
                    check(&packet, $version)?;
                }
            )*
        }
    };
}

use ProtocolVersion::{V5, V311};

roundtrip_tests! {
    connect_v311: connect(V311), V311;
    connect_v5: connect(V5), V5;
    connack_v311: connack(V311), V311;
    connack_v5: connack(V5), V5;
    publish_v311: publish(V311), V311;
    publish_v5: publish(V5), V5;
    puback_v311: puback(V311), V311;
    puback_v5: puback(V5), V5;
    pubrec_v311: pubrec(V311), V311;
    pubrec_v5: pubrec(V5), V5;
    pubrel_v311: pubrel(V311), V311;
    pubrel_v5: pubrel(V5), V5;
    pubcomp_v311: pubcomp(V311), V311;
    pubcomp_v5: pubcomp(V5), V5;
    subscribe_v311: subscribe(V311), V311;
    subscribe_v5: subscribe(V5), V5;
    suback_v311: suback(V311), V311;
    suback_v5: suback(V5), V5;
    unsubscribe_v311: unsubscribe(V311), V311;
    unsubscribe_v5: unsubscribe(V5), V5;
    unsuback_v311: unsuback(V311), V311;
    unsuback_v5: unsuback(V5), V5;
    ping_v311: ping(), V311;
    ping_v5: ping(), V5;
    disconnect_v311: disconnect(V311), V311;
    disconnect_v5: disconnect(V5), V5;
    auth_v5: auth(), V5;
}
