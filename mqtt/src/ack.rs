//! The shape PUBACK, PUBREC, PUBREL and PUBCOMP share (MQTT 5.0 §3.4–3.7): packet
//! identifier, then in 5.0 an optional reason code and optional properties.
//!
//! Each packet gets its own struct (in its own module) from [`ack_packet!`], so a
//! PUBREC cannot be passed where a PUBACK is expected.

use crate::ProtocolVersion;
use crate::error::{EncodeError, Error};
use crate::packet::PacketType;
use crate::properties::{
    AckProperties, PropertySet, is_empty, read_properties, section_len, write_properties,
};
use crate::reason::ReasonCode;
use crate::wire::{Reader, Writer};

/// Decoded fields of an acknowledgement packet.
/// A decoded acknowledgement; `P` is [`AckProperties`], or [`crate::properties::Checked`]
/// to validate the properties without keeping them.
pub(crate) struct AckFields<P> {
    pub(crate) packet_id: u16,
    pub(crate) reason_code: ReasonCode,
    pub(crate) properties: P,
}

pub(crate) fn decode_ack<'a, P: PropertySet<'a>>(
    r: &mut Reader<'a>,
    packet: PacketType,
    version: ProtocolVersion,
) -> Result<AckFields<P>, Error> {
    let packet_id = r.u16()?;
    if packet_id == 0 {
        return Err(Error::ZeroPacketId);
    }
    let mut fields = AckFields {
        packet_id,
        reason_code: ReasonCode::Success,
        properties: Default::default(),
    };
    // 5.0 §3.4.2.1: no reason code means Success; no property length means none.
    if version == ProtocolVersion::V5 && !r.is_empty() {
        let code = r.u8()?;
        fields.reason_code = ReasonCode::from_u8(code)
            .filter(|c| c.is_allowed_in(packet))
            .ok_or(Error::InvalidReasonCode { packet, code })?;
        if !r.is_empty() {
            fields.properties = read_properties(r, packet)?;
        }
    }
    Ok(fields)
}

pub(crate) fn ack_body_len(
    packet: PacketType,
    packet_id: u16,
    reason_code: ReasonCode,
    properties: &AckProperties<'_>,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    if version == ProtocolVersion::V311 {
        return Ok(2);
    }
    if !reason_code.is_allowed_in(packet) {
        return Err(EncodeError::ReasonCodeNotAllowed {
            packet,
            code: reason_code,
        });
    }
    if !is_empty(properties) {
        Ok(3 + section_len(properties)?)
    } else if reason_code != ReasonCode::Success {
        Ok(3)
    } else {
        Ok(2)
    }
}

pub(crate) fn write_ack(
    packet_id: u16,
    reason_code: ReasonCode,
    properties: &AckProperties<'_>,
    version: ProtocolVersion,
    w: &mut Writer<'_>,
) -> Result<(), EncodeError> {
    w.u16(packet_id)?;
    if version == ProtocolVersion::V311 {
        return Ok(());
    }
    let has_properties = !is_empty(properties);
    if has_properties || reason_code != ReasonCode::Success {
        w.u8(reason_code.to_u8())?;
    }
    if has_properties {
        write_properties(properties, w)?;
    }
    Ok(())
}

/// Defines an acknowledgement packet struct and its `Body` implementation.
macro_rules! ack_packet {
    ($(#[$meta:meta])* $name:ident, $packet:ident) => {
        $(#[$meta])*
        ///
        /// MQTT 3.1.1 carries only the packet identifier: encoding for 3.1.1 drops the
        /// reason code and properties, decoding reports Success and no properties.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name<'a> {
            /// Packet identifier of the PUBLISH (or PUBREC/PUBREL) acknowledged; non-zero.
            pub packet_id: u16,
            /// Outcome (5.0 only).
            pub reason_code: $crate::reason::ReasonCode,
            /// Reason string and user properties (5.0 only).
            pub properties: $crate::properties::AckProperties<'a>,
        }

        impl<'a> $crate::packet::Body<'a> for $name<'a> {
            const TYPE: $crate::packet::PacketType = $crate::packet::PacketType::$packet;

            fn decode(
                r: &mut $crate::wire::Reader<'a>,
                _flags: u8,
                version: $crate::ProtocolVersion,
            ) -> Result<Self, $crate::error::Error> {
                let f: $crate::ack::AckFields<$crate::properties::AckProperties<'a>> =
                    $crate::ack::decode_ack(r, Self::TYPE, version)?;
                Ok(Self { packet_id: f.packet_id, reason_code: f.reason_code, properties: f.properties })
            }

            fn body_len(
                &self,
                version: $crate::ProtocolVersion,
            ) -> Result<usize, $crate::error::EncodeError> {
                $crate::ack::ack_body_len(
                    Self::TYPE,
                    self.packet_id,
                    self.reason_code,
                    &self.properties,
                    version,
                )
            }

            fn write_body(
                &self,
                version: $crate::ProtocolVersion,
                w: &mut $crate::wire::Writer<'_>,
            ) -> Result<(), $crate::error::EncodeError> {
                $crate::ack::write_ack(self.packet_id, self.reason_code, &self.properties, version, w)
            }
        }
    };
}

pub(crate) use ack_packet;
