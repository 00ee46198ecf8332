//! Shared broker state and the fan-out path: session registry, router, retained messages,
//! will and session-expiry timers, and the `$SYS` publisher.
//!
//! # Fan-out without a router task
//!
//! A publishing session calls [`Broker::publish`] itself: it locks the broker state (router +
//! registry, one std `Mutex`, never held across `.await`), computes the deliveries into a
//! reused buffer, releases the lock, and pushes one `Arc<Message>` per target into each
//! target session's bounded [`Mailbox`], waking its task through a [`Notify`]. There is no
//! channel hop per message and no copy of the payload. The mailbox is the bounded, typed
//! channel between router and session; a router task behind an mpsc would add a task switch
//! per message on the ingest path, which is what the QoS 1 ingest target cannot afford.
//!
//! # Store
//!
//! With a durable [`Store`] attached, [`Broker::publish_batch`] submits the batch's messages
//! (and any state ops the session adds) as one store submission, then routes them: online
//! subscribers get the `Arc<Message>` directly; for persistent sessions each QoS 1/2
//! delivery is also recorded as a queue entry (`QueuePush`, a log position, not a copy) in a
//! second submission made *before* the message enters the subscriber's mailbox, so the
//! subscriber's later `QueueRemove` is always ordered after it. The caller acknowledges the
//! publishes only once every returned ticket has committed. Sessions with an expiry are
//! upserted on attach, detach and subscription changes and deleted when they end. `$SYS`
//! messages are never stored.
//!
//! Wills are stored for every connection that has one (clean sessions too): durably at
//! attach, rewritten with a wall-clock deadline when a will delay starts, and deleted in
//! the same submission that appends the published will, or at a normal DISCONNECT. A hub
//! stop keeps them, so [`Broker::restore`] publishes them, or re-arms the will timer with
//! what is left of the delay.
//!
//! # Session lifecycle
//!
//! The registry maps client id → session entry. While a client is connected its entry
//! points at the connection ([`ConnectionRef`]); the connection task owns the session's
//! in-flight state. At disconnect the task parks that state back in the entry (persistent
//! session) or removes the entry and its subscriptions (expiry 0). A timer task per
//! disconnect publishes the delayed will and ends the session at expiry unless the client
//! came back first; the entry's `generation` tells a timer whether it is stale.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_mqtt::QoS;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, QueueOverflow};
use crate::filter_host::{Filtered, Pipelines};
use crate::message::{ClientId, Message, MessageProperties, QueuedMessage};
use crate::metrics::{BrokerGauges, Metrics};
use crate::router::{
    Delivery, RetainHandling, RetainedStore, RouterError, SubscribeOutcome, SubscriptionOptions,
    SubscriptionTree, TopicFilter,
};
use crate::session::queue::{PushOutcome, QueueLimits, QueueMetrics, SessionQueue};
use crate::session::state::{OutboundStage, SessionState};
use crate::shutdown::Shutdown;
use crate::store::{
    OutboundState, Recovered, Seq, SessionRecord, Store, StoreError, SubscriptionRecord, Ticket,
    UnixMillis, WillRecord, WriteOp, now_millis,
};

/// How long a new connection waits for the connection it takes over to park its session.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Inbox of one session: queued messages plus the wake-up of its connection task.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<SessionQueue>,
    /// Woken after every push, and when a page the queue waited for can be read; the
    /// connection task drains the queue.
    pub notify: Arc<Notify>,
    /// Messages this session lost to queue overflow; drives the rate-limited log line.
    dropped: AtomicU64,
    /// A connection is attached: publishers may wait for room (policy `backpressure`).
    online: std::sync::atomic::AtomicBool,
    /// Where spilled queue entries are paged in from (`None` without a store).
    store: Option<Store>,
    /// Paging counters, shared with [`Metrics::queues`].
    metrics: Arc<QueueMetrics>,
    /// A task waits for a commit the queue's next page needs (at most one at a time).
    waiting_for_commit: Arc<std::sync::atomic::AtomicBool>,
    /// The queue's overflow policy (fixed at creation), read without its lock.
    overflow: QueueOverflow,
    /// The queue's [`SessionQueue::room`], awaited without its lock.
    room: Arc<Notify>,
}

/// How long a mailbox whose page read failed waits before it is popped again.
const PAGE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Most pages [`Mailbox::pop`] reads in one call before it yields (pages whose entries
/// had all expired or were gone deliver nothing).
const PAGES_PER_POP: usize = 8;

impl Mailbox {
    /// An empty inbox for a `persistent` session or a clean one. With a store, a persistent
    /// session's queue is paged; under `queue_in_store` a clean session's queue is paged
    /// too, and its publishers wait only at the backlog cap (see [`SessionQueue`]).
    fn new(
        config: &Config,
        store: Option<&Store>,
        metrics: &Arc<QueueMetrics>,
        persistent: bool,
    ) -> Self {
        let in_store = config.session.queue_in_store && !persistent;
        let limits = QueueLimits {
            in_store,
            ..QueueLimits::of(&config.session)
        };
        let queue = SessionQueue::new(limits, (persistent || in_store) && store.is_some());
        Self {
            overflow: queue.overflow(),
            room: queue.room(),
            queue: Mutex::new(queue),
            notify: Arc::new(Notify::new()),
            dropped: AtomicU64::new(0),
            online: std::sync::atomic::AtomicBool::new(false),
            store: store.cloned(),
            metrics: Arc::clone(metrics),
            waiting_for_commit: Arc::default(),
        }
    }

    /// Marks the session connected or not; going offline releases waiting publishers.
    fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
        if !online {
            self.room.notify_waiters();
        }
    }

    /// Queues `item` once the queue has room, waiting until `deadline` at most while the
    /// session stays connected; hands the item back if it could not be queued.
    async fn push_when_room(
        &self,
        item: QueuedMessage,
        deadline: tokio::time::Instant,
    ) -> Option<QueuedMessage> {
        // Usually there is room: one lock, no waiter registration.
        let mut item = match self.queue().try_push(item, Instant::now()) {
            Ok(()) => {
                self.notify.notify_one();
                return None;
            }
            Err(back) => back,
        };
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a pop in between is not missed.
            notified.as_mut().enable();
            match self.queue().try_push(item, Instant::now()) {
                Ok(()) => {
                    self.notify.notify_one();
                    return None;
                }
                Err(back) => item = back,
            }
            if !self.online.load(Ordering::Acquire) {
                return Some(item);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Some(item);
            }
        }
    }

    /// Locks the queue. Held only for pushes and pops, never across `.await` or a store
    /// read.
    pub fn queue(&self) -> MutexGuard<'_, SessionQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the oldest queued message that has not expired at `now` (expired ones are
    /// counted in `expired`), paging spilled entries in from the store when the window is
    /// empty. The read runs without the queue's lock, in the caller's thread: one read
    /// transaction of at most [`crate::session::queue::PAGE_MAX_ENTRIES`] records, a
    /// window's worth of bytes. `None` when nothing is queued, or when the next message
    /// waits for its commit or for a failed read to be retried: the mailbox is notified
    /// when it is worth popping again.
    pub fn pop(&self, now: Instant, expired: &mut u64) -> Option<QueuedMessage> {
        for _ in 0..PAGES_PER_POP {
            let request = {
                let mut queue = self.queue();
                if let Some(item) = queue.pop(now, expired) {
                    return Some(item);
                }
                queue.page_request()?
            };
            let Some(store) = &self.store else {
                self.queue().abandon_page();
                return None;
            };
            if let Some((_, ticket)) = request.settled
                && *store.committed().borrow() < ticket
            {
                // Still waiting for the commit the last read stopped at: reading again
                // would find the same.
                self.queue().abandon_page();
                self.wake_after_commit(store, Some(ticket));
                return None;
            }
            let mut records = Vec::new();
            let read = store.read_queued(
                &request.seqs,
                request.max_bytes,
                request.per_record,
                request.settled,
                &mut records,
            );
            self.metrics.pages_read.inc();
            let wait_for = match read {
                Ok(wait_for) => wait_for,
                Err(err) => {
                    self.queue().abandon_page();
                    self.metrics.page_errors.inc();
                    warn!(cause = %err, "session queue: page read failed; retrying");
                    // Retried a little later, not in a busy loop.
                    self.wake_after_commit(store, None);
                    return None;
                }
            };
            let outcome = self
                .queue()
                .install(&request, records, wait_for, now, expired);
            self.metrics.messages_paged.add_len(outcome.loaded);
            if outcome.lost > 0 {
                self.metrics.messages_lost.add_len(outcome.lost);
                warn!(
                    lost = outcome.lost,
                    first_seq = request.seqs.first().copied().unwrap_or_default(),
                    "session queue: queued messages were deleted from the store before \
                     delivery (retention)"
                );
            }
            if let Some(ticket) = outcome.wait_for
                && outcome.loaded == 0
            {
                self.metrics.page_waits.inc();
                debug!(
                    ticket = ticket.0,
                    "session queue: next message not committed yet"
                );
                self.wake_after_commit(store, Some(ticket));
                return None;
            }
        }
        // Several pages delivered nothing (expired or gone): go on at the next turn.
        self.notify.notify_one();
        None
    }

    /// Notifies the mailbox once `ticket` has resolved (after [`PAGE_RETRY_AFTER`] for
    /// `None`), from a task; at most one such task per mailbox.
    fn wake_after_commit(&self, store: &Store, ticket: Option<Ticket>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.waiting_for_commit.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = store.clone();
        let notify = Arc::clone(&self.notify);
        let waiting = Arc::clone(&self.waiting_for_commit);
        runtime.spawn(async move {
            match ticket {
                // The outcome does not matter: the next read tells.
                Some(ticket) => drop(store.wait_durable(ticket).await),
                None => tokio::time::sleep(PAGE_RETRY_AFTER).await,
            }
            waiting.store(false, Ordering::Release);
            notify.notify_one();
        });
    }

    /// Queues `item`; also returns the seqs of tracked entries the queue dropped meanwhile
    /// (overflow, expiry), whose store records the caller removes.
    fn push(&self, item: QueuedMessage) -> (PushOutcome, Vec<Seq>) {
        let (outcome, discarded) = {
            let mut queue = self.queue();
            let outcome = queue.push(item);
            (outcome, queue.take_discarded())
        };
        self.notify.notify_one();
        (outcome, discarded)
    }

    /// Counts one dropped message; returns the session's total when it is worth a log line
    /// (the 1st, 2nd, 4th, 8th, ... drop), so a flooded session cannot flood the log.
    fn count_drop(&self) -> Option<u64> {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        total.is_power_of_two().then_some(total)
    }
}

/// The connection currently attached to a session.
#[derive(Debug, Clone)]
pub struct ConnectionRef {
    /// Unique per connection, so a late detach of a replaced connection is ignored.
    pub id: u64,
    /// Cancelled to make the connection close with "session taken over".
    pub kick: CancellationToken,
    /// Cancelled by the connection once it has parked its session state.
    pub gone: CancellationToken,
    /// Cancelled by an operator (admin API `DELETE /clients/{id}`): the connection closes
    /// with "administrative action" (v5 DISCONNECT 0x98) and its will is published.
    pub evict: CancellationToken,
    /// When the connection attached, for the admin API.
    pub since: std::time::SystemTime,
    /// The client's address, set by the connection after attaching (admin API).
    pub peer: Arc<OnceLock<std::net::SocketAddr>>,
}

/// One session as the admin API lists it ([`Broker::clients`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSummary {
    /// The client identifier.
    pub client_id: String,
    /// Protocol level of the last connection (4 = 3.1.1, 5 = 5.0).
    pub protocol_level: u8,
    /// Whether a connection is attached now.
    pub connected: bool,
    /// The connection's address, when connected.
    pub peer: Option<std::net::SocketAddr>,
    /// When the current connection attached, when connected.
    pub connected_since: Option<std::time::SystemTime>,
    /// Subscriptions the session holds.
    pub subscriptions: usize,
    /// Messages waiting in the session's queue.
    pub queued: usize,
}

/// A will message waiting for its delay or for the session to end.
#[derive(Debug, Clone)]
pub struct Will {
    /// The message to publish.
    pub message: Message,
    /// v5 Will Delay Interval, seconds.
    pub delay_secs: u32,
    /// v5 Message Expiry Interval, counted from the moment the will is published.
    pub expiry_secs: Option<u32>,
    /// Identifies the stored copy ([`WillRecord::token`]), from [`Broker::will_token`].
    pub token: u64,
}

impl Will {
    /// The stored form, due at `deadline_ms` (`None`: the connection is open).
    fn to_record(&self, deadline_ms: Option<UnixMillis>) -> WillRecord {
        WillRecord {
            token: self.token,
            message: self.message.to_stored(Instant::now(), now_millis()),
            delay_secs: self.delay_secs,
            expiry_secs: self.expiry_secs,
            deadline_ms,
        }
    }

    /// Back from the store; the message gets its expiry only when published.
    fn from_record(record: WillRecord, now: Instant, now_ms: UnixMillis) -> Self {
        let message = Message {
            expiry: None,
            ..Message::from_stored(record.message, now, now_ms)
        };
        Self {
            message,
            delay_secs: record.delay_secs,
            expiry_secs: record.expiry_secs,
            token: record.token,
        }
    }

    /// The message as published now.
    fn into_message(self) -> Message {
        let expiry = self
            .expiry_secs
            .map(|interval_secs| crate::message::Expiry {
                received_at: Instant::now(),
                interval_secs,
            });
        Message {
            expiry,
            ..self.message
        }
    }
}

/// A fresh session generation, unique for the process: a replaced or re-created entry for
/// the same client id must never reuse a value a pending expiry or will timer still holds.
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One session in the registry.
#[derive(Debug)]
struct SessionEntry {
    mailbox: Arc<Mailbox>,
    connection: Option<ConnectionRef>,
    /// In-flight state of an offline persistent session.
    parked: Option<SessionState>,
    /// A fresh [`next_generation`] on every attach and detach; timers compare it to know
    /// they are stale.
    generation: u64,
    /// A will waiting for its delay to pass (cancelled by a reconnect).
    pending_will: Option<Will>,
    /// Whether the store holds this session (session expiry > 0): its QoS 1/2 deliveries
    /// are tracked there and it is restored after a restart.
    stored: bool,
    /// Protocol level of the last connection (4 = 3.1.1, 5 = 5.0), for the session record.
    protocol_level: u8,
    /// Session expiry in force, seconds (`u32::MAX` = never).
    session_expiry: u32,
}

/// Router and registry, guarded together so routing sees a consistent online set.
struct State {
    router: SubscriptionTree<ClientId>,
    sessions: HashMap<ClientId, SessionEntry>,
    /// Reused delivery buffer for [`Broker::publish`] under the lock.
    deliveries: Vec<Delivery<ClientId>>,
}

/// What [`Broker::attach`] hands to a new connection.
#[derive(Debug)]
pub struct Attached {
    /// The session's inbox.
    pub mailbox: Arc<Mailbox>,
    /// Resumed in-flight state (empty for a new session).
    pub state: SessionState,
    /// CONNACK Session Present.
    pub session_present: bool,
    /// This connection's handle (to detach with).
    pub connection: ConnectionRef,
    /// Whether the store tracks this session's deliveries and in-flight state.
    pub stored: bool,
}

/// What a new connection asks of its session, for [`Broker::attach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachRequest {
    /// Clean Start / clean session: discard any existing session.
    pub clean_start: bool,
    /// Session expiry granted, seconds (`u32::MAX` = never, 0 = ends with the connection).
    pub session_expiry: u32,
    /// Protocol level (4 = 3.1.1, 5 = 5.0).
    pub protocol_level: u8,
}

/// How a connection ended, for [`Broker::detach`].
#[derive(Debug)]
pub struct Detach {
    /// The in-flight state to park.
    pub state: SessionState,
    /// Session expiry in force at disconnect, seconds (`u32::MAX` = never).
    pub session_expiry: u32,
    /// The will to publish (already `None` after a normal DISCONNECT).
    pub will: Option<Will>,
    /// Token of the connection's will when it was discarded (normal DISCONNECT): its stored
    /// copy is deleted. `None` with `will: None` keeps a stored will (hub shutdown: the next
    /// start treats the close as abnormal).
    pub discarded_will: Option<u64>,
}

/// One session a message is routed to.
#[derive(Debug)]
struct Target {
    mailbox: Arc<Mailbox>,
    online: bool,
    stored: bool,
    delivery: Delivery<ClientId>,
}

/// Reusable buffers for [`Broker::publish_batch`]; one per session task.
#[derive(Debug, Default)]
pub struct PublishScratch {
    targets: Vec<Target>,
    /// Deliveries computed but not yet pushed into their mailboxes.
    pending: Vec<Pending>,
}

/// One delivery computed by [`Broker::route`], to push into its session's mailbox.
#[derive(Debug)]
struct Pending {
    mailbox: Arc<Mailbox>,
    client: ClientId,
    /// The session is persistent: its queue has records in the store.
    stored: bool,
    item: QueuedMessage,
}

/// Outcome of [`Broker::publish_batch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Store submissions the batch made; acknowledge only once all have committed.
    pub tickets: Vec<Ticket>,
    /// Deliveries queued (sessions reached, summed over the batch).
    pub queued: usize,
}

/// Outcome of the locked part of [`Broker::attach`].
enum AttachStep {
    /// Another connection holds the session: take it over, then try again.
    Wait(ConnectionRef),
    /// Attached; `ops` go to the store, `ended_will` is published.
    Done {
        attached: Attached,
        ops: Vec<WriteOp>,
        ended_will: Box<Option<Will>>,
    },
}

/// What the locked part of [`Broker::detach`] leaves to do.
#[derive(Default)]
struct DetachPlan {
    ops: Vec<WriteOp>,
    will: Option<Will>,
    expiry_timer: Option<(u64, Duration)>,
}

/// What [`Broker::restore`] rebuilt, for the start-up log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Persistent sessions restored.
    pub sessions: usize,
    /// Sessions whose expiry passed while the hub was down (deleted).
    pub expired_sessions: usize,
    /// Queued messages restored.
    pub queued: usize,
    /// Outbound in-flight messages restored.
    pub inflight: usize,
    /// Retained messages restored.
    pub retained: usize,
    /// Stored wills published at start-up (due while the hub was down, or of clients
    /// whose session could not wait for a will delay).
    pub wills_published: usize,
    /// Stored wills waiting for their delay (cancelled if the client resumes in time).
    pub wills_pending: usize,
}

/// Everything the hub shares between tasks.
pub struct Broker {
    config: Config,
    metrics: Metrics,
    shutdown: Shutdown,
    state: Mutex<State>,
    retained: Mutex<RetainedStore<Arc<Message>>>,
    next_connection_id: AtomicU64,
    /// The durable store; `None` only for in-memory brokers in unit tests.
    store: Option<Store>,
    /// The filter pipelines, once any were deployed: the filter host (a wasm engine and its
    /// ticker thread) exists only then.
    filters: OnceLock<Arc<Pipelines>>,
    /// Extra `$SYS` publishers (the bridges), asked every `sys_interval`.
    sys_sources: Mutex<Vec<Arc<dyn crate::metrics::SysSource>>>,
    /// Open transactions (half messages), see [`crate::tx`].
    transactions: crate::tx::Transactions,
}

/// Whether messages on `topic` go to the store (`$SYS` statistics are rebuilt every
/// interval and never stored).
fn is_stored_topic(topic: &str) -> bool {
    !topic.starts_with("$SYS/")
}

/// The store's record of a subscription.
fn subscription_record(filter: &str, options: SubscriptionOptions) -> SubscriptionRecord {
    SubscriptionRecord {
        filter: filter.to_owned(),
        qos: options.qos,
        no_local: options.no_local,
        retain_as_published: options.retain_as_published,
        retain_handling: options.retain_handling as u8,
        identifier: options.identifier.map(NonZeroU32::get),
    }
}

/// Subscription options from a stored record (`None` for values no build writes).
fn subscription_options(record: &SubscriptionRecord) -> Option<SubscriptionOptions> {
    Some(SubscriptionOptions {
        qos: record.qos,
        no_local: record.no_local,
        retain_as_published: record.retain_as_published,
        retain_handling: RetainHandling::from_u8(record.retain_handling)?,
        identifier: record.identifier.and_then(NonZeroU32::new),
    })
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker with empty tables.
    pub fn new(config: Config, shutdown: Shutdown) -> Self {
        Self {
            transactions: crate::tx::Transactions::new(config.transactions.clone()),
            config,
            metrics: Metrics::default(),
            shutdown,
            state: Mutex::new(State {
                router: SubscriptionTree::new(),
                sessions: HashMap::new(),
                deliveries: Vec::new(),
            }),
            retained: Mutex::new(RetainedStore::new()),
            next_connection_id: AtomicU64::new(1),
            store: None,
            filters: OnceLock::new(),
            sys_sources: Mutex::new(Vec::new()),
        }
    }

    /// A broker backed by the durable `store`; call [`Broker::restore`] with what the store
    /// recovered before accepting connections.
    pub fn with_store(config: Config, shutdown: Shutdown, store: Store) -> Self {
        Self {
            store: Some(store),
            ..Self::new(config, shutdown)
        }
    }

    /// Uses `filters` (shared with a filter host created before the broker) as the
    /// broker's filter counters.
    pub fn with_filter_metrics(mut self, filters: Arc<crate::metrics::FilterMetrics>) -> Self {
        self.metrics.filters = filters;
        self
    }

    /// Installs the filter pipelines (at start-up, or at the first reload that deploys
    /// any). The broker's `$SYS/broker/filters/...` counters become the host's. Returns the
    /// pipelines back if some were installed already.
    pub fn install_pipelines(&self, pipelines: Arc<Pipelines>) -> Result<(), Arc<Pipelines>> {
        self.filters.set(pipelines)
    }

    /// The filter pipelines, if any were deployed.
    pub fn pipelines(&self) -> Option<&Arc<Pipelines>> {
        self.filters.get()
    }

    /// The registry of open transactions.
    pub fn transactions(&self) -> &crate::tx::Transactions {
        &self.transactions
    }

    /// The durable store, if any.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Submits `ops` to the store; `None` when there is nothing to submit or no store.
    pub async fn submit(&self, ops: Vec<WriteOp>) -> Result<Option<Ticket>, StoreError> {
        match &self.store {
            Some(store) if !ops.is_empty() => Ok(Some(store.submit(ops).await?.ticket)),
            _ => Ok(None),
        }
    }

    /// Submits `ops` whose loss in a crash costs at most a redelivery: failures are logged.
    async fn submit_logged(&self, ops: Vec<WriteOp>, what: &'static str) {
        if let Err(err) = self.submit(ops).await {
            warn!(cause = %err, what, "store write failed");
        }
    }

    /// The stored record of a session, as it stands in `state`.
    fn session_record(
        router: &SubscriptionTree<ClientId>,
        client_id: &ClientId,
        entry: &SessionEntry,
        expires_at_ms: Option<u64>,
    ) -> SessionRecord {
        SessionRecord {
            client_id: client_id.to_string(),
            protocol_level: entry.protocol_level,
            session_expiry_secs: entry.session_expiry,
            expires_at_ms,
            subscriptions: router
                .subscriptions_of(client_id)
                .map(|s| subscription_record(s.filter, s.options))
                .collect(),
        }
    }

    /// Writes `client_id`'s session record (subscriptions changed). Returns the ticket to
    /// wait for before confirming the change, `None` for sessions the store does not hold.
    pub async fn persist_session(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<Ticket>, StoreError> {
        let op =
            {
                let guard = self.lock();
                match guard.sessions.get(client_id) {
                    Some(entry) if entry.stored => Some(WriteOp::SessionUpsert(
                        Self::session_record(&guard.router, client_id, entry, None),
                    )),
                    _ => None,
                }
            };
        match op {
            Some(op) => self.submit(vec![op]).await,
            None => Ok(None),
        }
    }

    /// Rebuilds persistent sessions (subscriptions, queues, in-flight state, expiry timers)
    /// and retained messages from what the store recovered at open. Queued and in-flight
    /// messages are read from the log by seq; entries whose message is gone (trimmed or
    /// expired) are dropped from the store.
    pub async fn restore(
        self: &Arc<Self>,
        recovered: Recovered,
    ) -> Result<RestoreSummary, StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(RestoreSummary::default());
        };
        let now = Instant::now();
        let now_ms = now_millis();
        let mut summary = RestoreSummary::default();
        let mut ops = Vec::new();
        let mut timers = Vec::new();
        for (topic, stored) in recovered.retained {
            let message = Message::from_stored(stored, now, now_ms);
            self.lock_retained().set(&topic, Arc::new(message));
            summary.retained += 1;
        }
        for (client, session) in recovered.sessions {
            let record = session.record;
            let client_id = ClientId::from(client.as_str());
            let deadline_ms = match record.expires_at_ms {
                Some(at) => Some(at),
                // Connected when the hub stopped: the session counts as disconnected now.
                None if record.session_expiry_secs == u32::MAX => None,
                None => Some(now_ms.saturating_add(u64::from(record.session_expiry_secs) * 1000)),
            };
            if deadline_ms.is_some_and(|at| at <= now_ms) {
                ops.push(WriteOp::SessionDelete { client });
                summary.expired_sessions += 1;
                continue;
            }
            let mailbox = Arc::new(Mailbox::new(
                &self.config,
                Some(&store),
                &self.metrics.queues,
                true,
            ));
            {
                // Positions only: the messages are paged in when the session drains its
                // queue, so a long queue costs neither start-up time nor memory. Entries
                // whose message is gone are found (and removed) then.
                let mut queue = mailbox.queue();
                let mut dropped = 0u64;
                for entry in session.queue {
                    if queue.push_stored(entry.seq, entry.delivery).dropped() {
                        dropped += 1;
                    }
                    summary.queued += 1;
                }
                if dropped > 0 {
                    self.metrics.messages_dropped.add(dropped);
                    warn!(
                        client_id = %client_id,
                        dropped,
                        limit = self.config.session.max_backlog_messages,
                        "restored queue longer than max_backlog_messages; messages dropped"
                    );
                }
                ops.extend(
                    queue
                        .take_discarded()
                        .into_iter()
                        .map(|seq| WriteOp::QueueRemove {
                            client: client.clone(),
                            seq,
                        }),
                );
            }
            let mut inflight = Vec::with_capacity(session.inflight_out.len());
            for (packet_id, flight) in session.inflight_out {
                let stage = match (flight.state, flight.delivery.qos) {
                    (OutboundState::PubrelSent, _) => OutboundStage::AwaitPubComp,
                    (OutboundState::PublishSent, QoS::ExactlyOnce) => OutboundStage::AwaitPubRec,
                    (OutboundState::PublishSent, _) => OutboundStage::AwaitPubAck,
                };
                let message = match store.get(flight.seq)? {
                    Some(stored) => Message::from_stored(stored, now, now_ms),
                    // A PUBREL needs only the packet id; a PUBLISH whose message is gone
                    // (expired or trimmed) cannot be resent.
                    None if stage == OutboundStage::AwaitPubComp => Message {
                        topic: String::new(),
                        payload: Bytes::new(),
                        qos: flight.delivery.qos,
                        retain: false,
                        properties: MessageProperties::default(),
                        expiry: None,
                        publisher: ClientId::from(""),
                    },
                    None => {
                        ops.push(WriteOp::InflightOutRemove {
                            client: client.clone(),
                            packet_id,
                        });
                        continue;
                    }
                };
                let item = QueuedMessage {
                    message: Arc::new(message),
                    qos: flight.delivery.qos,
                    retain: flight.delivery.retain,
                    subscription_ids: flight.delivery.subscription_ids,
                    seq: Some(flight.seq),
                    share: None,
                };
                inflight.push((packet_id, item, stage));
                summary.inflight += 1;
            }
            let parked = SessionState::restore(inflight, session.inflight_in);
            {
                let mut guard = self.lock();
                let state = &mut *guard;
                for sub in &record.subscriptions {
                    let restored = subscription_options(sub).and_then(|options| {
                        state
                            .router
                            .subscribe(Arc::clone(&client_id), &sub.filter, options)
                            .ok()
                    });
                    if restored.is_none() {
                        warn!(client_id = %client_id, filter = %sub.filter, "stored subscription not restored");
                    }
                }
                state.sessions.insert(
                    Arc::clone(&client_id),
                    SessionEntry {
                        mailbox,
                        connection: None,
                        parked: Some(parked),
                        generation: 0,
                        pending_will: None,
                        stored: true,
                        protocol_level: record.protocol_level,
                        session_expiry: record.session_expiry_secs,
                    },
                );
            }
            if record.expires_at_ms != deadline_ms {
                ops.push(WriteOp::SessionUpsert(SessionRecord {
                    expires_at_ms: deadline_ms,
                    ..record
                }));
            }
            if let Some(at) = deadline_ms {
                timers.push((client_id, Duration::from_millis(at.saturating_sub(now_ms))));
            }
            summary.sessions += 1;
        }
        for (client_id, after) in timers {
            self.spawn_expiry_timer(client_id, 0, after);
        }
        let due = self.restore_wills(recovered.wills, now, now_ms, &mut ops, &mut summary);
        if let Some(ticket) = self.submit(ops).await? {
            store.wait_durable(ticket).await?;
        }
        // Published through the normal path once the sessions are back, so restored
        // persistent subscribers get them queued.
        for (client_id, will) in due {
            debug!(%client_id, "publishing will stored before the restart");
            self.publish_will(&client_id, will).await;
        }
        Ok(summary)
    }

    /// Schedules the stored wills: a hub that stopped closed every connection abnormally,
    /// so each will is due `min(will delay, session expiry)` after start-up, or at the
    /// deadline recorded when its connection closed. Wills of restored sessions wait on the
    /// normal will timer (a resume cancels them); the rest are returned, due now. Call after
    /// the sessions are restored (entries at generation 0).
    fn restore_wills(
        self: &Arc<Self>,
        wills: std::collections::BTreeMap<String, WillRecord>,
        now: Instant,
        now_ms: UnixMillis,
        ops: &mut Vec<WriteOp>,
        summary: &mut RestoreSummary,
    ) -> Vec<(ClientId, Will)> {
        let mut due = Vec::new();
        let mut timers = Vec::new();
        {
            let mut guard = self.lock();
            for (client, record) in wills {
                // Later tokens must differ from every stored one.
                self.next_connection_id
                    .fetch_max(record.token.saturating_add(1), Ordering::Relaxed);
                let client_id = ClientId::from(client.as_str());
                let deadline_ms = record.deadline_ms;
                let will = Will::from_record(record, now, now_ms);
                // No restored session: a clean session, or one that expired while the hub
                // was down; either way it has ended, and so has any will delay.
                let Some(entry) = guard.sessions.get_mut(&client_id) else {
                    due.push((client_id, will));
                    continue;
                };
                let at_ms = deadline_ms.unwrap_or_else(|| {
                    let delay = will.delay_secs.min(entry.session_expiry);
                    now_ms.saturating_add(u64::from(delay) * 1000)
                });
                if at_ms <= now_ms {
                    due.push((client_id, will));
                    continue;
                }
                if deadline_ms.is_none() {
                    // The delay started at this start-up; a second crash must not restart it.
                    ops.push(WriteOp::WillSet {
                        client,
                        will: will.to_record(Some(at_ms)),
                    });
                }
                entry.pending_will = Some(will);
                timers.push((client_id, Duration::from_millis(at_ms - now_ms)));
            }
        }
        summary.wills_published = due.len();
        summary.wills_pending = timers.len();
        for (client_id, delay) in timers {
            self.spawn_will_timer(client_id, 0, delay);
        }
        due
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The shutdown handle.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_retained(&self) -> MutexGuard<'_, RetainedStore<Arc<Message>>> {
        self.retained
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A token for a new connection's will ([`Will::token`]): unique, and above every token
    /// of a will restored from the store.
    pub fn will_token(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh unique client identifier for a client that sent an empty one.
    pub fn assign_client_id(&self) -> String {
        let n = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        format!("tern-{n:x}-{:x}", std::process::id())
    }

    /// Attaches a new connection to `client_id`'s session, taking it over from a connected
    /// client first. `request.clean_start` discards any existing session. The store learns
    /// of the session (upsert, or delete when it no longer persists) and of the connection's
    /// `will` (stored, or the one a resume cancels deleted) durably before this returns, so
    /// a crash after CONNACK still publishes the will.
    pub async fn attach(
        self: &Arc<Self>,
        client_id: &ClientId,
        request: AttachRequest,
        will: Option<&Will>,
    ) -> Attached {
        let connection = ConnectionRef {
            id: self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            kick: CancellationToken::new(),
            gone: CancellationToken::new(),
            evict: CancellationToken::new(),
            since: std::time::SystemTime::now(),
            peer: Arc::default(),
        };
        let stored = self.store.is_some() && request.session_expiry > 0;
        loop {
            let step = self.attach_locked(client_id, request, stored, &connection, will);
            let (attached, ops, ended_will) = match step {
                AttachStep::Done {
                    attached,
                    ops,
                    ended_will,
                } => (attached, ops, ended_will),
                AttachStep::Wait(old) => {
                    self.wait_takeover(client_id, old).await;
                    continue;
                }
            };
            let durable = match self.submit(ops).await {
                Ok(Some(ticket)) => match &self.store {
                    Some(store) => store.wait_durable(ticket).await,
                    None => Ok(()),
                },
                Ok(None) => Ok(()),
                Err(err) => Err(err),
            };
            if let Err(err) = durable {
                warn!(cause = %err, %client_id, "session and will not stored");
            }
            if let Some(will) = *ended_will {
                // The old session ended now: its delayed will goes out.
                self.publish_will(client_id, will).await;
            }
            return attached;
        }
    }

    /// Waits for the connection being taken over to park its session.
    async fn wait_takeover(&self, client_id: &ClientId, old: ConnectionRef) {
        info!(client_id = %client_id, "session taken over by a new connection");
        old.kick.cancel();
        if tokio::time::timeout(TAKEOVER_TIMEOUT, old.gone.cancelled())
            .await
            .is_err()
        {
            warn!(client_id = %client_id, "previous connection did not stop in time");
            let mut guard = self.lock();
            if let Some(entry) = guard
                .sessions
                .get_mut(client_id)
                .filter(|e| e.connection.as_ref().is_some_and(|c| c.id == old.id))
            {
                entry.connection = None;
            }
        }
    }

    /// The locked part of [`Broker::attach`].
    fn attach_locked(
        &self,
        client_id: &ClientId,
        request: AttachRequest,
        stored: bool,
        connection: &ConnectionRef,
        will: Option<&Will>,
    ) -> AttachStep {
        // The new will replaces any stored one; without one, a will the resume cancels is
        // deleted (an ended session's will is deleted when it is published).
        let will_op = |cancelled: Option<&Will>| match (will, &self.store) {
            (_, None) => None,
            (Some(will), Some(_)) => Some(WriteOp::WillSet {
                client: client_id.to_string(),
                will: will.to_record(None),
            }),
            (None, Some(_)) => cancelled.map(|old| WriteOp::WillDelete {
                client: client_id.to_string(),
                token: Some(old.token),
            }),
        };
        {
            {
                let mut guard = self.lock();
                let state = &mut *guard;
                match state.sessions.get_mut(client_id) {
                    Some(entry) if entry.connection.is_some() => AttachStep::Wait(
                        entry
                            .connection
                            .clone()
                            .unwrap_or_else(|| connection.clone()),
                    ),
                    Some(entry) if !request.clean_start => {
                        entry.generation = next_generation();
                        let cancelled = entry.pending_will.take();
                        entry.connection = Some(connection.clone());
                        entry.mailbox.set_online(true);
                        if stored {
                            entry.mailbox.queue().enable_paging();
                        }
                        let was_stored = entry.stored;
                        entry.stored = stored;
                        entry.protocol_level = request.protocol_level;
                        entry.session_expiry = request.session_expiry;
                        let attached = Attached {
                            mailbox: Arc::clone(&entry.mailbox),
                            state: entry.parked.take().unwrap_or_default(),
                            session_present: true,
                            connection: connection.clone(),
                            stored,
                        };
                        let op = if stored {
                            Some(WriteOp::SessionUpsert(Self::session_record(
                                &state.router,
                                client_id,
                                entry,
                                None,
                            )))
                        } else if was_stored {
                            Some(WriteOp::SessionDelete {
                                client: client_id.to_string(),
                            })
                        } else {
                            None
                        };
                        AttachStep::Done {
                            attached,
                            ops: op.into_iter().chain(will_op(cancelled.as_ref())).collect(),
                            ended_will: Box::new(None),
                        }
                    }
                    existing => {
                        // New session (or clean start over an offline one).
                        let ended_will = existing.and_then(|e| e.pending_will.take());
                        let mut ops = Vec::new();
                        if let Some(old) = state.sessions.remove(client_id) {
                            state.router.remove_client(client_id);
                            self.redeliver_ended(state, client_id, &old.mailbox, old.parked);
                            if old.stored {
                                ops.push(WriteOp::SessionDelete {
                                    client: client_id.to_string(),
                                });
                            }
                        }
                        let mailbox = Arc::new(Mailbox::new(
                            &self.config,
                            self.store.as_ref(),
                            &self.metrics.queues,
                            stored,
                        ));
                        mailbox.set_online(true);
                        let entry = SessionEntry {
                            mailbox: Arc::clone(&mailbox),
                            connection: Some(connection.clone()),
                            parked: None,
                            generation: next_generation(),
                            pending_will: None,
                            stored,
                            protocol_level: request.protocol_level,
                            session_expiry: request.session_expiry,
                        };
                        if stored {
                            ops.push(WriteOp::SessionUpsert(Self::session_record(
                                &state.router,
                                client_id,
                                &entry,
                                None,
                            )));
                        }
                        state.sessions.insert(Arc::clone(client_id), entry);
                        ops.extend(will_op(None));
                        AttachStep::Done {
                            attached: Attached {
                                mailbox,
                                state: SessionState::default(),
                                session_present: false,
                                connection: connection.clone(),
                                stored,
                            },
                            ops,
                            ended_will: Box::new(ended_will),
                        }
                    }
                }
            }
        }
    }

    /// Detaches a connection: parks or ends its session and schedules will and expiry.
    pub async fn detach(
        self: &Arc<Self>,
        client_id: &ClientId,
        connection: &ConnectionRef,
        detach: Detach,
    ) {
        let plan = self.detach_locked(client_id, connection, detach);
        // Written before the connection counts as gone, so a takeover's upsert follows it.
        self.submit_logged(plan.ops, "session detach").await;
        connection.gone.cancel();
        if let Some(will) = plan.will {
            self.publish_will(client_id, will).await;
        }
        if let Some((generation, after)) = plan.expiry_timer {
            self.spawn_expiry_timer(Arc::clone(client_id), generation, after);
        }
    }

    /// The locked part of [`Broker::detach`].
    fn detach_locked(
        self: &Arc<Self>,
        client_id: &ClientId,
        connection: &ConnectionRef,
        detach: Detach,
    ) -> DetachPlan {
        let Detach {
            state: session_state,
            session_expiry,
            will,
            discarded_will,
        } = detach;
        let discard_op = discarded_will
            .filter(|_| self.store.is_some())
            .map(|token| WriteOp::WillDelete {
                client: client_id.to_string(),
                token: Some(token),
            });
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(entry) = state
            .sessions
            .get_mut(client_id)
            .filter(|e| e.connection.as_ref().map(|c| c.id) == Some(connection.id))
        else {
            // Gone, or already replaced (takeover with clean start); only the will is ours.
            return DetachPlan {
                ops: discard_op.into_iter().collect(),
                will,
                ..DetachPlan::default()
            };
        };
        entry.connection = None;
        entry.mailbox.set_online(false);
        entry.generation = next_generation();
        let generation = entry.generation;
        if session_expiry == 0 {
            let was_stored = entry.stored;
            let mailbox = Arc::clone(&entry.mailbox);
            state.sessions.remove(client_id);
            state.router.remove_client(client_id);
            self.redeliver_ended(state, client_id, &mailbox, Some(session_state));
            let mut ops: Vec<WriteOp> = discard_op.into_iter().collect();
            if was_stored {
                ops.push(WriteOp::SessionDelete {
                    client: client_id.to_string(),
                });
            }
            return DetachPlan {
                ops,
                will,
                expiry_timer: None,
            };
        }
        entry.mailbox.queue().retain_qos_above_zero();
        entry.parked = Some(session_state);
        entry.session_expiry = session_expiry;
        let op = entry.stored.then(|| {
            let expires_at = (session_expiry != u32::MAX)
                .then(|| now_millis().saturating_add(u64::from(session_expiry) * 1000));
            WriteOp::SessionUpsert(Self::session_record(
                &state.router,
                client_id,
                entry,
                expires_at,
            ))
        });
        let mut ops: Vec<WriteOp> = discard_op.into_iter().chain(op).collect();
        let immediate_will = match will {
            Some(will) if will.delay_secs > 0 && will.delay_secs.min(session_expiry) > 0 => {
                let delay_secs = will.delay_secs.min(session_expiry);
                if self.store.is_some() {
                    // Wall-clock deadline, so the delay keeps running across a restart.
                    let at = now_millis().saturating_add(u64::from(delay_secs) * 1000);
                    ops.push(WriteOp::WillSet {
                        client: client_id.to_string(),
                        will: will.to_record(Some(at)),
                    });
                }
                entry.pending_will = Some(will);
                let delay = Duration::from_secs(u64::from(delay_secs));
                self.spawn_will_timer(Arc::clone(client_id), generation, delay);
                None
            }
            other => other,
        };
        DetachPlan {
            ops,
            will: immediate_will,
            expiry_timer: (session_expiry != u32::MAX)
                .then(|| (generation, Duration::from_secs(u64::from(session_expiry)))),
        }
    }

    /// For a session that just ended (its entry and subscriptions removed): its messages of
    /// shared subscriptions not yet delivered — unconfirmed in flight (`parked`), then loaded
    /// in its queue — go to other members ([`Broker::redeliver_shared`]). Messages a
    /// persistent session kept only as store positions stay with it.
    fn redeliver_ended(
        &self,
        state: &mut State,
        client_id: &ClientId,
        mailbox: &Mailbox,
        parked: Option<SessionState>,
    ) {
        let mut undelivered = parked
            .map(|mut parked| parked.take_unconfirmed_shared())
            .unwrap_or_default();
        undelivered.extend(mailbox.queue().take_shared());
        self.redeliver_shared(state, client_id, undelivered);
    }

    /// Hands each message that shared subscriptions chose `client_id`'s ending session for,
    /// and that it did not deliver, to another online member of the same subscription
    /// (MQTT 5.0 §4.8.2), in the order given. A message whose subscription has no member
    /// online any more is dropped, counted and logged.
    fn redeliver_shared(&self, state: &mut State, client_id: &ClientId, items: Vec<QueuedMessage>) {
        if items.is_empty() {
            return;
        }
        let State {
            router, sessions, ..
        } = state;
        let is_online = |k: &ClientId| sessions.get(k).is_some_and(|e| e.connection.is_some());
        let mut redistributed = 0u64;
        let mut dropped = 0u64;
        for item in items {
            let delivery = item
                .share
                .as_deref()
                .and_then(|share| router.redeliver_shared(share, &is_online));
            let Some((delivery, entry)) =
                delivery.and_then(|d| sessions.get(&d.client).map(|entry| (d, entry)))
            else {
                dropped += 1;
                continue;
            };
            let message = item.message;
            let qos = message.qos.min(delivery.qos);
            let moved = QueuedMessage {
                qos,
                retain: message.retain && delivery.retain_as_published,
                subscription_ids: delivery.identifiers.iter().map(u32::from).collect(),
                seq: None,
                share: delivery.share.filter(|_| qos != QoS::AtMostOnce),
                message,
            };
            let (outcome, discarded) = entry.mailbox.push(moved);
            if !discarded.is_empty() {
                // Tracked entries the queue dropped; the session removes their records.
                entry.mailbox.queue().return_discarded(discarded);
            }
            if outcome.dropped() {
                self.metrics.messages_dropped.inc();
                if let Some(total) = entry.mailbox.count_drop() {
                    warn!(client_id = %delivery.client, dropped_total = total, "session queue full; message of a shared subscription dropped");
                }
            }
            if outcome != PushOutcome::DroppedNew {
                redistributed += 1;
            }
        }
        self.metrics.messages_redistributed.add(redistributed);
        self.metrics.messages_dropped.add(dropped);
        if dropped > 0 {
            warn!(%client_id, redistributed, dropped, "session ended with undelivered messages of shared subscriptions; no other member online for some");
        } else {
            info!(%client_id, redistributed, "session ended; its undelivered messages of shared subscriptions went to other members");
        }
    }

    fn spawn_will_timer(self: &Arc<Self>, client_id: ClientId, generation: u64, delay: Duration) {
        let broker = Arc::clone(self);
        self.shutdown.tasks().spawn(async move {
            tokio::select! {
                () = broker.shutdown.triggered() => return,
                () = tokio::time::sleep(delay) => {}
            }
            let will = {
                let mut guard = broker.lock();
                guard
                    .sessions
                    .get_mut(&client_id)
                    .filter(|e| e.generation == generation)
                    .and_then(|e| e.pending_will.take())
            };
            if let Some(will) = will {
                debug!(%client_id, "will delay passed; publishing will");
                broker.publish_will(&client_id, will).await;
            }
        });
    }

    fn spawn_expiry_timer(self: &Arc<Self>, client_id: ClientId, generation: u64, after: Duration) {
        let broker = Arc::clone(self);
        self.shutdown.tasks().spawn(async move {
            tokio::select! {
                () = broker.shutdown.triggered() => return,
                () = tokio::time::sleep(after) => {}
            }
            let ended = {
                let mut guard = broker.lock();
                let state = &mut *guard;
                let current = state
                    .sessions
                    .get(&client_id)
                    .is_some_and(|e| e.generation == generation);
                if !current {
                    return;
                }
                let mut ended = state.sessions.remove(&client_id);
                state.router.remove_client(&client_id);
                if let Some(ended) = ended.as_mut() {
                    broker.redeliver_ended(state, &client_id, &ended.mailbox, ended.parked.take());
                }
                ended
            };
            debug!(%client_id, "session expired");
            let Some(ended) = ended else { return };
            if ended.stored {
                broker
                    .submit_logged(
                        vec![WriteOp::SessionDelete {
                            client: client_id.to_string(),
                        }],
                        "session expiry",
                    )
                    .await;
            }
            if let Some(will) = ended.pending_will {
                broker.publish_will(&client_id, will).await;
            }
        });
    }

    /// Publishes `client_id`'s will and deletes its stored copy in the same store
    /// submission, so a crash never both delivers it and leaves it to be published again.
    /// Returns how many sessions it was queued for. If the store refuses the message, the
    /// will is dropped (logged and counted as for [`Broker::publish`]) and deleted anyway.
    pub async fn publish_will(&self, client_id: &ClientId, will: Will) -> usize {
        let delete = self.store.as_ref().map(|_| WriteOp::WillDelete {
            client: client_id.to_string(),
            token: Some(will.token),
        });
        let mut scratch = PublishScratch::default();
        let state_ops = delete.iter().cloned().collect();
        match self
            .publish_batch(vec![will.into_message()], state_ops, &mut scratch)
            .await
        {
            Ok(published) => published.queued,
            Err(err) => {
                self.metrics.store_refused.inc();
                warn!(cause = %err, %client_id, "will not stored; not delivered");
                self.submit_logged(delete.into_iter().collect(), "will delete")
                    .await;
                0
            }
        }
    }

    /// Stores (unless `$SYS`), routes and retains one message the hub publishes itself
    /// (wills, `$SYS`). Returns how many sessions it was queued for. Store failures are
    /// logged and counted; the message is then not delivered.
    pub async fn publish(&self, message: Message) -> usize {
        let mut scratch = PublishScratch::default();
        match self
            .publish_batch(vec![message], Vec::new(), &mut scratch)
            .await
        {
            Ok(published) => published.queued,
            Err(err) => {
                self.metrics.store_refused.inc();
                warn!(cause = %err, "message not stored; not delivered");
                0
            }
        }
    }

    /// Stores, then routes a batch of accepted messages (one read of one connection).
    ///
    /// `state_ops` (e.g. inbound QoS 2 ids) go into the same store submission as the
    /// appends, ahead of them. Nothing is routed or retained when the submission is refused
    /// ([`StoreError::QuotaExceeded`]) or fails. On success the caller acknowledges the
    /// messages once every ticket in [`Published::tickets`] has committed; online
    /// subscribers already have them.
    pub async fn publish_batch(
        &self,
        messages: Vec<Message>,
        state_ops: Vec<WriteOp>,
        scratch: &mut PublishScratch,
    ) -> Result<Published, StoreError> {
        let filtered = match self.filters.get() {
            Some(pipelines) => {
                let started = Instant::now();
                let filtered = pipelines.run(messages);
                self.metrics.filter_batch.observe(started.elapsed());
                filtered
            }
            None => Filtered::Local(messages),
        };
        // `bridges[i]` is the bridge message `i` goes to alone; empty when all are local.
        let (messages, bridges): (Vec<Message>, Vec<Option<Arc<str>>>) = match filtered {
            Filtered::Local(messages) => (messages, Vec::new()),
            Filtered::Routed(routed) => routed.into_parts(),
        };
        let bridge_of = |i: usize| bridges.get(i).and_then(Option::as_deref);
        let mut published = Published::default();
        let mut seqs: Vec<Option<Seq>> = vec![None; messages.len()];
        if let Some(store) = &self.store {
            let now = Instant::now();
            let now_ms = now_millis();
            let mut ops = state_ops;
            let mut stored = Vec::with_capacity(messages.len());
            for (i, message) in messages.iter().enumerate() {
                if !is_stored_topic(&message.topic) {
                    continue;
                }
                let bridge = bridge_of(i);
                // A message kept for one bridge only is not retained (nor routed locally).
                if message.retain && bridge.is_none() {
                    ops.push(if message.payload.is_empty() {
                        WriteOp::RetainedClear {
                            topic: message.topic.clone(),
                        }
                    } else {
                        WriteOp::RetainedSet {
                            topic: message.topic.clone(),
                            message: message.to_stored(now, now_ms),
                        }
                    });
                }
                ops.push(WriteOp::append_encoded(
                    &message.stored_ref(now, now_ms, bridge),
                )?);
                stored.push(i);
            }
            if !ops.is_empty() {
                let submitted = store.submit(ops).await?;
                published.tickets.push(submitted.ticket);
                for (i, seq) in stored.into_iter().zip(submitted.seqs) {
                    seqs[i] = Some(seq);
                }
            }
        }
        let mut queue_ops = Vec::new();
        for (i, (message, seq)) in messages.into_iter().zip(seqs).enumerate() {
            if let Some(bridge) = bridge_of(i) {
                if seq.is_none() {
                    self.metrics.messages_dropped.inc();
                    warn!(bridge, topic = %message.topic, "no store: bridge route dropped");
                }
                continue;
            }
            self.route(message, seq, scratch, &mut queue_ops);
        }
        // Queue records first: a subscriber removes them only after popping the message.
        match self.submit(queue_ops).await {
            Ok(ticket) => published.tickets.extend(ticket),
            Err(err) => {
                scratch.pending.clear();
                return Err(err);
            }
        }
        let mut removed = Vec::new();
        // Policy `backpressure`: one deadline for the whole batch, so a stuck subscriber
        // delays a publish by at most `queue_full_wait`.
        let deadline = tokio::time::Instant::now() + self.config.session.queue_full_wait.0;
        for Pending {
            mailbox,
            client,
            stored,
            item,
        } in scratch.pending.drain(..)
        {
            // A client's publish to its own full queue cannot wait: its own task drains it.
            let item = if mailbox.online.load(Ordering::Acquire)
                && mailbox.overflow == QueueOverflow::Backpressure
                && client != item.message.publisher
            {
                match mailbox.push_when_room(item, deadline).await {
                    None => {
                        published.queued += 1;
                        continue;
                    }
                    Some(item) => item,
                }
            } else {
                item
            };
            let (outcome, discarded) = mailbox.push(item);
            // Only a persistent session's queue has store records to remove.
            removed.extend(discarded.into_iter().filter(|_| stored).map(|seq| {
                WriteOp::QueueRemove {
                    client: client.to_string(),
                    seq,
                }
            }));
            if outcome.dropped() {
                self.metrics.messages_dropped.inc();
                if let Some(total) = mailbox.count_drop() {
                    warn!(
                        client_id = %client,
                        policy = ?self.config.session.queue_overflow,
                        dropped_total = total,
                        "session queue full; message dropped"
                    );
                }
            } else {
                published.queued += 1;
            }
        }
        self.submit_logged(removed, "queue overflow").await;
        Ok(published)
    }

    /// Updates the retained store and computes the deliveries of one message into
    /// `scratch.pending`; QoS 1/2 deliveries to stored sessions add a queue record to
    /// `queue_ops` and carry the message's `seq`.
    fn route(
        &self,
        message: Message,
        seq: Option<Seq>,
        scratch: &mut PublishScratch,
        queue_ops: &mut Vec<WriteOp>,
    ) {
        let message = Arc::new(message);
        if message.retain {
            let mut retained = self.lock_retained();
            if message.payload.is_empty() {
                retained.clear(&message.topic);
            } else {
                retained.set(&message.topic, Arc::clone(&message));
            }
        }
        let targets = &mut scratch.targets;
        targets.clear();
        {
            let mut guard = self.lock();
            let State {
                router,
                sessions,
                deliveries,
            } = &mut *guard;
            let is_online = |k: &ClientId| sessions.get(k).is_some_and(|e| e.connection.is_some());
            router.route(&message.topic, &message.publisher, &is_online, deliveries);
            for delivery in deliveries.drain(..) {
                if let Some(entry) = sessions.get(&delivery.client) {
                    targets.push(Target {
                        mailbox: Arc::clone(&entry.mailbox),
                        online: entry.connection.is_some(),
                        stored: entry.stored,
                        delivery,
                    });
                }
            }
        }
        for Target {
            mailbox,
            online,
            stored,
            delivery,
        } in targets.drain(..)
        {
            let qos = message.qos.min(delivery.qos);
            if !online && qos == QoS::AtMostOnce {
                // QoS 0 is not kept for offline sessions (MQTT 5.0 §3.1.2.4 leaves it open).
                continue;
            }
            // The message's log position: a persistent session's queue records it in the
            // store (tracked); under `queue_in_store` a clean session's queue pages by it too,
            // without a record (its session's task never writes store records).
            let position = seq.filter(|_| qos != QoS::AtMostOnce);
            let tracked = position.filter(|_| stored);
            let item = QueuedMessage {
                message: Arc::clone(&message),
                qos,
                retain: message.retain && delivery.retain_as_published,
                subscription_ids: delivery.identifiers.iter().map(u32::from).collect(),
                seq: if stored || self.config.session.queue_in_store {
                    position
                } else {
                    None
                },
                // Acknowledged deliveries of a shared subscription go to another member if
                // this session ends first.
                share: delivery.share.filter(|_| qos != QoS::AtMostOnce),
            };
            if let Some(seq) = tracked {
                queue_ops.push(WriteOp::QueuePush {
                    client: delivery.client.to_string(),
                    seq,
                    delivery: item.delivery_info(),
                });
            }
            scratch.pending.push(Pending {
                mailbox,
                client: delivery.client,
                stored,
                item,
            });
        }
    }

    /// Adds or replaces a subscription and queues the retained messages its retain handling
    /// asks for into `mailbox`.
    pub fn subscribe(
        &self,
        client_id: &ClientId,
        mailbox: &Mailbox,
        filter: &str,
        options: SubscriptionOptions,
    ) -> Result<SubscribeOutcome, RouterError> {
        let outcome = self
            .lock()
            .router
            .subscribe(Arc::clone(client_id), filter, options)?;
        let send_retained = match options.retain_handling {
            RetainHandling::SendAlways => true,
            RetainHandling::SendIfNew => outcome.is_new(),
            RetainHandling::Never => false,
        };
        // Retained messages are not sent for shared subscriptions (MQTT 5.0 §4.8.2).
        let shared = TopicFilter::parse(filter).is_ok_and(|f| f.is_shared());
        if send_retained && !shared {
            let mut matched = Vec::new();
            self.lock_retained().matching(filter, &mut matched)?;
            let now = Instant::now();
            for message in matched {
                if message.is_expired(now) {
                    continue;
                }
                let item = QueuedMessage {
                    qos: message.qos.min(options.qos),
                    retain: true,
                    subscription_ids: options.identifier.into_iter().map(u32::from).collect(),
                    message,
                    seq: None,
                    share: None,
                };
                let (outcome, discarded) = mailbox.push(item);
                if !discarded.is_empty() {
                    // Tracked entries the queue dropped; the session removes their records.
                    mailbox.queue().return_discarded(discarded);
                }
                if outcome.dropped() {
                    self.metrics.messages_dropped.inc();
                    if let Some(total) = mailbox.count_drop() {
                        warn!(%client_id, dropped_total = total, "session queue full; retained message dropped");
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// How many subscriptions `client_id` holds, and whether one of them is `filter` (a
    /// SUBSCRIBE of it replaces rather than adds). For `max_subscriptions_per_client`.
    pub fn subscription_count(&self, client_id: &ClientId, filter: &str) -> (usize, bool) {
        let guard = self.lock();
        let mut count = 0;
        let mut present = false;
        for subscription in guard.router.subscriptions_of(client_id) {
            count += 1;
            present |= subscription.filter == filter;
        }
        (count, present)
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&self, client_id: &ClientId, filter: &str) -> bool {
        self.lock().router.unsubscribe(client_id, filter)
    }

    /// Samples the gauges for `$SYS`.
    pub fn gauges(&self) -> BrokerGauges {
        let (sessions, subscriptions) = {
            let guard = self.lock();
            (guard.sessions.len(), guard.router.len())
        };
        let retained = self.lock_retained().len();
        BrokerGauges {
            sessions: u64::try_from(sessions).unwrap_or(u64::MAX),
            retained: u64::try_from(retained).unwrap_or(u64::MAX),
            subscriptions: u64::try_from(subscriptions).unwrap_or(u64::MAX),
        }
    }

    /// Every session, connected or not, sorted by client id (admin API `GET /clients`).
    pub fn clients(&self) -> Vec<ClientSummary> {
        let guard = self.lock();
        let mut clients: Vec<ClientSummary> = guard
            .sessions
            .iter()
            .map(|(client_id, entry)| ClientSummary {
                client_id: client_id.to_string(),
                protocol_level: entry.protocol_level,
                connected: entry.connection.is_some(),
                peer: entry
                    .connection
                    .as_ref()
                    .and_then(|c| c.peer.get().copied()),
                connected_since: entry.connection.as_ref().map(|c| c.since),
                subscriptions: guard.router.subscriptions_of(client_id).count(),
                queued: entry.mailbox.queue().len(),
            })
            .collect();
        drop(guard);
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    /// Closes `client_id`'s connection for an operator (v5: DISCONNECT 0x98
    /// Administrative action). Returns whether the client was connected.
    pub fn evict(&self, client_id: &str) -> bool {
        let guard = self.lock();
        let connection = guard
            .sessions
            .get(client_id)
            .and_then(|entry| entry.connection.as_ref());
        match connection {
            Some(connection) => {
                connection.evict.cancel();
                info!(client_id, "client disconnected by an operator");
                true
            }
            None => false,
        }
    }

    /// The `$SYS/broker/...` topics of the registered sources (the bridges), for the
    /// metrics endpoint: the same values the `$SYS` publisher sends.
    pub fn sys_source_topics(&self) -> Vec<(String, String)> {
        let sources = self.lock_sys_sources().clone();
        let mut topics = Vec::new();
        for source in sources {
            source.sys_topics(&mut topics);
        }
        topics
    }

    /// Registers another publisher of `$SYS/broker/...` topics (e.g. a bridge's status).
    pub fn add_sys_source(&self, source: Arc<dyn crate::metrics::SysSource>) {
        self.lock_sys_sources().push(source);
    }

    fn lock_sys_sources(&self) -> MutexGuard<'_, Vec<Arc<dyn crate::metrics::SysSource>>> {
        self.sys_sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes the `$SYS/broker/...` counters as retained messages every `sys_interval`
    /// until shutdown.
    pub async fn run_sys_publisher(self: Arc<Self>) {
        let period = self.config.session.sys_interval.0;
        if period.is_zero() {
            return;
        }
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.triggered() => return,
                _ = ticker.tick() => {}
            }
            let stats = self.store.as_ref().map(Store::stats);
            let mut topics: Vec<(String, String)> = self
                .metrics
                .sys_topics(self.gauges(), stats)
                .into_iter()
                .map(|(topic, value)| (topic.to_owned(), value))
                .collect();
            let sources = self.lock_sys_sources().clone();
            for source in sources {
                source.sys_topics(&mut topics);
            }
            for (topic, value) in topics {
                self.publish(Message {
                    topic,
                    payload: Bytes::from(value),
                    qos: QoS::AtMostOnce,
                    retain: true,
                    properties: MessageProperties::default(),
                    expiry: None,
                    publisher: ClientId::from(""),
                })
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> Arc<Broker> {
        Arc::new(Broker::new(Config::default(), Shutdown::new()))
    }

    fn message(topic: &str, qos: QoS) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"m"),
            qos,
            retain: false,
            properties: MessageProperties::default(),
            expiry: None,
            publisher: ClientId::from("publisher"),
        }
    }

    fn options(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    fn drain(mailbox: &Mailbox) -> Vec<(String, QoS)> {
        let mut expired = 0;
        std::iter::from_fn(|| mailbox.pop(Instant::now(), &mut expired))
            .map(|item| (item.message.topic.clone(), item.qos))
            .collect()
    }

    fn request(clean_start: bool) -> AttachRequest {
        AttachRequest {
            clean_start,
            session_expiry: 60,
            protocol_level: 5,
        }
    }

    async fn detach(
        broker: &Arc<Broker>,
        id: &ClientId,
        attached: &Attached,
        expiry: u32,
        will: Option<Will>,
    ) {
        broker
            .detach(
                id,
                &attached.connection,
                Detach {
                    state: SessionState::default(),
                    session_expiry: expiry,
                    will,
                    discarded_will: None,
                },
            )
            .await;
    }

    fn will(topic: &str, delay_secs: u32) -> Will {
        Will {
            message: message(topic, QoS::AtLeastOnce),
            delay_secs,
            expiry_secs: None,
            token: 0,
        }
    }

    #[tokio::test]
    async fn fan_out_downgrades_qos_and_skips_qos0_for_offline_sessions() {
        let broker = broker();
        let (online, offline) = (ClientId::from("online"), ClientId::from("offline"));
        let a = broker.attach(&online, request(true), None).await;
        let b = broker.attach(&offline, request(true), None).await;
        broker
            .subscribe(&online, &a.mailbox, "t/#", options(QoS::AtMostOnce))
            .expect("valid");
        broker
            .subscribe(&offline, &b.mailbox, "t/#", options(QoS::ExactlyOnce))
            .expect("valid");
        detach(&broker, &offline, &b, 60, None).await;

        broker.publish(message("t/1", QoS::AtLeastOnce)).await;
        broker.publish(message("t/0", QoS::AtMostOnce)).await;

        assert_eq!(
            drain(&a.mailbox),
            [
                ("t/1".into(), QoS::AtMostOnce),
                ("t/0".into(), QoS::AtMostOnce)
            ]
        );
        let resumed = broker.attach(&offline, request(false), None).await;
        assert!(resumed.session_present);
        assert_eq!(drain(&resumed.mailbox), [("t/1".into(), QoS::AtLeastOnce)]);
    }

    #[tokio::test]
    async fn session_with_zero_expiry_ends_at_detach() {
        let broker = broker();
        let id = ClientId::from("c");
        let attached = broker.attach(&id, request(false), None).await;
        broker
            .subscribe(&id, &attached.mailbox, "a", options(QoS::AtLeastOnce))
            .expect("valid");
        detach(&broker, &id, &attached, 0, None).await;
        assert_eq!(broker.gauges().sessions, 0);
        assert_eq!(broker.gauges().subscriptions, 0);
        assert!(
            !broker
                .attach(&id, request(false), None)
                .await
                .session_present
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_will_is_published_after_its_delay() {
        let broker = broker();
        let (watcher, dying) = (ClientId::from("watcher"), ClientId::from("dying"));
        let w = broker.attach(&watcher, request(true), None).await;
        broker
            .subscribe(&watcher, &w.mailbox, "will/#", options(QoS::AtLeastOnce))
            .expect("ok");
        let d = broker.attach(&dying, request(false), None).await;
        detach(&broker, &dying, &d, 3600, Some(will("will/dying", 10))).await;

        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(drain(&w.mailbox).is_empty(), "will sent before its delay");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(drain(&w.mailbox), [("will/dying".into(), QoS::AtLeastOnce)]);
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_within_will_delay_cancels_the_will() {
        let broker = broker();
        let (watcher, flaky) = (ClientId::from("watcher"), ClientId::from("flaky"));
        let w = broker.attach(&watcher, request(true), None).await;
        broker
            .subscribe(&watcher, &w.mailbox, "will/#", options(QoS::AtLeastOnce))
            .expect("ok");
        let first = broker.attach(&flaky, request(false), None).await;
        detach(&broker, &flaky, &first, 3600, Some(will("will/flaky", 10))).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let again = broker.attach(&flaky, request(false), None).await;
        assert!(again.session_present);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(drain(&w.mailbox).is_empty(), "cancelled will was published");
    }

    #[tokio::test(start_paused = true)]
    async fn session_expiry_ends_session_and_sends_pending_will() {
        let broker = broker();
        let (watcher, gone) = (ClientId::from("watcher"), ClientId::from("gone"));
        let w = broker.attach(&watcher, request(true), None).await;
        broker
            .subscribe(&watcher, &w.mailbox, "will/#", options(QoS::AtLeastOnce))
            .expect("ok");
        let g = broker.attach(&gone, request(false), None).await;
        broker
            .subscribe(&gone, &g.mailbox, "x", options(QoS::AtLeastOnce))
            .expect("ok");
        detach(&broker, &gone, &g, 5, Some(will("will/gone", 60))).await;

        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(drain(&w.mailbox), [("will/gone".into(), QoS::AtLeastOnce)]);
        assert_eq!(
            broker.gauges().sessions,
            1,
            "only the watcher's session is left"
        );
        assert!(
            !broker
                .attach(&gone, request(false), None)
                .await
                .session_present
        );
    }

    #[tokio::test]
    async fn takeover_kicks_the_connected_client_and_waits_for_it() {
        let broker = broker();
        let id = ClientId::from("dup");
        let first = broker.attach(&id, request(false), None).await;
        let kicked = first.connection.kick.clone();
        let waiter = {
            let broker = Arc::clone(&broker);
            let id = Arc::clone(&id);
            tokio::spawn(async move {
                broker
                    .attach(&id, request(false), None)
                    .await
                    .session_present
            })
        };
        kicked.cancelled().await;
        detach(&broker, &id, &first, 60, None).await;
        assert!(
            waiter.await.expect("attach task"),
            "session resumed after takeover"
        );
    }

    #[tokio::test]
    async fn retained_messages_follow_retain_handling() {
        let broker = broker();
        let id = ClientId::from("sub");
        let s = broker.attach(&id, request(true), None).await;
        broker
            .publish(Message {
                retain: true,
                ..message("r/1", QoS::AtLeastOnce)
            })
            .await;

        let send_if_new = SubscriptionOptions {
            retain_handling: RetainHandling::SendIfNew,
            ..options(QoS::AtLeastOnce)
        };
        broker
            .subscribe(&id, &s.mailbox, "r/#", send_if_new)
            .expect("ok");
        assert_eq!(
            drain(&s.mailbox).len(),
            1,
            "new subscription gets the retained message"
        );
        broker
            .subscribe(&id, &s.mailbox, "r/#", send_if_new)
            .expect("ok");
        assert!(
            drain(&s.mailbox).is_empty(),
            "existing subscription does not"
        );

        broker
            .publish(Message {
                retain: true,
                payload: Bytes::new(),
                ..message("r/1", QoS::AtMostOnce)
            })
            .await;
        let _live_clear = drain(&s.mailbox);
        broker
            .subscribe(&id, &s.mailbox, "r/+", options(QoS::AtLeastOnce))
            .expect("ok");
        assert!(
            drain(&s.mailbox).is_empty(),
            "empty retained payload cleared the topic"
        );
        assert_eq!(broker.gauges().retained, 0);
    }

    /// A persistent session's subscription and queued messages come back from the store
    /// in a new broker.
    #[tokio::test]
    async fn stored_session_is_restored_by_a_new_broker() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = || {
            crate::store::Store::open(dir.path(), crate::store::StoreConfig::default())
                .expect("open store")
        };
        let id = ClientId::from("sub");
        {
            let (store, recovered) = open();
            assert!(recovered.sessions.is_empty());
            let stop = Shutdown::new();
            let broker = Arc::new(Broker::with_store(
                Config::default(),
                stop.clone(),
                store.clone(),
            ));
            let s = broker.attach(&id, request(true), None).await;
            assert!(s.stored);
            broker
                .subscribe(&id, &s.mailbox, "t/#", options(QoS::AtLeastOnce))
                .expect("valid");
            let ticket = broker.persist_session(&id).await.expect("persist");
            detach(&broker, &id, &s, 3600, None).await;
            let mut scratch = PublishScratch::default();
            let mut tickets = Vec::new();
            for topic in ["t/1", "t/2"] {
                let published = broker
                    .publish_batch(
                        vec![message(topic, QoS::AtLeastOnce)],
                        Vec::new(),
                        &mut scratch,
                    )
                    .await
                    .expect("stored");
                assert_eq!(published.tickets.len(), 2, "append and queue submissions");
                tickets.extend(published.tickets);
            }
            for t in ticket.into_iter().chain(tickets) {
                store.wait_durable(t).await.expect("durable");
            }
            // The expiry timer holds the broker (and its store handle) until shutdown.
            stop.trigger();
            stop.wait_for_tasks().await;
            drop(broker);
            store.close().expect("close");
        }
        let (store, recovered) = open();
        assert_eq!(recovered.sessions.len(), 1);
        let broker = Arc::new(Broker::with_store(
            Config::default(),
            Shutdown::new(),
            store,
        ));
        let summary = broker.restore(recovered).await.expect("restore");
        assert_eq!((summary.sessions, summary.queued), (1, 2));
        let resumed = broker.attach(&id, request(false), None).await;
        assert!(resumed.session_present);
        assert_eq!(
            drain(&resumed.mailbox),
            [
                ("t/1".into(), QoS::AtLeastOnce),
                ("t/2".into(), QoS::AtLeastOnce)
            ]
        );
        assert_eq!(broker.gauges().subscriptions, 1, "subscription restored");
    }
}
