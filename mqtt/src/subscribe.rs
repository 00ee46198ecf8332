//! SUBSCRIBE (MQTT 5.0 §3.8, 3.1.1 §3.8): topic filters with their subscription
//! options.

use crate::error::{EncodeError, Error};
use crate::list::SubscribeFilters;
use crate::packet::{Body, PacketType};
use crate::properties::{SubscribeProperties, read_properties, section_len, write_properties};
use crate::topic::{TopicError, shared_subscription, validate_plain_filter, validate_topic_filter};
use crate::wire::{Reader, Writer, field_len};
use crate::{List, ProtocolVersion, QoS};

const OPT_QOS_MASK: u8 = 0b0000_0011;
const OPT_NO_LOCAL: u8 = 0b0000_0100;
const OPT_RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const OPT_RETAIN_HANDLING_SHIFT: u8 = 4;
const OPT_RETAIN_HANDLING_MASK: u8 = 0b0011_0000;
const OPT_RESERVED_V5: u8 = 0b1100_0000;
const OPT_RESERVED_V311: u8 = !OPT_QOS_MASK;

/// When the server sends retained messages for a new subscription (5.0 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist before.
    SendIfNewSubscription = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// Subscription options byte (5.0 §3.8.3.1). In 3.1.1 only `qos` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the subscriber accepts.
    pub qos: QoS,
    /// Do not deliver this client's own publishes back to it.
    pub no_local: bool,
    /// Keep the retain flag of forwarded publishes as published.
    pub retain_as_published: bool,
    /// When to send retained messages.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Parses an options byte with the 5.0 layout (a valid 3.1.1 byte parses to
    /// the same QoS and defaults for the rest).
    pub(crate) fn from_byte(b: u8) -> Result<Self, Error> {
        if b & OPT_RESERVED_V5 != 0 {
            return Err(Error::InvalidSubscriptionOptions(b));
        }
        let qos = QoS::from_u8(b & OPT_QOS_MASK).ok_or(Error::InvalidQoS)?;
        let retain_handling = match (b & OPT_RETAIN_HANDLING_MASK) >> OPT_RETAIN_HANDLING_SHIFT {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNewSubscription,
            2 => RetainHandling::DoNotSend,
            _ => return Err(Error::InvalidRetainHandling),
        };
        Ok(Self {
            qos,
            no_local: b & OPT_NO_LOCAL != 0,
            retain_as_published: b & OPT_RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    /// The options byte for `version`; 3.1.1 keeps only the QoS.
    pub(crate) fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos as u8;
        if version == ProtocolVersion::V5 {
            if self.no_local {
                b |= OPT_NO_LOCAL;
            }
            if self.retain_as_published {
                b |= OPT_RETAIN_AS_PUBLISHED;
            }
            b |= (self.retain_handling as u8) << OPT_RETAIN_HANDLING_SHIFT;
        }
        b
    }
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscribeFilter<'a> {
    /// Topic filter; in 5.0 possibly a shared subscription `$share/{group}/{filter}`.
    pub filter: &'a str,
    /// Subscription options.
    pub options: SubscriptionOptions,
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// Packet identifier; non-zero.
    pub packet_id: u16,
    /// At least one topic filter.
    pub filters: SubscribeFilters<'a>,
    /// SUBSCRIBE properties (5.0 only).
    pub properties: SubscribeProperties<'a>,
}

/// Checks one filter: syntax (shared form only in 5.0) and, in 5.0, no No Local
/// on a shared subscription.
fn check_filter(f: &SubscribeFilter<'_>, version: ProtocolVersion) -> Result<(), FilterProblem> {
    match version {
        ProtocolVersion::V311 => validate_plain_filter(f.filter).map_err(FilterProblem::Syntax),
        ProtocolVersion::V5 => {
            validate_topic_filter(f.filter).map_err(FilterProblem::Syntax)?;
            if f.options.no_local && matches!(shared_subscription(f.filter), Ok(Some(_))) {
                return Err(FilterProblem::SharedNoLocal);
            }
            Ok(())
        }
    }
}

enum FilterProblem {
    Syntax(TopicError),
    SharedNoLocal,
}

impl<'a> Body<'a> for Subscribe<'a> {
    const TYPE: PacketType = PacketType::Subscribe;

    fn decode(r: &mut Reader<'a>, _flags: u8, version: ProtocolVersion) -> Result<Self, Error> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(Error::ZeroPacketId);
        }
        let properties = match version {
            ProtocolVersion::V5 => read_properties(r, PacketType::Subscribe)?,
            ProtocolVersion::V311 => SubscribeProperties::default(),
        };
        let payload = r.rest();
        if payload.is_empty() {
            return Err(Error::NoTopicFilters);
        }
        let mut items = Reader::new(payload);
        while !items.is_empty() {
            let filter = items.string()?;
            let byte = items.u8()?;
            if version == ProtocolVersion::V311 && byte & OPT_RESERVED_V311 != 0 {
                return Err(Error::InvalidSubscriptionOptions(byte));
            }
            let options = SubscriptionOptions::from_byte(byte)?;
            check_filter(&SubscribeFilter { filter, options }, version).map_err(|p| match p {
                FilterProblem::Syntax(e) => Error::InvalidTopicFilter(e),
                FilterProblem::SharedNoLocal => Error::SharedSubscriptionNoLocal,
            })?;
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
        for f in self.filters.iter() {
            check_filter(&f, version).map_err(|p| match p {
                FilterProblem::Syntax(e) => EncodeError::InvalidTopicFilter(e),
                FilterProblem::SharedNoLocal => EncodeError::SharedSubscriptionNoLocal,
            })?;
            len += field_len(f.filter.len())? + 1;
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
        for f in self.filters.iter() {
            w.string(f.filter)?;
            w.u8(f.options.to_byte(version))?;
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

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }

    #[test]
    fn v311_subscribe_from_known_bytes() {
        let bytes = [0x82, 12, 0, 1, 0, 1, b'a', 1, 0, 3, b'b', b'/', b'+', 2];
        let (p, n) = decode(&bytes, &V311).unwrap();
        assert_eq!(n, bytes.len());
        let filters = [
            SubscribeFilter {
                filter: "a",
                options: opts(QoS::AtLeastOnce),
            },
            SubscribeFilter {
                filter: "b/+",
                options: opts(QoS::ExactlyOnce),
            },
        ];
        let expected = Subscribe {
            packet_id: 1,
            filters: List::new(&filters),
            ..Default::default()
        };
        assert_eq!(p, Packet::Subscribe(expected));
        let mut out = [0u8; 32];
        assert_eq!(
            Packet::Subscribe(expected).encode(ProtocolVersion::V311, &mut out),
            Ok(14)
        );
        assert_eq!(out[..14], bytes);
    }

    #[test]
    fn v5_options_byte() {
        // no local, retain as published, retain handling 2, QoS 1; subscription id 5.
        let bytes = [0x82, 9, 0, 9, 2, 0x0B, 5, 0, 1, b'x', 0b0010_1101];
        let (p, _) = decode(&bytes, &V5).unwrap();
        let Packet::Subscribe(s) = p else {
            panic!("not a SUBSCRIBE: {p:?}")
        };
        assert_eq!(s.properties.subscription_identifier, Some(5));
        let f = s.filters.iter().next().unwrap();
        assert_eq!(
            f.options,
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            }
        );
    }

    #[test]
    fn reserved_option_bits_retain_handling_3_and_qos_3() {
        let with_options = |b: u8| [0x82, 6, 0, 1, 0, 1, b'x', b];
        assert_eq!(
            decode(&with_options(0b0000_0100), &V311),
            Err(Error::InvalidSubscriptionOptions(4))
        );
        assert_eq!(
            decode(&[0x82, 7, 0, 1, 0, 0, 1, b'x', 0b0100_0000], &V5),
            Err(Error::InvalidSubscriptionOptions(0b0100_0000))
        );
        let err = decode(&[0x82, 7, 0, 1, 0, 0, 1, b'x', 0b0011_0000], &V5).unwrap_err();
        assert_eq!(err, Error::InvalidRetainHandling);
        assert_eq!(err.reason_code().to_u8(), 0x82);
        assert_eq!(decode(&with_options(3), &V311), Err(Error::InvalidQoS));
    }

    #[test]
    fn filters_are_validated() {
        assert_eq!(decode(&[0x82, 2, 0, 1], &V311), Err(Error::NoTopicFilters));
        assert_eq!(decode(&[0x82, 3, 0, 1, 0], &V5), Err(Error::NoTopicFilters));
        assert_eq!(
            decode(&[0x82, 5, 0, 0, 0, 0, 0], &V311),
            Err(Error::ZeroPacketId)
        );
        assert_eq!(
            decode(&[0x82, 7, 0, 1, 0, 2, b'a', b'#', 0], &V311),
            Err(Error::InvalidTopicFilter(TopicError::MisplacedWildcard))
        );
        assert_eq!(
            decode(&[0x82, 5, 0, 1, 0, 0, 0], &V311),
            Err(Error::InvalidTopicFilter(TopicError::Empty))
        );
        // Flags of SUBSCRIBE must be 0b0010.
        assert_eq!(
            decode(&[0x80, 6, 0, 1, 0, 1, b'a', 0], &V311),
            Err(Error::InvalidHeaderFlags {
                packet: PacketType::Subscribe,
                flags: 0
            })
        );
    }

    #[test]
    fn shared_subscriptions_in_v5() {
        let mut buf = [0u8; 32];
        let filter = b"$share/g/t";
        buf[..5].copy_from_slice(&[0x82, 16, 0, 1, 0]);
        buf[5..7].copy_from_slice(&[0, 10]);
        buf[7..17].copy_from_slice(filter);
        buf[17] = 0b0000_0100; // no local
        assert_eq!(
            decode(&buf[..18], &V5),
            Err(Error::SharedSubscriptionNoLocal)
        );
        buf[17] = 1;
        assert!(decode(&buf[..18], &V5).is_ok());
        // "$share/g" without a filter is invalid in 5.0, a plain filter in 3.1.1.
        let bytes = [
            0x82, 13, 0, 1, 0, 8, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', 0,
        ];
        assert!(decode(&bytes, &V311).is_ok());
        let v5 = [
            0x82, 14, 0, 1, 0, 0, 8, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', 0,
        ];
        assert_eq!(
            decode(&v5, &V5),
            Err(Error::InvalidTopicFilter(TopicError::MissingSharedFilter))
        );
    }
}
