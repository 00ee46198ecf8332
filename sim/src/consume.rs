//! `tern-sim consume`: an example cloud consumer of the hub's upstream bridge.
//!
//! Subscribes to an upstream broker over MQTT 5 (`rumqttc`), reads what the bridge
//! publishes — envelopes in either format, or `each`-mode messages identified by their
//! `tern-id` / `tern-prev` user properties — drops duplicates and reports gaps with
//! [`tern_envelope::consumer::Deduplicator`]. The hub's bridge tests use it as a library:
//! [`Consumer::subscribe`], publish, then [`Consumer::collect`]; or [`run`] for both.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde::Serialize;
use tern_envelope::consumer::{Deduplicator, GatewayReport, Verdict};
use tern_envelope::{MessageId, each};
use tokio::time::Instant;

/// Requests the client queues before `publish`/`subscribe` calls wait for the event loop.
const REQUEST_CAPACITY: usize = 64;
/// Largest packet accepted: the MQTT maximum, since an envelope can be large.
const MAX_PACKET: u32 = 268_435_455;
/// Pause before polling again after a connection error (rumqttc reconnects on poll).
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);
/// How long a clean DISCONNECT may take at the end.
const DISCONNECT_WAIT: Duration = Duration::from_secs(1);

/// What to consume, and when to stop.
#[derive(Debug, Clone)]
pub struct ConsumeConfig {
    /// Upstream broker, `host:port`.
    pub target: String,
    /// MQTT client id.
    pub client_id: String,
    /// Topic filters to subscribe to.
    pub filters: Vec<String>,
    /// Subscription QoS (0, 1 or 2).
    pub qos: u8,
    /// Stop after this long at the latest (counted from the start of `collect`).
    pub duration: Duration,
    /// Stop as soon as this many unique messages arrived.
    pub expect: Option<u64>,
    /// How long connecting and subscribing may take.
    pub connect_timeout: Duration,
    /// Keep every unique message in [`Summary::messages`] (for tests).
    pub keep_messages: bool,
}

impl Default for ConsumeConfig {
    fn default() -> Self {
        Self {
            target: "127.0.0.1:1883".into(),
            client_id: "tern-sim-consume".into(),
            filters: vec!["#".into()],
            qos: 1,
            duration: Duration::from_secs(10),
            expect: None,
            connect_timeout: Duration::from_secs(10),
            keep_messages: false,
        }
    }
}

/// Why collecting ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `expect` unique messages arrived.
    Expected,
    /// `duration` ran out.
    Duration,
}

/// How a forwarded message reached the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Carrier {
    /// Inside an envelope.
    Envelope,
    /// As its own PUBLISH (`each` mode).
    Each,
}

/// A unique message, kept when [`ConsumeConfig::keep_messages`] is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedMessage {
    /// Its id.
    pub id: String,
    /// Its topic: the one inside the envelope, or the PUBLISH topic in `each` mode.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// How it came.
    pub carrier: Carrier,
}

/// One gateway (stream): the de-duplicator's report plus arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewaySummary {
    /// What the de-duplicator knows.
    #[serde(flatten)]
    pub report: GatewayReport,
    /// Unique messages that arrived after one with a higher seq.
    pub out_of_order: u64,
}

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// PUBLISH packets received.
    pub publishes: u64,
    /// Of them, envelopes.
    pub envelopes: u64,
    /// Of them, `each`-mode messages.
    pub each_messages: u64,
    /// Of them, neither (no `tern-id`, not an envelope); see `last_error`.
    pub unrecognized: u64,
    /// Forwarded messages received, duplicates included.
    pub received: u64,
    /// Messages seen for the first time.
    pub unique: u64,
    /// Messages seen again.
    pub duplicates: u64,
    /// Open gaps over all gateways.
    pub gaps: u64,
    /// Unique messages that arrived after one of the same gateway with a higher seq.
    pub out_of_order: u64,
    /// Times the connection was re-established.
    pub reconnects: u64,
    /// Why collecting ended.
    pub stopped: StopReason,
    /// How long collecting took, in milliseconds.
    pub elapsed_ms: u64,
    /// Per gateway, by name.
    pub gateways: Vec<GatewaySummary>,
    /// The last decode or connection error, if any.
    pub last_error: Option<String>,
    /// Unique messages in arrival order, when kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<ReceivedMessage>,
}

/// A subscribed consumer, ready to [`collect`](Self::collect).
pub struct Consumer {
    config: ConsumeConfig,
    client: AsyncClient,
    eventloop: EventLoop,
    state: State,
}

/// Counters and de-duplication state while collecting.
#[derive(Default)]
struct State {
    dedup: Deduplicator,
    highest: BTreeMap<String, u64>,
    out_of_order: BTreeMap<String, u64>,
    publishes: u64,
    envelopes: u64,
    each_messages: u64,
    unrecognized: u64,
    received: u64,
    unique: u64,
    duplicates: u64,
    reconnects: u64,
    last_error: Option<String>,
    messages: Vec<ReceivedMessage>,
}

/// Subscribes, collects, and disconnects.
pub async fn run(config: ConsumeConfig) -> anyhow::Result<Summary> {
    Consumer::subscribe(config).await?.collect().await
}

fn qos(level: u8) -> anyhow::Result<QoS> {
    Ok(match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => bail!("QoS {level} is not 0, 1 or 2"),
    })
}

impl Consumer {
    /// Connects and subscribes; returns once the broker acknowledged the subscription, so
    /// anything published afterwards is received.
    pub async fn subscribe(config: ConsumeConfig) -> anyhow::Result<Self> {
        if config.filters.is_empty() {
            bail!("no topic filter to subscribe to");
        }
        let (host, port) = config
            .target
            .rsplit_once(':')
            .with_context(|| format!("target {:?} is not host:port", config.target))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("bad port in {:?}", config.target))?;
        let mut options = MqttOptions::new(config.client_id.clone(), host, port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_max_packet_size(Some(MAX_PACKET));
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let filters = subscription(&config)?;
        client
            .subscribe_many(filters)
            .await
            .context("queueing the SUBSCRIBE")?;
        let deadline = Instant::now() + config.connect_timeout;
        loop {
            let event = tokio::time::timeout_at(deadline, eventloop.poll())
                .await
                .with_context(|| {
                    format!(
                        "no SUBACK from {} within {:?}",
                        config.target, config.connect_timeout
                    )
                })?
                .with_context(|| format!("connecting to {}", config.target))?;
            if let Event::Incoming(Packet::SubAck(ack)) = event {
                if let Some(code) = ack.return_codes.iter().find(|c| !is_granted(c)) {
                    bail!("subscription refused: {code:?}");
                }
                break;
            }
        }
        Ok(Self {
            config,
            client,
            eventloop,
            state: State::default(),
        })
    }

    /// Receives until `expect` unique messages arrived or `duration` ran out, then
    /// disconnects and summarizes.
    pub async fn collect(mut self) -> anyhow::Result<Summary> {
        let start = Instant::now();
        let deadline = start + self.config.duration;
        let stopped = loop {
            if self.config.expect.is_some_and(|n| self.state.unique >= n) {
                break StopReason::Expected;
            }
            let Ok(polled) = tokio::time::timeout_at(deadline, self.eventloop.poll()).await else {
                break StopReason::Duration;
            };
            match polled {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    self.state.publish(&publish, self.config.keep_messages);
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // A reconnect with a clean start: subscribe again.
                    self.state.reconnects += 1;
                    self.client
                        .subscribe_many(subscription(&self.config)?)
                        .await
                        .context("queueing the SUBSCRIBE after a reconnect")?;
                }
                Ok(_) => {}
                Err(err) => {
                    self.state.last_error = Some(format!("connection: {err}"));
                    tokio::time::sleep(
                        RECONNECT_PAUSE.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
            }
        };
        let elapsed = start.elapsed();
        if self.client.disconnect().await.is_ok() {
            let until = Instant::now() + DISCONNECT_WAIT;
            while let Ok(Ok(event)) = tokio::time::timeout_at(until, self.eventloop.poll()).await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        }
        Ok(self.state.summary(stopped, elapsed))
    }
}

fn subscription(config: &ConsumeConfig) -> anyhow::Result<Vec<Filter>> {
    let level = qos(config.qos)?;
    Ok(config
        .filters
        .iter()
        .map(|f| Filter::new(f.clone(), level))
        .collect())
}

fn is_granted(code: &rumqttc::v5::mqttbytes::v5::SubscribeReasonCode) -> bool {
    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as Code;
    matches!(code, Code::Success(_))
}

impl State {
    /// Classifies one PUBLISH: `tern-id` first (an `each`-mode payload may itself look like
    /// JSON), then an envelope.
    fn publish(&mut self, publish: &Publish, keep: bool) {
        self.publishes += 1;
        let props = publish
            .properties
            .as_ref()
            .map(|p| p.user_properties.as_slice())
            .unwrap_or_default();
        match each::provenance(props.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(Some(provenance)) => {
                self.each_messages += 1;
                let verdict = self.dedup.observe(&provenance.id, provenance.coverage);
                let topic = String::from_utf8_lossy(&publish.topic);
                self.message(&provenance.id, verdict, keep, || ReceivedMessage {
                    id: provenance.id.to_string(),
                    topic: topic.into_owned(),
                    payload: publish.payload.to_vec(),
                    carrier: Carrier::Each,
                });
                return;
            }
            Ok(None) => {}
            Err(err) => {
                self.unrecognized += 1;
                self.last_error = Some(format!("tern-id/tern-prev: {err}"));
                return;
            }
        }
        match tern_envelope::decode(&publish.payload) {
            Ok(envelope) => {
                self.envelopes += 1;
                let verdicts = self.dedup.observe_envelope(&envelope);
                for (m, verdict) in envelope.messages.iter().zip(verdicts) {
                    let id = m.id(&envelope.gateway);
                    self.message(&id, verdict, keep, || ReceivedMessage {
                        id: id.to_string(),
                        topic: m.topic.clone(),
                        payload: m.payload.clone(),
                        carrier: Carrier::Envelope,
                    });
                }
            }
            Err(err) => {
                self.unrecognized += 1;
                self.last_error = Some(format!("not an envelope: {err}"));
            }
        }
    }

    fn message(
        &mut self,
        id: &MessageId,
        verdict: Verdict,
        keep: bool,
        received: impl FnOnce() -> ReceivedMessage,
    ) {
        self.received += 1;
        if verdict == Verdict::Duplicate {
            self.duplicates += 1;
            return;
        }
        self.unique += 1;
        let highest = self.highest.entry(id.gateway.clone()).or_insert(id.seq);
        if id.seq < *highest {
            *self.out_of_order.entry(id.gateway.clone()).or_default() += 1;
        }
        *highest = (*highest).max(id.seq);
        if keep {
            self.messages.push(received());
        }
    }

    fn summary(self, stopped: StopReason, elapsed: Duration) -> Summary {
        let gateways: Vec<GatewaySummary> = self
            .dedup
            .reports()
            .into_iter()
            .map(|report| GatewaySummary {
                out_of_order: self.out_of_order.get(&report.gateway).copied().unwrap_or(0),
                report,
            })
            .collect();
        Summary {
            publishes: self.publishes,
            envelopes: self.envelopes,
            each_messages: self.each_messages,
            unrecognized: self.unrecognized,
            received: self.received,
            unique: self.unique,
            duplicates: self.duplicates,
            gaps: gateways
                .iter()
                .map(|g| u64::try_from(g.report.gaps.len()).unwrap_or(u64::MAX))
                .sum(),
            out_of_order: gateways.iter().map(|g| g.out_of_order).sum(),
            reconnects: self.reconnects,
            stopped,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            gateways,
            last_error: self.last_error,
            messages: self.messages,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "publishes {}  (envelopes {}, each {}, unrecognized {})",
            self.publishes, self.envelopes, self.each_messages, self.unrecognized
        )?;
        writeln!(
            f,
            "received {}  unique {}  duplicates {}  gaps {}  out of order {}  reconnects {}",
            self.received,
            self.unique,
            self.duplicates,
            self.gaps,
            self.out_of_order,
            self.reconnects
        )?;
        let stopped = match self.stopped {
            StopReason::Expected => "expected count reached",
            StopReason::Duration => "duration elapsed",
        };
        writeln!(f, "stopped: {stopped} after {} ms", self.elapsed_ms)?;
        for g in &self.gateways {
            let r = &g.report;
            let covered = r
                .covered
                .map_or_else(|| "-".to_owned(), |c| format!("{}..={}", c.first, c.last));
            writeln!(
                f,
                "gateway {}: unique {}  duplicates {}  covered {}  gaps {}  out of order {}",
                r.gateway,
                r.accepted,
                r.duplicates,
                covered,
                r.gaps.len(),
                g.out_of_order
            )?;
            for gap in &r.gaps {
                writeln!(f, "  missing seqs {}..={}", gap.first, gap.last)?;
            }
            if r.unchained > 0 {
                writeln!(
                    f,
                    "  {} messages without tern-prev: gaps not meaningful",
                    r.unchained
                )?;
            }
            if r.abandoned_gaps > 0 {
                writeln!(f, "  {} gaps abandoned (too many open)", r.abandoned_gaps)?;
            }
        }
        if let Some(err) = &self.last_error {
            writeln!(f, "last error: {err}")?;
        }
        Ok(())
    }
}
