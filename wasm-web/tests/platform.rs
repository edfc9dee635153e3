//! `DeviceClient` in a real browser against a real `vdev-platform` (started by
//! `wasm-web/scripts/test.sh`): provisioning approved through the admin API, ordered delivery,
//! a restart on the same database, the twin in both directions, going offline (by the app's
//! `setOffline` and by the browser's `offline`/`online` events), the Platform stopped and
//! restarted under a sending device, a 1 MB message by upload, a short-lived Registration
//! Token refreshed while connected, a revoked one that leads to a new provisioning, and two
//! clients of one database (one owner, one follower, as two tabs would be), and tunables seen on
//! the wire (the Platform's facts of the session: the window and the keep-alive).

#![cfg(target_arch = "wasm32")]

mod common;

use common::{
    DeviceClient, Recorder, StreamSender, field_number, field_string, js_object, platform, unique,
    wait_until, wait_until_async,
};
use js_sys::{Promise, Reflect};
use serde_json::{Value, json};
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
    offline_changes: Recorder,
}

async fn start(database: &str, device_id: &str) -> Started {
    start_with_token(database, device_id, platform().provisioning_token).await
}

async fn start_with_token(database: &str, device_id: &str, provisioning_token: &str) -> Started {
    start_with(database, device_id, provisioning_token, Vec::new()).await
}

/// `start` with more options (`extra`, after the test's own).
async fn start_with(
    database: &str,
    device_id: &str,
    provisioning_token: &str,
    extra: Vec<(&str, JsValue)>,
) -> Started {
    let platform = platform();
    let (operations, on_operation) = Recorder::new();
    let (outcomes, on_outcome) = Recorder::new();
    let (desired, on_desired) = Recorder::new();
    let (offline_changes, on_offline_changed) = Recorder::new();
    let mut options = vec![
        ("instance", platform.url.into()),
        ("provisioningToken", provisioning_token.into()),
        ("deviceId", device_id.into()),
        ("database", database.into()),
        ("onProvisioningOperation", on_operation.into()),
        ("onMessageOutcome", on_outcome.into()),
        ("onDesiredPropertiesChanged", on_desired.into()),
        ("onOfflineChanged", on_offline_changed.into()),
    ];
    options.extend(extra);
    let options = js_object(&options);
    let client = DeviceClient::start(options)
        .await
        .expect("the client starts");
    Started {
        client,
        operations,
        outcomes,
        desired,
        offline_changes,
    }
}

impl Started {
    /// The id of the `index`-th provisioning operation the client reported, once it has.
    async fn operation(&self, index: usize) -> String {
        wait_until("a provisioning operation", 60_000.0, || {
            self.operations.len() > index
        })
        .await;
        field_string(&self.operations.first_args()[index], "id").expect("operation has an id")
    }

    fn statistics_offline(&self) -> bool {
        Reflect::get(&self.client.statistics(), &JsValue::from_str("offline"))
            .ok()
            .and_then(|offline| offline.as_bool())
            .expect("statistics has an offline boolean")
    }

    /// Waits until the client reports itself offline and no longer connected.
    async fn wait_offline(&self) {
        wait_until("the offline state", 10_000.0, || {
            self.statistics_offline() && self.connection_state() != "connected"
        })
        .await;
        assert!(self.client.offline());
    }

    fn connection_state(&self) -> String {
        field_string(&self.client.statistics(), "connectionState").unwrap_or_default()
    }

    async fn wait_connected(&self) {
        wait_until("the connected state", 30_000.0, || {
            self.connection_state() == "connected"
        })
        .await;
    }

    /// Approves the device's first provisioning operation and waits until it is connected.
    async fn approve_and_connect(&self) {
        platform().approve(&self.operation(0).await).await;
        self.wait_connected().await;
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
    common::delete_database(database)
        .await
        .expect("the database is deleted");
}

#[wasm_bindgen_test]
async fn provisioning_approved_then_a_thousand_messages_arrive_in_order() {
    let (database, device_id) = (unique("vdev-order"), unique("web-order"));
    let device = start(&database, &device_id).await;
    let operation = device.operation(0).await;
    let sender = device.client.create_stream_sender(None).unwrap();

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
    // Numbering goes on above every number used before, from the reservation: a start may
    // skip up to one block, never go back.
    assert!(seqs[0] >= 100, "sequence numbers go on: {seqs:?}");
    assert_eq!(
        seqs,
        (seqs[0]..seqs[0] + 10).collect::<Vec<u64>>(),
        "consecutive within a run"
    );
    third.wait_all_sent().await;

    let (texts, seqs) = stored_at_platform(&device_id).await;
    let expected: Vec<String> = (0..100)
        .map(|i| format!("queued {i}"))
        .chain((0..10).map(|i| format!("later {i}")))
        .collect();
    assert_eq!(texts, expected);
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "each number once, ascending: {seqs:?}"
    );
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
    device.approve_and_connect().await;

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
    let current = as_json(&device.client.desired_properties());
    assert_eq!(current["properties"]["mode"], "eco");
    let version = current["version"].as_f64().expect("a version");
    // "If newer": nothing for the app that has this version, the properties for one behind.
    assert!(
        device
            .client
            .desired_properties_if_newer(version)
            .is_undefined()
    );
    let newer = as_json(&device.client.desired_properties_if_newer(version - 1.0));
    assert_eq!(newer["properties"]["threshold"], 7);
    assert_eq!(newer["version"].as_f64(), Some(version));

    // Offline, a stored update waits: pending until the Platform acknowledged it.
    assert!(!device.client.reported_properties_pending());
    device.client.set_offline(true);
    device.wait_offline().await;
    let patch = js_sys::JSON::parse(r#"{"firmware":"1.2.3","uptime":5}"#).unwrap();
    await_promise(
        device
            .client
            .update_reported_properties(patch.unchecked_into())
            .unchecked_into(),
    )
    .await;
    assert!(
        device.client.reported_properties_pending(),
        "stored, not yet acknowledged"
    );
    device.client.set_offline(false);
    let reported = wait_until_async("the reported properties", 15_000.0, || async {
        let (_, reported) = platform
            .admin("GET", &twin_path("reported-properties"), None)
            .await;
        (reported["firmware"] == "1.2.3").then_some(reported)
    })
    .await;
    assert_eq!(reported["uptime"], 5);
    wait_until("the acknowledgement", 15_000.0, || {
        !device.client.reported_properties_pending()
    })
    .await;
    device.stop().await;
    discard(&database).await;
}

/// Fires the global `offline` or `online` event, as the browser does when the network goes.
fn browser_network_event(name: &str) {
    let global: web_sys::EventTarget = js_sys::global().unchecked_into();
    let event = web_sys::Event::new(name).expect("an event");
    global
        .dispatch_event(&event)
        .expect("the event is dispatched");
}

/// Watches the Platform for `window_ms` while the device is offline: nothing new may arrive
/// there, the messages stay pending and the client stays disconnected. (A window of time is the
/// only way to observe that nothing happens; it synchronises nothing.)
async fn assert_nothing_delivered_for(
    device: &Started,
    device_id: &str,
    stored: usize,
    pending: f64,
    window_ms: f64,
) {
    let until = js_sys::Date::now() + window_ms;
    while js_sys::Date::now() < until {
        let (texts, _) = stored_at_platform(device_id).await;
        assert_eq!(
            texts.len(),
            stored,
            "nothing is delivered while offline: {texts:?}"
        );
        assert_eq!(device.client.pending_messages_count(), pending);
        assert_ne!(
            device.connection_state(),
            "connected",
            "no connection while offline"
        );
        assert!(device.statistics_offline());
        gloo_timers::future::TimeoutFuture::new(100).await;
    }
}

#[wasm_bindgen_test]
async fn set_offline_holds_stored_messages_until_online_then_they_drain_in_order_once() {
    let (database, device_id) = (unique("vdev-offline"), unique("web-offline"));
    let device = start(&database, &device_id).await;
    device.approve_and_connect().await;
    assert!(!device.statistics_offline());
    let sender = device.client.create_stream_sender(None).unwrap();
    send_all(&sender, (0..5).map(|i| format!("online {i}"))).await;
    device.wait_all_sent().await;

    device.client.set_offline(true);
    device.wait_offline().await;
    let seqs = send_all(&sender, (0..50).map(|i| format!("offline {i}"))).await;
    assert_eq!(
        seqs,
        (5..55).collect::<Vec<u64>>(),
        "sends resolve (stored) while offline"
    );
    assert_nothing_delivered_for(&device, &device_id, 5, 50.0, 2_000.0).await;

    device.client.set_offline(false);
    device.wait_all_sent().await;
    assert!(!device.client.offline());
    let (texts, seqs) = stored_at_platform(&device_id).await;
    let expected: Vec<String> = (0..5)
        .map(|i| format!("online {i}"))
        .chain((0..50).map(|i| format!("offline {i}")))
        .collect();
    assert_eq!(texts, expected, "everything drains in order, once");
    assert_eq!(seqs, (0..55).collect::<Vec<i64>>());
    let changes: Vec<Option<bool>> = device
        .offline_changes
        .first_args()
        .iter()
        .map(JsValue::as_bool)
        .collect();
    assert_eq!(
        changes,
        [Some(true), Some(false)],
        "onOfflineChanged told the app"
    );
    device.stop().await;
    discard(&database).await;
}

#[wasm_bindgen_test]
async fn browser_offline_event_holds_messages_and_the_device_is_offline_while_either_says_so() {
    let (database, device_id) = (
        unique("vdev-browser-offline"),
        unique("web-browser-offline"),
    );
    let device = start(&database, &device_id).await;
    device.approve_and_connect().await;
    let sender = device.client.create_stream_sender(None).unwrap();

    browser_network_event("offline");
    device.wait_offline().await;
    send_all(&sender, (0..10).map(|i| format!("browser offline {i}"))).await;
    // The app says offline as well, then changes its mind: the browser still says offline.
    device.client.set_offline(true);
    device.client.set_offline(false);
    assert_nothing_delivered_for(&device, &device_id, 0, 10.0, 1_500.0).await;

    // The browser is back but the app now says offline: still offline.
    device.client.set_offline(true);
    browser_network_event("online");
    send_all(&sender, (10..20).map(|i| format!("browser offline {i}"))).await;
    assert_nothing_delivered_for(&device, &device_id, 0, 20.0, 1_500.0).await;

    device.client.set_offline(false);
    device.wait_all_sent().await;
    let (texts, seqs) = stored_at_platform(&device_id).await;
    let expected: Vec<String> = (0..20).map(|i| format!("browser offline {i}")).collect();
    assert_eq!(texts, expected, "everything drains in order, once");
    assert_eq!(seqs, (0..20).collect::<Vec<i64>>());
    let changes: Vec<Option<bool>> = device
        .offline_changes
        .first_args()
        .iter()
        .map(JsValue::as_bool)
        .collect();
    assert_eq!(
        changes,
        [Some(true), Some(false)],
        "one change each way, as the app sees it"
    );
    device.stop().await;
    discard(&database).await;
}

/// The Platform's messages of `device_id` must be exactly `expected` (payload texts), in order,
/// each once, with ascending sequence numbers (a restart may skip numbers, never reuse one).
async fn assert_stored_exactly(device_id: &str, expected: &[String]) {
    let (texts, seqs) = stored_at_platform(device_id).await;
    assert_eq!(texts.len(), expected.len(), "as many messages as were sent");
    assert_eq!(texts, expected, "payloads in order, each once");
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "each number once, ascending: {seqs:?}"
    );
}

#[wasm_bindgen_test]
async fn platform_stopped_while_sending_then_restarted_everything_drains_in_order_once() {
    let (database, device_id) = (unique("vdev-outage"), unique("web-outage"));
    let device = start(&database, &device_id).await;
    device.approve_and_connect().await;
    let sender = device.client.create_stream_sender(None).unwrap();

    // Stored, and partly in flight when the platform goes away.
    let mut expected: Vec<String> = (0..200).map(|i| format!("before {i}")).collect();
    send_all(&sender, expected.iter().cloned()).await;
    platform().control("stop").await;
    wait_until("the device to notice the outage", 30_000.0, || {
        device.connection_state() != "connected"
    })
    .await;
    let during: Vec<String> = (0..100).map(|i| format!("during {i}")).collect();
    send_all(&sender, during.iter().cloned()).await;
    expected.extend(during);
    assert!(device.client.pending_messages_count() > 0.0);

    platform().control("start").await;
    let after: Vec<String> = (0..20).map(|i| format!("after {i}")).collect();
    send_all(&sender, after.iter().cloned()).await;
    expected.extend(after);
    device.wait_all_sent().await;
    assert_stored_exactly(&device_id, &expected).await;
    device.stop().await;
    discard(&database).await;
}

#[wasm_bindgen_test]
async fn a_one_megabyte_message_goes_by_upload_and_keeps_its_place_in_the_order() {
    let (database, device_id) = (unique("vdev-upload"), unique("web-upload"));
    let device = start(&database, &device_id).await;
    device.approve_and_connect().await;
    let sender = device.client.create_stream_sender(None).unwrap();

    let large: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    send_all(&sender, std::iter::once("small before".to_owned())).await;
    let payload = js_sys::Uint8Array::from(large.as_slice());
    let stored = JsFuture::from(
        sender
            .send_message(payload.unchecked_into(), None)
            .unchecked_into::<Promise>(),
    )
    .await
    .expect("the large message is stored");
    assert_eq!(stored.as_f64(), Some(1.0));
    send_all(&sender, std::iter::once("small after".to_owned())).await;
    device.wait_all_sent().await;

    let messages = platform().messages(&device_id).await;
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0]["payloadText"], "small before");
    assert_eq!(messages[2]["payloadText"], "small after");
    let link = &messages[1];
    assert_eq!(link["hasExternalizedPayload"], true, "{link}");
    assert_eq!(link["sequence"]["n"], 1);
    let blob_name = link["blobName"].as_str().expect("the link names its blob");
    let (status, blob) = platform()
        .admin_bytes(&format!(
            "/workspaces/{}/blobs/content?deviceId={device_id}&name={blob_name}",
            platform().workspace
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(blob.len(), large.len(), "the blob holds the whole payload");
    assert!(blob == large, "the blob holds the message's bytes");
    device.stop().await;
    discard(&database).await;
}

#[wasm_bindgen_test]
async fn a_short_lived_registration_token_is_refreshed_while_messages_keep_flowing() {
    let token = platform()
        .create_provisioning_token(json!({ "defaultRegistrationTokenLifetimeSeconds": 6 }))
        .await;
    let (database, device_id) = (unique("vdev-refresh"), unique("web-refresh"));
    let device = start_with_token(&database, &device_id, &token).await;
    device.approve_and_connect().await;
    let sender = device.client.create_stream_sender(None).unwrap();

    // One message after another until the token was refreshed twice (each lives 6 s and is
    // refreshed at half its life), each delivered before the next is sent.
    let mut expected = Vec::new();
    let deadline = js_sys::Date::now() + 60_000.0;
    loop {
        let text = format!("flowing {}", expected.len());
        send_all(&sender, std::iter::once(text.clone())).await;
        expected.push(text);
        device.wait_all_sent().await;
        if platform().registration_tokens(&device_id).await.len() >= 3 {
            break;
        }
        assert!(
            js_sys::Date::now() < deadline,
            "no second refresh within 60 s"
        );
    }
    let tokens = platform().registration_tokens(&device_id).await;
    assert_eq!(
        tokens[0]["state"], "active",
        "the newest token is in use: {tokens:?}"
    );
    assert!(
        tokens[1..].iter().all(|t| t["state"] == "superseded"),
        "older tokens were replaced by refreshes, none revoked or left to expire: {tokens:?}"
    );
    assert_eq!(device.operations.len(), 1, "no new provisioning");
    assert_eq!(platform().operations_for(&device_id).await.len(), 1);
    let more: Vec<String> = (0..20).map(|i| format!("after refresh {i}")).collect();
    send_all(&sender, more.iter().cloned()).await;
    expected.extend(more);
    device.wait_all_sent().await;
    assert_stored_exactly(&device_id, &expected).await;
    device.stop().await;
    discard(&database).await;
}

#[wasm_bindgen_test]
async fn a_revoked_registration_token_leads_to_new_provisioning_and_the_queue_survives() {
    let (database, device_id) = (unique("vdev-revoke"), unique("web-revoke"));
    let device = start(&database, &device_id).await;
    let first_operation = device.operation(0).await;
    platform().approve(&first_operation).await;
    device.wait_connected().await;
    let sender = device.client.create_stream_sender(None).unwrap();
    let mut expected: Vec<String> = (0..10).map(|i| format!("before {i}")).collect();
    send_all(&sender, expected.iter().cloned()).await;
    device.wait_all_sent().await;

    platform().revoke_active_token(&device_id).await;

    let during: Vec<String> = (0..30).map(|i| format!("after revocation {i}")).collect();
    send_all(&sender, during.iter().cloned()).await;
    expected.extend(during);
    let second_operation = device.operation(1).await;
    assert_ne!(
        second_operation, first_operation,
        "a new provisioning operation"
    );
    let waiting: Vec<String> = (0..10).map(|i| format!("awaiting approval {i}")).collect();
    send_all(&sender, waiting.iter().cloned()).await;
    expected.extend(waiting);
    assert!(device.client.pending_messages_count() >= 10.0);

    platform().approve(&second_operation).await;
    device.wait_all_sent().await;
    assert_stored_exactly(&device_id, &expected).await;
    assert_eq!(platform().operations_for(&device_id).await.len(), 2);
    assert_eq!(
        device.client.device_id().as_deref(),
        Some(device_id.as_str())
    );
    device.stop().await;
    discard(&database).await;
}

fn role(device: &Started) -> String {
    field_string(&device.client.statistics(), "role").unwrap_or_default()
}

/// Starts sends of `texts` from `sender` in one turn; their promises, not awaited yet.
fn start_sends(sender: &StreamSender, texts: &[String]) -> Vec<JsFuture> {
    texts
        .iter()
        .map(|text| {
            let payload = JsValue::from_str(text).unchecked_into();
            JsFuture::from(
                sender
                    .send_message(payload, None)
                    .unchecked_into::<Promise>(),
            )
        })
        .collect()
}

/// Awaits sends started by [`start_sends`]; pairs each sequence number with its text.
async fn stored_as(sends: Vec<JsFuture>, texts: &[String]) -> Vec<(u64, String)> {
    let mut stored = Vec::new();
    for (send, text) in sends.into_iter().zip(texts) {
        let seq = send.await.expect("the message is stored");
        stored.push((
            seq.as_f64().expect("a sequence number") as u64,
            text.clone(),
        ));
    }
    stored
}

#[wasm_bindgen_test]
async fn two_clients_of_one_database_share_one_device_and_the_follower_takes_over() {
    let (database, device_id) = (unique("vdev-tabs"), unique("web-tabs"));
    let owner = start(&database, &device_id).await;
    owner.approve_and_connect().await;
    let follower = start(&database, &device_id).await;
    assert_eq!(role(&owner), "owner");
    assert_eq!(role(&follower), "follower");
    wait_until("the follower to see the owner's state", 10_000.0, || {
        follower.connection_state() == "connected"
            && follower.client.device_id().as_deref() == Some(device_id.as_str())
    })
    .await;

    // Both send at once; every send resolves with its place in the one queue.
    let owner_sender = owner.client.create_stream_sender(None).unwrap();
    let follower_sender = follower.client.create_stream_sender(None).unwrap();
    let from_owner: Vec<String> = (0..30).map(|i| format!("owner {i}")).collect();
    let from_follower: Vec<String> = (0..30).map(|i| format!("follower {i}")).collect();
    let owner_sends = start_sends(&owner_sender, &from_owner);
    let follower_sends = start_sends(&follower_sender, &from_follower);
    let mut stored = stored_as(owner_sends, &from_owner).await;
    stored.extend(stored_as(follower_sends, &from_follower).await);
    follower.wait_all_sent().await;
    owner.wait_all_sent().await;
    let follower_delivered = follower
        .outcomes
        .first_args()
        .iter()
        .filter(|o| field_string(o, "status").as_deref() == Some("delivered"))
        .count();
    assert_eq!(follower_delivered, 60, "the follower hears every outcome");

    // Queued while the owner is offline, then the owner stops with sends still on their way:
    // the follower takes over and its queued messages drain.
    owner.client.set_offline(true);
    owner.wait_offline().await;
    let queued: Vec<String> = (0..20).map(|i| format!("queued {i}")).collect();
    stored.extend(stored_as(start_sends(&follower_sender, &queued), &queued).await);
    assert!(
        follower.client.pending_messages_count() > 0.0
            || owner.client.pending_messages_count() > 0.0
    );
    let handover: Vec<String> = (0..20).map(|i| format!("handover {i}")).collect();
    let handover_sends = start_sends(&follower_sender, &handover);
    owner.stop().await;
    stored.extend(stored_as(handover_sends, &handover).await);
    wait_until("the follower to become the owner", 15_000.0, || {
        role(&follower) == "owner"
    })
    .await;
    let later: Vec<String> = (0..10).map(|i| format!("after takeover {i}")).collect();
    stored.extend(stored_as(start_sends(&follower_sender, &later), &later).await);
    follower.wait_all_sent().await;

    stored.sort();
    let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
    // One queue: every number once (the new owner numbers from the reservation, so there may
    // be a gap where it took over, never a number twice).
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "one queue, each number once: {seqs:?}"
    );
    let expected: Vec<String> = stored.into_iter().map(|(_, text)| text).collect();
    assert_stored_exactly(&device_id, &expected).await;
    assert_eq!(
        platform().operations_for(&device_id).await.len(),
        1,
        "no re-provisioning"
    );
    follower.stop().await;
    discard(&database).await;
}

#[wasm_bindgen_test]
async fn a_followers_listeners_hear_the_owners_events_and_its_delivery_is_awaited() {
    let (database, device_id) = (unique("vdev-tabs-events"), unique("web-tabs-events"));
    let owner = start(&database, &device_id).await;
    owner.approve_and_connect().await;
    let follower = start(&database, &device_id).await;
    assert_eq!(role(&follower), "follower");
    let (delivered, on_delivered) = Recorder::new();
    let (rejected, on_rejected) = Recorder::new();
    follower
        .client
        .add_event_listener("messageDelivered", &on_delivered);
    follower
        .client
        .add_event_listener("messageRejected", &on_rejected);

    // The follower's delivery is awaited through the owner that sends it; its listeners hear
    // the delivery of its own message and of the owner's.
    let follower_sender = follower.client.create_stream_sender(None).unwrap();
    let seq = await_promise(
        follower_sender
            .deliver_message(JsValue::from_str("from the follower"), &JsValue::UNDEFINED),
    )
    .await;
    let seq = seq.as_f64().expect("a sequence number");
    assert_eq!(
        stored_at_platform(&device_id).await.0,
        ["from the follower"]
    );
    let owner_sender = owner.client.create_stream_sender(None).unwrap();
    let owners = await_promise(
        owner_sender.deliver_message(JsValue::from_str("from the owner"), &JsValue::UNDEFINED),
    )
    .await;
    let owners = owners.as_f64().expect("a sequence number");
    let detail = |event: &JsValue| Reflect::get(event, &"detail".into()).unwrap();
    wait_until(
        "the follower's listener to hear both deliveries",
        10_000.0,
        || delivered.len() == 2,
    )
    .await;
    let heard: Vec<Option<f64>> = delivered
        .first_args()
        .iter()
        .map(|event| field_number(&detail(event), "seq"))
        .collect();
    assert_eq!(heard, [Some(seq), Some(owners)], "in order, each once");

    // A refused upload: the follower's delivery rejects with the reason, and its listener
    // hears the rejection.
    let path = format!("/devices/{}:{device_id}/files", platform().workspace);
    let fault = json!({ "pathPrefix": path, "status": 400 });
    let (status, answer) = platform().admin("POST", "/faults", Some(fault)).await;
    assert!(status < 300, "arming the fault answered {status}: {answer}");
    let large = js_sys::Uint8Array::new_with_length(1_048_576);
    let (code, error) = rejection_code(
        follower_sender
            .deliver_message(large.into(), &JsValue::UNDEFINED)
            .unchecked_into(),
    )
    .await;
    assert_eq!(code, "messageRejected", "{error:?}");
    let reason = Reflect::get(&error, &"reason".into()).unwrap();
    assert_eq!(
        field_string(&reason, "code").as_deref(),
        Some("uploadRefused")
    );
    wait_until(
        "the follower's listener to hear the rejection",
        10_000.0,
        || rejected.len() == 1,
    )
    .await;
    assert_eq!(delivered.len(), 2, "no delivery heard twice");
    follower.stop().await;
    owner.stop().await;
    discard(&database).await;
}

#[wasm_bindgen_test]
async fn a_followers_set_offline_holds_for_the_owner_and_still_after_it_takes_over() {
    let (database, device_id) = (unique("vdev-tabs-offline"), unique("web-tabs-offline"));
    let owner = start(&database, &device_id).await;
    owner.approve_and_connect().await;
    let follower = start(&database, &device_id).await;
    assert_eq!(role(&follower), "follower");

    // The follower's app says offline: the one device (driven by the owner) goes offline.
    follower.client.set_offline(true);
    owner.wait_offline().await;
    owner.stop().await;
    wait_until("the follower to become the owner", 15_000.0, || {
        role(&follower) == "owner"
    })
    .await;

    // Its app never said online again, so the device it now drives stays offline.
    let sender = follower.client.create_stream_sender(None).unwrap();
    let held: Vec<String> = (0..10).map(|i| format!("held {i}")).collect();
    send_all(&sender, held.iter().cloned()).await;
    follower.wait_offline().await;
    assert_nothing_delivered_for(&follower, &device_id, 0, 10.0, 2_000.0).await;

    follower.client.set_offline(false);
    follower.wait_all_sent().await;
    assert_stored_exactly(&device_id, &held).await;
    follower.stop().await;
    discard(&database).await;
}

#[wasm_bindgen_test]
async fn a_followers_send_stored_by_an_owner_that_died_before_answering_is_stored_once() {
    let (database, device_id) = (unique("vdev-tabs-crash"), unique("web-tabs-crash"));
    let owner = start(&database, &device_id).await;
    owner.approve_and_connect().await;
    let follower = start(&database, &device_id).await;
    assert_eq!(role(&follower), "follower");
    wait_until("the follower to see the owner's state", 10_000.0, || {
        follower.connection_state() == "connected"
    })
    .await;

    // The owner stores the follower's message and delivers it, but its answer never leaves:
    // it dies in between, as a tab killed at that moment would.
    let coordinator = Reflect::get(&owner.client, &JsValue::from_str("coordinator")).unwrap();
    let mute_answers = js_sys::Function::new_with_args(
        "c",
        "const post = c.post.bind(c); c.post = (m) => { if (m.t !== 'answer') post(m); };",
    );
    mute_answers.call1(&JsValue::NULL, &coordinator).unwrap();
    let sender = follower.client.create_stream_sender(None).unwrap();
    let texts = vec!["stored once".to_owned()];
    let sends = start_sends(&sender, &texts);
    wait_until_async("the owner to deliver it", 30_000.0, || async {
        (stored_at_platform(&device_id).await.0.len() == 1).then_some(())
    })
    .await;
    let die = js_sys::Function::new_with_args(
        "c",
        "c.post = () => {}; c.close(); c.driver.finish(); c.release();",
    );
    die.call1(&JsValue::NULL, &coordinator).unwrap();

    // The follower takes over and finds its send in the store: answered, not sent again.
    let stored = stored_as(sends, &texts).await;
    assert_eq!(role(&follower), "owner");
    follower.wait_all_sent().await;
    assert_stored_exactly(&device_id, &texts).await;
    let (_, seqs) = stored_at_platform(&device_id).await;
    assert_eq!(
        seqs,
        [stored[0].0 as i64],
        "the send resolved with the number it was stored under"
    );
    follower.stop().await;
    discard(&database).await;
}

/// The `code` of a rejection that must be a `VdevError` (or the `name` of a `DOMException`).
async fn rejection_code(promise: Promise) -> (String, JsValue) {
    let error = JsFuture::from(promise)
        .await
        .expect_err("the promise rejects");
    let code = field_string(&error, "code")
        .filter(|_| field_string(&error, "name").as_deref() == Some("VdevError"))
        .or_else(|| field_string(&error, "name"))
        .unwrap_or_default();
    (code, error)
}

#[wasm_bindgen_test]
async fn listeners_hear_the_events_and_a_delivery_is_awaited_bounded_by_a_signal_or_a_timeout() {
    let (database, device_id) = (unique("vdev-events"), unique("web-events"));
    let device = start(&database, &device_id).await;
    let (states, on_state) = Recorder::new();
    let (delivered, on_delivered) = Recorder::new();
    let (rejected, on_rejected) = Recorder::new();
    let client = &device.client;
    client.add_event_listener("connectionStateChanged", &on_state);
    client.add_event_listener("messageDelivered", &on_delivered);
    client.add_event_listener("messageRejected", &on_rejected);
    device.approve_and_connect().await;
    // Each listener gets a `CustomEvent` whose detail is the core's event.
    let detail = |event: &JsValue| Reflect::get(event, &"detail".into()).unwrap();
    let heard_states: Vec<String> = states
        .first_args()
        .iter()
        .filter_map(|event| field_string(&detail(event), "state"))
        .collect();
    assert_eq!(
        heard_states.last().map(String::as_str),
        Some("connected"),
        "{heard_states:?}"
    );

    // Resolved on delivery: the Platform holds the message when the promise resolves.
    let sender = device.client.create_stream_sender(None).unwrap();
    let deliver =
        |text: &str, options: JsValue| sender.deliver_message(JsValue::from_str(text), &options);
    let seq = await_promise(deliver("first", JsValue::UNDEFINED)).await;
    assert_eq!(seq.as_f64(), Some(0.0));
    assert_eq!(stored_at_platform(&device_id).await.0, ["first"]);
    let heard: Vec<Option<f64>> = delivered
        .first_args()
        .iter()
        .map(|event| field_number(&detail(event), "seq"))
        .collect();
    assert_eq!(heard, [Some(0.0)], "the listener heard the delivery");

    // A removed listener hears nothing more.
    client.remove_event_listener("messageDelivered", &on_delivered);
    await_promise(deliver("second", JsValue::UNDEFINED)).await;
    assert_eq!(delivered.len(), 1, "removed: not called again");

    // Offline, a delivery cannot come: the timeout rejects it, and the message stays queued.
    client.set_offline(true);
    device.wait_offline().await;
    let (code, error) =
        rejection_code(deliver("third", js_object(&[("timeout", 300.into())]))).await;
    assert_eq!(code, "timedOut", "{error:?}");
    assert_eq!(client.pending_messages_count(), 1.0, "still queued");
    // An AbortSignal bounds the wait for the queue: aborted before or while waiting.
    let controller = web_sys::AbortController::new().unwrap();
    let signal = js_object(&[("signal", controller.signal().into())]);
    let waiting = client.wait_enqueued_messages_sent_with(&signal);
    controller.abort();
    let (code, _) = rejection_code(waiting).await;
    assert_eq!(code, "AbortError", "the signal's reason");
    let (code, _) = rejection_code(client.wait_enqueued_messages_sent_with(&signal)).await;
    assert_eq!(code, "AbortError", "an aborted signal rejects at once");
    let (code, error) = rejection_code(
        client.wait_enqueued_messages_sent_with(&js_object(&[("timeout", "soon".into())])),
    )
    .await;
    assert_eq!(code, "invalidOption", "{error:?}");
    client.set_offline(false);
    await_promise(
        client.wait_enqueued_messages_sent_with(&js_object(&[("timeout", 30_000.into())])),
    )
    .await;
    assert_eq!(
        stored_at_platform(&device_id).await.0,
        ["first", "second", "third"]
    );

    // A message the Platform refuses for good rejects its delivery with the reason: its upload
    // slot is refused (400). Its path names the device as its MQTT client id does.
    let workspace = client.workspace_id().expect("registered");
    let path = format!("/devices/{workspace}:{device_id}/files");
    let fault = json!({ "pathPrefix": path, "status": 400 });
    let (status, answer) = platform().admin("POST", "/faults", Some(fault)).await;
    assert!(status < 300, "arming the fault answered {status}: {answer}");
    let large = js_sys::Uint8Array::from(vec![7u8; 1_048_576].as_slice());
    let (code, error) =
        rejection_code(sender.deliver_message(large.into(), &JsValue::UNDEFINED)).await;
    assert_eq!(code, "messageRejected", "{error:?}");
    assert_eq!(field_number(&error, "sequence"), Some(3.0));
    let reason = Reflect::get(&error, &"reason".into()).unwrap();
    assert_eq!(
        field_string(&reason, "code").as_deref(),
        Some("uploadRefused")
    );
    wait_until("the rejection's event", 5_000.0, || rejected.len() == 1).await;
    assert_eq!(
        field_number(&detail(&rejected.first_args()[0]), "seq"),
        Some(3.0)
    );
    device.stop().await;
    discard(&database).await;
}

/// Stores 100 messages before the device is approved (so the whole backlog is ready at once),
/// approves it, waits for every delivery; returns the Platform's facts of its session.
async fn deliver_a_backlog(name: &str, tunables: Option<&str>) -> Value {
    let (database, device_id) = (
        unique(&format!("vdev-{name}")),
        unique(&format!("web-{name}")),
    );
    let extra = tunables
        .map(|json| vec![("tunables", js_sys::JSON::parse(json).unwrap())])
        .unwrap_or_default();
    let device = start_with(&database, &device_id, platform().provisioning_token, extra).await;
    let sender = device.client.create_stream_sender(None).unwrap();
    let texts: Vec<String> = (0..100).map(|i| format!("{name} {i}")).collect();
    send_all(&sender, texts.iter().cloned()).await;
    device.approve_and_connect().await;
    device.wait_all_sent().await;
    assert_stored_exactly(&device_id, &texts).await;
    let session = platform().session(&device_id).await;
    device.stop().await;
    discard(&database).await;
    session
}

#[wasm_bindgen_test]
async fn tunables_reach_the_wire_a_window_of_one_publish_and_the_keep_alive() {
    // The default window sends the backlog in runs: the Platform sees several unacknowledged
    // publishes at once (so the check below can tell a window of one from it).
    let untuned = deliver_a_backlog("untuned", None).await;
    assert!(
        untuned["peakInFlight"].as_u64() > Some(1),
        "the default window: {untuned}"
    );
    assert_eq!(
        untuned["keepAliveSeconds"], 60,
        "the default keep-alive: {untuned}"
    );

    let tuned = deliver_a_backlog(
        "tuned",
        Some(r#"{"maxInFlight": 1, "keepAliveSeconds": 17}"#),
    )
    .await;
    assert_eq!(tuned["peakInFlight"], 1, "one publish at a time: {tuned}");
    assert_eq!(
        tuned["keepAliveSeconds"], 17,
        "the CONNECT's keep-alive: {tuned}"
    );
}

#[wasm_bindgen_test]
async fn a_cloud_to_device_message_reaches_the_app_with_its_properties_decoded() {
    let (database, device_id) = (unique("vdev-c2d"), unique("web-c2d"));
    let device = start(&database, &device_id).await;
    let (received, on_message) = Recorder::new();
    device
        .client
        .add_event_listener("cloudToDeviceMessage", &on_message);
    device.approve_and_connect().await;
    let workspace = platform().workspace;
    let path = format!(
        "/workspaces/{workspace}/devices/{device_id}/c2d-messages?mode=eco&note=a%20b%26c%3D%25"
    );
    let (status, answer) = platform()
        .admin("POST", &path, Some(json!({ "setpoint": 21.5 })))
        .await;
    assert_eq!(status, 201, "{answer}");
    wait_until("the cloud-to-device message", 10_000.0, || {
        received.len() == 1
    })
    .await;
    let detail = Reflect::get(&received.first_args()[0], &"detail".into()).unwrap();
    let properties = Reflect::get(&detail, &"properties".into()).unwrap();
    assert_eq!(field_string(&properties, "mode").as_deref(), Some("eco"));
    assert_eq!(
        field_string(&properties, "note").as_deref(),
        Some("a b&c=%"),
        "decoded for the app"
    );
    let payload = Reflect::get(&detail, &"payload".into()).unwrap();
    let payload = js_sys::Uint8Array::new(&payload).to_vec();
    assert_eq!(String::from_utf8(payload).unwrap(), r#"{"setpoint":21.5}"#);
    device.stop().await;
    discard(&database).await;
}

/// What a recorder was told at one level: the second argument of each call (the event's kind,
/// or the message), after checking every first argument is the `vdev:` prefix.
fn logged(recorder: &Recorder) -> Vec<String> {
    let calls = recorder.calls.borrow();
    assert!(
        calls
            .iter()
            .all(|(prefix, _)| prefix.as_string().as_deref() == Some("vdev:"))
    );
    calls
        .iter()
        .filter_map(|(_, what)| what.as_string())
        .collect()
}

#[wasm_bindgen_test]
async fn the_device_logs_through_the_apps_logger_at_the_levels_the_core_gives() {
    let (database, device_id) = (unique("vdev-logger"), unique("web-logger"));
    let (errors, error) = Recorder::new();
    let (warns, warn) = Recorder::new();
    let (infos, info) = Recorder::new();
    let (debugs, debug) = Recorder::new();
    let throws = js_sys::Function::new_no_args("throw new Error('the app broke')");
    let logger = js_object(&[
        ("error", error.into()),
        ("warn", warn.into()),
        ("info", info.into()),
        ("debug", debug.into()),
    ]);
    let extra = vec![
        ("onConnectionStateChanged", throws.into()),
        ("logger", logger),
    ];
    let device = start_with(&database, &device_id, platform().provisioning_token, extra).await;
    platform().approve(&device.operation(0).await).await;
    let sender = device.client.create_stream_sender(None).unwrap();
    await_promise(sender.deliver_message(JsValue::from_str("logged"), &JsValue::UNDEFINED)).await;
    // The next CONNECT is refused (return code 3): the lost connection is a warning.
    let fault = json!({ "target": "mqttConnect", "count": 1 });
    let (status, answer) = platform().admin("POST", "/faults", Some(fault)).await;
    assert!(status < 300, "arming the fault answered {status}: {answer}");
    device.client.set_offline(true);
    device.wait_offline().await;
    device.client.set_offline(false);
    wait_until("the refused connection's warning", 15_000.0, || {
        logged(&warns).iter().any(|kind| kind == "connectionLost")
    })
    .await;
    device.wait_connected().await;

    let info_said = logged(&infos);
    for kind in [
        "provisioningOperation",
        "registered",
        "connectionStateChanged",
    ] {
        assert!(info_said.iter().any(|k| k == kind), "info: {info_said:?}");
    }
    let debug_said = logged(&debugs);
    assert!(
        debug_said.iter().any(|k| k == "messageDelivered"),
        "debug: {debug_said:?}"
    );
    assert!(
        !info_said.iter().any(|k| k == "messageDelivered"),
        "not at info"
    );
    let error_said = logged(&errors);
    assert!(
        error_said
            .iter()
            .any(|m| m.starts_with("onConnectionStateChanged threw: Error: the app broke")),
        "a callback that threw is an error: {error_said:?}"
    );
    device.stop().await;
    discard(&database).await;
}

/// Starts a device whose state callback throws `marker`, with `logger` (absent: the default)
/// while `console.error` is recorded; returns what `console.error` was told of the marker.
async fn console_errors_with(logger: Option<JsValue>, marker: &str) -> Vec<String> {
    let (database, device_id) = (unique("vdev-console"), unique("web-console"));
    /// Puts the page's own `console.error` back, also when the test fails half-way: the page
    /// is shared with the tests after this one.
    struct Restore(JsValue, JsValue);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = Reflect::set(&self.0, &"error".into(), &self.1);
        }
    }
    let console = Reflect::get(&js_sys::global(), &"console".into()).unwrap();
    let original = Reflect::get(&console, &"error".into()).unwrap();
    let (console_errors, record) = Recorder::new();
    Reflect::set(&console, &"error".into(), &record).unwrap();
    let restore = Restore(console, original);
    let throws = js_sys::Function::new_no_args(&format!("throw new Error('{marker}')"));
    let mut extra = vec![("onConnectionStateChanged", throws.into())];
    extra.extend(logger.map(|logger| ("logger", logger)));
    let device = start_with(&database, &device_id, platform().provisioning_token, extra).await;
    device.approve_and_connect().await;
    device.stop().await;
    drop(restore);
    discard(&database).await;
    // Only the calls about the marker: anything else on the page may write there too.
    let calls = console_errors.calls.borrow();
    calls
        .iter()
        .filter_map(|(prefix, what)| Some(format!("{} {}", prefix.as_string()?, what.as_string()?)))
        .filter(|line| line.contains(marker))
        .collect()
}

#[wasm_bindgen_test]
async fn without_a_logger_errors_alone_go_to_the_console_and_an_empty_logger_is_silent() {
    let said = console_errors_with(None, "default logger").await;
    assert!(
        said.iter()
            .any(|m| m.starts_with("vdev: onConnectionStateChanged threw: Error: default logger")),
        "errors go to console.error by default: {said:?}"
    );
    let said = console_errors_with(Some(js_object(&[])), "empty logger").await;
    assert!(
        said.is_empty(),
        "a logger without methods logs nothing: {said:?}"
    );
}

#[wasm_bindgen_test]
async fn a_forgotten_device_provisions_anew_and_its_queue_is_gone() {
    let (database, device_id) = (unique("vdev-forget"), unique("web-forget"));
    let device = start(&database, &device_id).await;
    device.approve_and_connect().await;
    let sender = device.client.create_stream_sender(None).unwrap();
    await_promise(sender.deliver_message(JsValue::from_str("known"), &JsValue::UNDEFINED)).await;

    // Offline, a stored message is pending: forgetting it takes `force`.
    device.client.set_offline(true);
    device.wait_offline().await;
    send_all(&sender, std::iter::once("dropped".to_owned())).await;
    let (code, error) = rejection_code(device.client.forget(&JsValue::UNDEFINED)).await;
    assert_eq!(code, "messagesPending", "{error:?}");
    assert_eq!(
        device.client.pending_messages_count(),
        1.0,
        "refused: nothing changed"
    );
    await_promise(device.client.forget(&js_object(&[("force", true.into())]))).await;

    // The same database again: no identity, no queue; the device asks to be provisioned.
    let again = start(&database, &device_id).await;
    assert_eq!(
        again.client.pending_messages_count(),
        0.0,
        "the queue is gone"
    );
    again.operation(0).await;
    assert_eq!(again.client.device_id(), None, "the identity is gone");
    assert_eq!(stored_at_platform(&device_id).await.0, ["known"]);
    again.stop().await;
    discard(&database).await;
}

/// The bytes of base64 `text`, by the browser's `atob`.
fn base64_decode(text: &str) -> Vec<u8> {
    let decode = js_sys::Function::new_with_args(
        "text",
        "return Uint8Array.from(atob(text), (c) => c.charCodeAt(0))",
    );
    let bytes = decode
        .call1(&JsValue::NULL, &text.into())
        .expect("valid base64");
    bytes.unchecked_into::<js_sys::Uint8Array>().to_vec()
}

/// A Brotli encoder lent the way `loadBrotli()` of `vdev-web/brotli` lends one (`{ encode }`),
/// written in Rust with the crate that module is built from; it counts its calls.
fn lent_brotli() -> (JsValue, std::rc::Rc<std::cell::Cell<u32>>) {
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let counted = calls.clone();
    let encode = wasm_bindgen::closure::Closure::<
        dyn FnMut(js_sys::Uint8Array, u32) -> js_sys::Uint8Array,
    >::new(move |payload: js_sys::Uint8Array, quality: u32| {
        counted.set(counted.get() + 1);
        let params = brotli::enc::BrotliEncoderParams {
            quality: quality as i32,
            ..Default::default()
        };
        let mut out = Vec::new();
        brotli::BrotliCompress(&mut &payload.to_vec()[..], &mut out, &params).unwrap();
        js_sys::Uint8Array::from(&out[..])
    });
    (js_object(&[("encode", encode.into_js_value())]), calls)
}

#[wasm_bindgen_test]
async fn a_compressed_stream_arrives_brotli_encoded_with_a_lent_encoder_and_is_refused_without() {
    let (database, device_id) = (unique("vdev-brotli"), unique("web-brotli"));
    let (encoder, calls) = lent_brotli();
    let extra = vec![("brotli", encoder)];
    let device = start_with(&database, &device_id, platform().provisioning_token, extra).await;
    platform().approve(&device.operation(0).await).await;
    let client = device.client;

    let compressed = client
        .create_stream_sender(Some(
            js_object(&[
                ("stream", "zipped".into()),
                ("compression", "fastest".into()),
            ])
            .unchecked_into(),
        ))
        .expect("a compressed stream with an encoder");
    let reading = "temperature=21.5;humidity=40;".repeat(200);
    // Bytes a compressor cannot shrink (xorshift): sent as they are.
    let mut state = 0x2545_f491_u32;
    let noise: Vec<u8> = (0..2_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let payloads: [JsValue; 3] = [
        reading.as_str().into(),
        js_sys::Uint8Array::from(&noise[..]).into(),
        "".into(),
    ];
    let sends = payloads.map(|payload| compressed.deliver_message(payload, &JsValue::UNDEFINED));
    for send in sends {
        JsFuture::from(Promise::from(JsValue::from(send)))
            .await
            .expect("delivered");
    }
    assert_eq!(calls.get(), 2, "the empty payload is not encoded");

    let stored = platform().messages(&device_id).await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(stored[0]["contentEncoding"], "br");
    let encoded = base64_decode(stored[0]["payloadBase64"].as_str().unwrap());
    assert!(
        encoded.len() < reading.len() / 10,
        "{} bytes",
        encoded.len()
    );
    let mut decoded = Vec::new();
    brotli::BrotliDecompress(&mut &encoded[..], &mut decoded).expect("valid Brotli");
    assert_eq!(decoded, reading.as_bytes());
    for (row, bytes) in [(1, &noise[..]), (2, &[][..])] {
        assert_eq!(stored[row]["contentEncoding"], Value::Null, "row {row}");
        let payload = base64_decode(stored[row]["payloadBase64"].as_str().unwrap());
        assert_eq!(payload, bytes, "row {row}");
    }
    await_promise(client.stop().unchecked_into()).await;
    discard(&database).await;

    // Without an encoder the same stream is refused when it is created, saying what to import.
    let plain = DeviceClient::start(js_object(&[
        ("instance", "http://127.0.0.1:9".into()),
        ("provisioningToken", "token".into()),
        ("database", database.as_str().into()),
    ]))
    .await
    .expect("the client starts");
    for compression in ["fastest", "smallestSize"] {
        let refused = plain
            .create_stream_sender(Some(
                js_object(&[("compression", compression.into())]).unchecked_into(),
            ))
            .map(|_| ())
            .expect_err("no encoder: refused");
        let refused = common::api_error(refused);
        assert!(
            refused.starts_with("compressionUnavailable: compression was asked for, but this build has no Brotli encoder")
                && refused.contains("vdev-web/brotli"),
            "{refused}"
        );
    }
    plain
        .create_stream_sender(Some(
            js_object(&[("compression", "none".into())]).unchecked_into(),
        ))
        .expect("an uncompressed stream needs no encoder");
    await_promise(plain.stop().unchecked_into()).await;
    discard(&database).await;
}
