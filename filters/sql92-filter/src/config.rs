//! The filter's config string: optional `# name = value` option lines, then the selector.
//!
//! Owns the option syntax and how errors point into the whole config (the hub shows them to
//! the operator when it refuses a deploy). The selector language itself is `tern-sql92`'s.

use std::fmt;

use tern_sql92::{Options, ParseErrorKind, Selector};

/// Option names, for error messages.
const KNOWN_OPTIONS: &str = "coerce";

/// Compiles a filter config: leading option lines, then the selector.
pub fn compile(config: &str) -> Result<Selector, ConfigError> {
    let (options, selector_start) = parse_options(config)?;
    let selector = config.get(selector_start..).unwrap_or("");
    Selector::parse_with(selector, options).map_err(|err| {
        let before = config.get(..selector_start).unwrap_or("");
        let prefix_chars = before.chars().count();
        let column = prefix_chars + err.column();
        let misplaced_option = matches!(
            err.kind(),
            ParseErrorKind::UnexpectedChar { found: '#', .. }
        ) && starts_line(config, column);
        ConfigError::Selector(SelectorError {
            column,
            kind: err.kind().clone(),
            hint: if misplaced_option {
                "; option lines (`# name = value`) must come before the selector"
            } else {
                ""
            },
        })
    })
}

/// Whether 1-based character `column` of `config` is the first non-blank character of a line.
fn starts_line(config: &str, column: usize) -> bool {
    let before: String = config.chars().take(column.saturating_sub(1)).collect();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    before
        .get(line_start..)
        .is_some_and(|s| s.trim().is_empty())
}

/// Reads the leading option lines; returns the options and the byte offset where the selector
/// starts (the first line that is neither blank nor an option line).
fn parse_options(config: &str) -> Result<(Options, usize), ConfigError> {
    let mut options = Options::default();
    let mut coerce_line: Option<usize> = None;
    let mut offset = 0;
    for (index, raw) in config.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let text = raw.trim();
        let Some(body) = text.strip_prefix('#') else {
            if text.is_empty() {
                offset += raw.len();
                continue;
            }
            break;
        };
        let err = |kind| {
            ConfigError::Option(OptionError {
                line: line_no,
                kind,
            })
        };
        let Some((name, value)) = body.split_once('=') else {
            return Err(err(OptionErrorKind::Syntax));
        };
        let (name, value) = (name.trim(), value.trim());
        match name {
            "coerce" => {
                if let Some(first) = coerce_line {
                    return Err(err(OptionErrorKind::Duplicate {
                        name: "coerce",
                        first,
                    }));
                }
                coerce_line = Some(line_no);
                let on = match value {
                    "on" => true,
                    "off" => false,
                    _ => {
                        return Err(err(OptionErrorKind::BadValue {
                            name: "coerce",
                            allowed: "on or off",
                        }));
                    }
                };
                options = options.coerce_property_strings(on);
            }
            _ => return Err(err(OptionErrorKind::Unknown(name.into()))),
        }
        offset += raw.len();
    }
    Ok((options, offset))
}

/// A config the filter refuses; its `Display` is the text the hub shows the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A bad option line.
    #[error(transparent)]
    Option(OptionError),
    /// The selector does not compile.
    #[error(transparent)]
    Selector(SelectorError),
}

/// A bad `# name = value` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct OptionError {
    /// 1-based line of the config.
    pub line: usize,
    /// What is wrong with it.
    pub kind: OptionErrorKind,
}

/// What is wrong with an option line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionErrorKind {
    /// Not of the form `# name = value`.
    #[error("expected an option line `# name = value` (selector comments are written -- or /* */)")]
    Syntax,
    /// A name that is not an option.
    #[error("unknown option `{0}`; options are: {KNOWN_OPTIONS}")]
    Unknown(String),
    /// A value the option does not take.
    #[error("option `{name}` takes {allowed}")]
    BadValue {
        /// The option.
        name: &'static str,
        /// Its values, in words.
        allowed: &'static str,
    },
    /// The same option twice.
    #[error("option `{name}` given twice (first on line {first})")]
    Duplicate {
        /// The option.
        name: &'static str,
        /// Line of its first occurrence.
        first: usize,
    },
}

/// A selector that does not compile: the library's error, with the column counted from the
/// start of the whole config (option lines included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    /// 1-based character column counted across lines from the start of the config, as
    /// `tern_sql92::ParseError::column` counts within the selector.
    pub column: usize,
    /// What was expected and found.
    pub kind: ParseErrorKind,
    hint: &'static str,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}{}", self.column, self.kind, self.hint)
    }
}

impl std::error::Error for SelectorError {}
