//! Decode and encode errors.
//!
//! [`Error`] is what the decoder reports about bytes from the network. It keeps
//! "need more bytes" ([`Error::Incomplete`]) apart from everything else, which means
//! the peer sent a packet the specification does not allow; [`Error::reason_code`]
//! says which MQTT 5.0 reason code a server (or client) sends in the DISCONNECT (or
//! CONNACK) that answers it. [`EncodeError`] is what the encoder reports about a
//! packet built by the caller.

use crate::packet::PacketType;
use crate::properties::PropertyId;
use crate::reason::ReasonCode;
use crate::topic::TopicError;

/// Why bytes could not be decoded into a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ends before the end of the packet. Not a protocol violation: read
    /// more bytes and try again. `needed` is how many more bytes the packet takes,
    /// when the fixed header is complete enough to tell; otherwise at least one.
    #[error("incomplete packet: need more bytes")]
    Incomplete {
        /// Exact number of missing bytes, if known.
        needed: Option<usize>,
    },
    /// The remaining length field is longer than four bytes or not minimally encoded.
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// A variable byte integer inside the packet is longer than four bytes or not
    /// minimally encoded.
    #[error("malformed variable byte integer")]
    MalformedVarInt,
    /// The whole packet (fixed header included) is larger than the allowed maximum.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Size of the packet in bytes, fixed header included.
        size: usize,
        /// The maximum it was checked against.
        max: u32,
    },
    /// The packet type nibble is reserved (0, or 15 in MQTT 3.1.1).
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// The fixed-header flags are not the ones the packet type requires.
    #[error("invalid fixed header flags {flags:#06b} for {packet:?}")]
    InvalidHeaderFlags {
        /// Packet type from the fixed header.
        packet: PacketType,
        /// The low nibble of the first byte.
        flags: u8,
    },
    /// A QoS field holds 3.
    #[error("invalid QoS 3")]
    InvalidQoS,
    /// A field runs past the end of the packet its remaining length announces.
    #[error("field runs past the end of the packet")]
    UnexpectedEnd,
    /// Bytes are left over after the last field of the packet.
    #[error("unexpected bytes after the end of the packet")]
    TrailingBytes,
    /// A string is not well-formed UTF-8 (this includes encoded surrogates).
    #[error("string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A string contains U+0000.
    #[error("string contains the null character U+0000")]
    NullCharacter,
    /// The PUBLISH topic name (or Response Topic) is not a valid topic name.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE topic filter is not valid.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// CONNECT carries a protocol level this codec does not speak (3.1.1 and 5.0
    /// only). A server answers with CONNACK return code 0x01 (3.1.1) or reason code
    /// 0x84 (5.0), then closes the connection.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// CONNECT carries a protocol name other than "MQTT".
    #[error("protocol name is not \"MQTT\"")]
    InvalidProtocolName,
    /// CONNECT flags are inconsistent: the reserved bit is set, will QoS or will
    /// retain without the will flag, or will QoS 3.
    #[error("invalid CONNECT flags {0:#010b}")]
    InvalidConnectFlags(u8),
    /// MQTT 3.1.1 CONNECT with the password flag but not the user name flag.
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// CONNACK acknowledge flags have reserved bits set.
    #[error("invalid CONNACK flags {0:#010b}")]
    InvalidConnAckFlags(u8),
    /// SUBSCRIBE options byte has reserved bits set.
    #[error("reserved bits set in subscription options {0:#010b}")]
    InvalidSubscriptionOptions(u8),
    /// SUBSCRIBE retain handling field holds 3.
    #[error("retain handling 3 is reserved")]
    InvalidRetainHandling,
    /// Shared subscription with the No Local option (MQTT 5.0 §3.8.3.1).
    #[error("no local is not allowed on a shared subscription")]
    SharedSubscriptionNoLocal,
    /// A packet identifier that must be non-zero is zero.
    #[error("packet identifier is zero")]
    ZeroPacketId,
    /// SUBSCRIBE or UNSUBSCRIBE without any topic filter.
    #[error("no topic filter in the packet")]
    NoTopicFilters,
    /// A property other than User Property (or Subscription Identifier in PUBLISH)
    /// appears more than once.
    #[error("property {0:?} appears more than once")]
    DuplicateProperty(PropertyId),
    /// A property that this packet type cannot carry.
    #[error("property {property:?} is not allowed in {packet:?}")]
    PropertyNotAllowed {
        /// The packet that carries it.
        packet: PacketType,
        /// The property.
        property: PropertyId,
    },
    /// A property identifier the specification does not define.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u32),
    /// A property value outside its allowed range (for example Receive Maximum 0).
    #[error("invalid value for property {0:?}")]
    InvalidPropertyValue(PropertyId),
    /// Authentication Data without Authentication Method.
    #[error("authentication data without authentication method")]
    AuthenticationDataWithoutMethod,
    /// A reason code that this packet type cannot carry.
    #[error("reason code {code:#04x} is not allowed in {packet:?}")]
    InvalidReasonCode {
        /// The packet that carries it.
        packet: PacketType,
        /// The wire value.
        code: u8,
    },
    /// A packet type only a client sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE,
    /// PINGREQ), given to [`crate::decode_from_server`].
    #[error("{0:?} is never sent by a server")]
    NotFromServer(PacketType),
}

impl Error {
    /// True for [`Error::Incomplete`]: the input is a valid prefix so far.
    pub const fn is_incomplete(&self) -> bool {
        matches!(self, Self::Incomplete { .. })
    }

    /// The MQTT 5.0 reason code for a DISCONNECT (or CONNACK, for errors in CONNECT)
    /// that answers this error.
    ///
    /// Malformed Packet (0x81) is for bytes that cannot be parsed per the
    /// specification, Protocol Error (0x82) for parsed data the protocol forbids,
    /// and the more specific codes where the specification names one. An
    /// [`Error::Incomplete`] that ends the connection (the peer closed mid-packet)
    /// counts as malformed.
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            Self::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            Self::UnsupportedProtocolVersion(_) | Self::InvalidProtocolName => {
                ReasonCode::UnsupportedProtocolVersion
            }
            Self::InvalidTopicName(TopicError::Empty) => ReasonCode::ProtocolError,
            // Topic Alias 0 (MQTT 5.0 §3.3.2.3.4).
            Self::InvalidPropertyValue(PropertyId::TopicAlias) => ReasonCode::TopicAliasInvalid,
            Self::InvalidTopicName(_) => ReasonCode::TopicNameInvalid,
            Self::InvalidTopicFilter(_) => ReasonCode::TopicFilterInvalid,
            Self::InvalidRetainHandling
            | Self::SharedSubscriptionNoLocal
            | Self::NoTopicFilters
            | Self::DuplicateProperty(_)
            | Self::InvalidPropertyValue(_)
            | Self::AuthenticationDataWithoutMethod
            | Self::NotFromServer(_) => ReasonCode::ProtocolError,
            Self::Incomplete { .. }
            | Self::MalformedRemainingLength
            | Self::MalformedVarInt
            | Self::InvalidPacketType(_)
            | Self::InvalidHeaderFlags { .. }
            | Self::InvalidQoS
            | Self::UnexpectedEnd
            | Self::TrailingBytes
            | Self::InvalidUtf8
            | Self::NullCharacter
            | Self::InvalidConnectFlags(_)
            | Self::PasswordWithoutUsername
            | Self::InvalidConnAckFlags(_)
            | Self::InvalidSubscriptionOptions(_)
            | Self::ZeroPacketId
            | Self::PropertyNotAllowed { .. }
            | Self::UnknownProperty(_)
            | Self::InvalidReasonCode { .. } => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is shorter than the encoded packet.
    #[error("output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// A string or binary field is longer than 65 535 bytes.
    #[error("field of {len} bytes is longer than 65535")]
    FieldTooLong {
        /// Length of the field.
        len: usize,
    },
    /// The packet's remaining length (or a property section) exceeds 268 435 455.
    #[error("packet too large to encode")]
    PacketTooLarge,
    /// A variable byte integer value above 268 435 455.
    #[error("value {value} does not fit a variable byte integer")]
    VarIntTooLarge {
        /// The value.
        value: u32,
    },
    /// A packet identifier that must be non-zero is zero.
    #[error("packet identifier is zero")]
    ZeroPacketId,
    /// A property value outside its allowed range.
    #[error("invalid value for property {0:?}")]
    InvalidPropertyValue(PropertyId),
    /// Authentication Data without Authentication Method.
    #[error("authentication data without authentication method")]
    AuthenticationDataWithoutMethod,
    /// A reason code this packet type cannot carry.
    #[error("reason code {code:?} is not allowed in {packet:?}")]
    ReasonCodeNotAllowed {
        /// The packet type.
        packet: PacketType,
        /// The reason code.
        code: ReasonCode,
    },
    /// The packet type does not exist in the requested protocol version (AUTH in 3.1.1).
    #[error("{0:?} does not exist in MQTT 3.1.1")]
    NotInVersion(PacketType),
    /// `Connect::protocol_version` differs from the version passed to `encode`.
    #[error("CONNECT protocol version differs from the encoding version")]
    VersionMismatch,
    /// SUBSCRIBE or UNSUBSCRIBE without any topic filter.
    #[error("no topic filter in the packet")]
    NoTopicFilters,
    /// MQTT 3.1.1 CONNECT with a password but no user name.
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// The PUBLISH topic name is not valid (empty without a topic alias, or wildcards).
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE topic filter is not valid.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// Shared subscription with the No Local option (MQTT 5.0 §3.8.3.1).
    #[error("no local is not allowed on a shared subscription")]
    SharedSubscriptionNoLocal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_reason_codes_a_server_sends() {
        assert_eq!(Error::MalformedRemainingLength.reason_code().to_u8(), 0x81);
        assert_eq!(
            Error::DuplicateProperty(PropertyId::TopicAlias)
                .reason_code()
                .to_u8(),
            0x82
        );
        assert_eq!(
            Error::PacketTooLarge { size: 10, max: 5 }
                .reason_code()
                .to_u8(),
            0x95
        );
        assert_eq!(
            Error::InvalidTopicName(TopicError::Wildcard)
                .reason_code()
                .to_u8(),
            0x90
        );
        assert_eq!(
            Error::InvalidTopicName(TopicError::Empty)
                .reason_code()
                .to_u8(),
            0x82
        );
        assert_eq!(
            Error::InvalidTopicFilter(TopicError::Empty)
                .reason_code()
                .to_u8(),
            0x8F
        );
        assert_eq!(
            Error::UnsupportedProtocolVersion(3).reason_code().to_u8(),
            0x84
        );
        assert_eq!(Error::InvalidRetainHandling.reason_code().to_u8(), 0x82);
        let alias_zero = Error::InvalidPropertyValue(PropertyId::TopicAlias);
        assert_eq!(alias_zero.reason_code().to_u8(), 0x94);
        let receive_max_zero = Error::InvalidPropertyValue(PropertyId::ReceiveMaximum);
        assert_eq!(receive_max_zero.reason_code().to_u8(), 0x82);
    }

    #[test]
    fn errors_are_core_errors_without_std() {
        fn assert_error<E: core::error::Error>(_: &E) {}
        assert_error(&Error::InvalidQoS);
        assert_error(&EncodeError::ZeroPacketId);
        assert_error(&TopicError::Empty);
    }

    #[test]
    fn incomplete_is_distinct_from_malformed() {
        assert!(Error::Incomplete { needed: Some(3) }.is_incomplete());
        assert!(!Error::UnexpectedEnd.is_incomplete());
    }
}
