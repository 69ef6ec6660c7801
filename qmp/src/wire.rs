//! The QMP byte stream: an incremental JSON parser for what clients send, the checks QEMU
//! makes on a request before it looks up the command, and an encoder for what the server
//! sends.
//!
//! # Input
//!
//! [`Parser`] is fed arbitrary chunks of bytes and yields one [`Parsed`] item per JSON value
//! or per error, exactly where QEMU's JSON lexer, streamer and parser (`qobject/json-*.c`)
//! would: several values in one chunk, a value split over many chunks and any whitespace
//! (including CRLF) between values all work. It accepts what QEMU accepts, RFC 8259 JSON plus
//! single-quoted strings and the `\'` escape, and reports errors with QEMU's descriptions
//! (`JSON parse error, expecting value`, `JSON parse error, stray '…'`, `JSON parse error,
//! invalid keyword 'foo'`, …). Strings must be valid (modified) UTF-8; `\u0000` is allowed,
//! as in QEMU, and so are surrogate pairs; lone surrogates and noncharacters are rejected as
//! QEMU rejects them.
//!
//! ## Bounds
//!
//! [`Limits`]: a message may hold at most [`Limits::max_message_size`] bytes of token text
//! (16 MiB by default; QEMU allows 64 MiB, but no QMP request comes near either), at most
//! [`Limits::max_tokens`] tokens (2 Mi by default, QEMU's value) and nest at most
//! [`Limits::max_depth`] arrays and objects (1024, QEMU's value). Whitespace between tokens is
//! not stored and does not count. Going past a bound yields `JSON token size limit exceeded`,
//! `JSON token count limit exceeded` or `JSON nesting depth limit exceeded`.
//!
//! ## Resynchronisation
//!
//! - After a *lexical* error (a byte that cannot start or continue a token: a stray
//!   character, a control character inside a string, a byte 0xFE/0xFF, ...) the parser does
//!   what QEMU's lexer does: the partial message is dropped, one `stray` error is reported, and
//!   input is skipped up to the next structural character (`{ } [ ] : ,`), ASCII control
//!   character other than tab (so a newline ends the skipping), or byte 0xFE/0xFF, where
//!   lexing starts afresh. This is what QEMU's specification tells clients to rely on: sending
//!   a control character (or 0xFF) forces the parser back into a known-good state.
//! - After a *syntax* error (tokens that are valid one by one but not together) the error is
//!   reported when the brackets balance, as in QEMU, and parsing goes on with the next token.
//! - After a *limit* error QEMU drops the tokens read so far and parses the rest of the
//!   oversized message as new input, which yields a cascade of errors. This parser instead
//!   reports the one error and discards the rest of the oversized message (it keeps lexing, to
//!   track strings and brackets without storing anything) until its brackets balance; then it
//!   parses normally again. A lexical error also ends the discarding, as above.
//!
//! # Requests
//!
//! [`check_request`] applies QEMU's `qmp_dispatch()` checks to a parsed value: it must be an
//! object, `execute` (or `exec-oob` where out-of-band execution was negotiated) must be a
//! string, `arguments` an object, and nothing but `id` may be there besides. The `id` is read
//! first, so every error but "QMP input must be a JSON object" carries it.
//!
//! # Output
//!
//! [`encode_value`] writes JSON as QEMU's JSON writer does (`{"a": 1, "b": [1, 2]}`), using
//! ASCII only: every character outside 0x20..0x7E is escaped, above U+FFFF with a surrogate
//! pair, with upper-case hex digits (what QEMU considers invalid, a noncharacter, becomes
//! `\uFFFD` as in QEMU). Numbers that are not integers are written as C's `%.17g` writes them
//! (`0.10000000000000001`, `1`, `1e+300`). [`greeting`], [`reply`] and [`event`] produce whole
//! messages, terminated by CRLF, with their members in the order QEMU sends them; the members
//! of objects inside are sorted (QEMU's order is that of its hash tables, which no client may
//! rely on).
//!
//! # Numbers
//!
//! As in QEMU, an integer that fits in `i64` is one, else one that fits in `u64`, else it
//! becomes a double; a number with a fraction or exponent is a double. A double too large to
//! represent (`1e999`) becomes the largest finite double of its sign, where QEMU would carry an
//! infinity (and then write invalid JSON if it echoed it).

use serde_json::{Map, Number, Value};

use crate::error::QmpError;

/// The size bounds of one incoming message. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of token text in one message (whitespace between tokens does not count).
    pub max_message_size: usize,
    /// Tokens in one message.
    pub max_tokens: usize,
    /// Arrays and objects open at once. At most [`MAX_DEPTH_CAP`]: the parser recurses.
    pub max_depth: usize,
}

/// The largest accepted [`Limits::max_depth`]; larger values are clamped to it.
pub const MAX_DEPTH_CAP: usize = 4096;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 16 << 20,
            max_tokens: 2 << 20,
            max_depth: 1024,
        }
    }
}

/// One thing the parser found: a complete JSON value, or an error with QEMU's description.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    /// The value, or the `desc` of the error reply.
    pub result: Result<Value, String>,
    /// Offset in the stream (counting every byte ever fed) of the first byte of the value or
    /// of the erroneous input.
    pub start: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokKind {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Str,
    Int,
    Float,
    Keyword,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    kind: TokKind,
    start: usize,
    end: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    Start,
    Recovery,
    Str { quote: u8 },
    StrEscape { quote: u8 },
    Zero,
    Sign,
    Digits,
    Mantissa,
    MantissaDigits,
    ExpE,
    ExpSign,
    ExpDigits,
    Keyword,
}

/// What the lexer makes of one byte in one state.
enum Step {
    /// Consume the byte and stay in or move to a state.
    Go(Lex),
    /// Consume the byte, which completes a token.
    Emit(TokKind),
    /// Do not consume the byte: the token before it is complete.
    EmitBefore(TokKind),
    /// Consume the byte and skip it (whitespace).
    Skip,
    /// Do not consume the byte: go back to the start state (end of recovery).
    Restart,
    /// The byte is a lexical error; it is consumed.
    Error,
}

fn step(state: Lex, b: u8) -> Step {
    use Step::*;
    match state {
        Lex::Start => match b {
            b'"' | b'\'' => Go(Lex::Str { quote: b }),
            b'0' => Go(Lex::Zero),
            b'1'..=b'9' => Go(Lex::Digits),
            b'-' => Go(Lex::Sign),
            b'{' => Emit(TokKind::LCurly),
            b'}' => Emit(TokKind::RCurly),
            b'[' => Emit(TokKind::LSquare),
            b']' => Emit(TokKind::RSquare),
            b',' => Emit(TokKind::Comma),
            b':' => Emit(TokKind::Colon),
            b'a'..=b'z' => Go(Lex::Keyword),
            b' ' | b'\t' | b'\r' | b'\n' => Skip,
            _ => Error,
        },
        Lex::Recovery => match b {
            b'\t' => Skip,
            0..=0x1f | 0xfe | 0xff | b'[' | b']' | b'{' | b'}' | b':' | b',' => Restart,
            _ => Skip,
        },
        Lex::Str { quote } => match b {
            b'\\' => Go(Lex::StrEscape { quote }),
            _ if b == quote => Emit(TokKind::Str),
            0x20..=0xfd => Go(state),
            _ => Error,
        },
        Lex::StrEscape { quote } => match b {
            0x20..=0xfd => Go(Lex::Str { quote }),
            _ => Error,
        },
        Lex::Zero => match b {
            b'0'..=b'9' => Error,
            b'.' => Go(Lex::Mantissa),
            _ => EmitBefore(TokKind::Int),
        },
        Lex::Sign => match b {
            b'0' => Go(Lex::Zero),
            b'1'..=b'9' => Go(Lex::Digits),
            _ => Error,
        },
        Lex::Digits => match b {
            b'0'..=b'9' => Go(Lex::Digits),
            b'e' | b'E' => Go(Lex::ExpE),
            b'.' => Go(Lex::Mantissa),
            _ => EmitBefore(TokKind::Int),
        },
        Lex::Mantissa => match b {
            b'0'..=b'9' => Go(Lex::MantissaDigits),
            _ => Error,
        },
        Lex::MantissaDigits => match b {
            b'0'..=b'9' => Go(Lex::MantissaDigits),
            b'e' | b'E' => Go(Lex::ExpE),
            _ => EmitBefore(TokKind::Float),
        },
        Lex::ExpE => match b {
            b'-' | b'+' => Go(Lex::ExpSign),
            b'0'..=b'9' => Go(Lex::ExpDigits),
            _ => Error,
        },
        Lex::ExpSign => match b {
            b'0'..=b'9' => Go(Lex::ExpDigits),
            _ => Error,
        },
        Lex::ExpDigits => match b {
            b'0'..=b'9' => Go(Lex::ExpDigits),
            _ => EmitBefore(TokKind::Float),
        },
        Lex::Keyword => match b {
            b'a'..=b'z' => Go(Lex::Keyword),
            _ => EmitBefore(TokKind::Keyword),
        },
    }
}

/// The incremental parser of one connection's input. See the module documentation.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    state: Lex,
    /// Token text of the message being read: every complete token, then the partial one.
    text: Vec<u8>,
    /// Where the partial token starts in `text`.
    tok_start: usize,
    tokens: Vec<Token>,
    braces: i64,
    brackets: i64,
    /// Discarding the rest of a message that went past a limit.
    discarding: bool,
    /// Stream offset of the next byte.
    offset: u64,
    /// Stream offset of the first byte of the message.
    msg_start: Option<u64>,
    /// Stream offset of the first byte of the partial token.
    tok_offset: u64,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser::new(Limits::default())
    }
}

impl Parser {
    /// A parser with the given bounds.
    pub fn new(mut limits: Limits) -> Parser {
        limits.max_depth = limits.max_depth.min(MAX_DEPTH_CAP);
        Parser {
            limits,
            state: Lex::Start,
            text: Vec::new(),
            tok_start: 0,
            tokens: Vec::new(),
            braces: 0,
            brackets: 0,
            discarding: false,
            offset: 0,
            msg_start: None,
            tok_offset: 0,
        }
    }

    /// Whether a message (or a token) has begun and is not complete yet.
    pub fn in_message(&self) -> bool {
        self.msg_start.is_some() || self.discarding
    }

    /// Stream offset of the next byte to be fed.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Feeds bytes until one item is complete. Returns how many bytes were consumed, and the
    /// item if one was completed; feed the rest of `input` next. A byte that only ends a
    /// number or keyword is not consumed with it.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Parsed>) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match step(self.state, b) {
                Step::Go(next) => {
                    self.begin_token_if_needed();
                    if !self.discarding {
                        self.text.push(b);
                    }
                    self.state = next;
                    i += 1;
                    self.offset += 1;
                    if !self.discarding && self.size() > self.limits.max_message_size {
                        return (i, self.limit_error("JSON token size limit exceeded"));
                    }
                }
                Step::Skip => {
                    i += 1;
                    self.offset += 1;
                }
                Step::Restart => {
                    self.state = Lex::Start;
                }
                Step::Emit(kind) => {
                    self.begin_token_if_needed();
                    if !self.discarding {
                        self.text.push(b);
                    }
                    i += 1;
                    self.offset += 1;
                    self.state = Lex::Start;
                    if let Some(p) = self.token(kind) {
                        return (i, Some(p));
                    }
                }
                Step::EmitBefore(kind) => {
                    self.state = Lex::Start;
                    if let Some(p) = self.token(kind) {
                        return (i, Some(p));
                    }
                }
                Step::Error => {
                    self.begin_token_if_needed();
                    let start = self.msg_start.unwrap_or(self.tok_offset);
                    let mut stray = if self.discarding {
                        Vec::new()
                    } else {
                        self.text[self.tok_start..].to_vec()
                    };
                    stray.push(b);
                    i += 1;
                    self.offset += 1;
                    self.reset_message();
                    self.state = Lex::Recovery;
                    let desc = format!(
                        "JSON parse error, stray '{}'",
                        String::from_utf8_lossy(&stray)
                    );
                    return (
                        i,
                        Some(Parsed {
                            result: Err(desc),
                            start,
                        }),
                    );
                }
            }
        }
        (i, None)
    }

    /// Feeds all of `input`, collecting every item.
    pub fn feed_all(&mut self, mut input: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (n, item) = self.feed(input);
            input = &input[n..];
            out.extend(item);
        }
        out
    }

    /// Forgets any partial input (as after a reconnection).
    pub fn reset(&mut self) {
        self.reset_message();
        self.state = Lex::Start;
    }

    fn size(&self) -> usize {
        self.text.len()
    }

    /// Called with a byte that is consumed as part of a token: notes where the token (and
    /// the message) starts if the byte is the token's first.
    fn begin_token_if_needed(&mut self) {
        if self.state == Lex::Start {
            self.tok_start = self.text.len();
            self.tok_offset = self.offset;
            if self.msg_start.is_none() && !self.discarding {
                self.msg_start = Some(self.offset);
            }
        }
    }

    fn reset_message(&mut self) {
        self.text.clear();
        self.tokens.clear();
        self.tok_start = 0;
        self.braces = 0;
        self.brackets = 0;
        self.discarding = false;
        self.msg_start = None;
    }

    fn limit_error(&mut self, desc: &str) -> Option<Parsed> {
        let start = self.msg_start.unwrap_or(self.offset);
        let (braces, brackets) = (self.braces, self.brackets);
        self.reset_message();
        // Keep the depth of the message being discarded, to find its end.
        self.braces = braces;
        self.brackets = brackets;
        self.discarding = true;
        Some(Parsed {
            result: Err(desc.to_string()),
            start,
        })
    }

    /// A token is complete: QEMU's json_message_process_token().
    fn token(&mut self, kind: TokKind) -> Option<Parsed> {
        match kind {
            TokKind::LCurly => self.braces += 1,
            TokKind::RCurly => self.braces -= 1,
            TokKind::LSquare => self.brackets += 1,
            TokKind::RSquare => self.brackets -= 1,
            _ => {}
        }
        let open = (self.braces > 0 || self.brackets > 0) && self.braces >= 0 && self.brackets >= 0;
        if self.discarding {
            if !open {
                self.reset_message();
            }
            return None;
        }
        if self.tokens.len() + 1 > self.limits.max_tokens {
            return self.limit_error("JSON token count limit exceeded");
        }
        if self.braces + self.brackets > self.limits.max_depth as i64 {
            return self.limit_error("JSON nesting depth limit exceeded");
        }
        self.tokens.push(Token {
            kind,
            start: self.tok_start,
            end: self.text.len(),
        });
        self.tok_start = self.text.len();
        if open {
            return None;
        }
        let start = self.msg_start.unwrap_or(self.offset);
        let result = parse_tokens(&self.text, &self.tokens);
        self.reset_message();
        Some(Parsed { result, start })
    }
}

/// QEMU's json_parser_parse() over the tokens of one message.
fn parse_tokens(text: &[u8], tokens: &[Token]) -> Result<Value, String> {
    let mut p = TokenParser {
        text,
        tokens,
        pos: 0,
        err: None,
    };
    match p.value() {
        Some(v) if p.pos == tokens.len() => Ok(v),
        Some(_) => Err("JSON parse error, expecting end of input".to_string()),
        None => Err(p
            .err
            .unwrap_or_else(|| "JSON parse error, expecting value".to_string())),
    }
}

struct TokenParser<'a> {
    text: &'a [u8],
    tokens: &'a [Token],
    pos: usize,
    err: Option<String>,
}

impl TokenParser<'_> {
    fn error(&mut self, msg: impl FnOnce() -> String) {
        if self.err.is_none() {
            self.err = Some(format!("JSON parse error, {}", msg()));
        }
    }

    fn peek(&self) -> Option<Token> {
        self.tokens.get(self.pos).copied()
    }

    fn pop(&mut self) -> Option<Token> {
        let t = self.peek();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn tok_text(&self, t: Token) -> &[u8] {
        &self.text[t.start..t.end]
    }

    fn value(&mut self) -> Option<Value> {
        let Some(t) = self.peek() else {
            self.error(|| "premature EOI".into());
            return None;
        };
        match t.kind {
            TokKind::LCurly => self.object(),
            TokKind::LSquare => self.array(),
            TokKind::Str => {
                self.pos += 1;
                self.string(t).map(Value::String)
            }
            TokKind::Int | TokKind::Float => {
                self.pos += 1;
                self.number(t)
            }
            TokKind::Keyword => {
                self.pos += 1;
                match self.tok_text(t) {
                    b"true" => Some(Value::Bool(true)),
                    b"false" => Some(Value::Bool(false)),
                    b"null" => Some(Value::Null),
                    other => {
                        let k = String::from_utf8_lossy(other).into_owned();
                        self.error(|| format!("invalid keyword '{k}'"));
                        None
                    }
                }
            }
            _ => {
                self.error(|| "expecting value".into());
                None
            }
        }
    }

    fn object(&mut self) -> Option<Value> {
        self.pos += 1;
        let mut map = Map::new();
        let Some(peek) = self.peek() else {
            self.error(|| "premature EOI".into());
            return None;
        };
        if peek.kind == TokKind::RCurly {
            self.pos += 1;
            return Some(Value::Object(map));
        }
        self.pair(&mut map)?;
        loop {
            let Some(t) = self.pop() else {
                self.error(|| "premature EOI".into());
                return None;
            };
            match t.kind {
                TokKind::RCurly => return Some(Value::Object(map)),
                TokKind::Comma => self.pair(&mut map)?,
                _ => {
                    self.error(|| "expected separator in dict".into());
                    return None;
                }
            }
        }
    }

    fn pair(&mut self, map: &mut Map<String, Value>) -> Option<()> {
        if self.peek().is_none() {
            self.error(|| "premature EOI".into());
            return None;
        }
        let key = match self.value() {
            Some(Value::String(k)) => k,
            _ => {
                self.error(|| "key is not a string in object".into());
                return None;
            }
        };
        match self.pop() {
            None => {
                self.error(|| "premature EOI".into());
                return None;
            }
            Some(t) if t.kind != TokKind::Colon => {
                self.error(|| "missing : in object pair".into());
                return None;
            }
            Some(_) => {}
        }
        let Some(value) = self.value() else {
            self.error(|| "Missing value in dict".into());
            return None;
        };
        if map.contains_key(&key) {
            self.error(|| "duplicate key".into());
            return None;
        }
        map.insert(key, value);
        Some(())
    }

    fn array(&mut self) -> Option<Value> {
        self.pos += 1;
        let mut list = Vec::new();
        let Some(peek) = self.peek() else {
            self.error(|| "premature EOI".into());
            return None;
        };
        if peek.kind == TokKind::RSquare {
            self.pos += 1;
            return Some(Value::Array(list));
        }
        let Some(v) = self.value() else {
            self.error(|| "expecting value".into());
            return None;
        };
        list.push(v);
        loop {
            let Some(t) = self.pop() else {
                self.error(|| "premature EOI".into());
                return None;
            };
            match t.kind {
                TokKind::RSquare => return Some(Value::Array(list)),
                TokKind::Comma => {
                    let Some(v) = self.value() else {
                        self.error(|| "expecting value".into());
                        return None;
                    };
                    list.push(v);
                }
                _ => {
                    self.error(|| "expected separator in list".into());
                    return None;
                }
            }
        }
    }

    fn number(&mut self, t: Token) -> Option<Value> {
        // The lexer only lets ASCII digits, signs, '.', 'e' and 'E' through.
        let s = std::str::from_utf8(self.tok_text(t)).unwrap_or_default();
        if t.kind == TokKind::Int {
            if let Ok(i) = s.parse::<i64>() {
                return Some(Value::Number(i.into()));
            }
            if !s.starts_with('-') {
                if let Ok(u) = s.parse::<u64>() {
                    return Some(Value::Number(u.into()));
                }
            }
        }
        // QEMU's strtod() turns what is too large into infinity, which JSON cannot carry:
        // saturate to the largest finite double instead.
        let f: f64 = s.parse().unwrap_or(0.0);
        let f = if f.is_finite() {
            f
        } else {
            f64::MAX.copysign(f)
        };
        Number::from_f64(f).map(Value::Number)
    }

    /// QEMU's parse_string(): the token includes its quotes.
    fn string(&mut self, t: Token) -> Option<String> {
        let raw = self.tok_text(t);
        let quote = raw[0];
        let body = &raw[1..raw.len() - 1];
        let mut out = String::with_capacity(body.len());
        let mut i = 0;
        while i < body.len() {
            let b = body[i];
            if b == b'\\' {
                let beg = i;
                i += 1;
                let c = body.get(i).copied().unwrap_or(quote);
                i += 1;
                match c {
                    b'"' => out.push('"'),
                    b'\'' => out.push('\''),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let mut cp = hex4(&body[i.min(body.len())..]);
                        i += 4;
                        if (0xD800..=0xDBFF).contains(&cp)
                            && body.get(i) == Some(&b'\\')
                            && body.get(i + 1) == Some(&b'u')
                        {
                            let trailing = hex4(&body[(i + 2).min(body.len())..]);
                            if (0xDC00..=0xDFFF).contains(&trailing) {
                                cp = 0x10000 + (((cp & 0x3FF) << 10) | (trailing & 0x3FF));
                                i += 6;
                            } else {
                                cp = -1;
                            }
                        }
                        match valid_char(cp) {
                            Some(ch) => out.push(ch),
                            None => {
                                // QEMU prints the escape as it was read, from the token
                                // (which goes on with the closing quote).
                                let end = (1 + i).min(raw.len());
                                let esc = String::from_utf8_lossy(&raw[1 + beg..end]).into_owned();
                                self.error(|| format!("{esc} is not a valid Unicode character"));
                                return None;
                            }
                        }
                    }
                    _ => {
                        self.error(|| "invalid escape sequence in string".into());
                        return None;
                    }
                }
            } else if b < 0x80 {
                out.push(b as char);
                i += 1;
            } else {
                match mod_utf8_char(&body[i..]) {
                    Some((ch, n)) => {
                        out.push(ch);
                        i += n;
                    }
                    None => {
                        self.error(|| "invalid UTF-8 sequence in string".into());
                        return None;
                    }
                }
            }
        }
        Some(out)
    }
}

/// Four hex digits, or -1.
fn hex4(s: &[u8]) -> i64 {
    if s.len() < 4 {
        return -1;
    }
    let mut cp = 0i64;
    for &c in &s[..4] {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return -1,
        };
        cp = (cp << 4) | i64::from(d);
    }
    cp
}

/// Whether QEMU accepts code point `cp` in a string: not a surrogate, not a noncharacter,
/// in range.
fn valid_char(cp: i64) -> Option<char> {
    if !(0..=0x10FFFF).contains(&cp) {
        return None;
    }
    if (0xFDD0..=0xFDEF).contains(&cp) || (cp & 0xFFFE) == 0xFFFE {
        return None;
    }
    char::from_u32(cp as u32)
}

/// Decodes one multi-byte modified-UTF-8 sequence (QEMU's mod_utf8_codepoint()): overlong
/// forms are rejected except `C0 80` for U+0000.
fn mod_utf8_char(s: &[u8]) -> Option<(char, usize)> {
    let b0 = s[0];
    let len = match b0 {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    if s.len() < len {
        return None;
    }
    let mut cp = i64::from(b0 & (0x7F >> len));
    for &c in &s[1..len] {
        if c & 0xC0 != 0x80 {
            return None;
        }
        cp = (cp << 6) | i64::from(c & 0x3F);
    }
    let min = [0x80, 0x800, 0x10000][len - 2];
    if cp < min && !(cp == 0 && len == 2) {
        return None;
    }
    valid_char(cp).map(|c| (c, len))
}

/// A request that passed QEMU's envelope checks.
#[derive(Debug, PartialEq)]
pub struct Request {
    /// The client's `id`, any JSON value.
    pub id: Option<Value>,
    /// The command name.
    pub command: String,
    /// Whether it came as `exec-oob`.
    pub oob: bool,
    /// `arguments`, if present.
    pub arguments: Option<Map<String, Value>>,
}

/// Whether QEMU runs `msg` out of band, right away (`qmp_is_oob()`): it has `exec-oob` and
/// no `execute`. This holds whether or not the capability was negotiated; the checks then
/// reject it.
pub fn is_oob(msg: &Value) -> bool {
    msg.as_object()
        .is_some_and(|m| m.contains_key("exec-oob") && !m.contains_key("execute"))
}

/// QEMU's checks of a request before the command lookup (`qmp_dispatch()` and
/// `qmp_dispatch_check_obj()`), with `allow_oob` as negotiated. On error, returns the `id`
/// to answer with (absent when the input is not an object) and the error.
pub fn check_request(msg: Value, allow_oob: bool) -> Result<Request, (Option<Value>, QmpError)> {
    let Value::Object(mut map) = msg else {
        return Err((None, QmpError::generic("QMP input must be a JSON object")));
    };
    let id = map.remove("id");
    let fail = |id: Option<Value>, desc: String| Err((id, QmpError::generic(desc)));
    let mut exec_key: Option<&str> = None;
    for (name, value) in &map {
        match name.as_str() {
            "execute" | "exec-oob" if name == "execute" || allow_oob => {
                if !value.is_string() {
                    return fail(id, format!("QMP input member '{name}' must be a string"));
                }
                if let Some(other) = exec_key {
                    return fail(
                        id,
                        format!("QMP input member '{name}' clashes with '{other}'"),
                    );
                }
                exec_key = Some(if name == "execute" {
                    "execute"
                } else {
                    "exec-oob"
                });
            }
            "arguments" => {
                if !value.is_object() {
                    return fail(id, "QMP input member 'arguments' must be an object".into());
                }
            }
            _ => return fail(id, format!("QMP input member '{name}' is unexpected")),
        }
    }
    let Some(key) = exec_key else {
        return fail(id, "QMP input lacks member 'execute'".into());
    };
    let Some(Value::String(command)) = map.remove(key) else {
        return fail(id, "QMP input lacks member 'execute'".into());
    };
    let arguments = match map.remove("arguments") {
        Some(Value::Object(a)) => Some(a),
        _ => None,
    };
    Ok(Request {
        id,
        command,
        oob: key == "exec-oob",
        arguments,
    })
}

/// Appends `v` as QEMU's JSON writer would, in ASCII.
pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => encode_number(n, out),
        Value::String(s) => encode_str(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                encode_value(e, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            out.push(b'{');
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                encode_str(k, out);
                out.extend_from_slice(b": ");
                encode_value(e, out);
            }
            out.push(b'}');
        }
    }
}

/// `v` as an ASCII JSON string (no line terminator).
pub fn to_string(v: &Value) -> String {
    let mut out = Vec::new();
    encode_value(v, &mut out);
    // Only ASCII is ever written.
    String::from_utf8(out).unwrap_or_default()
}

fn encode_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else {
        out.extend_from_slice(format_g17(n.as_f64().unwrap_or(0.0)).as_bytes());
    }
}

/// C's `printf("%.17g", x)` for a finite `x`.
fn format_g17(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // 17 significant digits in scientific notation: d.dddddddddddddddde±X
    let sci = format!("{x:.16e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    if !(-4..17).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let rest = rest.trim_end_matches('0');
        s.push_str(first);
        if !rest.is_empty() {
            s.push('.');
            s.push_str(rest);
        }
        s.push('e');
        s.push(if exp < 0 { '-' } else { '+' });
        s.push_str(&format!("{:02}", exp.abs()));
    } else if exp >= 0 {
        let point = exp as usize + 1;
        let (int, frac) = digits.split_at(point);
        s.push_str(int);
        let frac = frac.trim_end_matches('0');
        if !frac.is_empty() {
            s.push('.');
            s.push_str(frac);
        }
    } else {
        s.push_str("0.");
        for _ in 0..(-exp - 1) {
            s.push('0');
        }
        s.push_str(digits.trim_end_matches('0'));
    }
    s
}

fn encode_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut cp = c as u32;
                if valid_char(i64::from(cp)).is_none() {
                    // QEMU's writer replaces what it considers invalid.
                    cp = 0xFFFD;
                }
                if cp > 0xFFFF {
                    let v = cp - 0x10000;
                    push_u_escape(0xD800 + (v >> 10), out);
                    push_u_escape(0xDC00 + (v & 0x3FF), out);
                } else {
                    push_u_escape(cp, out);
                }
            }
        }
    }
    out.push(b'"');
}

fn push_u_escape(unit: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("\\u{unit:04X}").as_bytes());
}

/// A small writer for objects whose member order is QEMU's rather than sorted.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.extend_from_slice(b", ");
        }
        self.first = false;
        encode_str(k, self.out);
        self.out.extend_from_slice(b": ");
        self.out
    }

    fn value(&mut self, k: &str, v: &Value) {
        encode_value(v, self.key(k));
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// The server greeting, CRLF-terminated:
/// `{"QMP": {"version": {"qemu": {"micro": M, "minor": N, "major": K}, "package": P},
/// "capabilities": [...]}}`.
pub fn greeting(
    major: u64,
    minor: u64,
    micro: u64,
    package: &str,
    capabilities: &[&str],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut top = Obj::new(&mut out);
    let mut qmp = Obj::new(top.key("QMP"));
    let mut version = Obj::new(qmp.key("version"));
    let mut qemu = Obj::new(version.key("qemu"));
    qemu.value("micro", &micro.into());
    qemu.value("minor", &minor.into());
    qemu.value("major", &major.into());
    qemu.end();
    version.value("package", &package.into());
    version.end();
    let caps: Vec<Value> = capabilities.iter().map(|c| Value::from(*c)).collect();
    qmp.value("capabilities", &Value::Array(caps));
    qmp.end();
    top.end();
    out.extend_from_slice(b"\r\n");
    out
}

/// A command reply, CRLF-terminated: `{"return": V, "id": I}` or
/// `{"id": I, "error": {"class": C, "desc": D}}` (QEMU's member order), without `id` when
/// there is none.
pub fn reply(id: Option<&Value>, result: &Result<Value, QmpError>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut top = Obj::new(&mut out);
    match result {
        Ok(v) => {
            top.value("return", v);
            if let Some(id) = id {
                top.value("id", id);
            }
        }
        Err(e) => {
            if let Some(id) = id {
                top.value("id", id);
            }
            let mut err = Obj::new(top.key("error"));
            err.value("class", &e.class.as_str().into());
            err.value("desc", &e.desc.as_str().into());
            err.end();
        }
    }
    top.end();
    out.extend_from_slice(b"\r\n");
    out
}

/// An event, CRLF-terminated:
/// `{"timestamp": {"seconds": S, "microseconds": U}, "event": NAME, "data": {...}}`.
pub fn event(name: &str, data: Option<&Value>, seconds: i64, microseconds: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut top = Obj::new(&mut out);
    let mut ts = Obj::new(top.key("timestamp"));
    ts.value("seconds", &seconds.into());
    ts.value("microseconds", &microseconds.into());
    ts.end();
    top.value("event", &name.into());
    if let Some(d) = data {
        top.value("data", d);
    }
    top.end();
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(input: &[u8]) -> Vec<Result<Value, String>> {
        Parser::default()
            .feed_all(input)
            .into_iter()
            .map(|p| p.result)
            .collect()
    }

    fn err(desc: &str) -> Result<Value, String> {
        Err(desc.to_string())
    }

    #[test]
    fn values_in_one_chunk_and_split() {
        let input = b"{\"execute\": \"a\"}\r\n{\"execute\":'b', 'id': [1, 2.5, -3, true, null]}  ";
        let expect = vec![
            Ok(json!({"execute": "a"})),
            Ok(json!({"execute": "b", "id": [1, 2.5, -3, true, null]})),
        ];
        assert_eq!(parse(input), expect);
        let mut p = Parser::default();
        let mut got = Vec::new();
        for b in input.iter() {
            got.extend(
                p.feed_all(std::slice::from_ref(b))
                    .into_iter()
                    .map(|p| p.result),
            );
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn scalars_need_a_terminator_and_offsets_are_tracked() {
        let mut p = Parser::default();
        assert!(p.feed_all(b"  12").is_empty());
        assert!(p.in_message());
        let got = p.feed_all(b" \"x\"");
        assert_eq!(
            got,
            vec![
                Parsed {
                    result: Ok(json!(12)),
                    start: 2
                },
                Parsed {
                    result: Ok(json!("x")),
                    start: 5
                },
            ]
        );
        assert!(!p.in_message());
    }

    #[test]
    fn qemu_syntax_errors() {
        assert_eq!(
            parse(b"{ \"execute\": }"),
            vec![err("JSON parse error, expecting value")]
        );
        assert_eq!(
            parse(b"{\"a\" 1}"),
            vec![err("JSON parse error, missing : in object pair")]
        );
        assert_eq!(
            parse(b"{1: 2}"),
            vec![err("JSON parse error, key is not a string in object")]
        );
        assert_eq!(
            parse(b"[1 2]"),
            vec![err("JSON parse error, expected separator in list")]
        );
        assert_eq!(
            parse(b"{\"a\":1 \"b\":2}"),
            vec![err("JSON parse error, expected separator in dict")]
        );
        assert_eq!(
            parse(b"{\"a\":1,\"a\":2}"),
            vec![err("JSON parse error, duplicate key")]
        );
        assert_eq!(
            parse(b"[1,]"),
            vec![err("JSON parse error, expecting value")]
        );
        assert_eq!(
            parse(b"foo "),
            vec![err("JSON parse error, invalid keyword 'foo'")]
        );
        assert_eq!(parse(b"}"), vec![err("JSON parse error, expecting value")]);
        assert_eq!(
            parse(b"[\"\\x\"]"),
            vec![err("JSON parse error, invalid escape sequence in string")]
        );
        assert_eq!(
            parse(b"[\"\\uD800\"]"),
            vec![err(
                "JSON parse error, \\uD800 is not a valid Unicode character"
            )]
        );
        assert_eq!(
            parse(b"[\"\xC3\x28\"]"),
            vec![err("JSON parse error, invalid UTF-8 sequence in string")]
        );
    }

    #[test]
    fn lexical_errors_and_recovery() {
        // A stray byte, then recovery at the next structural character.
        assert_eq!(
            parse(b"@@@ {\"a\": 1}"),
            vec![err("JSON parse error, stray '@'"), Ok(json!({"a": 1})),]
        );
        // A control character inside a string; the rest of the line is skipped.
        assert_eq!(
            parse(b"\"ab\x01cd\" x\n{}"),
            vec![err("JSON parse error, stray '\"ab\u{1}'"), Ok(json!({})),]
        );
        // 0xFF resets a partial message.
        assert_eq!(
            parse(b"{\"execute\": \xff{\"a\": 2}"),
            vec![
                err("JSON parse error, stray '\u{FFFD}'"),
                Ok(json!({"a": 2})),
            ]
        );
        assert_eq!(parse(b"01 "), vec![err("JSON parse error, stray '01'"),]);
    }

    #[test]
    fn strings_and_numbers() {
        assert_eq!(
            parse(
                b"['a\\'b\"c', \"\\u00e9\\uD83D\\uDE00\\u0000\", \"\xC0\x80\", \"\xE2\x82\xAC\"]"
            ),
            vec![Ok(json!([
                "a'b\"c",
                "\u{e9}\u{1F600}\u{0}",
                "\u{0}",
                "\u{20AC}"
            ]))]
        );
        assert_eq!(
            parse(
                b"[9223372036854775807, 18446744073709551615, 18446744073709551616, -0, 1.0, 1e2]"
            ),
            vec![Ok(json!([
                i64::MAX,
                u64::MAX,
                18446744073709551616.0f64,
                0,
                1.0,
                100.0
            ]))]
        );
        assert_eq!(
            parse(b"[1e999, -1e999]"),
            vec![Ok(json!([f64::MAX, -f64::MAX]))]
        );
    }

    #[test]
    fn limits_and_resync() {
        let limits = Limits {
            max_message_size: 64,
            max_tokens: 20,
            max_depth: 4,
        };
        let mut p = Parser::new(limits);
        let mut input = Vec::new();
        input.extend_from_slice(b"[[[[[1]]]]] {\"a\": 1}");
        input.extend_from_slice(format!("[\"{}\", [\"]\"]] {{}}", "x".repeat(100)).as_bytes());
        input.extend_from_slice(format!("[{}1] {{}}", "1,".repeat(30)).as_bytes());
        let got: Vec<_> = p.feed_all(&input).into_iter().map(|p| p.result).collect();
        assert_eq!(
            got,
            vec![
                err("JSON nesting depth limit exceeded"),
                Ok(json!({"a": 1})),
                err("JSON token size limit exceeded"),
                Ok(json!({})),
                err("JSON token count limit exceeded"),
                Ok(json!({})),
            ]
        );
        // Depth 4 itself is fine.
        assert_eq!(Parser::new(limits).feed_all(b"[[[[1]]]]").len(), 1);
    }

    #[test]
    fn request_checks() {
        let ok = check_request(
            json!({"execute": "x", "arguments": {"a": 1}, "id": [1]}),
            false,
        );
        assert_eq!(
            ok,
            Ok(Request {
                id: Some(json!([1])),
                command: "x".into(),
                oob: false,
                arguments: Some(json!({"a": 1}).as_object().cloned().unwrap_or_default()),
            })
        );
        let desc =
            |v: Value, oob: bool| check_request(v, oob).map_err(|(id, e)| (id, e.desc)).err();
        assert_eq!(
            desc(json!(1), false),
            Some((None, "QMP input must be a JSON object".into()))
        );
        assert_eq!(
            desc(json!({"id": 1}), false),
            Some((Some(json!(1)), "QMP input lacks member 'execute'".into()))
        );
        assert_eq!(
            desc(json!({"execute": 1, "id": "a"}), false),
            Some((
                Some(json!("a")),
                "QMP input member 'execute' must be a string".into()
            ))
        );
        assert_eq!(
            desc(json!({"execute": "x", "arguments": []}), false),
            Some((
                None,
                "QMP input member 'arguments' must be an object".into()
            ))
        );
        assert_eq!(
            desc(json!({"execute": "x", "xyz": 1}), false),
            Some((None, "QMP input member 'xyz' is unexpected".into()))
        );
        assert_eq!(
            desc(json!({"exec-oob": "x"}), false),
            Some((None, "QMP input member 'exec-oob' is unexpected".into()))
        );
        assert_eq!(
            desc(json!({"exec-oob": "x", "execute": "y"}), true),
            Some((
                None,
                "QMP input member 'execute' clashes with 'exec-oob'".into()
            ))
        );
        assert!(check_request(json!({"exec-oob": "x"}), true).is_ok_and(|r| r.oob));
        assert!(is_oob(&json!({"exec-oob": "x"})));
        assert!(!is_oob(&json!({"exec-oob": "x", "execute": "y"})));
    }

    #[test]
    fn encoder_is_ascii_and_qemu_shaped() {
        let v = json!({"b": [1, -2, 0.1, 1.0, 1e300, 1.5e-7], "a": "é😀\u{7f}\n\"\u{1}/"});
        assert_eq!(
            to_string(&v),
            "{\"a\": \"\\u00E9\\uD83D\\uDE00\\u007F\\n\\\"\\u0001/\", \
             \"b\": [1, -2, 0.10000000000000001, 1, 1.0000000000000001e+300, 1.4999999999999999e-07]}"
        );
        assert_eq!(
            greeting(7, 2, 0, "petrel-0.1.0", &["oob"]),
            b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \
              \"package\": \"petrel-0.1.0\"}, \"capabilities\": [\"oob\"]}}\r\n"
        );
        assert_eq!(
            reply(Some(&json!(1)), &Ok(json!({}))),
            b"{\"return\": {}, \"id\": 1}\r\n"
        );
        assert_eq!(
            reply(None, &Err(QmpError::generic("x"))),
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\r\n"
        );
        assert_eq!(
            event("STOP", None, 1, 2),
            b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n"
        );
    }

    #[test]
    fn g17_matches_printf() {
        for (x, s) in [
            (0.5, "0.5"),
            (100.0, "100"),
            (1e16, "10000000000000000"),
            (1e17, "1e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1.0000000000000001e-05"),
            (-2.5, "-2.5"),
            (123456.789, "123456.789"),
            (std::f64::consts::PI, "3.1415926535897931"),
            (1.0 / 3.0, "0.33333333333333331"),
            (5e-324, "4.9406564584124654e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (2f64.powi(70), "1.1805916207174113e+21"),
        ] {
            assert_eq!(format_g17(x), s, "{x}");
        }
    }
}
