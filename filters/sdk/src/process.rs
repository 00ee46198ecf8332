//! The batch loop: decode a packed batch, ask the filter about each message, pack the
//! verdicts. Plain generic Rust, the same code on wasm32 and on the host.

use tern_filter_abi::{Batch, Destination, VerdictWriter};

use crate::{Filter, Verdict};

/// Runs `filter` over every message of the packed `batch` and returns the packed verdicts,
/// written into `out` (its allocation is reused).
///
/// Keep and Drop allocate nothing. An error (a malformed batch, or a verdict the ABI cannot
/// carry such as a 70 kB topic or QoS 3) fails the whole batch, naming the message.
pub fn process_batch<F: Filter>(
    filter: &mut F,
    batch: &[u8],
    out: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let batch = Batch::parse(batch).map_err(|e| e.to_string())?;
    let mut verdicts = VerdictWriter::new(out, batch.len());
    for (index, msg) in batch.iter().enumerate() {
        let msg = msg.map_err(|e| e.to_string())?;
        let written = match filter.filter(&msg) {
            Verdict::Keep => Ok(()),
            Verdict::Drop => {
                verdicts.drop_message(index);
                Ok(())
            }
            Verdict::Replace(new) => verdicts.replace(index, &new.record(), new.properties()),
            Verdict::Route(routes) => route(&mut verdicts, index, &routes),
            Verdict::ReplaceAndRoute(new, routes) => {
                if routes.is_empty() {
                    verdicts.drop_message(index);
                    Ok(())
                } else {
                    verdicts
                        .replace(index, &new.record(), new.properties())
                        .and_then(|()| route(&mut verdicts, index, &routes))
                }
            }
        };
        written.map_err(|e| format!("message {index}: {e}"))?;
    }
    Ok(verdicts.finish())
}

fn route(
    verdicts: &mut VerdictWriter,
    index: usize,
    routes: &[crate::Route],
) -> Result<(), tern_filter_abi::AbiError> {
    if routes.is_empty() {
        verdicts.drop_message(index);
        return Ok(());
    }
    let destinations: Vec<Destination<'_>> = routes.iter().map(|r| r.as_destination()).collect();
    verdicts.route(index, &destinations)
}
