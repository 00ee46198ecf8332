//! Transactional (half) messages: RocketMQ's two-phase protocol over MQTT 5
//! (`docs/transactions.md`).
//!
//! # What it owns
//!
//! - The registry of open transactions, keyed by (client id, transaction id) and restored
//!   from the store at start-up: what each has stored, when it was opened and last touched,
//!   how many check requests it got, and whether a commit or rollback is under way (a
//!   transaction is finished by one party at a time).
//! - The limits (`max_open_per_client`, `max_messages`, `max_bytes`) checked when a half
//!   message arrives, so a refusal costs no store write.
//! - Commit and rollback ([`submit`], then [`complete`] once the tickets resolve; [`resolve`]
//!   does both): a commit reads the half messages back from the store and hands them to
//!   [`Broker::publish_batch`] with a [`WriteOp::TxEnd`] in the same submission, so the
//!   filters, the log, retained messages, subscribers and bridges see the whole transaction
//!   in publish order, or nothing of it. The transaction stays reserved until [`complete`].
//! - The check-back task ([`run_checker`]): check requests to `$tern/tx/check/{client id}`
//!   after `check_after`, every `check_interval`, and `on_unresolved` after `max_checks`
//!   unanswered ones or at `max_age`. It works from the stored wall-clock timestamps, so its
//!   timers resume after a restart.
//!
//! The session recognises the packets ([`classify`]) and does the MQTT side (reason codes,
//! acknowledgement after durability); the store keeps the half messages (`store/tx.rs`).

pub mod config;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_mqtt::QoS;
use tracing::{info, warn};

pub use self::config::{TxConfig, Unresolved};
use crate::broker::{Broker, PublishScratch};
use crate::message::{ClientId, Message, MessageProperties};
use crate::metrics::TxMetrics;
use crate::store::{
    OpenTransaction, StoreError, StoredMessage, Ticket, TxRecord, UnixMillis, WriteOp, now_millis,
};

/// User property naming the transaction of a half message (and of a check request).
pub const TX_PROPERTY: &str = "tern-tx";
/// User property by which an ACL-permitted identity names the owner of the transaction it
/// commits or rolls back.
pub const OWNER_PROPERTY: &str = "tern-tx-owner";
/// Topics under this prefix are the hub's: clients publish only commits and rollbacks there
/// and subscribe only to their own check topic.
pub const RESERVED_PREFIX: &str = "$tern/";
/// Prefix of the commit and rollback topics: `$tern/tx/{id}/commit|rollback`.
const CONTROL_PREFIX: &str = "$tern/tx/";
/// Prefix of the check-request topics: `$tern/tx/check/{client id}`.
pub const CHECK_PREFIX: &str = "$tern/tx/check/";
/// Longest transaction id.
pub const MAX_ID_LEN: usize = 64;

/// Whether `id` is a valid transaction id: 1–64 bytes of `[A-Za-z0-9._-]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The check-request topic of `client`.
pub fn check_topic(client: &str) -> String {
    format!("{CHECK_PREFIX}{client}")
}

/// How a producer ends a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Move the half messages into the log.
    Commit,
    /// Delete them.
    Rollback,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Rollback => "rollback",
        }
    }
}

/// What a PUBLISH means to the transaction protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified<'a> {
    /// An ordinary message.
    Plain,
    /// A half message of transaction `tx` (the `tern-tx` property).
    Half {
        /// Transaction id (not yet validated).
        tx: &'a str,
    },
    /// A commit or rollback (`$tern/tx/{tx}/commit|rollback`).
    Control {
        /// Transaction id (not yet validated).
        tx: &'a str,
        /// Which end.
        outcome: Outcome,
        /// The owner named by `tern-tx-owner`, if any.
        owner: Option<&'a str>,
    },
    /// Any other topic under `$tern/`: reserved, refused.
    Reserved,
}

/// Classifies a PUBLISH by its topic and user properties.
pub fn classify<'a>(topic: &'a str, properties: &'a MessageProperties) -> Classified<'a> {
    let property = |name: &str| {
        properties
            .user_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if topic.starts_with(RESERVED_PREFIX) {
        let control = topic
            .strip_prefix(CONTROL_PREFIX)
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(tx, end)| match end {
                "commit" => Some((tx, Outcome::Commit)),
                "rollback" => Some((tx, Outcome::Rollback)),
                _ => None,
            });
        return match control {
            Some((tx, outcome)) if tx != "check" => Classified::Control {
                tx,
                outcome,
                owner: property(OWNER_PROPERTY),
            },
            _ => Classified::Reserved,
        };
    }
    match property(TX_PROPERTY) {
        Some(tx) => Classified::Half { tx },
        None => Classified::Plain,
    }
}

/// Why a half message was refused: its reason code and reason string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client has `max_open_per_client` transactions open (0x97).
    TooManyOpen,
    /// The transaction would exceed `max_messages` or `max_bytes` (0x97).
    TooLarge,
    /// The id is not 1–64 bytes of `[A-Za-z0-9._-]` (0x83).
    InvalidId,
    /// The transaction is being committed or rolled back right now (0x80).
    Ending,
    /// `[transactions] enabled = false` (0x83).
    Disabled,
}

impl Refusal {
    /// MQTT 5 reason code.
    pub fn code(self) -> u8 {
        match self {
            Self::TooManyOpen | Self::TooLarge => 0x97,
            Self::InvalidId | Self::Disabled => 0x83,
            Self::Ending => 0x80,
        }
    }

    /// MQTT 5 reason string.
    pub fn text(self) -> &'static str {
        match self {
            Self::TooManyOpen => "too many open transactions",
            Self::TooLarge => "transaction too large",
            Self::InvalidId => "invalid transaction id",
            Self::Ending => "transaction is being finished",
            Self::Disabled => "transactions are disabled",
        }
    }

    fn count(self, metrics: &TxMetrics) {
        match self {
            Self::TooManyOpen => metrics.refused_too_many_open.inc(),
            Self::TooLarge => metrics.refused_too_large.inc(),
            Self::InvalidId | Self::Disabled => metrics.refused_invalid.inc(),
            Self::Ending => metrics.refused_unknown.inc(),
        }
    }
}

/// One transaction: the client that opened it and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey {
    /// Client that opened it.
    pub client: String,
    /// Transaction id.
    pub tx: String,
}

/// Result of [`Transactions::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The requester's own transaction, now reserved for it: call [`resolve`].
    Own(TxKey),
    /// Another client's transaction (not reserved): the requester may end it only if the
    /// ACL allows it, through [`Transactions::take`].
    Foreign(TxKey),
    /// Open under several other clients and no `tern-tx-owner` given.
    Ambiguous,
    /// No such open transaction (never opened, or already finished).
    Unknown,
    /// Being committed or rolled back by someone else right now.
    Busy,
}

#[derive(Debug)]
struct OpenTx {
    record: TxRecord,
    /// A commit or rollback is under way.
    ending: bool,
}

#[derive(Debug, Default)]
struct Registry {
    open: HashMap<TxKey, OpenTx>,
    per_client: HashMap<String, usize>,
}

impl Registry {
    fn remove(&mut self, key: &TxKey) -> bool {
        if self.open.remove(key).is_none() {
            return false;
        }
        if let Some(n) = self.per_client.get_mut(&key.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&key.client);
            }
        }
        true
    }
}

/// Why the policy ended a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyReason {
    /// `max_checks` check requests went unanswered.
    Unanswered,
    /// The transaction is older than `max_age`.
    MaxAge,
}

/// What the check-back task does next for one transaction ([`Transactions::due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Send a check request; `record` is the transaction's state with it counted.
    Check {
        /// The transaction.
        key: TxKey,
        /// Its record including this check.
        record: TxRecord,
    },
    /// Apply `on_unresolved` (the transaction is reserved for it).
    Policy {
        /// The transaction.
        key: TxKey,
        /// Why.
        reason: PolicyReason,
    },
}

/// The registry of open transactions and the limits (see the module docs).
#[derive(Debug)]
pub struct Transactions {
    config: TxConfig,
    registry: Mutex<Registry>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Transactions {
    /// An empty registry.
    pub fn new(config: TxConfig) -> Self {
        Self {
            config,
            registry: Mutex::new(Registry::default()),
        }
    }

    /// The `[transactions]` configuration.
    pub fn config(&self) -> &TxConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads the transactions the store holds open (at start-up, before connections).
    pub fn restore(&self, open: Vec<OpenTransaction>) -> usize {
        let mut registry = self.lock();
        let n = open.len();
        for o in open {
            *registry.per_client.entry(o.client.clone()).or_default() += 1;
            registry.open.insert(
                TxKey {
                    client: o.client,
                    tx: o.tx,
                },
                OpenTx {
                    record: o.record,
                    ending: false,
                },
            );
        }
        n
    }

    /// Transactions open now.
    pub fn open_count(&self) -> usize {
        self.lock().open.len()
    }

    /// Accepts `message` as a half message of `(client, tx)` received at `now_ms`, or says
    /// why not. On success returns the store op (the message without its `tern-tx`
    /// property) and counts it; a refusal is counted too.
    pub fn prepare(
        &self,
        client: &str,
        tx: &str,
        message: &Message,
        now_ms: UnixMillis,
        metrics: &TxMetrics,
    ) -> Result<WriteOp, Refusal> {
        let result = self.try_prepare(client, tx, message, now_ms, metrics);
        if let Err(refusal) = result {
            refusal.count(metrics);
        }
        result
    }

    fn try_prepare(
        &self,
        client: &str,
        tx: &str,
        message: &Message,
        now_ms: UnixMillis,
        metrics: &TxMetrics,
    ) -> Result<WriteOp, Refusal> {
        if !self.config.enabled {
            return Err(Refusal::Disabled);
        }
        if !valid_id(tx) {
            return Err(Refusal::InvalidId);
        }
        let size = u64::try_from(message.topic.len() + message.payload.len()).unwrap_or(u64::MAX);
        let key = TxKey {
            client: client.to_owned(),
            tx: tx.to_owned(),
        };
        let mut registry = self.lock();
        let record = match registry.open.get_mut(&key) {
            Some(open) if open.ending => return Err(Refusal::Ending),
            Some(open) => {
                let r = &mut open.record;
                if r.messages >= self.config.max_messages
                    || r.bytes.saturating_add(size) > self.config.max_bytes.0
                {
                    return Err(Refusal::TooLarge);
                }
                r.messages += 1;
                r.bytes += size;
                r.last_ms = now_ms;
                r.checks = 0;
                r.last_check_ms = None;
                *r
            }
            None => {
                let held = registry.per_client.get(client).copied().unwrap_or(0);
                if held >= self.config.max_open_per_client {
                    return Err(Refusal::TooManyOpen);
                }
                if size > self.config.max_bytes.0 {
                    return Err(Refusal::TooLarge);
                }
                let record = TxRecord {
                    opened_ms: now_ms,
                    last_ms: now_ms,
                    messages: 1,
                    bytes: size,
                    checks: 0,
                    last_check_ms: None,
                };
                *registry.per_client.entry(key.client.clone()).or_default() += 1;
                registry.open.insert(
                    key.clone(),
                    OpenTx {
                        record,
                        ending: false,
                    },
                );
                metrics.opened.inc();
                record
            }
        };
        drop(registry);
        metrics.half_messages.inc();
        let mut stored = StoredMessage::from_message(message, now_ms);
        stored
            .properties
            .user_properties
            .retain(|(k, _)| k != TX_PROPERTY);
        Ok(WriteOp::TxHalf {
            client: key.client,
            tx: key.tx,
            index: record.messages - 1,
            message: stored,
            record,
        })
    }

    /// Finds the transaction `requester` asks to end: its own `tx` (or the one of
    /// `owner`, when named), reserving it when it is the requester's own.
    pub fn claim(&self, requester: &str, tx: &str, owner: Option<&str>) -> Claim {
        if !valid_id(tx) {
            return Claim::Unknown;
        }
        let mut registry = self.lock();
        let key = TxKey {
            client: owner.unwrap_or(requester).to_owned(),
            tx: tx.to_owned(),
        };
        if let Some(open) = registry.open.get_mut(&key) {
            if open.ending {
                return Claim::Busy;
            }
            if key.client == requester {
                open.ending = true;
                return Claim::Own(key);
            }
            return Claim::Foreign(key);
        }
        if owner.is_some() {
            return Claim::Unknown;
        }
        let mut others = registry.open.keys().filter(|k| k.tx == tx);
        match (others.next(), others.next()) {
            (Some(key), None) => Claim::Foreign(key.clone()),
            (Some(_), Some(_)) => Claim::Ambiguous,
            (None, _) => Claim::Unknown,
        }
    }

    /// Reserves `key` for ending (an ACL-permitted foreign request); false if it is gone
    /// or already being ended.
    pub fn take(&self, key: &TxKey) -> bool {
        match self.lock().open.get_mut(key) {
            Some(open) if !open.ending => {
                open.ending = true;
                true
            }
            _ => false,
        }
    }

    /// Gives a reservation back (the commit or rollback failed; the transaction stays open).
    fn release(&self, key: &TxKey) {
        if let Some(open) = self.lock().open.get_mut(key) {
            open.ending = false;
        }
    }

    /// Forgets a finished transaction.
    fn finish(&self, key: &TxKey) {
        self.lock().remove(key);
    }

    /// What the check-back task must do at `now_ms`: check requests due (counted in the
    /// registry) and transactions the policy applies to (reserved).
    pub fn due(&self, now_ms: UnixMillis) -> Vec<Due> {
        let c = &self.config;
        let mut out = Vec::new();
        let mut registry = self.lock();
        for (key, open) in &mut registry.open {
            if open.ending {
                continue;
            }
            let r = &mut open.record;
            if now_ms.saturating_sub(r.opened_ms) >= millis(c.max_age.0) {
                open.ending = true;
                out.push(Due::Policy {
                    key: key.clone(),
                    reason: PolicyReason::MaxAge,
                });
                continue;
            }
            let next = match r.last_check_ms {
                None => r.last_ms.saturating_add(millis(c.check_after.0)),
                Some(last) => last.saturating_add(millis(c.check_interval.0)),
            };
            if now_ms < next {
                continue;
            }
            if r.checks >= c.max_checks {
                open.ending = true;
                out.push(Due::Policy {
                    key: key.clone(),
                    reason: PolicyReason::Unanswered,
                });
            } else {
                r.checks += 1;
                r.last_check_ms = Some(now_ms);
                out.push(Due::Check {
                    key: key.clone(),
                    record: *r,
                });
            }
        }
        out
    }
}

/// A commit or rollback submitted to the store, waiting for its tickets; hand it to
/// [`complete`] once they resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The transaction (reserved).
    pub key: TxKey,
    /// How it ends.
    pub outcome: Outcome,
}

/// Commits or rolls back `key`, which the caller has reserved ([`Claim::Own`],
/// [`Transactions::take`] or [`Due::Policy`]), and waits until the outcome is durable. On
/// failure the transaction stays open and unreserved.
pub async fn resolve(
    broker: &Broker,
    key: &TxKey,
    outcome: Outcome,
    scratch: &mut PublishScratch,
) -> Result<(), StoreError> {
    let ending = Ending {
        key: key.clone(),
        outcome,
    };
    let result = match submit(broker, &ending, scratch).await {
        Ok(tickets) => wait_all(broker, &tickets).await,
        Err(err) => Err(err),
    };
    complete(broker, &ending, result.as_ref().map(|_| ()));
    result
}

/// Waits until every ticket has committed; the first failure is returned.
pub async fn wait_all(broker: &Broker, tickets: &[Ticket]) -> Result<(), StoreError> {
    let store = broker.store().ok_or(StoreError::Closed)?;
    for ticket in tickets {
        store.wait_durable(*ticket).await?;
    }
    Ok(())
}

/// Settles the registry once the tickets of `ending` resolved: the transaction is gone
/// (counted) after a success, open and unreserved again after a failure (logged).
pub fn complete(broker: &Broker, ending: &Ending, result: Result<(), &StoreError>) {
    let Ending { key, outcome } = ending;
    let metrics = &broker.metrics().transactions;
    match result {
        Ok(()) => {
            broker.transactions().finish(key);
            match outcome {
                Outcome::Commit => metrics.committed.inc(),
                Outcome::Rollback => metrics.rolled_back.inc(),
            }
        }
        Err(err) => {
            broker.transactions().release(key);
            warn!(client_id = %key.client, tx = %key.tx, outcome = outcome.as_str(), cause = %err, "transaction not finished; it stays open");
        }
    }
}

/// Submits the store writes that end `ending` (without waiting for them): a rollback
/// deletes the half messages; a commit reads them back and publishes them through
/// [`Broker::publish_batch`] with the delete in the same submission. On `Err` nothing was
/// submitted; pass the error to [`complete`].
pub async fn submit(
    broker: &Broker,
    ending: &Ending,
    scratch: &mut PublishScratch,
) -> Result<Vec<Ticket>, StoreError> {
    let Ending { key, outcome } = ending;
    let store = broker.store().ok_or(StoreError::Closed)?;
    let end = WriteOp::TxEnd {
        client: key.client.clone(),
        tx: key.tx.clone(),
    };
    Ok(match outcome {
        Outcome::Rollback => vec![store.submit(vec![end]).await?.ticket],
        Outcome::Commit => {
            let now = Instant::now();
            let now_ms = now_millis();
            let messages: Vec<Message> = store
                .tx_messages(&key.client, &key.tx)?
                .iter()
                .map(|m| m.to_message(now, now_ms))
                .collect();
            broker
                .publish_batch(messages, vec![end], scratch)
                .await?
                .tickets
        }
    })
}

/// How often the check-back task looks for due transactions: a quarter of the shorter
/// check period, between 20 ms and 1 s.
fn tick(config: &TxConfig) -> Duration {
    (config.check_after.0.min(config.check_interval.0) / 4)
        .clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// The check-back task: sends check requests and applies `on_unresolved` until shutdown.
pub async fn run_checker(broker: Arc<Broker>) {
    let config = broker.transactions().config().clone();
    if !config.enabled || broker.store().is_none() {
        return;
    }
    let mut ticker = tokio::time::interval(tick(&config));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scratch = PublishScratch::default();
    loop {
        tokio::select! {
            () = broker.shutdown().triggered() => return,
            _ = ticker.tick() => {}
        }
        for due in broker.transactions().due(now_millis()) {
            match due {
                Due::Check { key, record } => send_check(&broker, &key, record).await,
                Due::Policy { key, reason } => {
                    apply_policy(&broker, &key, reason, config.on_unresolved, &mut scratch).await;
                }
            }
        }
    }
}

/// Records a check request and publishes it to the producer's check topic.
async fn send_check(broker: &Broker, key: &TxKey, record: TxRecord) {
    let op = WriteOp::TxChecked {
        client: key.client.clone(),
        tx: key.tx.clone(),
        record,
    };
    if let Err(err) = broker.submit(vec![op]).await {
        warn!(client_id = %key.client, tx = %key.tx, cause = %err, "check count not stored");
    }
    let message = Message {
        topic: check_topic(&key.client),
        payload: Bytes::from(key.tx.clone()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: MessageProperties {
            user_properties: vec![(TX_PROPERTY.to_owned(), key.tx.clone())],
            ..MessageProperties::default()
        },
        expiry: None,
        publisher: ClientId::from(""),
    };
    broker.publish(message).await;
    broker.metrics().transactions.checks_sent.inc();
    info!(client_id = %key.client, tx = %key.tx, check = record.checks, "transaction check request sent");
}

/// Applies `on_unresolved` to a transaction reserved by [`Transactions::due`].
async fn apply_policy(
    broker: &Broker,
    key: &TxKey,
    reason: PolicyReason,
    policy: Unresolved,
    scratch: &mut PublishScratch,
) {
    let outcome = match policy {
        Unresolved::Rollback => Outcome::Rollback,
        Unresolved::Commit => Outcome::Commit,
    };
    if resolve(broker, key, outcome, scratch).await.is_ok() {
        let metrics = &broker.metrics().transactions;
        match policy {
            Unresolved::Rollback => metrics.unresolved_rolled_back.inc(),
            Unresolved::Commit => metrics.unresolved_committed.inc(),
        }
        warn!(
            client_id = %key.client,
            tx = %key.tx,
            policy = policy.as_str(),
            reason = match reason {
                PolicyReason::Unanswered => "check requests unanswered",
                PolicyReason::MaxAge => "older than max_age",
            },
            "unresolved transaction ended by the on_unresolved policy"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn message(payload: &str) -> Message {
        Message {
            topic: "orders".into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties {
                user_properties: vec![("a".into(), "1".into()), (TX_PROPERTY.into(), "t1".into())],
                ..MessageProperties::default()
            },
            expiry: None,
            publisher: ClientId::from("c1"),
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("order-17.b_2"));
        assert!(valid_id(&"x".repeat(64)));
        assert!(!valid_id(&"x".repeat(65)));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a+b"));
    }

    #[test]
    fn classify_tells_half_control_reserved_and_plain_apart() {
        let none = MessageProperties::default();
        let half = message("x").properties;
        assert_eq!(classify("orders", &none), Classified::Plain);
        assert_eq!(classify("orders", &half), Classified::Half { tx: "t1" });
        assert_eq!(
            classify("$tern/tx/t1/commit", &none),
            Classified::Control {
                tx: "t1",
                outcome: Outcome::Commit,
                owner: None
            }
        );
        assert_eq!(
            classify("$tern/tx/t1/rollback", &none),
            Classified::Control {
                tx: "t1",
                outcome: Outcome::Rollback,
                owner: None
            }
        );
        assert_eq!(classify("$tern/tx/check/c1", &none), Classified::Reserved);
        assert_eq!(classify("$tern/tx/t1/other", &none), Classified::Reserved);
        assert_eq!(classify("$tern/x", &none), Classified::Reserved);
    }

    #[test]
    fn prepare_strips_the_property_and_enforces_limits() {
        let config = TxConfig {
            max_open_per_client: 1,
            max_messages: 2,
            ..TxConfig::default()
        };
        let txs = Transactions::new(config);
        let metrics = TxMetrics::default();
        let op = txs
            .prepare("c1", "t1", &message("a"), 1000, &metrics)
            .expect("first");
        let WriteOp::TxHalf {
            index,
            message: stored,
            record,
            ..
        } = op
        else {
            panic!("not a half message op: {op:?}");
        };
        assert_eq!(index, 0);
        assert_eq!(record.messages, 1);
        assert_eq!(
            stored.properties.user_properties,
            vec![("a".to_owned(), "1".to_owned())]
        );
        txs.prepare("c1", "t1", &message("b"), 1001, &metrics)
            .expect("second");
        assert_eq!(
            txs.prepare("c1", "t1", &message("c"), 1002, &metrics),
            Err(Refusal::TooLarge)
        );
        assert_eq!(
            txs.prepare("c1", "t2", &message("d"), 1003, &metrics),
            Err(Refusal::TooManyOpen)
        );
        // Another client has its own allowance.
        txs.prepare("c2", "t2", &message("e"), 1004, &metrics)
            .expect("other client");
        assert_eq!(metrics.opened.get(), 2);
        assert_eq!(metrics.refused_too_large.get(), 1);
        assert_eq!(metrics.refused_too_many_open.get(), 1);
    }

    #[test]
    fn claims_tell_own_foreign_unknown_and_busy_apart() {
        let txs = Transactions::new(TxConfig::default());
        let metrics = TxMetrics::default();
        txs.prepare("c1", "t1", &message("a"), 1000, &metrics)
            .expect("prepare");
        assert_eq!(
            txs.claim("c2", "t1", None),
            Claim::Foreign(TxKey {
                client: "c1".into(),
                tx: "t1".into()
            })
        );
        assert_eq!(txs.claim("c1", "nope", None), Claim::Unknown);
        let Claim::Own(key) = txs.claim("c1", "t1", None) else {
            panic!("own transaction not claimed");
        };
        assert_eq!(txs.claim("c1", "t1", None), Claim::Busy);
        assert_eq!(
            txs.prepare("c1", "t1", &message("late"), 1001, &metrics),
            Err(Refusal::Ending)
        );
        txs.finish(&key);
        assert_eq!(txs.claim("c1", "t1", None), Claim::Unknown);
        assert_eq!(txs.open_count(), 0);
    }

    #[test]
    fn checks_follow_the_timers_then_the_policy_applies() {
        let config = TxConfig {
            check_after: HumanDuration(Duration::from_secs(10)),
            check_interval: HumanDuration(Duration::from_secs(5)),
            max_checks: 2,
            ..TxConfig::default()
        };
        let txs = Transactions::new(config);
        let metrics = TxMetrics::default();
        txs.prepare("c1", "t1", &message("a"), 1_000, &metrics)
            .expect("prepare");
        assert!(txs.due(10_999).is_empty());
        let due = txs.due(11_000);
        assert!(
            matches!(&due[..], [Due::Check { record, .. }] if record.checks == 1),
            "{due:?}"
        );
        assert!(txs.due(15_999).is_empty());
        assert!(matches!(&txs.due(16_000)[..], [Due::Check { record, .. }] if record.checks == 2));
        let due = txs.due(21_000);
        assert!(
            matches!(
                &due[..],
                [Due::Policy {
                    reason: PolicyReason::Unanswered,
                    ..
                }]
            ),
            "{due:?}"
        );
        // Reserved for the policy: nothing more is due, and the producer cannot claim it.
        assert!(txs.due(60_000).is_empty());
        assert_eq!(txs.claim("c1", "t1", None), Claim::Busy);
    }

    #[test]
    fn a_new_half_message_restarts_the_check_timer_and_max_age_still_applies() {
        let config = TxConfig {
            check_after: HumanDuration(Duration::from_secs(10)),
            max_age: HumanDuration(Duration::from_secs(30)),
            ..TxConfig::default()
        };
        let txs = Transactions::new(config);
        let metrics = TxMetrics::default();
        txs.prepare("c1", "t1", &message("a"), 0, &metrics)
            .expect("prepare");
        assert_eq!(txs.due(10_000).len(), 1);
        txs.prepare("c1", "t1", &message("b"), 12_000, &metrics)
            .expect("prepare");
        assert!(txs.due(21_999).is_empty());
        assert!(matches!(
            &txs.due(30_000)[..],
            [Due::Policy {
                reason: PolicyReason::MaxAge,
                ..
            }]
        ));
    }
}
