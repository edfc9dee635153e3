//! The JSON parser: RFC 8259, strict, recursive descent with a depth limit.

use crate::prelude::*;

use super::{Map, Number, Value};
use crate::text::Describe;

/// How deeply arrays and objects may nest (serde_json's limit too): deeper input is refused
/// instead of exhausting the stack.
const MAX_DEPTH: u32 = 128;

/// Why a text is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    problem: &'static str,
    position: usize,
}

impl Describe for ParseError {
    fn describe(&self, out: &mut String) {
        put!(
            out,
            "invalid json: ",
            self.problem,
            " at byte ",
            self.position
        );
    }
}

described!(ParseError);

impl ParseError {
    /// What is wrong, e.g. "expected a value".
    pub fn problem(&self) -> &'static str {
        self.problem
    }

    /// The byte offset where the problem was found.
    pub fn position(&self) -> usize {
        self.position
    }
}

pub(super) fn parse(text: &[u8]) -> Result<Value, ParseError> {
    let mut parser = Parser { text, at: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at < text.len() {
        return Err(parser.error("trailing characters after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, problem: &'static str) -> ParseError {
        ParseError {
            problem,
            position: self.at,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    /// Consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: u32) -> Result<Value, ParseError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("expected a value, found the end")),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.array(depth),
            Some(b'{') => self.object(depth),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &'static str, value: Value) -> Result<Value, ParseError> {
        if self.text[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn nested(&mut self, depth: u32) -> Result<u32, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("nested more than 128 levels deep"));
        }
        self.at += 1;
        self.skip_whitespace();
        Ok(depth + 1)
    }

    fn array(&mut self, depth: u32) -> Result<Value, ParseError> {
        let depth = self.nested(depth)?;
        let mut items = Vec::new();
        if self.eat(b']') {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            if self.eat(b']') {
                return Ok(Value::Array(items));
            }
            if !self.eat(b',') {
                return Err(self.error("expected ',' or ']'"));
            }
        }
    }

    fn object(&mut self, depth: u32) -> Result<Value, ParseError> {
        let depth = self.nested(depth)?;
        let mut members = Map::new();
        if self.eat(b'}') {
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a member name in quotes"));
            }
            let key = self.string()?;
            self.skip_whitespace();
            if !self.eat(b':') {
                return Err(self.error("expected ':'"));
            }
            let value = self.value(depth)?;
            members.insert(key, value);
            self.skip_whitespace();
            if self.eat(b'}') {
                return Ok(Value::Object(members));
            }
            if !self.eat(b',') {
                return Err(self.error("expected ',' or '}'"));
            }
        }
    }

    /// Consumes digits; false when there was none.
    fn digits(&mut self) -> bool {
        let start = self.at;
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
        self.at > start
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.at;
        self.eat(b'-');
        // No leading zeros: "0" alone, or a digit 1-9 and more digits.
        let integer_part =
            self.eat(b'0') || matches!(self.peek(), Some(b'1'..=b'9')) && self.digits();
        if !integer_part {
            return Err(self.error("expected a digit"));
        }
        if self.eat(b'.') && !self.digits() {
            return Err(self.error("expected a digit after '.'"));
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !self.digits() {
                return Err(self.error("expected a digit in the exponent"));
            }
        }
        let text = self.text[start..self.at]
            .iter()
            .map(|&byte| char::from(byte));
        Ok(Value::Number(Number(text.collect())))
    }

    /// A string; `self.at` is at its opening quote.
    fn string(&mut self) -> Result<String, ParseError> {
        self.at += 1;
        let start = self.at;
        let mut bytes = Vec::new();
        loop {
            let plain_from = self.at;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.at += 1;
            }
            bytes.extend_from_slice(&self.text[plain_from..self.at]);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.at += 1;
                    let character = self.escape()?;
                    let mut buffer = [0; 4];
                    bytes.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
                }
                Some(_) => return Err(self.error("control character in a string")),
            }
        }
        self.at += 1;
        String::from_utf8(bytes).map_err(|error| ParseError {
            problem: "invalid utf-8 in a string",
            // Escapes only add valid UTF-8, so the offset is within the raw text until the first
            // escape; good enough to point at the string.
            position: start + error.utf8_error().valid_up_to(),
        })
    }

    /// The character of an escape; `self.at` is after the backslash.
    fn escape(&mut self) -> Result<char, ParseError> {
        let Some(kind) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        self.at += 1;
        Ok(match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                let code = match unit {
                    0xd800..=0xdbff => {
                        if !(self.eat(b'\\') && self.eat(b'u')) {
                            return Err(self.error("lone leading surrogate in an escape"));
                        }
                        let low = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(self.error("lone leading surrogate in an escape"));
                        }
                        0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                    }
                    0xdc00..=0xdfff => {
                        return Err(self.error("lone trailing surrogate in an escape"));
                    }
                    _ => unit,
                };
                // Not a surrogate, so a valid scalar value.
                char::from_u32(code).ok_or_else(|| self.error("invalid escape"))?
            }
            _ => {
                self.at -= 1;
                return Err(self.error("invalid escape"));
            }
        })
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut unit = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|byte| char::from(byte).to_digit(16))
                .ok_or_else(|| self.error("expected 4 hex digits in a \\u escape"))?;
            unit = unit * 16 + digit;
            self.at += 1;
        }
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> (String, usize) {
        let error = parse(text.as_bytes()).unwrap_err();
        (error.problem().to_owned(), error.position())
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        let refused = [
            "",
            " ",
            "nul",
            "tru",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "[1 2]",
            "01",
            "-",
            "1.",
            "1e",
            "+1",
            ".5",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"a\u{1}\"",
            "[",
            "{",
            "{\"a\"}",
            "1 2",
            "NaN",
            "[1] x",
            "// c\n1",
            "'a'",
        ];
        for text in refused {
            assert!(parse(text.as_bytes()).is_err(), "{text:?} parsed");
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "serde_json accepts {text:?}"
            );
        }
        assert!(parse(b"\"\xff\"").is_err());
        assert_eq!(error("[1,]"), ("expected a value".into(), 3));
        assert_eq!(error("{\"a\" 1}"), ("expected ':'".into(), 5));
        assert_eq!(error("\"\\q\""), ("invalid escape".into(), 2));
        assert_eq!(
            parse(b"[tru]").unwrap_err().to_string(),
            "invalid json: expected a value at byte 1"
        );
    }

    #[test]
    fn depth_is_limited() {
        let deep = |levels: usize| "[".repeat(levels) + &"]".repeat(levels);
        assert!(parse(deep(128).as_bytes()).is_ok());
        assert_eq!(
            error(&deep(129)),
            ("nested more than 128 levels deep".into(), 128)
        );
        assert!(parse(deep(100_000).as_bytes()).is_err());
    }

    #[test]
    fn escapes_decode() {
        let value = parse(br#""\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(value.as_str(), Some("\"\\/\u{8}\u{c}\n\r\té😀"));
    }
}
