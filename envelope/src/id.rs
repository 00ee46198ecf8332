//! [`MessageId`]: the stable identity of a forwarded message, and its text form (the
//! `tern-id` property value).

use std::fmt;
use std::str::FromStr;

use crate::EnvelopeError;

/// Identity of one forwarded message: the gateway (forwarding stream) and the seq of the
/// message in that gateway's durable log.
///
/// Stable across resends: the bridge resends a message after a crash or reconnect with the
/// same id, so a consumer drops the copy. Text form `"<gateway>:<seq>"` (seq in decimal);
/// the gateway may itself contain `:`, the seq is what follows the last one.
/// Ordered by gateway, then seq.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// Names the forwarding stream (see `docs/bridge-envelope.md`: one per gateway and bridge).
    pub gateway: String,
    /// Seq of the message in the gateway's log.
    pub seq: u64,
}

impl MessageId {
    /// Builds an id.
    pub fn new(gateway: impl Into<String>, seq: u64) -> Self {
        Self {
            gateway: gateway.into(),
            seq,
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.gateway, self.seq)
    }
}

impl FromStr for MessageId {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || EnvelopeError::InvalidId(s.to_owned());
        let (gateway, seq) = s.rsplit_once(':').ok_or_else(invalid)?;
        if gateway.is_empty() || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let seq = seq.parse().map_err(|_| invalid())?;
        Ok(Self::new(gateway, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_splits_at_the_last_colon() {
        let id = MessageId::new("site:7/gw-17", 42);
        assert_eq!(id.to_string(), "site:7/gw-17:42");
        assert_eq!("site:7/gw-17:42".parse::<MessageId>(), Ok(id));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "gw",
            ":1",
            "gw:",
            "gw:+1",
            "gw:-1",
            "gw:1x",
            "gw:99999999999999999999",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn order_is_gateway_then_seq() {
        let mut ids = vec![
            MessageId::new("b", 1),
            MessageId::new("a", 10),
            MessageId::new("a", 9),
        ];
        ids.sort();
        assert_eq!(
            ids,
            [
                MessageId::new("a", 9),
                MessageId::new("a", 10),
                MessageId::new("b", 1)
            ]
        );
    }
}
