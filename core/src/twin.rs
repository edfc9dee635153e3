//! The device twin: desired properties the Platform sets, reported properties the device
//! publishes, over the IoT Hub twin topics (`$iothub/twin/...`).
//!
//! This module owns the local copy of the desired document and its version, the app's *target*
//! reported document, what the Platform is known to hold of it (`reported_acked`), the request
//! ids, and the matching of answers to requests with timeouts and retries. The MQTT session owns
//! the subscriptions (`$iothub/twin/res/#`, `$iothub/twin/PATCH/properties/desired/#`); this
//! module only says what to publish and consumes what arrives on twin topics.
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
//! The merge itself is [`json::merge`]; [`merge_patch_diff`] is its inverse.

use std::collections::VecDeque;
use std::mem::discriminant;

use thiserror::Error;

use crate::json::{self, Map, Object, Value};

/// How long a twin request may stay unanswered before it is sent again, when not configured.
pub(crate) const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Delay before the first retry of a request the Platform refused or answered with junk.
const RETRY_INITIAL_MS: u64 = 1_000;
/// The retry delay doubles per consecutive failure up to this.
const RETRY_MAX_MS: u64 = 60_000;

const TWIN_TOPIC_PREFIX: &str = "$iothub/twin/";
const RESPONSE_TOPIC: &str = "res/";
const DESIRED_PATCH_TOPIC: &str = "PATCH/properties/desired";
const GET_TOPIC_PREFIX: &str = "$iothub/twin/GET/?$rid=";
const REPORTED_PATCH_TOPIC_PREFIX: &str = "$iothub/twin/PATCH/properties/reported/?$rid=";

/// Keys the Platform adds to twin documents; they are not properties.
const VERSION_KEY: &str = "$version";
const METADATA_KEY: &str = "$metadata";

/// The twin's part of the device state the host keeps across restarts (saved whenever it
/// changed).
///
/// Every document is a JSON object; a stored value that is not one is read as empty. Fields
/// missing from a stored copy take their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinState {
    /// The desired properties, without `$version` and `$metadata`.
    pub desired: Value,
    /// The version of `desired`; `None` until the first GET has been answered.
    pub desired_version: Option<u64>,
    /// The reported document the app asked for: every reported-properties update merged in.
    pub reported_target: Value,
    /// The reported document the Platform is known to hold.
    pub reported_acked: Value,
    /// The next request id; it counts up across restarts, so ids are not reused.
    pub next_rid: u64,
}

impl TwinState {
    /// Its form in the saved device state.
    pub(crate) fn to_saved(&self) -> Value {
        Value::object([
            ("desired", self.desired.clone()),
            ("desired_version", self.desired_version.into()),
            ("reported_target", self.reported_target.clone()),
            ("reported_acked", self.reported_acked.clone()),
            ("next_rid", self.next_rid.into()),
        ])
    }

    /// Reads [`TwinState::to_saved`]'s form back; missing fields take their defaults.
    pub(crate) fn from_saved(object: &Object) -> Result<Self, String> {
        let defaults = Self::default();
        let document = |key: &str, default: Value| object.get(key).cloned().unwrap_or(default);
        Ok(Self {
            desired: document("desired", defaults.desired),
            desired_version: json::optional_unsigned(object, "desired_version")?,
            reported_target: document("reported_target", defaults.reported_target),
            reported_acked: document("reported_acked", defaults.reported_acked),
            next_rid: json::optional_unsigned(object, "next_rid")?.unwrap_or(defaults.next_rid),
        })
    }
}

impl Default for TwinState {
    fn default() -> Self {
        Self {
            desired: Value::Object(Map::new()),
            desired_version: None,
            reported_target: Value::Object(Map::new()),
            reported_acked: Value::Object(Map::new()),
            next_rid: 0,
        }
    }
}

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
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TwinError {
    /// The patch is not a JSON object; a merge patch of the reported document must be one.
    #[error("the reported properties patch is not a json object")]
    NotAnObject,
    /// A property name starts with `$`, which the Platform reserves for its own keys.
    #[error(
        "the reported property name '{name}' is reserved: names starting with '$' belong to the platform"
    )]
    ReservedName {
        /// The offending name.
        name: String,
    },
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

/// A full twin document as answered to a GET, with the Platform's keys taken out.
#[derive(Debug)]
struct TwinDocument {
    desired: Value,
    desired_version: u64,
    reported: Value,
    reported_version: Option<u64>,
}

/// A parsed `$iothub/twin/res/<status>/?$rid=<rid>[&$version=<n>]` topic.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Response {
    /// `None` when the status is not a number.
    status: Option<u16>,
    rid: u64,
    version: Option<u64>,
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
        let Some(twin_topic) = topic.strip_prefix(TWIN_TOPIC_PREFIX) else {
            return false;
        };
        let now = self.clamp(now);
        if let Some(rest) = twin_topic.strip_prefix(RESPONSE_TOPIC) {
            if let Some(response) = parse_response_topic(rest) {
                self.handle_response(now, response, payload);
            }
        } else if let Some(rest) = twin_topic.strip_prefix(DESIRED_PATCH_TOPIC) {
            self.handle_desired_patch(now, rest, payload);
        }
        true
    }

    /// Merges `patch` (an RFC 7386 merge patch: `null` removes a property) into the reported
    /// target. The Platform gets the difference once this session's first GET is answered and
    /// no other reported patch is in flight.
    ///
    /// Property names starting with `$` are refused at any depth: the Platform reserves them.
    pub(crate) fn update_reported(&mut self, now: u64, patch: Value) -> Result<(), TwinError> {
        let now = self.clamp(now);
        if !patch.is_object() {
            return Err(TwinError::NotAnObject);
        }
        if let Some(name) = find_reserved_name(&patch) {
            return Err(TwinError::ReservedName {
                name: name.to_owned(),
            });
        }
        let mut target = self.state.reported_target.clone();
        json::merge(&mut target, &patch);
        if target != self.state.reported_target {
            self.state.reported_target = target;
            self.state_dirty = true;
        }
        self.send_reported_diff(now);
        Ok(())
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
        std::mem::take(&mut self.state_dirty)
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
            topic: format!("{GET_TOPIC_PREFIX}{rid}"),
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
            topic: format!("{REPORTED_PATCH_TOPIC_PREFIX}{rid}"),
            payload: patch.to_string().into_bytes(),
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
                Some(200..=299) => parse_twin_document(payload),
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
        let Some((version, patch)) = parse_desired_patch(rest, payload) else {
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

/// The RFC 7386 merge patch that turns `from` into `to`: changed and added members with their
/// new values, removed members as `null`, nested objects diffed recursively, anything else
/// replaced whole. Equal objects give `{}`.
///
/// `json::merge(&mut from, &merge_patch_diff(&from, &to))` yields `to` whenever `to` has no
/// `null` object members (a merge patch cannot set a member to `null`).
pub fn merge_patch_diff(from: &Value, to: &Value) -> Value {
    let (Value::Object(from), Value::Object(to)) = (from, to) else {
        return to.clone();
    };
    let mut patch = Map::new();
    for (name, to_value) in to.iter() {
        match from.get(name) {
            Some(from_value) if from_value == to_value => {}
            Some(from_value @ Value::Object(_)) if to_value.is_object() => {
                patch.insert(name.to_owned(), merge_patch_diff(from_value, to_value));
            }
            _ => {
                patch.insert(name.to_owned(), to_value.clone());
            }
        }
    }
    for name in from.keys() {
        if !to.contains_key(name) {
            patch.insert(name.to_owned(), Value::Null);
        }
    }
    Value::Object(patch)
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

/// The value of query parameter `$name` (also accepted percent-encoded as `%24name`).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = key.strip_prefix('$').or_else(|| key.strip_prefix("%24"))?;
        (key == name).then_some(value)
    })
}

/// Parses what follows `$iothub/twin/res/`: `<status>/?$rid=<rid>[&...]`.
fn parse_response_topic(rest: &str) -> Option<Response> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let status = path.strip_suffix('/').unwrap_or(path).parse().ok();
    let rid = query_param(query, "rid")?.parse().ok()?;
    let version = query_param(query, "version").and_then(|version| version.parse().ok());
    Some(Response {
        status,
        rid,
        version,
    })
}

/// Parses a desired patch: what follows `$iothub/twin/PATCH/properties/desired` in the topic
/// (`/?$version=<n>`) and the body. The version comes from the topic, or from the body's
/// `$version` when the topic lacks it; when both are present they must agree.
fn parse_desired_patch(rest: &str, payload: &[u8]) -> Option<(u64, Value)> {
    let query = rest.split_once('?').map_or("", |(_, query)| query);
    let topic_version = match query_param(query, "version") {
        Some(version) => Some(version.parse::<u64>().ok()?),
        None => None,
    };
    let Value::Object(mut patch) = Value::parse(payload).ok()? else {
        return None;
    };
    let body_version = match patch.remove(VERSION_KEY) {
        Some(version) => Some(version.as_u64()?),
        None => None,
    };
    patch.remove(METADATA_KEY);
    let version = match (topic_version, body_version) {
        (Some(topic), Some(body)) if topic != body => return None,
        (version, None) | (None, version) => version?,
        (Some(topic), Some(_)) => topic,
    };
    Some((version, Value::Object(patch)))
}

/// Parses a GET answer body: `{"desired":{..,"$version":n},"reported":{..,"$version":m}}`.
/// A missing `reported` is read as empty; a missing desired version makes the answer junk.
fn parse_twin_document(payload: &[u8]) -> Option<TwinDocument> {
    let Value::Object(mut root) = Value::parse(payload).ok()? else {
        return None;
    };
    let Some(Value::Object(mut desired)) = root.remove("desired") else {
        return None;
    };
    let desired_version = desired.remove(VERSION_KEY)?.as_u64()?;
    desired.remove(METADATA_KEY);
    let mut reported = match root.remove("reported") {
        Some(Value::Object(reported)) => reported,
        None => Map::new(),
        Some(_) => return None,
    };
    let reported_version = reported
        .remove(VERSION_KEY)
        .and_then(|version| version.as_u64());
    reported.remove(METADATA_KEY);
    Some(TwinDocument {
        desired: Value::Object(desired),
        desired_version,
        reported: Value::Object(reported),
        reported_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    /// serde_json's `json!`, as a core JSON value.
    macro_rules! value {
        ($($json:tt)+) => {
            serde_json::from_value::<Value>(serde_json::json!($($json)+)).unwrap()
        };
    }

    const T0: u64 = 1_700_000_000_000;

    /// One observable output, in the order `drain` collects them: publishes, then events.
    #[derive(Debug, PartialEq)]
    enum Out {
        /// Topic and body (`Null` for an empty body).
        Publish(String, Value),
        Event(TwinEvent),
    }

    fn drain(twin: &mut Twin) -> Vec<Out> {
        let mut outputs = Vec::new();
        while let Some(publish) = twin.poll_publish() {
            let body = if publish.payload.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&publish.payload).expect("the twin publishes json")
            };
            outputs.push(Out::Publish(publish.topic, body));
        }
        while let Some(event) = twin.poll_event() {
            outputs.push(Out::Event(event));
        }
        outputs
    }

    fn get(rid: u64) -> Out {
        Out::Publish(format!("$iothub/twin/GET/?$rid={rid}"), Value::Null)
    }

    fn report(rid: u64, patch: Value) -> Out {
        Out::Publish(
            format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
            patch,
        )
    }

    fn desired_changed(properties: Value, version: u64) -> Out {
        Out::Event(TwinEvent::DesiredChanged {
            properties,
            version,
        })
    }

    fn acked(version: Option<u64>) -> Out {
        Out::Event(TwinEvent::ReportedAcknowledged { version })
    }

    fn rejected(status: u16) -> Out {
        Out::Event(TwinEvent::ReportedRejected { status })
    }

    fn res(status: u16, rid: u64) -> String {
        format!("$iothub/twin/res/{status}/?$rid={rid}")
    }

    fn desired_topic(version: u64) -> String {
        format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
    }

    fn twin_body(
        desired: Value,
        desired_version: u64,
        reported: Value,
        reported_version: u64,
    ) -> Vec<u8> {
        let mut desired = desired;
        desired
            .as_object_mut()
            .unwrap()
            .insert(VERSION_KEY.into(), desired_version.into());
        let mut reported = reported;
        reported
            .as_object_mut()
            .unwrap()
            .insert(VERSION_KEY.into(), reported_version.into());
        value!({ "desired": desired, "reported": reported })
            .to_string()
            .into_bytes()
    }

    fn patch_body(patch: Value, version: u64) -> Vec<u8> {
        let mut patch = patch;
        patch
            .as_object_mut()
            .unwrap()
            .insert(VERSION_KEY.into(), version.into());
        patch.to_string().into_bytes()
    }

    /// A twin whose session is synced at desired `{"rate":5}` v3 and reported `{}` v1, with
    /// everything drained; the next rid is 1.
    fn synced_twin() -> Twin {
        let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(0)]);
        assert!(twin.handle_publish(
            T0,
            &res(200, 0),
            &twin_body(value!({"rate": 5}), 3, value!({}), 1)
        ));
        assert_eq!(drain(&mut twin), [desired_changed(value!({"rate": 5}), 3)]);
        assert!(twin.is_synced());
        let _ = twin.take_state_dirty();
        twin
    }

    #[test]
    fn first_session_gets_the_twin_then_reports_the_diff() {
        let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
        twin.update_reported(T0, value!({"fw": "1.0"})).unwrap();
        assert_eq!(drain(&mut twin), [], "nothing is sent outside a session");
        assert_eq!(twin.poll_timeout(), None);

        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(0)]);
        assert!(!twin.is_synced());
        assert_eq!(twin.poll_timeout(), Some(T0 + 30_000));

        let body = br#"{"desired":{"rate":5,"$version":3},"reported":{"old":1,"$version":7}}"#;
        assert!(twin.handle_publish(T0 + 5, "$iothub/twin/res/200/?$rid=0", body));
        assert_eq!(
            drain(&mut twin),
            [
                report(1, value!({"fw": "1.0", "old": null})),
                desired_changed(value!({"rate": 5}), 3),
            ]
        );
        assert!(twin.is_synced());
        assert!(twin.pending_reported());

        assert!(twin.handle_publish(T0 + 9, "$iothub/twin/res/204/?$rid=1&$version=8", b""));
        assert_eq!(drain(&mut twin), [acked(Some(8))]);
        assert!(!twin.pending_reported());
        assert_eq!(twin.poll_timeout(), None);
        assert!(twin.take_state_dirty());
        assert_eq!(
            twin.state(),
            &TwinState {
                desired: value!({"rate": 5}),
                desired_version: Some(3),
                reported_target: value!({"fw": "1.0"}),
                reported_acked: value!({"fw": "1.0"}),
                next_rid: 2,
            }
        );
        assert_eq!(twin.desired(), (&value!({"rate": 5}), Some(3)));
        assert_eq!(twin.reported(), &value!({"fw": "1.0"}));
    }

    #[test]
    fn desired_patches_in_order_are_merged() {
        let mut twin = synced_twin();
        let topic = desired_topic(4);
        let body = patch_body(value!({"rate": 6, "mode": {"eco": true}}), 4);
        assert!(twin.handle_publish(T0, &topic, &body));
        assert_eq!(
            drain(&mut twin),
            [desired_changed(
                value!({"rate": 6, "mode": {"eco": true}}),
                4
            )]
        );
        assert!(twin.take_state_dirty());

        let body = patch_body(value!({"rate": null, "mode": {"level": 2}}), 5);
        assert!(twin.handle_publish(T0, &desired_topic(5), &body));
        assert_eq!(
            drain(&mut twin),
            [desired_changed(
                value!({"mode": {"eco": true, "level": 2}}),
                5
            )]
        );
        assert_eq!(twin.desired().1, Some(5));
    }

    #[test]
    fn stale_and_duplicate_desired_patches_are_ignored() {
        let mut twin = synced_twin();
        assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"rate": 6}), 4)));
        assert_eq!(drain(&mut twin), [desired_changed(value!({"rate": 6}), 4)]);
        let _ = twin.take_state_dirty();

        for version in [4, 3, 1, 0] {
            let body = patch_body(value!({"rate": 100 + version}), version);
            assert!(twin.handle_publish(T0, &desired_topic(version), &body));
        }
        assert_eq!(drain(&mut twin), []);
        assert!(!twin.take_state_dirty());
        assert_eq!(twin.desired(), (&value!({"rate": 6}), Some(4)));
    }

    #[test]
    fn gap_in_desired_versions_fetches_the_whole_twin() {
        let mut twin = synced_twin();
        assert!(twin.handle_publish(T0, &desired_topic(5), &patch_body(value!({"b": 1}), 5)));
        assert_eq!(drain(&mut twin), [get(1)], "version 4 was missed");
        assert_eq!(twin.desired(), (&value!({"rate": 5}), Some(3)));

        // A second gap while the GET is in flight does not send another one...
        assert!(twin.handle_publish(T0, &desired_topic(6), &patch_body(value!({"c": 1}), 6)));
        assert_eq!(drain(&mut twin), []);
        // ...but an answer that predates it is followed by one more GET.
        let body = twin_body(value!({"a": 1, "b": 1}), 5, value!({}), 1);
        assert!(twin.handle_publish(T0, &res(200, 1), &body));
        assert_eq!(
            drain(&mut twin),
            [get(2), desired_changed(value!({"a": 1, "b": 1}), 5)]
        );
        let body = twin_body(value!({"a": 1, "b": 1, "c": 1}), 6, value!({}), 1);
        assert!(twin.handle_publish(T0, &res(200, 2), &body));
        assert_eq!(
            drain(&mut twin),
            [desired_changed(value!({"a": 1, "b": 1, "c": 1}), 6)]
        );
    }

    #[test]
    fn patch_before_the_first_answer_is_covered_by_the_get() {
        let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(0)]);
        assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"x": 1}), 4)));
        assert_eq!(
            drain(&mut twin),
            [],
            "the GET in flight may already include it"
        );

        let body = twin_body(value!({"x": 1}), 4, value!({}), 1);
        assert!(twin.handle_publish(T0, &res(200, 0), &body));
        assert_eq!(drain(&mut twin), [desired_changed(value!({"x": 1}), 4)]);
    }

    #[test]
    fn patch_newer_than_the_first_answer_fetches_again() {
        let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(0)]);
        assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"x": 1}), 4)));
        let body = twin_body(value!({}), 3, value!({}), 1);
        assert!(twin.handle_publish(T0, &res(200, 0), &body));
        assert_eq!(drain(&mut twin), [get(1), desired_changed(value!({}), 3)]);
        let body = twin_body(value!({"x": 1}), 4, value!({}), 1);
        assert!(twin.handle_publish(T0, &res(200, 1), &body));
        assert_eq!(drain(&mut twin), [desired_changed(value!({"x": 1}), 4)]);
    }

    #[test]
    fn an_answer_older_than_applied_patches_is_ignored() {
        let mut twin = synced_twin();
        // An unreadable patch: something changed, so the whole twin is fetched.
        assert!(twin.handle_publish(T0, &desired_topic(4), b"{broken"));
        assert_eq!(drain(&mut twin), [get(1)]);
        assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"rate": 6}), 4)));
        assert_eq!(drain(&mut twin), [desired_changed(value!({"rate": 6}), 4)]);
        // The GET was answered before patch 4 existed.
        let body = twin_body(value!({"rate": 5}), 3, value!({}), 1);
        assert!(twin.handle_publish(T0, &res(200, 1), &body));
        assert_eq!(drain(&mut twin), []);
        assert_eq!(twin.desired(), (&value!({"rate": 6}), Some(4)));
    }

    #[test]
    fn an_answer_older_than_acknowledged_reports_keeps_them() {
        let mut twin = synced_twin();
        twin.update_reported(T0, value!({"a": 1})).unwrap();
        assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
        assert!(twin.handle_publish(T0, &desired_topic(5), &patch_body(value!({"b": 1}), 5)));
        assert_eq!(drain(&mut twin), [get(2)]);
        assert!(twin.handle_publish(T0, "$iothub/twin/res/204/?$rid=1&$version=2", b""));
        assert_eq!(drain(&mut twin), [acked(Some(2))]);
        // The GET was answered before the patch was applied: its reported part is older.
        let body = twin_body(value!({"rate": 5, "b": 1}), 5, value!({}), 1);
        assert!(twin.handle_publish(T0, &res(200, 2), &body));
        assert_eq!(
            drain(&mut twin),
            [desired_changed(value!({"rate": 5, "b": 1}), 5)]
        );
        assert_eq!(twin.state().reported_acked, value!({"a": 1}));
        assert!(!twin.pending_reported());
    }

    #[test]
    fn get_matching_the_stored_copy_emits_nothing() {
        let state = TwinState {
            desired: value!({"rate": 5}),
            desired_version: Some(3),
            reported_target: value!({"fw": "1.0"}),
            reported_acked: value!({"fw": "1.0"}),
            next_rid: 10,
        };
        let mut twin = Twin::new(TwinConfig::default(), state.clone());
        assert!(!twin.take_state_dirty());
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(10)]);
        let body = twin_body(value!({"rate": 5}), 3, value!({"fw": "1.0"}), 2);
        assert!(twin.handle_publish(T0, &res(200, 10), &body));
        assert_eq!(drain(&mut twin), []);
        assert_eq!(twin.poll_timeout(), None);
    }

    #[test]
    fn get_with_other_content_at_the_stored_version_is_an_event() {
        let state = TwinState {
            desired: value!({"rate": 5}),
            desired_version: Some(3),
            ..TwinState::default()
        };
        let mut twin = Twin::new(TwinConfig::default(), state);
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(0)]);
        // E.g. a Platform that was reset: its answer is the truth even at a lower version.
        let body = twin_body(value!({"rate": 7}), 1, value!({}), 1);
        assert!(twin.handle_publish(T0, &res(200, 0), &body));
        assert_eq!(drain(&mut twin), [desired_changed(value!({"rate": 7}), 1)]);
    }

    #[test]
    fn get_strips_metadata_and_versions() {
        let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
        twin.on_session_ready(T0);
        let _ = drain(&mut twin);
        let body = value!({
            "desired": {"a": 1, "$version": 2, "$metadata": {"$lastUpdated": "x"}},
            "reported": {"b": 2, "$version": 4, "$metadata": {}},
        });
        let topic = "$iothub/twin/res/200/?$rid=0&$version=9";
        assert!(twin.handle_publish(T0, topic, body.to_string().as_bytes()));
        assert_eq!(
            drain(&mut twin),
            [
                report(1, value!({"b": null})),
                desired_changed(value!({"a": 1}), 2)
            ]
        );
        assert_eq!(twin.state().reported_acked, value!({"b": 2}));
    }

    #[test]
    fn restart_with_a_patch_in_flight_resends_it_as_a_diff() {
        let mut twin = synced_twin();
        twin.update_reported(T0, value!({"a": 1})).unwrap();
        assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
        assert!(twin.take_state_dirty());
        let stored = twin.state().clone();
        drop(twin);

        // The Platform never got it.
        let mut twin = Twin::new(TwinConfig::default(), stored.clone());
        assert!(twin.pending_reported());
        twin.on_session_ready(T0 + 1_000);
        assert_eq!(drain(&mut twin), [get(2)]);
        let body = twin_body(value!({"rate": 5}), 3, value!({}), 1);
        assert!(twin.handle_publish(T0 + 1_000, &res(200, 2), &body));
        assert_eq!(drain(&mut twin), [report(3, value!({"a": 1}))]);

        // The Platform applied it before the restart.
        let mut twin = Twin::new(TwinConfig::default(), stored);
        twin.on_session_ready(T0 + 1_000);
        assert_eq!(drain(&mut twin), [get(2)]);
        let body = twin_body(value!({"rate": 5}), 3, value!({"a": 1}), 2);
        assert!(twin.handle_publish(T0 + 1_000, &res(200, 2), &body));
        assert_eq!(drain(&mut twin), []);
        assert!(!twin.pending_reported());
    }

    #[test]
    fn rids_continue_from_the_stored_counter() {
        let state = TwinState {
            next_rid: 41,
            ..TwinState::default()
        };
        let mut twin = Twin::new(TwinConfig::default(), state);
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(41)]);
        assert!(twin.take_state_dirty(), "a used rid must be persisted");
        assert_eq!(twin.state().next_rid, 42);
    }

    #[test]
    fn unanswered_get_is_sent_again_after_the_timeout() {
        let config = TwinConfig {
            request_timeout_ms: 5_000,
        };
        let mut twin = Twin::new(config, TwinState::default());
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(0)]);
        assert_eq!(twin.poll_timeout(), Some(T0 + 5_000));

        twin.handle_timeout(T0 + 4_999);
        assert_eq!(drain(&mut twin), [], "an early call is a no-op");
        twin.handle_timeout(T0 + 5_000);
        assert_eq!(drain(&mut twin), [get(1)]);
        twin.handle_timeout(T0 + 5_000);
        assert_eq!(drain(&mut twin), [], "handle_timeout is idempotent");
        assert_eq!(twin.poll_timeout(), Some(T0 + 10_000));

        // The late answer to the first GET is for a forgotten rid.
        let body = twin_body(value!({}), 1, value!({}), 1);
        assert!(twin.handle_publish(T0 + 6_000, &res(200, 0), &body));
        assert_eq!(drain(&mut twin), []);
        assert!(!twin.is_synced());
        assert!(twin.handle_publish(T0 + 6_000, &res(200, 1), &body));
        assert_eq!(drain(&mut twin), [desired_changed(value!({}), 1)]);
        assert!(twin.is_synced());
    }

    #[test]
    fn unanswered_reported_patch_is_resent_as_a_fresh_diff() {
        let mut twin = synced_twin();
        twin.update_reported(T0, value!({"a": 1})).unwrap();
        assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
        twin.update_reported(T0 + 10, value!({"b": 2})).unwrap();
        assert_eq!(drain(&mut twin), [], "one patch in flight at a time");
        assert_eq!(twin.poll_timeout(), Some(T0 + 30_000));

        twin.handle_timeout(T0 + 30_000);
        assert_eq!(drain(&mut twin), [report(2, value!({"a": 1, "b": 2}))]);
        assert!(twin.handle_publish(T0 + 30_001, "$iothub/twin/res/204/?$rid=1&$version=2", b""));
        assert_eq!(drain(&mut twin), [], "the timed-out request is forgotten");
        assert!(twin.handle_publish(T0 + 30_002, "$iothub/twin/res/204/?$rid=2&$version=2", b""));
        assert_eq!(drain(&mut twin), [acked(Some(2))]);
        assert!(!twin.pending_reported());
    }

    #[test]
    fn updates_while_a_patch_is_in_flight_go_next_as_one_diff() {
        let mut twin = synced_twin();
        twin.update_reported(T0, value!({"a": 1, "c": {"d": 1}}))
            .unwrap();
        assert_eq!(
            drain(&mut twin),
            [report(1, value!({"a": 1, "c": {"d": 1}}))]
        );
        twin.update_reported(T0, value!({"b": 2})).unwrap();
        twin.update_reported(T0, value!({"a": null, "c": {"e": 2}}))
            .unwrap();
        assert_eq!(drain(&mut twin), []);
        assert!(twin.handle_publish(T0, "$iothub/twin/res/204/?$rid=1&$version=2", b""));
        assert_eq!(
            drain(&mut twin),
            [
                report(2, value!({"a": null, "b": 2, "c": {"e": 2}})),
                acked(Some(2)),
            ]
        );
        assert!(twin.handle_publish(T0, "$iothub/twin/res/204/?$rid=2&$version=3", b""));
        assert_eq!(drain(&mut twin), [acked(Some(3))]);
        assert_eq!(
            twin.state().reported_acked,
            value!({"b": 2, "c": {"d": 1, "e": 2}})
        );
    }

    #[test]
    fn refused_reported_patch_is_retried_with_backoff() {
        let mut twin = synced_twin();
        twin.update_reported(T0, value!({"a": 1})).unwrap();
        assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);

        assert!(twin.handle_publish(T0, &res(500, 1), b""));
        assert_eq!(drain(&mut twin), [rejected(500)]);
        assert_eq!(twin.poll_timeout(), Some(T0 + 1_000));
        twin.handle_timeout(T0 + 1_000);
        assert_eq!(drain(&mut twin), [report(2, value!({"a": 1}))]);

        assert!(twin.handle_publish(T0 + 1_000, &res(429, 2), b""));
        assert_eq!(drain(&mut twin), [rejected(429)]);
        assert_eq!(twin.poll_timeout(), Some(T0 + 3_000), "the delay doubles");
        twin.handle_timeout(T0 + 3_000);
        assert_eq!(drain(&mut twin), [report(3, value!({"a": 1}))]);

        assert!(twin.handle_publish(T0 + 3_000, &res(204, 3), b""));
        assert_eq!(drain(&mut twin), [acked(None)]);
        assert!(!twin.pending_reported());
    }

    #[test]
    fn refused_get_is_retried_with_backoff() {
        let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(0)]);
        assert!(twin.handle_publish(T0, &res(503, 0), b""));
        assert_eq!(drain(&mut twin), []);
        assert_eq!(twin.poll_timeout(), Some(T0 + 1_000));
        twin.handle_timeout(T0 + 1_000);
        assert_eq!(drain(&mut twin), [get(1)]);
        assert_eq!(twin.poll_timeout(), Some(T0 + 31_000));
    }

    #[test]
    fn retry_delay_doubles_up_to_its_cap() {
        let delays: Vec<u64> = (1..=9).map(retry_delay).collect();
        assert_eq!(
            delays,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
            ]
        );
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX_MS);
    }

    #[test]
    fn empty_diff_sends_nothing() {
        let mut twin = synced_twin();
        twin.update_reported(T0, value!({"gone": null})).unwrap();
        twin.update_reported(T0, value!({})).unwrap();
        assert_eq!(drain(&mut twin), []);
        assert!(!twin.take_state_dirty());

        twin.update_reported(T0, value!({"a": 1})).unwrap();
        assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
        assert!(twin.handle_publish(T0, &res(204, 1), b""));
        assert_eq!(drain(&mut twin), [acked(None)]);
        twin.update_reported(T0, value!({"a": 1})).unwrap();
        assert_eq!(drain(&mut twin), []);
        assert_eq!(twin.poll_timeout(), None);
    }

    #[test]
    fn update_reported_refuses_non_objects_and_reserved_names() {
        let mut twin = synced_twin();
        for patch in [value!(5), value!([1]), value!(null), value!("a")] {
            assert_eq!(twin.update_reported(T0, patch), Err(TwinError::NotAnObject));
        }
        let error = twin
            .update_reported(T0, value!({"a": {"$b": 1}}))
            .unwrap_err();
        assert_eq!(
            error,
            TwinError::ReservedName {
                name: "$b".to_owned()
            }
        );
        assert_eq!(
            error.to_string(),
            "the reported property name '$b' is reserved: names starting with '$' belong to the platform"
        );
        assert!(matches!(
            twin.update_reported(T0, value!({"$version": 9})),
            Err(TwinError::ReservedName { .. })
        ));
        assert_eq!(drain(&mut twin), []);
        assert!(!twin.take_state_dirty());
        assert_eq!(twin.reported(), &value!({}));
    }

    #[test]
    fn session_lost_forgets_requests_and_resyncs() {
        let mut twin = synced_twin();
        twin.update_reported(T0, value!({"a": 1})).unwrap();
        assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
        twin.on_session_lost();
        assert!(!twin.is_synced());
        assert_eq!(twin.poll_timeout(), None);
        twin.update_reported(T0, value!({"b": 2})).unwrap();
        assert_eq!(drain(&mut twin), []);
        // Answers and patches that arrive between sessions are consumed and ignored.
        assert!(twin.handle_publish(T0, &res(204, 1), b""));
        assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"z": 1}), 4)));
        assert_eq!(drain(&mut twin), []);

        twin.on_session_ready(T0 + 100);
        assert_eq!(drain(&mut twin), [get(2)]);
        let body = twin_body(value!({"rate": 5}), 3, value!({}), 1);
        assert!(twin.handle_publish(T0 + 100, &res(200, 2), &body));
        assert_eq!(drain(&mut twin), [report(3, value!({"a": 1, "b": 2}))]);
    }

    #[test]
    fn unpolled_publishes_of_a_lost_session_are_dropped() {
        let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
        twin.on_session_ready(T0);
        twin.on_session_lost();
        assert_eq!(drain(&mut twin), []);
        twin.on_session_ready(T0);
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(2)], "a repeated ready starts over");
    }

    #[test]
    fn unpolled_events_of_one_kind_are_coalesced() {
        let mut twin = synced_twin();
        assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"a": 1}), 4)));
        twin.update_reported(T0, value!({"x": 1})).unwrap();
        assert!(twin.handle_publish(T0, &res(204, 1), b""));
        assert!(twin.handle_publish(T0, &desired_topic(5), &patch_body(value!({"b": 2}), 5)));
        assert_eq!(
            drain(&mut twin),
            [
                report(1, value!({"x": 1})),
                acked(None),
                desired_changed(value!({"rate": 5, "a": 1, "b": 2}), 5),
            ]
        );
    }

    #[test]
    fn junk_answers_and_topics_change_nothing() {
        let mut twin = synced_twin();
        let before = twin.state().clone();
        let valid = twin_body(value!({"evil": 1}), 99, value!({"evil": 1}), 99);
        let junk: [(&str, &[u8]); 12] = [
            ("$iothub/twin/res/200/?$rid=999", &valid),
            ("$iothub/twin/res/200/?$rid=0", &valid),
            ("$iothub/twin/res/abc/?$rid=1", &valid),
            ("$iothub/twin/res/200/", &valid),
            ("$iothub/twin/res/", b""),
            ("$iothub/twin/res/200/?$rid=notanumber", &valid),
            ("$iothub/twin/res/200/?$rid=-1", &valid),
            ("$iothub/twin/res/200/?rid=1", &valid),
            ("$iothub/twin/", b"\xff\xfe"),
            ("$iothub/twin/whatever/else", b"{}"),
            (
                "$iothub/twin/PATCH/properties/reported/?$rid=1",
                b"{\"a\":1}",
            ),
            ("$iothub/twin/GET/?$rid=0", b""),
        ];
        for (topic, payload) in junk {
            assert!(twin.handle_publish(T0, topic, payload), "{topic}");
            assert_eq!(drain(&mut twin), [], "{topic}");
        }
        assert!(!twin.handle_publish(T0, "devices/ws:dev/messages/devicebound/", b"x"));
        assert!(!twin.handle_publish(T0, "$iothub/twi", b"x"));
        assert!(!twin.take_state_dirty());
        assert_eq!(twin.state(), &before);
        assert_eq!(twin.poll_timeout(), None);
    }

    #[test]
    fn junk_get_answers_schedule_a_retry_and_keep_the_stored_data() {
        let state = TwinState {
            desired: value!({"rate": 5}),
            desired_version: Some(3),
            ..TwinState::default()
        };
        let mut twin = Twin::new(TwinConfig::default(), state.clone());
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(0)]);
        let answers: [(&str, &[u8]); 10] = [
            ("200", b"not json"),
            ("200", b"[]"),
            ("200", b"{}"),
            ("200", br#"{"desired":5}"#),
            ("200", br#"{"desired":{"a":1}}"#),
            ("200", br#"{"desired":{"$version":-1}}"#),
            ("200", br#"{"desired":{"$version":"1"}}"#),
            ("200", br#"{"desired":{"$version":1},"reported":7}"#),
            ("abc", br#"{"desired":{"$version":1}}"#),
            ("404", br#"{"desired":{"$version":1}}"#),
        ];
        let mut now = T0;
        for (rid, (status, payload)) in (0..).zip(answers) {
            let topic = format!("$iothub/twin/res/{status}/?$rid={rid}");
            assert!(twin.handle_publish(now, &topic, payload), "{topic}");
            assert_eq!(drain(&mut twin), [], "{topic}");
            assert!(!twin.is_synced());
            now = twin.poll_timeout().expect("a retry is scheduled");
            twin.handle_timeout(now);
            assert_eq!(drain(&mut twin), [get(rid + 1)], "{topic}");
        }
        assert_eq!(twin.desired(), (&value!({"rate": 5}), Some(3)));
        assert_eq!(twin.reported(), &value!({}));
    }

    #[test]
    fn junk_desired_patches_fetch_the_whole_twin() {
        let mut twin = synced_twin();
        let junk: [(String, &[u8]); 6] = [
            (desired_topic(4), b"{broken"),
            (desired_topic(4), b"[1]"),
            (desired_topic(4), br#"{"a":1,"$version":5}"#),
            (
                "$iothub/twin/PATCH/properties/desired/?$version=x".to_owned(),
                b"{}",
            ),
            (
                "$iothub/twin/PATCH/properties/desired/".to_owned(),
                br#"{"a":1}"#,
            ),
            (desired_topic(4), br#"{"a":1,"$version":"4"}"#),
        ];
        for (rid, (topic, payload)) in (1..).zip(junk) {
            assert!(twin.handle_publish(T0, &topic, payload), "{topic}");
            assert_eq!(drain(&mut twin), [get(rid)], "{topic}");
            // The twin did not change, so the answer brings no event.
            let body = twin_body(value!({"rate": 5}), 3, value!({}), 1);
            assert!(twin.handle_publish(T0, &res(200, rid), &body));
            assert_eq!(drain(&mut twin), [], "{topic}");
        }
        assert_eq!(twin.desired(), (&value!({"rate": 5}), Some(3)));
    }

    #[test]
    fn desired_version_may_come_from_the_body_or_an_encoded_query() {
        let mut twin = synced_twin();
        let topic = "$iothub/twin/PATCH/properties/desired/";
        assert!(twin.handle_publish(T0, topic, &patch_body(value!({"a": 1}), 4)));
        assert_eq!(
            drain(&mut twin),
            [desired_changed(value!({"rate": 5, "a": 1}), 4)]
        );
        let topic = "$iothub/twin/PATCH/properties/desired/?%24version=5";
        assert!(twin.handle_publish(T0, topic, br#"{"b":2}"#));
        assert_eq!(
            drain(&mut twin),
            [desired_changed(value!({"rate": 5, "a": 1, "b": 2}), 5)]
        );
    }

    #[test]
    fn stored_junk_is_normalized() {
        let state = TwinState {
            desired: value!(5),
            desired_version: Some(3),
            reported_target: value!({"a": null, "b": {"c": null, "d": [null]}}),
            reported_acked: value!("x"),
            next_rid: 7,
        };
        let mut twin = Twin::new(TwinConfig::default(), state);
        assert!(twin.take_state_dirty());
        assert_eq!(
            twin.state(),
            &TwinState {
                desired: value!({}),
                desired_version: None,
                reported_target: value!({"b": {"d": [null]}}),
                reported_acked: value!({}),
                next_rid: 7,
            }
        );
        let twin = Twin::new(
            TwinConfig::default(),
            TwinState {
                reported_target: value!(null),
                ..TwinState::default()
            },
        );
        assert_eq!(twin.reported(), &value!({}));
    }

    #[test]
    fn state_survives_serialization_and_missing_fields_default() {
        let twin = synced_twin();
        let text = twin.state().to_saved().to_string();
        let saved = crate::json::parse_object(text.as_bytes()).unwrap();
        assert_eq!(&TwinState::from_saved(&saved).unwrap(), twin.state());
        let partial =
            TwinState::from_saved(&crate::json::parse_object(br#"{"next_rid":5}"#).unwrap())
                .unwrap();
        assert_eq!(
            partial,
            TwinState {
                next_rid: 5,
                ..TwinState::default()
            }
        );
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
        twin.on_session_ready(T0);
        assert_eq!(drain(&mut twin), [get(0)]);
        assert!(twin.handle_publish(T0 - 10_000, &res(500, 0), b""));
        assert_eq!(twin.poll_timeout(), Some(T0 + 1_000));
        twin.handle_timeout(0);
        assert_eq!(drain(&mut twin), []);
    }

    #[test]
    fn rid_counter_wraps_instead_of_panicking() {
        let state = TwinState {
            next_rid: u64::MAX,
            ..TwinState::default()
        };
        let mut twin = Twin::new(TwinConfig::default(), state);
        twin.on_session_ready(u64::MAX);
        assert_eq!(drain(&mut twin), [get(u64::MAX)]);
        assert_eq!(twin.state().next_rid, 0);
        assert_eq!(twin.poll_timeout(), Some(u64::MAX));
    }

    #[test]
    fn merge_patch_diff_examples() {
        let cases = [
            (value!({"a": 1}), value!({"a": 1}), value!({})),
            (value!({}), value!({"a": {"b": 1}}), value!({"a": {"b": 1}})),
            (value!({"a": {"b": 1}}), value!({}), value!({"a": null})),
            (
                value!({"a": 1, "b": 2}),
                value!({"a": 2, "c": 3}),
                value!({"a": 2, "b": null, "c": 3}),
            ),
            (
                value!({"d": {"e": 1, "f": {"g": 0}}}),
                value!({"d": {"e": 1, "f": {"h": 0}}}),
                value!({"d": {"f": {"g": null, "h": 0}}}),
            ),
            (value!({"a": 5}), value!({"a": {}}), value!({"a": {}})),
            (
                value!({"a": {"b": 1}}),
                value!({"a": [1]}),
                value!({"a": [1]}),
            ),
            (
                value!({"a": [1, 2]}),
                value!({"a": [1]}),
                value!({"a": [1]}),
            ),
            (value!(3), value!({"a": 1}), value!({"a": 1})),
            (value!({"a": 1}), value!("x"), value!("x")),
        ];
        for (from, to, expected) in cases {
            let diff = merge_patch_diff(&from, &to);
            assert_eq!(diff, expected, "{from} -> {to}");
            let mut merged = from.clone();
            json::merge(&mut merged, &diff);
            assert_eq!(merged, to, "{from} -> {to}");
        }
    }

    #[test]
    fn twin_is_send_and_events_are_small() {
        fn is_send<T: Send>() {}
        is_send::<Twin>();
        is_send::<TwinEvent>();
        assert!(std::mem::size_of::<TwinEvent>() <= 48);
    }

    mod properties {
        use std::collections::{BTreeMap, VecDeque};

        use proptest::prelude::*;

        use super::super::*;
        use super::{T0, patch_body, twin_body};

        /// JSON values over a small key alphabet (so diffs meet shared keys). With `nulls`
        /// false there is no `null` anywhere, which `to` of a merge patch diff needs.
        fn json_value(nulls: bool) -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                any::<bool>().prop_map(Value::Bool),
                (-5i64..5).prop_map(Value::from),
                // Eighths print and parse back exactly; serde_json without `float_roundtrip`
                // may move other floats by one ulp through text.
                (-8_000i32..8_000).prop_map(|eighths| Value::from(f64::from(eighths) / 8.0)),
                "[a-c]{0,2}".prop_map(Value::String),
            ];
            let leaf = if nulls {
                prop_oneof![1 => Just(Value::Null), 4 => leaf].boxed()
            } else {
                leaf.boxed()
            };
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    prop::collection::btree_map("[a-d]", inner, 0..4)
                        .prop_map(|members| Value::Object(members.into_iter().collect())),
                ]
            })
        }

        fn json_object(nulls: bool) -> impl Strategy<Value = Value> {
            prop::collection::btree_map("[a-d]", json_value(nulls), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect()))
        }

        proptest! {
            #[test]
            fn merging_the_diff_gives_the_target(from in json_object(true), to in json_object(false)) {
                let diff = merge_patch_diff(&from, &to);
                let mut merged = from.clone();
                json::merge(&mut merged, &diff);
                prop_assert_eq!(merged, to);
            }

            #[test]
            fn diff_of_equal_documents_is_empty(document in json_object(false)) {
                prop_assert_eq!(merge_patch_diff(&document, &document), value!({}));
            }

            #[test]
            fn desired_patches_in_order_equal_the_merged_result(
                initial in json_object(false),
                patches in prop::collection::vec(json_object(true), 0..8),
            ) {
                let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
                twin.on_session_ready(T0);
                let _ = twin.poll_publish();
                let body = twin_body(initial.clone(), 1, value!({}), 1);
                twin.handle_publish(T0, "$iothub/twin/res/200/?$rid=0", &body);

                let mut expected = initial;
                for (version, patch) in (2..).zip(&patches) {
                    json::merge(&mut expected, patch);
                    let topic = format!("$iothub/twin/PATCH/properties/desired/?$version={version}");
                    prop_assert!(twin.handle_publish(T0, &topic, &patch_body(patch.clone(), version)));
                }
                let version = 1 + patches.len() as u64;
                prop_assert_eq!(twin.desired(), (&expected, Some(version)));
                prop_assert_eq!(twin.poll_publish(), None, "no GET: nothing was missed");
                let mut last_event = None;
                while let Some(event) = twin.poll_event() {
                    last_event = Some(event);
                }
                prop_assert_eq!(
                    last_event,
                    Some(TwinEvent::DesiredChanged { properties: expected, version })
                );
            }

            #[test]
            fn twin_converges_over_a_lossy_network(ops in prop::collection::vec(op(), 0..80)) {
                let mut sim = Sim::new();
                for op in ops {
                    sim.step(op);
                    sim.check_invariants()?;
                }
                sim.settle()?;
            }
        }

        #[derive(Debug, Clone)]
        enum Op {
            UpdateReported(Value),
            PlatformSetsDesired(Value),
            /// The oldest device publish reaches the Platform, which answers it.
            DeliverUp,
            DeliverDown,
            DropUp,
            DropDown,
            /// The two oldest messages to the device swap places.
            ReorderDown,
            /// The Platform answers with an error status instead.
            RefuseUp(u16),
            Advance(u64),
            Reconnect,
            Restart,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => json_object(true).prop_map(Op::UpdateReported),
                3 => json_object(true).prop_map(Op::PlatformSetsDesired),
                6 => Just(Op::DeliverUp),
                6 => Just(Op::DeliverDown),
                1 => Just(Op::DropUp),
                1 => Just(Op::DropDown),
                1 => Just(Op::ReorderDown),
                1 => prop_oneof![Just(429u16), Just(500), Just(400)].prop_map(Op::RefuseUp),
                2 => (0u64..70_000).prop_map(Op::Advance),
                1 => Just(Op::Reconnect),
                1 => Just(Op::Restart),
            ]
        }

        /// A Platform that answers twin requests the way IoT Hub does.
        #[derive(Debug)]
        struct FakePlatform {
            desired: Value,
            desired_version: u64,
            /// Every desired document the Platform ever had, by version.
            desired_history: BTreeMap<u64, Value>,
            reported: Value,
            reported_version: u64,
        }

        impl FakePlatform {
            fn answer(&mut self, publish: &TwinPublish) -> (String, Vec<u8>) {
                let (_, rid) = publish
                    .topic
                    .rsplit_once("$rid=")
                    .expect("requests carry a rid");
                if publish.topic.starts_with(GET_TOPIC_PREFIX) {
                    let body = twin_body(
                        self.desired.clone(),
                        self.desired_version,
                        self.reported.clone(),
                        self.reported_version,
                    );
                    (format!("$iothub/twin/res/200/?$rid={rid}"), body)
                } else {
                    let patch: Value =
                        serde_json::from_slice(&publish.payload).expect("json patch");
                    json::merge(&mut self.reported, &patch);
                    self.reported_version += 1;
                    let topic = format!(
                        "$iothub/twin/res/204/?$rid={rid}&$version={}",
                        self.reported_version
                    );
                    (topic, Vec::new())
                }
            }

            fn set_desired(&mut self, patch: &Value) -> (String, Vec<u8>) {
                json::merge(&mut self.desired, patch);
                self.desired_version += 1;
                self.desired_history
                    .insert(self.desired_version, self.desired.clone());
                let topic = format!(
                    "$iothub/twin/PATCH/properties/desired/?$version={}",
                    self.desired_version
                );
                (topic, patch_body(patch.clone(), self.desired_version))
            }
        }

        #[derive(Debug)]
        struct Sim {
            now: u64,
            twin: Twin,
            stored: TwinState,
            platform: FakePlatform,
            up: VecDeque<TwinPublish>,
            down: VecDeque<(String, Vec<u8>)>,
            highest_desired_version: Option<u64>,
        }

        impl Sim {
            fn new() -> Self {
                let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
                twin.on_session_ready(T0);
                let desired = value!({"rate": 1});
                let mut sim = Self {
                    now: T0,
                    twin,
                    stored: TwinState::default(),
                    platform: FakePlatform {
                        desired_history: BTreeMap::from([(1, desired.clone())]),
                        desired,
                        desired_version: 1,
                        reported: value!({"stale": true}),
                        reported_version: 1,
                    },
                    up: VecDeque::new(),
                    down: VecDeque::new(),
                    highest_desired_version: None,
                };
                sim.collect();
                sim
            }

            fn step(&mut self, op: Op) {
                match op {
                    Op::UpdateReported(patch) => {
                        self.twin
                            .update_reported(self.now, patch)
                            .expect("valid patch");
                    }
                    Op::PlatformSetsDesired(patch) => {
                        let message = self.platform.set_desired(&patch);
                        self.down.push_back(message);
                    }
                    Op::DeliverUp => {
                        if let Some(publish) = self.up.pop_front() {
                            let answer = self.platform.answer(&publish);
                            self.down.push_back(answer);
                        }
                    }
                    Op::DeliverDown => {
                        if let Some((topic, payload)) = self.down.pop_front() {
                            assert!(self.twin.handle_publish(self.now, &topic, &payload));
                        }
                    }
                    Op::DropUp => drop(self.up.pop_front()),
                    Op::DropDown => drop(self.down.pop_front()),
                    Op::ReorderDown => {
                        if self.down.len() >= 2 {
                            self.down.swap(0, 1);
                        }
                    }
                    Op::RefuseUp(status) => {
                        if let Some(publish) = self.up.pop_front() {
                            let (_, rid) = publish.topic.rsplit_once("$rid=").expect("rid");
                            self.down.push_back((
                                format!("$iothub/twin/res/{status}/?$rid={rid}"),
                                Vec::new(),
                            ));
                        }
                    }
                    Op::Advance(ms) => {
                        self.now += ms;
                        self.twin.handle_timeout(self.now);
                    }
                    Op::Reconnect => self.reconnect(),
                    Op::Restart => {
                        self.twin = Twin::new(TwinConfig::default(), self.stored.clone());
                        self.reconnect();
                    }
                }
                self.collect();
            }

            fn reconnect(&mut self) {
                self.up.clear();
                self.down.clear();
                self.twin.on_session_lost();
                self.twin.on_session_ready(self.now);
            }

            /// Moves the twin's outputs to the network and the store, as a host would.
            fn collect(&mut self) {
                while let Some(publish) = self.twin.poll_publish() {
                    self.up.push_back(publish);
                }
                while self.twin.poll_event().is_some() {}
                if self.twin.take_state_dirty() {
                    self.stored = self.twin.state().clone();
                }
            }

            fn check_invariants(&mut self) -> Result<(), TestCaseError> {
                prop_assert_eq!(
                    self.twin.state(),
                    &self.stored,
                    "every change was flagged dirty"
                );
                let (desired, version) = self.twin.desired();
                if let Some(version) = version {
                    prop_assert_eq!(
                        self.platform.desired_history.get(&version),
                        Some(desired),
                        "the twin only ever shows a document the Platform had"
                    );
                    prop_assert!(
                        self.highest_desired_version <= Some(version),
                        "no going back"
                    );
                    self.highest_desired_version = Some(version);
                }
                Ok(())
            }

            /// A reliable network from now on: after a reconnect (a lost desired patch means a
            /// lost connection with MQTT QoS 1), everything must converge.
            fn settle(&mut self) -> Result<(), TestCaseError> {
                self.reconnect();
                self.collect();
                for _ in 0..100 {
                    if let Some(publish) = self.up.pop_front() {
                        let answer = self.platform.answer(&publish);
                        self.down.push_back(answer);
                    } else if let Some((topic, payload)) = self.down.pop_front() {
                        self.twin.handle_publish(self.now, &topic, &payload);
                    } else if let Some(deadline) = self.twin.poll_timeout() {
                        self.now = self.now.max(deadline);
                        self.twin.handle_timeout(self.now);
                    } else {
                        break;
                    }
                    self.collect();
                    self.check_invariants()?;
                }
                prop_assert!(self.twin.poll_timeout().is_none(), "the twin went quiet");
                prop_assert!(self.twin.is_synced());
                prop_assert!(!self.twin.pending_reported());
                prop_assert_eq!(&self.platform.reported, self.twin.reported());
                prop_assert_eq!(
                    self.twin.desired(),
                    (&self.platform.desired, Some(self.platform.desired_version))
                );
                Ok(())
            }
        }
    }
}
