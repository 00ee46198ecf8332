//! The hub's configuration tree: one serde struct per module, loaded from TOML.
//!
//! Every key is optional; the defaults are the values documented in `hub/default.toml`
//! (printed by `tern generate-config`). Unknown keys are rejected, and every error names
//! the file, the dotted key path and the reason, e.g.
//! ``tern.toml: key `session.max_packet_size`: invalid size "12 parsecs"``.
//!
//! Sizes accept an integer number of bytes or a string with a binary unit (`"64KiB"`,
//! `"1MiB"`, `"2GiB"`); durations accept `"500ms"`, `"10s"`, `"5m"`, `"7d"`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The embedded default configuration, printed by `tern generate-config`.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// The whole configuration of one hub process.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for durable state; created at start-up if missing.
    pub data_dir: PathBuf,
    /// TCP listeners; each `bind` address gets its own accept loop.
    pub listener: Vec<ListenerConfig>,
    /// Per-session protocol limits.
    pub session: SessionConfig,
    /// The durable store: retention and group commit.
    pub store: StoreSection,
    /// Limits and compiled-artifact cache of the filter host, shared by every pipeline.
    pub filters: crate::filter_host::FilterLimitsConfig,
    /// Filter pipelines; a message goes through the first one whose topics match it.
    pub pipeline: Vec<crate::filter_host::PipelineConfig>,
    /// Upstream bridges (store-and-forward to cloud brokers), each with its own cursor.
    pub bridge: Vec<crate::bridge::BridgeConfig>,
    /// The admin HTTP API and Prometheus endpoint.
    pub admin: crate::admin::AdminConfig,
    /// Log lines on stderr: level and format.
    pub log: LogConfig,
    /// Transactional (half) messages: check-back, policy, limits.
    pub transactions: crate::tx::TxConfig,
    /// The file this configuration was read from (not a key): the hub watches it and
    /// reloads its pipelines when it changes.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Sections the command line replaced (`listener` for `--listen`, `data_dir` for
    /// `--data-dir`), which a reload of the file does not compare (not a key).
    #[serde(skip)]
    pub overridden: Vec<&'static str>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tern-data"),
            listener: vec![ListenerConfig::default()],
            session: SessionConfig::default(),
            store: StoreSection::default(),
            filters: crate::filter_host::FilterLimitsConfig::default(),
            pipeline: Vec::new(),
            bridge: Vec::new(),
            admin: crate::admin::AdminConfig::default(),
            log: LogConfig::default(),
            transactions: crate::tx::TxConfig::default(),
            source: None,
            overridden: Vec::new(),
        }
    }
}

/// `[log]`: what the hub logs on stderr and how. `RUST_LOG`, when set, replaces `level`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Level or `tracing` filter directives (`"info"`, `"warn,tern_hub::bridge=debug"`).
    pub level: String,
    /// `text` (human-readable lines) or `json` (one JSON object per line).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: String::from("info"),
            format: LogFormat::Text,
        }
    }
}

/// `log.format`: how each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO target: message key=value`.
    #[default]
    Text,
    /// `{"timestamp":..,"level":"INFO","fields":{"message":..,..},"target":..}`.
    Json,
}

/// What the store does once its byte budget is full of data still needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Refuse new messages: MQTT 5 PUBACK/PUBREC 0x97 (Quota exceeded); 3.1.1 clients are
    /// disconnected without an acknowledgement, so they publish again later.
    Refuse,
    /// Delete the oldest messages even if a session still needs them (counted and logged).
    DropOldest,
}

/// `[store]`: the durable message store in `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Retention budget: encoded bytes of stored messages.
    pub max_bytes: ByteSize,
    /// Messages older than this are deleted.
    pub max_age: HumanDuration,
    /// Policy once `max_bytes` is full of messages still needed.
    pub when_full: WhenFull,
    /// Most messages committed in one write transaction.
    pub group_commit_max_messages: usize,
    /// Most message bytes committed in one write transaction.
    pub group_commit_max_bytes: ByteSize,
    /// How long a commit waits for more messages once nothing else is waiting.
    pub group_commit_linger: HumanDuration,
    /// When acknowledged writes are flushed to the disk.
    pub fsync: Fsync,
    /// Under `fsync = "interval"`: how often the journal is flushed.
    pub fsync_interval: HumanDuration,
}

/// `store.fsync`: when an acknowledged write reaches the disk (see `docs/storage.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fsync {
    /// Acknowledge after an fsynced commit: survives a power loss.
    EveryCommit,
    /// Acknowledge after a journal write; fsync every `fsync_interval`: survives a crash or
    /// `kill -9`, a power loss takes at most the last interval.
    Interval,
}

impl Default for StoreSection {
    fn default() -> Self {
        let d = crate::store::StoreConfig::default();
        Self {
            max_bytes: ByteSize(d.max_bytes),
            max_age: HumanDuration(d.max_age),
            when_full: WhenFull::Refuse,
            group_commit_max_messages: d.group_commit_max_messages,
            group_commit_max_bytes: ByteSize(
                u64::try_from(d.group_commit_max_bytes).unwrap_or(u64::MAX),
            ),
            group_commit_linger: HumanDuration(d.group_commit_linger),
            fsync: match d.fsync {
                crate::store::FsyncPolicy::EveryCommit => Fsync::EveryCommit,
                crate::store::FsyncPolicy::Interval(_) => Fsync::Interval,
            },
            fsync_interval: HumanDuration(match d.fsync {
                crate::store::FsyncPolicy::Interval(every) => every,
                crate::store::FsyncPolicy::EveryCommit => Duration::from_millis(50),
            }),
        }
    }
}

impl StoreSection {
    /// The store's own configuration (tuning knobs not exposed here keep their defaults).
    pub fn store_config(&self) -> crate::store::StoreConfig {
        crate::store::StoreConfig {
            max_bytes: self.max_bytes.0,
            max_age: self.max_age.0,
            when_full: match self.when_full {
                WhenFull::Refuse => crate::store::WhenFull::Refuse,
                WhenFull::DropOldest => crate::store::WhenFull::DropOldest,
            },
            group_commit_max_messages: self.group_commit_max_messages,
            group_commit_max_bytes: usize::try_from(self.group_commit_max_bytes.0)
                .unwrap_or(usize::MAX),
            group_commit_linger: self.group_commit_linger.0,
            fsync: match self.fsync {
                Fsync::EveryCommit => crate::store::FsyncPolicy::EveryCommit,
                Fsync::Interval => crate::store::FsyncPolicy::Interval(self.fsync_interval.0),
            },
            ..crate::store::StoreConfig::default()
        }
    }
}

/// One TCP listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address to bind, `ip:port`.
    pub bind: SocketAddr,
    /// Connections beyond this are closed right after accept (counted and logged).
    pub max_connections: usize,
    /// Open connections allowed from one source IP address; 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Transport: `"mqtt"`, `"mqtt+tls"`, `"ws"` or `"wss"`.
    pub protocol: crate::security::config::ListenerProtocol,
    /// Certificate, key and client-certificate verification (`mqtt+tls` and `wss`).
    pub tls: Option<crate::security::config::ListenerTls>,
    /// WebSocket settings (`ws` and `wss`).
    pub websocket: crate::security::config::WebSocketSettings,
    /// Whether clients without credentials may connect; unset: only on a loopback listener
    /// without authentication (`docs/security.md`).
    pub allow_anonymous: Option<bool>,
    /// `user:$argon2id$...` lines, managed with `tern passwd`.
    pub password_file: Option<PathBuf>,
    /// Access rules (syntax in `docs/security.md`); without one every client may publish and
    /// subscribe to everything.
    pub acl_file: Option<PathBuf>,
}

impl ListenerConfig {
    /// The security keys of this listener, for validation and start-up.
    pub fn security_keys(&self) -> crate::security::config::ListenerSecurityKeys<'_> {
        crate::security::config::ListenerSecurityKeys {
            bind: self.bind,
            protocol: self.protocol,
            tls: self.tls.as_ref(),
            websocket: &self.websocket,
            allow_anonymous: self.allow_anonymous,
            password_file: self.password_file.as_ref(),
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_connections: 10_000,
            max_connections_per_ip: 0,
            protocol: crate::security::config::ListenerProtocol::Mqtt,
            tls: None,
            websocket: crate::security::config::WebSocketSettings::default(),
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
        }
    }
}

/// What a full per-session queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueOverflow {
    /// Drop the oldest queued message to make room for the new one.
    DropOldest,
    /// Keep the queue as it is and drop the new message.
    DropNew,
    /// For a connected session, the publisher waits (at most `queue_full_wait`) until the
    /// subscriber makes room, so a slow subscriber slows publishers down instead of losing
    /// acknowledged messages; after the wait, and for offline sessions, as `drop-oldest`.
    Backpressure,
}

/// Per-session protocol limits, announced to v5 clients in CONNACK where MQTT has a property.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Largest inbound packet accepted; announced as v5 Maximum Packet Size.
    pub max_packet_size: ByteSize,
    /// Inbound QoS 1/2 publishes a client may have unacknowledged (v5 Receive Maximum).
    pub receive_maximum: u16,
    /// Outbound QoS 1/2 window per session, further capped by the client's Receive Maximum.
    pub max_inflight: u16,
    /// Bound on a clean session's queue (all in memory); for a persistent session, the
    /// queue length at which publishers to it wait while it is connected (`backpressure`),
    /// and the most entries it holds in memory that the store does not track (QoS 0).
    pub max_queued_messages: usize,
    /// Most messages one persistent session's queue holds, in memory and in the store
    /// together: a safety cap, the store's retention budget normally binds first. A value
    /// below `max_queued_messages` counts as `max_queued_messages`.
    pub max_backlog_messages: usize,
    /// Bytes of loaded messages a persistent session keeps in memory; the rest of its queue
    /// stays in the store as log positions and is paged in as the session drains.
    pub queue_window: ByteSize,
    /// Policy when the queue is full.
    pub queue_overflow: QueueOverflow,
    /// Under `backpressure`: how long one publish waits in total for room in full queues.
    pub queue_full_wait: HumanDuration,
    /// Under `backpressure`: the queue length from which publishers to a connected session
    /// that is draining its queue (it took a message within the last `queue_full_wait`)
    /// wait for room, so a subscriber slower than its publishers holds little in memory. A
    /// session that is not taking messages makes them wait only at `max_queued_messages`.
    /// A value above `max_queued_messages` counts as `max_queued_messages`.
    pub queue_wait_level: usize,
    /// With a store: a clean session's queue beyond `queue_window` waits in the store as log
    /// positions, as a persistent session's does, and publishers to it wait for room only
    /// at `max_backlog_messages`: a clean subscriber slower than its publishers no longer
    /// holds up their acknowledgements. Off: a clean session's queue is in memory, bounded
    /// by `max_queued_messages`, and publishers wait from `queue_wait_level`. Publishers
    /// to a connected persistent session wait from `queue_wait_level` either way.
    pub queue_in_store: bool,
    /// Keep alive imposed on clients (v5 Server Keep Alive); zero accepts the client's.
    pub server_keep_alive: HumanDuration,
    /// Cap on the session expiry interval a v5 client may ask for.
    pub max_session_expiry: HumanDuration,
    /// Inbound topic aliases accepted from a v5 client (v5 Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Time allowed between TCP accept and a complete CONNECT.
    pub connect_timeout: HumanDuration,
    /// Period of the `$SYS/broker/...` publish; zero disables it.
    pub sys_interval: HumanDuration,
    /// Longest topic name or filter accepted, in bytes (PUBLISH, SUBSCRIBE, will).
    pub max_topic_length: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter; 0 = no limit.
    pub max_topic_levels: usize,
    /// Most subscriptions one client may hold; 0 = no limit.
    pub max_subscriptions_per_client: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_packet_size: ByteSize(1024 * 1024),
            receive_maximum: 64,
            max_inflight: 64,
            max_queued_messages: 10_000,
            max_backlog_messages: 1_000_000,
            queue_window: ByteSize(256 * 1024),
            queue_overflow: QueueOverflow::Backpressure,
            queue_full_wait: HumanDuration(Duration::from_secs(1)),
            queue_wait_level: 2_000,
            queue_in_store: true,
            server_keep_alive: HumanDuration(Duration::ZERO),
            max_session_expiry: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
            topic_alias_maximum: 64,
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            sys_interval: HumanDuration(Duration::from_secs(10)),
            max_topic_length: 65_535,
            max_topic_levels: 0,
            max_subscriptions_per_client: 0,
        }
    }
}

/// A size in bytes, written as an integer or as a string with a unit (`"64KiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"1024"`, `"64KiB"`, `"1MiB"`, `"2GiB"`, `"10kB"`, `"5MB"` (SI units are powers of 1000).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let number: u64 = digits.parse().ok()?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        };
        number.checked_mul(factor).map(Self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: integer bytes or a string like \"64KiB\" or \"1MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size must not be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {v:?} (expected e.g. 65536, \"64KiB\", \"1MiB\")"
                    ))
                })
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration written as `"500ms"`, `"10s"`, `"5m"`, `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(HumanDuration).map_err(|err| {
            de::Error::custom(format!(
                "invalid duration {text:?}: {err} (expected e.g. \"500ms\", \"10s\", \"5m\", \"7d\")"
            ))
        })
    }
}

/// A configuration that could not be loaded: where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file that was named.
        file: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A key is unknown, has the wrong type, or fails validation.
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        /// The file (or `<default>` for the embedded one).
        file: PathBuf,
        /// Dotted key path, e.g. `session.max_packet_size` or `listener[0].bind`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The text is not TOML.
    #[error("{file}: {reason}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The parser's message, with line and column.
        reason: String,
    },
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, file)?;
        config.source = Some(file.to_path_buf());
        Ok(config)
    }

    /// Parses and validates TOML text; `file` only labels the errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|err| ConfigError::Syntax {
            file: file.to_path_buf(),
            reason: err.to_string().trim_end().to_owned(),
        })?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            ConfigError::Invalid {
                file: file.to_path_buf(),
                key: if key == "." {
                    String::from("(top level)")
                } else {
                    key
                },
                reason: inner.message().to_owned(),
            }
        })?;
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                file: file.to_path_buf(),
                key: key.to_owned(),
                reason,
            })?;
        Ok(config)
    }

    /// Cross-field and range checks serde cannot express. Returns `(key, reason)`.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let s = &self.session;
        if self.listener.is_empty() {
            return Err(("listener", "at least one [[listener]] is required".into()));
        }
        if self.listener.iter().any(|l| l.max_connections == 0) {
            return Err(("listener.max_connections", "must be at least 1".into()));
        }
        for (i, listener) in self.listener.iter().enumerate() {
            listener
                .security_keys()
                .validate()
                .map_err(|(key, reason)| (key, format!("listener {i}: {reason}")))?;
        }
        if s.max_topic_length == 0 || s.max_topic_length > 65_535 {
            return Err((
                "session.max_topic_length",
                "must be between 1 and 65535".into(),
            ));
        }
        // MQTT caps packets at 268 435 460 bytes (4-byte remaining length + header).
        if s.max_packet_size.0 < 64 || s.max_packet_size.0 > 268_435_460 {
            return Err((
                "session.max_packet_size",
                format!(
                    "must be between 64 B and 256MiB, got {}",
                    s.max_packet_size.0
                ),
            ));
        }
        let every = self.store.fsync_interval.0;
        if every < Duration::from_millis(1) || every > Duration::from_secs(60) {
            return Err((
                "store.fsync_interval",
                format!(
                    "must be between 1ms and 60s, got {}",
                    humantime::format_duration(every)
                ),
            ));
        }
        if s.receive_maximum == 0 {
            return Err(("session.receive_maximum", "must be at least 1".into()));
        }
        if s.max_inflight == 0 {
            return Err(("session.max_inflight", "must be at least 1".into()));
        }
        if s.queue_wait_level == 0 {
            return Err(("session.queue_wait_level", "must be at least 1".into()));
        }
        if s.max_queued_messages == 0 {
            return Err(("session.max_queued_messages", "must be at least 1".into()));
        }
        if s.queue_window.0 == 0 {
            return Err(("session.queue_window", "must be greater than zero".into()));
        }
        if s.server_keep_alive.0.as_secs() > u64::from(u16::MAX) {
            return Err(("session.server_keep_alive", "must be at most 65535s".into()));
        }
        if self.store.max_bytes.0 == 0 {
            return Err(("store.max_bytes", "must be greater than zero".into()));
        }
        if self.store.max_age.0.is_zero() {
            return Err(("store.max_age", "must be greater than zero".into()));
        }
        if self.store.group_commit_max_messages == 0 {
            return Err((
                "store.group_commit_max_messages",
                "must be at least 1".into(),
            ));
        }
        if self.store.group_commit_max_bytes.0 == 0 {
            return Err((
                "store.group_commit_max_bytes",
                "must be greater than zero".into(),
            ));
        }
        if self.store.group_commit_linger.0 > Duration::from_secs(1) {
            return Err(("store.group_commit_linger", "must be at most 1s".into()));
        }
        if s.connect_timeout.0.is_zero() {
            return Err((
                "session.connect_timeout",
                "must be greater than zero".into(),
            ));
        }
        self.validate_pipelines()?;
        self.transactions.validate()?;
        crate::admin::config::validate(&self.admin)?;
        if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return Err(("log.level", format!("{:?}: {err}", self.log.level)));
        }
        crate::bridge::config::validate(&self.bridge)
    }

    /// What can be checked of `[[pipeline]]` without loading the filters.
    fn validate_pipelines(&self) -> Result<(), (&'static str, String)> {
        for (i, pipeline) in self.pipeline.iter().enumerate() {
            if pipeline.topics.is_empty() {
                return Err(("pipeline.topics", format!("pipeline {i}: no topics")));
            }
            for topic in &pipeline.topics {
                if let Err(err) = tern_mqtt::topic::validate_topic_filter(topic) {
                    return Err((
                        "pipeline.topics",
                        format!("pipeline {i}: invalid topic filter {topic:?}: {err}"),
                    ));
                }
            }
            if pipeline.filters.is_empty() {
                return Err(("pipeline.filters", format!("pipeline {i}: no filters")));
            }
            let mut names = std::collections::HashSet::new();
            for filter in &pipeline.filters {
                if filter.name.is_empty() {
                    return Err(("pipeline.filters.name", format!("pipeline {i}: empty name")));
                }
                if !names.insert(filter.name.as_str()) {
                    return Err((
                        "pipeline.filters.name",
                        format!("pipeline {i}: filter name {:?} used twice", filter.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The session expiry cap in seconds, as MQTT v5 counts it (`u32::MAX` = never expires).
    pub fn max_session_expiry_secs(&self) -> u32 {
        u32::try_from(self.session.max_session_expiry.0.as_secs()).unwrap_or(u32::MAX)
    }

    /// Inbound packet limit as the u32 MQTT announces (the range is validated at load).
    pub fn max_packet_size(&self) -> u32 {
        u32::try_from(self.session.max_packet_size.0).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("tern.toml"))
    }

    #[test]
    fn embedded_default_is_valid_and_equals_built_in_defaults() {
        let parsed = parse(DEFAULT_TOML).expect("default.toml parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").expect("empty parses"), Config::default());
    }

    #[test]
    fn admin_section_parses_and_errors_name_the_key() {
        let config = parse("[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"t0k\"\n").expect("parses");
        assert!(config.admin.is_enabled());
        assert!(config.admin.metrics_need_token());
        let err = parse("[admin]\ntoken = \"a\"\ntoken_file = \"f\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tern.toml: key `admin.token`"), "{err}");
        let err = parse("[admin]\nmetrics_auth = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tern.toml: key `admin.metrics_auth`"),
            "{err}"
        );
        let err = parse("[admin]\nport = 1\n").unwrap_err().to_string();
        assert!(err.contains("admin"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_key_and_reason() {
        let err = parse("[session]\nmax_packet_sise = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tern.toml: key `session"), "{err}");
        assert!(err.contains("unknown field `max_packet_sise`"), "{err}");
    }

    #[test]
    fn bad_value_names_file_key_and_reason() {
        let err = parse("[session]\nmax_packet_size = \"12 parsecs\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tern.toml: key `session.max_packet_size`: invalid size"),
            "{err}"
        );

        let err = parse("[session]\nconnect_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `session.connect_timeout`: invalid duration"),
            "{err}"
        );

        let err = parse("[[listener]]\nbind = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `listener[0].bind`"), "{err}");

        let err = parse("[session]\nqueue_overflow = \"drop-all\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `session.queue_overflow`"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let err = parse("[session]\nreceive_maximum = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tern.toml: key `session.receive_maximum`: must be at least 1"
        );
    }

    #[test]
    fn sizes_and_durations_parse() {
        let config = parse(
            "[session]\nmax_packet_size = \"64KiB\"\nconnect_timeout = \"500ms\"\n\
             max_session_expiry = \"5m\"\n",
        )
        .expect("parses");
        assert_eq!(config.session.max_packet_size, ByteSize(65_536));
        assert_eq!(config.session.connect_timeout.0, Duration::from_millis(500));
        assert_eq!(config.max_session_expiry_secs(), 300);
        assert_eq!(
            parse("[session]\nmax_packet_size = 2048\n")
                .unwrap()
                .max_packet_size(),
            2048
        );
        assert_eq!(ByteSize::parse("1MiB"), Some(ByteSize(1 << 20)));
        assert_eq!(ByteSize::parse("1 XB"), None);
    }

    #[test]
    fn store_section_parses_and_validates() {
        let config = parse(
            "[store]\nmax_bytes = \"64MiB\"\nmax_age = \"1d\"\nwhen_full = \"drop-oldest\"\n\
             group_commit_linger = \"2ms\"\n",
        )
        .expect("parses");
        let store = config.store.store_config();
        assert_eq!(store.max_bytes, 64 << 20);
        assert_eq!(store.max_age, Duration::from_secs(86_400));
        assert_eq!(store.when_full, crate::store::WhenFull::DropOldest);
        assert_eq!(store.group_commit_linger, Duration::from_millis(2));
        let err = parse("[store]\nwhen_full = \"panic\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `store.when_full`"), "{err}");
        let err = parse("[store]\nmax_bytes = 0\n").unwrap_err().to_string();
        assert!(err.contains("key `store.max_bytes`"), "{err}");
    }
}
