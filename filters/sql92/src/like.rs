//! `LIKE` patterns, lowered once at parse time. `CONTAINS`, `STARTSWITH` and `ENDSWITH`
//! lower to the same forms, so all string matching shares one evaluator.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

/// One element of a general pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Literal text (escapes already removed).
    Lit(Box<str>),
    /// `_`: exactly one character (Unicode scalar value).
    One,
    /// `%`: any sequence of characters, including none.
    Many,
}

/// A compiled pattern; the common shapes avoid the general matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    /// Anything not matching the shapes above; consecutive `%` are merged.
    General(Box<[Part]>),
}

impl Pattern {
    /// Compiles a LIKE pattern with an optional escape character.
    ///
    /// The escape character makes the next character literal when that is `%`, `_` or the
    /// escape character itself. Followed by anything else, or ending the pattern, it is an
    /// ordinary character (a wildcard if it is `%` or `_`): what the JMS brokers
    /// (ActiveMQ, RocketMQ) do, so their selectors keep their meaning here.
    pub(crate) fn like(pattern: &str, escape: Option<char>) -> Self {
        let mut parts: Vec<Part> = Vec::new();
        let mut lit = String::new();
        let mut chars = pattern.chars();
        let flush = |lit: &mut String, parts: &mut Vec<Part>| {
            if !lit.is_empty() {
                parts.push(Part::Lit(core::mem::take(lit).into_boxed_str()));
            }
        };
        while let Some(c) = chars.next() {
            let escaped = chars
                .clone()
                .next()
                .filter(|&n| Some(c) == escape && (n == '%' || n == '_' || Some(n) == escape));
            if let Some(n) = escaped {
                chars.next();
                lit.push(n);
            } else if c == '%' {
                flush(&mut lit, &mut parts);
                if parts.last() != Some(&Part::Many) {
                    parts.push(Part::Many);
                }
            } else if c == '_' {
                flush(&mut lit, &mut parts);
                parts.push(Part::One);
            } else {
                lit.push(c);
            }
        }
        flush(&mut lit, &mut parts);
        Self::from_parts(parts)
    }

    fn from_parts(mut parts: Vec<Part>) -> Self {
        use Part::{Lit, Many};
        match parts.as_mut_slice() {
            [] => Pattern::Exact(Box::from("")),
            [Lit(s)] => Pattern::Exact(core::mem::take(s)),
            [Lit(s), Many] => Pattern::Prefix(core::mem::take(s)),
            [Many, Lit(s)] => Pattern::Suffix(core::mem::take(s)),
            [Many, Lit(s), Many] => Pattern::Contains(core::mem::take(s)),
            [Many] => Pattern::Prefix(Box::from("")),
            _ => Pattern::General(parts.into_boxed_slice()),
        }
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Exact(p) => s == &**p,
            Pattern::Prefix(p) => s.starts_with(&**p),
            Pattern::Suffix(p) => s.ends_with(&**p),
            Pattern::Contains(p) => s.contains(&**p),
            Pattern::General(parts) => general(parts, s),
        }
    }
}

/// Byte length of the character starting at `i` (`i < s.len()`, on a boundary).
fn char_len_at(s: &str, i: usize) -> usize {
    s[i..].chars().next().map_or(1, char::len_utf8)
}

/// Wildcard matching with one backtrack point (the last `%` seen): when a later `%` is
/// reached, earlier ones never need to absorb more, so the worst case is
/// O(pattern × subject) steps, with no recursion and no allocation.
fn general(parts: &[Part], s: &str) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    // (index of the part after the last `%`, subject offset that `%` currently ends at)
    let mut star: Option<(usize, usize)> = None;
    loop {
        match parts.get(pi) {
            Some(Part::Many) => {
                star = Some((pi + 1, si));
                pi += 1;
                continue;
            }
            Some(Part::Lit(l)) if s[si..].starts_with(&**l) => {
                si += l.len();
                pi += 1;
                continue;
            }
            Some(Part::One) if si < s.len() => {
                si += char_len_at(s, si);
                pi += 1;
                continue;
            }
            None if si == s.len() => return true,
            _ => {}
        }
        match star {
            Some((after, end)) if end < s.len() => {
                let end = end + char_len_at(s, end);
                star = Some((after, end));
                pi = after;
                si = end;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(p: &str) -> Pattern {
        Pattern::like(p, Some('!'))
    }

    #[test]
    fn common_shapes_avoid_the_general_matcher() {
        assert_eq!(lower("abc"), Pattern::Exact("abc".into()));
        assert_eq!(lower(""), Pattern::Exact("".into()));
        assert_eq!(lower("ab%"), Pattern::Prefix("ab".into()));
        assert_eq!(lower("%%%"), Pattern::Prefix("".into()));
        assert_eq!(lower("%ab"), Pattern::Suffix("ab".into()));
        assert_eq!(lower("%%ab%%"), Pattern::Contains("ab".into()));
        assert_eq!(lower("a!%b%"), Pattern::Prefix("a%b".into()));
        assert!(matches!(lower("a_b"), Pattern::General(_)));
        assert!(matches!(lower("a%b"), Pattern::General(_)));
    }

    #[test]
    fn consecutive_percent_signs_merge() {
        let Pattern::General(parts) = lower("a%%_%%b") else {
            panic!("general pattern expected");
        };
        assert_eq!(
            &*parts,
            &[
                Part::Lit("a".into()),
                Part::Many,
                Part::One,
                Part::Many,
                Part::Lit("b".into())
            ]
        );
    }

    #[test]
    fn general_matching_backtracks() {
        let p = lower("%a_c%");
        assert!(p.matches("xxabcabc"));
        assert!(p.matches("aac"));
        assert!(!p.matches("ac"));
        let p = lower("a%b%c");
        assert!(p.matches("abbbc"));
        assert!(!p.matches("abbb"));
        assert!(lower("_é_").matches("aéb"));
    }
}
