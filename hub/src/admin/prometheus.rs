//! `GET /metrics`: the hub's counters in the Prometheus text exposition format (0.0.4),
//! written by hand.
//!
//! Every value comes from the counters the hub already keeps ([`crate::metrics`], the
//! store's statistics, each loaded filter's statistics) or from the `$SYS` sources (the
//! bridges), read at scrape time; nothing is counted twice. Names start with `tern_`;
//! per-filter series carry `pipeline` and `filter` labels, per-bridge series a `bridge`
//! label. The full list is in `docs/admin-api.md`.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};

use crate::broker::Broker;
use crate::metrics::{Counter, HISTOGRAM_BOUNDS_MICROS, Histogram};

use super::AdminCounters;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Kind of a metric family (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A text exposition under construction: a family header, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample line of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                escape_label_value(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram family in seconds from a [`Histogram`] kept in microseconds.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, Kind::Histogram, help);
        let (cumulative, sum_micros) = histogram.snapshot();
        let bucket = format!("{name}_bucket");
        for (bound, count) in HISTOGRAM_BOUNDS_MICROS.iter().zip(&cumulative) {
            let le = seconds(*bound);
            self.sample(&bucket, &[("le", &le)], count);
        }
        let total = cumulative.last().copied().unwrap_or(0);
        self.sample(&bucket, &[("le", "+Inf")], total);
        self.sample(&format!("{name}_sum"), &[], seconds(sum_micros));
        self.sample(&format!("{name}_count"), &[], total);
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Microseconds as decimal seconds, exactly (`250` → `0.00025`).
fn seconds(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A metric name part from a `$SYS` topic level: ASCII letters, digits and `_` only.
fn name_part(level: &str) -> String {
    level
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Renders every metric of `broker` (and the admin server's own counters).
pub fn render(broker: &Broker, admin: &AdminCounters) -> String {
    let mut x = Exposition::default();
    connections(&mut x, broker);
    messages(&mut x, broker);
    store(&mut x, broker);
    filters(&mut x, broker);
    security(&mut x, broker);
    transactions(&mut x, broker);
    let queues = broker.metrics().queues.sys_topics();
    sys_counters(&mut x, queues, "queues", "docs/session-queues.md");
    bridges(&mut x, broker);
    x.single(
        "tern_admin_requests_total",
        Kind::Counter,
        "HTTP requests the admin server answered.",
        admin.requests.get(),
    );
    x.single(
        "tern_admin_unauthorized_total",
        Kind::Counter,
        "Admin requests refused for a missing or wrong bearer token.",
        admin.unauthorized.get(),
    );
    x.finish()
}

fn connections(x: &mut Exposition, broker: &Broker) {
    let m = broker.metrics();
    let gauges = broker.gauges();
    x.family(
        "tern_build_info",
        Kind::Gauge,
        "Hub version (the value is always 1).",
    );
    x.sample(
        "tern_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    x.single(
        "tern_uptime_seconds",
        Kind::Gauge,
        "Seconds since the hub started.",
        m.uptime().as_secs(),
    );
    x.single(
        "tern_clients_connected",
        Kind::Gauge,
        "Clients connected now.",
        m.clients_connected.get(),
    );
    x.single(
        "tern_sessions",
        Kind::Gauge,
        "Sessions known, online and offline.",
        gauges.sessions,
    );
    x.single(
        "tern_subscriptions",
        Kind::Gauge,
        "Subscriptions held.",
        gauges.subscriptions,
    );
    x.single(
        "tern_retained_messages",
        Kind::Gauge,
        "Retained messages stored.",
        gauges.retained,
    );
    x.single(
        "tern_connections_accepted_total",
        Kind::Counter,
        "TCP connections accepted.",
        m.connections_accepted.get(),
    );
    x.single(
        "tern_connections_refused_total",
        Kind::Counter,
        "Connections refused at accept (max_connections).",
        m.connections_refused.get(),
    );
    x.single(
        "tern_keepalive_timeouts_total",
        Kind::Counter,
        "Clients disconnected for exceeding 1.5 times their keep alive.",
        m.keepalive_timeouts.get(),
    );
    x.single(
        "tern_malformed_packets_total",
        Kind::Counter,
        "Malformed packets and protocol violations.",
        m.malformed.get(),
    );
}

fn per_qos(x: &mut Exposition, name: &str, help: &str, counters: &[Counter; 3]) {
    x.family(name, Kind::Counter, help);
    for (qos, counter) in ["0", "1", "2"].iter().zip(counters) {
        x.sample(name, &[("qos", qos)], counter.get());
    }
}

fn messages(x: &mut Exposition, broker: &Broker) {
    let m = broker.metrics();
    per_qos(
        x,
        "tern_messages_received_total",
        "PUBLISH packets received from clients, by QoS.",
        &m.publishes_received_qos,
    );
    per_qos(
        x,
        "tern_messages_sent_total",
        "PUBLISH packets sent to clients, by QoS.",
        &m.publishes_sent_qos,
    );
    x.single(
        "tern_packets_received_total",
        Kind::Counter,
        "Packets received from clients, all kinds.",
        m.packets_received.get(),
    );
    x.single(
        "tern_packets_sent_total",
        Kind::Counter,
        "Packets sent to clients, all kinds.",
        m.packets_sent.get(),
    );
    x.single(
        "tern_bytes_received_total",
        Kind::Counter,
        "Bytes read from clients.",
        m.bytes_received.get(),
    );
    x.single(
        "tern_bytes_sent_total",
        Kind::Counter,
        "Bytes written to clients.",
        m.bytes_sent.get(),
    );
    let stats = broker.store().map(crate::store::Store::stats);
    let name = "tern_messages_dropped_total";
    x.family(
        name,
        Kind::Counter,
        "Messages dropped, by reason: delivery (queue overflow, expiry, over the client's \
         maximum packet size), filter (dropped by a filter), store_full (client publishes \
         refused by the store), store_retention (deleted by retention while still needed).",
    );
    x.sample(name, &[("reason", "delivery")], m.messages_dropped.get());
    x.sample(name, &[("reason", "filter")], m.filters.dropped.get());
    x.sample(name, &[("reason", "store_full")], m.store_refused.get());
    if let Some(stats) = stats {
        x.sample(
            name,
            &[("reason", "store_retention")],
            stats.dropped_unconsumed,
        );
    }
    x.single(
        "tern_messages_redistributed_total",
        Kind::Counter,
        "Undelivered messages of a shared subscription handed to another member when the \
         chosen member's session ended.",
        m.messages_redistributed.get(),
    );
}

fn store(x: &mut Exposition, broker: &Broker) {
    if let Some(stats) = broker.store().map(crate::store::Store::stats) {
        let rows: [(&str, Kind, &str, u64); 11] = [
            (
                "tern_store_appends_total",
                Kind::Counter,
                "Messages appended to the store (committed).",
                stats.appends,
            ),
            (
                "tern_store_commits_total",
                Kind::Counter,
                "Store write transactions committed.",
                stats.commits,
            ),
            (
                "tern_store_bytes",
                Kind::Gauge,
                "Encoded bytes of the messages stored.",
                stats.bytes,
            ),
            (
                "tern_store_records",
                Kind::Gauge,
                "Messages stored.",
                stats.records,
            ),
            (
                "tern_store_errors_total",
                Kind::Counter,
                "Failed commits and corrupted records met.",
                stats.errors,
            ),
            (
                "tern_store_refused_total",
                Kind::Counter,
                "Store submissions refused because the store is full (policy refuse).",
                stats.refused,
            ),
            (
                "tern_store_trimmed_total",
                Kind::Counter,
                "Messages deleted by retention.",
                stats.trimmed,
            ),
            (
                "tern_store_dropped_unconsumed_total",
                Kind::Counter,
                "Messages deleted by retention while a session or consumer still needed them.",
                stats.dropped_unconsumed,
            ),
            (
                "tern_store_last_commit_batch",
                Kind::Gauge,
                "Appends in the last committed transaction.",
                stats.last_commit_batch,
            ),
            (
                "tern_store_head_seq",
                Kind::Gauge,
                "First sequence number in the message log.",
                stats.head,
            ),
            (
                "tern_store_next_seq",
                Kind::Gauge,
                "Sequence number the next append receives.",
                stats.next_seq,
            ),
        ];
        for (name, kind, help, value) in rows {
            x.single(name, kind, help, value);
        }
    }
    x.histogram(
        "tern_store_commit_wait_seconds",
        "Time from submitting a batch of client publishes to the store until it is durable \
         and acknowledged.",
        &broker.metrics().commit_wait,
    );
}

fn filters(x: &mut Exposition, broker: &Broker) {
    let f = &broker.metrics().filters;
    x.single(
        "tern_filters_batches_total",
        Kind::Counter,
        "Filter calls that decided a batch, all filters.",
        f.batches.get(),
    );
    let name = "tern_filter_deploys_total";
    x.family(name, Kind::Counter, "Filter deployments, by result.");
    x.sample(name, &[("result", "ok")], f.deploys_ok.get());
    x.sample(name, &[("result", "refused")], f.deploys_refused.get());
    x.histogram(
        "tern_filter_batch_seconds",
        "Time the filter pipelines take for one batch of client publishes.",
        &broker.metrics().filter_batch,
    );
    let Some(pipelines) = broker.pipelines() else {
        return;
    };
    let set = pipelines.current();
    let loaded: Vec<(String, &std::sync::Arc<crate::filter_host::LoadedFilter>)> =
        set.filters().map(|(i, f)| (i.to_string(), f)).collect();
    type Pick = fn(&crate::filter_host::FilterStats) -> &Counter;
    let simple: [(&str, &str, Pick); 4] = [
        (
            "tern_filter_batches_total",
            "Calls of the filter that returned usable verdicts.",
            |s| &s.batches,
        ),
        (
            "tern_filter_policy_applied_total",
            "Messages the pipeline's failure policy was applied to because of the filter.",
            |s| &s.policy_applied,
        ),
        (
            "tern_filter_log_suppressed_total",
            "Log lines of the filter dropped by the rate limit.",
            |s| &s.log_suppressed,
        ),
        (
            "tern_filter_instances_created_total",
            "Instances of the filter created.",
            |s| &s.instances_created,
        ),
    ];
    for (name, help, pick) in simple {
        x.family(name, Kind::Counter, help);
        for (pipeline, filter) in &loaded {
            let labels = [("pipeline", pipeline.as_str()), ("filter", filter.name())];
            x.sample(name, &labels, pick(filter.stats()).get());
        }
    }
    /// A per-filter family with one more label, and a counter per value of that label.
    struct Labelled {
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &'static [(&'static str, Pick)],
    }
    let labelled = [
        Labelled {
            name: "tern_filter_messages_total",
            help: "Messages through the filter, by outcome.",
            label: "outcome",
            values: &[
                ("in", |s| &s.messages_in),
                ("kept", |s| &s.kept),
                ("dropped", |s| &s.dropped),
                ("replaced", |s| &s.replaced),
                ("routed", |s| &s.routed),
            ],
        },
        Labelled {
            name: "tern_filter_failures_total",
            help: "Failed calls of the filter, by kind.",
            label: "kind",
            values: &[
                ("trap", |s| &s.failed_trap),
                ("timeout", |s| &s.failed_timeout),
                ("error", |s| &s.failed_error),
                ("invalid_verdicts", |s| &s.failed_invalid_verdicts),
                ("memory", |s| &s.failed_memory),
            ],
        },
    ];
    for Labelled {
        name,
        help,
        label,
        values,
    } in labelled
    {
        x.family(name, Kind::Counter, help);
        for (pipeline, filter) in &loaded {
            for (value, pick) in values {
                let labels = [
                    ("pipeline", pipeline.as_str()),
                    ("filter", filter.name()),
                    (label, value),
                ];
                x.sample(name, &labels, pick(filter.stats()).get());
            }
        }
    }
}

fn security(x: &mut Exposition, broker: &Broker) {
    sys_counters(
        x,
        broker.metrics().security.sys_topics(),
        "security",
        "docs/security.md",
    );
}

fn transactions(x: &mut Exposition, broker: &Broker) {
    sys_counters(
        x,
        broker.metrics().transactions.sys_topics(),
        "transactions",
        "docs/transactions.md",
    );
}

/// Counters published as `$SYS/broker/<area>/<key>`, as `tern_<area>_<key>_total`.
fn sys_counters(
    x: &mut Exposition,
    topics: impl IntoIterator<Item = (&'static str, String)>,
    area: &str,
    doc: &str,
) {
    let prefix = format!("$SYS/broker/{area}/");
    for (topic, value) in topics {
        let Some(rest) = topic.strip_prefix(prefix.as_str()) else {
            continue;
        };
        let name = format!("tern_{area}_{}_total", name_part(rest));
        x.single(
            &name,
            Kind::Counter,
            &format!("Counter published as {topic} ({doc})."),
            value,
        );
    }
}

/// Every numeric `$SYS/broker/bridges/<name>/<key>` value as `tern_bridge_<key>{bridge}`.
fn bridges(x: &mut Exposition, broker: &Broker) {
    let mut families: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (topic, value) in broker.sys_source_topics() {
        let Some(rest) = topic.strip_prefix("$SYS/broker/bridges/") else {
            continue;
        };
        let Some((bridge, key)) = rest.split_once('/') else {
            continue;
        };
        if value.parse::<f64>().is_err() {
            // Text values (last_error) are in GET /bridges.
            continue;
        }
        families
            .entry(name_part(key))
            .or_default()
            .push((bridge.to_owned(), value));
    }
    for (key, samples) in families {
        let name = format!("tern_bridge_{key}");
        x.family(
            &name,
            Kind::Gauge,
            &format!("Bridge value published as $SYS/broker/bridges/<bridge>/{key}."),
        );
        for (bridge, value) in samples {
            x.sample(&name, &[("bridge", &bridge)], value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut x = Exposition::default();
        x.family("tern_x", Kind::Gauge, "Help with \\ and\nnewline.");
        x.sample("tern_x", &[("filter", "a\"b\\c\nd")], 3);
        assert_eq!(
            x.finish(),
            "# HELP tern_x Help with \\\\ and\\nnewline.\n# TYPE tern_x gauge\n\
             tern_x{filter=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn histogram_has_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe(std::time::Duration::from_micros(200));
        h.observe(std::time::Duration::from_secs(20));
        let mut x = Exposition::default();
        x.histogram("tern_h_seconds", "H.", &h);
        let text = x.finish();
        assert!(text.contains("tern_h_seconds_bucket{le=\"0.0001\"} 0\n"));
        assert!(text.contains("tern_h_seconds_bucket{le=\"0.00025\"} 1\n"));
        assert!(text.contains("tern_h_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("tern_h_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("tern_h_seconds_sum 20.0002\n"));
        assert!(text.contains("tern_h_seconds_count 2\n"));
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(250), "0.00025");
        assert_eq!(seconds(2_500_000), "2.5");
    }
}
