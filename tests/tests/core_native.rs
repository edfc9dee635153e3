//! The first end-to-end proof of the core: `vdev-core` driven over real loopback sockets by the
//! native host against the stand-in Platform, whose MQTT side is an independent implementation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::timeout;
use vdev_core::{Event, MemoryStore, StreamOptions};
use vdev_platform::{Config, Platform};
use vdev_tests::native::{NativeDevice, SharedStore};
use vdev_tests::platform_admin::{
    admin, approve, blob_content, device_config, restart_config, strict_config,
};

const MESSAGES: usize = 1_000;
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits for the first event `pick` accepts.
async fn next_event<T>(device: &mut NativeDevice, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    timeout(DEADLINE, async {
        loop {
            let event = device.events.recv().await.expect("device is running");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("event within the deadline")
}

/// Waits until `count` messages were acknowledged, counting delivered events.
async fn wait_delivered(device: &mut NativeDevice, delivered: &mut usize, count: usize) {
    timeout(DEADLINE, async {
        while *delivered < count {
            if let Event::MessageDelivered { .. } = device.events.recv().await.expect("running") {
                *delivered += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {delivered} of {count} messages delivered in time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_provisions_and_delivers_1000_messages_in_order_across_a_platform_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(Config::ephemeral(dir.path()))
        .await
        .expect("platform starts");
    let info = platform.info().clone();
    let store: SharedStore = Arc::new(Mutex::new(MemoryStore::new("nativetest1")));
    let mut device = NativeDevice::start(device_config(&info, "native-1"), store.clone(), [9; 32]);

    let operation = next_event(&mut device, |e| match e {
        Event::ProvisioningOperation(op) => Some(op.clone()),
        _ => None,
    })
    .await;
    assert!(!operation.verification_code.is_empty());
    approve(&info, &operation.id).await;
    let device_id = next_event(&mut device, |e| match e {
        Event::Registered { device_id, .. } => Some(device_id.clone()),
        _ => None,
    })
    .await;
    assert_eq!(device_id, "native-1");

    let stream = StreamOptions {
        stream_group: Some("telemetry".into()),
        stream: Some("native".into()),
        ..Default::default()
    };
    let mut delivered = 0;
    for n in 0..MESSAGES / 2 {
        device
            .send(stream.clone(), format!("reading {n}").into_bytes())
            .await
            .expect("stored");
    }
    wait_delivered(&mut device, &mut delivered, MESSAGES / 4).await;

    // The Platform goes away while the device keeps sending: sends still complete (stored).
    platform.shutdown().await;
    for n in MESSAGES / 2..MESSAGES {
        device
            .send(stream.clone(), format!("reading {n}").into_bytes())
            .await
            .expect("stored while the platform is down");
    }
    let queued = device.stats().await.pending_count;
    assert!(
        queued >= (MESSAGES / 2) as u64,
        "messages sent while the platform was down wait in the store ({queued} pending)"
    );
    let platform = Platform::start(restart_config(&info))
        .await
        .expect("platform restarts on the same data dir and ports");

    wait_delivered(&mut device, &mut delivered, MESSAGES).await;
    let stats = device.stats().await;
    assert_eq!(stats.pending_count, 0);
    assert_eq!(
        store.lock().unwrap().meta().count,
        0,
        "delivered records are removed"
    );

    let stored = admin(
        &info,
        reqwest::Method::GET,
        "/devices/native-1/messages?limit=10000",
        Value::Null,
    )
    .await;
    let payloads: Vec<&str> = stored
        .as_array()
        .expect("message list")
        .iter()
        .map(|m| m["payloadText"].as_str().expect("text payload"))
        .collect();
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("reading {n}")).collect();
    assert_eq!(payloads, expected, "all messages stored once, in order");
    let sequences: Vec<u64> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sequence"]["n"].as_u64().expect("vdev-seq stored"))
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    assert!(
        stored
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["streamGroup"] == "telemetry" && m["stream"] == "native")
    );

    device.stop().await;
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_against_the_strict_contract_delivers_uploads_syncs_refreshes_and_survives_a_restart()
{
    // Port 443 needs root; the test command runs as root (the official SDK's test binds it too).
    let ip: std::net::IpAddr = "127.0.0.77".parse().expect("address");
    if std::net::TcpListener::bind((ip, 443)).is_err() {
        eprintln!("SKIPPED: cannot bind {ip}:443 (needs root)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(strict_config(
        dir.path(),
        ip,
        "hub.native.test",
        None,
        "127.0.0.1:0",
    ))
    .await
    .expect("the strict platform starts");
    let info = platform.info().clone();
    // Registration Tokens of 6 s, refreshed at half their life.
    let created = admin(
        &info,
        reqwest::Method::POST,
        "/provisioning-tokens",
        serde_json::json!({"name": "native-strict", "defaultRegistrationTokenLifetimeSeconds": 6}),
    )
    .await;
    let mut config = vdev_core::DeviceConfig::new(
        "hub.native.test",
        created["token"].as_str().expect("a token"),
    );
    config.device_id = Some(vdev_core::DeviceId::parse("native-strict").expect("an id"));
    config.transport = vdev_core::Transport::Tls;
    let network = vdev_tests::native::Network {
        ca_pem: Some(std::fs::read(&info.ca_certificate_path).expect("the test CA")),
        resolve: vec![
            ("hub.native.test".into(), ip),
            ("blob.hub.native.test".into(), ip),
        ],
    };
    let store: SharedStore = Arc::new(Mutex::new(MemoryStore::new("nativestrict")));
    let mut device = NativeDevice::start_with(config, store, [5; 32], network);
    let operation = next_event(&mut device, |e| match e {
        Event::ProvisioningOperation(op) => Some(op.clone()),
        _ => None,
    })
    .await;
    approve(&info, &operation.id).await;

    let stream = StreamOptions::default();
    let mut delivered = 0;
    for n in 0..100 {
        device
            .send(stream.clone(), format!("m{n}").into_bytes())
            .await
            .expect("stored");
    }
    // A 1 MB message: by upload to blob storage under its own host name.
    let large: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i * 13 + (i >> 10)) as u8)
        .collect();
    device
        .send(stream.clone(), large.clone())
        .await
        .expect("stored");
    wait_delivered(&mut device, &mut delivered, 101).await;

    // The twin: a desired change arrives, a reported patch is stored.
    admin(
        &info,
        reqwest::Method::PUT,
        "/devices/native-strict/desired-properties",
        serde_json::json!({"mode": "strict"}),
    )
    .await;
    next_event(&mut device, |e| match e {
        Event::DesiredPropertiesChanged { properties, .. }
            if properties.to_json().contains("strict") =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    let patch = vdev_core::json::Value::parse(br#"{"contract":"iothub"}"#).expect("json");
    device.update_reported_properties(patch);

    // Two refreshes while messages flow.
    let mut sent = 101;
    timeout(DEADLINE, async {
        loop {
            device
                .send(stream.clone(), format!("m{}", sent - 1).into_bytes())
                .await
                .expect("stored");
            sent += 1;
            let tokens = admin(
                &info,
                reqwest::Method::GET,
                "/registration-tokens?deviceId=native-strict",
                Value::Null,
            )
            .await;
            if tokens.as_array().map_or(0, Vec::len) >= 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("two refreshes within the deadline");

    // A restart while the rest is sent.
    platform.shutdown().await;
    for n in sent - 1..200 {
        device
            .send(stream.clone(), format!("m{n}").into_bytes())
            .await
            .expect("stored while the platform is down");
    }
    let admin_address = info
        .http_url
        .as_deref()
        .expect("admin")
        .trim_start_matches("http://");
    let platform = Platform::start(strict_config(
        dir.path(),
        ip,
        "hub.native.test",
        None,
        admin_address,
    ))
    .await
    .expect("restarts");
    wait_delivered(&mut device, &mut delivered, 201).await;

    let messages = admin(
        &info,
        reqwest::Method::GET,
        "/devices/native-strict/messages?limit=10000",
        Value::Null,
    )
    .await;
    let messages = messages.as_array().expect("a list").clone();
    let link = messages
        .iter()
        .find(|m| m["hasExternalizedPayload"] == true)
        .expect("the large message went by upload");
    assert_eq!(link["sequence"]["n"], 100);
    let texts: Vec<&str> = messages
        .iter()
        .filter(|m| m["hasExternalizedPayload"] != true)
        .map(|m| m["payloadText"].as_str().unwrap_or_default())
        .collect();
    let expected: Vec<String> = (0..200).map(|n| format!("m{n}")).collect();
    assert_eq!(texts, expected, "200 messages in order, each once");
    let blob = blob_content(
        &info,
        "native-strict",
        link["blobName"].as_str().expect("a blob name"),
    )
    .await;
    assert!(blob == large, "the blob holds the message's bytes");
    let reported = admin(
        &info,
        reqwest::Method::GET,
        "/devices/native-strict/reported-properties",
        Value::Null,
    )
    .await;
    assert_eq!(reported["contract"], "iothub");
    device.stop().await;
    platform.shutdown().await;
}
