//! What the component tells its app: the core's events plus what only the host knows (the file
//! outbox's recovery on open, storage failures), and their JSON-lines form printed by the command.

use serde_json::{Value, json};
use vdev_core::Event;

use crate::file_store::Recovery;

/// One thing to tell the app, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// An event of the core.
    Core(Event),
    /// The file outbox cut an unreadable tail when it opened.
    Recovered(Recovery),
    /// A removal or the saved state could not be written.
    StoreFailed(String),
}

impl Notice {
    /// The notice as one JSON object with an `event` field named as in the WIT `event` variant.
    pub fn to_json(&self) -> Value {
        match self {
            Notice::Recovered(r) => json!({
                "event": "outbox-recovered", "file": r.file, "validBytes": r.valid_bytes,
                "cutBytes": r.cut_bytes, "reason": r.reason,
            }),
            Notice::StoreFailed(error) => json!({ "event": "store-failed", "error": error }),
            Notice::Core(event) => core_event_json(event),
        }
    }
}

fn core_event_json(event: &Event) -> Value {
    match event {
        Event::ProvisioningOperation(op) => json!({
            "event": "provisioning-operation", "id": op.id,
            "verificationCode": op.verification_code, "expiresAt": op.expires_at,
        }),
        Event::Registered {
            workspace_id,
            device_id,
        } => json!({ "event": "registered", "workspaceId": workspace_id, "deviceId": device_id }),
        Event::ProvisioningFailed(error) => {
            json!({ "event": "provisioning-failed", "error": error.to_string() })
        }
        Event::ConnectionStateChanged(state) => json!({
            "event": "connection-state-changed", "state": state.as_str(),
        }),
        Event::MessageDelivered { seq } => json!({ "event": "message-delivered", "seq": seq }),
        Event::MessageRejected { seq, reason } => json!({
            "event": "message-rejected", "seq": seq, "reason": reason.to_string(),
        }),
        Event::DesiredPropertiesChanged {
            properties,
            version,
        } => json!({
            "event": "desired-properties-changed", "properties": properties, "version": version,
        }),
        Event::ReportedPropertiesAcknowledged => {
            json!({ "event": "reported-properties-acknowledged" })
        }
        Event::ReportedPropertiesRejected { status } => {
            json!({ "event": "reported-properties-rejected", "status": status })
        }
        Event::CloudToDeviceMessage {
            properties,
            payload,
        } => json!({
            "event": "cloud-to-device", "properties": properties,
            "payloadText": String::from_utf8_lossy(payload),
        }),
        Event::SavedStateDiscarded { reason } => {
            json!({ "event": "saved-state-discarded", "reason": reason })
        }
        Event::StoreFailed { error } => {
            json!({ "event": "store-failed", "error": error.to_string() })
        }
        other => json!({ "event": "other", "debug": format!("{other:?}") }),
    }
}
