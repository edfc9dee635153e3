//! proptest strategies for JSON values, shared by the unit tests of the merge patches and of
//! the twin.

use proptest::prelude::*;

use super::Value;

/// JSON values over a small key alphabet (so diffs meet shared keys). With `nulls`
/// false there is no `null` anywhere, which `to` of a merge patch diff needs.
fn json_value(nulls: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::from),
        // Eighths print and parse back exactly; serde_json without `float_roundtrip`
        // may move other floats by one ulp through text.
        (-8_000i32..8_000).prop_map(|eighths| Value::from(f64::from(eighths) / 8.0)),
        "[a-c]{0,2}".prop_map(Value::String),
    ];
    let leaf = if nulls {
        prop_oneof![1 => Just(Value::Null), 4 => leaf].boxed()
    } else {
        leaf.boxed()
    };
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// JSON objects of up to four members from [`json_value`]; see it for `nulls`.
pub(crate) fn json_object(nulls: bool) -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-d]", json_value(nulls), 0..5)
        .prop_map(|members| Value::Object(members.into_iter().collect()))
}
