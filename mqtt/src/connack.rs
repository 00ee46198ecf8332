//! CONNACK (MQTT 5.0 §3.2, 3.1.1 §3.2): the server's answer to CONNECT.

use crate::ProtocolVersion;
use crate::error::{EncodeError, Error};
use crate::packet::{Body, PacketType};
use crate::properties::{
    ConnAckProperties, PropertyId, PropertySet, Value, read_section, section_len, write_properties,
};
use crate::reason::ReasonCode;
use crate::wire::{Reader, Writer};

const FLAG_SESSION_PRESENT: u8 = 0b0000_0001;

/// A CONNACK packet.
///
/// In MQTT 3.1.1 the reason code travels as a CONNACK return code (0–5); see
/// [`ReasonCode::to_connack_return_code`] for how v5 codes map onto them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnAck<'a> {
    /// The server resumed a stored session.
    pub session_present: bool,
    /// Outcome of the connection attempt.
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0 only).
    pub properties: ConnAckProperties<'a>,
}

/// The fixed part of a decoded CONNACK; its properties went to the caller's `store`.
pub(crate) struct ConnAckHead<'a> {
    pub(crate) session_present: bool,
    pub(crate) reason_code: ReasonCode,
    /// The property section, when one was read (5.0) and is not empty.
    pub(crate) properties: Option<&'a [u8]>,
}

/// Decodes a CONNACK body, giving each property to `store`: shared by
/// [`ConnAck`] and the client-role decoder, which keeps only a few properties.
pub(crate) fn decode_fields<'a>(
    r: &mut Reader<'a>,
    version: ProtocolVersion,
    store: &mut dyn FnMut(PropertyId, Value<'a>),
) -> Result<ConnAckHead<'a>, Error> {
    let flags = r.u8()?;
    if flags & !FLAG_SESSION_PRESENT != 0 {
        return Err(Error::InvalidConnAckFlags(flags));
    }
    let code = r.u8()?;
    let invalid = Error::InvalidReasonCode {
        packet: PacketType::ConnAck,
        code,
    };
    let mut head = ConnAckHead {
        session_present: flags & FLAG_SESSION_PRESENT != 0,
        reason_code: ReasonCode::Success,
        properties: None,
    };
    match version {
        ProtocolVersion::V311 => {
            head.reason_code = ReasonCode::from_connack_return_code(code).ok_or(invalid)?;
        }
        ProtocolVersion::V5 => {
            head.reason_code = ReasonCode::from_u8(code)
                .filter(|c| c.is_allowed_in(PacketType::ConnAck))
                .ok_or(invalid)?;
            let schema = <ConnAckProperties<'_> as PropertySet<'_>>::SCHEMA;
            let section = read_section(r, PacketType::ConnAck, schema, store)?;
            head.properties = (!section.is_empty()).then_some(section);
        }
    }
    Ok(head)
}

impl<'a> Body<'a> for ConnAck<'a> {
    const TYPE: PacketType = PacketType::ConnAck;

    fn decode(r: &mut Reader<'a>, _flags: u8, version: ProtocolVersion) -> Result<Self, Error> {
        let mut properties = ConnAckProperties::default();
        let head = decode_fields(r, version, &mut |id, v| properties.store(id, v))?;
        if let Some(section) = head.properties {
            properties.set_wire(section);
        }
        Ok(Self {
            session_present: head.session_present,
            reason_code: head.reason_code,
            properties,
        })
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        match version {
            ProtocolVersion::V311 => Ok(2),
            ProtocolVersion::V5 => {
                if !self.reason_code.is_allowed_in(PacketType::ConnAck) {
                    return Err(EncodeError::ReasonCodeNotAllowed {
                        packet: PacketType::ConnAck,
                        code: self.reason_code,
                    });
                }
                if self.properties.authentication_data.is_some()
                    && self.properties.authentication_method.is_none()
                {
                    return Err(EncodeError::AuthenticationDataWithoutMethod);
                }
                Ok(2 + section_len(&self.properties)?)
            }
        }
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(if self.session_present {
            FLAG_SESSION_PRESENT
        } else {
            0
        })?;
        match version {
            ProtocolVersion::V311 => w.u8(self.reason_code.to_connack_return_code()),
            ProtocolVersion::V5 => {
                w.u8(self.reason_code.to_u8())?;
                write_properties(&self.properties, w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeOptions, Packet, decode};

    const V5: DecodeOptions = DecodeOptions::new(ProtocolVersion::V5);
    const V311: DecodeOptions = DecodeOptions::new(ProtocolVersion::V311);

    #[test]
    fn v311_connack_from_known_bytes() {
        let (p, _) = decode(&[0x20, 2, 1, 0], &V311).unwrap();
        assert_eq!(
            p,
            Packet::ConnAck(ConnAck {
                session_present: true,
                ..Default::default()
            })
        );
        let (p, _) = decode(&[0x20, 2, 0, 5], &V311).unwrap();
        let Packet::ConnAck(ack) = p else {
            panic!("not a CONNACK: {p:?}")
        };
        assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
        assert_eq!(
            decode(&[0x20, 2, 0, 6], &V311),
            Err(Error::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code: 6
            })
        );
        assert_eq!(
            decode(&[0x20, 2, 2, 0], &V311),
            Err(Error::InvalidConnAckFlags(2))
        );
    }

    #[test]
    fn v5_refusal_maps_onto_v311_return_codes() {
        let ack = Packet::ConnAck(ConnAck {
            reason_code: ReasonCode::BadUserNameOrPassword,
            ..Default::default()
        });
        let mut out = [0u8; 8];
        assert_eq!(ack.encode(ProtocolVersion::V311, &mut out), Ok(4));
        assert_eq!(out[..4], [0x20, 2, 0, 4]);
        assert_eq!(ack.encode(ProtocolVersion::V5, &mut out), Ok(5));
        assert_eq!(out[..5], [0x20, 3, 0, 0x86, 0]);
    }

    #[test]
    fn v5_connack_with_properties() {
        let bytes = [0x20, 9, 0, 0, 6, 0x24, 1, 0x13, 0, 30, 0x25, 0];
        let bytes = &bytes[..11];
        assert!(decode(bytes, &V5).is_err());
        let bytes = [0x20, 10, 0, 0, 7, 0x24, 1, 0x13, 0, 30, 0x25, 0];
        let (p, _) = decode(&bytes, &V5).unwrap();
        let Packet::ConnAck(ack) = p else {
            panic!("not a CONNACK: {p:?}")
        };
        assert_eq!(ack.properties.maximum_qos, Some(crate::QoS::AtLeastOnce));
        assert_eq!(ack.properties.server_keep_alive, Some(30));
        assert_eq!(ack.properties.retain_available, Some(false));
        // A PUBACK-only reason code is not a CONNACK reason code.
        assert_eq!(
            decode(&[0x20, 3, 0, 0x10, 0], &V5),
            Err(Error::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code: 0x10
            })
        );
    }
}
