//! Subscription routing and retained messages: the hub's fan-out tables.
//!
//! The router owns two pure, synchronous data structures and nothing else: no tasks, no
//! channels, no I/O. The session layer keeps them behind a lock and calls them on every
//! SUBSCRIBE, UNSUBSCRIBE, session end and PUBLISH.
//!
//! - [`SubscriptionTree`] maps topic filters to subscribers and answers "who receives a
//!   message published to this topic" ([`SubscriptionTree::route`]), including shared
//!   subscriptions (`$share/{group}/{filter}`), no-local and subscription identifiers.
//! - [`RetainedStore`] keeps the last retained message per topic and answers "which retained
//!   messages match this filter" when a client subscribes.
//!
//! Both are tries with one node per topic level, so a lookup walks only the branches that can
//! match: a PUBLISH costs a hash lookup per level (plus the `+` and `#` branches that exist),
//! never a scan of all subscriptions.
//!
//! # Invariants
//!
//! - A trie node exists only while it, or a node below it, holds a subscription (or a retained
//!   message). Removing the last entry prunes the now-empty path back to the root, so memory
//!   follows the live subscription set rather than its history.
//! - A subscription is keyed by (client, filter string): subscribing again with the same
//!   filter replaces the options ([`SubscribeOutcome::Replaced`]); it never adds a second copy.
//! - [`SubscriptionTree::route`] emits at most one [`DeliveryKind::Direct`] delivery per
//!   client, plus one [`DeliveryKind::Shared`] delivery per matching share group.
//! - Topics and filters are walked iteratively with an explicit, reused stack: a topic with
//!   thousands of levels cannot overflow the call stack. Filters are capped at
//!   [`MAX_FILTER_LEVELS`] levels, so the trie's memory stays proportional to real use.
//!
//! # Matching rules (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7)
//!
//! - `+` matches exactly one level, which may be empty (`+/a` matches `/a`).
//! - `#` matches any number of levels, including none (`a/#` matches `a`, `a/b` and `a/b/c`).
//! - Empty levels are ordinary levels: `a//b` is three levels and matches only `a//b`, `a/+/b`,
//!   `a/#` and so on.
//! - Topics starting with `$` (`$SYS/...`) are not matched by filters whose first level is a
//!   wildcard (`#`, `+/...`); they are matched by filters that spell the `$` level out.
//!
//! Topics passed to [`SubscriptionTree::route`] and [`RetainedStore::set`] are PUBLISH topic
//! names the codec has already validated (no wildcards, not empty). Other input is never a
//! panic, it just matches nothing useful.

mod filter;
mod retained;
mod subscriptions;

pub use filter::{MAX_FILTER_LEVELS, TopicFilter};
pub use retained::RetainedStore;
pub use subscriptions::{
    Delivery, DeliveryKind, RetainHandling, SubscribeOutcome, Subscription, SubscriptionIds,
    SubscriptionOptions, SubscriptionTree,
};

/// Why the router refused a topic filter or a subscription.
///
/// Every variant except [`RouterError::NoLocalOnShared`] means the filter is malformed: the
/// session answers SUBACK reason code 0x8F (Topic Filter invalid; 3.1.1: return code 0x80).
/// [`RouterError::NoLocalOnShared`] is a protocol error (0x82) per MQTT 5.0 §3.8.3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// The filter is the empty string (MQTT 5.0 §4.7.3).
    #[error("topic filter is empty")]
    EmptyFilter,
    /// `#` appears in a level other than the last one.
    #[error("multi-level wildcard '#' must be the last level of a topic filter")]
    MultiLevelWildcardNotLast,
    /// `+` or `#` shares its level with other characters (`a+`, `b#`).
    #[error("wildcards '+' and '#' must occupy a whole topic level")]
    WildcardNotAlone,
    /// `$share//filter`: the share name is empty.
    #[error("shared subscription has an empty share name")]
    EmptyShareGroup,
    /// `$share/gr+oup/filter`: the share name contains a wildcard.
    #[error("shared subscription share name must not contain '+' or '#'")]
    WildcardInShareGroup,
    /// `$share/group` with no filter after the share name.
    #[error("shared subscription has no topic filter after the share name")]
    MissingSharedFilter,
    /// The filter has more than [`MAX_FILTER_LEVELS`] levels (a limit of this server).
    #[error("topic filter has more than {max} levels")]
    TooManyLevels {
        /// The limit.
        max: usize,
    },
    /// No Local set on a shared subscription (MQTT 5.0 §3.8.3.1: a protocol error).
    #[error("no-local is not allowed on a shared subscription")]
    NoLocalOnShared,
}

impl RouterError {
    /// Whether the error is a protocol error (SUBACK/DISCONNECT 0x82) rather than a malformed
    /// topic filter (SUBACK 0x8F).
    pub fn is_protocol_error(&self) -> bool {
        matches!(self, Self::NoLocalOnShared)
    }
}
