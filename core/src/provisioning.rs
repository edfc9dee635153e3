//! Provisioning: turning a Provisioning Token into a Registration Token through an operation a
//! technician approves.
//!
//! `init` starts an operation, which the app shows (its verification code and expiry); then
//! `complete` is polled until the operation is approved (202 means not yet). A cancelled
//! operation ends provisioning with an error; an expired one (or an unknown one, after the
//! Platform lost it) starts a new operation. A still-valid operation saved before a restart is
//! resumed instead of starting a new one.

use crate::prelude::*;

use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::Clock;
use crate::http::{HttpCall, HttpResponse, Method, Verdict, classify_platform, join_url};
use crate::json::{self, Object, Value};
use crate::reason::{Reason, RequestFailure, RequestKind};
use crate::retry_after::parse_retry_after;
use crate::rng::Rng;
use crate::text::Describe;
use crate::timestamp::parse_rfc3339;
use crate::token::RegistrationToken;

/// A provisioning operation waiting for a technician's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningOperation {
    /// The operation id.
    pub id: String,
    /// The code the technician matches when approving.
    pub verification_code: String,
    /// When the operation expires (ms since the epoch).
    pub expires_at: u64,
}

impl ProvisioningOperation {
    /// Its form in the saved device state (the expiry as the wall clock reads it).
    pub(crate) fn to_saved(&self, clock: Clock) -> Value {
        Value::object([
            ("id", self.id.as_str().into()),
            ("verification_code", self.verification_code.as_str().into()),
            ("expires_at", clock.to_wall(self.expires_at).into()),
        ])
    }

    /// The operation as the app sees it: the expiry the core keeps on its timeline, read on
    /// the wall clock.
    pub(crate) fn on_wall_clock(&self, clock: Clock) -> Self {
        Self {
            expires_at: clock.to_wall(self.expires_at),
            ..self.clone()
        }
    }

    /// Reads [`ProvisioningOperation::to_saved`]'s form back.
    pub(crate) fn from_saved(object: &Object) -> Result<Self, String> {
        Ok(Self {
            id: json::string(object, "id")?,
            verification_code: json::string(object, "verification_code")?,
            expires_at: json::unsigned(object, "expires_at")?,
        })
    }
}

/// Why provisioning stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisioningError {
    /// A technician (or the Platform) cancelled the operation.
    Cancelled {
        /// The cancelled operation.
        operation_id: String,
    },
    /// The Platform refused the Provisioning Token (401).
    InvalidProvisioningToken,
    /// The Platform refused the request for good (400, an unexpected 410 and other final
    /// statuses), with its answer.
    Refused(RequestFailure),
}

impl Describe for ProvisioningError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Cancelled { operation_id } => put!(
                out,
                "provisioning operation ",
                operation_id,
                " was cancelled"
            ),
            Self::InvalidProvisioningToken => {
                put!(out, "provisioning token is invalid, expired or revoked")
            }
            Self::Refused(failure) => put!(out, "provisioning request refused: ", failure),
        }
    }
}

described!(ProvisioningError);

impl Reason for ProvisioningError {
    fn code(&self) -> &'static str {
        match self {
            Self::Cancelled { .. } => "cancelled",
            Self::InvalidProvisioningToken => "invalidProvisioningToken",
            Self::Refused(_) => "refused",
        }
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        match self {
            Self::Cancelled { operation_id } => vec![("operationId", operation_id.as_str().into())],
            Self::Refused(failure) => vec![("failure", failure.to_value())],
            Self::InvalidProvisioningToken => Vec::new(),
        }
    }
}

/// What the host needs to run provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProvisioningRequest {
    pub(crate) instance_url: String,
    pub(crate) provisioning_token: String,
    pub(crate) device_id: Option<String>,
    pub(crate) parameters: Vec<(String, String)>,
    pub(crate) poll_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProvisioningEvent {
    /// Show this operation to the app (and save it, to resume after a restart).
    Operation(ProvisioningOperation),
    /// Approved: the new Registration Token.
    Completed(RegistrationToken),
    /// Stopped for good.
    Failed(ProvisioningError),
}

#[derive(Debug, Clone)]
enum State {
    /// Start a new operation at the given time.
    Init {
        at: u64,
    },
    InitSent,
    /// Poll `complete` at the given time.
    Poll {
        op: ProvisioningOperation,
        at: u64,
    },
    PollSent {
        op: ProvisioningOperation,
    },
    Finished,
}

#[derive(Debug)]
pub(crate) struct Provisioning {
    request: ProvisioningRequest,
    state: State,
    backoff: Backoff,
    /// A failed `complete` is not called again before this time, even for a new operation
    /// (its backoff or `Retry-After` outlives an operation that expired meanwhile).
    complete_not_before: u64,
    call: Option<HttpCall>,
    events: Vec<ProvisioningEvent>,
}

const CANCELLED_PROBLEM: &str = "provisioningOperationCancelled";

impl Provisioning {
    /// Starts provisioning, resuming `saved` when it has not expired yet.
    pub(crate) fn new(
        now: u64,
        request: ProvisioningRequest,
        backoff: BackoffConfig,
        saved: Option<ProvisioningOperation>,
    ) -> Self {
        let mut events = Vec::new();
        let state = match saved {
            Some(op) if op.expires_at > now => {
                events.push(ProvisioningEvent::Operation(op.clone()));
                State::Poll { op, at: now }
            }
            _ => State::Init { at: now },
        };
        Self {
            request,
            state,
            backoff: Backoff::new(backoff),
            complete_not_before: now,
            call: None,
            events,
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: u64) {
        match &self.state {
            State::Init { at } if *at <= now => {
                let mut body = json::Map::new();
                if let Some(id) = &self.request.device_id {
                    body.insert("deviceId".into(), id.clone().into());
                }
                if !self.request.parameters.is_empty() {
                    let params = self
                        .request
                        .parameters
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                        .collect();
                    body.insert("parameters".into(), Value::Object(params));
                }
                self.call = Some(HttpCall::json(
                    RequestKind::ProvisioningInit,
                    Method::Post,
                    join_url(&self.request.instance_url, "/provisioning-operations/init"),
                    &self.request.provisioning_token,
                    Value::Object(body),
                ));
                self.state = State::InitSent;
            }
            State::Poll { op, at } if *at <= now || op.expires_at <= now => {
                let op = op.clone();
                if op.expires_at <= now {
                    self.state = State::Init { at: now };
                    return self.handle_timeout(now);
                }
                self.call = Some(HttpCall::json(
                    RequestKind::ProvisioningComplete,
                    Method::Put,
                    join_url(
                        &self.request.instance_url,
                        "/provisioning-operations/complete",
                    ),
                    &self.request.provisioning_token,
                    Value::object([("provisioningOperationId", op.id.as_str().into())]),
                ));
                self.state = State::PollSent { op };
            }
            _ => {}
        }
    }

    /// The answer to the last call; `Err` when the request failed without a response.
    /// Takes the answer to the request in flight. `Err`: it was a success whose body could not
    /// be read (the request is made again after a delay), for the app to hear why.
    pub(crate) fn handle_response(
        &mut self,
        clock: Clock,
        rng: &mut Rng,
        response: Result<HttpResponse, RequestFailure>,
    ) -> Result<(), String> {
        match core::mem::replace(&mut self.state, State::Finished) {
            State::InitSent => self.on_init_response(clock, rng, response),
            State::PollSent { op } => self.on_complete_response(clock, rng, op, response),
            other => {
                self.state = other;
                Ok(())
            }
        }
    }

    fn on_init_response(
        &mut self,
        clock: Clock,
        rng: &mut Rng,
        response: Result<HttpResponse, RequestFailure>,
    ) -> Result<(), String> {
        let now = clock.now();
        match classify_platform(&response, clock.wall_now()) {
            Verdict::Success | Verdict::Pending => {
                let body = response.map(|r| r.body).unwrap_or_default();
                match parse_init(&body, clock) {
                    Ok(op) => {
                        self.backoff.reset();
                        self.events.push(ProvisioningEvent::Operation(op.clone()));
                        self.state = State::Poll {
                            op,
                            at: (now + self.request.poll_interval_ms).max(self.complete_not_before),
                        };
                    }
                    Err(unreadable) => {
                        self.retry_init(now, rng, None);
                        return Err(unreadable);
                    }
                }
            }
            Verdict::Unauthorized(_) => self.fail(ProvisioningError::InvalidProvisioningToken),
            Verdict::Rejected(failure) | Verdict::Gone { failure, .. } => {
                self.fail(ProvisioningError::Refused(failure))
            }
            Verdict::RetryLater { retry_after_ms } => self.retry_init(now, rng, retry_after_ms),
        }
        Ok(())
    }

    fn on_complete_response(
        &mut self,
        clock: Clock,
        rng: &mut Rng,
        op: ProvisioningOperation,
        response: Result<HttpResponse, RequestFailure>,
    ) -> Result<(), String> {
        let now = clock.now();
        let verdict = match classify_platform(&response, clock.wall_now()) {
            // An operation the Platform does not know (any more) is as good as expired.
            Verdict::Rejected(failure @ RequestFailure::Status { status: 404, .. }) => {
                Verdict::Gone {
                    problem_type: String::new(),
                    failure,
                }
            }
            verdict => verdict,
        };
        match verdict {
            Verdict::Pending => {
                self.backoff.reset();
                // The Platform may say how long approval polling should pause.
                let retry_after = response
                    .as_ref()
                    .ok()
                    .and_then(|r| r.retry_after.as_deref())
                    .and_then(|value| parse_retry_after(value, clock.wall_now()))
                    .unwrap_or(0);
                self.state = State::Poll {
                    op,
                    at: now + retry_after.max(self.request.poll_interval_ms),
                };
            }
            Verdict::Success => {
                let body = response.map(|r| r.body).unwrap_or_default();
                match parse_complete(&body, clock) {
                    Ok(token) => {
                        self.events.push(ProvisioningEvent::Completed(token));
                        self.state = State::Finished;
                    }
                    // A garbled approval is retried: calling `complete` again returns a token.
                    Err(unreadable) => {
                        self.retry_poll(now, rng, op, None);
                        return Err(unreadable);
                    }
                }
            }
            Verdict::Gone { problem_type, .. } if problem_type.ends_with(CANCELLED_PROBLEM) => self
                .fail(ProvisioningError::Cancelled {
                    operation_id: op.id,
                }),
            // Expired or unknown: a new operation is needed.
            Verdict::Gone { .. } => self.state = State::Init { at: now },
            Verdict::Unauthorized(_) => self.fail(ProvisioningError::InvalidProvisioningToken),
            Verdict::Rejected(failure) => self.fail(ProvisioningError::Refused(failure)),
            Verdict::RetryLater { retry_after_ms } => self.retry_poll(now, rng, op, retry_after_ms),
        }
        Ok(())
    }

    fn retry_init(&mut self, now: u64, rng: &mut Rng, retry_after_ms: Option<u64>) {
        let delay = self.backoff.next_delay(rng, retry_after_ms);
        self.state = State::Init { at: now + delay };
    }

    fn retry_poll(
        &mut self,
        now: u64,
        rng: &mut Rng,
        op: ProvisioningOperation,
        retry_after_ms: Option<u64>,
    ) {
        let delay = self
            .backoff
            .next_delay(rng, retry_after_ms)
            .max(self.request.poll_interval_ms);
        self.complete_not_before = now + delay;
        self.state = State::Poll {
            op,
            at: now + delay,
        };
    }

    fn fail(&mut self, error: ProvisioningError) {
        self.events.push(ProvisioningEvent::Failed(error));
        self.state = State::Finished;
    }

    #[must_use]
    pub(crate) fn poll_call(&mut self) -> Option<HttpCall> {
        self.call.take()
    }

    #[must_use]
    pub(crate) fn poll_event(&mut self) -> Option<ProvisioningEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        match &self.state {
            State::Init { at } => Some(*at),
            State::Poll { op, at } => Some((*at).min(op.expires_at)),
            _ => None,
        }
    }

    /// The operation being waited on, if any.
    pub(crate) fn operation(&self) -> Option<&ProvisioningOperation> {
        match &self.state {
            State::Poll { op, .. } | State::PollSent { op } => Some(op),
            _ => None,
        }
    }
}

/// The operation `init` started, its expiry on the core's timeline.
fn parse_init(body: &[u8], clock: Clock) -> Result<ProvisioningOperation, String> {
    let init = json::parse_object(body)?;
    let expiration = json::string(&init, "expirationTime")?;
    let expires_at = json::read("expirationTime", parse_rfc3339(&expiration))?;
    Ok(ProvisioningOperation {
        id: json::string(&init, "provisioningOperationId")?,
        verification_code: json::string(&init, "verificationCode")?,
        expires_at: clock.onto_timeline(expires_at),
    })
}

/// The token `complete` handed out, its times on the core's timeline.
fn parse_complete(body: &[u8], clock: Clock) -> Result<RegistrationToken, String> {
    let complete = json::parse_object(body)?;
    let expires_at = match json::optional_string(&complete, "expirationTime")? {
        Some(time) => Some(json::read("expirationTime", parse_rfc3339(&time))?),
        None => None,
    };
    Ok(RegistrationToken {
        token: json::string(&complete, "registrationToken")?,
        obtained_at: clock.now(),
        expires_at: expires_at.map(|at| clock.onto_timeline(at)),
    })
}
