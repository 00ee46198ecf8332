//! UNSUBACK (MQTT 5.0 §3.11, 3.1.1 §3.11): acknowledges an UNSUBSCRIBE; in 5.0 with
//! one reason code per filter.

use crate::error::{EncodeError, Error};
use crate::list::ReasonCodes;
use crate::packet::{Body, PacketType};
use crate::properties::{
    AckProperties, PropertySet, read_properties, section_len, write_properties,
};
use crate::reason::ReasonCode;
use crate::wire::{Reader, Writer};
use crate::{List, ProtocolVersion};

/// An UNSUBACK packet. MQTT 3.1.1 carries only the packet identifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsubAck<'a> {
    /// Packet identifier of the UNSUBSCRIBE; non-zero.
    pub packet_id: u16,
    /// One code per filter of the UNSUBSCRIBE (5.0 only).
    pub reason_codes: ReasonCodes<'a>,
    /// Reason string and user properties (5.0 only).
    pub properties: AckProperties<'a>,
}

/// Decodes an UNSUBACK body: packet identifier, properties into `P` (see
/// [`crate::properties::Checked`]), reason codes (5.0 only).
pub(crate) fn decode_parts<'a, P: PropertySet<'a>>(
    r: &mut Reader<'a>,
    version: ProtocolVersion,
) -> Result<(u16, P, ReasonCodes<'a>), Error> {
    let packet_id = r.u16()?;
    if packet_id == 0 {
        return Err(Error::ZeroPacketId);
    }
    if version == ProtocolVersion::V311 {
        return Ok((packet_id, P::default(), ReasonCodes::default()));
    }
    let properties = read_properties(r, PacketType::UnsubAck)?;
    let payload = r.rest();
    for &code in payload {
        if !ReasonCode::from_u8(code).is_some_and(|c| c.is_allowed_in(PacketType::UnsubAck)) {
            return Err(Error::InvalidReasonCode {
                packet: PacketType::UnsubAck,
                code,
            });
        }
    }
    Ok((packet_id, properties, List::from_wire(payload)))
}

impl<'a> Body<'a> for UnsubAck<'a> {
    const TYPE: PacketType = PacketType::UnsubAck;

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
        if version == ProtocolVersion::V311 {
            return Ok(2);
        }
        if let Some(code) = self
            .reason_codes
            .iter()
            .find(|c| !c.is_allowed_in(PacketType::UnsubAck))
        {
            return Err(EncodeError::ReasonCodeNotAllowed {
                packet: PacketType::UnsubAck,
                code,
            });
        }
        Ok(2 + section_len(&self.properties)? + self.reason_codes.len())
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u16(self.packet_id)?;
        if version == ProtocolVersion::V311 {
            return Ok(());
        }
        write_properties(&self.properties, w)?;
        for code in self.reason_codes.iter() {
            w.u8(code.to_u8())?;
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
    fn unsuback_in_both_versions() {
        let expected = Packet::UnsubAck(UnsubAck {
            packet_id: 9,
            ..Default::default()
        });
        assert_eq!(decode(&[0xB0, 2, 0, 9], &V311), Ok((expected, 4)));
        assert_eq!(
            decode(&[0xB0, 3, 0, 9, 0x11], &V311),
            Err(Error::TrailingBytes)
        );
        let (p, _) = decode(&[0xB0, 5, 0, 9, 0, 0x11, 0x00], &V5).unwrap();
        let codes = [ReasonCode::NoSubscriptionExisted, ReasonCode::Success];
        assert_eq!(
            p,
            Packet::UnsubAck(UnsubAck {
                packet_id: 9,
                reason_codes: List::new(&codes),
                ..Default::default()
            })
        );
        assert_eq!(
            decode(&[0xB0, 4, 0, 9, 0, 0x01], &V5),
            Err(Error::InvalidReasonCode {
                packet: PacketType::UnsubAck,
                code: 1
            })
        );
    }
}
