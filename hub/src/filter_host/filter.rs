//! One deployed filter ([`LoadedFilter`]): its pre-linked component, its pool of live
//! instances, its counters, and a single `process` call with deadline and memory cap.
//!
//! # Instances
//!
//! Each instance is one `Store` + instance, created on demand (then `init` runs on it with
//! the filter's config) and reused across batches. At most `max_instances_per_filter` exist
//! at once; a caller finding all of them busy waits for one (calls are bounded by their
//! deadline, so the wait is too). An instance whose call failed in any way — trap, timeout,
//! `Err`, invalid verdicts — is discarded, never re-entered: the next call gets a fresh or
//! an untouched one.
//!
//! Allocation is on demand (with copy-on-write memory images), not the pooling allocator:
//! the pooling allocator reserves address space for every slot of every total when the
//! engine is created, before we know how many filters will be deployed (and redeploys
//! change that at run time), and with wasmtime's default 4 GiB reservation per memory that
//! exhausts the 39-bit address space of some ARM gateway kernels. Its gain (≈10–20 µs per
//! instantiation, FILTERS.md) is off the hot path here, because instances are reused and
//! only created on first use and after a failure.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use tern_filter_abi::{CheckedTemplate, Contents};

use crate::filter_host::guest::{
    FAILURE_LOG_LINES_PER_SEC, Filter, FilterPre, GUEST_LOG_LINES_PER_SEC, GuestLimiter,
    GuestShared, HostState, Needs, RateLimiter, Setup, TemplatePart,
};
use crate::filter_host::load::Digest;
use crate::filter_host::verdict::{PackedBatch, RouteTemplate};
use crate::filter_host::{CallFailure, FailureKind, FilterError, HostInner};
use crate::message::Message;
use crate::metrics::Counter;

/// Longest error text kept from a guest, in bytes.
const MAX_ERROR_TEXT: usize = 512;

/// Counters of one loaded filter (the admin view reads them; the hub-wide sums are in
/// [`FilterMetrics`](crate::metrics::FilterMetrics)).
#[derive(Debug, Default)]
pub struct FilterStats {
    /// Calls of `process` that returned usable verdicts.
    pub batches: Counter,
    /// Messages handed to this filter.
    pub messages_in: Counter,
    /// Messages it kept.
    pub kept: Counter,
    /// Messages it dropped.
    pub dropped: Counter,
    /// Messages it replaced.
    pub replaced: Counter,
    /// Messages it gave destinations.
    pub routed: Counter,
    /// Calls that trapped.
    pub failed_trap: Counter,
    /// Calls that ran past their deadline.
    pub failed_timeout: Counter,
    /// Calls whose `process` returned `Err`.
    pub failed_error: Counter,
    /// Calls whose verdicts were invalid.
    pub failed_invalid_verdicts: Counter,
    /// Calls that hit the memory limit.
    pub failed_memory: Counter,
    /// Messages the failure policy was applied to because of this filter.
    pub policy_applied: Counter,
    /// Log lines of this filter dropped by the rate limit.
    pub log_suppressed: Counter,
    /// Instances created (the first at deploy, then after failures or under concurrency).
    pub instances_created: Counter,
}

/// What one successful batch did, for the counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchTally {
    pub(crate) messages: usize,
    pub(crate) kept: usize,
    pub(crate) replaced: usize,
    pub(crate) routed: usize,
}

impl GuestShared {
    /// Counts a batch that returned usable verdicts, here and hub-wide.
    pub(crate) fn count_batch(&self, tally: BatchTally) {
        let dropped = tally.messages.saturating_sub(tally.kept);
        let pairs = [
            (
                &self.stats.messages_in,
                &self.metrics.messages_in,
                tally.messages,
            ),
            (&self.stats.kept, &self.metrics.kept, tally.kept),
            (&self.stats.dropped, &self.metrics.dropped, dropped),
            (&self.stats.replaced, &self.metrics.replaced, tally.replaced),
            (&self.stats.routed, &self.metrics.routed, tally.routed),
        ];
        for (filter, hub, n) in pairs {
            if n > 0 {
                filter.add_len(n);
                hub.add_len(n);
            }
        }
        self.stats.batches.inc();
        self.metrics.batches.inc();
    }

    /// Counts one failed call, here and hub-wide.
    pub(crate) fn count_failure(&self, kind: FailureKind) {
        let (filter, hub) = match kind {
            FailureKind::Trap => (&self.stats.failed_trap, &self.metrics.failed_trap),
            FailureKind::Timeout => (&self.stats.failed_timeout, &self.metrics.failed_timeout),
            FailureKind::Error => (&self.stats.failed_error, &self.metrics.failed_error),
            FailureKind::InvalidVerdicts => (
                &self.stats.failed_invalid_verdicts,
                &self.metrics.failed_invalid_verdicts,
            ),
            FailureKind::Memory => (&self.stats.failed_memory, &self.metrics.failed_memory),
        };
        filter.inc();
        hub.inc();
    }

    /// Counts messages the failure policy was applied to.
    pub(crate) fn count_policy(&self, messages: usize) {
        self.stats.policy_applied.add_len(messages);
        self.metrics.policy_applied.add_len(messages);
    }
}

/// A filter deployed with its config: ready to decide batches. Shared (`Arc`) by every
/// pipeline set that uses it, so a redeploy that keeps it keeps its warm instances.
pub struct LoadedFilter {
    shared: Arc<GuestShared>,
    pre: FilterPre<HostState>,
    /// Keeps the engine's epoch ticker alive while this filter may run.
    host: Arc<HostInner>,
    digest: Digest,
    config: String,
    setup: GuestSetup,
    pool: Mutex<Pool>,
    /// Signalled whenever an instance goes back to the pool or is discarded.
    freed: Condvar,
}

impl std::fmt::Debug for LoadedFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFilter")
            .field("name", &self.shared.name)
            .field("contents", &self.setup.contents)
            .field("templates", &self.setup.templates.len())
            .finish_non_exhaustive()
    }
}

/// What `init` told the hub about a filter: what its batches carry, and the topic templates
/// its routes may name (checked, indexed as declared).
#[derive(Debug, Clone)]
pub(crate) struct GuestSetup {
    pub(crate) contents: Contents,
    pub(crate) templates: Arc<[RouteTemplate]>,
    /// The declaration as `init` returned it, to compare later instances' with.
    declared: Vec<tern_filter_abi::Template>,
}

impl GuestSetup {
    /// Checks what `init` returned.
    fn new(setup: Setup) -> Result<Self, FilterError> {
        let contents = Contents {
            payloads: setup.needs.contains(Needs::PAYLOAD),
            properties: setup.needs.contains(Needs::PROPERTIES),
        };
        let declared: Vec<tern_filter_abi::Template> = setup
            .templates
            .into_iter()
            .map(|t| tern_filter_abi::Template {
                bridge: t.bridge,
                parts: t
                    .parts
                    .into_iter()
                    .map(|part| match part {
                        TemplatePart::Text(text) => tern_filter_abi::TemplatePart::Text(text),
                        TemplatePart::Span(n) => tern_filter_abi::TemplatePart::Span(n),
                    })
                    .collect(),
            })
            .collect();
        if declared.len() > usize::from(u16::MAX) + 1 {
            return Err(FilterError::InitRefused(format!(
                "{} templates declared; routes can name at most 65536",
                declared.len()
            )));
        }
        let templates = declared
            .iter()
            .enumerate()
            .map(|(index, template)| {
                CheckedTemplate::new(template.clone())
                    .map(RouteTemplate::new)
                    .map_err(|reason| FilterError::Template { index, reason })
            })
            .collect::<Result<Arc<[_]>, _>>()?;
        Ok(Self {
            contents,
            templates,
            declared,
        })
    }

    /// Whether another instance's `init` said the same.
    fn same_as(&self, other: &GuestSetup) -> bool {
        self.contents == other.contents && self.declared == other.declared
    }
}

/// Instances of one filter: the idle ones, how many exist (idle + in use), and how many
/// callers wait for one (so returning an instance wakes somebody only when somebody waits:
/// a condvar notification is a system call).
struct Pool {
    idle: Vec<Instance>,
    live: usize,
    waiting: usize,
}

/// One `Store` + instance.
struct Instance {
    store: Store<HostState>,
    bindings: Filter,
}

/// An instance taken from the pool. Dropping it discards the instance (the safe default on
/// every failure path, panics included); [`Lease::release`] returns it.
struct Lease<'a> {
    filter: &'a LoadedFilter,
    instance: Option<Instance>,
}

impl Lease<'_> {
    fn release(mut self) {
        if let Some(instance) = self.instance.take() {
            let mut pool = self.filter.lock_pool();
            pool.idle.push(instance);
            let waiting = pool.waiting > 0;
            drop(pool);
            if waiting {
                self.filter.freed.notify_one();
            }
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.instance.take().is_some() {
            self.filter.forget_instance();
        }
    }
}

impl LoadedFilter {
    /// Pre-links `component`, creates the first instance and runs `init(config)` on it:
    /// an `Err` from `init` refuses the deployment.
    pub(crate) fn deploy(
        host: &Arc<HostInner>,
        name: &str,
        component: &Component,
        digest: Digest,
        config: &str,
    ) -> Result<Self, FilterError> {
        let instance_pre = host
            .linker
            .instantiate_pre(component)
            .map_err(|e| FilterError::World(format!("{e:#}")))?;
        let pre = FilterPre::new(instance_pre).map_err(|e| FilterError::World(format!("{e:#}")))?;
        let shared = Arc::new(GuestShared {
            name: Arc::from(name),
            guest_log: RateLimiter::new(GUEST_LOG_LINES_PER_SEC),
            failure_log: RateLimiter::new(FAILURE_LOG_LINES_PER_SEC),
            stats: FilterStats::default(),
            metrics: Arc::clone(&host.metrics),
            clock: host.clock,
        });
        let (first, setup) = new_instance(host, &shared, &pre, config)?;
        Ok(Self {
            shared,
            pre,
            host: Arc::clone(host),
            digest,
            config: config.to_owned(),
            setup,
            pool: Mutex::new(Pool {
                idle: vec![first],
                live: 1,
                waiting: 0,
            }),
            freed: Condvar::new(),
        })
    }

    /// The filter's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The config string its instances were initialised with.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Whether its batches carry payloads (`init` asked for `needs.payload`).
    pub fn needs_payload(&self) -> bool {
        self.setup.contents.payloads
    }

    /// What `init` declared: batch contents and route templates.
    pub(crate) fn setup(&self) -> &GuestSetup {
        &self.setup
    }

    /// Its counters.
    pub fn stats(&self) -> &FilterStats {
        &self.shared.stats
    }

    /// Creates an instance, runs `init` on it and discards it: a health check of the filter
    /// and its config (and what the instantiation benchmark measures). Does not touch the
    /// pool.
    pub fn probe_instance(&self) -> Result<(), FilterError> {
        new_instance(&self.host, &self.shared, &self.pre, &self.config).map(|_| ())
    }

    pub(crate) fn shared(&self) -> &GuestShared {
        &self.shared
    }

    pub(crate) fn digest(&self) -> Digest {
        self.digest
    }

    /// Calls `process` on an instance with the messages `group` of `messages` (packed by
    /// `packed`, which reuses what it already holds), and hands the verdict bytes to
    /// `decide`; an `Err` from `decide` is an invalid-verdicts failure. On any failure the
    /// instance is discarded.
    pub(crate) fn process<R>(
        &self,
        messages: &[Message],
        group: &[usize],
        packed: &mut PackedBatch,
        received_ms: u64,
        decide: impl FnOnce(&[u8]) -> Result<R, String>,
    ) -> Result<R, CallFailure> {
        let mut lease = self.acquire()?;
        let Some(instance) = lease.instance.as_mut() else {
            return Err(CallFailure {
                kind: FailureKind::Error,
                detail: "no instance".into(),
            });
        };
        let batch = packed
            .get(messages, group, self.setup.contents, received_ms)
            .map_err(|detail| CallFailure {
                kind: FailureKind::Error,
                detail: format!("cannot pack the batch: {detail}"),
            })?;
        instance.store.data_mut().limiter.memory_refused = false;
        instance
            .store
            .set_epoch_deadline(self.host.limits.process_ticks(group.len()));
        let result = instance.bindings.call_process(&mut instance.store, batch);
        match result {
            Ok(Ok(verdicts)) => match decide(&verdicts) {
                Ok(decided) => {
                    lease.release();
                    Ok(decided)
                }
                Err(detail) => Err(CallFailure {
                    kind: FailureKind::InvalidVerdicts,
                    detail,
                }),
            },
            Ok(Err(message)) => Err(CallFailure {
                kind: FailureKind::Error,
                detail: truncate_owned(message, MAX_ERROR_TEXT),
            }),
            Err(err) => Err(trap_failure(
                &err,
                instance.store.data().limiter.memory_refused,
            )),
        }
    }

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        // Nothing panics while holding this lock; recover anyway rather than cascade.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget_instance(&self) {
        let mut pool = self.lock_pool();
        pool.live = pool.live.saturating_sub(1);
        let waiting = pool.waiting > 0;
        drop(pool);
        if waiting {
            self.freed.notify_one();
        }
    }

    /// An idle instance, or a new one if fewer than the limit exist, or waits for one.
    fn acquire(&self) -> Result<Lease<'_>, CallFailure> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(instance) = pool.idle.pop() {
                return Ok(Lease {
                    filter: self,
                    instance: Some(instance),
                });
            }
            if pool.live < self.host.limits.max_instances {
                pool.live += 1;
                drop(pool);
                return match new_instance(&self.host, &self.shared, &self.pre, &self.config) {
                    Ok((instance, setup)) if setup.same_as(&self.setup) => Ok(Lease {
                        filter: self,
                        instance: Some(instance),
                    }),
                    Ok(_) => {
                        self.forget_instance();
                        Err(CallFailure {
                            kind: FailureKind::Error,
                            detail: FilterError::InitUnstable.to_string(),
                        })
                    }
                    Err(err) => {
                        self.forget_instance();
                        Err(init_failure(err))
                    }
                };
            }
            pool.waiting += 1;
            pool = self
                .freed
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
            pool.waiting -= 1;
        }
    }
}

/// A new instance of `pre` with `init(config)` done, and what its `init` declared.
fn new_instance(
    host: &HostInner,
    shared: &Arc<GuestShared>,
    pre: &FilterPre<HostState>,
    config: &str,
) -> Result<(Instance, GuestSetup), FilterError> {
    let started = Instant::now();
    let mut store = Store::new(
        &host.engine,
        HostState {
            shared: Arc::clone(shared),
            limiter: GuestLimiter::new(host.limits.memory_bytes),
        },
    );
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(host.limits.init_ticks());
    let bindings = match pre.instantiate(&mut store) {
        Ok(bindings) => bindings,
        Err(err) => {
            return Err(if store.data().limiter.memory_refused {
                FilterError::InitFailed {
                    kind: FailureKind::Memory,
                    detail: format!("{err:#}"),
                }
            } else {
                FilterError::Instantiate(format!("{err:#}"))
            });
        }
    };
    let setup = match bindings.call_init(&mut store, config) {
        Ok(Ok(setup)) => GuestSetup::new(setup)?,
        Ok(Err(reason)) => {
            return Err(FilterError::InitRefused(truncate_owned(
                reason,
                MAX_ERROR_TEXT,
            )));
        }
        Err(err) => {
            let failure = trap_failure(&err, store.data().limiter.memory_refused);
            return Err(FilterError::InitFailed {
                kind: failure.kind,
                detail: failure.detail,
            });
        }
    };
    shared.stats.instances_created.inc();
    tracing::debug!(
        target: "tern::filter",
        filter = %shared.name,
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "filter instance created"
    );
    Ok((Instance { store, bindings }, setup))
}

/// A call failure from an error while creating an instance during a batch.
fn init_failure(err: FilterError) -> CallFailure {
    match err {
        FilterError::InitFailed { kind, detail } => CallFailure { kind, detail },
        FilterError::InitRefused(reason) => CallFailure {
            kind: FailureKind::Error,
            detail: format!("init refused the config on a new instance: {reason}"),
        },
        other => CallFailure {
            kind: FailureKind::Trap,
            detail: other.to_string(),
        },
    }
}

/// Classifies an error returned by wasmtime from a guest call.
fn trap_failure(err: &wasmtime::Error, memory_refused: bool) -> CallFailure {
    let trap = err.downcast_ref::<Trap>().copied();
    let kind = if trap == Some(Trap::Interrupt) {
        FailureKind::Timeout
    } else if memory_refused {
        FailureKind::Memory
    } else {
        FailureKind::Trap
    };
    let detail = match trap {
        Some(Trap::Interrupt) => "deadline exceeded".to_owned(),
        Some(trap) => trap.to_string(),
        None => truncate_owned(format!("{err:#}"), MAX_ERROR_TEXT),
    };
    CallFailure { kind, detail }
}

/// `s` cut to at most `max` bytes at a char boundary.
fn truncate_owned(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
