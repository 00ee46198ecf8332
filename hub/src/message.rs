//! The application message as the hub holds it between ingest and delivery.
//!
//! One [`Message`] is built per accepted PUBLISH and shared as `Arc<Message>` by every
//! subscriber queue it is routed to: topic and payload are `Bytes` views into the frame the
//! session read, and the v5 properties that travel with the message are owned once here.
//! Per-subscriber details (granted QoS, RETAIN as forwarded, subscription identifiers) live
//! in [`QueuedMessage`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_mqtt::QoS;

/// Key of a session in the router and the session registry: the MQTT client identifier.
pub type ClientId = Arc<str>;

/// v5 PUBLISH properties forwarded unchanged from publisher to subscribers
/// (MQTT 5.0 §3.3.2.3). Topic alias and subscription identifiers are per hop and not here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// Payload Format Indicator (0 = bytes, 1 = UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order, duplicates kept.
    pub user_properties: Vec<(String, String)>,
}

/// Message Expiry Interval of a message, anchored at the time the hub received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// When the hub accepted the message.
    pub received_at: Instant,
    /// The interval the publisher set, in seconds.
    pub interval_secs: u32,
}

impl Expiry {
    /// Seconds left at `now`, `None` once expired. Forwarded messages carry this value
    /// (MQTT 5.0 §3.3.2.3.3: the received interval minus the time spent in the hub).
    pub fn remaining_secs(&self, now: Instant) -> Option<u32> {
        let waited = now.saturating_duration_since(self.received_at);
        let total = Duration::from_secs(u64::from(self.interval_secs));
        if waited >= total {
            return None;
        }
        let waited_secs = u32::try_from(waited.as_secs()).unwrap_or(u32::MAX);
        Some(self.interval_secs.saturating_sub(waited_secs).max(1))
    }
}

/// An accepted application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name (validated UTF-8, no wildcards).
    pub topic: String,
    /// Payload bytes, shared with the frame they were read from.
    pub payload: Bytes,
    /// QoS as published.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// v5 properties forwarded unchanged.
    pub properties: MessageProperties,
    /// Message expiry, if the publisher set one.
    pub expiry: Option<Expiry>,
    /// Client that published it (empty for messages the hub itself publishes, e.g. `$SYS`).
    pub publisher: ClientId,
}

impl Message {
    /// Whether the message has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|e| e.remaining_secs(now).is_none())
    }
}

/// One message waiting in (or in flight from) a subscriber's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS to deliver with: `min(published QoS, granted QoS)`.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (v5); empty (no allocation)
    /// in the common case.
    pub subscription_ids: Vec<u32>,
}
