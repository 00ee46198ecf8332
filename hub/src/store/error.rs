//! Errors of the durable store.
//!
//! redb's many error types are folded into [`StoreError::Db`] (with the operation that failed)
//! at this boundary; callers branch only on the variants that change what they answer a
//! client: [`StoreError::QuotaExceeded`] (MQTT reason 0x97) and everything else (0x80).

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory is locked by another process (or another `Store` in this one).
    #[error("data directory {dir} is in use by another process")]
    InUse {
        /// The data directory.
        dir: PathBuf,
    },
    /// The data directory or the database file could not be created or opened.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a redb database, is damaged, or was written by an incompatible redb.
    #[error("{path} is not a usable Tern store (corrupted or foreign file): {reason}")]
    Corrupted {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        reason: String,
    },
    /// The file is a Tern store of a format version this build does not understand.
    #[error("{path} has store format version {found}, this build supports version {supported}")]
    UnsupportedVersion {
        /// The database file.
        path: PathBuf,
        /// Version found in the meta table.
        found: u64,
        /// Version this build writes and reads.
        supported: u64,
    },
    /// The retention budget is used up and the policy is `refuse`: new messages are not
    /// accepted until consumers catch up or old data ages out.
    #[error("store quota exceeded: {used} of {limit} bytes in use")]
    QuotaExceeded {
        /// Bytes of log records stored.
        used: u64,
        /// The configured `max_bytes`.
        limit: u64,
    },
    /// The submission queue is full (only from [`Store::try_submit`](super::Store::try_submit)).
    #[error("store write queue is full")]
    Busy,
    /// A database operation failed (I/O error, disk full, ...).
    #[error("store {op} failed: {source}")]
    Db {
        /// The operation, for the log line.
        op: &'static str,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// The transaction that held this ticket's writes failed to commit; nothing of it is
    /// stored, so nothing of it may be acknowledged.
    #[error("store commit failed: {reason}")]
    CommitFailed {
        /// The failure, as logged by the writer.
        reason: std::sync::Arc<str>,
    },
    /// A record could not be encoded (only for values postcard cannot represent).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
    /// A stored record could not be decoded.
    #[error("corrupted {table} record {key}: {source}")]
    CorruptRecord {
        /// Table holding the record.
        table: &'static str,
        /// The record's key, for the log line.
        key: String,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
    /// The database is being reopened after an I/O failure; retry shortly.
    #[error("store is recovering from an I/O error")]
    Unavailable,
    /// The store has been closed, or its writer thread stopped.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Wraps any redb error with the operation that failed.
    pub(crate) fn db(op: &'static str, err: impl Into<redb::Error>) -> Self {
        Self::Db {
            op,
            source: err.into(),
        }
    }
}
