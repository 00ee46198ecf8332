//! Parser from tokens to the compiled [`Expr`] tree: precedence climbing for the binary
//! operators, recursive descent for everything else.
//!
//! Precedence, loosest first: `OR`, `AND`, `NOT`, equality (`=`, `<>`, `IS [NOT] NULL`),
//! comparison (`<`, `<=`, `>`, `>=`, `[NOT] BETWEEN`, `[NOT] IN`, `[NOT] LIKE`,
//! `[NOT] CONTAINS`, `[NOT] STARTSWITH`, `[NOT] ENDSWITH`), `+ -`, `* / %`, unary `+ -`,
//! primary. Equality and comparison do not chain (`a < b < c` is an error; `a < b = TRUE` is
//! `(a < b) = TRUE`).
//!
//! Every nested operand goes through one function, [`Parser::expr`], which counts its own
//! recursion: [`MAX_DEPTH`] bounds the parser's stack use directly, and the same limit bounds
//! the height of the tree the evaluator walks. Hostile input gets an error, never a stack
//! overflow.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::MAX_DEPTH;
use crate::ast::{ArithOp, CmpOp, Expr, Header, InSet, Lit, Ty};
use crate::error::{ParseError, ParseErrorKind};
use crate::lexer::{Kw, Lexer, NumKind, Tok};
use crate::like::Pattern;
use crate::value::Num;

/// Binding strength of each operator group, loosest first.
const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const EQUALITY: u8 = 4;
const COMPARISON: u8 = 5;
const ADDITIVE: u8 = 6;
const MULTIPLICATIVE: u8 = 7;
const PREFIX: u8 = 8;

/// A parsed sub-expression with what the parser knows about it.
struct Node {
    expr: Expr,
    ty: Ty,
    /// Height of the tree under `expr` (a leaf is 1).
    height: usize,
    /// Byte offset where the expression starts, for error columns.
    at: usize,
}

impl Node {
    fn leaf(expr: Expr, ty: Ty, at: usize) -> Self {
        Self {
            expr,
            ty,
            height: 1,
            at,
        }
    }
}

pub(crate) struct Parser<'s> {
    src: &'s str,
    lexer: Lexer<'s>,
    /// The current (not yet consumed) token and its byte offset.
    tok: Tok<'s>,
    at: usize,
    /// Active calls of [`Parser::expr`].
    nesting: usize,
}

/// Parses a whole selector; it must be a condition and use every token.
pub(crate) fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut lexer = Lexer::new(src);
    let (tok, at) = lexer.next_token()?;
    let mut p = Parser {
        src,
        lexer,
        tok,
        at,
        nesting: 0,
    };
    if p.tok == Tok::Eof {
        return Err(p.unexpected("a condition"));
    }
    let node = p.expr(0)?;
    if p.tok != Tok::Eof {
        return Err(p.unexpected("AND, OR or end of input"));
    }
    p.condition(&node)?;
    Ok(node.expr)
}

impl<'s> Parser<'s> {
    fn bump(&mut self) -> Result<Tok<'s>, ParseError> {
        let (next, at) = self.lexer.next_token()?;
        self.at = at;
        Ok(core::mem::replace(&mut self.tok, next))
    }

    fn err(&self, at: usize, kind: ParseErrorKind) -> ParseError {
        ParseError::at(self.src, at, kind)
    }

    fn unexpected(&self, expected: &'static str) -> ParseError {
        self.err(
            self.at,
            ParseErrorKind::Unexpected {
                expected,
                found: self.tok.describe(),
            },
        )
    }

    fn expect(&mut self, tok: &Tok<'_>, expected: &'static str) -> Result<(), ParseError> {
        if &self.tok == tok {
            self.bump()?;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// Builds an inner node over `children`, enforcing the height limit.
    fn node(&self, expr: Expr, ty: Ty, at: usize, children: &[usize]) -> Result<Node, ParseError> {
        let height = 1 + children.iter().copied().max().unwrap_or(0);
        if height > MAX_DEPTH {
            return Err(self.err(at, ParseErrorKind::TooDeep { limit: MAX_DEPTH }));
        }
        Ok(Node {
            expr,
            ty,
            height,
            at,
        })
    }

    fn check(&self, node: &Node, allowed: Ty, expected: &'static str) -> Result<(), ParseError> {
        if node.ty == allowed || node.ty == Ty::Any {
            Ok(())
        } else {
            Err(self.err(
                node.at,
                ParseErrorKind::Type {
                    expected,
                    found: node.ty.noun(),
                },
            ))
        }
    }

    fn condition(&self, node: &Node) -> Result<(), ParseError> {
        self.check(
            node,
            Ty::Bool,
            "a condition (a comparison, TRUE, FALSE or a property)",
        )
    }

    fn number(&self, node: &Node) -> Result<(), ParseError> {
        self.check(node, Ty::Num, "a number or a property")
    }

    /// An expression whose operators all bind at least as tightly as `min`. The only
    /// recursive entry point: every nested operand comes through here, so the depth check
    /// bounds the whole parser's stack.
    fn expr(&mut self, min: u8) -> Result<Node, ParseError> {
        if self.nesting >= MAX_DEPTH {
            return Err(self.err(self.at, ParseErrorKind::TooDeep { limit: MAX_DEPTH }));
        }
        self.nesting += 1;
        let result = self.climb(min);
        self.nesting -= 1;
        result
    }

    fn climb(&mut self, min: u8) -> Result<Node, ParseError> {
        let mut lhs = self.prefix(min)?;
        // Equality and comparison do not chain: after an operator of one of these groups, no
        // operator of the same group or of a tighter one of the two may follow. `a < b = TRUE`
        // is `(a < b) = TRUE`; `a = b < c` was already read as `a = (b < c)` by the operand.
        let mut last: Option<u8> = None;
        loop {
            let level = match self.tok {
                Tok::Kw(Kw::Or) => OR,
                Tok::Kw(Kw::And) => AND,
                Tok::Eq | Tok::Ne | Tok::Kw(Kw::Is) => EQUALITY,
                Tok::Lt
                | Tok::Le
                | Tok::Gt
                | Tok::Ge
                | Tok::Kw(
                    Kw::Not
                    | Kw::Between
                    | Kw::In
                    | Kw::Like
                    | Kw::Contains
                    | Kw::StartsWith
                    | Kw::EndsWith,
                ) => COMPARISON,
                Tok::Plus | Tok::Minus => ADDITIVE,
                Tok::Star | Tok::Slash | Tok::Percent => MULTIPLICATIVE,
                _ => return Ok(lhs),
            };
            let chained =
                (EQUALITY..=COMPARISON).contains(&level) && last.is_some_and(|l| level >= l);
            if level < min || chained {
                return Ok(lhs);
            }
            lhs = match level {
                OR | AND => self.chain(level, lhs)?,
                EQUALITY => self.equality(lhs)?,
                COMPARISON => self.comparison(lhs)?,
                _ => self.arith(level, lhs)?,
            };
            last = (EQUALITY..=COMPARISON).contains(&level).then_some(level);
        }
    }

    /// `NOT`, unary signs, parentheses and primaries.
    fn prefix(&mut self, min: u8) -> Result<Node, ParseError> {
        const EXPECTED: &str = "a literal, an identifier or `(`";
        let at = self.at;
        match self.tok {
            // NOT binds looser than comparisons, as in SQL: `NOT a = 1` is `NOT (a = 1)`.
            // Where a tighter operand is required (`a = NOT b`) it needs parentheses.
            Tok::Kw(Kw::Not) if min <= NOT => {
                self.bump()?;
                let inner = self.expr(NOT)?;
                self.condition(&inner)?;
                self.node(
                    Expr::Not(Box::new(inner.expr)),
                    Ty::Bool,
                    at,
                    &[inner.height],
                )
            }
            Tok::Minus | Tok::Plus => {
                let negative = self.tok == Tok::Minus;
                self.bump()?;
                if let Tok::Num(kind, text) = self.tok {
                    // A sign directly before a numeric literal is folded into it.
                    let num_at = self.at;
                    self.bump()?;
                    let n = self.num_literal(kind, text, negative, num_at)?;
                    return Ok(Node::leaf(Expr::Lit(Lit::Num(n)), Ty::Num, at));
                }
                let inner = self.expr(PREFIX)?;
                self.number(&inner)?;
                let expr = if negative {
                    Expr::Neg(Box::new(inner.expr))
                } else {
                    // `+x` makes a property act as a number: `x + 0` has exactly that meaning.
                    Expr::Arith(
                        ArithOp::Add,
                        Box::new((inner.expr, Expr::Lit(Lit::Num(Num::Int(0))))),
                    )
                };
                self.node(expr, Ty::Num, at, &[inner.height])
            }
            Tok::LParen => {
                self.bump()?;
                let inner = self.expr(0)?;
                self.expect(&Tok::RParen, "`)` or an operator")?;
                // Parentheses add no node; the inner expression keeps its own start column.
                Ok(inner)
            }
            _ => self.primary()?.ok_or_else(|| self.unexpected(EXPECTED)),
        }
    }

    /// A literal, identifier or header; `None` (nothing consumed) for any other token.
    fn primary(&mut self) -> Result<Option<Node>, ParseError> {
        let at = self.at;
        if let Some(lit) = self.literal()? {
            let ty = match &lit {
                Lit::Null => Ty::Any,
                Lit::Bool(_) => Ty::Bool,
                Lit::Num(_) => Ty::Num,
                Lit::Str(_) => Ty::Str,
            };
            return Ok(Some(Node::leaf(Expr::Lit(lit), ty, at)));
        }
        match self.tok {
            Tok::Ident(name) if name.starts_with('$') => {
                let Some(header) = Header::lookup(name) else {
                    let mut shown: String = name.chars().take(32).collect();
                    if shown.len() < name.len() {
                        shown.push('…');
                    }
                    return Err(self.err(
                        at,
                        ParseErrorKind::UnknownHeader {
                            name: shown,
                            known: Header::KNOWN,
                        },
                    ));
                };
                self.bump()?;
                Ok(Some(Node::leaf(Expr::Header(header), header.ty(), at)))
            }
            Tok::Ident(name) => {
                self.bump()?;
                Ok(Some(Node::leaf(Expr::Prop(Box::from(name)), Ty::Any, at)))
            }
            Tok::Quoted(_) => match self.bump()? {
                Tok::Quoted(name) => Ok(Some(Node::leaf(
                    Expr::Prop(name.into_owned().into_boxed_str()),
                    Ty::Any,
                    at,
                ))),
                _ => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// `first (OR operand)*` or `first (AND operand)*`, flattened into one node.
    fn chain(&mut self, level: u8, first: Node) -> Result<Node, ParseError> {
        let kw = if level == OR { Kw::Or } else { Kw::And };
        self.condition(&first)?;
        let at = first.at;
        let mut height = first.height;
        let mut ops = Vec::from([first.expr]);
        while self.tok == Tok::Kw(kw) {
            self.bump()?;
            let next = self.expr(level + 1)?;
            self.condition(&next)?;
            height = height.max(next.height);
            ops.push(next.expr);
        }
        let ops = ops.into_boxed_slice();
        let expr = if level == OR {
            Expr::Or(ops)
        } else {
            Expr::And(ops)
        };
        self.node(expr, Ty::Bool, at, &[height])
    }

    /// `lhs (= | <>) rhs` or `lhs IS [NOT] NULL`.
    fn equality(&mut self, lhs: Node) -> Result<Node, ParseError> {
        let op = match self.bump()? {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            _ => {
                let negated = self.tok == Tok::Kw(Kw::Not);
                if negated {
                    self.bump()?;
                }
                self.expect(&Tok::Kw(Kw::Null), "NULL")?;
                let expr = Expr::IsNull {
                    expr: Box::new(lhs.expr),
                    negated,
                };
                return self.node(expr, Ty::Bool, lhs.at, &[lhs.height]);
            }
        };
        let rhs = self.expr(COMPARISON)?;
        self.binary_cmp(op, lhs, rhs)
    }

    fn binary_cmp(&self, op: CmpOp, lhs: Node, rhs: Node) -> Result<Node, ParseError> {
        let heights = [lhs.height, rhs.height];
        let expr = Expr::Cmp(op, Box::new((lhs.expr, rhs.expr)));
        self.node(expr, Ty::Bool, lhs.at, &heights)
    }

    /// `lhs (< | <= | > | >=) rhs`, `lhs [NOT] BETWEEN lo AND hi`, `lhs [NOT] IN (…)`,
    /// `lhs [NOT] LIKE 'p' [ESCAPE 'c']`, `lhs [NOT] CONTAINS | STARTSWITH | ENDSWITH 's'`.
    fn comparison(&mut self, lhs: Node) -> Result<Node, ParseError> {
        const AFTER_NOT: &str = "BETWEEN, IN, LIKE, CONTAINS, STARTSWITH or ENDSWITH after NOT";
        let op = match self.tok {
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump()?;
            let rhs = self.expr(ADDITIVE)?;
            return self.binary_cmp(op, lhs, rhs);
        }
        let negated = self.tok == Tok::Kw(Kw::Not);
        if negated {
            self.bump()?;
        }
        let kw = match self.tok {
            Tok::Kw(
                kw @ (Kw::Between
                | Kw::In
                | Kw::Like
                | Kw::Contains
                | Kw::StartsWith
                | Kw::EndsWith),
            ) => kw,
            _ => return Err(self.unexpected(AFTER_NOT)),
        };
        self.bump()?;
        match kw {
            Kw::Between => {
                let lo = self.expr(ADDITIVE)?;
                self.expect(&Tok::Kw(Kw::And), "AND (BETWEEN low AND high)")?;
                let hi = self.expr(ADDITIVE)?;
                let heights = [lhs.height, lo.height, hi.height];
                let expr = Expr::Between {
                    operands: Box::new((lhs.expr, lo.expr, hi.expr)),
                    negated,
                };
                self.node(expr, Ty::Bool, lhs.at, &heights)
            }
            Kw::In => {
                let set = self.in_list()?;
                let expr = Expr::In {
                    expr: Box::new(lhs.expr),
                    set: Box::new(set),
                    negated,
                };
                self.node(expr, Ty::Bool, lhs.at, &[lhs.height])
            }
            _ => {
                let text = self.string_literal("a string literal pattern")?;
                let pattern = match kw {
                    Kw::Like => self.like_pattern(&text)?,
                    Kw::Contains => Pattern::Contains(text.into_boxed_str()),
                    Kw::StartsWith => Pattern::Prefix(text.into_boxed_str()),
                    _ => Pattern::Suffix(text.into_boxed_str()),
                };
                let expr = Expr::Like {
                    expr: Box::new(lhs.expr),
                    pattern: Box::new(pattern),
                    negated,
                };
                self.node(expr, Ty::Bool, lhs.at, &[lhs.height])
            }
        }
    }

    /// `lhs (+ | - | * | / | %) rhs`, left-associative through the climbing loop.
    fn arith(&mut self, level: u8, lhs: Node) -> Result<Node, ParseError> {
        let op = match self.bump()? {
            Tok::Plus => ArithOp::Add,
            Tok::Minus => ArithOp::Sub,
            Tok::Star => ArithOp::Mul,
            Tok::Slash => ArithOp::Div,
            _ => ArithOp::Rem,
        };
        let rhs = self.expr(level + 1)?;
        self.number(&lhs)?;
        self.number(&rhs)?;
        let heights = [lhs.height, rhs.height];
        let expr = Expr::Arith(op, Box::new((lhs.expr, rhs.expr)));
        self.node(expr, Ty::Num, lhs.at, &heights)
    }

    fn string_literal(&mut self, expected: &'static str) -> Result<String, ParseError> {
        match &self.tok {
            Tok::Str(_) => match self.bump()? {
                Tok::Str(s) => Ok(s.into_owned()),
                _ => Err(self.unexpected(expected)),
            },
            _ => Err(self.unexpected(expected)),
        }
    }

    /// The pattern text is already read; handles `[ESCAPE 'c']`.
    fn like_pattern(&mut self, text: &str) -> Result<Pattern, ParseError> {
        let mut escape = None;
        if self.tok == Tok::Kw(Kw::Escape) {
            self.bump()?;
            let esc_at = self.at;
            let esc = self.string_literal("a one-character string literal after ESCAPE")?;
            let mut chars = esc.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => escape = Some(c),
                _ => {
                    return Err(self.err(
                        esc_at,
                        ParseErrorKind::InvalidPattern("ESCAPE takes exactly one character"),
                    ));
                }
            }
        }
        Ok(Pattern::like(text, escape))
    }

    /// `( literal (, literal)* )`
    fn in_list(&mut self) -> Result<InSet, ParseError> {
        self.expect(&Tok::LParen, "`(` after IN")?;
        let mut items = Vec::new();
        loop {
            items.push(self.in_item()?);
            match self.tok {
                Tok::Comma => {
                    self.bump()?;
                }
                Tok::RParen => {
                    self.bump()?;
                    return Ok(InSet::build(items));
                }
                _ => return Err(self.unexpected("`,` or `)` in the IN list")),
            }
        }
    }

    fn in_item(&mut self) -> Result<Lit, ParseError> {
        const EXPECTED: &str = "a literal in the IN list (string, number, TRUE, FALSE or NULL)";
        let negative = match self.tok {
            Tok::Minus => true,
            Tok::Plus => false,
            _ => {
                return self
                    .literal()
                    .transpose()
                    .unwrap_or_else(|| Err(self.unexpected(EXPECTED)));
            }
        };
        self.bump()?;
        match self.tok {
            Tok::Num(kind, text) => {
                let at = self.at;
                self.bump()?;
                self.num_literal(kind, text, negative, at).map(Lit::Num)
            }
            _ => Err(self.unexpected("a number after the sign")),
        }
    }

    /// A literal token, consumed; `Ok(None)` (nothing consumed) when the token is not one.
    fn literal(&mut self) -> Result<Option<Lit>, ParseError> {
        let at = self.at;
        let lit = match &self.tok {
            Tok::Kw(Kw::Null) => Lit::Null,
            Tok::Kw(Kw::True) => Lit::Bool(true),
            Tok::Kw(Kw::False) => Lit::Bool(false),
            Tok::Num(kind, text) => Lit::Num(self.num_literal(*kind, text, false, at)?),
            Tok::Str(_) => match self.bump()? {
                Tok::Str(s) => return Ok(Some(Lit::Str(s.into_owned().into_boxed_str()))),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        self.bump()?;
        Ok(Some(lit))
    }

    /// Converts a numeric literal; `negative` folds a unary minus in, so `-9223372036854775808`
    /// is the exact `i64::MIN`.
    fn num_literal(
        &self,
        kind: NumKind,
        text: &str,
        negative: bool,
        at: usize,
    ) -> Result<Num, ParseError> {
        let out_of_range = |what| self.err(at, ParseErrorKind::InvalidNumber(what));
        let signed = |u: u64| -> Option<i64> {
            if negative {
                0i64.checked_sub_unsigned(u)
            } else {
                i64::try_from(u).ok()
            }
        };
        match kind {
            NumKind::Hex => u64::from_str_radix(text, 16)
                .ok()
                .and_then(signed)
                .map(Num::Int)
                .ok_or_else(|| out_of_range("hexadecimal literal out of the 64-bit signed range")),
            NumKind::Int => {
                if let Some(i) = text.parse::<u64>().ok().and_then(signed) {
                    return Ok(Num::Int(i));
                }
                // Too large for an exact number: approximate, as JMS does.
                let f = self.float(text, at)?;
                Ok(Num::Float(if negative { -f } else { f }))
            }
            NumKind::Float => {
                let f = self.float(text, at)?;
                Ok(Num::Float(if negative { -f } else { f }))
            }
        }
    }

    fn float(&self, text: &str, at: usize) -> Result<f64, ParseError> {
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(f),
            _ => Err(self.err(
                at,
                ParseErrorKind::InvalidNumber("approximate literal out of the f64 range"),
            )),
        }
    }
}
