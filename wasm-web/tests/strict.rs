//! The browser package against the stand-in in its strict contract (`--contract iothub`), which
//! `wasm-web/scripts/test.sh` starts on 443 and 8883 of a loopback address of its own, each engine
//! (Chromium, Firefox, WebKit) resolving `hub.vdev.test` and `blob.hub.vdev.test` there and
//! trusting the Platform's test certificate in the way that engine offers (test.sh says which):
//! the device takes the paths a real instance makes it take, the HTTPS API at `https://<hub>`,
//! MQTT over `wss://<hub>` at `/$iothub/websocket`, blob storage at `https://blob.<hub>`.
//! Provisioning, 200 messages in order, a 1 MB upload byte-identical, desired and reported
//! properties, two token refreshes, a Platform restart. Skipped (with a line saying so) where
//! test.sh could not start it (no root for port 443).

#![cfg(target_arch = "wasm32")]

mod common;

use common::{
    DeviceClient, Recorder, StreamSender, field_string, js_object, strict_platform, unique,
    wait_until, wait_until_async,
};
use js_sys::Promise;
use serde_json::json;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Stores `payloads` (sent at once) and waits until each send resolved.
async fn send_all(sender: &StreamSender, payloads: Vec<JsValue>) {
    let pending: Vec<JsFuture> = payloads
        .into_iter()
        .map(|payload| {
            JsFuture::from(
                sender
                    .send_message(payload, None)
                    .unchecked_into::<Promise>(),
            )
        })
        .collect();
    for stored in pending {
        stored.await.expect("the message is stored");
    }
}

fn texts(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|n| format!("m{n}")).collect()
}

fn js_texts(from: usize, to: usize) -> Vec<JsValue> {
    texts(from, to).into_iter().map(JsValue::from).collect()
}

#[wasm_bindgen_test]
async fn over_wss_and_https_at_a_host_name_the_strict_contract_works_as_a_real_instance_would() {
    let Some((platform, hub)) = strict_platform() else {
        console_log!("SKIPPED: no strict-contract Platform (test.sh needs root for port 443)");
        return;
    };
    // Registration Tokens of 6 s, refreshed at half their life.
    let token = platform
        .create_provisioning_token(json!({ "defaultRegistrationTokenLifetimeSeconds": 6 }))
        .await;
    let (database, device_id) = (unique("vdev-strict"), unique("web-strict"));
    let (operations, on_operation) = Recorder::new();
    let (desired, on_desired) = Recorder::new();
    let client = DeviceClient::start(js_object(&[
        // A bare host name: https:// is implied, and everything else follows from it.
        ("instance", hub.into()),
        ("provisioningToken", token.as_str().into()),
        ("deviceId", device_id.as_str().into()),
        ("database", database.as_str().into()),
        ("onProvisioningOperation", on_operation.into()),
        ("onDesiredPropertiesChanged", on_desired.into()),
    ]))
    .await
    .expect("the client starts");
    wait_until("a provisioning operation", 60_000.0, || {
        operations.len() > 0
    })
    .await;
    let operation = field_string(&operations.first_args()[0], "id").expect("an operation id");
    platform.approve(&operation).await;

    let sender = client.create_stream_sender(None).unwrap();
    send_all(&sender, js_texts(0, 100)).await;
    // The large message goes to blob storage under its own host name.
    let large: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i * 13 + (i >> 10)) as u8)
        .collect();
    send_all(
        &sender,
        vec![js_sys::Uint8Array::from(large.as_slice()).into()],
    )
    .await;

    // The twin.
    let twin_path = |which: &str| {
        format!(
            "/workspaces/{}/devices/{device_id}/{which}",
            platform.workspace
        )
    };
    wait_until("the first twin fetch", 60_000.0, || desired.len() > 0).await;
    let (status, _) = platform
        .admin(
            "PUT",
            &twin_path("desired-properties"),
            Some(json!({ "mode": "strict" })),
        )
        .await;
    assert!(status < 300);
    wait_until("the desired properties", 30_000.0, || {
        desired.first_args().iter().any(|properties| {
            js_sys::Reflect::get(properties, &"mode".into())
                .ok()
                .and_then(|mode| mode.as_string())
                .as_deref()
                == Some("strict")
        })
    })
    .await;
    let patch = js_sys::JSON::parse(r#"{"contract":"iothub"}"#).unwrap();
    JsFuture::from(
        client
            .update_reported_properties(patch)
            .unchecked_into::<Promise>(),
    )
    .await
    .expect("the patch is saved");
    wait_until_async("the reported properties", 30_000.0, || async {
        let (_, reported) = platform
            .admin("GET", &twin_path("reported-properties"), None)
            .await;
        (reported["contract"] == "iothub").then_some(())
    })
    .await;

    // Two refreshes while messages flow.
    let mut sent = 100;
    wait_until_async("two token refreshes", 60_000.0, || {
        let payload = vec![JsValue::from(format!("m{sent}"))];
        sent += 1;
        let (platform, sender, device_id) = (&platform, &sender, &device_id);
        async move {
            send_all(sender, payload).await;
            (platform.registration_tokens(device_id).await.len() >= 3).then_some(())
        }
    })
    .await;

    // A Platform restart while the rest is sent.
    platform.control("stop").await;
    send_all(&sender, js_texts(sent, 200)).await;
    platform.control("start").await;
    wait_until("every message delivered", 120_000.0, || {
        client.pending_messages_count() == 0.0
    })
    .await;

    let path = format!(
        "/workspaces/{}/devices/{device_id}/messages?limit=10000",
        platform.workspace
    );
    let (_, messages) = platform.admin("GET", &path, None).await;
    let messages = messages.as_array().cloned().unwrap_or_default();
    let link = messages
        .iter()
        .find(|m| m["hasExternalizedPayload"] == true)
        .expect("the large message went by upload")
        .clone();
    assert_eq!(link["sequence"]["n"], 100, "in its place in the order");
    let stored: Vec<String> = messages
        .iter()
        .filter(|m| m["hasExternalizedPayload"] != true)
        .map(|m| m["payloadText"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(stored, texts(0, 200), "200 messages in order, each once");
    let blob_name = link["blobName"].as_str().expect("a blob name");
    let (status, blob) = platform
        .admin_bytes(&format!(
            "/workspaces/{}/blobs/content?deviceId={device_id}&name={blob_name}",
            platform.workspace
        ))
        .await;
    assert_eq!(status, 200);
    assert!(blob == large, "the blob holds the message's bytes");
    assert_eq!(operations.len(), 1, "provisioned once");
    JsFuture::from(client.stop().unchecked_into::<Promise>())
        .await
        .expect("stops");
}
