//! A small JSON parser that remembers where every value and key stands in the file.
//!
//! serde_json reports a line and column only for the first error and forgets positions once a
//! value is parsed; the scenario checks need the position of any value to report every problem
//! in a file. The parser is strict RFC 8259 (no comments, no trailing commas), rejects duplicate
//! keys, bounds nesting by [`JSON_DEPTH_MAX`] and never panics, whatever the bytes.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use crate::limits::JSON_DEPTH_MAX;

/// A position in the source: 1-based line and column, the column counted in characters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column in Unicode scalar values, from 1.
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A JSON value with the position of its first character.
#[derive(Clone, Debug, PartialEq)]
pub struct Json {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub value: Value,
}

/// The kinds of JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number, with the exactness of its literal kept.
    Number(Number),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, members in file order; keys are unique.
    Object(Vec<Member>),
}

/// An object member.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The key, unescaped.
    pub key: String,
    /// Where the key's opening quote stands.
    pub key_pos: Pos,
    /// The value.
    pub value: Json,
}

/// A JSON number. Integer literals that fit 64 bits stay exact; others become `Float`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A non-negative integer literal that fits in `u64`.
    Unsigned(u64),
    /// A negative integer literal that fits in `i64`.
    Signed(i64),
    /// Any other finite number (fractions, exponents, integers beyond 64 bits).
    Float(f64),
}

impl Number {
    /// The number as a float (exact for integers up to 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Unsigned(n) => n as f64,
            Number::Signed(n) => n as f64,
            Number::Float(x) => x,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Unsigned(n) => write!(f, "{n}"),
            Number::Signed(n) => write!(f, "{n}"),
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

impl Json {
    /// The member `key` of an object, if this is an object that has it.
    pub fn member(&self, key: &str) -> Option<&Member> {
        match &self.value {
            Value::Object(members) => members.iter().find(|m| m.key == key),
            _ => None,
        }
    }

    /// A short description of the value for error messages: `-5`, `"abc"`, `an array`.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => {
                const SHOWN_CHARS_MAX: usize = 40;
                if s.chars().count() > SHOWN_CHARS_MAX {
                    let head: String = s.chars().take(SHOWN_CHARS_MAX).collect();
                    format!("{:?}…", head)
                } else {
                    format!("{s:?}")
                }
            }
            Value::Array(_) => "an array".to_owned(),
            Value::Object(_) => "an object".to_owned(),
        }
    }

    /// Converts into a `serde_json::Value` for typed deserialization.
    pub fn to_serde(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(Number::Unsigned(n)) => (*n).into(),
            Value::Number(Number::Signed(n)) => (*n).into(),
            Value::Number(Number::Float(x)) => {
                serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) => serde_json::Value::Array(items.iter().map(Json::to_serde).collect()),
            Value::Object(members) => {
                serde_json::Value::Object(members.iter().map(|m| (m.key.clone(), m.value.to_serde())).collect())
            }
        }
    }
}

/// A syntax error: where, and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it found wrong, lowercase, no trailing period.
    pub message: String,
}

/// Parses one JSON document. A UTF-8 byte order mark at the start is skipped.
pub fn parse(bytes: &[u8]) -> Result<Json, SyntaxError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut parser = Parser { bytes, at: 0, line: 1, line_start: 0, counted: Cell::new((0, 0)) };
    parser.skip_whitespace();
    if parser.at == bytes.len() {
        return Err(parser.error("the file is empty; expected a JSON object"));
    }
    let json = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at < bytes.len() {
        return Err(
            parser.error(format!("expected the end of the file after the JSON value, found {}", parser.found()))
        );
    }
    Ok(json)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
    line: u32,
    line_start: usize,
    /// Characters counted on the current line up to a byte offset: `(offset, characters)`, so
    /// that positions along a long line (a scenario sent as one line) cost what the parser
    /// advanced since the last one, not the whole line again.
    counted: Cell<(usize, usize)>,
}

impl Parser<'_> {
    fn pos(&self) -> Pos {
        let (mut from, mut chars) = self.counted.get();
        if from < self.line_start || from > self.at {
            (from, chars) = (self.line_start, 0);
        }
        // Count characters, not bytes: every byte that does not continue a UTF-8 sequence.
        chars += self.bytes[from..self.at].iter().filter(|&&b| (b & 0xC0) != 0x80).count();
        self.counted.set((self.at, chars));
        Pos { line: self.line, column: u32::try_from(chars + 1).unwrap_or(u32::MAX) }
    }

    fn error(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError { pos: self.pos(), message: message.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// What stands at the current position, for "found ..." in messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the file".to_owned(),
            Some(b) if b.is_ascii_graphic() => format!("`{}`", b as char),
            Some(b'\n') => "a line break".to_owned(),
            Some(b) => {
                let rest = &self.bytes[self.at..];
                let len = utf8_len(b).min(rest.len());
                match std::str::from_utf8(&rest[..len]) {
                    Ok(s) if !s.chars().any(char::is_control) => format!("`{s}`"),
                    _ => format!("byte 0x{b:02x}"),
                }
            }
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' => self.at += 1,
                b'\n' => {
                    self.at += 1;
                    self.line = self.line.saturating_add(1);
                    self.line_start = self.at;
                }
                _ => break,
            }
        }
    }

    fn expect_literal(&mut self, literal: &str, value: Value) -> Result<Json, SyntaxError> {
        let pos = self.pos();
        if self.bytes[self.at..].starts_with(literal.as_bytes()) {
            self.at += literal.len();
            Ok(Json { pos, value })
        } else {
            Err(self.error(format!("expected a JSON value, found {}", self.found_word())))
        }
    }

    /// The bare word at the current position (for `nul`, `True`, `NaN`, ...).
    fn found_word(&self) -> String {
        let rest = &self.bytes[self.at..];
        let len = rest.iter().take(20).take_while(|b| b.is_ascii_alphanumeric()).count();
        if len == 0 {
            return self.found();
        }
        format!("`{}`", String::from_utf8_lossy(&rest[..len]))
    }

    fn value(&mut self, depth: usize) -> Result<Json, SyntaxError> {
        match self.peek() {
            None => Err(self.error("unexpected end of the file; expected a JSON value")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => {
                let pos = self.pos();
                let s = self.string()?;
                Ok(Json { pos, value: Value::String(s) })
            }
            Some(b't') => self.expect_literal("true", Value::Bool(true)),
            Some(b'f') => self.expect_literal("false", Value::Bool(false)),
            Some(b'n') => self.expect_literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error(format!("expected a JSON value, found {}", self.found_word()))),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), SyntaxError> {
        if depth > JSON_DEPTH_MAX {
            return Err(
                self.error(format!("arrays and objects nest deeper than {JSON_DEPTH_MAX} levels (JSON_DEPTH_MAX)"))
            );
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<Json, SyntaxError> {
        self.enter(depth)?;
        let pos = self.pos();
        self.at += 1; // `[`
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json { pos, value: Value::Array(items) });
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_whitespace();
                    if self.peek() == Some(b']') {
                        return Err(self.error("trailing comma before `]`"));
                    }
                }
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json { pos, value: Value::Array(items) });
                }
                _ => return Err(self.error(format!("expected `,` or `]` in the array, found {}", self.found()))),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, SyntaxError> {
        self.enter(depth)?;
        let pos = self.pos();
        self.at += 1; // `{`
        let mut members: Vec<Member> = Vec::new();
        // Keys seen so far, for the duplicate check; a map keeps it linear in huge objects.
        let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json { pos, value: Value::Object(members) });
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error(format!("expected a key in double quotes, found {}", self.found())));
            }
            let key_pos = self.pos();
            let key = self.string()?;
            if let Some(first) = seen.insert(key.clone(), key_pos) {
                return Err(SyntaxError { pos: key_pos, message: format!("duplicate key {key:?} (first at {first})") });
            }
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error(format!("expected `:` after the key, found {}", self.found())));
            }
            self.at += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            members.push(Member { key, key_pos, value });
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_whitespace();
                    if self.peek() == Some(b'}') {
                        return Err(self.error("trailing comma before `}`"));
                    }
                }
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json { pos, value: Value::Object(members) });
                }
                _ => return Err(self.error(format!("expected `,` or `}}` in the object, found {}", self.found()))),
            }
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.at += 1; // `"`
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("unexpected end of the file inside a string"));
            };
            match b {
                b'"' => {
                    self.at += 1;
                    // Escapes only ever produce valid UTF-8; raw bytes were checked below.
                    return String::from_utf8(out).map_err(|_| self.error("invalid UTF-8 in a string"));
                }
                b'\\' => {
                    self.at += 1;
                    let escape = self.peek();
                    self.at += 1;
                    match escape {
                        Some(b'"') => out.push(b'"'),
                        Some(b'\\') => out.push(b'\\'),
                        Some(b'/') => out.push(b'/'),
                        Some(b'b') => out.push(0x08),
                        Some(b'f') => out.push(0x0C),
                        Some(b'n') => out.push(b'\n'),
                        Some(b'r') => out.push(b'\r'),
                        Some(b't') => out.push(b'\t'),
                        Some(b'u') => {
                            let c = self.unicode_escape()?;
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        _ => {
                            self.at -= 1;
                            return Err(self
                                .error(format!("invalid escape `\\{}` in a string", self.found().trim_matches('`'))));
                        }
                    }
                }
                0x00..=0x1F => {
                    return Err(self.error("control character in a string; write it as an escape like `\\n`"));
                }
                0x20..=0x7F => {
                    out.push(b);
                    self.at += 1;
                }
                _ => {
                    let len = utf8_len(b);
                    let end = self.at + len;
                    match self.bytes.get(self.at..end).map(std::str::from_utf8) {
                        Some(Ok(s)) => {
                            out.extend_from_slice(s.as_bytes());
                            self.at = end;
                        }
                        _ => return Err(self.error(format!("invalid UTF-8 (byte 0x{b:02x}) in a string"))),
                    }
                }
            }
        }
    }

    /// After `\u`: four hex digits, and a low surrogate escape after a high one.
    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.bytes[self.at..].starts_with(b"\\u") {
                return Err(self.error("a high surrogate `\\u` escape must be followed by a low one"));
            }
            self.at += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error("a high surrogate `\\u` escape must be followed by a low one"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.error("lone surrogate in a `\\u` escape"))
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let digits = self.bytes.get(self.at..self.at + 4);
        let value = digits
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok());
        match value {
            Some(v) => {
                self.at += 4;
                Ok(v)
            }
            None => Err(self.error("expected four hex digits after `\\u`")),
        }
    }

    fn number(&mut self) -> Result<Json, SyntaxError> {
        let pos = self.pos();
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error(format!("expected a digit, found {}", self.found()))),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.at += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error(format!("expected a digit after the decimal point, found {}", self.found())));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error(format!("expected a digit in the exponent, found {}", self.found())));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.error("leading zeros are not allowed in numbers"));
        }
        // The literal is ASCII digits, sign, point and exponent only.
        let text = std::str::from_utf8(&self.bytes[start..self.at]).unwrap_or("");
        let number = if integer && !negative {
            text.parse::<u64>().ok().map(Number::Unsigned)
        } else if integer {
            text.parse::<i64>().ok().map(Number::Signed)
        } else {
            None
        };
        let number = match number {
            Some(n) => n,
            None => match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Number::Float(x),
                _ => {
                    const SHOWN_CHARS_MAX: usize = 24;
                    let shown = match text.len() > SHOWN_CHARS_MAX {
                        true => format!("{}… ({} characters)", &text[..SHOWN_CHARS_MAX], text.len()),
                        false => text.to_owned(),
                    };
                    return Err(SyntaxError { pos, message: format!("number {shown} is out of range") });
                }
            },
        };
        Ok(Json { pos, value: Value::Number(number) })
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }
}

/// Length of the UTF-8 sequence that starts with byte `b` (1 for invalid leading bytes).
fn utf8_len(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        let e = parse(text.as_bytes()).unwrap_err();
        format!("{}: {}", e.pos, e.message)
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let json = parse("{\n  \"é\": [1,\n   true]\n}".as_bytes()).unwrap();
        let member = json.member("é").unwrap();
        assert_eq!(member.key_pos, Pos { line: 2, column: 3 });
        let Value::Array(items) = &member.value.value else { panic!("not an array") };
        assert_eq!(items[0].pos, Pos { line: 2, column: 9 });
        assert_eq!(items[1].pos, Pos { line: 3, column: 4 });
    }

    #[test]
    fn numbers_keep_their_exactness() {
        let n = |s: &str| match parse(s.as_bytes()).unwrap().value {
            Value::Number(n) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(n("18446744073709551615"), Number::Unsigned(u64::MAX));
        assert_eq!(n("-5"), Number::Signed(-5));
        assert_eq!(n("18446744073709551616"), Number::Float(18446744073709551616.0));
        assert_eq!(n("2.5e3"), Number::Float(2500.0));
        assert_eq!(error("1e400"), "1:1: number 1e400 is out of range");
        let long = format!("1{}", "0".repeat(400));
        assert_eq!(error(&long), "1:1: number 100000000000000000000000… (401 characters) is out of range");
    }

    #[test]
    fn syntax_errors_say_where_and_what() {
        assert_eq!(error(""), "1:1: the file is empty; expected a JSON object");
        assert_eq!(error("{\"a\": 1,}"), "1:9: trailing comma before `}`");
        assert_eq!(error("{\"a\": 1"), "1:8: expected `,` or `}` in the object, found the end of the file");
        assert_eq!(error("{\"a\": 1, \"a\": 2}"), "1:10: duplicate key \"a\" (first at 1:2)");
        assert_eq!(error("[nul]"), "1:2: expected a JSON value, found `nul`");
        assert_eq!(error("\"\\x\""), "1:3: invalid escape `\\x` in a string");
        assert_eq!(error("01"), "1:2: leading zeros are not allowed in numbers");
        assert_eq!(error("{} {}"), "1:4: expected the end of the file after the JSON value, found `{`");
        assert_eq!(error("\"\u{7}\""), "1:2: control character in a string; write it as an escape like `\\n`");
        assert_eq!(error("[\"\\ud800\"]"), "1:9: a high surrogate `\\u` escape must be followed by a low one");
    }

    #[test]
    fn invalid_utf8_and_deep_nesting_are_errors() {
        assert_eq!(error_bytes(b"\"\xff\""), "1:2: invalid UTF-8 (byte 0xff) in a string");
        assert_eq!(error_bytes(b"\xff"), "1:1: expected a JSON value, found byte 0xff");
        let deep = "[".repeat(100_000);
        assert_eq!(error(&deep), "1:65: arrays and objects nest deeper than 64 levels (JSON_DEPTH_MAX)");
        let ok = format!("{}{}", "[".repeat(JSON_DEPTH_MAX), "]".repeat(JSON_DEPTH_MAX));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    fn error_bytes(bytes: &[u8]) -> String {
        let e = parse(bytes).unwrap_err();
        format!("{}: {}", e.pos, e.message)
    }

    #[test]
    fn escapes_unescape() {
        let json = parse(br#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(json.value, Value::String("a\"\\/\u{8}\u{c}\n\r\té😀".to_owned()));
    }
}
