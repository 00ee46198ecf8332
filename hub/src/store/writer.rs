//! The writer thread: group commit, meta counters and retention.
//!
//! Owns every write transaction of the store. It receives [`Batch`]es (one per submission,
//! in ticket order), gathers as many as are waiting into one transaction, commits, updates
//! the shared counters and publishes the last resolved ticket. Invariants it keeps:
//!
//! - the `meta` counters (`next_seq`, `head`, `log_bytes`, `log_count`) describe the log
//!   exactly, because they are written in the same transaction that changes it;
//! - a ticket is published only after its outcome is final: success is visible to readers,
//!   failure is recorded in [`Common::failures`] before the watch moves;
//! - the `needed` table counts, per seq, the queue and outbound in-flight entries naming it;
//! - under [`FsyncPolicy::Interval`] every non-durable commit is preceded by its journal
//!   frame, and every durable commit is a checkpoint: it records the next journal generation
//!   in `meta` and starts that file, so at open exactly the frames redb may have lost are
//!   replayed (see [`super::journal`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redb::{Durability, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::journal::{self, Generation, JournalFile, SyncTarget, Syncer};
use super::record::{DeliveryInfo, now_millis};
use super::tables::{
    CURSORS, INFLIGHT_IN, INFLIGHT_OUT, KEY_HEAD, KEY_JOURNAL_GEN, KEY_LOG_BYTES, KEY_LOG_COUNT,
    KEY_NEXT_SEQ, LOG, META, NEEDED, QUEUE, RETAINED, SESSIONS, WILLS,
};
use super::tx::TxTables;
use super::{
    Common, FAILED_RANGES_KEPT, FailedRange, FsyncPolicy, Seq, StoreError, Ticket, WhenFull,
    WriteOp, lock,
};

/// One encoded write, as the writer applies it (and as the journal stores it).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Op {
    Append {
        seq: Seq,
        qos0: bool,
        record: Vec<u8>,
    },
    SessionUpsert {
        client: String,
        record: Vec<u8>,
    },
    SessionDelete {
        client: String,
    },
    QueuePush {
        client: String,
        seq: Seq,
        qos0: bool,
        record: Vec<u8>,
    },
    QueueRemove {
        client: String,
        seq: Seq,
    },
    InflightOutSet {
        client: String,
        packet_id: u16,
        seq: Seq,
        record: Vec<u8>,
    },
    InflightOutRemove {
        client: String,
        packet_id: u16,
    },
    InflightInAdd {
        client: String,
        packet_id: u16,
    },
    InflightInRemove {
        client: String,
        packet_id: u16,
    },
    RetainedSet {
        topic: String,
        record: Vec<u8>,
    },
    RetainedClear {
        topic: String,
    },
    CursorSet {
        name: String,
        seq: Seq,
    },
    CursorDelete {
        name: String,
    },
    WillSet {
        client: String,
        record: Vec<u8>,
    },
    WillDelete {
        client: String,
        token: Option<u64>,
    },
    TxHalf {
        client: String,
        tx: String,
        index: u32,
        message: Vec<u8>,
        record: Vec<u8>,
    },
    TxChecked {
        client: String,
        tx: String,
        record: Vec<u8>,
    },
    TxEnd {
        client: String,
        tx: String,
    },
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|source| StoreError::Encode { what, source })
}

impl Op {
    /// Encodes a public op (seqs of appends are filled in later, under the submit lock).
    pub(super) fn encode(op: WriteOp) -> Result<Self, StoreError> {
        Ok(match op {
            WriteOp::Append(msg) => Op::Append {
                seq: 0,
                qos0: msg.qos == tern_mqtt::QoS::AtMostOnce,
                record: encode("message", &msg)?,
            },
            WriteOp::SessionUpsert(record) => Op::SessionUpsert {
                record: encode("session", &record)?,
                client: record.client_id,
            },
            WriteOp::SessionDelete { client } => Op::SessionDelete { client },
            WriteOp::QueuePush {
                client,
                seq,
                delivery,
            } => Op::QueuePush {
                client,
                seq,
                qos0: delivery.qos == tern_mqtt::QoS::AtMostOnce,
                record: encode::<DeliveryInfo>("queue entry", &delivery)?,
            },
            WriteOp::QueueRemove { client, seq } => Op::QueueRemove { client, seq },
            WriteOp::InflightOutSet {
                client,
                packet_id,
                entry,
            } => Op::InflightOutSet {
                client,
                packet_id,
                seq: entry.seq,
                record: encode("in-flight entry", &entry)?,
            },
            WriteOp::InflightOutRemove { client, packet_id } => {
                Op::InflightOutRemove { client, packet_id }
            }
            WriteOp::InflightInAdd { client, packet_id } => Op::InflightInAdd { client, packet_id },
            WriteOp::InflightInRemove { client, packet_id } => {
                Op::InflightInRemove { client, packet_id }
            }
            WriteOp::RetainedSet { topic, message } => Op::RetainedSet {
                topic,
                record: encode("retained message", &message)?,
            },
            WriteOp::RetainedClear { topic } => Op::RetainedClear { topic },
            WriteOp::CursorSet { name, seq } => Op::CursorSet { name, seq },
            WriteOp::CursorDelete { name } => Op::CursorDelete { name },
            WriteOp::WillSet { client, will } => Op::WillSet {
                client,
                record: encode("will", &will)?,
            },
            WriteOp::WillDelete { client, token } => Op::WillDelete { client, token },
            WriteOp::TxHalf {
                client,
                tx,
                index,
                message,
                record,
            } => Op::TxHalf {
                client,
                tx,
                index,
                message: encode("half message", &message)?,
                record: encode("transaction record", &record)?,
            },
            WriteOp::TxChecked { client, tx, record } => Op::TxChecked {
                client,
                tx,
                record: encode("transaction record", &record)?,
            },
            WriteOp::TxEnd { client, tx } => Op::TxEnd { client, tx },
        })
    }

    /// Bytes the op adds to a group (for the group byte bound).
    pub(super) fn size(&self) -> usize {
        match self {
            Op::Append { record, .. }
            | Op::SessionUpsert { record, .. }
            | Op::QueuePush { record, .. }
            | Op::InflightOutSet { record, .. }
            | Op::RetainedSet { record, .. }
            | Op::WillSet { record, .. } => record.len() + 16,
            Op::TxHalf {
                message, record, ..
            } => message.len() + record.len() + 16,
            _ => 16,
        }
    }

    /// Whether a client may be told this op is durable: all but QoS 0 data.
    pub(super) fn needs_immediate(&self) -> bool {
        !matches!(
            self,
            Op::Append { qos0: true, .. } | Op::QueuePush { qos0: true, .. }
        )
    }
}

/// One submission on its way to the writer.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) ticket: Ticket,
    pub(super) ops: Vec<Op>,
    pub(super) appends: usize,
    pub(super) bytes: usize,
    pub(super) immediate: bool,
}

/// The log's meta counters, as committed.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    next_seq: Seq,
    head: Seq,
    bytes: u64,
    count: u64,
}

/// What retention did in one transaction.
#[derive(Debug, Clone, Copy, Default)]
struct Trimmed {
    trimmed: u64,
    dropped_unconsumed: u64,
    corrupt: u64,
}

/// Result of a successful transaction.
struct Committed {
    meta: Meta,
    appends: u64,
    trimmed: Trimmed,
    /// Nothing was written (the transaction was aborted).
    empty: bool,
}

/// Every table, opened once per transaction.
struct Tables<'txn> {
    meta: Table<'txn, &'static str, u64>,
    log: Table<'txn, u64, &'static [u8]>,
    sessions: Table<'txn, &'static str, &'static [u8]>,
    queue: Table<'txn, (&'static str, u64), &'static [u8]>,
    inflight_out: Table<'txn, (&'static str, u16), &'static [u8]>,
    inflight_in: Table<'txn, (&'static str, u16), ()>,
    needed: Table<'txn, u64, u64>,
    retained: Table<'txn, &'static str, &'static [u8]>,
    cursors: Table<'txn, &'static str, u64>,
    wills: Table<'txn, &'static str, &'static [u8]>,
    tx: TxTables<'txn>,
}

type DbResult<T> = Result<T, redb::Error>;

/// Upper bound on `group_commit_linger`: waiting longer only delays acknowledgements.
const MAX_LINGER: Duration = Duration::from_secs(1);

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> DbResult<Self> {
        Ok(Self {
            meta: txn.open_table(META)?,
            log: txn.open_table(LOG)?,
            sessions: txn.open_table(SESSIONS)?,
            queue: txn.open_table(QUEUE)?,
            inflight_out: txn.open_table(INFLIGHT_OUT)?,
            inflight_in: txn.open_table(INFLIGHT_IN)?,
            needed: txn.open_table(NEEDED)?,
            retained: txn.open_table(RETAINED)?,
            cursors: txn.open_table(CURSORS)?,
            wills: txn.open_table(WILLS)?,
            tx: TxTables::open(txn)?,
        })
    }

    fn needed_inc(&mut self, seq: Seq) -> DbResult<()> {
        let n = self.needed.get(seq)?.map_or(0, |v| v.value());
        self.needed.insert(seq, n + 1)?;
        Ok(())
    }

    fn needed_dec(&mut self, seq: Seq) -> DbResult<()> {
        let n = self.needed.get(seq)?.map_or(0, |v| v.value());
        if n <= 1 {
            self.needed.remove(seq)?;
        } else {
            self.needed.insert(seq, n - 1)?;
        }
        Ok(())
    }

    /// Lowest seq still needed by a session or a consumer (`u64::MAX` if none).
    fn lowest_needed(&self) -> DbResult<Seq> {
        let mut low = self.needed.first()?.map_or(u64::MAX, |(k, _)| k.value());
        for entry in self.cursors.iter()? {
            let (_, v) = entry?;
            low = low.min(v.value());
        }
        Ok(low)
    }
}

/// The seq named by an encoded [`InflightOut`](super::InflightOut) (its first field).
fn inflight_seq(record: &[u8]) -> Option<Seq> {
    postcard::take_from_bytes::<u64>(record)
        .ok()
        .map(|(s, _)| s)
}

/// The token of an encoded [`WillRecord`](super::WillRecord) (its first field).
fn will_token(record: &[u8]) -> Option<u64> {
    postcard::take_from_bytes::<u64>(record)
        .ok()
        .map(|(t, _)| t)
}

/// The receive time of an encoded [`StoredMessage`](super::StoredMessage) (its first field).
fn received_ms(record: &[u8]) -> Option<u64> {
    postcard::take_from_bytes::<u64>(record)
        .ok()
        .map(|(s, _)| s)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The writer thread's state.
pub(super) struct Writer {
    common: Arc<Common>,
    rx: mpsc::Receiver<Batch>,
    progress: watch::Sender<Ticket>,
    /// Single-threaded runtime used only to wait on the channel with a timeout.
    rt: tokio::runtime::Runtime,
    /// Counters as last committed.
    meta: Meta,
    /// One past the highest seq seen in any submission, committed or not: seqs are never
    /// reused, so this is what `next_seq` must say after the next commit.
    seen_next_seq: Seq,
    /// Set when the log reaches `max_bytes`, cleared below 90 % (hysteresis).
    over_budget: bool,
    /// Set when a transaction failed: redb latches I/O failures, so the next transaction
    /// first reopens the database.
    needs_reopen: bool,
    /// A non-durable commit (QoS 0 only) has not yet been followed by an immediate one.
    unsynced: bool,
    /// The last retention step deleted a full `trim_batch`: there is probably more to delete.
    more_to_trim: bool,
    /// The write-ahead journal, under [`FsyncPolicy::Interval`].
    journal: Option<Journal>,
}

/// The writer's journal state (see [`super::journal`]).
struct Journal {
    dir: std::path::PathBuf,
    /// The file non-durable commits append to.
    file: JournalFile,
    /// What the fsync thread flushes.
    target: SyncTarget,
    /// Stops the fsync thread when the writer ends.
    _syncer: Syncer,
    /// When the last checkpoint committed.
    last_checkpoint: Instant,
}

impl Writer {
    pub(super) fn new(
        common: Arc<Common>,
        rx: mpsc::Receiver<Batch>,
        progress: watch::Sender<Ticket>,
        next_seq: Seq,
        generation: Generation,
    ) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|source| StoreError::Io {
                path: common.path.clone(),
                source,
            })?;
        let c = &common.counters;
        let meta = Meta {
            next_seq,
            head: c.head.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            count: c.records.load(Ordering::Relaxed),
        };
        let journal = match common.cfg.fsync {
            FsyncPolicy::EveryCommit => None,
            FsyncPolicy::Interval(interval) => {
                let dir = common.path.parent().map_or_else(
                    || std::path::PathBuf::from("."),
                    std::path::Path::to_path_buf,
                );
                let file = JournalFile::create(&dir, generation)?;
                let target: SyncTarget = Arc::new(std::sync::Mutex::new(Some(file.file())));
                let syncer = Syncer::spawn(Arc::clone(&target), interval).map_err(|source| {
                    StoreError::Io {
                        path: dir.clone(),
                        source,
                    }
                })?;
                Some(Journal {
                    dir,
                    file,
                    target,
                    _syncer: syncer,
                    last_checkpoint: Instant::now(),
                })
            }
        };
        Ok(Self {
            common,
            rx,
            progress,
            rt,
            meta,
            seen_next_seq: next_seq,
            over_budget: false,
            needs_reopen: false,
            unsynced: false,
            more_to_trim: false,
            journal,
        })
    }

    /// Runs until every handle is gone (or `close`), committing what was submitted.
    pub(super) fn run(mut self) {
        let interval = self
            .common
            .cfg
            .maintenance_interval
            .max(Duration::from_millis(10));
        loop {
            // With a retention backlog, keep trimming whenever no submission is waiting.
            let wait = if self.more_to_trim {
                Duration::ZERO
            } else {
                interval
            };
            let rx = &mut self.rx;
            let first = self
                .rt
                .block_on(async move { tokio::time::timeout(wait, rx.recv()).await });
            match first {
                Err(_elapsed) => self.maintain(),
                Ok(None) => break,
                Ok(Some(batch)) => {
                    let group = self.gather(batch);
                    self.commit_group(group);
                }
            }
        }
        self.sync();
    }

    /// Makes earlier non-durable commits (QoS 0 only, or everything under a journal) durable
    /// with an empty immediate commit — a journal checkpoint.
    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        if self.needs_reopen && self.reopen().is_err() {
            return;
        }
        let result = self.common.db().and_then(|db| {
            let mut txn = db.begin_write().map_err(|e| StoreError::db("sync", e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| StoreError::db("sync", e))?;
            let next = self.start_checkpoint(&txn)?;
            match txn.commit() {
                Ok(()) => {
                    self.finish_checkpoint(next);
                    Ok(())
                }
                Err(e) => {
                    discard(next);
                    Err(StoreError::db("sync", e))
                }
            }
        });
        match result {
            Ok(()) => self.unsynced = false,
            Err(err) => {
                self.common.counters.errors.fetch_add(1, Ordering::Relaxed);
                self.needs_reopen = true;
                error!(cause = %err, "store sync failed; QoS 0 data of the last commits may be lost");
            }
        }
    }

    /// For a durable commit under a journal: records the next generation in `meta` (in
    /// `txn`) and creates its file. Without a journal, nothing.
    fn start_checkpoint(&self, txn: &WriteTransaction) -> Result<Option<JournalFile>, StoreError> {
        let Some(j) = &self.journal else {
            return Ok(None);
        };
        let next = Generation(j.file.generation().0 + 1);
        let mut meta = txn
            .open_table(META)
            .map_err(|e| StoreError::db("checkpoint", e))?;
        meta.insert(KEY_JOURNAL_GEN, next.0)
            .map_err(|e| StoreError::db("checkpoint", e))?;
        JournalFile::create(&j.dir, next).map(Some)
    }

    /// After a checkpoint committed: appends go to the new file, older files are deleted.
    fn finish_checkpoint(&mut self, next: Option<JournalFile>) {
        let (Some(j), Some(next)) = (self.journal.as_mut(), next) else {
            return;
        };
        let keep_from = next.generation();
        *lock(&j.target) = Some(next.file());
        j.file = next;
        j.last_checkpoint = Instant::now();
        journal::delete_below(&j.dir, keep_from);
    }

    /// Whether the journal is due a checkpoint (by age or size).
    fn checkpoint_due(&self) -> bool {
        let cfg = &self.common.cfg;
        self.journal.as_ref().is_some_and(|j| {
            self.unsynced
                && (j.last_checkpoint.elapsed() >= cfg.checkpoint_interval
                    || j.file.len() >= cfg.checkpoint_bytes)
        })
    }

    /// Collects the submissions already waiting (and those arriving within the linger).
    fn gather(&mut self, first: Batch) -> Vec<Batch> {
        let cfg = &self.common.cfg;
        let linger = cfg.group_commit_linger.min(MAX_LINGER);
        let deadline = Instant::now() + linger;
        let mut messages = first.appends;
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while messages < cfg.group_commit_max_messages && bytes < cfg.group_commit_max_bytes {
            let next = match self.rx.try_recv() {
                Ok(b) => b,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let rx = &mut self.rx;
                    let wait = async move {
                        tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), rx.recv())
                            .await
                    };
                    match self.rt.block_on(wait) {
                        Ok(Some(b)) => b,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            messages += next.appends;
            bytes += next.bytes;
            group.push(next);
        }
        group
    }

    /// Commits a group; on failure retries its submissions one by one.
    fn commit_group(&mut self, group: Vec<Batch>) {
        for b in &group {
            for op in &b.ops {
                if let Op::Append { seq, .. } = op {
                    self.seen_next_seq = self.seen_next_seq.max(seq + 1);
                }
            }
        }
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return;
        };
        let (first, last) = (first.ticket, last.ticket);
        match self.transact(&group, false) {
            Ok(done) => self.finish(done),
            Err(err) if group.len() > 1 => {
                warn!(cause = %err, submissions = group.len(), "group commit failed, retrying submissions one by one");
                // Two failures in a row mean the store itself is failing (disk full), not one
                // submission: the rest fail at once instead of each paying for a reopen.
                let mut failed_in_a_row = 0;
                for (i, b) in group.iter().enumerate() {
                    match self.transact(std::slice::from_ref(b), false) {
                        Ok(done) => {
                            failed_in_a_row = 0;
                            self.finish(done);
                        }
                        Err(err) => {
                            failed_in_a_row += 1;
                            if failed_in_a_row >= 2 {
                                self.fail(b.ticket, last, &err);
                                break;
                            }
                            self.fail(b.ticket, b.ticket, &err);
                        }
                    }
                    if i + 1 < group.len() {
                        self.progress.send_replace(b.ticket);
                    }
                }
            }
            Err(err) => self.fail(first, last, &err),
        }
        self.progress.send_replace(last);
        if self.checkpoint_due() {
            self.sync();
        }
    }

    /// Records a failed ticket range (before the watch moves past it).
    fn fail(&self, first: Ticket, last: Ticket, err: &StoreError) {
        error!(cause = %err, first = first.0, last = last.0, "store commit failed; submissions refused");
        self.common.counters.errors.fetch_add(1, Ordering::Relaxed);
        let mut failures = lock(&self.common.failures);
        if failures.len() >= FAILED_RANGES_KEPT {
            failures.pop_front();
        }
        failures.push_back(FailedRange {
            first,
            last,
            reason: err.to_string().into(),
        });
        self.common.last_failed.fetch_max(last.0, Ordering::AcqRel);
    }

    /// Publishes the counters of a committed transaction.
    fn finish(&mut self, done: Committed) {
        self.more_to_trim = done.trimmed.trimmed
            >= u64::try_from(self.common.cfg.trim_batch.max(1)).unwrap_or(u64::MAX);
        if done.empty {
            return;
        }
        self.meta = done.meta;
        let c = &self.common.counters;
        c.appends.fetch_add(done.appends, Ordering::Relaxed);
        c.commits.fetch_add(1, Ordering::Relaxed);
        c.last_commit_batch.store(done.appends, Ordering::Relaxed);
        c.bytes.store(done.meta.bytes, Ordering::Relaxed);
        c.records.store(done.meta.count, Ordering::Relaxed);
        c.head.store(done.meta.head, Ordering::Release);
        c.next_seq.store(done.meta.next_seq, Ordering::Relaxed);
        c.trimmed.fetch_add(done.trimmed.trimmed, Ordering::Relaxed);
        c.dropped_unconsumed
            .fetch_add(done.trimmed.dropped_unconsumed, Ordering::Relaxed);
        c.errors.fetch_add(done.trimmed.corrupt, Ordering::Relaxed);
        if done.trimmed.dropped_unconsumed > 0 {
            warn!(
                dropped = done.trimmed.dropped_unconsumed,
                head = done.meta.head,
                "retention deleted messages not yet consumed"
            );
        }
    }

    /// Idle work: makes QoS 0 commits durable, trims if the budget or the age limit calls
    /// for it.
    fn maintain(&mut self) {
        // Set again by `finish` if this step deletes a full batch.
        self.more_to_trim = false;
        if self.needs_reopen
            && let Err(err) = self.reopen()
        {
            error!(cause = %err, "store reopen after a failed transaction failed; retrying");
            return;
        }
        self.sync();
        if self.meta.count == 0 {
            return;
        }
        let cfg = &self.common.cfg;
        let mut due = self.meta.bytes >= cfg.max_bytes || self.over_budget;
        if !due {
            due = self
                .head_received()
                .is_some_and(|r| r < now_millis().saturating_sub(millis(cfg.max_age)));
        }
        if !due {
            return;
        }
        match self.transact(&[], true) {
            Ok(done) => self.finish(done),
            Err(err) => {
                self.common.counters.errors.fetch_add(1, Ordering::Relaxed);
                error!(cause = %err, "store retention transaction failed");
            }
        }
    }

    /// Receive time of the first log record (read transaction).
    fn head_received(&self) -> Option<u64> {
        let txn = self.common.db().ok()?.begin_read().ok()?;
        let log = txn.open_table(LOG).ok()?;
        let (_, v) = log.first().ok()??;
        received_ms(v.value())
    }

    /// Closes and reopens the database after a failed transaction and reloads the meta
    /// counters (the failed transaction left nothing behind).
    fn reopen(&mut self) -> Result<(), StoreError> {
        let common = Arc::clone(&self.common);
        let mut slot = common
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mut db) = slot.take() {
            // Readers hold a clone only for one read; wait for them so the file lock is free.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        db = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(shared) => {
                        *slot = Some(shared);
                        return Err(StoreError::Unavailable);
                    }
                }
            }
        }
        let db = (common.opener.0)().map_err(|e| StoreError::db("reopen", e))?;
        let counters = super::Counters::default();
        super::read_meta_counters(&db, &counters)?;
        self.meta = Meta {
            next_seq: counters.next_seq.load(Ordering::Relaxed),
            head: counters.head.load(Ordering::Relaxed),
            bytes: counters.bytes.load(Ordering::Relaxed),
            count: counters.records.load(Ordering::Relaxed),
        };
        *slot = Some(Arc::new(db));
        self.needs_reopen = false;
        warn!(path = %common.path.display(), "store reopened after a failed transaction");
        Ok(())
    }

    /// Applies `batches` plus one retention step in one transaction and commits it; a failure
    /// marks the database for reopening.
    fn transact(&mut self, batches: &[Batch], maintenance: bool) -> Result<Committed, StoreError> {
        let result = self.try_transact(batches, maintenance);
        if matches!(result, Err(StoreError::Db { .. })) {
            self.needs_reopen = true;
        }
        result
    }

    fn try_transact(
        &mut self,
        batches: &[Batch],
        maintenance: bool,
    ) -> Result<Committed, StoreError> {
        // Under a journal, durability comes from the journal frame; only maintenance (and
        // `sync`) commit immediately, as checkpoints.
        let immediate =
            maintenance || (self.journal.is_none() && batches.iter().any(|b| b.immediate));
        if self.needs_reopen {
            self.reopen()?;
        }
        let db = self.common.db()?;
        let mut txn = db.begin_write().map_err(|e| StoreError::db("begin", e))?;
        txn.set_durability(if immediate {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(|e| StoreError::db("begin", e))?;
        let mut meta = self.meta;
        meta.next_seq = meta.next_seq.max(self.seen_next_seq);
        let mut appends = 0;
        let trimmed;
        {
            let mut t = Tables::open(&txn).map_err(|e| StoreError::db("open tables", e))?;
            for b in batches {
                for op in &b.ops {
                    apply(&mut t, op, &mut meta).map_err(|e| StoreError::db("write", e))?;
                }
                appends += u64::try_from(b.appends).unwrap_or(u64::MAX);
            }
            trimmed = self
                .trim_step(&mut t, &mut meta)
                .map_err(|e| StoreError::db("trim", e))?;
            if batches.is_empty() && trimmed.trimmed == 0 {
                // A retention check that found nothing it may delete: no commit, no fsync.
                drop(t);
                txn.abort().map_err(|e| StoreError::db("abort", e))?;
                return Ok(Committed {
                    meta: self.meta,
                    appends: 0,
                    trimmed,
                    empty: true,
                });
            }
            for (key, value) in [
                (KEY_NEXT_SEQ, meta.next_seq),
                (KEY_HEAD, meta.head),
                (KEY_LOG_BYTES, meta.bytes),
                (KEY_LOG_COUNT, meta.count),
            ] {
                t.meta
                    .insert(key, value)
                    .map_err(|e| StoreError::db("write meta", e))?;
            }
        }
        // A durable commit is a checkpoint; a non-durable one is journaled first, so that
        // nothing a reader (a subscriber, the bridge) may see can be lost in a crash.
        let next = if immediate {
            self.start_checkpoint(&txn)?
        } else {
            None
        };
        let frame_start = match (&mut self.journal, immediate) {
            (Some(j), false) if !batches.is_empty() => {
                Some(j.file.append(batches.iter().flat_map(|b| b.ops.iter()))?)
            }
            _ => None,
        };
        if let Err(e) = txn.commit() {
            discard(next);
            if let (Some(j), Some(start)) = (&mut self.journal, frame_start)
                && let Err(cause) = j.file.truncate(start)
            {
                error!(%cause, "journal frame of a failed commit not removed; it will be replayed at the next start");
            }
            return Err(StoreError::db("commit", e));
        }
        drop(db);
        if immediate {
            self.finish_checkpoint(next);
        }
        // An immediate commit also makes every earlier non-durable one durable.
        self.unsynced = !immediate;
        Ok(Committed {
            meta,
            appends,
            trimmed,
            empty: false,
        })
    }

    /// Deletes at most `trim_batch` records from the head of the log: aged ones always,
    /// unneeded ones while over budget, and needed ones too under `drop-oldest`.
    fn trim_step(&mut self, t: &mut Tables<'_>, meta: &mut Meta) -> DbResult<Trimmed> {
        let cfg = &self.common.cfg;
        let mut out = Trimmed::default();
        if meta.count == 0 {
            return Ok(out);
        }
        let target = cfg.max_bytes - cfg.max_bytes / 10;
        if meta.bytes >= cfg.max_bytes {
            self.over_budget = true;
        }
        let now = now_millis();
        let age_cutoff = now.saturating_sub(millis(cfg.max_age));
        let grace_cutoff = now.saturating_sub(millis(cfg.trim_grace));
        let mut lowest_needed = None;
        while out.trimmed < u64::try_from(cfg.trim_batch.max(1)).unwrap_or(u64::MAX) {
            if meta.bytes <= target {
                self.over_budget = false;
            }
            let Some((seq, len, received)) = t
                .log
                .first()?
                .map(|(k, v)| (k.value(), v.value().len(), received_ms(v.value())))
            else {
                break;
            };
            let aged = received.is_none_or(|r| r < age_cutoff);
            if !aged && !self.over_budget {
                break;
            }
            let low = match lowest_needed {
                Some(low) => low,
                None => {
                    let low = t.lowest_needed()?;
                    lowest_needed = Some(low);
                    low
                }
            };
            let needed = seq >= low;
            let young = received.is_some_and(|r| r > grace_cutoff);
            let delete = aged || (!needed && !young) || cfg.when_full == WhenFull::DropOldest;
            if !delete {
                break;
            }
            t.log.remove(seq)?;
            meta.bytes = meta
                .bytes
                .saturating_sub(u64::try_from(len).unwrap_or(u64::MAX));
            meta.count = meta.count.saturating_sub(1);
            out.trimmed += 1;
            if received.is_none() {
                out.corrupt += 1;
                warn!(seq, "corrupted log record deleted by retention");
            } else if needed {
                out.dropped_unconsumed += 1;
            }
        }
        if out.trimmed > 0 {
            meta.head = t.log.first()?.map_or(meta.next_seq, |(k, _)| k.value());
        }
        Ok(out)
    }
}

/// Applies one op to the open tables, keeping `meta` and the `needed` counts exact.
fn apply(t: &mut Tables<'_>, op: &Op, meta: &mut Meta) -> DbResult<()> {
    match op {
        Op::Append { seq, record, .. } => {
            let old = t
                .log
                .insert(*seq, record.as_slice())?
                .map(|v| v.value().len());
            if let Some(old) = old {
                meta.bytes = meta.bytes.saturating_sub(u64::try_from(old).unwrap_or(0));
                meta.count = meta.count.saturating_sub(1);
            }
            if meta.count == 0 || *seq < meta.head {
                meta.head = *seq;
            }
            meta.bytes = meta
                .bytes
                .saturating_add(u64::try_from(record.len()).unwrap_or(u64::MAX));
            meta.count += 1;
            meta.next_seq = meta.next_seq.max(seq + 1);
        }
        Op::SessionUpsert { client, record } => {
            t.sessions.insert(client.as_str(), record.as_slice())?;
        }
        Op::SessionDelete { client } => {
            let c = client.as_str();
            t.sessions.remove(c)?;
            let mut seqs = Vec::new();
            for entry in t.queue.range((c, 0)..=(c, u64::MAX))? {
                seqs.push(entry?.0.value().1);
            }
            for seq in seqs {
                t.queue.remove((c, seq))?;
                t.needed_dec(seq)?;
            }
            let mut pids = Vec::new();
            for entry in t.inflight_out.range((c, 0)..=(c, u16::MAX))? {
                let (k, v) = entry?;
                pids.push((k.value().1, inflight_seq(v.value())));
            }
            for (pid, seq) in pids {
                t.inflight_out.remove((c, pid))?;
                if let Some(seq) = seq {
                    t.needed_dec(seq)?;
                }
            }
            let mut pids = Vec::new();
            for entry in t.inflight_in.range((c, 0)..=(c, u16::MAX))? {
                pids.push(entry?.0.value().1);
            }
            for pid in pids {
                t.inflight_in.remove((c, pid))?;
            }
        }
        Op::QueuePush {
            client,
            seq,
            record,
            ..
        } => {
            let existed = t
                .queue
                .insert((client.as_str(), *seq), record.as_slice())?
                .is_some();
            if !existed {
                t.needed_inc(*seq)?;
            }
        }
        Op::QueueRemove { client, seq } => {
            if t.queue.remove((client.as_str(), *seq))?.is_some() {
                t.needed_dec(*seq)?;
            }
        }
        Op::InflightOutSet {
            client,
            packet_id,
            seq,
            record,
        } => {
            let old = t
                .inflight_out
                .insert((client.as_str(), *packet_id), record.as_slice())?
                .map(|v| inflight_seq(v.value()));
            if let Some(Some(old)) = old {
                t.needed_dec(old)?;
            }
            t.needed_inc(*seq)?;
        }
        Op::InflightOutRemove { client, packet_id } => {
            let old = t
                .inflight_out
                .remove((client.as_str(), *packet_id))?
                .map(|v| inflight_seq(v.value()));
            if let Some(Some(old)) = old {
                t.needed_dec(old)?;
            }
        }
        Op::InflightInAdd { client, packet_id } => {
            t.inflight_in.insert((client.as_str(), *packet_id), ())?;
        }
        Op::InflightInRemove { client, packet_id } => {
            t.inflight_in.remove((client.as_str(), *packet_id))?;
        }
        Op::RetainedSet { topic, record } => {
            t.retained.insert(topic.as_str(), record.as_slice())?;
        }
        Op::RetainedClear { topic } => {
            t.retained.remove(topic.as_str())?;
        }
        Op::CursorSet { name, seq } => {
            t.cursors.insert(name.as_str(), *seq)?;
        }
        Op::CursorDelete { name } => {
            t.cursors.remove(name.as_str())?;
        }
        Op::WillSet { client, record } => {
            t.wills.insert(client.as_str(), record.as_slice())?;
        }
        Op::WillDelete { client, token } => {
            let matches = match token {
                None => true,
                Some(token) => t
                    .wills
                    .get(client.as_str())?
                    // An undecodable record is removed too: it could never be published.
                    .is_some_and(|v| will_token(v.value()).is_none_or(|t| t == *token)),
            };
            if matches {
                t.wills.remove(client.as_str())?;
            }
        }
        Op::TxHalf {
            client,
            tx,
            index,
            message,
            record,
        } => t.tx.half(client, tx, *index, message, record)?,
        Op::TxChecked { client, tx, record } => t.tx.checked(client, tx, record)?,
        Op::TxEnd { client, tx } => t.tx.end(client, tx)?,
    }
    Ok(())
}

/// Removes the file of a checkpoint whose commit failed.
fn discard(next: Option<JournalFile>) {
    if let Some(file) = next {
        file.remove();
    }
}

/// What [`replay_journal`] applied.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Replayed {
    /// Journal files read.
    pub(super) files: usize,
    /// Committed groups applied again.
    pub(super) groups: usize,
    /// Ops in them.
    pub(super) ops: usize,
    /// Files that ended in a damaged frame (torn by a power loss, or corrupted).
    pub(super) damaged: u64,
}

/// Applies, in one immediate transaction, every journal frame redb may have lost (files of
/// generation at or above the committed `journal_gen`), records the next generation and
/// deletes the files; older leftovers are deleted unread. Returns the generation the writer
/// starts with.
pub(super) fn replay_journal(
    db: &redb::Database,
    dir: &std::path::Path,
) -> Result<(Generation, Replayed), StoreError> {
    let err = |e: redb::Error| StoreError::db("journal replay", e);
    let committed = {
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        meta.get(KEY_JOURNAL_GEN)
            .map_err(|e| err(e.into()))?
            .map_or(0, |v| v.value())
    };
    let mut pending = Vec::new();
    for (g, path) in journal::list(dir)? {
        if g.0 < committed {
            if let Err(cause) = std::fs::remove_file(&path) {
                warn!(path = %path.display(), %cause, "old journal file not deleted");
            }
        } else {
            pending.push((g, path));
        }
    }
    let mut done = Replayed::default();
    let Some(&(last, _)) = pending.last() else {
        return Ok((Generation(committed), done));
    };
    let next = Generation(last.0 + 1);
    let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| err(e.into()))?;
    {
        let mut t = Tables::open(&txn).map_err(err)?;
        let get = |t: &Tables<'_>, key: &str| -> DbResult<u64> {
            Ok(t.meta.get(key)?.map_or(0, |v| v.value()))
        };
        let mut meta = Meta {
            next_seq: get(&t, KEY_NEXT_SEQ).map_err(err)?,
            head: get(&t, KEY_HEAD).map_err(err)?,
            bytes: get(&t, KEY_LOG_BYTES).map_err(err)?,
            count: get(&t, KEY_LOG_COUNT).map_err(err)?,
        };
        for (g, path) in &pending {
            let frames = journal::read(path, *g)?;
            done.files += 1;
            if let Some(damage) = &frames.damage {
                done.damaged += 1;
                warn!(path = %path.display(), %damage, applied = frames.groups.len(), "journal ends in a damaged frame; nothing after it is applied");
            }
            for group in &frames.groups {
                for op in group {
                    apply(&mut t, op, &mut meta).map_err(err)?;
                }
                done.groups += 1;
                done.ops += group.len();
            }
        }
        for (key, value) in [
            (KEY_NEXT_SEQ, meta.next_seq),
            (KEY_HEAD, meta.head),
            (KEY_LOG_BYTES, meta.bytes),
            (KEY_LOG_COUNT, meta.count),
            (KEY_JOURNAL_GEN, next.0),
        ] {
            t.meta.insert(key, value).map_err(|e| err(e.into()))?;
        }
    }
    txn.commit().map_err(|e| err(e.into()))?;
    for (_, path) in &pending {
        if let Err(cause) = std::fs::remove_file(path) {
            warn!(path = %path.display(), %cause, "replayed journal file not deleted");
        }
    }
    Ok((next, done))
}
