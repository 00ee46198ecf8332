//! `tern-hub`: the Tern gateway daemon — an MQTT 3.1.1 + 5.0 hub for edge devices.
//!
//! The binary `tern` parses its command line and calls [`run`] with listeners it has bound;
//! tests do the same in-process with their own listeners and shutdown future.
//!
//! ```no_run
//! # async fn example() -> tern_hub::Result<()> {
//! let mut config = tern_hub::Config::default();
//! config.listener[0].bind = "127.0.0.1:0".parse().expect("valid address");
//! let listeners = tern_hub::bind_listeners(&config).await?;
//! println!("listening on {}", listeners[0].local_addr()?);
//! tern_hub::run(listeners, config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! # Layout
//!
//! - [`admin`]: the admin HTTP API (axum) and the Prometheus `/metrics` endpoint.
//! - [`bridge`]: upstream bridges: store-and-forward of the log to cloud MQTT brokers, one
//!   task and one durable cursor per `[[bridge]]`.
//! - [`config`]: serde configuration tree, TOML loading with file/key/reason errors.
//! - [`error`]: the crate's [`Error`].
//! - [`filter_host`]: wasmtime filter host: loading, caching, pooled instances, chains and
//!   pipelines of WebAssembly filters with their failure policy.
//! - [`listener`]: accept loop, connection caps (per listener and per source address),
//!   accept backoff, TLS and WebSocket handshakes, one task per connection.
//! - [`session`]: per-connection driver (`mod.rs`) around the sans-IO MQTT state machine
//!   (`state.rs`) and the bounded per-session queue (`queue.rs`), generic over the byte
//!   stream (TCP, TLS, WebSocket through `transport.rs`).
//! - [`broker`]: shared state — session registry, router, retained messages — and the
//!   fan-out path; will and session-expiry timers; the `$SYS` publisher.
//! - [`router`]: subscription trie and retained-message trie (pure data structures).
//! - [`message`]: the application message shared by all subscriber queues.
//! - [`metrics`]: atomic counters published under `$SYS/broker/...`.
//! - [`reload`]: applies the configuration file's pipelines and bridges again when it (or a
//!   filter's wasm file) changes, or on SIGHUP; serialises them with the pipelines the
//!   admin API deploys.
//! - [`security`]: listener security: TLS server configuration, password file and
//!   `tern passwd`, ACL files compiled per client, per-address connection limits.
//! - [`shutdown`]: cancellation token and task tracker for graceful shutdown.
//! - [`store`]: the durable store (redb): message log, sessions, queues, in-flight state,
//!   retained messages, half messages; group commit. The only module that touches redb.
//! - [`tx`]: transactional (half) messages: open transactions, limits, commit and rollback,
//!   the check-back task.

pub mod admin;
pub mod bridge;
pub mod broker;
pub mod config;
pub mod error;
pub mod filter_host;
pub mod listener;
pub mod message;
pub mod metrics;
pub mod reload;
pub mod router;
pub mod security;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod tx;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use crate::broker::Broker;
pub use crate::config::Config;
pub use crate::error::{Error, Result};
use crate::filter_host::Pipelines;
use crate::metrics::FilterMetrics;
use crate::shutdown::Shutdown;
use crate::store::{Recovered, Store};

/// A store opened by [`open_store`], with the state it recovered and the filter pipelines
/// deployed, ready for [`run_with_store`].
#[derive(Debug)]
pub struct OpenedStore {
    store: Store,
    recovered: Recovered,
    filters: DeployedFilters,
    /// The bridges, their TLS files read.
    bridges: Vec<bridge::Prepared>,
    /// Listener security: TLS configurations, password and ACL files read.
    security: Arc<security::Security>,
}

/// The filter pipelines of `config`, deployed (or nothing when it has none).
#[derive(Debug, Default)]
struct DeployedFilters {
    pipelines: Option<Arc<Pipelines>>,
    metrics: Arc<FilterMetrics>,
}

/// Creates the filter host and deploys `config`'s pipelines and those the admin API
/// deployed, if there are any (a hub without pipelines runs no wasm engine). Errors name
/// the pipeline, the filter, its file and the reason.
fn deploy_filters(config: &Config) -> Result<DeployedFilters> {
    let metrics = Arc::new(FilterMetrics::default());
    let wanted = reload::startup_pipelines(config)?;
    if wanted.is_empty() {
        return Ok(DeployedFilters {
            pipelines: None,
            metrics,
        });
    }
    let pipelines = reload::new_pipelines(config, Arc::clone(&metrics))?;
    pipelines.deploy(&wanted)?;
    info!(
        pipelines = wanted.len(),
        api_pipelines = wanted.len() - config.pipeline.len(),
        filters = wanted.iter().map(|p| p.filters.len()).sum::<usize>(),
        "filter pipelines deployed"
    );
    Ok(DeployedFilters {
        pipelines: Some(Arc::new(pipelines)),
        metrics,
    })
}

impl OpenedStore {
    /// The store handle.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Opens the durable store in `config.data_dir` (creating it if missing) and deploys the
/// filter pipelines. Fails with a message naming the path when the directory is in use by
/// another process, the file is corrupted or foreign, or it cannot be read; or naming the
/// pipeline, filter and reason when a filter cannot be deployed; or naming the bridge,
/// file and reason when a bridge's TLS files cannot be used.
pub fn open_store(config: &Config) -> Result<OpenedStore> {
    let (store, recovered) =
        Store::open(&config.data_dir, config.store.store_config()).map_err(|source| {
            Error::Store {
                dir: config.data_dir.clone(),
                source: Box::new(source),
            }
        })?;
    if recovered.corrupt_records > 0 {
        tracing::warn!(
            records = recovered.corrupt_records,
            "corrupted store records skipped at start-up"
        );
    }
    let security = Arc::new(security::Security::load(config)?);
    let filters = deploy_filters(config)?;
    let bridges = bridge::prepare(config)?;
    Ok(OpenedStore {
        store,
        recovered,
        filters,
        bridges,
        security,
    })
}

/// Creates the data directory if missing. [`run`] does it too; the binary calls it before
/// announcing its listeners, so the directory exists once `listening on` is printed.
pub fn prepare_data_dir(config: &Config) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
        dir: config.data_dir.clone(),
        source,
    })
}

/// Binds every listener of `config` (in order). Port 0 binds a free port; read the real
/// address with [`TcpListener::local_addr`].
pub async fn bind_listeners(config: &Config) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(config.listener.len());
    for listener in &config.listener {
        let bound = TcpListener::bind(listener.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: listener.bind,
                source,
            })?;
        listeners.push(bound);
    }
    Ok(listeners)
}

/// Runs the hub on already-bound `listeners` until `shutdown` completes, then closes every
/// connection gracefully (MQTT 5 clients get DISCONNECT 0x8B), closes the store and returns.
/// Opens the store itself; the binary uses [`open_store`] + [`run_with_store`] to report a
/// store error before announcing its listeners.
///
/// `listeners[i]` uses the connection cap of `config.listener[i]` (or of the first
/// configured listener when there are more listeners than entries).
pub async fn run(
    listeners: Vec<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    prepare_data_dir(&config)?;
    let opened = open_store(&config)?;
    run_with_store(listeners, config, opened, shutdown).await
}

/// [`run`] with a store already opened by [`open_store`]: restores persistent sessions and
/// retained messages from it before accepting connections.
pub async fn run_with_store(
    listeners: Vec<TcpListener>,
    config: Config,
    opened: OpenedStore,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let caps: Vec<usize> = listeners
        .iter()
        .enumerate()
        .map(|(i, _)| {
            config
                .listener
                .get(i)
                .or(config.listener.first())
                .map_or(10_000, |l| l.max_connections)
        })
        .collect();
    // Prepared first: an unreadable token file or an admin address in use stops the hub
    // before anything starts.
    let admin = admin::prepare(&config.admin, config.source.as_deref()).await?;
    let stop = Shutdown::new();
    let OpenedStore {
        store,
        mut recovered,
        filters,
        bridges,
        security,
    } = opened;
    let cursors = std::mem::take(&mut recovered.cursors);
    let data_dir = config.data_dir.clone();
    let store_error = |source| Error::Store {
        dir: data_dir.clone(),
        source: Box::new(source),
    };
    let broker = Arc::new(
        Broker::with_store(config, stop.clone(), store.clone())
            .with_filter_metrics(filters.metrics),
    );
    if let Some(pipelines) = filters.pipelines {
        // A fresh broker has none installed yet.
        let _ = broker.install_pipelines(pipelines);
    }
    let started = std::time::Instant::now();
    let summary = broker.restore(recovered).await.map_err(store_error)?;
    info!(
        sessions = summary.sessions,
        expired_sessions = summary.expired_sessions,
        queued = summary.queued,
        inflight = summary.inflight,
        retained = summary.retained,
        wills_published = summary.wills_published,
        wills_pending = summary.wills_pending,
        next_seq = store.tail(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "store restored"
    );
    let open_transactions = store.open_transactions().map_err(store_error)?;
    let restored_transactions = broker.transactions().restore(open_transactions);
    if restored_transactions > 0 {
        info!(open = restored_transactions, "open transactions restored");
    }
    // Bridges read the log only; they start once the restored state is in place,
    // before the listeners accept anyone.
    let bridges = bridge::start(bridges, &store, &cursors, &stop)
        .await
        .map_err(store_error)?;
    broker.add_sys_source(bridges.sys_source());
    let deployments = Arc::new(reload::Deployments::new(Arc::clone(&broker), bridges)?);
    let readiness = admin.map(|admin| admin::start(admin, Arc::clone(&deployments), &stop));
    let mut accept_loops = Vec::with_capacity(listeners.len());
    for (index, (listener, cap)) in listeners.into_iter().zip(caps).enumerate() {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "accepting MQTT connections");
        }
        let Some(listener_security) = security.listener(index) else {
            continue;
        };
        accept_loops.push(tokio::spawn(listener::accept_loop(
            listener,
            cap,
            Arc::clone(&broker),
            listener_security,
        )));
    }
    if let Some(readiness) = &readiness {
        readiness.set_ready();
    }
    stop.tasks()
        .spawn(Arc::clone(&security).watch_hangup(stop.clone()));
    stop.tasks().spawn(Arc::clone(&broker).run_sys_publisher());
    stop.tasks().spawn(tx::run_checker(Arc::clone(&broker)));
    stop.tasks().spawn(reload::watch(deployments));
    shutdown.await;
    info!("shutting down");
    stop.trigger();
    for accept in accept_loops {
        // A panicked accept loop is already gone; shutdown continues regardless.
        let _ = accept.await;
    }
    stop.wait_for_tasks().await;
    drop(broker);
    // Commits everything submitted and joins the writer thread.
    let closed = tokio::task::spawn_blocking(move || store.close()).await;
    match closed {
        Ok(result) => result.map_err(store_error)?,
        Err(_) => return Err(store_error(crate::store::StoreError::Closed)),
    }
    info!("shutdown complete");
    Ok(())
}
