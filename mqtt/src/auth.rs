//! AUTH (MQTT 5.0 §3.15): enhanced authentication exchange; MQTT 5.0 only.

use crate::ProtocolVersion;
use crate::disconnect::{decode_short_body, short_body_len, write_short_body};
use crate::error::{EncodeError, Error};
use crate::packet::{Body, PacketType};
use crate::properties::AuthProperties;
use crate::reason::ReasonCode;
use crate::wire::{Reader, Writer};

/// An AUTH packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Auth<'a> {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Authentication method and data, reason string, user properties.
    pub properties: AuthProperties<'a>,
}

impl<'a> Body<'a> for Auth<'a> {
    const TYPE: PacketType = PacketType::Auth;

    fn decode(r: &mut Reader<'a>, _flags: u8, _version: ProtocolVersion) -> Result<Self, Error> {
        // Authentication Data without Method is rejected while reading the section.
        let (reason_code, properties) =
            decode_short_body(r, PacketType::Auth, ProtocolVersion::V5)?;
        Ok(Self {
            reason_code,
            properties,
        })
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if version == ProtocolVersion::V311 {
            return Err(EncodeError::NotInVersion(PacketType::Auth));
        }
        if self.properties.authentication_data.is_some()
            && self.properties.authentication_method.is_none()
        {
            return Err(EncodeError::AuthenticationDataWithoutMethod);
        }
        short_body_len(
            PacketType::Auth,
            self.reason_code,
            &self.properties,
            version,
        )
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_short_body(self.reason_code, &self.properties, version, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeOptions, Packet, decode};

    const V5: DecodeOptions = DecodeOptions::new(ProtocolVersion::V5);
    const V311: DecodeOptions = DecodeOptions::new(ProtocolVersion::V311);

    #[test]
    fn auth_exists_only_in_v5() {
        let bytes = [0xF0, 8, 0x18, 6, 0x15, 0, 3, b'S', b'C', b'R'];
        let (p, _) = decode(&bytes, &V5).unwrap();
        let expected = Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some("SCR"),
                ..Default::default()
            },
        };
        assert_eq!(p, Packet::Auth(expected));
        assert_eq!(decode(&bytes, &V311), Err(Error::InvalidPacketType(15)));
        assert_eq!(
            Packet::Auth(expected).encoded_len(ProtocolVersion::V311),
            Err(EncodeError::NotInVersion(PacketType::Auth))
        );
        assert_eq!(
            decode(&[0xF0, 5, 0x18, 3, 0x16, 0, 0], &V5),
            Err(Error::AuthenticationDataWithoutMethod)
        );
    }
}
