//! `each` mode: one upstream PUBLISH per message, its id and chain link in MQTT 5 user
//! properties. [`properties`] is what the bridge adds; [`provenance`] is what a consumer
//! reads back.

use crate::{Coverage, EnvelopeError, MessageId};

/// User property carrying the message's [`MessageId`] (`"<gateway>:<seq>"`).
pub const ID_PROPERTY: &str = "tern-id";
/// User property carrying the seq of the message the bridge forwarded before this one in
/// the same stream, in decimal; the empty string when there was none (start of the
/// stream). The message then covers `(tern-prev, seq]`.
pub const PREV_PROPERTY: &str = "tern-prev";
/// User property marking a message the bridge resent from its backlog after an outage
/// while newer ones went first (`replay = "live-first"`); value `1`.
pub const REPLAY_PROPERTY: &str = "tern-replay";

/// The replay marker the bridge appends to a replayed message.
pub fn replay_property() -> (String, String) {
    (REPLAY_PROPERTY.to_owned(), "1".to_owned())
}

/// The two user properties the bridge appends to a forwarded message, in this order.
/// `prev_seq` is the seq of the previous message of the stream (`None` at its start).
pub fn properties(id: &MessageId, prev_seq: Option<u64>) -> [(String, String); 2] {
    [
        (ID_PROPERTY.to_owned(), id.to_string()),
        (
            PREV_PROPERTY.to_owned(),
            prev_seq.map(|p| p.to_string()).unwrap_or_default(),
        ),
    ]
}

/// What a consumer learns from one `each`-mode message's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// From `tern-id`.
    pub id: MessageId,
    /// From `tern-prev` and the id's seq; `None` when the sender gave no `tern-prev`
    /// (de-duplication still works, gap detection does not).
    pub coverage: Option<Coverage>,
    /// From `tern-replay`: a message replayed behind newer ones.
    pub replay: bool,
}

/// Reads `tern-id` and `tern-prev` from a message's user properties (the first of each
/// wins). `Ok(None)` when there is no `tern-id`: the message did not come through a Tern
/// bridge in `each` mode.
pub fn provenance<'a>(
    user_properties: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Option<Provenance>, EnvelopeError> {
    let mut id = None;
    let mut prev = None;
    let mut replay = false;
    for (key, value) in user_properties {
        if key == ID_PROPERTY && id.is_none() {
            id = Some(value);
        } else if key == PREV_PROPERTY && prev.is_none() {
            prev = Some(value);
        } else if key == REPLAY_PROPERTY {
            replay = true;
        }
    }
    let Some(id) = id else {
        return Ok(None);
    };
    let id: MessageId = id.parse()?;
    let coverage = match prev {
        None => None,
        Some("") => Some(Coverage {
            prev_seq: None,
            last_seq: id.seq,
        }),
        Some(text) => {
            let invalid = || EnvelopeError::InvalidId(format!("{PREV_PROPERTY}={text}"));
            if !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let prev: u64 = text.parse().map_err(|_| invalid())?;
            if prev >= id.seq {
                return Err(EnvelopeError::Invalid(
                    "tern-prev is not below the id's seq",
                ));
            }
            Some(Coverage {
                prev_seq: Some(prev),
                last_seq: id.seq,
            })
        }
    };
    Ok(Some(Provenance {
        id,
        coverage,
        replay,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(props: &[(String, String)]) -> Vec<(&str, &str)> {
        props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn properties_round_trip() {
        let id = MessageId::new("gw-17", 42);
        let props = properties(&id, Some(40));
        assert_eq!(props[0], ("tern-id".to_owned(), "gw-17:42".to_owned()));
        assert_eq!(props[1], ("tern-prev".to_owned(), "40".to_owned()));
        let got = provenance(pairs(&props)).unwrap().unwrap();
        assert_eq!(got.id, id);
        assert_eq!(
            got.coverage,
            Some(Coverage {
                prev_seq: Some(40),
                last_seq: 42
            })
        );
    }

    #[test]
    fn start_of_stream_and_missing_prev() {
        let id = MessageId::new("gw", 0);
        let got = provenance(pairs(&properties(&id, None))).unwrap().unwrap();
        assert_eq!(
            got.coverage,
            Some(Coverage {
                prev_seq: None,
                last_seq: 0
            })
        );
        let got = provenance([("tern-id", "gw:5")]).unwrap().unwrap();
        assert_eq!(got.coverage, None);
        assert_eq!(provenance([("other", "x")]).unwrap(), None);
    }

    #[test]
    fn malformed_values_are_errors() {
        for props in [
            vec![("tern-id", "gw")],
            vec![("tern-id", "gw:5"), ("tern-prev", "x")],
            vec![("tern-id", "gw:5"), ("tern-prev", "5")],
            vec![("tern-id", "gw:5"), ("tern-prev", "-1")],
        ] {
            assert!(provenance(props.clone()).is_err(), "{props:?}");
        }
    }
}
