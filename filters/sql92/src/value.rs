//! Run-time values and the typing and coercion rules shared by every operator.

use core::cmp::Ordering;

/// An exact (`i64`) or approximate (`f64`) number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    #[inline]
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            // Promotion to approximate, as JMS does for mixed exact/approximate operands: the
            // rounding of integers above 2^53 is the documented meaning of the promotion.
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// `None` when either side is NaN.
    #[inline]
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

/// Exact powers of ten for [`parse_decimal_bytes`]'s fractions.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// [`parse_decimal`] on raw property bytes, without checking them for UTF-8 first. The usual
/// forms are read here in one pass: an integer of up to 19 digits that fits an i64 (`31`, `-7`,
/// `+5`, `007`) and a fraction of up to 15 digits in all (`23.5`, `-.5`, `1.`). Exponents and
/// longer numbers go through the text parser. Bytes that are not UTF-8 are never a number. Gives
/// exactly what `parse_decimal` gives on the same text.
#[inline(always)]
pub(crate) fn parse_decimal_bytes(b: &[u8]) -> Option<Num> {
    if let Some(v) = short_integer(b) {
        return Some(Num::Int(v));
    }
    let (negative, rest) = match b {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, b),
    };
    // At most 19 digits: the mantissa cannot overflow a u64 below.
    if rest.len() > 19 {
        return parse_decimal_text(b);
    }
    let mut mantissa: u64 = 0;
    let mut i = 0;
    let int_digits = read_digits(rest, &mut i, &mut mantissa);
    let point = rest.get(i) == Some(&b'.');
    let frac_digits = if point {
        i += 1;
        read_digits(rest, &mut i, &mut mantissa)
    } else {
        0
    };
    match rest.get(i) {
        None => {}
        Some(b'e' | b'E') => return parse_decimal_text(b),
        // After the sign only digits, one `.` and an exponent may come.
        Some(_) => return None,
    }
    let count = int_digits + frac_digits;
    if count == 0 {
        return None;
    }
    match (point, i64::try_from(mantissa), POW10.get(frac_digits)) {
        (false, Ok(v), _) => Some(Num::Int(if negative { -v } else { v })),
        (true, _, Some(scale)) if count <= 15 => {
            // Both operands are exact (the mantissa is below 10^15 < 2^53, so the cast is
            // exact too) and IEEE division rounds correctly: this is the correctly rounded
            // value of the text, which is what `str::parse` gives.
            let x = mantissa as f64 / scale;
            Some(Num::Float(if negative { -x } else { x }))
        }
        _ => parse_decimal_text(b),
    }
}

/// Reads ASCII digits from `s[*i..]` into `mantissa`, advancing `i`; returns how many.
#[inline(always)]
fn read_digits(s: &[u8], i: &mut usize, mantissa: &mut u64) -> usize {
    let start = *i;
    while let Some(d) = s.get(*i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
        *mantissa = *mantissa * 10 + u64::from(d);
        *i += 1;
    }
    *i - start
}

/// One to four plain digits, the commonest property values, read without a loop (a loop
/// costs a WebAssembly guest an interruption check per byte).
#[inline(always)]
fn short_integer(b: &[u8]) -> Option<i64> {
    let d = |c: u8| Some(i64::from(c.wrapping_sub(b'0'))).filter(|d| *d <= 9);
    match *b {
        [w] => d(w),
        [w, x] => Some(d(w)? * 10 + d(x)?),
        [w, x, y] => Some((d(w)? * 10 + d(x)?) * 10 + d(y)?),
        [w, x, y, z] => Some(((d(w)? * 10 + d(x)?) * 10 + d(y)?) * 10 + d(z)?),
        _ => None,
    }
}

/// The forms [`parse_decimal_bytes`] does not read itself.
#[inline(never)]
fn parse_decimal_text(b: &[u8]) -> Option<Num> {
    core::str::from_utf8(b).ok().and_then(parse_decimal)
}

/// [`parse_bool`] on raw property bytes (no UTF-8 check needed: only ASCII can match).
pub(crate) fn parse_bool_bytes(b: &[u8]) -> Option<bool> {
    if b.eq_ignore_ascii_case(b"true") {
        Some(true)
    } else if b.eq_ignore_ascii_case(b"false") {
        Some(false)
    } else {
        None
    }
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
    fn decimal_property_bytes() {
        for s in [
            "42",
            "-42",
            "+7",
            "007",
            "-0",
            "1.",
            ".5",
            "-.5",
            "23.5",
            "1e3",
            "",
            "-",
            ".",
            "1..2",
            "1.2.",
            "1e",
            "x",
            "é",
            "999999999999999999",
            "9999999999999999999",
            "123456789012345.6",
            "1234567890123456.7",
            "0.1",
            "-9223372036854775808",
        ] {
            assert_eq!(parse_decimal_bytes(s.as_bytes()), parse_decimal(s), "{s:?}");
        }
        assert_eq!(parse_decimal_bytes(b"23.5"), Some(Num::Float(23.5)));
        assert_eq!(parse_decimal_bytes(b"3\xff"), None);
    }

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

    proptest::proptest! {
        /// The byte parser agrees with the text parser on numeric-looking text of every
        /// length and on arbitrary text.
        #[test]
        fn byte_parser_agrees_with_the_text_parser(
            s in "[+-]?[0-9]{0,22}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{0,4})?|[0-9.eE+-]{0,6}|.{0,8}"
        ) {
            let want = parse_decimal(&s);
            let got = parse_decimal_bytes(s.as_bytes());
            // NaN never comes out of either parser, so `==` is the right equality.
            proptest::prop_assert_eq!(got, want, "{:?}", s);
            proptest::prop_assert_eq!(parse_bool_bytes(s.as_bytes()), parse_bool(&s));
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
