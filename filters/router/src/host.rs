//! Destinations the hub renders: at `init` the router declares a topic template
//! ([`tern_filter::Template`]) for every destination built only from text, captures and
//! `{topic}`, and in the guest routes a message to such a destination by naming the
//! template and giving the capture spans ([`tern_filter::TemplateRoute`]). The hub copies
//! the pieces of the topic it already holds, so the guest neither builds nor copies the
//! topic and the hub does not check it again.
//!
//! Destinations with `{client_id}` are still rendered by the router (the hub's templates
//! take pieces of the topic only).
//!
//! This module owns the declaration (which destinations get a template, their numbering)
//! and the span layout of a route: span `n` is capture `n` of the matched rule, and the
//! span after the rule's last capture is the whole topic.

use tern_filter::{Template, TemplatePart, TopicSpan};

use crate::table::{Action, Destination, MAX_TOPIC_LEN, Piece, RouteTable, Rule, Tail};

/// A destination the hub renders: its template and how many spans a route to it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostRoute {
    pub(crate) template: u16,
    pub(crate) span_count: u8,
    /// Bytes of text in the template.
    text_len: usize,
    /// How many of its parts are spans.
    span_parts: usize,
    /// Whether it starts with text (which the parser allows only without `$`).
    text_first: bool,
}

impl HostRoute {
    /// Whether a topic rendered for a message on a topic of `topic_len` bytes is surely
    /// valid without looking at it: it starts with non-empty text that is not `$`, and is
    /// short enough even if every span were the whole topic. Captures of a valid topic name
    /// hold no wildcard, so nothing else can be wrong.
    pub(crate) fn surely_valid(&self, topic_len: usize) -> bool {
        self.text_first && self.text_len + self.span_parts * topic_len <= MAX_TOPIC_LEN
    }
}

/// The templates of a route table and, per destination, the template the hub renders it
/// with (`None`: the router renders it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostRoutes {
    declared: Vec<Template>,
    /// Per rule, per destination of its action.
    rules: Box<[Box<[Option<HostRoute>]>]>,
    otherwise: Box<[Option<HostRoute>]>,
    /// Per rule, the number of captures of its pattern.
    captures: Box<[u8]>,
}

impl HostRoutes {
    /// The templates for `table`'s destinations, identical ones declared once.
    pub(crate) fn new(table: &RouteTable) -> Self {
        let mut declared = Vec::new();
        let rules = table
            .rules
            .iter()
            .map(|rule| routes(&rule.action, capture_count(rule), &mut declared))
            .collect();
        let otherwise = routes(&table.otherwise, 0, &mut declared);
        Self {
            declared,
            rules,
            otherwise,
            captures: table.rules.iter().map(capture_count).collect(),
        }
    }

    /// The number of captures of rule `rule` (0-based; `None`: the `otherwise` action,
    /// which has none).
    pub(crate) fn captures(&self, rule: Option<usize>) -> usize {
        rule.and_then(|i| self.captures.get(i))
            .map_or(0, |&n| usize::from(n))
    }

    /// The templates, in index order (what `init` declares).
    pub(crate) fn templates(&self) -> &[Template] {
        &self.declared
    }

    /// The host routes of the destinations of rule `rule` (0-based; `None`: the
    /// `otherwise` action), in destination order.
    pub(crate) fn of(&self, rule: Option<usize>) -> &[Option<HostRoute>] {
        match rule {
            Some(i) => self.rules.get(i).map_or(&[], |r| r),
            None => &self.otherwise,
        }
    }
}

/// Captures of a rule's pattern: one past the highest capture id.
fn capture_count(rule: &Rule) -> u8 {
    let levels = rule.pattern.levels.iter().filter_map(|level| match level {
        crate::table::Level::Capture(id) => Some(id.0),
        _ => None,
    });
    let tail = match rule.pattern.tail {
        Tail::Capture(id) => Some(id.0),
        _ => None,
    };
    levels.chain(tail).map(|id| id + 1).max().unwrap_or(0)
}

fn routes(action: &Action, captures: u8, declared: &mut Vec<Template>) -> Box<[Option<HostRoute>]> {
    let Action::Route(destinations) = action else {
        return Box::new([]);
    };
    destinations
        .iter()
        .map(|destination| host_route(destination, captures, declared))
        .collect()
}

fn host_route(
    destination: &Destination,
    captures: u8,
    declared: &mut Vec<Template>,
) -> Option<HostRoute> {
    let (bridge, pieces) = match destination {
        Destination::Local(template) => (None, &template.pieces),
        Destination::Bridge { bridge, topic } => (Some(String::from(&**bridge)), &topic.pieces),
    };
    let mut span_count = 0u8;
    let mut text_len = 0;
    let mut span_parts = 0;
    let text_first = matches!(
        pieces.first(),
        Some(Piece::Literal(text)) if !text.is_empty() && !text.starts_with('$')
    );
    let mut parts = Vec::with_capacity(pieces.len());
    for piece in pieces.iter() {
        let part = match piece {
            Piece::Literal(text) => TemplatePart::Text(String::from(&**text)),
            Piece::Capture(id) => TemplatePart::Span(id.0),
            Piece::Topic => TemplatePart::Span(captures),
            Piece::ClientId => return None,
        };
        match &part {
            TemplatePart::Span(n) => {
                span_count = span_count.max(n.checked_add(1)?);
                span_parts += 1;
            }
            TemplatePart::Text(text) => text_len += text.len(),
        }
        parts.push(part);
    }
    let template = Template { bridge, parts };
    let index = match declared.iter().position(|known| *known == template) {
        Some(index) => index,
        None => {
            declared.push(template);
            declared.len() - 1
        }
    };
    Some(HostRoute {
        template: u16::try_from(index).ok()?,
        span_count,
        text_len,
        span_parts,
        text_first,
    })
}

/// The spans of a message matched by a rule with `captures` captures: the capture spans,
/// then the whole topic. Topics are at most 65,535 bytes, so every offset fits a `u16`.
pub(crate) fn fill_spans(
    spans: &mut [TopicSpan],
    captures: impl Iterator<Item = (usize, usize)>,
    topic_len: usize,
) -> usize {
    let mut n = 0;
    for ((start, end), slot) in captures.zip(spans.iter_mut()) {
        *slot = span(start, end);
        n += 1;
    }
    if let Some(slot) = spans.get_mut(n) {
        *slot = span(0, topic_len);
        n += 1;
    }
    n
}

fn span(start: usize, end: usize) -> TopicSpan {
    TopicSpan {
        start: u16::try_from(start).unwrap_or(u16::MAX),
        end: u16::try_from(end).unwrap_or(u16::MAX),
    }
}
