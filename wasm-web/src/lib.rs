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
//! - `pollOutput()` returns one plain object per output, `kind` naming it; the host calls it
//!   until `kind === "timeout"`.
//!
//! Numbers (ids, sequence numbers, times) cross as JavaScript numbers (`f64`): they all stay far
//! below 2^53. JSON documents cross as text (`JSON.parse` / `JSON.stringify` on the JS side), so
//! no JSON converter is compiled into the module.

#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "node")]
mod node;
#[cfg(feature = "node")]
pub use node::FileOutbox;

use js_sys::{Array, Object, Reflect, Uint8Array};
use vdev_core::json::Value;
use vdev_core::{
    Compression, ConfigOption, ConnectionId, Device, DeviceConfig, DeviceId, Endpoint,
    HttpResponse, Input, MessageOptions, OutboxMeta, Output, Reason, Record, RequestId, SendError,
    SendSettlement, Seq, StoreError, StoreRequest, StreamOptions, Transport, parse_reported_patch,
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
    store_requests: std::collections::VecDeque<StoreRequest>,
}

#[wasm_bindgen]
impl Core {
    /// `Device::new` with the host's transport. `options`: `{ instance, provisioningToken,
    /// deviceId?, provisioningParameters? (JSON text of an object of strings), transport?
    /// ("websocket", the browser's only one and the default; "tcp" and "tls" in the Node.js
    /// build), now, random (32 bytes), origin, nextSeq, reserved, bytes, count, savedState? }`,
    /// the last six being what the store holds.
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
                return Err(JsError::new(&format!(
                    "option transport: \"{other}\" is not tcp, tls or websocket"
                )));
            }
        };
        config.device_id = text("deviceId")
            .map(|id| DeviceId::parse(&id))
            .transpose()
            .map_err(|e| JsError::new(&format!("option deviceId: {e}")))?;
        if let Some(parameters) = text("provisioningParameters") {
            config.provisioning_parameters = string_record(&parameters).ok_or_else(|| {
                JsError::new("option provisioningParameters: must be an object of strings")
            })?;
        }
        // Every option is set before the core's checks, so they all see what the app gave.
        config.validate_for(TRANSPORTS).map_err(|error| {
            let option = match error.option {
                ConfigOption::InstanceUrl => "instance",
                ConfigOption::ProvisioningToken => "provisioningToken",
                // Not options here yet: the core's defaults are valid.
                ConfigOption::ProvisioningPollInterval => "provisioningPollIntervalMs",
                ConfigOption::HttpTimeout => "httpTimeoutMs",
                ConfigOption::RetryInitial => "retryInitialMs",
                ConfigOption::RetryMax => "retryMaxMs",
                ConfigOption::ProvisioningParameters => "provisioningParameters",
                ConfigOption::Transport => "transport",
            };
            JsError::new(&format!("option {option}: {}", error.reason))
        })?;
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
            #[cfg(feature = "node")]
            store_requests: Default::default(),
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

    /// Queues a message; returns its sequence number (durable once its `append` is answered
    /// with `appended`). `compression`: 0 none, 1 fastest, 2 smallest size (a build without
    /// Brotli sends payloads as they are).
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
        queued(self.device.send(now as u64, &stream, &options, payload))
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
            .map_err(|e| coded_error(e.code(), &e.to_string()))
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

    /// `{ pendingCount, pendingBytes, oldestEnqueuedAt, windowRecords, connectionState, offline }`.
    pub fn stats(&self) -> JsValue {
        let stats = self.device.stats();
        object(&[
            ("pendingCount", number(stats.pending_count)),
            ("pendingBytes", number(stats.pending_bytes)),
            (
                "oldestEnqueuedAt",
                optional_number(stats.oldest_enqueued_at),
            ),
            ("windowRecords", number(stats.window_records as u64)),
            ("connectionState", stats.connection_state.as_str().into()),
            ("offline", stats.offline.into()),
        ])
    }

    /// The next thing for the host to do, as a plain object whose `kind` names it:
    /// `http` {id, method, url, headers: [name, value][], body, deadline},
    /// `connect` {conn, url} (`url` undefined for TCP, which a browser cannot open),
    /// `transmit` {conn, bytes}, `close` {conn},
    /// the store requests (see [`store_request_to_js`]),
    /// `event` {event: the JSON text of `Event::to_value`, payload: `Event::payload` or
    /// undefined, settles: the sends it settles (see [`settlement_to_js`]) or undefined}, and last `timeout` {deadline: number | null}.
    #[wasm_bindgen(js_name = pollOutput)]
    pub fn poll_output(&mut self) -> JsValue {
        match self.device.poll_output() {
            Output::Http(request) => {
                let headers: Array = request
                    .headers
                    .into_iter()
                    .map(|(name, value)| Array::of2(&name.into(), &value.into()))
                    .collect();
                object(&[
                    ("kind", "http".into()),
                    ("id", number(request.id.0)),
                    ("method", request.method.as_str().into()),
                    ("url", request.url.into()),
                    ("headers", headers.into()),
                    ("body", bytes(&request.body)),
                    ("deadline", number(request.deadline)),
                    (
                        "maxResponseBytes",
                        number(u64::from(request.max_response_bytes)),
                    ),
                ])
            }
            Output::Connect { conn, endpoint } => connect_to_js(conn, endpoint),
            Output::Transmit { conn, bytes: data } => object(&[
                ("kind", "transmit".into()),
                ("conn", number(conn.0)),
                ("bytes", bytes(&data)),
            ]),
            Output::Close { conn } => object(&[("kind", "close".into()), ("conn", number(conn.0))]),
            Output::Store(request) => {
                let js = store_request_to_js(&request);
                #[cfg(feature = "node")]
                self.store_requests.push_back(request);
                js
            }
            // Events cross in the core's one vocabulary: its JSON text (the host parses it)
            // and the byte-string field kept out of it.
            Output::Event(event) => object(&[
                ("kind", "event".into()),
                ("event", event.to_value().to_json().into()),
                ("payload", event.payload().map_or(JsValue::UNDEFINED, bytes)),
                (
                    "settles",
                    event
                        .send_settlement()
                        .map_or(JsValue::UNDEFINED, settlement_to_js),
                ),
            ]),
            Output::Timeout(deadline) => object(&[
                ("kind", "timeout".into()),
                ("deadline", optional_number(deadline)),
            ]),
        }
    }
}

/// The transports this build's host opens: WebSocket in browsers; TCP and TLS too on Node.js.
const TRANSPORTS: &[Transport] = if cfg!(feature = "node") {
    &[Transport::Tcp, Transport::Tls, Transport::WebSocket]
} else {
    &[Transport::WebSocket]
};

/// A `connect` output: {conn, url} for WebSocket; {conn, host, port, tls} for TCP and TLS,
/// which only the Node.js build's core asks for.
fn connect_to_js(conn: ConnectionId, endpoint: Endpoint) -> JsValue {
    let mut fields = vec![("kind", "connect".into()), ("conn", number(conn.0))];
    let (host, port, tls) = match endpoint {
        Endpoint::WebSocket { url } => {
            fields.push(("url", url.into()));
            return object(&fields);
        }
        Endpoint::Tcp { host, port } => (host, port, false),
        Endpoint::Tls { host, port } => (host, port, true),
    };
    fields.extend([
        ("host", host.into()),
        ("port", number(u64::from(port))),
        ("tls", tls.into()),
    ]);
    object(&fields)
}

/// The sends an event settles, as `pollOutput` hands them to the host: {first, last, error?},
/// `error` being the store's reason ({code, message}) when the messages were not stored.
fn settlement_to_js(settlement: SendSettlement) -> JsValue {
    let seqs = settlement.seqs();
    let error = match settlement {
        SendSettlement::Stored { .. } => JsValue::UNDEFINED,
        SendSettlement::NotStored { error, .. } => object(&[
            ("code", error.code().into()),
            ("message", error.to_string().into()),
        ]),
    };
    object(&[
        ("first", number(*seqs.start())),
        ("last", number(*seqs.end())),
        ("error", error),
    ])
}

/// A store request as `pollOutput` hands it to the host: `append` {records: {seq, data}[]},
/// `load` {from, maxCount, maxBytes}, `remove` {seqs (ascending), bytes}, `saveState` {state,
/// reportedRevision},
/// `reserve` {below, origin?}; each with `durable` (see [`StoreRequest::must_be_durable`]).
/// Public for the browser tests of the store, which check it against the core's `MemoryStore`.
#[doc(hidden)]
pub fn store_request_to_js(request: &StoreRequest) -> JsValue {
    let js = store_request_fields(request);
    // Whether it must be on disk before its answer is the core's to say.
    let _ = Reflect::set(&js, &"durable".into(), &request.must_be_durable().into());
    js
}

fn store_request_fields(request: &StoreRequest) -> JsValue {
    match request {
        StoreRequest::Append { records } => {
            let records: Array = records
                .iter()
                .map(|record| object(&[("seq", number(record.seq)), ("data", bytes(&record.data))]))
                .collect();
            object(&[("kind", "append".into()), ("records", records.into())])
        }
        StoreRequest::Load {
            from,
            max_count,
            max_bytes,
        } => object(&[
            ("kind", "load".into()),
            ("from", number(*from)),
            ("maxCount", number(*max_count as u64)),
            ("maxBytes", number(*max_bytes as u64)),
        ]),
        StoreRequest::Remove { seqs, bytes } => {
            let seqs: Array = seqs.iter().map(|seq| number(*seq)).collect();
            object(&[
                ("kind", "remove".into()),
                ("seqs", seqs.into()),
                ("bytes", number(*bytes)),
            ])
        }
        StoreRequest::SaveState {
            state,
            reported_revision,
        } => object(&[
            ("kind", "saveState".into()),
            ("state", self::bytes(state)),
            ("reportedRevision", number(*reported_revision)),
        ]),
        StoreRequest::Reserve { below, origin } => {
            let mut fields = vec![("kind", "reserve".into()), ("below", number(*below))];
            if let Some(origin) = origin {
                fields.push(("origin", origin.as_str().into()));
            }
            object(&fields)
        }
    }
}

/// A command's sequence number for JavaScript, or the core's refusal as an `Error`.
fn queued(result: Result<Seq, SendError>) -> Result<f64, JsValue> {
    result
        .map(|seq| seq as f64)
        .map_err(|e| coded_error(e.code(), &e.to_string()))
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

/// A plain object with these properties.
fn object(properties: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (name, value) in properties {
        // Setting a property on a fresh plain object cannot throw.
        let _ = Reflect::set(&object, &JsValue::from_str(name), value);
    }
    object.into()
}

fn number(value: u64) -> JsValue {
    JsValue::from_f64(value as f64)
}

fn optional_number(value: Option<u64>) -> JsValue {
    value.map_or(JsValue::NULL, number)
}

fn bytes(data: &[u8]) -> JsValue {
    Uint8Array::from(data).into()
}
