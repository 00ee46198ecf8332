//! PUBCOMP (MQTT 5.0 §3.7, 3.1.1 §3.7): completes a QoS 2 exchange (third step).

crate::ack::ack_packet!(
    /// A PUBCOMP packet.
    PubComp,
    PubComp
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::packet::PacketType;
    use crate::{DecodeOptions, Packet, ProtocolVersion, decode};

    const V5: DecodeOptions = DecodeOptions::new(ProtocolVersion::V5);

    #[test]
    fn pubcomp_accepts_only_its_reason_codes() {
        let (p, _) = decode(&[0x70, 2, 0, 1], &V5).unwrap();
        assert_eq!(
            p,
            Packet::PubComp(PubComp {
                packet_id: 1,
                ..Default::default()
            })
        );
        assert_eq!(
            decode(&[0x70, 3, 0, 1, 0x80], &V5),
            Err(Error::InvalidReasonCode {
                packet: PacketType::PubComp,
                code: 0x80
            })
        );
    }
}
