//! The reference evaluator: a recursive walk over the compiled tree (its height is bounded by
//! [`crate::MAX_DEPTH`]) that borrows every string and never allocates. It defines the
//! semantics: `fast` evaluates the common shapes itself and hands everything else to it.

use core::cmp::Ordering;

use crate::Truth;
use crate::ast::{ArithOp, CmpOp, Expr, Header, InSet, Lit};
use crate::message::MessageView;
use crate::value::{Cmp, Kind, Num, Value, compare, parse_bool, parse_decimal, to_num};

pub(crate) struct Ctx<'a, M: ?Sized> {
    pub(crate) msg: &'a M,
    /// Property strings act as numbers/booleans where those are expected.
    pub(crate) coerce: bool,
}

impl Truth {
    pub(crate) fn from_bool(b: bool) -> Self {
        if b { Truth::True } else { Truth::False }
    }

    fn value(self) -> Value<'static> {
        match self {
            Truth::True => Value::Bool(true),
            Truth::False => Value::Bool(false),
            Truth::Unknown => Value::Null,
        }
    }
}

/// A value used as a condition: booleans as themselves, NULL as UNKNOWN, a property string
/// `true`/`false` (any case, with coercion on) as that boolean, anything else UNKNOWN.
pub(crate) fn truth(v: Value<'_>) -> Truth {
    match v {
        Value::Bool(b) => Truth::from_bool(b),
        Value::Prop(s) => parse_bool(s).map_or(Truth::Unknown, Truth::from_bool),
        Value::Null | Value::Num(_) | Value::Str(_) => Truth::Unknown,
    }
}

pub(crate) fn cmp_truth(op: CmpOp, c: Cmp) -> Truth {
    match c {
        Cmp::Unknown => Truth::Unknown,
        // `<>` is exactly NOT `=`.
        Cmp::Mismatch | Cmp::Unordered => Truth::from_bool(op == CmpOp::Ne),
        Cmp::Ord(o, kind) => Truth::from_bool(match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            // Booleans have no order.
            _ if kind == Kind::Bool => false,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        }),
    }
}

pub(crate) fn negate_if(t: Truth, negated: bool) -> Truth {
    if negated { t.not() } else { t }
}

pub(crate) fn arith(op: ArithOp, a: Num, b: Num) -> Option<Num> {
    if let (Num::Int(x), Num::Int(y)) = (a, b) {
        let exact = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Sub => x.checked_sub(y),
            ArithOp::Mul => x.checked_mul(y),
            ArithOp::Div | ArithOp::Rem if y == 0 => return None,
            ArithOp::Div => x.checked_div(y),
            // Only i64::MIN % -1 overflows, and its value is 0.
            ArithOp::Rem => Some(x.checked_rem(y).unwrap_or(0)),
        };
        if let Some(v) = exact {
            return Some(Num::Int(v));
        }
        // Overflow: fall through to approximate arithmetic.
    }
    let (x, y) = (a.as_f64(), b.as_f64());
    Some(Num::Float(match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div | ArithOp::Rem if y == 0.0 => return None,
        ArithOp::Div => x / y,
        ArithOp::Rem => x % y,
    }))
}

/// Unary minus; `-i64::MIN` overflows to the approximate result.
pub(crate) fn neg(n: Num) -> Num {
    match n {
        Num::Int(i) => match i.checked_neg() {
            Some(n) => Num::Int(n),
            None => Num::Float(-Num::Int(i).as_f64()),
        },
        Num::Float(f) => Num::Float(-f),
    }
}

impl<'a, M: MessageView + ?Sized> Ctx<'a, M> {
    pub(crate) fn eval(&self, e: &'a Expr) -> Value<'a> {
        match e {
            Expr::Lit(lit) => match lit {
                Lit::Null => Value::Null,
                Lit::Bool(b) => Value::Bool(*b),
                Lit::Num(n) => Value::Num(*n),
                Lit::Str(s) => Value::Str(s),
            },
            Expr::Prop(name) => match self.msg.property(name) {
                None => Value::Null,
                Some(s) if self.coerce => Value::Prop(s),
                Some(s) => Value::Str(s),
            },
            Expr::Header(h) => self.header(*h),
            Expr::Not(inner) => self.cond(inner).not().value(),
            Expr::And(ops) => {
                let mut acc = Truth::True;
                for op in ops {
                    acc = acc.and(self.cond(op));
                    if acc == Truth::False {
                        break;
                    }
                }
                acc.value()
            }
            Expr::Or(ops) => {
                let mut acc = Truth::False;
                for op in ops {
                    acc = acc.or(self.cond(op));
                    if acc == Truth::True {
                        break;
                    }
                }
                acc.value()
            }
            Expr::Cmp(op, operands) => {
                let (a, b) = &**operands;
                cmp_truth(*op, compare(self.eval(a), self.eval(b))).value()
            }
            Expr::IsNull { expr, negated } => {
                let null = self.eval(expr) == Value::Null;
                Value::Bool(null != *negated)
            }
            Expr::Between { operands, negated } => {
                let (x, lo, hi) = &**operands;
                let x = self.eval(x);
                let ge = cmp_truth(CmpOp::Ge, compare(x, self.eval(lo)));
                let t = if ge == Truth::False {
                    Truth::False
                } else {
                    ge.and(cmp_truth(CmpOp::Le, compare(x, self.eval(hi))))
                };
                negate_if(t, *negated).value()
            }
            Expr::In { expr, set, negated } => {
                negate_if(in_set(self.eval(expr), set), *negated).value()
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => {
                let t = match self.eval(expr) {
                    Value::Null => Truth::Unknown,
                    Value::Str(s) | Value::Prop(s) => Truth::from_bool(pattern.matches(s)),
                    // Not a string: a type mismatch, FALSE like any other.
                    Value::Bool(_) | Value::Num(_) => Truth::False,
                };
                negate_if(t, *negated).value()
            }
            Expr::Arith(op, operands) => {
                let (a, b) = &**operands;
                match (to_num(self.eval(a)), to_num(self.eval(b))) {
                    (Some(Some(x)), Some(Some(y))) => {
                        arith(*op, x, y).map_or(Value::Null, Value::Num)
                    }
                    // NULL or a non-numeric operand: the result is unknown.
                    _ => Value::Null,
                }
            }
            Expr::Neg(inner) => match to_num(self.eval(inner)) {
                Some(Some(n)) => Value::Num(neg(n)),
                _ => Value::Null,
            },
        }
    }

    pub(crate) fn cond(&self, e: &'a Expr) -> Truth {
        truth(self.eval(e))
    }

    fn header(&self, h: Header) -> Value<'a> {
        let m = self.msg;
        match h {
            Header::Topic => Value::Str(m.topic()),
            Header::Qos => Value::Num(Num::Int(i64::from(m.qos()))),
            Header::Retain => Value::Bool(m.retain()),
            Header::ClientId => m.client_id().map_or(Value::Null, Value::Str),
            Header::ContentType => m.content_type().map_or(Value::Null, Value::Str),
            Header::Timestamp => m
                .timestamp_ms()
                .map_or(Value::Null, |t| Value::Num(Num::Int(t))),
        }
    }
}

/// `x IN (…)` is `x = a OR x = b OR …` under the same comparison rules, using the set's
/// grouping by type instead of a linear walk over strings.
fn in_set(v: Value<'_>, set: &InSet) -> Truth {
    let bool_listed = |b: bool| set.bools & (1 << u8::from(b)) != 0;
    let num_listed = |n: Num| {
        set.nums
            .iter()
            .any(|&m| n.compare(m) == Some(Ordering::Equal))
    };
    let str_listed = |s: &str| set.strs.binary_search_by(|x| (**x).cmp(s)).is_ok();
    let found = match v {
        Value::Null => return Truth::Unknown,
        Value::Bool(b) => bool_listed(b),
        Value::Num(n) => num_listed(n),
        Value::Str(s) => str_listed(s),
        Value::Prop(s) => {
            str_listed(s)
                || parse_decimal(s).is_some_and(num_listed)
                || parse_bool(s).is_some_and(bool_listed)
        }
    };
    if found {
        Truth::True
    } else if set.has_null {
        Truth::Unknown
    } else {
        Truth::False
    }
}
