//! `DeviceClient` in a real browser against a real `vdev-platform` (started by
//! `wasm-web/scripts/test.sh`): provisioning approved through the admin API, ordered delivery,
//! a restart on the same database, and the twin in both directions.

#![cfg(target_arch = "wasm32")]

mod common;

use common::{
    Recorder, field_number, field_string, js_object, platform, unique, wait_until, wait_until_async,
};
use js_sys::Promise;
use serde_json::{Value, json};
use vdev_web::{DeviceClient, IdbStore, StreamSender};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A running client and everything it told the app.
struct Started {
    client: DeviceClient,
    operations: Recorder,
    outcomes: Recorder,
    desired: Recorder,
}

async fn start(database: &str, device_id: &str) -> Started {
    let platform = platform();
    let (operations, on_operation) = Recorder::new();
    let (outcomes, on_outcome) = Recorder::new();
    let (desired, on_desired) = Recorder::new();
    let options = js_object(&[
        ("instance", platform.url.into()),
        ("provisioningToken", platform.provisioning_token.into()),
        ("deviceId", device_id.into()),
        ("database", database.into()),
        ("onProvisioningOperation", on_operation.into()),
        ("onMessageOutcome", on_outcome.into()),
        ("onDesiredPropertiesChanged", on_desired.into()),
    ]);
    let client = DeviceClient::start(options.unchecked_into())
        .await
        .map_err(JsValue::from)
        .expect("the client starts");
    Started {
        client,
        operations,
        outcomes,
        desired,
    }
}

impl Started {
    /// The id of the `index`-th provisioning operation the client reported, once it has.
    async fn operation(&self, index: usize) -> String {
        wait_until("a provisioning operation", 15_000.0, || {
            self.operations.len() > index
        })
        .await;
        field_string(&self.operations.first_args()[index], "id").expect("operation has an id")
    }

    fn connection_state(&self) -> String {
        field_string(&self.client.statistics().into(), "connectionState").unwrap_or_default()
    }

    async fn wait_connected(&self) {
        wait_until("the connected state", 30_000.0, || {
            self.connection_state() == "connected"
        })
        .await;
    }

    async fn wait_all_sent(&self) {
        wait_until("every message delivered", 60_000.0, || {
            self.client.pending_messages_count() == 0.0
        })
        .await;
        // The promise agrees once the count is zero.
        await_promise(self.client.wait_enqueued_messages_sent().unchecked_into()).await;
    }

    async fn stop(self) {
        await_promise(self.client.stop().unchecked_into()).await;
    }
}

async fn await_promise(promise: Promise) -> JsValue {
    JsFuture::from(promise).await.expect("the promise resolves")
}

/// Sends `texts` all at once (one JavaScript turn); returns their sequence numbers.
async fn send_all(sender: &StreamSender, texts: impl Iterator<Item = String>) -> Vec<u64> {
    let pending: Vec<JsFuture> = texts
        .map(|text| {
            let payload = JsValue::from_str(&text).unchecked_into();
            JsFuture::from(
                sender
                    .send_message(payload, None)
                    .unchecked_into::<Promise>(),
            )
        })
        .collect();
    let mut seqs = Vec::new();
    for stored in pending {
        let seq = stored.await.expect("the message is stored");
        seqs.push(seq.as_f64().expect("a sequence number") as u64);
    }
    seqs
}

/// The Platform's copy of the device's messages: payload texts and sequence numbers.
async fn stored_at_platform(device_id: &str) -> (Vec<String>, Vec<i64>) {
    let messages = platform().messages(device_id).await;
    let texts = messages
        .iter()
        .map(|m| m["payloadText"].as_str().unwrap_or_default().to_owned())
        .collect();
    let seqs = messages
        .iter()
        .map(|m| m["sequence"]["n"].as_i64().unwrap_or(-1))
        .collect();
    (texts, seqs)
}

async fn discard(database: &str) {
    IdbStore::delete(database)
        .await
        .expect("the database is deleted");
}

#[wasm_bindgen_test]
async fn provisioning_approved_then_a_thousand_messages_arrive_in_order() {
    let (database, device_id) = (unique("vdev-order"), unique("web-order"));
    let device = start(&database, &device_id).await;
    let operation = device.operation(0).await;
    let sender = device
        .client
        .create_stream_sender(None)
        .map_err(JsValue::from)
        .unwrap();

    // Stored while still waiting for approval: nothing can be sent yet.
    let texts = (0..1000).map(|i| format!("message {i}"));
    let seqs = send_all(&sender, texts).await;
    assert_eq!(seqs, (0..1000).collect::<Vec<u64>>());
    assert_eq!(device.client.pending_messages_count(), 1000.0);

    platform().approve(&operation).await;
    device.wait_all_sent().await;
    assert_eq!(
        device.client.device_id().as_deref(),
        Some(device_id.as_str())
    );
    assert_eq!(
        device.client.workspace_id().as_deref(),
        Some(platform().workspace)
    );

    let (texts, seqs) = stored_at_platform(&device_id).await;
    let expected: Vec<String> = (0..1000).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, expected, "payloads in order, each once");
    assert_eq!(seqs, (0..1000).collect::<Vec<i64>>());

    let outcomes = device.outcomes.first_args();
    let delivered: Vec<f64> = outcomes
        .iter()
        .filter(|o| field_string(o, "status").as_deref() == Some("delivered"))
        .filter_map(|o| field_number(o, "sequence"))
        .collect();
    assert_eq!(delivered, (0..1000).map(f64::from).collect::<Vec<f64>>());
    device.stop().await;
    discard(&database).await;
}

#[wasm_bindgen_test]
async fn restart_on_the_same_database_keeps_queue_and_identity_without_reprovisioning() {
    let (database, device_id) = (unique("vdev-restart"), unique("web-restart"));
    let first = start(&database, &device_id).await;
    let operation = first.operation(0).await;
    let sender = first.client.create_stream_sender(None).unwrap();
    send_all(&sender, (0..100).map(|i| format!("queued {i}"))).await;
    first.stop().await;

    // The queue and the pending operation come back from IndexedDB.
    let second = start(&database, &device_id).await;
    assert_eq!(second.client.pending_messages_count(), 100.0);
    assert_eq!(
        second.operation(0).await,
        operation,
        "the saved operation is resumed, not a new one"
    );
    platform().approve(&operation).await;
    second.wait_all_sent().await;
    second.stop().await;

    // Registered now: a third start connects with the saved Registration Token.
    let third = start(&database, &device_id).await;
    third.wait_connected().await;
    assert_eq!(third.operations.len(), 0, "no provisioning after a restart");
    assert_eq!(
        third.client.device_id().as_deref(),
        Some(device_id.as_str())
    );
    let sender = third.client.create_stream_sender(None).unwrap();
    let seqs = send_all(&sender, (0..10).map(|i| format!("later {i}"))).await;
    assert_eq!(
        seqs,
        (100..110).collect::<Vec<u64>>(),
        "sequence numbers go on"
    );
    third.wait_all_sent().await;

    let (texts, seqs) = stored_at_platform(&device_id).await;
    let expected: Vec<String> = (0..100)
        .map(|i| format!("queued {i}"))
        .chain((0..10).map(|i| format!("later {i}")))
        .collect();
    assert_eq!(texts, expected);
    assert_eq!(seqs, (0..110).collect::<Vec<i64>>());
    assert_eq!(
        platform().operations_for(&device_id).await.len(),
        1,
        "one provisioning operation in all"
    );
    third.stop().await;
    discard(&database).await;
}

#[wasm_bindgen_test]
async fn desired_properties_arrive_and_reported_properties_reach_the_platform() {
    let (database, device_id) = (unique("vdev-twin"), unique("web-twin"));
    let device = start(&database, &device_id).await;
    platform().approve(&device.operation(0).await).await;
    device.wait_connected().await;

    let platform = platform();
    let twin_path = |which: &str| {
        format!(
            "/workspaces/{}/devices/{device_id}/{which}",
            platform.workspace
        )
    };
    let desired = json!({ "threshold": 7, "mode": "eco" });
    let (status, answer) = platform
        .admin("PUT", &twin_path("desired-properties"), Some(desired))
        .await;
    assert!(
        status < 300,
        "setting desired properties answered {status}: {answer}"
    );

    let as_json = |value: &JsValue| -> Value {
        let text = js_sys::JSON::stringify(value).unwrap().as_string().unwrap();
        serde_json::from_str(&text).unwrap()
    };
    wait_until("the desired properties callback", 15_000.0, || {
        device
            .desired
            .first_args()
            .iter()
            .any(|properties| as_json(properties)["threshold"] == 7)
    })
    .await;
    let current = as_json(&device.client.desired_properties().into());
    assert_eq!(current["properties"]["mode"], "eco");
    assert!(current["version"].as_u64().is_some(), "{current}");

    let patch = js_sys::JSON::parse(r#"{"firmware":"1.2.3","uptime":5}"#).unwrap();
    await_promise(
        device
            .client
            .update_reported_properties(patch.unchecked_into())
            .unchecked_into(),
    )
    .await;
    let reported = wait_until_async("the reported properties", 15_000.0, || async {
        let (_, reported) = platform
            .admin("GET", &twin_path("reported-properties"), None)
            .await;
        (reported["firmware"] == "1.2.3").then_some(reported)
    })
    .await;
    assert_eq!(reported["uptime"], 5);
    device.stop().await;
    discard(&database).await;
}
