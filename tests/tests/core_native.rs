//! The first end-to-end proof of the core: `vdev-core` driven over real loopback sockets by the
//! native host against the stand-in Platform, whose MQTT side is an independent implementation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::timeout;
use vdev_core::{Event, MemoryStore, StreamOptions};
use vdev_platform::{Config, Platform};
use vdev_tests::native::{NativeDevice, SharedStore};
use vdev_tests::platform_admin::{admin, approve, device_config, restart_config};

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
