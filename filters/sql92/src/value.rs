//! Run-time values and the typing and coercion rules shared by every operator.

use core::cmp::Ordering;

/// An exact (`i64`) or approximate (`f64`) number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            // Promotion to approximate, as JMS does for mixed exact/approximate operands: the
            // rounding of integers above 2^53 is the documented meaning of the promotion.
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// `None` when either side is NaN.
    pub(crate) fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }
}

/// A value during evaluation; strings borrow from the selector or the message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    /// Missing property, missing optional header, `NULL`, or an UNKNOWN result.
    Null,
    Bool(bool),
    Num(Num),
    /// A typed string: a literal or a string header. Never coerced.
    Str(&'a str),
    /// A user property value while coercion is on: a string that acts as a number or a boolean
    /// where one is expected and it looks like one.
    Prop(&'a str),
}

/// Parses the decimal numeric forms a property value may take: optional sign, digits with an
/// optional fraction and exponent (`-12`, `3.5`, `.5`, `1.`, `1e3`). No hex, no white space,
/// no `inf`/`NaN`. Integers that overflow `i64` become approximate.
pub(crate) fn parse_decimal(s: &str) -> Option<Num> {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let int_start = i;
    i = digits(i);
    let mut exact = true;
    let mut mantissa = i > int_start;
    if b.get(i) == Some(&b'.') {
        let frac_start = i + 1;
        i = digits(frac_start);
        mantissa |= i > frac_start;
        exact = false;
    }
    if !mantissa {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        i = digits(j);
        if i == j {
            return None;
        }
        exact = false;
    }
    if i != b.len() {
        return None;
    }
    if exact && let Ok(v) = s.parse::<i64>() {
        return Some(Num::Int(v));
    }
    s.parse::<f64>().ok().map(Num::Float)
}

/// `true`/`false` in any ASCII case.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Outcome of comparing two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    /// Both comparable; the ordering (booleans only ever compare for equality).
    Ord(Ordering, Kind),
    /// Both numbers but at least one is NaN: `=` is FALSE, `<>` TRUE, orderings FALSE.
    Unordered,
    /// Types that do not compare (a non-numeric string and a number, …): `=` is FALSE,
    /// `<>` TRUE, orderings FALSE.
    Mismatch,
    /// At least one side is NULL.
    Unknown,
}

/// What kind of values were compared (orderings are defined on numbers and strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Num,
    Str,
}

/// The comparison rules (see README "Types and coercion").
pub(crate) fn compare(a: Value<'_>, b: Value<'_>) -> Cmp {
    use Value::{Bool, Null, Prop, Str};
    let num = |x: Num, y: Num| match x.compare(y) {
        Some(o) => Cmp::Ord(o, Kind::Num),
        None => Cmp::Unordered,
    };
    match (a, b) {
        (Null, _) | (_, Null) => Cmp::Unknown,
        (Value::Num(x), Value::Num(y)) => num(x, y),
        (Value::Num(x), Prop(s)) => parse_decimal(s).map_or(Cmp::Mismatch, |y| num(x, y)),
        (Prop(s), Value::Num(y)) => parse_decimal(s).map_or(Cmp::Mismatch, |x| num(x, y)),
        (Bool(x), Bool(y)) => Cmp::Ord(x.cmp(&y), Kind::Bool),
        (Bool(x), Prop(s)) => {
            parse_bool(s).map_or(Cmp::Mismatch, |y| Cmp::Ord(x.cmp(&y), Kind::Bool))
        }
        (Prop(s), Bool(y)) => {
            parse_bool(s).map_or(Cmp::Mismatch, |x| Cmp::Ord(x.cmp(&y), Kind::Bool))
        }
        (Prop(x), Prop(y)) => match (parse_decimal(x), parse_decimal(y)) {
            (Some(x), Some(y)) => num(x, y),
            _ => Cmp::Ord(x.cmp(y), Kind::Str),
        },
        (Str(x) | Prop(x), Str(y) | Prop(y)) => Cmp::Ord(x.cmp(y), Kind::Str),
        _ => Cmp::Mismatch,
    }
}

/// A number for arithmetic: `Some(None)` for NULL, `None` for a value that is not numeric.
pub(crate) fn to_num(v: Value<'_>) -> Option<Option<Num>> {
    match v {
        Value::Null => Some(None),
        Value::Num(n) => Some(Some(n)),
        Value::Prop(s) => parse_decimal(s).map(Some),
        Value::Bool(_) | Value::Str(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_property_values() {
        assert_eq!(parse_decimal("42"), Some(Num::Int(42)));
        assert_eq!(parse_decimal("-42"), Some(Num::Int(-42)));
        assert_eq!(parse_decimal("+7"), Some(Num::Int(7)));
        assert_eq!(parse_decimal("1."), Some(Num::Float(1.0)));
        assert_eq!(parse_decimal(".5"), Some(Num::Float(0.5)));
        assert_eq!(parse_decimal("1e3"), Some(Num::Float(1000.0)));
        assert_eq!(
            parse_decimal("-9223372036854775808"),
            Some(Num::Int(i64::MIN))
        );
        assert_eq!(
            parse_decimal("9223372036854775808"),
            Some(Num::Float(9_223_372_036_854_775_808.0))
        );
        for bad in [
            "", "-", "+", ".", "1e", "1e+", " 1", "1 ", "0x1", "inf", "NaN", "1,5", "--1",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn booleans_ignore_ascii_case() {
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("fAlSe"), Some(false));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(parse_bool(""), None);
    }

    #[test]
    fn comparison_kinds() {
        use Value::{Bool, Null, Prop, Str};
        assert_eq!(compare(Null, Str("a")), Cmp::Unknown);
        assert_eq!(compare(Str("a"), Null), Cmp::Unknown);
        assert_eq!(
            compare(Prop("10"), Prop("9")),
            Cmp::Ord(Ordering::Greater, Kind::Num)
        );
        assert_eq!(
            compare(Prop("10"), Str("9")),
            Cmp::Ord(Ordering::Less, Kind::Str)
        );
        assert_eq!(compare(Str("1"), Value::Num(Num::Int(1))), Cmp::Mismatch);
        assert_eq!(compare(Prop("x"), Value::Num(Num::Int(1))), Cmp::Mismatch);
        assert_eq!(
            compare(Prop("True"), Bool(true)),
            Cmp::Ord(Ordering::Equal, Kind::Bool)
        );
        assert_eq!(
            compare(Value::Num(Num::Float(f64::NAN)), Value::Num(Num::Int(1))),
            Cmp::Unordered
        );
    }
}
