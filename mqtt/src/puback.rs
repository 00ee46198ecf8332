//! PUBACK (MQTT 5.0 §3.4, 3.1.1 §3.4): acknowledges a QoS 1 PUBLISH.

crate::ack::ack_packet!(
    /// A PUBACK packet.
    PubAck,
    PubAck
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EncodeError, Error};
    use crate::packet::PacketType;
    use crate::properties::AckProperties;
    use crate::reason::ReasonCode;
    use crate::{DecodeOptions, Packet, ProtocolVersion, decode};

    const V5: DecodeOptions = DecodeOptions::new(ProtocolVersion::V5);
    const V311: DecodeOptions = DecodeOptions::new(ProtocolVersion::V311);

    #[test]
    fn short_forms_decode_to_success() {
        let expected = Packet::PubAck(PubAck {
            packet_id: 7,
            ..Default::default()
        });
        assert_eq!(decode(&[0x40, 2, 0, 7], &V311), Ok((expected, 4)));
        assert_eq!(decode(&[0x40, 2, 0, 7], &V5), Ok((expected, 4)));
        assert_eq!(decode(&[0x40, 3, 0, 7, 0], &V5), Ok((expected, 5)));
        assert_eq!(decode(&[0x40, 4, 0, 7, 0, 0], &V5), Ok((expected, 6)));
        // 3.1.1 has no reason code.
        assert_eq!(
            decode(&[0x40, 3, 0, 7, 0], &V311),
            Err(Error::TrailingBytes)
        );
    }

    #[test]
    fn encoding_uses_the_shortest_form() {
        let mut out = [0u8; 16];
        let ack = Packet::PubAck(PubAck {
            packet_id: 7,
            ..Default::default()
        });
        assert_eq!(ack.encode(ProtocolVersion::V5, &mut out), Ok(4));
        assert_eq!(out[..4], [0x40, 2, 0, 7]);
        let ack = Packet::PubAck(PubAck {
            packet_id: 7,
            reason_code: ReasonCode::NoMatchingSubscribers,
            ..Default::default()
        });
        assert_eq!(ack.encode(ProtocolVersion::V5, &mut out), Ok(5));
        assert_eq!(out[..5], [0x40, 3, 0, 7, 0x10]);
        let ack = Packet::PubAck(PubAck {
            packet_id: 7,
            reason_code: ReasonCode::QuotaExceeded,
            properties: AckProperties {
                reason_string: Some("full"),
                ..Default::default()
            },
        });
        assert_eq!(ack.encode(ProtocolVersion::V5, &mut out), Ok(13));
        assert_eq!(
            out[..13],
            [0x40, 11, 0, 7, 0x97, 7, 0x1F, 0, 4, b'f', b'u', b'l', b'l']
        );
        assert_eq!(ack.encode(ProtocolVersion::V311, &mut out), Ok(4));
    }

    #[test]
    fn zero_packet_id_and_foreign_reason_codes_are_rejected() {
        assert_eq!(decode(&[0x40, 2, 0, 0], &V311), Err(Error::ZeroPacketId));
        assert_eq!(
            decode(&[0x40, 3, 0, 1, 0x92], &V5),
            Err(Error::InvalidReasonCode {
                packet: PacketType::PubAck,
                code: 0x92
            })
        );
        let ack = Packet::PubAck(PubAck::default());
        assert_eq!(
            ack.encoded_len(ProtocolVersion::V5),
            Err(EncodeError::ZeroPacketId)
        );
    }
}
