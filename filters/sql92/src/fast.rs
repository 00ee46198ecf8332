//! The evaluator messages actually go through: the compiled tree lowered once more, at
//! compile time, into the shapes selectors are made of.
//!
//! - **Leaves** test one operand (a user property, a header, or arithmetic over properties,
//!   number headers and literals) against literals: a comparison with a number or a string
//!   (either operand order, all six operators), `BETWEEN` two numbers, `IN` a list,
//!   `IS [NOT] NULL`. A leaf reads a property as raw bytes
//!   ([`MessageView::property_bytes`]): comparing bytes with a literal needs no UTF-8 check
//!   (equal bytes are as valid as the literal), and neither does reading ASCII digits. It
//!   sorts its operand into a [`Class`] (NULL, type mismatch, below / equal / above) and looks
//!   the result up in a table built at compile time from the reference rules
//!   (`eval::cmp_truth`), with `NOT` folded in.
//! - **`All` / `Any`** are flat Kleene `AND` / `OR` lists. Every `NOT` is pushed into the
//!   leaves (De Morgan holds in three-valued logic), so there is no negation node and no
//!   [`Value`](crate::value::Value) between nodes.
//! - Everything else (`LIKE`, property against property, booleans, `NULL` bounds) is a
//!   **`Reference`** leaf, evaluated by the reference evaluator in `eval`.
//!
//! `tests/fast.rs` checks that both evaluators agree, with random selectors and messages. The
//! tree is no higher than the parsed one, which [`crate::MAX_DEPTH`] bounds.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cmp::Ordering;

use crate::Truth;
use crate::ast::{ArithOp, CmpOp, Expr, Header, InSet, Lit};
use crate::eval::{self, cmp_truth, negate_if};
use crate::message::MessageView;
use crate::value::{Cmp, Kind, Num, parse_bool_bytes, parse_decimal_bytes};

/// `repr(u8)` here and on [`Operand`] and [`Test`]: a plain tag byte, so that a `match` is
/// one indexed jump rather than a decode of a niche in the payload (measurably cheaper in a
/// WebAssembly guest, where these matches run per leaf per message).
#[derive(Debug, Clone, PartialEq)]
#[repr(u8)]
pub(crate) enum Node {
    Leaf(Leaf),
    /// Three-valued `AND` of at least two operands, none of them an `All`.
    All(Box<[Node]>),
    /// Three-valued `OR` of at least two operands, none of them an `Any`.
    Any(Box<[Node]>),
    /// A condition the leaves do not cover, for the reference evaluator.
    Reference {
        expr: Box<Expr>,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Leaf {
    operand: Operand,
    test: Test,
    /// The leaf's result for each [`Class`] of its operand (indexed by `Class as usize`):
    /// the operator's rules, `NOT` and `<>` folded in at compile time.
    truths: [Truth; 5],
}

#[derive(Debug, Clone, PartialEq)]
#[repr(u8)]
enum Operand {
    Prop(Box<str>),
    Header(Header),
    Arith(Box<Arith>),
}

/// Arithmetic over literals, properties and the number headers (`temperature * 9 / 5 + 32`),
/// evaluated with the reference's rules (`eval::arith`, `eval::neg`): NULL when an input is
/// NULL or not a number, or on division by zero.
#[derive(Debug, Clone, PartialEq)]
enum Arith {
    /// A number, or `None` for the `NULL` literal.
    Lit(Option<Num>),
    Prop(Box<str>),
    /// `$qos` or `$timestamp`.
    Header(Header),
    Neg(Box<Arith>),
    Bin(ArithOp, Box<(Arith, Arith)>),
}

/// What a leaf compares its operand with. The operand is always on the left.
#[derive(Debug, Clone, PartialEq)]
#[repr(u8)]
enum Test {
    /// A number literal.
    Num(Num),
    /// `BETWEEN` two number literals: [`Class::Less`] below, [`Class::Equal`] inside,
    /// [`Class::Greater`] above.
    Between(Num, Num),
    /// A string literal, for `=` / `<>`: [`Class::Equal`], or [`Class::Less`] for any
    /// difference.
    StrEq(Literal),
    /// A string literal, for the orderings.
    StrOrd(Box<[u8]>),
    /// `IN`: [`Class::Equal`] when listed, [`Class::Less`] when not. A short list of strings
    /// is also kept as [`Literal`]s, searched one by one.
    In(Box<InSet>, Box<[Literal]>),
    /// `IS NULL`: [`Class::Null`] or [`Class::Equal`].
    IsNull,
}

/// A string literal to test values for equality with. Values of 4 to 8 bytes are compared
/// as two overlapping 4-byte words and shorter ones by three byte loads (no call, no loop);
/// longer ones with `==`.
#[derive(Debug, Clone, PartialEq)]
struct Literal {
    bytes: Box<[u8]>,
    /// The first and the last four bytes, when there are 4 to 8.
    head: u32,
    tail: u32,
}

/// The IN lists short enough to search one by one rather than by bisection.
const SHORT_LIST: usize = 8;

impl Literal {
    fn new(s: &str) -> Self {
        let bytes: Box<[u8]> = Box::from(s.as_bytes());
        let (head, tail) = words(&bytes).unwrap_or((0, 0));
        Self { bytes, head, tail }
    }

    #[inline(always)]
    fn equals(&self, b: &[u8]) -> bool {
        let n = b.len();
        if n != self.bytes.len() {
            return false;
        }
        match n {
            0 => true,
            // Index 0, n / 2 and n - 1 cover every byte of a value of 1 to 3 bytes.
            1..=3 => [0, n / 2, n - 1]
                .iter()
                .all(|&i| b.get(i) == self.bytes.get(i)),
            4..=8 => words(b) == Some((self.head, self.tail)),
            _ => *b == *self.bytes,
        }
    }
}

/// The first and the last four bytes of `b` as words, when `b` has 4 to 8 bytes.
#[inline(always)]
fn words(b: &[u8]) -> Option<(u32, u32)> {
    if !(4..=8).contains(&b.len()) {
        return None;
    }
    let (head, tail) = (b.first_chunk::<4>()?, b.last_chunk::<4>()?);
    Some((u32::from_ne_bytes(*head), u32::from_ne_bytes(*tail)))
}

/// How a leaf's operand relates to its literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The operand is NULL.
    Null = 0,
    /// The types do not compare, or a NaN was involved.
    Mismatch = 1,
    Less = 2,
    Equal = 3,
    Greater = 4,
}

const CLASSES: [Class; 5] = [
    Class::Null,
    Class::Mismatch,
    Class::Less,
    Class::Equal,
    Class::Greater,
];

impl Class {
    #[inline]
    fn of(o: Ordering) -> Self {
        match o {
            Ordering::Less => Class::Less,
            Ordering::Equal => Class::Equal,
            Ordering::Greater => Class::Greater,
        }
    }

    /// The outcome `value::compare` reports for operands of this class.
    fn cmp(self, kind: Kind) -> Cmp {
        match self {
            Class::Null => Cmp::Unknown,
            Class::Mismatch => Cmp::Mismatch,
            Class::Less => Cmp::Ord(Ordering::Less, kind),
            Class::Equal => Cmp::Ord(Ordering::Equal, kind),
            Class::Greater => Cmp::Ord(Ordering::Greater, kind),
        }
    }
}

/// Lowers a condition (the parser has checked that it is one).
pub(crate) fn lower(e: &Expr) -> Node {
    lower_negated(e, false)
}

fn lower_negated(e: &Expr, negated: bool) -> Node {
    match e {
        Expr::Not(inner) => lower_negated(inner, !negated),
        // De Morgan: NOT (a AND b) is NOT a OR NOT b, in three-valued logic too.
        Expr::And(ops) => junction(ops, negated, !negated),
        Expr::Or(ops) => junction(ops, negated, negated),
        _ => Leaf::lower(e, negated).map_or_else(
            || Node::Reference {
                expr: Box::new(e.clone()),
                negated,
            },
            Node::Leaf,
        ),
    }
}

/// `ops` joined by `AND` (`all`) or `OR`, each negated if `negated`; nested lists of the
/// same kind are spliced in (both operators are associative).
fn junction(ops: &[Expr], negated: bool, all: bool) -> Node {
    let mut nodes = Vec::with_capacity(ops.len());
    for op in ops {
        match (lower_negated(op, negated), all) {
            (Node::All(inner), true) | (Node::Any(inner), false) => nodes.extend(inner),
            (node, _) => nodes.push(node),
        }
    }
    let nodes = nodes.into_boxed_slice();
    if all {
        Node::All(nodes)
    } else {
        Node::Any(nodes)
    }
}

impl Operand {
    fn of(e: &Expr) -> Option<Self> {
        match e {
            Expr::Prop(name) => Some(Operand::Prop(name.clone())),
            Expr::Header(h) => Some(Operand::Header(*h)),
            Expr::Arith(..) | Expr::Neg(_) => Arith::of(e).map(|a| Operand::Arith(Box::new(a))),
            _ => None,
        }
    }
}

impl Arith {
    /// `None` for anything but numbers, `NULL`, properties and number headers under
    /// arithmetic (the parser lets no other type through; this keeps the rest for the
    /// reference evaluator all the same).
    fn of(e: &Expr) -> Option<Self> {
        Some(match e {
            Expr::Lit(Lit::Num(n)) => Arith::Lit(Some(*n)),
            Expr::Lit(Lit::Null) => Arith::Lit(None),
            Expr::Prop(name) => Arith::Prop(name.clone()),
            Expr::Header(h @ (Header::Qos | Header::Timestamp)) => Arith::Header(*h),
            Expr::Neg(inner) => Arith::Neg(Box::new(Arith::of(inner)?)),
            Expr::Arith(op, pair) => {
                let (a, b) = &**pair;
                Arith::Bin(*op, Box::new((Arith::of(a)?, Arith::of(b)?)))
            }
            _ => return None,
        })
    }
}

/// The operator with its operands exchanged: `a < b` is `b > a`.
fn swapped(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        CmpOp::Eq | CmpOp::Ne => op,
    }
}

/// The result of `x BETWEEN lo AND hi` (`x >= lo AND x <= hi`) by class: NULL makes both
/// comparisons UNKNOWN, a mismatch makes the first FALSE.
fn between_truth(c: Class) -> Truth {
    match c {
        Class::Null => Truth::Unknown,
        Class::Equal => Truth::True,
        Class::Mismatch | Class::Less | Class::Greater => Truth::False,
    }
}

/// The result of `x IN (…)` by class: not listed is UNKNOWN when the list holds NULL.
fn in_truth(c: Class, has_null: bool) -> Truth {
    match c {
        Class::Null => Truth::Unknown,
        Class::Equal => Truth::True,
        _ if has_null => Truth::Unknown,
        _ => Truth::False,
    }
}

impl Leaf {
    /// The leaf for `e` (negated if `negated`), or `None` when `e` has no leaf shape.
    fn lower(e: &Expr, negated: bool) -> Option<Self> {
        let (operand, test, truths) = match e {
            Expr::Cmp(op, pair) => {
                // Every comparison rule is symmetric, so a literal on the left only swaps
                // the operator.
                let (op, x, lit) = match &**pair {
                    (x, Expr::Lit(lit)) => (*op, x, lit),
                    (Expr::Lit(lit), x) => (swapped(*op), x, lit),
                    _ => return None,
                };
                let (test, kind) = match lit {
                    Lit::Num(n) => (Test::Num(*n), Kind::Num),
                    Lit::Str(s) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                        (Test::StrEq(Literal::new(s)), Kind::Str)
                    }
                    Lit::Str(s) => (Test::StrOrd(Box::from(s.as_bytes())), Kind::Str),
                    Lit::Null | Lit::Bool(_) => return None,
                };
                (
                    Operand::of(x)?,
                    test,
                    CLASSES.map(|c| cmp_truth(op, c.cmp(kind))),
                )
            }
            Expr::Between { operands, negated } => match &**operands {
                (x, Expr::Lit(Lit::Num(lo)), Expr::Lit(Lit::Num(hi))) => (
                    Operand::of(x)?,
                    Test::Between(*lo, *hi),
                    CLASSES.map(|c| negate_if(between_truth(c), *negated)),
                ),
                _ => return None,
            },
            Expr::In { expr, set, negated } => (
                Operand::of(expr)?,
                Test::In(
                    set.clone(),
                    if set.strs.len() <= SHORT_LIST {
                        set.strs.iter().map(|s| Literal::new(s)).collect()
                    } else {
                        Box::default()
                    },
                ),
                CLASSES.map(|c| negate_if(in_truth(c, set.has_null), *negated)),
            ),
            Expr::IsNull { expr, negated } => (
                Operand::of(expr)?,
                Test::IsNull,
                CLASSES.map(|c| Truth::from_bool((c == Class::Null) != *negated)),
            ),
            _ => return None,
        };
        Some(Leaf {
            operand,
            test,
            truths: truths.map(|t| negate_if(t, negated)),
        })
    }
}

/// An operand's value as a leaf sees it.
#[derive(Debug, Clone, Copy)]
enum Raw<'m> {
    /// A missing property or optional header.
    Null,
    /// A property value with coercion on: acts as a number or boolean where one is expected.
    Prop(&'m [u8]),
    /// A string header, or a property value with coercion off: only ever a string.
    Text(&'m [u8]),
    Num(Num),
    Bool(bool),
}

impl Raw<'_> {
    /// The operand as a number, or its class when it is none.
    #[inline]
    fn number(self) -> Result<Num, Class> {
        match self {
            Raw::Null => Err(Class::Null),
            Raw::Prop(b) => parse_decimal_bytes(b).ok_or(Class::Mismatch),
            Raw::Num(n) => Ok(n),
            Raw::Text(_) | Raw::Bool(_) => Err(Class::Mismatch),
        }
    }
}

#[inline]
fn compare_num(x: Num, y: Num) -> Class {
    x.compare(y).map_or(Class::Mismatch, Class::of)
}

/// Where `x` lies relative to `[lo, hi]`.
#[inline(always)]
fn between(x: Num, lo: Num, hi: Num) -> Class {
    match (compare_num(x, lo), compare_num(x, hi)) {
        (Class::Mismatch, _) | (_, Class::Mismatch) => Class::Mismatch,
        (Class::Less, _) => Class::Less,
        (_, Class::Greater) => Class::Greater,
        _ => Class::Equal,
    }
}

impl Test {
    /// The general case, kept out of line so that the hot path of [`Ctx::leaf`] stays small.
    #[inline(never)]
    fn class(&self, v: Raw<'_>) -> Class {
        match self {
            Test::Num(n) => match v.number() {
                Ok(x) => compare_num(x, *n),
                Err(c) => c,
            },
            Test::Between(lo, hi) => match v.number() {
                Ok(x) => between(x, *lo, *hi),
                Err(c) => c,
            },
            Test::StrEq(s) => match v {
                Raw::Null => Class::Null,
                Raw::Prop(b) | Raw::Text(b) if s.equals(b) => Class::Equal,
                Raw::Prop(_) | Raw::Text(_) => Class::Less,
                Raw::Num(_) | Raw::Bool(_) => Class::Mismatch,
            },
            Test::StrOrd(s) => match v {
                Raw::Null => Class::Null,
                Raw::Prop(b) | Raw::Text(b) => Class::of(b.cmp(s)),
                Raw::Num(_) | Raw::Bool(_) => Class::Mismatch,
            },
            Test::In(set, short) => in_set(v, set, short),
            Test::IsNull => match v {
                Raw::Null => Class::Null,
                _ => Class::Equal,
            },
        }
    }
}

/// `eval::in_set` on raw bytes: [`Class::Equal`] when listed. `short` is empty or holds
/// `set.strs`.
fn in_set(v: Raw<'_>, set: &InSet, short: &[Literal]) -> Class {
    let bool_listed = |b: bool| set.bools & (1 << u8::from(b)) != 0;
    let num_listed = |n: Num| {
        set.nums
            .iter()
            .any(|&m| n.compare(m) == Some(Ordering::Equal))
    };
    let str_listed = |b: &[u8]| {
        if set.strs.len() <= SHORT_LIST {
            short.iter().any(|s| s.equals(b))
        } else {
            set.strs.binary_search_by(|x| x.as_bytes().cmp(b)).is_ok()
        }
    };
    let found = match v {
        Raw::Null => return Class::Null,
        Raw::Prop(b) => {
            str_listed(b)
                || (!set.nums.is_empty() && parse_decimal_bytes(b).is_some_and(num_listed))
                || (set.bools != 0 && parse_bool_bytes(b).is_some_and(bool_listed))
        }
        Raw::Text(b) => str_listed(b),
        Raw::Num(n) => num_listed(n),
        Raw::Bool(b) => bool_listed(b),
    };
    if found { Class::Equal } else { Class::Less }
}

pub(crate) struct Ctx<'m, M: ?Sized> {
    pub(crate) msg: &'m M,
    /// Property strings act as numbers/booleans where those are expected.
    pub(crate) coerce: bool,
}

impl<'m, M: MessageView + ?Sized> Ctx<'m, M> {
    pub(crate) fn eval(&self, node: &Node) -> Truth {
        // `AND` stops at the first FALSE, `OR` at the first TRUE; otherwise UNKNOWN wins over
        // the other value. One loop for both keeps one copy of the inlined leaf code.
        let (ops, decisive) = match node {
            Node::All(ops) => (ops, Truth::False),
            Node::Any(ops) => (ops, Truth::True),
            Node::Leaf(leaf) => return self.single(leaf),
            Node::Reference { expr, negated } => return self.reference(expr, *negated),
        };
        let mut acc = decisive.not();
        for op in ops {
            let t = match op {
                Node::Leaf(leaf) => self.leaf(leaf),
                _ => self.eval(op),
            };
            if t == decisive {
                return t;
            }
            if t == Truth::Unknown {
                acc = Truth::Unknown;
            }
        }
        acc
    }

    /// A selector that is a single leaf, out of line so that [`eval`](Self::eval) holds one
    /// copy of the leaf code.
    #[inline(never)]
    fn single(&self, leaf: &Leaf) -> Truth {
        self.leaf(leaf)
    }

    #[inline(never)]
    fn reference(&self, expr: &Expr, negated: bool) -> Truth {
        let reference = eval::Ctx {
            msg: self.msg,
            coerce: self.coerce,
        };
        negate_if(reference.cond(expr), negated)
    }

    /// A leaf. The common case, a property with coercion on compared with a number or
    /// tested for equality with a string, runs straight through; the rest goes through
    /// [`Raw`].
    #[inline(always)]
    fn leaf(&self, leaf: &Leaf) -> Truth {
        let class = match &leaf.operand {
            Operand::Prop(name) => match self.msg.property_bytes(name) {
                None => Class::Null,
                Some(b) if self.coerce => match &leaf.test {
                    Test::Num(n) => {
                        parse_decimal_bytes(b).map_or(Class::Mismatch, |x| compare_num(x, *n))
                    }
                    Test::StrEq(s) => {
                        if s.equals(b) {
                            Class::Equal
                        } else {
                            Class::Less
                        }
                    }
                    test => test.class(Raw::Prop(b)),
                },
                Some(b) => leaf.test.class(Raw::Text(b)),
            },
            Operand::Header(_) | Operand::Arith(_) => self.computed(leaf),
        };
        leaf.truths[class as usize]
    }

    /// The class of a leaf on a header or arithmetic (or any operand), out of line.
    #[inline(never)]
    fn computed(&self, leaf: &Leaf) -> Class {
        let v = match &leaf.operand {
            Operand::Prop(name) => match self.msg.property_bytes(name) {
                None => Raw::Null,
                Some(b) if self.coerce => Raw::Prop(b),
                Some(b) => Raw::Text(b),
            },
            Operand::Header(h) => self.header(*h),
            Operand::Arith(a) => self.arith(a).map_or(Raw::Null, Raw::Num),
        };
        leaf.test.class(v)
    }

    /// The value of `a`; `None` is NULL.
    fn arith(&self, a: &Arith) -> Option<Num> {
        match a {
            Arith::Lit(n) => *n,
            Arith::Prop(name) => match self.msg.property_bytes(name) {
                Some(b) if self.coerce => parse_decimal_bytes(b),
                _ => None,
            },
            Arith::Header(Header::Qos) => Some(Num::Int(i64::from(self.msg.qos()))),
            Arith::Header(Header::Timestamp) => self.msg.timestamp_ms().map(Num::Int),
            Arith::Header(_) => None,
            Arith::Neg(x) => self.arith(x).map(eval::neg),
            Arith::Bin(op, pair) => {
                let (x, y) = &**pair;
                eval::arith(*op, self.arith(x)?, self.arith(y)?)
            }
        }
    }

    fn header(&self, h: Header) -> Raw<'m> {
        let m = self.msg;
        let text = |s: Option<&'m str>| s.map_or(Raw::Null, |s| Raw::Text(s.as_bytes()));
        match h {
            Header::Topic => Raw::Text(m.topic().as_bytes()),
            Header::Qos => Raw::Num(Num::Int(i64::from(m.qos()))),
            Header::Retain => Raw::Bool(m.retain()),
            Header::ClientId => text(m.client_id()),
            Header::ContentType => text(m.content_type()),
            Header::Timestamp => m
                .timestamp_ms()
                .map_or(Raw::Null, |t| Raw::Num(Num::Int(t))),
        }
    }
}
