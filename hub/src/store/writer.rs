//! The writer thread: group commit, meta counters and retention.
//!
//! Owns every write transaction of the store. It receives [`Batch`]es (one per submission,
//! in ticket order), gathers as many as are waiting into one transaction, commits, updates
//! the shared counters and publishes the last resolved ticket (on the `committed` watch, then
//! to the [`TicketWaiters`] it concerns).
//!
//! The state of the write path ([`Writer`]) sits behind a mutex shared by the writer thread
//! ([`WriterThread`]) and the submitters: a submission that finds the writer idle — every
//! earlier ticket resolved, the lock free, at least as long since the last commit as that
//! commit took, no checkpoint or retention work due, no fsync needed — is committed by the
//! submitting task itself ([`Writer::commit_inline`]), without waking the thread and
//! without the wake-up back. That is the case of a lone publisher waiting for its
//! acknowledgements. Otherwise it goes through the channel as before: under load the
//! thread groups submissions, and the runtime's threads stay free for the connections. Tickets still resolve in order: an inline commit holds the lock from
//! before its ticket is assigned until it has resolved, and the thread commits only under
//! the lock. Invariants it keeps:
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

use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use redb::{Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
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
    Common, EncodedMessage, FAILED_RANGES_KEPT, FailedRange, FsyncPolicy, Seq, StoreError, Ticket,
    WhenFull, WriteOp, lock,
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
            WriteOp::AppendEncoded(EncodedMessage { qos0, record }) => Op::Append {
                seq: 0,
                qos0,
                record,
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

/// Tasks waiting for their tickets to resolve, each woken only once its own ticket has.
///
/// The `committed` watch wakes every receiver on every commit, so a connection whose batch
/// is not in the group wakes for nothing (with 100 publishers of 16 appends, 30 % more polls
/// than needed in `benches/store.rs`; more when groups hold fewer connections). The writer
/// resolves this list after each group, after the watch has moved.
#[derive(Debug, Default)]
pub(super) struct TicketWaiters {
    state: std::sync::Mutex<WaitList>,
    /// Identities handed to [`TicketWaiter`]s.
    next_id: std::sync::atomic::AtomicU64,
}

/// The waiting tasks, under the [`TicketWaiters`] lock.
#[derive(Debug, Default)]
struct WaitList {
    /// Highest resolved ticket.
    resolved: Ticket,
    /// The writer has stopped: nothing resolves any more.
    closed: bool,
    /// Waiting tasks by waiter id: the ticket each waits for and its waker. An entry leaves
    /// when its ticket resolves (a waiter that stopped waiting is woken once for nothing).
    waiting: std::collections::HashMap<u64, (Ticket, Waker)>,
}

impl TicketWaiters {
    /// Records that every ticket up to `up_to` has resolved and wakes their waiters.
    fn resolve(&self, up_to: Ticket) {
        let mut due = Vec::new();
        {
            let mut list = lock(&self.state);
            list.resolved = list.resolved.max(up_to);
            list.waiting.retain(|_, (ticket, waker)| {
                if *ticket <= up_to {
                    due.push(waker.clone());
                    false
                } else {
                    true
                }
            });
        }
        due.into_iter().for_each(Waker::wake);
    }

    /// Wakes every waiter for good (the writer has stopped).
    fn close(&self) {
        let waiting = {
            let mut list = lock(&self.state);
            list.closed = true;
            std::mem::take(&mut list.waiting)
        };
        waiting.into_values().for_each(|(_, waker)| waker.wake());
    }
}

/// One task's handle for waiting on store tickets: woken only once the ticket it waits for
/// has resolved, not on every commit like [`Store::committed`](super::Store::committed). Get
/// one with [`Store::ticket_waiter`](super::Store::ticket_waiter).
#[derive(Debug)]
pub struct TicketWaiter {
    waiters: Arc<TicketWaiters>,
    id: u64,
}

impl TicketWaiter {
    pub(super) fn new(waiters: Arc<TicketWaiters>) -> Self {
        let id = waiters.next_id.fetch_add(1, Ordering::Relaxed);
        Self { waiters, id }
    }

    /// Completes once `ticket` has resolved (committed or failed: check
    /// [`Store::outcome`](super::Store::outcome)). Cancel-safe; [`StoreError::Closed`] once
    /// the store is closed.
    pub async fn resolved(&mut self, ticket: Ticket) -> Result<(), StoreError> {
        std::future::poll_fn(|cx| {
            let mut list = lock(&self.waiters.state);
            if list.resolved >= ticket {
                return Poll::Ready(Ok(()));
            }
            if list.closed {
                return Poll::Ready(Err(StoreError::Closed));
            }
            match list.waiting.entry(self.id) {
                Entry::Occupied(mut entry) => {
                    let (wanted, waker) = entry.get_mut();
                    *wanted = ticket;
                    waker.clone_from(cx.waker());
                }
                Entry::Vacant(entry) => {
                    entry.insert((ticket, cx.waker().clone()));
                }
            }
            Poll::Pending
        })
        .await
    }
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

/// The tables of one transaction, each opened on first use: a group of appends touches only
/// `meta` and `log`, and every opened table costs a lookup at open and a root update at
/// commit.
struct Tables<'txn> {
    txn: &'txn WriteTransaction,
    meta: Option<Table<'txn, &'static str, u64>>,
    log: Option<Table<'txn, u64, &'static [u8]>>,
    sessions: Option<Table<'txn, &'static str, &'static [u8]>>,
    queue: Option<Table<'txn, (&'static str, u64), &'static [u8]>>,
    inflight_out: Option<Table<'txn, (&'static str, u16), &'static [u8]>>,
    inflight_in: Option<Table<'txn, (&'static str, u16), ()>>,
    needed: Option<Table<'txn, u64, u64>>,
    retained: Option<Table<'txn, &'static str, &'static [u8]>>,
    cursors: Option<Table<'txn, &'static str, u64>>,
    wills: Option<Table<'txn, &'static str, &'static [u8]>>,
    tx: Option<TxTables<'txn>>,
}

type DbResult<T> = Result<T, redb::Error>;

/// Upper bound on `group_commit_linger`: waiting longer only delays acknowledgements.
const MAX_LINGER: Duration = Duration::from_secs(1);

/// `slot`'s table, opened in `txn` if it is not yet.
fn opened<'a, 'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'a mut Option<Table<'txn, K, V>>,
    txn: &'txn WriteTransaction,
    definition: TableDefinition<K, V>,
) -> DbResult<&'a mut Table<'txn, K, V>> {
    get_or_open(slot, || Ok(txn.open_table(definition)?))
}

/// `slot`'s content, or what `open` makes, stored in `slot` first.
fn get_or_open<T>(slot: &mut Option<T>, open: impl FnOnce() -> DbResult<T>) -> DbResult<&mut T> {
    match slot {
        Some(value) => Ok(value),
        None => Ok(slot.insert(open()?)),
    }
}

impl<'txn> Tables<'txn> {
    fn new(txn: &'txn WriteTransaction) -> Self {
        Self {
            txn,
            meta: None,
            log: None,
            sessions: None,
            queue: None,
            inflight_out: None,
            inflight_in: None,
            needed: None,
            retained: None,
            cursors: None,
            wills: None,
            tx: None,
        }
    }

    fn meta(&mut self) -> DbResult<&mut Table<'txn, &'static str, u64>> {
        opened(&mut self.meta, self.txn, META)
    }

    fn log(&mut self) -> DbResult<&mut Table<'txn, u64, &'static [u8]>> {
        opened(&mut self.log, self.txn, LOG)
    }

    fn sessions(&mut self) -> DbResult<&mut Table<'txn, &'static str, &'static [u8]>> {
        opened(&mut self.sessions, self.txn, SESSIONS)
    }

    fn queue(&mut self) -> DbResult<&mut Table<'txn, (&'static str, u64), &'static [u8]>> {
        opened(&mut self.queue, self.txn, QUEUE)
    }

    fn inflight_out(&mut self) -> DbResult<&mut Table<'txn, (&'static str, u16), &'static [u8]>> {
        opened(&mut self.inflight_out, self.txn, INFLIGHT_OUT)
    }

    fn inflight_in(&mut self) -> DbResult<&mut Table<'txn, (&'static str, u16), ()>> {
        opened(&mut self.inflight_in, self.txn, INFLIGHT_IN)
    }

    fn needed(&mut self) -> DbResult<&mut Table<'txn, u64, u64>> {
        opened(&mut self.needed, self.txn, NEEDED)
    }

    fn retained(&mut self) -> DbResult<&mut Table<'txn, &'static str, &'static [u8]>> {
        opened(&mut self.retained, self.txn, RETAINED)
    }

    fn cursors(&mut self) -> DbResult<&mut Table<'txn, &'static str, u64>> {
        opened(&mut self.cursors, self.txn, CURSORS)
    }

    fn wills(&mut self) -> DbResult<&mut Table<'txn, &'static str, &'static [u8]>> {
        opened(&mut self.wills, self.txn, WILLS)
    }

    fn tx(&mut self) -> DbResult<&mut TxTables<'txn>> {
        let txn = self.txn;
        get_or_open(&mut self.tx, || TxTables::open(txn))
    }

    fn needed_inc(&mut self, seq: Seq) -> DbResult<()> {
        let needed = self.needed()?;
        let n = needed.get(seq)?.map_or(0, |v| v.value());
        needed.insert(seq, n + 1)?;
        Ok(())
    }

    fn needed_dec(&mut self, seq: Seq) -> DbResult<()> {
        let needed = self.needed()?;
        let n = needed.get(seq)?.map_or(0, |v| v.value());
        if n <= 1 {
            needed.remove(seq)?;
        } else {
            needed.insert(seq, n - 1)?;
        }
        Ok(())
    }

    /// Lowest seq still needed by a session or a consumer (`u64::MAX` if none).
    fn lowest_needed(&mut self) -> DbResult<Seq> {
        let mut low = self.needed()?.first()?.map_or(u64::MAX, |(k, _)| k.value());
        for entry in self.cursors()?.iter()? {
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

/// The writer thread: waits on the submission channel and commits what arrives, under the
/// [`Writer`] lock; commits nothing itself when submitters commit inline.
pub(super) struct WriterThread {
    writer: Arc<std::sync::Mutex<Writer>>,
    /// The store's shared state (waiters, configuration).
    common: Arc<Common>,
    rx: mpsc::Receiver<Batch>,
    /// Single-threaded runtime used only to wait on the channel with a timeout.
    rt: tokio::runtime::Runtime,
    /// [`Writer::nudge`]: wakes the thread for retention work an inline commit left.
    nudge: Arc<tokio::sync::Notify>,
}

/// The state of the write path, behind a mutex: used by the writer thread and by
/// submitters that commit inline.
pub(super) struct Writer {
    common: Arc<Common>,
    progress: watch::Sender<Ticket>,
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
    /// The writer thread has ended: nothing is committed inline any more.
    stopped: bool,
    /// Notified when an inline commit left retention work (`more_to_trim`) for the thread.
    nudge: Arc<tokio::sync::Notify>,
    /// When the last group committed and how long it took (see [`Writer::commit_inline`]).
    last_commit: Option<CommitTiming>,
}

/// When a group's commit ended and how long it took.
#[derive(Debug, Clone, Copy)]
struct CommitTiming {
    ended: Instant,
    took: Duration,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("meta", &self.meta)
            .field("unsynced", &self.unsynced)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        // Also on a panic: nobody waits forever for a ticket the writer will never resolve.
        lock(&self.writer).stopped = true;
        self.common.waiters.close();
    }
}

/// What [`Writer::commit_inline`] did with a submission.
pub(super) enum Inline {
    /// Committed (or failed) and resolved: the submission's seqs and ticket.
    Done(super::Submitted),
    /// Not now (the writer is busy, or the work needs the writer thread): the submission,
    /// for the channel.
    NotNow(super::Prepared),
}

/// What [`WriterThread::poll_waiting`] found in the submission channel, or what waiting
/// on it brought.
enum Waiting {
    Batch(Batch),
    Empty,
    Closed,
    /// Nothing arrived within the maintenance interval, or an inline commit left retention
    /// work: time for [`Writer::maintain`].
    Idle,
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

impl WriterThread {
    pub(super) fn new(
        writer: Arc<std::sync::Mutex<Writer>>,
        rx: mpsc::Receiver<Batch>,
    ) -> Result<Self, StoreError> {
        let (common, nudge) = {
            let w = lock(&writer);
            (Arc::clone(&w.common), Arc::clone(&w.nudge))
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|source| StoreError::Io {
                path: common.path.clone(),
                source,
            })?;
        Ok(Self {
            writer,
            common,
            rx,
            rt,
            nudge,
        })
    }

    /// Runs until every handle is gone (or `close`), committing what was submitted.
    pub(super) fn run(mut self) {
        let interval = self
            .common
            .cfg
            .maintenance_interval
            .max(Duration::from_millis(10));
        // Read while the lock is held for work anyway: the thread takes the lock only to
        // commit or maintain, so an idle thread never makes a submitter miss it.
        let mut more_to_trim = false;
        loop {
            // With a retention backlog, keep trimming whenever no submission is waiting.
            let wait = if more_to_trim {
                Duration::ZERO
            } else {
                interval
            };
            let next = match self.poll_waiting() {
                Waiting::Batch(batch) => Waiting::Batch(batch),
                Waiting::Closed => Waiting::Closed,
                Waiting::Empty | Waiting::Idle => {
                    let rx = &mut self.rx;
                    let nudge = &self.nudge;
                    self.rt.block_on(async move {
                        tokio::select! {
                            received = tokio::time::timeout(wait, rx.recv()) => match received {
                                Ok(Some(batch)) => Waiting::Batch(batch),
                                Ok(None) => Waiting::Closed,
                                Err(_elapsed) => Waiting::Idle,
                            },
                            () = nudge.notified() => Waiting::Idle,
                        }
                    })
                }
            };
            match next {
                Waiting::Empty | Waiting::Idle => {
                    let mut writer = lock(&self.writer);
                    writer.maintain();
                    more_to_trim = writer.more_to_trim;
                }
                Waiting::Closed => break,
                Waiting::Batch(batch) => {
                    let writer = Arc::clone(&self.writer);
                    let mut writer = lock(&writer);
                    let group = self.gather(batch);
                    writer.commit_group(group);
                    more_to_trim = writer.more_to_trim;
                }
            }
        }
        let mut writer = lock(&self.writer);
        writer.sync();
        writer.stop();
    }

    /// The next submission if one is already waiting. Under load it usually is, and taking
    /// it directly skips entering the wait runtime (timer registration and a park check)
    /// for every group.
    fn poll_waiting(&mut self) -> Waiting {
        match self.rx.try_recv() {
            Ok(batch) => Waiting::Batch(batch),
            Err(mpsc::error::TryRecvError::Disconnected) => Waiting::Closed,
            Err(mpsc::error::TryRecvError::Empty) => Waiting::Empty,
        }
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
}

impl Writer {
    pub(super) fn new(
        common: Arc<Common>,
        progress: watch::Sender<Ticket>,
        next_seq: Seq,
        generation: Generation,
    ) -> Result<Self, StoreError> {
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
            progress,
            meta,
            seen_next_seq: next_seq,
            over_budget: false,
            needs_reopen: false,
            unsynced: false,
            more_to_trim: false,
            journal,
            stopped: false,
            nudge: Arc::default(),
            last_commit: None,
        })
    }

    /// Commits `prepared` in the calling thread when the writer is idle: the writer thread
    /// is running, every ticket before this one has resolved, at least as long has passed
    /// since the last commit as that commit took, no linger is configured, and
    /// the commit needs no fsync, checkpoint, reopen or known retention work (all of which
    /// stay on the writer thread, which is nudged if the commit's own retention step finds
    /// more). Called with the writer's lock held, which keeps the thread from committing
    /// until this ticket has resolved; `submit` is the submission state, locked after the
    /// writer's. On success the ticket has resolved (committed or failed, see
    /// [`super::Store::outcome`]) before this returns.
    pub(super) fn commit_inline(
        &mut self,
        submit: &std::sync::Mutex<super::SubmitState>,
        prepared: super::Prepared,
    ) -> Result<Inline, StoreError> {
        let mut state = lock(submit);
        if state.tx.is_none() {
            return Err(StoreError::Closed);
        }
        let idle = *self.progress.borrow() == Ticket(state.next_ticket - 1);
        // Submissions arriving closer together than a commit takes are load: the thread
        // groups them (and an inline commit would hold up the submitting task's runtime
        // thread for every one of them). A lone publisher's next batch comes a round trip
        // after its commit.
        let spaced = self.last_commit.is_none_or(|c| c.ended.elapsed() >= c.took);
        let light = !self.stopped
            && !self.needs_reopen
            && !self.over_budget
            && !self.more_to_trim
            && !self.checkpoint_due()
            && (self.journal.is_some() || !prepared.immediate);
        // A linger asks for groups gathered over time: only the thread gathers.
        let gathering = !self.common.cfg.group_commit_linger.is_zero();
        if !idle || !spaced || !light || gathering {
            return Ok(Inline::NotNow(prepared));
        }
        let (batch, submitted) = super::assign(&mut state, prepared);
        drop(state);
        self.commit_group(vec![batch]);
        if self.more_to_trim {
            // The commit's retention step deleted a full batch: the thread goes on.
            self.nudge.notify_one();
        }
        Ok(Inline::Done(submitted))
    }

    /// Ends the write path when the thread ends (after its last [`Writer::sync`]): no more
    /// inline commits, and the journal (with its fsync thread) closes as before.
    fn stop(&mut self) {
        self.stopped = true;
        self.journal = None;
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

    /// Commits a group; on failure retries its submissions one by one.
    fn commit_group(&mut self, group: Vec<Batch>) {
        let started = Instant::now();
        self.commit_group_untimed(group);
        let ended = Instant::now();
        self.last_commit = Some(CommitTiming {
            ended,
            took: ended - started,
        });
    }

    /// [`Writer::commit_group`] without recording its timing.
    fn commit_group_untimed(&mut self, group: Vec<Batch>) {
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
                        self.publish_progress(b.ticket);
                    }
                }
            }
            Err(err) => self.fail(first, last, &err),
        }
        self.publish_progress(last);
        if self.checkpoint_due() {
            self.sync();
        }
    }

    /// Tells waiters that every ticket up to `up_to` has resolved: the watch first, then the
    /// [`TicketWaiters`] (so a woken waiter reads the watch at `up_to` or later).
    fn publish_progress(&self, up_to: Ticket) {
        self.progress.send_replace(up_to);
        self.common.waiters.resolve(up_to);
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
            let mut t = Tables::new(&txn);
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
                t.meta()
                    .and_then(|m| Ok(m.insert(key, value)?))
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
                .log()?
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
            t.log()?.remove(seq)?;
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
            meta.head = t.log()?.first()?.map_or(meta.next_seq, |(k, _)| k.value());
        }
        Ok(out)
    }
}

/// Applies one op to the open tables, keeping `meta` and the `needed` counts exact.
fn apply(t: &mut Tables<'_>, op: &Op, meta: &mut Meta) -> DbResult<()> {
    match op {
        Op::Append { seq, record, .. } => {
            let old = t
                .log()?
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
            t.sessions()?.insert(client.as_str(), record.as_slice())?;
        }
        Op::SessionDelete { client } => {
            let c = client.as_str();
            t.sessions()?.remove(c)?;
            let mut seqs = Vec::new();
            for entry in t.queue()?.range((c, 0)..=(c, u64::MAX))? {
                seqs.push(entry?.0.value().1);
            }
            for seq in seqs {
                t.queue()?.remove((c, seq))?;
                t.needed_dec(seq)?;
            }
            let mut pids = Vec::new();
            for entry in t.inflight_out()?.range((c, 0)..=(c, u16::MAX))? {
                let (k, v) = entry?;
                pids.push((k.value().1, inflight_seq(v.value())));
            }
            for (pid, seq) in pids {
                t.inflight_out()?.remove((c, pid))?;
                if let Some(seq) = seq {
                    t.needed_dec(seq)?;
                }
            }
            let mut pids = Vec::new();
            for entry in t.inflight_in()?.range((c, 0)..=(c, u16::MAX))? {
                pids.push(entry?.0.value().1);
            }
            for pid in pids {
                t.inflight_in()?.remove((c, pid))?;
            }
        }
        Op::QueuePush {
            client,
            seq,
            record,
            ..
        } => {
            let existed = t
                .queue()?
                .insert((client.as_str(), *seq), record.as_slice())?
                .is_some();
            if !existed {
                t.needed_inc(*seq)?;
            }
        }
        Op::QueueRemove { client, seq } => {
            if t.queue()?.remove((client.as_str(), *seq))?.is_some() {
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
                .inflight_out()?
                .insert((client.as_str(), *packet_id), record.as_slice())?
                .map(|v| inflight_seq(v.value()));
            if let Some(Some(old)) = old {
                t.needed_dec(old)?;
            }
            t.needed_inc(*seq)?;
        }
        Op::InflightOutRemove { client, packet_id } => {
            let old = t
                .inflight_out()?
                .remove((client.as_str(), *packet_id))?
                .map(|v| inflight_seq(v.value()));
            if let Some(Some(old)) = old {
                t.needed_dec(old)?;
            }
        }
        Op::InflightInAdd { client, packet_id } => {
            t.inflight_in()?.insert((client.as_str(), *packet_id), ())?;
        }
        Op::InflightInRemove { client, packet_id } => {
            t.inflight_in()?.remove((client.as_str(), *packet_id))?;
        }
        Op::RetainedSet { topic, record } => {
            t.retained()?.insert(topic.as_str(), record.as_slice())?;
        }
        Op::RetainedClear { topic } => {
            t.retained()?.remove(topic.as_str())?;
        }
        Op::CursorSet { name, seq } => {
            t.cursors()?.insert(name.as_str(), *seq)?;
        }
        Op::CursorDelete { name } => {
            t.cursors()?.remove(name.as_str())?;
        }
        Op::WillSet { client, record } => {
            t.wills()?.insert(client.as_str(), record.as_slice())?;
        }
        Op::WillDelete { client, token } => {
            let matches = match token {
                None => true,
                Some(token) => t
                    .wills()?
                    .get(client.as_str())?
                    // An undecodable record is removed too: it could never be published.
                    .is_some_and(|v| will_token(v.value()).is_none_or(|t| t == *token)),
            };
            if matches {
                t.wills()?.remove(client.as_str())?;
            }
        }
        Op::TxHalf {
            client,
            tx,
            index,
            message,
            record,
        } => t.tx()?.half(client, tx, *index, message, record)?,
        Op::TxChecked { client, tx, record } => t.tx()?.checked(client, tx, record)?,
        Op::TxEnd { client, tx } => t.tx()?.end(client, tx)?,
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
        let mut t = Tables::new(&txn);
        let get = |t: &mut Tables<'_>, key: &str| -> DbResult<u64> {
            Ok(t.meta()?.get(key)?.map_or(0, |v| v.value()))
        };
        let mut meta = Meta {
            next_seq: get(&mut t, KEY_NEXT_SEQ).map_err(err)?,
            head: get(&mut t, KEY_HEAD).map_err(err)?,
            bytes: get(&mut t, KEY_LOG_BYTES).map_err(err)?,
            count: get(&mut t, KEY_LOG_COUNT).map_err(err)?,
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
            t.meta()
                .and_then(|m| Ok(m.insert(key, value)?))
                .map_err(err)?;
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

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Wake};

    use super::*;
    use crate::store::{Store, StoreConfig};

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Counter {
        fn woken(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Polls `waiter.resolved(ticket)` once with `counter` as the waker.
    fn poll_once(
        waiter: &mut TicketWaiter,
        ticket: Ticket,
        counter: &Arc<Counter>,
    ) -> Poll<Result<(), StoreError>> {
        let waker = Waker::from(Arc::clone(counter));
        let mut cx = Context::from_waker(&waker);
        let future = pin!(waiter.resolved(ticket));
        future.poll(&mut cx)
    }

    #[test]
    fn a_waiter_is_woken_only_when_its_own_ticket_resolves() {
        let waiters = Arc::new(TicketWaiters::default());
        let mut early = TicketWaiter::new(Arc::clone(&waiters));
        let mut late = TicketWaiter::new(Arc::clone(&waiters));
        let (early_wakes, late_wakes) =
            (Arc::new(Counter::default()), Arc::new(Counter::default()));
        assert!(poll_once(&mut early, Ticket(2), &early_wakes).is_pending());
        assert!(poll_once(&mut late, Ticket(5), &late_wakes).is_pending());
        // Polled again while waiting: still one entry, the newest waker.
        assert!(poll_once(&mut late, Ticket(5), &late_wakes).is_pending());

        waiters.resolve(Ticket(1));
        assert_eq!((early_wakes.woken(), late_wakes.woken()), (0, 0));
        waiters.resolve(Ticket(3));
        assert_eq!((early_wakes.woken(), late_wakes.woken()), (1, 0));
        assert!(matches!(
            poll_once(&mut early, Ticket(2), &early_wakes),
            Poll::Ready(Ok(()))
        ));
        waiters.resolve(Ticket(4));
        assert_eq!(late_wakes.woken(), 0);
        waiters.resolve(Ticket(5));
        assert_eq!(late_wakes.woken(), 1);
        assert!(matches!(
            poll_once(&mut late, Ticket(5), &late_wakes),
            Poll::Ready(Ok(()))
        ));
        // Entries left with their wake-up: later commits wake nobody.
        waiters.resolve(Ticket(9));
        assert_eq!((early_wakes.woken(), late_wakes.woken()), (1, 1));
    }

    #[test]
    fn a_resolved_ticket_completes_at_once_and_a_closed_list_fails() {
        let waiters = Arc::new(TicketWaiters::default());
        let mut waiter = TicketWaiter::new(Arc::clone(&waiters));
        let wakes = Arc::new(Counter::default());
        waiters.resolve(Ticket(3));
        assert!(matches!(
            poll_once(&mut waiter, Ticket(3), &wakes),
            Poll::Ready(Ok(()))
        ));
        assert!(poll_once(&mut waiter, Ticket(4), &wakes).is_pending());
        waiters.close();
        assert_eq!(wakes.woken(), 1);
        assert!(matches!(
            poll_once(&mut waiter, Ticket(4), &wakes),
            Poll::Ready(Err(StoreError::Closed))
        ));
    }

    #[test]
    fn store_tickets_resolve_through_a_waiter_and_closing_wakes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (store, _) = Store::open(dir.path(), StoreConfig::default()).expect("open");
        let mut waiter = store.ticket_waiter();
        rt.block_on(async {
            let mut last = Ticket(0);
            for _ in 0..3 {
                let op = WriteOp::CursorSet {
                    name: "c".into(),
                    seq: 1,
                };
                last = store.submit(vec![op]).await.expect("submit").ticket;
            }
            waiter.resolved(last).await.expect("resolved");
            assert!(*store.committed().borrow() >= last);
            assert!(store.outcome(last).is_ok());
        });
        store.close().expect("close");
        let next = Ticket(u64::MAX);
        assert!(matches!(
            rt.block_on(waiter.resolved(next)),
            Err(StoreError::Closed)
        ));
    }
}
