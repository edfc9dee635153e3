//! Reading the few JSON documents the core receives (Platform responses, the saved device
//! state) field by field.
//!
//! Hand-written instead of `#[derive(Deserialize)]` for the browser bundle: every derived type
//! cost its own copy of a struct deserializer. The rules are serde's defaults: a missing or
//! `null` optional field is `None`, unknown fields are ignored, a field of the wrong type is an
//! error that names it.

use crate::prelude::*;

use super::{Map, Value};
use crate::text::{Describe, Piece};

/// A JSON object.
pub(crate) type Object = Map;

/// Parses `bytes` as a JSON object.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Object, String> {
    match Value::parse(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(text!("expected a JSON object, found ", kind(&other))),
        Err(error) => Err(error.text()),
    }
}

/// The JSON type of `value`, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(key: &str, expected: &str, found: &Value) -> String {
    text!(
        "field `",
        key,
        "`: expected ",
        expected,
        ", found ",
        kind(found)
    )
}

fn missing(key: &str) -> String {
    text!("missing field `", key, '`')
}

/// The field `key`, unless it is missing or `null`.
fn present<'a>(object: &'a Object, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

/// A required string field.
pub(crate) fn string(object: &Object, key: &str) -> Result<String, String> {
    optional_string(object, key)?.ok_or_else(|| missing(key))
}

/// An optional string field.
pub(crate) fn optional_string(object: &Object, key: &str) -> Result<Option<String>, String> {
    match present(object, key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

/// A required unsigned integer field.
pub(crate) fn unsigned(object: &Object, key: &str) -> Result<u64, String> {
    optional_unsigned(object, key)?.ok_or_else(|| missing(key))
}

/// An optional unsigned integer field.
pub(crate) fn optional_unsigned(object: &Object, key: &str) -> Result<Option<u64>, String> {
    match present(object, key) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong_type(key, "an unsigned integer", value)),
    }
}

/// `value` read from the field `key`, its error (a timestamp or other text that does not
/// parse) named after the field.
pub(crate) fn read<T, E: Piece>(key: &str, value: Result<T, E>) -> Result<T, String> {
    value.map_err(|error| text!("field `", key, "`: ", error))
}

/// An optional object field.
pub(crate) fn optional_object<'a>(
    object: &'a Object,
    key: &str,
) -> Result<Option<&'a Object>, String> {
    match present(object, key) {
        None => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(other) => Err(wrong_type(key, "an object", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Object {
        parse_object(text.as_bytes()).unwrap()
    }

    #[test]
    fn fields_follow_serdes_defaults() {
        let o = object(r#"{"s":"x","n":7,"z":null,"o":{"a":1},"extra":[1]}"#);
        assert_eq!(string(&o, "s"), Ok("x".into()));
        assert_eq!(optional_string(&o, "z"), Ok(None));
        assert_eq!(optional_string(&o, "missing"), Ok(None));
        assert_eq!(unsigned(&o, "n"), Ok(7));
        assert_eq!(optional_unsigned(&o, "z"), Ok(None));
        assert!(optional_object(&o, "o").unwrap().is_some());
        assert_eq!(string(&o, "missing"), Err("missing field `missing`".into()));
        assert_eq!(
            string(&o, "n"),
            Err("field `n`: expected a string, found a number".into())
        );
        assert_eq!(
            unsigned(&object(r#"{"n":-1}"#), "n"),
            Err("field `n`: expected an unsigned integer, found a number".into())
        );
        assert_eq!(
            optional_object(&o, "s"),
            Err("field `s`: expected an object, found a string".into())
        );
    }

    #[test]
    fn only_objects_parse() {
        assert_eq!(
            parse_object(b"[1]"),
            Err("expected a JSON object, found an array".into())
        );
        assert!(parse_object(b"{").is_err());
    }
}
