//! Every way the device can fail to make progress reaches the app with a specific reason, in
//! the core's vocabulary (`onEvent`), within 10 s, in a real browser against a real
//! `vdev-platform`: nothing listening at the instance URL, a wrong Provisioning Token, the
//! gateway refusing the CONNECT, a revoked Registration Token (the gateway refuses the CONNECT, then the Platform the token),
//! a redirect to a cleartext URL that is not loopback (refused, never followed), and an answer
//! whose body does not end (cut at the core's limit).

#![cfg(target_arch = "wasm32")]

mod common;

use common::{DeviceClient, Recorder, field_string, js_object, platform, unique, wait_until};
use js_sys::{Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The acceptance bound: the app hears why within this many milliseconds.
const WITHIN_MS: f64 = 10_000.0;

struct Started {
    client: DeviceClient,
    events: Recorder,
    operations: Recorder,
    /// What the `onProvisioningFailed` shortcut was given.
    provisioning_failures: Recorder,
    database: String,
}

async fn start(instance: &str, provisioning_token: &str, device_id: &str) -> Started {
    let database = unique("vdev-reasons");
    let (events, on_event) = Recorder::new();
    let (operations, on_operation) = Recorder::new();
    let (provisioning_failures, on_provisioning_failed) = Recorder::new();
    let options = js_object(&[
        ("instance", instance.into()),
        ("provisioningToken", provisioning_token.into()),
        ("deviceId", device_id.into()),
        ("database", database.as_str().into()),
        ("onEvent", on_event.into()),
        ("onProvisioningOperation", on_operation.into()),
        ("onProvisioningFailed", on_provisioning_failed.into()),
    ]);
    let client = DeviceClient::start(options)
        .await
        .expect("the client starts");
    Started {
        client,
        events,
        operations,
        provisioning_failures,
        database,
    }
}

fn field(object: &JsValue, path: &[&str]) -> JsValue {
    path.iter().fold(object.clone(), |value, name| {
        Reflect::get(&value, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
    })
}

impl Started {
    /// The first event of `kind` for which `accept` holds, once the client told it.
    async fn event(&self, kind: &str, accept: impl Fn(&JsValue) -> bool) -> JsValue {
        let found = || {
            self.events
                .first_args()
                .into_iter()
                .find(|event| field_string(event, "kind").as_deref() == Some(kind) && accept(event))
        };
        wait_until(&format!("a `{kind}` event"), WITHIN_MS, || {
            found().is_some()
        })
        .await;
        found().expect("found above")
    }

    async fn stop(self) {
        JsFuture::from(self.client.stop().unchecked_into::<Promise>())
            .await
            .expect("stop resolves");
        common::delete_database(&self.database)
            .await
            .expect("the database is deleted");
    }
}

#[wasm_bindgen_test]
async fn nothing_listening_at_the_instance_url_is_a_network_failure_of_the_provisioning_request() {
    // Port 9 (discard) on loopback: nothing listens there on the test machines.
    let device = start(
        "http://127.0.0.1:9",
        platform().provisioning_token,
        &unique("web-nowhere"),
    )
    .await;
    let event = device
        .event("requestFailed", |e| {
            field_string(e, "request").as_deref() == Some("provisioningInit")
        })
        .await;
    assert_eq!(
        field_string(&field(&event, &["failure"]), "code").as_deref(),
        Some("network")
    );
    let message = field_string(&field(&event, &["failure"]), "message").unwrap_or_default();
    assert!(message.starts_with("network error: "), "{message}");
    device.stop().await;
}

#[wasm_bindgen_test]
async fn a_wrong_provisioning_token_ends_provisioning_with_that_reason() {
    let device = start(platform().url, "not-a-token", &unique("web-badtoken")).await;
    let event = device.event("provisioningFailed", |_| true).await;
    assert_eq!(
        field_string(&field(&event, &["reason"]), "code").as_deref(),
        Some("invalidProvisioningToken")
    );
    // The shortcut callback gets the same typed reason, not prose.
    let shortcut = device.provisioning_failures.first_args();
    assert_eq!(
        shortcut
            .first()
            .and_then(|r| field_string(r, "code"))
            .as_deref(),
        Some("invalidProvisioningToken"),
        "onProvisioningFailed is given the reason object"
    );
    let failed = device
        .event("requestFailed", |e| {
            field_string(e, "request").as_deref() == Some("provisioningInit")
        })
        .await;
    assert_eq!(
        field(&failed, &["failure", "status"]).as_f64(),
        Some(401.0),
        "the Platform's answer travels with the failure"
    );
    device.stop().await;
}

#[wasm_bindgen_test]
async fn a_revoked_registration_token_is_refused_by_the_gateway_and_then_discarded() {
    let device_id = unique("web-revoked");
    let device = start(platform().url, platform().provisioning_token, &device_id).await;
    wait_until("a provisioning operation", 60_000.0, || {
        device.operations.len() > 0
    })
    .await;
    let operation = field_string(&device.operations.first_args()[0], "id").expect("an id");
    platform().approve(&operation).await;
    device
        .event("connectionStateChanged", |e| {
            field_string(e, "state").as_deref() == Some("connected")
        })
        .await;

    platform().revoke_active_token(&device_id).await;

    let discarded = device.event("registrationTokenDiscarded", |_| true).await;
    assert_eq!(
        field_string(&field(&discarded, &["reason"]), "code").as_deref(),
        Some("refused")
    );
    assert_eq!(
        field(&discarded, &["reason", "failure", "status"]).as_f64(),
        Some(401.0)
    );
    // The live session was closed and the reconnect with the old credential refused, or the
    // register call refused first: either way the connection's end has a reason too.
    let lost = device.event("connectionLost", |_| true).await;
    let code = field_string(&field(&lost, &["reason"]), "code").unwrap_or_default();
    assert!(
        ["closed", "refused"].contains(&code.as_str()),
        "connection lost for a reason: {code}"
    );
    device.stop().await;
}

#[wasm_bindgen_test]
async fn a_redirect_to_a_cleartext_url_is_refused_and_never_followed() {
    let instance = format!("{}/redirect", platform().control_url);
    let device = start(&instance, "token", &unique("web-redirect")).await;
    let event = device
        .event("requestFailed", |e| {
            field_string(e, "request").as_deref() == Some("provisioningInit")
        })
        .await;
    assert_eq!(
        field_string(&field(&event, &["failure"]), "code").as_deref(),
        Some("redirected")
    );
    device.stop().await;
    assert_eq!(platform().redirects_followed().await, 0, "never followed");
}

#[wasm_bindgen_test]
async fn a_cleartext_instance_url_off_loopback_is_refused_at_start() {
    let options = js_object(&[
        ("instance", "http://platform.example".into()),
        ("provisioningToken", "token".into()),
        ("database", unique("vdev-reasons").into()),
    ]);
    let error = DeviceClient::start(options)
        .await
        .err()
        .expect("start refuses it");
    let message = field_string(&error, "message").unwrap_or_default();
    assert!(
        message.starts_with("option instance: refusing unencrypted http://platform.example"),
        "{message}"
    );
}

#[wasm_bindgen_test]
async fn the_gateway_refusing_the_connect_is_told_with_its_connack_code() {
    let device = start(
        platform().url,
        platform().provisioning_token,
        &unique("web-refused"),
    )
    .await;
    wait_until("a provisioning operation", 60_000.0, || {
        device.operations.len() > 0
    })
    .await;
    let operation = field_string(&device.operations.first_args()[0], "id").expect("an id");
    // The next CONNECT (this device's first) is refused: "server unavailable", code 3.
    let fault = serde_json::json!({ "target": "mqttConnect", "count": 1 });
    let (status, answer) = platform().admin("POST", "/faults", Some(fault)).await;
    assert!(status < 300, "arming the fault answered {status}: {answer}");
    platform().approve(&operation).await;
    let lost = device.event("connectionLost", |_| true).await;
    assert_eq!(
        field_string(&field(&lost, &["reason"]), "code").as_deref(),
        Some("refused")
    );
    assert_eq!(field(&lost, &["reason", "returnCode"]).as_f64(), Some(3.0));
    // And the device gets past it: the next attempt connects.
    device
        .event("connectionStateChanged", |e| {
            field_string(e, "state").as_deref() == Some("connected")
        })
        .await;
    device.stop().await;
}

#[wasm_bindgen_test]
async fn an_answer_that_does_not_end_fails_the_request_instead_of_filling_the_memory() {
    let instance = format!("{}/endless", platform().control_url);
    let device = start(&instance, "token", &unique("web-endless")).await;
    let event = device
        .event("requestFailed", |e| {
            field_string(e, "request").as_deref() == Some("provisioningInit")
        })
        .await;
    assert_eq!(
        field_string(&field(&event, &["failure"]), "code").as_deref(),
        Some("malformed")
    );
    let message = field_string(&field(&event, &["failure"]), "message").unwrap_or_default();
    assert_eq!(
        message,
        "the answer could not be read: it is longer than the 1048576 bytes the device reads"
    );
    device.stop().await;
}
