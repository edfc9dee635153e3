//! JSON Merge Patch (RFC 7386): applying a patch, and computing the patch that turns one
//! document into another (what the gateway pushes to a device after a desired-properties PUT).
//! Hand-written because it is twenty lines; the crates that offer it bring JSON Pointer and
//! JSON Patch along.

use serde_json::{Map, Value};

/// Apply `patch` to `target` in place.
pub(crate) fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(object) = target {
        for (key, value) in patch {
            if value.is_null() {
                object.remove(key);
            } else {
                apply(object.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The merge patch that turns `from` into `to` (both objects). Arrays are replaced whole.
pub(crate) fn diff(from: &Map<String, Value>, to: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for key in from.keys() {
        if !to.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, new) in to {
        match (from.get(key), new) {
            (Some(old), new) if old == new => {}
            (Some(Value::Object(old)), Value::Object(new)) => {
                patch.insert(key.clone(), Value::Object(diff(old, new)));
            }
            _ => {
                patch.insert(key.clone(), new.clone());
            }
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_then_apply_reproduces_target() {
        let from = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let to = json!({"b": {"c": 2, "d": 4, "f": null}, "e": [2], "g": "x"});
        let (Value::Object(f), Value::Object(t)) = (&from, &to) else {
            unreachable!()
        };
        let patch = Value::Object(diff(f, t));
        let mut result = from.clone();
        apply(&mut result, &patch);
        // Merge patches cannot carry null values: they mean "remove".
        assert_eq!(result, json!({"b": {"c": 2, "d": 4}, "e": [2], "g": "x"}));
    }
}
