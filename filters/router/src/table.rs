//! The compiled route table: patterns, templates, first-match lookup and interpolation.
//!
//! Owns the run-time half of the router. Parsing the rule language lives in `parse`; this
//! module only sees already-validated rules. Matching walks the topic once per rule, records
//! captures as byte spans in a fixed-size array on the stack and allocates nothing; only a
//! matched rule that routes builds its output topics.

use tern_filter::bytes::{find_byte, has_wildcard_or_nul, same_bytes};
use tern_filter::{AnyDestination, RawDestination, TemplateRoute, TopicSpan};

use crate::error::{ConfigError, InvalidRoute, InvalidTopic};
use crate::host::{HostRoute, HostRoutes, fill_spans};

/// Captures one pattern may hold. Far above what a topic scheme needs; keeps the capture
/// buffer a fixed array on the stack.
pub const MAX_CAPTURES: usize = 16;

/// Destinations one rule may list.
pub const MAX_DESTINATIONS: usize = 64;

/// The longest MQTT topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Index of a capture within its rule's capture buffer (always `< MAX_CAPTURES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CaptureId(pub(crate) u8);

/// One level of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Level {
    /// Must equal the topic level exactly.
    Literal(Box<str>),
    /// `+`: any one level, not captured.
    Any,
    /// `{name}`: any one level, captured.
    Capture(CaptureId),
}

/// What a pattern accepts after its fixed levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing: the topic has exactly as many levels as the pattern.
    Exact,
    /// `#`: zero or more further levels (MQTT semantics: `a/#` also matches `a`).
    Any,
    /// `{name..}`: one or more further levels, captured as one `/`-joined value.
    Capture(CaptureId),
}

impl Tail {
    /// Whether the tail accepts what is left of a topic of `len` bytes after the fixed
    /// levels matched up to `next` ([`walk`]'s answer), capturing it if it captures.
    #[inline]
    fn accepts(self, next: Option<Option<usize>>, len: usize, caps: &mut Captures) -> bool {
        match self {
            Tail::Exact => next == Some(None),
            Tail::Any => next.is_some(),
            Tail::Capture(id) => match next {
                Some(Some(start)) => {
                    caps.set(id, Span { start, end: len });
                    true
                }
                _ => false,
            },
        }
    }
}

/// A compiled topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    pub(crate) levels: Box<[Level]>,
    pub(crate) tail: Tail,
    /// Derived from `levels` and `tail`: the fixed text at both ends.
    anchors: Anchors,
}

/// The literal levels at both ends of a pattern as one byte string each, so that matching
/// compares each end in one step and walks level by level only through the levels between
/// them (for `sensors/{device}/temp`: `sensors/`, then `{device}`, then `/temp`).
///
/// A topic matches a pattern whose tail is exact when it has exactly as many levels as the
/// pattern and every literal level equals its topic level. The prefix is the leading
/// literal levels that another level follows, each with its `/`; the suffix (exact tail
/// only) is the trailing literal levels after at least one other level, each with the `/`
/// before it. A topic that starts with the prefix and ends with the suffix, the two not
/// overlapping, holds those levels in place, and the levels between them are walked on the
/// bytes between: the same levels, at the same offsets, as a walk of the whole topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Anchors {
    prefix: Box<[u8]>,
    suffix: Box<[u8]>,
    /// The levels between them: `levels[middle.0..middle.1]`.
    middle: (usize, usize),
    between: Between,
}

/// How the levels between the anchors are matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Between {
    /// One level by one, ([`walk`]).
    #[default]
    Levels,
    /// A single `+` or `{name}` level (its capture, if any) and an exact tail: the bytes
    /// between the anchors are that level when they hold no `/` (a router's common rule,
    /// `sensors/{device}/temp`).
    OneLevel(Option<CaptureId>),
}

impl Anchors {
    fn new(levels: &[Level], tail: Tail) -> Self {
        fn literal(level: &Level) -> Option<&[u8]> {
            match level {
                Level::Literal(text) => Some(text.as_bytes()),
                _ => None,
            }
        }
        let mut prefix = Vec::new();
        let mut lo = 0;
        // Each prefix level is followed by another level, so its `/` is always there.
        while let Some(text) = levels
            .get(lo)
            .filter(|_| lo + 1 < levels.len())
            .and_then(literal)
        {
            prefix.extend_from_slice(text);
            prefix.push(b'/');
            lo += 1;
        }
        let mut hi = levels.len();
        let mut suffix = Vec::new();
        if tail == Tail::Exact {
            // Stop before the last level between: at least one stays for the walk, which then
            // ends exactly where the suffix starts.
            while hi > lo + 1 {
                let Some(text) = levels.get(hi - 1).and_then(literal) else {
                    break;
                };
                let mut level = Vec::with_capacity(1 + text.len() + suffix.len());
                level.push(b'/');
                level.extend_from_slice(text);
                level.extend_from_slice(&suffix);
                suffix = level;
                hi -= 1;
            }
        }
        let between = match levels.get(lo..hi) {
            Some([Level::Any]) if tail == Tail::Exact => Between::OneLevel(None),
            Some([Level::Capture(id)]) if tail == Tail::Exact => Between::OneLevel(Some(*id)),
            _ => Between::Levels,
        };
        Self {
            prefix: prefix.into_boxed_slice(),
            suffix: suffix.into_boxed_slice(),
            middle: (lo, hi),
            between,
        }
    }
}

/// Byte range of a capture within the topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// The capture buffer filled by a successful match. A match sets every capture of its
/// pattern, so a buffer reused from message to message never shows a stale span.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Captures([Span; MAX_CAPTURES]);

impl Captures {
    fn set(&mut self, id: CaptureId, span: Span) {
        if let Some(slot) = self.0.get_mut(usize::from(id.0)) {
            *slot = span;
        }
    }

    fn get<'t>(&self, id: CaptureId, topic: &'t [u8]) -> &'t [u8] {
        self.0
            .get(usize::from(id.0))
            .and_then(|span| topic.get(span.start..span.end))
            .unwrap_or_default()
    }
}

/// What the run-time half reads from a message: its topic and client id as bytes. Topic
/// levels split at `/` of UTF-8 text are UTF-8 themselves, so matching and rendering never
/// need the text checked; the hub checks every destination topic it receives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub(crate) topic: &'a [u8],
    pub(crate) client_id: &'a [u8],
}

impl<'a> From<Incoming<'a>> for Subject<'a> {
    fn from(msg: Incoming<'a>) -> Self {
        Self {
            topic: msg.topic.as_bytes(),
            client_id: msg.client_id.as_bytes(),
        }
    }
}

impl Pattern {
    /// The pattern `levels` then `tail`.
    pub(crate) fn new(levels: Box<[Level]>, tail: Tail) -> Self {
        let anchors = Anchors::new(&levels, tail);
        Self {
            levels,
            tail,
            anchors,
        }
    }

    /// Whether `topic` matches; on success `caps` holds every capture of this pattern.
    fn matches(&self, topic: &[u8], caps: &mut Captures) -> bool {
        // MQTT: a filter starting with a wildcard does not match topics starting with `$`.
        if topic.first() == Some(&b'$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return false;
        }
        let Anchors {
            prefix,
            suffix,
            middle: (lo, hi),
            between,
        } = &self.anchors;
        let starts = topic
            .get(..prefix.len())
            .is_some_and(|head| same_bytes(head, prefix));
        if !starts {
            return false;
        }
        // The bytes the middle levels lie in: up to the suffix, which must not overlap the
        // prefix.
        let inner = if suffix.is_empty() {
            topic
        } else {
            let at = topic
                .len()
                .checked_sub(suffix.len())
                .filter(|&at| at >= prefix.len());
            match at.and_then(|at| topic.split_at_checked(at)) {
                Some((inner, tail)) if same_bytes(tail, suffix) => inner,
                _ => return false,
            }
        };
        if let Between::OneLevel(capture) = between {
            let start = prefix.len();
            // The level ends at the first `/` after its start, which must be the suffix's
            // (or the topic's end when there is no suffix). Searching on into the suffix
            // finds it in the level's last word instead of assembling a partial one.
            let rest = topic.get(start..).unwrap_or_default();
            let end = find_byte(rest, b'/').map_or(topic.len(), |i| start + i);
            if end != inner.len() {
                return false;
            }
            if let Some(id) = capture {
                caps.set(
                    *id,
                    Span {
                        start,
                        end: inner.len(),
                    },
                );
            }
            return true;
        }
        let levels = self.levels.get(*lo..*hi).unwrap_or_default();
        let next = walk(levels, inner, prefix.len(), caps);
        // With a suffix the tail is exact and the walk must end where the suffix starts.
        self.tail.accepts(next, topic.len(), caps)
    }
}

/// Matches `levels` one by one against the levels of `topic` from offset `start` (the start
/// of a level), recording captures as offsets in `topic`. `None`: no match; `Some(next)`:
/// the start of the first level after them, `None` when they took the rest of `topic`.
fn walk(
    levels: &[Level],
    topic: &[u8],
    start: usize,
    caps: &mut Captures,
) -> Option<Option<usize>> {
    // Start of the next unread level; `None` once the last level has been read.
    let mut next = Some(start);
    for level in levels {
        let start = next?;
        let end = match level {
            // A literal holds no `/`: the level is the literal when the bytes at `start`
            // are the literal's and the level ends right after them. No search.
            Level::Literal(literal) => {
                let end = start + literal.len();
                let same = topic
                    .get(start..end)
                    .is_some_and(|segment| same_bytes(segment, literal.as_bytes()));
                if !same || !matches!(topic.get(end), None | Some(b'/')) {
                    return None;
                }
                end
            }
            Level::Any | Level::Capture(_) => {
                let rest = topic.get(start..).unwrap_or_default();
                let end = find_byte(rest, b'/').map_or(topic.len(), |i| start + i);
                if let Level::Capture(id) = level {
                    caps.set(*id, Span { start, end });
                }
                end
            }
        };
        next = (end < topic.len()).then_some(end + 1);
    }
    Some(next)
}

/// One piece of a compiled topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Text copied as is (validated at parse time: no `+`, `#`, NUL, `{`, `}`).
    Literal(Box<str>),
    /// A capture of the rule's pattern.
    Capture(CaptureId),
    /// `{topic}`: the message's own topic.
    Topic,
    /// `{client_id}`: the publisher's client id (must be one non-empty level).
    ClientId,
}

/// A compiled destination topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) pieces: Box<[Piece]>,
}

impl Template {
    /// Appends the topic for one message to `out`, or says why the result is not a valid
    /// topic name (then `out` is unchanged). One pass: each piece is checked and copied.
    fn render_into(
        &self,
        msg: Subject<'_>,
        caps: &Captures,
        out: &mut Vec<u8>,
    ) -> Result<(), InvalidTopic> {
        let start = out.len();
        let rendered = self.walk(msg, caps, |value| out.extend_from_slice(value));
        let checked = rendered.and_then(|()| check_len(out.len() - start));
        if checked.is_err() {
            out.truncate(start);
        }
        checked
    }

    /// Whether [`render_into`](Self::render_into) would succeed, without rendering: for a
    /// destination the hub renders ([`crate::host`]), so the router decides exactly as if it
    /// rendered the topic itself.
    fn check(&self, msg: Subject<'_>, caps: &Captures) -> Result<(), InvalidTopic> {
        let mut len = 0;
        self.walk(msg, caps, |value| len += value.len())?;
        check_len(len)
    }

    /// Checks each piece's value for `msg` and hands it to `sink`, in order.
    fn walk(
        &self,
        msg: Subject<'_>,
        caps: &Captures,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), InvalidTopic> {
        for (i, piece) in self.pieces.iter().enumerate() {
            let value = piece_value(piece, msg, caps);
            match piece {
                Piece::Literal(_) => {}
                Piece::ClientId => {
                    if value.is_empty() || find_byte(value, b'/').is_some() {
                        return Err(InvalidTopic::BadClientId);
                    }
                    check_interpolated(value)?;
                }
                Piece::Capture(_) | Piece::Topic => check_interpolated(value)?,
            }
            // `{topic}` alone is the message's own topic, not a new `$` topic.
            if i == 0
                && value.first() == Some(&b'$')
                && !matches!(piece, Piece::Literal(_))
                && !matches!(*self.pieces, [Piece::Topic])
            {
                return Err(InvalidTopic::DollarPrefix);
            }
            sink(value);
        }
        Ok(())
    }

    /// The first byte of the topic it renders for `msg`, if any.
    fn first_byte(&self, msg: Subject<'_>, caps: &Captures) -> Option<u8> {
        self.pieces
            .iter()
            .find_map(|piece| piece_value(piece, msg, caps).first().copied())
    }

    /// The template that reproduces the message's own topic (the `keep` destination).
    pub(crate) fn own_topic() -> Self {
        Self {
            pieces: Box::new([Piece::Topic]),
        }
    }
}

fn check_len(len: usize) -> Result<(), InvalidTopic> {
    match len {
        0 => Err(InvalidTopic::Empty),
        len if len > MAX_TOPIC_LEN => Err(InvalidTopic::TooLong(len)),
        _ => Ok(()),
    }
}

fn piece_value<'a>(piece: &'a Piece, msg: Subject<'a>, caps: &Captures) -> &'a [u8] {
    match piece {
        Piece::Literal(text) => text.as_bytes(),
        Piece::Capture(id) => caps.get(*id, msg.topic),
        Piece::Topic => msg.topic,
        Piece::ClientId => msg.client_id,
    }
}

/// Interpolated values come from the message, which the hub validated, but a topic name with
/// a wildcard or NUL must never leave the router whatever the input.
fn check_interpolated(value: &[u8]) -> Result<(), InvalidTopic> {
    if has_wildcard_or_nul(value) {
        Err(InvalidTopic::ForbiddenChar)
    } else {
        Ok(())
    }
}

/// A compiled destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// Publish locally on the rendered topic.
    Local(Template),
    /// Forward through the named bridge on the rendered topic.
    Bridge { bridge: Box<str>, topic: Template },
}

/// What a rule (or the `otherwise` directive) does with a message it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Deliver unchanged to its own topic (no routes).
    Keep,
    /// Drop the message.
    Drop,
    /// Deliver to these destinations only (at least one).
    Route(Box<[Destination]>),
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) pattern: Pattern,
    pub(crate) action: Action,
}

/// What the router reads from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// The topic name.
    pub topic: &'a str,
    /// The publisher's client id (empty for messages the hub published itself).
    pub client_id: &'a str,
}

/// A destination produced for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<'t> {
    /// Publish locally on `topic`.
    Local {
        /// A valid MQTT topic name.
        topic: String,
    },
    /// Forward through the bridge named `bridge` on `topic`.
    Bridge {
        /// The bridge's name as written in the rule.
        bridge: &'t str,
        /// A valid MQTT topic name.
        topic: String,
    },
}

/// The router's decision for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'t> {
    /// Deliver unchanged to its own topic.
    Keep,
    /// Drop the message.
    Drop,
    /// Deliver to these destinations only, in rule order (never empty).
    Route(Vec<Resolved<'t>>),
    /// A rule matched but a destination topic would be invalid; the message is dropped.
    Invalid(InvalidRoute),
}

/// The router's decision for one message from [`RouteTable::route_into`]; the destinations
/// of [`Decided::Route`] are in the [`Rendered`] buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Deliver unchanged to its own topic.
    Keep,
    /// Drop the message.
    Drop,
    /// Deliver to the destinations in the [`Rendered`] buffer only (never empty).
    Route,
    /// A rule matched but a destination topic would be invalid; the message is dropped.
    Invalid(InvalidRoute),
}

/// The destination topics rendered for the last routed message, in a buffer that keeps its
/// allocation from message to message (and the capture buffer, reused the same way).
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// The rendered topics, back to back: UTF-8 pieces joined, so UTF-8 when the message's
    /// topic and client id are.
    text: Vec<u8>,
    /// End of each topic in `text`, one per destination of the applied action.
    ends: Vec<usize>,
    /// The 0-based rule whose action was applied; `None`: the `otherwise` action.
    rule: Option<usize>,
    caps: Captures,
    /// For [`RouteTable::route_for_host`]: the spans of the routed message's topic that
    /// routes to host templates give (captures, then the whole topic).
    spans: [TopicSpan; MAX_CAPTURES + 1],
    /// For [`RouteTable::route_for_host`]: the applied action's only destination, when it
    /// has one and the hub renders it.
    single: Option<HostRoute>,
}

impl Rendered {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.rule = None;
        self.single = None;
    }

    /// The destinations of the last [`Decided::Route`] of `table` (the table that rendered
    /// them), in rule order, topics as bytes (checked by the hub). Empty after any other
    /// decision.
    pub fn destinations<'s>(
        &'s self,
        table: &'s RouteTable,
    ) -> impl Iterator<Item = tern_filter::RawDestination<'s>> + 's {
        self.topics(table)
            .map(|(destination, topic)| tern_filter::RawDestination {
                bridge: destination.bridge(),
                topic,
            })
    }

    /// The destinations of the last [`RouteTable::route_for_host`] decision of `table` and
    /// `host` (the pair that decided), in rule order: routes to host templates and topics
    /// the router rendered. Empty after any decision but a route.
    pub(crate) fn host_destinations<'s>(
        &'s self,
        table: &'s RouteTable,
        host: &'s HostRoutes,
    ) -> impl Iterator<Item = AnyDestination<'s>> + 's {
        let mut texts = self.topics(table);
        let routes = host.of(self.rule).iter();
        table
            .applied(self.rule)
            .iter()
            .zip(routes)
            .filter_map(move |(destination, route)| match route {
                Some(route) => Some(AnyDestination::Template(self.template_route(route))),
                None => texts.next().map(|(_, topic)| {
                    AnyDestination::Raw(RawDestination {
                        bridge: destination.bridge(),
                        topic,
                    })
                }),
            })
    }

    /// The route of the last [`RouteTable::route_for_host`] decision when it has a single
    /// destination and that destination is a host template (a router's common case).
    pub(crate) fn single_template(&self) -> Option<TemplateRoute<'_>> {
        self.single.as_ref().map(|route| self.template_route(route))
    }

    fn template_route(&self, route: &HostRoute) -> TemplateRoute<'_> {
        TemplateRoute {
            template: route.template,
            spans: self
                .spans
                .get(..usize::from(route.span_count))
                .unwrap_or_default(),
        }
    }

    /// The applied action's destinations of `table`, each with its rendered topic.
    fn topics<'s, 't>(
        &'s self,
        table: &'t RouteTable,
    ) -> impl Iterator<Item = (&'t Destination, &'s [u8])> {
        let starts = core::iter::once(0).chain(self.ends.iter().copied());
        table
            .applied(self.rule)
            .iter()
            .zip(starts.zip(self.ends.iter().copied()))
            .map(|(destination, (start, end))| {
                (destination, self.text.get(start..end).unwrap_or_default())
            })
    }
}

impl Destination {
    fn bridge(&self) -> Option<&str> {
        match self {
            Destination::Local(_) => None,
            Destination::Bridge { bridge, .. } => Some(bridge),
        }
    }

    /// How its topic is built.
    pub(crate) fn template(&self) -> &Template {
        match self {
            Destination::Local(template) => template,
            Destination::Bridge { topic, .. } => topic,
        }
    }
}

/// A compiled rule set: rules in order, and what happens to messages no rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    pub(crate) rules: Box<[Rule]>,
    pub(crate) otherwise: Action,
}

impl RouteTable {
    /// Compiles a rule set written in the router's rule language (see the crate README).
    pub fn parse(config: &str) -> Result<Self, ConfigError> {
        crate::parse::parse(config)
    }

    /// Number of rules (the `otherwise` directive not counted).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the table has no rules (only an `otherwise` directive).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// 1-based number of the first rule matching `topic`, if any. Never allocates.
    pub fn first_match(&self, topic: &str) -> Option<usize> {
        let mut caps = Captures::default();
        self.find(topic.as_bytes(), &mut caps).map(|(i, _)| i + 1)
    }

    /// Decides one message: the first matching rule's action, else the `otherwise` action.
    /// Allocates only when the action routes (the output topics).
    pub fn route(&self, msg: Incoming<'_>) -> Outcome<'_> {
        let mut rendered = Rendered::default();
        match self.route_into(msg, &mut rendered) {
            Decided::Keep => Outcome::Keep,
            Decided::Drop => Outcome::Drop,
            Decided::Invalid(invalid) => Outcome::Invalid(invalid),
            Decided::Route => Outcome::Route(
                rendered
                    .topics(self)
                    .map(|(destination, topic)| {
                        // Pieces of `&str`s joined at their boundaries: always UTF-8.
                        let topic = String::from_utf8_lossy(topic).into_owned();
                        match destination.bridge() {
                            Some(bridge) => Resolved::Bridge { bridge, topic },
                            None => Resolved::Local { topic },
                        }
                    })
                    .collect(),
            ),
        }
    }

    /// The destinations of the action applied for `rule` (`None`: the `otherwise` action);
    /// empty for keep and drop.
    fn applied(&self, rule: Option<usize>) -> &[Destination] {
        let action = match rule {
            Some(i) => self.rules.get(i).map(|rule| &rule.action),
            None => Some(&self.otherwise),
        };
        match action {
            Some(Action::Route(destinations)) => destinations,
            _ => &[],
        }
    }

    /// [`route`](Self::route) without allocating once `out` has grown to fit: a routed
    /// message's destination topics are rendered into `out`, read them back with
    /// [`Rendered::destinations`]. Decides exactly as `route` does.
    pub fn route_into(&self, msg: Incoming<'_>, out: &mut Rendered) -> Decided {
        self.route_subject(Subject::from(msg), out)
    }

    /// [`route_into`](Self::route_into) for a message read as bytes (what the guest runs).
    pub(crate) fn route_subject(&self, msg: Subject<'_>, out: &mut Rendered) -> Decided {
        let (rule, destinations) = match self.applied_to(msg, out) {
            Ok(applied) => applied,
            Err(decided) => return decided,
        };
        for destination in destinations {
            let start = out.text.len();
            let rendered = match destination {
                Destination::Local(template) => template
                    .render_into(msg, &out.caps, &mut out.text)
                    .and_then(|()| {
                        // The hub refuses local routes to `$` topics (it would fail the whole
                        // batch).
                        if out.text.get(start) == Some(&b'$') {
                            Err(InvalidTopic::DollarPrefix)
                        } else {
                            Ok(())
                        }
                    }),
                Destination::Bridge { topic, .. } => {
                    topic.render_into(msg, &out.caps, &mut out.text)
                }
            };
            if let Err(reason) = rendered {
                out.clear();
                return Decided::Invalid(InvalidRoute {
                    rule: rule.map(|i| i + 1),
                    reason,
                });
            }
            out.ends.push(out.text.len());
        }
        out.rule = rule;
        Decided::Route
    }

    /// [`route_subject`](Self::route_subject) for a guest that lets the hub render the
    /// destinations `host` has templates for: those are only checked (so the decision is
    /// the same), the others rendered; read them with [`Rendered::host_destinations`].
    pub(crate) fn route_for_host(
        &self,
        msg: Subject<'_>,
        host: &HostRoutes,
        out: &mut Rendered,
    ) -> Decided {
        let (rule, destinations) = match self.applied_to(msg, out) {
            Ok(applied) => applied,
            Err(decided) => return decided,
        };
        let routes = host.of(rule);
        let single = match routes {
            [Some(only)] => Some(*only),
            _ => None,
        };
        // One destination the hub renders and that is surely valid: nothing to check.
        let checked = single.is_some_and(|only| only.surely_valid(msg.topic.len()));
        // Out of line: the loop is for rules the single-route fast path does not cover, and
        // inside a guest its code would weigh on every routed message's registers.
        if !checked && let Err(invalid) = check_destinations(msg, rule, destinations, routes, out) {
            return Decided::Invalid(invalid);
        }
        let captures = host.captures(rule);
        let spans = out.caps.0.iter().take(captures).map(|s| (s.start, s.end));
        fill_spans(&mut out.spans, spans, msg.topic.len());
        out.rule = rule;
        out.single = single;
        Decided::Route
    }

    /// Clears `out`, finds the action for `msg` (captures into `out`) and returns the
    /// 0-based rule (`None`: `otherwise`) and its destinations; `Err` with the decision when
    /// the action keeps or drops.
    fn applied_to(
        &self,
        msg: Subject<'_>,
        out: &mut Rendered,
    ) -> Result<(Option<usize>, &[Destination]), Decided> {
        out.clear();
        let (rule, action) = match self.find(msg.topic, &mut out.caps) {
            Some((i, rule)) => (Some(i), &rule.action),
            None => (None, &self.otherwise),
        };
        match action {
            Action::Keep => Err(Decided::Keep),
            Action::Drop => Err(Decided::Drop),
            Action::Route(destinations) => Ok((rule, destinations)),
        }
    }

    /// The first matching rule and its 0-based index; fills `caps` with its captures.
    /// Each pattern fails at its first literal level that differs, so a rule that cannot
    /// match costs one short comparison.
    fn find(&self, topic: &[u8], caps: &mut Captures) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.pattern.matches(topic, caps))
    }
}

/// Checks (or renders, for the router's own destinations) each destination of the action of
/// `rule` for `msg`, as [`RouteTable::route_for_host`] decides: the first invalid one, if
/// any (then `out` is cleared).
#[inline(never)]
fn check_destinations(
    msg: Subject<'_>,
    rule: Option<usize>,
    destinations: &[Destination],
    routes: &[Option<HostRoute>],
    out: &mut Rendered,
) -> Result<(), InvalidRoute> {
    for (destination, route) in destinations.iter().zip(routes) {
        let checked = match route {
            Some(route) if route.surely_valid(msg.topic.len()) => continue,
            Some(_) => destination.template().check(msg, &out.caps),
            None => {
                let rendered = destination
                    .template()
                    .render_into(msg, &out.caps, &mut out.text);
                if rendered.is_ok() {
                    out.ends.push(out.text.len());
                }
                rendered
            }
        }
        .and_then(|()| {
            // The hub refuses local routes to `$` topics (as in `route_subject`).
            let local = matches!(destination, Destination::Local(_));
            let first = destination.template().first_byte(msg, &out.caps);
            if local && first == Some(b'$') {
                Err(InvalidTopic::DollarPrefix)
            } else {
                Ok(())
            }
        });
        if let Err(reason) = checked {
            out.clear();
            return Err(InvalidRoute {
                rule: rule.map(|i| i + 1),
                reason,
            });
        }
    }
    Ok(())
}

/// Whether `topic` is a valid MQTT topic name: 1–65,535 bytes, no `+`, `#` or NUL.
pub fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && !topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(levels: Vec<Level>, tail: Tail) -> Pattern {
        Pattern::new(levels.into_boxed_slice(), tail)
    }

    fn spans(p: &Pattern, topic: &str) -> Option<Vec<(usize, usize)>> {
        let mut caps = Captures::default();
        p.matches(topic.as_bytes(), &mut caps)
            .then(|| caps.0.iter().map(|s| (s.start, s.end)).take(2).collect())
    }

    #[test]
    fn capture_spans_are_byte_ranges_of_the_topic() {
        let p = pattern(
            vec![Level::Literal("s".into()), Level::Capture(CaptureId(0))],
            Tail::Capture(CaptureId(1)),
        );
        assert_eq!(spans(&p, "s/é/x/y"), Some(vec![(2, 4), (5, 8)]));
        assert_eq!(spans(&p, "s//"), Some(vec![(2, 2), (3, 3)]));
        assert_eq!(spans(&p, "s/é"), None);
        assert_eq!(spans(&p, "t/é/x"), None);
    }

    #[test]
    fn hash_tail_matches_the_parent_level() {
        let p = pattern(vec![Level::Literal("a".into())], Tail::Any);
        assert!(spans(&p, "a").is_some());
        assert!(spans(&p, "a/").is_some());
        assert!(spans(&p, "a/b/c").is_some());
        assert!(spans(&p, "ab").is_none());
        let all = pattern(vec![], Tail::Any);
        assert!(spans(&all, "x").is_some());
        assert!(spans(&all, "$x").is_none());
    }

    #[test]
    fn out_of_range_capture_ids_read_empty() {
        let mut caps = Captures::default();
        caps.set(CaptureId(200), Span { start: 0, end: 1 });
        assert_eq!(caps.get(CaptureId(200), b"abc"), b"");
        caps.set(CaptureId(0), Span { start: 5, end: 9 });
        assert_eq!(caps.get(CaptureId(0), b"abc"), b"");
    }

    /// The whole pattern walked level by level from the topic's start, without anchors:
    /// what [`Pattern::matches`] must agree with.
    fn walked(p: &Pattern, topic: &[u8], caps: &mut Captures) -> bool {
        if topic.first() == Some(&b'$') && !matches!(p.levels.first(), Some(Level::Literal(_))) {
            return false;
        }
        let next = walk(&p.levels, topic, 0, caps);
        p.tail.accepts(next, topic.len(), caps)
    }

    fn any_level() -> impl proptest::strategy::Strategy<Value = Level> {
        use proptest::prelude::*;
        prop_oneof![
            prop::sample::select(vec!["a", "b", "", "ab", "a$"])
                .prop_map(|text| Level::Literal(text.into())),
            Just(Level::Any),
            (0u8..3).prop_map(|id| Level::Capture(CaptureId(id))),
        ]
    }

    proptest::proptest! {
        #[test]
        fn anchored_matching_agrees_with_walking_every_level(
            levels in proptest::collection::vec(any_level(), 0..5),
            tail in proptest::prop_oneof![
                proptest::strategy::Just(Tail::Exact),
                proptest::strategy::Just(Tail::Any),
                proptest::strategy::Just(Tail::Capture(CaptureId(3))),
            ],
            topic in "[ab/$]{0,9}",
        ) {
            let p = pattern(levels, tail);
            let (mut fast, mut slow) = (Captures::default(), Captures::default());
            let matched = p.matches(topic.as_bytes(), &mut fast);
            proptest::prop_assert_eq!(matched, walked(&p, topic.as_bytes(), &mut slow));
            if matched {
                proptest::prop_assert_eq!(&fast.0[..4], &slow.0[..4], "{:?} {:?}", p, topic);
            }
        }
    }

    #[test]
    fn valid_topic_names() {
        assert!(is_valid_topic_name("a"));
        assert!(is_valid_topic_name("/"));
        assert!(is_valid_topic_name(&"x".repeat(MAX_TOPIC_LEN)));
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name(&"x".repeat(MAX_TOPIC_LEN + 1)));
        assert!(!is_valid_topic_name("a/+"));
        assert!(!is_valid_topic_name("#"));
        assert!(!is_valid_topic_name("a\0"));
    }
}
