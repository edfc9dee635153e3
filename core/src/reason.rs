//! Why the device could not make progress: the typed reasons the core attaches to its events,
//! so that every host tells the app the same specific cause instead of a bare state change.
//!
//! Each reason has a stable `code` (what apps match on, the same in every host) and a
//! human-readable message ([`Describe`], the same text as its `Display`, for logs). Its JSON
//! form, which the browser host hands to JavaScript and the WASI command prints, is
//! `{"code": .., "message": .., ..}` with the reason's own fields beside them; see
//! [`crate::Event::to_value`].

use crate::prelude::*;

use crate::http::HttpResponse;
use crate::json::Value;
use crate::mqtt::codec::ConnectReturnCode;
use crate::text::Describe;

/// A typed reason: a stable code, a message, and the reason's own fields.
pub trait Reason: Describe {
    /// The stable code apps match on (camelCase, the same in every host).
    fn code(&self) -> &'static str;

    /// The reason's own fields beside `code` and `message` (camelCase names).
    fn details(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }

    /// `{"code": .., "message": .., ..details}`.
    fn to_value(&self) -> Value {
        let mut fields = vec![
            ("code", self.code().into()),
            ("message", self.text().into()),
        ];
        fields.extend(self.details());
        Value::object(fields)
    }
}

/// Why a connection to the gateway ended, or never became usable. The core reconnects after a
/// backoff delay in every case; the reason says what the app (or its user) may have to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionLoss {
    /// The gateway answered the CONNECT with this refusal (CONNACK return code 1–5). A refused
    /// credential (4, 5) also makes the device ask the Platform for a new one.
    Refused(ConnectReturnCode),
    /// The transport could not be opened: name resolution, TCP connect or the TLS handshake
    /// failed (the host's text says which), or the browser refused the WebSocket.
    Unreachable(String),
    /// An open transport was closed by the gateway, the network or the host (the host's text
    /// says how, with the WebSocket close code where there is one).
    Closed(String),
    /// The transport, CONNACK or SUBACK did not arrive before the connect timeout.
    ConnectTimedOut,
    /// The gateway did not answer a keep-alive ping in time.
    KeepAliveTimedOut,
    /// A published message was not acknowledged in time.
    AckTimedOut,
    /// The gateway refused a subscription the device needs.
    SubscriptionRefused,
    /// The gateway sent bytes that are not the MQTT the device expects.
    Protocol(String),
    /// The endpoint would carry the credential unencrypted to a host that is not loopback;
    /// the device never opened it.
    Insecure(String),
}

impl Describe for ConnectionLoss {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Refused(code) => put!(
                out,
                "the gateway refused the connection: ",
                code.reason(),
                " (CONNACK code ",
                code.code(),
                ")"
            ),
            Self::Unreachable(why) => put!(out, "the gateway is unreachable: ", why),
            Self::Closed(how) => put!(out, "the connection closed: ", how),
            Self::ConnectTimedOut => put!(out, "connecting timed out"),
            Self::KeepAliveTimedOut => put!(out, "no answer to the keep-alive ping"),
            Self::AckTimedOut => put!(out, "a publish was not acknowledged in time"),
            Self::SubscriptionRefused => put!(out, "the gateway refused a subscription"),
            Self::Protocol(problem) => put!(out, "protocol error: ", problem),
            Self::Insecure(refusal) => put!(out, refusal),
        }
    }
}

described!(ConnectionLoss);

impl Reason for ConnectionLoss {
    fn code(&self) -> &'static str {
        match self {
            Self::Refused(_) => "refused",
            Self::Unreachable(_) => "unreachable",
            Self::Closed(_) => "closed",
            Self::ConnectTimedOut => "connectTimedOut",
            Self::KeepAliveTimedOut => "keepAliveTimedOut",
            Self::AckTimedOut => "ackTimedOut",
            Self::SubscriptionRefused => "subscriptionRefused",
            Self::Protocol(_) => "protocol",
            Self::Insecure(_) => "insecure",
        }
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        match self {
            Self::Refused(code) => vec![("returnCode", code.code().into())],
            _ => Vec::new(),
        }
    }
}

/// Which request to the Platform's HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `POST /provisioning-operations/init`.
    ProvisioningInit,
    /// `PUT /provisioning-operations/complete` (polling for approval).
    ProvisioningComplete,
    /// `PUT /devices/register` (an MQTT credential for the Registration Token).
    Register,
    /// `PUT /devices/registration-tokens/refresh`.
    RefreshToken,
    /// `POST .../files` (an upload slot for a large message).
    UploadSlot,
    /// The `PUT` of a large message's bytes to blob storage.
    UploadBlob,
    /// `POST .../files/notifications` (the upload is finished).
    UploadNotify,
}

impl RequestKind {
    /// The stable name apps see.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProvisioningInit => "provisioningInit",
            Self::ProvisioningComplete => "provisioningComplete",
            Self::Register => "register",
            Self::RefreshToken => "refreshToken",
            Self::UploadSlot => "uploadSlot",
            Self::UploadBlob => "uploadBlob",
            Self::UploadNotify => "uploadNotify",
        }
    }
}

/// Why one HTTP request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFailure {
    /// The Platform, or something in between, answered with an error status. `problem_type`
    /// and `detail` come from an RFC 7807 problem body when there is one.
    Status {
        /// The HTTP status.
        status: u16,
        /// The problem type URI, if the body was a problem document.
        problem_type: Option<String>,
        /// The problem's `detail` (or `title`), if any.
        detail: Option<String>,
    },
    /// No answer: the host's network error (name resolution, connection refused, TLS, a
    /// browser's CORS or mixed-content block), in the host's words.
    Network(String),
    /// No answer before the request's deadline.
    TimedOut,
    /// The answer was a redirect, which the device never follows (it reaches only URLs it
    /// checked itself). `None`: the host refused it without seeing the status (a browser's
    /// opaque redirect).
    Redirected {
        /// The redirect's status, when the host saw it.
        status: Option<u16>,
    },
    /// The URL would carry a token unencrypted to a host that is not loopback; the request
    /// was never made.
    Insecure(String),
    /// The answer was a success whose body the device could not read (not JSON, a field
    /// missing or of the wrong form); the request is made again later.
    Malformed(String),
}

impl Describe for RequestFailure {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Status {
                status,
                problem_type,
                detail,
            } => {
                put!(out, "status ", status);
                match (detail, problem_type) {
                    (Some(detail), _) => put!(out, ": ", detail),
                    (None, Some(kind)) => put!(out, " (", kind, ")"),
                    (None, None) => {}
                }
            }
            Self::Network(why) => put!(out, "network error: ", why),
            Self::TimedOut => put!(out, "no answer in time"),
            Self::Redirected { status } => {
                put!(out, "the answer was a redirect");
                if let Some(status) = status {
                    put!(out, " (status ", status, ")");
                }
                put!(out, ", which the device does not follow");
            }
            Self::Insecure(refusal) => put!(out, refusal),
            Self::Malformed(problem) => put!(out, "the answer could not be read: ", problem),
        }
    }
}

described!(RequestFailure);

impl Reason for RequestFailure {
    fn code(&self) -> &'static str {
        match self {
            Self::Status { .. } => "status",
            Self::Network(_) => "network",
            Self::TimedOut => "timedOut",
            Self::Redirected { .. } => "redirected",
            Self::Insecure(_) => "insecure",
            Self::Malformed(_) => "malformed",
        }
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        match self {
            Self::Status {
                status,
                problem_type,
                detail,
            } => vec![
                ("status", (*status).into()),
                ("problemType", problem_type.as_deref().into()),
                ("detail", detail.as_deref().into()),
            ],
            Self::Redirected { status } => vec![("status", (*status).into())],
            _ => Vec::new(),
        }
    }
}

impl RequestFailure {
    /// The failure a response stands for, or `None` for a success (2xx).
    pub(crate) fn from_response(response: &HttpResponse) -> Option<Self> {
        match response.status {
            200..=299 => return None,
            // 0: the host refused a redirect whose status it could not see.
            0 => return Some(Self::Redirected { status: None }),
            status @ 300..=399 => {
                return Some(Self::Redirected {
                    status: Some(status),
                });
            }
            _ => {}
        }
        let problem = Value::parse(&response.body).ok();
        let field = |name: &str| {
            problem
                .as_ref()
                .and_then(|p| p.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(Self::Status {
            status: response.status,
            problem_type: field("type"),
            detail: field("detail").or_else(|| field("title")),
        })
    }
}

/// Why the device dropped its Registration Token (and provisions again, keeping its queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenDiscardReason {
    /// The token's lifetime is over.
    Expired,
    /// The Platform refused the token (revoked, superseded or unknown) when it was used.
    Refused {
        /// The request that was refused.
        request: RequestKind,
        /// How it was refused (boxed: it keeps [`crate::Event`] small).
        failure: Box<RequestFailure>,
    },
}

impl Describe for TokenDiscardReason {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Expired => put!(out, "the registration token expired"),
            Self::Refused { request, failure } => put!(
                out,
                "the platform refused the registration token on ",
                request.as_str(),
                ": ",
                **failure
            ),
        }
    }
}

described!(TokenDiscardReason);

impl Reason for TokenDiscardReason {
    fn code(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Refused { .. } => "refused",
        }
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        match self {
            Self::Refused { request, failure } => vec![
                ("request", request.as_str().into()),
                ("failure", failure.to_value()),
            ],
            Self::Expired => Vec::new(),
        }
    }
}

/// One code of a reason type and the fields it writes beside `code` and `message`.
pub type ReasonCode = (&'static str, &'static [&'static str]);

/// Every reason type by its name (`connectionLoss`, ..), with each of its codes and the fields
/// it writes beside `code` and `message`, as [`Reason::to_value`] writes them: what a test checks
/// the TypeScript declarations (`ConnectionLoss`, ..) and the WIT variants (`connection-loss`,
/// ..) against, as [`crate::EVENT_VOCABULARY`] is for events.
pub const REASON_VOCABULARY: &[(&str, &[ReasonCode])] = &[
    (
        "connectionLoss",
        &[
            ("refused", &["returnCode"]),
            ("unreachable", &[]),
            ("closed", &[]),
            ("connectTimedOut", &[]),
            ("keepAliveTimedOut", &[]),
            ("ackTimedOut", &[]),
            ("subscriptionRefused", &[]),
            ("protocol", &[]),
            ("insecure", &[]),
        ],
    ),
    (
        "requestFailure",
        &[
            ("status", &["status", "problemType", "detail"]),
            ("network", &[]),
            ("timedOut", &[]),
            ("redirected", &["status"]),
            ("insecure", &[]),
            ("malformed", &[]),
        ],
    ),
    (
        "provisioningFailure",
        &[
            ("cancelled", &["operationId"]),
            ("invalidProvisioningToken", &[]),
            ("refused", &["failure"]),
        ],
    ),
    (
        "tokenDiscardReason",
        &[("expired", &[]), ("refused", &["request", "failure"])],
    ),
    ("storeFailure", &[("quotaExceeded", &[]), ("failed", &[])]),
    (
        "rejectReason",
        &[
            ("notStored", &["storeError"]),
            ("corrupt", &[]),
            ("uploadRefused", &["request", "failure"]),
            ("unencodable", &[]),
            ("refusedByGateway", &["attempts", "minutes"]),
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProvisioningError, RejectReason, StoreError};

    /// One reason of every type and code, by type name, in the vocabulary's order (a new
    /// variant goes here and into the vocabulary).
    fn one_of_each() -> Vec<(&'static str, Vec<Box<dyn Reason>>)> {
        let failure = || Box::new(RequestFailure::TimedOut);
        vec![
            (
                "connectionLoss",
                vec![
                    Box::new(ConnectionLoss::Refused(ConnectReturnCode::NotAuthorized)),
                    Box::new(ConnectionLoss::Unreachable("dns".into())),
                    Box::new(ConnectionLoss::Closed("1006".into())),
                    Box::new(ConnectionLoss::ConnectTimedOut),
                    Box::new(ConnectionLoss::KeepAliveTimedOut),
                    Box::new(ConnectionLoss::AckTimedOut),
                    Box::new(ConnectionLoss::SubscriptionRefused),
                    Box::new(ConnectionLoss::Protocol("bad".into())),
                    Box::new(ConnectionLoss::Insecure("ws://x".into())),
                ],
            ),
            (
                "requestFailure",
                vec![
                    Box::new(RequestFailure::Status {
                        status: 400,
                        problem_type: None,
                        detail: None,
                    }),
                    Box::new(RequestFailure::Network("refused".into())),
                    Box::new(RequestFailure::TimedOut),
                    Box::new(RequestFailure::Redirected { status: None }),
                    Box::new(RequestFailure::Insecure("http://x".into())),
                    Box::new(RequestFailure::Malformed("x".into())),
                ],
            ),
            (
                "provisioningFailure",
                vec![
                    Box::new(ProvisioningError::Cancelled {
                        operation_id: "op".into(),
                    }),
                    Box::new(ProvisioningError::InvalidProvisioningToken),
                    Box::new(ProvisioningError::Refused(RequestFailure::TimedOut)),
                ],
            ),
            (
                "tokenDiscardReason",
                vec![
                    Box::new(TokenDiscardReason::Expired),
                    Box::new(TokenDiscardReason::Refused {
                        request: RequestKind::Register,
                        failure: failure(),
                    }),
                ],
            ),
            (
                "storeFailure",
                vec![
                    Box::new(StoreError::QuotaExceeded),
                    Box::new(StoreError::Failed("io".into())),
                ],
            ),
            (
                "rejectReason",
                vec![
                    Box::new(RejectReason::NotStored(StoreError::QuotaExceeded)),
                    Box::new(RejectReason::Corrupt("crc".into())),
                    Box::new(RejectReason::UploadRefused {
                        request: RequestKind::UploadBlob,
                        failure: failure(),
                    }),
                    Box::new(RejectReason::Unencodable("big".into())),
                    Box::new(RejectReason::RefusedByGateway {
                        attempts: 10,
                        minutes: 2,
                    }),
                ],
            ),
        ]
    }

    #[test]
    fn the_reason_vocabulary_lists_every_code_with_exactly_the_fields_it_writes() {
        let reasons = one_of_each();
        assert_eq!(reasons.len(), REASON_VOCABULARY.len());
        for ((name, reasons), (listed_name, codes)) in reasons.iter().zip(REASON_VOCABULARY) {
            assert_eq!(name, listed_name);
            assert_eq!(reasons.len(), codes.len(), "codes of {name}");
            for (reason, (code, fields)) in reasons.iter().zip(*codes) {
                assert_eq!(reason.code(), *code, "{name}");
                let written: Vec<&str> = reason.details().iter().map(|(f, _)| *f).collect();
                assert_eq!(written, *fields, "fields of {name} {code}");
            }
        }
    }

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_problem_body_gives_its_type_and_detail() {
        let failure = RequestFailure::from_response(&response(
            401,
            r#"{"type":"/problems/invalidToken","title":"Unauthorized","detail":"token revoked"}"#,
        ))
        .unwrap();
        assert_eq!(
            failure,
            RequestFailure::Status {
                status: 401,
                problem_type: Some("/problems/invalidToken".into()),
                detail: Some("token revoked".into()),
            }
        );
        assert_eq!(failure.to_string(), "status 401: token revoked");
        assert_eq!(
            failure.to_value().to_json(),
            r#"{"code":"status","detail":"token revoked","message":"status 401: token revoked","problemType":"/problems/invalidToken","status":401}"#
        );
    }

    #[test]
    fn a_body_that_is_no_problem_document_still_gives_the_status() {
        let failure = RequestFailure::from_response(&response(502, "<html>bad gateway")).unwrap();
        assert_eq!(failure.to_string(), "status 502");
        assert_eq!(RequestFailure::from_response(&response(202, "")), None);
    }

    #[test]
    fn a_refusal_names_its_connack_code() {
        let loss = ConnectionLoss::Refused(ConnectReturnCode::NotAuthorized);
        assert_eq!(
            loss.to_string(),
            "the gateway refused the connection: not authorized (CONNACK code 5)"
        );
        assert_eq!(
            loss.to_value().to_json(),
            r#"{"code":"refused","message":"the gateway refused the connection: not authorized (CONNACK code 5)","returnCode":5}"#
        );
    }
}
