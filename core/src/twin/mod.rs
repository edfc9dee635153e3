//! The device twin: desired properties the Platform sets, reported properties the device
//! publishes, over the IoT Hub twin topics (`$iothub/twin/...`).
//!
//! This module owns the local copy of the desired document and its version, the app's *target*
//! reported document, what the Platform is known to hold of it (`reported_acked`), the request
//! ids, and the matching of answers to requests with timeouts and retries. The MQTT session makes
//! the subscriptions (`$iothub/twin/res/#`, `$iothub/twin/PATCH/properties/desired/#`), listed
//! in `iothub.rs`; this module only says what to publish and consumes what arrives on twin
//! topics.
//!
//! Each session starts with a full GET. Nothing is reported before its answer, so the reported
//! diff is computed against the Platform's real state rather than a guess. Desired patches are
//! applied when they carry the next version, ignored when stale, and answered with a full GET
//! when a version was missed. Reported changes travel as one RFC 7386 merge patch at a time: the
//! diff between the target and what the Platform acknowledged, so updates made while a patch is
//! in flight, or before a restart, are folded into the next diff instead of being queued.
//! The target is the whole reported document: a property the Platform holds but the target
//! lacks (say, left by an earlier install of the device) is removed at the next sync.
//!
//! The merge itself is [`json::merge`]; [`merge_patch_diff`] is its inverse. The twin topics, and
//! the documents that arrive on them, are built and read in [`topics`]; the part the host
//! persists is [`TwinState`], in [`state`].

use crate::prelude::*;

mod state;
#[cfg(test)]
mod tests;
mod topics;

use alloc::collections::VecDeque;
use core::mem::discriminant;

pub use state::TwinState;
use topics::{Response, TwinDocument, TwinTopic};

use crate::json::merge::merge_patch_diff;
use crate::json::{self, Map, Value};
use crate::text::Describe;

/// How long a twin request may stay unanswered before it is sent again, when not configured.
pub(crate) const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Delay before the first retry of a request the Platform refused or answered with junk.
const RETRY_INITIAL_MS: u64 = 1_000;
/// The retry delay doubles per consecutive failure up to this.
const RETRY_MAX_MS: u64 = 60_000;

/// Tunables of the twin.
#[derive(Debug, Clone, Copy)]
pub struct TwinConfig {
    /// How long a GET or reported patch may stay unanswered before it is sent again.
    pub request_timeout_ms: u64,
}

impl Default for TwinConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
        }
    }
}

/// An MQTT message to publish, at QoS 0: the twin protocol has its own request ids and
/// timeouts, so broker acknowledgements would add nothing.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "the twin waits for the answer to this publish; dropping it stalls the twin until the request times out"]
pub(crate) struct TwinPublish {
    /// The topic, `$iothub/twin/...`.
    pub topic: String,
    /// The body: empty for a GET, a JSON merge patch for reported properties.
    pub payload: Vec<u8>,
}

/// What the app learns from the twin.
///
/// Events of one kind that are queued and not yet polled are replaced by the newer one (each
/// carries the whole current picture), so a host that polls late sees only the latest.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub(crate) enum TwinEvent {
    /// The desired properties differ from what the app last saw: a patch was applied or a
    /// full GET brought another version or content (including the very first GET when nothing
    /// was stored). Not emitted for stale or duplicate patches, nor for a GET that matches.
    DesiredChanged {
        /// The whole desired document, without `$version` and `$metadata`.
        properties: Value,
        /// Its version.
        version: u64,
    },
    /// The Platform accepted a reported patch; [`Twin::pending_reported`] says whether more
    /// remains to be sent.
    ReportedAcknowledged {
        /// The reported document's version after the patch, when the Platform said it.
        version: Option<u64>,
    },
    /// The Platform refused a reported patch. The diff is sent again after a back-off (the
    /// target is kept); a refusal that repeats usually means the document breaks a Platform
    /// limit and the app should change it.
    ReportedRejected {
        /// The status the Platform answered with.
        status: u16,
    },
}

/// Why a reported-properties update was refused before reaching the network.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TwinError {
    /// The patch is not JSON text ([`parse_reported_patch`]).
    NotJson(String),
    /// The patch is not a JSON object; a merge patch of the reported document must be one.
    NotAnObject,
    /// A property name starts with `$`, which the Platform reserves for its own keys.
    ReservedName {
        /// The offending name.
        name: String,
    },
    /// The device was stopped: it takes no more updates.
    Stopped,
}

impl Describe for TwinError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::NotJson(problem) => put!(out, "the reported properties patch is ", problem),
            Self::NotAnObject => put!(out, "the reported properties patch is not a json object"),
            Self::ReservedName { name } => put!(
                out,
                "the reported property name '",
                name,
                "' is reserved: names starting with '$' belong to the platform"
            ),
            Self::Stopped => put!(out, "the device is stopped"),
        }
    }
}

described!(TwinError);

/// The JSON text of a reported-properties update as the device takes it: a JSON object with
/// no property name starting with `$`. Every host reads the app's patch with it (and a command
/// line can refuse one before the device starts), so the refusals are the device's own words.
pub fn parse_reported_patch(text: &[u8]) -> Result<Value, TwinError> {
    let patch = Value::parse(text).map_err(|error| TwinError::NotJson(error.text()))?;
    check_reported_patch(&patch)?;
    Ok(patch)
}

/// Whether the device takes `patch` as a reported-properties update (see
/// [`parse_reported_patch`]).
pub(crate) fn check_reported_patch(patch: &Value) -> Result<(), TwinError> {
    if !patch.is_object() {
        return Err(TwinError::NotAnObject);
    }
    if let Some(name) = find_reserved_name(patch) {
        return Err(TwinError::ReservedName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

impl TwinError {
    /// The stable code apps match on: `invalidPatch` for a patch the device refuses,
    /// `stopped` after [`crate::Device::stop`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotJson(_) | Self::NotAnObject | Self::ReservedName { .. } => "invalidPatch",
            Self::Stopped => "stopped",
        }
    }
}

/// The state of the full GET of this session.
#[derive(Debug, Clone, PartialEq)]
enum GetRequest {
    Idle,
    AwaitingResponse { rid: u64, deadline: u64 },
    AwaitingRetry { at: u64 },
}

/// The state of the reported patch of this session; at most one is in flight.
#[derive(Debug, Clone, PartialEq)]
enum ReportedRequest {
    Idle,
    AwaitingResponse {
        rid: u64,
        deadline: u64,
        /// What was sent: merged into `reported_acked` once acknowledged.
        patch: Value,
    },
    AwaitingRetry {
        at: u64,
    },
}

/// What is known only for the lifetime of one MQTT session.
#[derive(Debug)]
struct Session {
    /// The first GET of the session has been answered.
    synced: bool,
    get: GetRequest,
    get_failures: u32,
    /// A desired patch could not be applied while a GET was already in flight (the GET may
    /// predate it): the answer must reach this version or the twin is fetched once more.
    /// `u64::MAX` stands for a patch whose version could not be read.
    awaited_desired_version: Option<u64>,
    /// The reported document's version as last confirmed this session; an older GET answer
    /// does not overwrite what acknowledgements established.
    reported_version: Option<u64>,
    reported: ReportedRequest,
    reported_failures: u32,
}

impl Session {
    fn new() -> Self {
        Self {
            synced: false,
            get: GetRequest::Idle,
            get_failures: 0,
            awaited_desired_version: None,
            reported_version: None,
            reported: ReportedRequest::Idle,
            reported_failures: 0,
        }
    }
}

/// The device twin of one device: feed it session changes, twin publishes and time; drain
/// [`poll_publish`](Self::poll_publish), [`poll_event`](Self::poll_event) and persist
/// [`state`](Self::state) when [`take_state_dirty`](Self::take_state_dirty) says so; wake it at
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub(crate) struct Twin {
    config: TwinConfig,
    state: TwinState,
    session: Option<Session>,
    publishes: VecDeque<TwinPublish>,
    events: VecDeque<TwinEvent>,
    state_dirty: bool,
    /// The latest time seen; earlier times are clamped to it.
    last_now: u64,
}

impl Twin {
    /// Starts from the stored `state` (or `TwinState::default()` on first start).
    ///
    /// A stored document that is not a JSON object is read as empty, and `null` members of the
    /// reported target are dropped (a merge patch cannot express them, so they would never be
    /// acknowledged); when that changes anything, the state is marked dirty.
    pub(crate) fn new(config: TwinConfig, state: TwinState) -> Self {
        let mut normalized = state.clone();
        if !normalized.desired.is_object() {
            normalized.desired = Value::Object(Map::new());
            normalized.desired_version = None;
        }
        if !normalized.reported_acked.is_object() {
            normalized.reported_acked = Value::Object(Map::new());
        }
        // Merging into an empty object copies the document without its null members.
        let mut target = Value::Object(Map::new());
        if normalized.reported_target.is_object() {
            json::merge(&mut target, &normalized.reported_target);
        }
        normalized.reported_target = target;
        let state_dirty = normalized != state;
        Self {
            config,
            state: normalized,
            session: None,
            publishes: VecDeque::new(),
            events: VecDeque::new(),
            state_dirty,
            last_now: 0,
        }
    }

    /// The MQTT session is subscribed to the twin topics: queues the full GET.
    ///
    /// A second call without [`on_session_lost`](Self::on_session_lost) starts over as a new
    /// session.
    pub(crate) fn on_session_ready(&mut self, now: u64) {
        let now = self.clamp(now);
        self.publishes.clear();
        self.session = Some(Session::new());
        self.send_get(now);
    }

    /// The MQTT session ended: forgets requests in flight and publishes not yet polled. The
    /// next session starts with a GET and sends whatever diff then remains.
    pub(crate) fn on_session_lost(&mut self) {
        self.session = None;
        self.publishes.clear();
    }

    /// Consumes an MQTT publish when `topic` is a twin topic (`$iothub/twin/...`) and returns
    /// true; returns false, and changes nothing, for any other topic.
    ///
    /// Junk (an unparsable topic or body, an unknown status, an answer to an unknown request)
    /// never fails: it is ignored, a refused or unreadable GET answer is retried after a
    /// back-off, and an unreadable desired patch leads to a full GET.
    pub(crate) fn handle_publish(&mut self, now: u64, topic: &str, payload: &[u8]) -> bool {
        let Some(twin_topic) = topics::parse_topic(topic) else {
            return false;
        };
        let now = self.clamp(now);
        match twin_topic {
            TwinTopic::Response(response) => self.handle_response(now, response, payload),
            TwinTopic::DesiredPatch(rest) => self.handle_desired_patch(now, rest, payload),
            TwinTopic::Ignored => {}
        }
        true
    }

    /// Merges `patch` (an RFC 7386 merge patch: `null` removes a property) into the reported
    /// target. The Platform gets the difference once this session's first GET is answered and
    /// no other reported patch is in flight.
    ///
    /// Property names starting with `$` are refused at any depth: the Platform reserves them.
    /// Merges `patch` into the reported properties to be sent; true when that changed them.
    pub(crate) fn update_reported(&mut self, now: u64, patch: Value) -> Result<bool, TwinError> {
        let now = self.clamp(now);
        check_reported_patch(&patch)?;
        let mut target = self.state.reported_target.clone();
        json::merge(&mut target, &patch);
        let changed = target != self.state.reported_target;
        if changed {
            self.state.reported_target = target;
            self.state_dirty = true;
        }
        self.send_reported_diff(now);
        Ok(changed)
    }

    /// Re-sends requests whose answer is overdue and retries refused ones whose back-off ended.
    /// Idempotent; a call before [`poll_timeout`](Self::poll_timeout) changes nothing.
    pub(crate) fn handle_timeout(&mut self, now: u64) {
        let now = self.clamp(now);
        let Some(session) = &self.session else {
            return;
        };
        let get_due = match session.get {
            GetRequest::Idle => false,
            GetRequest::AwaitingResponse { deadline: due, .. }
            | GetRequest::AwaitingRetry { at: due } => due <= now,
        };
        let reported_due = match session.reported {
            ReportedRequest::Idle => false,
            ReportedRequest::AwaitingResponse { deadline: due, .. }
            | ReportedRequest::AwaitingRetry { at: due } => due <= now,
        };
        if get_due {
            self.send_get(now);
        }
        if reported_due {
            if let Some(session) = &mut self.session {
                session.reported = ReportedRequest::Idle;
            }
            // A fresh diff: it includes updates made since, and is empty if a GET showed the
            // Platform already holds the target.
            self.send_reported_diff(now);
        }
    }

    /// The next message to publish. Changed by [`on_session_ready`](Self::on_session_ready),
    /// [`handle_publish`](Self::handle_publish), [`update_reported`](Self::update_reported),
    /// [`handle_timeout`](Self::handle_timeout) and [`on_session_lost`](Self::on_session_lost).
    #[must_use = "a twin publish that is not sent stalls the twin until the request times out"]
    pub(crate) fn poll_publish(&mut self) -> Option<TwinPublish> {
        self.publishes.pop_front()
    }

    /// The next event for the app. Changed by [`handle_publish`](Self::handle_publish).
    #[must_use = "events tell the app that desired properties changed"]
    pub(crate) fn poll_event(&mut self) -> Option<TwinEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): the earliest request deadline or
    /// retry time; `None` outside a session or when nothing waits. Changed by every input.
    #[must_use = "the twin must be woken at this time to re-send unanswered requests"]
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        let session = self.session.as_ref()?;
        let get = match session.get {
            GetRequest::Idle => None,
            GetRequest::AwaitingResponse { deadline: due, .. }
            | GetRequest::AwaitingRetry { at: due } => Some(due),
        };
        let reported = match session.reported {
            ReportedRequest::Idle => None,
            ReportedRequest::AwaitingResponse { deadline: due, .. }
            | ReportedRequest::AwaitingRetry { at: due } => Some(due),
        };
        get.into_iter().chain(reported).min()
    }

    /// True once after any change that must be persisted (including a new request id);
    /// [`state`](Self::state) then returns what to store.
    #[must_use = "a dirty state that is not stored is lost on restart"]
    pub(crate) fn take_state_dirty(&mut self) -> bool {
        core::mem::take(&mut self.state_dirty)
    }

    /// What to persist.
    pub(crate) fn state(&self) -> &TwinState {
        &self.state
    }

    /// The desired properties (without `$version` and `$metadata`) and their version; the
    /// version is `None` until a first GET was ever answered.
    pub(crate) fn desired(&self) -> (&Value, Option<u64>) {
        (&self.state.desired, self.state.desired_version)
    }

    /// The reported document the app asked for (the target, not necessarily acknowledged yet).
    pub(crate) fn reported(&self) -> &Value {
        &self.state.reported_target
    }

    /// True once the first GET of the current session has been answered.
    pub(crate) fn is_synced(&self) -> bool {
        self.session.as_ref().is_some_and(|session| session.synced)
    }

    /// True while the Platform is not known to hold the reported target.
    pub(crate) fn pending_reported(&self) -> bool {
        self.state.reported_acked != self.state.reported_target
    }

    fn clamp(&mut self, now: u64) -> u64 {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn allocate_rid(&mut self) -> u64 {
        let rid = self.state.next_rid;
        self.state.next_rid = rid.wrapping_add(1);
        self.state_dirty = true;
        rid
    }

    fn deadline(&self, now: u64) -> u64 {
        now.saturating_add(self.config.request_timeout_ms)
    }

    fn push_event(&mut self, event: TwinEvent) {
        let kind = discriminant(&event);
        self.events.retain(|queued| discriminant(queued) != kind);
        self.events.push_back(event);
    }

    fn send_get(&mut self, now: u64) {
        if self.session.is_none() {
            return;
        }
        let rid = self.allocate_rid();
        let deadline = self.deadline(now);
        if let Some(session) = &mut self.session {
            session.get = GetRequest::AwaitingResponse { rid, deadline };
        }
        self.publishes.push_back(TwinPublish {
            topic: topics::get_topic(rid),
            payload: Vec::new(),
        });
    }

    /// Sends the diff between the reported target and what the Platform holds, when the session
    /// is synced, no reported patch is outstanding and the diff is not empty.
    fn send_reported_diff(&mut self, now: u64) {
        let Some(session) = &self.session else {
            return;
        };
        if !session.synced || session.reported != ReportedRequest::Idle {
            return;
        }
        let patch = merge_patch_diff(&self.state.reported_acked, &self.state.reported_target);
        if patch.as_object().is_some_and(Map::is_empty) {
            return;
        }
        let rid = self.allocate_rid();
        let deadline = self.deadline(now);
        self.publishes.push_back(TwinPublish {
            topic: topics::reported_patch_topic(rid),
            payload: patch.to_json().into_bytes(),
        });
        if let Some(session) = &mut self.session {
            session.reported = ReportedRequest::AwaitingResponse {
                rid,
                deadline,
                patch,
            };
        }
    }

    fn handle_response(&mut self, now: u64, response: Response, payload: &[u8]) {
        let Some(session) = &mut self.session else {
            return;
        };
        if matches!(session.get, GetRequest::AwaitingResponse { rid, .. } if rid == response.rid) {
            let document = match response.status {
                Some(200..=299) => topics::parse_twin_document(payload),
                _ => None,
            };
            match document {
                Some(document) => self.apply_twin_document(now, document),
                None => {
                    session.get_failures = session.get_failures.saturating_add(1);
                    let at = now.saturating_add(retry_delay(session.get_failures));
                    session.get = GetRequest::AwaitingRetry { at };
                }
            }
            return;
        }
        let ReportedRequest::AwaitingResponse { rid, patch, .. } = &mut session.reported else {
            return;
        };
        if *rid != response.rid {
            return;
        }
        match response.status {
            Some(200..=299) => {
                json::merge(&mut self.state.reported_acked, patch);
                self.state_dirty = true;
                session.reported = ReportedRequest::Idle;
                session.reported_failures = 0;
                if response.version.is_some() {
                    session.reported_version = session.reported_version.max(response.version);
                }
                self.push_event(TwinEvent::ReportedAcknowledged {
                    version: response.version,
                });
                self.send_reported_diff(now);
            }
            status => {
                session.reported_failures = session.reported_failures.saturating_add(1);
                let at = now.saturating_add(retry_delay(session.reported_failures));
                session.reported = ReportedRequest::AwaitingRetry { at };
                if let Some(status) = status {
                    self.push_event(TwinEvent::ReportedRejected { status });
                }
            }
        }
    }

    /// Takes in a successful GET answer. The first answer of a session is the truth; a later
    /// one (after a gap) is taken only where it is not older than what this session already
    /// applied or had acknowledged.
    fn apply_twin_document(&mut self, now: u64, document: TwinDocument) {
        let Some(session) = &mut self.session else {
            return;
        };
        let first_answer = !session.synced;
        session.synced = true;
        session.get = GetRequest::Idle;
        session.get_failures = 0;
        let awaited = session.awaited_desired_version.take();

        let take_reported = first_answer
            || match (document.reported_version, session.reported_version) {
                (Some(answered), Some(known)) => answered >= known,
                _ => true,
            };
        if take_reported {
            session.reported_version = document.reported_version.or(session.reported_version);
            if self.state.reported_acked != document.reported {
                self.state.reported_acked = document.reported;
                self.state_dirty = true;
            }
        }

        let take_desired = first_answer
            || self
                .state
                .desired_version
                .is_none_or(|current| document.desired_version >= current);
        if take_desired {
            self.set_desired(document.desired, document.desired_version);
        }
        let behind = awaited.is_some_and(|awaited| {
            self.state
                .desired_version
                .is_none_or(|current| awaited > current)
        });
        if behind {
            // A patch arrived that this answer may predate; one more GET settles it.
            self.send_get(now);
        }
        self.send_reported_diff(now);
    }

    fn set_desired(&mut self, properties: Value, version: u64) {
        if self.state.desired_version == Some(version) && self.state.desired == properties {
            return;
        }
        self.state.desired = properties;
        self.state.desired_version = Some(version);
        self.state_dirty = true;
        self.push_event(TwinEvent::DesiredChanged {
            properties: self.state.desired.clone(),
            version,
        });
    }

    /// `rest` is the topic after `$iothub/twin/PATCH/properties/desired`.
    fn handle_desired_patch(&mut self, now: u64, rest: &str, payload: &[u8]) {
        let Some(session) = &self.session else {
            return;
        };
        let Some((version, patch)) = topics::parse_desired_patch(rest, payload) else {
            // Something changed but we cannot tell what: fetch everything.
            self.request_full_get(now, u64::MAX);
            return;
        };
        let current = self.state.desired_version.filter(|_| session.synced);
        match current {
            Some(current) if version <= current => {}
            Some(current) if current.checked_add(1) == Some(version) => {
                let mut desired = self.state.desired.clone();
                json::merge(&mut desired, &patch);
                self.set_desired(desired, version);
            }
            _ => self.request_full_get(now, version),
        }
    }

    /// A desired patch could not be applied: a gap in versions, a patch before the first GET
    /// answer, or an unreadable one.
    fn request_full_get(&mut self, now: u64, patch_version: u64) {
        let Some(session) = &mut self.session else {
            return;
        };
        match session.get {
            GetRequest::Idle => self.send_get(now),
            GetRequest::AwaitingResponse { .. } => {
                session.awaited_desired_version =
                    session.awaited_desired_version.max(Some(patch_version));
            }
            // The retry is sent after the patch, so its answer will include it.
            GetRequest::AwaitingRetry { .. } => {}
        }
    }
}

/// The first property name (at any depth of objects) that starts with `$`.
fn find_reserved_name(value: &Value) -> Option<&str> {
    let Value::Object(members) = value else {
        return None;
    };
    members.iter().find_map(|(name, member)| {
        if name.starts_with('$') {
            Some(name)
        } else {
            find_reserved_name(member)
        }
    })
}

/// Exponential back-off without jitter: the twin takes no random bytes, and a fleet's twin
/// requests are already spread by the jittered reconnects that start their sessions.
fn retry_delay(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(32);
    RETRY_INITIAL_MS
        .saturating_mul(1u64 << doublings)
        .min(RETRY_MAX_MS)
}
