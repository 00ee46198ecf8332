//! Native (and wasm) test helpers for filter authors: build [`TestMessage`]s, [`run`] a
//! filter over them through exactly the guest code path (pack with the ABI's `BatchWriter`,
//! [`process_batch`](crate::process_batch), parse with `Verdicts`), and compare
//! [`Outcome`]s.
//!
//! ```
//! use tern_filter::testing::{Outcome, TestMessage, run};
//! use tern_filter::{Filter, Message, Verdict};
//!
//! struct HasUnit;
//! impl Filter for HasUnit {
//!     fn init(_: &str) -> Result<Self, String> { Ok(HasUnit) }
//!     fn filter(&mut self, msg: &Message<'_>) -> Verdict {
//!         if msg.property("unit").is_some() { Verdict::Keep } else { Verdict::Drop }
//!     }
//! }
//!
//! let mut f = HasUnit::init("").unwrap();
//! let out = run(&mut f, &[TestMessage::new("a").property("unit", "C"), TestMessage::new("b")])?;
//! assert_eq!(out, [Outcome::kept(), Outcome::dropped()]);
//! # Ok::<(), String>(())
//! ```

use tern_filter_abi::{BatchWriter, CheckedTemplate, Contents, Destination, RecordRef, Verdicts};

use crate::{Filter, NewMessage, Route};

/// An owned message to feed a filter in tests. Build with [`TestMessage::new`] and the
/// chained setters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestMessage {
    pub topic: String,
    pub client_id: String,
    pub qos: u8,
    pub retain: bool,
    pub received_ms: u64,
    pub content_type: Option<String>,
    pub properties: Vec<(String, String)>,
    /// Seen by the filter only if it sets `NEEDS_PAYLOAD`, as in the hub.
    pub payload: Vec<u8>,
}

impl TestMessage {
    /// A QoS 0 message on `topic` with no properties and an empty payload.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Self::default()
        }
    }

    /// Appends a user property (duplicates allowed).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    pub fn qos(mut self, qos: u8) -> Self {
        self.qos = qos;
        self
    }

    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    pub fn received_ms(mut self, received_ms: u64) -> Self {
        self.received_ms = received_ms;
        self
    }

    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub kept: bool,
    /// The replacement, if the filter replaced the message (`payload: None` = unchanged).
    pub replacement: Option<NewMessage>,
    /// The destinations, if the filter routed the message.
    pub routes: Option<Vec<Route>>,
}

impl Outcome {
    /// Kept unchanged.
    pub fn kept() -> Self {
        Self {
            kept: true,
            replacement: None,
            routes: None,
        }
    }

    pub fn dropped() -> Self {
        Self {
            kept: false,
            ..Self::kept()
        }
    }

    /// Kept and replaced by `new`.
    pub fn replaced(new: NewMessage) -> Self {
        Self {
            replacement: Some(new),
            ..Self::kept()
        }
    }

    /// Kept and routed to `routes`.
    pub fn routed(routes: Vec<Route>) -> Self {
        Self {
            routes: Some(routes),
            ..Self::kept()
        }
    }
}

/// Runs `filter` over `messages` as one batch, through the same code the guest runs, and
/// returns one [`Outcome`] per message. An `Err` is what the guest's `process` would return
/// (or a verdict buffer the hub would reject). Routes to the filter's
/// [templates](Filter::templates) come back rendered, as the hub renders them.
pub fn run<F: Filter>(filter: &mut F, messages: &[TestMessage]) -> Result<Vec<Outcome>, String> {
    let templates = filter
        .templates()
        .into_iter()
        .enumerate()
        .map(|(i, t)| CheckedTemplate::new(t).map_err(|e| format!("template {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = pack::<F>(messages)?;
    let verdict_buf = crate::process_batch(filter, &batch, Vec::new())?;
    let verdicts = Verdicts::parse(&verdict_buf, messages.len())
        .map_err(|e| format!("the hub would reject these verdicts: {e}"))?;
    let mut outcomes: Vec<Outcome> = (0..messages.len())
        .map(|i| {
            if verdicts.is_kept(i) {
                Outcome::kept()
            } else {
                Outcome::dropped()
            }
        })
        .collect();
    for edit in verdicts.edits() {
        let Some(outcome) = outcomes.get_mut(edit.index) else {
            continue;
        };
        outcome.replacement = edit.replacement.map(|view| NewMessage {
            payload: view.payload().map(Into::into),
            ..NewMessage::from(&view)
        });
        let topic = messages.get(edit.index).map_or("", |m| m.topic.as_str());
        outcome.routes = edit
            .routes
            .map(|routes| {
                routes
                    .map(|dest| owned_route(dest, topic, &templates))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| {
                format!(
                    "message {}: the hub would reject this route: {e}",
                    edit.index
                )
            })?;
    }
    Ok(outcomes)
}

/// A destination as the hub takes it over: template routes rendered for `topic`.
fn owned_route(
    dest: Destination<'_>,
    topic: &str,
    templates: &[CheckedTemplate],
) -> Result<Route, String> {
    if let Some(route) = Route::from_destination(dest) {
        return Ok(route);
    }
    let Destination::Template { template, spans } = dest else {
        return Err("a destination without a topic".into());
    };
    let checked = templates.get(usize::from(template)).ok_or_else(|| {
        format!(
            "template {template} does not exist ({} declared)",
            templates.len()
        )
    })?;
    let rendered = checked
        .render(template, topic, spans)
        .map_err(|e| e.to_string())?;
    Ok(match checked.bridge() {
        None => Route::local(rendered),
        Some(bridge) => Route::bridge(bridge, rendered),
    })
}

/// Packs `messages` into one batch as the hub would for `F` (payloads only when
/// [`Filter::NEEDS_PAYLOAD`], user properties only when [`Filter::NEEDS_PROPERTIES`]).
pub fn pack<F: Filter>(messages: &[TestMessage]) -> Result<Vec<u8>, String> {
    let contents = Contents {
        payloads: F::NEEDS_PAYLOAD,
        properties: F::NEEDS_PROPERTIES,
    };
    let mut batch = BatchWriter::with_contents(Vec::new(), contents);
    for (index, m) in messages.iter().enumerate() {
        let rec = RecordRef {
            topic: &m.topic,
            client_id: &m.client_id,
            qos: m.qos,
            retain: m.retain,
            received_ms: m.received_ms,
            content_type: m.content_type.as_deref(),
            payload: Some(&m.payload),
        };
        let properties = m.properties.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        batch
            .push(&rec, properties)
            .map_err(|e| format!("test message {index}: {e}"))?;
    }
    Ok(batch.finish())
}

/// `n` messages shaped like the hub's filter benchmark (`hub/benches/filters.rs`): topic
/// `sensors/dev-{i}/temp`, user properties `temperature` (20–39) and `site` (`north` or
/// `south`, alternating), client `dev`, QoS 1, a 256 B payload.
pub fn telemetry(n: usize) -> Vec<TestMessage> {
    (0..n)
        .map(|i| {
            TestMessage::new(format!("sensors/dev-{i}/temp"))
                .client_id("dev")
                .qos(1)
                .received_ms(1_700_000_000_000)
                .property("temperature", (20 + i % 20).to_string())
                .property("site", if i % 2 == 0 { "north" } else { "south" })
                .payload(vec![b'x'; 256])
        })
        .collect()
}

/// The guest-side cost of `filter` per message natively: the best of 7 rounds of
/// [`process_batch`](crate::process_batch) over `messages` packed once (decoding, deciding,
/// writing verdicts; no WebAssembly boundary). Each round runs about `budget` messages.
pub fn cost_per_message<F: Filter>(
    filter: &mut F,
    messages: &[TestMessage],
    budget: usize,
) -> Result<std::time::Duration, String> {
    use std::time::{Duration, Instant};

    let batch = pack::<F>(messages)?;
    let n = messages.len().max(1);
    let rounds = u32::try_from((budget / n).max(1)).unwrap_or(u32::MAX);
    let mut out = Vec::new();
    let mut best = Duration::MAX;
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..rounds {
            out = crate::process_batch(filter, std::hint::black_box(&batch), out)?;
            std::hint::black_box(&out);
        }
        best = best.min(start.elapsed() / rounds);
    }
    Ok(best / u32::try_from(n).unwrap_or(u32::MAX))
}
