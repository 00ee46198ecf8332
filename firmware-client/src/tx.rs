//! Transactional half messages (feature `tx`): the client side of the hub's
//! transaction protocol (`docs/transactions.md`).
//!
//! This module owns the transaction vocabulary ([`TxId`], [`TxSequence`],
//! [`TxAction`], [`TxOutcome`], [`TxResolution`], [`TxError`]), the topics of
//! the protocol, and the [`Session`] requests that speak it. The session keeps
//! no per-transaction state: the tx id of a commit or rollback awaiting its
//! PUBACK is read back from the PUBLISH already stored in `tx` for resending,
//! so the feature costs no RAM beyond the events it reports.
//!
//! # Protocol
//!
//! - A QoS 1 PUBLISH carrying the user property `tern-tx = <id>` is a *half
//!   message*: the hub stores it durably and acknowledges it, but delivers
//!   nothing until the transaction commits. The first half message opens the
//!   transaction.
//! - A QoS 1 PUBLISH with an empty payload to `$tern/tx/<id>/commit` or
//!   `$tern/tx/<id>/rollback` ends it. The PUBACK comes once the outcome is
//!   durable; its reason code becomes a [`TxOutcome`].
//! - A transaction left open makes the hub ask: a PUBLISH to
//!   `$tern/tx/check/<client id>` whose payload is the tx id, reported as
//!   [`Event::TxCheck`]. Answer it with a commit or a rollback.

use tern_mqtt::{QoS, ReasonCode};

use crate::error::Error;
use crate::state::{CoreError, Event, Message, Session};

/// Longest transaction id, in bytes.
pub const MAX_TX_ID: usize = 64;

/// User property that marks a PUBLISH as a half message; its value is the tx id.
pub const TX_PROPERTY: &str = "tern-tx";

/// Most caller user properties a half message carries besides `tern-tx`.
pub const MAX_TX_USER_PROPERTIES: usize = 8;

/// Longest client id [`Session::subscribe_tx_checks`] builds a check topic for.
pub const MAX_CHECK_CLIENT_ID: usize = 128;

/// Prefix of every transaction control topic.
const CONTROL_PREFIX: &str = "$tern/tx/";

/// Prefix of the check topics; the rest is the client id.
const CHECK_PREFIX: &str = "$tern/tx/check/";

/// Longest commit or rollback topic: prefix, id, `/rollback`.
const MAX_OUTCOME_TOPIC: usize = CONTROL_PREFIX.len() + MAX_TX_ID + "/rollback".len();

/// Longest check topic.
const MAX_CHECK_TOPIC: usize = CHECK_PREFIX.len() + MAX_CHECK_CLIENT_ID;

/// Decimal digits of `u32::MAX`.
const MAX_COUNTER_DIGITS: usize = 10;

/// Longest [`TxSequence`] prefix: room for `-` and a full counter.
pub const MAX_TX_PREFIX: usize = MAX_TX_ID - 1 - MAX_COUNTER_DIGITS;

/// A transaction id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxIdError {
    /// Ids are 1 to 64 bytes.
    #[error("transaction id is empty")]
    Empty,
    /// Longer than [`MAX_TX_ID`] (for a [`TxSequence`] prefix: [`MAX_TX_PREFIX`]).
    #[error("transaction id too long")]
    TooLong,
    /// A byte outside `[A-Za-z0-9._-]`.
    #[error("transaction id has a byte outside [A-Za-z0-9._-]")]
    InvalidByte,
}

/// A transaction request the client refuses before sending anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// Transactions need MQTT 5.0: 3.1.1 has no user properties (a half
    /// message would become a plain publish) and no PUBACK reason codes.
    #[error("transactions need MQTT 5.0")]
    RequiresV5,
    /// Half messages are QoS 1: the hub refuses a QoS 0 half message without
    /// an acknowledgement to say so.
    #[error("half messages need QoS 1")]
    QoS0,
    /// The caller passed more than [`MAX_TX_USER_PROPERTIES`] user properties.
    #[error("too many user properties for a half message")]
    TooManyUserProperties,
    /// The caller passed a `tern-tx` user property of its own.
    #[error("the tern-tx user property is set by the client")]
    ReservedProperty,
    /// The client id is empty (assigned by the broker, so unknown to the
    /// client) or longer than [`MAX_CHECK_CLIENT_ID`]: no check topic.
    #[error("no check topic for this client id")]
    ClientId,
}

/// A transaction id: 1 to [`MAX_TX_ID`] bytes of `[A-Za-z0-9._-]`, unique per
/// client id. Stored inline (`Copy`, no allocator).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId {
    len: u8,
    bytes: [u8; MAX_TX_ID],
}

fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn check_id_bytes(bytes: &[u8], max: usize) -> Result<(), TxIdError> {
    if bytes.is_empty() {
        return Err(TxIdError::Empty);
    }
    if bytes.len() > max {
        return Err(TxIdError::TooLong);
    }
    if !bytes.iter().copied().all(id_byte) {
        return Err(TxIdError::InvalidByte);
    }
    Ok(())
}

impl TxId {
    /// Validates `id`.
    pub fn new(id: &str) -> Result<Self, TxIdError> {
        Self::from_bytes(id.as_bytes())
    }

    /// Validates `id` given as bytes (a check request's payload).
    pub fn from_bytes(id: &[u8]) -> Result<Self, TxIdError> {
        check_id_bytes(id, MAX_TX_ID)?;
        // Element-wise rather than zeroing then copying: links no `memclr`.
        let bytes = core::array::from_fn(|i| id.get(i).copied().unwrap_or(0));
        Ok(Self {
            // At most 64, checked above.
            len: u8::try_from(id.len()).map_err(|_| TxIdError::TooLong)?,
            bytes,
        })
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The id as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl core::fmt::Debug for TxId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TxId({:?})", self.as_str())
    }
}

impl core::fmt::Display for TxId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for TxId {
    type Err = TxIdError;

    fn from_str(s: &str) -> Result<Self, TxIdError> {
        Self::new(s)
    }
}

/// Hands out transaction ids `<prefix>-<counter>`: begin a transaction with
/// [`TxSequence::begin`].
///
/// Ids must stay unique per client id for as long as the hub may hold a
/// transaction (its `max_age`, 24 h by default), across reboots too: a
/// half message whose id names a transaction still open on the hub joins
/// it. Make the prefix differ per boot (a boot counter kept in flash, or a
/// few random bytes), or restore the counter from flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSequence {
    prefix: TxId,
    next: u32,
}

impl TxSequence {
    /// A sequence `<prefix>-<first>`, `<prefix>-<first + 1>`, ... The prefix is
    /// 1 to [`MAX_TX_PREFIX`] bytes of `[A-Za-z0-9._-]`.
    pub fn new(prefix: &str, first: u32) -> Result<Self, TxIdError> {
        check_id_bytes(prefix.as_bytes(), MAX_TX_PREFIX)?;
        Ok(Self {
            prefix: TxId::new(prefix)?,
            next: first,
        })
    }

    /// The id of a new transaction. Nothing is sent: the first half message
    /// published with it opens the transaction on the hub. The counter wraps
    /// after `u32::MAX`.
    pub fn begin(&mut self) -> TxId {
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        let mut id = self.prefix;
        let mut digits = [0u8; MAX_COUNTER_DIGITS];
        let mut start = digits.len();
        let mut rest = n;
        loop {
            start -= 1;
            // `rest % 10` is a single digit.
            digits[start] = b'0' + u8::try_from(rest % 10).unwrap_or(0);
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let mut len = usize::from(id.len);
        // The prefix is at most MAX_TX_PREFIX bytes, so `-` and ten digits fit.
        for &b in core::iter::once(&b'-').chain(&digits[start..]) {
            if let Some(slot) = id.bytes.get_mut(len) {
                *slot = b;
                len += 1;
            }
        }
        id.len = u8::try_from(len).unwrap_or(id.len);
        id
    }

    /// The counter the next [`TxSequence::begin`] uses (to keep it in flash).
    pub fn next_counter(&self) -> u32 {
        self.next
    }
}

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxAction {
    /// Deliver every half message, in publish order, as one unit.
    Commit,
    /// Discard every half message.
    Rollback,
}

impl TxAction {
    fn suffix(self) -> &'static str {
        match self {
            Self::Commit => "/commit",
            Self::Rollback => "/rollback",
        }
    }
}

/// What the hub answered to a commit, a rollback or a half message (the PUBACK
/// reason code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxOutcome {
    /// Success (any reason code below 0x80): the action is durable. After a
    /// commit the messages are in the log, after a rollback they are gone;
    /// for a half message, it is stored in the transaction.
    Applied,
    /// 0x80: the hub has no open transaction of this client with this id: never
    /// opened, already committed or rolled back (a repeated answer), or
    /// settled by the hub's `on_unresolved` policy, possibly at this very
    /// moment. This request changed nothing.
    UnknownTransaction,
    /// 0x87: the id names a transaction of another client. Nothing changed.
    NotAuthorized,
    /// 0x97. On a half message: it would exceed the hub's limits (open
    /// transactions per client, messages or bytes per transaction) or the
    /// store is full; it is not part of the transaction, so roll back. On a
    /// commit: the store is full; the transaction stays open, commit again
    /// later.
    QuotaExceeded,
    /// Any other error code.
    Refused(ReasonCode),
}

impl From<ReasonCode> for TxOutcome {
    fn from(reason: ReasonCode) -> Self {
        match reason {
            r if !r.is_error() => Self::Applied,
            ReasonCode::UnspecifiedError => Self::UnknownTransaction,
            ReasonCode::NotAuthorized => Self::NotAuthorized,
            ReasonCode::QuotaExceeded => Self::QuotaExceeded,
            other => Self::Refused(other),
        }
    }
}

/// The PUBACK of a commit or rollback ([`Event::TxResolved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxResolution {
    /// Packet identifier returned by `commit` or `rollback`.
    pub packet_id: u16,
    /// The transaction.
    pub id: TxId,
    /// What was asked.
    pub action: TxAction,
    /// What the hub answered.
    pub outcome: TxOutcome,
}

/// `a == b` as a plain loop. The comparisons here are short and off the hot
/// path; slice equality would link `memcmp` and `str::contains` into images
/// that have neither otherwise.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn strip_prefix<'b>(s: &'b [u8], prefix: &[u8]) -> Option<&'b [u8]> {
    let (head, rest) = s.split_at_checked(prefix.len())?;
    same(head, prefix).then_some(rest)
}

fn strip_suffix<'b>(s: &'b [u8], suffix: &[u8]) -> Option<&'b [u8]> {
    let (rest, tail) = s.split_at_checked(s.len().checked_sub(suffix.len())?)?;
    same(tail, suffix).then_some(rest)
}

/// The commit or rollback a stored QoS 1 PUBLISH asks for, if it is one: reads
/// the topic name behind the fixed header (a 1 to 4 byte remaining length).
pub(crate) fn stored_control(publish: &[u8]) -> Option<(TxId, TxAction)> {
    let mut at = 1;
    loop {
        let b = *publish.get(at)?;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return None;
        }
    }
    let len = usize::from(u16::from_be_bytes([
        *publish.get(at)?,
        *publish.get(at + 1)?,
    ]));
    let topic = publish.get(at + 2..at + 2 + len)?;
    let rest = strip_prefix(topic, CONTROL_PREFIX.as_bytes())?;
    let (id, action) = if let Some(id) = strip_suffix(rest, b"/commit") {
        (id, TxAction::Commit)
    } else {
        (strip_suffix(rest, b"/rollback")?, TxAction::Rollback)
    };
    Some((TxId::from_bytes(id).ok()?, action))
}

/// The transaction a check request asks about, when `message` is one for
/// `client_id`: its payload is the tx id. (The hub also sets the `tern-tx`
/// property; reading it would link the property parser into every image.)
/// With an empty (broker-assigned) client id any check topic counts.
pub(crate) fn check_request(message: &Message<'_>, client_id: &str) -> Option<TxId> {
    let owner = strip_prefix(message.topic.as_bytes(), CHECK_PREFIX.as_bytes())?;
    #[expect(
        clippy::manual_contains,
        reason = "`<[u8]>::contains` links memchr: 52 B more flash"
    )]
    let ours = if client_id.is_empty() {
        !owner.iter().any(|&b| b == b'/')
    } else {
        same(owner, client_id.as_bytes())
    };
    if !ours {
        return None;
    }
    let id = TxId::from_bytes(message.payload).ok();
    if id.is_none() {
        warn!(
            "check request without a valid transaction id on {}",
            message.topic
        );
    }
    id
}

/// `parts` concatenated into `buf`; `None` when they do not fit.
fn join<'b>(buf: &'b mut [u8], parts: &[&str]) -> Option<&'b str> {
    let mut len = 0;
    for part in parts {
        buf.get_mut(len..len + part.len())?
            .copy_from_slice(part.as_bytes());
        len += part.len();
    }
    core::str::from_utf8(buf.get(..len)?).ok()
}

impl<const N: usize> Session<'_, N> {
    fn require_v5(&self) -> Result<(), CoreError> {
        if self.config().version() == tern_mqtt::ProtocolVersion::V5 {
            Ok(())
        } else {
            Err(Error::Tx(TxError::RequiresV5))
        }
    }

    /// Encodes a half message of transaction `id`: a QoS 1 PUBLISH with the
    /// caller's user properties and `tern-tx = <id>` last. It is kept for
    /// resending like any QoS 1 publish; its PUBACK arrives as
    /// [`Event::Published`] (map the reason with [`TxOutcome::from`]).
    pub fn publish_in_tx(
        &mut self,
        id: &TxId,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        user_properties: &[(&str, &str)],
        now_ms: u64,
    ) -> Result<(u16, &[u8]), CoreError> {
        self.require_v5()?;
        if qos == QoS::AtMostOnce {
            return Err(Error::Tx(TxError::QoS0));
        }
        if user_properties.iter().any(|&(name, _)| name == TX_PROPERTY) {
            return Err(Error::Tx(TxError::ReservedProperty));
        }
        let mut props: heapless::Vec<(&str, &str), { MAX_TX_USER_PROPERTIES + 1 }> =
            heapless::Vec::new();
        props
            .extend_from_slice(user_properties)
            .map_err(|_| Error::Tx(TxError::TooManyUserProperties))?;
        props
            .push((TX_PROPERTY, id.as_str()))
            .map_err(|_| Error::Tx(TxError::TooManyUserProperties))?;
        self.publish(topic, payload, qos, &props, now_ms)
    }

    /// Encodes the QoS 1 commit or rollback of transaction `id` (an empty
    /// PUBLISH to `$tern/tx/<id>/commit|rollback`). Send a commit once every
    /// half message of the transaction is acknowledged (see the crate docs,
    /// "Transactions"). Its PUBACK arrives as [`Event::TxResolved`].
    pub fn finish_tx(
        &mut self,
        id: &TxId,
        action: TxAction,
        now_ms: u64,
    ) -> Result<(u16, &[u8]), CoreError> {
        self.require_v5()?;
        let mut buf = [0u8; MAX_OUTCOME_TOPIC];
        let topic = join(&mut buf, &[CONTROL_PREFIX, id.as_str(), action.suffix()]).ok_or(
            Error::BufferTooSmall {
                needed: MAX_OUTCOME_TOPIC + 1,
                available: MAX_OUTCOME_TOPIC,
            },
        )?;
        self.publish(topic, &[], QoS::AtLeastOnce, &[], now_ms)
    }

    /// Encodes a QoS 1 SUBSCRIBE to this client's check topic,
    /// `$tern/tx/check/<client id>`; the SUBACK arrives as [`Event::Subscribed`].
    /// Needs a client id of 1 to [`MAX_CHECK_CLIENT_ID`] bytes.
    pub fn subscribe_tx_checks(&mut self, now_ms: u64) -> Result<(u16, &[u8]), CoreError> {
        self.require_v5()?;
        let client_id = self.config().client_id();
        if client_id.is_empty() {
            return Err(Error::Tx(TxError::ClientId));
        }
        let mut buf = [0u8; MAX_CHECK_TOPIC];
        let topic =
            join(&mut buf, &[CHECK_PREFIX, client_id]).ok_or(Error::Tx(TxError::ClientId))?;
        self.subscribe(&[(topic, QoS::AtLeastOnce)], now_ms)
    }
}

/// The event a delivered PUBLISH becomes: a check request for this client, or
/// the message itself.
pub(crate) fn incoming<'a>(message: Message<'a>, client_id: &str) -> Event<'a> {
    match check_request(&message, client_id) {
        Some(id) => Event::TxCheck(id),
        None => Event::Message(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert_eq!(TxId::new("").unwrap_err(), TxIdError::Empty);
        assert_eq!(TxId::new("a/b").unwrap_err(), TxIdError::InvalidByte);
        assert_eq!(TxId::new("é").unwrap_err(), TxIdError::InvalidByte);
        assert_eq!(TxId::new("a b").unwrap_err(), TxIdError::InvalidByte);
        let max = "x".repeat(MAX_TX_ID);
        assert_eq!(TxId::new(&max).unwrap().as_str(), max);
        assert_eq!(
            TxId::new(&format!("{max}y")).unwrap_err(),
            TxIdError::TooLong
        );
        let id: TxId = "Batch_7.v-2".parse().unwrap();
        assert_eq!(id.as_str(), "Batch_7.v-2");
        assert_eq!(format!("{id}"), "Batch_7.v-2");
        assert_eq!(format!("{id:?}"), "TxId(\"Batch_7.v-2\")");
    }

    #[test]
    fn sequence_counts_and_wraps() {
        let mut seq = TxSequence::new("boot42", 0).unwrap();
        assert_eq!(seq.begin().as_str(), "boot42-0");
        assert_eq!(seq.begin().as_str(), "boot42-1");
        let prefix = "p".repeat(MAX_TX_PREFIX);
        let mut long = TxSequence::new(&prefix, u32::MAX).unwrap();
        let last = long.begin();
        assert_eq!(last.as_str(), format!("{prefix}-4294967295"));
        assert_eq!(last.as_bytes().len(), MAX_TX_ID);
        assert_eq!(long.begin().as_str(), format!("{prefix}-0"));
        assert_eq!(long.next_counter(), 1);
        assert_eq!(
            TxSequence::new(&format!("{prefix}p"), 0).unwrap_err(),
            TxIdError::TooLong
        );
        assert_eq!(
            TxSequence::new("a/b", 0).unwrap_err(),
            TxIdError::InvalidByte
        );
    }

    #[test]
    fn reason_codes_map_to_outcomes() {
        assert_eq!(TxOutcome::from(ReasonCode::Success), TxOutcome::Applied);
        assert_eq!(
            TxOutcome::from(ReasonCode::NoMatchingSubscribers),
            TxOutcome::Applied
        );
        assert_eq!(
            TxOutcome::from(ReasonCode::UnspecifiedError),
            TxOutcome::UnknownTransaction
        );
        assert_eq!(
            TxOutcome::from(ReasonCode::NotAuthorized),
            TxOutcome::NotAuthorized
        );
        assert_eq!(
            TxOutcome::from(ReasonCode::QuotaExceeded),
            TxOutcome::QuotaExceeded
        );
        assert_eq!(
            TxOutcome::from(ReasonCode::ImplementationSpecificError),
            TxOutcome::Refused(ReasonCode::ImplementationSpecificError)
        );
    }

    #[test]
    fn stored_control_reads_the_topic() {
        // QoS 1 PUBLISH, remaining length 2-byte varint, topic `$tern/tx/t-1/rollback`.
        let topic = b"$tern/tx/t-1/rollback";
        let mut p = vec![0x32, 0x80, 0x01, 0, u8::try_from(topic.len()).unwrap()];
        p.extend_from_slice(topic);
        let (id, action) = stored_control(&p).unwrap();
        assert_eq!((id.as_str(), action), ("t-1", TxAction::Rollback));
        let mut c = vec![0x32, 20, 0, 16];
        c.extend_from_slice(b"$tern/tx/a/commit");
        assert_eq!(stored_control(&c), None, "topic length runs past the end");
        c[3] = 17;
        assert_eq!(stored_control(&c).unwrap().1, TxAction::Commit);
        for topic in [
            &b"$tern/tx//commit"[..],
            b"$tern/tx/a/b/commit",
            b"tern/tx/a/commit",
        ] {
            let mut p = vec![0x32, 40, 0, u8::try_from(topic.len()).unwrap()];
            p.extend_from_slice(topic);
            assert_eq!(stored_control(&p), None, "{topic:?}");
        }
        assert_eq!(stored_control(&[0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), None);
    }
}
