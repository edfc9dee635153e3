//! Helpers shared by the browser tests: the JavaScript host reached through wasm-bindgen imports
//! of `wasm-web/js/` (the same modules the npm package bundles), the Platform the test script
//! started, its admin API through `fetch`, bounded polling, and recorders for the client's
//! callbacks.

#![allow(dead_code, unreachable_pub)]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use js_sys::{Function, Object, Promise, Reflect};
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

// The public API of `js/client.js`, as an app sees it (`vdev_web.d.ts`).
#[wasm_bindgen(module = "/js/client.js")]
extern "C" {
    /// A device: provisions itself, keeps a durable queue in IndexedDB, forwards it in order.
    pub type DeviceClient;

    /// `DeviceClient.start(options)` as it is, without `provideCore` first (tests/init.rs);
    /// the other suites call [`DeviceClient::start`].
    #[wasm_bindgen(static_method_of = DeviceClient, js_name = start)]
    pub fn start_promise(options: &JsValue) -> Promise;

    /// A sender for one stream; throws for invalid options.
    #[wasm_bindgen(method, catch, js_name = createStreamSender)]
    pub fn create_stream_sender(
        this: &DeviceClient,
        options: Option<Object>,
    ) -> Result<StreamSender, JsValue>;

    #[wasm_bindgen(method, js_name = pendingMessagesCount)]
    pub fn pending_messages_count(this: &DeviceClient) -> f64;

    #[wasm_bindgen(method)]
    pub fn statistics(this: &DeviceClient) -> JsValue;

    #[wasm_bindgen(method, js_name = desiredProperties)]
    pub fn desired_properties(this: &DeviceClient) -> JsValue;

    #[wasm_bindgen(method, js_name = updateReportedProperties)]
    pub fn update_reported_properties(this: &DeviceClient, patch: JsValue) -> Promise;

    #[wasm_bindgen(method, js_name = waitEnqueuedMessagesSent)]
    pub fn wait_enqueued_messages_sent(this: &DeviceClient) -> Promise;

    /// `waitEnqueuedMessagesSent({ signal, timeout })`.
    #[wasm_bindgen(method, js_name = waitEnqueuedMessagesSent)]
    pub fn wait_enqueued_messages_sent_with(this: &DeviceClient, options: &JsValue) -> Promise;

    #[wasm_bindgen(method, js_name = addEventListener)]
    pub fn add_event_listener(this: &DeviceClient, kind: &str, listener: &Function);

    #[wasm_bindgen(method, js_name = removeEventListener)]
    pub fn remove_event_listener(this: &DeviceClient, kind: &str, listener: &Function);

    #[wasm_bindgen(method, js_name = desiredPropertiesIfNewer)]
    pub fn desired_properties_if_newer(this: &DeviceClient, version: f64) -> JsValue;

    #[wasm_bindgen(method, getter, js_name = reportedPropertiesPending)]
    pub fn reported_properties_pending(this: &DeviceClient) -> bool;

    #[wasm_bindgen(method, js_name = setOffline)]
    pub fn set_offline(this: &DeviceClient, offline: bool);

    #[wasm_bindgen(method, getter)]
    pub fn offline(this: &DeviceClient) -> bool;

    #[wasm_bindgen(method, getter, js_name = deviceId)]
    pub fn device_id(this: &DeviceClient) -> Option<String>;

    #[wasm_bindgen(method, getter, js_name = workspaceId)]
    pub fn workspace_id(this: &DeviceClient) -> Option<String>;

    #[wasm_bindgen(method)]
    pub fn stop(this: &DeviceClient) -> Promise;

    #[wasm_bindgen(method)]
    pub fn forget(this: &DeviceClient, options: &JsValue) -> Promise;

    /// Sends messages to one stream.
    pub type StreamSender;

    #[wasm_bindgen(method, js_name = sendMessage)]
    pub fn send_message(this: &StreamSender, payload: JsValue, options: Option<Object>) -> Promise;

    #[wasm_bindgen(method, js_name = deliverMessage)]
    pub fn deliver_message(this: &StreamSender, payload: JsValue, options: &JsValue) -> Promise;

    #[wasm_bindgen(method, js_name = enqueueBatchCompletion)]
    pub fn enqueue_batch_completion(this: &StreamSender, batch_id: &str) -> Promise;

    #[wasm_bindgen(method, js_name = enqueueMessageCompletion)]
    pub fn enqueue_message_completion(
        this: &StreamSender,
        batch_id: &str,
        message_id: &str,
    ) -> Promise;

    /// Hands the host the factory of the wasm `Core` (what the package's `index.js` does).
    #[wasm_bindgen(js_name = provideCore)]
    fn provide_core(make_core: &Function);
}

#[wasm_bindgen(module = "/js/errors.js")]
extern "C" {
    /// The class of every error of the API.
    pub type VdevError;

    /// Its stable code.
    #[wasm_bindgen(method, getter)]
    pub fn code(this: &VdevError) -> String;

    /// Its message.
    #[wasm_bindgen(method, getter)]
    pub fn message(this: &VdevError) -> String;
}

/// `"<code>: <message>"` of an API error; panics when it is not a `VdevError`.
pub fn api_error(error: JsValue) -> String {
    let error = error
        .dyn_into::<VdevError>()
        .unwrap_or_else(|other| panic!("not a VdevError: {other:?}"));
    format!("{}: {}", error.code(), error.message())
}

impl DeviceClient {
    /// `DeviceClient.start(options)`, after handing the host this test binary's `Core`.
    pub async fn start(options: JsValue) -> Result<DeviceClient, JsValue> {
        provide_core_once();
        let client = JsFuture::from(DeviceClient::start_promise(&options)).await?;
        Ok(client.unchecked_into())
    }
}

thread_local! {
    static CORE_PROVIDED: Cell<bool> = const { Cell::new(false) };
}

/// Calls `provideCore` once with a factory of `vdev_web::Core`: the test binary links vdev-web,
/// so its `Core` class is the one the npm package's wasm module exports.
fn provide_core_once() {
    if CORE_PROVIDED.replace(true) {
        return;
    }
    let make_core = Closure::<dyn Fn(JsValue) -> JsValue>::new(|options: JsValue| {
        match vdev_web::Core::new(&options) {
            Ok(core) => JsValue::from(core),
            // `new Core(options)` throws; so does the factory.
            Err(error) => wasm_bindgen::throw_val(error.into()),
        }
    });
    provide_core(make_core.as_ref().unchecked_ref());
    // The host keeps the factory for the life of the page.
    make_core.forget();
}

// `js/store.js`: the outbox store over IndexedDB.
#[wasm_bindgen(module = "/js/store.js")]
extern "C" {
    /// Resolves to `{ store, contents }`.
    #[wasm_bindgen(js_name = openStore)]
    pub fn open_store(name: &str) -> Promise;

    #[wasm_bindgen(js_name = deleteStore)]
    fn delete_store(name: &str) -> Promise;
}

// The store object `openStore` gives (a class `store.js` does not export: no module here, and
// every call is a plain property access on the object).
#[wasm_bindgen]
extern "C" {
    pub type Store;

    /// Resolves to the answers once the transaction committed.
    #[wasm_bindgen(method)]
    pub fn execute(this: &Store, requests: &js_sys::Array) -> Promise;

    #[wasm_bindgen(method, getter)]
    pub fn name(this: &Store) -> String;

    #[wasm_bindgen(method)]
    pub fn close(this: &Store);
}

/// Deletes the IndexedDB database `name` through the host's `deleteStore`.
pub async fn delete_database(name: &str) -> Result<(), JsValue> {
    JsFuture::from(delete_store(name)).await.map(drop)
}

// wasm-bindgen copies into the test's `snippets/` folder only the files named in a
// `module = "..."` attribute, not the files those import. client.js and store.js import their
// siblings by relative path (`./io.js`, ...), so every module of js/ is named here to land beside
// them. An import that no test calls is enough: the file is copied and nothing else happens.
#[wasm_bindgen(module = "/js/io.js")]
extern "C" {
    #[wasm_bindgen(js_name = describe)]
    fn io_describe(error: &JsValue) -> String;
}
#[wasm_bindgen(module = "/js/device.js")]
extern "C" {
    type Driver;
}
#[wasm_bindgen(module = "/js/tabs.js")]
extern "C" {
    type Coordinator;
}
#[wasm_bindgen(module = "/js/timer.js")]
extern "C" {
    type WakeTimer;
}

/// The `vdev-platform` that `wasm-web/scripts/test.sh` started, as baked in at compile time.
pub struct Platform {
    pub url: &'static str,
    pub admin_token: &'static str,
    pub workspace: &'static str,
    pub provisioning_token: &'static str,
    /// The control server of `scripts/platform_control.py` (stops and restarts the platform).
    pub control_url: &'static str,
}

pub fn platform() -> Platform {
    Platform {
        url: setting(option_env!("VDEV_WEB_TEST_HTTP_URL")),
        admin_token: setting(option_env!("VDEV_WEB_TEST_ADMIN_TOKEN")),
        workspace: setting(option_env!("VDEV_WEB_TEST_WORKSPACE")),
        provisioning_token: setting(option_env!("VDEV_WEB_TEST_PROVISIONING_TOKEN")),
        control_url: setting(option_env!("VDEV_WEB_TEST_CONTROL_URL")),
    }
}

/// The stand-in in its strict contract (`--contract iothub`) that `test.sh` starts for
/// tests/strict.rs, and the hub host name Chromium resolves to it; `None` when it did not (it
/// needs root, for port 443). `url` is its plain listener, which serves the admin API only.
pub fn strict_platform() -> Option<(Platform, &'static str)> {
    Some((
        Platform {
            url: option_env!("VDEV_WEB_STRICT_ADMIN_URL")?,
            admin_token: option_env!("VDEV_WEB_STRICT_ADMIN_TOKEN")?,
            workspace: option_env!("VDEV_WEB_STRICT_WORKSPACE")?,
            provisioning_token: option_env!("VDEV_WEB_STRICT_PROVISIONING_TOKEN")?,
            control_url: option_env!("VDEV_WEB_STRICT_CONTROL_URL")?,
        },
        option_env!("VDEV_WEB_STRICT_HUB")?,
    ))
}

/// A compile-time setting of the test script; without it the platform tests cannot run.
fn setting(value: Option<&'static str>) -> &'static str {
    value.unwrap_or_else(|| {
        panic!(
            "no platform settings: run wasm-web/scripts/test.sh, which starts vdev-platform \
             and passes its VDEV_WEB_TEST_* settings to the compiler"
        )
    })
}

/// A name nobody else used: `prefix-<random>`.
pub fn unique(prefix: &str) -> String {
    let n = (js_sys::Math::random() * 1e12) as u64;
    format!("{prefix}-{n:x}")
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_request(request: &Request) -> js_sys::Promise;
}

impl Platform {
    /// Calls the admin API; returns the status and the JSON body (null when empty).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let init = RequestInit::new();
        init.set_method(method);
        let headers = web_sys::Headers::new().unwrap();
        headers
            .append("Authorization", &format!("Bearer {}", self.admin_token))
            .unwrap();
        if let Some(body) = body {
            headers.append("Content-Type", "application/json").unwrap();
            init.set_body(&JsValue::from_str(&body.to_string()));
        }
        init.set_headers(&headers);
        let url = format!("{}{path}", self.url);
        let request = Request::new_with_str_and_init(&url, &init).unwrap();
        let response: Response = JsFuture::from(fetch_request(&request))
            .await
            .unwrap_or_else(|e| panic!("{method} {url} failed: {e:?}"))
            .unchecked_into();
        let text = JsFuture::from(response.text().unwrap()).await.unwrap();
        let text = text.as_string().unwrap_or_default();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (response.status(), json)
    }

    /// Calls the admin API for raw bytes (e.g. a blob's content); returns the status and body.
    pub async fn admin_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let init = RequestInit::new();
        let headers = web_sys::Headers::new().unwrap();
        headers
            .append("Authorization", &format!("Bearer {}", self.admin_token))
            .unwrap();
        init.set_headers(&headers);
        let url = format!("{}{path}", self.url);
        let request = Request::new_with_str_and_init(&url, &init).unwrap();
        let response: Response = JsFuture::from(fetch_request(&request))
            .await
            .unwrap_or_else(|e| panic!("GET {url} failed: {e:?}"))
            .unchecked_into();
        let body = JsFuture::from(response.array_buffer().unwrap())
            .await
            .unwrap();
        (response.status(), js_sys::Uint8Array::new(&body).to_vec())
    }

    /// The Platform's technician console in a frame of this page, signed in: its page is
    /// fetched from the Platform and given a `<base>` there, so that its requests go to the
    /// Platform as when it is opened from there, and the admin token goes where the console
    /// keeps it (the session storage, which the frame shares with this page). Resolves to the
    /// `iframe` once the page has loaded; removing the frame ends the console.
    pub async fn open_console(&self) -> JsValue {
        let (status, html) = self.admin_bytes("/console").await;
        assert_eq!(status, 200, "the console's page");
        let html = String::from_utf8(html).expect("the console's page is text");
        let open = Function::new_with_args(
            "html, base, token",
            r#"sessionStorage.setItem("vdev-admin-token", token);
            const frame = document.createElement("iframe");
            frame.style.cssText = "width: 1200px; height: 800px";
            const loaded = new Promise((resolve) => frame.addEventListener("load", () => resolve(frame), { once: true }));
            frame.srcdoc = html.replace("<head>", `<head><base href="${base}/">`);
            document.body.append(frame);
            return loaded;"#,
        );
        let loaded = open
            .call3(
                &JsValue::NULL,
                &html.into(),
                &self.url.into(),
                &self.admin_token.into(),
            )
            .expect("the frame is made");
        JsFuture::from(loaded.unchecked_into::<Promise>())
            .await
            .expect("the console loads")
    }

    /// Stops (`"stop"`) or starts again (`"start"`) the platform process, same port and data
    /// directory; returns once it is gone or accepts connections again.
    pub async fn control(&self, action: &str) {
        let init = RequestInit::new();
        init.set_method("POST");
        let url = format!("{}/platform/{action}", self.control_url);
        let request = Request::new_with_str_and_init(&url, &init).unwrap();
        let response: Response = JsFuture::from(fetch_request(&request))
            .await
            .unwrap_or_else(|e| panic!("POST {url} failed: {e:?}"))
            .unchecked_into();
        let text = JsFuture::from(response.text().unwrap()).await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "platform {action}: {}",
            text.as_string().unwrap_or_default()
        );
    }

    /// How many requests followed a redirect of the control server's `/redirect/...` to its
    /// cleartext, non-loopback-by-rule URL.
    pub async fn redirects_followed(&self) -> u32 {
        let init = RequestInit::new();
        init.set_method("POST");
        let url = format!("{}/redirects-followed", self.control_url);
        let request = Request::new_with_str_and_init(&url, &init).unwrap();
        let response: Response = JsFuture::from(fetch_request(&request))
            .await
            .unwrap_or_else(|e| panic!("POST {url} failed: {e:?}"))
            .unchecked_into();
        let text = JsFuture::from(response.text().unwrap()).await.unwrap();
        text.as_string()
            .and_then(|t| t.parse().ok())
            .expect("a count")
    }

    /// A new Provisioning Token of the workspace with these options; returns the token.
    pub async fn create_provisioning_token(&self, options: Value) -> String {
        let mut body = options;
        body["name"] = Value::String(unique("web-test-token"));
        let path = format!("/workspaces/{}/provisioning-tokens", self.workspace);
        let (status, answer) = self.admin("POST", &path, Some(body)).await;
        assert!(
            status < 300,
            "creating a provisioning token answered {status}: {answer}"
        );
        answer["token"].as_str().expect("the new token").to_owned()
    }

    /// The Registration Tokens issued to `device_id`, newest first.
    pub async fn registration_tokens(&self, device_id: &str) -> Vec<Value> {
        let path = format!(
            "/workspaces/{}/registration-tokens?deviceId={device_id}",
            self.workspace
        );
        let (status, answer) = self.admin("GET", &path, None).await;
        assert_eq!(status, 200, "registration tokens answered {answer}");
        answer.as_array().cloned().unwrap_or_default()
    }

    /// Revokes the device's active Registration Token, as an administrator would.
    pub async fn revoke_active_token(&self, device_id: &str) {
        let tokens = self.registration_tokens(device_id).await;
        let active = tokens
            .iter()
            .find(|t| t["state"] == "active")
            .expect("an active registration token");
        let path = format!(
            "/workspaces/{}/registration-tokens/{}/revoke",
            self.workspace,
            active["id"].as_str().expect("a token id")
        );
        let (status, answer) = self.admin("POST", &path, None).await;
        assert!(status < 300, "revoke answered {status}: {answer}");
    }

    /// Approves a provisioning operation as a technician would.
    pub async fn approve(&self, operation_id: &str) {
        let path = format!(
            "/workspaces/{}/provisioning-operations/approve",
            self.workspace
        );
        let body = serde_json::json!({ "provisioningOperationId": operation_id });
        let (status, answer) = self.admin("PUT", &path, Some(body)).await;
        assert!(status < 300, "approve answered {status}: {answer}");
    }

    /// The messages the Platform stored for `device_id`, oldest first.
    pub async fn messages(&self, device_id: &str) -> Vec<Value> {
        let path = format!(
            "/workspaces/{}/devices/{device_id}/messages?limit=10000",
            self.workspace
        );
        let (status, answer) = self.admin("GET", &path, None).await;
        assert_eq!(status, 200, "messages answered {answer}");
        answer.as_array().cloned().unwrap_or_default()
    }

    /// The stand-in's facts of the device's latest MQTT session: `keepAliveSeconds` (its
    /// CONNECT's) and `peakInFlight` (the most telemetry publishes unacknowledged at once).
    pub async fn session(&self, device_id: &str) -> Value {
        let path = format!("/workspaces/{}/devices/{device_id}/session", self.workspace);
        let (status, answer) = self.admin("GET", &path, None).await;
        assert_eq!(status, 200, "session answered {answer}");
        answer
    }

    /// Provisioning operations of the workspace that asked for `device_id`.
    pub async fn operations_for(&self, device_id: &str) -> Vec<Value> {
        let path = format!("/workspaces/{}/provisioning-operations", self.workspace);
        let (status, answer) = self.admin("GET", &path, None).await;
        assert_eq!(status, 200, "operations answered {answer}");
        answer
            .as_array()
            .into_iter()
            .flatten()
            .filter(|op| op["requestedDeviceId"] == device_id)
            .cloned()
            .collect()
    }
}

/// Polls `condition` every 20 ms until it holds; panics after `timeout_ms` naming `what`.
pub async fn wait_until(what: &str, timeout_ms: f64, mut condition: impl FnMut() -> bool) {
    let deadline = js_sys::Date::now() + timeout_ms;
    while !condition() {
        assert!(
            js_sys::Date::now() < deadline,
            "timed out after {timeout_ms} ms waiting for {what}"
        );
        TimeoutFuture::new(20).await;
    }
}

/// Like [`wait_until`] for a condition that needs to await (e.g. asking the Platform).
pub async fn wait_until_async<T, F, Fut>(what: &str, timeout_ms: f64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = js_sys::Date::now() + timeout_ms;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            js_sys::Date::now() < deadline,
            "timed out after {timeout_ms} ms waiting for {what}"
        );
        TimeoutFuture::new(100).await;
    }
}

/// The arguments of every call of a callback (its first two).
type Calls = Rc<RefCell<Vec<(JsValue, JsValue)>>>;

/// Every value a callback was called with (its first argument, and its second if any).
#[derive(Clone)]
pub struct Recorder {
    pub calls: Calls,
    _closure: Rc<Closure<dyn FnMut(JsValue, JsValue)>>,
}

impl Recorder {
    /// A recorder and the function to hand to the client.
    pub fn new() -> (Self, Function) {
        let calls: Calls = Rc::default();
        let sink = calls.clone();
        let closure = Closure::<dyn FnMut(JsValue, JsValue)>::new(move |a, b| {
            sink.borrow_mut().push((a, b));
        });
        let function: Function = closure.as_ref().clone().unchecked_into();
        let recorder = Self {
            calls,
            _closure: Rc::new(closure),
        };
        (recorder, function)
    }

    pub fn len(&self) -> usize {
        self.calls.borrow().len()
    }

    pub fn first_args(&self) -> Vec<JsValue> {
        self.calls.borrow().iter().map(|(a, _)| a.clone()).collect()
    }
}

/// `object[name]` as a string, for reading the plain objects the client hands its callbacks.
pub fn field_string(object: &JsValue, name: &str) -> Option<String> {
    Reflect::get(object, &JsValue::from_str(name))
        .ok()
        .and_then(|v| v.as_string())
}

/// `object[name]` as a number.
pub fn field_number(object: &JsValue, name: &str) -> Option<f64> {
    Reflect::get(object, &JsValue::from_str(name))
        .ok()
        .and_then(|v| v.as_f64())
}

/// A plain object from name/value pairs.
pub fn js_object(properties: &[(&str, JsValue)]) -> JsValue {
    let object = js_sys::Object::new();
    for (name, value) in properties {
        Reflect::set(&object, &JsValue::from_str(name), value).unwrap();
    }
    object.into()
}
