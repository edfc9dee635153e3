//! # vdev-web
//!
//! The browser SDK of vdev (npm package `vdev-web`): the sans-IO `vdev-core` device, exported
//! with wasm-bindgen as one class, `Core`, and driven by a host written in JavaScript
//! (`wasm-web/js/`: WebSocket, `fetch`, IndexedDB, Web Locks, the timer worker and the public
//! `DeviceClient` API).
//!
//! Why the host is JavaScript: the same host in Rust (async tasks, web-sys bindings, its own
//! channels) was about 48 KB of the 107 KB gzipped bundle; in JavaScript the browser already has
//! all of it. This crate only moves values across the boundary, and makes no decision the core
//! does not make.
//!
//! The class mirrors the core one to one:
//! - `new Core(options)` is `Device::new`;
//! - each input is a method taking `now` first (`httpResponse`, `connected`, `received`, ...);
//! - commands (`send`, `enqueueBatchCompletion`, `enqueueMessageCompletion`,
//!   `updateReportedProperties`, `stop`) return a sequence number or throw an `Error`;
//! - `pollOutput()` returns the JSON text of one output, `kind` naming it, and `takeBytes()`
//!   the byte strings it announces; the host calls it until `kind === "timeout"`.
//!
//! Numbers (ids, sequence numbers, times) cross as JavaScript numbers (`f64`): they all stay far
//! below 2^53. JSON documents and the outputs cross as text (`JSON.parse` / `JSON.stringify` on
//! the JS side), written by the core's own JSON module, so no JSON converter is compiled into
//! the module and no object is built across the boundary a property at a time.

#![no_std]
#![warn(missing_docs, unreachable_pub)]

// The crate links no `std` of its own: the shipped browser build (feature `trap-on-panic`) has
// none at all, and a panic there traps without formatting its message; measured in
// `wasm-web/SIZE.md`. The Node.js build and the tests link `std` through their dependencies.
extern crate alloc;

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

// The Node.js build links `std` (its Brotli encoder), and `std` has a panic handler of its own.
#[cfg(all(feature = "trap-on-panic", feature = "node"))]
compile_error!(
    "trap-on-panic is for the browser build: the node feature links std's panic handler"
);

/// A panic is a bug, never an answer to input: the module traps (a `RuntimeError` in
/// JavaScript), as `std`'s handler does with `panic = "abort"`, but without the code that
/// formats a message nobody sees (the browser has no standard error).
#[cfg(all(feature = "trap-on-panic", target_arch = "wasm32"))]
#[panic_handler]
fn trap(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(feature = "node")]
mod node;
#[cfg(feature = "node")]
pub use node::FileOutbox;

use js_sys::{Array, Reflect, Uint8Array};
use vdev_core::json::{self, Value};
use vdev_core::{
    BrotliEncoder, Compression, ConfigError, ConfigOption, ConnectionId, Describe, Device,
    DeviceConfig, DeviceId, Endpoint, HttpResponse, Input, MessageOptions, OutboxMeta, Output,
    Piece, Reason, Record, RequestId, SendError, SendSettlement, Seq, StoreError, StoreRequest,
    StreamOptions, Transport, Tunable, parse_reported_patch,
};
use wasm_bindgen::prelude::*;

// Talc instead of Rust's default allocator (dlmalloc) in the browser: smaller in the bundle
// and no slower.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// The device engine, driven by the JavaScript host.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Core {
    device: Device,
    /// The store requests polled and not yet planned by the Node host's [`FileOutbox`], oldest
    /// first (the host performs every one, in order).
    #[cfg(feature = "node")]
    store_requests: alloc::collections::VecDeque<StoreRequest>,
    /// The byte strings of the last `pollOutput`, not yet taken.
    bytes: Vec<Vec<u8>>,
    /// The Brotli encoder the app lent, if any.
    brotli: Option<LentEncoder>,
}

#[wasm_bindgen]
impl Core {
    /// `Device::new` with the host's transport. `options`: `{ instance, provisioningToken,
    /// deviceId?, provisioningParameters? (JSON text of an object of strings), transport?
    /// ("websocket", the browser's only one and the default; "tcp" and "tls" in the Node.js
    /// build), tunables? (JSON text of an object of numbers, by `Tunable::name`), now, random
    /// (32 bytes), brotli? (a Brotli encoder the app lends: `{ encode(payload, quality) }`),
    /// origin, nextSeq, reserved, bytes, count, savedState? }`, the last six being what the
    /// store holds.
    #[wasm_bindgen(constructor)]
    pub fn new(options: &JsValue) -> Result<Core, JsError> {
        let text = |name: &str| field(options, name).as_string();
        let number = |name: &str| field(options, name).as_f64().unwrap_or(0.0) as u64;
        let mut config = DeviceConfig::new(
            text("instance").unwrap_or_default(),
            text("provisioningToken").unwrap_or_default(),
        );
        config.transport = match text("transport").as_deref() {
            None | Some("websocket") => Transport::WebSocket,
            Some("tcp") => Transport::Tcp,
            Some("tls") => Transport::Tls,
            Some(other) => {
                return Err(JsError::new(
                    &[
                        "option transport: \"",
                        other,
                        "\" is not tcp, tls or websocket",
                    ]
                    .concat(),
                ));
            }
        };
        config.device_id = text("deviceId")
            .map(|id| DeviceId::parse(&id))
            .transpose()
            .map_err(|e| JsError::new(&["option deviceId: ", &e.text()].concat()))?;
        if let Some(parameters) = text("provisioningParameters") {
            config.provisioning_parameters = string_record(&parameters).ok_or_else(|| {
                JsError::new("option provisioningParameters: must be an object of strings")
            })?;
        }
        if let Some(tunables) = text("tunables") {
            set_tunables(&mut config, &tunables).map_err(|error| config_error(&error))?;
        }
        let brotli = field(options, "brotli");
        let lent_brotli = if brotli.is_undefined() || brotli.is_null() {
            None
        } else if field(&brotli, "encode").is_function() {
            Some(brotli.unchecked_into::<LentEncoder>())
        } else {
            return Err(JsError::new(
                "option brotli: must be an encoder with an encode(payload, quality) method",
            ));
        };
        // Every option is set before the core's checks, so they all see what the app gave.
        config
            .validate_for(TRANSPORTS)
            .map_err(|error| config_error(&error))?;
        let seed: [u8; 32] = bytes_of(&field(options, "random"))
            .try_into()
            .map_err(|_| JsError::new("random must be 32 bytes"))?;
        let meta = OutboxMeta {
            origin: text("origin").unwrap_or_default(),
            next_seq: number("nextSeq"),
            // Absent when the database holds none it can read: the core decides what follows.
            reserved: field(options, "reserved").as_f64().map(|n| n as u64),
            count: number("count"),
            bytes: number("bytes"),
        };
        let saved = field(options, "savedState");
        let saved = saved.is_object().then(|| bytes_of(&saved));
        let device = Device::new(config, number("now"), seed, &meta, saved.as_deref());
        Ok(Core {
            device,
            brotli: lent_brotli,
            #[cfg(feature = "node")]
            store_requests: Default::default(),
            bytes: Vec::new(),
        })
    }

    /// The answer to an `http` output. `retryAfter` is the `Retry-After` header (the only one the
    /// core reads), `undefined` when absent.
    #[wasm_bindgen(js_name = httpResponse)]
    pub fn http_response(
        &mut self,
        now: f64,
        id: f64,
        status: u16,
        #[wasm_bindgen(js_name = retryAfter)] retry_after: Option<String>,
        body: Vec<u8>,
    ) {
        let response = HttpResponse {
            status,
            retry_after,
            body,
        };
        let id = RequestId(id as u64);
        self.input(now, Input::HttpResponse { id, response });
    }

    /// An `http` output failed without an answer.
    #[wasm_bindgen(js_name = httpFailed)]
    pub fn http_failed(&mut self, now: f64, id: f64, error: String) {
        let id = RequestId(id as u64);
        self.input(now, Input::HttpFailed { id, error });
    }

    /// The connection of a `connect` output is open.
    pub fn connected(&mut self, now: f64, conn: f64) {
        let conn = ConnectionId(conn as u64);
        self.input(now, Input::Connected { conn });
    }

    /// Bytes arrived on a connection.
    pub fn received(&mut self, now: f64, conn: f64, bytes: &[u8]) {
        let conn = ConnectionId(conn as u64);
        self.input(now, Input::Received { conn, bytes });
    }

    /// A connection closed or could not be opened.
    pub fn closed(&mut self, now: f64, conn: f64, reason: String) {
        let conn = ConnectionId(conn as u64);
        self.input(now, Input::Closed { conn, reason });
    }

    /// The `append` output of `first..=last` is durable.
    pub fn appended(&mut self, now: f64, first: f64, last: f64) {
        let (first, last) = (first as u64, last as u64);
        self.input(now, Input::Appended { first, last });
    }

    /// The `append` output of `first..=last` failed; nothing of it was stored.
    #[wasm_bindgen(js_name = appendFailed)]
    pub fn append_failed(
        &mut self,
        now: f64,
        first: f64,
        last: f64,
        #[wasm_bindgen(js_name = quotaExceeded)] quota_exceeded: bool,
        error: String,
    ) {
        let (first, last) = (first as u64, last as u64);
        let error = store_error(quota_exceeded, error);
        self.input(now, Input::AppendFailed { first, last, error });
    }

    /// The answer to a `load` output: `records` is an array of `{ seq, data }`, ascending. A
    /// `data` that is not a `Uint8Array` is read as empty, which the core rejects as corrupt.
    pub fn loaded(&mut self, now: f64, records: Array) {
        let records = records
            .iter()
            .map(|record| Record {
                seq: field(&record, "seq").as_f64().unwrap_or(0.0) as u64,
                data: bytes_of(&field(&record, "data")),
            })
            .collect();
        self.input(now, Input::Loaded { records });
    }

    /// A `load` output failed and read nothing.
    #[wasm_bindgen(js_name = loadFailed)]
    pub fn load_failed(
        &mut self,
        now: f64,
        #[wasm_bindgen(js_name = quotaExceeded)] quota_exceeded: bool,
        error: String,
    ) {
        let error = store_error(quota_exceeded, error);
        self.input(now, Input::LoadFailed { error });
    }

    /// A `remove` output of `seqs` (its `bytes`) failed; the core asks again later.
    #[wasm_bindgen(js_name = removeFailed)]
    pub fn remove_failed(
        &mut self,
        now: f64,
        seqs: Vec<f64>,
        bytes: f64,
        #[wasm_bindgen(js_name = quotaExceeded)] quota_exceeded: bool,
        error: String,
    ) {
        let seqs = seqs.into_iter().map(|seq| seq as u64).collect();
        let (bytes, error) = (bytes as u64, store_error(quota_exceeded, error));
        self.input(now, Input::RemoveFailed { seqs, bytes, error });
    }

    /// The `reserve` output up to `below` is durable.
    pub fn reserved(&mut self, now: f64, below: f64) {
        self.input(
            now,
            Input::Reserved {
                below: below as u64,
            },
        );
    }

    /// A `reserve` output failed; the core holds new appends and asks again later.
    #[wasm_bindgen(js_name = reserveFailed)]
    pub fn reserve_failed(
        &mut self,
        now: f64,
        below: f64,
        #[wasm_bindgen(js_name = quotaExceeded)] quota_exceeded: bool,
        error: String,
    ) {
        let (below, error) = (below as u64, store_error(quota_exceeded, error));
        self.input(now, Input::ReserveFailed { below, error });
    }

    /// The `saveState` output that carried `reportedRevision` is durable.
    #[wasm_bindgen(js_name = stateSaved)]
    pub fn state_saved(
        &mut self,
        now: f64,
        #[wasm_bindgen(js_name = reportedRevision)] reported_revision: f64,
    ) {
        self.input(
            now,
            Input::StateSaved {
                reported_revision: reported_revision as u64,
            },
        );
    }

    /// A `saveState` output failed; the core saves its state again later.
    #[wasm_bindgen(js_name = saveStateFailed)]
    pub fn save_state_failed(
        &mut self,
        now: f64,
        #[wasm_bindgen(js_name = quotaExceeded)] quota_exceeded: bool,
        error: String,
    ) {
        let error = store_error(quota_exceeded, error);
        self.input(now, Input::SaveStateFailed { error });
    }

    /// The browser's network came back (`online`): if the app does not hold the device
    /// offline, reconnect without waiting for the backoff delay.
    #[wasm_bindgen(js_name = networkAvailable)]
    pub fn network_available(&mut self, now: f64) {
        self.input(now, Input::NetworkAvailable);
    }

    /// The browser's network is gone (`offline`): close the connection, start nothing until
    /// it is back.
    #[wasm_bindgen(js_name = networkLost)]
    pub fn network_lost(&mut self, now: f64) {
        self.input(now, Input::NetworkLost);
    }

    /// The app holds the device offline (`true`) or lets the network decide (`false`).
    #[wasm_bindgen(js_name = appOffline)]
    pub fn app_offline(&mut self, now: f64, offline: bool) {
        self.input(now, Input::AppOffline(offline));
    }

    /// The deadline of the last `timeout` output was reached (an early call does nothing).
    pub fn timeout(&mut self, now: f64) {
        self.device.handle_timeout(now as u64);
    }

    fn input(&mut self, now: f64, input: Input<'_>) {
        self.device.handle_input(now as u64, input);
    }

    /// Refuses a compression (numbered as `send` takes it) the device cannot honour: without
    /// a Brotli encoder, the core's `compressionUnavailable` error.
    #[wasm_bindgen(js_name = checkCompression)]
    pub fn check_compression(&self, compression: u8) -> Result<(), JsValue> {
        let stream = stream_options(None, None, None, compression);
        self.device
            .check_stream(&stream, self.brotli.is_some())
            .map_err(refused)
    }

    /// Queues a message; returns its sequence number (durable once its `append` is answered
    /// with `appended`). `compression`: 0 none, 1 fastest, 2 smallest size (refused with
    /// `compressionUnavailable` when the device has no Brotli encoder).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        now: f64,
        payload: Vec<u8>,
        #[wasm_bindgen(js_name = streamGroup)] stream_group: Option<String>,
        stream: Option<String>,
        #[wasm_bindgen(js_name = siteId)] site_id: Option<String>,
        compression: u8,
        #[wasm_bindgen(js_name = batchId)] batch_id: Option<String>,
        #[wasm_bindgen(js_name = messageId)] message_id: Option<String>,
        #[wasm_bindgen(js_name = batchSliceId)] batch_slice_id: Option<String>,
        #[wasm_bindgen(js_name = chunkId)] chunk_id: Option<String>,
    ) -> Result<f64, JsValue> {
        let stream = stream_options(stream_group, stream, site_id, compression);
        let options = MessageOptions {
            batch_id,
            message_id,
            batch_slice_id,
            chunk_id,
        };
        let now = now as u64;
        let mut lent = self.brotli.as_ref();
        let sent = self
            .device
            .send_with_encoder(now, &stream, &options, payload, lent.as_mut());
        queued(sent)
    }

    /// Queues the marker that closes batch `batchId`; returns its sequence number.
    #[wasm_bindgen(js_name = enqueueBatchCompletion)]
    pub fn enqueue_batch_completion(
        &mut self,
        now: f64,
        #[wasm_bindgen(js_name = streamGroup)] stream_group: Option<String>,
        stream: Option<String>,
        #[wasm_bindgen(js_name = siteId)] site_id: Option<String>,
        #[wasm_bindgen(js_name = batchId)] batch_id: &str,
    ) -> Result<f64, JsValue> {
        let stream = stream_options(stream_group, stream, site_id, 0);
        queued(
            self.device
                .enqueue_batch_completion(now as u64, &stream, batch_id),
        )
    }

    /// Queues the marker that closes message `messageId` of batch `batchId`.
    #[wasm_bindgen(js_name = enqueueMessageCompletion)]
    pub fn enqueue_message_completion(
        &mut self,
        now: f64,
        #[wasm_bindgen(js_name = streamGroup)] stream_group: Option<String>,
        stream: Option<String>,
        #[wasm_bindgen(js_name = siteId)] site_id: Option<String>,
        #[wasm_bindgen(js_name = batchId)] batch_id: &str,
        #[wasm_bindgen(js_name = messageId)] message_id: &str,
    ) -> Result<f64, JsValue> {
        let stream = stream_options(stream_group, stream, site_id, 0);
        queued(
            self.device
                .enqueue_message_completion(now as u64, &stream, batch_id, message_id),
        )
    }

    /// Merges the JSON text `patch` (an object; merge-patch semantics, `null` deletes) into the
    /// reported properties; returns the update's revision (a `reportedPropertiesStored` event
    /// says when it is durable).
    #[wasm_bindgen(js_name = updateReportedProperties)]
    pub fn update_reported_properties(&mut self, now: f64, patch: &str) -> Result<f64, JsValue> {
        parse_reported_patch(patch.as_bytes())
            .and_then(|patch| self.device.update_reported_properties(now as u64, patch))
            .map(|revision| revision as f64)
            .map_err(|e| coded_error(e.code(), &e.text()))
    }

    /// Disconnects and stops all activity; queued messages stay in the store.
    pub fn stop(&mut self, now: f64) {
        self.device.stop(now as u64);
    }

    /// The desired properties as JSON text (the saved copy until the first fetch).
    #[wasm_bindgen(js_name = desiredProperties)]
    pub fn desired_properties(&self) -> String {
        self.device.desired_properties().0.to_json()
    }

    /// The desired properties' version, `undefined` until the twin was fetched once.
    #[wasm_bindgen(js_name = desiredVersion)]
    pub fn desired_version(&self) -> Option<f64> {
        self.device.desired_properties().1.map(|v| v as f64)
    }

    /// The workspace id, once registered.
    #[wasm_bindgen(js_name = workspaceId)]
    pub fn workspace_id(&self) -> Option<String> {
        self.device.workspace_id().map(str::to_owned)
    }

    /// The Device ID, once registered.
    #[wasm_bindgen(js_name = deviceId)]
    pub fn device_id(&self) -> Option<String> {
        self.device.device_id().map(str::to_owned)
    }

    /// The JSON text of `{ pendingCount, pendingBytes, oldestEnqueuedAt, windowRecords,
    /// connectionState, offline, reportedPending }`.
    pub fn stats(&self) -> String {
        let stats = self.device.stats();
        let mut json = Json::object();
        json.number("pendingCount", stats.pending_count);
        json.number("pendingBytes", stats.pending_bytes);
        json.optional_number("oldestEnqueuedAt", stats.oldest_enqueued_at);
        json.number("windowRecords", stats.window_records as u64);
        json.text("connectionState", stats.connection_state.as_str());
        json.flag("offline", stats.offline);
        json.flag("reportedPending", self.device.reported_properties_pending());
        json.end()
    }

    /// The next thing for the host to do, as the JSON text of an object whose `kind` names it:
    /// `http` {id, method, url, headers: [name, value][], deadline, maxResponseBytes} (its body
    /// follows), `connect` {conn, url} for WebSocket or {conn, host, port, tls} for TCP and TLS,
    /// `transmit` {conn} (its bytes follow), `close` {conn}, the store requests (see
    /// [`store_request_json`]), `event` {level: `Event::level`, event: `Event::to_value`,
    /// payload: true when the event
    /// has one (it follows), settles?: the sends it settles (see [`write_settlement`])}, and
    /// last `timeout` {deadline: number | null}.
    ///
    /// Byte strings stay out of the text: each one it announces is taken with
    /// [`Core::take_bytes`], in the order listed, before the next `pollOutput`.
    ///
    /// Why text: one string and one `JSON.parse` cost the host less than an object built
    /// across the boundary a property at a time (`Reflect.set` was 6.6% of the Node.js drain's
    /// CPU), and the text is written by the core's own JSON module.
    #[wasm_bindgen(js_name = pollOutput)]
    pub fn poll_output(&mut self) -> String {
        self.bytes.clear();
        let mut json = Json::object();
        match self.device.poll_output() {
            Output::Http(request) => {
                json.text("kind", "http");
                json.number("id", request.id.0);
                json.text("method", request.method.as_str());
                json.text("url", &request.url);
                let out = json.key("headers");
                out.push('[');
                for (index, (name, value)) in request.headers.iter().enumerate() {
                    out.push_str(if index == 0 { "[" } else { ",[" });
                    json::write_string(out, name);
                    out.push(',');
                    json::write_string(out, value);
                    out.push(']');
                }
                out.push(']');
                json.number("deadline", request.deadline);
                json.number("maxResponseBytes", u64::from(request.max_response_bytes));
                self.bytes.push(request.body);
            }
            Output::Connect { conn, endpoint } => {
                json.text("kind", "connect");
                json.number("conn", conn.0);
                let (host, port, tls) = match endpoint {
                    Endpoint::WebSocket { url } => {
                        json.text("url", &url);
                        return json.end();
                    }
                    Endpoint::Tcp { host, port } => (host, port, false),
                    Endpoint::Tls { host, port } => (host, port, true),
                };
                json.text("host", &host);
                json.number("port", u64::from(port));
                json.flag("tls", tls);
            }
            Output::Transmit { conn, bytes } => {
                json.text("kind", "transmit");
                json.number("conn", conn.0);
                self.bytes.push(bytes);
            }
            Output::Close { conn } => {
                json.text("kind", "close");
                json.number("conn", conn.0);
            }
            Output::Store(request) => {
                write_store_request(&mut json, &request);
                // The Node.js build's store plans its files from the request itself
                // ([`FileOutbox`]); the browser's store writes the bytes it is handed.
                #[cfg(feature = "node")]
                self.store_requests.push_back(request);
                #[cfg(not(feature = "node"))]
                match request {
                    StoreRequest::Append { records } => {
                        self.bytes
                            .extend(records.into_iter().map(|record| record.data));
                    }
                    StoreRequest::SaveState { state, .. } => self.bytes.push(state),
                    _ => {}
                }
            }
            // Events cross in the core's one vocabulary (`Event::to_value`), and the byte
            // string kept out of it follows.
            Output::Event(event) => {
                json.text("kind", "event");
                json.text("level", event.level().name());
                event.to_value().write_to(json.key("event"));
                if let Some(settlement) = event.send_settlement() {
                    write_settlement(json.key("settles"), settlement);
                }
                if let Some(payload) = event.payload() {
                    json.flag("payload", true);
                    self.bytes.push(payload.to_vec());
                }
            }
            Output::Timeout(deadline) => {
                json.text("kind", "timeout");
                json.optional_number("deadline", deadline);
            }
        }
        json.end()
    }

    /// The next byte string the last `pollOutput` announced (see there), as a fresh
    /// `Uint8Array`; `undefined` when none is left.
    #[wasm_bindgen(js_name = takeBytes)]
    pub fn take_bytes(&mut self) -> Option<Vec<u8>> {
        // A few per output, taken in order: removing the first costs next to nothing.
        (!self.bytes.is_empty()).then(|| self.bytes.remove(0))
    }
}

/// The core's refusal of an option, naming it as the JavaScript API spells it.
fn config_error(error: &ConfigError) -> JsError {
    let tunable;
    let option = match error.option {
        ConfigOption::InstanceUrl => "instance",
        ConfigOption::ProvisioningToken => "provisioningToken",
        ConfigOption::ProvisioningParameters => "provisioningParameters",
        ConfigOption::Transport => "transport",
        ConfigOption::Tunables => "tunables",
        ConfigOption::Tunable(which) => {
            tunable = ["tunables.", which.name()].concat();
            &tunable
        }
    };
    JsError::new(&["option ", option, ": ", &error.reason].concat())
}

/// Sets the tunables of the JSON text of an object of numbers (the core names and checks
/// them).
fn set_tunables(config: &mut DeviceConfig, text: &str) -> Result<(), ConfigError> {
    let not_numbers = || ConfigError {
        option: ConfigOption::Tunables,
        reason: "must be an object of numbers".into(),
    };
    let value = Value::parse(text.as_bytes()).map_err(|_| not_numbers())?;
    for (name, value) in value.as_object().ok_or_else(not_numbers)?.iter() {
        let whole = value.as_u64().ok_or_else(|| ConfigError {
            option: Tunable::from_name(name).map_or(ConfigOption::Tunables, ConfigOption::Tunable),
            reason: [&value.to_json(), " is not a whole number"].concat(),
        })?;
        config.set_tunable_named(name, whole, |tunable| tunable.name().into())?;
    }
    Ok(())
}

/// The transports this build's host opens: WebSocket in browsers; TCP and TLS too on Node.js.
const TRANSPORTS: &[Transport] = if cfg!(feature = "node") {
    &[Transport::Tcp, Transport::Tls, Transport::WebSocket]
} else {
    &[Transport::WebSocket]
};

/// The JSON text of an object, written member by member: smaller in the module and quicker
/// than a [`Value`] built to be written.
struct Json(String);

impl Json {
    fn object() -> Json {
        Json(String::from("{"))
    }

    /// Starts the member `name` (the binding's names need no escaping); its value goes next.
    fn key(&mut self, name: &str) -> &mut String {
        let out = &mut self.0;
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        out
    }

    fn number(&mut self, name: &str, value: u64) {
        value.put(self.key(name));
    }

    fn optional_number(&mut self, name: &str, value: Option<u64>) {
        match value {
            Some(value) => self.number(name, value),
            None => self.key(name).push_str("null"),
        }
    }

    fn text(&mut self, name: &str, value: &str) {
        json::write_string(self.key(name), value);
    }

    fn flag(&mut self, name: &str, value: bool) {
        self.key(name)
            .push_str(if value { "true" } else { "false" });
    }

    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// The sends an event settles: {first, last, error?}, `error` being the store's reason
/// ({code, message}) when the messages were not stored.
fn write_settlement(out: &mut String, settlement: SendSettlement) {
    let seqs = settlement.seqs();
    let mut json = Json::object();
    json.number("first", *seqs.start());
    json.number("last", *seqs.end());
    if let SendSettlement::NotStored { error, .. } = settlement {
        let mut reason = Json::object();
        reason.text("code", error.code());
        reason.text("message", &error.text());
        json.key("error").push_str(&reason.end());
    }
    out.push_str(&json.end());
}

/// A store request as `pollOutput` hands it to the host, without its bytes, as JSON text:
/// `append` {records: {seq}[]} (each record's bytes follow), `load` {from, maxCount, maxBytes},
/// `remove` {seqs (ascending), bytes}, `saveState` {reportedRevision} (the state follows),
/// `reserve` {below, origin?}; each with `durable` (see [`StoreRequest::must_be_durable`]).
/// Public for the browser tests of the store, which check it against the core's `MemoryStore`.
#[doc(hidden)]
pub fn store_request_json(request: &StoreRequest) -> String {
    let mut json = Json::object();
    write_store_request(&mut json, request);
    json.end()
}

fn write_store_request(json: &mut Json, request: &StoreRequest) {
    match request {
        StoreRequest::Append { records } => {
            json.text("kind", "append");
            let out = json.key("records");
            out.push('[');
            for (index, record) in records.iter().enumerate() {
                out.push_str(if index == 0 {
                    "{\"seq\":"
                } else {
                    ",{\"seq\":"
                });
                record.seq.put(out);
                out.push('}');
            }
            out.push(']');
        }
        StoreRequest::Load {
            from,
            max_count,
            max_bytes,
        } => {
            json.text("kind", "load");
            json.number("from", *from);
            json.number("maxCount", *max_count as u64);
            json.number("maxBytes", *max_bytes as u64);
        }
        StoreRequest::Remove { seqs, bytes } => {
            json.text("kind", "remove");
            let out = json.key("seqs");
            out.push('[');
            for (index, seq) in seqs.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                seq.put(out);
            }
            out.push(']');
            json.number("bytes", *bytes);
        }
        StoreRequest::SaveState {
            reported_revision, ..
        } => {
            json.text("kind", "saveState");
            json.number("reportedRevision", *reported_revision);
        }
        StoreRequest::Reserve { below, origin } => {
            json.text("kind", "reserve");
            json.number("below", *below);
            if let Some(origin) = origin {
                json.text("origin", origin);
            }
        }
    }
    // Whether it must be on disk before its answer is the core's to say.
    json.flag("durable", request.must_be_durable());
}

/// A command's sequence number for JavaScript, or the core's refusal as an `Error`.
fn queued(result: Result<Seq, SendError>) -> Result<f64, JsValue> {
    result.map(|seq| seq as f64).map_err(refused)
}

/// The error of a refused send. Not inlined: three calls share it (a few hundred bytes each).
#[inline(never)]
fn refused(error: SendError) -> JsValue {
    coded_error(error.code(), &error.text())
}

/// An `Error` whose `name` is the API's error code (the host makes it a `VdevError`).
fn coded_error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    error.set_name(code);
    error.into()
}

fn stream_options(
    stream_group: Option<String>,
    stream: Option<String>,
    site_id: Option<String>,
    compression: u8,
) -> StreamOptions {
    StreamOptions {
        stream_group,
        stream,
        site_id,
        compression: match compression {
            1 => Compression::Fastest,
            2 => Compression::SmallestSize,
            _ => Compression::None,
        },
    }
}

fn store_error(quota_exceeded: bool, error: String) -> StoreError {
    if quota_exceeded {
        StoreError::QuotaExceeded
    } else {
        StoreError::Failed(error)
    }
}

/// The pairs of a JSON object whose values are all strings.
fn string_record(text: &str) -> Option<Vec<(String, String)>> {
    let value = Value::parse(text.as_bytes()).ok()?;
    value
        .as_object()?
        .iter()
        .map(|(key, value)| Some((key.to_owned(), value.as_str()?.to_owned())))
        .collect()
}

#[wasm_bindgen]
extern "C" {
    /// A Brotli encoder the app lends (the `brotli` option), as `loadBrotli()` of
    /// `vdev-web/brotli` gives.
    #[derive(Debug)]
    type LentEncoder;

    /// `encoder.encode(payload, quality)`.
    #[wasm_bindgen(method, catch)]
    fn encode(this: &LentEncoder, payload: &Uint8Array, quality: u32) -> Result<JsValue, JsValue>;
}

impl BrotliEncoder for &LentEncoder {
    /// An encoder that throws (or answers what is not bytes) leaves the payload as it is.
    fn encode(&mut self, payload: &[u8], quality: u32) -> Option<Vec<u8>> {
        // A copy the encoder owns, not a view of this module's memory: an encoder that allocates
        // here (or calls back into the device) could grow the memory and empty a view, and an
        // empty payload encodes to a few bytes the core would keep as "smaller".
        let payload = Uint8Array::from(payload);
        let encoded = LentEncoder::encode(self, &payload, quality).ok()?;
        encoded.dyn_ref::<Uint8Array>().map(Uint8Array::to_vec)
    }
}

/// `object[name]`; `undefined` when it cannot be read.
fn field(object: &JsValue, name: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(name)).unwrap_or_default()
}

/// The bytes of a `Uint8Array` (empty for anything else: the caller checks what it needs).
fn bytes_of(value: &JsValue) -> Vec<u8> {
    value
        .dyn_ref::<Uint8Array>()
        .map(Uint8Array::to_vec)
        .unwrap_or_default()
}
