//! What a guest sees of the hub: the `bindgen!` bindings of `wit/filter.wit`, the per-store
//! state ([`HostState`]) behind the two host imports (`log`, `now-ms`), and the memory
//! limiter that records when a guest was refused memory.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use wasmtime::ResourceLimiter;

use crate::filter_host::filter::FilterStats;
use crate::metrics::FilterMetrics;

wasmtime::component::bindgen!({
    world: "filter",
    path: "../wit/filter.wit",
});

pub(crate) use self::tern::filter::host::Level;

/// Longest log line kept from a guest, in bytes; the rest is cut (at a char boundary).
const MAX_LOG_LINE: usize = 1024;

/// Lines per second a filter may log; the excess is counted and summarised.
pub(crate) const GUEST_LOG_LINES_PER_SEC: u32 = 100;

/// Host-side failure lines per second per filter (a guest failing every batch must not
/// flood the log either).
pub(crate) const FAILURE_LOG_LINES_PER_SEC: u32 = 10;

/// Things every instance of one loaded filter shares.
#[derive(Debug)]
pub(crate) struct GuestShared {
    /// The filter's name from the pipeline config (log field `filter`).
    pub(crate) name: Arc<str>,
    /// Rate limit of the guest's `log` calls, across all its instances.
    pub(crate) guest_log: RateLimiter,
    /// Rate limit of the host's failure lines about this filter.
    pub(crate) failure_log: RateLimiter,
    /// Counters of this filter.
    pub(crate) stats: FilterStats,
    /// The hub-wide filter counters.
    pub(crate) metrics: Arc<FilterMetrics>,
    /// Zero of `now-ms`.
    pub(crate) clock: Instant,
}

/// The data of one `Store`: one instance of one filter.
pub(crate) struct HostState {
    pub(crate) shared: Arc<GuestShared>,
    pub(crate) limiter: GuestLimiter,
}

impl tern::filter::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let shared = &self.shared;
        match shared.guest_log.admit(Instant::now()) {
            Admission::Yes { suppressed } => {
                if suppressed > 0 {
                    tracing::warn!(
                        target: "tern::filter::guest",
                        filter = %shared.name,
                        suppressed,
                        "filter log lines suppressed (rate limit)"
                    );
                }
            }
            Admission::No => {
                shared.stats.log_suppressed.inc();
                shared.metrics.log_suppressed.inc();
                return;
            }
        }
        let line = truncate(&message, MAX_LOG_LINE);
        let filter = &*shared.name;
        match level {
            Level::Error => tracing::error!(target: "tern::filter::guest", filter, "{line}"),
            Level::Warn => tracing::warn!(target: "tern::filter::guest", filter, "{line}"),
            Level::Info => tracing::info!(target: "tern::filter::guest", filter, "{line}"),
            Level::Debug => tracing::debug!(target: "tern::filter::guest", filter, "{line}"),
            Level::Trace => tracing::trace!(target: "tern::filter::guest", filter, "{line}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        u64::try_from(self.shared.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends at a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The memory cap of one store. Unlike `StoreLimits` it remembers that it refused a growth,
/// so the trap that usually follows (the guest's allocator aborts) is reported as
/// [`FailureKind::Memory`](crate::filter_host::FailureKind::Memory).
pub(crate) struct GuestLimiter {
    memory_limit: usize,
    /// Set when a growth was refused; cleared before each call.
    pub(crate) memory_refused: bool,
}

impl GuestLimiter {
    pub(crate) fn new(memory_limit: usize) -> Self {
        Self {
            memory_limit,
            memory_refused: false,
        }
    }
}

/// Tables and memories one filter instance may create. A wit-bindgen component has one of
/// each per core module (a handful); anything far beyond is not a filter.
const MAX_TABLES_OR_MEMORIES: usize = 16;
/// Elements a table may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allow = desired <= self.memory_limit && maximum.is_none_or(|max| desired <= max);
        if !allow {
            self.memory_refused = true;
        }
        Ok(allow)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        MAX_TABLES_OR_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES_OR_MEMORIES
    }

    fn memories(&self) -> usize {
        MAX_TABLES_OR_MEMORIES
    }
}

/// Whether a rate-limited line may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Write it; `suppressed` lines were dropped in the previous window.
    Yes {
        /// Lines dropped since the last admitted window ended.
        suppressed: u64,
    },
    /// Drop it.
    No,
}

/// At most `per_sec` lines in each one-second window.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_sec: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    admitted: u32,
    suppressed: u64,
}

impl RateLimiter {
    pub(crate) fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            window: Mutex::new(Window {
                started: None,
                admitted: 0,
                suppressed: 0,
            }),
        }
    }

    pub(crate) fn admit(&self, now: Instant) -> Admission {
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let expired = w
            .started
            .is_none_or(|start| now.saturating_duration_since(start).as_secs() >= 1);
        if expired {
            let suppressed = std::mem::take(&mut w.suppressed);
            w.started = Some(now);
            w.admitted = 1;
            return Admission::Yes { suppressed };
        }
        if w.admitted < self.per_sec {
            w.admitted += 1;
            Admission::Yes { suppressed: 0 }
        } else {
            w.suppressed += 1;
            Admission::No
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_limiter_admits_per_window_and_reports_the_excess() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(limiter.admit(t0), Admission::Yes { suppressed: 0 });
        assert_eq!(limiter.admit(t0), Admission::Yes { suppressed: 0 });
        assert_eq!(limiter.admit(t0), Admission::No);
        assert_eq!(limiter.admit(t0), Admission::No);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(limiter.admit(t1), Admission::Yes { suppressed: 2 });
    }

    #[test]
    fn truncate_cuts_at_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
    }
}
