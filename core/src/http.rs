//! HTTP requests the core asks the host to make, the responses it gets back, and how a
//! response status is classified the way the Platform's contract defines it.
//!
//! The core never performs HTTP itself: it emits an [`HttpRequest`] with an id, and the host
//! answers with [`crate::Input::HttpResponse`] or [`crate::Input::HttpFailed`] carrying that id.
//! A response that arrives after the core gave up on the request (its deadline passed, or the
//! activity that asked for it moved on) is ignored.

use crate::prelude::*;

use crate::json::Value;
use crate::reason::{RequestFailure, RequestKind};
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
    /// The most bytes of the answer's body the core takes ([`MAX_ANSWER_BYTES`]). A host reads
    /// at most one byte more and hands over what it read, so a wrong URL that streams without
    /// end cannot fill the memory; the core sees the answer is too long and says so.
    pub max_response_bytes: u32,
}

/// The most bytes of an answer's body the core takes. The Platform's answers are JSON of a few
/// kilobytes, and a blob store's answer to a `PUT` is empty.
pub const MAX_ANSWER_BYTES: u32 = 1 << 20;

/// What the host got back for an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// Status code. Hosts follow no redirect: a 3xx comes here as it is, and 0 stands for a
    /// redirect the host refused without seeing its status (a browser's opaque redirect).
    pub status: u16,
    /// The value of the `Retry-After` header, if any; several values joined by `, ` (as
    /// `fetch` hands them over).
    pub retry_after: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// How the core reacts to an answer of the Platform's API (docs/wire-contract.md, "Statuses
/// and what the device does"), decided here once for every sub-machine that makes requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx other than 202.
    Success,
    /// 202: accepted, not done yet (a provisioning operation waiting for approval).
    Pending,
    /// 401: the token in the request is invalid, expired or revoked.
    Unauthorized(RequestFailure),
    /// 400 and other 4xx that retrying will not fix.
    Rejected(RequestFailure),
    /// 410: gone; the problem type says why.
    Gone {
        /// The problem type URI (empty when the body has none).
        problem_type: String,
        /// The whole failure, for the app.
        failure: RequestFailure,
    },
    /// No answer, or 423 (workspace disabled), 429, 5xx, 408: try again later, after
    /// `retry_after_ms` if given.
    RetryLater { retry_after_ms: Option<u64> },
}

/// The verdict on a request's outcome: its response, or why there was none.
pub(crate) fn classify(outcome: &Result<HttpResponse, RequestFailure>, now: u64) -> Verdict {
    let response = match outcome {
        Ok(response) => response,
        // A URL the rule refuses stays refused: retrying would change nothing.
        Err(failure @ RequestFailure::Insecure(_)) => return Verdict::Rejected(failure.clone()),
        Err(_) => {
            return Verdict::RetryLater {
                retry_after_ms: None,
            };
        }
    };
    let Some(failure) = RequestFailure::from_response(response) else {
        return match response.status {
            202 => Verdict::Pending,
            _ => Verdict::Success,
        };
    };
    match response.status {
        401 => Verdict::Unauthorized(failure),
        410 => Verdict::Gone {
            problem_type: match &failure {
                RequestFailure::Status { problem_type, .. } => {
                    problem_type.clone().unwrap_or_default()
                }
                _ => String::new(),
            },
            failure,
        },
        // A redirect (a captive portal, a misconfigured proxy) is not the Platform's answer:
        // try again later, as with no answer.
        0 | 300..=399 | 408 | 423 | 425 | 429 | 500..=599 => Verdict::RetryLater {
            retry_after_ms: response
                .retry_after
                .as_deref()
                .and_then(|value| parse_retry_after(value, now)),
        },
        _ => Verdict::Rejected(failure),
    }
}

/// The verdict on an answer to one of the Platform's device calls (provisioning, register,
/// refresh): a refusal counts only when the Platform gave it, as an RFC 7807 problem with a
/// `type`. The same status without one (a proxy's or captive portal's 403 page, a bare 404
/// from a misrouted load balancer) is retried later: forgetting a token or failing
/// provisioning for it would need a technician to undo.
pub(crate) fn classify_platform(
    outcome: &Result<HttpResponse, RequestFailure>,
    now: u64,
) -> Verdict {
    match classify(outcome, now) {
        Verdict::Unauthorized(failure)
        | Verdict::Rejected(failure)
        | Verdict::Gone { failure, .. }
            if matches!(
                failure,
                RequestFailure::Status {
                    problem_type: None,
                    ..
                }
            ) =>
        {
            Verdict::RetryLater {
                retry_after_ms: None,
            }
        }
        verdict => verdict,
    }
}

/// Joins the Platform's base URL and an absolute path, tolerating a trailing slash.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    text!(base.trim_end_matches('/'), path)
}

/// An HTTP call a sub-machine wants made; the facade gives it an id and a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpCall {
    /// Which request this is, for the reasons the app is told when it fails.
    pub(crate) kind: RequestKind,
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpCall {
    pub(crate) fn json(
        kind: RequestKind,
        method: Method,
        url: String,
        token: &str,
        body: Value,
    ) -> Self {
        Self {
            kind,
            method,
            url,
            headers: vec![
                ("Authorization".into(), text!("DeviceToken ", token)),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: body.to_json().into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Result<HttpResponse, RequestFailure> {
        Ok(HttpResponse {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        })
    }

    fn status(status: u16, problem_type: Option<&str>, detail: Option<&str>) -> RequestFailure {
        RequestFailure::Status {
            status,
            problem_type: problem_type.map(str::to_owned),
            detail: detail.map(str::to_owned),
        }
    }

    #[test]
    fn statuses_map_to_the_contract() {
        assert_eq!(classify(&response(200, ""), 0), Verdict::Success);
        assert_eq!(classify(&response(202, ""), 0), Verdict::Pending);
        assert_eq!(
            classify(&response(401, ""), 0),
            Verdict::Unauthorized(status(401, None, None))
        );
        assert_eq!(
            classify(&response(423, ""), 0),
            Verdict::RetryLater {
                retry_after_ms: None
            }
        );
        let cancelled = "/problems/deviceProvisioning/provisioningOperationCancelled";
        assert_eq!(
            classify(&response(410, &format!(r#"{{"type":"{cancelled}"}}"#)), 0),
            Verdict::Gone {
                problem_type: cancelled.into(),
                failure: status(410, Some(cancelled), None),
            }
        );
        assert_eq!(
            classify(
                &response(400, r#"{"title":"Bad","detail":"no such thing"}"#),
                0
            ),
            Verdict::Rejected(status(400, None, Some("no such thing")))
        );
    }

    #[test]
    fn no_answer_is_retried_later() {
        for failure in [
            RequestFailure::TimedOut,
            RequestFailure::Network("connection refused".into()),
        ] {
            assert_eq!(
                classify(&Err(failure), 0),
                Verdict::RetryLater {
                    retry_after_ms: None
                }
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_for_429_and_503() {
        let mut r = response(503, "");
        if let Ok(r) = &mut r {
            r.retry_after = Some("7".into());
        }
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
                problem_type: String::new(),
                failure: status(410, None, None),
            }
        );
    }
}
