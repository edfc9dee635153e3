//! What the component tells its app: the core's events (its one vocabulary, the file outbox's
//! recovery on open included), and their JSON-lines form printed by the command.

use serde_json::Value;
use vdev_core::{Event, kebab_case};

/// One thing to tell the app, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// An event of the core.
    Core(Event),
}

impl Notice {
    /// The notice as one JSON object with an `event` field named as in the WIT `event` variant.
    pub fn to_json(&self) -> Value {
        match self {
            Notice::Core(event) => core_event_json(event),
        }
    }
}

/// The core's own JSON form of the event (its one vocabulary), with the name under `event` in
/// the WIT's kebab-case, as every line the command prints; a payload also comes as text.
fn core_event_json(event: &Event) -> Value {
    let mut value = serde_json::to_value(event.to_value()).unwrap_or_default();
    if let Value::Object(fields) = &mut value {
        fields.remove("kind");
        fields.insert("event".into(), kebab_case(event.name()).into());
        if let Some(payload) = event.payload() {
            fields.insert(
                "payloadText".into(),
                String::from_utf8_lossy(payload).into(),
            );
        }
    }
    value
}
