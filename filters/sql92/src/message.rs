//! The read-only view of a message that selectors evaluate against.

use alloc::string::String;
use alloc::vec::Vec;

/// What a selector can read from a message. Implement it over whatever holds the message (a
/// borrowed view into a packed batch buffer, a decoded PUBLISH, a test fixture); evaluation
/// only borrows, it never copies or allocates.
pub trait MessageView {
    /// The value of the MQTT 5 user property `name` (exact, case-sensitive match), or `None`
    /// when the message has no such property.
    ///
    /// MQTT allows a key to appear more than once. Implementations must return the **first**
    /// occurrence in the order the publisher sent them, so that every component of Tern
    /// agrees on which value a selector sees.
    fn property(&self, name: &str) -> Option<&str>;

    /// The bytes of the same value as [`property`](Self::property) (the first occurrence),
    /// for evaluators that only compare it with a literal or read it as ASCII digits and so
    /// need no UTF-8 check: equal bytes are as valid as the literal they equal. Override it
    /// when the view holds unchecked bytes (a packed batch buffer) to skip the check;
    /// it must return exactly `property(name).map(str::as_bytes)` whenever that value is
    /// valid UTF-8.
    fn property_bytes(&self, name: &str) -> Option<&[u8]> {
        self.property(name).map(str::as_bytes)
    }

    /// The topic name (`$topic`).
    fn topic(&self) -> &str;

    /// The QoS the message was published with, 0–2 (`$qos`).
    fn qos(&self) -> u8;

    /// The RETAIN flag (`$retain`).
    fn retain(&self) -> bool;

    /// The publishing client's id (`$client_id`), when known.
    fn client_id(&self) -> Option<&str> {
        None
    }

    /// The MQTT 5 content type (`$content_type`), when present.
    fn content_type(&self) -> Option<&str> {
        None
    }

    /// When the hub received the message, in milliseconds since the Unix epoch
    /// (`$timestamp`), when known.
    fn timestamp_ms(&self) -> Option<i64> {
        None
    }
}

/// An owned message, handy for tests, tools and examples. Properties keep their order;
/// [`MessageView::property`] returns the first value of a repeated key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedMessage {
    /// Topic name.
    pub topic: String,
    /// QoS, 0–2.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// User properties in publish order (keys may repeat).
    pub properties: Vec<(String, String)>,
    /// Publisher's client id.
    pub client_id: Option<String>,
    /// MQTT 5 content type.
    pub content_type: Option<String>,
    /// Receive time, ms since the Unix epoch.
    pub timestamp_ms: Option<i64>,
}

impl OwnedMessage {
    /// A message on `topic` with no properties, QoS 0, not retained.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Self::default()
        }
    }

    /// Appends a user property (builder style).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }
}

impl MessageView for OwnedMessage {
    fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    fn qos(&self) -> u8 {
        self.qos
    }

    fn retain(&self) -> bool {
        self.retain
    }

    fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
}

impl<M: MessageView + ?Sized> MessageView for &M {
    fn property(&self, name: &str) -> Option<&str> {
        (**self).property(name)
    }
    fn property_bytes(&self, name: &str) -> Option<&[u8]> {
        (**self).property_bytes(name)
    }
    fn topic(&self) -> &str {
        (**self).topic()
    }
    fn qos(&self) -> u8 {
        (**self).qos()
    }
    fn retain(&self) -> bool {
        (**self).retain()
    }
    fn client_id(&self) -> Option<&str> {
        (**self).client_id()
    }
    fn content_type(&self) -> Option<&str> {
        (**self).content_type()
    }
    fn timestamp_ms(&self) -> Option<i64> {
        (**self).timestamp_ms()
    }
}
