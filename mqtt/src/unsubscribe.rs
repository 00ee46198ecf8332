//! UNSUBSCRIBE (MQTT 5.0 §3.10, 3.1.1 §3.10): topic filters to remove.

use crate::error::{EncodeError, Error};
use crate::list::TopicFilters;
use crate::packet::{Body, PacketType};
use crate::properties::{UnsubscribeProperties, read_properties, section_len, write_properties};
use crate::topic::{TopicError, validate_plain_filter, validate_topic_filter};
use crate::wire::{Reader, Writer, field_len};
use crate::{List, ProtocolVersion};

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    /// Packet identifier; non-zero.
    pub packet_id: u16,
    /// At least one topic filter, exactly as subscribed.
    pub filters: TopicFilters<'a>,
    /// User properties (5.0 only).
    pub properties: UnsubscribeProperties<'a>,
}

fn check_filter(filter: &str, version: ProtocolVersion) -> Result<(), TopicError> {
    match version {
        ProtocolVersion::V311 => validate_plain_filter(filter),
        ProtocolVersion::V5 => validate_topic_filter(filter),
    }
}

impl<'a> Body<'a> for Unsubscribe<'a> {
    const TYPE: PacketType = PacketType::Unsubscribe;

    fn decode(r: &mut Reader<'a>, _flags: u8, version: ProtocolVersion) -> Result<Self, Error> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(Error::ZeroPacketId);
        }
        let properties = match version {
            ProtocolVersion::V5 => read_properties(r, PacketType::Unsubscribe)?,
            ProtocolVersion::V311 => UnsubscribeProperties::default(),
        };
        let payload = r.rest();
        if payload.is_empty() {
            return Err(Error::NoTopicFilters);
        }
        let mut items = Reader::new(payload);
        while !items.is_empty() {
            check_filter(items.string()?, version).map_err(Error::InvalidTopicFilter)?;
        }
        Ok(Self {
            packet_id,
            filters: List::from_wire(payload),
            properties,
        })
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId);
        }
        let mut len = 2;
        if version == ProtocolVersion::V5 {
            len += section_len(&self.properties)?;
        }
        let mut any = false;
        for filter in self.filters.iter() {
            check_filter(filter, version).map_err(EncodeError::InvalidTopicFilter)?;
            len += field_len(filter.len())?;
            any = true;
        }
        if !any {
            return Err(EncodeError::NoTopicFilters);
        }
        Ok(len)
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u16(self.packet_id)?;
        if version == ProtocolVersion::V5 {
            write_properties(&self.properties, w)?;
        }
        for filter in self.filters.iter() {
            w.string(filter)?;
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
    fn unsubscribe_from_known_bytes() {
        let bytes = [0xA2, 8, 0, 4, 0, 1, b'a', 0, 1, b'#'];
        let (p, _) = decode(&bytes, &V311).unwrap();
        let expected = Unsubscribe {
            packet_id: 4,
            filters: List::new(&["a", "#"]),
            ..Default::default()
        };
        assert_eq!(p, Packet::Unsubscribe(expected));
        let mut out = [0u8; 16];
        assert_eq!(
            Packet::Unsubscribe(expected).encode(ProtocolVersion::V311, &mut out),
            Ok(10)
        );
        assert_eq!(out[..10], bytes);
    }

    #[test]
    fn empty_and_invalid_filters_are_rejected() {
        assert_eq!(decode(&[0xA2, 3, 0, 4, 0], &V5), Err(Error::NoTopicFilters));
        assert_eq!(
            decode(&[0xA2, 5, 0, 4, 0, 1, b'#'], &V311).map(|(p, _)| p.packet_type()),
            Ok(PacketType::Unsubscribe)
        );
        assert_eq!(
            decode(&[0xA2, 6, 0, 4, 0, 2, b'#', b'a'], &V311),
            Err(Error::InvalidTopicFilter(TopicError::MisplacedWildcard))
        );
        let empty = Packet::Unsubscribe(Unsubscribe {
            packet_id: 1,
            ..Default::default()
        });
        assert_eq!(
            empty.encoded_len(ProtocolVersion::V5),
            Err(EncodeError::NoTopicFilters)
        );
    }
}
