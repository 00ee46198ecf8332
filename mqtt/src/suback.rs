//! SUBACK (MQTT 5.0 §3.9, 3.1.1 §3.9): one reason code per SUBSCRIBE filter.

use crate::error::{EncodeError, Error};
use crate::list::ReasonCodes;
use crate::packet::{Body, PacketType};
use crate::properties::{
    AckProperties, PropertySet, read_properties, section_len, write_properties,
};
use crate::reason::ReasonCode;
use crate::wire::{Reader, Writer};
use crate::{List, ProtocolVersion};

/// A SUBACK packet.
///
/// In 3.1.1 the codes travel as SUBACK return codes: granted QoS 0–2, or 0x80 for
/// any failure (see [`ReasonCode::to_suback_return_code`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubAck<'a> {
    /// Packet identifier of the SUBSCRIBE; non-zero.
    pub packet_id: u16,
    /// One code per filter of the SUBSCRIBE, in the same order.
    pub reason_codes: ReasonCodes<'a>,
    /// Reason string and user properties (5.0 only).
    pub properties: AckProperties<'a>,
}

/// Decodes a SUBACK body: packet identifier, properties into `P` (see
/// [`crate::properties::Checked`]), reason codes.
pub(crate) fn decode_parts<'a, P: PropertySet<'a>>(
    r: &mut Reader<'a>,
    version: ProtocolVersion,
) -> Result<(u16, P, ReasonCodes<'a>), Error> {
    let packet_id = r.u16()?;
    if packet_id == 0 {
        return Err(Error::ZeroPacketId);
    }
    let properties = match version {
        ProtocolVersion::V5 => read_properties(r, PacketType::SubAck)?,
        ProtocolVersion::V311 => P::default(),
    };
    let payload = r.rest();
    for &code in payload {
        let valid = match version {
            ProtocolVersion::V311 => ReasonCode::from_suback_return_code(code).is_some(),
            ProtocolVersion::V5 => {
                ReasonCode::from_u8(code).is_some_and(|c| c.is_allowed_in(PacketType::SubAck))
            }
        };
        if !valid {
            return Err(Error::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            });
        }
    }
    Ok((packet_id, properties, List::from_wire(payload)))
}

impl<'a> Body<'a> for SubAck<'a> {
    const TYPE: PacketType = PacketType::SubAck;

    fn decode(r: &mut Reader<'a>, _flags: u8, version: ProtocolVersion) -> Result<Self, Error> {
        let (packet_id, properties, reason_codes) = decode_parts(r, version)?;
        Ok(Self {
            packet_id,
            reason_codes,
            properties,
        })
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId);
        }
        let mut len = 2 + self.reason_codes.len();
        if version == ProtocolVersion::V5 {
            if let Some(code) = self
                .reason_codes
                .iter()
                .find(|c| !c.is_allowed_in(PacketType::SubAck))
            {
                return Err(EncodeError::ReasonCodeNotAllowed {
                    packet: PacketType::SubAck,
                    code,
                });
            }
            len += section_len(&self.properties)?;
        }
        Ok(len)
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u16(self.packet_id)?;
        if version == ProtocolVersion::V5 {
            write_properties(&self.properties, w)?;
        }
        for code in self.reason_codes.iter() {
            w.u8(match version {
                ProtocolVersion::V311 => code.to_suback_return_code(),
                ProtocolVersion::V5 => code.to_u8(),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeOptions, Packet, decode};

    const V5: DecodeOptions = DecodeOptions::new(ProtocolVersion::V5);
    const V311: DecodeOptions = DecodeOptions::new(ProtocolVersion::V311);

    #[test]
    fn v311_suback_from_known_bytes() {
        let bytes = [0x90, 5, 0, 3, 0, 2, 0x80];
        let (p, _) = decode(&bytes, &V311).unwrap();
        let codes = [
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ];
        let expected = SubAck {
            packet_id: 3,
            reason_codes: List::new(&codes),
            ..Default::default()
        };
        assert_eq!(p, Packet::SubAck(expected));
        assert_eq!(
            decode(&[0x90, 3, 0, 3, 0x87], &V311).unwrap_err(),
            Error::InvalidReasonCode {
                packet: PacketType::SubAck,
                code: 0x87
            }
        );
    }

    #[test]
    fn v5_failure_codes_collapse_to_0x80_in_v311() {
        let codes = [ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized];
        let ack = Packet::SubAck(SubAck {
            packet_id: 3,
            reason_codes: List::new(&codes),
            ..Default::default()
        });
        let mut out = [0u8; 16];
        assert_eq!(ack.encode(ProtocolVersion::V5, &mut out), Ok(7));
        assert_eq!(out[..7], [0x90, 5, 0, 3, 0, 1, 0x87]);
        assert_eq!(decode(&out[..7], &V5), Ok((ack, 7)));
        assert_eq!(ack.encode(ProtocolVersion::V311, &mut out), Ok(6));
        assert_eq!(out[..6], [0x90, 4, 0, 3, 1, 0x80]);
        let bad = [ReasonCode::NoSubscriptionExisted];
        let ack = Packet::SubAck(SubAck {
            packet_id: 3,
            reason_codes: List::new(&bad),
            ..Default::default()
        });
        assert!(matches!(
            ack.encoded_len(ProtocolVersion::V5),
            Err(EncodeError::ReasonCodeNotAllowed { .. })
        ));
    }
}
