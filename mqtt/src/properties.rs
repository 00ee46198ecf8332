//! MQTT 5.0 properties (§2.2.2): the [`Property`] values, one typed struct per
//! packet kind with an `Option` per property it may carry, and the shared
//! property-section reader and writer.
//!
//! Decoding checks each property's value range, rejects duplicates (only User
//! Property, and Subscription Identifier in PUBLISH, may repeat) and properties the
//! packet type cannot carry. The repeatable ones stay as wire bytes in a
//! [`List`](crate::List), so a decoded packet never allocates.
//!
//! One reader ([`read_section`]) and one writer ([`Sink`]) serve every struct: a
//! property is an identifier, a [`Value`] whose wire form the identifier decides,
//! and a range check; each struct only describes which identifiers it takes
//! ([`Schema`]) and where they go. That keeps the per-struct code to a few
//! instructions per field, which is what firmware pays for.

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
}

impl PropertyId {
    /// How the value of this property is encoded.
    const fn kind(self) -> Kind {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | RequestProblemInformation
            | RequestResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => Kind::Bool,
            ServerKeepAlive | ReceiveMaximum | TopicAliasMaximum | TopicAlias => Kind::Two,
            MessageExpiryInterval
            | SessionExpiryInterval
            | WillDelayInterval
            | MaximumPacketSize => Kind::Four,
            SubscriptionIdentifier => Kind::VarInt,
            ContentType
            | ResponseTopic
            | AssignedClientIdentifier
            | AuthenticationMethod
            | ResponseInformation
            | ServerReference
            | ReasonString => Kind::Str,
            CorrelationData | AuthenticationData => Kind::Bin,
            UserProperty => Kind::Pair,
        }
    }

    /// This identifier's bit in a property mask.
    pub(crate) const fn bit(self) -> u64 {
        // Identifiers go up to 0x2A. Two 32-bit shifts instead of one 64-bit shift
        // by a variable, which would link a shift routine into Cortex-M firmware.
        let id = self as u8;
        if id < 32 {
            (1u32 << id) as u64
        } else {
            ((1u32 << (id - 32)) as u64) << 32
        }
    }

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

/// How a property value is encoded (MQTT 5.0 §2.2.2.2). Every one-byte property
/// (Payload Format Indicator, Maximum QoS and the booleans) allows only 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One byte, 0 or 1.
    Bool,
    /// Two-byte integer.
    Two,
    /// Four-byte integer.
    Four,
    /// Variable byte integer.
    VarInt,
    /// UTF-8 string.
    Str,
    /// Binary data.
    Bin,
    /// UTF-8 string pair.
    Pair,
}

/// A property value as it is on the wire, before it is typed: the common currency
/// of the property reader, the property structs and the [`Sink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// Any integer kind.
    Int(u32),
    /// A UTF-8 string.
    Str(&'a str),
    /// Binary data.
    Bin(&'a [u8]),
    /// A UTF-8 string pair (User Property).
    Pair(&'a str, &'a str),
}

/// Whether `value` is within the range the specification allows for `id`. The
/// value has the kind of `id` (the reader and the typed fields guarantee it).
fn value_is_valid(id: PropertyId, value: Value<'_>) -> bool {
    match value {
        Value::Int(v) => match id.kind() {
            Kind::Bool => v <= 1,
            Kind::VarInt => (1..=MAX_VARINT).contains(&v),
            _ => {
                v != 0
                    || !matches!(
                        id,
                        PropertyId::ReceiveMaximum
                            | PropertyId::TopicAlias
                            | PropertyId::MaximumPacketSize
                    )
            }
        },
        Value::Str(t) if id == PropertyId::ResponseTopic => validate_topic_name(t).is_ok(),
        _ => true,
    }
}

/// Reads one property (identifier and value) and checks its value range.
pub(crate) fn read_property<'a>(r: &mut Reader<'a>) -> Result<(PropertyId, Value<'a>), Error> {
    let raw_id = r.varint()?;
    let id = u8::try_from(raw_id)
        .ok()
        .and_then(PropertyId::from_u8)
        .ok_or(Error::UnknownProperty(raw_id))?;
    let value = match id.kind() {
        Kind::Bool => Value::Int(u32::from(r.u8()?)),
        Kind::Two => Value::Int(u32::from(r.u16()?)),
        Kind::Four => Value::Int(r.u32()?),
        Kind::VarInt => Value::Int(r.varint()?),
        Kind::Str => Value::Str(r.string()?),
        Kind::Bin => Value::Bin(r.binary()?),
        Kind::Pair => Value::Pair(r.string()?, r.string()?),
    };
    if !value_is_valid(id, value) {
        return Err(Error::InvalidPropertyValue(id));
    }
    Ok((id, value))
}

/// Which properties a property struct takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schema {
    /// [`PropertyId::bit`]s of the properties the packet may carry.
    pub(crate) allowed: u64,
    /// Bits of the allowed properties that may repeat.
    pub(crate) repeatable: u64,
}

/// Reads a property section (length prefix, then properties), checking each
/// property against `schema` (allowed here, not repeated unless repeatable), and
/// gives each to `store`. Returns the section's bytes, for the repeatable lists.
pub(crate) fn read_section<'a>(
    r: &mut Reader<'a>,
    packet: PacketType,
    schema: Schema,
    store: &mut dyn FnMut(PropertyId, Value<'a>),
) -> Result<&'a [u8], Error> {
    let len = r.varint()?;
    let section = r.take(usize::try_from(len).map_err(|_| Error::UnexpectedEnd)?)?;
    let mut inner = Reader::new(section);
    let mut seen: u64 = 0;
    while !inner.is_empty() {
        let (id, value) = read_property(&mut inner)?;
        let bit = id.bit();
        if schema.allowed & bit == 0 {
            return Err(Error::PropertyNotAllowed {
                packet,
                property: id,
            });
        }
        if schema.repeatable & bit == 0 {
            if seen & bit != 0 {
                return Err(Error::DuplicateProperty(id));
            }
            seen |= bit;
        }
        store(id, value);
    }
    // MQTT 5.0 §3.1.2.11.10, §3.2.2.3.18, §3.15.2.2.3: data needs its method.
    let data = PropertyId::AuthenticationData.bit();
    if seen & (data | PropertyId::AuthenticationMethod.bit()) == data {
        return Err(Error::AuthenticationDataWithoutMethod);
    }
    Ok(section)
}

/// A typed property field's conversion from and to a [`Value`].
pub(crate) trait Field<'a>: Copy + Default {
    /// The field value for a validated `Value` of the field's kind.
    fn from_value(v: Value<'a>) -> Self;
    /// The wire value of the field.
    fn to_value(self) -> Value<'a>;
}

impl<'a> Field<'a> for u32 {
    fn from_value(v: Value<'a>) -> Self {
        match v {
            Value::Int(v) => v,
            _ => 0,
        }
    }
    fn to_value(self) -> Value<'a> {
        Value::Int(self)
    }
}

impl<'a> Field<'a> for u16 {
    fn from_value(v: Value<'a>) -> Self {
        u16::try_from(u32::from_value(v)).unwrap_or_default()
    }
    fn to_value(self) -> Value<'a> {
        Value::Int(u32::from(self))
    }
}

impl<'a> Field<'a> for bool {
    fn from_value(v: Value<'a>) -> Self {
        u32::from_value(v) != 0
    }
    fn to_value(self) -> Value<'a> {
        Value::Int(u32::from(self))
    }
}

impl<'a> Field<'a> for QoS {
    fn from_value(v: Value<'a>) -> Self {
        u8::try_from(u32::from_value(v))
            .ok()
            .and_then(QoS::from_u8)
            .unwrap_or_default()
    }
    fn to_value(self) -> Value<'a> {
        Value::Int(u32::from(self as u8))
    }
}

impl<'a> Field<'a> for PayloadFormat {
    fn from_value(v: Value<'a>) -> Self {
        if u32::from_value(v) == 1 {
            PayloadFormat::Utf8
        } else {
            PayloadFormat::Unspecified
        }
    }
    fn to_value(self) -> Value<'a> {
        Value::Int(u32::from(self as u8))
    }
}

impl<'a> Field<'a> for &'a str {
    fn from_value(v: Value<'a>) -> Self {
        match v {
            Value::Str(s) => s,
            _ => "",
        }
    }
    fn to_value(self) -> Value<'a> {
        Value::Str(self)
    }
}

impl<'a> Field<'a> for &'a [u8] {
    fn from_value(v: Value<'a>) -> Self {
        match v {
            Value::Bin(b) => b,
            _ => &[],
        }
    }
    fn to_value(self) -> Value<'a> {
        Value::Bin(self)
    }
}

/// Where [`Visit::visit`] sends a struct's properties: counted for the section
/// length, or written.
pub(crate) struct Sink<'s, 'b> {
    /// `None` while counting.
    writer: Option<&'s mut Writer<'b>>,
    /// Bytes counted so far.
    len: usize,
}

impl Sink<'_, '_> {
    /// Counts or writes one property after checking its value.
    pub(crate) fn put(&mut self, id: PropertyId, value: Value<'_>) -> Result<(), EncodeError> {
        if !value_is_valid(id, value) {
            return Err(EncodeError::InvalidPropertyValue(id));
        }
        let Some(w) = self.writer.as_deref_mut() else {
            let len = 1 + match value {
                Value::Int(v) => match id.kind() {
                    Kind::Bool => 1,
                    Kind::Two => 2,
                    Kind::VarInt => varint_len(v),
                    _ => 4,
                },
                Value::Str(s) => field_len(s.len())?,
                Value::Bin(b) => field_len(b.len())?,
                Value::Pair(k, v) => field_len(k.len())? + field_len(v.len())?,
            };
            self.len = self
                .len
                .checked_add(len)
                .ok_or(EncodeError::PacketTooLarge)?;
            return Ok(());
        };
        w.u8(id as u8)?;
        match value {
            Value::Int(v) => match id.kind() {
                Kind::Bool => w.u8(u8::try_from(v).unwrap_or_default()),
                Kind::Two => w.u16(u16::try_from(v).unwrap_or_default()),
                Kind::VarInt => w.varint(v),
                _ => w.u32(v),
            },
            Value::Str(s) => w.string(s),
            Value::Bin(b) => w.binary(b),
            Value::Pair(k, v) => {
                w.string(k)?;
                w.string(v)
            }
        }
    }

    /// [`Sink::put`] for an optional field.
    #[inline]
    pub(crate) fn field<'a, T: Field<'a>>(
        &mut self,
        id: PropertyId,
        v: Option<T>,
    ) -> Result<(), EncodeError> {
        match v {
            Some(v) => self.put(id, v.to_value()),
            None => Ok(()),
        }
    }

    /// [`Sink::put`] for every user property of a list.
    pub(crate) fn user_properties(&mut self, list: &UserProperties<'_>) -> Result<(), EncodeError> {
        for (name, value) in list.iter() {
            self.put(PropertyId::UserProperty, Value::Pair(name, value))?;
        }
        Ok(())
    }
}

/// A packet's property struct: how decoded properties are stored. Walking it for
/// encoding is [`Visit`].
pub(crate) trait PropertySet<'a>: Default + Visit<'a> {
    /// The properties this struct takes.
    const SCHEMA: Schema;
    /// Stores one property that [`read_section`] checked against [`Self::SCHEMA`].
    /// Repeatable properties are not stored here; [`PropertySet::set_wire`] does.
    fn store(&mut self, id: PropertyId, value: Value<'a>);
    /// Gives the validated property section to the repeatable-property lists.
    fn set_wire(&mut self, section: &'a [u8]);
}

/// Walks a property struct for encoding. Object safe, so the section length and
/// writing code exists once and not once per property struct (which matters for
/// firmware flash size).
pub(crate) trait Visit<'a> {
    /// Gives every property present to `sink`, in a fixed order; stops at the first
    /// error.
    fn visit(&self, sink: &mut Sink<'_, '_>) -> Result<(), EncodeError>;
}

/// A property struct that checks a section against the schema of `S` and keeps
/// nothing: for decoders that only validate properties (the client role).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Checked<S>(core::marker::PhantomData<S>);

impl<'a, S: PropertySet<'a>> PropertySet<'a> for Checked<S> {
    const SCHEMA: Schema = S::SCHEMA;

    fn store(&mut self, _id: PropertyId, _value: Value<'a>) {}

    fn set_wire(&mut self, _section: &'a [u8]) {}
}

impl<'a, S> Visit<'a> for Checked<S> {
    fn visit(&self, _sink: &mut Sink<'_, '_>) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// Reads a property section (length, then properties) into `P`.
pub(crate) fn read_properties<'a, P: PropertySet<'a>>(
    r: &mut Reader<'a>,
    packet: PacketType,
) -> Result<P, Error> {
    let mut set = P::default();
    let section = read_section(r, packet, P::SCHEMA, &mut |id, v| set.store(id, v))?;
    if !section.is_empty() {
        set.set_wire(section);
    }
    Ok(set)
}

/// Length of the properties of `set`, without the length prefix.
pub(crate) fn properties_len(set: &dyn Visit<'_>) -> Result<u32, EncodeError> {
    let mut sink = Sink {
        writer: None,
        len: 0,
    };
    set.visit(&mut sink)?;
    u32::try_from(sink.len)
        .ok()
        .filter(|&n| n <= MAX_VARINT)
        .ok_or(EncodeError::PacketTooLarge)
}

/// Length of the property section of `set`, length prefix included.
pub(crate) fn section_len(set: &dyn Visit<'_>) -> Result<usize, EncodeError> {
    let len = properties_len(set)?;
    Ok(varint_len(len) + usize::try_from(len).map_err(|_| EncodeError::PacketTooLarge)?)
}

/// Writes the property section of `set`, length prefix included.
pub(crate) fn write_properties(set: &dyn Visit<'_>, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    w.varint(properties_len(set)?)?;
    set.visit(&mut Sink {
        writer: Some(w),
        len: 0,
    })
}

/// Defines a property struct: an `Option` per single-valued property plus the
/// repeatable user properties, and its [`PropertySet`] and [`Visit`] implementations.
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
            const SCHEMA: Schema = Schema {
                allowed: PropertyId::UserProperty.bit() $( | PropertyId::$variant.bit() )*,
                repeatable: PropertyId::UserProperty.bit(),
            };

            fn store(&mut self, id: PropertyId, value: Value<'a>) {
                match id {
                    $( PropertyId::$variant => self.$field = Some(Field::from_value(value)), )*
                    // Only user properties, which `set_wire` stores (and, for a struct
                    // without fields, nothing else uses `value`).
                    _ => {
                        let _ = value;
                    }
                }
            }

            fn set_wire(&mut self, section: &'a [u8]) {
                self.user_properties = List::from_wire(section);
            }
        }

        impl<'a> Visit<'a> for $name<'a> {
            fn visit(&self, sink: &mut Sink<'_, '_>) -> Result<(), EncodeError> {
                $( sink.field(PropertyId::$variant, self.$field)?; )*
                sink.user_properties(&self.user_properties)
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
    const SCHEMA: Schema = Schema {
        allowed: PropertyId::PayloadFormatIndicator.bit()
            | PropertyId::MessageExpiryInterval.bit()
            | PropertyId::TopicAlias.bit()
            | PropertyId::ResponseTopic.bit()
            | PropertyId::CorrelationData.bit()
            | PropertyId::ContentType.bit()
            | PropertyId::UserProperty.bit()
            | PropertyId::SubscriptionIdentifier.bit(),
        repeatable: PropertyId::UserProperty.bit() | PropertyId::SubscriptionIdentifier.bit(),
    };

    fn store(&mut self, id: PropertyId, value: Value<'a>) {
        match id {
            PropertyId::PayloadFormatIndicator => {
                self.payload_format_indicator = Some(Field::from_value(value));
            }
            PropertyId::MessageExpiryInterval => {
                self.message_expiry_interval = Some(Field::from_value(value));
            }
            PropertyId::TopicAlias => self.topic_alias = Some(Field::from_value(value)),
            PropertyId::ResponseTopic => self.response_topic = Some(Field::from_value(value)),
            PropertyId::CorrelationData => self.correlation_data = Some(Field::from_value(value)),
            PropertyId::ContentType => self.content_type = Some(Field::from_value(value)),
            _ => {}
        }
    }

    fn set_wire(&mut self, section: &'a [u8]) {
        self.user_properties = List::from_wire(section);
        self.subscription_identifiers = List::from_wire(section);
    }
}

impl<'a> Visit<'a> for PublishProperties<'a> {
    fn visit(&self, sink: &mut Sink<'_, '_>) -> Result<(), EncodeError> {
        sink.field(
            PropertyId::PayloadFormatIndicator,
            self.payload_format_indicator,
        )?;
        sink.field(
            PropertyId::MessageExpiryInterval,
            self.message_expiry_interval,
        )?;
        sink.field(PropertyId::TopicAlias, self.topic_alias)?;
        sink.field(PropertyId::ResponseTopic, self.response_topic)?;
        sink.field(PropertyId::CorrelationData, self.correlation_data)?;
        sink.user_properties(&self.user_properties)?;
        for id in self.subscription_identifiers.iter() {
            sink.put(PropertyId::SubscriptionIdentifier, Value::Int(id))?;
        }
        sink.field(PropertyId::ContentType, self.content_type)
    }
}

/// True when a property struct would encode to an empty section.
pub(crate) fn is_empty(set: &dyn Visit<'_>) -> bool {
    let mut sink = Sink {
        writer: None,
        len: 0,
    };
    // Every property counts at least two bytes; one that fails to encode is there too.
    set.visit(&mut sink).is_ok() && sink.len == 0
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
