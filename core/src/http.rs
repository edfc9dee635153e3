//! HTTP requests the core asks the host to make, the responses it gets back, and how a
//! response status is classified the way the Platform's contract defines it.
//!
//! The core never performs HTTP itself: it emits an [`HttpRequest`] with an id, and the host
//! answers with [`crate::Input::HttpResponse`] or [`crate::Input::HttpFailed`] carrying that id.
//! A response that arrives after the core gave up on the request (its deadline passed, or the
//! activity that asked for it moved on) is ignored.

use crate::retry_after::parse_retry_after;

/// Identifies one HTTP request so the host's answer can be routed back to its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// An HTTP request for the host to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the core waits for the answer to this request; dropping it stalls the activity until its deadline"]
pub struct HttpRequest {
    /// Echoed back in the answer.
    pub id: RequestId,
    /// The method.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// Header names and values (`Authorization`, `Content-Type`, ...).
    pub headers: Vec<(String, String)>,
    /// The body (JSON for the Platform API, raw bytes for a blob upload).
    pub body: Vec<u8>,
    /// The core treats the request as failed at this time (ms since the epoch) if no answer came;
    /// hosts should abort it then (e.g. with an `AbortController`).
    pub deadline: u64,
}

/// What the host got back for an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The value of the `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// How the core reacts to a response status of the Platform's API (docs/wire-contract.md,
/// "Statuses and what the device does").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx other than 202.
    Success,
    /// 202: accepted, not done yet (a provisioning operation waiting for approval).
    Pending,
    /// 401: the token in the request is invalid, expired or revoked.
    Unauthorized,
    /// 400 and other 4xx that retrying will not fix.
    Rejected { detail: String },
    /// 410: gone; the problem type says why.
    Gone { problem_type: String },
    /// 423 (workspace disabled), 429, 5xx, 408: try again later, after `retry_after_ms` if given.
    RetryLater { retry_after_ms: Option<u64> },
}

pub(crate) fn classify(response: &HttpResponse, now: u64) -> Verdict {
    let retry_after_ms = response
        .retry_after
        .as_deref()
        .and_then(|value| parse_retry_after(value, now));
    match response.status {
        202 => Verdict::Pending,
        200..=299 => Verdict::Success,
        401 => Verdict::Unauthorized,
        410 => Verdict::Gone {
            problem_type: problem_field(&response.body, "type").unwrap_or_default(),
        },
        408 | 423 | 425 | 429 | 500..=599 => Verdict::RetryLater { retry_after_ms },
        status => Verdict::Rejected {
            detail: describe_problem(status, &response.body),
        },
    }
}

/// A short human description of an error response: its problem detail or title when present.
pub(crate) fn describe_problem(status: u16, body: &[u8]) -> String {
    let detail = problem_field(body, "detail").or_else(|| problem_field(body, "title"));
    match detail {
        Some(detail) => format!("status {status}: {detail}"),
        None => format!("status {status}"),
    }
}

fn problem_field(body: &[u8], field: &str) -> Option<String> {
    let value = crate::json::Value::parse(body).ok()?;
    Some(value.get(field)?.as_str()?.to_owned())
}

/// Joins the Platform's base URL and an absolute path, tolerating a trailing slash.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn statuses_map_to_the_contract() {
        assert_eq!(classify(&response(200, ""), 0), Verdict::Success);
        assert_eq!(classify(&response(202, ""), 0), Verdict::Pending);
        assert_eq!(classify(&response(401, ""), 0), Verdict::Unauthorized);
        assert_eq!(
            classify(&response(423, ""), 0),
            Verdict::RetryLater {
                retry_after_ms: None
            }
        );
        assert_eq!(
            classify(
                &response(
                    410,
                    r#"{"type":"/problems/deviceProvisioning/provisioningOperationCancelled"}"#
                ),
                0
            ),
            Verdict::Gone {
                problem_type: "/problems/deviceProvisioning/provisioningOperationCancelled".into()
            }
        );
        assert_eq!(
            classify(
                &response(400, r#"{"title":"Bad","detail":"no such thing"}"#),
                0
            ),
            Verdict::Rejected {
                detail: "status 400: no such thing".into()
            }
        );
    }

    #[test]
    fn retry_after_is_honoured_for_429_and_503() {
        let mut r = response(503, "");
        r.retry_after = Some("7".into());
        assert_eq!(
            classify(&r, 0),
            Verdict::RetryLater {
                retry_after_ms: Some(7_000)
            }
        );
    }

    #[test]
    fn junk_bodies_do_not_break_classification() {
        assert_eq!(
            classify(&response(410, "\u{0}not json"), 0),
            Verdict::Gone {
                problem_type: String::new()
            }
        );
    }
}
