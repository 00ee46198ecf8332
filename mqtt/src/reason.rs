//! MQTT 5.0 reason codes (§2.4) and which packet may carry which, plus the mapping
//! to the MQTT 3.1.1 CONNACK return codes and SUBACK return codes.

use crate::packet::PacketType;

/// Every MQTT 5.0 reason code.
///
/// 0x00 has three names in the specification: Success, Normal disconnection
/// (DISCONNECT) and Granted QoS 0 (SUBACK); see [`ReasonCode::NORMAL_DISCONNECTION`]
/// and [`ReasonCode::GRANTED_QOS_0`]. Which codes a packet may carry is
/// [`ReasonCode::is_allowed_in`]; the decoder rejects the others as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00: Success / Normal disconnection / Granted QoS 0.
    #[default]
    Success = 0x00,
    /// 0x01: Granted QoS 1 (SUBACK).
    GrantedQoS1 = 0x01,
    /// 0x02: Granted QoS 2 (SUBACK).
    GrantedQoS2 = 0x02,
    /// 0x04: Disconnect with Will Message (DISCONNECT from a client).
    DisconnectWithWillMessage = 0x04,
    /// 0x10: No matching subscribers (PUBACK, PUBREC).
    NoMatchingSubscribers = 0x10,
    /// 0x11: No subscription existed (UNSUBACK).
    NoSubscriptionExisted = 0x11,
    /// 0x18: Continue authentication (AUTH).
    ContinueAuthentication = 0x18,
    /// 0x19: Re-authenticate (AUTH).
    ReAuthenticate = 0x19,
    /// 0x80: Unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81: Malformed Packet.
    MalformedPacket = 0x81,
    /// 0x82: Protocol Error.
    ProtocolError = 0x82,
    /// 0x83: Implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84: Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85: Client Identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86: Bad User Name or Password.
    BadUserNameOrPassword = 0x86,
    /// 0x87: Not authorized.
    NotAuthorized = 0x87,
    /// 0x88: Server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89: Server busy.
    ServerBusy = 0x89,
    /// 0x8A: Banned.
    Banned = 0x8A,
    /// 0x8B: Server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C: Bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D: Keep Alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E: Session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F: Topic Filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90: Topic Name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91: Packet Identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92: Packet Identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93: Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94: Topic Alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95: Packet too large.
    PacketTooLarge = 0x95,
    /// 0x96: Message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97: Quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98: Administrative action.
    AdministrativeAction = 0x98,
    /// 0x99: Payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A: Retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B: QoS not supported.
    QoSNotSupported = 0x9B,
    /// 0x9C: Use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D: Server moved.
    ServerMoved = 0x9D,
    /// 0x9E: Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F: Connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0: Maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1: Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2: Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// Every reason code, in wire order.
    pub const ALL: [Self; 43] = {
        use ReasonCode::*;
        [
            Success,
            GrantedQoS1,
            GrantedQoS2,
            DisconnectWithWillMessage,
            NoMatchingSubscribers,
            NoSubscriptionExisted,
            ContinueAuthentication,
            ReAuthenticate,
            UnspecifiedError,
            MalformedPacket,
            ProtocolError,
            ImplementationSpecificError,
            UnsupportedProtocolVersion,
            ClientIdentifierNotValid,
            BadUserNameOrPassword,
            NotAuthorized,
            ServerUnavailable,
            ServerBusy,
            Banned,
            ServerShuttingDown,
            BadAuthenticationMethod,
            KeepAliveTimeout,
            SessionTakenOver,
            TopicFilterInvalid,
            TopicNameInvalid,
            PacketIdentifierInUse,
            PacketIdentifierNotFound,
            ReceiveMaximumExceeded,
            TopicAliasInvalid,
            PacketTooLarge,
            MessageRateTooHigh,
            QuotaExceeded,
            AdministrativeAction,
            PayloadFormatInvalid,
            RetainNotSupported,
            QoSNotSupported,
            UseAnotherServer,
            ServerMoved,
            SharedSubscriptionsNotSupported,
            ConnectionRateExceeded,
            MaximumConnectTime,
            SubscriptionIdentifiersNotSupported,
            WildcardSubscriptionsNotSupported,
        ]
    };
}

impl ReasonCode {
    /// 0x00 in a DISCONNECT.
    pub const NORMAL_DISCONNECTION: Self = Self::Success;
    /// 0x00 in a SUBACK.
    pub const GRANTED_QOS_0: Self = Self::Success;

    /// The reason code for a wire value, `None` for values the specification does
    /// not define.
    pub const fn from_u8(v: u8) -> Option<Self> {
        use ReasonCode::*;
        Some(match v {
            0x00 => Success,
            0x01 => GrantedQoS1,
            0x02 => GrantedQoS2,
            0x04 => DisconnectWithWillMessage,
            0x10 => NoMatchingSubscribers,
            0x11 => NoSubscriptionExisted,
            0x18 => ContinueAuthentication,
            0x19 => ReAuthenticate,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8B => ServerShuttingDown,
            0x8C => BadAuthenticationMethod,
            0x8D => KeepAliveTimeout,
            0x8E => SessionTakenOver,
            0x8F => TopicFilterInvalid,
            0x90 => TopicNameInvalid,
            0x91 => PacketIdentifierInUse,
            0x92 => PacketIdentifierNotFound,
            0x93 => ReceiveMaximumExceeded,
            0x94 => TopicAliasInvalid,
            0x95 => PacketTooLarge,
            0x96 => MessageRateTooHigh,
            0x97 => QuotaExceeded,
            0x98 => AdministrativeAction,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QoSNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9E => SharedSubscriptionsNotSupported,
            0x9F => ConnectionRateExceeded,
            0xA0 => MaximumConnectTime,
            0xA1 => SubscriptionIdentifiersNotSupported,
            0xA2 => WildcardSubscriptionsNotSupported,
            _ => return None,
        })
    }

    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        self as u8
    }

    /// True for 0x80 and above: the operation failed.
    pub const fn is_error(self) -> bool {
        self.to_u8() >= 0x80
    }

    /// Whether MQTT 5.0 allows this reason code in `packet` (the tables in §3.2.2.2,
    /// §3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1, §3.9.3, §3.11.3, §3.14.2.1, §3.15.2.1).
    pub const fn is_allowed_in(self, packet: PacketType) -> bool {
        // A bit test in a table built at compile time from `allowed_by_spec`: a few
        // instructions instead of one comparison chain per packet type in firmware.
        let index = self.index();
        let word = ALLOWED[packet as usize][index / 32];
        word & (1 << (index % 32)) != 0
    }

    /// Position in [`ReasonCode::ALL`]: the eight codes below 0x80, then 0x80..=0xA2.
    const fn index(self) -> usize {
        use ReasonCode::*;
        match self {
            Success => 0,
            GrantedQoS1 => 1,
            GrantedQoS2 => 2,
            DisconnectWithWillMessage => 3,
            NoMatchingSubscribers => 4,
            NoSubscriptionExisted => 5,
            ContinueAuthentication => 6,
            ReAuthenticate => 7,
            error => 8 + (error as usize - 0x80),
        }
    }

    /// The specification's table behind [`ReasonCode::is_allowed_in`].
    const fn allowed_by_spec(self, packet: PacketType) -> bool {
        use ReasonCode::*;
        match packet {
            PacketType::ConnAck => matches!(
                self,
                Success
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | UnsupportedProtocolVersion
                    | ClientIdentifierNotValid
                    | BadUserNameOrPassword
                    | NotAuthorized
                    | ServerUnavailable
                    | ServerBusy
                    | Banned
                    | BadAuthenticationMethod
                    | TopicNameInvalid
                    | PacketTooLarge
                    | QuotaExceeded
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | ConnectionRateExceeded
            ),
            PacketType::PubAck | PacketType::PubRec => matches!(
                self,
                Success
                    | NoMatchingSubscribers
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicNameInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | PayloadFormatInvalid
            ),
            PacketType::PubRel | PacketType::PubComp => {
                matches!(self, Success | PacketIdentifierNotFound)
            }
            PacketType::SubAck => matches!(
                self,
                Success
                    | GrantedQoS1
                    | GrantedQoS2
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | SharedSubscriptionsNotSupported
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::UnsubAck => matches!(
                self,
                Success
                    | NoSubscriptionExisted
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
            ),
            PacketType::Disconnect => matches!(
                self,
                Success
                    | DisconnectWithWillMessage
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | ServerBusy
                    | ServerShuttingDown
                    | KeepAliveTimeout
                    | SessionTakenOver
                    | TopicFilterInvalid
                    | TopicNameInvalid
                    | ReceiveMaximumExceeded
                    | TopicAliasInvalid
                    | PacketTooLarge
                    | MessageRateTooHigh
                    | QuotaExceeded
                    | AdministrativeAction
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | SharedSubscriptionsNotSupported
                    | ConnectionRateExceeded
                    | MaximumConnectTime
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::Auth => matches!(self, Success | ContinueAuthentication | ReAuthenticate),
            PacketType::Connect
            | PacketType::Publish
            | PacketType::Subscribe
            | PacketType::Unsubscribe
            | PacketType::PingReq
            | PacketType::PingResp => false,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code for this reason code.
    ///
    /// 3.1.1 has six return codes; the v5 codes with the same meaning map onto them
    /// (Banned → 5 "not authorized"), and every other failure becomes 3 "server
    /// unavailable", the only general-purpose refusal 3.1.1 offers.
    pub const fn to_connack_return_code(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0,
            UnsupportedProtocolVersion => 1,
            ClientIdentifierNotValid => 2,
            BadUserNameOrPassword => 4,
            NotAuthorized | Banned | BadAuthenticationMethod => 5,
            _ => 3,
        }
    }

    /// The reason code for an MQTT 3.1.1 CONNACK return code (0–5).
    pub const fn from_connack_return_code(code: u8) -> Option<Self> {
        use ReasonCode::*;
        Some(match code {
            0 => Success,
            1 => UnsupportedProtocolVersion,
            2 => ClientIdentifierNotValid,
            3 => ServerUnavailable,
            4 => BadUserNameOrPassword,
            5 => NotAuthorized,
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 SUBACK return code: granted QoS 0–2, or 0x80 for any failure.
    pub const fn to_suback_return_code(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0,
            GrantedQoS1 => 1,
            GrantedQoS2 => 2,
            _ => 0x80,
        }
    }

    /// The reason code for an MQTT 3.1.1 SUBACK return code (0, 1, 2 or 0x80).
    pub const fn from_suback_return_code(code: u8) -> Option<Self> {
        use ReasonCode::*;
        Some(match code {
            0 => Success,
            1 => GrantedQoS1,
            2 => GrantedQoS2,
            0x80 => UnspecifiedError,
            _ => return None,
        })
    }
}

impl From<ReasonCode> for u8 {
    fn from(code: ReasonCode) -> Self {
        code.to_u8()
    }
}

/// [`ReasonCode::is_allowed_in`] as bits: per packet type (by its number), one bit per
/// [`ReasonCode::index`], in two 32-bit words.
const ALLOWED: [[u32; 2]; 16] = {
    let mut table = [[0u32; 2]; 16];
    let mut p = 1;
    while p < 16 {
        if let Some(packet) = PacketType::from_u8(p) {
            let mut i = 0;
            while i < ReasonCode::ALL.len() {
                let code = ReasonCode::ALL[i];
                if code.allowed_by_spec(packet) {
                    let index = code.index();
                    table[p as usize][index / 32] |= 1 << (index % 32);
                }
                i += 1;
            }
        }
        p += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bit_table_is_the_specification_table() {
        for (i, code) in ReasonCode::ALL.into_iter().enumerate() {
            assert_eq!(code.index(), i, "{code:?}");
            for p in 1..16 {
                let packet = PacketType::from_u8(p).unwrap();
                assert_eq!(
                    code.is_allowed_in(packet),
                    code.allowed_by_spec(packet),
                    "{code:?} in {packet:?}"
                );
            }
        }
    }

    #[test]
    fn wire_values_round_trip_and_unknown_values_are_rejected() {
        let mut known = 0;
        for v in 0..=u8::MAX {
            if let Some(code) = ReasonCode::from_u8(v) {
                assert_eq!(code.to_u8(), v);
                known += 1;
            }
        }
        assert_eq!(known, ReasonCode::ALL.len());
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xA3), None);
    }

    #[test]
    fn packet_tables_follow_the_specification() {
        assert!(ReasonCode::NoMatchingSubscribers.is_allowed_in(PacketType::PubAck));
        assert!(!ReasonCode::NoMatchingSubscribers.is_allowed_in(PacketType::PubComp));
        assert!(ReasonCode::PacketIdentifierNotFound.is_allowed_in(PacketType::PubRel));
        assert!(ReasonCode::DisconnectWithWillMessage.is_allowed_in(PacketType::Disconnect));
        assert!(!ReasonCode::DisconnectWithWillMessage.is_allowed_in(PacketType::ConnAck));
        assert!(ReasonCode::ReAuthenticate.is_allowed_in(PacketType::Auth));
        assert!(!ReasonCode::GrantedQoS1.is_allowed_in(PacketType::UnsubAck));
        assert!(ReasonCode::GrantedQoS2.is_allowed_in(PacketType::SubAck));
    }

    #[test]
    fn v311_return_codes_map_both_ways() {
        for code in 0..=5 {
            let reason = ReasonCode::from_connack_return_code(code).unwrap();
            assert_eq!(reason.to_connack_return_code(), code);
        }
        assert_eq!(ReasonCode::from_connack_return_code(6), None);
        assert_eq!(ReasonCode::QuotaExceeded.to_connack_return_code(), 3);
        for code in [0, 1, 2, 0x80] {
            let reason = ReasonCode::from_suback_return_code(code).unwrap();
            assert_eq!(reason.to_suback_return_code(), code);
        }
        assert_eq!(ReasonCode::TopicFilterInvalid.to_suback_return_code(), 0x80);
        assert_eq!(ReasonCode::from_suback_return_code(3), None);
    }
}
