//! Helpers shared by the browser tests: the Platform the test script started, its admin API
//! through `fetch`, bounded polling, and recorders for the client's callbacks.

#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use js_sys::{Function, Reflect};
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

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
