//! PUBREL (MQTT 5.0 §3.6, 3.1.1 §3.6): releases a QoS 2 PUBLISH (second step).

crate::ack::ack_packet!(
    /// A PUBREL packet.
    PubRel,
    PubRel
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::ReasonCode;
    use crate::{DecodeOptions, Packet, ProtocolVersion, decode};

    #[test]
    fn pubrel_carries_flags_0010() {
        let rel = Packet::PubRel(PubRel {
            packet_id: 0x0102,
            ..Default::default()
        });
        let mut out = [0u8; 8];
        assert_eq!(rel.encode(ProtocolVersion::V311, &mut out), Ok(4));
        assert_eq!(out[..4], [0x62, 2, 1, 2]);
        let not_found = [0x62, 3, 1, 2, 0x92];
        let (p, _) = decode(&not_found, &DecodeOptions::new(ProtocolVersion::V5)).unwrap();
        let Packet::PubRel(p) = p else {
            panic!("not a PUBREL: {p:?}")
        };
        assert_eq!(p.reason_code, ReasonCode::PacketIdentifierNotFound);
    }
}
