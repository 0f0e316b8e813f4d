//! Splits one `.kir` line into tokens that remember their column, and walks them with a
//! [`Cursor`]. `.kir` statements never span lines, so the parser works a line at a time
//! and every error can name the line and column it comes from.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// `matmul`, `f32`, `seq`, `true`, `inf`.
    Ident(String),
    /// Digit-led: `64`, `2.5`, `1e-5`; a sign is a separate `Punct`.
    Num(String),
    /// `%x`, `%12`; holds the name without `%`.
    Node(String),
    /// `"x"`, with escapes resolved.
    Str(String),
    Punct(char),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) | Tok::Num(s) => f.write_str(s),
            Tok::Node(s) => write!(f, "%{s}"),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Punct(c) => write!(f, "{c}"),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Token {
    pub tok: Tok,
    /// 1-based column, counted in characters.
    pub col: usize,
}

/// An error inside one line; the caller adds the line number.
#[derive(Debug)]
pub(super) struct SyntaxError {
    pub col: usize,
    pub msg: String,
}

pub(super) fn err<T>(col: usize, msg: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        col,
        msg: msg.into(),
    })
}

const PUNCT: &str = "=,[]*+-";

pub(super) fn tokenize(line: &str) -> Result<Vec<Token>, SyntaxError> {
    let chars: Vec<char> = line.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (c, col) = (chars[i], i + 1);
        let start = i;
        let tok = if c == '#' {
            break;
        } else if c.is_whitespace() {
            i += 1;
            continue;
        } else if c.is_ascii_alphabetic() || c == '_' {
            i = take_while(&chars, i, is_ident_char);
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit() {
            i = take_number(&chars, i);
            Tok::Num(chars[start..i].iter().collect())
        } else if c == '%' {
            i = take_while(&chars, i + 1, |c| is_ident_char(c) || c == '.');
            if i == start + 1 {
                return err(col, "expected a node name after `%`");
            }
            Tok::Node(chars[start + 1..i].iter().collect())
        } else if c == '"' {
            let (s, end) = take_string(&chars, i)?;
            i = end;
            Tok::Str(s)
        } else if PUNCT.contains(c) {
            i += 1;
            Tok::Punct(c)
        } else {
            return err(col, format!("unexpected character `{c}`"));
        };
        toks.push(Token { tok, col });
    }
    Ok(toks)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn take_while(chars: &[char], mut i: usize, keep: impl Fn(char) -> bool) -> usize {
    while i < chars.len() && keep(chars[i]) {
        i += 1;
    }
    i
}

/// Digits, letters, `_` and `.`, plus a sign right after an exponent's `e` (`1e-5`).
fn take_number(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        let c = chars[i];
        let exp_sign = (c == '-' || c == '+') && matches!(chars[i - 1], 'e' | 'E');
        if !(is_ident_char(c) || c == '.' || exp_sign) {
            break;
        }
        i += 1;
    }
    i
}

/// A string in Rust's `{:?}` spelling, which is how `print` writes names.
fn take_string(chars: &[char], start: usize) -> Result<(String, usize), SyntaxError> {
    let mut s = String::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return err(start + 1, "unterminated string");
        };
        i += 1;
        match c {
            '"' => return Ok((s, i)),
            '\\' => {
                let Some(&e) = chars.get(i) else {
                    return err(start + 1, "unterminated string");
                };
                i += 1;
                s.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    '0' => '\0',
                    '\\' | '"' | '\'' => e,
                    'u' => {
                        let (ch, end) = take_unicode_escape(chars, i)?;
                        i = end;
                        ch
                    }
                    _ => return err(i - 1, format!("unknown escape `\\{e}` in string")),
                });
            }
            _ => s.push(c),
        }
    }
}

/// `{XXXX}` after `\u`; `i` is the index of the `{`.
fn take_unicode_escape(chars: &[char], i: usize) -> Result<(char, usize), SyntaxError> {
    let bad = || err(i - 1, "malformed `\\u{...}` escape in string");
    if chars.get(i) != Some(&'{') {
        return bad();
    }
    let close = take_while(chars, i + 1, |c| c.is_ascii_hexdigit());
    if chars.get(close) != Some(&'}') || close == i + 1 || close - i > 7 {
        return bad();
    }
    let hex: String = chars[i + 1..close].iter().collect();
    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
        Some(ch) => Ok((ch, close + 1)),
        None => bad(),
    }
}

/// Reads a line's tokens front to back; `end_col` is the column just past the line, which
/// errors at the end of the line point to.
pub(super) struct Cursor<'a> {
    toks: &'a [Token],
    pos: usize,
    end_col: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(toks: &'a [Token], end_col: usize) -> Cursor<'a> {
        Cursor {
            toks,
            pos: 0,
            end_col,
        }
    }

    pub fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    /// Column of the next token, or of the end of the line.
    pub fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end_col, |t| t.col)
    }

    pub fn next(&mut self) -> Option<&'a Token> {
        let t = self.toks.get(self.pos)?;
        self.pos += 1;
        Some(t)
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    /// The next token for an error message: `` `foo` `` or `end of line`.
    pub fn found(&self) -> String {
        match self.peek() {
            Some(t) => format!("`{t}`"),
            None => "end of line".into(),
        }
    }

    pub fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(&Tok::Punct(c));
        if hit {
            self.pos += 1;
        }
        hit
    }

    pub fn expect(&mut self, c: char, context: &str) -> Result<(), SyntaxError> {
        if self.eat(c) {
            Ok(())
        } else {
            err(
                self.col(),
                format!("expected `{c}` {context}, found {}", self.found()),
            )
        }
    }

    pub fn expect_end(&self, context: &str) -> Result<(), SyntaxError> {
        if self.at_end() {
            Ok(())
        } else {
            err(
                self.col(),
                format!("unexpected {} after {context}", self.found()),
            )
        }
    }

    /// The next identifier, or an error naming what was expected.
    pub fn ident(&mut self, what: &str) -> Result<(&'a str, usize), SyntaxError> {
        let col = self.col();
        match self.peek() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok((s, col))
            }
            _ => err(col, format!("expected {what}, found {}", self.found())),
        }
    }

    pub fn string(&mut self, what: &str) -> Result<&'a str, SyntaxError> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => err(
                self.col(),
                format!("expected {what} in quotes, found {}", self.found()),
            ),
        }
    }
}
