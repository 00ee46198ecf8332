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

use crate::store::{
    DeliveryInfo, Seq, StoredMessage, StoredMessageRef, StoredProperties, StoredPropertiesRef,
    UnixMillis,
};

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

    /// The record the store keeps: the monotonic expiry becomes a wall-clock deadline
    /// (`now_ms` plus the interval left at `now`), so it keeps counting across restarts.
    pub fn to_stored(&self, now: Instant, now_ms: UnixMillis) -> StoredMessage {
        let expires_ms = self.expires_ms(now, now_ms);
        let p = &self.properties;
        StoredMessage {
            received_ms: now_ms,
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties: StoredProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type.clone(),
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user_properties.clone(),
            },
            publisher: self.publisher.to_string(),
            expires_ms,
            bridge: None,
        }
    }

    /// [`Message::to_stored`] borrowed from `self`, for the bridge `bridge` alone if given:
    /// what the ingest path encodes into the log.
    pub fn stored_ref<'a>(
        &'a self,
        now: Instant,
        now_ms: UnixMillis,
        bridge: Option<&'a str>,
    ) -> StoredMessageRef<'a> {
        let p = &self.properties;
        StoredMessageRef {
            received_ms: now_ms,
            topic: &self.topic,
            payload: &self.payload,
            qos: self.qos,
            retain: self.retain,
            properties: StoredPropertiesRef {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type.as_deref(),
                response_topic: p.response_topic.as_deref(),
                correlation_data: p.correlation_data.as_deref(),
                user_properties: &p.user_properties,
            },
            publisher: &self.publisher,
            expires_ms: self.expires_ms(now, now_ms),
            bridge,
        }
    }

    /// When the message expires in Unix milliseconds, given that `now` is `now_ms`.
    fn expires_ms(&self, now: Instant, now_ms: UnixMillis) -> Option<UnixMillis> {
        self.expiry.map(|e| {
            let deadline = e.received_at + Duration::from_secs(u64::from(e.interval_secs));
            let left = deadline.saturating_duration_since(now);
            now_ms.saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
        })
    }

    /// A message read back from the store; its expiry interval restarts at `now` with what
    /// was left at `now_ms` (rounded up to whole seconds).
    pub fn from_stored(stored: StoredMessage, now: Instant, now_ms: UnixMillis) -> Message {
        let expiry = stored.expires_ms.map(|deadline| Expiry {
            received_at: now,
            interval_secs: u32::try_from(deadline.saturating_sub(now_ms).div_ceil(1000))
                .unwrap_or(u32::MAX),
        });
        let p = stored.properties;
        Message {
            topic: stored.topic,
            payload: stored.payload,
            qos: stored.qos,
            retain: stored.retain,
            properties: MessageProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
            },
            expiry,
            publisher: ClientId::from(stored.publisher),
        }
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
    /// Log position when this delivery is tracked by the store (a QoS 1/2 message queued
    /// for a persistent session): its queue and in-flight records name this seq. `None` for
    /// deliveries that live in memory only (clean sessions, QoS 0, retained-on-subscribe).
    pub seq: Option<Seq>,
    /// The shared subscription (`$share/{group}/{filter}`) that chose this session, if any:
    /// should the session end before the message is delivered, another member gets it.
    pub share: Option<Arc<str>>,
}

impl QueuedMessage {
    /// Approximate memory this entry keeps alive: the entry, the shared message (counted
    /// in full even when other queues share it) and its variable parts. What a session
    /// queue's window (`[session] queue_window`) is measured in.
    pub fn approx_size(&self) -> usize {
        let m = &*self.message;
        let p = &m.properties;
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        std::mem::size_of::<QueuedMessage>()
            + std::mem::size_of::<Message>()
            + 2 * std::mem::size_of::<usize>()
            + m.topic.len()
            + m.payload.len()
            + m.publisher.len()
            + text(&p.content_type)
            + text(&p.response_topic)
            + p.correlation_data.as_ref().map_or(0, Bytes::len)
            + p.user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<String>())
                .sum::<usize>()
            + self.subscription_ids.len() * std::mem::size_of::<u32>()
    }

    /// The per-subscriber delivery details the store keeps beside the seq.
    pub fn delivery_info(&self) -> DeliveryInfo {
        DeliveryInfo {
            qos: self.qos,
            retain: self.retain,
            subscription_ids: self.subscription_ids.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-z/é]{0,12}"
    }

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
    }

    prop_compose! {
        fn any_message()(
            topic in text(),
            payload in bytes(),
            qos in 0u8..3,
            retain in any::<bool>(),
            payload_format_indicator in proptest::option::of(0u8..2),
            content_type in proptest::option::of(text()),
            response_topic in proptest::option::of(text()),
            correlation_data in proptest::option::of(bytes()),
            user_properties in proptest::collection::vec((text(), text()), 0..4),
            expiry in proptest::option::of(0u32..100_000),
            publisher in text(),
        ) -> Message {
            Message {
                topic,
                payload,
                qos: QoS::from_u8(qos).expect("0..3"),
                retain,
                properties: MessageProperties {
                    payload_format_indicator,
                    content_type,
                    response_topic,
                    correlation_data,
                    user_properties,
                },
                expiry: expiry.map(|interval_secs| Expiry {
                    received_at: Instant::now(),
                    interval_secs,
                }),
                publisher: ClientId::from(publisher),
            }
        }
    }

    proptest! {
        /// The ingest path's borrowed encoding is the log record of the owned one, and
        /// reads back as it.
        #[test]
        fn borrowed_record_encodes_as_the_owned_one(
            message in any_message(),
            bridge in proptest::option::of(text()),
        ) {
            let now = Instant::now();
            let now_ms = 1_700_000_000_000;
            let mut owned = message.to_stored(now, now_ms);
            owned.bridge = bridge.clone();
            let borrowed = message
                .stored_ref(now, now_ms, bridge.as_deref())
                .encode()
                .expect("encodes");
            prop_assert_eq!(&borrowed, &postcard::to_stdvec(&owned).expect("encodes"));
            prop_assert_eq!(StoredMessage::decode(&borrowed).expect("decodes"), owned);
        }
    }

    #[test]
    fn stored_round_trip_keeps_fields_and_remaining_expiry() {
        let now = Instant::now();
        let message = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: MessageProperties {
                content_type: Some("text/plain".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: vec![("k".into(), "v".into())],
                ..MessageProperties::default()
            },
            expiry: Some(Expiry {
                received_at: now,
                interval_secs: 30,
            }),
            publisher: ClientId::from("p"),
        };
        let stored = message.to_stored(now, 1_000_000);
        assert_eq!(stored.expires_ms, Some(1_030_000));
        let back = Message::from_stored(stored, now, 1_010_000);
        assert_eq!(back.expiry.map(|e| e.interval_secs), Some(20));
        assert_eq!(
            Message {
                expiry: message.expiry.map(|e| Expiry {
                    interval_secs: 20,
                    ..e
                }),
                ..message
            },
            back
        );
    }
}
