//! The crate's error type: what can stop the hub as a whole.
//!
//! Per-connection failures (malformed packets, protocol violations, socket errors) are
//! [`crate::session::SessionError`]; they end one connection, are logged once and counted,
//! and never surface here.

use std::path::PathBuf;

/// Failure of the hub process as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory could not be created.
    #[error("cannot create data directory {dir}: {source}")]
    DataDir {
        /// The configured directory.
        dir: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The durable store could not be opened or closed (in use, corrupted, I/O).
    #[error("cannot use the store in {dir}")]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// What the store reported (names the file and the cause).
        source: Box<crate::store::StoreError>,
    },
    /// The filter pipelines could not be deployed (names the pipeline, the filter, its
    /// file and the reason).
    #[error("cannot deploy the filter pipelines: {0}")]
    Filters(#[from] crate::filter_host::DeployError),
    /// The filter host (wasm engine) could not start.
    #[error("cannot start the filter host: {0}")]
    FilterHost(#[from] crate::filter_host::FilterError),
    /// Another I/O failure outside a connection.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
