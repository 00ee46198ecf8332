#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod ack;
mod auth;
pub mod client;
mod connack;
mod connect;
mod disconnect;
mod error;
mod list;
mod packet;
mod properties;
mod puback;
mod pubcomp;
mod publish;
mod pubrec;
mod pubrel;
mod reason;
mod suback;
mod subscribe;
pub mod topic;
mod unsuback;
mod unsubscribe;
mod wire;

pub use auth::Auth;
pub use client::{ConnAckInfo, Incoming, decode_from_server};
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use error::{EncodeError, Error};
pub use list::{
    Item, List, ListIter, ReasonCodes, SubscribeFilters, SubscriptionIds, TopicFilters,
    UserProperties, UserProperty,
};
pub use packet::{DecodeOptions, MAX_PACKET_SIZE, Packet, PacketType, decode, frame_len};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormat, Property, PropertyId, PublishProperties, SubscribeProperties,
    UnsubscribeProperties, WillProperties,
};
pub use puback::PubAck;
pub use pubcomp::PubComp;
pub use publish::Publish;
pub use pubrec::PubRec;
pub use pubrel::PubRel;
pub use reason::ReasonCode;
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions};
pub use topic::TopicError;
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;
pub use wire::MAX_VARINT;

/// Quality of service of a PUBLISH or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum QoS {
    /// Fire and forget.
    #[default]
    AtMostOnce = 0,
    /// Acknowledged delivery (PUBACK).
    AtLeastOnce = 1,
    /// Assured once-only delivery (PUBREC / PUBREL / PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a wire value, `None` for 3 and above.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// Protocol level carried in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311 = 4,
    /// MQTT 5.0 (protocol level 5).
    V5 = 5,
}
