//! The twin's persistent part: [`TwinState`], what the host keeps across restarts, and its form
//! in the saved device state.

use crate::prelude::*;

use crate::json::{self, Map, Object, Value};

/// The twin's part of the device state the host keeps across restarts (saved whenever it
/// changed).
///
/// Every document is a JSON object; a stored value that is not one is read as empty. Fields
/// missing from a stored copy take their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinState {
    /// The desired properties, without `$version` and `$metadata`.
    pub desired: Value,
    /// The version of `desired`; `None` until the first GET has been answered.
    pub desired_version: Option<u64>,
    /// The reported document the app asked for: every reported-properties update merged in.
    pub reported_target: Value,
    /// The reported document the Platform is known to hold.
    pub reported_acked: Value,
    /// The next request id; it counts up across restarts, so ids are not reused.
    pub next_rid: u64,
}

impl TwinState {
    /// Its form in the saved device state.
    pub(crate) fn to_saved(&self) -> Value {
        Value::object([
            ("desired", self.desired.clone()),
            ("desired_version", self.desired_version.into()),
            ("reported_target", self.reported_target.clone()),
            ("reported_acked", self.reported_acked.clone()),
            ("next_rid", self.next_rid.into()),
        ])
    }

    /// Reads [`TwinState::to_saved`]'s form back; missing fields take their defaults.
    pub(crate) fn from_saved(object: &Object) -> Result<Self, String> {
        let defaults = Self::default();
        let document = |key: &str, default: Value| object.get(key).cloned().unwrap_or(default);
        Ok(Self {
            desired: document("desired", defaults.desired),
            desired_version: json::optional_unsigned(object, "desired_version")?,
            reported_target: document("reported_target", defaults.reported_target),
            reported_acked: document("reported_acked", defaults.reported_acked),
            next_rid: json::optional_unsigned(object, "next_rid")?.unwrap_or(defaults.next_rid),
        })
    }
}

impl Default for TwinState {
    fn default() -> Self {
        Self {
            desired: Value::Object(Map::new()),
            desired_version: None,
            reported_target: Value::Object(Map::new()),
            reported_acked: Value::Object(Map::new()),
            next_rid: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_serialization_and_missing_fields_default() {
        // What a twin holds once synced at desired `{"rate":5}` v3, reported `{}`, one rid used.
        let state = TwinState {
            desired: value!({"rate": 5}),
            desired_version: Some(3),
            next_rid: 1,
            ..TwinState::default()
        };
        let text = state.to_saved().to_string();
        let saved = crate::json::parse_object(text.as_bytes()).unwrap();
        assert_eq!(&TwinState::from_saved(&saved).unwrap(), &state);
        let partial =
            TwinState::from_saved(&crate::json::parse_object(br#"{"next_rid":5}"#).unwrap())
                .unwrap();
        assert_eq!(
            partial,
            TwinState {
                next_rid: 5,
                ..TwinState::default()
            }
        );
    }
}
