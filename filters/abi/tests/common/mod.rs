//! Owned models of messages and verdicts, the re-encoders behind the canonical-form checks,
//! and fixed example buffers, shared by the test files.
#![allow(dead_code, reason = "each test file uses a different subset")]

use tern_filter_abi::{
    AbiError, Batch, BatchWriter, Destination, MessageView, RecordRef, Spans, VerdictWriter,
    Verdicts,
};

/// An owned message, comparable with what a reader gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub client_id: String,
    pub qos: u8,
    pub retain: bool,
    pub received_ms: u64,
    pub content_type: Option<String>,
    pub properties: Vec<(String, String)>,
    pub payload: Option<Vec<u8>>,
}

impl Msg {
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.into(),
            client_id: String::new(),
            qos: 0,
            retain: false,
            received_ms: 0,
            content_type: None,
            properties: Vec::new(),
            payload: None,
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    pub fn rec(&self) -> RecordRef<'_> {
        RecordRef {
            topic: &self.topic,
            client_id: &self.client_id,
            qos: self.qos,
            retain: self.retain,
            received_ms: self.received_ms,
            content_type: self.content_type.as_deref(),
            payload: self.payload.as_deref(),
        }
    }

    pub fn props(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn from_view(v: &MessageView<'_>) -> Self {
        Self {
            topic: v.topic().into(),
            client_id: v.client_id().into(),
            qos: v.qos(),
            retain: v.retain(),
            received_ms: v.received_ms(),
            content_type: v.content_type().map(Into::into),
            properties: v.properties().map(|(k, v)| (k.into(), v.into())).collect(),
            payload: v.payload().map(Into::into),
        }
    }
}

/// An owned destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Local(String),
    Bridge(String, String),
    /// A template route: template index and the encoded spans (4 bytes each).
    Template(u16, Vec<u8>),
}

impl Dest {
    pub fn borrow(&self) -> Destination<'_> {
        match self {
            Self::Local(topic) => Destination::Local { topic },
            Self::Bridge(bridge, topic) => Destination::Bridge { bridge, topic },
            Self::Template(template, spans) => Destination::Template {
                template: *template,
                spans: Spans::from_bytes(spans).expect("whole spans"),
            },
        }
    }

    pub fn from_dest(d: Destination<'_>) -> Self {
        match d {
            Destination::Local { topic } => Self::Local(topic.into()),
            Destination::Bridge { bridge, topic } => Self::Bridge(bridge.into(), topic.into()),
            Destination::Template { template, spans } => {
                Self::Template(template, spans.as_bytes().to_vec())
            }
        }
    }
}

/// One message's verdict, as a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V {
    Keep,
    Drop,
    Replace(Msg),
    Route(Vec<Dest>),
    Both(Msg, Vec<Dest>),
}

pub fn write_batch(msgs: &[Msg], payloads: bool) -> Vec<u8> {
    let mut w = BatchWriter::new(Vec::new(), payloads);
    for m in msgs {
        w.push(&m.rec(), m.props())
            .expect("model messages fit the ABI");
    }
    w.finish()
}

pub fn write_verdicts(vs: &[V]) -> Vec<u8> {
    let mut w = VerdictWriter::new(Vec::new(), vs.len());
    for (i, v) in vs.iter().enumerate() {
        match v {
            V::Keep => {}
            V::Drop => w.drop_message(i),
            V::Replace(m) => w.replace(i, &m.rec(), m.props()).unwrap(),
            V::Route(ds) => w.route(i, &borrow_all(ds)).unwrap(),
            V::Both(m, ds) => {
                w.replace(i, &m.rec(), m.props()).unwrap();
                w.route(i, &borrow_all(ds)).unwrap();
            }
        }
    }
    w.finish()
}

pub fn borrow_all(ds: &[Dest]) -> Vec<Destination<'_>> {
    ds.iter().map(Dest::borrow).collect()
}

/// Reads verdicts back into the model.
pub fn read_verdicts(v: &Verdicts<'_>) -> Vec<V> {
    let mut out: Vec<V> = (0..v.len())
        .map(|i| if v.is_kept(i) { V::Keep } else { V::Drop })
        .collect();
    for e in v.edits() {
        let replacement = e.replacement.as_ref().map(Msg::from_view);
        let routes = e.routes.map(|r| r.map(Dest::from_dest).collect::<Vec<_>>());
        out[e.index] = match (replacement, routes) {
            (Some(m), Some(r)) => V::Both(m, r),
            (Some(m), None) => V::Replace(m),
            (None, Some(r)) => V::Route(r),
            (None, None) => panic!("edit {} with neither part", e.index),
        };
    }
    out
}

/// Parses and re-encodes a batch; `None` if any part of it is rejected. A valid batch has
/// exactly one encoding, so the result must equal the input.
pub fn reencode_batch(buf: &[u8]) -> Option<Vec<u8>> {
    let batch = Batch::parse(buf).ok()?;
    let mut w = BatchWriter::with_contents(Vec::new(), batch.contents());
    for m in batch.iter() {
        let m = m.ok()?;
        w.push(&m.record(), m.properties())
            .expect("a read record can be written");
    }
    assert_eq!(w.len(), batch.len());
    Some(w.finish())
}

/// Parses and re-encodes verdicts; `None` if rejected.
pub fn reencode_verdicts(buf: &[u8], count: usize) -> Option<Vec<u8>> {
    let v = Verdicts::parse(buf, count).ok()?;
    let mut w = VerdictWriter::new(Vec::new(), count);
    for i in 0..count {
        if !v.is_kept(i) {
            w.drop_message(i);
        }
    }
    for e in v.edits() {
        if let Some(r) = &e.replacement {
            w.replace(e.index, &r.record(), r.properties()).unwrap();
        }
        if let Some(routes) = e.routes {
            assert!(routes.len() >= 1);
            w.route(e.index, &routes.collect::<Vec<_>>()).unwrap();
        }
    }
    Some(w.finish())
}

/// Checks that the layout-only reader (`Batch::records`, what the guest SDK uses) agrees
/// with the validating one (`Batch::iter`): the same records, the same first error once
/// each record's strings are checked, and no panic from any accessor of a record whose
/// strings are not UTF-8.
pub fn check_records_agree(buf: &[u8]) {
    let Ok(batch) = Batch::parse(buf) else {
        return;
    };
    let eager: Vec<Result<Msg, AbiError>> = batch
        .iter()
        .map(|m| m.map(|m| Msg::from_view(&m)))
        .collect();
    let mut lazy: Vec<Result<Msg, AbiError>> = Vec::new();
    for record in batch.records() {
        let checked = record.and_then(|r| {
            // Every accessor answers (an error at worst) whatever the strings hold.
            let _ = (r.topic(), r.client_id(), r.content_type(), r.property("k"));
            let _ = (r.qos(), r.retain(), r.received_ms(), r.payload());
            let _ = r.properties().count();
            let _ = format!("{r:?}");
            r.validate()
        });
        let failed = checked.is_err();
        lazy.push(checked.map(|m| Msg::from_view(&m)));
        if failed {
            break;
        }
    }
    assert_eq!(lazy, eager, "records() and iter() disagree");
}

/// Checks the canonical-form property on any input: whatever parses re-encodes to itself
/// (verdicts that say "all kept, no edits" in form 1 re-encode to form 0). Also checks
/// [`check_records_agree`].
pub fn check_canonical(buf: &[u8], count: usize) {
    check_records_agree(buf);
    if let Some(again) = reencode_batch(buf) {
        assert_eq!(again, buf, "batch re-encodes differently");
    }
    if let Some(again) = reencode_verdicts(buf, count) {
        let v = Verdicts::parse(buf, count).unwrap();
        if v.unchanged() {
            assert_eq!(again, [1, 0]);
        } else {
            assert_eq!(again, buf, "verdicts re-encode differently");
        }
    }
}

/// Two messages using every optional field.
pub fn sample_messages() -> Vec<Msg> {
    let mut a = Msg::new("a/b").with("k", "v").with("k", "w");
    a.client_id = "dev".into();
    a.qos = 2;
    a.retain = true;
    a.received_ms = 7;
    a.content_type = Some("text/plain".into());
    a.payload = Some(b"xy".to_vec());
    let b = Msg::new("c");
    vec![a, b]
}

/// Verdicts using every edit shape.
pub fn sample_verdicts() -> Vec<V> {
    let mut r = Msg::new("new").with("p", "q");
    r.content_type = Some("ct".into());
    r.payload = Some(b"z".to_vec());
    vec![
        V::Drop,
        V::Both(
            r,
            vec![
                Dest::Local("l".into()),
                Dest::Bridge("up".into(), "t".into()),
            ],
        ),
        V::Keep,
        V::Route(vec![Dest::Local("m".into())]),
        V::Replace(Msg::new("only")),
    ]
}
