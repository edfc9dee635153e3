//! RFC 7386 JSON merge patches: applying one to a document ([`merge`]) and computing the one
//! that turns a document into another ([`merge_patch_diff`], its inverse).

use crate::prelude::*;

use super::{Map, Value};

/// Applies the RFC 7386 merge patch `patch` to `target`: an object patch sets its members
/// (`null` removes one, nested objects merge), anything else replaces `target` whole.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(members) = target else {
        return;
    };
    for (key, value) in &patch.entries {
        if value.is_null() {
            members.remove(key);
        } else {
            merge(members.get_or_insert_null(key), value);
        }
    }
}

/// The RFC 7386 merge patch that turns `from` into `to`: changed and added members with their
/// new values, removed members as `null`, nested objects diffed recursively, anything else
/// replaced whole. Equal objects give `{}`.
///
/// `json::merge(&mut from, &merge_patch_diff(&from, &to))` yields `to` whenever `to` has no
/// `null` object members (a merge patch cannot set a member to `null`).
pub fn merge_patch_diff(from: &Value, to: &Value) -> Value {
    let (Value::Object(from), Value::Object(to)) = (from, to) else {
        return to.clone();
    };
    let mut patch = Map::new();
    for (name, to_value) in to.iter() {
        match from.get(name) {
            Some(from_value) if from_value == to_value => {}
            Some(from_value @ Value::Object(_)) if to_value.is_object() => {
                patch.insert(name.to_owned(), merge_patch_diff(from_value, to_value));
            }
            _ => {
                patch.insert(name.to_owned(), to_value.clone());
            }
        }
    }
    for name in from.keys() {
        if !to.contains_key(name) {
            patch.insert(name.to_owned(), Value::Null);
        }
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::json::strategies::json_object;

    fn parsed(text: &str) -> Value {
        Value::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn merge_follows_rfc_7386() {
        // The examples of RFC 7386, section 3.
        let cases = [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, "null", "null"),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"a":1,"e":null}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
        ];
        for (target, patch, expected) in cases {
            let mut value = parsed(target);
            merge(&mut value, &parsed(patch));
            assert_eq!(value.to_json(), expected, "{target} + {patch}");
        }
    }

    #[test]
    fn merge_patch_diff_examples() {
        let cases = [
            (value!({"a": 1}), value!({"a": 1}), value!({})),
            (value!({}), value!({"a": {"b": 1}}), value!({"a": {"b": 1}})),
            (value!({"a": {"b": 1}}), value!({}), value!({"a": null})),
            (
                value!({"a": 1, "b": 2}),
                value!({"a": 2, "c": 3}),
                value!({"a": 2, "b": null, "c": 3}),
            ),
            (
                value!({"d": {"e": 1, "f": {"g": 0}}}),
                value!({"d": {"e": 1, "f": {"h": 0}}}),
                value!({"d": {"f": {"g": null, "h": 0}}}),
            ),
            (value!({"a": 5}), value!({"a": {}}), value!({"a": {}})),
            (
                value!({"a": {"b": 1}}),
                value!({"a": [1]}),
                value!({"a": [1]}),
            ),
            (
                value!({"a": [1, 2]}),
                value!({"a": [1]}),
                value!({"a": [1]}),
            ),
            (value!(3), value!({"a": 1}), value!({"a": 1})),
            (value!({"a": 1}), value!("x"), value!("x")),
        ];
        for (from, to, expected) in cases {
            let diff = merge_patch_diff(&from, &to);
            assert_eq!(diff, expected, "{from} -> {to}");
            let mut merged = from.clone();
            merge(&mut merged, &diff);
            assert_eq!(merged, to, "{from} -> {to}");
        }
    }

    proptest! {
        #[test]
        fn merging_the_diff_gives_the_target(from in json_object(true), to in json_object(false)) {
            let diff = merge_patch_diff(&from, &to);
            let mut merged = from.clone();
            merge(&mut merged, &diff);
            prop_assert_eq!(merged, to);
        }

        #[test]
        fn diff_of_equal_documents_is_empty(document in json_object(false)) {
            prop_assert_eq!(merge_patch_diff(&document, &document), value!({}));
        }
    }
}
