//! CONNECT (MQTT 5.0 §3.1, 3.1.1 §3.1): the first packet of a connection, which
//! also fixes its protocol version.

use crate::error::{EncodeError, Error};
use crate::packet::{Body, PacketType};
use crate::properties::{
    ConnectProperties, WillProperties, read_properties, section_len, write_properties,
};
use crate::topic::validate_topic_name;
use crate::wire::{Reader, Writer, field_len};
use crate::{ProtocolVersion, QoS};

const PROTOCOL_NAME: &[u8] = b"MQTT";
/// Protocol name of MQTT 3.1 (level 3), recognised only to report its level.
const PROTOCOL_NAME_V31: &[u8] = b"MQIsdp";

const FLAG_RESERVED: u8 = 0b0000_0001;
const FLAG_CLEAN_START: u8 = 0b0000_0010;
const FLAG_WILL: u8 = 0b0000_0100;
const FLAG_WILL_QOS_SHIFT: u8 = 3;
const FLAG_WILL_QOS_MASK: u8 = 0b0001_1000;
const FLAG_WILL_RETAIN: u8 = 0b0010_0000;
const FLAG_PASSWORD: u8 = 0b0100_0000;
const FLAG_USERNAME: u8 = 0b1000_0000;

/// A CONNECT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Protocol level. Decoding reports the level on the wire; encoding requires it
    /// to equal the version passed to `encode`.
    pub protocol_version: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// Client identifier; may be empty (the server then assigns one).
    pub client_id: &'a str,
    /// Will message, published by the server when the connection ends abnormally.
    pub will: Option<Will<'a>>,
    /// User name.
    pub username: Option<&'a str>,
    /// Password (binary data).
    pub password: Option<&'a [u8]>,
    /// CONNECT properties (5.0 only).
    pub properties: ConnectProperties<'a>,
}

impl Default for Connect<'_> {
    fn default() -> Self {
        Self {
            protocol_version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: "",
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Will<'a> {
    /// Topic the will is published to.
    pub topic: &'a str,
    /// Will payload.
    pub payload: &'a [u8],
    /// QoS of the will publish.
    pub qos: QoS,
    /// Whether the will is published retained.
    pub retain: bool,
    /// Will properties (5.0 only).
    pub properties: WillProperties<'a>,
}

/// Reads protocol name and level: `Err` for anything but 3.1.1 and 5.0.
fn read_protocol(r: &mut Reader<'_>) -> Result<ProtocolVersion, Error> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (name, level) {
        (PROTOCOL_NAME, 4) => Ok(ProtocolVersion::V311),
        (PROTOCOL_NAME, 5) => Ok(ProtocolVersion::V5),
        (PROTOCOL_NAME | PROTOCOL_NAME_V31, _) => Err(Error::UnsupportedProtocolVersion(level)),
        _ => Err(Error::InvalidProtocolName),
    }
}

impl<'a> Body<'a> for Connect<'a> {
    const TYPE: PacketType = PacketType::Connect;

    fn decode(r: &mut Reader<'a>, _flags: u8, _version: ProtocolVersion) -> Result<Self, Error> {
        let version = read_protocol(r)?;
        let v5 = version == ProtocolVersion::V5;
        let flags = r.u8()?;
        if flags & FLAG_RESERVED != 0 {
            return Err(Error::InvalidConnectFlags(flags));
        }
        let has_will = flags & FLAG_WILL != 0;
        let will_qos = QoS::from_u8((flags & FLAG_WILL_QOS_MASK) >> FLAG_WILL_QOS_SHIFT)
            .ok_or(Error::InvalidQoS)?;
        let will_retain = flags & FLAG_WILL_RETAIN != 0;
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(Error::InvalidConnectFlags(flags));
        }
        let has_username = flags & FLAG_USERNAME != 0;
        let has_password = flags & FLAG_PASSWORD != 0;
        if !v5 && has_password && !has_username {
            return Err(Error::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties: ConnectProperties<'a> = if v5 {
            read_properties(r, PacketType::Connect)?
        } else {
            ConnectProperties::default()
        };
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(Error::AuthenticationDataWithoutMethod);
        }
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if v5 {
                read_properties(r, PacketType::Connect)?
            } else {
                WillProperties::default()
            };
            let topic = r.string()?;
            validate_topic_name(topic).map_err(Error::InvalidTopicName)?;
            let payload = r.binary()?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Self {
            protocol_version: version,
            clean_start: flags & FLAG_CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.protocol_version != version {
            return Err(EncodeError::VersionMismatch);
        }
        let v5 = version == ProtocolVersion::V5;
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::PasswordWithoutUsername);
        }
        let mut len = field_len(PROTOCOL_NAME.len())? + 1 + 1 + 2;
        if v5 {
            if self.properties.authentication_data.is_some()
                && self.properties.authentication_method.is_none()
            {
                return Err(EncodeError::AuthenticationDataWithoutMethod);
            }
            len += section_len(&self.properties)?;
        }
        len += field_len(self.client_id.len())?;
        if let Some(will) = &self.will {
            validate_topic_name(will.topic).map_err(EncodeError::InvalidTopicName)?;
            if v5 {
                len += section_len(&will.properties)?;
            }
            len += field_len(will.topic.len())? + field_len(will.payload.len())?;
        }
        if let Some(username) = self.username {
            len += field_len(username.len())?;
        }
        if let Some(password) = self.password {
            len += field_len(password.len())?;
        }
        Ok(len)
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let v5 = version == ProtocolVersion::V5;
        w.binary(PROTOCOL_NAME)?;
        w.u8(version as u8)?;
        let mut flags = 0;
        if self.clean_start {
            flags |= FLAG_CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= FLAG_WILL | ((will.qos as u8) << FLAG_WILL_QOS_SHIFT);
            if will.retain {
                flags |= FLAG_WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= FLAG_USERNAME;
        }
        if self.password.is_some() {
            flags |= FLAG_PASSWORD;
        }
        w.u8(flags)?;
        w.u16(self.keep_alive)?;
        if v5 {
            write_properties(&self.properties, w)?;
        }
        w.string(self.client_id)?;
        if let Some(will) = &self.will {
            if v5 {
                write_properties(&will.properties, w)?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeOptions, Packet, decode};

    const ANY: DecodeOptions = DecodeOptions::new(ProtocolVersion::V311);

    fn connect_bytes(level: u8, flags: u8, tail: &[u8]) -> ([u8; 64], usize) {
        let mut buf = [0u8; 64];
        let head = [0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
        let body_len = head.len() + tail.len();
        buf[0] = 0x10;
        buf[1] = u8::try_from(body_len).unwrap();
        buf[2..12].copy_from_slice(&head);
        buf[12..12 + tail.len()].copy_from_slice(tail);
        (buf, 2 + body_len)
    }

    #[test]
    fn v311_connect_from_known_bytes() {
        // Clean session, will QoS 1 retained, user name and password.
        let tail = [
            0, 2, b'c', b'1', // client id
            0, 1, b'w', // will topic
            0, 2, b'b', b'y', // will payload
            0, 1, b'u', // user name
            0, 1, b'p', // password
        ];
        let (buf, n) = connect_bytes(4, 0b1110_1110, &tail);
        let (packet, used) = decode(&buf[..n], &ANY).unwrap();
        assert_eq!(used, n);
        let expected = Connect {
            protocol_version: ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 60,
            client_id: "c1",
            will: Some(Will {
                topic: "w",
                payload: b"by",
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: WillProperties::default(),
            }),
            username: Some("u"),
            password: Some(b"p"),
            properties: ConnectProperties::default(),
        };
        assert_eq!(packet, Packet::Connect(expected));
        let mut out = [0u8; 64];
        assert_eq!(
            Packet::Connect(expected).encode(ProtocolVersion::V311, &mut out),
            Ok(n)
        );
        assert_eq!(out[..n], buf[..n]);
    }

    #[test]
    fn v5_connect_is_decoded_whatever_the_connection_version_says() {
        // Properties: receive maximum 10.
        let tail = [3, 0x21, 0, 10, 0, 0];
        let (buf, n) = connect_bytes(5, 0b0000_0010, &tail);
        let (packet, _) = decode(&buf[..n], &ANY).unwrap();
        let Packet::Connect(c) = packet else {
            panic!("not a CONNECT: {packet:?}")
        };
        assert_eq!(c.protocol_version, ProtocolVersion::V5);
        assert_eq!(c.properties.receive_maximum, Some(10));
        assert_eq!(c.client_id, "");
    }

    #[test]
    fn unsupported_levels_and_names_are_distinguishable() {
        let (buf, n) = connect_bytes(3, 2, &[0, 0]);
        assert_eq!(
            decode(&buf[..n], &ANY),
            Err(Error::UnsupportedProtocolVersion(3))
        );
        let (buf, n) = connect_bytes(6, 2, &[0, 0]);
        let err = decode(&buf[..n], &ANY).unwrap_err();
        assert_eq!(err, Error::UnsupportedProtocolVersion(6));
        assert_eq!(err.reason_code().to_u8(), 0x84);
        let mut bad_name = connect_bytes(4, 2, &[0, 0]);
        bad_name.0[5] = b'X';
        assert_eq!(
            decode(&bad_name.0[..bad_name.1], &ANY),
            Err(Error::InvalidProtocolName)
        );
        // MQTT 3.1 ("MQIsdp", level 3).
        let v31 = [
            0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 0,
        ];
        assert_eq!(
            decode(&v31, &ANY),
            Err(Error::UnsupportedProtocolVersion(3))
        );
    }

    #[test]
    fn inconsistent_flags_are_malformed() {
        let (buf, n) = connect_bytes(4, 0b0000_0011, &[0, 0]);
        assert_eq!(
            decode(&buf[..n], &ANY),
            Err(Error::InvalidConnectFlags(0b11))
        );
        // Will QoS without the will flag.
        let (buf, n) = connect_bytes(4, 0b0000_1000, &[0, 0]);
        assert_eq!(
            decode(&buf[..n], &ANY),
            Err(Error::InvalidConnectFlags(0b1000))
        );
        // Will retain without the will flag.
        let (buf, n) = connect_bytes(5, 0b0010_0000, &[0, 0, 0]);
        assert_eq!(
            decode(&buf[..n], &ANY),
            Err(Error::InvalidConnectFlags(0b10_0000))
        );
        // Will QoS 3.
        let (buf, n) = connect_bytes(4, 0b0001_1100, &[0, 0, 0, 1, b'w', 0, 0]);
        assert_eq!(decode(&buf[..n], &ANY), Err(Error::InvalidQoS));
        // 3.1.1 password without user name; allowed in 5.0.
        let (buf, n) = connect_bytes(4, 0b0100_0000, &[0, 0, 0, 0]);
        assert_eq!(decode(&buf[..n], &ANY), Err(Error::PasswordWithoutUsername));
        let (buf, n) = connect_bytes(5, 0b0100_0000, &[0, 0, 0, 0, 0]);
        assert!(decode(&buf[..n], &ANY).is_ok());
    }

    #[test]
    fn will_topic_must_be_a_topic_name() {
        let (buf, n) = connect_bytes(4, 0b0000_0100, &[0, 0, 0, 1, b'#', 0, 0]);
        assert_eq!(
            decode(&buf[..n], &ANY),
            Err(Error::InvalidTopicName(crate::TopicError::Wildcard))
        );
    }

    #[test]
    fn client_id_with_null_is_malformed() {
        let (buf, n) = connect_bytes(4, 0b0000_0010, &[0, 1, 0]);
        assert_eq!(decode(&buf[..n], &ANY), Err(Error::NullCharacter));
    }

    #[test]
    fn encoding_checks_the_version_field() {
        let c = Connect {
            protocol_version: ProtocolVersion::V5,
            ..Default::default()
        };
        assert_eq!(
            Packet::Connect(c).encoded_len(ProtocolVersion::V311),
            Err(EncodeError::VersionMismatch)
        );
    }
}
