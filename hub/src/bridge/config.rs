//! `[[bridge]]` configuration: one table per upstream broker, with its validation.
//!
//! Deserialized as part of [`crate::Config`]; [`validate`] runs with the rest of the
//! configuration checks and reports `(key, reason)` like them. Files named here (TLS) are
//! read when the hub starts ([`super::prepare`]), not at parse time.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ByteSize, HumanDuration};

/// One upstream bridge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Unique name: the target of filter routes (`bridge:<name>`), the key of the bridge's
    /// durable cursor and the `$SYS/broker/bridges/<name>/...` topics.
    pub name: String,
    /// Upstream broker, `host:port` (`[v6addr]:port` for IPv6 literals).
    pub address: String,
    /// MQTT client identifier used upstream.
    pub client_id: String,
    /// User name sent in CONNECT.
    #[serde(default)]
    pub username: Option<String>,
    /// Password sent in CONNECT (requires `username`).
    #[serde(default)]
    pub password: Option<String>,
    /// Protocol spoken upstream.
    #[serde(default)]
    pub protocol: Protocol,
    /// Keep alive announced upstream (whole seconds, 1 s to 65535 s).
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// TLS to the upstream broker; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Local topic filters whose messages are forwarded (besides filter routes to this
    /// bridge). May be empty when only routes feed the bridge.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Prepended to the local topic upstream (not to routed messages, whose route names
    /// the upstream topic).
    #[serde(default)]
    pub remote_prefix: String,
    /// QoS of upstream publishes.
    #[serde(default)]
    pub qos: UpstreamQos,
    /// One upstream PUBLISH per message, or one per batch.
    #[serde(default)]
    pub mode: Mode,
    /// Encoding of envelopes (`mode = "envelope"`).
    #[serde(default)]
    pub envelope_format: EnvelopeFormat,
    /// Upstream topic of envelopes; default `<remote_prefix>tern/envelope/<gateway_id>`.
    #[serde(default)]
    pub envelope_topic: Option<String>,
    /// Envelope batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Upstream publishes awaiting acknowledgement; default 100 (`each`), 8 (`envelope`).
    #[serde(default)]
    pub inflight: Option<u16>,
    /// First half of every message id (`<gateway_id>:<seq>`); default: `client_id`.
    #[serde(default)]
    pub gateway_id: Option<String>,
    /// Reconnect backoff.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Order of a backlog against newer messages after an outage.
    #[serde(default)]
    pub replay: ReplayPolicy,
    /// How much unforwarded backlog the bridge keeps before it gives up the oldest.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Compression of envelopes (`mode = "envelope"`).
    #[serde(default)]
    pub compression: Compression,
    /// zstd level (1 to 22) of `compression = "zstd"`; default 3.
    #[serde(default)]
    pub compression_level: Option<i32>,
}

fn default_keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

impl BridgeConfig {
    /// The gateway id used in message ids.
    pub fn gateway_id(&self) -> &str {
        self.gateway_id.as_deref().unwrap_or(&self.client_id)
    }

    /// The upstream topic of envelopes.
    pub fn envelope_topic(&self) -> String {
        match &self.envelope_topic {
            Some(topic) => topic.clone(),
            None => format!("{}tern/envelope/{}", self.remote_prefix, self.gateway_id()),
        }
    }

    /// The in-flight window.
    pub fn inflight(&self) -> u16 {
        self.inflight.unwrap_or(match self.mode {
            Mode::Each => 100,
            Mode::Envelope => 8,
        })
    }

    /// `(host, port)` of `address`, or why it does not parse.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        parse_address(&self.address)
    }
}

/// MQTT version spoken upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 5.0: every message carries its id as user property `tern-id`.
    #[default]
    V5,
    /// MQTT 3.1.1: no properties, so `each` mode carries no id.
    V311,
}

/// QoS of upstream publishes: 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub enum UpstreamQos {
    /// QoS 0: a message counts as forwarded once written to the socket.
    AtMostOnce,
    /// QoS 1: a message counts as forwarded once the upstream broker's PUBACK arrives.
    #[default]
    AtLeastOnce,
}

impl TryFrom<u8> for UpstreamQos {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            other => Err(format!("qos must be 0 or 1, got {other}")),
        }
    }
}

/// How messages travel upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One upstream PUBLISH per message, pipelined, in order.
    #[default]
    Each,
    /// One upstream PUBLISH per batch, carrying a `tern-envelope`.
    Envelope,
}

/// Encoding of envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvelopeFormat {
    /// Compact binary (postcard).
    #[default]
    Postcard,
    /// One JSON object per line, for consumers in other languages.
    JsonLines,
}

/// `tls = { ca, cert, key }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) the upstream broker's certificate must chain to.
    pub ca: PathBuf,
    /// PEM client certificate chain (with `key`), for brokers that authenticate clients.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// `batch = { max_messages, max_bytes, linger }` (envelope mode).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most messages in one envelope.
    pub max_messages: usize,
    /// Envelope size target: a batch closes once its messages reach this many bytes (a
    /// single bigger message travels alone).
    pub max_bytes: ByteSize,
    /// How long a partial batch waits for more messages once the bridge has caught up.
    pub linger: HumanDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_messages: 500,
            max_bytes: ByteSize(256 * 1024),
            linger: HumanDuration(Duration::from_millis(20)),
        }
    }
}

/// How a backlog drains after an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayPolicy {
    /// Strictly in log order: the backlog first, then newer messages.
    #[default]
    Strict,
    /// Messages that arrive after the reconnect go first; the backlog drains behind them
    /// in the remaining window, marked as replayed.
    LiveFirst,
}

/// Compression of envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Envelopes travel as encoded.
    #[default]
    None,
    /// zstd (`tern_envelope::compress`): a flag in the binary header, a bare zstd frame for
    /// JSON lines.
    Zstd,
}

/// `outbox = { max_bytes, max_age }`: the bound of one bridge's unforwarded backlog.
///
/// Beyond it the bridge gives up its oldest unforwarded messages (counted in `dropped`,
/// logged, and visible to consumers as a gap) so that a dead upstream cannot pin the whole
/// store and make the hub refuse device publishes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Most bytes of messages waiting (topic + payload + properties + 24 per message, close
    /// to what they occupy in the store). Default: half of `[store] max_bytes`.
    pub max_bytes: Option<ByteSize>,
    /// Oldest a waiting message may be. Default: `[store] max_age` (the store deletes older
    /// messages anyway).
    pub max_age: Option<HumanDuration>,
}

impl OutboxConfig {
    /// The bound in force for a store with budget `store_max_bytes` and age limit
    /// `store_max_age`.
    pub fn resolve(&self, store_max_bytes: u64, store_max_age: Duration) -> OutboxBound {
        OutboxBound {
            max_bytes: self.max_bytes.map_or(store_max_bytes / 2, |b| b.0),
            max_age: self.max_age.map_or(store_max_age, |a| a.0),
        }
    }
}

/// The outbox bound in force (defaults resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBound {
    /// See [`OutboxConfig::max_bytes`].
    pub max_bytes: u64,
    /// See [`OutboxConfig::max_age`].
    pub max_age: Duration,
}

/// `reconnect = { min, max }`: exponential backoff between connection attempts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// First delay after a connection is lost.
    pub min: HumanDuration,
    /// Cap of the doubling delay.
    pub max: HumanDuration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            min: HumanDuration(Duration::from_millis(100)),
            max: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// Splits `host:port` (`[v6]:port`).
fn parse_address(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{address:?} has no valid host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{address:?} has no valid port"))?;
    if port == 0 {
        return Err(format!("{address:?}: port must not be 0"));
    }
    Ok((host.to_owned(), port))
}

/// Whether `topic` is a valid upstream topic name the bridge may publish to.
fn check_upstream_topic(topic: &str) -> Result<(), String> {
    tern_mqtt::topic::validate_topic_name(topic)
        .map_err(|err| format!("invalid topic {topic:?}: {err}"))?;
    if topic.starts_with('$') {
        return Err(format!("topic {topic:?} starts with '$'"));
    }
    Ok(())
}

/// Checks every `[[bridge]]` table. Returns `(key, reason)`; the reason names the bridge.
pub fn validate(bridges: &[BridgeConfig]) -> Result<(), (&'static str, String)> {
    let mut names = HashSet::new();
    for b in bridges {
        let name = &b.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err((
                "bridge.name",
                format!("invalid bridge name {name:?}: use letters, digits, '-', '_', '.'"),
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(("bridge.name", format!("bridge name {name:?} used twice")));
        }
        let at = |reason: String| format!("bridge {name:?}: {reason}");
        b.host_port().map_err(|r| ("bridge.address", at(r)))?;
        if b.client_id.is_empty() || b.client_id.len() > 65_535 {
            return Err(("bridge.client_id", at("must be 1 to 65535 bytes".into())));
        }
        if b.password.is_some() && b.username.is_none() {
            return Err(("bridge.password", at("a password needs a username".into())));
        }
        let keep_alive = b.keep_alive.0;
        if keep_alive < Duration::from_secs(1) || keep_alive.as_secs() > u64::from(u16::MAX) {
            return Err((
                "bridge.keep_alive",
                at("must be between 1s and 65535s".into()),
            ));
        }
        if let Some(tls) = &b.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return Err(("bridge.tls", at("cert and key go together".into())));
        }
        for topic in &b.topics {
            tern_mqtt::topic::validate_topic_filter(topic).map_err(|err| {
                (
                    "bridge.topics",
                    at(format!("invalid topic filter {topic:?}: {err}")),
                )
            })?;
            if topic.starts_with('$') {
                return Err((
                    "bridge.topics",
                    at(format!(
                        "{topic:?}: topics starting with '$' are never forwarded"
                    )),
                ));
            }
        }
        if !b.remote_prefix.is_empty() {
            check_upstream_topic(&format!("{}x", b.remote_prefix))
                .map_err(|r| ("bridge.remote_prefix", at(r)))?;
        }
        if let Some(gw) = &b.gateway_id
            && gw.is_empty()
        {
            return Err(("bridge.gateway_id", at("must not be empty".into())));
        }
        check_upstream_topic(&b.envelope_topic()).map_err(|r| ("bridge.envelope_topic", at(r)))?;
        if b.batch.max_messages == 0 || b.batch.max_messages > 1_000_000 {
            return Err((
                "bridge.batch.max_messages",
                at("must be between 1 and 1000000".into()),
            ));
        }
        if b.batch.max_bytes.0 == 0 || b.batch.max_bytes.0 > 128 << 20 {
            return Err((
                "bridge.batch.max_bytes",
                at("must be between 1 B and 128MiB".into()),
            ));
        }
        if b.batch.linger.0 > Duration::from_secs(10) {
            return Err(("bridge.batch.linger", at("must be at most 10s".into())));
        }
        if b.inflight == Some(0) {
            return Err(("bridge.inflight", at("must be at least 1".into())));
        }
        if b.outbox.max_bytes.is_some_and(|m| m.0 < 1024) {
            return Err((
                "bridge.outbox.max_bytes",
                at("must be at least 1KiB".into()),
            ));
        }
        if b.outbox
            .max_age
            .is_some_and(|a| a.0 < Duration::from_secs(1))
        {
            return Err(("bridge.outbox.max_age", at("must be at least 1s".into())));
        }
        if let Some(level) = b.compression_level {
            if b.compression != Compression::Zstd {
                return Err((
                    "bridge.compression_level",
                    at("needs compression = \"zstd\"".into()),
                ));
            }
            if !(1..=22).contains(&level) {
                return Err((
                    "bridge.compression_level",
                    at("must be between 1 and 22".into()),
                ));
            }
        }
        if b.compression != Compression::None && b.mode != Mode::Envelope {
            return Err((
                "bridge.compression",
                at("compression applies to mode = \"envelope\" only".into()),
            ));
        }
        if b.reconnect.min.0.is_zero() || b.reconnect.min.0 > b.reconnect.max.0 {
            return Err((
                "bridge.reconnect",
                at("min must be greater than zero and at most max".into()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("tern.toml")).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "[[bridge]]\nname = \"cloud\"\naddress = \"broker.example.com:8883\"\n\
                           client_id = \"gw-17\"\n";

    #[test]
    fn minimal_bridge_gets_documented_defaults() {
        let config = parse(MINIMAL).expect("parses");
        let b = &config.bridge[0];
        assert_eq!(b.protocol, super::Protocol::V5);
        assert_eq!(b.qos, super::UpstreamQos::AtLeastOnce);
        assert_eq!(b.mode, super::Mode::Each);
        assert_eq!(b.inflight(), 100);
        assert_eq!(b.gateway_id(), "gw-17");
        assert_eq!(b.envelope_topic(), "tern/envelope/gw-17");
        assert_eq!(b.batch.max_messages, 500);
        assert_eq!(b.batch.max_bytes.0, 256 * 1024);
        assert_eq!(b.host_port(), Ok(("broker.example.com".into(), 8883)));
        assert_eq!(b.compression, super::Compression::None);
        assert_eq!(b.replay, super::ReplayPolicy::Strict);
        let bound = b.outbox.resolve(2 << 30, Duration::from_secs(7 * 86_400));
        assert_eq!(bound.max_bytes, 1 << 30, "half of the store budget");
        assert_eq!(bound.max_age, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn full_bridge_parses() {
        let config = parse(
            "[[bridge]]\nname = \"cloud\"\naddress = \"[::1]:1883\"\nclient_id = \"gw\"\n\
             username = \"u\"\npassword = \"p\"\nprotocol = \"v311\"\nkeep_alive = \"10s\"\n\
             tls = { ca = \"ca.pem\", cert = \"c.pem\", key = \"k.pem\" }\n\
             topics = [\"sensors/#\"]\nremote_prefix = \"site-7/\"\nqos = 0\nmode = \"envelope\"\n\
             envelope_format = \"json-lines\"\nbatch = { max_messages = 10, max_bytes = \"1KiB\", linger = \"5ms\" }\n\
             gateway_id = \"g1\"\nreconnect = { min = \"1s\", max = \"1m\" }\n\
             outbox = { max_bytes = \"512MiB\", max_age = \"2d\" }\ncompression = \"zstd\"\n\
             compression_level = 9\nreplay = \"live-first\"\n",
        )
        .expect("parses");
        let b = &config.bridge[0];
        assert_eq!(b.host_port(), Ok(("::1".into(), 1883)));
        assert_eq!(b.inflight(), 8);
        assert_eq!(b.envelope_topic(), "site-7/tern/envelope/g1");
        assert_eq!(b.qos, super::UpstreamQos::AtMostOnce);
        assert_eq!(b.envelope_format, super::EnvelopeFormat::JsonLines);
        assert_eq!(b.compression, super::Compression::Zstd);
        assert_eq!(b.compression_level, Some(9));
        assert_eq!(b.replay, super::ReplayPolicy::LiveFirst);
        let bound = b.outbox.resolve(2 << 30, Duration::from_secs(7 * 86_400));
        assert_eq!(bound.max_bytes, 512 << 20);
        assert_eq!(bound.max_age, Duration::from_secs(2 * 86_400));
    }

    #[test]
    fn invalid_bridges_name_key_and_bridge() {
        let cases = [
            ("address = \"nowhere\"", "bridge.address"),
            ("address = \"h:0\"", "bridge.address"),
            ("topics = [\"a/#/b\"]", "bridge.topics"),
            ("topics = [\"$SYS/#\"]", "bridge.topics"),
            ("remote_prefix = \"a/+/\"", "bridge.remote_prefix"),
            ("password = \"p\"", "bridge.password"),
            ("keep_alive = \"0s\"", "bridge.keep_alive"),
            ("inflight = 0", "bridge.inflight"),
            ("qos = 2", "bridge[0].qos"),
            ("mode = \"bulk\"", "bridge[0].mode"),
            ("batch = { max_messages = 0 }", "bridge.batch.max_messages"),
            (
                "reconnect = { min = \"10s\", max = \"1s\" }",
                "bridge.reconnect",
            ),
            ("tls = { ca = \"ca.pem\", cert = \"c.pem\" }", "bridge.tls"),
            ("colour = \"red\"", "bridge[0]"),
            ("outbox = { max_bytes = 10 }", "bridge.outbox.max_bytes"),
            ("outbox = { max_age = \"10ms\" }", "bridge.outbox.max_age"),
            ("outbox = { size = 10 }", "bridge[0].outbox"),
            ("compression = \"zstd\"", "bridge.compression"),
            ("compression = \"lz4\"", "bridge[0].compression"),
            ("compression_level = 3", "bridge.compression_level"),
            ("replay = \"newest\"", "bridge[0].replay"),
        ];
        for (line, key) in cases {
            let address = if line.starts_with("address") {
                ""
            } else {
                "address = \"h:1883\"\n"
            };
            let text =
                format!("[[bridge]]\nname = \"cloud\"\n{address}client_id = \"gw\"\n{line}\n");
            let err = parse(&text).expect_err(line);
            assert!(err.contains(&format!("key `{key}")), "{line}: {err}");
        }
        let err = parse(&format!("{MINIMAL}{MINIMAL}")).expect_err("duplicate");
        assert!(err.contains("used twice"), "{err}");
        let err = parse("[[bridge]]\nname = \"a/b\"\naddress = \"h:1\"\nclient_id = \"c\"\n")
            .expect_err("bad name");
        assert!(err.contains("key `bridge.name`"), "{err}");
    }
}
