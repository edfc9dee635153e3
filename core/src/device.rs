//! The facade: one [`Device`] that routes host inputs to the sub-machines (provisioning,
//! credentials, MQTT session, outbox, twin, upload) and hands their outputs back through one
//! [`Device::poll_output`].
//!
//! The facade owns no protocol logic of its own beyond moving results between the
//! sub-machines: each concern lives in its own module. The saved state's format is in
//! [`saved`](crate::saved), the IoT Hub topics and endpoint defaults in
//! [`iothub`](crate::iothub), and turning an outbox entry into a PUBLISH or an upload in
//! [`publish`](crate::publish).

use crate::prelude::*;

use alloc::collections::VecDeque;

use serde::Serialize;

use crate::cleartext::check_url;
use crate::clock::Clock;
use crate::config::DeviceConfig;
use crate::event::{ConnectionState, Event};
use crate::http::{HttpCall, HttpRequest, HttpResponse, MAX_ANSWER_BYTES, RequestId};
use crate::iothub::{cloud_to_device_properties, endpoint_for, subscriptions};
use crate::json::Value;
use crate::keyed::KeyedVec;
use crate::message::{
    BrotliEncoder, BuiltInBrotli, Marker, MessageError, MessageOptions, StoredMessage,
    StreamOptions, built_in_brotli, check_compression,
};
use crate::mqtt::codec::ConnectReturnCode;
use crate::mqtt::session::{
    ConnectParams, ConnectionId, Endpoint, Session, SessionEvent, SessionOutput,
};
use crate::outbox::{Outbox, OutboxError, Outcome, RejectReason};
use crate::provisioning::{
    Provisioning, ProvisioningEvent, ProvisioningOperation, ProvisioningRequest,
};
use crate::publish::Publisher;
use crate::reason::{ConnectionLoss, Reason, RequestFailure, RequestKind};
use crate::rng::Rng;
use crate::saved::{SavedState, StateSaves};
use crate::store::{
    OutboxMeta, Record, Seq, StoreError, StoreOperation, StoreRecovery, StoreRequest, new_origin,
};
use crate::text::Describe;
use crate::token::{ConnectionInfo, Credentials, CredentialsEvent, RegistrationToken};
use crate::twin::{Twin, TwinError, TwinEvent, TwinState};
use crate::upload::{Upload, UploadEvent};

/// Failed connection attempts in a row after which the device registers again.
const RENEW_AFTER_FAILED_CONNECTS: u32 = 3;

/// Something that happened outside the core, stamped by [`Device::handle_input`] with `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input<'a> {
    /// The deadline of the last [`Output::Timeout`] was reached (early calls are harmless).
    Timeout,
    /// The answer to [`Output::Http`].
    HttpResponse {
        /// The request's id.
        id: RequestId,
        /// The answer.
        response: HttpResponse,
    },
    /// [`Output::Http`] failed without an answer (network error, aborted).
    HttpFailed {
        /// The request's id.
        id: RequestId,
        /// What went wrong, for logs.
        error: String,
    },
    /// The connection asked for by [`Output::Connect`] is open.
    Connected {
        /// Which connection.
        conn: ConnectionId,
    },
    /// Bytes arrived on a connection.
    Received {
        /// Which connection.
        conn: ConnectionId,
        /// The bytes, in order, with no framing assumed.
        bytes: &'a [u8],
    },
    /// A connection closed or could not be opened.
    Closed {
        /// Which connection.
        conn: ConnectionId,
        /// Why, for logs and events.
        reason: String,
    },
    /// [`StoreRequest::Append`] of `first..=last` is durable.
    Appended {
        /// First sequence number of the append.
        first: Seq,
        /// Last sequence number of the append.
        last: Seq,
    },
    /// [`StoreRequest::Append`] of `first..=last` failed; nothing of it was stored.
    AppendFailed {
        /// First sequence number of the append.
        first: Seq,
        /// Last sequence number of the append.
        last: Seq,
        /// Why.
        error: StoreError,
    },
    /// The answer to [`StoreRequest::Load`].
    Loaded {
        /// The records, ascending.
        records: Vec<Record>,
    },
    /// [`StoreRequest::Load`] failed and read nothing. The core asks again after a delay that
    /// doubles from 1 s to 1 min, and tells the app with [`Event::StoreFailed`].
    LoadFailed {
        /// Why.
        error: StoreError,
    },
    /// [`StoreRequest::Remove`] of these records failed. The core asks again after a delay
    /// that doubles from 1 s to 1 min, and tells the app with [`Event::StoreFailed`].
    RemoveFailed {
        /// The request's `seqs`.
        seqs: Vec<Seq>,
        /// The request's `bytes`.
        bytes: u64,
        /// Why.
        error: StoreError,
    },
    /// [`StoreRequest::Reserve`] up to `below` is durable.
    Reserved {
        /// The request's `below`.
        below: Seq,
    },
    /// [`StoreRequest::Reserve`] failed. The core holds new appends and asks again after a
    /// delay that doubles from 1 s to 1 min, and tells the app with [`Event::StoreFailed`].
    ReserveFailed {
        /// The request's `below`.
        below: Seq,
        /// Why.
        error: StoreError,
    },
    /// [`StoreRequest::SaveState`] is durable.
    StateSaved {
        /// The request's `reported_revision`.
        reported_revision: u64,
    },
    /// [`StoreRequest::SaveState`] failed. The core saves its state again after a delay that
    /// doubles from 1 s to 1 min (sooner if the state changes), and tells the app with
    /// [`Event::StoreFailed`].
    SaveStateFailed {
        /// Why.
        error: StoreError,
    },
    /// The host's store found an unreadable tail when it opened (a torn write, a flipped
    /// byte) and cut it, keeping every record before it. The core tells the app
    /// ([`Event::OutboxRecovered`]); what was cut was never reported stored.
    StoreRecovered(StoreRecovery),
    /// The host's network came back (the browser's `online` event). If that ends the
    /// device's offline time ([`Input::AppOffline`] may still hold it), it reconnects without
    /// waiting for the backoff delay; while online (or stopped) it changes nothing.
    NetworkAvailable,
    /// The host's network is gone (the browser's `offline` event). The device is offline: the
    /// connection is closed and no connection or HTTP request is started until the network is
    /// back and the app does not hold it offline. Sends are still stored; they wait in the
    /// outbox.
    NetworkLost,
    /// The app says the device is offline (`true`) or lets the network decide (`false`): the
    /// device is offline while either the app or the network ([`Input::NetworkLost`]) says so.
    AppOffline(bool),
}

/// What the core asks of its host, one at a time from [`Device::poll_output`].
#[derive(Debug, Clone, PartialEq)]
#[must_use = "every output must be acted on; poll until Output::Timeout"]
pub enum Output {
    /// Make this HTTP request and answer with its id.
    Http(HttpRequest),
    /// Open an MQTT transport connection to `endpoint`; answer with `Connected` or `Closed`.
    Connect {
        /// The id of the new connection.
        conn: ConnectionId,
        /// Where to connect.
        endpoint: Endpoint,
    },
    /// Write these bytes on the connection.
    Transmit {
        /// Which connection.
        conn: ConnectionId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Close the connection. No `Closed` input is needed for it.
    Close {
        /// Which connection.
        conn: ConnectionId,
    },
    /// Perform this storage operation, in order with the others.
    Store(StoreRequest),
    /// Tell the app.
    Event(Event),
    /// Nothing more to do now: call [`Device::handle_timeout`] at this time (ms since the
    /// epoch), or earlier when an input arrives. `None`: only inputs can wake the device.
    Timeout(Option<u64>),
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The message itself is invalid.
    Message(MessageError),
    /// The outbox is full.
    Outbox(OutboxError),
    /// The device was stopped.
    Stopped,
}

impl Describe for SendError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Message(error) => error.describe(out),
            Self::Outbox(error) => error.describe(out),
            Self::Stopped => put!(out, "the device is stopped"),
        }
    }
}

described!(SendError);

impl From<MessageError> for SendError {
    fn from(error: MessageError) -> Self {
        Self::Message(error)
    }
}

impl From<OutboxError> for SendError {
    fn from(error: OutboxError) -> Self {
        Self::Outbox(error)
    }
}

impl Reason for SendError {
    fn code(&self) -> &'static str {
        match self {
            Self::Message(MessageError::CompressionUnavailable) => "compressionUnavailable",
            Self::Message(_) => "invalidMessage",
            Self::Outbox(_) => "outboxFull",
            Self::Stopped => "stopped",
        }
    }
}

/// A snapshot of the device's queue and connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Messages stored and not yet delivered or rejected.
    pub pending_count: u64,
    /// Their bytes in the store.
    pub pending_bytes: u64,
    /// When the oldest of them was enqueued, if known.
    pub oldest_enqueued_at: Option<u64>,
    /// Records held in memory (the window).
    pub window_records: usize,
    /// The connection state.
    pub connection_state: ConnectionState,
    /// Whether the device is offline (the network is lost or the app says so).
    pub offline: bool,
}

#[derive(Debug)]
enum Phase {
    Provisioning(Box<Provisioning>),
    Registered(Box<Credentials>),
    Failed,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Provisioning,
    Credentials,
    Upload(Seq),
}

/// A device: the whole SDK's logic, driven by its host.
///
/// Getters take `&self`; inputs are `handle_*`; commands are verbs (`send`,
/// `update_reported_properties`, `stop`); outputs come from [`Device::poll_output`], which must be
/// drained (until it returns [`Output::Timeout`]) after every input and command.
#[derive(Debug)]
pub struct Device {
    config: DeviceConfig,
    clock: Clock,
    rng: Rng,
    phase: Phase,
    session: Session,
    outbox: Outbox,
    twin: Twin,
    upload: Option<Upload>,
    saved: SavedState,
    saves: StateSaves,
    /// A wait for `register` that must outlive the credentials that asked for it.
    register_not_before: u64,
    next_request_id: u64,
    /// Requests on their way: who asked, which request it is, and its deadline.
    requests: KeyedVec<(Owner, RequestKind, u64)>,
    http_out: VecDeque<HttpRequest>,
    in_flight: KeyedVec<Seq>,
    events: VecDeque<Event>,
    connection_state: ConnectionState,
    /// The host said its network is gone ([`Input::NetworkLost`]).
    network_lost: bool,
    /// The app holds the device offline ([`Input::AppOffline`]).
    app_offline: bool,
}

impl Device {
    /// Creates a device from its configuration, the host's random seed, what the host's store
    /// holds (`meta`, and the state blob last saved with [`StoreRequest::SaveState`]).
    pub fn new(
        config: DeviceConfig,
        now: u64,
        rng_seed: [u8; 32],
        meta: &OutboxMeta,
        saved_state: Option<&[u8]>,
    ) -> Self {
        let mut rng = Rng::from_seed(rng_seed);
        let mut events = VecDeque::new();
        let (saved, twin_state) = match saved_state.map(SavedState::parse) {
            Some(Ok(parsed)) => parsed,
            Some(Err(reason)) => {
                events.push_back(Event::SavedStateDiscarded { reason });
                Default::default()
            }
            None => Default::default(),
        };
        let session = Session::new(config.session, &mut rng);
        let twin = Twin::new(config.twin, twin_state);
        let mut outbox = Outbox::new(config.outbox, meta, || {
            let mut random = [0; 16];
            random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            random[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
            new_origin(random)
        });
        if let Some(recovery) = outbox.take_recovery() {
            events.push_back(Event::OutboxRecovered(Box::new(recovery)));
        }
        let mut device = Self {
            outbox,
            clock: Clock::starting_at(now),
            rng,
            phase: Phase::Failed,
            session,
            twin,
            upload: None,
            saved,
            saves: StateSaves::default(),
            register_not_before: 0,
            next_request_id: 1,
            requests: KeyedVec::default(),
            http_out: VecDeque::new(),
            in_flight: KeyedVec::default(),
            events,
            connection_state: ConnectionState::Disconnected,
            network_lost: false,
            app_offline: false,
            config,
        };
        match device.saved.token.clone() {
            Some(token) if !token.is_expired(now) => device.start_credentials(now, token),
            _ => device.start_provisioning(now),
        }
        device.drive(now);
        device
    }

    // ----- getters -----------------------------------------------------------------------

    /// Workspace id, once registered.
    pub fn workspace_id(&self) -> Option<&str> {
        self.saved.workspace_id.as_deref()
    }

    /// Device id, once registered.
    pub fn device_id(&self) -> Option<&str> {
        self.saved.device_id.as_deref()
    }

    /// The desired properties and their version (from the saved copy until the first fetch).
    pub fn desired_properties(&self) -> (&Value, Option<u64>) {
        self.twin.desired()
    }

    /// The desired properties and their version when it is above `version`, the one the app
    /// has (the official SDK's "if newer"); `None` when the app is up to date, or before the
    /// first fetch.
    pub fn desired_properties_if_newer(&self, version: u64) -> Option<(&Value, u64)> {
        match self.twin.desired() {
            (properties, Some(newer)) if newer > version => Some((properties, newer)),
            _ => None,
        }
    }

    /// The reported properties the app has set.
    pub fn reported_properties(&self) -> &Value {
        self.twin.reported()
    }

    /// True while a reported-properties change waits for the Platform's acknowledgement.
    pub fn reported_properties_pending(&self) -> bool {
        self.twin.pending_reported()
    }

    /// True once the twin was fetched on the current connection.
    pub fn is_twin_synced(&self) -> bool {
        self.twin.is_synced()
    }

    /// The operation waiting for approval, if any.
    pub fn provisioning_operation(&self) -> Option<ProvisioningOperation> {
        match &self.phase {
            Phase::Provisioning(p) => p.operation().map(|op| op.on_wall_clock(self.clock)),
            _ => None,
        }
    }

    /// Queue and connection figures.
    pub fn stats(&self) -> Stats {
        Stats {
            pending_count: self.outbox.pending_count(),
            pending_bytes: self.outbox.pending_bytes(),
            oldest_enqueued_at: self.outbox.oldest_enqueued_at(),
            window_records: self.outbox.in_memory().0,
            connection_state: self.connection_state,
            offline: self.session.is_offline(),
        }
    }

    /// The outbox origin id used in the `vdev-seq` property.
    pub fn outbox_origin(&self) -> &str {
        self.outbox.origin()
    }

    /// Refuses stream options the device cannot honour: compression without a Brotli encoder
    /// (the core's own, or one the host lends, `lends_encoder`), so that a host can say so
    /// when the app creates the stream's sender rather than at its first message.
    pub fn check_stream(
        &self,
        stream: &StreamOptions,
        lends_encoder: bool,
    ) -> Result<(), SendError> {
        let have_encoder = lends_encoder || built_in_brotli().is_some();
        Ok(check_compression(stream.compression, have_encoder)?)
    }

    // ----- commands ----------------------------------------------------------------------

    /// Queues a message. Returns its sequence number once it is accepted; it is durable when
    /// the host has executed the resulting [`StoreRequest::Append`]. A stream that asks for
    /// compression needs the core's own encoder (its `brotli` feature) or one the host lends
    /// ([`Device::send_with_encoder`]).
    pub fn send(
        &mut self,
        now: u64,
        stream: &StreamOptions,
        options: &MessageOptions,
        payload: Vec<u8>,
    ) -> Result<Seq, SendError> {
        self.send_with_encoder(now, stream, options, payload, None::<&mut BuiltInBrotli>)
    }

    /// [`Device::send`] with the encoder the host lends (`None`: the core's own, if it has one).
    pub fn send_with_encoder(
        &mut self,
        now: u64,
        stream: &StreamOptions,
        options: &MessageOptions,
        payload: Vec<u8>,
        encoder: Option<&mut impl BrotliEncoder>,
    ) -> Result<Seq, SendError> {
        match encoder {
            Some(lent) => self.enqueue(now, stream, options, Marker::Data, payload, Some(lent)),
            None => {
                let mut own = built_in_brotli();
                self.enqueue(now, stream, options, Marker::Data, payload, own.as_mut())
            }
        }
    }

    /// Queues the marker that closes batch `batch_id`.
    pub fn enqueue_batch_completion(
        &mut self,
        now: u64,
        stream: &StreamOptions,
        batch_id: &str,
    ) -> Result<Seq, SendError> {
        let options = MessageOptions {
            batch_id: Some(batch_id.to_owned()),
            ..Default::default()
        };
        let none = None::<&mut BuiltInBrotli>;
        self.enqueue(
            now,
            stream,
            &options,
            Marker::CompleteBatch,
            Vec::new(),
            none,
        )
    }

    /// Queues the marker that closes message `message_id` of batch `batch_id`.
    pub fn enqueue_message_completion(
        &mut self,
        now: u64,
        stream: &StreamOptions,
        batch_id: &str,
        message_id: &str,
    ) -> Result<Seq, SendError> {
        let options = MessageOptions {
            batch_id: Some(batch_id.to_owned()),
            message_id: Some(message_id.to_owned()),
            ..Default::default()
        };
        let none = None::<&mut BuiltInBrotli>;
        self.enqueue(
            now,
            stream,
            &options,
            Marker::CompleteMessage,
            Vec::new(),
            none,
        )
    }

    fn enqueue(
        &mut self,
        now: u64,
        stream: &StreamOptions,
        options: &MessageOptions,
        marker: Marker,
        payload: Vec<u8>,
        encoder: Option<&mut impl BrotliEncoder>,
    ) -> Result<Seq, SendError> {
        if matches!(self.phase, Phase::Stopped) {
            return Err(SendError::Stopped);
        }
        self.clock.advance(now);
        // Stamped with the wall clock: it is saved with the message and shown to the app.
        let message = StoredMessage::build(
            stream,
            options,
            marker,
            payload,
            self.config.upload_threshold,
            self.clock.wall_now(),
            encoder,
        )?;
        self.queue(message)
    }

    /// Not inlined: one copy for every kind of send (see `StoredMessage::properties`).
    #[inline(never)]
    fn queue(&mut self, message: StoredMessage) -> Result<Seq, SendError> {
        Ok(self.outbox.enqueue(message)?)
    }

    /// Merges `patch` (a JSON object, merge-patch semantics) into the reported properties; the
    /// difference is sent when connected and kept across restarts until acknowledged. Returns
    /// the update's revision: [`Event::ReportedPropertiesStored`] says when it is durable.
    pub fn update_reported_properties(&mut self, now: u64, patch: Value) -> Result<u64, TwinError> {
        if matches!(self.phase, Phase::Stopped) {
            return Err(TwinError::Stopped);
        }
        let now = self.clock.advance(now);
        let changed = self.twin.update_reported(now, patch)?;
        let (revision, stored) = self.saves.reported_update(changed);
        if let Some(revision) = stored {
            self.events
                .push_back(Event::ReportedPropertiesStored { revision });
        }
        self.drive(now);
        Ok(revision)
    }

    /// Disconnects and stops all activity; queued messages stay in the store.
    pub fn stop(&mut self, now: u64) {
        let now = self.clock.advance(now);
        self.session.clear_params(now);
        self.phase = Phase::Stopped;
        self.upload = None;
        self.requests.clear();
        self.set_connection_state(ConnectionState::Stopped);
        self.drive(now);
    }

    // ----- inputs ------------------------------------------------------------------------

    /// Feeds one input.
    pub fn handle_input(&mut self, now: u64, input: Input<'_>) {
        let now = self.clock.advance(now);
        match input {
            Input::Timeout => return self.on_timeout(now),
            Input::HttpResponse { id, response } => self.route_response(now, id, Ok(response)),
            Input::HttpFailed { id, error } => {
                self.route_response(now, id, Err(RequestFailure::Network(error)))
            }
            Input::Connected { conn } => self.session.handle_connected(now, conn),
            Input::Received { conn, bytes } => self.session.handle_received(now, conn, bytes),
            Input::Closed { conn, reason } => self.session.handle_closed(now, conn, &reason),
            Input::Appended { first, last } => self.outbox.handle_appended(first, last),
            Input::AppendFailed { first, last, error } => {
                self.outbox.handle_append_failed(first, last, &error)
            }
            Input::Loaded { records } => self.outbox.handle_loaded(records),
            Input::LoadFailed { error } => {
                self.outbox.handle_load_failed(now);
                self.store_failed(StoreOperation::Load, error);
            }
            Input::RemoveFailed { seqs, bytes, error } => {
                self.outbox.handle_remove_failed(now, seqs, bytes);
                self.store_failed(StoreOperation::Remove, error);
            }
            Input::Reserved { below } => self.outbox.handle_reserved(below),
            Input::ReserveFailed { below, error } => {
                self.outbox.handle_reserve_failed(now, below);
                self.store_failed(StoreOperation::Reserve, error);
            }
            Input::StateSaved { reported_revision } => {
                if let Some(revision) = self.saves.saved(reported_revision) {
                    self.events
                        .push_back(Event::ReportedPropertiesStored { revision });
                }
            }
            Input::SaveStateFailed { error } => {
                self.saves.failed(now);
                self.store_failed(StoreOperation::SaveState, error);
            }
            Input::StoreRecovered(recovery) => self
                .events
                .push_back(Event::OutboxRecovered(Box::new(recovery))),
            // A stopped device stays as it is.
            Input::NetworkAvailable | Input::NetworkLost | Input::AppOffline(_)
                if matches!(self.phase, Phase::Stopped) => {}
            Input::NetworkAvailable => self.set_offline(now, false, self.app_offline),
            Input::NetworkLost => self.set_offline(now, true, self.app_offline),
            Input::AppOffline(offline) => self.set_offline(now, self.network_lost, offline),
        }
        self.drive(now);
    }

    /// The device is offline while the network is lost or the app says so. Only a change of
    /// that is acted on: a repeated signal changes nothing (in particular, being told again
    /// that the network is there skips no backoff delay).
    fn set_offline(&mut self, now: u64, network_lost: bool, app_offline: bool) {
        self.network_lost = network_lost;
        self.app_offline = app_offline;
        let offline = network_lost || app_offline;
        if offline == self.session.is_offline() {
            return;
        }
        self.events.push_back(Event::OfflineChanged { offline });
        if offline {
            self.session.go_offline(now);
        } else {
            self.session.reconnect_soon(now);
        }
    }

    /// Lets time-driven work happen. Idempotent; calling it early does nothing.
    pub fn handle_timeout(&mut self, now: u64) {
        let now = self.clock.advance(now);
        self.on_timeout(now);
    }

    /// [`Device::handle_timeout`] at `now` on the core's timeline.
    fn on_timeout(&mut self, now: u64) {
        let expired: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, (_, _, deadline))| *deadline <= now)
            .map(|(id, _)| RequestId(id))
            .collect();
        for id in expired {
            self.route_response(now, id, Err(RequestFailure::TimedOut));
        }
        match &mut self.phase {
            Phase::Provisioning(p) => p.handle_timeout(now),
            Phase::Registered(c) => c.handle_timeout(now),
            Phase::Failed | Phase::Stopped => {}
        }
        self.session.handle_timeout(now);
        self.twin.handle_timeout(now);
        self.drive(now);
    }

    fn store_failed(&mut self, operation: StoreOperation, reason: StoreError) {
        self.events
            .push_back(Event::StoreFailed { operation, reason });
    }

    fn route_response(
        &mut self,
        now: u64,
        id: RequestId,
        response: Result<HttpResponse, RequestFailure>,
    ) {
        let Some((owner, request, deadline)) = self.requests.remove(id.0) else {
            return;
        };
        let response = match response {
            // The host gave up on it at its deadline (it aborts then, and its error can come
            // before the core's own timeout in the same turn): that is no answer in time.
            Err(RequestFailure::Network(_)) if now >= deadline => Err(RequestFailure::TimedOut),
            Ok(answer) => oversized_answer(answer),
            failed => failed,
        };
        // Every failed request is told, with the Platform's own words where it gave some; the
        // sub-machine decides what follows (a retry, or a terminal event of its own).
        let failure = match &response {
            Ok(answer) => RequestFailure::from_response(answer),
            Err(failure) => Some(failure.clone()),
        };
        if let Some(failure) = failure {
            self.events
                .push_back(Event::RequestFailed { request, failure });
        }
        let read = match (owner, &mut self.phase) {
            (Owner::Provisioning, Phase::Provisioning(p)) => {
                p.handle_response(self.clock, &mut self.rng, response)
            }
            (Owner::Credentials, Phase::Registered(c)) => {
                c.handle_response(self.clock, &mut self.rng, response)
            }
            (Owner::Upload(seq), _) => match self.upload.as_mut().filter(|u| u.seq() == seq) {
                Some(upload) => upload.handle_response(self.clock, &mut self.rng, response),
                None => Ok(()),
            },
            _ => Ok(()),
        };
        if let Err(unreadable) = read {
            self.events.push_back(Event::RequestFailed {
                request,
                failure: RequestFailure::Malformed(unreadable),
            });
        }
    }

    // ----- output ------------------------------------------------------------------------

    /// The next thing for the host to do. Call repeatedly until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(request) = self.outbox.poll_store(self.clock.now()) {
            return Output::Store(request);
        }
        if let Some(reported_revision) = self.saves.due(self.clock.now()) {
            let state = self.saved.to_json(self.twin.state(), self.clock);
            return Output::Store(StoreRequest::SaveState {
                state,
                reported_revision,
            });
        }
        if let Some(output) = self.session.poll_output() {
            return match output {
                SessionOutput::Connect { conn, endpoint } => Output::Connect { conn, endpoint },
                SessionOutput::Transmit { conn, bytes } => Output::Transmit { conn, bytes },
                SessionOutput::Close { conn } => Output::Close { conn },
            };
        }
        // While offline, requests wait here; their time only starts once they are sent.
        if !self.session.is_offline()
            && let Some(mut request) = self.http_out.pop_front()
        {
            // Large uploads get time in proportion to their size (at 64 KB/s at worst).
            let deadline =
                self.clock.now() + self.config.http_timeout_ms + request.body.len() as u64 / 64;
            if let Some((_, _, kept)) = self.requests.get_mut(request.id.0) {
                *kept = deadline;
            }
            request.deadline = self.clock.to_wall(deadline);
            return Output::Http(request);
        }
        if let Some(event) = self.events.pop_front() {
            return Output::Event(event);
        }
        Output::Timeout(self.poll_timeout().map(|at| self.clock.to_wall(at)))
    }

    fn poll_timeout(&self) -> Option<u64> {
        let phase = match &self.phase {
            Phase::Provisioning(p) => p.poll_timeout(),
            Phase::Registered(c) => c.poll_timeout(),
            Phase::Failed | Phase::Stopped => None,
        };
        let requests = self
            .requests
            .values()
            .map(|(_, _, deadline)| *deadline)
            .filter(|deadline| *deadline != u64::MAX)
            .min();
        // An upload step can only run with a usable credential; until then it waits for one.
        let upload = match &self.phase {
            Phase::Registered(c)
                if c.connection()
                    .is_some_and(|i| !i.is_expired(self.clock.now())) =>
            {
                self.upload.as_ref().and_then(Upload::poll_timeout)
            }
            _ => None,
        };
        [
            phase,
            requests,
            self.session.poll_timeout(),
            self.twin.poll_timeout(),
            self.outbox.poll_timeout(),
            self.saves.poll_timeout(),
            upload,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- moving results between sub-machines ---------------------------------------------

    /// Moves results between the sub-machines until none has anything left to say.
    fn drive(&mut self, now: u64) {
        for _ in 0..1_000 {
            let mut progressed = self.drive_phase(now);
            progressed |= self.drive_session(now);
            progressed |= self.publish_ready(now);
            progressed |= self.drive_twin(now);
            progressed |= self.drive_upload(now);
            while let Some(outcome) = self.outbox.poll_outcome() {
                progressed = true;
                self.events.push_back(match outcome {
                    Outcome::Stored(first, last) => Event::MessagesStored { first, last },
                    Outcome::Delivered(seq) => Event::MessageDelivered { seq },
                    Outcome::Rejected(seq, reason) => Event::MessageRejected { seq, reason },
                });
            }
            if !progressed {
                return;
            }
        }
    }

    fn drive_phase(&mut self, now: u64) -> bool {
        let mut progressed = false;
        match &mut self.phase {
            Phase::Provisioning(p) => {
                if let Some(call) = p.poll_call() {
                    self.issue(Owner::Provisioning, call);
                    return true;
                }
                if let Some(event) = p.poll_event() {
                    self.on_provisioning_event(now, event);
                    return true;
                }
            }
            Phase::Registered(c) => {
                if let Some(call) = c.poll_call() {
                    self.issue(Owner::Credentials, call);
                    return true;
                }
                if let Some(event) = c.poll_event() {
                    self.on_credentials_event(now, event);
                    progressed = true;
                }
            }
            Phase::Failed | Phase::Stopped => {}
        }
        progressed
    }

    fn issue(&mut self, owner: Owner, call: HttpCall) {
        let id = RequestId(self.next_request_id);
        self.next_request_id += 1;
        if let Err(refused) = check_url(&call.url) {
            // Never sent: answered at once, as a failure the sub-machine will not retry.
            self.requests.insert(id.0, (owner, call.kind, u64::MAX));
            let failure = RequestFailure::Insecure(refused.text());
            return self.route_response(self.clock.now(), id, Err(failure));
        }
        // The deadline is set when the request leaves (see `poll_output`): until then it has
        // none, so a request held while offline does not time out.
        self.requests.insert(id.0, (owner, call.kind, u64::MAX));
        self.http_out.push_back(HttpRequest {
            id,
            method: call.method,
            url: call.url,
            headers: call.headers,
            body: call.body,
            deadline: u64::MAX,
            max_response_bytes: MAX_ANSWER_BYTES,
        });
    }

    fn on_provisioning_event(&mut self, now: u64, event: ProvisioningEvent) {
        match event {
            ProvisioningEvent::Operation(op) => {
                self.saved.operation = Some(op.clone());
                self.saves.ask();
                let shown = op.on_wall_clock(self.clock);
                self.events.push_back(Event::ProvisioningOperation(shown));
            }
            ProvisioningEvent::Completed(token) => {
                self.saved.operation = None;
                self.saved.token = Some(token.clone());
                self.saves.ask();
                self.start_credentials(now, token);
            }
            ProvisioningEvent::Failed(error) => {
                self.saved.operation = None;
                self.saves.ask();
                self.phase = Phase::Failed;
                self.set_connection_state(ConnectionState::Failed);
                self.events.push_back(Event::ProvisioningFailed(error));
            }
        }
    }

    fn on_credentials_event(&mut self, now: u64, event: CredentialsEvent) {
        match event {
            CredentialsEvent::TokenChanged(token) => {
                self.saved.token = Some(token);
                self.saves.ask();
            }
            CredentialsEvent::Registered(info) => self.on_registered(now, info),
            CredentialsEvent::NeedsProvisioning(reason) => {
                // The next credentials honour a wait a failed `register` asked for.
                if let Phase::Registered(c) = &self.phase {
                    self.register_not_before = c.register_not_before();
                }
                self.saved.token = None;
                self.saves.ask();
                self.session.clear_params(now);
                self.events
                    .push_back(Event::RegistrationTokenDiscarded { reason });
                self.start_provisioning(now);
            }
        }
    }

    fn on_registered(&mut self, now: u64, info: ConnectionInfo) {
        let identity_changed = self.saved.workspace_id.as_deref() != Some(&info.workspace_id)
            || self.saved.device_id.as_deref() != Some(&info.device_id);
        if identity_changed {
            // Another device's twin means nothing to this one. The saved state takes the twin's
            // part from the live twin, so the save below writes the empty one.
            if self.saved.device_id.is_some() {
                self.twin = Twin::new(self.config.twin, TwinState::default());
            }
            self.saved.workspace_id = Some(info.workspace_id.clone());
            self.saved.device_id = Some(info.device_id.clone());
            self.saves.ask();
        }
        self.events.push_back(Event::Registered {
            workspace_id: info.workspace_id.clone(),
            device_id: info.device_id.clone(),
        });
        let client_id = info.client_id();
        let params = ConnectParams {
            endpoint: endpoint_for(&info.host_name, &info.endpoints, self.config.transport),
            username: info.username(),
            password: info.shared_access_signature.clone(),
            subscriptions: subscriptions(&client_id),
            client_id,
            expires_at: info.sas_expires_at,
        };
        self.session.set_params(now, params);
    }

    fn start_provisioning(&mut self, now: u64) {
        self.requests
            .retain(|_, (owner, _, _)| *owner != Owner::Credentials);
        let request = ProvisioningRequest {
            instance_url: self.config.instance_url.clone(),
            provisioning_token: self.config.provisioning_token.clone(),
            device_id: self
                .config
                .device_id
                .as_ref()
                .map(|d| d.as_str().to_owned()),
            parameters: self.config.provisioning_parameters.clone(),
            poll_interval_ms: self.config.provisioning_poll_interval_ms,
        };
        let saved = self.saved.operation.clone();
        self.phase = Phase::Provisioning(Box::new(Provisioning::new(
            now,
            request,
            self.config.backoff,
            saved,
        )));
        self.set_connection_state(ConnectionState::Provisioning);
    }

    fn start_credentials(&mut self, now: u64, token: RegistrationToken) {
        self.requests
            .retain(|_, (owner, _, _)| *owner != Owner::Provisioning);
        self.phase = Phase::Registered(Box::new(Credentials::new(
            now,
            self.config.instance_url.clone(),
            self.config.provisioning_token.clone(),
            token,
            self.config.backoff,
            self.register_not_before,
        )));
        self.set_connection_state(ConnectionState::Disconnected);
    }

    fn set_connection_state(&mut self, state: ConnectionState) {
        if self.connection_state != state {
            self.connection_state = state;
            self.events.push_back(Event::ConnectionStateChanged(state));
        }
    }

    fn drive_session(&mut self, now: u64) -> bool {
        let Some(event) = self.session.poll_event() else {
            return false;
        };
        match event {
            SessionEvent::Connecting => self.set_connection_state(ConnectionState::Connecting),
            SessionEvent::Ready => {
                self.set_connection_state(ConnectionState::Connected);
                self.twin.on_session_ready(now);
            }
            SessionEvent::Lost {
                reason,
                failed_attempts,
            } => {
                // A refused credential is renewed at once. Otherwise every third failed attempt
                // in a row asks for a fresh one too: the gateway may have moved (new
                // endpoints) or stopped accepting the old signature.
                let credential_refused = matches!(
                    reason,
                    Some(ConnectionLoss::Refused(
                        ConnectReturnCode::BadUserNameOrPassword | ConnectReturnCode::NotAuthorized
                    ))
                );
                if (credential_refused
                    || failed_attempts > 0
                        && failed_attempts.is_multiple_of(RENEW_AFTER_FAILED_CONNECTS))
                    && let Phase::Registered(c) = &mut self.phase
                {
                    c.renew_now(now);
                }
                if let Some(reason) = reason {
                    self.events.push_back(Event::ConnectionLost { reason });
                }
                self.in_flight.clear();
                self.outbox.handle_connection_lost(now);
                self.twin.on_session_lost();
                if matches!(
                    self.connection_state,
                    ConnectionState::Connected | ConnectionState::Connecting
                ) {
                    self.set_connection_state(ConnectionState::Disconnected);
                }
            }
            SessionEvent::CredentialExpired => {
                if let Phase::Registered(c) = &mut self.phase {
                    c.renew_now(now);
                }
            }
            SessionEvent::Incoming(publish) => {
                if !self
                    .twin
                    .handle_publish(now, &publish.topic, &publish.payload)
                    && let Some(properties) = cloud_to_device_properties(&publish.topic)
                {
                    self.events.push_back(Event::CloudToDeviceMessage {
                        properties: crate::property_bag::read_property_bag(properties),
                        payload: publish.payload,
                    });
                }
            }
            SessionEvent::Acked(packet_id) => {
                if let Some(seq) = self.in_flight.remove(u64::from(packet_id)) {
                    self.outbox.handle_delivered(seq);
                }
            }
            SessionEvent::PacketDropped { size, limit } => {
                self.events.push_back(Event::PacketDropped {
                    size: size as u64,
                    limit: limit as u64,
                });
            }
        }
        true
    }

    /// Publishes queued messages while the session has room, in order.
    fn publish_ready(&mut self, now: u64) -> bool {
        Publisher {
            session: &mut self.session,
            outbox: &mut self.outbox,
            in_flight: &mut self.in_flight,
            upload: &mut self.upload,
            workspace_id: self.saved.workspace_id.as_deref().unwrap_or_default(),
            device_id: self.saved.device_id.as_deref().unwrap_or_default(),
            backoff: self.config.backoff,
        }
        .publish_ready(now)
    }

    fn drive_twin(&mut self, now: u64) -> bool {
        let mut progressed = false;
        while self.session.is_ready() {
            let Some(publish) = self.twin.poll_publish() else {
                break;
            };
            self.session
                .publish_qos0(now, publish.topic, publish.payload);
            progressed = true;
        }
        while let Some(event) = self.twin.poll_event() {
            progressed = true;
            self.events.push_back(match event {
                TwinEvent::DesiredChanged {
                    properties,
                    version,
                } => Event::DesiredPropertiesChanged {
                    properties,
                    version,
                },
                TwinEvent::ReportedAcknowledged { .. } => Event::ReportedPropertiesAcknowledged,
                TwinEvent::ReportedRejected { status } => {
                    Event::ReportedPropertiesRejected { status }
                }
            });
        }
        if self.twin.take_state_dirty() {
            self.saves.ask();
            progressed = true;
        }
        progressed
    }

    fn drive_upload(&mut self, now: u64) -> bool {
        let Some(upload) = self.upload.as_mut() else {
            return false;
        };
        let connection = match &self.phase {
            Phase::Registered(c) => c.connection(),
            _ => None,
        };
        upload.handle_timeout(now, connection);
        let seq = upload.seq();
        if let Some(call) = upload.poll_call() {
            self.issue(Owner::Upload(seq), call);
            return true;
        }
        let Some(event) = upload.poll_event() else {
            return false;
        };
        match event {
            UploadEvent::Uploaded { seq, blob_name } => {
                self.upload = None;
                self.outbox.mark_uploaded(seq, blob_name);
            }
            UploadEvent::Refused {
                seq,
                request,
                failure,
            } => {
                self.upload = None;
                self.outbox.reject(
                    seq,
                    RejectReason::UploadRefused {
                        request,
                        failure: Box::new(failure),
                    },
                );
            }
            UploadEvent::NeedsCredentials => {
                if let Phase::Registered(c) = &mut self.phase {
                    c.renew_now(now);
                }
            }
        }
        true
    }
}

/// An answer whose body is longer than the device reads ([`MAX_ANSWER_BYTES`]; the host stops
/// reading one byte past it, so a wrong URL that streams without end cannot fill the memory).
/// A success cannot be read; an error status still counts, without its body.
fn oversized_answer(answer: HttpResponse) -> Result<HttpResponse, RequestFailure> {
    if answer.body.len() <= MAX_ANSWER_BYTES as usize {
        Ok(answer)
    } else if (200..300).contains(&answer.status) {
        Err(RequestFailure::Malformed(text!(
            "it is longer than the ",
            MAX_ANSWER_BYTES,
            " bytes the device reads"
        )))
    } else {
        Ok(HttpResponse {
            body: Vec::new(),
            ..answer
        })
    }
}
