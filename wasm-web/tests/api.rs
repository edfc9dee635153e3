//! The JavaScript API's refusals, in a real browser and without any network traffic: options
//! of the wrong type, unencrypted URLs to hosts that are not loopback, payloads of the wrong
//! type, and calls after `stop()`.

#![cfg(target_arch = "wasm32")]

mod common;

use common::{DeviceClient, js_object, unique};
use js_sys::{Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// `"<code>: <message>"` of start's refusal.
async fn start_error(options: JsValue) -> String {
    let error = DeviceClient::start(options)
        .await
        .map(|_| ())
        .expect_err("start refuses these options");
    common::api_error(error)
}

/// `sender.sendMessage(text)`, awaited.
fn send_text(sender: &common::StreamSender, text: &str) -> JsFuture {
    JsFuture::from(Promise::from(JsValue::from(
        sender.send_message(JsValue::from_str(text).unchecked_into(), None),
    )))
}

/// `"<code>: <message>"` of the promise's rejection.
async fn rejection(promise: Promise) -> String {
    let error = JsFuture::from(promise)
        .await
        .expect_err("the promise rejects");
    common::api_error(error)
}

#[wasm_bindgen_test]
async fn start_refuses_unencrypted_urls_to_hosts_that_are_not_loopback() {
    let message = start_error(js_object(&[
        ("instance", "http://example.com".into()),
        ("provisioningToken", "token".into()),
        ("database", unique("vdev-api").into()),
    ]))
    .await;
    assert!(
        message
            .starts_with("invalidOption: option instance: refusing unencrypted http://example.com"),
        "{message}"
    );
}

#[wasm_bindgen_test]
async fn start_names_the_option_that_is_missing_or_mistyped() {
    let missing = start_error(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
    ]))
    .await;
    assert_eq!(missing, "invalidOption: option database: is required");

    let mistyped = start_error(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", "db".into()),
        ("onMessageOutcome", "not a function".into()),
    ]))
    .await;
    assert_eq!(
        mistyped,
        "invalidOption: option onMessageOutcome: must be a function"
    );

    let bad_id = start_error(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", "db".into()),
        ("deviceId", "no spaces allowed".into()),
    ]))
    .await;
    assert!(
        bad_id.starts_with("invalidOption: option deviceId: "),
        "{bad_id}"
    );

    // The core's rule for parameter names holds in the browser too.
    let parameters = js_object(&[("", "x".into())]);
    let unnamed = start_error(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", "db".into()),
        ("provisioningParameters", parameters),
    ]))
    .await;
    assert_eq!(
        unnamed,
        "invalidOption: option provisioningParameters: a name is empty"
    );

    let empty_token = start_error(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "".into()),
        ("database", "db".into()),
    ]))
    .await;
    assert_eq!(
        empty_token,
        "invalidOption: option provisioningToken: is empty"
    );

    // TCP and TLS are the Node.js build's; a browser says so at start.
    for (transport, expected) in [
        (
            "tcp",
            "invalidOption: option transport: tcp is not available in this host; use websocket",
        ),
        (
            "carrier-pigeon",
            "invalidOption: option transport: \"carrier-pigeon\" is not tcp, tls or websocket",
        ),
    ] {
        let refused = start_error(js_object(&[
            ("instance", "http://127.0.0.1:9".into()),
            ("provisioningToken", "token".into()),
            ("database", "db".into()),
            ("transport", transport.into()),
        ]))
        .await;
        assert_eq!(refused, expected);
    }
}

#[wasm_bindgen_test]
async fn sends_of_the_wrong_type_or_after_stop_are_rejected() {
    // Port 9 (discard) on loopback: nothing answers there, and nothing leaves the machine.
    let database = unique("vdev-api");
    let client = DeviceClient::start(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", database.clone().into()),
    ]))
    .await
    .expect("the client starts");
    // `constructor` and `toString` are names every plain object inherits: not compressions.
    for name in ["best", "constructor", "toString"] {
        let compression = client
            .create_stream_sender(Some(
                js_object(&[("compression", name.into())]).unchecked_into(),
            ))
            .map(|_| ())
            .expect_err("an unknown compression is refused");
        let compression = common::api_error(compression);
        assert!(
            compression.starts_with("invalidOption: option compression: "),
            "{name}: {compression}"
        );
    }

    let sender = client.create_stream_sender(None).unwrap();
    let wrong = sender.send_message(JsValue::from_f64(42.0).unchecked_into(), None);
    assert_eq!(
        rejection(wrong.unchecked_into()).await,
        "invalidOption: option payload: must be a Uint8Array or a string"
    );

    let seq = JsFuture::from(Promise::from(JsValue::from(
        sender.send_message(JsValue::from_str("kept").unchecked_into(), None),
    )))
    .await
    .expect("stored while the platform is unreachable");
    assert_eq!(seq.as_f64(), Some(0.0));
    assert_eq!(client.pending_messages_count(), 1.0);

    JsFuture::from(Promise::from(JsValue::from(client.stop())))
        .await
        .expect("stop resolves");
    let after = sender.send_message(JsValue::from_str("late").unchecked_into(), None);
    assert_eq!(
        rejection(after.unchecked_into()).await,
        "stopped: the device is stopped"
    );
    common::delete_database(&database).await.expect("deleted");
}

#[wasm_bindgen_test]
async fn a_storage_failure_rejects_the_send_and_reports_the_outcome() {
    let database = unique("vdev-api");
    let (outcomes, on_outcome) = common::Recorder::new();
    let client = DeviceClient::start(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", database.clone().into()),
        ("onMessageOutcome", on_outcome.into()),
    ]))
    .await
    .expect("the client starts");
    let sender = client.create_stream_sender(None).unwrap();
    let send = |text: &str| send_text(&sender, text);
    assert_eq!(send("stored").await.unwrap().as_f64(), Some(0.0));

    // Deleting the database closes the client's connection to it: every later transaction fails.
    common::delete_database(&database).await.expect("deleted");
    let message = common::api_error(send("lost").await.expect_err("not stored"));
    assert!(
        message.starts_with("storageFailed: message not stored: storage failed: "),
        "{message}"
    );
    common::wait_until("the rejected outcome", 5_000.0, || outcomes.len() == 1).await;
    let outcome = &outcomes.first_args()[0];
    assert_eq!(common::field_number(outcome, "sequence"), Some(1.0));
    assert_eq!(
        common::field_string(outcome, "status").as_deref(),
        Some("rejected")
    );
    // The outcome's reason is the core's typed reason, the same object `messageRejected` carries.
    let reason = js_sys::Reflect::get(outcome, &"reason".into()).unwrap();
    assert_eq!(
        common::field_string(&reason, "code").as_deref(),
        Some("notStored")
    );
    assert!(
        common::field_string(&reason, "message")
            .unwrap_or_default()
            .starts_with("not stored: storage failed: ")
    );
    assert_eq!(
        client.pending_messages_count(),
        1.0,
        "the stored one is still pending"
    );
    JsFuture::from(Promise::from(JsValue::from(client.stop())))
        .await
        .expect("stop resolves even though storage keeps failing");
}

#[wasm_bindgen_test]
async fn the_client_asks_for_persistent_storage_and_says_what_the_browser_answered() {
    let database = unique("vdev-api");
    let client = DeviceClient::start(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", database.clone().into()),
    ]))
    .await
    .expect("the client starts");
    let storage = Reflect::get(
        &Reflect::get(&js_sys::global(), &JsValue::from_str("navigator")).unwrap(),
        &JsValue::from_str("storage"),
    )
    .unwrap();
    if storage.is_undefined() {
        // WebKitGTK has no StorageManager: nobody can say whether the storage is kept, and the
        // client says so with `null` instead of guessing.
        // A turn for anything the client might still do with the (missing) answer.
        gloo_timers::future::TimeoutFuture::new(50).await;
        let said = Reflect::get(
            &client.statistics(),
            &JsValue::from_str("persistentStorage"),
        )
        .unwrap();
        assert!(
            said.is_null(),
            "an engine without navigator.storage: {said:?}"
        );
        JsFuture::from(Promise::from(JsValue::from(client.stop())))
            .await
            .expect("stop resolves");
        common::delete_database(&database).await.expect("deleted");
        return;
    }
    // Chromium answers without asking anyone; `start` does not wait for it.
    let answer = || {
        Reflect::get(
            &client.statistics(),
            &JsValue::from_str("persistentStorage"),
        )
        .unwrap()
        .as_bool()
    };
    common::wait_until("the browser's answer", 10_000.0, || answer().is_some()).await;
    let said = answer().expect("statistics().persistentStorage is the browser's answer");
    // The browser's own record of the site, asked independently.
    let persisted: js_sys::Function = Reflect::get(&storage, &JsValue::from_str("persisted"))
        .unwrap()
        .unchecked_into();
    let browser = JsFuture::from(Promise::from(persisted.call0(&storage).unwrap()))
        .await
        .unwrap()
        .as_bool();
    assert_eq!(Some(said), browser);
    JsFuture::from(Promise::from(JsValue::from(client.stop())))
        .await
        .expect("stop resolves");
    common::delete_database(&database).await.expect("deleted");
}

#[wasm_bindgen_test]
async fn start_does_not_wait_for_an_unanswered_persistent_storage_question() {
    // As in Firefox, which asks the user: a question nobody answers (a headless Firefox never
    // resolves it). `start` used to await it and never resolved there.
    let navigator: js_sys::Object =
        Reflect::get(&js_sys::global(), &JsValue::from_str("navigator"))
            .unwrap()
            .unchecked_into();
    let mut storage = Reflect::get(&navigator, &JsValue::from_str("storage")).unwrap();
    let engine_has_storage = !storage.is_undefined();
    if !engine_has_storage {
        // WebKitGTK has no StorageManager; give the page one that asks like Firefox's.
        storage = js_sys::Object::new().into();
        let value: js_sys::Object =
            js_object(&[("value", storage.clone()), ("configurable", JsValue::TRUE)])
                .unchecked_into();
        assert!(
            Reflect::define_property(&navigator, &JsValue::from_str("storage"), &value).unwrap()
        );
    }
    let storage: js_sys::Object = storage.unchecked_into();
    let replace = |name: &str, body: &str| {
        let value = js_object(&[
            ("value", js_sys::Function::new_no_args(body).into()),
            ("configurable", JsValue::TRUE),
        ])
        .unchecked_into();
        assert!(Reflect::define_property(&storage, &JsValue::from_str(name), &value).unwrap());
    };
    replace("persisted", "return Promise.resolve(false)");
    replace("persist", "return new Promise(() => {})");
    let database = unique("vdev-api");
    let started = DeviceClient::start(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", database.clone().into()),
    ]))
    .await;
    for name in ["persisted", "persist"] {
        Reflect::delete_property(&storage, &JsValue::from_str(name)).unwrap();
    }
    if !engine_has_storage {
        Reflect::delete_property(&navigator, &JsValue::from_str("storage")).unwrap();
    }
    let client = started.expect("the client starts");
    let said = Reflect::get(
        &client.statistics(),
        &JsValue::from_str("persistentStorage"),
    )
    .unwrap();
    assert!(said.is_null(), "no answer yet: {said:?}");
    JsFuture::from(Promise::from(JsValue::from(client.stop())))
        .await
        .expect("stop resolves");
    common::delete_database(&database).await.expect("deleted");
}

#[wasm_bindgen_test]
async fn without_web_locks_start_refuses_instead_of_letting_two_clients_write_one_database() {
    // As on an insecure http:// page off localhost: the page has no `navigator.locks`.
    let navigator: js_sys::Object =
        Reflect::get(&js_sys::global(), &JsValue::from_str("navigator"))
            .unwrap()
            .unchecked_into();
    let hidden: js_sys::Object = js_object(&[
        ("value", JsValue::UNDEFINED),
        ("configurable", JsValue::TRUE),
    ])
    .unchecked_into();
    assert!(Reflect::define_property(&navigator, &JsValue::from_str("locks"), &hidden).unwrap());
    let database = unique("vdev-api");
    let options = || {
        js_object(&[
            ("instance", "http://127.0.0.1:9".into()),
            ("provisioningToken", "token".into()),
            ("database", database.clone().into()),
        ])
    };
    let first = start_error(options()).await;
    let second = start_error(options()).await;
    Reflect::delete_property(&navigator, &JsValue::from_str("locks")).unwrap();
    for refusal in [first, second] {
        assert!(
            refusal.starts_with("coordinationFailed: this page has no Web Locks, and vdev cannot"),
            "{refusal}"
        );
    }
    // With Web Locks back, the same database starts.
    let client = DeviceClient::start(options()).await.expect("starts");
    JsFuture::from(Promise::from(JsValue::from(client.stop())))
        .await
        .expect("stop resolves");
    common::delete_database(&database).await.expect("deleted");
}

#[wasm_bindgen_test]
async fn on_a_page_that_is_not_a_secure_context_start_refuses_and_says_why() {
    // For real where the page is insecure: WebKit serves this suite once more from
    // http://127.0.0.1, which it does not count as a secure context, so the page has no Web
    // Locks. In an engine that counts the page secure, the two are hidden as they would be.
    let global: js_sys::Object = js_sys::global().unchecked_into();
    let navigator: js_sys::Object = Reflect::get(&global, &JsValue::from_str("navigator"))
        .unwrap()
        .unchecked_into();
    let secure = Reflect::get(&global, &JsValue::from_str("isSecureContext"))
        .unwrap()
        .as_bool()
        == Some(true);
    let hide = |object: &js_sys::Object, name: &str, value: JsValue| {
        let descriptor: js_sys::Object =
            js_object(&[("value", value), ("configurable", JsValue::TRUE)]).unchecked_into();
        assert!(Reflect::define_property(object, &JsValue::from_str(name), &descriptor).unwrap());
    };
    // `isSecureContext` is the global object's own property: put the original back after.
    let original =
        js_sys::Object::get_own_property_descriptor(&global, &JsValue::from_str("isSecureContext"));
    if secure {
        hide(&global, "isSecureContext", JsValue::FALSE);
        hide(&navigator, "locks", JsValue::UNDEFINED);
    }
    let database = unique("vdev-api");
    let refusal = start_error(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", database.into()),
    ]))
    .await;
    if secure {
        Reflect::delete_property(&global, &JsValue::from_str("isSecureContext")).unwrap();
        if !original.is_undefined() {
            assert!(
                Reflect::define_property(
                    &global,
                    &JsValue::from_str("isSecureContext"),
                    original.unchecked_ref()
                )
                .unwrap()
            );
        }
        Reflect::delete_property(&navigator, &JsValue::from_str("locks")).unwrap();
    }
    let origin = Reflect::get(
        &Reflect::get(&global, &JsValue::from_str("location")).unwrap(),
        &JsValue::from_str("origin"),
    )
    .unwrap()
    .as_string()
    .unwrap();
    assert!(
        refusal.starts_with(&format!(
            "coordinationFailed: this page ({origin}) is not a secure context in this browser, \
             so it has no Web Locks"
        )),
        "{refusal}"
    );
    assert!(
        refusal.contains("from http://localhost"),
        "it says what to do: {refusal}"
    );
}

#[wasm_bindgen_test]
async fn tunables_are_checked_at_start_and_an_outbox_limit_holds() {
    let start_with = |tunables: JsValue| {
        start_error(js_object(&[
            ("instance", "http://127.0.0.1:9".into()),
            ("provisioningToken", "token".into()),
            ("database", unique("vdev-tunables").into()),
            ("tunables", tunables),
        ]))
    };
    let object = |json: &str| js_sys::JSON::parse(json).unwrap();
    for (tunables, expected) in [
        (
            object(r#"{"maxInFlight": 0}"#),
            "invalidOption: option tunables.maxInFlight: 0 is not from 1 to 65535",
        ),
        (
            object(r#"{"keepAliveSeconds": 70000}"#),
            "invalidOption: option tunables.keepAliveSeconds: 70000 is not from 1 to 65535",
        ),
        (
            object(r#"{"retryInitialMs": 5000, "retryMaxMs": 100}"#),
            "invalidOption: option tunables.retryMaxMs: 100 ms is below the first retry delay (5000 ms)",
        ),
        (
            object(r#"{"ackTimeoutMs": 1.5}"#),
            "invalidOption: option tunables.ackTimeoutMs: 1.5 is not a whole number",
        ),
        (
            object(r#"{"httpTimeoutMs": "30s"}"#),
            "invalidOption: option tunables.httpTimeoutMs: \"30s\" is not a whole number",
        ),
        (
            "fast".into(),
            "invalidOption: option tunables: must be an object of numbers",
        ),
    ] {
        assert_eq!(start_with(tunables).await, expected);
    }
    let unknown = start_with(object(r#"{"keepalive": 30}"#)).await;
    assert!(
        unknown.starts_with(
            "invalidOption: option tunables: \"keepalive\" is not one of keepAliveSeconds, "
        ),
        "{unknown}"
    );

    // Nothing listens at the instance: the queue only fills, up to its tuned limit.
    let database = unique("vdev-tunables");
    let client = DeviceClient::start(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", database.clone().into()),
        (
            "tunables",
            object(r#"{"outboxMaxMessages": 3, "retryMaxMs": 2000}"#),
        ),
    ]))
    .await
    .expect("the client starts");
    let sender = client.create_stream_sender(None).unwrap();
    let send = |text: &str| send_text(&sender, text);
    for (seq, text) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(send(text).await.unwrap().as_f64(), Some(seq as f64));
    }
    let full = common::api_error(send("d").await.expect_err("the outbox is full"));
    assert!(full.starts_with("outboxFull: "), "{full}");
    assert_eq!(client.pending_messages_count(), 3.0);
    JsFuture::from(Promise::from(JsValue::from(client.stop())))
        .await
        .unwrap();
    common::delete_database(&database).await.unwrap();
}
