//! MQTT 5.0 properties (§2.2.2): the [`Property`] values, one typed struct per
//! packet kind with an `Option` per property it may carry, and the shared
//! property-section reader and writer.
//!
//! Decoding checks each property's value range, rejects duplicates (only User
//! Property, and Subscription Identifier in PUBLISH, may repeat) and properties the
//! packet type cannot carry. The repeatable ones stay as wire bytes in a
//! [`List`](crate::List), so a decoded packet never allocates.

use crate::QoS;
use crate::error::{EncodeError, Error};
use crate::list::{List, SubscriptionIds, UserProperties};
use crate::packet::PacketType;
use crate::topic::validate_topic_name;
use crate::wire::{MAX_VARINT, Reader, Writer, field_len, varint_len};

/// Property identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    /// 0x01, byte: 0 unspecified bytes, 1 UTF-8 payload.
    PayloadFormatIndicator = 0x01,
    /// 0x02, four-byte integer, seconds.
    MessageExpiryInterval = 0x02,
    /// 0x03, UTF-8 string.
    ContentType = 0x03,
    /// 0x08, UTF-8 string (a topic name).
    ResponseTopic = 0x08,
    /// 0x09, binary data.
    CorrelationData = 0x09,
    /// 0x0B, variable byte integer 1..=268 435 455.
    SubscriptionIdentifier = 0x0B,
    /// 0x11, four-byte integer, seconds.
    SessionExpiryInterval = 0x11,
    /// 0x12, UTF-8 string.
    AssignedClientIdentifier = 0x12,
    /// 0x13, two-byte integer, seconds.
    ServerKeepAlive = 0x13,
    /// 0x15, UTF-8 string.
    AuthenticationMethod = 0x15,
    /// 0x16, binary data.
    AuthenticationData = 0x16,
    /// 0x17, byte 0/1.
    RequestProblemInformation = 0x17,
    /// 0x18, four-byte integer, seconds.
    WillDelayInterval = 0x18,
    /// 0x19, byte 0/1.
    RequestResponseInformation = 0x19,
    /// 0x1A, UTF-8 string.
    ResponseInformation = 0x1A,
    /// 0x1C, UTF-8 string.
    ServerReference = 0x1C,
    /// 0x1F, UTF-8 string.
    ReasonString = 0x1F,
    /// 0x21, two-byte integer, non-zero.
    ReceiveMaximum = 0x21,
    /// 0x22, two-byte integer.
    TopicAliasMaximum = 0x22,
    /// 0x23, two-byte integer, non-zero.
    TopicAlias = 0x23,
    /// 0x24, byte 0/1.
    MaximumQoS = 0x24,
    /// 0x25, byte 0/1.
    RetainAvailable = 0x25,
    /// 0x26, UTF-8 string pair; may repeat.
    UserProperty = 0x26,
    /// 0x27, four-byte integer, non-zero.
    MaximumPacketSize = 0x27,
    /// 0x28, byte 0/1.
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29, byte 0/1.
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A, byte 0/1.
    SharedSubscriptionAvailable = 0x2A,
}

/// Payload Format Indicator values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    #[default]
    Unspecified = 0,
    /// 1: UTF-8 encoded character data.
    Utf8 = 1,
}

/// One property with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    missing_docs,
    reason = "each variant is the property of the same name in PropertyId"
)]
pub enum Property<'a> {
    PayloadFormatIndicator(PayloadFormat),
    MessageExpiryInterval(u32),
    ContentType(&'a str),
    ResponseTopic(&'a str),
    CorrelationData(&'a [u8]),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(&'a str),
    ServerKeepAlive(u16),
    AuthenticationMethod(&'a str),
    AuthenticationData(&'a [u8]),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(&'a str),
    ServerReference(&'a str),
    ReasonString(&'a str),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(QoS),
    RetainAvailable(bool),
    UserProperty(&'a str, &'a str),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

fn read_bool(r: &mut Reader<'_>, id: PropertyId) -> Result<bool, Error> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::InvalidPropertyValue(id)),
    }
}

impl<'a> Property<'a> {
    /// The identifier of this property.
    pub const fn id(&self) -> PropertyId {
        match self {
            Self::PayloadFormatIndicator(_) => PropertyId::PayloadFormatIndicator,
            Self::MessageExpiryInterval(_) => PropertyId::MessageExpiryInterval,
            Self::ContentType(_) => PropertyId::ContentType,
            Self::ResponseTopic(_) => PropertyId::ResponseTopic,
            Self::CorrelationData(_) => PropertyId::CorrelationData,
            Self::SubscriptionIdentifier(_) => PropertyId::SubscriptionIdentifier,
            Self::SessionExpiryInterval(_) => PropertyId::SessionExpiryInterval,
            Self::AssignedClientIdentifier(_) => PropertyId::AssignedClientIdentifier,
            Self::ServerKeepAlive(_) => PropertyId::ServerKeepAlive,
            Self::AuthenticationMethod(_) => PropertyId::AuthenticationMethod,
            Self::AuthenticationData(_) => PropertyId::AuthenticationData,
            Self::RequestProblemInformation(_) => PropertyId::RequestProblemInformation,
            Self::WillDelayInterval(_) => PropertyId::WillDelayInterval,
            Self::RequestResponseInformation(_) => PropertyId::RequestResponseInformation,
            Self::ResponseInformation(_) => PropertyId::ResponseInformation,
            Self::ServerReference(_) => PropertyId::ServerReference,
            Self::ReasonString(_) => PropertyId::ReasonString,
            Self::ReceiveMaximum(_) => PropertyId::ReceiveMaximum,
            Self::TopicAliasMaximum(_) => PropertyId::TopicAliasMaximum,
            Self::TopicAlias(_) => PropertyId::TopicAlias,
            Self::MaximumQoS(_) => PropertyId::MaximumQoS,
            Self::RetainAvailable(_) => PropertyId::RetainAvailable,
            Self::UserProperty(..) => PropertyId::UserProperty,
            Self::MaximumPacketSize(_) => PropertyId::MaximumPacketSize,
            Self::WildcardSubscriptionAvailable(_) => PropertyId::WildcardSubscriptionAvailable,
            Self::SubscriptionIdentifierAvailable(_) => PropertyId::SubscriptionIdentifierAvailable,
            Self::SharedSubscriptionAvailable(_) => PropertyId::SharedSubscriptionAvailable,
        }
    }

    /// Whether the value is within the range the specification allows.
    pub fn is_valid(&self) -> bool {
        match *self {
            Self::SubscriptionIdentifier(id) => (1..=MAX_VARINT).contains(&id),
            Self::ReceiveMaximum(v) | Self::TopicAlias(v) => v != 0,
            Self::MaximumPacketSize(v) => v != 0,
            Self::MaximumQoS(q) => q != QoS::ExactlyOnce,
            Self::ResponseTopic(t) => validate_topic_name(t).is_ok(),
            _ => true,
        }
    }

    /// Reads one property (identifier and value) and checks its value range.
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        let raw_id = r.varint()?;
        let id = u8::try_from(raw_id)
            .ok()
            .and_then(PropertyId::from_u8)
            .ok_or(Error::UnknownProperty(raw_id))?;
        let p = match id {
            PropertyId::PayloadFormatIndicator => Self::PayloadFormatIndicator(match r.u8()? {
                0 => PayloadFormat::Unspecified,
                1 => PayloadFormat::Utf8,
                _ => return Err(Error::InvalidPropertyValue(id)),
            }),
            PropertyId::MessageExpiryInterval => Self::MessageExpiryInterval(r.u32()?),
            PropertyId::ContentType => Self::ContentType(r.string()?),
            PropertyId::ResponseTopic => Self::ResponseTopic(r.string()?),
            PropertyId::CorrelationData => Self::CorrelationData(r.binary()?),
            PropertyId::SubscriptionIdentifier => Self::SubscriptionIdentifier(r.varint()?),
            PropertyId::SessionExpiryInterval => Self::SessionExpiryInterval(r.u32()?),
            PropertyId::AssignedClientIdentifier => Self::AssignedClientIdentifier(r.string()?),
            PropertyId::ServerKeepAlive => Self::ServerKeepAlive(r.u16()?),
            PropertyId::AuthenticationMethod => Self::AuthenticationMethod(r.string()?),
            PropertyId::AuthenticationData => Self::AuthenticationData(r.binary()?),
            PropertyId::RequestProblemInformation => {
                Self::RequestProblemInformation(read_bool(r, id)?)
            }
            PropertyId::WillDelayInterval => Self::WillDelayInterval(r.u32()?),
            PropertyId::RequestResponseInformation => {
                Self::RequestResponseInformation(read_bool(r, id)?)
            }
            PropertyId::ResponseInformation => Self::ResponseInformation(r.string()?),
            PropertyId::ServerReference => Self::ServerReference(r.string()?),
            PropertyId::ReasonString => Self::ReasonString(r.string()?),
            PropertyId::ReceiveMaximum => Self::ReceiveMaximum(r.u16()?),
            PropertyId::TopicAliasMaximum => Self::TopicAliasMaximum(r.u16()?),
            PropertyId::TopicAlias => Self::TopicAlias(r.u16()?),
            PropertyId::MaximumQoS => Self::MaximumQoS(match r.u8()? {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => return Err(Error::InvalidPropertyValue(id)),
            }),
            PropertyId::RetainAvailable => Self::RetainAvailable(read_bool(r, id)?),
            PropertyId::UserProperty => Self::UserProperty(r.string()?, r.string()?),
            PropertyId::MaximumPacketSize => Self::MaximumPacketSize(r.u32()?),
            PropertyId::WildcardSubscriptionAvailable => {
                Self::WildcardSubscriptionAvailable(read_bool(r, id)?)
            }
            PropertyId::SubscriptionIdentifierAvailable => {
                Self::SubscriptionIdentifierAvailable(read_bool(r, id)?)
            }
            PropertyId::SharedSubscriptionAvailable => {
                Self::SharedSubscriptionAvailable(read_bool(r, id)?)
            }
        };
        if !p.is_valid() {
            return Err(Error::InvalidPropertyValue(id));
        }
        Ok(p)
    }

    /// Encoded size: identifier plus value. Checks the value range and field lengths.
    pub(crate) fn wire_len(&self) -> Result<usize, EncodeError> {
        if !self.is_valid() {
            return Err(EncodeError::InvalidPropertyValue(self.id()));
        }
        let value = match *self {
            Self::PayloadFormatIndicator(_)
            | Self::RequestProblemInformation(_)
            | Self::RequestResponseInformation(_)
            | Self::MaximumQoS(_)
            | Self::RetainAvailable(_)
            | Self::WildcardSubscriptionAvailable(_)
            | Self::SubscriptionIdentifierAvailable(_)
            | Self::SharedSubscriptionAvailable(_) => 1,
            Self::ServerKeepAlive(_)
            | Self::ReceiveMaximum(_)
            | Self::TopicAliasMaximum(_)
            | Self::TopicAlias(_) => 2,
            Self::MessageExpiryInterval(_)
            | Self::SessionExpiryInterval(_)
            | Self::WillDelayInterval(_)
            | Self::MaximumPacketSize(_) => 4,
            Self::SubscriptionIdentifier(v) => varint_len(v),
            Self::ContentType(s)
            | Self::ResponseTopic(s)
            | Self::AssignedClientIdentifier(s)
            | Self::AuthenticationMethod(s)
            | Self::ResponseInformation(s)
            | Self::ServerReference(s)
            | Self::ReasonString(s) => field_len(s.len())?,
            Self::CorrelationData(b) | Self::AuthenticationData(b) => field_len(b.len())?,
            Self::UserProperty(k, v) => field_len(k.len())? + field_len(v.len())?,
        };
        Ok(1 + value)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(self.id() as u8)?;
        match *self {
            Self::PayloadFormatIndicator(f) => w.u8(f as u8),
            Self::MaximumQoS(q) => w.u8(q as u8),
            Self::RequestProblemInformation(b)
            | Self::RequestResponseInformation(b)
            | Self::RetainAvailable(b)
            | Self::WildcardSubscriptionAvailable(b)
            | Self::SubscriptionIdentifierAvailable(b)
            | Self::SharedSubscriptionAvailable(b) => w.u8(u8::from(b)),
            Self::ServerKeepAlive(v)
            | Self::ReceiveMaximum(v)
            | Self::TopicAliasMaximum(v)
            | Self::TopicAlias(v) => w.u16(v),
            Self::MessageExpiryInterval(v)
            | Self::SessionExpiryInterval(v)
            | Self::WillDelayInterval(v)
            | Self::MaximumPacketSize(v) => w.u32(v),
            Self::SubscriptionIdentifier(v) => w.varint(v),
            Self::ContentType(s)
            | Self::ResponseTopic(s)
            | Self::AssignedClientIdentifier(s)
            | Self::AuthenticationMethod(s)
            | Self::ResponseInformation(s)
            | Self::ServerReference(s)
            | Self::ReasonString(s) => w.string(s),
            Self::CorrelationData(b) | Self::AuthenticationData(b) => w.binary(b),
            Self::UserProperty(k, v) => {
                w.string(k)?;
                w.string(v)
            }
        }
    }
}

impl PropertyId {
    /// The identifier for a wire value, `None` for undefined identifiers.
    pub const fn from_u8(v: u8) -> Option<Self> {
        use PropertyId::*;
        Some(match v {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQoS,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }
}

/// A packet's property struct: how decoded properties are stored and how the
/// struct is walked for encoding.
pub(crate) trait PropertySet<'a>: Default {
    /// Stores one decoded property. Repeatable properties are only checked here;
    /// [`PropertySet::set_wire`] stores them.
    fn accept(&mut self, p: Property<'a>, packet: PacketType) -> Result<(), Error>;
    /// Gives the validated property section to the repeatable-property lists.
    fn set_wire(&mut self, section: &'a [u8]);
    /// Calls `f` with every property present, in a fixed order.
    fn visit<E, F: FnMut(Property<'a>) -> Result<(), E>>(&self, f: F) -> Result<(), E>;
}

/// Stores `v` in `slot`, or reports a duplicate.
fn set_once<T>(slot: &mut Option<T>, v: T, id: PropertyId) -> Result<(), Error> {
    if slot.replace(v).is_some() {
        return Err(Error::DuplicateProperty(id));
    }
    Ok(())
}

/// Reads a property section (length, then properties) into `P`.
pub(crate) fn read_properties<'a, P: PropertySet<'a>>(
    r: &mut Reader<'a>,
    packet: PacketType,
) -> Result<P, Error> {
    let len = r.varint()?;
    let section = r.take(usize::try_from(len).map_err(|_| Error::UnexpectedEnd)?)?;
    let mut inner = Reader::new(section);
    let mut set = P::default();
    while !inner.is_empty() {
        let p = Property::read(&mut inner)?;
        set.accept(p, packet)?;
    }
    if !section.is_empty() {
        set.set_wire(section);
    }
    Ok(set)
}

/// Length of the properties of `set`, without the length prefix.
pub(crate) fn properties_len<'a, P: PropertySet<'a>>(set: &P) -> Result<u32, EncodeError> {
    let mut total: usize = 0;
    set.visit(|p| {
        total = total
            .checked_add(p.wire_len()?)
            .ok_or(EncodeError::PacketTooLarge)?;
        Ok(())
    })?;
    u32::try_from(total)
        .ok()
        .filter(|&n| n <= MAX_VARINT)
        .ok_or(EncodeError::PacketTooLarge)
}

/// Length of the property section of `set`, length prefix included.
pub(crate) fn section_len<'a, P: PropertySet<'a>>(set: &P) -> Result<usize, EncodeError> {
    let len = properties_len(set)?;
    Ok(varint_len(len) + usize::try_from(len).map_err(|_| EncodeError::PacketTooLarge)?)
}

/// Writes the property section of `set`, length prefix included.
pub(crate) fn write_properties<'a, P: PropertySet<'a>>(
    set: &P,
    w: &mut Writer<'_>,
) -> Result<(), EncodeError> {
    w.varint(properties_len(set)?)?;
    set.visit(|p| p.write(w))
}

/// Defines a property struct: an `Option` per single-valued property plus the
/// repeatable user properties, and its [`PropertySet`] implementation.
macro_rules! property_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty => $variant:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name<'a> {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
            /// User Property (0x26), in wire order; may repeat.
            pub user_properties: UserProperties<'a>,
        }

        impl<'a> PropertySet<'a> for $name<'a> {
            fn accept(&mut self, p: Property<'a>, packet: PacketType) -> Result<(), Error> {
                match p {
                    $( Property::$variant(v) => set_once(&mut self.$field, v, PropertyId::$variant), )*
                    Property::UserProperty(..) => Ok(()),
                    other => Err(Error::PropertyNotAllowed { packet, property: other.id() }),
                }
            }

            fn set_wire(&mut self, section: &'a [u8]) {
                self.user_properties = List::from_wire(section);
            }

            fn visit<E, F: FnMut(Property<'a>) -> Result<(), E>>(&self, mut f: F) -> Result<(), E> {
                $( if let Some(v) = self.$field { f(Property::$variant(v))?; } )*
                for (name, value) in self.user_properties.iter() {
                    f(Property::UserProperty(name, value))?;
                }
                Ok(())
            }
        }
    };
}

property_set! {
    /// CONNECT properties (MQTT 5.0 §3.1.2.11).
    pub struct ConnectProperties {
        /// Session Expiry Interval, seconds; absent means 0 (session ends with the connection).
        session_expiry_interval: u32 => SessionExpiryInterval,
        /// Receive Maximum: QoS 1/2 publishes the client accepts in flight; non-zero.
        receive_maximum: u16 => ReceiveMaximum,
        /// Maximum Packet Size the client accepts; non-zero.
        maximum_packet_size: u32 => MaximumPacketSize,
        /// Topic Alias Maximum the client accepts.
        topic_alias_maximum: u16 => TopicAliasMaximum,
        /// Request Response Information.
        request_response_information: bool => RequestResponseInformation,
        /// Request Problem Information.
        request_problem_information: bool => RequestProblemInformation,
        /// Authentication Method (enhanced authentication).
        authentication_method: &'a str => AuthenticationMethod,
        /// Authentication Data.
        authentication_data: &'a [u8] => AuthenticationData,
    }
}

property_set! {
    /// Will properties, carried in the CONNECT payload (MQTT 5.0 §3.1.3.2).
    pub struct WillProperties {
        /// Will Delay Interval, seconds.
        will_delay_interval: u32 => WillDelayInterval,
        /// Payload Format Indicator.
        payload_format_indicator: PayloadFormat => PayloadFormatIndicator,
        /// Message Expiry Interval, seconds.
        message_expiry_interval: u32 => MessageExpiryInterval,
        /// Content Type.
        content_type: &'a str => ContentType,
        /// Response Topic.
        response_topic: &'a str => ResponseTopic,
        /// Correlation Data.
        correlation_data: &'a [u8] => CorrelationData,
    }
}

property_set! {
    /// CONNACK properties (MQTT 5.0 §3.2.2.3).
    pub struct ConnAckProperties {
        /// Session Expiry Interval the server uses, seconds.
        session_expiry_interval: u32 => SessionExpiryInterval,
        /// Receive Maximum of the server; non-zero.
        receive_maximum: u16 => ReceiveMaximum,
        /// Maximum QoS the server supports (0 or 1; absent means 2).
        maximum_qos: QoS => MaximumQoS,
        /// Retain Available.
        retain_available: bool => RetainAvailable,
        /// Maximum Packet Size the server accepts; non-zero.
        maximum_packet_size: u32 => MaximumPacketSize,
        /// Assigned Client Identifier, when the client sent an empty one.
        assigned_client_identifier: &'a str => AssignedClientIdentifier,
        /// Topic Alias Maximum the server accepts.
        topic_alias_maximum: u16 => TopicAliasMaximum,
        /// Reason String.
        reason_string: &'a str => ReasonString,
        /// Wildcard Subscription Available.
        wildcard_subscription_available: bool => WildcardSubscriptionAvailable,
        /// Subscription Identifiers Available.
        subscription_identifiers_available: bool => SubscriptionIdentifierAvailable,
        /// Shared Subscription Available.
        shared_subscription_available: bool => SharedSubscriptionAvailable,
        /// Server Keep Alive, seconds; overrides the client's keep alive.
        server_keep_alive: u16 => ServerKeepAlive,
        /// Response Information.
        response_information: &'a str => ResponseInformation,
        /// Server Reference.
        server_reference: &'a str => ServerReference,
        /// Authentication Method.
        authentication_method: &'a str => AuthenticationMethod,
        /// Authentication Data.
        authentication_data: &'a [u8] => AuthenticationData,
    }
}

property_set! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK
    /// (MQTT 5.0 §3.4.2.2 and the like): a reason string and user properties.
    pub struct AckProperties {
        /// Reason String: human-readable diagnostics.
        reason_string: &'a str => ReasonString,
    }
}

property_set! {
    /// SUBSCRIBE properties (MQTT 5.0 §3.8.2.1).
    pub struct SubscribeProperties {
        /// Subscription Identifier, 1..=268 435 455.
        subscription_identifier: u32 => SubscriptionIdentifier,
    }
}

property_set! {
    /// UNSUBSCRIBE properties (MQTT 5.0 §3.10.2.1): user properties only.
    pub struct UnsubscribeProperties {}
}

property_set! {
    /// DISCONNECT properties (MQTT 5.0 §3.14.2.2).
    pub struct DisconnectProperties {
        /// Session Expiry Interval, seconds (client to server only).
        session_expiry_interval: u32 => SessionExpiryInterval,
        /// Reason String.
        reason_string: &'a str => ReasonString,
        /// Server Reference.
        server_reference: &'a str => ServerReference,
    }
}

property_set! {
    /// AUTH properties (MQTT 5.0 §3.15.2.2).
    pub struct AuthProperties {
        /// Authentication Method.
        authentication_method: &'a str => AuthenticationMethod,
        /// Authentication Data.
        authentication_data: &'a [u8] => AuthenticationData,
        /// Reason String.
        reason_string: &'a str => ReasonString,
    }
}

/// PUBLISH properties (MQTT 5.0 §3.3.2.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishProperties<'a> {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic Alias; non-zero.
    pub topic_alias: Option<u16>,
    /// Response Topic.
    pub response_topic: Option<&'a str>,
    /// Correlation Data.
    pub correlation_data: Option<&'a [u8]>,
    /// User Property (0x26), in wire order; may repeat.
    pub user_properties: UserProperties<'a>,
    /// Subscription Identifiers of the matching subscriptions (server to client);
    /// may repeat.
    pub subscription_identifiers: SubscriptionIds<'a>,
    /// Content Type.
    pub content_type: Option<&'a str>,
}

impl<'a> PropertySet<'a> for PublishProperties<'a> {
    fn accept(&mut self, p: Property<'a>, packet: PacketType) -> Result<(), Error> {
        match p {
            Property::PayloadFormatIndicator(v) => {
                set_once(&mut self.payload_format_indicator, v, p.id())
            }
            Property::MessageExpiryInterval(v) => {
                set_once(&mut self.message_expiry_interval, v, p.id())
            }
            Property::TopicAlias(v) => set_once(&mut self.topic_alias, v, p.id()),
            Property::ResponseTopic(v) => set_once(&mut self.response_topic, v, p.id()),
            Property::CorrelationData(v) => set_once(&mut self.correlation_data, v, p.id()),
            Property::ContentType(v) => set_once(&mut self.content_type, v, p.id()),
            Property::UserProperty(..) | Property::SubscriptionIdentifier(_) => Ok(()),
            other => Err(Error::PropertyNotAllowed {
                packet,
                property: other.id(),
            }),
        }
    }

    fn set_wire(&mut self, section: &'a [u8]) {
        self.user_properties = List::from_wire(section);
        self.subscription_identifiers = List::from_wire(section);
    }

    fn visit<E, F: FnMut(Property<'a>) -> Result<(), E>>(&self, mut f: F) -> Result<(), E> {
        if let Some(v) = self.payload_format_indicator {
            f(Property::PayloadFormatIndicator(v))?;
        }
        if let Some(v) = self.message_expiry_interval {
            f(Property::MessageExpiryInterval(v))?;
        }
        if let Some(v) = self.topic_alias {
            f(Property::TopicAlias(v))?;
        }
        if let Some(v) = self.response_topic {
            f(Property::ResponseTopic(v))?;
        }
        if let Some(v) = self.correlation_data {
            f(Property::CorrelationData(v))?;
        }
        for (name, value) in self.user_properties.iter() {
            f(Property::UserProperty(name, value))?;
        }
        for id in self.subscription_identifiers.iter() {
            f(Property::SubscriptionIdentifier(id))?;
        }
        if let Some(v) = self.content_type {
            f(Property::ContentType(v))?;
        }
        Ok(())
    }
}

/// True when a property struct would encode to an empty section.
pub(crate) fn is_empty<'a, P: PropertySet<'a>>(set: &P) -> bool {
    set.visit(|_| Err(())).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<'a, P: PropertySet<'a>>(bytes: &'a [u8], packet: PacketType) -> Result<P, Error> {
        read_properties(&mut Reader::new(bytes), packet)
    }

    #[test]
    fn publish_properties_decode_from_known_bytes() {
        let bytes = [
            13, // length
            0x01, 1, // payload format: UTF-8
            0x23, 0, 7, // topic alias 7
            0x0B, 0x80, 0x01, // subscription id 128
            0x0B, 0x02, // subscription id 2
            0x03, 0, 0, // empty content type
        ];
        let p: PublishProperties<'_> = decode(&bytes[..], PacketType::Publish).unwrap();
        assert_eq!(p.payload_format_indicator, Some(PayloadFormat::Utf8));
        assert_eq!(p.topic_alias, Some(7));
        assert_eq!(p.content_type, Some(""));
        assert_eq!(p.subscription_identifiers, List::new(&[128, 2]));
        assert!(p.user_properties.is_empty());
    }

    #[test]
    fn duplicates_are_a_protocol_error_except_repeatable_ones() {
        let twice = [6, 0x23, 0, 1, 0x23, 0, 2];
        assert_eq!(
            decode::<PublishProperties<'_>>(&twice, PacketType::Publish),
            Err(Error::DuplicateProperty(PropertyId::TopicAlias))
        );
        let sub_twice = [4, 0x0B, 1, 0x0B, 1];
        assert_eq!(
            decode::<SubscribeProperties<'_>>(&sub_twice, PacketType::Subscribe),
            Err(Error::DuplicateProperty(PropertyId::SubscriptionIdentifier))
        );
        let users = [12, 0x26, 0, 1, b'k', 0, 0, 0x26, 0, 1, b'k', 0, 1, b'v'];
        let users = &users[..13];
        assert!(decode::<AckProperties<'_>>(users, PacketType::PubAck).is_err());
        let users = [13, 0x26, 0, 1, b'k', 0, 0, 0x26, 0, 1, b'k', 0, 1, b'v'];
        let p: AckProperties<'_> = decode(&users, PacketType::PubAck).unwrap();
        assert_eq!(p.user_properties, List::new(&[("k", ""), ("k", "v")]));
    }

    #[test]
    fn properties_foreign_to_the_packet_are_malformed() {
        let alias = [3, 0x23, 0, 1];
        let err = decode::<ConnectProperties<'_>>(&alias, PacketType::Connect).unwrap_err();
        assert_eq!(
            err,
            Error::PropertyNotAllowed {
                packet: PacketType::Connect,
                property: PropertyId::TopicAlias
            }
        );
        assert_eq!(err.reason_code().to_u8(), 0x81);
        assert_eq!(
            decode::<AckProperties<'_>>(&[2, 0x7F, 0], PacketType::PubAck),
            Err(Error::UnknownProperty(0x7F))
        );
    }

    #[test]
    fn out_of_range_values_are_a_protocol_error() {
        for (bytes, id) in [
            (&[3u8, 0x21, 0, 0][..], PropertyId::ReceiveMaximum),
            (&[5, 0x27, 0, 0, 0, 0], PropertyId::MaximumPacketSize),
            (&[2, 0x17, 2], PropertyId::RequestProblemInformation),
        ] {
            assert_eq!(
                decode::<ConnectProperties<'_>>(bytes, PacketType::Connect),
                Err(Error::InvalidPropertyValue(id))
            );
        }
        assert_eq!(
            decode::<ConnAckProperties<'_>>(&[2, 0x24, 2], PacketType::ConnAck),
            Err(Error::InvalidPropertyValue(PropertyId::MaximumQoS))
        );
        assert_eq!(
            decode::<PublishProperties<'_>>(&[2, 0x0B, 0], PacketType::Publish),
            Err(Error::InvalidPropertyValue(
                PropertyId::SubscriptionIdentifier
            ))
        );
        assert_eq!(
            decode::<PublishProperties<'_>>(&[4, 0x08, 0, 1, b'#'], PacketType::Publish),
            Err(Error::InvalidPropertyValue(PropertyId::ResponseTopic))
        );
        assert_eq!(
            decode::<PublishProperties<'_>>(&[3, 0x23, 0, 0], PacketType::Publish),
            Err(Error::InvalidPropertyValue(PropertyId::TopicAlias))
        );
    }

    #[test]
    fn encoding_writes_the_section_length_first() {
        let props = AckProperties {
            reason_string: Some("no"),
            ..Default::default()
        };
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf);
        write_properties(&props, &mut w).unwrap();
        let n = w.position();
        assert_eq!(&buf[..n], &[5, 0x1F, 0, 2, b'n', b'o']);
        assert_eq!(section_len(&props), Ok(6));
        assert!(is_empty(&AckProperties::default()));
        assert!(!is_empty(&props));
    }
}
