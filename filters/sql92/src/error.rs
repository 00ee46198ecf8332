//! Parse errors: where (a 1-based character column) and what was expected.

use alloc::string::String;

/// A selector that could not be compiled.
///
/// `column` counts Unicode scalar values from the start of the selector, starting at 1; a
/// position past the last character (an unexpected end of input) is `length + 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {kind}")]
pub struct ParseError {
    column: usize,
    kind: ParseErrorKind,
}

impl ParseError {
    /// Builds an error at byte offset `at` of `src` (clamped to a char boundary).
    pub(crate) fn at(src: &str, at: usize, kind: ParseErrorKind) -> Self {
        let mut end = at.min(src.len());
        while !src.is_char_boundary(end) {
            end -= 1;
        }
        let column = src[..end].chars().count() + 1;
        Self { column, kind }
    }

    /// 1-based character column where the problem was found.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What went wrong.
    pub fn kind(&self) -> &ParseErrorKind {
        &self.kind
    }
}

/// The reason a selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A token that does not fit the grammar at this point.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar allows here, in words.
        expected: &'static str,
        /// A short description of what was there instead.
        found: String,
    },
    /// A character that starts no token.
    #[error("unexpected character {found:?}{hint}")]
    UnexpectedChar {
        /// The offending character.
        found: char,
        /// Extra advice (empty or starting with "; ").
        hint: &'static str,
    },
    /// A string literal without its closing quote.
    #[error("unterminated string literal (a quote inside a literal is written '')")]
    UnterminatedString,
    /// A double-quoted identifier without its closing quote.
    #[error("unterminated quoted identifier")]
    UnterminatedIdentifier,
    /// A `/*` comment without `*/`.
    #[error("unterminated /* comment")]
    UnterminatedComment,
    /// A malformed numeric literal.
    #[error("invalid numeric literal: {0}")]
    InvalidNumber(&'static str),
    /// An identifier starting with `$` that names no header.
    #[error("unknown header `{name}`; headers are {known}")]
    UnknownHeader {
        /// The identifier as written (truncated when long).
        name: String,
        /// The header names that exist.
        known: &'static str,
    },
    /// A bad `LIKE` pattern or `ESCAPE` clause.
    #[error("invalid LIKE pattern: {0}")]
    InvalidPattern(&'static str),
    /// An operand whose type can never fit its operator (e.g. `'a' + 1`, `5 AND x`).
    #[error("expected {expected}, found {found}")]
    Type {
        /// The kind of expression the operator needs.
        expected: &'static str,
        /// The kind of expression that was written.
        found: &'static str,
    },
    /// Parentheses, unary operators or operator chains nested deeper than the limit.
    #[error("expression nested too deeply (the limit is {limit} levels)")]
    TooDeep {
        /// [`crate::MAX_DEPTH`].
        limit: usize,
    },
}
