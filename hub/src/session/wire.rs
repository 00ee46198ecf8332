//! Translation between `tern-mqtt` packets and the session's own types.
//!
//! The only module of the session that names codec packet types: [`decode`] turns a frame into
//! an [`Inbound`] value (borrowing topic, payload and filters from the frame), and [`encode`]
//! appends an [`Outbound`] packet to the write buffer.

use std::num::NonZeroU32;

use bytes::{Bytes, BytesMut};
use tern_mqtt::{
    AckProperties, ConnAck, ConnAckProperties, Connect, DecodeOptions, Disconnect,
    DisconnectProperties, EncodeError, List, Packet, PayloadFormat, ProtocolVersion, PubAck,
    PubComp, PubRec, PubRel, Publish, PublishProperties, QoS, ReasonCode, SubAck, UnsubAck,
};

use crate::message::{ClientId, Message, MessageProperties};
use crate::router::{RetainHandling, SubscriptionOptions};
use crate::session::state::{ConnectRequest, Outbound, OutboundPublish};

/// Why a frame could not be turned into an [`Inbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The codec rejected the bytes.
    Decode(tern_mqtt::Error),
    /// A valid packet a server never accepts (CONNACK, SUBACK, AUTH, ...).
    Unsupported(&'static str),
    /// CONNECT asks for enhanced authentication, which the hub does not offer.
    AuthenticationMethod,
}

/// CONNECT, as the session needs it.
#[derive(Debug)]
pub struct InboundConnect<'a> {
    /// Negotiation input.
    pub request: ConnectRequest<'a>,
    /// Will message, if the will flag is set.
    pub will: Option<InboundWill>,
    /// User Name, if present.
    pub username: Option<&'a str>,
    /// Password, if present.
    pub password: Option<&'a [u8]>,
    /// v5 Request Problem Information (absent = 1): with 0, no Reason String goes on any
    /// packet but PUBLISH, CONNACK and DISCONNECT (MQTT-3.1.2-29).
    pub problem_information: bool,
}

/// The will of a CONNECT, owned (it outlives the frame).
#[derive(Debug)]
pub struct InboundWill {
    /// The will message (expiry anchored when it is published).
    pub message: Message,
    /// v5 Will Delay Interval, seconds.
    pub delay_secs: u32,
    /// v5 Message Expiry Interval of the will, seconds.
    pub expiry_secs: Option<u32>,
}

/// PUBLISH, borrowing topic and payload from the frame.
#[derive(Debug)]
pub struct InboundPublish<'a> {
    /// Topic as sent (empty when an alias is used).
    pub topic: &'a str,
    /// Payload slice of the frame.
    pub payload: &'a [u8],
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Packet id (QoS 1/2).
    pub packet_id: Option<u16>,
    /// v5 Topic Alias.
    pub topic_alias: Option<u16>,
    /// v5 Message Expiry Interval.
    pub message_expiry: Option<u32>,
    /// Forwarded v5 properties.
    pub properties: MessageProperties,
}

/// SUBSCRIBE.
#[derive(Debug)]
pub struct InboundSubscribe<'a> {
    /// Packet id.
    pub packet_id: u16,
    /// v5 Subscription Identifier, applied to every filter of the packet.
    pub identifier: Option<std::num::NonZeroU32>,
    /// Filters with their requested options.
    pub filters: Vec<(&'a str, SubscriptionOptions)>,
}

/// A decoded client packet.
#[derive(Debug)]
pub enum Inbound<'a> {
    /// CONNECT.
    Connect(InboundConnect<'a>),
    /// PUBLISH.
    Publish(InboundPublish<'a>),
    /// PUBACK.
    PubAck(u16),
    /// PUBREC with reason code.
    PubRec(u16, u8),
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBSCRIBE.
    Subscribe(InboundSubscribe<'a>),
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        packet_id: u16,
        /// Filters to remove.
        filters: Vec<&'a str>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT with reason code and optional new session expiry (v5).
    Disconnect {
        /// Reason code (0 for 3.1.1).
        code: u8,
        /// v5 Session Expiry Interval.
        session_expiry: Option<u32>,
    },
}

/// Decodes one complete frame. `version` is `None` before CONNECT.
pub fn decode(
    frame: &[u8],
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Inbound<'_>, WireError> {
    let options = DecodeOptions {
        version: version.unwrap_or(ProtocolVersion::V5),
        max_packet_size,
    };
    let (packet, _) = tern_mqtt::decode(frame, &options).map_err(WireError::Decode)?;
    Ok(match packet {
        Packet::Connect(connect) => Inbound::Connect(connect_in(&connect, frame)?),
        Packet::Publish(publish) => {
            if !publish.properties.subscription_identifiers.is_empty() {
                // MQTT 5.0 §3.3.4: only the server puts Subscription Identifiers in PUBLISH.
                return Err(WireError::Unsupported("subscription identifier in PUBLISH"));
            }
            Inbound::Publish(publish_in(&publish))
        }
        Packet::PubAck(ack) => Inbound::PubAck(ack.packet_id),
        Packet::PubRec(ack) => Inbound::PubRec(ack.packet_id, ack.reason_code.to_u8()),
        Packet::PubRel(ack) => Inbound::PubRel(ack.packet_id),
        Packet::PubComp(ack) => Inbound::PubComp(ack.packet_id),
        Packet::Subscribe(subscribe) => Inbound::Subscribe(InboundSubscribe {
            packet_id: subscribe.packet_id,
            identifier: subscribe
                .properties
                .subscription_identifier
                .and_then(NonZeroU32::new),
            filters: subscribe
                .filters
                .iter()
                .map(|f| (f.filter, subscription_options(f.options)))
                .collect(),
        }),
        Packet::Unsubscribe(unsubscribe) => Inbound::Unsubscribe {
            packet_id: unsubscribe.packet_id,
            filters: unsubscribe.filters.iter().collect(),
        },
        Packet::PingReq => Inbound::PingReq,
        Packet::Disconnect(disconnect) => Inbound::Disconnect {
            code: disconnect.reason_code.to_u8(),
            session_expiry: disconnect.properties.session_expiry_interval,
        },
        Packet::Auth(_) => return Err(WireError::Unsupported("enhanced authentication (AUTH)")),
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            return Err(WireError::Unsupported("server-to-client packet"));
        }
    })
}

fn connect_in<'a>(connect: &Connect<'a>, frame: &[u8]) -> Result<InboundConnect<'a>, WireError> {
    let _ = frame;
    let p = &connect.properties;
    if p.authentication_method.is_some() {
        return Err(WireError::AuthenticationMethod);
    }
    let will = connect.will.map(|w| {
        let wp = &w.properties;
        InboundWill {
            message: Message {
                topic: w.topic.to_owned(),
                payload: Bytes::copy_from_slice(w.payload),
                qos: w.qos,
                retain: w.retain,
                properties: MessageProperties {
                    payload_format_indicator: wp.payload_format_indicator.map(payload_format_byte),
                    content_type: wp.content_type.map(str::to_owned),
                    response_topic: wp.response_topic.map(str::to_owned),
                    correlation_data: wp.correlation_data.map(Bytes::copy_from_slice),
                    user_properties: owned_pairs(wp.user_properties),
                },
                // Anchored when the will is published, not at CONNECT.
                expiry: None,
                publisher: ClientId::from(connect.client_id),
            },
            delay_secs: wp.will_delay_interval.unwrap_or(0),
            expiry_secs: wp.message_expiry_interval,
        }
    });
    Ok(InboundConnect {
        request: ConnectRequest {
            version: connect.protocol_version,
            client_id: connect.client_id,
            clean_start: connect.clean_start,
            keep_alive: connect.keep_alive,
            session_expiry: p.session_expiry_interval,
            receive_maximum: p.receive_maximum,
            maximum_packet_size: p.maximum_packet_size,
            topic_alias_maximum: p.topic_alias_maximum,
        },
        will,
        username: connect.username,
        password: connect.password,
        problem_information: p.request_problem_information.unwrap_or(true),
    })
}

fn publish_in<'a>(publish: &Publish<'a>) -> InboundPublish<'a> {
    let p = &publish.properties;
    InboundPublish {
        topic: publish.topic,
        payload: publish.payload,
        qos: publish.qos,
        retain: publish.retain,
        packet_id: (publish.qos != QoS::AtMostOnce).then_some(publish.packet_id),
        topic_alias: p.topic_alias,
        message_expiry: p.message_expiry_interval,
        properties: MessageProperties {
            payload_format_indicator: p.payload_format_indicator.map(payload_format_byte),
            content_type: p.content_type.map(str::to_owned),
            response_topic: p.response_topic.map(str::to_owned),
            correlation_data: p.correlation_data.map(Bytes::copy_from_slice),
            user_properties: owned_pairs(p.user_properties),
        },
    }
}

/// The wire value of a Payload Format Indicator.
fn payload_format_byte(format: PayloadFormat) -> u8 {
    match format {
        PayloadFormat::Unspecified => 0,
        PayloadFormat::Utf8 => 1,
    }
}

fn owned_pairs(list: tern_mqtt::UserProperties<'_>) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn subscription_options(options: tern_mqtt::SubscriptionOptions) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: options.qos,
        no_local: options.no_local,
        retain_as_published: options.retain_as_published,
        retain_handling: match options.retain_handling {
            tern_mqtt::RetainHandling::SendAtSubscribe => RetainHandling::SendAlways,
            tern_mqtt::RetainHandling::SendIfNewSubscription => RetainHandling::SendIfNew,
            tern_mqtt::RetainHandling::DoNotSend => RetainHandling::Never,
        },
        identifier: None,
    }
}

/// Reason String sent with a failing v5 acknowledgement (dropped for 3.1.1 by the codec).
fn ack_reason_string(code: u8) -> Option<&'static str> {
    match code {
        crate::session::state::reason::QUOTA_EXCEEDED => {
            Some("store quota exceeded: message not accepted, publish again later")
        }
        crate::session::state::reason::NOT_AUTHORIZED => Some("not authorized by the ACL"),
        _ => None,
    }
}

fn reason_code(code: u8) -> ReasonCode {
    ReasonCode::from_u8(code).unwrap_or(ReasonCode::UnspecifiedError)
}

/// Appends `packet` encoded for `version` to `out`.
pub fn encode(
    packet: &Outbound,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode_with(packet, version, out, true)
}

/// [`encode`] for a peer whose Maximum Packet Size is `max`: a control packet that would
/// exceed it goes out without its Reason String, which MQTT 5.0 forbids sending when it
/// makes the packet too large (MQTT-3.1.2-25, MQTT-3.4.2-2, MQTT-3.14.2-3 and the other
/// packets' equivalents). PUBLISH is never shortened: its caller drops it instead.
///
/// With `problem_information` false (the client's Request Problem Information was 0), only
/// CONNACK and DISCONNECT may carry a Reason String (MQTT-3.1.2-29).
pub fn encode_within(
    packet: &Outbound,
    version: ProtocolVersion,
    out: &mut BytesMut,
    max: u32,
    problem_information: bool,
) -> Result<(), EncodeError> {
    let start = out.len();
    let texts =
        problem_information || matches!(packet, Outbound::ConnAck(_) | Outbound::Disconnect(..));
    encode_with(packet, version, out, texts)?;
    let too_big = u32::try_from(out.len() - start).map_or(true, |size| size > max);
    if too_big && !matches!(packet, Outbound::Publish(_)) {
        out.truncate(start);
        encode_with(packet, version, out, false)?;
    }
    Ok(())
}

/// [`encode`], with or without Reason Strings.
fn encode_with(
    packet: &Outbound,
    version: ProtocolVersion,
    out: &mut BytesMut,
    reason_strings: bool,
) -> Result<(), EncodeError> {
    let v5 = version == ProtocolVersion::V5;
    // The reason string: the one the packet carries, else the standard one for the code.
    let text = match packet {
        Outbound::PubAckText(_, _, text) | Outbound::PubRecText(_, _, text) => Some(*text),
        _ => None,
    };
    let ack = |packet_id: u16, code: u8| {
        let properties = AckProperties {
            reason_string: text
                .or_else(|| ack_reason_string(code))
                .filter(|_| reason_strings),
            ..AckProperties::default()
        };
        (packet_id, reason_code(code), properties)
    };
    match packet {
        Outbound::Publish(publish) => encode_publish(publish, version, out),
        Outbound::PubAck(id, code) | Outbound::PubAckText(id, code, _) => {
            let (packet_id, reason_code, properties) = ack(*id, *code);
            put(
                &Packet::PubAck(PubAck {
                    packet_id,
                    reason_code,
                    properties,
                }),
                version,
                out,
            )
        }
        Outbound::PubRec(id, code) | Outbound::PubRecText(id, code, _) => {
            let (packet_id, reason_code, properties) = ack(*id, *code);
            put(
                &Packet::PubRec(PubRec {
                    packet_id,
                    reason_code,
                    properties,
                }),
                version,
                out,
            )
        }
        Outbound::PubRel(id, code) => {
            let (packet_id, reason_code, properties) = ack(*id, *code);
            put(
                &Packet::PubRel(PubRel {
                    packet_id,
                    reason_code,
                    properties,
                }),
                version,
                out,
            )
        }
        Outbound::PubComp(id, code) => {
            let (packet_id, reason_code, properties) = ack(*id, *code);
            put(
                &Packet::PubComp(PubComp {
                    packet_id,
                    reason_code,
                    properties,
                }),
                version,
                out,
            )
        }
        Outbound::PingResp => put(&Packet::PingResp, version, out),
        Outbound::SubAck(packet_id, codes) => {
            let codes: Vec<ReasonCode> = codes.iter().map(|c| reason_code(*c)).collect();
            let packet = SubAck {
                packet_id: *packet_id,
                reason_codes: List::new(&codes),
                properties: AckProperties::default(),
            };
            put(&Packet::SubAck(packet), version, out)
        }
        Outbound::UnsubAck(packet_id, codes) => {
            let codes: Vec<ReasonCode> = codes.iter().map(|c| reason_code(*c)).collect();
            let packet = UnsubAck {
                packet_id: *packet_id,
                reason_codes: List::new(&codes),
                properties: AckProperties::default(),
            };
            put(&Packet::UnsubAck(packet), version, out)
        }
        Outbound::Disconnect(code, text) => {
            let properties = DisconnectProperties {
                reason_string: (v5 && reason_strings && !text.is_empty()).then_some(*text),
                ..DisconnectProperties::default()
            };
            let packet = Disconnect {
                reason_code: reason_code(*code),
                properties,
            };
            put(&Packet::Disconnect(packet), version, out)
        }
        Outbound::ConnAck(connack) => {
            let accepted = connack.code == 0;
            let properties = if v5 {
                ConnAckProperties {
                    session_expiry_interval: connack.session_expiry,
                    receive_maximum: accepted.then_some(connack.receive_maximum),
                    retain_available: accepted.then_some(true),
                    maximum_packet_size: accepted.then_some(connack.maximum_packet_size),
                    assigned_client_identifier: connack.assigned_client_id.as_deref(),
                    topic_alias_maximum: accepted.then_some(connack.topic_alias_maximum),
                    reason_string: connack.reason_string.filter(|_| reason_strings),
                    wildcard_subscription_available: accepted.then_some(true),
                    subscription_identifiers_available: accepted.then_some(true),
                    shared_subscription_available: accepted.then_some(true),
                    server_keep_alive: connack.server_keep_alive,
                    ..ConnAckProperties::default()
                }
            } else {
                ConnAckProperties::default()
            };
            let packet = ConnAck {
                session_present: connack.session_present,
                reason_code: reason_code(connack.code),
                properties,
            };
            put(&Packet::ConnAck(packet), version, out)
        }
    }
}

fn encode_publish(
    publish: &OutboundPublish,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let message = &publish.message;
    let v5 = version == ProtocolVersion::V5;
    let user_properties: Vec<(&str, &str)> = if v5 {
        message
            .properties
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    } else {
        Vec::new()
    };
    let properties = if v5 {
        let p = &message.properties;
        PublishProperties {
            payload_format_indicator: p.payload_format_indicator.map(|f| {
                if f == 1 {
                    PayloadFormat::Utf8
                } else {
                    PayloadFormat::Unspecified
                }
            }),
            message_expiry_interval: publish.message_expiry,
            topic_alias: publish.topic_alias,
            response_topic: p.response_topic.as_deref(),
            correlation_data: p.correlation_data.as_deref(),
            user_properties: List::new(&user_properties),
            subscription_identifiers: List::new(&publish.subscription_ids),
            content_type: p.content_type.as_deref(),
        }
    } else {
        PublishProperties::default()
    };
    let packet = Publish {
        dup: publish.dup,
        qos: publish.qos,
        retain: publish.retain,
        topic: if publish.send_topic {
            &message.topic
        } else {
            ""
        },
        packet_id: publish.packet_id.unwrap_or(0),
        properties,
        payload: &message.payload,
    };
    put(&Packet::Publish(packet), version, out)
}

/// Encodes `packet` at the end of `out`.
fn put(
    packet: &Packet<'_>,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let len = packet.encoded_len(version)?;
    let start = out.len();
    out.resize(start + len, 0);
    match packet.encode(version, &mut out[start..]) {
        Ok(written) => {
            out.truncate(start + written);
            Ok(())
        }
        Err(err) => {
            out.truncate(start);
            Err(err)
        }
    }
}

/// The protocol level of a CONNECT frame, read without decoding the rest, so a malformed
/// CONNECT can still be answered in its client's protocol version.
pub fn connect_level(frame: &[u8]) -> Option<u8> {
    // Fixed header: type byte, then 1–4 remaining-length bytes (continuation bit 0x80).
    let length_bytes = frame.get(1..)?.iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let variable = frame.get(1 + length_bytes..)?;
    match variable {
        [0x00, 0x04, b'M', b'Q', b'T', b'T', level, ..] => Some(*level),
        _ => None,
    }
}

/// CONNACK bytes refusing an unsupported protocol level: 3.1.1 format with return code 0x01
/// for older levels, v5 format with reason 0x84 for newer ones.
pub fn unsupported_version_connack(level: u8) -> Vec<u8> {
    if level > 5 {
        vec![0x20, 0x03, 0x00, 0x84, 0x00]
    } else {
        vec![0x20, 0x02, 0x00, 0x01]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::session::state::{ConnAck as HubConnAck, ConnectRefusal, reason};

    fn encoded(packet: &Outbound, version: ProtocolVersion) -> BytesMut {
        let mut out = BytesMut::new();
        encode(packet, version, &mut out).expect("encodes");
        out
    }

    fn client_publish(properties: PublishProperties<'_>) -> Vec<u8> {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b",
            packet_id: 7,
            properties,
            payload: b"hello",
        };
        Packet::Publish(publish)
            .to_vec(ProtocolVersion::V5)
            .expect("encodes")
    }

    #[test]
    fn v5_publish_properties_are_kept_for_forwarding() {
        let users = [("k", "v"), ("k", "w")];
        let frame = client_publish(PublishProperties {
            content_type: Some("text/plain"),
            response_topic: Some("reply/here"),
            correlation_data: Some(b"id-1"),
            payload_format_indicator: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(30),
            topic_alias: Some(3),
            user_properties: List::new(&users),
            ..PublishProperties::default()
        });
        let Ok(Inbound::Publish(p)) = decode(&frame, Some(ProtocolVersion::V5), 1024) else {
            panic!("expected a PUBLISH");
        };
        assert_eq!(
            (p.topic, p.payload, p.packet_id),
            ("a/b", &b"hello"[..], Some(7))
        );
        assert_eq!((p.topic_alias, p.message_expiry), (Some(3), Some(30)));
        assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.properties.response_topic.as_deref(), Some("reply/here"));
        assert_eq!(p.properties.correlation_data.as_deref(), Some(&b"id-1"[..]));
        assert_eq!(p.properties.payload_format_indicator, Some(1));
        assert_eq!(
            p.properties.user_properties,
            [
                ("k".to_owned(), "v".to_owned()),
                ("k".to_owned(), "w".to_owned())
            ]
        );
    }

    #[test]
    fn subscription_identifier_from_a_client_is_refused() {
        let ids = [5];
        let frame = client_publish(PublishProperties {
            subscription_identifiers: List::new(&ids),
            ..PublishProperties::default()
        });
        assert!(matches!(
            decode(&frame, Some(ProtocolVersion::V5), 1024),
            Err(WireError::Unsupported(_))
        ));
    }

    #[test]
    fn aliased_publish_is_sent_without_topic() {
        let message = Arc::new(Message {
            topic: "sensors/1".into(),
            payload: Bytes::from_static(b"21.5"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties::default(),
            expiry: None,
            publisher: ClientId::from("p"),
        });
        let packet = Outbound::Publish(OutboundPublish {
            packet_id: Some(9),
            qos: QoS::AtLeastOnce,
            retain: false,
            dup: true,
            message,
            send_topic: false,
            topic_alias: Some(2),
            subscription_ids: vec![4, 8],
            message_expiry: Some(12),
        });
        let bytes = encoded(&packet, ProtocolVersion::V5);
        let (decoded, used) =
            tern_mqtt::decode(&bytes, &DecodeOptions::new(ProtocolVersion::V5)).expect("valid");
        assert_eq!(used, bytes.len());
        let Packet::Publish(p) = decoded else {
            panic!("expected PUBLISH: {decoded:?}")
        };
        assert_eq!((p.topic, p.packet_id, p.dup), ("", 9, true));
        assert_eq!(p.properties.topic_alias, Some(2));
        assert_eq!(p.properties.message_expiry_interval, Some(12));
        assert_eq!(
            p.properties
                .subscription_identifiers
                .iter()
                .collect::<Vec<_>>(),
            [4, 8]
        );
        assert_eq!(p.payload, b"21.5");
    }

    #[test]
    fn refusals_use_the_3_1_1_return_codes() {
        let refusal = ConnectRefusal {
            code: reason::CLIENT_ID_NOT_VALID,
            text: "empty id",
        };
        let bytes = encoded(
            &Outbound::ConnAck(HubConnAck::refusal(refusal)),
            ProtocolVersion::V311,
        );
        assert_eq!(&bytes[..], [0x20, 0x02, 0x00, 0x02]);
        let suback = Outbound::SubAck(3, vec![reason::GRANTED_QOS_1, reason::TOPIC_FILTER_INVALID]);
        assert_eq!(
            &encoded(&suback, ProtocolVersion::V311)[..],
            [0x90, 0x04, 0x00, 0x03, 0x01, 0x80]
        );
    }

    #[test]
    fn connect_level_is_read_from_the_variable_header() {
        let v5 = [
            0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C,
        ];
        assert_eq!(connect_level(&v5), Some(5));
        assert_eq!(connect_level(&[0x10, 0x80]), None);
        assert_eq!(connect_level(&[0x10, 0x02, 0x00, 0x06]), None);
    }

    #[test]
    fn unsupported_levels_get_a_connack_in_a_format_the_client_can_read() {
        assert_eq!(unsupported_version_connack(3), [0x20, 0x02, 0x00, 0x01]);
        assert_eq!(
            unsupported_version_connack(6),
            [0x20, 0x03, 0x00, 0x84, 0x00]
        );
    }
}
