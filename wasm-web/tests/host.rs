//! Rules of the JavaScript host itself, in a real browser and without any network traffic: app
//! callbacks that call the API never run inside each other, completion markers need string ids,
//! and a request of another version of the tab protocol is refused, not misread.

#![cfg(target_arch = "wasm32")]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{DeviceClient, delete_database, js_object, unique, wait_until};
use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::{BroadcastChannel, MessageEvent};

wasm_bindgen_test_configure!(run_in_browser);

/// A client of a fresh database whose Platform is nowhere (port 9 on loopback: nothing answers).
fn offline_options(database: &str, extra: &[(&str, JsValue)]) -> JsValue {
    let mut options = vec![
        ("instance", JsValue::from_str("http://127.0.0.1:9")),
        ("provisioningToken", "token".into()),
        ("database", database.into()),
    ];
    options.extend_from_slice(extra);
    js_object(&options)
}

/// A started client of a fresh database whose Platform is nowhere.
async fn start_offline(database: &str) -> DeviceClient {
    DeviceClient::start(offline_options(database, &[]))
        .await
        .expect("the client starts")
}

/// Stops the client and deletes its database.
async fn finish(client: DeviceClient, database: &str) {
    JsFuture::from(client.stop()).await.expect("stop resolves");
    delete_database(database).await.expect("deleted");
}

async fn rejection(promise: Promise) -> String {
    let error = JsFuture::from(promise)
        .await
        .expect_err("the promise rejects");
    error.unchecked_into::<js_sys::Error>().message().into()
}

#[wasm_bindgen_test]
async fn a_callback_that_calls_the_api_finishes_before_the_next_callback_starts() {
    let database = unique("vdev-host");
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let client_slot: Rc<RefCell<Option<DeviceClient>>> = Rc::default();
    // On going offline the app says online again, from inside the callback.
    let on_offline = {
        let (log, client_slot) = (log.clone(), client_slot.clone());
        Closure::<dyn FnMut(bool)>::new(move |offline: bool| {
            log.borrow_mut().push(format!("enter {offline}"));
            if offline && let Some(client) = client_slot.borrow().as_ref() {
                client.set_offline(false);
            }
            log.borrow_mut().push(format!("leave {offline}"));
        })
    };
    let on_offline_fn: &Function = on_offline.as_ref().unchecked_ref();
    let client = DeviceClient::start(offline_options(
        &database,
        &[("onOfflineChanged", on_offline_fn.clone().into())],
    ))
    .await
    .expect("the client starts");
    *client_slot.borrow_mut() = Some(client.clone().unchecked_into());
    client.set_offline(true);
    wait_until("both offline changes", 5_000.0, || log.borrow().len() == 4).await;
    assert_eq!(
        *log.borrow(),
        ["enter true", "leave true", "enter false", "leave false"],
        "the second callback waited for the first to return"
    );
    assert!(!client.offline());
    client_slot.borrow_mut().take();
    finish(client, &database).await;
}

#[wasm_bindgen_test]
async fn completion_markers_need_string_ids() {
    let database = unique("vdev-host");
    let client = start_offline(&database).await;
    let sender = client.create_stream_sender(None).expect("a sender");
    let call = |method: &str, args: &[JsValue]| -> Promise {
        let function: Function = Reflect::get(&sender, &method.into())
            .unwrap()
            .unchecked_into();
        let args: js_sys::Array = args.iter().collect();
        function.apply(&sender, &args).unwrap().unchecked_into()
    };
    assert_eq!(
        rejection(call("enqueueBatchCompletion", &[])).await,
        "option batchId: must be a string"
    );
    assert_eq!(
        rejection(call("enqueueMessageCompletion", &["b1".into(), 7.into()])).await,
        "option messageId: must be a string"
    );
    let seq = JsFuture::from(sender.enqueue_batch_completion("b1"))
        .await
        .expect("a string id is queued");
    assert_eq!(seq.as_f64(), Some(0.0));
    finish(client, &database).await;
}

#[wasm_bindgen_test]
async fn a_request_of_another_protocol_version_is_refused_with_a_clear_error() {
    let database = unique("vdev-host");
    let client = start_offline(&database).await;
    // Another tab of an older vdev-web on the same database: its request has no version.
    let channel = BroadcastChannel::new(&format!("vdev-web:{database}")).unwrap();
    let answers = Rc::new(RefCell::new(Vec::<JsValue>::new()));
    let on_message = {
        let answers = answers.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            answers.borrow_mut().push(event.data());
        })
    };
    channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    let request = js_object(&[
        ("t", "request".into()),
        ("from", "old-tab".into()),
        ("n", 0.into()),
        ("kind", "send".into()),
        ("what", "message".into()),
        ("payload", js_sys::Uint8Array::from(&b"old"[..]).into()),
    ]);
    channel.post_message(&request).unwrap();
    wait_until("the owner's answer", 5_000.0, || {
        answers
            .borrow()
            .iter()
            .any(|m| common::field_string(m, "t").as_deref() == Some("answer"))
    })
    .await;
    let answer = answers
        .borrow()
        .iter()
        .find(|m| common::field_string(m, "t").as_deref() == Some("answer"))
        .cloned()
        .unwrap();
    assert_eq!(
        common::field_string(&answer, "to").as_deref(),
        Some("old-tab")
    );
    assert_eq!(
        common::field_string(&answer, "error").as_deref(),
        Some("another tab drives this device with another version of vdev-web: reload it")
    );
    assert_eq!(
        client.pending_messages_count(),
        0.0,
        "nothing was stored for it"
    );
    channel.close();
    finish(client, &database).await;
}
