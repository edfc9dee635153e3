//! Large-message upload (IoT Hub file upload dialect): the device asks for an upload slot, PUTs
//! the bytes to the returned URL, then notifies completion; the blob lands in the data directory.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{post, put};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rusqlite::{OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{JsonBody, SharedState};
use crate::clock::now_ms;
use crate::problem::Problem;
use crate::provisioning::credential_token_usable;
use crate::secrets::{sign, verify, verify_sas};

/// How long an upload URL may be used after the device asked for it (Azure's upload SAS of
/// IoT Hub lasts an hour by default).
const UPLOAD_URL_LIFETIME_S: i64 = 3_600;
use crate::store::StoreError;

/// Container name in upload URLs.
const CONTAINER: &str = "upload";

pub(super) fn routes(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/devices/{device}/files", post(init_upload))
        .route("/devices/{device}/files/notifications", post(notify_upload))
        .route(
            "/upload/{*blob}",
            put(put_blob).layer(DefaultBodyLimit::max(state.max_message_bytes)),
        )
}

/// The host name a request was sent to (its `Host` header, without the port).
fn host_of(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    Some(
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name),
    )
}

/// Check the device's SAS (sent raw in Authorization, as IoT Hub expects) for `ws:dev`.
fn authenticate_device(
    state: &SharedState,
    headers: &HeaderMap,
    iot_device_id: &str,
) -> Result<(String, String), Problem> {
    let sas = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::unauthorized("send Authorization: SharedAccessSignature ..."))?;
    let claims = verify_sas(&state.signing_key, sas, now_ms() / 1000)
        .map_err(|e| Problem::unauthorized(e.to_string()))?;
    let (workspace_id, device_id) = iot_device_id
        .split_once(':')
        .ok_or_else(|| Problem::not_found("device path must be <workspaceId>:<deviceId>"))?;
    if !claims
        .resource
        .ends_with(&format!("/devices/{iot_device_id}"))
    {
        return Err(Problem::unauthorized(
            "the credential is for another device",
        ));
    }
    state.check_workspace(workspace_id, true)?;
    if !credential_token_usable(
        state,
        &claims.registration_token_id,
        workspace_id,
        device_id,
    )? {
        return Err(Problem::unauthorized(
            "the credential's Registration Token was revoked",
        ));
    }
    Ok((workspace_id.to_owned(), device_id.to_owned()))
}

fn check_blob_name(name: &str) -> Result<(), Problem> {
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if name.is_empty()
        || name.len() > 256
        || !chars_ok
        || name.starts_with('/')
        || name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(Problem::bad_request(format!(
            "blob name {name:?} must be 1-256 characters of A-Z a-z 0-9 - _ . / without empty or dot segments"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitUpload {
    blob_name: String,
}

/// What an upload URL's signature covers: the upload and its expiry (Unix seconds).
fn upload_claims(correlation_id: &str, expires_s: i64) -> String {
    format!("upload\n{correlation_id}\n{expires_s}")
}

async fn init_upload(
    State(state): State<SharedState>,
    Path(device): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<InitUpload>,
) -> Result<Json<Value>, Problem> {
    let (workspace_id, device_id) = authenticate_device(&state, &headers, &device)?;
    check_blob_name(&body.blob_name)?;
    let correlation_id = uuid::Uuid::new_v4().to_string();
    state
        .store
        .lock()
        .execute(
            "INSERT INTO uploads (correlation_id, workspace_id, device_id, blob_name, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                correlation_id,
                workspace_id,
                device_id,
                body.blob_name,
                now_ms()
            ],
        )
        .map_err(StoreError::from)?;
    let expires_s = now_ms() / 1000 + UPLOAD_URL_LIFETIME_S;
    let signature = sign(
        &state.signing_key,
        &upload_claims(&correlation_id, expires_s),
    );
    let sas_token = format!(
        "?cid={correlation_id}&se={expires_s}&sig={}",
        utf8_percent_encode(&signature, NON_ALPHANUMERIC)
    );
    let mut answer = json!({
        "correlationId": correlation_id,
        "hostName": state.blob_host_name,
        "containerName": CONTAINER,
        "blobName": body.blob_name,
        "sasToken": sas_token,
    });
    // The stand-in's extension: the blob URL on its own listener (a real instance's device
    // builds `https://<hostName>/<containerName>/<blobName><sasToken>`).
    if state.contract == crate::Contract::Extended {
        let base = state.http_base.get().cloned().unwrap_or_default();
        answer["uploadUrl"] = json!(format!("{base}/{CONTAINER}/{}{sas_token}", body.blob_name));
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct UploadQuery {
    cid: String,
    se: i64,
    sig: String,
}

async fn put_blob(
    State(state): State<SharedState>,
    Path(blob): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, Problem> {
    let forbidden = |why: &str| Problem::new(StatusCode::FORBIDDEN, "Forbidden", why);
    if state.contract == crate::Contract::IotHub {
        // Blob storage is its own service under its own host name, and takes block blobs only.
        if host_of(&headers) != Some(state.blob_host_name.as_str()) {
            return Err(Problem::not_found(format!(
                "blobs are stored at https://{}",
                state.blob_host_name
            )));
        }
        if headers.get("x-ms-blob-type").and_then(|v| v.to_str().ok()) != Some("BlockBlob") {
            return Err(Problem::bad_request(
                "x-ms-blob-type: BlockBlob is required (the only blob type uploads take)",
            ));
        }
    }
    if !verify(
        &state.signing_key,
        &upload_claims(&query.cid, query.se),
        &query.sig,
    ) {
        return Err(forbidden("the upload signature does not match"));
    }
    if now_ms() / 1000 >= query.se {
        return Err(forbidden("the upload URL has expired"));
    }
    let row: Option<(String, String, String, Option<i64>)> = state
        .store
        .lock()
        .query_row(
            "SELECT workspace_id, device_id, blob_name, notified_at FROM uploads
             WHERE correlation_id = ?1",
            [&query.cid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(StoreError::from)?;
    let (workspace_id, device_id, blob_name, notified_at) =
        row.ok_or_else(|| Problem::not_found("no such upload"))?;
    if notified_at.is_some() {
        return Err(Problem::conflict(
            "the upload was completed; its blob cannot be written again",
        ));
    }
    if blob != blob_name {
        return Err(Problem::bad_request(
            "the URL names another blob than the upload slot",
        ));
    }
    let path = state
        .blob_dir
        .join(&workspace_id)
        .join(&device_id)
        .join(&blob_name);
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Problem::internal(format!("cannot create blob directory: {e}")))?;
    }
    tokio::fs::write(&path, &body)
        .await
        .map_err(|e| Problem::internal(format!("cannot write blob: {e}")))?;
    state
        .store
        .lock()
        .execute(
            "UPDATE uploads SET uploaded_at = ?2, size = ?3 WHERE correlation_id = ?1",
            params![query.cid, now_ms(), body.len() as i64],
        )
        .map_err(StoreError::from)?;
    Ok(StatusCode::CREATED)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    correlation_id: String,
    is_success: bool,
    #[serde(default)]
    #[allow(dead_code)]
    status_code: Option<i64>,
    #[serde(default)]
    #[allow(dead_code)]
    status_description: Option<String>,
}

async fn notify_upload(
    State(state): State<SharedState>,
    Path(device): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Notification>,
) -> Result<StatusCode, Problem> {
    let (workspace_id, device_id) = authenticate_device(&state, &headers, &device)?;
    let changed = state
        .store
        .lock()
        .execute(
            "UPDATE uploads SET notified_at = ?4, success = ?5 WHERE correlation_id = ?1
             AND workspace_id = ?2 AND device_id = ?3",
            params![
                body.correlation_id,
                workspace_id,
                device_id,
                now_ms(),
                body.is_success
            ],
        )
        .map_err(StoreError::from)?;
    if changed == 0 {
        return Err(Problem::not_found("no such upload for this device"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Uploaded blobs of a workspace.
pub(super) fn list_blobs(state: &SharedState, workspace_id: &str) -> Result<Value, Problem> {
    let db = state.store.lock();
    let mut stmt = db
        .prepare(
            "SELECT correlation_id, device_id, blob_name, created_at, uploaded_at, size,
             notified_at, success FROM uploads WHERE workspace_id = ?1 ORDER BY created_at DESC
             LIMIT 1000",
        )
        .map_err(StoreError::from)?;
    let rows = stmt
        .query_map([workspace_id], |r| {
            Ok(json!({
                "correlationId": r.get::<_, String>(0)?,
                "deviceId": r.get::<_, String>(1)?,
                "blobName": r.get::<_, String>(2)?,
                "createdTime": crate::clock::rfc3339(r.get(3)?),
                "uploadedTime": r.get::<_, Option<i64>>(4)?.map(crate::clock::rfc3339),
                "size": r.get::<_, Option<i64>>(5)?,
                "notifiedTime": r.get::<_, Option<i64>>(6)?.map(crate::clock::rfc3339),
                "success": r.get::<_, Option<bool>>(7)?,
            }))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(StoreError::from)?;
    Ok(Value::Array(rows))
}

/// Content of one uploaded blob.
pub(super) async fn read_blob(
    state: &SharedState,
    workspace_id: &str,
    device_id: &str,
    name: &str,
) -> Result<Vec<u8>, Problem> {
    check_blob_name(name)?;
    crate::options::check_device_id(device_id)?;
    let path = state.blob_dir.join(workspace_id).join(device_id).join(name);
    tokio::fs::read(&path).await.map_err(|_| {
        Problem::not_found(format!("blob {name} of device {device_id} does not exist"))
    })
}
