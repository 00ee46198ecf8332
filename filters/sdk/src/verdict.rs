//! What a filter decides for one message: [`Verdict`], and the owned [`NewMessage`] and
//! [`Route`] it may carry.

use tern_filter_abi::Destination;

use crate::Message;

/// A filter's decision for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the message on unchanged.
    Keep,
    /// Remove it: later filters never see it and it is not delivered.
    Drop,
    /// Pass this message on instead (later filters see it; it is what gets stored and
    /// delivered).
    Replace(NewMessage),
    /// Keep the message but deliver it to these destinations instead of its own topic (a
    /// later filter's routes replace these). An empty list delivers it nowhere: a drop.
    Route(Vec<Route>),
    /// Both: replace the message, then route the replacement. An empty route list drops it.
    ReplaceAndRoute(NewMessage, Vec<Route>),
}

/// An owned destination for [`Verdict::Route`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Republish in this hub under `topic`.
    Local { topic: String },
    /// Forward through the bridge named `bridge`, published upstream under `topic`.
    Bridge { bridge: String, topic: String },
}

impl Route {
    pub fn local(topic: impl Into<String>) -> Self {
        Self::Local {
            topic: topic.into(),
        }
    }

    pub fn bridge(bridge: impl Into<String>, topic: impl Into<String>) -> Self {
        Self::Bridge {
            bridge: bridge.into(),
            topic: topic.into(),
        }
    }

    pub(crate) fn as_destination(&self) -> Destination<'_> {
        match self {
            Self::Local { topic } => Destination::Local { topic },
            Self::Bridge { bridge, topic } => Destination::Bridge { bridge, topic },
        }
    }

    /// The route a destination with its own topic names; `None` for a template route,
    /// which only the filter's templates can render.
    pub(crate) fn from_destination(dest: Destination<'_>) -> Option<Self> {
        match dest {
            Destination::Local { topic } => Some(Self::local(topic)),
            Destination::Bridge { bridge, topic } => Some(Self::bridge(bridge, topic)),
            Destination::Template { .. } => None,
        }
    }
}

/// The owned fields of a replacement message. The publisher's client id and receive time
/// always stay the original's.
///
/// Start from the message being replaced with [`NewMessage::from`] (payload unchanged) and
/// change what you need:
///
/// ```
/// # use tern_filter::{Message, NewMessage, Verdict};
/// fn tag(msg: &Message<'_>) -> Verdict {
///     let mut new = NewMessage::from(msg).with_topic(format!("tagged/{}", msg.topic()));
///     new.set_property("seen", "1");
///     Verdict::Replace(new)
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewMessage {
    pub topic: String,
    /// 0, 1 or 2; anything else fails the batch.
    pub qos: u8,
    pub retain: bool,
    pub content_type: Option<String>,
    /// The complete new list of user properties, in order.
    pub properties: Vec<(String, String)>,
    /// `None`: the payload is unchanged (it need not have been requested).
    pub payload: Option<Vec<u8>>,
}

impl NewMessage {
    /// A message on `topic` with QoS 0, no properties and the original payload.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Self::default()
        }
    }

    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    pub fn with_qos(mut self, qos: u8) -> Self {
        self.qos = qos;
        self
    }

    pub fn with_retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Appends a user property (duplicates are allowed, as in MQTT).
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Sets the first property named `key` (appending one if there is none).
    pub fn set_property(&mut self, key: &str, value: impl Into<String>) {
        match self.properties.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.into(),
            None => self.properties.push((key.into(), value.into())),
        }
    }

    /// Removes every property named `key`.
    pub fn remove_property(&mut self, key: &str) {
        self.properties.retain(|(k, _)| k != key);
    }

    /// The value of the first property named `key`.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn record(&self) -> tern_filter_abi::RecordRef<'_> {
        tern_filter_abi::RecordRef {
            topic: &self.topic,
            client_id: "",
            qos: self.qos,
            retain: self.retain,
            received_ms: 0,
            content_type: self.content_type.as_deref(),
            payload: self.payload.as_deref(),
        }
    }

    pub(crate) fn properties(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl From<&tern_filter_abi::MessageView<'_>> for NewMessage {
    /// A copy of a validated record with its payload unchanged (not copied).
    fn from(msg: &tern_filter_abi::MessageView<'_>) -> Self {
        Self {
            topic: msg.topic().into(),
            qos: msg.qos(),
            retain: msg.retain(),
            content_type: msg.content_type().map(Into::into),
            properties: msg
                .properties()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            payload: None,
        }
    }
}

impl From<&Message<'_>> for NewMessage {
    /// A copy of `msg` with its payload unchanged (not copied).
    fn from(msg: &Message<'_>) -> Self {
        Self {
            topic: msg.topic().into(),
            qos: msg.qos(),
            retain: msg.retain(),
            content_type: msg.content_type().map(Into::into),
            properties: msg
                .properties()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            payload: None,
        }
    }
}
