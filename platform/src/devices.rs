//! Devices and their twins (desired properties, reported properties, tags), fleet
//! configurations that set desired properties on devices chosen by tags and reported
//! properties, and the cloud-to-device queue. Tags never reach a device.

use rusqlite::{OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::clock::{now_ms, rfc3339};
use crate::gateway::registry::SessionCommand;
use crate::merge;
use crate::problem::Problem;
use crate::state::AppState;
use crate::store::StoreError;

/// Create the device row if it does not exist yet.
pub fn ensure_device(
    tx: &rusqlite::Transaction<'_>,
    workspace_id: &str,
    device_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO devices (workspace_id, device_id, created_at, desired_json,
         desired_version, reported_json, reported_version, tags_json)
         VALUES (?1, ?2, ?3, '{}', 1, '{}', 1, '{}')",
        params![workspace_id, device_id, now],
    )?;
    Ok(())
}

/// A device's twin as stored.
#[derive(Debug, Clone)]
pub struct Twin {
    /// Desired properties (without `$version`).
    pub desired: Map<String, Value>,
    /// Version of the desired properties.
    pub desired_version: i64,
    /// Reported properties (without `$version`).
    pub reported: Map<String, Value>,
    /// Version of the reported properties.
    pub reported_version: i64,
    /// Tags (never sent to the device).
    pub tags: Map<String, Value>,
    /// When reported properties last changed (ms).
    pub reported_updated_at: Option<i64>,
    /// When desired properties last changed (ms).
    pub desired_updated_at: Option<i64>,
    /// Creation instant (ms).
    pub created_at: i64,
    /// Last MQTT activity (ms).
    pub last_seen_at: Option<i64>,
}

fn object(text: &str) -> Result<Map<String, Value>, StoreError> {
    match serde_json::from_str(text)? {
        Value::Object(map) => Ok(map),
        _ => Ok(Map::new()),
    }
}

/// Load a twin; `None` when the device does not exist.
pub fn load_twin(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
) -> Result<Option<Twin>, StoreError> {
    let row = state
        .store
        .lock()
        .query_row(
            "SELECT desired_json, desired_version, reported_json, reported_version, tags_json,
             reported_updated_at, desired_updated_at, created_at, last_seen_at
             FROM devices WHERE workspace_id = ?1 AND device_id = ?2",
            params![workspace_id, device_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ))
            },
        )
        .optional()?;
    let Some((d, dv, rp, rv, t, ru, du, c, ls)) = row else {
        return Ok(None);
    };
    Ok(Some(Twin {
        desired: object(&d)?,
        desired_version: dv,
        reported: object(&rp)?,
        reported_version: rv,
        tags: object(&t)?,
        reported_updated_at: ru,
        desired_updated_at: du,
        created_at: c,
        last_seen_at: ls,
    }))
}

fn require_twin(state: &AppState, workspace_id: &str, device_id: &str) -> Result<Twin, Problem> {
    state.check_workspace(workspace_id, false)?;
    load_twin(state, workspace_id, device_id)?
        .ok_or_else(|| Problem::not_found(format!("device {device_id} does not exist")))
}

fn with_version(mut properties: Map<String, Value>, version: i64) -> Value {
    properties.insert("$version".to_owned(), json!(version));
    Value::Object(properties)
}

/// The twin document a device receives on GET: desired and reported, never tags.
pub fn device_twin_document(twin: &Twin) -> Value {
    json!({
        "desired": with_version(twin.desired.clone(), twin.desired_version),
        "reported": with_version(twin.reported.clone(), twin.reported_version),
    })
}

/// The admin view of a device.
pub fn device_json(state: &AppState, workspace_id: &str, device_id: &str, twin: &Twin) -> Value {
    json!({
        "workspaceId": workspace_id,
        "deviceId": device_id,
        "createdTime": rfc3339(twin.created_at),
        "lastSeenTime": twin.last_seen_at.map(rfc3339),
        "connected": state.sessions.is_connected(workspace_id, device_id),
        "desiredProperties": with_version(twin.desired.clone(), twin.desired_version),
        "reportedProperties": with_version(twin.reported.clone(), twin.reported_version),
        "tags": Value::Object(twin.tags.clone()),
    })
}

/// One device.
pub fn get_device(state: &AppState, workspace_id: &str, device_id: &str) -> Result<Value, Problem> {
    let twin = require_twin(state, workspace_id, device_id)?;
    Ok(device_json(state, workspace_id, device_id, &twin))
}

/// All devices of a workspace.
pub fn list_devices(state: &AppState, workspace_id: &str) -> Result<Value, Problem> {
    state.check_workspace(workspace_id, false)?;
    let ids: Vec<String> = {
        let db = state.store.lock();
        let mut stmt = db
            .prepare("SELECT device_id FROM devices WHERE workspace_id = ?1 ORDER BY device_id")
            .map_err(StoreError::from)?;
        stmt.query_map([workspace_id], |r| r.get(0))
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(StoreError::from)?
    };
    let mut devices = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(twin) = load_twin(state, workspace_id, &id)? {
            devices.push(device_json(state, workspace_id, &id, &twin));
        }
    }
    Ok(Value::Array(devices))
}

/// Delete a device: its twin, its queued cloud-to-device messages, and every Registration Token
/// (revoked, so its MQTT credentials stop working); its live session is closed. Stored messages
/// stay (they are history).
pub fn delete_device(state: &AppState, workspace_id: &str, device_id: &str) -> Result<(), Problem> {
    require_twin(state, workspace_id, device_id)?;
    {
        let mut db = state.store.lock();
        let tx = db.transaction().map_err(StoreError::from)?;
        tx.execute(
            "DELETE FROM devices WHERE workspace_id = ?1 AND device_id = ?2",
            params![workspace_id, device_id],
        )
        .map_err(StoreError::from)?;
        tx.execute(
            "DELETE FROM c2d_messages WHERE workspace_id = ?1 AND device_id = ?2",
            params![workspace_id, device_id],
        )
        .map_err(StoreError::from)?;
        tx.execute(
            "UPDATE registration_tokens SET state = 'revoked', closed_at = ?3
             WHERE workspace_id = ?1 AND device_id = ?2 AND state != 'revoked'",
            params![workspace_id, device_id, now_ms()],
        )
        .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
    }
    state
        .sessions
        .forget_device(workspace_id, device_id, "device deleted");
    Ok(())
}

/// Replace (or merge into) the desired properties, bump the version and push the change.
pub fn set_desired(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
    new_desired: Map<String, Value>,
) -> Result<Value, Problem> {
    let mut new_desired = new_desired;
    new_desired.retain(|k, _| !k.starts_with('$'));
    check_twin_section("desired", &Value::Object(new_desired.clone()))?;
    // Read, diff, then write only if nobody wrote in between (the version is unchanged);
    // otherwise diff again against what they wrote. Two writers never share a `$version`.
    let (patch, version) = loop {
        let twin = require_twin(state, workspace_id, device_id)?;
        if new_desired == twin.desired {
            return Ok(with_version(twin.desired, twin.desired_version));
        }
        let patch = merge::diff(&twin.desired, &new_desired);
        let version = twin.desired_version + 1;
        let written = state
            .store
            .lock()
            .execute(
                "UPDATE devices SET desired_json = ?3, desired_version = ?4,
                 desired_updated_at = ?5
                 WHERE workspace_id = ?1 AND device_id = ?2 AND desired_version = ?6",
                params![
                    workspace_id,
                    device_id,
                    Value::Object(new_desired.clone()).to_string(),
                    version,
                    now_ms(),
                    twin.desired_version
                ],
            )
            .map_err(StoreError::from)?;
        if written == 1 {
            break (patch, version);
        }
    };
    state.sessions.send(
        workspace_id,
        device_id,
        SessionCommand::DesiredPatch {
            version,
            patch: with_version(patch, version),
        },
    );
    Ok(with_version(new_desired, version))
}

/// Desired properties without metadata (what the official SDK's tests compare).
pub fn get_desired(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
) -> Result<Value, Problem> {
    Ok(Value::Object(
        require_twin(state, workspace_id, device_id)?.desired,
    ))
}

/// Reported properties with `$version` and `$metadata`.
pub fn get_reported(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
) -> Result<Value, Problem> {
    let twin = require_twin(state, workspace_id, device_id)?;
    let mut reported = twin.reported;
    reported.insert("$version".to_owned(), json!(twin.reported_version));
    reported.insert(
        "$metadata".to_owned(),
        json!({"$lastUpdated": twin.reported_updated_at.map(rfc3339)}),
    );
    Ok(Value::Object(reported))
}

/// Replace the tags, then re-evaluate fleet configurations.
pub fn set_tags(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
    tags: Map<String, Value>,
) -> Result<Value, Problem> {
    require_twin(state, workspace_id, device_id)?;
    state
        .store
        .lock()
        .execute(
            "UPDATE devices SET tags_json = ?3 WHERE workspace_id = ?1 AND device_id = ?2",
            params![workspace_id, device_id, Value::Object(tags).to_string()],
        )
        .map_err(StoreError::from)?;
    apply_fleet_configurations(state, workspace_id, device_id)?;
    get_device(state, workspace_id, device_id)
}

/// The most bytes of JSON either the desired or the reported properties of one device may
/// take (IoT Hub's limit): a twin without bound would one day exceed the device's packet limit
/// and its connection would fail on every twin fetch.
pub const MAX_TWIN_SECTION_BYTES: usize = 32 * 1024;

fn check_twin_section(what: &str, document: &Value) -> Result<(), Problem> {
    let size = document.to_string().len();
    if size > MAX_TWIN_SECTION_BYTES {
        return Err(Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!(
                "the {what} properties would take {size} bytes of JSON; the limit is \
                 {MAX_TWIN_SECTION_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// Merge a device's reported-properties patch; returns the new version.
pub fn patch_reported(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
    patch: &Value,
) -> Result<i64, Problem> {
    let twin = require_twin(state, workspace_id, device_id)?;
    let mut reported = Value::Object(twin.reported);
    let mut patch = patch.clone();
    if let Value::Object(map) = &mut patch {
        map.retain(|k, _| !k.starts_with('$'));
    }
    merge::apply(&mut reported, &patch);
    check_twin_section("reported", &reported)?;
    let version = twin.reported_version + 1;
    state
        .store
        .lock()
        .execute(
            "UPDATE devices SET reported_json = ?3, reported_version = ?4, reported_updated_at = ?5
             WHERE workspace_id = ?1 AND device_id = ?2",
            params![
                workspace_id,
                device_id,
                reported.to_string(),
                version,
                now_ms()
            ],
        )
        .map_err(StoreError::from)?;
    apply_fleet_configurations(state, workspace_id, device_id)?;
    Ok(version)
}

/// Record MQTT activity.
pub fn touch(state: &AppState, workspace_id: &str, device_id: &str) -> Result<(), StoreError> {
    state.store.lock().execute(
        "UPDATE devices SET last_seen_at = ?3 WHERE workspace_id = ?1 AND device_id = ?2",
        params![workspace_id, device_id, now_ms()],
    )?;
    Ok(())
}

/// A fleet configuration as the admin API accepts it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetConfiguration {
    /// Human name.
    pub name: String,
    /// Devices whose tags contain all these key/value pairs.
    #[serde(default)]
    pub target_tags: Map<String, Value>,
    /// ...and whose reported properties contain all these key/value pairs.
    #[serde(default)]
    pub target_reported_properties: Map<String, Value>,
    /// Merge patch applied to the desired properties of every matching device.
    pub desired_properties: Map<String, Value>,
}

fn matches(selector: &Map<String, Value>, document: &Map<String, Value>) -> bool {
    selector.iter().all(|(k, v)| document.get(k) == Some(v))
}

/// Store a fleet configuration and apply it to every matching device now; later devices are
/// matched whenever their tags or reported properties change.
pub fn create_fleet_configuration(
    state: &AppState,
    workspace_id: &str,
    configuration: &FleetConfiguration,
) -> Result<Value, Problem> {
    state.check_workspace(workspace_id, false)?;
    if configuration.target_tags.is_empty() && configuration.target_reported_properties.is_empty() {
        return Err(Problem::bad_request(
            "a fleet configuration needs targetTags or targetReportedProperties",
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    state
        .store
        .lock()
        .execute(
            "INSERT INTO fleet_configurations (id, workspace_id, name, target_tags_json,
             target_reported_json, desired_json, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                workspace_id,
                configuration.name,
                Value::Object(configuration.target_tags.clone()).to_string(),
                Value::Object(configuration.target_reported_properties.clone()).to_string(),
                Value::Object(configuration.desired_properties.clone()).to_string(),
                now_ms()
            ],
        )
        .map_err(StoreError::from)?;
    let devices = list_devices(state, workspace_id)?;
    let mut applied = Vec::new();
    for device in devices.as_array().into_iter().flatten() {
        if let Some(device_id) = device["deviceId"].as_str()
            && apply_fleet_configurations(state, workspace_id, device_id)?
        {
            applied.push(device_id.to_owned());
        }
    }
    Ok(json!({"id": id, "name": configuration.name, "appliedTo": applied}))
}

/// Fleet configurations of a workspace.
pub fn list_fleet_configurations(state: &AppState, workspace_id: &str) -> Result<Value, Problem> {
    let db = state.store.lock();
    let mut stmt = db
        .prepare(
            "SELECT id, name, target_tags_json, target_reported_json, desired_json, created_at
             FROM fleet_configurations WHERE workspace_id = ?1 ORDER BY created_at",
        )
        .map_err(StoreError::from)?;
    let rows = stmt
        .query_map([workspace_id], |r| {
            let parse = |s: String| serde_json::from_str::<Value>(&s).unwrap_or(Value::Null);
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "name": r.get::<_, String>(1)?,
                "targetTags": parse(r.get(2)?),
                "targetReportedProperties": parse(r.get(3)?),
                "desiredProperties": parse(r.get(4)?),
                "createdTime": rfc3339(r.get(5)?),
            }))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(StoreError::from)?;
    Ok(Value::Array(rows))
}

/// Delete a fleet configuration (desired properties it set stay).
pub fn delete_fleet_configuration(
    state: &AppState,
    workspace_id: &str,
    id: &str,
) -> Result<(), Problem> {
    let changed = state
        .store
        .lock()
        .execute(
            "DELETE FROM fleet_configurations WHERE id = ?1 AND workspace_id = ?2",
            params![id, workspace_id],
        )
        .map_err(StoreError::from)?;
    if changed == 0 {
        return Err(Problem::not_found(format!(
            "fleet configuration {id} does not exist"
        )));
    }
    Ok(())
}

/// Apply every matching fleet configuration to one device; true when its desired properties changed.
pub fn apply_fleet_configurations(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
) -> Result<bool, Problem> {
    let Some(twin) = load_twin(state, workspace_id, device_id)? else {
        return Ok(false);
    };
    let configurations: Vec<(String, String, String)> = {
        let db = state.store.lock();
        let mut stmt = db
            .prepare(
                "SELECT target_tags_json, target_reported_json, desired_json
                 FROM fleet_configurations WHERE workspace_id = ?1 ORDER BY created_at",
            )
            .map_err(StoreError::from)?;
        stmt.query_map([workspace_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(StoreError::from)?
    };
    let mut desired = Value::Object(twin.desired.clone());
    for (tags, reported, patch) in configurations {
        if matches(&object(&tags)?, &twin.tags) && matches(&object(&reported)?, &twin.reported) {
            merge::apply(&mut desired, &Value::Object(object(&patch)?));
        }
    }
    let Value::Object(desired) = desired else {
        return Ok(false);
    };
    if desired == twin.desired {
        return Ok(false);
    }
    set_desired(state, workspace_id, device_id, desired)?;
    Ok(true)
}

/// Queue a cloud-to-device message; a connected, subscribed device gets it at once.
///
/// `properties` (the admin call's query string) is decoded and encoded again, every byte but
/// `A-Z a-z 0-9 - . _ ~` escaped: a raw `+` or `#` would make the topic invalid, and the
/// message could then never be published, holding up every later one of the device.
pub fn enqueue_c2d(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
    payload: &[u8],
    properties: &str,
) -> Result<Value, Problem> {
    let properties = normalize_property_bag(properties)?;
    let properties = properties.as_str();
    require_twin(state, workspace_id, device_id)?;
    let id = {
        let db = state.store.lock();
        db.execute(
            "INSERT INTO c2d_messages (workspace_id, device_id, payload, properties, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![workspace_id, device_id, payload, properties, now_ms()],
        )
        .map_err(StoreError::from)?;
        db.last_insert_rowid()
    };
    state
        .sessions
        .send(workspace_id, device_id, SessionCommand::CloudToDeviceQueued);
    Ok(json!({"id": id}))
}

/// Undelivered cloud-to-device messages of a device, oldest first: (id, payload, properties).
pub fn pending_c2d(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
) -> Result<Vec<(i64, Vec<u8>, String)>, StoreError> {
    let db = state.store.lock();
    let mut stmt = db.prepare(
        "SELECT id, payload, properties FROM c2d_messages WHERE workspace_id = ?1
         AND device_id = ?2 AND delivered_at IS NULL ORDER BY id LIMIT 100",
    )?;
    let rows = stmt
        .query_map(params![workspace_id, device_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Mark a cloud-to-device message delivered (the device acknowledged it).
pub fn mark_c2d_delivered(state: &AppState, id: i64) -> Result<(), StoreError> {
    state.store.lock().execute(
        "UPDATE c2d_messages SET delivered_at = ?2 WHERE id = ?1",
        params![id, now_ms()],
    )?;
    Ok(())
}

/// `bag` decoded and encoded again with only unreserved characters left as they are.
fn normalize_property_bag(bag: &str) -> Result<String, Problem> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let pairs = crate::messages::parse_property_bag(bag)
        .map_err(|e| Problem::bad_request(format!("the message properties: {e}")))?;
    Ok(pairs
        .iter()
        .map(|(key, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(key, ESCAPED),
                utf8_percent_encode(value, ESCAPED)
            )
        })
        .collect::<Vec<_>>()
        .join("&"))
}
