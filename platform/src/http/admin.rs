//! Admin and technician API (`Authorization: Bearer <admin token>`): workspaces, Provisioning
//! Tokens, operations, Registration Tokens, devices and twins, fleet configurations, messages and
//! blobs. Includes the paths the official SDK's own tests call on the real Platform.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{JsonBody, SharedState, authorization};
use crate::devices::{self, FleetConfiguration};
use crate::messages::{self, MessageQuery};
use crate::options::TokenOptions;
use crate::problem::Problem;
use crate::provisioning::{self, Approval};
use crate::secrets::hash_token;

pub(super) fn routes(state: SharedState) -> Router<SharedState> {
    let ws = "/workspaces/{ws}";
    Router::new()
        .route("/workspaces", get(list_workspaces).post(create_workspace))
        .route(
            "/faults",
            get(list_faults).post(arm_fault).delete(clear_faults),
        )
        .route(ws, get(get_workspace).patch(patch_workspace))
        .route(
            &format!("{ws}/provisioning-tokens"),
            get(list_tokens).post(create_token),
        )
        .route(
            &format!("{ws}/provisioning-tokens/{{id}}/revoke"),
            post(revoke_token),
        )
        .route(
            &format!("{ws}/provisioning-operations"),
            get(list_operations),
        )
        .route(
            &format!("{ws}/provisioning-operations/approve"),
            put(approve),
        )
        .route(&format!("{ws}/provisioning-operations/cancel"), put(cancel))
        .route(
            &format!("{ws}/provisioning-operations/{{id}}"),
            get(get_operation),
        )
        .route(
            &format!("{ws}/registration-tokens"),
            get(list_registration_tokens),
        )
        .route(
            &format!("{ws}/registration-tokens/{{id}}/revoke"),
            post(revoke_registration_token),
        )
        .route(&format!("{ws}/devices"), get(list_devices))
        .route(
            &format!("{ws}/devices/{{id}}"),
            get(get_device).delete(delete_device),
        )
        .route(
            &format!("{ws}/devices/{{id}}/delete"),
            delete(delete_device),
        )
        .route(
            &format!("{ws}/devices/{{id}}/desired-properties"),
            get(get_desired).put(put_desired).patch(patch_desired),
        )
        .route(
            &format!("{ws}/devices/{{id}}/reported-properties"),
            get(get_reported),
        )
        .route(
            &format!("{ws}/devices/{{id}}/tags"),
            get(get_tags).put(put_tags),
        )
        .route(&format!("{ws}/devices/{{id}}/c2d-messages"), post(send_c2d))
        .route(
            &format!("{ws}/devices/{{id}}/messages"),
            get(device_messages),
        )
        .route(
            &format!("{ws}/devices/{{id}}/message-rate"),
            get(device_message_rate),
        )
        .route(&format!("{ws}/devices/{{id}}/session"), get(device_session))
        .route(&format!("{ws}/messages"), get(list_messages))
        .route(
            &format!("{ws}/fleet-configurations"),
            get(list_fleet).post(create_fleet),
        )
        .route(
            &format!("{ws}/fleet-configurations/{{id}}"),
            delete(delete_fleet),
        )
        .route("/transcript", get(read_transcript).delete(clear_transcript))
        .route(&format!("{ws}/blobs"), get(list_blobs))
        .route(&format!("{ws}/blobs/content"), get(blob_content))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

async fn require_admin(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Result<Response, Problem> {
    let token = authorization(request.headers(), "Bearer")
        .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <admin token>"))?;
    if hash_token(token) != state.admin_token_hash {
        return Err(Problem::unauthorized("the admin token is not valid"));
    }
    Ok(next.run(request).await)
}

type ApiResult = Result<Json<Value>, Problem>;

const NO_TRANSCRIPT: &str =
    "no transcript is recorded: start the platform with --record-transcript";

/// What devices sent since the transcript was last cleared (`--record-transcript`).
async fn read_transcript(State(state): State<SharedState>) -> ApiResult {
    let entries = state
        .transcript
        .entries()
        .ok_or_else(|| Problem::not_found(NO_TRANSCRIPT))?;
    Ok(Json(Value::Array(entries)))
}

async fn clear_transcript(State(state): State<SharedState>) -> ApiResult {
    let cleared = state
        .transcript
        .take()
        .ok_or_else(|| Problem::not_found(NO_TRANSCRIPT))?;
    Ok(Json(json!({ "cleared": cleared.len() })))
}

async fn list_workspaces(State(state): State<SharedState>) -> ApiResult {
    Ok(Json(provisioning::list_workspaces(&state)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkspace {
    name: String,
}

async fn create_workspace(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<NewWorkspace>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    Ok((
        StatusCode::CREATED,
        Json(provisioning::create_workspace(&state, &body.name)?),
    ))
}

async fn get_workspace(State(state): State<SharedState>, Path(ws): Path<String>) -> ApiResult {
    Ok(Json(provisioning::get_workspace(&state, &ws)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspacePatch {
    disabled: bool,
}

async fn patch_workspace(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    JsonBody(body): JsonBody<WorkspacePatch>,
) -> ApiResult {
    Ok(Json(provisioning::set_workspace_disabled(
        &state,
        &ws,
        body.disabled,
    )?))
}

async fn list_tokens(State(state): State<SharedState>, Path(ws): Path<String>) -> ApiResult {
    state.check_workspace(&ws, false)?;
    Ok(Json(json!(provisioning::list_provisioning_tokens(
        &state, &ws
    )?)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewToken {
    name: String,
    #[serde(flatten)]
    options: Map<String, Value>,
}

async fn create_token(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let options: TokenOptions = serde_json::from_value(Value::Object(body.options))
        .map_err(|e| Problem::invalid_options(format!("provisioning token options: {e}")))?;
    let (info, token) = provisioning::create_provisioning_token(&state, &ws, &body.name, &options)?;
    let mut value = json!(info);
    value["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(value)))
}

async fn revoke_token(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    provisioning::revoke_provisioning_token(&state, &ws, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct StateFilter {
    state: Option<String>,
}

async fn list_operations(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    Query(filter): Query<StateFilter>,
) -> ApiResult {
    state.check_workspace(&ws, false)?;
    Ok(Json(provisioning::list_operations(
        &state,
        &ws,
        filter.state.as_deref(),
    )?))
}

async fn get_operation(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult {
    provisioning::expire_operations(&state)?;
    Ok(Json(provisioning::get_operation(&state, &ws, &id)?))
}

async fn approve(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    JsonBody(body): JsonBody<Approval>,
) -> ApiResult {
    state.check_workspace(&ws, false)?;
    Ok(Json(provisioning::approve_operation(&state, &ws, &body)?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Cancel {
    provisioning_operation_id: String,
}

async fn cancel(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    JsonBody(body): JsonBody<Cancel>,
) -> ApiResult {
    state.check_workspace(&ws, false)?;
    Ok(Json(provisioning::cancel_operation(
        &state,
        &ws,
        &body.provisioning_operation_id,
    )?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceFilter {
    device_id: Option<String>,
}

async fn list_registration_tokens(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    Query(filter): Query<DeviceFilter>,
) -> ApiResult {
    state.check_workspace(&ws, false)?;
    Ok(Json(provisioning::list_registration_tokens(
        &state,
        &ws,
        filter.device_id.as_deref(),
    )?))
}

async fn revoke_registration_token(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    provisioning::revoke_registration_token(&state, &ws, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_devices(State(state): State<SharedState>, Path(ws): Path<String>) -> ApiResult {
    Ok(Json(devices::list_devices(&state, &ws)?))
}

async fn get_device(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(devices::get_device(&state, &ws, &id)?))
}

async fn delete_device(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    devices::delete_device(&state, &ws, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_desired(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(devices::get_desired(&state, &ws, &id)?))
}

fn require_object(value: Value, what: &str) -> Result<Map<String, Value>, Problem> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Problem::bad_request(format!(
            "{what} must be a json object"
        ))),
    }
}

async fn put_desired(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let desired = require_object(body, "desired properties")?;
    Ok(Json(devices::set_desired(&state, &ws, &id, desired)?))
}

async fn patch_desired(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let patch = require_object(body, "desired properties patch")?;
    let mut desired = Value::Object(
        devices::get_desired(&state, &ws, &id)?
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    crate::merge::apply(&mut desired, &Value::Object(patch));
    let desired = require_object(desired, "desired properties")?;
    Ok(Json(devices::set_desired(&state, &ws, &id, desired)?))
}

async fn get_reported(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(devices::get_reported(&state, &ws, &id)?))
}

async fn get_tags(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(devices::get_device(&state, &ws, &id)?["tags"].clone()))
}

async fn put_tags(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let tags = require_object(body, "tags")?;
    Ok(Json(devices::set_tags(&state, &ws, &id, tags)?))
}

async fn send_c2d(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    // The query string, if any, becomes the message's property bag on the device topic.
    let properties = query.unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(devices::enqueue_c2d(&state, &ws, &id, &body, &properties)?),
    ))
}

async fn list_messages(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    Query(query): Query<MessageQuery>,
) -> ApiResult {
    Ok(Json(messages::query(&state, &ws, &query)?))
}

async fn device_messages(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
    Query(mut query): Query<MessageQuery>,
) -> ApiResult {
    query.device_id = Some(id);
    Ok(Json(messages::query(&state, &ws, &query)?))
}

/// The stand-in's facts of the device's latest MQTT session (live or ended): what its CONNECT
/// asked for and how many telemetry publishes it had unacknowledged at most. Not a path of the
/// real Platform: tests read it to see a device's tunables on the wire.
async fn device_session(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult {
    state.check_workspace(&ws, false)?;
    let facts = state
        .sessions
        .facts(&ws, &id)
        .ok_or_else(|| Problem::not_found(format!("device {id} has had no mqtt session")))?;
    Ok(Json(json!({
        "connected": state.sessions.is_connected(&ws, &id),
        "keepAliveSeconds": facts.keep_alive_seconds,
        "peakInFlight": facts.peak_in_flight,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateWindow {
    seconds: Option<u32>,
}

async fn device_message_rate(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
    Query(window): Query<RateWindow>,
) -> ApiResult {
    Ok(Json(messages::message_rate(
        &state,
        &ws,
        &id,
        window.seconds.unwrap_or(60),
    )?))
}

async fn list_fleet(State(state): State<SharedState>, Path(ws): Path<String>) -> ApiResult {
    state.check_workspace(&ws, false)?;
    Ok(Json(devices::list_fleet_configurations(&state, &ws)?))
}

async fn create_fleet(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    JsonBody(body): JsonBody<FleetConfiguration>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    Ok((
        StatusCode::CREATED,
        Json(devices::create_fleet_configuration(&state, &ws, &body)?),
    ))
}

async fn delete_fleet(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    devices::delete_fleet_configuration(&state, &ws, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_blobs(State(state): State<SharedState>, Path(ws): Path<String>) -> ApiResult {
    state.check_workspace(&ws, false)?;
    Ok(Json(super::upload::list_blobs(&state, &ws)?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlobRef {
    device_id: String,
    name: String,
}

async fn blob_content(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    Query(blob): Query<BlobRef>,
) -> Result<Response, Problem> {
    state.check_workspace(&ws, false)?;
    let bytes = super::upload::read_blob(&state, &ws, &blob.device_id, &blob.name).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn list_faults(State(state): State<SharedState>) -> ApiResult {
    Ok(Json(json!(state.faults.list())))
}

async fn arm_fault(
    State(state): State<SharedState>,
    JsonBody(fault): JsonBody<crate::faults::Fault>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    state.faults.arm(fault)?;
    Ok((StatusCode::CREATED, Json(json!(state.faults.list()))))
}

async fn clear_faults(State(state): State<SharedState>) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}
