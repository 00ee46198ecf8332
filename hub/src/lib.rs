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
//! - [`config`]: serde configuration tree, TOML loading with file/key/reason errors.
//! - [`error`]: the crate's [`Error`].
//! - [`listener`]: accept loop, connection cap, accept backoff, one task per connection.
//! - [`session`]: per-connection driver (`mod.rs`) around the sans-IO MQTT state machine
//!   (`state.rs`) and the bounded per-session queue (`queue.rs`).
//! - [`broker`]: shared state — session registry, router, retained messages — and the
//!   fan-out path; will and session-expiry timers; the `$SYS` publisher.
//! - [`router`]: subscription trie and retained-message trie (pure data structures).
//! - [`message`]: the application message shared by all subscriber queues.
//! - [`metrics`]: atomic counters published under `$SYS/broker/...`.
//! - [`shutdown`]: cancellation token and task tracker for graceful shutdown.

pub mod broker;
pub mod config;
pub mod error;
pub mod listener;
pub mod message;
pub mod metrics;
pub mod router;
pub mod session;
pub mod shutdown;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use crate::broker::Broker;
pub use crate::config::Config;
pub use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

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
/// connection gracefully (MQTT 5 clients get DISCONNECT 0x8B) and returns.
///
/// `listeners[i]` uses the connection cap of `config.listener[i]` (or of the first
/// configured listener when there are more listeners than entries).
pub async fn run(
    listeners: Vec<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
        dir: config.data_dir.clone(),
        source,
    })?;
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
    let stop = Shutdown::new();
    let broker = Arc::new(Broker::new(config, stop.clone()));
    let mut accept_loops = Vec::with_capacity(listeners.len());
    for (listener, cap) in listeners.into_iter().zip(caps) {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "accepting MQTT connections");
        }
        accept_loops.push(tokio::spawn(listener::accept_loop(
            listener,
            cap,
            Arc::clone(&broker),
        )));
    }
    stop.tasks().spawn(Arc::clone(&broker).run_sys_publisher());
    shutdown.await;
    info!("shutting down");
    stop.trigger();
    for accept in accept_loops {
        // A panicked accept loop is already gone; shutdown continues regardless.
        let _ = accept.await;
    }
    stop.wait_for_tasks().await;
    info!("shutdown complete");
    Ok(())
}
