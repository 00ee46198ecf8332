//! The client role, for firmware that counts its flash: [`decode_from_server`]
//! for what a server sends, and encoders for exactly what a client sends
//! ([`ConnectRequest`], [`PublishRequest`], [`encode_subscribe`],
//! [`encode_unsubscribe`], [`encode_ack`], [`encode_disconnect`],
//! [`encode_ping_request`]).
//!
//! The decoder validates exactly as [`crate::decode`] does, property by property,
//! but keeps only what a client acts on ([`Incoming`]: CONNACK as a
//! [`ConnAckInfo`], the acknowledgements, DISCONNECT and AUTH without their
//! properties; PUBLISH whole), and reports the packet types only a client sends as
//! [`Error::NotFromServer`] without decoding them. The encoders write the same
//! bytes, and fail with the same [`EncodeError`]s, as [`crate::Packet::encode`]
//! on the equivalent packet, but take only the fields a client fills in, so they
//! compute lengths directly instead of walking the general property structs. An
//! image that uses this module and not [`crate::Packet`] links neither the
//! server-side codec nor the general property machinery for encoding.

use crate::ack::{AckFields, decode_ack};
use crate::disconnect::decode_short_body;
use crate::error::{EncodeError, Error};
use crate::list::ReasonCodes;
use crate::packet::{DecodeOptions, PacketType, body, encode_empty, packet_type_of, split_frame};
use crate::properties::{
    AckProperties, AuthProperties, Checked, DisconnectProperties, Field, PropertyId, Value,
};
use crate::reason::ReasonCode;
use crate::topic::{validate_plain_filter, validate_topic_filter, validate_topic_name};
use crate::wire::{MAX_VARINT, Reader, Writer, field_len, varint_len};
use crate::{ProtocolVersion, Publish, QoS, connack, suback, unsuback};

/// What a client needs from a CONNACK: the outcome and the server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAckInfo {
    /// The server resumed a stored session.
    pub session_present: bool,
    /// Success, or why the connection was refused (3.1.1 return codes mapped onto
    /// their 5.0 equivalents).
    pub reason_code: ReasonCode,
    /// Receive Maximum of the server (5.0).
    pub receive_maximum: Option<u16>,
    /// Maximum QoS the server supports (5.0; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// Maximum Packet Size the server accepts (5.0).
    pub maximum_packet_size: Option<u32>,
    /// Server Keep Alive, seconds (5.0); overrides the client's keep alive.
    pub server_keep_alive: Option<u16>,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP without its properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckInfo {
    /// Packet identifier.
    pub packet_id: u16,
    /// Reason code (Success in 3.1.1).
    pub reason_code: ReasonCode,
}

/// SUBACK or UNSUBACK without its properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubAckInfo<'a> {
    /// Packet identifier.
    pub packet_id: u16,
    /// One reason code per filter, in request order (none in a 3.1.1 UNSUBACK).
    pub reason_codes: ReasonCodes<'a>,
}

/// A packet a server sends to a client, as [`decode_from_server`] returns it.
/// PUBLISH is complete; the others keep what a client acts on, their properties
/// checked but dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[expect(
    missing_docs,
    reason = "variant names are the packet names of the specification"
)]
pub enum Incoming<'a> {
    ConnAck(ConnAckInfo),
    Publish(Publish<'a>),
    PubAck(AckInfo),
    PubRec(AckInfo),
    PubRel(AckInfo),
    PubComp(AckInfo),
    SubAck(SubAckInfo<'a>),
    UnsubAck(SubAckInfo<'a>),
    PingResp,
    /// DISCONNECT and its reason code.
    Disconnect(ReasonCode),
    /// AUTH and its reason code.
    Auth(ReasonCode),
}

impl Incoming<'_> {
    /// The packet type.
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::SubAck(_) => PacketType::SubAck,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

/// [`crate::decode`] for a client: decodes the packet at the start of `buf` if it
/// is one a server sends, returning it and the number of bytes it took.
///
/// Accepts and rejects the same bytes as [`crate::decode`] for CONNACK, PUBLISH,
/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP, DISCONNECT and
/// AUTH. CONNECT, SUBSCRIBE, UNSUBSCRIBE and PINGREQ are
/// [`Error::NotFromServer`] (once their header is complete and well-formed).
// Out of line: inlined into a client's single caller it grows the image (measured
// on the firmware size probe).
#[inline(never)]
pub fn decode_from_server<'a>(
    buf: &'a [u8],
    opts: &DecodeOptions,
) -> Result<(Incoming<'a>, usize), Error> {
    let (first_byte, bytes, total) = split_frame(buf, opts.max_packet_size)?;
    let version = opts.version;
    let (packet_type, flags) = packet_type_of(first_byte, version)?;
    let r = &mut Reader::new(bytes);
    if packet_type != PacketType::Publish && flags != packet_type.required_flags() {
        return Err(Error::InvalidHeaderFlags {
            packet: packet_type,
            flags,
        });
    }
    let ack = |r: &mut Reader<'a>| -> Result<AckInfo, Error> {
        let f: AckFields<Checked<AckProperties<'a>>> = decode_ack(r, packet_type, version)?;
        Ok(AckInfo {
            packet_id: f.packet_id,
            reason_code: f.reason_code,
        })
    };
    let incoming = match packet_type {
        PacketType::ConnAck => Incoming::ConnAck(connack_info(r, version)?),
        PacketType::Publish => Incoming::Publish(body(r, flags, version)?),
        PacketType::PubAck => Incoming::PubAck(ack(r)?),
        PacketType::PubRec => Incoming::PubRec(ack(r)?),
        PacketType::PubRel => Incoming::PubRel(ack(r)?),
        PacketType::PubComp => Incoming::PubComp(ack(r)?),
        PacketType::SubAck => {
            let (packet_id, _, reason_codes) =
                suback::decode_parts::<Checked<AckProperties<'a>>>(r, version)?;
            Incoming::SubAck(SubAckInfo {
                packet_id,
                reason_codes,
            })
        }
        PacketType::UnsubAck => {
            let (packet_id, _, reason_codes) =
                unsuback::decode_parts::<Checked<AckProperties<'a>>>(r, version)?;
            Incoming::UnsubAck(SubAckInfo {
                packet_id,
                reason_codes,
            })
        }
        PacketType::PingResp => Incoming::PingResp,
        PacketType::Disconnect => {
            let (reason_code, _) =
                decode_short_body::<Checked<DisconnectProperties<'a>>>(r, packet_type, version)?;
            Incoming::Disconnect(reason_code)
        }
        PacketType::Auth => {
            let (reason_code, _) = decode_short_body::<Checked<AuthProperties<'a>>>(
                r,
                packet_type,
                ProtocolVersion::V5,
            )?;
            Incoming::Auth(reason_code)
        }
        PacketType::Connect
        | PacketType::Subscribe
        | PacketType::Unsubscribe
        | PacketType::PingReq => return Err(Error::NotFromServer(packet_type)),
    };
    if !r.is_empty() {
        return Err(Error::TrailingBytes);
    }
    Ok((incoming, total))
}

/// Decodes a CONNACK body into a [`ConnAckInfo`], checking every property as
/// [`crate::ConnAck`] does.
fn connack_info(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<ConnAckInfo, Error> {
    let mut info = ConnAckInfo {
        session_present: false,
        reason_code: ReasonCode::Success,
        receive_maximum: None,
        maximum_qos: None,
        maximum_packet_size: None,
        server_keep_alive: None,
    };
    let head = connack::decode_fields(r, version, &mut |id, v: Value<'_>| match id {
        PropertyId::ReceiveMaximum => info.receive_maximum = Some(Field::from_value(v)),
        PropertyId::MaximumQoS => info.maximum_qos = Some(Field::from_value(v)),
        PropertyId::MaximumPacketSize => info.maximum_packet_size = Some(Field::from_value(v)),
        PropertyId::ServerKeepAlive => info.server_keep_alive = Some(Field::from_value(v)),
        _ => {}
    })?;
    info.session_present = head.session_present;
    info.reason_code = head.reason_code;
    Ok(info)
}

/// A CONNECT as a client sends it: the CONNECT fields, a will without will
/// properties, and the three CONNECT properties a client uses to set up its
/// session (5.0 only; left out for 3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRequest<'a> {
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// Client identifier; may be empty.
    pub client_id: &'a str,
    /// Will message.
    pub will: Option<WillRequest<'a>>,
    /// User name.
    pub username: Option<&'a str>,
    /// Password.
    pub password: Option<&'a [u8]>,
    /// Session Expiry Interval, seconds.
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum; non-zero.
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size; non-zero.
    pub maximum_packet_size: Option<u32>,
}

/// The will of a [`ConnectRequest`] (no will properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WillRequest<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// QoS of the will publish.
    pub qos: QoS,
    /// Retained will.
    pub retain: bool,
}

/// A PUBLISH as a client sends it: no topic alias, and user properties as its
/// only properties. DUP is never set here; a resend sets it in the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRequest<'a> {
    /// Topic name (no wildcards, not empty).
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// QoS.
    pub qos: QoS,
    /// Retained message.
    pub retain: bool,
    /// Packet identifier; non-zero at QoS 1 and 2, ignored at QoS 0.
    pub packet_id: u16,
    /// User properties (5.0; left out for 3.1.1), in order.
    pub user_properties: &'a [(&'a str, &'a str)],
}

/// The four acknowledgements of the publish flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckType {
    /// PUBACK (QoS 1).
    PubAck,
    /// PUBREC (QoS 2, first answer).
    PubRec,
    /// PUBREL (QoS 2, second step).
    PubRel,
    /// PUBCOMP (QoS 2, last step).
    PubComp,
}

impl AckType {
    const fn packet_type(self) -> PacketType {
        match self {
            Self::PubAck => PacketType::PubAck,
            Self::PubRec => PacketType::PubRec,
            Self::PubRel => PacketType::PubRel,
            Self::PubComp => PacketType::PubComp,
        }
    }
}

/// Adds a field's length to a running total.
fn add(total: usize, len: usize) -> Result<usize, EncodeError> {
    total.checked_add(len).ok_or(EncodeError::PacketTooLarge)
}

/// Checks the remaining length, then starts a packet in `out` with its fixed header.
fn start(out: &mut [u8], first_byte: u8, remaining: usize) -> Result<Writer<'_>, EncodeError> {
    let remaining = u32::try_from(remaining)
        .ok()
        .filter(|&n| n <= MAX_VARINT)
        .ok_or(EncodeError::PacketTooLarge)?;
    let total = 1 + varint_len(remaining) + usize::try_from(remaining).unwrap_or(usize::MAX);
    if out.len() < total {
        return Err(EncodeError::BufferTooSmall {
            needed: total,
            available: out.len(),
        });
    }
    let mut w = Writer::new(out);
    w.u8(first_byte)?;
    w.varint(remaining)?;
    Ok(w)
}

/// Length of a property section holding `len` bytes of properties, prefix included.
fn section(len: usize) -> Result<usize, EncodeError> {
    let prefix = u32::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_VARINT)
        .ok_or(EncodeError::PacketTooLarge)?;
    add(len, varint_len(prefix))
}

/// Writes the length prefix of a property section of `len` bytes.
fn section_prefix(w: &mut Writer<'_>, len: usize) -> Result<(), EncodeError> {
    w.varint(u32::try_from(len).map_err(|_| EncodeError::PacketTooLarge)?)
}

impl ConnectRequest<'_> {
    /// Bytes of the CONNECT properties (5.0), after checking their values.
    fn properties_len(&self) -> Result<usize, EncodeError> {
        if self.receive_maximum == Some(0) {
            return Err(EncodeError::InvalidPropertyValue(
                PropertyId::ReceiveMaximum,
            ));
        }
        if self.maximum_packet_size == Some(0) {
            return Err(EncodeError::InvalidPropertyValue(
                PropertyId::MaximumPacketSize,
            ));
        }
        Ok(self.session_expiry_interval.map_or(0, |_| 5)
            + self.receive_maximum.map_or(0, |_| 3)
            + self.maximum_packet_size.map_or(0, |_| 5))
    }

    /// Encodes the CONNECT for a `version` connection into the start of `out`.
    pub fn encode(&self, version: ProtocolVersion, out: &mut [u8]) -> Result<usize, EncodeError> {
        let v5 = version == ProtocolVersion::V5;
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::PasswordWithoutUsername);
        }
        // Protocol name, level, flags, keep alive.
        let mut len = 10;
        let mut props = 0;
        if v5 {
            props = self.properties_len()?;
            len = add(len, section(props)?)?;
        }
        len = add(len, field_len(self.client_id.len())?)?;
        let mut flags = 0;
        if self.clean_start {
            flags |= 0b0000_0010;
        }
        if let Some(will) = &self.will {
            validate_topic_name(will.topic).map_err(EncodeError::InvalidTopicName)?;
            // An empty will property section in 5.0.
            len = add(len, usize::from(v5))?;
            len = add(len, field_len(will.topic.len())?)?;
            len = add(len, field_len(will.payload.len())?)?;
            flags |= 0b0000_0100 | ((will.qos as u8) << 3);
            if will.retain {
                flags |= 0b0010_0000;
            }
        }
        if let Some(username) = self.username {
            len = add(len, field_len(username.len())?)?;
            flags |= 0b1000_0000;
        }
        if let Some(password) = self.password {
            len = add(len, field_len(password.len())?)?;
            flags |= 0b0100_0000;
        }
        let mut w = start(out, (PacketType::Connect as u8) << 4, len)?;
        w.binary(b"MQTT")?;
        w.u8(version as u8)?;
        w.u8(flags)?;
        w.u16(self.keep_alive)?;
        if v5 {
            section_prefix(&mut w, props)?;
            if let Some(v) = self.session_expiry_interval {
                w.u8(PropertyId::SessionExpiryInterval as u8)?;
                w.u32(v)?;
            }
            if let Some(v) = self.receive_maximum {
                w.u8(PropertyId::ReceiveMaximum as u8)?;
                w.u16(v)?;
            }
            if let Some(v) = self.maximum_packet_size {
                w.u8(PropertyId::MaximumPacketSize as u8)?;
                w.u32(v)?;
            }
        }
        w.string(self.client_id)?;
        if let Some(will) = &self.will {
            if v5 {
                w.u8(0)?;
            }
            w.string(will.topic)?;
            w.binary(will.payload)?;
        }
        if let Some(username) = self.username {
            w.string(username)?;
        }
        if let Some(password) = self.password {
            w.binary(password)?;
        }
        Ok(w.position())
    }
}

impl PublishRequest<'_> {
    /// Encodes the PUBLISH for a `version` connection into the start of `out`.
    pub fn encode(&self, version: ProtocolVersion, out: &mut [u8]) -> Result<usize, EncodeError> {
        validate_topic_name(self.topic).map_err(EncodeError::InvalidTopicName)?;
        let mut len = add(field_len(self.topic.len())?, self.payload.len())?;
        let with_id = self.qos != QoS::AtMostOnce;
        if with_id {
            if self.packet_id == 0 {
                return Err(EncodeError::ZeroPacketId);
            }
            len = add(len, 2)?;
        }
        let v5 = version == ProtocolVersion::V5;
        let mut props = 0;
        if v5 {
            for (name, value) in self.user_properties {
                props = add(props, 1 + field_len(name.len())? + field_len(value.len())?)?;
            }
            len = add(len, section(props)?)?;
        }
        let mut first = ((PacketType::Publish as u8) << 4) | ((self.qos as u8) << 1);
        if self.retain {
            first |= 1;
        }
        let mut w = start(out, first, len)?;
        w.string(self.topic)?;
        if with_id {
            w.u16(self.packet_id)?;
        }
        if v5 {
            section_prefix(&mut w, props)?;
            for (name, value) in self.user_properties {
                w.u8(PropertyId::UserProperty as u8)?;
                w.string(name)?;
                w.string(value)?;
            }
        }
        w.bytes(self.payload)?;
        Ok(w.position())
    }
}

/// Checks a SUBSCRIBE or UNSUBSCRIBE filter as the codec does for `version`.
fn check_filter(filter: &str, version: ProtocolVersion) -> Result<(), EncodeError> {
    match version {
        ProtocolVersion::V311 => validate_plain_filter(filter),
        ProtocolVersion::V5 => validate_topic_filter(filter),
    }
    .map_err(EncodeError::InvalidTopicFilter)
}

/// Encodes a SUBSCRIBE of `filters`, each with its maximum QoS and default
/// options (no local off, retain as published off, send retained at subscribe),
/// and no properties.
pub fn encode_subscribe(
    packet_id: u16,
    filters: &[(&str, QoS)],
    version: ProtocolVersion,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    let mut len = 2 + usize::from(version == ProtocolVersion::V5);
    for (filter, _) in filters {
        check_filter(filter, version)?;
        len = add(len, field_len(filter.len())? + 1)?;
    }
    if filters.is_empty() {
        return Err(EncodeError::NoTopicFilters);
    }
    let mut w = start(out, ((PacketType::Subscribe as u8) << 4) | 0b0010, len)?;
    w.u16(packet_id)?;
    if version == ProtocolVersion::V5 {
        w.u8(0)?;
    }
    for (filter, qos) in filters {
        w.string(filter)?;
        w.u8(*qos as u8)?;
    }
    Ok(w.position())
}

/// Encodes an UNSUBSCRIBE of `filters`, without properties.
pub fn encode_unsubscribe(
    packet_id: u16,
    filters: &[&str],
    version: ProtocolVersion,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    let mut len = 2 + usize::from(version == ProtocolVersion::V5);
    for filter in filters {
        check_filter(filter, version)?;
        len = add(len, field_len(filter.len())?)?;
    }
    if filters.is_empty() {
        return Err(EncodeError::NoTopicFilters);
    }
    let mut w = start(out, ((PacketType::Unsubscribe as u8) << 4) | 0b0010, len)?;
    w.u16(packet_id)?;
    if version == ProtocolVersion::V5 {
        w.u8(0)?;
    }
    for filter in filters {
        w.string(filter)?;
    }
    Ok(w.position())
}

/// Encodes a PUBACK, PUBREC, PUBREL or PUBCOMP without properties, in its
/// shortest form (no reason code byte for Success).
pub fn encode_ack(
    ack: AckType,
    packet_id: u16,
    reason_code: ReasonCode,
    version: ProtocolVersion,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    let packet = ack.packet_type();
    let v5 = version == ProtocolVersion::V5;
    if v5 && !reason_code.is_allowed_in(packet) {
        return Err(EncodeError::ReasonCodeNotAllowed {
            packet,
            code: reason_code,
        });
    }
    let with_reason = v5 && reason_code != ReasonCode::Success;
    let flags = if ack == AckType::PubRel { 0b0010 } else { 0 };
    let mut w = start(
        out,
        ((packet as u8) << 4) | flags,
        2 + usize::from(with_reason),
    )?;
    w.u16(packet_id)?;
    if with_reason {
        w.u8(reason_code.to_u8())?;
    }
    Ok(w.position())
}

/// Encodes a normal DISCONNECT (reason Success, no properties): the same two
/// bytes in 3.1.1 and 5.0.
pub fn encode_disconnect(out: &mut [u8]) -> Result<usize, EncodeError> {
    encode_empty(PacketType::Disconnect, out)
}

/// Encodes a PINGREQ.
pub fn encode_ping_request(out: &mut [u8]) -> Result<usize, EncodeError> {
    encode_empty(PacketType::PingReq, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Connect, ConnectProperties, Packet, PublishProperties, SubscribeFilter,
        SubscriptionOptions, Unsubscribe, Will, decode,
    };

    const BOTH: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

    /// The general encoder's bytes (or error) for `packet`.
    fn general(
        packet: &Packet<'_>,
        version: ProtocolVersion,
    ) -> Result<([u8; 256], usize), EncodeError> {
        let mut out = [0u8; 256];
        packet.encode(version, &mut out).map(|n| (out, n))
    }

    fn lean(
        encode: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<([u8; 256], usize), EncodeError> {
        let mut out = [0u8; 256];
        encode(&mut out).map(|n| (out, n))
    }

    fn same(
        a: Result<([u8; 256], usize), EncodeError>,
        b: Result<([u8; 256], usize), EncodeError>,
    ) {
        match (a, b) {
            (Ok((a, n)), Ok((b, m))) => assert_eq!(&a[..n], &b[..m]),
            (a, b) => assert_eq!(a.map(|(_, n)| n), b.map(|(_, n)| n)),
        }
    }

    #[test]
    fn connect_matches_the_general_encoder() {
        let wills = [
            None,
            Some(WillRequest {
                topic: "dev/1/status",
                payload: b"gone",
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
            Some(WillRequest {
                topic: "bad/+",
                payload: b"",
                qos: QoS::AtMostOnce,
                retain: false,
            }),
        ];
        for version in BOTH {
            for will in wills {
                for (username, password) in [
                    (None, None),
                    (Some("u"), Some(&b"p"[..])),
                    (None, Some(&b"p"[..])),
                ] {
                    for receive_maximum in [None, Some(0), Some(4)] {
                        let req = ConnectRequest {
                            clean_start: will.is_some(),
                            keep_alive: 30,
                            client_id: "sensor-17",
                            will,
                            username,
                            password,
                            session_expiry_interval: will.map(|_| 3600),
                            receive_maximum,
                            maximum_packet_size: Some(512),
                        };
                        let packet = Packet::Connect(Connect {
                            protocol_version: version,
                            clean_start: req.clean_start,
                            keep_alive: req.keep_alive,
                            client_id: req.client_id,
                            will: will.map(|w| Will {
                                topic: w.topic,
                                payload: w.payload,
                                qos: w.qos,
                                retain: w.retain,
                                properties: Default::default(),
                            }),
                            username,
                            password,
                            properties: ConnectProperties {
                                session_expiry_interval: req.session_expiry_interval,
                                receive_maximum,
                                maximum_packet_size: req.maximum_packet_size,
                                ..Default::default()
                            },
                        });
                        same(lean(|o| req.encode(version, o)), general(&packet, version));
                    }
                }
            }
        }
    }

    #[test]
    fn publish_matches_the_general_encoder() {
        let props = [("site", "north"), ("kind", "temperature")];
        for version in BOTH {
            for (topic, qos, packet_id) in [
                ("sensors/17/temp", QoS::AtLeastOnce, 7),
                ("sensors/17/temp", QoS::AtMostOnce, 0),
                ("sensors/17/temp", QoS::AtLeastOnce, 0),
                ("sensors/#", QoS::AtMostOnce, 0),
                ("", QoS::AtMostOnce, 0),
            ] {
                for user_properties in [&props[..], &[]] {
                    let req = PublishRequest {
                        topic,
                        payload: b"21.5",
                        qos,
                        retain: packet_id == 0,
                        packet_id,
                        user_properties,
                    };
                    let packet = Packet::Publish(Publish {
                        qos,
                        retain: req.retain,
                        topic,
                        packet_id,
                        payload: req.payload,
                        properties: PublishProperties {
                            user_properties: user_properties.into(),
                            ..Default::default()
                        },
                        ..Default::default()
                    });
                    same(lean(|o| req.encode(version, o)), general(&packet, version));
                }
            }
        }
    }

    #[test]
    fn subscribe_and_unsubscribe_match_the_general_encoder() {
        let cases: [&[(&str, QoS)]; 4] = [
            &[("cmd/#", QoS::AtLeastOnce), ("a/+/b", QoS::AtMostOnce)],
            &[("$share/g/t", QoS::ExactlyOnce)],
            &[("a/#/b", QoS::AtMostOnce)],
            &[],
        ];
        for version in BOTH {
            for filters in cases {
                let mut list = [SubscribeFilter::default(); 2];
                let mut names = [""; 2];
                for (i, (filter, qos)) in filters.iter().enumerate() {
                    list[i] = SubscribeFilter {
                        filter,
                        options: SubscriptionOptions {
                            qos: *qos,
                            ..Default::default()
                        },
                    };
                    names[i] = filter;
                }
                let sub = Packet::Subscribe(crate::Subscribe {
                    packet_id: 9,
                    filters: list[..filters.len()].into(),
                    ..Default::default()
                });
                same(
                    lean(|o| encode_subscribe(9, filters, version, o)),
                    general(&sub, version),
                );
                let unsub = Packet::Unsubscribe(Unsubscribe {
                    packet_id: 9,
                    filters: names[..filters.len()].into(),
                    ..Default::default()
                });
                same(
                    lean(|o| encode_unsubscribe(9, &names[..filters.len()], version, o)),
                    general(&unsub, version),
                );
            }
            assert_eq!(
                lean(|o| encode_subscribe(0, &[("t", QoS::AtMostOnce)], version, o)).map(|r| r.1),
                Err(EncodeError::ZeroPacketId)
            );
        }
    }

    #[test]
    fn acks_and_disconnect_match_the_general_encoder() {
        for version in BOTH {
            for reason_code in [
                ReasonCode::Success,
                ReasonCode::PacketIdentifierNotFound,
                ReasonCode::NoMatchingSubscribers,
            ] {
                for id in [0, 5] {
                    let cases = [
                        (
                            AckType::PubAck,
                            Packet::PubAck(crate::PubAck {
                                packet_id: id,
                                reason_code,
                                ..Default::default()
                            }),
                        ),
                        (
                            AckType::PubRec,
                            Packet::PubRec(crate::PubRec {
                                packet_id: id,
                                reason_code,
                                ..Default::default()
                            }),
                        ),
                        (
                            AckType::PubRel,
                            Packet::PubRel(crate::PubRel {
                                packet_id: id,
                                reason_code,
                                ..Default::default()
                            }),
                        ),
                        (
                            AckType::PubComp,
                            Packet::PubComp(crate::PubComp {
                                packet_id: id,
                                reason_code,
                                ..Default::default()
                            }),
                        ),
                    ];
                    for (ack, packet) in cases {
                        same(
                            lean(|o| encode_ack(ack, id, reason_code, version, o)),
                            general(&packet, version),
                        );
                    }
                }
            }
            same(
                lean(encode_disconnect),
                general(&Packet::Disconnect(Default::default()), version),
            );
            same(
                lean(encode_ping_request),
                general(&Packet::PingReq, version),
            );
        }
    }

    #[test]
    fn a_short_buffer_reports_the_whole_size() {
        let req = PublishRequest {
            topic: "t",
            payload: &[1; 20],
            qos: QoS::AtLeastOnce,
            retain: false,
            packet_id: 1,
            user_properties: &[],
        };
        let mut out = [0u8; 10];
        assert_eq!(
            req.encode(ProtocolVersion::V5, &mut out),
            Err(EncodeError::BufferTooSmall {
                needed: 28,
                available: 10
            })
        );
    }

    #[test]
    fn server_packets_decode_like_the_general_decoder() {
        let opts = DecodeOptions::new(ProtocolVersion::V5);
        let connack = [0x20, 10, 1, 0, 7, 0x24, 1, 0x13, 0, 30, 0x25, 0];
        let (incoming, n) = decode_from_server(&connack, &opts).unwrap();
        assert_eq!(n, connack.len());
        assert_eq!(
            incoming,
            Incoming::ConnAck(ConnAckInfo {
                session_present: true,
                reason_code: ReasonCode::Success,
                receive_maximum: None,
                maximum_qos: Some(QoS::AtLeastOnce),
                maximum_packet_size: None,
                server_keep_alive: Some(30),
            })
        );
        // Whatever the general decoder rejects, so does this one, with the same error.
        for bad in [
            &[0x20, 3, 2, 0, 0][..],
            &[0x20, 5, 0, 0, 2, 0x24, 2],
            &[0x20, 8, 0, 0, 5, 0x16, 0, 2, 1, 2],
            &[0x21, 3, 0, 0, 0],
            &[0x40, 2, 0, 0],
            &[0x30, 4, 0, 1, b'#', 0],
        ] {
            assert_eq!(
                decode_from_server(bad, &opts).map(|(_, n)| n),
                decode(bad, &opts).map(|(_, n)| n),
                "{bad:?}"
            );
            assert!(decode_from_server(bad, &opts).is_err());
        }
        for client_only in [&[0xC0, 0][..], &[0x82, 5, 0, 1, 0, 1, b't'][..]] {
            assert!(matches!(
                decode_from_server(client_only, &opts),
                Err(Error::NotFromServer(_))
            ));
        }
    }
}
