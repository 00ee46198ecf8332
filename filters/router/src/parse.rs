//! The rule language parser: config text → [`RouteTable`], with every check that can be made
//! before a message arrives (see the crate README for the language).
//!
//! Owns positions and error reporting: every error names the rule number, line and
//! character column. Runs once per deploy, so it favours clear messages over speed, but it
//! stays linear in the config size and never recurses.

use crate::error::{ConfigError, ConfigErrorKind as Kind, Location};
use crate::table::{
    Action, CaptureId, Destination, Level, MAX_CAPTURES, MAX_DESTINATIONS, MAX_TOPIC_LEN, Pattern,
    Piece, RouteTable, Rule, Tail, Template,
};

/// Template variables every destination may use besides the pattern's captures.
const BUILTINS: [&str; 2] = ["topic", "client_id"];

/// A piece of one config line, with its byte offset in that line.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Token<'a> {
    fn trim(self) -> Self {
        let start = self.text.len() - self.text.trim_start().len();
        Self {
            text: self.text.trim(),
            at: self.at + start,
        }
    }

    fn from(self, byte: usize) -> Self {
        Self {
            text: self.text.get(byte..).unwrap_or(""),
            at: self.at + byte,
        }
    }

    fn until(self, byte: usize) -> Self {
        Self {
            text: self.text.get(..byte).unwrap_or(self.text),
            at: self.at,
        }
    }

    /// The rest after a case-insensitive ASCII `prefix`, if the token starts with it.
    fn strip_keyword(self, prefix: &str) -> Option<Self> {
        let head = self.text.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix)
            .then(|| self.from(prefix.len()))
    }

    /// Byte offset of the first whitespace character, if any.
    fn find_whitespace(self) -> Option<usize> {
        self.text.find(char::is_whitespace)
    }
}

/// The statement being parsed, for error locations.
#[derive(Debug, Clone, Copy)]
struct Site<'a> {
    line: &'a str,
    line_no: usize,
    rule: Option<usize>,
}

impl Site<'_> {
    fn err(self, at: usize, kind: Kind) -> ConfigError {
        let mut end = at.min(self.line.len());
        while !self.line.is_char_boundary(end) {
            end -= 1;
        }
        let column = self.line.get(..end).map_or(0, |s| s.chars().count()) + 1;
        ConfigError::new(
            Location {
                rule: self.rule,
                line: self.line_no,
                column,
            },
            kind,
        )
    }
}

/// The `otherwise` directive as parsed.
struct Otherwise {
    action: Action,
    /// 1-based line it was given on, for the duplicate error.
    line_no: usize,
}

pub(crate) fn parse(config: &str) -> Result<RouteTable, ConfigError> {
    let mut rules = Vec::new();
    let mut otherwise: Option<Otherwise> = None;
    // The last line seen, where a config-wide error points.
    let mut last = Site {
        line: "",
        line_no: 1,
        rule: None,
    };
    for (index, raw) in config.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line_no = index + 1;
        last = Site {
            line,
            line_no,
            rule: None,
        };
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut offset = 0;
        for segment in line.split(';') {
            let statement = Token {
                text: segment,
                at: offset,
            }
            .trim();
            offset += segment.len() + 1;
            if statement.text.is_empty() {
                continue;
            }
            let site = Site {
                line,
                line_no,
                rule: None,
            };
            if let Some(destinations) = otherwise_directive(statement) {
                if let Some(first) = &otherwise {
                    return Err(site.err(statement.at, Kind::DuplicateOtherwise(first.line_no)));
                }
                let action = parse_destinations(site, destinations, &[])?;
                otherwise = Some(Otherwise { action, line_no });
                continue;
            }
            let site = Site {
                rule: Some(rules.len() + 1),
                ..site
            };
            rules.push(parse_rule(site, statement)?);
        }
    }
    if rules.is_empty() && otherwise.is_none() {
        return Err(last.err(last.line.len(), Kind::NoRules));
    }
    Ok(RouteTable {
        rules: rules.into_boxed_slice(),
        otherwise: otherwise.map_or(Action::Keep, |o| o.action),
    })
}

/// The destinations of an `otherwise` directive (`otherwise drop`, `otherwise -> drop`), or
/// `None` when the statement is a rule.
fn otherwise_directive(statement: Token<'_>) -> Option<Token<'_>> {
    let rest = statement.strip_keyword("otherwise")?;
    if rest.text.is_empty() {
        return Some(rest);
    }
    if !rest.text.starts_with(char::is_whitespace) && !rest.text.starts_with("->") {
        // `otherwise/x -> ...`: a pattern that happens to start with the word.
        return None;
    }
    let rest = rest.trim();
    Some(rest.strip_keyword("->").unwrap_or(rest))
}

fn parse_rule(site: Site<'_>, statement: Token<'_>) -> Result<Rule, ConfigError> {
    let Some(arrow) = statement.text.find("->") else {
        let end = statement.find_whitespace().unwrap_or(statement.text.len());
        return Err(site.err(statement.at + end, Kind::MissingArrow));
    };
    let pattern_text = statement.until(arrow).trim();
    let (pattern, names) = parse_pattern(site, pattern_text, statement.at + arrow)?;
    let action = parse_destinations(site, statement.from(arrow + 2), &names)?;
    Ok(Rule { pattern, action })
}

/// Parses a pattern; returns it with its capture names (index = [`CaptureId`]).
fn parse_pattern<'a>(
    site: Site<'_>,
    token: Token<'a>,
    arrow_at: usize,
) -> Result<(Pattern, Vec<&'a str>), ConfigError> {
    const WHAT: &str = "the pattern";
    if token.text.is_empty() {
        return Err(site.err(arrow_at, Kind::EmptyPattern));
    }
    if let Some(ws) = token.find_whitespace() {
        return Err(site.err(token.at + ws, Kind::Whitespace(WHAT)));
    }
    if token.text.len() > MAX_TOPIC_LEN {
        return Err(site.err(token.at, Kind::TooLong(WHAT)));
    }
    let mut names: Vec<&'a str> = Vec::new();
    let mut levels = Vec::new();
    let mut tail = Tail::Exact;
    let count = token.text.split('/').count();
    let mut at = token.at;
    for (i, text) in token.text.split('/').enumerate() {
        let level = Token { text, at };
        at += text.len() + 1;
        let last = i + 1 == count;
        if text.is_empty() {
            return Err(site.err(level.at, Kind::EmptyLevel(WHAT)));
        }
        if text == "+" {
            levels.push(Level::Any);
            continue;
        }
        if text == "#" {
            if !last {
                return Err(site.err(level.at, Kind::MultiLevelNotLast("`#`")));
            }
            tail = Tail::Any;
            continue;
        }
        if let Some(inner) = text.strip_prefix('{') {
            let Some(inner) = inner.strip_suffix('}') else {
                return Err(site.err(
                    level.at,
                    Kind::Brace("a capture is written {name} or {name..} and fills a whole level"),
                ));
            };
            let (name, multi) = match inner.strip_suffix("..") {
                Some(name) => (name, true),
                None => (inner, false),
            };
            let name_at = level.at + 1;
            if multi && !last {
                return Err(site.err(level.at, Kind::MultiLevelNotLast("`{name..}`")));
            }
            if !is_capture_name(name) {
                return Err(site.err(name_at, Kind::BadCaptureName(name.into())));
            }
            if BUILTINS.contains(&name) {
                return Err(site.err(name_at, Kind::ReservedCapture(name.into())));
            }
            if names.contains(&name) {
                return Err(site.err(name_at, Kind::DuplicateCapture(name.into())));
            }
            let id = match u8::try_from(names.len()) {
                Ok(id) if names.len() < MAX_CAPTURES => CaptureId(id),
                _ => return Err(site.err(level.at, Kind::TooManyCaptures(MAX_CAPTURES))),
            };
            names.push(name);
            if multi {
                tail = Tail::Capture(id);
            } else {
                levels.push(Level::Capture(id));
            }
            continue;
        }
        if let Some((pos, c)) = text
            .char_indices()
            .find(|(_, c)| matches!(c, '+' | '#' | '{' | '}' | '\0'))
        {
            let kind = match c {
                '+' | '#' => Kind::PartialWildcard(c),
                '\0' => Kind::Nul(WHAT),
                _ => Kind::Brace("a capture is written {name} or {name..} and fills a whole level"),
            };
            return Err(site.err(level.at + pos, kind));
        }
        levels.push(Level::Literal(text.into()));
    }
    let pattern = Pattern::new(levels.into_boxed_slice(), tail);
    Ok((pattern, names))
}

fn is_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One destination as written, before `keep`/`drop` are folded into the rule's action.
enum Written {
    Keep,
    Drop,
    Send(Destination),
}

fn parse_destinations(
    site: Site<'_>,
    token: Token<'_>,
    names: &[&str],
) -> Result<Action, ConfigError> {
    let mut written = Vec::new();
    let mut offset = 0;
    for part in token.text.split(',') {
        let item = Token {
            text: part,
            at: token.at + offset,
        };
        offset += part.len() + 1;
        let item = item.trim();
        if item.text.is_empty() {
            return Err(site.err(item.at, Kind::EmptyDestination));
        }
        if written.len() >= MAX_DESTINATIONS {
            return Err(site.err(item.at, Kind::TooManyDestinations(MAX_DESTINATIONS)));
        }
        let one = parse_destination(site, item, names)?;
        written.push((one, item.at));
    }
    let Some((first, _)) = written.first() else {
        return Err(site.err(token.at + token.text.len(), Kind::EmptyDestination));
    };
    if written.len() == 1 {
        match first {
            Written::Keep => return Ok(Action::Keep),
            Written::Drop => return Ok(Action::Drop),
            Written::Send(_) => {}
        }
    }
    let mut destinations: Vec<Destination> = Vec::with_capacity(written.len());
    for (one, at) in written {
        let destination = match one {
            Written::Drop => return Err(site.err(at, Kind::DropWithOthers)),
            Written::Keep => Destination::Local(Template::own_topic()),
            Written::Send(destination) => destination,
        };
        if destinations.contains(&destination) {
            return Err(site.err(at, Kind::DuplicateDestination));
        }
        destinations.push(destination);
    }
    Ok(Action::Route(destinations.into_boxed_slice()))
}

fn parse_destination(
    site: Site<'_>,
    item: Token<'_>,
    names: &[&str],
) -> Result<Written, ConfigError> {
    if item.text.eq_ignore_ascii_case("keep") {
        return Ok(Written::Keep);
    }
    if item.text.eq_ignore_ascii_case("drop") {
        return Ok(Written::Drop);
    }
    if let Some(rest) = item.strip_keyword("bridge:") {
        let name_end = rest.find_whitespace().unwrap_or(rest.text.len());
        let name = rest.until(name_end).text;
        let valid_name = !name.is_empty()
            && name.len() <= MAX_TOPIC_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_name {
            return Err(site.err(rest.at, Kind::BadBridgeName));
        }
        let topic = rest.from(name_end).trim();
        if topic.text.is_empty() {
            return Err(site.err(rest.at + name_end, Kind::MissingBridgeTopic(name.into())));
        }
        let topic = parse_template(site, topic, names)?;
        return Ok(Written::Send(Destination::Bridge {
            bridge: name.into(),
            topic,
        }));
    }
    if let Some(rest) = item.strip_keyword("local:") {
        let rest = rest.trim();
        if rest.text.is_empty() {
            return Err(site.err(rest.at, Kind::EmptyDestination));
        }
        return local(site, rest, names);
    }
    // A bare topic. `word:` before the first `/` is most likely a misspelled kind.
    let first_level = item.text.split('/').next().unwrap_or("");
    if let Some((kind, _)) = first_level.split_once(':')
        && !kind.is_empty()
        && kind.chars().all(|c| c.is_ascii_alphabetic())
    {
        return Err(site.err(item.at, Kind::UnknownKind(kind.into())));
    }
    local(site, item, names)
}

fn local(site: Site<'_>, topic: Token<'_>, names: &[&str]) -> Result<Written, ConfigError> {
    if topic.text.starts_with('$') {
        return Err(site.err(topic.at, Kind::DollarLocal));
    }
    Ok(Written::Send(Destination::Local(parse_template(
        site, topic, names,
    )?)))
}

fn parse_template(
    site: Site<'_>,
    token: Token<'_>,
    names: &[&str],
) -> Result<Template, ConfigError> {
    const WHAT: &str = "the topic";
    if let Some(ws) = token.find_whitespace() {
        return Err(site.err(token.at + ws, Kind::Whitespace(WHAT)));
    }
    let mut at = token.at;
    for level in token.text.split('/') {
        if level.is_empty() {
            return Err(site.err(at, Kind::EmptyLevel(WHAT)));
        }
        at += level.len() + 1;
    }
    let mut pieces = Vec::new();
    let mut literal_len = 0usize;
    let mut literal_start = 0;
    let mut chars = token.text.char_indices();
    while let Some((pos, c)) = chars.next() {
        match c {
            '{' => {
                let Some(close) = token.text.get(pos..).and_then(|s| s.find('}')) else {
                    return Err(site.err(
                        token.at + pos,
                        Kind::Brace("unclosed `{` (a capture is written {name})"),
                    ));
                };
                let name = token.text.get(pos + 1..pos + close).unwrap_or("");
                let piece = if let Some(i) = names.iter().position(|n| *n == name) {
                    // `names` never holds more than MAX_CAPTURES entries.
                    CaptureId(u8::try_from(i).unwrap_or(u8::MAX)).into()
                } else if name == "topic" {
                    Piece::Topic
                } else if name == "client_id" {
                    Piece::ClientId
                } else {
                    return Err(site.err(
                        token.at + pos + 1,
                        Kind::UnknownCapture {
                            name: name.into(),
                            known: describe_captures(names),
                        },
                    ));
                };
                push_literal(&mut pieces, token.text.get(literal_start..pos));
                pieces.push(piece);
                literal_start = pos + close + 1;
                // Skip to the closing brace.
                for _ in token.text.get(pos + 1..pos + close).unwrap_or("").chars() {
                    chars.next();
                }
                chars.next();
            }
            '}' => {
                return Err(site.err(
                    token.at + pos,
                    Kind::Brace("unmatched `}` (a capture is written {name})"),
                ));
            }
            '+' | '#' => return Err(site.err(token.at + pos, Kind::WildcardInTopic(c))),
            '\0' => return Err(site.err(token.at + pos, Kind::Nul(WHAT))),
            _ => literal_len += c.len_utf8(),
        }
    }
    if literal_len > MAX_TOPIC_LEN {
        return Err(site.err(token.at, Kind::TooLong(WHAT)));
    }
    push_literal(&mut pieces, token.text.get(literal_start..));
    Ok(Template {
        pieces: pieces.into_boxed_slice(),
    })
}

impl From<CaptureId> for Piece {
    fn from(id: CaptureId) -> Self {
        Piece::Capture(id)
    }
}

fn push_literal(pieces: &mut Vec<Piece>, text: Option<&str>) {
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        pieces.push(Piece::Literal(text.into()));
    }
}

fn describe_captures(names: &[&str]) -> String {
    let builtins = "{topic} and {client_id}";
    if names.is_empty() {
        return format!("the pattern captures nothing (a topic may use {builtins})");
    }
    let list: Vec<String> = names.iter().map(|n| format!("{{{n}}}")).collect();
    format!(
        "the pattern captures {} (a topic may also use {builtins})",
        list.join(", ")
    )
}
