//! The filter host: runs operator-supplied WebAssembly filters on batches of messages.
//!
//! Owns the wasmtime [`Engine`] (one per hub), the epoch ticker that bounds every call in
//! time, loading and caching of compiled filters, the pooled instances of each deployed
//! filter, and the execution of filter chains with their failure policy. It knows neither
//! the store nor the bridge: it takes [messages](crate::message::Message) and returns
//! [`Routed`] messages, each with its [`Target`] (local topic or a named bridge); the ingest
//! path does the rest.
//!
//! The contract with guests is `wit/filter.wit`; batches and verdicts cross it as packed
//! buffers (`docs/filter-abi.md`, crate `tern-filter-abi`).
//!
//! # Layout
//!
//! - `mod.rs`: [`FilterHost`]: engine, linker, epoch ticker, limits, deploy entry points.
//! - `load.rs`: recognising input (component / core module / `.cwasm`), componentizing,
//!   world validation, the compiled-artifact cache, [`precompile`].
//! - `guest.rs`: `bindgen!` bindings, per-store state, host imports, memory limiter.
//! - `filter.rs`: [`LoadedFilter`]: its instance pool and one `process` call.
//! - `verdict.rs`: packing a batch and turning verdicts into owned decisions.
//! - `chain.rs`: [`Chain`]: filters in order, edits and routes, failure isolation.
//! - `pipeline.rs`: [`PipelineSet`] (topic → chain) and [`Pipelines`] (hot swap).
//! - `config.rs`: `[filters]` and `[[pipeline]]` serde types.
//! - `error.rs`: [`FilterError`], [`DeployError`], [`FailureKind`].
//!
//! # Lifecycle
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use tern_hub::filter_host::*;
//! # fn example(pipelines_config: &[PipelineConfig], batch: Vec<tern_hub::message::Message>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! let host = FilterHost::new(
//!     &FilterLimitsConfig::default(),
//!     std::path::Path::new("./tern-data"),
//!     Arc::default(),
//! )?;
//! let pipelines = Pipelines::new(host);
//! pipelines.deploy(pipelines_config)?; // refused: the previous set stays
//! for routed in pipelines.run(batch) {
//!     // store and deliver `routed.message` to `routed.target`
//! #   let _ = routed;
//! }
//! # Ok(()) }
//! ```

mod chain;
mod config;
mod error;
mod filter;
mod guest;
mod load;
mod pipeline;
mod verdict;

// The tests compile guests, so they need the compiler.
#[cfg(all(test, feature = "compiler"))]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use self::chain::{
    Chain, DEAD_LETTER_ERROR_PROPERTY, DEAD_LETTER_TOPIC_PROPERTY, Routed, Target,
};
pub use self::config::{
    FailurePolicy, FilterConfig, FilterLimitsConfig, PipelineConfig, PolicyParseError,
};
pub use self::error::{CallFailure, DeployError, FailureKind, FilterError};
pub use self::filter::{FilterStats, LoadedFilter};
pub use self::load::precompile;
pub use self::pipeline::{Filtered, FilteredIter, PipelineSet, Pipelines, RoutedBatch};

use self::guest::HostState;
use crate::metrics::FilterMetrics;

/// How often the ticker advances the engine's epoch: the unit of every deadline.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The filter host of one hub: cheap to clone, shared by every pipeline.
#[derive(Clone)]
pub struct FilterHost {
    inner: Arc<HostInner>,
}

/// What every loaded filter needs from the host. Loaded filters hold an `Arc` of it, so the
/// epoch ticker keeps running while any filter may still be called.
pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) limits: Limits,
    pub(crate) cache_dir: PathBuf,
    pub(crate) metrics: Arc<FilterMetrics>,
    /// Zero of the guests' `now-ms` clock.
    pub(crate) clock: Instant,
    /// Components compiled by this host (cache misses); tests and the admin view read it.
    pub(crate) compiles: AtomicU64,
    /// Dropped last: stops the ticker thread.
    _ticker: EpochTicker,
}

/// Limits resolved from [`FilterLimitsConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) memory_bytes: usize,
    pub(crate) deadline_base: Duration,
    pub(crate) deadline_per_message: Duration,
    pub(crate) init_deadline: Duration,
    pub(crate) max_instances: usize,
}

impl Limits {
    /// Epoch ticks a call on `messages` messages may run. One tick more than the deadline,
    /// because the first tick may come right after the deadline is set.
    pub(crate) fn process_ticks(&self, messages: usize) -> u64 {
        let per_message = self
            .deadline_per_message
            .saturating_mul(u32::try_from(messages).unwrap_or(u32::MAX));
        ticks(self.deadline_base.saturating_add(per_message))
    }

    pub(crate) fn init_ticks(&self) -> u64 {
        ticks(self.init_deadline)
    }
}

/// [`EPOCH_TICK`] in nanoseconds; it divides a second.
const TICK_NANOS: u32 = 1_000_000;
const _: () = assert!(EPOCH_TICK.as_nanos() == TICK_NANOS as u128);
const _: () = assert!(1_000_000_000 % TICK_NANOS == 0);

/// Whole ticks covering `deadline`, plus one. Integer arithmetic on `u64` only: this runs
/// before every call, and 128-bit division costs as much as the rest of the call setup.
fn ticks(deadline: Duration) -> u64 {
    let per_second = u64::from(1_000_000_000 / TICK_NANOS);
    deadline
        .as_secs()
        .saturating_mul(per_second)
        .saturating_add(u64::from(deadline.subsec_nanos().div_ceil(TICK_NANOS)))
        .saturating_add(1)
}

impl std::fmt::Debug for FilterHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterHost")
            .field("cache_dir", &self.inner.cache_dir)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl FilterHost {
    /// Creates the engine and starts the epoch ticker. `data_dir` is the default parent of
    /// the compiled-artifact cache; `metrics` receives the hub-wide filter counters.
    pub fn new(
        limits: &FilterLimitsConfig,
        data_dir: &Path,
        metrics: Arc<FilterMetrics>,
    ) -> Result<Self, FilterError> {
        let cache_dir = limits.cache_dir(data_dir);
        let engine = Engine::new(&load::engine_config(None)?)
            .map_err(|e| FilterError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        guest::Filter::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| FilterError::Engine(e.to_string()))?;
        let limits = Limits {
            memory_bytes: usize::try_from(limits.memory_limit.0).unwrap_or(usize::MAX),
            deadline_base: limits.deadline_base.0,
            deadline_per_message: limits.deadline_per_message.0,
            init_deadline: limits.init_deadline.0,
            max_instances: limits.max_instances_per_filter.max(1),
        };
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| FilterError::Engine(format!("starting the epoch ticker: {e}")))?;
        Ok(Self {
            inner: Arc::new(HostInner {
                _ticker: ticker,
                engine,
                linker,
                limits,
                cache_dir,
                metrics,
                clock: Instant::now(),
                compiles: AtomicU64::new(0),
            }),
        })
    }

    /// Loads the filter in file `wasm` (component, core module or `.cwasm`), runs `init`
    /// with `config` on a first instance and returns it ready to run. `name` is used in
    /// logs and counters.
    pub fn deploy(
        &self,
        name: &str,
        wasm: &Path,
        config: &str,
    ) -> Result<Arc<LoadedFilter>, FilterError> {
        let bytes = load::read_wasm(wasm)?;
        self.deploy_bytes(name, &bytes, config)
    }

    /// [`deploy`](Self::deploy) from bytes already read.
    pub fn deploy_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        config: &str,
    ) -> Result<Arc<LoadedFilter>, FilterError> {
        let digest = load::Digest::of(bytes);
        self.deploy_digested(name, bytes, digest, config)
    }

    pub(crate) fn deploy_digested(
        &self,
        name: &str,
        bytes: &[u8],
        digest: load::Digest,
        config: &str,
    ) -> Result<Arc<LoadedFilter>, FilterError> {
        let deployed = load::load(&self.inner, bytes, &digest).and_then(|component| {
            LoadedFilter::deploy(&self.inner, name, &component, digest, config)
        });
        match deployed {
            Ok(filter) => {
                self.inner.metrics.deploys_ok.inc();
                Ok(Arc::new(filter))
            }
            Err(err) => {
                self.inner.metrics.deploys_refused.inc();
                Err(err)
            }
        }
    }

    /// Components this host has compiled (each cache miss compiles once).
    pub fn compiles(&self) -> u64 {
        self.inner.compiles.load(Ordering::Relaxed)
    }

    /// Where compiled filters are cached.
    pub fn cache_dir(&self) -> &Path {
        &self.inner.cache_dir
    }

    /// The hub-wide filter counters.
    pub fn metrics(&self) -> &Arc<FilterMetrics> {
        &self.inner.metrics
    }
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`]. Dropping it stops
/// and joins the thread.
struct EpochTicker {
    /// Dropping the sender wakes the thread with `Disconnected`.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the thread. Without it no deadline would ever fire, so failing to start it
    /// fails the host.
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tern-filter-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only loops on the channel; it cannot panic in a way worth reporting.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tick_tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_ticks_plus_one() {
        assert_eq!(ticks(Duration::ZERO), 1);
        assert_eq!(ticks(Duration::from_nanos(1)), 2);
        assert_eq!(ticks(Duration::from_millis(1)), 2);
        assert_eq!(ticks(Duration::from_micros(1_500)), 3);
        assert_eq!(ticks(Duration::from_secs(2)), 2_001);
        assert_eq!(ticks(Duration::MAX), u64::MAX);
        let limits = Limits {
            memory_bytes: 0,
            deadline_base: Duration::from_millis(10),
            deadline_per_message: Duration::from_micros(100),
            init_deadline: Duration::from_secs(1),
            max_instances: 1,
        };
        assert_eq!(limits.process_ticks(0), 11);
        assert_eq!(limits.process_ticks(256), 10 + 26 + 1);
        assert_eq!(limits.init_ticks(), 1_001);
    }
}
