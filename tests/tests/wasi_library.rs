//! The WASI library component (`vdev_wasi.wasm`, world `vdev:device/library`) called by the
//! wasmtime host through `vdev:device/client`: the host drives the device with `poll` and sends
//! with `send`, and desired/reported properties round-trip, against the stand-in Platform on
//! loopback.

use std::time::Duration;

use serde_json::{Value, json};
use vdev_platform::PlatformInfo;
use vdev_tests::library::{platform_host_and_store, poll_until};
use vdev_tests::platform_admin::{
    admin, approve, arm_fault, blob_content, device_messages, device_session, payload_texts,
    strict_config,
};
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
    // "If newer": nothing for the app that has the version, the properties for one behind.
    let (_, version) = device
        .desired_properties_if_newer(0)
        .await
        .expect("call")
        .expect("newer than none");
    let version = version.expect("a version");
    assert_eq!(
        device
            .desired_properties_if_newer(version)
            .await
            .expect("call"),
        None
    );
    let (behind, newer) = device
        .desired_properties_if_newer(version - 1)
        .await
        .expect("call")
        .expect("newer than the one before");
    assert_eq!(newer, Some(version));
    let behind: Value = serde_json::from_str(&behind).expect("desired json");
    assert_eq!(behind["interval"], 5);

    // A cloud-to-device message sent through the admin API arrives with its properties
    // decoded, every pair in order.
    admin(
        &info,
        reqwest::Method::POST,
        "/devices/wasi-lib-1/c2d-messages?mode=eco&note=a%20b%26c%3D%25",
        json!({ "setpoint": 21.5 }),
    )
    .await;
    let (properties, payload) = poll_until(&mut device, &mut seen, DEADLINE, |e| {
        let Some(Val::Record(fields)) = &e.payload else {
            return None;
        };
        if e.name != "cloud-to-device-message" {
            return None;
        }
        let field = |wanted: &str| fields.iter().find(|(name, _)| name == wanted).map(|f| &f.1);
        let properties: Vec<(String, String)> = match field("properties")? {
            Val::List(pairs) => pairs
                .iter()
                .filter_map(|pair| match pair {
                    Val::Tuple(items) => match items.as_slice() {
                        [Val::String(name), Val::String(value)] => {
                            Some((name.clone(), value.clone()))
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => return None,
        };
        let payload: Vec<u8> = match field("payload")? {
            Val::List(bytes) => bytes
                .iter()
                .filter_map(|b| match b {
                    Val::U8(b) => Some(*b),
                    _ => None,
                })
                .collect(),
            _ => return None,
        };
        Some((properties, payload))
    })
    .await;
    let named = |name: &str| {
        properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(named("mode"), Some("eco"), "{properties:?}");
    assert_eq!(named("note"), Some("a b&c=%"), "decoded: {properties:?}");
    assert_eq!(payload, br#"{"setpoint":21.5}"#);

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
    assert!(!device.reported_properties_pending().await.expect("call"));
    let revision = device
        .update_reported_properties(r#"{"firmware":"1.2.3"}"#)
        .await
        .expect("reported patch accepted");
    // The device moves only while the app polls: not acknowledged yet.
    assert!(device.reported_properties_pending().await.expect("call"));
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
    assert!(!device.reported_properties_pending().await.expect("call"));
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

/// The strict stand-in on 127.0.0.1:443 and :8883 under the host name `localhost` (which
/// resolves without help inside the component too), blob storage under `127.0.0.1`.
fn strict(dir: &std::path::Path, admin: &str) -> vdev_platform::Config {
    strict_config(
        dir,
        [127, 0, 0, 1].into(),
        "localhost",
        Some("127.0.0.1"),
        admin,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_library_world_against_the_strict_contract_works_as_on_a_real_instance() {
    if std::net::TcpListener::bind(("127.0.0.1", 443)).is_err() {
        eprintln!("SKIPPED: cannot bind 127.0.0.1:443 (needs root)");
        return;
    }
    // One after the other: both take 443 of the one loopback name the component resolves.
    strict_run("wasi-strict", false).await;
    strict_run("wasi-strict-ws", true).await;
}

/// Provisioning, 200 messages in order with a 1 MB one by upload, the twin, two token
/// refreshes and a Platform restart, with MQTT over TLS on 8883 or over WebSocket on 443.
async fn strict_run(device_id: &str, web_socket: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("platform");
    let platform = vdev_platform::Platform::start(strict(&data, "127.0.0.1:0"))
        .await
        .expect("the strict platform starts");
    let info = platform.info().clone();
    let host = tokio::task::spawn_blocking(vdev_tests::wasi_host::WasiHost::load)
        .await
        .expect("load task")
        .expect("the components build and compile");
    let store = dir.path().join("device");
    std::fs::create_dir_all(&store).expect("store dir");
    std::fs::copy(&info.ca_certificate_path, store.join("platform-ca.pem")).expect("ca copied");
    // Registration Tokens of 6 s, refreshed at half their life.
    let created = admin(
        &info,
        reqwest::Method::POST,
        "/provisioning-tokens",
        json!({"name": device_id, "defaultRegistrationTokenLifetimeSeconds": 6}),
    )
    .await;
    let config = LibraryConfig {
        instance_url: "https://localhost".into(),
        provisioning_token: created["token"].as_str().expect("a token").into(),
        device_id: device_id.into(),
        tls_ca_file: Some("platform-ca.pem".into()),
        web_socket,
        https_ca_pem: Some(std::fs::read(&info.ca_certificate_path).expect("the CA")),
        tunables: Vec::new(),
        log_level: None,
    };
    let mut device = host
        .start_library_device(&store, config)
        .await
        .expect("device starts");
    let mut seen = Vec::new();
    approve_its_operation(&info, &mut device, &mut seen).await;

    let mut delivered = 0;
    for n in 0..100 {
        device
            .send(format!("m{n}").as_bytes())
            .await
            .expect("stored");
    }
    // A 1 MB message: by upload to blob storage under its own host name.
    let large: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i * 13 + (i >> 10)) as u8)
        .collect();
    device.send(&large).await.expect("stored");
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        delivered += usize::from(e.name == "message-delivered");
        (delivered == 101).then_some(())
    })
    .await;

    // The twin.
    admin(
        &info,
        reqwest::Method::PUT,
        &format!("/devices/{device_id}/desired-properties"),
        json!({ "mode": "strict" }),
    )
    .await;
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        (e.name == "desired-properties-changed" && format!("{:?}", e.payload).contains("strict"))
            .then_some(())
    })
    .await;
    device
        .update_reported_properties(r#"{"contract":"iothub"}"#)
        .await
        .expect("reported patch accepted");
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        (e.name == "reported-properties-acknowledged").then_some(())
    })
    .await;

    // Two refreshes while messages flow.
    let mut sent = 100;
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        // Messages keep flowing (up to 150 of the 200) while the device refreshes.
        if sent < 150 {
            device
                .send(format!("m{sent}").as_bytes())
                .await
                .expect("stored");
            sent += 1;
        }
        for event in device.poll(200).await.expect("poll") {
            delivered += usize::from(event.name == "message-delivered");
            seen.push(event);
        }
        let tokens = admin(
            &info,
            reqwest::Method::GET,
            &format!("/registration-tokens?deviceId={device_id}"),
            Value::Null,
        )
        .await;
        if tokens.as_array().map_or(0, Vec::len) >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two refreshes within the deadline"
        );
    }

    // A Platform restart while the rest is sent.
    platform.shutdown().await;
    for n in sent..200 {
        device
            .send(format!("m{n}").as_bytes())
            .await
            .expect("stored");
    }
    let admin_address = info
        .http_url
        .as_deref()
        .expect("admin")
        .trim_start_matches("http://");
    let platform = vdev_platform::Platform::start(strict(&data, admin_address))
        .await
        .expect("restarts");
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        delivered += usize::from(e.name == "message-delivered");
        (delivered >= 201).then_some(())
    })
    .await;
    device.stop().await.expect("stops");

    let messages = device_messages(&info, device_id).await;
    let link = messages
        .iter()
        .find(|m| m["hasExternalizedPayload"] == true)
        .expect("the large message went by upload");
    assert_eq!(link["sequence"]["n"], 100);
    let texts: Vec<String> = messages
        .iter()
        .filter(|m| m["hasExternalizedPayload"] != true)
        .map(|m| m["payloadText"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = (0..200).map(|n| format!("m{n}")).collect();
    assert_eq!(texts, expected, "200 messages in order, each once");
    let blob = blob_content(
        &info,
        device_id,
        link["blobName"].as_str().expect("a blob name"),
    )
    .await;
    assert!(blob == large, "the blob holds the message's bytes");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_library_world_checks_its_tunables_at_start_and_holds_an_outbox_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    let config = |tunables: &[(&str, u64)]| LibraryConfig {
        tunables: tunables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), *value))
            .collect(),
        ..LibraryConfig::tcp(
            info.http_url.clone().expect("http"),
            info.provisioning_token.clone(),
            "wasi-lib-tunables".into(),
        )
    };
    for (tunables, name, reason) in [
        (
            &[("max-in-flight", 0)][..],
            "max-in-flight",
            "0 is not from 1 to 65535",
        ),
        (
            &[("retry-initial-ms", 5_000), ("retry-max-ms", 100)][..],
            "retry-max-ms",
            "100 ms is below the first retry delay (5000 ms)",
        ),
        (
            &[("keepalive", 30)][..],
            "tunables",
            r#"keepalive\" is not one of keep-alive-seconds, ping-timeout-ms"#,
        ),
    ] {
        let refused = host
            .start_library_device(&store, config(tunables))
            .await
            .err()
            .expect("start refused");
        let refused = format!("{refused:#}");
        assert!(
            refused.contains("invalid-configuration")
                && refused.contains(&format!("String(\"{name}\")"))
                && refused.contains(reason),
            "{refused}"
        );
    }

    // Never approved, the device never connects: its queue only fills, up to the tuned limit.
    let tuned = [
        ("outbox-max-messages", 2),
        ("keep-alive-seconds", 5),
        ("max-in-flight", 1),
    ];
    let mut device = host
        .start_library_device(&store, config(&tuned))
        .await
        .expect("device starts");
    assert_eq!(device.send(b"a").await.expect("stored"), 0);
    assert_eq!(device.send(b"b").await.expect("stored"), 1);
    let full = format!(
        "{:#}",
        device.send(b"c").await.expect_err("the outbox is full")
    );
    assert!(full.contains("outbox-full"), "{full}");
    assert_eq!(device.pending_count().await.expect("count"), 2);

    // Forgetting it takes `force` while those two are pending; then its files are gone.
    let refused = format!("{:#}", device.forget(false).await.expect_err("refused"));
    assert!(
        refused.contains(r#"Variant("messages-pending", Some(U64(2)))"#),
        "{refused}"
    );
    assert!(
        store.read_dir().expect("list").next().is_some(),
        "refused: nothing deleted"
    );
    device.forget(true).await.expect("forgotten");
    let left: Vec<_> = store.read_dir().expect("list").collect();
    assert!(left.is_empty(), "the store's files are gone: {left:?}");
    device.stop().await.expect("stops");
    let mut again = host
        .start_library_device(&store, config(&tuned))
        .await
        .expect("device starts again");
    assert_eq!(
        again.pending_count().await.expect("count"),
        0,
        "the queue is gone"
    );
    again.stop().await.expect("stops");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_library_world_tunables_reach_the_wire_and_events_are_logged_through_the_host() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    // A backlog stored before approval, so that all of it is ready to go once connected; the
    // Platform's facts of the session show the window and the CONNECT's keep-alive, and the
    // host's `wasi:logging` what the component logged.
    let deliver_a_backlog = async |device_id: &str, tunables: &[(&str, u64)], log_level| {
        let config = LibraryConfig {
            tunables: tunables
                .iter()
                .map(|(name, value)| ((*name).to_owned(), *value))
                .collect(),
            log_level,
            ..LibraryConfig::tcp(
                info.http_url.clone().expect("http"),
                info.provisioning_token.clone(),
                device_id.into(),
            )
        };
        let outbox = store.join(device_id);
        std::fs::create_dir_all(&outbox).expect("outbox dir");
        let mut device = host
            .start_library_device(&outbox, config)
            .await
            .expect("device starts");
        let texts: Vec<String> = (0..50).map(|i| format!("{device_id} {i}")).collect();
        for text in &texts {
            device.send(text.as_bytes()).await.expect("stored");
        }
        // Its first CONNECT is refused (return code 3): a lost connection, logged at warn.
        arm_fault(&info, json!({ "target": "mqttConnect", "count": 1 })).await;
        let mut seen = Vec::new();
        approve_its_operation(&info, &mut device, &mut seen).await;
        poll_until_delivered(&mut device, &mut seen, texts.len()).await;
        assert_eq!(
            stored_texts(&info, device_id).await,
            texts,
            "in order, once each"
        );
        let logs = device.logs().to_vec();
        device.stop().await.expect("stops");
        (device_session(&info, device_id).await, logs)
    };
    // The default window sends the backlog in runs: several unacknowledged at once. The
    // default log level is `error`: the refused CONNECT is a warning, so nothing is logged.
    let (untuned, logs) = deliver_a_backlog("wasi-lib-untuned", &[], None).await;
    assert!(untuned["peakInFlight"].as_u64() > Some(1), "{untuned}");
    assert_eq!(untuned["keepAliveSeconds"], 60, "{untuned}");
    assert_eq!(logs, [], "errors only by default");

    let (tuned, logs) = deliver_a_backlog(
        "wasi-lib-tuned",
        &[("max-in-flight", 1), ("keep-alive-seconds", 17)],
        Some("info".into()),
    )
    .await;
    assert_eq!(tuned["peakInFlight"], 1, "one publish at a time: {tuned}");
    assert_eq!(tuned["keepAliveSeconds"], 17, "{tuned}");
    // Each event at its level, as its JSON line; nothing below `info`.
    let at = |level: &str, event: &str| {
        logs.iter().any(|line| {
            line.level == level
                && line.context == "vdev"
                && line.message.contains(&format!(r#""event":"{event}""#))
        })
    };
    for event in [
        "provisioning-operation",
        "registered",
        "connection-state-changed",
    ] {
        assert!(at("info", event), "{event} at info: {logs:?}");
    }
    assert!(
        at("warn", "connection-lost"),
        "the refused CONNECT at warn: {logs:?}"
    );
    assert!(
        logs.iter().all(|line| line.level != "debug"),
        "nothing below info (message-delivered is debug): {logs:?}"
    );
    platform.shutdown().await;
}
