//! Hostile sizes: huge literals and deep nesting give results or errors, never a crash.

use tern_sql92::{MAX_DEPTH, OwnedMessage, ParseErrorKind, Selector, Truth};

fn eval(selector: &str, msg: &OwnedMessage) -> Result<Truth, ParseErrorKind> {
    Selector::parse(selector)
        .map(|s| s.evaluate(msg))
        .map_err(|e| e.kind().clone())
}

fn too_deep(selector: &str) {
    match Selector::parse(selector) {
        Err(e) => assert_eq!(*e.kind(), ParseErrorKind::TooDeep { limit: MAX_DEPTH }),
        Ok(_) => panic!("nesting accepted: {} bytes", selector.len()),
    }
}

#[test]
fn literal_of_200k_characters() {
    let big: String = "é".repeat(200_000);
    let msg = OwnedMessage::new("t").with("s", big.clone());
    assert_eq!(eval(&format!("s = '{big}'"), &msg), Ok(Truth::True));
    assert_eq!(eval(&format!("s LIKE '{big}%'"), &msg), Ok(Truth::True));
    assert_eq!(eval(&format!("s LIKE '%{big}_'"), &msg), Ok(Truth::False));
    // With doubled quotes throughout.
    let quoted = "''".repeat(100_000);
    let msg = OwnedMessage::new("t").with("s", "'".repeat(100_000));
    assert_eq!(eval(&format!("s = '{quoted}'"), &msg), Ok(Truth::True));
    // Unterminated, and as an identifier.
    assert_eq!(
        eval(&format!("s = '{big}"), &msg),
        Err(ParseErrorKind::UnterminatedString)
    );
    let msg = OwnedMessage::new("t").with(big.clone(), "1");
    assert_eq!(eval(&format!("{big} = 1"), &msg), Ok(Truth::True));
    // A 200k-digit number is approximate and out of range.
    let digits = "9".repeat(200_000);
    assert!(matches!(
        eval(&format!("x = {digits}"), &msg),
        Err(ParseErrorKind::InvalidNumber(_))
    ));
}

#[test]
fn like_worst_case_stays_fast() {
    // Classic exponential case for backtracking matchers: `%a%a%a…b` on `aaaa…`.
    let pattern = "%a".repeat(50) + "b";
    let subject = "a".repeat(5_000);
    let msg = OwnedMessage::new("t").with("s", subject);
    let start = std::time::Instant::now();
    assert_eq!(eval(&format!("s LIKE '{pattern}'"), &msg), Ok(Truth::False));
    assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
}

#[test]
fn deep_parentheses() {
    // The top level counts as the first level.
    let ok = format!(
        "{}TRUE{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert_eq!(eval(&ok, &OwnedMessage::default()), Ok(Truth::True));
    too_deep(&format!(
        "{}TRUE{}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    ));
    too_deep(&"(".repeat(1_000_000));
}

#[test]
fn deep_prefix_operators() {
    let ok = format!("{}TRUE", "NOT ".repeat(MAX_DEPTH - 1));
    let want = if (MAX_DEPTH - 1).is_multiple_of(2) {
        Truth::True
    } else {
        Truth::False
    };
    assert_eq!(eval(&ok, &OwnedMessage::default()), Ok(want));
    too_deep(&format!("{}TRUE", "NOT ".repeat(100_000)));
    too_deep(&format!("{}1 = 1", "- ".repeat(100_000)));
    too_deep(&format!("{}x = 1", "+ ".repeat(100_000)));
}

#[test]
fn long_operator_chains() {
    // Arithmetic chains build a left-deep tree: bounded by the same limit.
    let ok = format!("1{} = {}", " + 1".repeat(MAX_DEPTH - 2), MAX_DEPTH - 1);
    assert_eq!(eval(&ok, &OwnedMessage::default()), Ok(Truth::True));
    too_deep(&format!("1{} = 0", " + 1".repeat(100_000)));
    too_deep(&format!("x{} = 0", " * x".repeat(100_000)));
    // AND/OR chains are flat: any length works.
    let msg = OwnedMessage::new("t").with("a", "7");
    let many_or = (0..20_000)
        .map(|i| format!("a = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    assert_eq!(eval(&many_or, &msg), Ok(Truth::True));
    let many_and = vec!["a > 0"; 20_000].join(" AND ");
    assert_eq!(eval(&many_and, &msg), Ok(Truth::True));
    // A long IN list.
    let list = (0..20_000)
        .map(|i| format!("'v{i}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let msg = OwnedMessage::new("t").with("s", "v19999");
    assert_eq!(eval(&format!("s IN ({list})"), &msg), Ok(Truth::True));
}

#[test]
fn mixed_nesting_at_the_limit() {
    // Alternating parentheses and NOT, where both counters grow.
    let sel = format!("{}a = 1{}", "NOT (".repeat(200), ")".repeat(200));
    too_deep(&sel);
    let sel = format!("{}a = 1{}", "NOT (".repeat(30), ")".repeat(30));
    let msg = OwnedMessage::new("t").with("a", "1");
    assert_eq!(eval(&sel, &msg), Ok(Truth::True));
}

/// The deepest selector of each shape that still parses, for the stack test below.
fn deepest(shape: impl Fn(usize) -> String) -> String {
    (1..=MAX_DEPTH)
        .rev()
        .map(&shape)
        .find(|s| Selector::parse(s).is_ok())
        .expect("some depth parses")
}

#[test]
fn maximum_depth_fits_in_one_mebibyte_of_stack() {
    // A wasm32 guest gets 1 MiB of stack by default. Even an unoptimised build must parse and
    // evaluate the deepest selectors of every shape within that.
    let shapes: Vec<String> = vec![
        deepest(|n| format!("{}TRUE{}", "(".repeat(n), ")".repeat(n))),
        deepest(|n| format!("{}TRUE", "NOT ".repeat(n))),
        deepest(|n| format!("{}a{} = 1", "- (".repeat(n), ")".repeat(n))),
        deepest(|n| format!("{}1{} > 0", "1 + (".repeat(n), ")".repeat(n))),
        deepest(|n| format!("{}TRUE{}", "a = (".repeat(n), ")".repeat(n))),
        deepest(|n| format!("{}TRUE{}", "a BETWEEN 0 AND (".repeat(n), ")".repeat(n))),
        deepest(|n| format!("{}TRUE{}", "NOT (a IN (1) OR (".repeat(n), "))".repeat(n))),
        deepest(|n| format!("a = 1{}", " + a".repeat(n))),
    ];
    let handle = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            let msg = OwnedMessage::new("t").with("a", "1");
            for s in &shapes {
                let sel = Selector::parse(s).expect("parses");
                let _ = sel.evaluate(&msg);
                // Dropping the tree recurses too.
                drop(sel);
            }
        })
        .expect("spawn");
    handle.join().expect("deep selectors fit in 1 MiB of stack");
}
