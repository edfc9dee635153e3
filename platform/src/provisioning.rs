//! Workspaces, Provisioning Tokens, Provisioning Operations and Registration Tokens: the
//! Platform-side rules of device provisioning, independent of HTTP.
//!
//! Operation states: `pending` (waiting for a technician), `approved` (the device has not fetched
//! its Registration Token yet), `completed` (it has; calling complete again issues a new token
//! and supersedes the older ones), `cancelled` with a cause: `technician`, `expired` (nobody
//! approved it in time) or `anotherOperationApproved` (another operation for the same Device ID
//! was approved). A complete call on a cancelled operation answers 410 with type
//! `provisioningOperationCancelled`, except for `expired`, which answers 410 with type
//! `provisioningOperationExpired` so that devices start a new operation.
//!
//! Registration Token states: `active`, `superseded` (a newer token was issued to the same
//! device by refresh or by completing again; MQTT credentials issued before stay valid until they
//! expire), `revoked` (by a technician or by deleting the device; its MQTT credentials stop
//! working and live sessions using them are closed).

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::{now_ms, rfc3339};
use crate::options::{Lifetime, TokenOptions};
use crate::problem::{
    Problem, TYPE_OPERATION_CANCELLED, TYPE_OPERATION_COMPLETED, TYPE_OPERATION_EXPIRED,
};
use crate::secrets::{hash_token, random_token, verification_code};
use crate::state::AppState;
use crate::store::StoreError;

/// A Provisioning Token as the admin API lists it (never the token itself).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningTokenInfo {
    /// Id of the token record.
    pub id: String,
    /// Workspace it provisions into.
    pub workspace_id: String,
    /// Human name.
    pub name: String,
    /// Options.
    pub options: TokenOptions,
    /// Creation instant.
    pub created_time: String,
    /// Revocation instant, if revoked.
    pub revoked_time: Option<String>,
}

/// Create a workspace.
pub fn create_workspace(state: &AppState, name: &str) -> Result<Value, Problem> {
    let id = uuid::Uuid::new_v4().to_string();
    state
        .store
        .lock()
        .execute(
            "INSERT INTO workspaces (id, name, disabled, created_at) VALUES (?1, ?2, 0, ?3)",
            params![id, name, now_ms()],
        )
        .map_err(StoreError::from)?;
    get_workspace(state, &id)
}

/// One workspace.
pub fn get_workspace(state: &AppState, id: &str) -> Result<Value, Problem> {
    let db = state.store.lock();
    db.query_row(
        &format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces w WHERE w.id = ?1"),
        [id],
        workspace_json,
    )
    .optional()
    .map_err(StoreError::from)?
    .ok_or_else(|| Problem::not_found(format!("workspace {id} does not exist")))
}

/// The columns `workspace_json` reads, `w` being the workspaces table.
const WORKSPACE_COLUMNS: &str = "w.id, w.name, w.disabled, w.created_at,
    (SELECT count(*) FROM messages m WHERE m.workspace_id = w.id AND m.conflict = 1)";

fn workspace_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": r.get::<_, String>(0)?,
        "name": r.get::<_, String>(1)?,
        "disabled": r.get::<_, bool>(2)?,
        "createdTime": rfc3339(r.get(3)?),
        // Messages stored under a sequence number a device had used for another payload.
        "sequenceConflicts": r.get::<_, i64>(4)?,
    }))
}

/// All workspaces.
pub fn list_workspaces(state: &AppState) -> Result<Value, Problem> {
    let db = state.store.lock();
    let mut stmt = db
        .prepare(&format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces w ORDER BY w.created_at"
        ))
        .map_err(StoreError::from)?;
    let rows = stmt
        .query_map([], workspace_json)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(StoreError::from)?;
    Ok(Value::Array(rows))
}

/// Enable or disable a workspace (disabled workspaces answer devices with 423).
pub fn set_workspace_disabled(
    state: &AppState,
    id: &str,
    disabled: bool,
) -> Result<Value, Problem> {
    state.check_workspace(id, false)?;
    state
        .store
        .lock()
        .execute(
            "UPDATE workspaces SET disabled = ?2 WHERE id = ?1",
            params![id, disabled],
        )
        .map_err(StoreError::from)?;
    get_workspace(state, id)
}

/// Create a Provisioning Token; returns its record and the token (shown only now).
pub fn create_provisioning_token(
    state: &AppState,
    workspace_id: &str,
    name: &str,
    options: &TokenOptions,
) -> Result<(ProvisioningTokenInfo, String), Problem> {
    state.check_workspace(workspace_id, false)?;
    options.validate()?;
    let id = uuid::Uuid::new_v4().to_string();
    let token = random_token("pt_");
    state
        .store
        .lock()
        .execute(
            "INSERT INTO provisioning_tokens (id, workspace_id, name, token_hash, options_json, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                workspace_id,
                name,
                hash_token(&token),
                serde_json::to_string(options).map_err(StoreError::from)?,
                now_ms()
            ],
        )
        .map_err(StoreError::from)?;
    let info = list_provisioning_tokens(state, workspace_id)?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| Problem::internal("created token vanished"))?;
    Ok((info, token))
}

fn token_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ProvisioningTokenInfo, String)> {
    Ok((
        ProvisioningTokenInfo {
            id: r.get(0)?,
            workspace_id: r.get(1)?,
            name: r.get(2)?,
            options: TokenOptions::default(),
            created_time: rfc3339(r.get(4)?),
            revoked_time: r.get::<_, Option<i64>>(5)?.map(rfc3339),
        },
        r.get(3)?,
    ))
}

fn with_options(
    (mut info, options_json): (ProvisioningTokenInfo, String),
) -> Result<ProvisioningTokenInfo, StoreError> {
    info.options = serde_json::from_str(&options_json)?;
    Ok(info)
}

/// Provisioning Tokens of a workspace.
pub fn list_provisioning_tokens(
    state: &AppState,
    workspace_id: &str,
) -> Result<Vec<ProvisioningTokenInfo>, Problem> {
    let db = state.store.lock();
    let mut stmt = db
        .prepare(
            "SELECT id, workspace_id, name, options_json, created_at, revoked_at
             FROM provisioning_tokens WHERE workspace_id = ?1 ORDER BY created_at",
        )
        .map_err(StoreError::from)?;
    let rows = stmt
        .query_map([workspace_id], token_info)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(StoreError::from)?;
    Ok(rows
        .into_iter()
        .map(with_options)
        .collect::<Result<_, _>>()?)
}

/// Revoke a Provisioning Token: it can no longer start or complete operations or refresh.
pub fn revoke_provisioning_token(
    state: &AppState,
    workspace_id: &str,
    id: &str,
) -> Result<(), Problem> {
    let changed = state
        .store
        .lock()
        .execute(
            "UPDATE provisioning_tokens SET revoked_at = COALESCE(revoked_at, ?3)
             WHERE id = ?1 AND workspace_id = ?2",
            params![id, workspace_id, now_ms()],
        )
        .map_err(StoreError::from)?;
    if changed == 0 {
        return Err(Problem::not_found(format!(
            "provisioning token {id} does not exist"
        )));
    }
    Ok(())
}

/// Find the Provisioning Token presented by a device; 401 when unknown or revoked.
pub fn authenticate_provisioning_token(
    state: &AppState,
    token: &str,
) -> Result<ProvisioningTokenInfo, Problem> {
    let found = {
        let db = state.store.lock();
        db.query_row(
            "SELECT id, workspace_id, name, options_json, created_at, revoked_at
             FROM provisioning_tokens WHERE token_hash = ?1",
            [hash_token(token)],
            token_info,
        )
        .optional()
        .map_err(StoreError::from)?
    };
    let info = with_options(
        found.ok_or_else(|| Problem::unauthorized("the Provisioning Token is not valid"))?,
    )?;
    if info.revoked_time.is_some() {
        return Err(Problem::unauthorized("the Provisioning Token was revoked"));
    }
    state.check_workspace(&info.workspace_id, true)?;
    Ok(info)
}

/// Mark overdue pending operations as cancelled with cause `expired`.
pub fn expire_operations(state: &AppState) -> Result<(), StoreError> {
    let now = now_ms();
    state.store.lock().execute(
        "UPDATE provisioning_operations SET state = 'cancelled', cancellation_cause = 'expired',
         closed_at = expires_at WHERE state = 'pending' AND expires_at <= ?1",
        [now],
    )?;
    Ok(())
}

/// Start a Provisioning Operation (device `init`).
pub fn init_operation(
    state: &AppState,
    token: &ProvisioningTokenInfo,
    requested_device_id: Option<&str>,
    parameters: &serde_json::Map<String, Value>,
) -> Result<Value, Problem> {
    if let Some((key, _)) = parameters.iter().find(|(_, v)| !v.is_string()) {
        return Err(Problem::bad_request(format!(
            "parameter {key:?} must be a string"
        )));
    }
    let proposed = token.options.device_id_at_init(requested_device_id)?;
    let id = uuid::Uuid::new_v4().to_string();
    let code = verification_code();
    let now = now_ms();
    let lifetime_ms = i64::try_from(token.options.operation_lifetime_seconds)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let expires = now.saturating_add(lifetime_ms);
    state
        .store
        .lock()
        .execute(
            "INSERT INTO provisioning_operations (id, workspace_id, provisioning_token_id,
             verification_code, requested_device_id, parameters_json, state, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8)",
            params![
                id,
                token.workspace_id,
                token.id,
                code,
                proposed,
                Value::Object(parameters.clone()).to_string(),
                now,
                expires
            ],
        )
        .map_err(StoreError::from)?;
    Ok(json!({
        "provisioningOperationId": id,
        "verificationCode": code,
        "expirationTime": rfc3339(expires),
    }))
}

struct OperationRow {
    workspace_id: String,
    provisioning_token_id: String,
    requested_device_id: Option<String>,
    state: String,
    cancellation_cause: Option<String>,
    device_id: Option<String>,
    lifetime_ms: Option<i64>,
    completed_at: Option<i64>,
}

fn load_operation(state: &AppState, id: &str) -> Result<Option<OperationRow>, StoreError> {
    Ok(state
        .store
        .lock()
        .query_row(
            "SELECT workspace_id, provisioning_token_id, requested_device_id, state,
             cancellation_cause, device_id, lifetime_ms, completed_at FROM provisioning_operations
             WHERE id = ?1",
            [id],
            |r| {
                Ok(OperationRow {
                    workspace_id: r.get(0)?,
                    provisioning_token_id: r.get(1)?,
                    requested_device_id: r.get(2)?,
                    state: r.get(3)?,
                    cancellation_cause: r.get(4)?,
                    device_id: r.get(5)?,
                    lifetime_ms: r.get(6)?,
                    completed_at: r.get(7)?,
                })
            },
        )
        .optional()?)
}

/// How long after its first completion an operation may be completed again (by a device that
/// lost the answer): long enough for retries and a restart, short enough that a leaked
/// operation id is worth nothing.
const REPEAT_COMPLETE_WINDOW_MS: i64 = 15 * 60 * 1_000;

/// Device `complete`: `Ok(None)` while pending (202), a new Registration Token once approved.
pub fn complete_operation(
    state: &AppState,
    token: &ProvisioningTokenInfo,
    operation_id: &str,
) -> Result<Option<Value>, Problem> {
    expire_operations(state)?;
    let operation = load_operation(state, operation_id)?
        .filter(|op| op.provisioning_token_id == token.id)
        .ok_or_else(|| {
            Problem::not_found(format!(
                "provisioning operation {operation_id} does not exist for this Provisioning Token"
            ))
        })?;
    match (
        operation.state.as_str(),
        operation.cancellation_cause.as_deref(),
    ) {
        ("pending", _) => Ok(None),
        ("cancelled", Some("expired")) => Err(Problem::gone(
            TYPE_OPERATION_EXPIRED,
            "the provisioning operation expired before it was approved; start a new one",
        )),
        ("cancelled", cause) => Err(Problem::gone(
            TYPE_OPERATION_CANCELLED,
            format!(
                "the provisioning operation was cancelled ({})",
                cause.unwrap_or("unknown cause")
            ),
        )),
        _ => {
            let device_id = operation
                .device_id
                .ok_or_else(|| Problem::internal("approved operation without device id"))?;
            let now = now_ms();
            let (token_value, expires) = {
                let mut db = state.store.lock();
                let tx = db.transaction().map_err(StoreError::from)?;
                if let Some(completed_at) = operation.completed_at {
                    // A repeat: the device lost the first answer. Only shortly after, and never
                    // once an administrator revoked the device's tokens; otherwise the
                    // Provisioning Token and the operation id would reconnect a revoked device
                    // without a technician.
                    let revoked: bool = tx
                        .query_row(
                            "SELECT EXISTS (SELECT 1 FROM registration_tokens
                             WHERE workspace_id = ?1 AND device_id = ?2 AND state = 'revoked'
                             AND closed_at >= ?3)",
                            params![operation.workspace_id, device_id, completed_at],
                            |r| r.get(0),
                        )
                        .map_err(StoreError::from)?;
                    if revoked {
                        return Err(Problem::gone(
                            TYPE_OPERATION_COMPLETED,
                            "the device's Registration Token was revoked since this operation \
                             completed; start a new provisioning operation",
                        ));
                    }
                    if now.saturating_sub(completed_at) > REPEAT_COMPLETE_WINDOW_MS {
                        return Err(Problem::gone(
                            TYPE_OPERATION_COMPLETED,
                            "the provisioning operation completed too long ago to complete \
                             again; start a new one",
                        ));
                    }
                }
                tx.execute(
                    "UPDATE registration_tokens SET state = 'superseded', closed_at = ?2
                     WHERE operation_id = ?1 AND state = 'active'",
                    params![operation_id, now],
                )
                .map_err(StoreError::from)?;
                let (_, token_value, expires) = insert_registration_token(
                    &tx,
                    &operation.workspace_id,
                    &device_id,
                    &token.id,
                    Some(operation_id),
                    operation.lifetime_ms,
                    now,
                )?;
                tx.execute(
                    "UPDATE provisioning_operations SET state = 'completed',
                     completed_at = COALESCE(completed_at, ?2) WHERE id = ?1",
                    params![operation_id, now],
                )
                .map_err(StoreError::from)?;
                tx.commit().map_err(StoreError::from)?;
                (token_value, expires)
            };
            Ok(Some(registration_token_json(&token_value, expires)))
        }
    }
}

fn registration_token_json(token: &str, expires: Option<i64>) -> Value {
    json!({
        "registrationToken": token,
        "expirationTime": expires.map(rfc3339),
    })
}

/// A new active Registration Token: its row id, the token itself and its expiry.
fn insert_registration_token(
    tx: &rusqlite::Transaction<'_>,
    workspace_id: &str,
    device_id: &str,
    provisioning_token_id: &str,
    operation_id: Option<&str>,
    lifetime_ms: Option<i64>,
    now: i64,
) -> Result<(String, String, Option<i64>), StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    let token = random_token("rt_");
    let expires = lifetime_ms.map(|ms| now.saturating_add(ms));
    tx.execute(
        "INSERT INTO registration_tokens (id, workspace_id, device_id, token_hash,
         provisioning_token_id, operation_id, created_at, expires_at, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active')",
        params![
            id,
            workspace_id,
            device_id,
            hash_token(&token),
            provisioning_token_id,
            operation_id,
            now,
            expires
        ],
    )?;
    Ok((id, token, expires))
}

/// What a technician may set when approving.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Approval {
    /// The operation.
    pub provisioning_operation_id: String,
    /// Device ID override (if the token's mode allows it).
    #[serde(default)]
    pub device_id: Option<String>,
    /// Lifetime override (if the token's mode allows it).
    #[serde(default)]
    pub registration_token_lifetime_seconds: Option<Lifetime>,
}

/// Approve a pending operation; cancels other open operations for the same Device ID.
pub fn approve_operation(
    state: &AppState,
    workspace_id: &str,
    approval: &Approval,
) -> Result<Value, Problem> {
    expire_operations(state)?;
    let id = &approval.provisioning_operation_id;
    let operation = load_operation(state, id)?
        .filter(|op| op.workspace_id == workspace_id)
        .ok_or_else(|| Problem::not_found(format!("provisioning operation {id} does not exist")))?;
    if operation.state != "pending" {
        let cause = operation
            .cancellation_cause
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        return Err(Problem::conflict(format!(
            "provisioning operation {id} is {}{cause}, not pending",
            operation.state
        )));
    }
    let options = {
        let db = state.store.lock();
        let json: String = db
            .query_row(
                "SELECT options_json FROM provisioning_tokens WHERE id = ?1",
                [&operation.provisioning_token_id],
                |r| r.get(0),
            )
            .map_err(StoreError::from)?;
        serde_json::from_str::<TokenOptions>(&json).map_err(StoreError::from)?
    };
    let device_id = options.device_id_at_approval(
        operation.requested_device_id.as_deref(),
        approval.device_id.as_deref(),
    )?;
    let lifetime = options.lifetime_at_approval(approval.registration_token_lifetime_seconds)?;
    let lifetime_ms = match lifetime {
        Lifetime::Seconds(s) => Some(
            i64::try_from(s)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        ),
        Lifetime::Infinite => None,
    };
    let now = now_ms();
    {
        let mut db = state.store.lock();
        let tx = db.transaction().map_err(StoreError::from)?;
        // Checked again under the lock: a cancel or the expiry that came after the read above
        // wins, and nothing of this approval is written.
        let approved = tx
            .execute(
                "UPDATE provisioning_operations SET state = 'approved', approved_at = ?2,
                 device_id = ?3, lifetime_ms = ?4, lifetime_infinite = ?5
                 WHERE id = ?1 AND state = 'pending' AND expires_at > ?2",
                params![id, now, device_id, lifetime_ms, lifetime_ms.is_none()],
            )
            .map_err(StoreError::from)?;
        if approved != 1 {
            return Err(Problem::conflict(format!(
                "provisioning operation {id} was cancelled or expired meanwhile"
            )));
        }
        tx.execute(
            "UPDATE provisioning_operations SET state = 'cancelled',
             cancellation_cause = 'anotherOperationApproved', closed_at = ?3
             WHERE workspace_id = ?1 AND id != ?4 AND (state = 'approved' OR (state = 'pending'
             AND requested_device_id = ?2)) AND COALESCE(device_id, requested_device_id) = ?2",
            params![workspace_id, device_id, now, id],
        )
        .map_err(StoreError::from)?;
        crate::devices::ensure_device(&tx, workspace_id, &device_id, now)?;
        tx.commit().map_err(StoreError::from)?;
    }
    crate::devices::apply_fleet_configurations(state, workspace_id, &device_id)?;
    get_operation(state, workspace_id, id)
}

/// Cancel a pending or approved-but-unfetched operation (cause `technician`).
pub fn cancel_operation(state: &AppState, workspace_id: &str, id: &str) -> Result<Value, Problem> {
    expire_operations(state)?;
    let operation = load_operation(state, id)?
        .filter(|op| op.workspace_id == workspace_id)
        .ok_or_else(|| Problem::not_found(format!("provisioning operation {id} does not exist")))?;
    if !matches!(operation.state.as_str(), "pending" | "approved") {
        return Err(Problem::conflict(format!(
            "provisioning operation {id} is {}; only pending or approved operations can be cancelled",
            operation.state
        )));
    }
    state
        .store
        .lock()
        .execute(
            "UPDATE provisioning_operations SET state = 'cancelled',
             cancellation_cause = 'technician', closed_at = ?2 WHERE id = ?1",
            params![id, now_ms()],
        )
        .map_err(StoreError::from)?;
    get_operation(state, workspace_id, id)
}

const OPERATION_COLUMNS: &str =
    "o.id, o.workspace_id, o.provisioning_token_id, o.verification_code,
    o.requested_device_id, o.parameters_json, o.state, o.cancellation_cause, o.created_at,
    o.expires_at, o.approved_at, o.device_id, o.lifetime_ms, o.lifetime_infinite, o.completed_at,
    o.closed_at, t.name, t.options_json";

fn operation_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let parameters: String = r.get(5)?;
    let options: String = r.get(17)?;
    let lifetime_ms: Option<i64> = r.get(12)?;
    let infinite: Option<bool> = r.get(13)?;
    let lifetime = match (lifetime_ms, infinite) {
        (Some(ms), _) => json!(ms / 1000),
        (None, Some(true)) => json!("infinite"),
        _ => Value::Null,
    };
    Ok(json!({
        "provisioningOperationId": r.get::<_, String>(0)?,
        "workspaceId": r.get::<_, String>(1)?,
        "provisioningTokenId": r.get::<_, String>(2)?,
        "provisioningTokenName": r.get::<_, String>(16)?,
        "provisioningTokenOptions": serde_json::from_str::<Value>(&options).unwrap_or(Value::Null),
        "verificationCode": r.get::<_, String>(3)?,
        "requestedDeviceId": r.get::<_, Option<String>>(4)?,
        "parameters": serde_json::from_str::<Value>(&parameters).unwrap_or(Value::Null),
        "state": r.get::<_, String>(6)?,
        "cancellationCause": r.get::<_, Option<String>>(7)?,
        "createdTime": rfc3339(r.get(8)?),
        "expirationTime": rfc3339(r.get(9)?),
        "approvedTime": r.get::<_, Option<i64>>(10)?.map(rfc3339),
        "deviceId": r.get::<_, Option<String>>(11)?,
        "registrationTokenLifetimeSeconds": lifetime,
        "completedTime": r.get::<_, Option<i64>>(14)?.map(rfc3339),
        "closedTime": r.get::<_, Option<i64>>(15)?.map(rfc3339),
    }))
}

/// One operation as the admin API shows it.
pub fn get_operation(state: &AppState, workspace_id: &str, id: &str) -> Result<Value, Problem> {
    let db = state.store.lock();
    db.query_row(
        &format!(
            "SELECT {OPERATION_COLUMNS} FROM provisioning_operations o
             JOIN provisioning_tokens t ON t.id = o.provisioning_token_id
             WHERE o.id = ?1 AND o.workspace_id = ?2"
        ),
        params![id, workspace_id],
        operation_json,
    )
    .optional()
    .map_err(StoreError::from)?
    .ok_or_else(|| Problem::not_found(format!("provisioning operation {id} does not exist")))
}

/// Operations of a workspace, newest first, optionally of one state.
pub fn list_operations(
    state: &AppState,
    workspace_id: &str,
    state_filter: Option<&str>,
) -> Result<Value, Problem> {
    expire_operations(state)?;
    let db = state.store.lock();
    let mut stmt = db
        .prepare(&format!(
            "SELECT {OPERATION_COLUMNS} FROM provisioning_operations o
             JOIN provisioning_tokens t ON t.id = o.provisioning_token_id
             WHERE o.workspace_id = ?1 AND (?2 IS NULL OR o.state = ?2)
             ORDER BY o.created_at DESC LIMIT 500"
        ))
        .map_err(StoreError::from)?;
    let rows = stmt
        .query_map(params![workspace_id, state_filter], operation_json)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(StoreError::from)?;
    Ok(Value::Array(rows))
}

/// A Registration Token that authenticated.
#[derive(Debug, Clone)]
pub struct RegistrationTokenRecord {
    /// Record id (`skn` of the MQTT credentials issued for it).
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// Device it is bound to.
    pub device_id: String,
    /// Provisioning Token it descends from.
    pub provisioning_token_id: String,
    /// Issue instant (ms).
    pub created_at: i64,
    /// Expiry (ms), `None` = never.
    pub expires_at: Option<i64>,
}

/// A Registration Token as stored, whatever its state.
struct StoredRegistrationToken {
    record: RegistrationTokenRecord,
    state: String,
    closed_at: Option<i64>,
    superseded_by: Option<String>,
}

fn lookup_registration_token(
    db: &rusqlite::Connection,
    token: &str,
) -> Result<Option<StoredRegistrationToken>, StoreError> {
    Ok(db
        .query_row(
            "SELECT id, workspace_id, device_id, provisioning_token_id, created_at, expires_at,
             state, closed_at, superseded_by FROM registration_tokens WHERE token_hash = ?1",
            [hash_token(token)],
            |r| {
                Ok(StoredRegistrationToken {
                    record: RegistrationTokenRecord {
                        id: r.get(0)?,
                        workspace_id: r.get(1)?,
                        device_id: r.get(2)?,
                        provisioning_token_id: r.get(3)?,
                        created_at: r.get(4)?,
                        expires_at: r.get(5)?,
                    },
                    state: r.get(6)?,
                    closed_at: r.get(7)?,
                    superseded_by: r.get(8)?,
                })
            },
        )
        .optional()?)
}

/// Find an active, unexpired Registration Token; 401 otherwise. Marks it used.
pub fn authenticate_registration_token(
    state: &AppState,
    token: &str,
) -> Result<RegistrationTokenRecord, Problem> {
    let found = lookup_registration_token(&state.store.lock(), token)?;
    let found =
        found.ok_or_else(|| Problem::unauthorized("the Registration Token is not valid"))?;
    if found.state != "active" {
        return Err(Problem::unauthorized(format!(
            "the Registration Token was {}",
            found.state
        )));
    }
    let record = found.record;
    if record.expires_at.is_some_and(|e| e <= now_ms()) {
        return Err(Problem::unauthorized("the Registration Token has expired"));
    }
    state.check_workspace(&record.workspace_id, true)?;
    state
        .store
        .lock()
        .execute(
            "UPDATE registration_tokens SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
            params![record.id, now_ms()],
        )
        .map_err(StoreError::from)?;
    Ok(record)
}

/// How long a Registration Token superseded by a refresh may refresh again, as long as its
/// successor was never used: the device never got the answer that carried the successor
/// (a lost response, a crash before saving it), and its retry must not need a technician.
const REFRESH_RETRY_GRACE_MS: i64 = 15 * 60 * 1_000;

/// Device `refresh`: a new Registration Token of the same lifetime; the old one is superseded.
///
/// Safe to retry: a token superseded by a refresh in the last [`REFRESH_RETRY_GRACE_MS`] whose
/// successor was never used refreshes again, superseding that successor instead. Two refreshes
/// of one token at once never leave two tokens alive: the later replaces the earlier's.
pub fn refresh_registration_token(
    state: &AppState,
    provisioning_token: &ProvisioningTokenInfo,
    registration_token: &str,
) -> Result<Value, Problem> {
    let unauthorized = |why: String| Problem::unauthorized(why);
    let found = lookup_registration_token(&state.store.lock(), registration_token)?
        .ok_or_else(|| unauthorized("the Registration Token is not valid".into()))?;
    let record = &found.record;
    if record.workspace_id != provisioning_token.workspace_id {
        return Err(Problem::unauthorized(
            "the Registration Token does not belong to this Provisioning Token's workspace",
        ));
    }
    let now = now_ms();
    if record.expires_at.is_some_and(|e| e <= now) {
        return Err(Problem::unauthorized("the Registration Token has expired"));
    }
    state.check_workspace(&record.workspace_id, true)?;
    let lifetime_ms = record.expires_at.map(|e| e - record.created_at);
    let mut db = state.store.lock();
    let tx = db.transaction().map_err(StoreError::from)?;
    let replaced = match (found.state.as_str(), &found.superseded_by) {
        ("active", _) => record.id.clone(),
        ("superseded", Some(successor))
            if found
                .closed_at
                .is_some_and(|at| now.saturating_sub(at) <= REFRESH_RETRY_GRACE_MS) =>
        {
            let unused: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM registration_tokens WHERE id = ?1
                     AND state = 'active' AND used_at IS NULL)",
                    params![successor],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)?;
            if !unused {
                return Err(unauthorized(
                    "the Registration Token was superseded and its successor is in use".into(),
                ));
            }
            successor.clone()
        }
        (other, _) => return Err(unauthorized(format!("the Registration Token was {other}"))),
    };
    // Exactly one of two concurrent refreshes finds the token still active.
    let changed = tx
        .execute(
            "UPDATE registration_tokens SET state = 'superseded', closed_at = ?2
             WHERE id = ?1 AND state = 'active'",
            params![replaced, now],
        )
        .map_err(StoreError::from)?;
    if changed != 1 {
        return Err(unauthorized(
            "the Registration Token was superseded by a concurrent refresh".into(),
        ));
    }
    let (new_id, token, expires) = insert_registration_token(
        &tx,
        &record.workspace_id,
        &record.device_id,
        &provisioning_token.id,
        None,
        lifetime_ms,
        now,
    )?;
    // The presented token (and the successor it replaced) now lead to the new one, so a
    // second lost answer can be retried the same way.
    tx.execute(
        "UPDATE registration_tokens SET superseded_by = ?3, used_at = COALESCE(used_at, ?4)
         WHERE id IN (?1, ?2)",
        params![record.id, replaced, new_id, now],
    )
    .map_err(StoreError::from)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(registration_token_json(&token, expires))
}

/// Registration Tokens of a workspace (optionally one device), newest first.
pub fn list_registration_tokens(
    state: &AppState,
    workspace_id: &str,
    device_id: Option<&str>,
) -> Result<Value, Problem> {
    let db = state.store.lock();
    let mut stmt = db
        .prepare(
            "SELECT id, device_id, provisioning_token_id, operation_id, created_at, expires_at,
             state, closed_at FROM registration_tokens
             WHERE workspace_id = ?1 AND (?2 IS NULL OR device_id = ?2)
             ORDER BY created_at DESC LIMIT 500",
        )
        .map_err(StoreError::from)?;
    let now = now_ms();
    let rows = stmt
        .query_map(params![workspace_id, device_id], |r| {
            let expires: Option<i64> = r.get(5)?;
            let mut token_state: String = r.get(6)?;
            if token_state == "active" && expires.is_some_and(|e| e <= now) {
                token_state = "expired".to_owned();
            }
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "deviceId": r.get::<_, String>(1)?,
                "provisioningTokenId": r.get::<_, String>(2)?,
                "provisioningOperationId": r.get::<_, Option<String>>(3)?,
                "createdTime": rfc3339(r.get(4)?),
                "expirationTime": expires.map(rfc3339),
                "state": token_state,
                "closedTime": r.get::<_, Option<i64>>(7)?.map(rfc3339),
            }))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(StoreError::from)?;
    Ok(Value::Array(rows))
}

/// Revoke a Registration Token with every token it descends from (the ones it superseded,
/// whose MQTT credentials are still accepted until they expire), and close the live sessions
/// that authenticated with any of them.
pub fn revoke_registration_token(
    state: &AppState,
    workspace_id: &str,
    id: &str,
) -> Result<(), Problem> {
    let revoked: Vec<String> = {
        let mut db = state.store.lock();
        let tx = db.transaction().map_err(StoreError::from)?;
        let token: Option<(String, i64)> = tx
            .query_row(
                "SELECT device_id, created_at FROM registration_tokens
                 WHERE id = ?1 AND workspace_id = ?2",
                params![id, workspace_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(StoreError::from)?;
        let Some((device_id, created_at)) = token else {
            return Err(Problem::not_found(format!(
                "registration token {id} does not exist"
            )));
        };
        // The chain: this token and the device's older ones still accepted for credentials.
        let chain: Vec<String> = tx
            .prepare(
                "SELECT id FROM registration_tokens WHERE workspace_id = ?1 AND device_id = ?2
                 AND (id = ?3 OR (state = 'superseded' AND created_at <= ?4))",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(params![workspace_id, device_id, id, created_at], |r| {
                        r.get(0)
                    })?
                    .collect()
            })
            .map_err(StoreError::from)?;
        let now = now_ms();
        for token in &chain {
            tx.execute(
                "UPDATE registration_tokens SET state = 'revoked', closed_at = ?2 WHERE id = ?1",
                params![token, now],
            )
            .map_err(StoreError::from)?;
        }
        tx.commit().map_err(StoreError::from)?;
        chain
    };
    for token in &revoked {
        state
            .sessions
            .disconnect_token(token, "registration token revoked");
    }
    Ok(())
}

/// Whether MQTT credentials issued for this Registration Token may still be used.
pub fn credential_token_usable(
    state: &AppState,
    token_id: &str,
    workspace_id: &str,
    device_id: &str,
) -> Result<bool, StoreError> {
    let token_state: Option<String> = state
        .store
        .lock()
        .query_row(
            "SELECT state FROM registration_tokens WHERE id = ?1 AND workspace_id = ?2
             AND device_id = ?3",
            params![token_id, workspace_id, device_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(matches!(
        token_state.as_deref(),
        Some("active" | "superseded")
    ))
}
