//! Topic templates: destination topics a filter declares once, at `init`, and the hub renders
//! for each message from byte ranges of that message's topic.
//!
//! A routing filter that would otherwise build every destination topic itself (copying
//! captured topic levels into a buffer, then into the verdicts, which the hub copies and
//! checks again) instead writes a [`TemplateRoute`]: the template's index and a few
//! [`TopicSpan`]s. The hub checks the declared [`Template`]s once ([`CheckedTemplate::new`])
//! and renders each route with [`CheckedTemplate::render`]: one allocation and a few copies,
//! no UTF-8 or topic-name scan, because every piece is either text checked at deploy time
//! or a range of a topic the hub has already validated.
//!
//! This module owns the template declaration, its checks and the rendering, for both sides:
//! the hub renders what guests return, the SDK's test harness renders the same way.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::bytes::has_wildcard_or_nul;

/// Most spans one template route may carry (the count is a `u8`).
pub const MAX_TEMPLATE_SPANS: usize = 255;

/// The longest MQTT topic name, in bytes.
const MAX_TOPIC_LEN: usize = 65_535;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TemplatePart {
    /// Text copied as is.
    Text(String),
    /// The n-th span (0-based) of the route, copied from the message's topic.
    Span(u8),
}

/// A destination topic as a filter declares it: where it goes and how its topic is built.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Template {
    /// `None`: publish locally; `Some(name)`: forward through that bridge.
    pub bridge: Option<String>,
    pub parts: Vec<TemplatePart>,
}

/// A byte range of the message's topic: `start..end`, on character boundaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TopicSpan {
    pub start: u16,
    pub end: u16,
}

/// A route to a declared template: its index in the filter's template list, and the spans
/// its [`TemplatePart::Span`] parts refer to (exactly as many as the template uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateRoute<'a> {
    pub template: u16,
    pub spans: &'a [TopicSpan],
}

/// Why a declared template is refused (at deploy time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("a template needs at least one part")]
    NoParts,
    #[error("a template's bridge name is empty")]
    EmptyBridge,
    #[error("template text {text:?} holds `+`, `#` or NUL, which a topic name cannot")]
    ForbiddenChar { text: String },
    #[error("a local template starts with `$`: filters must not publish `$` topics")]
    DollarPrefix,
    #[error("template text is {len} bytes; a topic name is at most 65535")]
    TooLong { len: usize },
}

/// Why a template route cannot be rendered for a message (the verdicts are then refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    #[error("template {template} does not exist ({declared} declared)")]
    UnknownTemplate { template: u16, declared: usize },
    #[error("template {template} takes {expected} spans, the route gives {found}")]
    SpanCount {
        template: u16,
        expected: usize,
        found: usize,
    },
    #[error("span {start}..{end} is not a range of characters of the {len}-byte topic")]
    BadSpan { start: u16, end: u16, len: usize },
    #[error("the rendered topic is empty")]
    Empty,
    #[error("the rendered topic is {len} bytes; a topic name is at most 65535")]
    TooLong { len: usize },
    #[error("the rendered local topic starts with `$`")]
    DollarPrefix,
}

/// A [`Template`] the host accepted: its text holds no wildcard or NUL, a local one does not
/// start with `$` text. Renders routes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTemplate {
    bridge: Option<String>,
    parts: Vec<TemplatePart>,
    /// 1 + the highest span index used (0 when none is).
    span_count: usize,
    text_len: usize,
    /// A local template whose first part is a span: a rendered topic must be checked for a
    /// leading `$` (a span of a `$SYS/...` topic starting at 0).
    check_dollar: bool,
    /// Every span index below `span_count` appears in a part, so rendering checks every
    /// span of a route without a separate pass.
    uses_every_span: bool,
}

impl CheckedTemplate {
    /// Checks `template`.
    pub fn new(template: Template) -> Result<Self, TemplateError> {
        let Template { bridge, parts } = template;
        if parts.is_empty() {
            return Err(TemplateError::NoParts);
        }
        if bridge.as_deref() == Some("") {
            return Err(TemplateError::EmptyBridge);
        }
        let mut span_count = 0;
        let mut text_len = 0usize;
        for part in &parts {
            match part {
                TemplatePart::Text(text) => {
                    if has_wildcard_or_nul(text.as_bytes()) {
                        return Err(TemplateError::ForbiddenChar { text: text.clone() });
                    }
                    text_len = text_len.saturating_add(text.len());
                }
                TemplatePart::Span(n) => span_count = span_count.max(usize::from(*n) + 1),
            }
        }
        if text_len > MAX_TOPIC_LEN {
            return Err(TemplateError::TooLong { len: text_len });
        }
        let local = bridge.is_none();
        let check_dollar = local && matches!(parts.first(), Some(TemplatePart::Span(_)));
        if local
            && let Some(TemplatePart::Text(text)) = parts.first()
            && text.starts_with('$')
        {
            return Err(TemplateError::DollarPrefix);
        }
        let uses_every_span = (0..span_count).all(|n| {
            parts
                .iter()
                .any(|part| matches!(part, TemplatePart::Span(i) if usize::from(*i) == n))
        });
        Ok(Self {
            bridge,
            parts,
            span_count,
            text_len,
            check_dollar,
            uses_every_span,
        })
    }

    /// The bridge it forwards through; `None` for a local destination.
    pub fn bridge(&self) -> Option<&str> {
        self.bridge.as_deref()
    }

    /// How many spans a route to it must give.
    pub fn span_count(&self) -> usize {
        self.span_count
    }

    /// The topic for a message whose topic is `topic`, from the `spans` of a route to this
    /// template (template `index` in error reports). `topic` must be a valid topic name (the
    /// hub only holds such): then the result is one too, as each span is a piece of it.
    pub fn render(&self, index: u16, topic: &str, spans: Spans<'_>) -> Result<String, RenderError> {
        if spans.len() != self.span_count {
            return Err(RenderError::SpanCount {
                template: index,
                expected: self.span_count,
                found: spans.len(),
            });
        }
        if !self.uses_every_span {
            for span in spans.iter() {
                span_text(topic, span)?;
            }
        }
        // `span_count` is 1 + the highest index used, so every index used is in range.
        let text_of = |n: u8| {
            spans
                .get(usize::from(n))
                .map_or(Ok(""), |span| span_text(topic, span))
        };
        let mut len = self.text_len;
        for part in &self.parts {
            if let TemplatePart::Span(n) = part {
                len += text_of(*n)?.len();
            }
        }
        if len == 0 {
            return Err(RenderError::Empty);
        }
        if len > MAX_TOPIC_LEN {
            return Err(RenderError::TooLong { len });
        }
        let mut out = String::with_capacity(len);
        for part in &self.parts {
            out.push_str(match part {
                TemplatePart::Text(text) => text,
                TemplatePart::Span(n) => text_of(*n)?,
            });
        }
        if self.check_dollar && out.starts_with('$') {
            return Err(RenderError::DollarPrefix);
        }
        Ok(out)
    }
}

/// The text of `span` in `topic`, or why it is not a range of its characters.
fn span_text(topic: &str, span: TopicSpan) -> Result<&str, RenderError> {
    topic
        .get(usize::from(span.start)..usize::from(span.end))
        .ok_or(RenderError::BadSpan {
            start: span.start,
            end: span.end,
            len: topic.len(),
        })
}

impl TopicSpan {
    /// Its length in bytes (0 for a reversed span, which rendering refuses).
    pub fn len(self) -> usize {
        usize::from(self.end.saturating_sub(self.start))
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// The spans of a template route as they lie in the verdicts: 4 bytes each (`u16` start,
/// `u16` end, little-endian), read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Spans<'a> {
    bytes: &'a [u8],
}

impl<'a> Spans<'a> {
    /// Spans encoded as in the verdicts; `None` unless `bytes` holds whole spans, at most
    /// [`MAX_TEMPLATE_SPANS`].
    pub fn from_bytes(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len().is_multiple_of(4) && bytes.len() / 4 <= MAX_TEMPLATE_SPANS)
            .then_some(Self { bytes })
    }

    /// The encoded spans.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// How many spans.
    pub fn len(&self) -> usize {
        self.bytes.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Span `n`.
    pub fn get(&self, n: usize) -> Option<TopicSpan> {
        let at = n.checked_mul(4)?;
        let b: &[u8; 4] = self.bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(TopicSpan {
            start: u16::from_le_bytes([b[0], b[1]]),
            end: u16::from_le_bytes([b[2], b[3]]),
        })
    }

    /// The spans in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = TopicSpan> + 'a {
        self.bytes.chunks_exact(4).map(|b| TopicSpan {
            start: u16::from_le_bytes([b[0], b[1]]),
            end: u16::from_le_bytes([b[2], b[3]]),
        })
    }
}

impl fmt::Display for Template {
    /// As an operator reads it: `bridge:NAME text{0}text`, or the topic alone when local.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(bridge) = &self.bridge {
            write!(f, "bridge:{bridge} ")?;
        }
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => f.write_str(text)?,
                TemplatePart::Span(n) => write!(f, "{{{n}}}")?,
            }
        }
        Ok(())
    }
}
