//! DISCONNECT (MQTT 5.0 §3.14, 3.1.1 §3.14): the last packet of a connection; in 5.0
//! either side may send it, with a reason code.

use crate::ProtocolVersion;
use crate::error::{EncodeError, Error};
use crate::packet::{Body, PacketType};
use crate::properties::{
    DisconnectProperties, PropertySet, is_empty, read_properties, section_len, write_properties,
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
        let (reason_code, properties) = decode_short_body(r, PacketType::Disconnect, version)?;
        Ok(Self {
            reason_code,
            properties,
        })
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
/// Decodes the body DISCONNECT and AUTH share: in 5.0 an optional reason code and
/// optional properties (into `P`, see [`crate::properties::Checked`]). AUTH exists
/// only in 5.0, so it is decoded with `version` 5.0 whatever the connection says.
pub(crate) fn decode_short_body<'a, P: PropertySet<'a>>(
    r: &mut Reader<'a>,
    packet: PacketType,
    version: ProtocolVersion,
) -> Result<(ReasonCode, P), Error> {
    let mut reason_code = ReasonCode::Success;
    let mut properties = P::default();
    if version == ProtocolVersion::V5 && !r.is_empty() {
        let code = r.u8()?;
        reason_code = ReasonCode::from_u8(code)
            .filter(|c| c.is_allowed_in(packet))
            .ok_or(Error::InvalidReasonCode { packet, code })?;
        if !r.is_empty() {
            properties = read_properties(r, packet)?;
        }
    }
    Ok((reason_code, properties))
}

pub(crate) fn short_body_len(
    packet: PacketType,
    reason_code: ReasonCode,
    properties: &dyn crate::properties::Visit<'_>,
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

pub(crate) fn write_short_body(
    reason_code: ReasonCode,
    properties: &dyn crate::properties::Visit<'_>,
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
