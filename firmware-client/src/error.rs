//! The client's error type.
//!
//! [`Error`] is generic over the transport's error so firmware keeps the
//! driver's own error (an `embassy-net` `TcpError`, a UART error, ...) without
//! boxing. Variants are grouped by whose fault they are: the transport, the
//! broker ([`ProtocolError`], [`Error::Refused`], [`Error::Disconnected`]), the
//! caller's resources ([`Error::InflightFull`], [`Error::BufferTooSmall`]) or
//! the caller's input ([`Error::Encode`], [`Error::Serialize`]).

use tern_mqtt::{EncodeError, PacketType, ReasonCode};

/// What went wrong in a client operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The transport failed to read or write. The connection is unusable:
    /// reconnect with a new transport.
    #[error("transport error: {0:?}")]
    Transport(E),
    /// The transport reached end of stream, or accepted zero bytes on write.
    #[error("connection closed by the peer")]
    ConnectionClosed,
    /// The broker refused the CONNECT with this reason code (3.1.1 return codes
    /// are mapped onto their 5.0 equivalents).
    #[error("connection refused: {0:?}")]
    Refused(ReasonCode),
    /// The broker sent DISCONNECT with this reason code.
    #[error("disconnected by the broker: {0:?}")]
    Disconnected(ReasonCode),
    /// The broker sent something the protocol does not allow.
    #[error("protocol violation by the broker: {0}")]
    Protocol(#[from] ProtocolError),
    /// As many QoS 1 publishes are awaiting PUBACK as the window allows (the
    /// client's `N` or the broker's Receive Maximum). Poll until a
    /// [`crate::Event::Published`] frees a slot.
    #[error("in-flight window full")]
    InflightFull,
    /// A caller-owned buffer is too small: the tx buffer for an outgoing packet
    /// (including the QoS 1 packets it keeps for resending), or the rx buffer
    /// for an incoming one.
    #[error("buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// No PINGRESP (or any other packet) arrived within one keep-alive
    /// interval after a PINGREQ.
    #[error("keep-alive timeout: no answer to PINGREQ")]
    Timeout,
    /// The operation needs a connection; call `connect` first.
    #[error("not connected")]
    NotConnected,
    /// An outgoing packet could not be encoded (topic too long, invalid
    /// property value, ...).
    #[error("cannot encode packet: {0}")]
    Encode(EncodeError),
    /// A topic name or filter given by the caller is invalid.
    #[error("invalid topic: {0}")]
    Topic(tern_mqtt::TopicError),
    /// The postcard payload did not fit the scratch buffer or failed to serialize.
    #[error("payload serialization failed")]
    Serialize,
    /// A SUBSCRIBE or UNSUBSCRIBE with no filter or more than
    /// [`crate::MAX_FILTERS`].
    #[error("a subscription request needs 1 to MAX_FILTERS filters")]
    TooManyFilters,
    /// The operation is not supported: publishing at QoS 2, or above the
    /// broker's Maximum QoS; subscribing at QoS 2 without the `qos2` feature.
    #[error("unsupported operation")]
    Unsupported,
    /// A transaction request the client refused before sending (feature `tx`).
    #[cfg(feature = "tx")]
    #[error("transaction request refused: {0}")]
    Tx(crate::tx::TxError),
}

/// The broker broke the protocol. The connection should be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Bytes from the broker are not a valid MQTT packet.
    #[error("malformed packet: {0}")]
    Malformed(tern_mqtt::Error),
    /// A valid packet the broker must not send now (a second CONNACK, a
    /// SUBSCRIBE, a PUBREC for a QoS 1 publish, anything before CONNACK).
    #[error("unexpected {0:?}")]
    Unexpected(PacketType),
    /// A PUBLISH with an empty topic (a topic alias, which this client never allows).
    #[error("topic alias used without being allowed")]
    TopicAlias,
    /// More QoS 2 publishes awaiting PUBREL than the Receive Maximum allows.
    #[error("receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// A QoS 2 PUBLISH to a client built without the `qos2` feature, whose
    /// subscriptions never ask for more than QoS 1.
    #[error("QoS 2 publish on a subscription granted at most QoS 1")]
    QoSNotGranted,
}

impl<E> Error<E> {
    /// Converts an encoder error, keeping "buffer too small" and an invalid topic
    /// as their own variants.
    pub(crate) fn encode(e: EncodeError) -> Self {
        match e {
            EncodeError::BufferTooSmall { needed, available } => {
                Self::BufferTooSmall { needed, available }
            }
            EncodeError::InvalidTopicName(e) | EncodeError::InvalidTopicFilter(e) => Self::Topic(e),
            other => Self::Encode(other),
        }
    }

    /// Maps the transport error type, keeping every other variant.
    pub fn map_transport<F, T: FnOnce(E) -> F>(self, f: T) -> Error<F> {
        match self {
            Self::Transport(e) => Error::Transport(f(e)),
            Self::ConnectionClosed => Error::ConnectionClosed,
            Self::Refused(r) => Error::Refused(r),
            Self::Disconnected(r) => Error::Disconnected(r),
            Self::Protocol(p) => Error::Protocol(p),
            Self::InflightFull => Error::InflightFull,
            Self::BufferTooSmall { needed, available } => {
                Error::BufferTooSmall { needed, available }
            }
            Self::Timeout => Error::Timeout,
            Self::NotConnected => Error::NotConnected,
            Self::Encode(e) => Error::Encode(e),
            Self::Topic(e) => Error::Topic(e),
            Self::Serialize => Error::Serialize,
            Self::TooManyFilters => Error::TooManyFilters,
            Self::Unsupported => Error::Unsupported,
            #[cfg(feature = "tx")]
            Self::Tx(e) => Error::Tx(e),
        }
    }
}

/// A [`crate::ConfigBuilder`] setter rejected its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Client identifier, user name or will topic longer than 65 535 bytes or
    /// containing U+0000.
    #[error("string field too long or contains NUL")]
    InvalidString,
    /// The will topic is not a valid topic name.
    #[error("invalid will topic: {0}")]
    WillTopic(tern_mqtt::TopicError),
    /// Binary field (will payload, password) longer than 65 535 bytes.
    #[error("binary field longer than 65535 bytes")]
    TooLong,
    /// Receive Maximum must be non-zero.
    #[error("receive maximum must be non-zero")]
    ZeroReceiveMaximum,
}
