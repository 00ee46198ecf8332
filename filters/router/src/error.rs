//! Errors: why a rule set was rejected (with the rule, line and column) and why a matched
//! rule could not produce a valid topic for one message.

use std::fmt;

/// Where in the config a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based number of the rule (rules counted in order, comments, blank lines and the
    /// `otherwise` directive not counted); `None` for the `otherwise` directive and for
    /// problems with the config as a whole.
    pub rule: Option<usize>,
    /// 1-based line of the config.
    pub line: usize,
    /// 1-based character (not byte) column within that line.
    pub column: usize,
}

/// A rule set that could not be compiled. Its `Display` is what the operator sees when the
/// hub refuses the deploy: `rule 2 (line 3, column 14): unknown capture {devcie} ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {kind}", DisplayLocation(.location))]
pub struct ConfigError {
    location: Location,
    kind: ConfigErrorKind,
}

impl ConfigError {
    pub(crate) fn new(location: Location, kind: ConfigErrorKind) -> Self {
        Self { location, kind }
    }

    /// Where the problem is.
    pub fn location(&self) -> Location {
        self.location
    }

    /// What the problem is.
    pub fn kind(&self) -> &ConfigErrorKind {
        &self.kind
    }
}

struct DisplayLocation<'a>(&'a Location);

impl fmt::Display for DisplayLocation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Location { rule, line, column } = *self.0;
        match rule {
            Some(rule) => write!(f, "rule {rule} (line {line}, column {column})"),
            None => write!(f, "line {line}, column {column}"),
        }
    }
}

/// The reason a rule set was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The config holds neither a rule nor an `otherwise` directive.
    #[error("no rules (write `pattern -> destination` lines, or `otherwise drop`)")]
    NoRules,
    /// A rule without `->`.
    #[error("expected `->` after the pattern (`pattern -> destination`)")]
    MissingArrow,
    /// Nothing before `->`.
    #[error("expected a topic pattern before `->`")]
    EmptyPattern,
    /// Nothing after `->` (or after a `,`).
    #[error("expected a destination (keep, drop, local:<topic>, bridge:<name> <topic>)")]
    EmptyDestination,
    /// A pattern or topic with whitespace inside it.
    #[error("unexpected whitespace in {0} (topics in rules cannot contain spaces)")]
    Whitespace(&'static str),
    /// `a//b`, a leading or a trailing `/`.
    #[error("empty topic level in {0}")]
    EmptyLevel(&'static str),
    /// `a+`, `#b`: a wildcard that is not a whole level.
    #[error("`{0}` must be a whole topic level")]
    PartialWildcard(char),
    /// `#` or `{name..}` before the last level.
    #[error("{0} must be the last level of the pattern")]
    MultiLevelNotLast(&'static str),
    /// A `{`/`}` that does not delimit a capture.
    #[error("{0}")]
    Brace(&'static str),
    /// A capture name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid capture name `{0}` (letters, digits and `_`, not starting with a digit)")]
    BadCaptureName(String),
    /// The same capture name twice in one pattern.
    #[error("duplicate capture `{{{0}}}` in the pattern")]
    DuplicateCapture(String),
    /// A capture named like a built-in template variable.
    #[error("capture `{{{0}}}` would hide the built-in `{{{0}}}`; choose another name")]
    ReservedCapture(String),
    /// More captures than [`crate::MAX_CAPTURES`].
    #[error("too many captures in one pattern (the limit is {0})")]
    TooManyCaptures(usize),
    /// A template naming a capture the pattern does not have.
    #[error("unknown capture `{{{name}}}` in the topic; {known}")]
    UnknownCapture {
        /// The name as written.
        name: String,
        /// What the template may use, in words.
        known: String,
    },
    /// `+` or `#` in a destination topic.
    #[error("wildcard `{0}` in a destination topic (a published topic cannot contain + or #)")]
    WildcardInTopic(char),
    /// A NUL character in a pattern or topic.
    #[error("NUL character in {0}")]
    Nul(&'static str),
    /// A pattern or topic longer than an MQTT topic may be.
    #[error("{0} is longer than an MQTT topic may be (65535 bytes)")]
    TooLong(&'static str),
    /// `drop` together with other destinations.
    #[error("`drop` cannot be combined with other destinations")]
    DropWithOthers,
    /// The same destination twice in one rule.
    #[error("duplicate destination in this rule")]
    DuplicateDestination,
    /// More destinations than [`crate::MAX_DESTINATIONS`].
    #[error("too many destinations in one rule (the limit is {0})")]
    TooManyDestinations(usize),
    /// `bridge:` without a valid name.
    #[error("expected a bridge name (letters, digits, `_`, `-`, `.`) right after `bridge:`")]
    BadBridgeName,
    /// `bridge:<name>` without a topic.
    #[error("expected a topic after the bridge name (`bridge:{0} <topic>`)")]
    MissingBridgeTopic(String),
    /// A bare destination that looks like a misspelled kind (`locl:a/b`).
    #[error(
        "unknown destination kind `{0}:` (destinations are keep, drop, local:<topic> and \
         bridge:<name> <topic>; for a local topic starting with `{0}:` write `local:{0}:...`)"
    )]
    UnknownKind(String),
    /// A local destination written with a leading `$`.
    #[error("a local topic cannot start with `$` (the hub reserves `$` topics)")]
    DollarLocal,
    /// A second `otherwise` directive.
    #[error("`otherwise` given twice (the first is on line {0})")]
    DuplicateOtherwise(usize),
}

/// Why a matched rule could not produce a valid MQTT topic name for one message. The router
/// drops such a message (see the README, "Invalid topics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", DisplayRule(*.rule))]
pub struct InvalidRoute {
    /// 1-based number of the rule that matched; `None` for the `otherwise` directive.
    pub rule: Option<usize>,
    /// What was wrong with the topic.
    pub reason: InvalidTopic,
}

struct DisplayRule(Option<usize>);

impl fmt::Display for DisplayRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(rule) => write!(f, "rule {rule}"),
            None => f.write_str("otherwise"),
        }
    }
}

/// What makes a produced topic name invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTopic {
    /// The topic came out empty.
    #[error("the destination topic is empty")]
    Empty,
    /// More than 65,535 bytes.
    #[error("the destination topic would be {0} bytes (the limit is 65535)")]
    TooLong(usize),
    /// An interpolated value holds `+`, `#` or NUL.
    #[error("an interpolated value contains `+`, `#` or NUL")]
    ForbiddenChar,
    /// `{client_id}` is empty (a message the hub published itself) or spans levels.
    #[error("the publisher's client id is empty or contains `/`")]
    BadClientId,
    /// A local topic would start with `$` (the hub reserves those), or an interpolated value
    /// would start a bridge topic with `$`.
    #[error("the destination topic would start with `$`")]
    DollarPrefix,
}
