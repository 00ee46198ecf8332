//! The SDK glue: [`RouterFilter`], the `Filter` the component exports, mapping a
//! [`RouteTable`] outcome to a verdict.

use tern_filter::{Filter, Message, Route, Verdict};

use crate::table::{Incoming, Outcome, Resolved, RouteTable};

/// The `router` filter: its config is a rule set (see the crate README).
#[derive(Debug, Clone)]
pub struct RouterFilter {
    table: RouteTable,
}

impl RouterFilter {
    /// The compiled rules.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }
}

impl Filter for RouterFilter {
    const NEEDS_PAYLOAD: bool = false;

    fn init(config: &str) -> Result<Self, String> {
        RouteTable::parse(config)
            .map(|table| Self { table })
            .map_err(|err| err.to_string())
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        let incoming = Incoming {
            topic: msg.topic(),
            client_id: msg.client_id(),
        };
        match self.table.route(incoming) {
            Outcome::Keep => Verdict::Keep,
            Outcome::Drop => Verdict::Drop,
            Outcome::Route(resolved) => {
                Verdict::Route(resolved.into_iter().map(to_route).collect())
            }
            Outcome::Invalid(invalid) => {
                tern_filter::log::warn(&format!(
                    "dropped a message on {:?}: {invalid}",
                    msg.topic()
                ));
                Verdict::Drop
            }
        }
    }
}

fn to_route(resolved: Resolved<'_>) -> Route {
    match resolved {
        Resolved::Local { topic } => Route::Local { topic },
        Resolved::Bridge { bridge, topic } => Route::Bridge {
            bridge: bridge.into(),
            topic,
        },
    }
}
