//! Process-wide counters, and their periodic publication under `$SYS/broker/...`.
//!
//! Counters are relaxed atomics bumped on the hot path; nothing here takes a lock. Every
//! `sys_interval` the broker publishes each one as a retained message, so an operator reads
//! them with `mosquitto_sub -t '$SYS/#' -v`. The admin API's Prometheus endpoint
//! ([`crate::admin::prometheus`]) reads the same counters, plus the per-QoS counters and the
//! latency histograms ([`Histogram`]) kept here for it. Topics (payload: decimal ASCII):
//!
//! | topic | meaning |
//! | --- | --- |
//! | `$SYS/broker/version` | hub version |
//! | `$SYS/broker/uptime` | seconds since start |
//! | `$SYS/broker/clients/connected` | clients connected now |
//! | `$SYS/broker/clients/total` | sessions known (online + offline) |
//! | `$SYS/broker/connections/accepted` | TCP connections accepted |
//! | `$SYS/broker/connections/refused` | connections refused at accept (`max_connections`) |
//! | `$SYS/broker/messages/received` | PUBLISH packets received |
//! | `$SYS/broker/messages/sent` | PUBLISH packets sent |
//! | `$SYS/broker/messages/dropped` | messages dropped (queue overflow, expiry, client max packet size) |
//! | `$SYS/broker/messages/retained/count` | retained messages stored |
//! | `$SYS/broker/packets/received` | packets received, all kinds |
//! | `$SYS/broker/packets/sent` | packets sent, all kinds |
//! | `$SYS/broker/bytes/received` | bytes read from clients |
//! | `$SYS/broker/bytes/sent` | bytes written to clients |
//! | `$SYS/broker/errors/malformed` | malformed packets and protocol violations |
//! | `$SYS/broker/errors/keepalive_timeouts` | clients disconnected for exceeding 1.5× keep alive |
//! | `$SYS/broker/subscriptions/count` | subscriptions held |
//! | `$SYS/broker/store/appends` | messages appended to the store (committed) |
//! | `$SYS/broker/store/commits` | write transactions committed |
//! | `$SYS/broker/store/bytes` | encoded bytes of stored messages |
//! | `$SYS/broker/store/records` | messages stored |
//! | `$SYS/broker/store/refused` | submissions refused because the store is full (policy `refuse`) |
//! | `$SYS/broker/store/trimmed` | messages deleted by retention |
//! | `$SYS/broker/store/dropped_unconsumed` | messages deleted while a session or consumer still needed them (policy `drop-oldest`, age limit) |
//! | `$SYS/broker/store/errors` | failed commits and corrupted records |
//! | `$SYS/broker/store/publishes_refused` | client publishes refused or not acknowledged because of the store |
//! | `$SYS/broker/filters/batches` | filter calls that decided a batch |
//! | `$SYS/broker/filters/messages/in` | messages handed to filters (once per filter) |
//! | `$SYS/broker/filters/messages/kept` | ... kept by a filter |
//! | `$SYS/broker/filters/messages/dropped` | ... dropped by a filter |
//! | `$SYS/broker/filters/messages/replaced` | ... replaced (edited) by a filter |
//! | `$SYS/broker/filters/messages/routed` | ... given destinations by a filter |
//! | `$SYS/broker/filters/failures/{trap,timeout,error,invalid_verdicts,memory}` | failed filter calls, by kind |
//! | `$SYS/broker/filters/policy_applied` | messages the pipeline's failure policy was applied to |
//! | `$SYS/broker/filters/log_suppressed` | guest log lines dropped by the rate limit |
//! | `$SYS/broker/filters/deploys/{ok,refused}` | filters deployed, deployments refused |
//! | `$SYS/broker/security/...` | refused logins and handshakes, ACL denials, hygiene limits ([`SecurityMetrics`], `docs/security.md`) |
//! | `$SYS/broker/bridges/<name>/...` | per-bridge state, from a [`SysSource`] (see `docs/bridge.md`) |
//! | `$SYS/broker/queues/...` | session queue paging: pages read, messages paged in, messages lost to retention before delivery, failed reads, waits for a commit ([`crate::session::queue::QueueMetrics`], `docs/session-queues.md`) |
//! | `$SYS/broker/transactions/...` | transactions opened, committed, rolled back, check requests, policy applications, refusals ([`TxMetrics`], `docs/transactions.md`) |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::store::StoreStats;

/// A component outside the broker that publishes its own `$SYS/broker/...` topics (the
/// bridges), registered with `Broker::add_sys_source` and asked once per `sys_interval`.
pub trait SysSource: Send + Sync + std::fmt::Debug {
    /// Appends `(topic, payload)` pairs for this round.
    fn sys_topics(&self, out: &mut Vec<(String, String)>);
}

/// One monotonically increasing (or, for gauges, up-and-down) counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds a length (bytes read or written).
    pub fn add_len(&self, n: usize) {
        self.add(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Subtracts one (gauges only), saturating at zero.
    pub fn dec(&self) {
        // A failed update means the gauge is already zero, which is where it should stay.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// All counters of one hub instance.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// TCP connections accepted.
    pub connections_accepted: Counter,
    /// Connections closed at accept because the listener was at `max_connections`.
    pub connections_refused: Counter,
    /// Clients that completed CONNECT and are still connected (gauge).
    pub clients_connected: Counter,
    /// Packets decoded from clients.
    pub packets_received: Counter,
    /// Packets encoded to clients.
    pub packets_sent: Counter,
    /// PUBLISH packets received.
    pub publishes_received: Counter,
    /// PUBLISH packets sent.
    pub publishes_sent: Counter,
    /// Bytes read from sockets.
    pub bytes_received: Counter,
    /// Bytes written to sockets.
    pub bytes_sent: Counter,
    /// Malformed packets and protocol violations.
    pub malformed: Counter,
    /// Messages dropped: queue overflow, expiry, or too big for the client.
    pub messages_dropped: Counter,
    /// Undelivered messages of a shared subscription handed to another member when the
    /// chosen member's session ended.
    pub messages_redistributed: Counter,
    /// Clients disconnected for exceeding 1.5× keep alive.
    pub keepalive_timeouts: Counter,
    /// Publishes refused (store full) or left unacknowledged (commit failed).
    pub store_refused: Counter,
    /// Filter host counters, shared with the filter host (`FilterHost::new`).
    pub filters: Arc<FilterMetrics>,
    /// Listener security: refused handshakes and logins, ACL denials, hygiene limits.
    pub security: SecurityMetrics,
    /// PUBLISH packets received, by QoS (index 0, 1, 2); the admin `/metrics` endpoint.
    pub publishes_received_qos: [Counter; 3],
    /// PUBLISH packets sent, by QoS (index 0, 1, 2); the admin `/metrics` endpoint.
    pub publishes_sent_qos: [Counter; 3],
    /// Time from submitting a batch of client publishes to the store until it is durable
    /// and acknowledged (the broker-side commit latency).
    pub commit_wait: Histogram,
    /// Time the filter pipelines take for one batch of publishes (all filters it meets).
    pub filter_batch: Histogram,
    /// Transactions (half messages, commit, rollback, check-back).
    pub transactions: TxMetrics,
    /// Session queue paging (`docs/session-queues.md`), shared with every mailbox.
    pub queues: Arc<crate::session::queue::QueueMetrics>,
}

/// Counters of transactions (`docs/transactions.md`), published under
/// `$SYS/broker/transactions/...`.
#[derive(Debug, Default)]
pub struct TxMetrics {
    /// Transactions opened (first half message of a new id).
    pub opened: Counter,
    /// Half messages stored.
    pub half_messages: Counter,
    /// Transactions committed (by their producer or by the policy).
    pub committed: Counter,
    /// Transactions rolled back (by their producer or by the policy).
    pub rolled_back: Counter,
    /// Check requests sent.
    pub checks_sent: Counter,
    /// `on_unresolved = "rollback"` applied (unanswered checks or `max_age`).
    pub unresolved_rolled_back: Counter,
    /// `on_unresolved = "commit"` applied.
    pub unresolved_committed: Counter,
    /// Refused: half message at QoS 0.
    pub refused_qos0: Counter,
    /// Refused: the client has `max_open_per_client` transactions open.
    pub refused_too_many_open: Counter,
    /// Refused: `max_messages` or `max_bytes` reached.
    pub refused_too_large: Counter,
    /// Refused: commit or rollback of an unknown or finished transaction.
    pub refused_unknown: Counter,
    /// Refused: commit or rollback of another client's transaction.
    pub refused_foreign: Counter,
    /// Refused: invalid transaction id, reserved topic, or transactions disabled.
    pub refused_invalid: Counter,
}

impl TxMetrics {
    /// `$SYS/broker/transactions/...` topics and payloads.
    pub fn sys_topics(&self) -> [(&'static str, String); 13] {
        let c = |counter: &Counter| counter.get().to_string();
        [
            ("$SYS/broker/transactions/opened", c(&self.opened)),
            (
                "$SYS/broker/transactions/half_messages",
                c(&self.half_messages),
            ),
            ("$SYS/broker/transactions/committed", c(&self.committed)),
            ("$SYS/broker/transactions/rolled_back", c(&self.rolled_back)),
            ("$SYS/broker/transactions/checks_sent", c(&self.checks_sent)),
            (
                "$SYS/broker/transactions/unresolved_applied/rollback",
                c(&self.unresolved_rolled_back),
            ),
            (
                "$SYS/broker/transactions/unresolved_applied/commit",
                c(&self.unresolved_committed),
            ),
            (
                "$SYS/broker/transactions/refused/qos0",
                c(&self.refused_qos0),
            ),
            (
                "$SYS/broker/transactions/refused/too_many_open",
                c(&self.refused_too_many_open),
            ),
            (
                "$SYS/broker/transactions/refused/too_large",
                c(&self.refused_too_large),
            ),
            (
                "$SYS/broker/transactions/refused/unknown",
                c(&self.refused_unknown),
            ),
            (
                "$SYS/broker/transactions/refused/foreign",
                c(&self.refused_foreign),
            ),
            (
                "$SYS/broker/transactions/refused/invalid",
                c(&self.refused_invalid),
            ),
        ]
    }
}

/// Upper bounds, in microseconds, of the [`Histogram`] buckets (a last, unbounded bucket
/// follows): 100µs to 10s.
pub const HISTOGRAM_BOUNDS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// A latency histogram with fixed buckets ([`HISTOGRAM_BOUNDS_MICROS`]): relaxed atomics,
/// no lock, cheap enough for the publish path.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is over the largest bound.
    buckets: [Counter; HISTOGRAM_BOUNDS_MICROS.len() + 1],
    /// Sum of the observations, microseconds.
    sum_micros: Counter,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: std::time::Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let index = HISTOGRAM_BOUNDS_MICROS.partition_point(|bound| *bound < micros);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.inc();
        }
        self.sum_micros.add(micros);
    }

    /// Cumulative counts per bound (the Prometheus `le` buckets, `+Inf` last), and the sum
    /// in microseconds.
    pub fn snapshot(&self) -> (Vec<u64>, u64) {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|bucket| {
                total += bucket.get();
                total
            })
            .collect();
        (cumulative, self.sum_micros.get())
    }
}

/// Counters of listener security (`docs/security.md`), published under
/// `$SYS/broker/security/...`.
#[derive(Debug, Default)]
pub struct SecurityMetrics {
    /// CONNECTs refused for a wrong or unknown username/password.
    pub auth_failed: Counter,
    /// CONNECTs refused because the listener does not allow anonymous clients.
    pub anonymous_refused: Counter,
    /// CONNECTs refused because the will topic may not be written.
    pub will_denied: Counter,
    /// PUBLISHes refused by the ACL.
    pub acl_denied_publish: Counter,
    /// SUBSCRIBE filters refused by the ACL.
    pub acl_denied_subscribe: Counter,
    /// Deliveries (including retained messages) withheld by the ACL.
    pub acl_denied_delivery: Counter,
    /// TLS handshakes that failed (bad or missing client certificate, protocol errors).
    pub tls_handshake_failed: Counter,
    /// WebSocket upgrades that failed (wrong path, not a WebSocket request).
    pub websocket_handshake_failed: Counter,
    /// Connections closed at accept by `max_connections_per_ip`.
    pub per_ip_refused: Counter,
    /// Connections ended for a packet over `max_packet_size`.
    pub packet_too_large: Counter,
    /// Topics over `max_topic_length` / `max_topic_levels` (PUBLISH, SUBSCRIBE, will).
    pub topic_limit: Counter,
    /// SUBSCRIBE filters refused by `max_subscriptions_per_client`.
    pub subscription_limit: Counter,
    /// Connections closed for not completing CONNECT within `connect_timeout`.
    pub connect_timeouts: Counter,
}

impl SecurityMetrics {
    /// `$SYS/broker/security/...` topics and payloads.
    pub fn sys_topics(&self) -> [(&'static str, String); 13] {
        let c = |counter: &Counter| counter.get().to_string();
        [
            ("$SYS/broker/security/auth_failed", c(&self.auth_failed)),
            (
                "$SYS/broker/security/anonymous_refused",
                c(&self.anonymous_refused),
            ),
            ("$SYS/broker/security/will_denied", c(&self.will_denied)),
            (
                "$SYS/broker/security/acl_denied/publish",
                c(&self.acl_denied_publish),
            ),
            (
                "$SYS/broker/security/acl_denied/subscribe",
                c(&self.acl_denied_subscribe),
            ),
            (
                "$SYS/broker/security/acl_denied/delivery",
                c(&self.acl_denied_delivery),
            ),
            (
                "$SYS/broker/security/tls_handshake_failed",
                c(&self.tls_handshake_failed),
            ),
            (
                "$SYS/broker/security/websocket_handshake_failed",
                c(&self.websocket_handshake_failed),
            ),
            (
                "$SYS/broker/security/per_ip_refused",
                c(&self.per_ip_refused),
            ),
            (
                "$SYS/broker/security/packet_too_large",
                c(&self.packet_too_large),
            ),
            ("$SYS/broker/security/topic_limit", c(&self.topic_limit)),
            (
                "$SYS/broker/security/subscription_limit",
                c(&self.subscription_limit),
            ),
            (
                "$SYS/broker/security/connect_timeouts",
                c(&self.connect_timeouts),
            ),
        ]
    }
}

/// Counters of the filter host, summed over every filter. Per-filter figures live in each
/// loaded filter (`filter_host::FilterStats`).
#[derive(Debug, Default)]
pub struct FilterMetrics {
    /// Calls of `process` that returned usable verdicts.
    pub batches: Counter,
    /// Messages handed to a filter (a message counts once per filter it reaches).
    pub messages_in: Counter,
    /// Messages a filter kept.
    pub kept: Counter,
    /// Messages a filter dropped.
    pub dropped: Counter,
    /// Messages a filter replaced.
    pub replaced: Counter,
    /// Messages a filter gave destinations (routes).
    pub routed: Counter,
    /// Calls that trapped.
    pub failed_trap: Counter,
    /// Calls that ran past their deadline.
    pub failed_timeout: Counter,
    /// Calls whose `process` returned `Err`.
    pub failed_error: Counter,
    /// Calls whose verdicts did not parse or asked for something invalid.
    pub failed_invalid_verdicts: Counter,
    /// Calls that hit the memory limit.
    pub failed_memory: Counter,
    /// Messages the pipeline's failure policy was applied to.
    pub policy_applied: Counter,
    /// Guest log lines dropped by the rate limit.
    pub log_suppressed: Counter,
    /// Filters deployed (loaded and initialised).
    pub deploys_ok: Counter,
    /// Filters refused at deploy (load, validation or `init` failed).
    pub deploys_refused: Counter,
}

impl FilterMetrics {
    /// `$SYS/broker/filters/...` topics and payloads.
    pub fn sys_topics(&self) -> [(&'static str, String); 15] {
        [
            (
                "$SYS/broker/filters/batches",
                self.batches.get().to_string(),
            ),
            (
                "$SYS/broker/filters/messages/in",
                self.messages_in.get().to_string(),
            ),
            (
                "$SYS/broker/filters/messages/kept",
                self.kept.get().to_string(),
            ),
            (
                "$SYS/broker/filters/messages/dropped",
                self.dropped.get().to_string(),
            ),
            (
                "$SYS/broker/filters/messages/replaced",
                self.replaced.get().to_string(),
            ),
            (
                "$SYS/broker/filters/messages/routed",
                self.routed.get().to_string(),
            ),
            (
                "$SYS/broker/filters/failures/trap",
                self.failed_trap.get().to_string(),
            ),
            (
                "$SYS/broker/filters/failures/timeout",
                self.failed_timeout.get().to_string(),
            ),
            (
                "$SYS/broker/filters/failures/error",
                self.failed_error.get().to_string(),
            ),
            (
                "$SYS/broker/filters/failures/invalid_verdicts",
                self.failed_invalid_verdicts.get().to_string(),
            ),
            (
                "$SYS/broker/filters/failures/memory",
                self.failed_memory.get().to_string(),
            ),
            (
                "$SYS/broker/filters/policy_applied",
                self.policy_applied.get().to_string(),
            ),
            (
                "$SYS/broker/filters/log_suppressed",
                self.log_suppressed.get().to_string(),
            ),
            (
                "$SYS/broker/filters/deploys/ok",
                self.deploys_ok.get().to_string(),
            ),
            (
                "$SYS/broker/filters/deploys/refused",
                self.deploys_refused.get().to_string(),
            ),
        ]
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            clients_connected: Counter::default(),
            packets_received: Counter::default(),
            packets_sent: Counter::default(),
            publishes_received: Counter::default(),
            publishes_sent: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            malformed: Counter::default(),
            messages_dropped: Counter::default(),
            messages_redistributed: Counter::default(),
            keepalive_timeouts: Counter::default(),
            store_refused: Counter::default(),
            filters: Arc::default(),
            security: SecurityMetrics::default(),
            publishes_received_qos: Default::default(),
            publishes_sent_qos: Default::default(),
            commit_wait: Histogram::default(),
            filter_batch: Histogram::default(),
            transactions: TxMetrics::default(),
            queues: Arc::default(),
        }
    }
}

/// Gauges owned by the broker state rather than by counters, sampled at publish time.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerGauges {
    /// Sessions known, online and offline.
    pub sessions: u64,
    /// Retained messages stored.
    pub retained: u64,
    /// Subscriptions held.
    pub subscriptions: u64,
}

impl Metrics {
    /// Time since the hub started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The `$SYS/broker/...` topics and payloads for one publication round.
    pub fn sys_topics(
        &self,
        gauges: BrokerGauges,
        store: Option<StoreStats>,
    ) -> Vec<(&'static str, String)> {
        let mut topics = vec![
            ("$SYS/broker/version", env!("CARGO_PKG_VERSION").to_owned()),
            (
                "$SYS/broker/uptime",
                self.started.elapsed().as_secs().to_string(),
            ),
            (
                "$SYS/broker/clients/connected",
                self.clients_connected.get().to_string(),
            ),
            ("$SYS/broker/clients/total", gauges.sessions.to_string()),
            (
                "$SYS/broker/connections/accepted",
                self.connections_accepted.get().to_string(),
            ),
            (
                "$SYS/broker/connections/refused",
                self.connections_refused.get().to_string(),
            ),
            (
                "$SYS/broker/messages/received",
                self.publishes_received.get().to_string(),
            ),
            (
                "$SYS/broker/messages/sent",
                self.publishes_sent.get().to_string(),
            ),
            (
                "$SYS/broker/messages/dropped",
                self.messages_dropped.get().to_string(),
            ),
            (
                "$SYS/broker/messages/redistributed",
                self.messages_redistributed.get().to_string(),
            ),
            (
                "$SYS/broker/messages/retained/count",
                gauges.retained.to_string(),
            ),
            (
                "$SYS/broker/packets/received",
                self.packets_received.get().to_string(),
            ),
            (
                "$SYS/broker/packets/sent",
                self.packets_sent.get().to_string(),
            ),
            (
                "$SYS/broker/bytes/received",
                self.bytes_received.get().to_string(),
            ),
            ("$SYS/broker/bytes/sent", self.bytes_sent.get().to_string()),
            (
                "$SYS/broker/errors/malformed",
                self.malformed.get().to_string(),
            ),
            (
                "$SYS/broker/errors/keepalive_timeouts",
                self.keepalive_timeouts.get().to_string(),
            ),
            (
                "$SYS/broker/subscriptions/count",
                gauges.subscriptions.to_string(),
            ),
        ];
        topics.extend(self.filters.sys_topics());
        topics.extend(self.security.sys_topics());
        topics.extend(self.transactions.sys_topics());
        topics.extend(self.queues.sys_topics());
        if let Some(s) = store {
            topics.extend([
                ("$SYS/broker/store/appends", s.appends.to_string()),
                ("$SYS/broker/store/commits", s.commits.to_string()),
                ("$SYS/broker/store/bytes", s.bytes.to_string()),
                ("$SYS/broker/store/records", s.records.to_string()),
                ("$SYS/broker/store/refused", s.refused.to_string()),
                ("$SYS/broker/store/trimmed", s.trimmed.to_string()),
                (
                    "$SYS/broker/store/dropped_unconsumed",
                    s.dropped_unconsumed.to_string(),
                ),
                ("$SYS/broker/store/errors", s.errors.to_string()),
                (
                    "$SYS/broker/store/publishes_refused",
                    self.store_refused.get().to_string(),
                ),
            ]);
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::default();
        histogram.observe(std::time::Duration::from_micros(50));
        histogram.observe(std::time::Duration::from_millis(3));
        histogram.observe(std::time::Duration::from_secs(60));
        let (buckets, sum) = histogram.snapshot();
        assert_eq!(buckets.len(), HISTOGRAM_BOUNDS_MICROS.len() + 1);
        assert_eq!(buckets.first(), Some(&1));
        // 3ms falls in the 5ms bucket (index 5).
        assert_eq!(buckets.get(4), Some(&1));
        assert_eq!(buckets.get(5), Some(&2));
        assert_eq!(buckets.last(), Some(&3));
        assert_eq!(sum, 50 + 3_000 + 60_000_000);
    }

    #[test]
    fn gauge_never_goes_below_zero() {
        let counter = Counter::default();
        counter.dec();
        assert_eq!(counter.get(), 0);
        counter.add(3);
        counter.dec();
        assert_eq!(counter.get(), 2);
    }

    #[test]
    fn sys_topics_report_counters() {
        let metrics = Metrics::default();
        metrics.malformed.inc();
        metrics.filters.failed_trap.add(2);
        let topics = metrics.sys_topics(
            BrokerGauges {
                sessions: 4,
                ..BrokerGauges::default()
            },
            Some(StoreStats {
                appends: 7,
                ..StoreStats::default()
            }),
        );
        let get = |name: &str| {
            topics
                .iter()
                .find(|(t, _)| *t == name)
                .map(|(_, v)| v.clone())
                .expect(name)
        };
        assert_eq!(get("$SYS/broker/errors/malformed"), "1");
        assert_eq!(get("$SYS/broker/clients/total"), "4");
        assert_eq!(get("$SYS/broker/store/appends"), "7");
        assert_eq!(get("$SYS/broker/filters/failures/trap"), "2");
        assert!(topics.iter().all(|(t, _)| t.starts_with("$SYS/broker/")));
    }
}
