#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `lexer`: tokens, comments, literals (on demand, no recursion).
//! - `parser`: recursive descent to the compiled tree, with static type checks and the
//!   [`MAX_DEPTH`] bound.
//! - `ast`: the compiled tree (flat `AND`/`OR`, pre-lowered patterns, sorted `IN` sets).
//! - `like`: `LIKE` / `CONTAINS` / `STARTSWITH` / `ENDSWITH` matching.
//! - `value`: run-time values and the comparison and coercion rules.
//! - `eval`: the reference evaluator: three-valued evaluation of the tree against a
//!   [`MessageView`].
//! - `fast`: the tree lowered into leaves over raw property bytes and flat `AND`/`OR` lists,
//!   what [`Selector::evaluate`] runs; it falls back to `eval` for the rarer shapes.
//! - `message`: the [`MessageView`] trait and [`OwnedMessage`].
//! - `error`: [`ParseError`].
//!
//! # Example
//!
//! ```
//! use tern_sql92::{OwnedMessage, Selector, Truth};
//!
//! let hot = Selector::parse("temperature > 30 AND site = 'north'")?;
//! let msg = OwnedMessage::new("sensors/7/temp")
//!     .with("temperature", "31.5")
//!     .with("site", "north");
//! assert!(hot.matches(&msg));
//! // A missing property makes the comparison UNKNOWN, and UNKNOWN never matches.
//! let bare = OwnedMessage::new("sensors/7/temp").with("site", "north");
//! assert_eq!(hot.evaluate(&bare), Truth::Unknown);
//! assert!(!hot.matches(&bare));
//!
//! let err = Selector::parse("temperature > 30 site = 'north'").unwrap_err();
//! assert_eq!(err.column(), 18);
//! # Ok::<(), tern_sql92::ParseError>(())
//! ```
#![no_std]

extern crate alloc;

mod ast;
mod error;
mod eval;
mod fast;
mod lexer;
mod like;
mod message;
mod parser;
mod value;

pub use error::{ParseError, ParseErrorKind};
pub use message::{MessageView, OwnedMessage};

/// The deepest nesting a selector may use. Each parenthesis, `NOT`, sign and operator operand
/// opens a level, and so does each link of an arithmetic chain like `a + b + c`. An `AND`/`OR`
/// chain is one level however long. Deeper selectors are rejected with
/// [`ParseErrorKind::TooDeep`], so neither parsing nor evaluation can overflow a guest's stack:
/// `tests/limits.rs` checks that even an unoptimised build parses and evaluates the deepest
/// selectors of every shape in 1 MiB of stack, the default for a wasm32 guest.
pub const MAX_DEPTH: usize = 128;

/// The result of evaluating a selector: SQL's three-valued logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Truth {
    /// The condition holds: the message matches.
    True,
    /// The condition does not hold.
    False,
    /// Not known, typically because a property is missing. Does not match, and
    /// `NOT` UNKNOWN is still UNKNOWN.
    Unknown,
}

impl Truth {
    /// Three-valued `NOT`.
    #[must_use]
    #[expect(
        clippy::should_implement_trait,
        reason = "a named method reads better next to `and`/`or`, which have no std traits for 3VL"
    )]
    #[inline]
    pub fn not(self) -> Self {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }

    /// Three-valued `AND`: FALSE wins, then UNKNOWN.
    #[must_use]
    #[inline]
    pub fn and(self, other: Self) -> Self {
        match (self, other) {
            (Truth::False, _) | (_, Truth::False) => Truth::False,
            (Truth::True, Truth::True) => Truth::True,
            _ => Truth::Unknown,
        }
    }

    /// Three-valued `OR`: TRUE wins, then UNKNOWN.
    #[must_use]
    #[inline]
    pub fn or(self, other: Self) -> Self {
        match (self, other) {
            (Truth::True, _) | (_, Truth::True) => Truth::True,
            (Truth::False, Truth::False) => Truth::False,
            _ => Truth::Unknown,
        }
    }

    /// Whether this result selects the message (only TRUE does).
    #[inline]
    pub fn is_true(self) -> bool {
        self == Truth::True
    }
}

/// How a selector treats property values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// When on (the default), a user property whose value looks like a decimal number acts as
    /// that number where a number is expected (`temperature > 30` with `temperature = "31.5"`),
    /// and `true`/`false` (any case) act as booleans. When off, every property is a plain
    /// string: `temperature > 30` is FALSE (a type mismatch) and `temperature + 1` UNKNOWN.
    pub coerce_property_strings: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            coerce_property_strings: true,
        }
    }
}

impl Options {
    /// Sets [`Options::coerce_property_strings`].
    #[must_use]
    pub fn coerce_property_strings(mut self, on: bool) -> Self {
        self.coerce_property_strings = on;
        self
    }
}

/// A compiled selector, ready to evaluate any number of messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// The parsed tree: what the reference evaluator walks.
    root: ast::Expr,
    /// `root` lowered for evaluation.
    program: fast::Node,
    options: Options,
}

impl Selector {
    /// Compiles `selector` with the default [`Options`].
    pub fn parse(selector: &str) -> Result<Self, ParseError> {
        Self::parse_with(selector, Options::default())
    }

    /// Compiles `selector` with explicit [`Options`].
    pub fn parse_with(selector: &str, options: Options) -> Result<Self, ParseError> {
        let root = parser::parse(selector)?;
        Ok(Self {
            program: fast::lower(&root),
            root,
            options,
        })
    }

    /// The options this selector was compiled with.
    pub fn options(&self) -> Options {
        self.options
    }

    /// Evaluates the selector against `msg` with three-valued logic. Borrows only; never
    /// allocates and never panics.
    #[inline]
    pub fn evaluate<M: MessageView + ?Sized>(&self, msg: &M) -> Truth {
        fast::Ctx {
            msg,
            coerce: self.options.coerce_property_strings,
        }
        .eval(&self.program)
    }

    /// [`evaluate`](Self::evaluate) by the reference evaluator, a plain walk over the parsed
    /// tree that the fast one must always agree with. For tests and fuzzing.
    #[doc(hidden)]
    pub fn evaluate_reference<M: MessageView + ?Sized>(&self, msg: &M) -> Truth {
        eval::Ctx {
            msg,
            coerce: self.options.coerce_property_strings,
        }
        .cond(&self.root)
    }

    /// Whether `msg` is selected: the selector evaluates to TRUE (FALSE and UNKNOWN do not
    /// match).
    #[inline]
    pub fn matches<M: MessageView + ?Sized>(&self, msg: &M) -> bool {
        self.evaluate(msg).is_true()
    }
}
