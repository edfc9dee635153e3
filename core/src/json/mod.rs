//! JSON in the core: the value of twin documents ([`Value`]), a strict parser, a compact
//! writer, RFC 7386 merge patches (applied and computed), and field-by-field readers of the few
//! documents the core receives (Platform answers, the saved device state).
//!
//! Hand-written instead of serde_json (with json-patch) for the browser bundle: serde_json, the
//! `BTreeMap` code of its object type and the serde machinery around them were about a tenth
//! of the wasm module. This value is small on purpose:
//! - a number keeps its JSON text, so no float parsing or printing enters the bundle and
//!   numbers go through the device exactly as written (`0.1` stays `0.1`, a 20-digit integer is
//!   not rounded); [`Number::as_u64`], [`Number::as_i64`] and [`Number::as_f64`] read it;
//! - an object is a `Vec` sorted by key, written in key order as serde_json's default map is;
//! - the parser follows RFC 8259 as serde_json does (no trailing commas or comments, strings
//!   are UTF-8 without raw control characters, lone surrogate escapes are refused) and nests at
//!   most 128 levels, so hostile input cannot exhaust the stack.
//!
//! [`Value`] implements serde's `Serialize` and `Deserialize`: a native app converts with
//! `serde_json::to_value` / `serde_json::from_value`. The browser build never calls those impls,
//! so they cost it nothing.

use crate::prelude::*;

mod fields;
// `pub(crate)`: `testing` re-exports `merge_patch_diff` from here.
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub(crate) mod merge;
mod parse;
mod serde_impls;
#[cfg(test)]
pub(crate) mod strategies;

use core::fmt;

pub(crate) use fields::{
    Object, optional_object, optional_string, optional_unsigned, parse_object, read, string,
    unsigned,
};
pub use merge::merge;
pub use parse::ParseError;

/// A JSON value.
///
/// Equality is structural; numbers compare by their text, so `1.0` and `1.00` differ (as do `1`
/// and `1.0` in serde_json).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object.
    Object(Map),
}

impl Value {
    /// Parses one JSON document (surrounding whitespace allowed).
    pub fn parse(text: &[u8]) -> Result<Self, ParseError> {
        parse::parse(text)
    }

    /// An object of `members` (a later duplicate key replaces an earlier one).
    pub fn object<'a>(members: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        // One copy of the loop for every caller's array length (bundle size).
        fn collect(members: &mut dyn Iterator<Item = (&str, Value)>) -> Value {
            let mut map = Map::new();
            for (key, value) in members {
                map.insert(key.to_owned(), value);
            }
            Value::Object(map)
        }
        collect(&mut members.into_iter())
    }

    /// The compact JSON text of this value.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Appends the compact JSON text of this value to `out` (for a host that writes a larger
    /// document around it, as the browser binding writes its outputs).
    pub fn write_to(&self, out: &mut String) {
        self.write(out);
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// True for an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Self::Object(_))
    }

    /// The members, when this is an object.
    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Self::Object(map) => Some(map),
            _ => None,
        }
    }

    /// The members, mutable, when this is an object.
    pub fn as_object_mut(&mut self) -> Option<&mut Map> {
        match self {
            Self::Object(map) => Some(map),
            _ => None,
        }
    }

    /// The items, when this is an array.
    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The text, when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(text) => Some(text),
            _ => None,
        }
    }

    /// The boolean, when this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(value) => Some(*value),
            _ => None,
        }
    }

    /// The number as a `u64`, when it is a non-negative integer written without fraction or
    /// exponent that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(number) => number.as_u64(),
            _ => None,
        }
    }

    /// The number as an `i64`, when it is an integer written without fraction or exponent
    /// that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Number(number) => number.as_i64(),
            _ => None,
        }
    }

    /// The number as the nearest finite `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(number) => number.as_f64(),
            _ => None,
        }
    }

    /// The member `key`, when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(true) => out.push_str("true"),
            Self::Bool(false) => out.push_str("false"),
            Self::Number(number) => out.push_str(&number.0),
            Self::String(text) => write_string(out, text),
            Self::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Object(map) => {
                out.push('{');
                for (index, (key, member)) in map.entries.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write_string(out, key);
                    out.push(':');
                    member.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Appends `text` as a JSON string: quotes, backslashes and control characters escaped, all
/// else (including non-ASCII) as it is.
pub fn write_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut plain_from = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `index` is at an ASCII byte, so the slice ends on a character boundary (`get`, not
        // indexing: no panic path in the bundle).
        out.push_str(text.get(plain_from..index).unwrap_or_default());
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
        plain_from = index + 1;
    }
    out.push_str(text.get(plain_from..).unwrap_or_default());
    out.push('"');
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Self::String(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Self::String(value.to_owned())
    }
}

impl From<Number> for Value {
    fn from(value: Number) -> Self {
        Self::Number(value)
    }
}

impl From<Map> for Value {
    fn from(value: Map) -> Self {
        Self::Object(value)
    }
}

impl From<Vec<Value>> for Value {
    fn from(value: Vec<Value>) -> Self {
        Self::Array(value)
    }
}

/// NaN and the infinities, which JSON cannot express, are `null` (as in serde_json).
impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Number::from_f64(value).map_or(Self::Null, Self::Number)
    }
}

/// `None` is `null`.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

macro_rules! from_integer {
    ($($integer:ty),*) => {$(
        impl From<$integer> for Value {
            fn from(value: $integer) -> Self {
                Self::Number(Number::from(value))
            }
        }
        impl From<$integer> for Number {
            fn from(value: $integer) -> Self {
                Number(text!(value))
            }
        }
    )*};
}
from_integer!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// A JSON number, kept as the text it was written with (always valid JSON number syntax).
#[derive(Clone, PartialEq, Eq)]
pub struct Number(String);

impl Number {
    /// The number of a finite float; `None` for NaN and the infinities, which JSON cannot
    /// express.
    pub fn from_f64(value: f64) -> Option<Self> {
        // Debug, not Display: it keeps `1.0` a float and writes large and small magnitudes with
        // an exponent, which JSON accepts. The one use of `core::fmt` left in the core: the
        // shortest text that reads back as the same float is no job for `text!`, and only
        // serde's `visit_f64` (JSON from a serde deserializer) comes here.
        value.is_finite().then(|| Self(alloc::format!("{value:?}")))
    }

    /// The text, e.g. `-12.5e3`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As a `u64`, when written as a non-negative integer (no fraction or exponent) that fits.
    pub fn as_u64(&self) -> Option<u64> {
        if !self.0.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        self.0.parse().ok()
    }

    /// As an `i64`, when written as an integer (no fraction or exponent) that fits.
    pub fn as_i64(&self) -> Option<i64> {
        let digits = self.0.strip_prefix('-').unwrap_or(&self.0);
        if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        self.0.parse().ok()
    }

    /// As the nearest `f64`; `None` when its magnitude is beyond `f64`'s range.
    pub fn as_f64(&self) -> Option<f64> {
        self.0.parse::<f64>().ok().filter(|value| value.is_finite())
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A JSON object: members kept sorted by key, so lookups are binary searches and the written
/// form is in key order.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Map {
    entries: Vec<(String, Value)>,
}

impl Map {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True without members.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(probe, _)| probe.as_str().cmp(key))
    }

    /// The member `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let index = self.find(key).ok()?;
        Some(&self.entries[index].1)
    }

    /// The member `key`, mutable.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        let index = self.find(key).ok()?;
        Some(&mut self.entries[index].1)
    }

    /// True when `key` is a member.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets member `key`, returning the value it replaces.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        // Parsed and built objects mostly arrive in key order: appending is the common case.
        if self.entries.last().is_none_or(|(last, _)| *last < key) {
            self.entries.push((key, value));
            return None;
        }
        match self.find(&key) {
            Ok(index) => Some(core::mem::replace(&mut self.entries[index].1, value)),
            Err(index) => {
                self.entries.insert(index, (key, value));
                None
            }
        }
    }

    /// Takes member `key` out.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let index = self.find(key).ok()?;
        Some(self.entries.remove(index).1)
    }

    /// The member `key`, inserted as `null` first when missing.
    fn get_or_insert_null(&mut self, key: &str) -> &mut Value {
        let index = match self.find(key) {
            Ok(index) => index,
            Err(index) => {
                self.entries.insert(index, (key.to_owned(), Value::Null));
                index
            }
        };
        &mut self.entries[index].1
    }

    /// The members in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries
            .iter()
            .map(|(key, value)| (key.as_str(), value))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(key, _)| key.as_str())
    }
}

impl FromIterator<(String, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(members: I) -> Self {
        let mut map = Self::new();
        for (key, value) in members {
            map.insert(key, value);
        }
        map
    }
}

impl IntoIterator for Map {
    type Item = (String, Value);
    type IntoIter = alloc::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written as the object it is (the clone is for debugging output only).
        fmt::Debug::fmt(&Value::Object(self.clone()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Value {
        Value::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn writes_compactly_in_key_order() {
        let value = parsed(r#" { "b" : [1, -2.5e3, true, null], "a": {"z": "x\"y\\\n\u0001é"} } "#);
        assert_eq!(
            value.to_json(),
            r#"{"a":{"z":"x\"y\\\n\u0001é"},"b":[1,-2.5e3,true,null]}"#
        );
        assert_eq!(parsed(&value.to_json()), value);
    }

    #[test]
    fn numbers_keep_their_text() {
        let value = parsed("[0.1, 12345678901234567890123, 1e400, -0, 18446744073709551615]");
        assert_eq!(
            value.to_json(),
            "[0.1,12345678901234567890123,1e400,-0,18446744073709551615]"
        );
        let items = value.as_array().unwrap();
        assert_eq!(items[0].as_f64(), Some(0.1));
        assert_eq!(items[0].as_u64(), None);
        assert_eq!(items[1].as_u64(), None, "does not fit");
        assert_eq!(items[2].as_f64(), None, "beyond f64");
        assert_eq!(items[3].as_i64(), Some(0));
        assert_eq!(items[4].as_u64(), Some(u64::MAX));
        assert_eq!(parsed("-7").as_i64(), Some(-7));
        assert_eq!(parsed("-7").as_u64(), None);
        assert_eq!(Value::from(42u64).to_json(), "42");
        assert_eq!(Value::from(-3i32).to_json(), "-3");
        assert_eq!(Number::from_f64(1.0).unwrap().as_str(), "1.0");
        assert_eq!(Number::from_f64(1e21).unwrap().as_str(), "1e21");
        assert_eq!(Number::from_f64(f64::NAN), None);
        // Whatever from_f64 writes parses back as a number.
        for float in [0.1, -2.5e-8, 1e300, f64::MAX, f64::MIN_POSITIVE] {
            let text = Number::from_f64(float).unwrap().as_str().to_owned();
            assert_eq!(parsed(&text).as_f64(), Some(float), "{text}");
        }
    }

    #[test]
    fn maps_stay_sorted_and_last_duplicate_wins() {
        let value = parsed(r#"{"b":1,"a":2,"c":3,"a":4}"#);
        let map = value.as_object().unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(map.get("a"), Some(&Value::from(4u8)));
        let mut map = map.clone();
        assert_eq!(map.insert("0".into(), Value::Null), None);
        assert_eq!(
            map.insert("b".into(), Value::Bool(true)),
            Some(Value::from(1u8))
        );
        assert_eq!(map.remove("c"), Some(Value::from(3u8)));
        assert_eq!(Value::Object(map).to_json(), r#"{"0":null,"a":4,"b":true}"#);
    }

    #[test]
    fn agrees_with_serde_json() {
        let texts = [
            r#"{"desired":{"rate":5,"mode":{"eco":true,"levels":[1,2,3]}},"s":"\ud83d\ude00 \/ \b\f"}"#,
            r#"[[], {}, "", 0, -1, 1.5, 2E+3, 3e-2, false]"#,
            r#""\u0000\u001f\u007f""#,
        ];
        for text in texts {
            let ours = parsed(text);
            let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
            let reread: serde_json::Value = serde_json::from_str(&ours.to_json()).unwrap();
            assert_eq!(reread, theirs, "{text}");
            assert_eq!(serde_json::to_value(&ours).unwrap(), theirs, "{text}");
            let converted: Value = serde_json::from_value(theirs.clone()).unwrap();
            let reread: serde_json::Value = serde_json::from_str(&converted.to_json()).unwrap();
            assert_eq!(reread, theirs, "{text}");
        }
    }
}
