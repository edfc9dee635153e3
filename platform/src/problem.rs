//! RFC 7807 problem details: the one error type every HTTP handler returns.
//!
//! Device SDKs branch on the status code (401 invalid token, 400 do not retry, 410 gone, 423
//! workspace disabled) and, for 410, on the problem `type`, so both are part of the contract.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Problem type of a complete call on a cancelled Provisioning Operation (the official SDK gives up).
pub const TYPE_OPERATION_CANCELLED: &str =
    "/problems/deviceProvisioning/provisioningOperationCancelled";
/// Problem type of a complete call on an expired Provisioning Operation (the SDK starts a new one).
pub const TYPE_OPERATION_EXPIRED: &str =
    "/problems/deviceProvisioning/provisioningOperationExpired";
/// Problem type of a repeated complete call that is no longer allowed (too late, or the
/// device's tokens were revoked since): a device starts a new operation.
pub const TYPE_OPERATION_COMPLETED: &str =
    "/problems/deviceProvisioning/provisioningOperationCompleted";

/// An HTTP error answered as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Problem type URI (relative, as the real Platform uses).
    pub problem_type: String,
    /// Short, stable summary.
    pub title: String,
    /// What exactly went wrong with this request.
    pub detail: String,
    /// Seconds the client should wait before retrying, sent as `Retry-After`.
    pub retry_after_seconds: Option<u64>,
}

impl Problem {
    /// A problem with a type derived from the title.
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Self {
        let slug: String = title
            .split_whitespace()
            .enumerate()
            .map(|(i, word)| {
                let lower = word.to_ascii_lowercase();
                if i == 0 {
                    lower
                } else {
                    let mut chars = lower.chars();
                    chars
                        .next()
                        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                        .unwrap_or_default()
                }
            })
            .filter(|w| w.chars().all(|c| c.is_ascii_alphanumeric()))
            .collect();
        Self {
            status,
            problem_type: format!("/problems/{slug}"),
            title: title.to_owned(),
            detail: detail.into(),
            retry_after_seconds: None,
        }
    }

    /// 400: the request can never succeed as sent.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    /// 400 for an invalid combination or value of options.
    pub fn invalid_options(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Invalid options", detail)
    }

    /// 401: missing, unknown, expired or revoked token.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
    }

    /// 404: the named thing does not exist (in this workspace).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    /// 409: the thing exists but its state forbids the call.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", detail)
    }

    /// 413: the body is larger than this endpoint accepts.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }

    /// 423: the workspace is disabled; retry later.
    pub fn workspace_disabled() -> Self {
        let mut problem = Self::new(
            StatusCode::LOCKED,
            "Workspace disabled",
            "the workspace is disabled; try again later",
        );
        problem.retry_after_seconds = Some(60);
        problem
    }

    /// 410 for a closed Provisioning Operation with the given problem type.
    pub fn gone(problem_type: &str, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::GONE,
            problem_type: problem_type.to_owned(),
            title: "Provisioning Operation closed".to_owned(),
            detail: detail.into(),
            retry_after_seconds: None,
        }
    }

    /// 500: the Platform's own storage failed.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", detail)
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(error: crate::store::StoreError) -> Self {
        use rusqlite::ErrorCode;
        if let crate::store::StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) = &error
            && matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        {
            let mut problem = Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "the database is busy; try again shortly",
            );
            problem.retry_after_seconds = Some(1);
            return problem;
        }
        tracing::error!(%error, "storage failure");
        Self::internal(error.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": self.problem_type,
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
