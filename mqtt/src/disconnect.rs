//! DISCONNECT (MQTT 5.0 §3.14, 3.1.1 §3.14): the last packet of a connection; in 5.0
//! either side may send it, with a reason code.

use crate::ProtocolVersion;
use crate::error::{EncodeError, Error};
use crate::packet::{Body, PacketType};
use crate::properties::{
    DisconnectProperties, is_empty, read_properties, section_len, write_properties,
};
use crate::reason::ReasonCode;
use crate::wire::{Reader, Writer};

/// A DISCONNECT packet. MQTT 3.1.1 carries neither reason code nor properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// Why the connection ends; [`ReasonCode::NORMAL_DISCONNECTION`] by default.
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (5.0 only).
    pub properties: DisconnectProperties<'a>,
}

impl<'a> Body<'a> for Disconnect<'a> {
    const TYPE: PacketType = PacketType::Disconnect;

    fn decode(r: &mut Reader<'a>, _flags: u8, version: ProtocolVersion) -> Result<Self, Error> {
        let mut packet = Self::default();
        if version == ProtocolVersion::V5 && !r.is_empty() {
            let code = r.u8()?;
            packet.reason_code = ReasonCode::from_u8(code)
                .filter(|c| c.is_allowed_in(PacketType::Disconnect))
                .ok_or(Error::InvalidReasonCode {
                    packet: PacketType::Disconnect,
                    code,
                })?;
            if !r.is_empty() {
                packet.properties = read_properties(r, PacketType::Disconnect)?;
            }
        }
        Ok(packet)
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        short_body_len(
            PacketType::Disconnect,
            self.reason_code,
            &self.properties,
            version,
        )
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_short_body(self.reason_code, &self.properties, version, w)
    }
}

/// Body length of DISCONNECT and AUTH: nothing for Success without properties,
/// the reason code alone without properties, or both.
pub(crate) fn short_body_len<'a, P: crate::properties::PropertySet<'a>>(
    packet: PacketType,
    reason_code: ReasonCode,
    properties: &P,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    if version == ProtocolVersion::V311 {
        return Ok(0);
    }
    if !reason_code.is_allowed_in(packet) {
        return Err(EncodeError::ReasonCodeNotAllowed {
            packet,
            code: reason_code,
        });
    }
    if !is_empty(properties) {
        Ok(1 + section_len(properties)?)
    } else if reason_code != ReasonCode::Success {
        Ok(1)
    } else {
        Ok(0)
    }
}

pub(crate) fn write_short_body<'a, P: crate::properties::PropertySet<'a>>(
    reason_code: ReasonCode,
    properties: &P,
    version: ProtocolVersion,
    w: &mut Writer<'_>,
) -> Result<(), EncodeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeOptions, Packet, decode};

    const V5: DecodeOptions = DecodeOptions::new(ProtocolVersion::V5);
    const V311: DecodeOptions = DecodeOptions::new(ProtocolVersion::V311);

    #[test]
    fn disconnect_forms() {
        let normal = Packet::Disconnect(Disconnect::default());
        assert_eq!(decode(&[0xE0, 0], &V311), Ok((normal, 2)));
        assert_eq!(decode(&[0xE0, 0], &V5), Ok((normal, 2)));
        assert_eq!(decode(&[0xE0, 1, 0], &V311), Err(Error::TrailingBytes));
        let (p, _) = decode(&[0xE0, 1, 0x8E], &V5).unwrap();
        let Packet::Disconnect(d) = p else {
            panic!("not a DISCONNECT: {p:?}")
        };
        assert_eq!(d.reason_code, ReasonCode::SessionTakenOver);
        assert_eq!(
            decode(&[0xE0, 1, 0x84], &V5),
            Err(Error::InvalidReasonCode {
                packet: PacketType::Disconnect,
                code: 0x84
            })
        );
        let mut out = [0u8; 8];
        let d = Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::PacketTooLarge,
            ..Default::default()
        });
        assert_eq!(d.encode(ProtocolVersion::V5, &mut out), Ok(3));
        assert_eq!(out[..3], [0xE0, 1, 0x95]);
        assert_eq!(d.encode(ProtocolVersion::V311, &mut out), Ok(2));
        assert_eq!(out[..2], [0xE0, 0]);
    }
}
