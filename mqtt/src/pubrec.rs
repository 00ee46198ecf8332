//! PUBREC (MQTT 5.0 §3.5, 3.1.1 §3.5): acknowledges a QoS 2 PUBLISH (first step).

crate::ack::ack_packet!(
    /// A PUBREC packet.
    PubRec,
    PubRec
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::packet::PacketType;
    use crate::reason::ReasonCode;
    use crate::{DecodeOptions, Packet, ProtocolVersion, decode};

    const V5: DecodeOptions = DecodeOptions::new(ProtocolVersion::V5);

    #[test]
    fn pubrec_reason_codes() {
        let (p, _) = decode(&[0x50, 3, 0, 1, 0x10], &V5).unwrap();
        let expected = PubRec {
            packet_id: 1,
            reason_code: ReasonCode::NoMatchingSubscribers,
            ..Default::default()
        };
        assert_eq!(p, Packet::PubRec(expected));
        // PUBREC flags must be 0.
        assert_eq!(
            decode(&[0x52, 2, 0, 1], &V5),
            Err(Error::InvalidHeaderFlags {
                packet: PacketType::PubRec,
                flags: 2
            })
        );
    }
}
