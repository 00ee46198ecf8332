//! Tokens, produced on demand. Works on bytes for ASCII syntax and on chars for identifiers,
//! so a selector of any length is lexed in one pass without recursion.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;

use crate::error::{ParseError, ParseErrorKind};

/// Reserved words (matched ignoring ASCII case; never property names unless double-quoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kw {
    And,
    Or,
    Not,
    Between,
    In,
    Like,
    Escape,
    Is,
    Null,
    True,
    False,
    Contains,
    StartsWith,
    EndsWith,
}

impl Kw {
    const ALL: [(&'static str, Kw); 14] = [
        ("AND", Kw::And),
        ("OR", Kw::Or),
        ("NOT", Kw::Not),
        ("BETWEEN", Kw::Between),
        ("IN", Kw::In),
        ("LIKE", Kw::Like),
        ("ESCAPE", Kw::Escape),
        ("IS", Kw::Is),
        ("NULL", Kw::Null),
        ("TRUE", Kw::True),
        ("FALSE", Kw::False),
        ("CONTAINS", Kw::Contains),
        ("STARTSWITH", Kw::StartsWith),
        ("ENDSWITH", Kw::EndsWith),
    ];

    fn lookup(word: &str) -> Option<Kw> {
        Self::ALL
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|&(_, kw)| kw)
    }

    pub(crate) fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|&&(_, kw)| kw == self)
            .map_or("?", |&(name, _)| name)
    }
}

/// The shape of a numeric literal, validated by the lexer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumKind {
    /// Decimal digits only.
    Int,
    /// `0x` followed by hex digits (the text excludes the prefix).
    Hex,
    /// Has a `.` or an exponent.
    Float,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'s> {
    /// Bare identifier (may start with `$`: a header).
    Ident(&'s str),
    /// Double-quoted identifier: always a user property, never a keyword or header.
    Quoted(Cow<'s, str>),
    Kw(Kw),
    Str(Cow<'s, str>),
    Num(NumKind, &'s str),
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eof,
}

/// Longest identifier or literal quoted back in an error message.
const SHOWN: usize = 32;

fn shorten(s: &str) -> String {
    match s.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => String::from(s),
    }
}

impl Tok<'_> {
    /// A short description for "found ..." in error messages.
    pub(crate) fn describe(&self) -> String {
        let sym = |s: &str| format!("`{s}`");
        match self {
            Tok::Ident(s) => format!("identifier `{}`", shorten(s)),
            Tok::Quoted(s) => format!("identifier \"{}\"", shorten(s)),
            Tok::Kw(k) => format!("keyword {}", k.name()),
            Tok::Str(s) => format!("string '{}'", shorten(s)),
            Tok::Num(_, s) => format!("number {}", shorten(s)),
            Tok::LParen => sym("("),
            Tok::RParen => sym(")"),
            Tok::Comma => sym(","),
            Tok::Eq => sym("="),
            Tok::Ne => sym("<>"),
            Tok::Lt => sym("<"),
            Tok::Le => sym("<="),
            Tok::Gt => sym(">"),
            Tok::Ge => sym(">="),
            Tok::Plus => sym("+"),
            Tok::Minus => sym("-"),
            Tok::Star => sym("*"),
            Tok::Slash => sym("/"),
            Tok::Percent => sym("%"),
            Tok::Eof => String::from("end of input"),
        }
    }
}

pub(crate) struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c == '$' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c == '$' || c.is_alphanumeric()
}

impl<'s> Lexer<'s> {
    pub(crate) fn new(src: &'s str) -> Self {
        Self { src, pos: 0 }
    }

    fn err(&self, at: usize, kind: ParseErrorKind) -> ParseError {
        ParseError::at(self.src, at, kind)
    }

    fn peek_byte(&self, ahead: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + ahead).copied()
    }

    /// Skips white space and comments (`-- …` to end of line, `/* … */` not nested).
    fn skip_trivia(&mut self) -> Result<(), ParseError> {
        loop {
            let rest = &self.src[self.pos..];
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("--") {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else if let Some(body) = trimmed.strip_prefix("/*") {
                match body.find("*/") {
                    Some(end) => self.pos += 2 + end + 2,
                    None => return Err(self.err(self.pos, ParseErrorKind::UnterminatedComment)),
                }
            } else {
                return Ok(());
            }
        }
    }

    /// Returns the next token and the byte offset where it starts.
    pub(crate) fn next_token(&mut self) -> Result<(Tok<'s>, usize), ParseError> {
        self.skip_trivia()?;
        let start = self.pos;
        let Some(c) = self.src[start..].chars().next() else {
            return Ok((Tok::Eof, start));
        };
        let one = |lexer: &mut Self, tok: Tok<'s>| {
            lexer.pos += 1;
            Ok((tok, start))
        };
        let two = |lexer: &mut Self, tok: Tok<'s>| {
            lexer.pos += 2;
            Ok((tok, start))
        };
        match c {
            '(' => one(self, Tok::LParen),
            ')' => one(self, Tok::RParen),
            ',' => one(self, Tok::Comma),
            '=' => one(self, Tok::Eq),
            '+' => one(self, Tok::Plus),
            '-' => one(self, Tok::Minus),
            '*' => one(self, Tok::Star),
            '/' => one(self, Tok::Slash),
            '%' => one(self, Tok::Percent),
            '<' => match self.peek_byte(1) {
                Some(b'=') => two(self, Tok::Le),
                Some(b'>') => two(self, Tok::Ne),
                _ => one(self, Tok::Lt),
            },
            '>' => match self.peek_byte(1) {
                Some(b'=') => two(self, Tok::Ge),
                _ => one(self, Tok::Gt),
            },
            '\'' => self.quoted('\'').map(|s| (Tok::Str(s), start)),
            '"' => self.quoted('"').map(|s| (Tok::Quoted(s), start)),
            '0'..='9' | '.' => self.number().map(|t| (t, start)),
            c if is_ident_start(c) => {
                let len = self.src[start..]
                    .char_indices()
                    .find(|&(_, c)| !is_ident_continue(c))
                    .map_or(self.src.len() - start, |(i, _)| i);
                self.pos = start + len;
                let word = &self.src[start..self.pos];
                let tok = match Kw::lookup(word) {
                    Some(kw) => Tok::Kw(kw),
                    None => Tok::Ident(word),
                };
                Ok((tok, start))
            }
            c => {
                let hint = match c {
                    '!' => "; not-equal is written <>",
                    '"' | '`' => "; string literals use single quotes",
                    '&' | '|' => "; use AND / OR",
                    _ => "",
                };
                Err(self.err(start, ParseErrorKind::UnexpectedChar { found: c, hint }))
            }
        }
    }

    /// A `'…'` string or `"…"` identifier; the quote is doubled to include it.
    fn quoted(&mut self, quote: char) -> Result<Cow<'s, str>, ParseError> {
        let start = self.pos;
        let body = start + 1;
        let mut owned: Option<String> = None;
        let mut seg = body;
        let mut i = body;
        loop {
            let Some(off) = self.src[i..].find(quote) else {
                let kind = if quote == '\'' {
                    ParseErrorKind::UnterminatedString
                } else {
                    ParseErrorKind::UnterminatedIdentifier
                };
                return Err(self.err(start, kind));
            };
            let q = i + off;
            if self.src[q + 1..].starts_with(quote) {
                // A doubled quote: keep one, continue after both.
                let buf = owned.get_or_insert_with(String::new);
                buf.push_str(&self.src[seg..=q]);
                i = q + 2;
                seg = i;
            } else {
                self.pos = q + 1;
                return Ok(match owned {
                    Some(mut buf) => {
                        buf.push_str(&self.src[seg..q]);
                        Cow::Owned(buf)
                    }
                    None => Cow::Borrowed(&self.src[body..q]),
                });
            }
        }
    }

    /// `123`, `0x1F`, `1.`, `.5`, `1.5e-3`, `1E3`, and Java's type suffixes (JMS literals use
    /// Java's syntax): `123L` is exact, `1.5f`, `1.5D` and `2d` approximate. A letter or digit
    /// glued to the end is an error rather than the start of the next token (`1abc`, `0x`,
    /// `1e`).
    fn number(&mut self) -> Result<Tok<'s>, ParseError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let digits = |mut i: usize| {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            i
        };
        let invalid =
            |lexer: &Self, what| Err(lexer.err(start, ParseErrorKind::InvalidNumber(what)));
        if bytes[start] == b'0' && matches!(bytes.get(start + 1), Some(b'x' | b'X')) {
            let mut i = start + 2;
            while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                i += 1;
            }
            if i == start + 2 {
                return invalid(self, "0x must be followed by hexadecimal digits");
            }
            self.pos = i + usize::from(matches!(bytes.get(i), Some(b'l' | b'L')));
            self.reject_glued(start)?;
            return Ok(Tok::Num(NumKind::Hex, &self.src[start + 2..i]));
        }
        let int_end = digits(start);
        let mut i = int_end;
        let mut kind = NumKind::Int;
        if bytes.get(i) == Some(&b'.') {
            let frac_end = digits(i + 1);
            if int_end == start && frac_end == i + 1 {
                return invalid(self, "a lone `.` is not a number");
            }
            i = frac_end;
            kind = NumKind::Float;
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(bytes.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            let exp_end = digits(j);
            if exp_end == j {
                return invalid(self, "the exponent needs digits (e.g. 1E3, 2.5e-1)");
            }
            i = exp_end;
            kind = NumKind::Float;
        }
        let suffix = match (bytes.get(i), kind) {
            (Some(b'l' | b'L'), NumKind::Int) => 1,
            (Some(b'f' | b'F' | b'd' | b'D'), _) => {
                kind = NumKind::Float;
                1
            }
            _ => 0,
        };
        self.pos = i + suffix;
        self.reject_glued(start)?;
        Ok(Tok::Num(kind, &self.src[start..i]))
    }

    fn reject_glued(&self, start: usize) -> Result<(), ParseError> {
        match self.src[self.pos..].chars().next() {
            Some(c) if is_ident_continue(c) || c == '.' => Err(self.err(
                start,
                ParseErrorKind::InvalidNumber("a number must not run into letters, digits or `.`"),
            )),
            _ => Ok(()),
        }
    }
}
