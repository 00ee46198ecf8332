//! The SDK glue: [`Sql92Filter`] (the `Filter` the component exports) and the adapter that
//! lets a selector read an SDK message.

use tern_filter::{AbiError, Decision, Filter, Message, Verdict};
use tern_sql92::{MessageView as SelectorView, Selector};

use crate::config::compile;

/// The `sql92` filter: keeps a message when its selector is TRUE, drops it when FALSE or
/// UNKNOWN.
#[derive(Debug, Clone)]
pub struct Sql92Filter {
    selector: Selector,
}

impl Sql92Filter {
    /// The compiled selector.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }
}

impl Filter for Sql92Filter {
    const NEEDS_PAYLOAD: bool = false;

    fn init(config: &str) -> Result<Self, String> {
        compile(config)
            .map(|selector| Self { selector })
            .map_err(|err| err.to_string())
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        if self.keeps(msg) {
            Verdict::Keep
        } else {
            Verdict::Drop
        }
    }

    /// What [`filter`](Self::filter) decides, written straight into the verdicts: a kept
    /// message costs nothing more, and no [`Verdict`] is built and dropped per message.
    fn decide(&mut self, msg: &Message<'_>, out: Decision<'_>) -> Result<(), AbiError> {
        if !self.keeps(msg) {
            out.drop_message();
        }
        Ok(())
    }
}

impl Sql92Filter {
    /// The one decision both `filter` and `decide` report.
    #[inline]
    fn keeps(&self, msg: &Message<'_>) -> bool {
        self.selector.matches(&View(msg))
    }
}

/// A selector's view of an SDK message. Borrows only: every accessor returns a slice of the
/// batch buffer, so evaluation allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct View<'m, 'a>(pub &'m Message<'a>);

impl SelectorView for View<'_, '_> {
    /// The first occurrence of a repeated key, as the selector dialect specifies.
    fn property(&self, name: &str) -> Option<&str> {
        self.0.property(name)
    }

    /// The raw bytes, not checked for UTF-8: the selector only compares them with literals or
    /// reads ASCII digits from them, and asks [`property`](Self::property) for anything
    /// else.
    fn property_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0.property_bytes(name)
    }

    fn topic(&self) -> &str {
        self.0.topic()
    }

    fn qos(&self) -> u8 {
        self.0.qos()
    }

    fn retain(&self) -> bool {
        self.0.retain()
    }

    /// The hub sends an empty id for messages it publishes itself: `$client_id` is NULL then.
    fn client_id(&self) -> Option<&str> {
        Some(self.0.client_id()).filter(|id| !id.is_empty())
    }

    fn content_type(&self) -> Option<&str> {
        self.0.content_type()
    }

    /// The hub's receive time; NULL only for a time past `i64::MAX` ms, which no hub sends.
    fn timestamp_ms(&self) -> Option<i64> {
        i64::try_from(self.0.received_ms()).ok()
    }
}
