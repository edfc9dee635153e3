//! The WASI library component (`vdev_wasi.wasm`, world `vdev:device/library`) called by the
//! wasmtime host through `vdev:device/client`: the host drives the device with `poll` and sends
//! with `send`, and desired/reported properties round-trip, against the stand-in Platform on
//! loopback.

use std::time::Duration;

use serde_json::{Value, json};
use vdev_platform::PlatformInfo;
use vdev_tests::library::{platform_host_and_store, poll_until};
use vdev_tests::platform_admin::{admin, approve, device_messages, payload_texts};
use vdev_tests::wasi_host::{LibraryConfig, LibraryDevice, LibraryEvent};
use wasmtime::component::Val;

const DEADLINE: Duration = Duration::from_secs(120);
const MESSAGES: usize = 200;

/// Waits for the device's provisioning operation and approves it at the Platform.
async fn approve_its_operation(
    info: &PlatformInfo,
    device: &mut LibraryDevice,
    seen: &mut Vec<LibraryEvent>,
) {
    let operation_id = poll_until(device, seen, DEADLINE, |e| {
        (e.name == "provisioning-operation").then(|| e.string_field("id").expect("operation id"))
    })
    .await;
    approve(info, &operation_id).await;
}

/// Polls until `count` messages were reported delivered.
async fn poll_until_delivered(
    device: &mut LibraryDevice,
    seen: &mut Vec<LibraryEvent>,
    count: usize,
) {
    let mut delivered = 0;
    poll_until(device, seen, DEADLINE, |e| {
        delivered += usize::from(e.name == "message-delivered");
        (delivered == count).then_some(())
    })
    .await;
}

/// The text payloads the Platform stored for `device_id`, oldest first.
async fn stored_texts(info: &PlatformInfo, device_id: &str) -> Vec<String> {
    payload_texts(&device_messages(info, device_id).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_library_world_provisions_round_trips_properties_and_delivers_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    let config = LibraryConfig::tcp(
        info.http_url.clone().expect("http"),
        info.provisioning_token.clone(),
        "wasi-lib-1".into(),
    );
    let mut device = host
        .start_library_device(&store, config)
        .await
        .expect("device starts");
    let mut seen = Vec::new();

    approve_its_operation(&info, &mut device, &mut seen).await;
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        (e.name == "registered").then_some(())
    })
    .await;

    // Twin: desired properties set by the Platform arrive; reported ones set here reach it.
    admin(
        &info,
        reqwest::Method::PUT,
        "/devices/wasi-lib-1/desired-properties",
        json!({ "interval": 5 }),
    )
    .await;
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        let desired = match &e.payload {
            Some(Val::Record(fields)) if e.name == "desired-properties-changed" => {
                fields.iter().find_map(|(name, value)| match value {
                    Val::String(json) if name == "properties" => Some(json.clone()),
                    _ => None,
                })
            }
            _ => None,
        }?;
        let desired: Value = serde_json::from_str(&desired).expect("desired json");
        (desired["interval"] == 5).then_some(())
    })
    .await;
    // The core's refusals come as the WIT variant, in the core's words.
    for (patch, reason) in [
        (r#"{"$version":3}"#, "is reserved"),
        ("[1]", "not a json object"),
        ("{firmware", "is invalid json"),
    ] {
        let refused = device
            .update_reported_properties(patch)
            .await
            .expect_err("the patch is refused")
            .to_string();
        assert!(
            refused.contains(r#"Variant("invalid-patch""#) && refused.contains(reason),
            "{patch}: {refused}"
        );
    }
    let revision = device
        .update_reported_properties(r#"{"firmware":"1.2.3"}"#)
        .await
        .expect("reported patch accepted");
    // Durable in the store first (the save runs in the same turn), acknowledged later.
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        match (e.name.as_str(), &e.payload) {
            ("reported-properties-stored", Some(Val::U64(stored))) => {
                (*stored >= revision).then_some(())
            }
            _ => None,
        }
    })
    .await;
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        (e.name == "reported-properties-acknowledged").then_some(())
    })
    .await;
    let reported = admin(
        &info,
        reqwest::Method::GET,
        "/devices/wasi-lib-1/reported-properties",
        Value::Null,
    )
    .await;
    assert_eq!(reported["firmware"], "1.2.3", "{reported}");

    let mut last_seq = None;
    for n in 0..MESSAGES {
        let seq = device
            .send(format!("library reading {n}").as_bytes())
            .await
            .expect("stored");
        assert!(last_seq.is_none_or(|last| seq > last));
        last_seq = Some(seq);
    }
    poll_until_delivered(&mut device, &mut seen, MESSAGES).await;
    assert_eq!(device.pending_count().await.expect("pending"), 0);

    // Offline, as the app says: the connection closes, sends are stored and wait; back online,
    // they go at once.
    device.set_offline(true).await.expect("set-offline");
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        matches!(
            (e.name.as_str(), &e.payload),
            ("offline-changed", Some(Val::Bool(true)))
        )
        .then_some(())
    })
    .await;
    const OFFLINE: usize = 3;
    for n in MESSAGES..MESSAGES + OFFLINE {
        device
            .send(format!("library reading {n}").as_bytes())
            .await
            .expect("stored while offline");
    }
    // A window to watch, not a synchronisation: nothing may go out while offline.
    for _ in 0..3 {
        let events = device.poll(200).await.expect("poll");
        assert!(
            events.iter().all(|e| e.name != "message-delivered"),
            "delivered while offline: {events:?}"
        );
    }
    assert_eq!(stored_texts(&info, "wasi-lib-1").await.len(), MESSAGES);
    device.set_offline(false).await.expect("set-offline");
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        matches!(
            (e.name.as_str(), &e.payload),
            ("offline-changed", Some(Val::Bool(false)))
        )
        .then_some(())
    })
    .await;
    poll_until_delivered(&mut device, &mut seen, OFFLINE).await;
    device.stop().await.expect("stops");

    let payloads = stored_texts(&info, "wasi-lib-1").await;
    let expected: Vec<String> = (0..MESSAGES + OFFLINE)
        .map(|n| format!("library reading {n}"))
        .collect();
    assert_eq!(payloads, expected, "stored once, in order");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_library_world_delivers_over_tls_trusting_the_ca_file_of_its_configuration() {
    const TLS_MESSAGES: usize = 30;
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    assert!(info.gateway_endpoints.mqtt_tls.is_some(), "TLS listener");
    let config = |ca_file: &str| LibraryConfig {
        tls_ca_file: Some(ca_file.into()),
        ..LibraryConfig::tcp(
            info.http_url.clone().expect("http"),
            info.provisioning_token.clone(),
            "wasi-lib-tls".into(),
        )
    };

    // A CA file that is not there is a clear start error, not a device that never connects.
    let missing = host
        .start_library_device(&store, config("no-such-ca.pem"))
        .await
        .err()
        .expect("start refused");
    let missing = format!("{missing:#}");
    assert!(
        missing.contains("invalid-configuration")
            && missing.contains(r#"String("tls-ca-file")"#)
            && missing.contains("no-such-ca.pem"),
        "{missing}"
    );

    // The component reads the CA through its preopened directory.
    std::fs::copy(&info.ca_certificate_path, store.join("platform-ca.pem")).expect("ca copied");
    let mut device = host
        .start_library_device(&store, config("platform-ca.pem"))
        .await
        .expect("device starts");
    let mut seen = Vec::new();
    approve_its_operation(&info, &mut device, &mut seen).await;
    let expected: Vec<String> = (0..TLS_MESSAGES)
        .map(|n| format!("tls reading {n}"))
        .collect();
    for text in &expected {
        device.send(text.as_bytes()).await.expect("stored");
    }
    poll_until_delivered(&mut device, &mut seen, TLS_MESSAGES).await;
    device.stop().await.expect("stops");

    let payloads = stored_texts(&info, "wasi-lib-tls").await;
    assert_eq!(payloads, expected, "stored once, in order, over TLS");
    platform.shutdown().await;
}
