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
//! # Store hook
//!
//! The durable store (a later module) appends the message in [`Broker::publish`] before it
//! returns; the session sends PUBACK/PUBREC only after `publish` returns, so acknowledged
//! means stored.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_mqtt::QoS;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::message::{ClientId, Message, MessageProperties, QueuedMessage};
use crate::metrics::{BrokerGauges, Metrics};
use crate::router::{
    Delivery, RetainHandling, RetainedStore, RouterError, SubscribeOutcome, SubscriptionOptions,
    SubscriptionTree, TopicFilter,
};
use crate::session::queue::{PushOutcome, SessionQueue};
use crate::session::state::SessionState;
use crate::shutdown::Shutdown;

/// How long a new connection waits for the connection it takes over to park its session.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Inbox of one session: queued messages plus the wake-up of its connection task.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<SessionQueue>,
    /// Woken after every push; the connection task drains the queue.
    pub notify: Notify,
    /// Messages this session lost to queue overflow; drives the rate-limited log line.
    dropped: AtomicU64,
}

impl Mailbox {
    fn new(config: &Config) -> Self {
        Self {
            queue: Mutex::new(SessionQueue::new(
                config.session.max_queued_messages,
                config.session.queue_overflow,
            )),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Locks the queue. Held only for pushes and pops, never across `.await`.
    pub fn queue(&self) -> MutexGuard<'_, SessionQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, item: QueuedMessage) -> PushOutcome {
        let outcome = self.queue().push(item);
        self.notify.notify_one();
        outcome
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
}

impl Will {
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

/// One session in the registry.
#[derive(Debug)]
struct SessionEntry {
    mailbox: Arc<Mailbox>,
    connection: Option<ConnectionRef>,
    /// In-flight state of an offline persistent session.
    parked: Option<SessionState>,
    /// Bumped on every attach and detach; timers compare it to know they are stale.
    generation: u64,
    /// A will waiting for its delay to pass (cancelled by a reconnect).
    pending_will: Option<Will>,
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
}

/// One session a message is routed to.
#[derive(Debug)]
struct Target {
    mailbox: Arc<Mailbox>,
    online: bool,
    delivery: Delivery<ClientId>,
}

/// Reusable buffer for [`Broker::publish_with`]; one per session task.
#[derive(Debug, Default)]
pub struct PublishScratch {
    targets: Vec<Target>,
}

/// Everything the hub shares between tasks.
pub struct Broker {
    config: Config,
    metrics: Metrics,
    shutdown: Shutdown,
    state: Mutex<State>,
    retained: Mutex<RetainedStore<Arc<Message>>>,
    next_connection_id: AtomicU64,
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
        }
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

    /// A fresh unique client identifier for a client that sent an empty one.
    pub fn assign_client_id(&self) -> String {
        let n = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        format!("tern-{n:x}-{:x}", std::process::id())
    }

    /// Attaches a new connection to `client_id`'s session, taking it over from a connected
    /// client first. `clean_start` discards any existing session.
    pub async fn attach(self: &Arc<Self>, client_id: &ClientId, clean_start: bool) -> Attached {
        let connection = ConnectionRef {
            id: self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            kick: CancellationToken::new(),
            gone: CancellationToken::new(),
        };
        loop {
            let wait_for = {
                let mut guard = self.lock();
                let state = &mut *guard;
                match state.sessions.get_mut(client_id) {
                    Some(entry) if entry.connection.is_some() => entry.connection.clone(),
                    Some(entry) if !clean_start => {
                        entry.generation += 1;
                        entry.pending_will = None;
                        entry.connection = Some(connection.clone());
                        return Attached {
                            mailbox: Arc::clone(&entry.mailbox),
                            state: entry.parked.take().unwrap_or_default(),
                            session_present: true,
                            connection,
                        };
                    }
                    existing => {
                        // New session (or clean start over an offline one).
                        let ended_will = existing.and_then(|e| e.pending_will.take());
                        if state.sessions.remove(client_id).is_some() {
                            state.router.remove_client(client_id);
                        }
                        let mailbox = Arc::new(Mailbox::new(&self.config));
                        state.sessions.insert(
                            Arc::clone(client_id),
                            SessionEntry {
                                mailbox: Arc::clone(&mailbox),
                                connection: Some(connection.clone()),
                                parked: None,
                                generation: 0,
                                pending_will: None,
                            },
                        );
                        drop(guard);
                        if let Some(will) = ended_will {
                            // The old session ended now: its delayed will goes out.
                            self.publish(will.into_message());
                        }
                        return Attached {
                            mailbox,
                            state: SessionState::default(),
                            session_present: false,
                            connection,
                        };
                    }
                }
            };
            if let Some(old) = wait_for {
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
        }
    }

    /// Detaches a connection: parks or ends its session and schedules will and expiry.
    pub fn detach(
        self: &Arc<Self>,
        client_id: &ClientId,
        connection: &ConnectionRef,
        detach: Detach,
    ) {
        let Detach {
            state: session_state,
            session_expiry,
            will,
        } = detach;
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(entry) = state.sessions.get_mut(client_id) else {
            drop(guard);
            connection.gone.cancel();
            if let Some(will) = will {
                self.publish(will.into_message());
            }
            return;
        };
        if entry.connection.as_ref().map(|c| c.id) != Some(connection.id) {
            // Already replaced (takeover with clean start); only the will remains ours.
            drop(guard);
            connection.gone.cancel();
            if let Some(will) = will {
                self.publish(will.into_message());
            }
            return;
        }
        entry.connection = None;
        entry.generation += 1;
        let generation = entry.generation;
        if session_expiry == 0 {
            state.sessions.remove(client_id);
            state.router.remove_client(client_id);
            drop(guard);
            connection.gone.cancel();
            if let Some(will) = will {
                self.publish(will.into_message());
            }
            return;
        }
        entry.mailbox.queue().retain_qos_above_zero();
        entry.parked = Some(session_state);
        let immediate_will = match will {
            Some(will) if will.delay_secs > 0 && will.delay_secs.min(session_expiry) > 0 => {
                let delay = Duration::from_secs(u64::from(will.delay_secs.min(session_expiry)));
                entry.pending_will = Some(will);
                self.spawn_will_timer(Arc::clone(client_id), generation, delay);
                None
            }
            other => other,
        };
        drop(guard);
        connection.gone.cancel();
        if let Some(will) = immediate_will {
            self.publish(will.into_message());
        }
        if session_expiry != u32::MAX {
            self.spawn_expiry_timer(
                Arc::clone(client_id),
                generation,
                Duration::from_secs(u64::from(session_expiry)),
            );
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
                broker.publish(will.into_message());
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
            let will = {
                let mut guard = broker.lock();
                let state = &mut *guard;
                let current = state
                    .sessions
                    .get(&client_id)
                    .is_some_and(|e| e.generation == generation);
                if !current {
                    return;
                }
                let will = state
                    .sessions
                    .remove(&client_id)
                    .and_then(|e| e.pending_will);
                state.router.remove_client(&client_id);
                will
            };
            debug!(%client_id, "session expired");
            if let Some(will) = will {
                broker.publish(will.into_message());
            }
        });
    }

    /// Routes a message to every matching subscriber and updates the retained store.
    /// Returns how many sessions it was queued for.
    ///
    /// The durable store appends here (before the caller acknowledges the publish).
    pub fn publish(&self, message: Message) -> usize {
        self.publish_with(message, &mut PublishScratch::default())
    }

    /// [`Broker::publish`] with a caller-owned scratch buffer, reused across publishes so the
    /// hot path does not allocate per message.
    pub fn publish_with(&self, message: Message, scratch: &mut PublishScratch) -> usize {
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
                        delivery,
                    });
                }
            }
        }
        let mut queued = 0;
        for Target {
            mailbox,
            online,
            delivery,
        } in targets.drain(..)
        {
            let qos = message.qos.min(delivery.qos);
            if !online && qos == QoS::AtMostOnce {
                // QoS 0 is not kept for offline sessions (MQTT 5.0 §3.1.2.4 leaves it open).
                continue;
            }
            let item = QueuedMessage {
                message: Arc::clone(&message),
                qos,
                retain: message.retain && delivery.retain_as_published,
                subscription_ids: delivery.identifiers.iter().map(u32::from).collect(),
            };
            if mailbox.push(item).dropped() {
                self.metrics.messages_dropped.inc();
                if let Some(total) = mailbox.count_drop() {
                    warn!(
                        client_id = %delivery.client,
                        policy = ?self.config.session.queue_overflow,
                        dropped_total = total,
                        "session queue full; message dropped"
                    );
                }
            } else {
                queued += 1;
            }
        }
        queued
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
                };
                if mailbox.push(item).dropped() {
                    self.metrics.messages_dropped.inc();
                    if let Some(total) = mailbox.count_drop() {
                        warn!(%client_id, dropped_total = total, "session queue full; retained message dropped");
                    }
                }
            }
        }
        Ok(outcome)
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
            for (topic, value) in self.metrics.sys_topics(self.gauges()) {
                self.publish(Message {
                    topic: topic.to_owned(),
                    payload: Bytes::from(value),
                    qos: QoS::AtMostOnce,
                    retain: true,
                    properties: MessageProperties::default(),
                    expiry: None,
                    publisher: ClientId::from(""),
                });
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
        let mut queue = mailbox.queue();
        std::iter::from_fn(|| queue.pop(Instant::now(), &mut expired))
            .map(|item| (item.message.topic.clone(), item.qos))
            .collect()
    }

    fn detach(
        broker: &Arc<Broker>,
        id: &ClientId,
        attached: &Attached,
        expiry: u32,
        will: Option<Will>,
    ) {
        broker.detach(
            id,
            &attached.connection,
            Detach {
                state: SessionState::default(),
                session_expiry: expiry,
                will,
            },
        );
    }

    fn will(topic: &str, delay_secs: u32) -> Will {
        Will {
            message: message(topic, QoS::AtLeastOnce),
            delay_secs,
            expiry_secs: None,
        }
    }

    #[tokio::test]
    async fn fan_out_downgrades_qos_and_skips_qos0_for_offline_sessions() {
        let broker = broker();
        let (online, offline) = (ClientId::from("online"), ClientId::from("offline"));
        let a = broker.attach(&online, true).await;
        let b = broker.attach(&offline, true).await;
        broker
            .subscribe(&online, &a.mailbox, "t/#", options(QoS::AtMostOnce))
            .expect("valid");
        broker
            .subscribe(&offline, &b.mailbox, "t/#", options(QoS::ExactlyOnce))
            .expect("valid");
        detach(&broker, &offline, &b, 60, None);

        broker.publish(message("t/1", QoS::AtLeastOnce));
        broker.publish(message("t/0", QoS::AtMostOnce));

        assert_eq!(
            drain(&a.mailbox),
            [
                ("t/1".into(), QoS::AtMostOnce),
                ("t/0".into(), QoS::AtMostOnce)
            ]
        );
        let resumed = broker.attach(&offline, false).await;
        assert!(resumed.session_present);
        assert_eq!(drain(&resumed.mailbox), [("t/1".into(), QoS::AtLeastOnce)]);
    }

    #[tokio::test]
    async fn session_with_zero_expiry_ends_at_detach() {
        let broker = broker();
        let id = ClientId::from("c");
        let attached = broker.attach(&id, false).await;
        broker
            .subscribe(&id, &attached.mailbox, "a", options(QoS::AtLeastOnce))
            .expect("valid");
        detach(&broker, &id, &attached, 0, None);
        assert_eq!(broker.gauges().sessions, 0);
        assert_eq!(broker.gauges().subscriptions, 0);
        assert!(!broker.attach(&id, false).await.session_present);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_will_is_published_after_its_delay() {
        let broker = broker();
        let (watcher, dying) = (ClientId::from("watcher"), ClientId::from("dying"));
        let w = broker.attach(&watcher, true).await;
        broker
            .subscribe(&watcher, &w.mailbox, "will/#", options(QoS::AtLeastOnce))
            .expect("ok");
        let d = broker.attach(&dying, false).await;
        detach(&broker, &dying, &d, 3600, Some(will("will/dying", 10)));

        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(drain(&w.mailbox).is_empty(), "will sent before its delay");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(drain(&w.mailbox), [("will/dying".into(), QoS::AtLeastOnce)]);
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_within_will_delay_cancels_the_will() {
        let broker = broker();
        let (watcher, flaky) = (ClientId::from("watcher"), ClientId::from("flaky"));
        let w = broker.attach(&watcher, true).await;
        broker
            .subscribe(&watcher, &w.mailbox, "will/#", options(QoS::AtLeastOnce))
            .expect("ok");
        let first = broker.attach(&flaky, false).await;
        detach(&broker, &flaky, &first, 3600, Some(will("will/flaky", 10)));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let again = broker.attach(&flaky, false).await;
        assert!(again.session_present);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(drain(&w.mailbox).is_empty(), "cancelled will was published");
    }

    #[tokio::test(start_paused = true)]
    async fn session_expiry_ends_session_and_sends_pending_will() {
        let broker = broker();
        let (watcher, gone) = (ClientId::from("watcher"), ClientId::from("gone"));
        let w = broker.attach(&watcher, true).await;
        broker
            .subscribe(&watcher, &w.mailbox, "will/#", options(QoS::AtLeastOnce))
            .expect("ok");
        let g = broker.attach(&gone, false).await;
        broker
            .subscribe(&gone, &g.mailbox, "x", options(QoS::AtLeastOnce))
            .expect("ok");
        detach(&broker, &gone, &g, 5, Some(will("will/gone", 60)));

        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(drain(&w.mailbox), [("will/gone".into(), QoS::AtLeastOnce)]);
        assert_eq!(
            broker.gauges().sessions,
            1,
            "only the watcher's session is left"
        );
        assert!(!broker.attach(&gone, false).await.session_present);
    }

    #[tokio::test]
    async fn takeover_kicks_the_connected_client_and_waits_for_it() {
        let broker = broker();
        let id = ClientId::from("dup");
        let first = broker.attach(&id, false).await;
        let kicked = first.connection.kick.clone();
        let waiter = {
            let broker = Arc::clone(&broker);
            let id = Arc::clone(&id);
            tokio::spawn(async move { broker.attach(&id, false).await.session_present })
        };
        kicked.cancelled().await;
        detach(&broker, &id, &first, 60, None);
        assert!(
            waiter.await.expect("attach task"),
            "session resumed after takeover"
        );
    }

    #[tokio::test]
    async fn retained_messages_follow_retain_handling() {
        let broker = broker();
        let id = ClientId::from("sub");
        let s = broker.attach(&id, true).await;
        broker.publish(Message {
            retain: true,
            ..message("r/1", QoS::AtLeastOnce)
        });

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

        broker.publish(Message {
            retain: true,
            payload: Bytes::new(),
            ..message("r/1", QoS::AtMostOnce)
        });
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
}
