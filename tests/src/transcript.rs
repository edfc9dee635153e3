//! Comparing two clients' traffic as the stand-in Platform recorded it (`--record-transcript`):
//! each entry becomes one line that keeps what the contract fixes and replaces what belongs to
//! one run (ids, tokens, sequence numbers, lengths) with a placeholder; two clients keep the same
//! contract when their sets of lines are equal. The differences vdev is allowed ([`ALLOWED`])
//! are blanked on both sides, so any other difference fails; `docs/wire-contract.md`
//! ("Transcript of the contract") lists them with their reasons.

use std::collections::BTreeSet;

use serde_json::Value;
use vdev_platform::PlatformInfo;

/// Property-bag keys whose values are per message (the ids the app chose); the keys themselves
/// and their order are compared.
const PER_MESSAGE_VALUES: &[&str] = &["batch-id", "message-id", "batch-slice-id", "chunk-id"];

/// Where vdev's traffic may differ from the official crate's, and why.
pub const ALLOWED: &[(&str, &str)] = &[
    (
        "the `vdev-seq` telemetry property",
        "the outbox's origin and sequence number, so that consumers can drop replays",
    ),
    (
        "blob names",
        "each client names its uploads (the official crate a UUID, vdev `<origin>-<sequence>`)",
    ),
    (
        "the CONNECT keep-alive",
        "vdev asks for 60 s (the official crate 300 s) to notice a dead link in about 90 s",
    ),
    (
        "the CONNECT clean-session flag",
        "vdev starts a clean session and subscribes again at every connect; nothing it needs \
         lives in a server-side session (the twin is read again, C2D messages wait in the \
         device's queue until acknowledged)",
    ),
    (
        "the QoS of twin requests and twin subscriptions",
        "vdev uses QoS 0: each twin request is matched to its response by `$rid`, timed out and \
         retried by the core, and a reconnect reads the whole twin again",
    ),
];

/// Headers an HTTP library sets by itself, not the client's contract: left out of the comparison.
pub const TRANSPORT_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "user-agent",
    "accept-encoding",
    "connection",
    "transfer-encoding",
];

/// The transcript of one client as a set of lines, `device_id` being its device.
pub fn normalise(entries: &[Value], device_id: &str, info: &PlatformInfo) -> BTreeSet<String> {
    let subst = |text: &str| {
        text.replace(&info.workspace_id, "{workspace}")
            .replace(device_id, "{device}")
    };
    entries
        .iter()
        .filter_map(|entry| match entry["via"].as_str() {
            Some("http") => Some(http_line(entry, &subst)),
            Some("mqtt") => mqtt_lines(entry, &subst),
            _ => None,
        })
        .flatten()
        .collect()
}

fn http_line(entry: &Value, subst: &dyn Fn(&str) -> String) -> Vec<String> {
    let path = subst(entry["path"].as_str().unwrap_or_default());
    // A blob's name is per upload; its container is the contract's.
    let path = match path.strip_prefix("/upload/") {
        Some(_) => "/upload/{blob}".to_owned(),
        None => path,
    };
    let query: Vec<String> = entry["query"]
        .as_object()
        .map(|query| {
            query
                .iter()
                .map(|(name, value)| match name.as_str() {
                    "api-version" => format!("{name}={}", value.as_str().unwrap_or_default()),
                    _ => format!("{name}={{v}}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut headers: Vec<String> = entry["headers"]
        .as_object()
        .map(|headers| {
            headers
                .iter()
                .filter(|(name, _)| !TRANSPORT_HEADERS.contains(&name.as_str()))
                .map(|(name, value)| {
                    format!("{name}: {}", subst(value.as_str().unwrap_or_default()))
                })
                .collect()
        })
        .unwrap_or_default();
    headers.sort();
    vec![format!(
        "HTTP {} {}?{} [{}] {}",
        entry["method"].as_str().unwrap_or_default(),
        path,
        query.join("&"),
        headers.join(", "),
        shape(&entry["body"]),
    )]
}

fn mqtt_lines(entry: &Value, subst: &dyn Fn(&str) -> String) -> Option<Vec<String>> {
    let packet = entry["packet"].as_str().unwrap_or_default();
    Some(match packet {
        // Keep-alive and clean session blanked: both are allowed differences.
        "CONNECT" => vec![format!(
            "MQTT CONNECT {} client={} username={} password={} keepAlive=* clean=* will={}",
            entry["protocol"].as_str().unwrap_or_default(),
            subst(entry["clientId"].as_str().unwrap_or_default()),
            subst(entry["username"].as_str().unwrap_or_default()),
            entry["password"].as_str().unwrap_or_default(),
            entry["will"],
        )],
        // One line per filter: how many SUBSCRIBE packets carry them is the client's choice.
        "SUBSCRIBE" => entry["filters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|filter| {
                let filter_qos = &filter[1];
                let filter = subst(filter[0].as_str().unwrap_or_default());
                let qos = qos_unless_twin(&filter, &filter_qos.to_string());
                format!("MQTT SUBSCRIBE {filter} qos={qos}")
            })
            .collect(),
        "PUBLISH" => vec![format!(
            "MQTT PUBLISH {} qos={} retain={} {}",
            topic(&subst(entry["topic"].as_str().unwrap_or_default())),
            qos_unless_twin(
                entry["topic"].as_str().unwrap_or_default(),
                &entry["qos"].to_string()
            ),
            entry["retain"],
            match entry["payload"].get("bytes") {
                Some(_) => "<bytes>".to_owned(),
                None => shape(&entry["payload"]),
            },
        )],
        // Keep-alive pings depend on how long the connection idled, not on the contract.
        "PINGREQ" => return None,
        other => vec![format!("MQTT {}", other.trim_matches('"'))],
    })
}

/// The QoS as recorded, or `*` on a twin topic (an allowed difference).
fn qos_unless_twin(topic: &str, qos: &str) -> String {
    if topic.starts_with("$iothub/twin/") {
        "*".into()
    } else {
        qos.into()
    }
}

/// A topic with its property bag's per-message values and request ids replaced.
fn topic(topic: &str) -> String {
    let Some((path, bag)) = topic.split_once("/messages/events/") else {
        // Twin topics: `$rid=<n>` (and `$version=<n>` in desired patches) count requests.
        return topic
            .split('&')
            .map(|part| match part.split_once('=') {
                Some((name, _)) if name.ends_with("$rid") || name.ends_with("$version") => {
                    format!("{name}={{n}}")
                }
                _ => part.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
    };
    let properties: Vec<String> = bag
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decoded(name);
            if name == "vdev-seq" {
                return None;
            }
            Some(if PER_MESSAGE_VALUES.contains(&name.as_str()) {
                format!("{name}={{id}}")
            } else {
                format!("{name}={}", percent_decoded(value))
            })
        })
        .collect();
    format!("{path}/messages/events/{}", properties.join("&"))
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A JSON value's shape: object keys (sorted) with the shapes of their values, the type of
/// anything else.
pub fn shape(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(items) => {
            let mut shapes: Vec<String> = items.iter().map(shape).collect();
            shapes.sort();
            shapes.dedup();
            format!("[{}]", shapes.join("|"))
        }
        Value::Object(members) => {
            let mut inner: Vec<String> = members
                .iter()
                .map(|(name, value)| format!("{name}: {}", shape(value)))
                .collect();
            inner.sort();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Panics with both sides' extra lines unless the two sets are equal.
pub fn assert_same_contract(official: &BTreeSet<String>, vdev: &BTreeSet<String>) {
    let only_official: Vec<&String> = official.difference(vdev).collect();
    let only_vdev: Vec<&String> = vdev.difference(official).collect();
    assert!(
        only_official.is_empty() && only_vdev.is_empty(),
        "the transcripts differ\n--- only the official crate sent:\n{}\n--- only vdev sent:\n{}\n--- both sent:\n{}",
        lines(&only_official),
        lines(&only_vdev),
        lines(&official.intersection(vdev).collect::<Vec<_>>()),
    );
}

fn lines(lines: &[&String]) -> String {
    lines
        .iter()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
