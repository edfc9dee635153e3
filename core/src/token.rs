//! The Registration Token's lifetime and the MQTT credential it buys.
//!
//! The token is refreshed at half its remaining lifetime, but never later than ten minutes
//! before it expires, and its real expiry is what is kept (the official SDK saves the half-life
//! point as the expiry, which forces a needless re-provisioning after a long time offline).
//! `register` exchanges the token for an MQTT credential (a SAS signature with its own expiry),
//! which is renewed before it expires so the session never connects with a stale one.
//! A token that the Platform no longer accepts (401: revoked or expired) or that expired
//! locally ends here with [`CredentialsEvent::NeedsProvisioning`]: the device provisions again
//! and keeps its queue.
//!
//! What the credentials are doing is one `State`: idle, waiting for the answer to `register`
//! or to a refresh (one request at a time), or finished with the token discarded. When the next
//! `register` and the next refresh are due is kept beside it, not in it: the two are scheduled
//! independently (a refresh falls due while a credential is in use, a renewal or a retry of
//! `register` while a refresh is waiting out its backoff), so an enum over them would have to
//! carry both times in most of its variants. The current credential (`connection`) is kept
//! beside it too, since it stays in use while its renewal is under way.

use crate::prelude::*;

use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::Clock;
use crate::connection_string::ConnectionString;
use crate::http::{HttpCall, HttpResponse, Method, Verdict, classify_platform, join_url};
use crate::iothub::{self, GatewayEndpoints};
use crate::json::{self, Object, Value};
use crate::reason::{RequestFailure, RequestKind, TokenDiscardReason};
use crate::rng::Rng;
use crate::timespan::parse_timespan;
use crate::timestamp::parse_rfc3339;

/// A Registration Token and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    /// The token.
    pub token: String,
    /// When the device obtained it (ms since the epoch).
    pub obtained_at: u64,
    /// When it expires (ms since the epoch); `None` means it never does.
    pub expires_at: Option<u64>,
}

impl RegistrationToken {
    /// Its form in the saved device state (its times as the wall clock reads them).
    pub(crate) fn to_saved(&self, clock: Clock) -> Value {
        Value::object([
            ("token", self.token.as_str().into()),
            ("obtained_at", clock.to_wall(self.obtained_at).into()),
            (
                "expires_at",
                self.expires_at.map(|at| clock.to_wall(at)).into(),
            ),
        ])
    }

    /// Reads [`RegistrationToken::to_saved`]'s form back.
    pub(crate) fn from_saved(object: &Object) -> Result<Self, String> {
        Ok(Self {
            token: json::string(object, "token")?,
            obtained_at: json::unsigned(object, "obtained_at")?,
            expires_at: json::optional_unsigned(object, "expires_at")?,
        })
    }
}

/// Never refresh later than this before the token expires.
const REFRESH_MARGIN_MS: u64 = 10 * 60 * 1_000;

impl RegistrationToken {
    /// When to refresh: half the lifetime, never later than ten minutes before expiry — but
    /// not before a quarter of the lifetime (and at least a second) has passed, so a token
    /// shorter than ten minutes is not refreshed in a tight loop.
    pub fn refresh_at(&self) -> Option<u64> {
        let expires_at = self.expires_at?;
        let lifetime = expires_at.saturating_sub(self.obtained_at);
        let half = self.obtained_at + lifetime / 2;
        let floor = self.obtained_at + (lifetime / 4).max(1_000);
        Some(
            half.min(expires_at.saturating_sub(REFRESH_MARGIN_MS))
                .max(floor),
        )
    }

    /// True once the token can no longer be used.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// Where and how to reach the device gateway, from the `register` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The IoT Hub host name.
    pub host_name: String,
    /// Workspace id.
    pub workspace_id: String,
    /// Device id.
    pub device_id: String,
    /// MQTT password: the `SharedAccessSignature sr=...` string, also used for uploads.
    pub shared_access_signature: String,
    /// When the signature expires (ms since the epoch), when known.
    pub sas_expires_at: Option<u64>,
    /// When the signature was obtained (ms since the epoch).
    pub obtained_at: u64,
    /// Endpoints a stand-in Platform announces (plain TCP, WebSocket port, HTTP base).
    pub endpoints: GatewayEndpoints,
}

impl ConnectionInfo {
    /// `<workspace>:<device>`, the MQTT client id.
    pub fn client_id(&self) -> String {
        text!(self.workspace_id, ':', self.device_id)
    }

    /// The MQTT user name of the IoT Hub dialect.
    pub fn username(&self) -> String {
        text!(
            self.host_name,
            '/',
            self.client_id(),
            "/?api-version=",
            crate::iothub::MQTT_API_VERSION
        )
    }

    /// True once the signature can no longer be used.
    pub fn is_expired(&self, now: u64) -> bool {
        self.sas_expires_at.is_some_and(|at| now >= at)
    }

    /// When to renew the signature: after 80% of its lifetime.
    pub fn renew_at(&self) -> Option<u64> {
        let expires_at = self.sas_expires_at?;
        let lifetime = expires_at.saturating_sub(self.obtained_at);
        Some(self.obtained_at + lifetime / 5 * 4)
    }

    /// Base URL of the device file-upload endpoints.
    pub fn upload_base(&self) -> String {
        self.endpoints
            .http
            .clone()
            .unwrap_or_else(|| iothub::default_upload_base(&self.host_name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialsEvent {
    /// A new Registration Token: save it.
    TokenChanged(RegistrationToken),
    /// A fresh MQTT credential.
    Registered(ConnectionInfo),
    /// The token is unusable (for this reason): provision again.
    NeedsProvisioning(TokenDiscardReason),
}

/// A request of the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Register,
    Refresh,
}

impl Pending {
    fn kind(self) -> RequestKind {
        match self {
            Self::Register => RequestKind::Register,
            Self::Refresh => RequestKind::RefreshToken,
        }
    }
}

/// What the credentials are doing; the states exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No request out: the next one starts when it is due.
    Idle,
    /// This request was asked for; nothing else starts until its answer.
    Sent(Pending),
    /// The token was given up ([`CredentialsEvent::NeedsProvisioning`]): nothing more happens.
    Discarded,
}

#[derive(Debug)]
pub(crate) struct Credentials {
    instance_url: String,
    provisioning_token: String,
    token: RegistrationToken,
    connection: Option<ConnectionInfo>,
    /// Register at this time (first registration, renewal, or a retry).
    register_at: Option<u64>,
    /// A failed `register` is not called again before this time (its backoff or `Retry-After`).
    register_not_before: u64,
    /// Retry a failed refresh at this time (the regular one is `token.refresh_at()`).
    refresh_retry_at: Option<u64>,
    state: State,
    register_backoff: Backoff,
    refresh_backoff: Backoff,
    call: Option<HttpCall>,
    events: Vec<CredentialsEvent>,
}

impl Credentials {
    /// Starts with `token`; `register` is not called before `register_not_before` (a wait a
    /// failed `register` asked for outlives the credentials that were dropped meanwhile).
    pub(crate) fn new(
        now: u64,
        instance_url: String,
        provisioning_token: String,
        token: RegistrationToken,
        backoff: BackoffConfig,
        register_not_before: u64,
    ) -> Self {
        let register_not_before = register_not_before.max(now);
        Self {
            instance_url,
            provisioning_token,
            token,
            connection: None,
            register_at: Some(register_not_before),
            register_not_before,
            refresh_retry_at: None,
            state: State::Idle,
            register_backoff: Backoff::new(backoff),
            refresh_backoff: Backoff::new(backoff),
            call: None,
            events: Vec::new(),
        }
    }

    /// When `register` may be called again at the earliest.
    pub(crate) fn register_not_before(&self) -> u64 {
        self.register_not_before
    }

    pub(crate) fn connection(&self) -> Option<&ConnectionInfo> {
        self.connection.as_ref()
    }

    /// The gateway refused the credential, or it is about to expire: register again now.
    pub(crate) fn renew_now(&mut self, now: u64) {
        if self.state != State::Sent(Pending::Register) {
            self.register_at = Some(self.register_at.map_or(now, |at| at.min(now)));
        }
    }

    /// A scheduled register (first, forced or retry) comes before the regular renewal, and
    /// nothing comes before the last failure's delay.
    fn register_due(&self) -> Option<u64> {
        let renewal = self.connection.as_ref().and_then(ConnectionInfo::renew_at);
        self.register_at
            .or(renewal)
            .map(|at| at.max(self.register_not_before))
    }

    fn refresh_due(&self) -> Option<u64> {
        self.refresh_retry_at.or_else(|| self.token.refresh_at())
    }

    pub(crate) fn handle_timeout(&mut self, now: u64) {
        if self.state != State::Idle {
            return;
        }
        if self.token.is_expired(now) {
            return self.give_up(TokenDiscardReason::Expired);
        }
        if self.refresh_due().is_some_and(|at| at <= now) {
            self.call = Some(HttpCall::json(
                RequestKind::RefreshToken,
                Method::Put,
                join_url(&self.instance_url, "/devices/registration-tokens/refresh"),
                &self.provisioning_token,
                Value::object([("registrationToken", self.token.token.as_str().into())]),
            ));
            self.state = State::Sent(Pending::Refresh);
            return;
        }
        if self.register_due().is_some_and(|at| at <= now) {
            self.register_at = None;
            self.call = Some(HttpCall::json(
                RequestKind::Register,
                Method::Put,
                join_url(&self.instance_url, "/devices/register"),
                &self.token.token,
                Value::object([("connectionStringType", "SharedAccessSignature".into())]),
            ));
            self.state = State::Sent(Pending::Register);
        }
    }

    /// Takes the answer to the request in flight. `Err`: it was a success whose body could not
    /// be read (the request is made again after a delay), for the app to hear why.
    pub(crate) fn handle_response(
        &mut self,
        clock: Clock,
        rng: &mut Rng,
        response: Result<HttpResponse, RequestFailure>,
    ) -> Result<(), String> {
        let State::Sent(pending) = self.state else {
            return Ok(());
        };
        self.state = State::Idle;
        let now = clock.now();
        let verdict = classify_platform(&response, clock.wall_now());
        let body = response.map(|r| r.body).unwrap_or_default();
        let request = pending.kind();
        match (pending, verdict) {
            (Pending::Register, Verdict::Success) => match parse_register(&body, clock) {
                Ok((info, remaining)) => {
                    self.register_backoff.reset();
                    if let Some(remaining_ms) = remaining {
                        self.learn_expiry(now, remaining_ms);
                    }
                    self.connection = Some(info.clone());
                    self.events.push(CredentialsEvent::Registered(info));
                }
                Err(unreadable) => {
                    self.retry_register(now, rng, None);
                    return Err(unreadable);
                }
            },
            (Pending::Refresh, Verdict::Success) => match parse_refresh(&body, clock) {
                Ok(token) => {
                    self.refresh_backoff.reset();
                    self.refresh_retry_at = None;
                    self.token = token.clone();
                    self.events.push(CredentialsEvent::TokenChanged(token));
                }
                Err(unreadable) => {
                    self.retry_refresh(now, rng, None);
                    return Err(unreadable);
                }
            },
            // Refused (401, 410 or another final status): the token itself is no longer
            // acceptable.
            (
                _,
                Verdict::Unauthorized(failure)
                | Verdict::Gone { failure, .. }
                | Verdict::Rejected(failure),
            ) => self.give_up(TokenDiscardReason::Refused {
                request,
                failure: Box::new(failure),
            }),
            (Pending::Register, Verdict::RetryLater { retry_after_ms }) => {
                self.retry_register(now, rng, retry_after_ms)
            }
            (Pending::Refresh, Verdict::RetryLater { retry_after_ms }) => {
                self.retry_refresh(now, rng, retry_after_ms)
            }
            (Pending::Register, Verdict::Pending) => self.retry_register(now, rng, None),
            (Pending::Refresh, Verdict::Pending) => self.retry_refresh(now, rng, None),
        }
        Ok(())
    }

    /// `register` tells the token's remaining lifetime; trust it when it is shorter.
    fn learn_expiry(&mut self, now: u64, remaining_ms: i64) {
        let expires_at = now.saturating_add_signed(remaining_ms);
        if self.token.expires_at.is_none_or(|at| expires_at < at) {
            self.token.expires_at = Some(expires_at);
            self.events
                .push(CredentialsEvent::TokenChanged(self.token.clone()));
        }
    }

    fn retry_register(&mut self, now: u64, rng: &mut Rng, retry_after_ms: Option<u64>) {
        self.register_not_before = now + self.register_backoff.next_delay(rng, retry_after_ms);
        self.register_at = Some(self.register_not_before);
    }

    fn retry_refresh(&mut self, now: u64, rng: &mut Rng, retry_after_ms: Option<u64>) {
        self.refresh_retry_at = Some(now + self.refresh_backoff.next_delay(rng, retry_after_ms));
    }

    fn give_up(&mut self, reason: TokenDiscardReason) {
        if self.state != State::Discarded {
            self.state = State::Discarded;
            self.connection = None;
            self.events
                .push(CredentialsEvent::NeedsProvisioning(reason));
        }
    }

    #[must_use]
    pub(crate) fn poll_call(&mut self) -> Option<HttpCall> {
        self.call.take()
    }

    #[must_use]
    pub(crate) fn poll_event(&mut self) -> Option<CredentialsEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        if self.state != State::Idle {
            return None;
        }
        [
            self.register_due(),
            self.refresh_due(),
            self.token.expires_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The credential `register` handed out, its times on the core's timeline, and the token's
/// remaining lifetime when the answer tells it.
fn parse_register(body: &[u8], clock: Clock) -> Result<(ConnectionInfo, Option<i64>), String> {
    let response = json::parse_object(body)?;
    let connection_string = json::string(&response, "connectionString")?;
    let parsed = json::read(
        "connectionString",
        ConnectionString::parse(&connection_string),
    )?;
    let sas_expires_at = match json::optional_string(&response, "connectionStringExpiration")? {
        Some(time) => parse_rfc3339(&time).ok(),
        None => None,
    }
    .or_else(|| parsed.sas_expiry_ms())
    .map(|at| clock.onto_timeline(at));
    let remaining = match json::optional_string(&response, "tokenRemainingLifetime")? {
        Some(span) => Some(json::read("tokenRemainingLifetime", parse_timespan(&span))?),
        None => None,
    };
    let endpoints = match json::optional_object(&response, "gatewayEndpoints")? {
        Some(endpoints) => json::read("gatewayEndpoints", GatewayEndpoints::parse(endpoints))?,
        None => GatewayEndpoints::default(),
    };
    let info = ConnectionInfo {
        host_name: parsed.host_name,
        workspace_id: parsed.workspace_id,
        device_id: parsed.device_id,
        shared_access_signature: parsed.shared_access_signature,
        sas_expires_at,
        obtained_at: clock.now(),
        endpoints,
    };
    Ok((info, remaining))
}

/// The token a refresh handed out, its times on the core's timeline.
fn parse_refresh(body: &[u8], clock: Clock) -> Result<RegistrationToken, String> {
    let response = json::parse_object(body)?;
    let expires_at = match json::optional_string(&response, "expirationTime")? {
        Some(time) => Some(json::read("expirationTime", parse_rfc3339(&time))?),
        None => None,
    };
    Ok(RegistrationToken {
        token: json::string(&response, "registrationToken")?,
        obtained_at: clock.now(),
        expires_at: expires_at.map(|at| clock.onto_timeline(at)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn refresh_at_half_life_but_not_later_than_ten_minutes_before_expiry() {
        let long = RegistrationToken {
            token: "t".into(),
            obtained_at: 0,
            expires_at: Some(60 * MIN),
        };
        assert_eq!(long.refresh_at(), Some(30 * MIN));
        let short = RegistrationToken {
            expires_at: Some(16 * MIN),
            ..long.clone()
        };
        assert_eq!(short.refresh_at(), Some(6 * MIN));
        let tiny = RegistrationToken {
            expires_at: Some(MIN),
            ..long.clone()
        };
        assert_eq!(tiny.refresh_at(), Some(MIN / 4));
        let infinite = RegistrationToken {
            expires_at: None,
            ..long
        };
        assert_eq!(infinite.refresh_at(), None);
        assert!(!infinite.is_expired(u64::MAX));
    }
}
