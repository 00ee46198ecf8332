//! The SDK glue: [`RouterFilter`], the `Filter` the component exports, mapping a
//! [`RouteTable`] outcome to a verdict.

use tern_filter::{AbiError, Decision, Filter, Message, Route, Template, Verdict};

use crate::error::InvalidRoute;
use crate::host::HostRoutes;
use crate::table::{Decided, Incoming, Outcome, Rendered, Resolved, RouteTable, Subject};

/// The `router` filter: its config is a rule set (see the crate README).
///
/// In the guest it decides through [`Filter::decide`]: a destination built from text,
/// captures and `{topic}` is a route to a template the hub renders (declared by
/// [`Filter::templates`], see `host`); the others are rendered into one reused buffer and
/// written straight into the verdicts, so routing a message allocates nothing once the
/// buffer has grown. [`Filter::filter`] gives the same decisions as owned values. The
/// router reads only topics and client ids, so it asks for no properties or payloads.
#[derive(Debug, Clone)]
pub struct RouterFilter {
    table: RouteTable,
    host: HostRoutes,
    rendered: Rendered,
}

impl RouterFilter {
    /// The compiled rules.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }
}

impl Filter for RouterFilter {
    const NEEDS_PAYLOAD: bool = false;
    const NEEDS_PROPERTIES: bool = false;

    fn init(config: &str) -> Result<Self, String> {
        RouteTable::parse(config)
            .map(|table| Self {
                host: HostRoutes::new(&table),
                table,
                rendered: Rendered::default(),
            })
            .map_err(|err| err.to_string())
    }

    fn templates(&self) -> Vec<Template> {
        self.host.templates().to_vec()
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
                log_invalid(msg, &invalid);
                Verdict::Drop
            }
        }
    }

    fn decide(&mut self, msg: &Message<'_>, out: Decision<'_>) -> Result<(), AbiError> {
        // Bytes, unchecked: the hub checks every destination topic it gets back.
        let subject = Subject {
            topic: msg.topic_bytes(),
            client_id: msg.client_id_bytes(),
        };
        match self
            .table
            .route_for_host(subject, &self.host, &mut self.rendered)
        {
            Decided::Keep => {
                out.keep();
                Ok(())
            }
            Decided::Drop => {
                out.drop_message();
                Ok(())
            }
            Decided::Route => match self.rendered.single_template() {
                Some(route) => out.route_template(route),
                None => route_all(&self.rendered, &self.table, &self.host, out),
            },
            Decided::Invalid(invalid) => {
                log_invalid(msg, &invalid);
                out.drop_message();
                Ok(())
            }
        }
    }
}

/// Routes to every destination of the last decision: the general case, out of line because
/// inside a guest its code would weigh on the common single-template route's registers.
#[inline(never)]
fn route_all(
    rendered: &Rendered,
    table: &RouteTable,
    host: &HostRoutes,
    out: Decision<'_>,
) -> Result<(), AbiError> {
    out.route_any(rendered.host_destinations(table, host))
}

/// Out of line for the same reason as [`route_all`]; rare.
#[cold]
#[inline(never)]
fn log_invalid(msg: &Message<'_>, invalid: &InvalidRoute) {
    tern_filter::log::warn(&format!(
        "dropped a message on {:?}: {invalid}",
        msg.topic()
    ));
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
