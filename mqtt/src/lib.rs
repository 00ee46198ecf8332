//! `tern-mqtt`: MQTT 3.1.1 and 5.0 packet codec shared by the hub and the firmware client.
#![no_std]

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
