//! Which log entries a bridge forwards, and under which upstream topic.
//!
//! A message is forwarded by bridge `B` when a filter routed it to `B` alone
//! (`bridge == Some("B")`: its `topic` already is the upstream topic, `remote_prefix` is
//! not applied), or when it was not routed to a bridge (`bridge == None`) and its topic
//! matches one of `B`'s topic filters (upstream topic: `remote_prefix` + topic). Messages
//! routed to another bridge, and topics starting with `$`, are never forwarded.

use crate::store::{Seq, StoredMessage};

/// One message selected for forwarding, its topic already mapped upstream.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Log position (the second half of its id).
    pub seq: Seq,
    /// The stored message with `topic` replaced by the upstream topic.
    pub message: StoredMessage,
    /// Messages before this one were lost to the bridge (trimmed by the store, or given up
    /// by the outbox bound): the unit carrying it starts a new link of the chain
    /// (`tern-prev` / `prev_seq` = `seq - 1`), so consumers see the hole as a gap.
    pub gap_before: bool,
}

impl Forward {
    /// Approximate bytes this message adds to an upstream packet or envelope.
    pub fn size(&self) -> usize {
        let p = &self.message.properties;
        self.message.topic.len()
            + self.message.payload.len()
            + p.content_type.as_ref().map_or(0, String::len)
            + p.user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
            + 24
    }
}

/// The selection rule of one bridge.
#[derive(Debug, Clone)]
pub struct Selector {
    name: String,
    topics: Vec<String>,
    remote_prefix: String,
}

impl Selector {
    /// The rule of bridge `name` forwarding `topics` under `remote_prefix`.
    pub fn new(name: &str, topics: &[String], remote_prefix: &str) -> Self {
        Self {
            name: name.to_owned(),
            topics: topics.to_vec(),
            remote_prefix: remote_prefix.to_owned(),
        }
    }

    /// Whether the message at `seq` is forwarded; if so, it comes back with its upstream
    /// topic (no copy of the payload; the topic is reused when there is no prefix).
    pub fn select(&self, seq: Seq, mut message: StoredMessage) -> Option<Forward> {
        if message.topic.starts_with('$') {
            return None;
        }
        match message.bridge.as_deref() {
            Some(bridge) if bridge == self.name => {}
            Some(_) => return None,
            None => {
                let topic = message.topic.as_str();
                if !self
                    .topics
                    .iter()
                    .any(|f| tern_mqtt::topic::matches(f, topic))
                {
                    return None;
                }
                if !self.remote_prefix.is_empty() {
                    let mut upstream =
                        String::with_capacity(self.remote_prefix.len() + topic.len());
                    upstream.push_str(&self.remote_prefix);
                    upstream.push_str(topic);
                    message.topic = upstream;
                }
            }
        }
        Some(Forward {
            seq,
            message,
            gap_before: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tern_mqtt::QoS;

    use super::*;
    use crate::store::StoredProperties;

    fn msg(topic: &str, bridge: Option<&str>) -> StoredMessage {
        StoredMessage {
            received_ms: 1,
            topic: topic.into(),
            payload: Bytes::from_static(b"p"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: StoredProperties::default(),
            publisher: "dev".into(),
            expires_ms: None,
            bridge: bridge.map(str::to_owned),
        }
    }

    fn topic(s: &Selector, m: StoredMessage) -> Option<String> {
        s.select(7, m).map(|f| f.message.topic)
    }

    #[test]
    fn topics_routes_and_prefix() {
        let s = Selector::new("cloud", &["sensors/#".into(), "+/alarm".into()], "gw/");
        assert_eq!(
            topic(&s, msg("sensors/a/t", None)),
            Some("gw/sensors/a/t".into())
        );
        assert_eq!(
            topic(&s, msg("door/alarm", None)),
            Some("gw/door/alarm".into())
        );
        assert_eq!(topic(&s, msg("other/x", None)), None);
        // Routed to this bridge: forwarded as routed, without prefix, whatever the filters.
        assert_eq!(
            topic(&s, msg("site-7/d1/t", Some("cloud"))),
            Some("site-7/d1/t".into())
        );
        // Routed to another bridge: never, even when the topic matches.
        assert_eq!(topic(&s, msg("sensors/a/t", Some("backup"))), None);
        // `$` topics: never.
        let all = Selector::new("cloud", &["#".into()], "");
        assert_eq!(topic(&all, msg("$SYS/broker/uptime", None)), None);
        assert_eq!(topic(&all, msg("$x/y", Some("cloud"))), None);
        assert_eq!(topic(&all, msg("a", None)), Some("a".into()));
    }

    #[test]
    fn empty_topics_forward_only_routes() {
        let s = Selector::new("cloud", &[], "p/");
        assert_eq!(topic(&s, msg("sensors/a", None)), None);
        assert_eq!(topic(&s, msg("up/a", Some("cloud"))), Some("up/a".into()));
    }
}
