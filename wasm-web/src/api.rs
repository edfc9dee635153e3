//! The JavaScript API: `DeviceClient` and `StreamSender`, camelCase, Promises, TypeScript types.
//!
//! The option objects and results are typed by the TypeScript section below; the Rust side
//! reads them with `Reflect` and reports a wrong type as a clear error. Calls that need the
//! device become [`Command`]s for the driver task; getters read its last [`Snapshot`].

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Reflect, Uint8Array};
use vdev_core::{Compression, DeviceConfig, DeviceId, MessageOptions, StreamOptions, Transport};
use wasm_bindgen::prelude::*;

use crate::channel::oneshot;
use crate::driver::{Callbacks, Command, Enqueue, Snapshot, json_to_js, object};
use crate::error::ClientError;
use crate::runtime::{check_url_allowed, promise};
use crate::tabs::Commands;

#[wasm_bindgen(typescript_custom_section)]
const TYPESCRIPT: &str = r#"
/** Where the device connects, where it keeps its queue, and whom it tells what happens. */
export interface StartOptions {
  /** The Platform instance: a host name (`https://` is implied) or a URL; `http://` only for loopback hosts. */
  instance: string;
  /** The Provisioning Token. */
  provisioningToken: string;
  /** The Device ID to ask for; the Platform or the technician decides when absent. */
  deviceId?: string;
  /** Name of the IndexedDB database holding this device's queue, identity and twin. */
  database: string;
  /** Shown to the technician who approves the provisioning operation. */
  provisioningParameters?: Record<string, string>;
  /** A provisioning operation waits for approval: show its verification code. */
  onProvisioningOperation?: (operation: ProvisioningOperation) => void;
  /** Provisioning stopped for good (cancelled, token refused); messages stay queued. */
  onProvisioningFailed?: (error: string) => void;
  /** The desired properties changed (also called once after the first fetch). */
  onDesiredPropertiesChanged?: (properties: Record<string, unknown>, version: number) => void;
  /** The connection state changed. */
  onConnectionStateChanged?: (state: ConnectionState) => void;
  /** A message was delivered to the Platform, or will never be. */
  onMessageOutcome?: (outcome: MessageOutcome) => void;
  /** A cloud-to-device message arrived. */
  onCloudToDeviceMessage?: (message: CloudToDeviceMessage) => void;
  /**
   * The device went offline (`true`: the browser's `offline` event or `setOffline(true)`) or
   * back online (`false`). Messages sent while offline are stored and wait.
   */
  onOfflineChanged?: (offline: boolean) => void;
}

/** A provisioning operation waiting for a technician. */
export interface ProvisioningOperation {
  id: string;
  verificationCode: string;
  /** Milliseconds since the Unix epoch. */
  expiresAt: number;
}

export type ConnectionState =
  | "provisioning"
  | "disconnected"
  | "connecting"
  | "connected"
  | "failed"
  | "stopped";

/** The final outcome of a stored message, by its sequence number. */
export type MessageOutcome =
  | { sequence: number; status: "delivered" }
  | { sequence: number; status: "rejected"; reason: string };

export interface CloudToDeviceMessage {
  /** The property bag of the message's topic, URL-encoded. */
  properties: string;
  payload: Uint8Array;
}

export type Compression = "none" | "fastest" | "smallestSize";

export interface StreamSenderOptions {
  streamGroup?: string;
  stream?: string;
  siteId?: string;
  compression?: Compression;
}

export interface MessageOptions {
  batchId?: string;
  messageId?: string;
  batchSliceId?: string;
  chunkId?: string;
}

export interface Statistics {
  /** Messages stored and not yet delivered or rejected. */
  pendingCount: number;
  /** Their bytes in the store. */
  pendingBytes: number;
  /** When the oldest of them was enqueued (ms since the epoch), if known. */
  oldestEnqueuedAt: number | null;
  /** Records held in memory. */
  windowRecords: number;
  connectionState: ConnectionState;
  /** Offline: the browser or `setOffline(true)` says there is no network; nothing is sent. */
  offline: boolean;
  /**
   * `"owner"`: this client drives the device; `"follower"`: another client of the same
   * database (another tab) does, and this one forwards its calls to it.
   */
  role: "owner" | "follower";
}

export interface DesiredProperties {
  properties: Record<string, unknown>;
  /** Null until the device has fetched its twin once. */
  version: number | null;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// `StartOptions` in the typings.
    #[wasm_bindgen(typescript_type = "StartOptions")]
    pub type StartOptions;
    /// `StreamSenderOptions` in the typings.
    #[wasm_bindgen(typescript_type = "StreamSenderOptions")]
    pub type StreamSenderOptions;
    /// `MessageOptions` in the typings.
    #[wasm_bindgen(typescript_type = "MessageOptions")]
    pub type SendOptions;
    /// A message payload: bytes, or text sent as UTF-8.
    #[wasm_bindgen(typescript_type = "Uint8Array | string")]
    pub type Payload;
    /// A reported-properties patch.
    #[wasm_bindgen(typescript_type = "Record<string, unknown>")]
    pub type PropertiesPatch;
    /// Resolves to the started client.
    #[wasm_bindgen(typescript_type = "Promise<DeviceClient>")]
    pub type StartPromise;
    /// Resolves to a message's sequence number.
    #[wasm_bindgen(typescript_type = "Promise<number>")]
    pub type SequencePromise;
    /// Resolves with nothing.
    #[wasm_bindgen(typescript_type = "Promise<void>")]
    pub type DonePromise;
    /// `Statistics` in the typings.
    #[wasm_bindgen(typescript_type = "Statistics")]
    pub type Statistics;
    /// `DesiredProperties` in the typings.
    #[wasm_bindgen(typescript_type = "DesiredProperties")]
    pub type DesiredProperties;
}

/// A device: provisions itself, keeps a durable queue in IndexedDB and forwards it in order.
#[wasm_bindgen]
#[derive(Debug)]
pub struct DeviceClient {
    commands: Commands,
    shared: Rc<RefCell<Snapshot>>,
}

#[wasm_bindgen]
impl DeviceClient {
    /// Opens the database, resumes what it holds (identity, tokens, queue, twin) and starts
    /// the device. Resolves as soon as it runs; provisioning and connecting go on after that.
    // A plain function returning a promise, not an `async fn`: wasm-bindgen would compile its
    // promise machinery once more for it (`runtime::promise` has one for all).
    #[wasm_bindgen(js_name = start)]
    pub fn start_promise(options: StartOptions) -> StartPromise {
        promise(async move {
            match Self::start_inner(&options).await {
                Ok(client) => Ok(client.into()),
                Err(error) => Err(js_error(error).into()),
            }
        })
        .unchecked_into()
    }

    async fn start_inner(options: &StartOptions) -> Result<DeviceClient, ClientError> {
        let (config, database, callbacks) = read_start_options(options)?;
        let (commands, shared) = crate::tabs::start(config, database, callbacks).await?;
        Ok(DeviceClient { commands, shared })
    }

    /// A sender for one stream (the workspace's defaults when the names are absent).
    #[wasm_bindgen(js_name = createStreamSender)]
    pub fn create_stream_sender(
        &self,
        options: Option<StreamSenderOptions>,
    ) -> Result<StreamSender, JsError> {
        let stream = read_stream_options(options.as_deref())?;
        Ok(StreamSender {
            commands: self.commands.clone(),
            stream,
        })
    }

    /// Messages stored and not yet delivered or rejected.
    #[wasm_bindgen(js_name = pendingMessagesCount)]
    pub fn pending_messages_count(&self) -> f64 {
        self.shared.borrow().stats.pending_count as f64
    }

    /// Resolves once no message is pending (delivered or rejected, every one).
    #[wasm_bindgen(js_name = waitEnqueuedMessagesSent)]
    pub fn wait_enqueued_messages_sent(&self) -> DonePromise {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::WaitSent(reply));
        done_promise(sent, answer)
    }

    /// The desired properties (the saved copy until the first fetch) and their version.
    #[wasm_bindgen(js_name = desiredProperties)]
    pub fn desired_properties(&self) -> DesiredProperties {
        let shared = self.shared.borrow();
        let version = shared
            .desired_version
            .map_or(JsValue::NULL, |v| JsValue::from_f64(v as f64));
        object(&[
            ("properties", json_to_js(&shared.desired)),
            ("version", version),
        ])
        .unchecked_into()
    }

    /// Merges `patch` into the reported properties (JSON merge patch: `null` deletes). Resolves
    /// once the change is saved; it reaches the Platform when connected, across restarts.
    #[wasm_bindgen(js_name = updateReportedProperties)]
    pub fn update_reported_properties(&self, patch: PropertiesPatch) -> DonePromise {
        let parsed = js_sys::JSON::stringify(&patch)
            .ok()
            .and_then(|text| text.as_string())
            .and_then(|text| vdev_core::json::Value::parse(text.as_bytes()).ok());
        let Some(patch) = parsed else {
            let error = ClientError::InvalidOption {
                name: "patch",
                problem: "must be a JSON-serialisable object".into(),
            };
            return rejected(error).unchecked_into();
        };
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::UpdateReported { patch, reply });
        done_promise(sent, answer)
    }

    /// The workspace id, once registered.
    #[wasm_bindgen(getter, js_name = workspaceId)]
    pub fn workspace_id(&self) -> Option<String> {
        self.shared.borrow().workspace_id.clone()
    }

    /// The Device ID, once registered.
    #[wasm_bindgen(getter, js_name = deviceId)]
    pub fn device_id(&self) -> Option<String> {
        self.shared.borrow().device_id.clone()
    }

    /// Queue and connection figures.
    pub fn statistics(&self) -> Statistics {
        let shared = self.shared.borrow();
        let stats = &shared.stats;
        let oldest = stats
            .oldest_enqueued_at
            .map_or(JsValue::NULL, |at| JsValue::from_f64(at as f64));
        object(&[
            ("pendingCount", (stats.pending_count as f64).into()),
            ("pendingBytes", (stats.pending_bytes as f64).into()),
            ("oldestEnqueuedAt", oldest),
            ("windowRecords", (stats.window_records as f64).into()),
            ("connectionState", stats.connection_state.as_str().into()),
            ("offline", shared.offline.into()),
            (
                "role",
                if shared.owner { "owner" } else { "follower" }.into(),
            ),
        ])
        .unchecked_into()
    }

    /// Takes the device offline (`true`) or lets it go online again (`false`), e.g. for a "go
    /// offline" switch or an app that knows better than the browser. The device is offline
    /// while the app says so *or* the browser does (its `offline` event): the connection is
    /// closed, nothing is sent or fetched, and sends are stored to go out, in order, later.
    #[wasm_bindgen(js_name = setOffline)]
    pub fn set_offline(&self, offline: bool) {
        // After `stop()` there is nothing left to take offline.
        self.commands.send(Command::SetOffline(offline));
    }

    /// Whether the device is offline (the browser's `offline` event or `setOffline(true)`).
    #[wasm_bindgen(getter)]
    pub fn offline(&self) -> bool {
        self.shared.borrow().offline
    }

    /// Disconnects, finishes pending storage work and closes the database. Queued messages
    /// stay stored for the next start.
    pub fn stop(&self) -> DonePromise {
        let (reply, answer) = oneshot::channel();
        if !self.commands.send(Command::Stop(reply)) {
            // Already stopped: nothing left to do.
            return js_sys::Promise::resolve(&JsValue::UNDEFINED).unchecked_into();
        }
        done_promise(true, answer)
    }
}

impl DeviceClient {
    /// `DeviceClient.start` for Rust callers (the tests): the client, or the `Error` the
    /// promise would reject with.
    pub async fn start(options: StartOptions) -> Result<DeviceClient, JsError> {
        Self::start_inner(&options).await.map_err(js_error)
    }
}

/// Sends messages to one stream.
#[wasm_bindgen]
#[derive(Debug)]
pub struct StreamSender {
    commands: Commands,
    stream: StreamOptions,
}

#[wasm_bindgen]
impl StreamSender {
    /// Queues a message. Resolves to its sequence number once it is durably stored (never
    /// waits for the network); rejects when it cannot be stored.
    #[wasm_bindgen(js_name = sendMessage)]
    pub fn send_message(&self, payload: Payload, options: Option<SendOptions>) -> SequencePromise {
        let payload = if let Some(text) = payload.as_string() {
            text.into_bytes()
        } else if let Some(bytes) = payload.dyn_ref::<Uint8Array>() {
            bytes.to_vec()
        } else {
            let error = ClientError::InvalidOption {
                name: "payload",
                problem: "must be a Uint8Array or a string".into(),
            };
            return rejected(error).unchecked_into();
        };
        match read_message_options(options.as_deref()) {
            Ok(options) => self.enqueue(Enqueue::Message(options, payload)),
            Err(error) => rejected(error).unchecked_into(),
        }
    }

    /// Queues the marker that completes batch `batchId`; resolves to its sequence number.
    #[wasm_bindgen(js_name = enqueueBatchCompletion)]
    pub fn enqueue_batch_completion(
        &self,
        #[wasm_bindgen(js_name = batchId)] batch_id: String,
    ) -> SequencePromise {
        self.enqueue(Enqueue::BatchCompletion(batch_id))
    }

    /// Queues the marker that completes message `messageId` of batch `batchId`.
    #[wasm_bindgen(js_name = enqueueMessageCompletion)]
    pub fn enqueue_message_completion(
        &self,
        #[wasm_bindgen(js_name = batchId)] batch_id: String,
        #[wasm_bindgen(js_name = messageId)] message_id: String,
    ) -> SequencePromise {
        self.enqueue(Enqueue::MessageCompletion(batch_id, message_id))
    }

    fn enqueue(&self, what: Enqueue) -> SequencePromise {
        let (reply, answer) = oneshot::channel();
        let command = Command::Send {
            stream: self.stream.clone(),
            what,
            reply,
        };
        if !self.commands.send(command) {
            return rejected(ClientError::Stopped).unchecked_into();
        }
        promise(async move {
            match answer.await {
                Ok(Ok(seq)) => Ok(JsValue::from_f64(seq as f64)),
                Ok(Err(error)) => Err(js_error(error).into()),
                Err(_) => Err(js_error(ClientError::Stopped).into()),
            }
        })
        .unchecked_into()
    }
}

fn js_error(error: ClientError) -> JsError {
    JsError::new(&error.to_string())
}

fn rejected(error: ClientError) -> js_sys::Promise {
    js_sys::Promise::reject(&js_error(error).into())
}

fn done_promise(sent: bool, answer: oneshot::Receiver<Result<(), ClientError>>) -> DonePromise {
    if !sent {
        return rejected(ClientError::Stopped).unchecked_into();
    }
    promise(async move {
        match answer.await {
            Ok(Ok(())) => Ok(JsValue::UNDEFINED),
            Ok(Err(error)) => Err(js_error(error).into()),
            Err(_) => Err(js_error(ClientError::Stopped).into()),
        }
    })
    .unchecked_into()
}

fn read_start_options(options: &JsValue) -> Result<(DeviceConfig, String, Callbacks), ClientError> {
    let instance = required_string(options, "instance")?;
    // `scheme://...` or a bare host. Split at the first ':' rather than searching for "://":
    // a string pattern links the two-way string searcher into the bundle.
    let has_scheme = instance
        .split_once(':')
        .is_some_and(|(_, rest)| rest.starts_with("//"));
    let instance = if has_scheme {
        instance
    } else {
        format!("https://{instance}")
    };
    check_url_allowed(&instance).map_err(|problem| ClientError::InvalidOption {
        name: "instance",
        problem,
    })?;
    let token = required_string(options, "provisioningToken")?;
    let database = required_string(options, "database")?;
    let mut config = DeviceConfig::new(instance.trim_end_matches('/'), token);
    config.transport = Transport::WebSocket;
    config.device_id = optional_string(options, "deviceId")?
        .map(|id| DeviceId::parse(&id))
        .transpose()?;
    config.provisioning_parameters = string_record(options, "provisioningParameters")?;
    let callbacks = Callbacks {
        provisioning_operation: function(options, "onProvisioningOperation")?,
        provisioning_failed: function(options, "onProvisioningFailed")?,
        desired_properties_changed: function(options, "onDesiredPropertiesChanged")?,
        connection_state_changed: function(options, "onConnectionStateChanged")?,
        message_outcome: function(options, "onMessageOutcome")?,
        cloud_to_device_message: function(options, "onCloudToDeviceMessage")?,
        offline_changed: function(options, "onOfflineChanged")?,
    };
    Ok((config, database, callbacks))
}

pub(crate) fn read_stream_options(options: Option<&JsValue>) -> Result<StreamOptions, ClientError> {
    let Some(options) = options else {
        return Ok(StreamOptions::default());
    };
    let compression = match optional_string(options, "compression")?.as_deref() {
        None | Some("none") => Compression::None,
        Some("fastest") => Compression::Fastest,
        Some("smallestSize") => Compression::SmallestSize,
        Some(other) => {
            return Err(ClientError::InvalidOption {
                name: "compression",
                problem: format!(
                    "must be \"none\", \"fastest\" or \"smallestSize\", not \"{other}\""
                ),
            });
        }
    };
    Ok(StreamOptions {
        stream_group: optional_string(options, "streamGroup")?,
        stream: optional_string(options, "stream")?,
        site_id: optional_string(options, "siteId")?,
        compression,
    })
}

pub(crate) fn read_message_options(
    options: Option<&JsValue>,
) -> Result<MessageOptions, ClientError> {
    let Some(options) = options else {
        return Ok(MessageOptions::default());
    };
    Ok(MessageOptions {
        batch_id: optional_string(options, "batchId")?,
        message_id: optional_string(options, "messageId")?,
        batch_slice_id: optional_string(options, "batchSliceId")?,
        chunk_id: optional_string(options, "chunkId")?,
    })
}

/// The property `name` of `object`, `None` when absent (`undefined` or `null`).
fn property(object: &JsValue, name: &'static str) -> Result<Option<JsValue>, ClientError> {
    if object.is_undefined() || object.is_null() {
        return Ok(None);
    }
    let value =
        Reflect::get(object, &JsValue::from_str(name)).map_err(|_| ClientError::InvalidOption {
            name,
            problem: "cannot be read".into(),
        })?;
    Ok((!value.is_undefined() && !value.is_null()).then_some(value))
}

fn optional_string(object: &JsValue, name: &'static str) -> Result<Option<String>, ClientError> {
    property(object, name)?
        .map(|value| {
            value.as_string().ok_or(ClientError::InvalidOption {
                name,
                problem: "must be a string".into(),
            })
        })
        .transpose()
}

fn required_string(object: &JsValue, name: &'static str) -> Result<String, ClientError> {
    optional_string(object, name)?.ok_or(ClientError::InvalidOption {
        name,
        problem: "is required".into(),
    })
}

fn function(object: &JsValue, name: &'static str) -> Result<Option<Function>, ClientError> {
    property(object, name)?
        .map(|value| {
            value
                .dyn_into::<Function>()
                .map_err(|_| ClientError::InvalidOption {
                    name,
                    problem: "must be a function".into(),
                })
        })
        .transpose()
}

fn string_record(
    object: &JsValue,
    name: &'static str,
) -> Result<Vec<(String, String)>, ClientError> {
    let Some(record) = property(object, name)? else {
        return Ok(Vec::new());
    };
    let invalid = || ClientError::InvalidOption {
        name,
        problem: "must be an object of strings".into(),
    };
    let record: js_sys::Object = record.dyn_into().map_err(|_| invalid())?;
    js_sys::Object::entries(&record)
        .iter()
        .map(|entry| {
            let entry: js_sys::Array = entry.unchecked_into();
            match (entry.get(0).as_string(), entry.get(1).as_string()) {
                (Some(key), Some(value)) => Ok((key, value)),
                _ => Err(invalid()),
            }
        })
        .collect()
}
