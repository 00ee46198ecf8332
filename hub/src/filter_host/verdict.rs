//! The hub's side of the packed ABI: packing [`Message`]s into a batch and turning a verdict
//! buffer into owned [`Decisions`], checked for what the hub will not accept (invalid or
//! `$` topics) so a bad verdict fails the call instead of reaching the store. Routes to a
//! filter's topic templates are rendered here ([`RouteTemplate`]).

use std::sync::Arc;

use bytes::Bytes;
use tern_filter_abi::bytes::has_wildcard_or_nul;
use tern_filter_abi::{
    AbiError, BatchWriter, CheckedTemplate, Contents, Destination, MessageView, RecordRef, Spans,
    Verdicts,
};
use tern_mqtt::QoS;
use tern_mqtt::topic::{TopicError, validate_topic_name};

use crate::message::Message;

/// A batch packed for the filters of one chain. While no filter changes the batch (every
/// message kept unchanged), the next filter with the same payload needs gets the same
/// bytes, so a chain packs once instead of once per filter. The buffer keeps its
/// allocation across batches of the same thread.
#[derive(Debug, Default)]
pub(crate) struct PackedBatch {
    buf: Vec<u8>,
    /// What `buf` holds, if it is current: what its records carry.
    current: Option<Contents>,
}

thread_local! {
    /// The packing buffer of the chains run on this thread (a worker runs one at a time).
    static PACK_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Largest buffer kept for the next batch; a rare huge batch does not pin its memory.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

impl PackedBatch {
    /// A packer holding this thread's spare buffer.
    pub(crate) fn new() -> Self {
        Self {
            buf: PACK_BUFFER
                .try_with(std::cell::Cell::take)
                .unwrap_or_default(),
            current: None,
        }
    }

    /// Forgets what the buffer holds: the batch changed.
    pub(crate) fn invalidate(&mut self) {
        self.current = None;
    }

    /// The batch `group` of `messages`, packed with `contents`; packs only if the buffer
    /// does not already hold exactly that.
    pub(crate) fn get(
        &mut self,
        messages: &[Message],
        group: &[usize],
        contents: Contents,
        received_ms: u64,
    ) -> Result<&[u8], String> {
        if self.current != Some(contents) {
            self.current = None;
            let buf = std::mem::take(&mut self.buf);
            self.buf = pack(
                buf,
                group.iter().map(|&i| &messages[i]),
                contents,
                received_ms,
            )?;
            self.current = Some(contents);
        }
        Ok(&self.buf)
    }
}

impl Drop for PackedBatch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= KEEP_BUFFER_BYTES {
            // During thread teardown the slot may be gone; the buffer is then just freed.
            let _ = PACK_BUFFER.try_with(|slot| slot.set(buf));
        }
    }
}

/// Packs `batch` into `buf` (its allocation is reused).
pub(crate) fn pack<'m>(
    buf: Vec<u8>,
    batch: impl Iterator<Item = &'m Message>,
    contents: Contents,
    received_ms: u64,
) -> Result<Vec<u8>, String> {
    let mut writer = BatchWriter::with_contents(buf, contents);
    for (index, message) in batch.enumerate() {
        let record = RecordRef {
            topic: &message.topic,
            client_id: &message.publisher,
            qos: qos_byte(message.qos),
            retain: message.retain,
            received_ms,
            content_type: message.properties.content_type.as_deref(),
            payload: Some(message.payload.as_ref()),
        };
        let properties = message
            .properties
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        writer
            .push(&record, properties)
            .map_err(|e| format!("message {index}: {e}"))?;
    }
    Ok(writer.finish())
}

fn qos_byte(qos: QoS) -> u8 {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// What a filter decided for a batch, owned (the verdict buffer is gone once the call
/// returns).
#[derive(Debug)]
pub(crate) enum Decisions {
    /// Every message kept unchanged: the common case, no allocation.
    Unchanged,
    /// Some message was dropped, replaced or routed.
    Edited(Edited),
}

/// The decisions for a batch in which something changed, by batch position. Routes are kept
/// per message, so a chain adopts a whole batch's routes without touching them one by one.
#[derive(Debug, Default)]
pub(crate) struct Edited {
    /// The batch's message count.
    pub(crate) count: usize,
    /// Per message: kept or not. Empty (no allocation) when every message is kept, a
    /// router's common case.
    pub(crate) kept: Vec<bool>,
    /// The replaced messages and their replacements, ascending.
    pub(crate) replacements: Vec<(usize, Replacement)>,
    /// Per message its destinations; empty when the filter routed nothing.
    pub(crate) routes: Vec<Option<RouteSet>>,
    /// How many messages have routes.
    pub(crate) routed: usize,
}

impl Edited {
    /// Inline: it runs once per routed message.
    #[inline]
    fn set_routes(&mut self, index: usize, routes: RouteSet) {
        if self.routes.is_empty() {
            self.routes.resize_with(self.count, || None);
        }
        if let Some(slot) = self.routes.get_mut(index) {
            *slot = Some(routes);
            self.routed += 1;
        }
    }
}

/// The destinations of one message: a single one (the common case) without an allocation of
/// its own, or several in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteSet {
    One(Route),
    Many(Vec<Route>),
}

impl IntoIterator for RouteSet {
    type Item = Route;
    type IntoIter = RouteSetIter;

    fn into_iter(self) -> RouteSetIter {
        match self {
            Self::One(route) => RouteSetIter::One(Some(route)),
            Self::Many(routes) => RouteSetIter::Many(routes.into_iter()),
        }
    }
}

/// Iterator over a [`RouteSet`], in order.
pub(crate) enum RouteSetIter {
    One(Option<Route>),
    Many(std::vec::IntoIter<Route>),
}

impl Iterator for RouteSetIter {
    type Item = Route;

    fn next(&mut self) -> Option<Route> {
        match self {
            Self::One(route) => route.take(),
            Self::Many(routes) => routes.next(),
        }
    }
}

/// A message as a filter rewrote it. Fields the ABI does not carry (expiry, response topic,
/// correlation data, publisher) stay as they were.
#[derive(Debug)]
pub(crate) struct Replacement {
    pub(crate) topic: String,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) content_type: Option<String>,
    /// `None`: the payload is unchanged.
    pub(crate) payload: Option<Bytes>,
    /// `None`: unchanged (from a filter that does not receive user properties).
    pub(crate) user_properties: Option<Vec<(String, String)>>,
}

impl Replacement {
    /// Applies it to `message`.
    pub(crate) fn apply(self, message: &mut Message) {
        message.topic = self.topic;
        message.qos = self.qos;
        message.retain = self.retain;
        message.properties.content_type = self.content_type;
        if let Some(payload) = self.payload {
            message.payload = payload;
        }
        if let Some(properties) = self.user_properties {
            message.properties.user_properties = properties;
        }
    }
}

/// Where a message goes instead of its own topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// A local topic.
    Local(String),
    /// A bridge and the topic to publish upstream.
    Bridge { bridge: Arc<str>, topic: String },
}

/// A topic template a filter declared, checked, with its bridge name shared by every route
/// to it.
#[derive(Debug, Clone)]
pub(crate) struct RouteTemplate {
    template: CheckedTemplate,
    bridge: Option<Arc<str>>,
}

impl RouteTemplate {
    pub(crate) fn new(template: CheckedTemplate) -> Self {
        Self {
            bridge: template.bridge().map(Arc::from),
            template,
        }
    }

    /// The route for a message on `topic` (template `index` in errors).
    fn route(&self, index: u16, topic: &str, spans: Spans<'_>) -> Result<Route, String> {
        let topic = self
            .template
            .render(index, topic, spans)
            .map_err(|e| e.to_string())?;
        Ok(match &self.bridge {
            None => Route::Local(topic),
            Some(bridge) => Route::Bridge {
                bridge: Arc::clone(bridge),
                topic,
            },
        })
    }
}

/// The batch a verdict buffer answers, as the hub reads it: the messages it was packed
/// from, in order, and what the filter declared.
pub(crate) struct Answered<'a> {
    pub(crate) messages: &'a [Message],
    /// Indices into `messages`: batch message `i` is `messages[group[i]]`.
    pub(crate) group: &'a [usize],
    pub(crate) contents: Contents,
    pub(crate) templates: &'a [RouteTemplate],
}

impl Answered<'_> {
    fn topic(&self, i: usize) -> &str {
        self.group
            .get(i)
            .and_then(|&m| self.messages.get(m))
            .map_or("", |m| m.topic.as_str())
    }
}

/// Parses and checks `buf` as the verdicts for the batch `batch`.
pub(crate) fn decide(buf: &[u8], batch: &Answered<'_>) -> Result<Decisions, String> {
    let count = batch.group.len();
    // Destination strings are checked once, as they are read below.
    let verdicts = Verdicts::parse_lazy(buf, count).map_err(|e| e.to_string())?;
    if verdicts.unchanged() {
        return Ok(Decisions::Unchanged);
    }
    let kept = if verdicts.all_kept() {
        Vec::new()
    } else {
        (0..count).map(|i| verdicts.is_kept(i)).collect()
    };
    let mut edited = Edited {
        count,
        kept,
        ..Edited::default()
    };
    let mut bridges = BridgeNames::default();
    let mut all = verdicts.edits();
    loop {
        // A router's common edit, read in place; anything else takes the general path.
        if let Some(single) = all.next_single_template() {
            let route = template_route(batch, single.index, single.template, single.spans)
                .map_err(|e| format!("message {}: {e}", single.index))?;
            edited.set_routes(single.index, RouteSet::One(route));
            continue;
        }
        let Some(edit) = all.next() else {
            break;
        };
        let index = edit.index;
        let replacement = edit
            .replacement
            .map(|record| {
                record
                    .view()
                    .map_err(|e| e.to_string())
                    .and_then(|view| replacement(&view, batch.contents.properties))
                    .map_err(|e| format!("message {index}: {e}"))
            })
            .transpose()?;
        let routes = edit
            .routes
            .map(|mut routes| {
                let mut owned = |dest: Result<Destination<'_>, AbiError>| {
                    dest.map_err(|e| e.to_string())
                        .and_then(|dest| route(dest, batch, index, &mut bridges))
                        .map_err(|e| format!("message {index}: {e}"))
                };
                match (routes.len(), routes.next()) {
                    (1, Some(only)) => owned(only).map(RouteSet::One),
                    (_, first) => first
                        .into_iter()
                        .chain(routes)
                        .map(owned)
                        .collect::<Result<Vec<_>, _>>()
                        .map(RouteSet::Many),
                }
            })
            .transpose()?;
        if let Some(replacement) = replacement {
            edited.replacements.push((index, replacement));
        }
        if let Some(routes) = routes {
            edited.set_routes(index, routes);
        }
    }
    Ok(Decisions::Edited(edited))
}

/// A topic a filter may give a message that stays in the hub: a valid topic name, not a `$`
/// topic (filters must not forge `$SYS` messages).
fn local_topic(topic: &str) -> Result<String, String> {
    if topic.starts_with('$') {
        return Err(format!("topic {topic:?} starts with `$`"));
    }
    check_topic_name(topic).map_err(|e| format!("topic {topic:?}: {e:?}"))?;
    Ok(topic.to_owned())
}

/// [`validate_topic_name`] for topics a filter hands back (every routed message has one):
/// the common valid case is recognised eight bytes at a time, anything else gets the
/// codec's check and its exact error.
fn check_topic_name(topic: &str) -> Result<(), TopicError> {
    let plainly_valid = !topic.is_empty()
        && topic.len() <= usize::from(u16::MAX)
        && !has_wildcard_or_nul(topic.as_bytes());
    if plainly_valid {
        Ok(())
    } else {
        validate_topic_name(topic)
    }
}

/// The replacement `view` describes. A filter that receives no user properties
/// (`properties_sent` false) must send none back; the message keeps its own.
fn replacement(view: &MessageView<'_>, properties_sent: bool) -> Result<Replacement, String> {
    if !properties_sent && view.properties().next().is_some() {
        return Err(
            "a replacement carries user properties, but the filter does not receive them \
             (needs.properties)"
                .into(),
        );
    }
    let qos = match view.qos() {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => return Err(format!("QoS {other}")),
    };
    Ok(Replacement {
        topic: local_topic(view.topic())?,
        qos,
        retain: view.retain(),
        content_type: view.content_type().map(str::to_owned),
        payload: view.payload().map(Bytes::copy_from_slice),
        user_properties: properties_sent.then(|| {
            view.properties()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        }),
    })
}

/// The bridge names of one verdict buffer, shared: a filter routing a whole batch to one
/// bridge costs one name allocation, not one per message.
#[derive(Default)]
struct BridgeNames(Vec<Arc<str>>);

impl BridgeNames {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.0.iter().find(|known| ***known == *name) {
            return Arc::clone(known);
        }
        let name: Arc<str> = Arc::from(name);
        // A filter names a handful of bridges; past that, stop remembering.
        if self.0.len() < 8 {
            self.0.push(Arc::clone(&name));
        }
        name
    }
}

/// The route `dest` names for batch message `index`.
fn route(
    dest: Destination<'_>,
    batch: &Answered<'_>,
    index: usize,
    bridges: &mut BridgeNames,
) -> Result<Route, String> {
    match dest {
        Destination::Local { topic } => Ok(Route::Local(local_topic(topic)?)),
        Destination::Bridge { bridge, topic } => {
            if bridge.is_empty() {
                return Err("route to a bridge with an empty name".into());
            }
            check_topic_name(topic).map_err(|e| format!("upstream topic {topic:?}: {e:?}"))?;
            Ok(Route::Bridge {
                bridge: bridges.get(bridge),
                topic: topic.to_owned(),
            })
        }
        Destination::Template { template, spans } => template_route(batch, index, template, spans),
    }
}

/// The route to template `template` with `spans` for batch message `index`.
fn template_route(
    batch: &Answered<'_>,
    index: usize,
    template: u16,
    spans: Spans<'_>,
) -> Result<Route, String> {
    match batch.templates.get(usize::from(template)) {
        Some(declared) => declared.route(template, batch.topic(index), spans),
        None => Err(format!(
            "template {template} does not exist ({} declared)",
            batch.templates.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use tern_filter_abi::{
        AnyDestination, Template, TemplatePart, TemplateRoute, TopicSpan, VerdictWriter,
    };
    use tern_mqtt::QoS;

    use super::*;
    use crate::message::{ClientId, MessageProperties};

    fn message(topic: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"p"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties::default(),
            expiry: None,
            publisher: ClientId::from("dev"),
        }
    }

    /// `decide` for a batch of messages on `topics`, from a filter that receives everything
    /// and declared `templates`.
    fn decide_for(
        buf: &[u8],
        topics: &[&str],
        templates: &[RouteTemplate],
    ) -> Result<Decisions, String> {
        let messages: Vec<Message> = topics.iter().map(|t| message(t)).collect();
        let group: Vec<usize> = (0..messages.len()).collect();
        let batch = Answered {
            messages: &messages,
            group: &group,
            contents: Contents::with_properties(true),
            templates,
        };
        decide(buf, &batch)
    }

    fn template(bridge: Option<&str>, parts: Vec<TemplatePart>) -> RouteTemplate {
        let declared = Template {
            bridge: bridge.map(Into::into),
            parts,
        };
        RouteTemplate::new(CheckedTemplate::new(declared).expect("valid template"))
    }

    #[test]
    fn unchanged_verdicts_allocate_nothing() {
        let buf = VerdictWriter::new(Vec::new(), 3).finish();
        let decided = decide_for(&buf, &["a", "b", "c"], &[]);
        assert!(matches!(decided, Ok(Decisions::Unchanged)));
    }

    #[test]
    fn routes_to_dollar_or_wildcard_topics_are_refused() {
        for topic in ["$SYS/x", "a/+", ""] {
            let mut w = VerdictWriter::new(Vec::new(), 1);
            w.route(0, &[Destination::Local { topic }])
                .expect("writable");
            let buf = w.finish();
            assert!(
                decide_for(&buf, &["in"], &[]).is_err(),
                "{topic:?} accepted"
            );
        }
        let mut w = VerdictWriter::new(Vec::new(), 2);
        w.drop_message(0);
        w.route(
            1,
            &[Destination::Bridge {
                bridge: "cloud",
                topic: "up/1",
            }],
        )
        .expect("writable");
        let buf = w.finish();
        let Ok(Decisions::Edited(edited)) = decide_for(&buf, &["a", "b"], &[]) else {
            panic!("valid verdicts refused");
        };
        assert_eq!((edited.count, &edited.kept[..]), (2, &[false, true][..]));
        assert_eq!(edited.routed, 1);
        assert_eq!(edited.routes[0], None);
        assert_eq!(
            edited.routes[1],
            Some(RouteSet::One(Route::Bridge {
                bridge: Arc::from("cloud"),
                topic: "up/1".into()
            }))
        );
        assert!(
            decide_for(&buf, &["a", "b", "c"], &[]).is_err(),
            "wrong count accepted"
        );
    }

    /// Verdicts routing message `index` of `count` to template `template` with `spans`.
    fn template_verdicts(
        count: usize,
        index: usize,
        template: u16,
        spans: &[TopicSpan],
    ) -> Vec<u8> {
        let mut w = VerdictWriter::new(Vec::new(), count);
        w.route_any(
            index,
            [AnyDestination::Template(TemplateRoute { template, spans })],
        )
        .expect("writable");
        w.finish()
    }

    #[test]
    fn template_routes_are_rendered_from_each_message_topic() {
        let templates = [
            template(
                None,
                vec![TemplatePart::Text("local/".into()), TemplatePart::Span(0)],
            ),
            template(
                Some("cloud"),
                vec![
                    TemplatePart::Text("site-7/".into()),
                    TemplatePart::Span(0),
                    TemplatePart::Text("/temperature".into()),
                ],
            ),
        ];
        let topics = ["sensors/dev-1/temp", "sensors/dev-22/temp"];
        let spans = [TopicSpan { start: 8, end: 14 }];
        let buf = template_verdicts(2, 1, 1, &spans);
        let Ok(Decisions::Edited(edited)) = decide_for(&buf, &topics, &templates) else {
            panic!("valid template route refused");
        };
        assert!(
            edited.kept.is_empty(),
            "every message kept: no per-message flags"
        );
        assert_eq!(edited.routes[0], None);
        assert_eq!(
            edited.routes[1],
            Some(RouteSet::One(Route::Bridge {
                bridge: Arc::from("cloud"),
                topic: "site-7/dev-22/temperature".into()
            }))
        );
        let buf = template_verdicts(2, 0, 0, &[TopicSpan { start: 8, end: 13 }]);
        let Ok(Decisions::Edited(edited)) = decide_for(&buf, &topics, &templates) else {
            panic!("valid template route refused");
        };
        assert_eq!(
            edited.routes[0],
            Some(RouteSet::One(Route::Local("local/dev-1".into())))
        );
    }

    #[test]
    fn bad_template_routes_fail_the_call() {
        let templates = [template(None, vec![TemplatePart::Span(0)])];
        let topics = ["$SYS/x", "é/a"];
        let cases: [(usize, u16, &[TopicSpan], &str); 5] = [
            (1, 1, &[TopicSpan { start: 0, end: 1 }], "does not exist"),
            (1, 0, &[], "takes 1 spans"),
            (1, 0, &[TopicSpan { start: 0, end: 9 }], "not a range"),
            (1, 0, &[TopicSpan { start: 0, end: 1 }], "not a range"),
            (0, 0, &[TopicSpan { start: 0, end: 6 }], "starts with `$`"),
        ];
        for (index, template, spans, why) in cases {
            let buf = template_verdicts(2, index, template, spans);
            let err = decide_for(&buf, &topics, &templates).expect_err("refused");
            assert!(err.contains(why), "{err:?} should say {why:?}");
            assert!(err.starts_with(&format!("message {index}: ")), "{err}");
        }
    }

    #[test]
    fn replacements_from_filters_without_properties_keep_the_message_properties() {
        let mut w = VerdictWriter::new(Vec::new(), 1);
        let rec = RecordRef {
            topic: "new",
            client_id: "",
            qos: 0,
            retain: false,
            received_ms: 0,
            content_type: None,
            payload: None,
        };
        w.replace(0, &rec, [].into_iter()).expect("writable");
        let without = w.finish();
        let mut w = VerdictWriter::new(Vec::new(), 1);
        w.replace(0, &rec, [("k", "v")].into_iter())
            .expect("writable");
        let with = w.finish();
        let messages = [message("old")];
        let no_properties = Contents {
            payloads: false,
            properties: false,
        };
        let decide_without = |buf: &[u8]| {
            let batch = Answered {
                messages: &messages,
                group: &[0],
                contents: no_properties,
                templates: &[],
            };
            decide(buf, &batch)
        };
        let Ok(Decisions::Edited(mut edited)) = decide_without(&without) else {
            panic!("replacement refused");
        };
        let (_, replacement) = edited.replacements.remove(0);
        assert_eq!(replacement.user_properties, None, "properties unchanged");
        assert!(
            decide_without(&with).is_err(),
            "properties from a filter that has none"
        );
        let Ok(Decisions::Edited(mut edited)) = decide_for(&with, &["old"], &[]) else {
            panic!("replacement refused");
        };
        let (_, replacement) = edited.replacements.remove(0);
        assert_eq!(
            replacement.user_properties,
            Some(vec![("k".to_owned(), "v".to_owned())])
        );
    }
}
