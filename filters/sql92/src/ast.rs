//! The compiled selector: a tree shaped for repeated evaluation. `AND`/`OR` chains are flat
//! lists, `LIKE`-family patterns are pre-lowered, `IN` string lists are sorted for binary search.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::like::Pattern;
use crate::value::Num;

/// The message headers a selector can name. Each has a fixed type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// `$topic`: string.
    Topic,
    /// `$qos`: exact number 0, 1 or 2.
    Qos,
    /// `$retain`: boolean.
    Retain,
    /// `$client_id`: string, NULL when unknown.
    ClientId,
    /// `$content_type`: string, NULL when absent.
    ContentType,
    /// `$timestamp`: exact number (ms since the Unix epoch), NULL when unknown.
    Timestamp,
}

impl Header {
    pub(crate) const KNOWN: &'static str =
        "$topic, $qos, $retain, $client_id, $content_type, $timestamp";

    pub(crate) fn lookup(name: &str) -> Option<Self> {
        Some(match name {
            "$topic" => Header::Topic,
            "$qos" => Header::Qos,
            "$retain" => Header::Retain,
            "$client_id" => Header::ClientId,
            "$content_type" => Header::ContentType,
            "$timestamp" => Header::Timestamp,
            _ => return None,
        })
    }

    pub(crate) fn ty(self) -> Ty {
        match self {
            Header::Topic | Header::ClientId | Header::ContentType => Ty::Str,
            Header::Qos | Header::Timestamp => Ty::Num,
            Header::Retain => Ty::Bool,
        }
    }
}

/// What an expression is known to produce before evaluation, used to reject selectors that can
/// never make sense (`'a' + 1`, `5 AND x`, a top level that is not a condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Bool,
    Num,
    Str,
    /// A user property or `NULL`: known only at run time.
    Any,
}

impl Ty {
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Ty::Bool => "a condition",
            Ty::Num => "a number",
            Ty::Str => "a string",
            Ty::Any => "a property",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// A literal constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Num(Num),
    Str(Box<str>),
}

/// The right-hand side of `IN`: the literals grouped by type.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct InSet {
    /// Sorted and de-duplicated.
    pub(crate) strs: Box<[Box<str>]>,
    pub(crate) nums: Box<[Num]>,
    /// Bit 0: FALSE is listed; bit 1: TRUE is listed.
    pub(crate) bools: u8,
    /// `NULL` is listed: a value found nowhere else is UNKNOWN rather than FALSE.
    pub(crate) has_null: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Lit(Lit),
    Prop(Box<str>),
    Header(Header),
    Not(Box<Expr>),
    /// At least two operands.
    And(Box<[Expr]>),
    /// At least two operands.
    Or(Box<[Expr]>),
    Cmp(CmpOp, Box<(Expr, Expr)>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    Between {
        operands: Box<(Expr, Expr, Expr)>,
        negated: bool,
    },
    In {
        expr: Box<Expr>,
        set: Box<InSet>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Pattern>,
        negated: bool,
    },
    Arith(ArithOp, Box<(Expr, Expr)>),
    Neg(Box<Expr>),
}

impl InSet {
    pub(crate) fn build(items: Vec<Lit>) -> Self {
        let mut strs = Vec::new();
        let mut nums = Vec::new();
        let mut set = InSet::default();
        for item in items {
            match item {
                Lit::Null => set.has_null = true,
                Lit::Bool(b) => set.bools |= 1 << u8::from(b),
                Lit::Num(n) => nums.push(n),
                Lit::Str(s) => strs.push(s),
            }
        }
        strs.sort_unstable();
        strs.dedup();
        set.strs = strs.into_boxed_slice();
        set.nums = nums.into_boxed_slice();
        set
    }
}
