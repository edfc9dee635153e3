//! Device HTTP API: provisioning (`init`, `complete`), registration and token refresh, exactly as
//! the official SDK calls them (`Authorization: DeviceToken <token>`).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{JsonBody, SharedState, authorization};
use crate::clock::{now_ms, rfc3339, timespan};
use crate::problem::Problem;
use crate::provisioning;
use crate::secrets::issue_sas;

pub(super) fn routes(_state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/provisioning-operations/init", post(init))
        .route("/provisioning-operations/complete", put(complete))
        .route("/devices/register", put(register))
        .route("/devices/registration-tokens/refresh", put(refresh))
}

fn device_token(headers: &HeaderMap) -> Result<&str, Problem> {
    authorization(headers, "DeviceToken")
        .ok_or_else(|| Problem::unauthorized("send Authorization: DeviceToken <token>"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitRequest {
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

async fn init(
    State(state): State<SharedState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<InitRequest>,
) -> Result<Json<Value>, Problem> {
    let token = provisioning::authenticate_provisioning_token(&state, device_token(&headers)?)?;
    let operation =
        provisioning::init_operation(&state, &token, body.device_id.as_deref(), &body.parameters)?;
    Ok(Json(operation))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompleteRequest {
    provisioning_operation_id: String,
}

async fn complete(
    State(state): State<SharedState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CompleteRequest>,
) -> Result<Response, Problem> {
    let token = provisioning::authenticate_provisioning_token(&state, device_token(&headers)?)?;
    match provisioning::complete_operation(&state, &token, &body.provisioning_operation_id)? {
        Some(registration) => Ok(Json(registration).into_response()),
        None => {
            let mut response = (
                StatusCode::ACCEPTED,
                Json(json!({"status": "pending", "detail": "waiting for approval"})),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            Ok(response)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterRequest {
    connection_string_type: String,
}

async fn register(
    State(state): State<SharedState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<Json<Value>, Problem> {
    let token = provisioning::authenticate_registration_token(&state, device_token(&headers)?)?;
    if body.connection_string_type != "SharedAccessSignature" {
        return Err(Problem::bad_request(format!(
            "connectionStringType {:?} is not supported; use SharedAccessSignature",
            body.connection_string_type
        )));
    }
    if crate::devices::load_twin(&state, &token.workspace_id, &token.device_id)?.is_none() {
        return Err(Problem::unauthorized(
            "the device of this Registration Token was deleted",
        ));
    }
    let now = now_ms();
    let sas_expiry_ms = {
        let by_lifetime = now + state.sas_lifetime_seconds * 1000;
        token.expires_at.map_or(by_lifetime, |e| e.min(by_lifetime))
    };
    let iot_device_id = format!("{}:{}", token.workspace_id, token.device_id);
    let resource = format!("{}/devices/{iot_device_id}", state.host_name);
    let sas = issue_sas(
        &state.signing_key,
        &resource,
        sas_expiry_ms / 1000,
        &token.id,
    );
    let connection_string = format!(
        "HostName={};DeviceId={iot_device_id};SharedAccessSignature={sas}",
        state.host_name
    );
    let mut answer = json!({
        "connectionString": connection_string,
        "iotHubHostName": state.host_name,
        "connectionStringType": "SharedAccessSignature",
        "connectionStringExpiration": rfc3339(sas_expiry_ms / 1000 * 1000),
        "tokenRemainingLifetime": token.expires_at.map(|e| timespan(e - now)),
        "workspaceId": token.workspace_id,
        "deviceId": token.device_id,
    });
    // The stand-in's extension: where its (possibly plain, ephemeral) listeners are.
    if state.contract == crate::Contract::Extended {
        answer["gatewayEndpoints"] = json!(state.endpoints.get().cloned().unwrap_or_default());
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshRequest {
    registration_token: String,
}

async fn refresh(
    State(state): State<SharedState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RefreshRequest>,
) -> Result<Json<Value>, Problem> {
    let token = provisioning::authenticate_provisioning_token(&state, device_token(&headers)?)?;
    Ok(Json(provisioning::refresh_registration_token(
        &state,
        &token,
        &body.registration_token,
    )?))
}
