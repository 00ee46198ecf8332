//! Upstream bridges: store-and-forward of the message log to cloud MQTT brokers.
//!
//! # What it owns
//!
//! One tokio task per `[[bridge]]` (`task`) with its rumqttc connection ([`upstream`]),
//! and one durable cursor per bridge in the store (key `bridge:<name>`, the next log
//! position the bridge still needs; retention keeps everything from there on). The bridge
//! reads the log through the store's public API only and never touches a session.
//!
//! # Guarantees
//!
//! - At least once, in log order, never a gap: the cursor moves only over a contiguous
//!   prefix of messages the upstream broker acknowledged (QoS 1: PUBACK; QoS 0: written to
//!   the socket). After a lost connection or a crash the bridge resends from the cursor,
//!   with the same ids (`<gateway_id>:<seq>`), so consumers drop the duplicates.
//! - Except beyond the outbox bound (`outbox = { max_bytes, max_age }`) or the store's
//!   retention: then the oldest unforwarded messages are given up (or were trimmed),
//!   counted (`dropped`, `trimmed`), logged, and shown to consumers as a gap.
//! - `replay = "live-first"`: after an outage new messages go first and the backlog drains
//!   behind them, marked as replayed; order holds within each ([`lane`]). Its state is
//!   durable under `bridge:<name>/split` and `bridge:<name>/live` (at or above the cursor,
//!   so they never hold back retention).
//! - The cursor is submitted to the store at most every 100 ms without waiting for it to
//!   be durable: a crash can only make the bridge resend a little more.
//! - A new bridge starts at the tail of the log: it forwards what arrives from its first
//!   start on, not the history.
//! - A cursor whose bridge is no longer configured is deleted at start-up (with a
//!   warning), otherwise it would pin the log forever.
//! - A configuration reload adds, removes and restarts bridges without a restart of the
//!   hub, with the same guarantees ([`running`]).
//!
//! # Layout
//!
//! - [`config`]: `[[bridge]]` tables and their validation.
//! - [`select`]: which log entries a bridge forwards and their upstream topic.
//! - [`window`]: sans-IO in-flight window: publishes, packet ids, acknowledged prefix.
//! - [`lane`]: a reading lane (loaded + counted messages); two during a live-first replay.
//! - [`outbox`]: sans-IO ledger of the backlog counted but not loaded (count, bytes, age).
//! - [`upstream`]: rumqttc client (3.1.1 / 5.0) and its driver task.
//! - [`envelope`]: `envelope` mode encoding (`tern-envelope`).
//! - [`tls`]: rustls client configuration from PEM files.
//! - [`status`]: counters and gauges, published under `$SYS/broker/bridges/<name>/`.
//! - `task`: the loop tying them together.
//! - [`running`]: the running bridges, each with its own stop handle; reload.

pub mod config;
pub mod envelope;
pub mod lane;
pub mod outbox;
pub mod running;
pub mod select;
pub mod status;
mod task;
pub mod tls;
pub mod upstream;
pub mod window;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls::ClientConfig;
use tracing::{info, warn};

pub use self::config::BridgeConfig;
pub use self::running::{BridgeChanges, Bridges};
pub use self::status::BridgeStatus;
use crate::config::ConfigError;
use crate::shutdown::Shutdown;
use crate::store::{Seq, Store, StoreError, WriteOp};

/// v5 user property carrying a forwarded message's id in `each` mode.
pub const ID_PROPERTY: &str = tern_envelope::each::ID_PROPERTY;

/// Prefix of bridge cursors in the store's cursor table.
const CURSOR_PREFIX: &str = "bridge:";

/// The store key of bridge `name`'s cursor.
pub fn cursor_key(name: &str) -> String {
    format!("{CURSOR_PREFIX}{name}")
}

/// Suffix of the key holding the end of a live-first replay.
const SPLIT_SUFFIX: &str = "/split";
/// Suffix of the key holding the live lane's cursor during a live-first replay.
const LIVE_SUFFIX: &str = "/live";

/// The store key of the end of bridge `name`'s live-first replay (at or above its cursor,
/// so it never holds back retention).
pub fn split_key(name: &str) -> String {
    format!("{CURSOR_PREFIX}{name}{SPLIT_SUFFIX}")
}

/// The store key of bridge `name`'s live-lane cursor during a live-first replay.
pub fn live_key(name: &str) -> String {
    format!("{CURSOR_PREFIX}{name}{LIVE_SUFFIX}")
}

/// A bridge whose files (TLS) were read, ready to start.
#[derive(Debug)]
pub struct Prepared {
    config: Arc<BridgeConfig>,
    tls: Option<Arc<ClientConfig>>,
    /// What the TLS files held when read: a reload restarts the bridge when it changes.
    tls_digest: Option<TlsDigest>,
}

/// SHA-256 over the contents of a bridge's TLS files (CA, certificate, key), each prefixed
/// with its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsDigest([u8; 32]);

impl TlsDigest {
    /// The digest of `tls`'s files; a file that cannot be read counts as empty (reading it
    /// for the client configuration reports the error).
    fn of(tls: &config::TlsConfig) -> Self {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        for path in std::iter::once(&tls.ca).chain(&tls.cert).chain(&tls.key) {
            let bytes = std::fs::read(path).unwrap_or_default();
            hasher.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_le_bytes());
            hasher.update(&bytes);
        }
        Self(hasher.finalize().into())
    }
}

/// Reads what the bridges of `config` need from disk (TLS files). Errors name the file of
/// the configuration, the key and the reason, like other configuration errors.
pub fn prepare(config: &crate::Config) -> Result<Vec<Prepared>, ConfigError> {
    config
        .bridge
        .iter()
        .map(|b| {
            let tls = match &b.tls {
                Some(t) => Some(tls::client_config(t).map_err(|err| {
                    ConfigError::Invalid {
                        file: config
                            .source
                            .clone()
                            .unwrap_or_else(|| PathBuf::from("<default>")),
                        key: "bridge.tls".into(),
                        reason: format!("bridge {:?}: {err}", b.name),
                    }
                })?),
                None => None,
            };
            Ok(Prepared {
                config: Arc::new(b.clone()),
                tls,
                tls_digest: b.tls.as_ref().map(TlsDigest::of),
            })
        })
        .collect()
}

/// Starts every prepared bridge on `stop`'s task tracker, each from its recovered cursor in
/// `cursors` (a new one from the tail of the log), and deletes the cursors of bridges no
/// longer configured. Returns the running bridges (register their `$SYS` source with the
/// broker; reloads go through them).
pub async fn start(
    prepared: Vec<Prepared>,
    store: &Store,
    cursors: &BTreeMap<String, Seq>,
    stop: &Shutdown,
) -> Result<Arc<Bridges>, StoreError> {
    let mut ops = Vec::new();
    for (key, seq) in cursors {
        let Some(name) = key.strip_prefix(CURSOR_PREFIX) else {
            continue;
        };
        // Bridge names never contain '/': a suffix names a replay key of the bridge.
        let name = name.split_once('/').map_or(name, |(name, _)| name);
        if !prepared.iter().any(|p| p.config.name == name) {
            warn!(
                bridge = name,
                cursor = seq,
                "cursor of a bridge that is no longer configured deleted"
            );
            ops.push(WriteOp::CursorDelete { name: key.clone() });
        }
    }
    let mut starts = Vec::with_capacity(prepared.len());
    for prepared in prepared {
        let config = &prepared.config;
        let key = cursor_key(&config.name);
        let (cursor, resumed) = match cursors.get(&key) {
            Some(&seq) => (seq, true),
            None => {
                let tail = store.tail();
                ops.push(WriteOp::CursorSet {
                    name: key,
                    seq: tail,
                });
                (tail, false)
            }
        };
        // A live-first replay the hub stopped in: resumed whatever the policy is now.
        let split = cursors.get(&split_key(&config.name)).copied();
        let live = cursors.get(&live_key(&config.name)).copied();
        let replay = match (split, live) {
            (Some(split), Some(live)) if resumed && cursor < split && split <= live => {
                Some((split, live))
            }
            (None, None) => None,
            _ => {
                // Inconsistent or finished: the plain cursor is enough (resends only).
                ops.push(WriteOp::CursorDelete {
                    name: split_key(&config.name),
                });
                ops.push(WriteOp::CursorDelete {
                    name: live_key(&config.name),
                });
                None
            }
        };
        info!(
            bridge = config.name,
            address = config.address,
            cursor,
            log_entries_behind = store.tail().saturating_sub(cursor),
            new = !resumed,
            "bridge starting"
        );
        let resume = task::Resume {
            cursor,
            replay,
            resumed,
        };
        starts.push((prepared, resume));
    }
    if !ops.is_empty() {
        let submitted = store.submit(ops).await?;
        store.wait_durable(submitted.ticket).await?;
    }
    let bridges = Arc::new(Bridges::new(store.clone(), stop.clone()));
    for (prepared, resume) in starts {
        bridges.launch(prepared, resume, None).await;
    }
    Ok(bridges)
}
