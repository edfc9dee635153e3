//! The driver: one `spawn_local` task that owns the `vdev_core::Device` and does its I/O.
//!
//! Everything that can happen — a command from JavaScript, a WebSocket event, a `fetch`
//! answer, a finished IndexedDB transaction, the timer, the `online`/`offline` events — arrives
//! as a [`Wake`] on one channel. For each wake the driver feeds the device and drains its outputs
//! until `Output::Timeout`; after a burst of wakes it hands the queued storage requests to
//! IndexedDB as one transaction, arms one timer and publishes a [`Snapshot`] for the
//! synchronous getters. No protocol decision is made here.
//!
//! Offline: the device is offline while the browser says so (`navigator.onLine` at start, then
//! the global `offline`/`online` events) **or** the app says so (`client.setOffline(true)`).
//! Only changes of that combined flag reach the core, as `Input::NetworkLost` and
//! `Input::NetworkAvailable`; an `online` event while already online still tells the core to
//! skip its backoff delay.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Function, Object, Reflect, Uint8Array};
use vdev_core::{
    ConnectionId, Device, Endpoint, Event, HttpResponse, Input, KeyedVec, MessageOptions, Output,
    RequestId, Seq, Stats, StoreError, StoreRequest, StreamOptions,
};
use wasm_bindgen::{JsCast, JsValue};

use crate::channel::{UnboundedReceiver, UnboundedSender, oneshot};
use crate::error::ClientError;
use crate::runtime::{Listener, Timeout, console_error, describe, now_ms, spawn};
use crate::socket::{Socket, SocketEvent};
use crate::store::IdbStore;
use crate::timer::WakeTimer;

/// How long to wait before running storage requests again after a failed transaction.
const STORE_RETRY_MS: u32 = 1_000;

/// A reply to JavaScript.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// What a stream sender queues.
#[derive(Debug)]
pub(crate) enum Enqueue {
    /// A message with a payload.
    Message(MessageOptions, Vec<u8>),
    /// The marker closing a batch.
    BatchCompletion(String),
    /// The marker closing a message of a batch.
    MessageCompletion(String, String),
}

/// A call from the JavaScript API.
#[derive(Debug)]
pub(crate) enum Command {
    /// Queue a message or marker; reply with its sequence number once it is durable.
    Send {
        stream: StreamOptions,
        what: Enqueue,
        reply: Reply<Seq>,
    },
    /// Merge a patch into the reported properties; reply once it is saved.
    UpdateReported {
        patch: vdev_core::json::Value,
        reply: Reply<()>,
    },
    /// Reply when no message is pending any more.
    WaitSent(Reply<()>),
    /// The app says the device is offline (`true`) or lets the browser decide (`false`).
    SetOffline(bool),
    /// The browser's `online` (`true`) or `offline` (`false`) event. It comes the way of the
    /// app's calls so that the two stay in the order they happened.
    BrowserNetwork(bool),
    /// Stop the device, finish storage work, close everything; then reply.
    Stop(Reply<()>),
}

/// Something for the driver to react to.
#[derive(Debug)]
pub(crate) enum Wake {
    Command(Command),
    Timer,
    Http(RequestId, Result<HttpResponse, String>),
    Socket(ConnectionId, SocketEvent),
    Stored {
        requests: Vec<StoreRequest>,
        /// The value of `store_emitted` when the batch was taken from the queue.
        through: u64,
        result: Result<Vec<Input<'static>>, StoreError>,
    },
    StoreRetry,
}

/// The app's callbacks; each is optional.
#[derive(Debug, Default, Clone)]
pub(crate) struct Callbacks {
    pub(crate) provisioning_operation: Option<Function>,
    pub(crate) provisioning_failed: Option<Function>,
    pub(crate) desired_properties_changed: Option<Function>,
    pub(crate) connection_state_changed: Option<Function>,
    pub(crate) message_outcome: Option<Function>,
    pub(crate) cloud_to_device_message: Option<Function>,
    pub(crate) offline_changed: Option<Function>,
}

impl Callbacks {
    /// The callback of this name (as the options object spells it), if the app gave one.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Function> {
        match name {
            "onProvisioningOperation" => self.provisioning_operation.as_ref(),
            "onProvisioningFailed" => self.provisioning_failed.as_ref(),
            "onDesiredPropertiesChanged" => self.desired_properties_changed.as_ref(),
            "onConnectionStateChanged" => self.connection_state_changed.as_ref(),
            "onMessageOutcome" => self.message_outcome.as_ref(),
            "onCloudToDeviceMessage" => self.cloud_to_device_message.as_ref(),
            "onOfflineChanged" => self.offline_changed.as_ref(),
            _ => None,
        }
    }

    /// Calls the callback `name` with `args`; one that throws is reported on the console.
    pub(crate) fn call(&self, name: &str, args: &js_sys::Array) {
        if let Some(callback) = self.by_name(name)
            && let Err(error) = callback.apply(&JsValue::NULL, args)
        {
            console_error(&format!("{name} threw: {}", describe(&error)));
        }
    }
}

/// What the synchronous getters of the client read, refreshed after every burst of work.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) workspace_id: Option<String>,
    pub(crate) device_id: Option<String>,
    pub(crate) stats: Stats,
    pub(crate) desired: vdev_core::json::Value,
    pub(crate) desired_version: Option<u64>,
    /// Whether the device is offline (the app or the browser says so).
    pub(crate) offline: bool,
    /// Whether this client drives the device (`false`: a follower of another tab's client).
    pub(crate) owner: bool,
}

impl Snapshot {
    pub(crate) fn of(device: &Device) -> Self {
        let (desired, desired_version) = device.desired_properties();
        Self {
            workspace_id: device.workspace_id().map(str::to_owned),
            device_id: device.device_id().map(str::to_owned),
            stats: device.stats(),
            desired: desired.clone(),
            desired_version,
            offline: false,
            owner: true,
        }
    }
}

/// The task's state; see the module doc.
pub(crate) struct Driver {
    device: Device,
    store: Rc<IdbStore>,
    wake: UnboundedSender<Wake>,
    callbacks: Callbacks,
    shared: Rc<RefCell<Snapshot>>,
    /// Open WebSockets by `ConnectionId` number.
    sockets: KeyedVec<Socket>,
    deadline: Option<u64>,
    timer: WakeTimer,
    /// Storage requests not yet handed to IndexedDB, in the order the core emitted them.
    store_queue: VecDeque<StoreRequest>,
    store_running: bool,
    store_retry: Option<Timeout>,
    /// Storage requests emitted so far, and how many of the first ones are settled (committed,
    /// or failed for good); replies to reported-property updates wait on it.
    store_emitted: u64,
    store_settled: u64,
    durable_waiters: KeyedVec<Reply<Seq>>,
    saved_waiters: Vec<(u64, Reply<()>)>,
    sent_waiters: Vec<Reply<()>>,
    stop_waiters: Vec<Reply<()>>,
    /// The browser's last word on the network, and the app's `setOffline`.
    browser_offline: bool,
    app_offline: bool,
    /// The other clients of this database (other tabs), told every event and snapshot.
    followers: Option<crate::tabs::Followers>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("device", &self.device)
            .field("store", &self.store.name())
            .finish_non_exhaustive()
    }
}

impl Driver {
    pub(crate) fn new(
        device: Device,
        store: IdbStore,
        wake: UnboundedSender<Wake>,
        callbacks: Callbacks,
        shared: Rc<RefCell<Snapshot>>,
        followers: Option<crate::tabs::Followers>,
    ) -> Self {
        let timer = {
            let wake = wake.clone();
            WakeTimer::new(move || {
                let _ = wake.unbounded_send(Wake::Timer);
            })
        };
        Self {
            device,
            store: Rc::new(store),
            wake,
            callbacks,
            shared,
            sockets: KeyedVec::default(),
            deadline: None,
            timer,
            store_queue: VecDeque::new(),
            store_running: false,
            store_retry: None,
            store_emitted: 0,
            store_settled: 0,
            durable_waiters: KeyedVec::default(),
            saved_waiters: Vec::new(),
            sent_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            browser_offline: !browser_says_online(),
            app_offline: false,
            followers,
        }
    }

    fn offline(&self) -> bool {
        self.browser_offline || self.app_offline
    }

    /// Applies a change of the browser's or the app's view of the network; the core and the
    /// app hear only about changes of the combined flag.
    fn network_changed(&mut self, now: u64, browser_offline: bool, app_offline: bool) {
        let was_offline = self.offline();
        self.browser_offline = browser_offline;
        self.app_offline = app_offline;
        let offline = self.offline();
        if offline && !was_offline {
            self.device.handle_input(now, Input::NetworkLost);
        } else if !offline {
            // Also when it was online already: an `online` event means "try now".
            self.device.handle_input(now, Input::NetworkAvailable);
        }
        if offline != was_offline {
            self.shared.borrow_mut().offline = offline;
            self.tell("onOfflineChanged", vec![offline.into()]);
        }
    }

    /// Runs until the device is stopped and its storage work is done.
    pub(crate) async fn run(mut self, mut wakes: UnboundedReceiver<Wake>) {
        if self.offline() {
            self.device.handle_input(now_ms(), Input::NetworkLost);
            self.shared.borrow_mut().offline = true;
        }
        self.drain();
        self.settle();
        while let Some(wake) = wakes.next().await {
            self.handle(wake);
            // Everything that arrived meanwhile (e.g. many sends in one JavaScript turn) is
            // handled before storage is flushed, so it shares one transaction.
            while let Some(wake) = wakes.try_next() {
                self.handle(wake);
            }
            self.settle();
            if self.finished() {
                break;
            }
        }
        self.sockets.clear();
        self.timer.disarm();
        self.store.close();
        wakes.close();
        for reply in self.stop_waiters.drain(..) {
            let _ = reply.send(Ok(()));
        }
        for (_, reply) in std::mem::take(&mut self.durable_waiters) {
            let _ = reply.send(Err(ClientError::Stopped));
        }
        for (_, reply) in self.saved_waiters.drain(..) {
            let _ = reply.send(Err(ClientError::Stopped));
        }
        for reply in self.sent_waiters.drain(..) {
            let _ = reply.send(Err(ClientError::Stopped));
        }
    }

    fn finished(&self) -> bool {
        // A stopping device whose storage keeps failing gives up rather than hang `stop()`.
        !self.stop_waiters.is_empty()
            && !self.store_running
            && (self.store_queue.is_empty() || self.store_retry.is_some())
    }

    fn handle(&mut self, wake: Wake) {
        let now = now_ms();
        match wake {
            Wake::Command(command) => self.command(now, command),
            Wake::Timer => self.device.handle_timeout(now),
            Wake::Http(id, Ok(response)) => self
                .device
                .handle_input(now, Input::HttpResponse { id, response }),
            Wake::Http(id, Err(error)) => self
                .device
                .handle_input(now, Input::HttpFailed { id, error }),
            Wake::Socket(conn, event) => self.socket_event(now, conn, event),
            Wake::Stored {
                requests,
                through,
                result,
            } => self.stored(now, requests, through, result),
            Wake::StoreRetry => self.store_retry = None,
        }
        self.drain();
    }

    fn command(&mut self, now: u64, command: Command) {
        match command {
            Command::Send {
                stream,
                what,
                reply,
            } => {
                let queued = match what {
                    Enqueue::Message(options, payload) => {
                        self.device.send(now, &stream, &options, payload)
                    }
                    Enqueue::BatchCompletion(batch) => {
                        self.device.enqueue_batch_completion(now, &stream, &batch)
                    }
                    Enqueue::MessageCompletion(batch, message) => self
                        .device
                        .enqueue_message_completion(now, &stream, &batch, &message),
                };
                match queued {
                    Ok(seq) => {
                        self.durable_waiters.insert(seq, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error.into()));
                    }
                }
            }
            Command::UpdateReported { patch, reply } => {
                match self.device.update_reported_properties(now, patch) {
                    // The saved state is among the requests this change emits; reply when
                    // everything emitted up to then has committed.
                    Ok(()) => {
                        self.drain();
                        self.saved_waiters.push((self.store_emitted, reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error.into()));
                    }
                }
            }
            Command::WaitSent(reply) => self.sent_waiters.push(reply),
            Command::BrowserNetwork(online) => {
                self.network_changed(now, !online, self.app_offline);
            }
            Command::SetOffline(offline) => {
                // Setting the same value again changes nothing (and skips no backoff).
                if offline != self.app_offline {
                    self.network_changed(now, self.browser_offline, offline);
                }
            }
            Command::Stop(reply) => {
                self.device.stop(now);
                self.stop_waiters.push(reply);
            }
        }
    }

    fn socket_event(&mut self, now: u64, conn: ConnectionId, event: SocketEvent) {
        if self.sockets.get(conn.0).is_none() {
            // A socket the core already closed, or whose opening failed.
            if let SocketEvent::Closed(reason) = event {
                self.device
                    .handle_input(now, Input::Closed { conn, reason });
            }
            return;
        }
        match event {
            SocketEvent::Opened => self.device.handle_input(now, Input::Connected { conn }),
            SocketEvent::Data(bytes) => self.device.handle_input(
                now,
                Input::Received {
                    conn,
                    bytes: &bytes,
                },
            ),
            SocketEvent::Closed(reason) => {
                self.sockets.remove(conn.0);
                self.device
                    .handle_input(now, Input::Closed { conn, reason });
            }
        }
    }

    fn stored(
        &mut self,
        now: u64,
        requests: Vec<StoreRequest>,
        through: u64,
        result: Result<Vec<Input<'static>>, StoreError>,
    ) {
        self.store_running = false;
        match result {
            Ok(answers) => {
                self.store_settled = through;
                for answer in answers {
                    if let Input::Appended { first, last } = answer {
                        for (seq, reply) in self.take_durable_waiters(first, last) {
                            let _ = reply.send(Ok(seq));
                        }
                    }
                    self.device.handle_input(now, answer);
                }
            }
            Err(error) => {
                console_error(&format!("storage transaction failed: {error}"));
                // The appends are lost (the core rejects those messages) and a load is the
                // core's to retry; removals and the saved state are run again in order, ahead
                // of newer requests, after a pause.
                let mut retry = Vec::new();
                for request in requests {
                    match request {
                        StoreRequest::Append { records } => {
                            let (Some(first), Some(last)) = (records.first(), records.last())
                            else {
                                continue;
                            };
                            let (first, last) = (first.seq, last.seq);
                            for (_, reply) in self.take_durable_waiters(first, last) {
                                let _ = reply.send(Err(ClientError::NotStored(error.clone())));
                            }
                            let error = error.clone();
                            self.device
                                .handle_input(now, Input::AppendFailed { first, last, error });
                        }
                        // The core asks again itself, later (growing delays).
                        StoreRequest::Load { .. } => {
                            let error = error.clone();
                            self.device.handle_input(now, Input::LoadFailed { error });
                        }
                        other => retry.push(other),
                    }
                }
                if retry.is_empty() {
                    self.store_settled = through;
                } else {
                    for request in retry.into_iter().rev() {
                        self.store_queue.push_front(request);
                    }
                    let wake = self.wake.clone();
                    self.store_retry = Some(Timeout::new(
                        STORE_RETRY_MS,
                        Box::new(move || drop(wake.unbounded_send(Wake::StoreRetry))),
                    ));
                }
            }
        }
    }

    fn take_durable_waiters(&mut self, first: Seq, last: Seq) -> Vec<(Seq, Reply<Seq>)> {
        self.durable_waiters.remove_range(first..=last)
    }

    /// Performs every output until the core names its next deadline.
    fn drain(&mut self) {
        loop {
            match self.device.poll_output() {
                Output::Timeout(deadline) => {
                    self.deadline = deadline;
                    return;
                }
                Output::Store(request) => {
                    self.store_emitted += 1;
                    self.store_queue.push_back(request);
                }
                Output::Http(request) => {
                    let wake = self.wake.clone();
                    spawn(async move {
                        let id = request.id;
                        let result = crate::http::perform(request).await;
                        let _ = wake.unbounded_send(Wake::Http(id, result));
                    });
                }
                Output::Connect { conn, endpoint } => self.connect(conn, endpoint),
                Output::Transmit { conn, bytes } => {
                    let failed = self.sockets.get(conn.0).and_then(|s| s.send(&bytes).err());
                    if let Some(reason) = failed {
                        self.sockets.remove(conn.0);
                        self.device
                            .handle_input(now_ms(), Input::Closed { conn, reason });
                    }
                }
                Output::Close { conn } => {
                    self.sockets.remove(conn.0);
                }
                Output::Event(event) => self.deliver(event),
            }
        }
    }

    fn connect(&mut self, conn: ConnectionId, endpoint: Endpoint) {
        let wake = self.wake.clone();
        let notify: Rc<dyn Fn(SocketEvent)> = Rc::new(move |event| {
            let _ = wake.unbounded_send(Wake::Socket(conn, event));
        });
        let opened = match endpoint {
            Endpoint::WebSocket { url } => Socket::open(&url, notify.clone()),
            Endpoint::Tcp { .. } => Err("a browser can only use websocket, not tcp".to_owned()),
            Endpoint::Tls { .. } => Err("a browser can only use websocket, not tls".to_owned()),
        };
        match opened {
            Ok(socket) => {
                self.sockets.insert(conn.0, socket);
            }
            // Reported like any other failed connection, on the next turn.
            Err(reason) => notify(SocketEvent::Closed(reason)),
        }
    }

    /// After a burst of wakes: start a storage transaction, arm the timer, refresh the
    /// snapshot and answer the waiters whose condition now holds.
    fn settle(&mut self) {
        self.flush_store();
        self.timer.ensure(self.deadline, now_ms());
        let pending = self.refresh_snapshot();
        if let Some(followers) = &mut self.followers {
            followers.snapshot(&self.shared.borrow());
        }
        if pending == 0 {
            for reply in self.sent_waiters.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
        let settled = self.store_settled;
        let (ready, waiting) = std::mem::take(&mut self.saved_waiters)
            .into_iter()
            .partition(|(ticket, _)| *ticket <= settled);
        self.saved_waiters = waiting;
        for (_, reply) in ready {
            let _ = reply.send(Ok(()));
        }
    }

    fn flush_store(&mut self) {
        if self.store_running || self.store_retry.is_some() || self.store_queue.is_empty() {
            return;
        }
        self.store_running = true;
        let requests = Vec::from(std::mem::take(&mut self.store_queue));
        let through = self.store_emitted;
        let store = self.store.clone();
        let wake = self.wake.clone();
        spawn(async move {
            let result = store.execute(&requests).await;
            let _ = wake.unbounded_send(Wake::Stored {
                requests,
                through,
                result,
            });
        });
    }

    /// Publishes the device's figures for the getters; returns the pending message count.
    fn refresh_snapshot(&self) -> u64 {
        let mut shared = self.shared.borrow_mut();
        shared.stats = self.device.stats();
        let (desired, version) = self.device.desired_properties();
        if version != shared.desired_version {
            shared.desired = desired.clone();
            shared.desired_version = version;
        }
        if shared.device_id.is_none() {
            shared.workspace_id = self.device.workspace_id().map(str::to_owned);
            shared.device_id = self.device.device_id().map(str::to_owned);
        }
        shared.stats.pending_count
    }

    /// Tells the app; a callback that throws is reported on the console and otherwise ignored.
    fn deliver(&mut self, event: Event) {
        match event {
            Event::Registered {
                workspace_id,
                device_id,
            } => {
                let mut shared = self.shared.borrow_mut();
                shared.workspace_id = Some(workspace_id);
                shared.device_id = Some(device_id);
            }
            Event::SavedStateDiscarded { reason } => {
                console_error(&format!(
                    "saved device state was unreadable and replaced: {reason}"
                ));
            }
            Event::StoreFailed { error } => {
                console_error(&format!(
                    "reading queued messages from IndexedDB failed (retrying): {error}"
                ));
            }
            other => {
                if let Some((name, args)) = app_call(other) {
                    self.tell(name, args);
                }
            }
        }
    }

    /// Calls the app's callback `name` (when it gave one) and tells the followers.
    fn tell(&self, name: &'static str, args: Vec<JsValue>) {
        let args: js_sys::Array = args.into_iter().collect();
        self.callbacks.call(name, &args);
        if let Some(followers) = &self.followers {
            followers.event(name, &args);
        }
    }
}

/// Listens to the browser's `online`/`offline` events and hands them to `notify`.
pub(crate) fn listen_to_network(notify: impl Fn(bool) + Clone + 'static) -> [Listener; 2] {
    let global: web_sys::EventTarget = js_sys::global().unchecked_into();
    let listen = |name: &'static str, online: bool| {
        let notify = notify.clone();
        Listener::new(&global, name, move |_| notify(online))
    };
    [listen("online", true), listen("offline", false)]
}

/// What `navigator.onLine` says (true where there is no navigator to ask).
fn browser_says_online() -> bool {
    Reflect::get(&js_sys::global(), &JsValue::from_str("navigator"))
        .and_then(|navigator| Reflect::get(&navigator, &JsValue::from_str("onLine")))
        .ok()
        .and_then(|online| online.as_bool())
        .unwrap_or(true)
}

/// The name of the app callback an event goes to, and its arguments.
fn app_call(event: Event) -> Option<(&'static str, Vec<JsValue>)> {
    let call = match event {
        Event::ProvisioningOperation(operation) => (
            "onProvisioningOperation",
            vec![object(&[
                ("id", operation.id.into()),
                ("verificationCode", operation.verification_code.into()),
                ("expiresAt", (operation.expires_at as f64).into()),
            ])],
        ),
        Event::ProvisioningFailed(error) => {
            ("onProvisioningFailed", vec![error.to_string().into()])
        }
        Event::ConnectionStateChanged(state) => {
            ("onConnectionStateChanged", vec![state.as_str().into()])
        }
        Event::MessageDelivered { seq } => (
            "onMessageOutcome",
            vec![object(&[
                ("sequence", (seq as f64).into()),
                ("status", "delivered".into()),
            ])],
        ),
        Event::MessageRejected { seq, reason } => (
            "onMessageOutcome",
            vec![object(&[
                ("sequence", (seq as f64).into()),
                ("status", "rejected".into()),
                ("reason", reason.to_string().into()),
            ])],
        ),
        Event::DesiredPropertiesChanged {
            properties,
            version,
        } => (
            "onDesiredPropertiesChanged",
            vec![json_to_js(&properties), (version as f64).into()],
        ),
        Event::CloudToDeviceMessage {
            properties,
            payload,
        } => (
            "onCloudToDeviceMessage",
            vec![object(&[
                ("properties", properties.into()),
                ("payload", Uint8Array::from(payload.as_slice()).into()),
            ])],
        ),
        // Reported-property acknowledgements and events added later have no callback (yet).
        _ => return None,
    };
    Some(call)
}

/// A plain object with these properties.
pub(crate) fn object(properties: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (name, value) in properties {
        // Setting a property on a fresh plain object cannot throw.
        let _ = Reflect::set(&object, &JsValue::from_str(name), value);
    }
    object.into()
}

/// A JSON value as a JavaScript value (through `JSON.parse`, which takes any JSON text).
pub(crate) fn json_to_js(value: &vdev_core::json::Value) -> JsValue {
    js_sys::JSON::parse(&value.to_json()).unwrap_or(JsValue::NULL)
}
