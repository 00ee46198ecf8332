//! Property tests: the evaluator against a naive model, algebraic identities between
//! operators, and "parsing never panics".

use proptest::prelude::*;
use tern_sql92::{OwnedMessage, Selector, Truth};

// ---------------------------------------------------------------------------------------
// A naive model of arithmetic and boolean expressions. Exact arithmetic is done in i128
// instead of the library's checked i64 operations; a result outside i64 is, as documented,
// approximate: the operation done again in f64 on the operands.

#[derive(Debug, Clone, Copy, PartialEq)]
enum N {
    Int(i64),
    Float(f64),
}

impl N {
    fn f(self) -> f64 {
        match self {
            N::Int(i) => i as f64,
            N::Float(f) => f,
        }
    }
}

#[derive(Debug, Clone)]
enum NumE {
    Lit(i64),
    Prop(usize),
    Bin(char, Box<NumE>, Box<NumE>),
    Neg(Box<NumE>),
}

#[derive(Debug, Clone)]
enum BoolE {
    Const(bool),
    Cmp(&'static str, NumE, NumE),
    Between(bool, NumE, NumE, NumE),
    In(bool, NumE, Vec<i64>),
    IsNull(bool, NumE),
    Not(Box<BoolE>),
    And(Box<BoolE>, Box<BoolE>),
    Or(Box<BoolE>, Box<BoolE>),
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn lit() -> impl Strategy<Value = i64> {
    prop_oneof![
        -10i64..10,
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN + 1),
        (0i64..3).prop_map(|d| i64::MAX - d),
    ]
}

fn num_expr() -> impl Strategy<Value = NumE> {
    let leaf = prop_oneof![lit().prop_map(NumE::Lit), (0usize..3).prop_map(NumE::Prop)];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec!['+', '-', '*', '/', '%']),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, a, b)| NumE::Bin(op, Box::new(a), Box::new(b))),
            inner.prop_map(|a| NumE::Neg(Box::new(a))),
        ]
    })
}

fn bool_expr() -> impl Strategy<Value = BoolE> {
    let cmp = prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]);
    let leaf = prop_oneof![
        any::<bool>().prop_map(BoolE::Const),
        (cmp, num_expr(), num_expr()).prop_map(|(op, a, b)| BoolE::Cmp(op, a, b)),
        (any::<bool>(), num_expr(), num_expr(), num_expr())
            .prop_map(|(n, x, lo, hi)| BoolE::Between(n, x, lo, hi)),
        (
            any::<bool>(),
            num_expr(),
            prop::collection::vec(-5i64..5, 1..4)
        )
            .prop_map(|(n, x, list)| BoolE::In(n, x, list)),
        (any::<bool>(), num_expr()).prop_map(|(n, x)| BoolE::IsNull(n, x)),
    ];
    leaf.prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| BoolE::Not(Box::new(a))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| BoolE::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| BoolE::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn narrow(v: i128) -> N {
    match i64::try_from(v) {
        Ok(i) => N::Int(i),
        Err(_) => N::Float(v as f64),
    }
}

fn eval_num(e: &NumE, props: &[Option<i64>; 3]) -> Option<N> {
    match e {
        NumE::Lit(i) => Some(N::Int(*i)),
        NumE::Prop(i) => props[*i].map(N::Int),
        NumE::Neg(a) => match eval_num(a, props)? {
            N::Int(i) => Some(narrow(-i128::from(i))),
            N::Float(f) => Some(N::Float(-f)),
        },
        NumE::Bin(op, a, b) => {
            let (a, b) = (eval_num(a, props)?, eval_num(b, props)?);
            if let (N::Int(x), N::Int(y)) = (a, b) {
                let (wx, wy) = (i128::from(x), i128::from(y));
                let exact = match op {
                    '+' => wx + wy,
                    '-' => wx - wy,
                    '*' => wx * wy,
                    _ if wy == 0 => return None,
                    '/' => wx / wy,
                    _ => wx % wy,
                };
                if let Ok(i) = i64::try_from(exact) {
                    return Some(N::Int(i));
                }
                // Overflow: approximate arithmetic below, on the operands.
            }
            let (x, y) = (a.f(), b.f());
            match op {
                '+' => Some(N::Float(x + y)),
                '-' => Some(N::Float(x - y)),
                '*' => Some(N::Float(x * y)),
                _ if y == 0.0 => None,
                '/' => Some(N::Float(x / y)),
                _ => Some(N::Float(x % y)),
            }
        }
    }
}

/// `Some(ordering)` or `None` when unordered (NaN).
fn order(a: N, b: N) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (N::Int(x), N::Int(y)) => Some(x.cmp(&y)),
        _ => a.f().partial_cmp(&b.f()),
    }
}

fn cmp(op: &str, a: Option<N>, b: Option<N>) -> Option<bool> {
    use std::cmp::Ordering::*;
    let o = order(a?, b?);
    Some(match op {
        "=" => o == Some(Equal),
        "<>" => o != Some(Equal),
        "<" => o == Some(Less),
        "<=" => matches!(o, Some(Less | Equal)),
        ">" => o == Some(Greater),
        _ => matches!(o, Some(Greater | Equal)),
    })
}

fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    and(a.map(|x| !x), b.map(|x| !x)).map(|x| !x)
}

fn eval_bool(e: &BoolE, p: &[Option<i64>; 3]) -> Option<bool> {
    let neg = |n: bool, v: Option<bool>| if n { v.map(|x| !x) } else { v };
    match e {
        BoolE::Const(b) => Some(*b),
        BoolE::Cmp(op, a, b) => cmp(op, eval_num(a, p), eval_num(b, p)),
        BoolE::Between(n, x, lo, hi) => {
            let x = eval_num(x, p);
            neg(
                *n,
                and(cmp(">=", x, eval_num(lo, p)), cmp("<=", x, eval_num(hi, p))),
            )
        }
        BoolE::In(n, x, list) => {
            let x = eval_num(x, p);
            // Not a short-circuiting fold: an UNKNOWN item can still be followed by a match.
            let mut found = Some(false);
            for &i in list {
                found = or(found, cmp("=", x, Some(N::Int(i))));
            }
            neg(*n, found)
        }
        BoolE::IsNull(n, x) => Some(eval_num(x, p).is_none() != *n),
        BoolE::Not(a) => eval_bool(a, p).map(|x| !x),
        BoolE::And(a, b) => and(eval_bool(a, p), eval_bool(b, p)),
        BoolE::Or(a, b) => or(eval_bool(a, p), eval_bool(b, p)),
    }
}

// Rendering: fully parenthesised, and with only the parentheses precedence requires.

fn render_num(e: &NumE, min_parens: bool) -> String {
    fn prec(e: &NumE) -> u8 {
        match e {
            NumE::Bin('+' | '-', ..) => 6,
            NumE::Bin(..) => 7,
            NumE::Lit(_) | NumE::Prop(_) | NumE::Neg(_) => 8,
        }
    }
    let wrap = |s: String, need: bool| {
        if need || !min_parens {
            format!("({s})")
        } else {
            s
        }
    };
    match e {
        // Negative literals are written as a sign and a number; the parser folds them.
        NumE::Lit(i) => wrap(i.to_string(), *i < 0),
        NumE::Prop(i) => NAMES[*i].to_string(),
        // A space keeps `- -x` from becoming a `--` comment.
        NumE::Neg(a) => format!("- {}", wrap(render_num(a, min_parens), prec(a) < 8)),
        NumE::Bin(op, a, b) => {
            let p = prec(e);
            // Left-associative: the right operand needs parentheses at equal precedence.
            let l = wrap(render_num(a, min_parens), prec(a) < p);
            let r = wrap(render_num(b, min_parens), prec(b) <= p);
            format!("{l} {op} {r}")
        }
    }
}

fn render_bool(e: &BoolE, min_parens: bool) -> String {
    fn prec(e: &BoolE) -> u8 {
        match e {
            BoolE::Or(..) => 1,
            BoolE::And(..) => 2,
            BoolE::Not(_) => 3,
            _ => 4,
        }
    }
    let wrap = |s: String, need: bool| {
        if need || !min_parens {
            format!("({s})")
        } else {
            s
        }
    };
    let n = |e: &NumE| render_num(e, min_parens);
    let kw = |negated: bool| if negated { "NOT " } else { "" };
    match e {
        BoolE::Const(b) => if *b { "TRUE" } else { "false" }.to_string(),
        BoolE::Cmp(op, a, b) => format!("{} {op} {}", n(a), n(b)),
        BoolE::Between(neg, x, lo, hi) => {
            format!("{} {}BETWEEN {} AND {}", n(x), kw(*neg), n(lo), n(hi))
        }
        BoolE::In(neg, x, list) => {
            let items: Vec<String> = list.iter().map(i64::to_string).collect();
            format!("{} {}in ({})", n(x), kw(*neg), items.join(", "))
        }
        BoolE::IsNull(neg, x) => format!("{} IS {}NULL", n(x), kw(*neg)),
        BoolE::Not(a) => format!("NOT {}", wrap(render_bool(a, min_parens), prec(a) < 3)),
        BoolE::And(a, b) => format!(
            "{} AND {}",
            wrap(render_bool(a, min_parens), prec(a) < 2),
            wrap(render_bool(b, min_parens), prec(b) <= 2)
        ),
        BoolE::Or(a, b) => format!(
            "{} or {}",
            wrap(render_bool(a, min_parens), prec(a) < 1),
            wrap(render_bool(b, min_parens), prec(b) <= 1)
        ),
    }
}

fn message(props: &[Option<i64>; 3]) -> OwnedMessage {
    let mut m = OwnedMessage::new("t");
    for (name, v) in NAMES.iter().zip(props) {
        if let Some(v) = v {
            m = m.with(*name, v.to_string());
        }
    }
    m
}

fn truth(b: Option<bool>) -> Truth {
    match b {
        Some(true) => Truth::True,
        Some(false) => Truth::False,
        None => Truth::Unknown,
    }
}

fn props() -> impl Strategy<Value = [Option<i64>; 3]> {
    [
        prop::option::weighted(0.8, lit()),
        prop::option::weighted(0.8, lit()),
        prop::option::weighted(0.8, lit()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The evaluator agrees with the naive i128 model on every generated expression, whether
    /// written with full or with minimal parentheses (which also exercises precedence and
    /// associativity), and NOT of it is the three-valued negation.
    #[test]
    fn evaluator_matches_model(e in bool_expr(), p in props()) {
        let want = truth(eval_bool(&e, &p));
        let msg = message(&p);
        for min_parens in [false, true] {
            let text = render_bool(&e, min_parens);
            let sel = Selector::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
            prop_assert_eq!(sel.evaluate(&msg), want, "{}", text);
            let not = Selector::parse(&format!("NOT ({text})")).unwrap();
            prop_assert_eq!(not.evaluate(&msg), want.not(), "NOT ({})", text);
        }
    }

    /// `x IN (l1, …)` is `x = l1 OR …`; `x BETWEEN lo AND hi` is `x >= lo AND x <= hi`; the
    /// NOT forms are the negations, over strings, numbers and missing values alike.
    #[test]
    fn operator_identities(
        x in prop::option::of(value()),
        list in prop::collection::vec(literal(), 1..5),
        lo in literal(),
        hi in literal(),
    ) {
        let msg = match &x {
            Some(v) => OwnedMessage::new("t").with("x", v.clone()),
            None => OwnedMessage::new("t"),
        };
        let eval = |s: &str| Selector::parse(s).unwrap().evaluate(&msg);
        let joined = list.join(", ");
        let ors: Vec<String> = list.iter().map(|l| format!("x = {l}")).collect();
        prop_assert_eq!(eval(&format!("x IN ({joined})")), eval(&ors.join(" OR ")));
        prop_assert_eq!(eval(&format!("x NOT IN ({joined})")), eval(&format!("NOT ({})", ors.join(" OR "))));
        let between = eval(&format!("x BETWEEN {lo} AND {hi}"));
        prop_assert_eq!(between, eval(&format!("x >= {lo} AND x <= {hi}")));
        prop_assert_eq!(eval(&format!("x NOT BETWEEN {lo} AND {hi}")), between.not());
        for l in &list {
            prop_assert_eq!(eval(&format!("x <> {l}")), eval(&format!("NOT x = {l}")));
            prop_assert_eq!(eval(&format!("x = {l}")), eval(&format!("{l} = x")));
            prop_assert_eq!(eval(&format!("x < {l}")), eval(&format!("{l} > x")));
        }
    }

    /// LIKE agrees with a naive recursive matcher, with and without an escape character
    /// (an ordinary one, or `%` or `_` themselves).
    #[test]
    fn like_matches_reference(
        pattern in "[ab%_!é]{0,8}",
        subject in "[ab%_!é]{0,10}",
        esc in prop::option::of(prop::sample::select(vec!['!', '%', '_'])),
    ) {
        let text = match esc {
            Some(e) => format!("s LIKE '{pattern}' ESCAPE '{e}'"),
            None => format!("s LIKE '{pattern}'"),
        };
        let msg = OwnedMessage::new("t").with("s", subject.clone());
        let want = reference_like(&pattern.chars().collect::<Vec<_>>(), &subject.chars().collect::<Vec<_>>(), esc);
        match (Selector::parse(&text), want) {
            (Ok(sel), Some(m)) => prop_assert_eq!(sel.evaluate(&msg), truth(Some(m)), "{}", text),
            (Err(_), None) => {}
            (got, want) => prop_assert!(false, "{text}: parsed {:?}, reference {want:?}", got.map(|_| ())),
        }
    }

    /// Arbitrary text never panics the parser or the evaluator.
    #[test]
    fn parse_never_panics(s in any::<String>()) {
        if let Ok(sel) = Selector::parse(&s) {
            let _ = sel.evaluate(&OwnedMessage::new("t").with("a", "1"));
        }
    }

    /// Token soup is far likelier than random text to reach deep parser states.
    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(token(), 0..40), p in props()) {
        let s = tokens.join(" ");
        if let Ok(sel) = Selector::parse(&s) {
            let _ = sel.evaluate(&message(&p));
        }
    }
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-3i64..4).prop_map(|i| i.to_string()),
        Just("2.0".to_string()),
        Just("abc".to_string()),
        Just("b".to_string()),
        Just("".to_string()),
        Just("true".to_string()),
    ]
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        (-3i64..4).prop_map(|i| i.to_string()),
        Just("2.0".to_string()),
        Just("'abc'".to_string()),
        Just("'b'".to_string()),
        Just("'2'".to_string()),
        Just("''".to_string()),
        Just("TRUE".to_string()),
        Just("NULL".to_string()),
    ]
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "(",
            ")",
            ",",
            "=",
            "<>",
            "<",
            "<=",
            ">",
            ">=",
            "+",
            "-",
            "*",
            "/",
            "%",
            "AND",
            "OR",
            "NOT",
            "BETWEEN",
            "IN",
            "LIKE",
            "ESCAPE",
            "IS",
            "NULL",
            "TRUE",
            "FALSE",
            "CONTAINS",
            "STARTSWITH",
            "ENDSWITH",
            "a",
            "b",
            "$topic",
            "$qos",
            "$retain",
            "'x'",
            "'%_'",
            "'!'",
            "0",
            "1",
            "1.5",
            "0x1F",
            "1E3",
            "9223372036854775807",
            "--",
            "/*",
            "*/",
            "'",
            "\"",
        ])
        .prop_map(str::to_string),
        "[ -~]{1,3}",
    ]
}

/// Naive LIKE: recursion over characters. `None` for a malformed pattern.
fn reference_like(p: &[char], s: &[char], esc: Option<char>) -> Option<bool> {
    // The escape character escapes only `%`, `_` or itself; elsewhere it is ordinary.
    fn escapes(p: &[char], esc: Option<char>) -> bool {
        matches!(p, [c, n, ..] if Some(*c) == esc && (*n == '%' || *n == '_' || Some(*n) == esc))
    }
    fn go(p: &[char], s: &[char], esc: Option<char>) -> bool {
        if escapes(p, esc) {
            return s.first() == Some(&p[1]) && go(&p[2..], &s[1..], esc);
        }
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|k| go(&p[1..], &s[k..], esc)),
            Some('_') => !s.is_empty() && go(&p[1..], &s[1..], esc),
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..], esc),
        }
    }
    Some(go(p, s, esc))
}
