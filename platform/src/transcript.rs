//! A record of what devices send, in arrival order: every request of the device HTTP API
//! (uploads and blob storage included) and every MQTT packet, with the parts a contract
//! comparison looks at — method, path, query, headers, the JSON body; packet type, topic,
//! CONNECT fields, the JSON payload of twin requests. Telemetry payloads and blobs are kept as
//! their length only, secrets (tokens, signatures, passwords) as their shape only.
//!
//! Off unless `Config::record_transcript` (`--record-transcript`) turns it on: it grows with
//! the traffic. The strict-contract test compares a vdev device's transcript with the official
//! crate's, field by field (`tests/tests/transcript.rs`); the admin API reads and clears it.

use std::sync::Mutex;

use mqtt_protocol_core::mqtt::packet::{Packet, Qos};
use serde_json::{Map, Value, json};

/// The recorded entries, or nothing when recording is off.
#[derive(Debug, Default)]
pub struct Transcript {
    entries: Option<Mutex<Vec<Value>>>,
}

impl Transcript {
    /// A transcript that records when `on`.
    pub fn new(on: bool) -> Self {
        Self {
            entries: on.then(|| Mutex::new(Vec::new())),
        }
    }

    /// Whether entries are kept.
    pub fn is_on(&self) -> bool {
        self.entries.is_some()
    }

    /// Appends one entry (nothing when recording is off).
    pub fn push(&self, entry: Value) {
        if let Some(entries) = &self.entries {
            entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(entry);
        }
    }

    /// Everything recorded so far; `None` when recording is off.
    pub fn entries(&self) -> Option<Vec<Value>> {
        let entries = self.entries.as_ref()?;
        Some(entries.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Everything recorded so far, leaving the transcript empty; `None` when recording is off.
    pub fn take(&self) -> Option<Vec<Value>> {
        let entries = self.entries.as_ref()?;
        Some(std::mem::take(
            &mut *entries.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The entry for a device HTTP request. `body` is the request body as received.
pub fn http_entry(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Value {
    let mut names = Map::new();
    for (name, value) in headers {
        let value = value.to_str().unwrap_or("<not text>");
        let value = match name.as_str() {
            "authorization" => secret_shape(value),
            _ => Value::String(value.to_owned()),
        };
        names.insert(name.as_str().to_owned(), value);
    }
    let query: Map<String, Value> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            // The SAS of a blob `PUT` is all secrets but its field names.
            let value = if ["sig", "se", "st", "skoid"].contains(&name) {
                Value::String("<secret>".into())
            } else {
                Value::String(value.to_owned())
            };
            (name.to_owned(), value)
        })
        .collect();
    json!({
        "via": "http",
        "method": method,
        "path": path,
        "query": query,
        "headers": names,
        "body": body_of(body),
    })
}

/// The entry for an MQTT packet from a device.
pub fn mqtt_entry(packet: &Packet) -> Value {
    let qos = |qos: Qos| qos as u8;
    match packet {
        Packet::V3_1_1Connect(connect) => json!({
            "via": "mqtt",
            "packet": "CONNECT",
            "protocol": format!("{} {}", connect.protocol_name(), connect.protocol_version()),
            "clientId": connect.client_id(),
            "username": connect.user_name(),
            "password": connect
                .password()
                .map(|p| secret_shape(&String::from_utf8_lossy(p))),
            "keepAlive": connect.keep_alive(),
            "cleanSession": connect.clean_session(),
            "will": connect.will_flag(),
        }),
        Packet::V3_1_1Subscribe(subscribe) => json!({
            "via": "mqtt",
            "packet": "SUBSCRIBE",
            "filters": subscribe
                .entries()
                .iter()
                .map(|entry| json!([entry.topic_filter(), qos(entry.sub_opts().qos())]))
                .collect::<Vec<_>>(),
        }),
        Packet::V3_1_1Publish(publish) => {
            let topic = publish.topic_name();
            // Twin requests carry JSON the contract names; telemetry is the app's bytes.
            let payload = publish.payload().as_slice();
            let payload = if topic.starts_with("$iothub/") {
                body_of(payload)
            } else {
                json!({ "bytes": payload.len() })
            };
            json!({
                "via": "mqtt",
                "packet": "PUBLISH",
                "topic": topic,
                "qos": qos(publish.qos()),
                "retain": publish.retain(),
                "payload": payload,
            })
        }
        other => json!({
            "via": "mqtt",
            "packet": other.packet_type().to_string().to_uppercase(),
        }),
    }
}

/// A JSON body as it is; any other body as its length.
pub fn body_of(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() || value.is_array() => value,
        _ => json!({ "bytes": body.len() }),
    }
}

/// `DeviceToken abc…` as `DeviceToken <secret>`; `SharedAccessSignature sr=…&sig=…&se=…` as
/// its scheme and field names.
pub fn secret_shape(value: &str) -> Value {
    let (scheme, rest) = value.split_once(' ').unwrap_or(("", value));
    let fields: Vec<&str> = rest
        .split('&')
        .filter_map(|pair| pair.split_once('=').map(|(name, _)| name))
        .collect();
    let shape = if fields.len() > 1 {
        fields.join("&")
    } else {
        "<secret>".to_owned()
    };
    Value::String(if scheme.is_empty() {
        shape
    } else {
        format!("{scheme} {shape}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_keep_their_shape_only() {
        assert_eq!(secret_shape("DeviceToken abc.def"), "DeviceToken <secret>");
        assert_eq!(
            secret_shape("SharedAccessSignature sr=hub%2Fdevices%2Fd&sig=x%3D&se=17"),
            "SharedAccessSignature sr&sig&se"
        );
        let headers = axum::http::HeaderMap::new();
        let entry = http_entry(
            "PUT",
            "/upload/c/b",
            Some("sv=2021&sig=abc&se=1&sr=b"),
            &headers,
            &[0; 10],
        );
        assert_eq!(entry["query"]["sig"], "<secret>");
        assert_eq!(entry["query"]["sv"], "2021");
        assert_eq!(entry["body"], json!({"bytes": 10}));
    }

    #[test]
    fn off_records_nothing() {
        let off = Transcript::new(false);
        off.push(json!(1));
        assert_eq!(off.take(), None);
        let on = Transcript::new(true);
        on.push(json!(1));
        assert_eq!(on.entries(), Some(vec![json!(1)]));
        assert_eq!(on.take(), Some(vec![json!(1)]));
        assert_eq!(on.take(), Some(vec![]));
    }
}
