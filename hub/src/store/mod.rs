//! Durable message store: the only module that touches redb.
//!
//! # What it owns
//!
//! One redb file, `<data_dir>/tern.redb` (layout in `tables.rs`): an append-only message log
//! keyed by [`Seq`], and beside it persistent sessions, their offline queues (log positions,
//! not copies), in-flight QoS state in both directions, retained messages, one cursor per
//! consumer (bridge), and the wills of connected clients and of pending will delays.
//!
//! # Write path and the durability contract
//!
//! Every change is a [`WriteOp`]. Callers hand a batch of ops to [`Store::submit`], which
//! assigns log positions to its appends *synchronously* (so the caller knows them at once and
//! positions follow submission order) and returns a [`Ticket`]. One dedicated writer thread
//! drains the bounded submission channel and applies as many submissions as are waiting (up to
//! [`StoreConfig::group_commit_max_messages`] appends / [`StoreConfig::group_commit_max_bytes`])
//! in one write transaction — group commit, which shares the fsync among all of them. The
//! writer then publishes the highest resolved ticket on a watch channel
//! ([`Store::committed`]); [`Store::wait_durable`] / [`Store::outcome`] say whether a given
//! ticket's transaction committed or failed.
//!
//! When the writer is idle (nothing submitted before is unresolved, and submissions are not
//! arriving faster than commits take) and the submission needs no fsync (under
//! [`FsyncPolicy::Interval`], its journal frame is what makes it durable), `submit` commits
//! it in the calling thread instead, the same way the writer would, and returns with the
//! ticket already resolved: no wake-up of the writer thread and none back. Under load
//! submissions go through the channel and are grouped.
//!
//! A session acknowledges a QoS 1/2 PUBLISH only once its ticket is durable. It may keep
//! reading and submitting meanwhile (pipelining): tickets resolve in submission order.
//!
//! A group is committed with `Durability::Immediate` if any of its submissions needs it, which
//! is every submission except those made only of QoS 0 appends and QoS 0 queue entries. QoS 0
//! data therefore rides in the same groups, is visible to readers at once, and becomes durable
//! with the next immediate commit — under load the next group, when idle within
//! [`StoreConfig::maintenance_interval`], and at [`Store::close`]. A crash may lose it, as
//! MQTT allows for QoS 0.
//!
//! When a group fails to commit (disk full, I/O error) the writer reopens the database (redb
//! refuses every operation after an I/O failure until it is reopened) and retries the group's
//! submissions one by one, so one bad submission does not fail its neighbours; each one that
//! still fails resolves with [`StoreError::CommitFailed`] and none of its writes is visible.
//! Once space is available again, commits succeed without a restart.
//!
//! # Retention
//!
//! See [`StoreConfig`]: a byte budget over the encoded log records and a maximum age. Entries
//! below the lowest position still needed (queued or in flight for a persistent session, or at
//! or after a consumer cursor) are trimmed, oldest first, once the budget is exceeded and until
//! the log is back under 90 % of it; entries younger than [`StoreConfig::trim_grace`] are
//! spared, because a fresh append reaches its subscribers' queues in a later submission.
//! Entries older than `max_age` are always trimmed. When needed entries alone fill the budget
//! the policy applies: [`WhenFull::Refuse`] makes every submission containing an append fail
//! with [`StoreError::QuotaExceeded`] (counted in `refused`, logged; other ops still pass, so
//! consumers can advance and free space); [`WhenFull::DropOldest`] deletes the oldest entries
//! anyway (counted in `dropped_unconsumed`, logged). Trimming runs in the writer thread in bounded
//! steps ([`StoreConfig::trim_batch`] records per transaction), so ingest never stalls long.
//! Queue entries whose message is gone are skipped on replay ([`Store::get`] returns `None`).
//!
//! # Session queues
//!
//! A persistent session's queue keeps only a window of loaded messages; the rest it reads
//! back by position with [`Store::read_queued`], one read transaction per page. A position
//! can reach a queue before its append commits, so a missing record is reported as gone
//! only once it can no longer appear (below the head, or every earlier submission resolved).
//!
//! # Message expiry
//!
//! Reads hide expired messages: [`Store::read_log`] skips them and [`Store::get`] returns
//! `None`. They leave the log with normal retention.
//!
//! # Start-up
//!
//! [`Store::open`] reads the meta counters (head, next seq, byte and record totals) and the
//! session/retained/cursor tables; it never scans the log, so opening is independent of the
//! backlog size.
//!
//! # Invariants
//!
//! - Seqs in the log are strictly increasing in submission order. A seq that any committed
//!   record names is never assigned again: `next_seq` in meta covers every seq the writer has
//!   seen, failed submissions included, from the next successful commit on.
//! - Meta counters change in the same transaction as the log, so they are exact after any crash.
//! - Bad data on disk is an error, a counter (`errors`) and a log line, never a panic.

mod error;
mod journal;
mod record;
mod tables;
mod tx;
mod writer;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use self::error::StoreError;
pub use self::record::{
    DeliveryInfo, InflightOut, OutboundState, QueueEntry, Recovered, RecoveredSession, Seq,
    SessionRecord, StoredMessage, StoredMessageRef, StoredProperties, StoredPropertiesRef,
    SubscriptionRecord, UnixMillis, WillRecord, now_millis, serde_bytes_compat,
};
use self::tables::{
    ALL_TABLES, CURSORS, INFLIGHT_IN, INFLIGHT_OUT, KEY_FORMAT_VERSION, KEY_HEAD, KEY_LOG_BYTES,
    KEY_LOG_COUNT, KEY_NEXT_SEQ, LOG, META, QUEUE, RETAINED, SESSIONS, WILLS,
};
pub use self::tx::{OpenTransaction, TxRecord};
pub use self::writer::TicketWaiter;
use self::writer::{Batch, Inline, Op, Writer, WriterThread};

/// Version of the on-disk format (tables and record encodings) this build reads and writes.
/// A store of another version is refused at open ([`StoreError::UnsupportedVersion`]).
///
/// - 1: first format.
/// - 2: `wills` table; `SessionRecord` lost its (never written) `will` field.
/// - 3: `bridge` appended to the message record.
/// - 4: `tx_open` and `tx_half` tables (transactions).
pub const FORMAT_VERSION: u64 = 4;

/// Name of the database file inside the data directory.
pub const FILE_NAME: &str = "tern.redb";

/// What to do when the retention budget is full of data that is still needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Refuse new messages ([`StoreError::QuotaExceeded`], MQTT reason 0x97).
    #[default]
    Refuse,
    /// Delete the oldest messages even if a session or consumer has not seen them.
    DropOldest,
}

/// When an acknowledged write reaches the disk itself (not only the operating system).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every commit that holds a QoS 1/2 write is fsynced before it is acknowledged:
    /// acknowledged messages survive a power loss. Throughput from one connection is bound
    /// by the disk's flush latency (its in-flight window per flush).
    EveryCommit,
    /// Commits are written ahead to a journal with one `write` (no fsync) before they are
    /// acknowledged, and a background thread fdatasyncs the journal at this interval:
    /// acknowledged messages survive a crash or `kill -9` of the hub; a power loss or kernel
    /// crash can take at most the last interval. Checkpoints (immediate commits) bound the
    /// journal ([`StoreConfig::checkpoint_interval`], [`StoreConfig::checkpoint_bytes`]).
    Interval(Duration),
}

/// Store tuning and retention. Defaults suit a gateway with a few GB of disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Retention budget: total encoded bytes of log records (the file is larger by redb's
    /// B-tree overhead, typically 1.3–2×). Default 2 GiB.
    pub max_bytes: u64,
    /// Log entries older than this are deleted, needed or not. Default 7 days.
    pub max_age: Duration,
    /// Policy once the budget is full of needed data. Default [`WhenFull::Refuse`].
    pub when_full: WhenFull,
    /// Most appends in one write transaction. Default 1024.
    pub group_commit_max_messages: usize,
    /// Most (approximate) payload bytes in one write transaction. Default 4 MiB.
    pub group_commit_max_bytes: usize,
    /// How long the writer waits for more submissions after the first of a group once the
    /// channel is empty. Default 0: commit as soon as nothing else is waiting, which batches
    /// naturally under load and adds no latency when idle. Values above 1 s count as 1 s.
    pub group_commit_linger: Duration,
    /// Capacity of the submission channel, in submissions; [`Store::submit`] waits when full.
    /// Default 4096.
    pub queue_capacity: usize,
    /// Most log records deleted per transaction by retention. Default 4096.
    pub trim_batch: usize,
    /// Entries younger than this are not trimmed merely for being below the lowest needed
    /// position (a fresh append may not have reached its subscribers' queues yet); the age
    /// limit and `drop-oldest` ignore it. Default 10 s.
    pub trim_grace: Duration,
    /// How often an idle writer checks retention. Default 1 s.
    pub maintenance_interval: Duration,
    /// redb page cache in bytes (read cache and the write buffer of non-durable commits
    /// together). Default 4 MiB: the log is append-mostly and read back near its tail, so a
    /// small cache keeps the hub inside a gateway's memory budget; under QoS 1 ingest the
    /// cache is always full, so every MiB here is a MiB of resident memory. Below 4 MiB redb
    /// writes pages out before the checkpoint and ingest slows (`docs/benchmarks.md`).
    pub cache_size: usize,
    /// Most queue entries per session [`Store::open`] loads into [`Recovered`]; a longer
    /// queue is marked [`RecoveredSession::queue_truncated`] and the rest is paged in with
    /// [`Store::read_queue`]. Default: unlimited.
    pub recovery_queue_limit: usize,
    /// When acknowledged writes are flushed to the disk. Default
    /// `FsyncPolicy::Interval(50 ms)`.
    pub fsync: FsyncPolicy,
    /// Under [`FsyncPolicy::Interval`]: the longest time between checkpoints while writes
    /// arrive. Default 1 s.
    pub checkpoint_interval: Duration,
    /// Under [`FsyncPolicy::Interval`]: a checkpoint once the journal file reaches this size.
    /// Default 64 MiB.
    pub checkpoint_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_bytes: 2 << 30,
            max_age: Duration::from_secs(7 * 24 * 3600),
            when_full: WhenFull::Refuse,
            group_commit_max_messages: 1024,
            group_commit_max_bytes: 4 << 20,
            group_commit_linger: Duration::ZERO,
            queue_capacity: 4096,
            trim_batch: 4096,
            trim_grace: Duration::from_secs(10),
            maintenance_interval: Duration::from_secs(1),
            cache_size: 4 << 20,
            recovery_queue_limit: usize::MAX,
            fsync: FsyncPolicy::Interval(Duration::from_millis(50)),
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_bytes: 64 << 20,
        }
    }
}

/// One change to the store. Submitted in batches through [`Store::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOp {
    /// Append a message to the log; it receives the next seq (returned by `submit`).
    Append(StoredMessage),
    /// [`WriteOp::Append`] for a record already encoded ([`WriteOp::append_encoded`]).
    AppendEncoded(EncodedMessage),
    /// Create or replace a persistent session.
    SessionUpsert(SessionRecord),
    /// Delete a session with its queue and in-flight state.
    SessionDelete {
        /// Client identifier.
        client: String,
    },
    /// Add a log position to a session's offline queue.
    QueuePush {
        /// Client identifier.
        client: String,
        /// Log position (from an earlier or the same-batch append).
        seq: Seq,
        /// How to deliver it.
        delivery: DeliveryInfo,
    },
    /// Remove a position from a session's queue (delivered, or moved to in-flight).
    QueueRemove {
        /// Client identifier.
        client: String,
        /// Log position.
        seq: Seq,
    },
    /// Record or update an outbound QoS 1/2 delivery.
    InflightOutSet {
        /// Client identifier.
        client: String,
        /// Packet identifier.
        packet_id: u16,
        /// Position, state and delivery details.
        entry: InflightOut,
    },
    /// Forget an outbound delivery (PUBACK or PUBCOMP received).
    InflightOutRemove {
        /// Client identifier.
        client: String,
        /// Packet identifier.
        packet_id: u16,
    },
    /// Remember an inbound QoS 2 packet id (PUBREC sent).
    InflightInAdd {
        /// Client identifier.
        client: String,
        /// Packet identifier.
        packet_id: u16,
    },
    /// Forget an inbound QoS 2 packet id (PUBREL received).
    InflightInRemove {
        /// Client identifier.
        client: String,
        /// Packet identifier.
        packet_id: u16,
    },
    /// Set the retained message of a topic.
    RetainedSet {
        /// Topic name.
        topic: String,
        /// The message.
        message: StoredMessage,
    },
    /// Clear the retained message of a topic.
    RetainedClear {
        /// Topic name.
        topic: String,
    },
    /// Move a consumer's cursor (the next seq it needs). Creates the cursor.
    CursorSet {
        /// Consumer name.
        name: String,
        /// Next seq the consumer needs.
        seq: Seq,
    },
    /// Delete a consumer's cursor (the consumer was removed from the configuration).
    CursorDelete {
        /// Consumer name.
        name: String,
    },
    /// Create or replace the will of a client.
    WillSet {
        /// Client identifier.
        client: String,
        /// The will.
        will: WillRecord,
    },
    /// Delete the will of a client: any will (`token: None`), or only the will whose
    /// [`WillRecord::token`] matches (a newer connection's will is kept).
    WillDelete {
        /// Client identifier.
        client: String,
        /// Token of the will to delete; `None` deletes whatever is stored.
        token: Option<u64>,
    },
    /// Store half message `index` of an open transaction, with the transaction's record.
    TxHalf {
        /// Client that opened the transaction.
        client: String,
        /// Transaction id.
        tx: String,
        /// Position of the message in the transaction (publish order).
        index: u32,
        /// The half message, as it will be appended at commit.
        message: StoredMessage,
        /// The transaction's state including this message.
        record: TxRecord,
    },
    /// Rewrite the record of a transaction that is still open (check request sent).
    TxChecked {
        /// Client that opened the transaction.
        client: String,
        /// Transaction id.
        tx: String,
        /// The new record.
        record: TxRecord,
    },
    /// Delete the half messages and the record of a transaction (commit: submitted with the
    /// appends of its messages; rollback: alone).
    TxEnd {
        /// Client that opened the transaction.
        client: String,
        /// Transaction id.
        tx: String,
    },
}

impl WriteOp {
    /// An append of `message`, encoded now (in the caller's thread, from borrowed fields).
    pub fn append_encoded(message: &StoredMessageRef<'_>) -> Result<Self, StoreError> {
        let record = message.encode().map_err(|source| StoreError::Encode {
            what: "message",
            source,
        })?;
        Ok(WriteOp::AppendEncoded(EncodedMessage {
            qos0: message.qos == tern_mqtt::QoS::AtMostOnce,
            record,
        }))
    }
}

/// A log record encoded by [`WriteOp::append_encoded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    /// The message is QoS 0 (its commit may be lazier, see the module docs).
    qos0: bool,
    /// The postcard encoding of the message's [`StoredMessage`].
    record: Vec<u8>,
}

/// What the log holds for one queued position ([`Store::read_queued`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueuedRecord {
    /// The message, not expired (boxed: the other variants are empty).
    Message(Box<StoredMessage>),
    /// The message has expired.
    Expired,
    /// The record is gone for good: trimmed by retention, its commit failed, or it could not
    /// be decoded (logged and counted in `errors`).
    Gone,
}

/// Identifies one submission. Tickets are handed out in submission order, starting at 1, and
/// resolve (commit or fail) in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ticket(pub u64);

/// What [`Store::submit`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// Resolves when the submission's transaction has committed (or failed).
    pub ticket: Ticket,
    /// Seq of each [`WriteOp::Append`] of the submission, in op order.
    pub seqs: Vec<Seq>,
}

/// Snapshot of the store's counters, for the metrics module (`store.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Messages appended (committed).
    pub appends: u64,
    /// Write transactions committed.
    pub commits: u64,
    /// Appends in the last committed transaction.
    pub last_commit_batch: u64,
    /// Encoded bytes of log records stored.
    pub bytes: u64,
    /// Log records stored.
    pub records: u64,
    /// First seq in the log.
    pub head: Seq,
    /// Seq the next append receives.
    pub next_seq: Seq,
    /// Log records deleted by retention.
    pub trimmed: u64,
    /// Submissions refused with [`StoreError::QuotaExceeded`].
    pub refused: u64,
    /// Records deleted although a session or consumer still needed them.
    pub dropped_unconsumed: u64,
    /// Failed commits and corrupted records met.
    pub errors: u64,
}

impl StoreStats {
    /// Average appends per committed transaction.
    pub fn avg_commit_batch(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            // Precision loss beyond 2^53 is irrelevant for an average.
            #[expect(clippy::cast_precision_loss, reason = "approximate average")]
            let avg = self.appends as f64 / self.commits as f64;
            avg
        }
    }
}

/// Counters shared by the writer thread and the handles.
#[derive(Debug, Default)]
struct Counters {
    appends: AtomicU64,
    commits: AtomicU64,
    last_commit_batch: AtomicU64,
    bytes: AtomicU64,
    records: AtomicU64,
    head: AtomicU64,
    /// Highest seq the writer has persisted as `next_seq`.
    next_seq: AtomicU64,
    trimmed: AtomicU64,
    refused: AtomicU64,
    dropped_unconsumed: AtomicU64,
    errors: AtomicU64,
}

/// A ticket range whose transaction failed.
#[derive(Debug, Clone)]
struct FailedRange {
    first: Ticket,
    last: Ticket,
    reason: Arc<str>,
}

/// How many failed ranges are remembered for [`Store::outcome`].
const FAILED_RANGES_KEPT: usize = 1024;

/// State shared between handles and the writer thread.
#[derive(Debug)]
struct Common {
    /// The database; `None` only while the writer reopens it after an I/O failure.
    db: RwLock<Option<Arc<Database>>>,
    /// Opens the database file again (after an I/O failure).
    opener: Opener,
    path: PathBuf,
    cfg: StoreConfig,
    counters: Counters,
    /// Failed ticket ranges, oldest first, at most [`FAILED_RANGES_KEPT`].
    failures: Mutex<VecDeque<FailedRange>>,
    /// Highest failed ticket (0: none), the fast path of [`Store::outcome`].
    last_failed: AtomicU64,
    /// Appends are being refused (quota); for logging transitions only.
    refusing: AtomicBool,
    /// Tasks waiting for tickets, woken by the writer ([`Store::ticket_waiter`]).
    waiters: Arc<writer::TicketWaiters>,
}

/// How to (re)open the database.
struct Opener(Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>);

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener")
    }
}

impl Common {
    /// The open database, or [`StoreError::Unavailable`] while it is being reopened.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Unavailable)
    }

    /// The log table in a new read transaction: what every reader of messages starts with.
    fn read_log(&self) -> Result<redb::ReadOnlyTable<u64, &'static [u8]>, StoreError> {
        self.db()?
            .begin_read()
            .map_err(|e| StoreError::db("read", e))?
            .open_table(LOG)
            .map_err(|e| StoreError::db("read", e))
    }
}

/// Submission side: held under one lock so seqs and tickets follow channel order.
#[derive(Debug)]
struct SubmitState {
    /// `None` once closed.
    tx: Option<mpsc::Sender<Batch>>,
    next_seq: Seq,
    next_ticket: u64,
}

/// Owner of the writer thread; dropping the last handle closes the store.
#[derive(Debug)]
struct Shared {
    common: Arc<Common>,
    /// The write path's state; locked before `submit` when both are needed.
    write: Arc<Mutex<Writer>>,
    submit: Mutex<SubmitState>,
    progress: watch::Receiver<Ticket>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        shutdown(&self.submit, &self.writer);
    }
}

/// Closes the channel and joins the writer; returns whether the writer exited cleanly.
fn shutdown(submit: &Mutex<SubmitState>, writer: &Mutex<Option<JoinHandle<()>>>) -> bool {
    lock(submit).tx = None;
    let handle = lock(writer).take();
    handle.is_none_or(|h| h.join().is_ok())
}

/// Locks a std mutex, ignoring poisoning: every critical section leaves its data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Handle to the durable store. Cheap to clone; all clones share one database and writer.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl Store {
    /// Opens (or creates) the store in `dir` and returns it with the state to restore.
    ///
    /// Errors: [`StoreError::InUse`] if another process holds the file,
    /// [`StoreError::Corrupted`] for a damaged or foreign file,
    /// [`StoreError::UnsupportedVersion`] for another format version, [`StoreError::Io`].
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<(Store, Recovered), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let cache_size = cfg.cache_size;
        let file = path.clone();
        let opener = Opener(Box::new(move || {
            Database::builder().set_cache_size(cache_size).create(&file)
        }));
        Self::start(dir, path, opener, cfg)
    }

    /// Opens the store on redb backends made by `backend` (fault injection in tests); the
    /// writer calls it again when it reopens the database.
    #[cfg(test)]
    pub(crate) fn open_with_backend<B: redb::StorageBackend>(
        dir: &Path,
        cfg: StoreConfig,
        backend: impl Fn() -> B + Send + Sync + 'static,
    ) -> Result<(Store, Recovered), StoreError> {
        let path = dir.join(FILE_NAME);
        let cache_size = cfg.cache_size;
        let opener = Opener(Box::new(move || {
            Database::builder()
                .set_cache_size(cache_size)
                .create_with_backend(backend())
        }));
        Self::start(dir, path, opener, cfg)
    }

    /// Opens the database, checks the format, recovers state and starts the writer.
    fn start(
        dir: &Path,
        path: PathBuf,
        opener: Opener,
        cfg: StoreConfig,
    ) -> Result<(Store, Recovered), StoreError> {
        let db = (opener.0)().map_err(|e| map_open_error(dir, &path, e))?;
        init_meta(&db, &path)?;
        let (generation, replayed) = writer::replay_journal(&db, dir)?;
        if replayed.files > 0 {
            info!(
                files = replayed.files,
                groups = replayed.groups,
                ops = replayed.ops,
                damaged = replayed.damaged,
                "journal replayed"
            );
        }
        let mut corrupt = replayed.damaged;
        let recovered = recover(&db, &path, cfg.recovery_queue_limit, &mut corrupt)?;
        let counters = Counters::default();
        read_meta_counters(&db, &counters)?;
        counters.errors.store(corrupt, Ordering::Relaxed);
        let common = Arc::new(Common {
            db: RwLock::new(Some(Arc::new(db))),
            opener,
            path,
            cfg: cfg.clone(),
            counters,
            failures: Mutex::new(VecDeque::new()),
            last_failed: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            waiters: Arc::default(),
        });
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let (progress_tx, progress) = watch::channel(Ticket(0));
        let write = Arc::new(Mutex::new(Writer::new(
            Arc::clone(&common),
            progress_tx,
            recovered.next_seq,
            generation,
        )?));
        let writer = WriterThread::new(Arc::clone(&write), rx)?;
        let handle = std::thread::Builder::new()
            .name("tern-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Io {
                path: common_path(dir),
                source,
            })?;
        let store = Store {
            shared: Arc::new(Shared {
                common,
                write,
                submit: Mutex::new(SubmitState {
                    tx: Some(tx),
                    next_seq: recovered.next_seq,
                    next_ticket: 1,
                }),
                progress,
                writer: Mutex::new(Some(handle)),
            }),
        };
        Ok((store, recovered))
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.shared.common.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.common.cfg
    }

    /// Submits `ops` as one unit, waiting for channel capacity (backpressure). Appends get
    /// their seqs now; the writes become visible and durable when the returned ticket
    /// resolves successfully ([`Store::wait_durable`]).
    ///
    /// Fails at once with [`StoreError::QuotaExceeded`] when `ops` appends and the budget is
    /// full under [`WhenFull::Refuse`], [`StoreError::Closed`] after [`Store::close`].
    pub async fn submit(&self, ops: Vec<WriteOp>) -> Result<Submitted, StoreError> {
        let prepared = match self.commit_inline(self.prepare(ops)?)? {
            Inline::Done(submitted) => return Ok(submitted),
            Inline::NotNow(prepared) => prepared,
        };
        let tx = lock(&self.shared.submit)
            .tx
            .clone()
            .ok_or(StoreError::Closed)?;
        let permit = tx.reserve_owned().await.map_err(|_| StoreError::Closed)?;
        let mut state = lock(&self.shared.submit);
        if state.tx.is_none() {
            return Err(StoreError::Closed);
        }
        let (batch, submitted) = assign(&mut state, prepared);
        permit.send(batch);
        Ok(submitted)
    }

    /// Like [`Store::submit`] but never waits: [`StoreError::Busy`] if the channel is full.
    pub fn try_submit(&self, ops: Vec<WriteOp>) -> Result<Submitted, StoreError> {
        let prepared = match self.commit_inline(self.prepare(ops)?)? {
            Inline::Done(submitted) => return Ok(submitted),
            Inline::NotNow(prepared) => prepared,
        };
        let mut state = lock(&self.shared.submit);
        let tx = state.tx.clone().ok_or(StoreError::Closed)?;
        let permit = tx.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(()) => StoreError::Closed,
        })?;
        let (batch, submitted) = assign(&mut state, prepared);
        permit.send(batch);
        Ok(submitted)
    }

    /// Commits `prepared` in this thread if the writer is idle (see [`writer`]); the
    /// ticket has then resolved. A busy writer (its lock taken, or tickets pending) hands
    /// the submission back for the channel, without waiting.
    fn commit_inline(&self, prepared: Prepared) -> Result<Inline, StoreError> {
        let mut write = match self.shared.write.try_lock() {
            Ok(write) => write,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(Inline::NotNow(prepared)),
        };
        write.commit_inline(&self.shared.submit, prepared)
    }

    /// Encodes ops outside the submission lock and applies the quota check.
    fn prepare(&self, ops: Vec<WriteOp>) -> Result<Prepared, StoreError> {
        let common = &self.shared.common;
        let mut appends = ops
            .iter()
            .filter(|op| matches!(op, WriteOp::Append(_) | WriteOp::AppendEncoded(_)));
        if appends.next().is_some() && common.cfg.when_full == WhenFull::Refuse {
            let used = common.counters.bytes.load(Ordering::Relaxed);
            let limit = common.cfg.max_bytes;
            if used >= limit {
                common.counters.refused.fetch_add(1, Ordering::Relaxed);
                // One line per episode, not one per refused publish.
                if !common.refusing.swap(true, Ordering::Relaxed) {
                    warn!(used, limit, "store full: refusing new messages");
                }
                return Err(StoreError::QuotaExceeded { used, limit });
            }
            if common.refusing.swap(false, Ordering::Relaxed) {
                info!(
                    used,
                    limit, "store below its budget again: accepting messages"
                );
            }
        }
        Prepared::encode(ops)
    }

    /// Watch of the highest *resolved* ticket: every ticket up to it has either committed or
    /// failed. Check [`Store::outcome`] for the tickets you wait on before acknowledging.
    pub fn committed(&self) -> watch::Receiver<Ticket> {
        self.shared.progress.clone()
    }

    /// A waiter for this task's tickets: unlike [`Store::committed`], it wakes the task only
    /// once the ticket it waits for has resolved.
    pub fn ticket_waiter(&self) -> TicketWaiter {
        TicketWaiter::new(Arc::clone(&self.shared.common.waiters))
    }

    /// Outcome of a resolved ticket: `Ok` if committed, [`StoreError::CommitFailed`] if its
    /// transaction failed. Meaningful only once `committed() >= ticket`.
    pub fn outcome(&self, ticket: Ticket) -> Result<(), StoreError> {
        let common = &self.shared.common;
        if ticket.0 > common.last_failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let failures = lock(&common.failures);
        match failures
            .iter()
            .find(|f| f.first <= ticket && ticket <= f.last)
        {
            Some(f) => Err(StoreError::CommitFailed {
                reason: Arc::clone(&f.reason),
            }),
            None => Ok(()),
        }
    }

    /// Waits until `ticket` has resolved and returns its outcome.
    pub async fn wait_durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        let mut rx = self.committed();
        if *rx.borrow_and_update() < ticket {
            rx.wait_for(|&done| done >= ticket)
                .await
                .map_err(|_| StoreError::Closed)?;
        }
        self.outcome(ticket)
    }

    /// The message at `seq`, or `None` if it was never committed, has been trimmed, or has
    /// expired. A record that cannot be decoded is an error (logged and counted).
    pub fn get(&self, seq: Seq) -> Result<Option<StoredMessage>, StoreError> {
        let common = &self.shared.common;
        let log = common.read_log()?;
        let Some(value) = log.get(seq).map_err(|e| StoreError::db("read", e))? else {
            return Ok(None);
        };
        let msg = decode_message(common, seq, value.value())?;
        Ok((!msg.is_expired(now_millis())).then_some(msg))
    }

    /// Looks up many seqs in one read transaction (e.g. a session's queue at restore):
    /// appends `(seq, message)` to `out` for each one present and not expired, in the order
    /// given. Undecodable records are skipped (logged and counted).
    pub fn get_many(
        &self,
        seqs: impl IntoIterator<Item = Seq>,
        out: &mut Vec<(Seq, StoredMessage)>,
    ) -> Result<(), StoreError> {
        let common = &self.shared.common;
        let now = now_millis();
        let log = common.read_log()?;
        for seq in seqs {
            let Some(value) = log.get(seq).map_err(|e| StoreError::db("read", e))? else {
                continue;
            };
            if let Ok(msg) = decode_message(common, seq, value.value())
                && !msg.is_expired(now)
            {
                out.push((seq, msg));
            }
        }
        Ok(())
    }

    /// Appends to `out` up to `max` entries of `client`'s queue with seq > `after` (all if
    /// `None`), in seq order: pages in a queue that [`Store::open`] truncated.
    pub fn read_queue(
        &self,
        client: &str,
        after: Option<Seq>,
        max: usize,
        out: &mut Vec<QueueEntry>,
    ) -> Result<(), StoreError> {
        let common = &self.shared.common;
        let from = match after {
            Some(seq) if seq == u64::MAX => return Ok(()),
            Some(seq) => seq + 1,
            None => 0,
        };
        let txn = common
            .db()?
            .begin_read()
            .map_err(|e| StoreError::db("read", e))?;
        let queue = txn
            .open_table(QUEUE)
            .map_err(|e| StoreError::db("read", e))?;
        let range = queue
            .range((client, from)..=(client, u64::MAX))
            .map_err(|e| StoreError::db("read", e))?;
        for entry in range.take(max) {
            let (k, v) = entry.map_err(|e| StoreError::db("read", e))?;
            let seq = k.value().1;
            match postcard::from_bytes::<DeliveryInfo>(v.value()) {
                Ok(delivery) => out.push(QueueEntry { seq, delivery }),
                Err(source) => {
                    common.counters.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(client, seq, cause = %source, "corrupted queue record skipped");
                }
            }
        }
        Ok(())
    }

    /// Reads the log records of queued positions for a session queue's window (see
    /// `session::queue`), in the order given, in one read transaction. Appends one
    /// [`QueuedRecord`] per position to `out` and stops after the record that brings the
    /// encoded bytes read plus `per_record` for each record to `max_bytes` (at least one record is
    /// read), at the end of `seqs`, or at a position whose record is not there yet.
    ///
    /// A missing record is [`QueuedRecord::Gone`] when it can no longer appear: below the
    /// log's head (trimmed), or when every submission made before the read has resolved
    /// (its commit failed), or when `settled` names this position and the ticket beside it
    /// has resolved. Otherwise its append may still be on its way to the writer (a queue
    /// receives a message before it commits), and the read stops there: the returned
    /// ticket is the last one submitted before the read, which covers that append; read
    /// again once it has resolved, passing it as `settled`.
    pub fn read_queued(
        &self,
        seqs: &[Seq],
        max_bytes: usize,
        per_record: usize,
        settled: Option<(Seq, Ticket)>,
        out: &mut Vec<QueuedRecord>,
    ) -> Result<Option<Ticket>, StoreError> {
        let common = &self.shared.common;
        // Order matters: a submission resolved before the read transaction begins is visible
        // in it.
        let last_submitted = Ticket(lock(&self.shared.submit).next_ticket.saturating_sub(1));
        let resolved = *self.shared.progress.borrow();
        let head = common.counters.head.load(Ordering::Acquire);
        let now = now_millis();
        let log = common.read_log()?;
        let mut bytes = 0usize;
        for &seq in seqs {
            if bytes >= max_bytes && !out.is_empty() {
                break;
            }
            let Some(value) = log.get(seq).map_err(|e| StoreError::db("read", e))? else {
                let settled_here =
                    settled.is_some_and(|(s, ticket)| s == seq && resolved >= ticket);
                if seq < head || resolved >= last_submitted || settled_here {
                    out.push(QueuedRecord::Gone);
                    continue;
                }
                return Ok(Some(last_submitted));
            };
            bytes = bytes.saturating_add(value.value().len() + per_record);
            out.push(match decode_message(common, seq, value.value()) {
                Ok(msg) if msg.is_expired(now) => QueuedRecord::Expired,
                Ok(msg) => QueuedRecord::Message(Box::new(msg)),
                // Logged and counted by `decode_message`.
                Err(_) => QueuedRecord::Gone,
            });
        }
        Ok(None)
    }

    /// Appends up to `max` messages with seq ≥ `from` to `out`, in seq order, skipping expired
    /// and undecodable ones (the latter logged and counted). Returns the seq to continue from
    /// (one past the last record examined; `from` if there was nothing).
    pub fn read_log(
        &self,
        from: Seq,
        max: usize,
        out: &mut Vec<(Seq, StoredMessage)>,
    ) -> Result<Seq, StoreError> {
        let common = &self.shared.common;
        let now = now_millis();
        let log = common.read_log()?;
        let mut next = from;
        let range = log.range(from..).map_err(|e| StoreError::db("read", e))?;
        for entry in range.take(max) {
            let (k, v) = entry.map_err(|e| StoreError::db("read", e))?;
            let seq = k.value();
            next = seq + 1;
            match decode_message(common, seq, v.value()) {
                Ok(msg) if !msg.is_expired(now) => out.push((seq, msg)),
                Ok(_) | Err(_) => {}
            }
        }
        Ok(next)
    }

    /// First seq in the log (== [`Store::tail`] when empty), as of the last commit.
    pub fn head(&self) -> Seq {
        self.shared.common.counters.head.load(Ordering::Acquire)
    }

    /// Seq the next append will receive.
    pub fn tail(&self) -> Seq {
        lock(&self.shared.submit).next_seq
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.common.counters;
        StoreStats {
            appends: c.appends.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            last_commit_batch: c.last_commit_batch.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            head: c.head.load(Ordering::Relaxed),
            next_seq: c.next_seq.load(Ordering::Relaxed),
            trimmed: c.trimmed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            dropped_unconsumed: c.dropped_unconsumed.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting submissions, commits everything already submitted and joins the
    /// writer. Blocking (it joins a thread): from async code call it in `spawn_blocking`, or
    /// first `wait_durable` on the last ticket. Later submissions fail with
    /// [`StoreError::Closed`]; dropping the last handle does the same.
    pub fn close(&self) -> Result<(), StoreError> {
        if shutdown(&self.shared.submit, &self.shared.writer) {
            Ok(())
        } else {
            Err(StoreError::Closed)
        }
    }
}

fn common_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Ops encoded outside the lock, waiting for seqs.
struct Prepared {
    ops: Vec<Op>,
    appends: usize,
    bytes: usize,
    immediate: bool,
}

impl Prepared {
    fn encode(ops: Vec<WriteOp>) -> Result<Self, StoreError> {
        let mut out = Vec::with_capacity(ops.len());
        let mut appends = 0;
        let mut bytes = 0;
        let mut immediate = false;
        for op in ops {
            let op = Op::encode(op)?;
            if matches!(op, Op::Append { .. }) {
                appends += 1;
            }
            bytes += op.size();
            immediate |= op.needs_immediate();
            out.push(op);
        }
        Ok(Self {
            ops: out,
            appends,
            bytes,
            immediate,
        })
    }
}

/// Assigns seqs and a ticket; called with the submission lock held, right before sending.
fn assign(state: &mut SubmitState, mut prepared: Prepared) -> (Batch, Submitted) {
    let mut seqs = Vec::with_capacity(prepared.appends);
    for op in &mut prepared.ops {
        if let Op::Append { seq, .. } = op {
            *seq = state.next_seq;
            seqs.push(state.next_seq);
            state.next_seq += 1;
        }
    }
    let ticket = Ticket(state.next_ticket);
    state.next_ticket += 1;
    let batch = Batch {
        ticket,
        ops: prepared.ops,
        appends: prepared.appends,
        bytes: prepared.bytes,
        immediate: prepared.immediate,
    };
    (batch, Submitted { ticket, seqs })
}

/// Decodes a log record; failure is logged and counted.
fn decode_message(common: &Common, seq: Seq, bytes: &[u8]) -> Result<StoredMessage, StoreError> {
    StoredMessage::decode(bytes).map_err(|source| {
        common.counters.errors.fetch_add(1, Ordering::Relaxed);
        warn!(seq, cause = %source, "corrupted log record skipped");
        StoreError::CorruptRecord {
            table: "log",
            key: seq.to_string(),
            source,
        }
    })
}

fn map_open_error(dir: &Path, path: &Path, err: redb::DatabaseError) -> StoreError {
    use redb::{DatabaseError, StorageError};
    match err {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::InUse {
                dir: dir.to_path_buf(),
            }
        }
        DatabaseError::Storage(StorageError::Io(source))
            if source.kind() != std::io::ErrorKind::InvalidData =>
        {
            StoreError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
        other => StoreError::Corrupted {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Creates the tables of a new store, or checks the format version of an existing one.
fn init_meta(db: &Database, path: &Path) -> Result<(), StoreError> {
    let corrupted = |e: redb::Error| StoreError::Corrupted {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let txn = db.begin_write().map_err(|e| corrupted(e.into()))?;
    {
        let existing: Vec<String> = txn
            .list_tables()
            .map_err(|e| corrupted(e.into()))?
            .map(|t| t.name().to_string())
            .collect();
        let foreign = existing.iter().find(|t| !ALL_TABLES.contains(&t.as_str()));
        if let Some(table) = foreign {
            return Err(StoreError::Corrupted {
                path: path.to_path_buf(),
                reason: format!("not a Tern store (unknown table {table:?})"),
            });
        }
        let mut meta = txn.open_table(META).map_err(|e| corrupted(e.into()))?;
        let version = meta
            .get(KEY_FORMAT_VERSION)
            .map_err(|e| corrupted(e.into()))?
            .map(|v| v.value());
        match version {
            Some(FORMAT_VERSION) => {}
            Some(3) => {
                // Format 4 only added the transaction tables, created below.
                meta.insert(KEY_FORMAT_VERSION, FORMAT_VERSION)
                    .map_err(|e| corrupted(e.into()))?;
                info!(path = %path.display(), "store upgraded from format 3 to 4");
            }
            Some(2) => {
                // Format 3 appended `bridge` to the message record. Log and retained
                // records are read as they are (`StoredMessage::decode`); only the wills,
                // which embed a message mid-record, are rewritten.
                upgrade_wills_from_format2(&txn).map_err(corrupted)?;
                meta.insert(KEY_FORMAT_VERSION, FORMAT_VERSION)
                    .map_err(|e| corrupted(e.into()))?;
                info!(path = %path.display(), "store upgraded from format 2 to 4");
            }
            Some(found) => {
                return Err(StoreError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            None if existing.iter().any(|t| t != "meta") => {
                return Err(StoreError::Corrupted {
                    path: path.to_path_buf(),
                    reason: "tables present but no format version".into(),
                });
            }
            None => {
                meta.insert(KEY_FORMAT_VERSION, FORMAT_VERSION)
                    .map_err(|e| corrupted(e.into()))?;
                for key in [KEY_NEXT_SEQ, KEY_HEAD, KEY_LOG_BYTES, KEY_LOG_COUNT] {
                    meta.insert(key, 0).map_err(|e| corrupted(e.into()))?;
                }
            }
        }
        drop(meta);
        txn.open_table(LOG).map_err(|e| corrupted(e.into()))?;
        txn.open_table(SESSIONS).map_err(|e| corrupted(e.into()))?;
        txn.open_table(QUEUE).map_err(|e| corrupted(e.into()))?;
        txn.open_table(INFLIGHT_OUT)
            .map_err(|e| corrupted(e.into()))?;
        txn.open_table(INFLIGHT_IN)
            .map_err(|e| corrupted(e.into()))?;
        txn.open_table(tables::NEEDED)
            .map_err(|e| corrupted(e.into()))?;
        txn.open_table(RETAINED).map_err(|e| corrupted(e.into()))?;
        txn.open_table(CURSORS).map_err(|e| corrupted(e.into()))?;
        txn.open_table(WILLS).map_err(|e| corrupted(e.into()))?;
        txn.open_table(tables::TX_OPEN)
            .map_err(|e| corrupted(e.into()))?;
        txn.open_table(tables::TX_HALF)
            .map_err(|e| corrupted(e.into()))?;
    }
    txn.commit().map_err(|e| corrupted(e.into()))
}

/// Rewrites every will record of a format-2 store in the format-3 layout.
fn upgrade_wills_from_format2(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    let mut wills = txn.open_table(WILLS)?;
    let mut upgraded = Vec::new();
    for entry in wills.iter()? {
        let (k, v) = entry?;
        match postcard::from_bytes::<record::format2::WillRecord>(v.value()) {
            Ok(old) => {
                let new = WillRecord::from(old);
                match postcard::to_stdvec(&new) {
                    Ok(bytes) => upgraded.push((k.value().to_string(), bytes)),
                    Err(cause) => warn!(client = k.value(), %cause, "will not upgraded"),
                }
            }
            // Left as it is: loading skips it as corrupt (logged and counted).
            Err(cause) => warn!(client = k.value(), %cause, "undecodable format-2 will"),
        }
    }
    for (key, bytes) in upgraded {
        wills.insert(key.as_str(), bytes.as_slice())?;
    }
    Ok(())
}

/// Loads the meta counters into `counters` (no log scan).
fn read_meta_counters(db: &Database, counters: &Counters) -> Result<(), StoreError> {
    let txn = db.begin_read().map_err(|e| StoreError::db("open", e))?;
    let meta = txn
        .open_table(META)
        .map_err(|e| StoreError::db("open", e))?;
    let get = |key: &str| -> Result<u64, StoreError> {
        Ok(meta
            .get(key)
            .map_err(|e| StoreError::db("open", e))?
            .map_or(0, |v| v.value()))
    };
    counters
        .next_seq
        .store(get(KEY_NEXT_SEQ)?, Ordering::Relaxed);
    counters.head.store(get(KEY_HEAD)?, Ordering::Relaxed);
    counters.bytes.store(get(KEY_LOG_BYTES)?, Ordering::Relaxed);
    counters
        .records
        .store(get(KEY_LOG_COUNT)?, Ordering::Relaxed);
    Ok(())
}

/// Reads sessions, queues, in-flight state, retained messages and cursors.
fn recover(
    db: &Database,
    path: &Path,
    queue_limit: usize,
    corrupt: &mut u64,
) -> Result<Recovered, StoreError> {
    let err = |e: redb::Error| StoreError::Db {
        op: "recover",
        source: e,
    };
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let mut out = Recovered::default();

    let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
    let meta_get = |key: &str| -> Result<u64, StoreError> {
        Ok(meta
            .get(key)
            .map_err(|e| err(e.into()))?
            .map_or(0, |v| v.value()))
    };
    out.next_seq = meta_get(KEY_NEXT_SEQ)?;
    out.head = meta_get(KEY_HEAD)?;

    let mut skip = |table: &'static str, key: String, source: postcard::Error| {
        *corrupt += 1;
        warn!(table, key, cause = %source, path = %path.display(), "corrupted record skipped");
    };

    let sessions = txn.open_table(SESSIONS).map_err(|e| err(e.into()))?;
    for entry in sessions.iter().map_err(|e| err(e.into()))? {
        let (k, v) = entry.map_err(|e| err(e.into()))?;
        match postcard::from_bytes::<SessionRecord>(v.value()) {
            Ok(record) => {
                out.sessions.insert(
                    k.value().to_string(),
                    RecoveredSession {
                        record,
                        queue: Vec::new(),
                        queue_truncated: false,
                        inflight_out: BTreeMap::new(),
                        inflight_in: Vec::new(),
                    },
                );
            }
            Err(e) => skip("sessions", k.value().to_string(), e),
        }
    }

    let queue = txn.open_table(QUEUE).map_err(|e| err(e.into()))?;
    for (client, session) in &mut out.sessions {
        let c = client.as_str();
        let range = queue
            .range((c, 0)..=(c, u64::MAX))
            .map_err(|e| err(e.into()))?;
        for entry in range {
            let (k, v) = entry.map_err(|e| err(e.into()))?;
            let seq = k.value().1;
            if session.queue.len() >= queue_limit {
                session.queue_truncated = true;
                break;
            }
            match postcard::from_bytes::<DeliveryInfo>(v.value()) {
                Ok(delivery) => session.queue.push(QueueEntry { seq, delivery }),
                Err(e) => skip("queue", format!("{client}/{seq}"), e),
            }
        }
    }

    let inflight_out = txn.open_table(INFLIGHT_OUT).map_err(|e| err(e.into()))?;
    for entry in inflight_out.iter().map_err(|e| err(e.into()))? {
        let (k, v) = entry.map_err(|e| err(e.into()))?;
        let (client, pid) = k.value();
        let Some(session) = out.sessions.get_mut(client) else {
            continue;
        };
        match postcard::from_bytes::<InflightOut>(v.value()) {
            Ok(f) => {
                session.inflight_out.insert(pid, f);
            }
            Err(e) => skip("inflight_out", format!("{client}/{pid}"), e),
        }
    }

    let inflight_in = txn.open_table(INFLIGHT_IN).map_err(|e| err(e.into()))?;
    for entry in inflight_in.iter().map_err(|e| err(e.into()))? {
        let (k, _) = entry.map_err(|e| err(e.into()))?;
        let (client, pid) = k.value();
        if let Some(session) = out.sessions.get_mut(client) {
            session.inflight_in.push(pid);
        }
    }

    let now = now_millis();
    let retained = txn.open_table(RETAINED).map_err(|e| err(e.into()))?;
    for entry in retained.iter().map_err(|e| err(e.into()))? {
        let (k, v) = entry.map_err(|e| err(e.into()))?;
        match StoredMessage::decode(v.value()) {
            Ok(m) if m.is_expired(now) => {}
            Ok(m) => {
                out.retained.insert(k.value().to_string(), m);
            }
            Err(e) => skip("retained", k.value().to_string(), e),
        }
    }

    let cursors = txn.open_table(CURSORS).map_err(|e| err(e.into()))?;
    for entry in cursors.iter().map_err(|e| err(e.into()))? {
        let (k, v) = entry.map_err(|e| err(e.into()))?;
        out.cursors.insert(k.value().to_string(), v.value());
    }

    let wills = txn.open_table(WILLS).map_err(|e| err(e.into()))?;
    for entry in wills.iter().map_err(|e| err(e.into()))? {
        let (k, v) = entry.map_err(|e| err(e.into()))?;
        match postcard::from_bytes::<WillRecord>(v.value()) {
            Ok(w) => {
                out.wills.insert(k.value().to_string(), w);
            }
            Err(e) => skip("wills", k.value().to_string(), e),
        }
    }
    out.corrupt_records = *corrupt;
    Ok(out)
}

#[cfg(test)]
mod tests;
