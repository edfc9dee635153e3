//! One owner per device across tabs: the client holding the Web Lock `vdev-web:<database>`
//! drives the device; every other client of the same database (another tab, or a second
//! `DeviceClient` in the same page) is a **follower**.
//!
//! Followers and the owner talk over the `BroadcastChannel` of the same name (plain objects
//! with a type `t`):
//! - a follower forwards its calls as `request`s `{from, n, ...}`; the owner runs them on its
//!   device and sends back an `answer` (`seq` once stored, `error`, or `retry` while it stops);
//! - the owner mirrors every app callback (`event`) and its statistics (`snapshot`), so a
//!   follower's callbacks and getters work as the owner's do — from the first `hello` or
//!   `request` it hears on: an owner without followers posts nothing per message;
//! - `owner` announces a new owner (followers resend what is unanswered; the owner answers a
//!   request it already handled again instead of running it twice, and say `hello`),
//!   `released` says the owner has finished (every answer is out) and is letting go of the lock,
//!   `hello` asks for a snapshot (and says a follower is there).
//!
//! When the owner stops or its tab closes, the lock goes to the next waiting client, which opens
//! the IndexedDB database and resumes the device from it. It first waits for `released` (at
//! most [`RELEASE_WAIT_MS`], for a tab that was closed without one) so that no answer of the
//! old owner is still on its way, then runs its own unanswered requests itself.
//!
//! Hand-written: no crate wraps Web Locks, and web-sys has them only behind an unstable cfg, so
//! they are called through `Reflect`. Where the browser has no Web Locks or no
//! `BroadcastChannel`, every client drives its device alone, as before.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Array, Function, Promise, Reflect, Uint8Array};
use vdev_core::json::Value;
use vdev_core::{
    Compression, ConnectionState, Device, DeviceConfig, KeyedVec, MessageOptions, SendError, Seq,
    Stats, StreamOptions,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, BroadcastChannel, MessageEvent};

use crate::api::{read_message_options, read_stream_options};
use crate::channel::{UnboundedReceiver, UnboundedSender, oneshot, unbounded};
use crate::driver::{
    Callbacks, Command, Driver, Enqueue, Reply, Snapshot, Wake, json_to_js, listen_to_network,
    object,
};
use crate::error::ClientError;
use crate::runtime::{Listener, Timeout, console_error, describe, now_ms, random_bytes, spawn};
use crate::store::IdbStore;

/// How many followers' requests an owner remembers for answering repeats. Repeats come only
/// right after an owner announces itself (for requests sent just before), so the most recent
/// ones are enough; the oldest are forgotten to bound memory.
const REMEMBERED_REQUESTS: usize = 10_000;

/// Followers' requests an owner ran, by follower id and request number: `None` while running,
/// then the answer it sent. Followers are few and number their requests in order, so a list of
/// followers with a [`KeyedVec`] each does what a `HashMap` would, without hashing code in the
/// bundle.
#[derive(Debug, Default)]
struct Handled {
    by_follower: Vec<(String, KeyedVec<Option<JsValue>>)>,
}

impl Handled {
    fn get(&self, (from, n): &(String, u64)) -> Option<&Option<JsValue>> {
        let (_, requests) = self.by_follower.iter().find(|(id, _)| id == from)?;
        requests.get(*n)
    }

    fn get_mut(&mut self, (from, n): &(String, u64)) -> Option<&mut Option<JsValue>> {
        let (_, requests) = self.by_follower.iter_mut().find(|(id, _)| id == from)?;
        requests.get_mut(*n)
    }

    fn insert(&mut self, (from, n): (String, u64), answer: Option<JsValue>) {
        match self.by_follower.iter_mut().find(|(id, _)| *id == from) {
            Some((_, requests)) => drop(requests.insert(n, answer)),
            None => {
                let mut requests = KeyedVec::default();
                requests.insert(n, answer);
                self.by_follower.push((from, requests));
            }
        }
    }

    fn remove(&mut self, (from, n): &(String, u64)) {
        let Some(index) = self.by_follower.iter().position(|(id, _)| id == from) else {
            return;
        };
        let requests = &mut self.by_follower[index].1;
        requests.remove(*n);
        if requests.is_empty() {
            self.by_follower.swap_remove(index);
        }
    }
}

/// How long a new owner waits for the previous owner's `released` before resuming the device.
const RELEASE_WAIT_MS: u32 = 2_000;

/// What the coordinator of one client reacts to.
enum Front {
    Command(Command),
    Message(JsValue),
    /// The lock is ours; calling the function lets go of it.
    LockGranted(Function),
    ReleaseWaitOver,
    /// Our driver answered a follower's request.
    Answered {
        key: (String, u64),
        answer: JsValue,
        retry: bool,
    },
    DriverStopped(Reply<()>),
}

/// How a forwarded call is answered to the app.
enum PendingReply {
    Seq(Reply<Seq>),
    Done(Reply<()>),
}

/// A call as the owner runs it.
enum Request {
    Send(StreamOptions, Enqueue),
    Reported(Value),
    Offline(bool),
}

/// The owner's handle for telling followers, used by the driver.
#[derive(Debug)]
pub(crate) struct Followers {
    channel: BroadcastChannel,
    last: Option<Figures>,
    /// Set once a follower has said something; until then nothing is mirrored.
    present: Rc<Cell<bool>>,
}

impl Followers {
    /// Mirrors an app callback call to the followers.
    pub(crate) fn event(&self, name: &str, args: &Array) {
        if !self.present.get() {
            return;
        }
        post(
            &self.channel,
            &[
                ("t", "event".into()),
                ("name", name.into()),
                ("args", args.into()),
            ],
        );
    }

    /// Tells the followers the figures, when they changed.
    pub(crate) fn snapshot(&mut self, snapshot: &Snapshot) {
        if !self.present.get() {
            return;
        }
        let now = figures(snapshot);
        if self.last.as_ref() != Some(&now) {
            self.channel.post_message(&snapshot_message(snapshot)).ok();
            self.last = Some(now);
        }
    }
}

/// Where the JavaScript API sends its calls: the queue of the client's coordinator.
#[derive(Debug, Clone)]
pub(crate) struct Commands(UnboundedSender<Front>);

impl Commands {
    /// Queues `command`; `false` when the client has stopped.
    pub(crate) fn send(&self, command: Command) -> bool {
        self.0.unbounded_send(Front::Command(command)).is_ok()
    }
}

/// Starts the client for `database`: as the owner when the lock is free (or the browser has no
/// Web Locks), else as a follower. Returns where the API sends its commands and the figures.
pub(crate) async fn start(
    config: DeviceConfig,
    database: String,
    callbacks: Callbacks,
) -> Result<(Commands, Rc<RefCell<Snapshot>>), ClientError> {
    let name = format!("vdev-web:{database}");
    let locks = Reflect::get(&js_sys::global(), &"navigator".into())
        .and_then(|navigator| Reflect::get(&navigator, &"locks".into()))
        .ok()
        .filter(|locks| locks.is_object());
    let channel = locks
        .as_ref()
        .and_then(|_| BroadcastChannel::new(&name).ok());
    // The app's calls, the browser's network events and the other tabs' messages share one
    // ordered queue.
    let (front, fronts) = unbounded();
    let commands = Commands(front.clone());
    let network = {
        let front = front.clone();
        listen_to_network(move |online| {
            let _ = front.unbounded_send(Front::Command(Command::BrowserNetwork(online)));
        })
    };
    // A random id in the form of an origin id: unique among the tabs of one browser.
    let id = random_bytes::<16>().map_err(ClientError::NoRandomness)?;
    let mut coordinator = Coordinator {
        config,
        database,
        callbacks,
        shared: Rc::new(RefCell::new(Snapshot::follower())),
        front: front.clone(),
        id: vdev_core::new_origin(id),
        channel: channel.clone(),
        _on_message: None,
        _network: network,
        release: None,
        abort: None,
        driver: None,
        stopping: false,
        handled: Handled::default(),
        handled_order: VecDeque::new(),
        next_request: 0,
        pending: KeyedVec::default(),
        sent_waiters: Vec::new(),
        owner_present: false,
        followers_present: Rc::new(Cell::new(false)),
        offline_wish: None,
        promoting: None,
    };
    let (Some(locks), Some(channel)) = (locks, channel) else {
        coordinator.become_owner(None).await?;
        let shared = coordinator.shared.clone();
        spawn(coordinator.run(fronts));
        return Ok((commands, shared));
    };
    coordinator._on_message = Some({
        let front = front.clone();
        Listener::new(&channel, "message", move |event| {
            // A channel's `message` events are `MessageEvent`s.
            let message: &MessageEvent = event.unchecked_ref();
            let _ = front.unbounded_send(Front::Message(message.data()));
        })
    });
    let (granted, grant) = oneshot::channel();
    let if_available = object(&[("ifAvailable", true.into())]);
    request_lock(&locks, &name, &if_available, move |release| {
        let _ = granted.send(release);
        Ok(())
    })
    .map_err(ClientError::NoLocks)?;
    match grant.await.ok().flatten() {
        Some(release) => coordinator.become_owner(Some(release)).await?,
        None => coordinator.follow(&locks, &name, &channel)?,
    }
    let shared = coordinator.shared.clone();
    spawn(coordinator.run(fronts));
    Ok((commands, shared))
}

/// `navigator.locks.request(name, options, callback)`. `granted` hears `Some(release)` when
/// the lock is held (until `release` is called) or `None` when `ifAvailable` found it taken;
/// when it gives the release function back, the lock is let go at once.
fn request_lock(
    locks: &JsValue,
    name: &str,
    options: &JsValue,
    granted: impl FnOnce(Option<Function>) -> Result<(), Function> + 'static,
) -> Result<(), String> {
    let callback = Closure::once_into_js(move |lock: JsValue| -> JsValue {
        if lock.is_null() || lock.is_undefined() {
            let _ = granted(None);
            return JsValue::UNDEFINED;
        }
        let mut release = None;
        let held = Promise::new(&mut |resolve, _| release = Some(resolve));
        if let Some(release) = release
            && let Err(release) = granted(Some(release))
        {
            let _ = release.call0(&JsValue::NULL);
        }
        held.into()
    });
    let request: Function = Reflect::get(locks, &"request".into())
        .and_then(|request| request.dyn_into())
        .map_err(|_| "navigator.locks.request is not a function".to_owned())?;
    let promise: Promise = request
        .call3(locks, &name.into(), options, &callback)
        .and_then(|promise| promise.dyn_into())
        .map_err(|error| format!("navigator.locks.request failed: {}", describe(&error)))?;
    // Settles when the lock is let go, or rejects (AbortError) for a follower that stopped.
    spawn(async move {
        let _ = JsFuture::from(promise).await;
    });
    Ok(())
}

struct Coordinator {
    config: DeviceConfig,
    database: String,
    callbacks: Callbacks,
    shared: Rc<RefCell<Snapshot>>,
    front: UnboundedSender<Front>,
    /// This client's name in requests.
    id: String,
    channel: Option<BroadcastChannel>,
    _on_message: Option<Listener>,
    _network: [Listener; 2],
    /// Lets go of the lock (owner).
    release: Option<Function>,
    /// Withdraws the waiting lock request (follower).
    abort: Option<AbortController>,
    /// The driver's queue (owner).
    driver: Option<UnboundedSender<Wake>>,
    stopping: bool,
    /// Followers' requests this owner ran: `None` while running, then the answer it sent.
    handled: Handled,
    /// The keys of `handled`, oldest first.
    handled_order: VecDeque<(String, u64)>,
    /// Follower: requests not answered yet, by number, with the message that carries them.
    next_request: u64,
    pending: KeyedVec<(JsValue, PendingReply)>,
    sent_waiters: Vec<Reply<()>>,
    owner_present: bool,
    /// Follower: the last `setOffline` of this client's app, told again to every new owner
    /// (and applied by this client itself when it takes over) so that it is never lost.
    offline_wish: Option<bool>,
    /// Owner: whether any follower has made itself heard (shared with the driver's mirroring).
    followers_present: Rc<Cell<bool>>,
    /// Holding the lock, waiting for the previous owner's `released`.
    promoting: Option<(Function, Timeout)>,
}

impl Coordinator {
    async fn run(mut self, mut fronts: UnboundedReceiver<Front>) {
        while let Some(front) = fronts.next().await {
            if self.handle(front).await {
                break;
            }
        }
    }

    /// Handles one thing; `true` when the client has stopped.
    async fn handle(&mut self, front: Front) -> bool {
        match front {
            Front::Command(command) => return self.command(command),
            Front::Message(message) => self.message(message).await,
            Front::LockGranted(release) => {
                if self.owner_present {
                    let front = self.front.clone();
                    let wait = Timeout::new(
                        RELEASE_WAIT_MS,
                        Box::new(move || drop(front.unbounded_send(Front::ReleaseWaitOver))),
                    );
                    self.promoting = Some((release, wait));
                } else {
                    self.promote(release).await;
                }
            }
            Front::ReleaseWaitOver => {
                if let Some((release, _)) = self.promoting.take() {
                    self.promote(release).await;
                }
            }
            Front::Answered { key, answer, retry } => {
                if retry {
                    self.handled.remove(&key);
                } else if let Some(remembered) = self.handled.get_mut(&key) {
                    *remembered = Some(answer.clone());
                }
                self.post_value(&answer);
            }
            Front::DriverStopped(reply) => {
                if let Some(channel) = &self.channel {
                    post(channel, &[("t", "released".into())]);
                    channel.close();
                }
                if let Some(release) = self.release.take() {
                    let _ = release.call0(&JsValue::NULL);
                }
                let _ = reply.send(Ok(()));
                return true;
            }
        }
        false
    }

    fn post_value(&self, value: &JsValue) {
        if let Some(channel) = &self.channel {
            channel.post_message(value).ok();
        }
    }

    /// Becomes a follower: queues for the lock (to take over later) and asks the owner for its
    /// figures.
    fn follow(
        &mut self,
        locks: &JsValue,
        name: &str,
        channel: &BroadcastChannel,
    ) -> Result<(), ClientError> {
        self.shared.borrow_mut().owner = false;
        let abort = AbortController::new().map_err(|e| ClientError::NoLocks(describe(&e)))?;
        let options = object(&[("signal", abort.signal().into())]);
        let front = self.front.clone();
        request_lock(locks, name, &options, move |release| {
            let Some(release) = release else {
                return Ok(());
            };
            // A client that stopped meanwhile lets go at once.
            match front.unbounded_send(Front::LockGranted(release.clone())) {
                Ok(()) => Ok(()),
                Err(_) => Err(release),
            }
        })
        .map_err(ClientError::NoLocks)?;
        self.abort = Some(abort);
        post(channel, &[("t", "hello".into())]);
        Ok(())
    }

    /// Opens the store and starts the driver; tells the followers.
    async fn become_owner(&mut self, release: Option<Function>) -> Result<(), ClientError> {
        self.release = release;
        let opened = IdbStore::open(&self.database).await;
        let (store, contents) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                if let Some(release) = self.release.take() {
                    let _ = release.call0(&JsValue::NULL);
                }
                return Err(error.into());
            }
        };
        let seed = random_bytes::<32>().map_err(ClientError::NoRandomness)?;
        let device = Device::new(
            self.config.clone(),
            now_ms(),
            seed,
            &contents.meta,
            contents.state.as_deref(),
        );
        {
            let mut shared = self.shared.borrow_mut();
            *shared = Snapshot::of(&device);
        }
        let followers = self.channel.clone().map(|channel| Followers {
            channel,
            last: None,
            present: self.followers_present.clone(),
        });
        let (wake, wakes) = unbounded();
        let driver = Driver::new(
            device,
            store,
            wake.clone(),
            self.callbacks.clone(),
            self.shared.clone(),
            followers,
        );
        spawn(driver.run(wakes));
        self.driver = Some(wake);
        self.owner_present = false;
        if let Some(channel) = &self.channel {
            post(channel, &[("t", "owner".into())]);
        }
        Ok(())
    }

    /// A follower takes over: resumes the device and runs its own unanswered requests.
    async fn promote(&mut self, release: Function) {
        if self.stopping {
            let _ = release.call0(&JsValue::NULL);
            return;
        }
        self.abort = None;
        if let Err(error) = self.become_owner(Some(release)).await {
            console_error(&format!("cannot take over the device: {error}"));
            return;
        }
        for (_, (message, reply)) in std::mem::take(&mut self.pending) {
            match (decode_request(&message), reply) {
                (Ok(Request::Send(stream, what)), PendingReply::Seq(reply)) => {
                    self.to_driver(Command::Send {
                        stream,
                        what,
                        reply,
                    });
                }
                (Ok(Request::Reported(patch)), PendingReply::Done(reply)) => {
                    self.to_driver(Command::UpdateReported { patch, reply });
                }
                (Err(error), PendingReply::Seq(reply)) => {
                    let _ = reply.send(Err(ClientError::FromOwner(error)));
                }
                (Err(error), PendingReply::Done(reply)) => {
                    let _ = reply.send(Err(ClientError::FromOwner(error)));
                }
                // Requests are numbered with the reply they were made with.
                _ => {}
            }
        }
        for reply in std::mem::take(&mut self.sent_waiters) {
            self.to_driver(Command::WaitSent(reply));
        }
        if let Some(offline) = self.offline_wish.take() {
            self.to_driver(Command::SetOffline(offline));
        }
    }

    fn to_driver(&self, command: Command) {
        if let Some(driver) = &self.driver {
            // A stopped driver drops the command, and with it the reply: the caller sees
            // "the client is stopped".
            let _ = driver.unbounded_send(Wake::Command(command));
        }
    }

    /// A call of this client's API; `true` when the client has stopped.
    fn command(&mut self, command: Command) -> bool {
        if self.driver.is_some() {
            if let Command::Stop(reply) = command {
                self.stopping = true;
                let (stopped, done) = oneshot::channel();
                self.to_driver(Command::Stop(stopped));
                let front = self.front.clone();
                spawn(async move {
                    let _ = done.await;
                    let _ = front.unbounded_send(Front::DriverStopped(reply));
                });
            } else {
                self.to_driver(command);
            }
            return false;
        }
        match command {
            Command::Send {
                stream,
                what,
                reply,
            } => self.forward(send_request(&stream, what), PendingReply::Seq(reply)),
            Command::UpdateReported { patch, reply } => {
                let request = [
                    ("kind", "reported".into()),
                    ("patch", patch.to_string().into()),
                ];
                self.forward(request.to_vec(), PendingReply::Done(reply));
            }
            // The owner's tab hears the browser's events itself.
            Command::BrowserNetwork(_) => {}
            Command::SetOffline(offline) => {
                self.offline_wish = Some(offline);
                self.tell_offline_wish();
            }
            Command::WaitSent(reply) => {
                self.sent_waiters.push(reply);
                self.answer_sent_waiters();
            }
            Command::Stop(reply) => {
                self.stopping = true;
                if let Some(abort) = self.abort.take() {
                    abort.abort();
                }
                if let Some((release, _)) = self.promoting.take() {
                    let _ = release.call0(&JsValue::NULL);
                }
                if let Some(channel) = self.channel.take() {
                    channel.close();
                }
                for (_, (_, pending)) in std::mem::take(&mut self.pending) {
                    match pending {
                        PendingReply::Seq(reply) => drop(reply.send(Err(ClientError::Stopped))),
                        PendingReply::Done(reply) => drop(reply.send(Err(ClientError::Stopped))),
                    }
                }
                for waiter in self.sent_waiters.drain(..) {
                    let _ = waiter.send(Err(ClientError::Stopped));
                }
                let _ = reply.send(Ok(()));
                return true;
            }
        }
        false
    }

    /// Follower: asks the owner to apply this app's `setOffline` (again: setting the same value
    /// twice changes nothing).
    fn tell_offline_wish(&mut self) {
        let Some(offline) = self.offline_wish else {
            return;
        };
        let n = self.next_request;
        self.next_request += 1;
        self.post_request(
            n,
            vec![("kind", "offline".into()), ("value", offline.into())],
        );
    }

    fn forward(&mut self, request: Vec<(&'static str, JsValue)>, reply: PendingReply) {
        let n = self.next_request;
        self.next_request += 1;
        let message = self.post_request(n, request);
        self.pending.insert(n, (message, reply));
    }

    fn post_request(&self, n: u64, mut fields: Vec<(&'static str, JsValue)>) -> JsValue {
        fields.extend([
            ("t", "request".into()),
            ("from", self.id.as_str().into()),
            ("n", (n as f64).into()),
        ]);
        let message = object(&fields);
        self.post_value(&message);
        message
    }

    async fn message(&mut self, message: JsValue) {
        let kind = string_field(&message, "t").unwrap_or_default();
        match (kind.as_str(), self.driver.is_some()) {
            ("hello", true) => {
                self.followers_present.set(true);
                self.post_value(&snapshot_message(&self.shared.borrow()));
            }
            ("request", true) => {
                self.followers_present.set(true);
                self.run_request(message);
            }
            ("owner", false) => {
                self.owner_present = true;
                self.post_value(&object(&[("t", "hello".into())]));
                self.tell_offline_wish();
                for (message, _) in self.pending.values() {
                    self.post_value(message);
                }
            }
            ("released", false) => {
                self.owner_present = false;
                if let Some((release, _)) = self.promoting.take() {
                    self.promote(release).await;
                }
            }
            ("answer", false) => self.answered(&message),
            ("event", false) => {
                let name = string_field(&message, "name").unwrap_or_default();
                let args = Reflect::get(&message, &"args".into())
                    .ok()
                    .and_then(|args| args.dyn_into::<Array>().ok())
                    .unwrap_or_default();
                self.callbacks.call(&name, &args);
            }
            ("snapshot", false) => {
                self.owner_present = true;
                read_snapshot(&message, &mut self.shared.borrow_mut());
                self.answer_sent_waiters();
            }
            // Not for this role (e.g. another follower's request), or unknown.
            _ => {}
        }
    }

    /// Owner: runs a follower's request once, answering repeats with the first answer.
    fn run_request(&mut self, message: JsValue) {
        let (Some(from), Some(n)) = (
            string_field(&message, "from"),
            Reflect::get(&message, &"n".into())
                .ok()
                .and_then(|n| n.as_f64()),
        ) else {
            return;
        };
        let key = (from, n as u64);
        match self.handled.get(&key) {
            Some(Some(answer)) => return self.post_value(answer),
            Some(None) => return,
            None => {}
        }
        let answer_to = |fields: &[(&str, JsValue)]| {
            let mut all = vec![
                ("t", "answer".into()),
                ("to", key.0.as_str().into()),
                ("n", (key.1 as f64).into()),
            ];
            all.extend_from_slice(fields);
            object(&all)
        };
        if self.stopping {
            return self.post_value(&answer_to(&[("retry", true.into())]));
        }
        let request = match decode_request(&message) {
            Ok(request) => request,
            Err(error) => return self.post_value(&answer_to(&[("error", error.into())])),
        };
        let retry = answer_to(&[("retry", true.into())]);
        let stored = answer_to(&[]);
        let done = answer_to(&[("done", true.into())]);
        if !matches!(request, Request::Offline(_)) {
            self.remember(key.clone());
        }
        let front = self.front.clone();
        let finish = move |answer: JsValue, retry: bool| {
            let _ = front.unbounded_send(Front::Answered { key, answer, retry });
        };
        match request {
            Request::Offline(offline) => self.to_driver(Command::SetOffline(offline)),
            Request::Send(stream, what) => {
                let (reply, answer) = oneshot::channel();
                self.to_driver(Command::Send {
                    stream,
                    what,
                    reply,
                });
                spawn(async move {
                    match answer.await {
                        Ok(Ok(seq)) => {
                            let _ = Reflect::set(&stored, &"seq".into(), &(seq as f64).into());
                            finish(stored, false);
                        }
                        Ok(Err(error)) if !is_stopping(&error) => {
                            let _ =
                                Reflect::set(&stored, &"error".into(), &error.to_string().into());
                            finish(stored, false);
                        }
                        _ => finish(retry, true),
                    }
                });
            }
            Request::Reported(patch) => {
                let (reply, answer) = oneshot::channel();
                self.to_driver(Command::UpdateReported { patch, reply });
                spawn(async move {
                    match answer.await {
                        Ok(Ok(())) => finish(done, false),
                        Ok(Err(error)) if !is_stopping(&error) => {
                            let _ = Reflect::set(&done, &"error".into(), &error.to_string().into());
                            finish(done, false);
                        }
                        _ => finish(retry, true),
                    }
                });
            }
        }
    }

    /// Owner: notes that a follower's request is running, forgetting the oldest beyond
    /// [`REMEMBERED_REQUESTS`].
    fn remember(&mut self, key: (String, u64)) {
        self.handled.insert(key.clone(), None);
        self.handled_order.push_back(key);
        while self.handled_order.len() > REMEMBERED_REQUESTS {
            if let Some(oldest) = self.handled_order.pop_front() {
                self.handled.remove(&oldest);
            }
        }
    }

    /// Follower: the owner answered one of our requests.
    fn answered(&mut self, message: &JsValue) {
        if string_field(message, "to").as_deref() != Some(self.id.as_str()) {
            return;
        }
        let Some(n) = Reflect::get(message, &"n".into())
            .ok()
            .and_then(|n| n.as_f64())
        else {
            return;
        };
        let n = n as u64;
        let field = |name: &str| Reflect::get(message, &name.into()).unwrap_or_default();
        // Left pending: it is sent again to the next owner.
        if field("retry").as_bool() == Some(true) {
            return;
        }
        let Some((_, reply)) = self.pending.remove(n) else {
            return;
        };
        let error = field("error").as_string().map(ClientError::FromOwner);
        match reply {
            PendingReply::Seq(reply) => {
                let result = match (error, field("seq").as_f64()) {
                    (Some(error), _) => Err(error),
                    (None, Some(seq)) => Ok(seq as Seq),
                    (None, None) => Err(ClientError::FromOwner(
                        "the owner's answer has no sequence number".into(),
                    )),
                };
                let _ = reply.send(result);
            }
            PendingReply::Done(reply) => {
                let _ = reply.send(error.map_or(Ok(()), Err));
            }
        }
        self.answer_sent_waiters();
    }

    fn answer_sent_waiters(&mut self) {
        let all_sent = self.pending.is_empty() && self.shared.borrow().stats.pending_count == 0;
        if all_sent && self.owner_present {
            for waiter in self.sent_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
    }
}

/// Whether an error only says the owner is stopping (the request goes to the next owner).
fn is_stopping(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Stopped | ClientError::Refused(SendError::Stopped)
    )
}

fn send_request(stream: &StreamOptions, what: Enqueue) -> Vec<(&'static str, JsValue)> {
    let compression = match stream.compression {
        Compression::None => "none",
        Compression::Fastest => "fastest",
        Compression::SmallestSize => "smallestSize",
    };
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .map_or(JsValue::UNDEFINED, JsValue::from_str)
    };
    let stream = object(&[
        ("streamGroup", text(&stream.stream_group)),
        ("stream", text(&stream.stream)),
        ("siteId", text(&stream.site_id)),
        ("compression", compression.into()),
    ]);
    let mut fields = vec![("kind", "send".into()), ("stream", stream)];
    match what {
        Enqueue::Message(options, payload) => fields.extend([
            ("what", "message".into()),
            ("payload", Uint8Array::from(payload.as_slice()).into()),
            (
                "options",
                object(&[
                    ("batchId", text(&options.batch_id)),
                    ("messageId", text(&options.message_id)),
                    ("batchSliceId", text(&options.batch_slice_id)),
                    ("chunkId", text(&options.chunk_id)),
                ]),
            ),
        ]),
        Enqueue::BatchCompletion(batch) => {
            fields.extend([
                ("what", "batchCompletion".into()),
                ("batchId", batch.into()),
            ]);
        }
        Enqueue::MessageCompletion(batch, message) => fields.extend([
            ("what", "messageCompletion".into()),
            ("batchId", batch.into()),
            ("messageId", message.into()),
        ]),
    }
    fields
}

fn decode_request(message: &JsValue) -> Result<Request, String> {
    let field = |name: &str| Reflect::get(message, &name.into()).unwrap_or_default();
    let text = |name: &str| {
        field(name)
            .as_string()
            .ok_or_else(|| format!("forwarded request without {name}"))
    };
    match text("kind")?.as_str() {
        "offline" => Ok(Request::Offline(field("value").as_bool().unwrap_or(false))),
        "reported" => Value::parse(text("patch")?.as_bytes())
            .map(Request::Reported)
            .map_err(|error| format!("forwarded patch is not json: {error}")),
        "send" => {
            let stream = read_stream_options(Some(&field("stream"))).map_err(|e| e.to_string())?;
            let what = match text("what")?.as_str() {
                "message" => {
                    let payload = field("payload")
                        .dyn_into::<Uint8Array>()
                        .map_err(|_| "forwarded message without payload".to_owned())?
                        .to_vec();
                    let options: MessageOptions =
                        read_message_options(Some(&field("options"))).map_err(|e| e.to_string())?;
                    Enqueue::Message(options, payload)
                }
                "batchCompletion" => Enqueue::BatchCompletion(text("batchId")?),
                "messageCompletion" => {
                    Enqueue::MessageCompletion(text("batchId")?, text("messageId")?)
                }
                other => return Err(format!("unknown forwarded enqueue '{other}'")),
            };
            Ok(Request::Send(stream, what))
        }
        other => Err(format!("unknown forwarded request '{other}'")),
    }
}

fn post(channel: &BroadcastChannel, fields: &[(&str, JsValue)]) {
    // Only a closed channel refuses; there is nobody to tell then.
    channel.post_message(&object(fields)).ok();
}

fn string_field(object: &JsValue, name: &str) -> Option<String> {
    Reflect::get(object, &name.into()).ok()?.as_string()
}

/// What a follower shows of a snapshot, to tell whether it changed.
type Figures = (Stats, bool, Option<String>, Option<u64>);

fn figures(snapshot: &Snapshot) -> Figures {
    (
        snapshot.stats.clone(),
        snapshot.offline,
        snapshot.device_id.clone(),
        snapshot.desired_version,
    )
}

fn snapshot_message(snapshot: &Snapshot) -> JsValue {
    let stats = &snapshot.stats;
    let number = |n: Option<u64>| n.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64));
    let text = |t: &Option<String>| t.as_deref().map_or(JsValue::NULL, JsValue::from_str);
    object(&[
        ("t", "snapshot".into()),
        ("pendingCount", number(Some(stats.pending_count))),
        ("pendingBytes", number(Some(stats.pending_bytes))),
        ("oldestEnqueuedAt", number(stats.oldest_enqueued_at)),
        ("windowRecords", number(Some(stats.window_records as u64))),
        ("connectionState", stats.connection_state.as_str().into()),
        ("offline", snapshot.offline.into()),
        ("workspaceId", text(&snapshot.workspace_id)),
        ("deviceId", text(&snapshot.device_id)),
        ("desired", json_to_js(&snapshot.desired)),
        ("desiredVersion", number(snapshot.desired_version)),
    ])
}

fn read_snapshot(message: &JsValue, snapshot: &mut Snapshot) {
    let field = |name: &str| Reflect::get(message, &name.into()).unwrap_or_default();
    let number = |name: &str| {
        field(name)
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| n as u64)
    };
    snapshot.stats = Stats {
        pending_count: number("pendingCount").unwrap_or_default(),
        pending_bytes: number("pendingBytes").unwrap_or_default(),
        oldest_enqueued_at: number("oldestEnqueuedAt"),
        window_records: number("windowRecords").unwrap_or_default() as usize,
        connection_state: connection_state_named(
            &field("connectionState").as_string().unwrap_or_default(),
        ),
    };
    snapshot.offline = field("offline").as_bool().unwrap_or(false);
    snapshot.workspace_id = field("workspaceId").as_string();
    snapshot.device_id = field("deviceId").as_string();
    let desired = js_sys::JSON::stringify(&field("desired"))
        .ok()
        .and_then(|text| text.as_string())
        .and_then(|text| Value::parse(text.as_bytes()).ok());
    if let Some(desired) = desired {
        snapshot.desired = desired;
    }
    snapshot.desired_version = number("desiredVersion");
}

fn connection_state_named(name: &str) -> ConnectionState {
    [
        ConnectionState::Provisioning,
        ConnectionState::Connecting,
        ConnectionState::Connected,
        ConnectionState::Failed,
        ConnectionState::Stopped,
    ]
    .into_iter()
    .find(|state| state.as_str() == name)
    .unwrap_or(ConnectionState::Disconnected)
}

impl Snapshot {
    /// What a follower shows until the owner's first snapshot arrives.
    pub(crate) fn follower() -> Self {
        Self {
            workspace_id: None,
            device_id: None,
            stats: Stats {
                pending_count: 0,
                pending_bytes: 0,
                oldest_enqueued_at: None,
                window_records: 0,
                connection_state: ConnectionState::Disconnected,
            },
            desired: Value::Object(Default::default()),
            desired_version: None,
            offline: false,
            owner: false,
        }
    }
}
