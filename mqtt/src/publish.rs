//! PUBLISH (MQTT 5.0 §3.3, 3.1.1 §3.3): an application message, either direction.

use crate::error::{EncodeError, Error};
use crate::packet::{Body, PacketType};
use crate::properties::{
    PayloadFormat, PublishProperties, read_properties, section_len, write_properties,
};
use crate::topic::{TopicError, validate_topic_name};
use crate::wire::{Reader, Writer, field_len};
use crate::{ProtocolVersion, QoS};

const FLAG_RETAIN: u8 = 0b0001;
const FLAG_QOS_SHIFT: u8 = 1;
const FLAG_QOS_MASK: u8 = 0b0110;
const FLAG_DUP: u8 = 0b1000;

/// A PUBLISH packet.
///
/// `packet_id` is only on the wire for QoS 1 and 2, where it must be non-zero;
/// a QoS 0 publish decodes with 0 and ignores the field when encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Re-delivery of an earlier attempt (QoS 1 and 2 only).
    pub dup: bool,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Retained message.
    pub retain: bool,
    /// Topic name; empty only in 5.0 together with a topic alias.
    pub topic: &'a str,
    /// Packet identifier for QoS 1 and 2.
    pub packet_id: u16,
    /// PUBLISH properties (5.0 only).
    pub properties: PublishProperties<'a>,
    /// Application payload.
    pub payload: &'a [u8],
}

impl Publish<'_> {
    /// False when the Payload Format Indicator says UTF-8 but the payload is not
    /// (a receiver may then answer with reason code 0x99, Payload format invalid).
    pub fn payload_format_is_valid(&self) -> bool {
        self.properties.payload_format_indicator != Some(PayloadFormat::Utf8)
            || core::str::from_utf8(self.payload).is_ok()
    }
}

/// Checks the topic name, allowing an empty one in 5.0 when a topic alias names it.
fn check_topic(topic: &str, has_alias: bool, version: ProtocolVersion) -> Result<(), TopicError> {
    if topic.is_empty() && has_alias && version == ProtocolVersion::V5 {
        return Ok(());
    }
    validate_topic_name(topic)
}

impl<'a> Body<'a> for Publish<'a> {
    const TYPE: PacketType = PacketType::Publish;

    fn decode(r: &mut Reader<'a>, flags: u8, version: ProtocolVersion) -> Result<Self, Error> {
        let qos =
            QoS::from_u8((flags & FLAG_QOS_MASK) >> FLAG_QOS_SHIFT).ok_or(Error::InvalidQoS)?;
        let dup = flags & FLAG_DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(Error::InvalidHeaderFlags {
                packet: PacketType::Publish,
                flags,
            });
        }
        let topic = r.string()?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            match r.u16()? {
                0 => return Err(Error::ZeroPacketId),
                id => id,
            }
        };
        let properties: PublishProperties<'a> = match version {
            ProtocolVersion::V5 => read_properties(r, PacketType::Publish)?,
            ProtocolVersion::V311 => PublishProperties::default(),
        };
        check_topic(topic, properties.topic_alias.is_some(), version)
            .map_err(Error::InvalidTopicName)?;
        Ok(Self {
            dup,
            qos,
            retain: flags & FLAG_RETAIN != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = (self.qos as u8) << FLAG_QOS_SHIFT;
        if self.dup && self.qos != QoS::AtMostOnce {
            flags |= FLAG_DUP;
        }
        if self.retain {
            flags |= FLAG_RETAIN;
        }
        flags
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        check_topic(self.topic, self.properties.topic_alias.is_some(), version)
            .map_err(EncodeError::InvalidTopicName)?;
        let mut len = field_len(self.topic.len())? + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            if self.packet_id == 0 {
                return Err(EncodeError::ZeroPacketId);
            }
            len += 2;
        }
        if version == ProtocolVersion::V5 {
            len += section_len(&self.properties)?;
        }
        Ok(len)
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.string(self.topic)?;
        if self.qos != QoS::AtMostOnce {
            w.u16(self.packet_id)?;
        }
        if version == ProtocolVersion::V5 {
            write_properties(&self.properties, w)?;
        }
        w.bytes(self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeOptions, Packet, decode};

    const V5: DecodeOptions = DecodeOptions::new(ProtocolVersion::V5);
    const V311: DecodeOptions = DecodeOptions::new(ProtocolVersion::V311);

    #[test]
    fn v311_qos1_publish_from_known_bytes() {
        let bytes = [0x3B, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i'];
        let (p, n) = decode(&bytes, &V311).unwrap();
        assert_eq!(n, bytes.len());
        let expected = Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b",
            packet_id: 10,
            payload: b"hi",
            ..Default::default()
        };
        assert_eq!(p, Packet::Publish(expected));
        let mut out = [0u8; 16];
        assert_eq!(
            Packet::Publish(expected).encode(ProtocolVersion::V311, &mut out),
            Ok(11)
        );
        assert_eq!(out[..11], bytes);
    }

    #[test]
    fn v5_qos0_publish_with_empty_properties() {
        let bytes = [0x30, 5, 0, 1, b't', 0, b'x'];
        let (p, _) = decode(&bytes, &V5).unwrap();
        let Packet::Publish(p) = p else {
            panic!("not a PUBLISH: {p:?}")
        };
        assert_eq!((p.topic, p.payload, p.packet_id), ("t", &b"x"[..], 0));
    }

    #[test]
    fn qos3_dup_on_qos0_and_zero_packet_id_are_malformed() {
        assert_eq!(
            decode(&[0x36, 3, 0, 1, b't'], &V311),
            Err(Error::InvalidQoS)
        );
        assert_eq!(
            decode(&[0x38, 3, 0, 1, b't'], &V311),
            Err(Error::InvalidHeaderFlags {
                packet: PacketType::Publish,
                flags: 0b1000
            })
        );
        assert_eq!(
            decode(&[0x32, 5, 0, 1, b't', 0, 0], &V311),
            Err(Error::ZeroPacketId)
        );
    }

    #[test]
    fn wildcards_and_empty_topics() {
        let err = decode(&[0x30, 3, 0, 1, b'+'], &V311).unwrap_err();
        assert_eq!(err, Error::InvalidTopicName(TopicError::Wildcard));
        assert_eq!(err.reason_code().to_u8(), 0x90);
        assert_eq!(
            decode(&[0x30, 2, 0, 0], &V311),
            Err(Error::InvalidTopicName(TopicError::Empty))
        );
        // 5.0: an empty topic needs a topic alias.
        assert_eq!(
            decode(&[0x30, 3, 0, 0, 0], &V5),
            Err(Error::InvalidTopicName(TopicError::Empty))
        );
        let (p, _) = decode(&[0x30, 6, 0, 0, 3, 0x23, 0, 4], &V5).unwrap();
        let Packet::Publish(p) = p else {
            panic!("not a PUBLISH: {p:?}")
        };
        assert_eq!((p.topic, p.properties.topic_alias), ("", Some(4)));
    }

    #[test]
    fn topic_strings_must_be_well_formed() {
        let err = decode(&[0x30, 4, 0, 2, 0xC3, 0x28], &V311).unwrap_err();
        assert_eq!(err, Error::InvalidUtf8);
        assert_eq!(err.reason_code().to_u8(), 0x81);
        assert_eq!(
            decode(&[0x30, 4, 0, 2, b'a', 0], &V5),
            Err(Error::NullCharacter)
        );
        // Topic length runs past the packet: malformed, not incomplete.
        assert_eq!(
            decode(&[0x30, 3, 0, 5, b'a'], &V5),
            Err(Error::UnexpectedEnd)
        );
    }

    #[test]
    fn payload_format_indicator_check() {
        let mut p = Publish {
            topic: "t",
            payload: &[0xFF],
            ..Default::default()
        };
        assert!(p.payload_format_is_valid());
        p.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
        assert!(!p.payload_format_is_valid());
        p.payload = "é".as_bytes();
        assert!(p.payload_format_is_valid());
    }

    #[test]
    fn encoding_rejects_what_decoding_would() {
        let p = Publish {
            qos: QoS::ExactlyOnce,
            topic: "t",
            ..Default::default()
        };
        assert_eq!(
            Packet::Publish(p).encoded_len(ProtocolVersion::V5),
            Err(EncodeError::ZeroPacketId)
        );
        let p = Publish {
            topic: "a/#",
            ..Default::default()
        };
        assert_eq!(
            Packet::Publish(p).encoded_len(ProtocolVersion::V5),
            Err(EncodeError::InvalidTopicName(TopicError::Wildcard))
        );
        let mut small = [0u8; 4];
        let p = Publish {
            topic: "abc",
            ..Default::default()
        };
        assert_eq!(
            Packet::Publish(p).encode(ProtocolVersion::V311, &mut small),
            Err(EncodeError::BufferTooSmall {
                needed: 7,
                available: 4
            })
        );
    }
}
