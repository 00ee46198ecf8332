//! The batch loop: decode a packed batch, ask the filter about each message, pack the
//! verdicts. Plain generic Rust, the same code on wasm32 and on the host.

use tern_filter_abi::{
    AbiError, AnyDestination, Batch, Destination, RawDestination, RecordRef, TemplateRoute,
    VerdictWriter,
};

use crate::{Filter, Message, Route, Verdict};

/// Runs `filter` over every message of the packed `batch` and returns the packed verdicts,
/// written into `out` (its allocation is reused).
///
/// Records are checked for layout before the filter sees them; strings are checked for
/// UTF-8 when the filter reads them ([`Message`]). Keep and Drop allocate nothing. An error
/// (a malformed batch, or a verdict the ABI cannot carry such as a 70 kB topic or QoS 3)
/// fails the whole batch, naming the message.
pub fn process_batch<F: Filter>(
    filter: &mut F,
    batch: &[u8],
    out: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let batch = Batch::parse(batch).map_err(|e| e.to_string())?;
    let mut verdicts = VerdictWriter::new(out, batch.len());
    let mut records = batch.records();
    for index in 0.. {
        // The quick reader takes every well-formed record; the checked one runs for the
        // end of the batch (trailing bytes) and to say what is wrong with a broken record.
        let record = match records.next_quick() {
            Some(record) => record,
            None => match records.next() {
                Some(record) => record.map_err(|e| e.to_string())?,
                None => break,
            },
        };
        let msg = Message::new(record);
        let decision = Decision {
            verdicts: &mut verdicts,
            index,
        };
        filter
            .decide(&msg, decision)
            .map_err(|e| format!("message {index}: {e}"))?;
    }
    Ok(verdicts.finish())
}

/// Where a filter's [`decide`](Filter::decide) writes its decision for one message: straight
/// into the verdict buffer, without building a [`Verdict`]. Not calling any method keeps the
/// message unchanged.
#[derive(Debug)]
pub struct Decision<'w> {
    verdicts: &'w mut VerdictWriter,
    index: usize,
}

impl Decision<'_> {
    /// The message's index in the batch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Keeps the message unchanged (the same as not deciding anything).
    pub fn keep(self) {}

    /// Drops the message.
    pub fn drop_message(self) {
        self.verdicts.drop_message(self.index);
    }

    /// Keeps the message and delivers it to `destinations` only; an empty list drops it.
    pub fn route(self, destinations: &[Destination<'_>]) -> Result<(), AbiError> {
        if destinations.is_empty() {
            self.verdicts.drop_message(self.index);
            return Ok(());
        }
        self.verdicts.route(self.index, destinations)
    }

    /// [`route`](Self::route) from an iterator: each destination is written into the
    /// verdict buffer as it comes (borrowed topics, nothing collected). An empty iterator
    /// drops the message.
    pub fn route_iter<'d>(
        self,
        destinations: impl IntoIterator<Item = Destination<'d>>,
    ) -> Result<(), AbiError> {
        self.route_any(destinations.into_iter().map(AnyDestination::from))
    }

    /// [`route_iter`](Self::route_iter) with topics as bytes the hub checks
    /// ([`RawDestination`]): for a filter that builds topics from
    /// [`Message::topic_bytes`](crate::Message::topic_bytes) without checking them itself.
    /// A topic that is not UTF-8 or not a valid topic name fails the whole batch (the hub
    /// then isolates the message and applies the pipeline's failure policy). An empty
    /// iterator drops the message.
    pub fn route_raw<'d>(
        self,
        destinations: impl IntoIterator<Item = RawDestination<'d>>,
    ) -> Result<(), AbiError> {
        self.route_any(destinations.into_iter().map(AnyDestination::Raw))
    }

    /// Keeps the message and delivers it to one destination, a route to one of the filter's
    /// templates: [`route_any`](Self::route_any) with that destination, in one write.
    #[inline]
    pub fn route_template(self, route: TemplateRoute<'_>) -> Result<(), AbiError> {
        self.verdicts.route_template(self.index, route)
    }

    /// [`route_raw`](Self::route_raw) for destinations that may also be routes to the
    /// filter's templates ([`Filter::templates`](crate::Filter::templates)): the hub renders
    /// their topics, checking each route's template index and spans (a bad one fails the
    /// whole batch). An empty iterator drops the message.
    pub fn route_any<'d>(
        self,
        destinations: impl IntoIterator<Item = AnyDestination<'d>>,
    ) -> Result<(), AbiError> {
        let mut destinations = destinations.into_iter().peekable();
        if destinations.peek().is_none() {
            self.verdicts.drop_message(self.index);
            return Ok(());
        }
        self.verdicts.route_any(self.index, destinations)
    }

    /// Replaces the message (`rec.payload == None` leaves the payload unchanged; its
    /// `client_id` and `received_ms` are ignored) with these user properties.
    pub fn replace<'p>(
        self,
        rec: &RecordRef<'_>,
        properties: impl ExactSizeIterator<Item = (&'p str, &'p str)>,
    ) -> Result<(), AbiError> {
        self.verdicts.replace(self.index, rec, properties)
    }

    /// Writes an owned [`Verdict`] (what the default [`Filter::decide`] does).
    pub fn verdict(self, verdict: Verdict) -> Result<(), AbiError> {
        let Self { verdicts, index } = self;
        match verdict {
            Verdict::Keep => Ok(()),
            Verdict::Drop => {
                verdicts.drop_message(index);
                Ok(())
            }
            Verdict::Replace(new) => verdicts.replace(index, &new.record(), new.properties()),
            Verdict::Route(routes) => route(verdicts, index, &routes),
            Verdict::ReplaceAndRoute(new, routes) => {
                if routes.is_empty() {
                    verdicts.drop_message(index);
                    Ok(())
                } else {
                    verdicts
                        .replace(index, &new.record(), new.properties())
                        .and_then(|()| route(verdicts, index, &routes))
                }
            }
        }
    }
}

/// Writes owned routes; an empty list drops the message.
fn route(verdicts: &mut VerdictWriter, index: usize, routes: &[Route]) -> Result<(), AbiError> {
    if routes.is_empty() {
        verdicts.drop_message(index);
        return Ok(());
    }
    verdicts.route_iter(index, routes.iter().map(Route::as_destination))
}
