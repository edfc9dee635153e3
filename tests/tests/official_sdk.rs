//! Acceptance: the official Spotflow Device SDK (`spotflow` 0.8.1), unchanged, against the
//! stand-in Platform. The crate hard-codes `https://<instance>` on port 443 and MQTT over TLS on
//! port 8883, so this test binds those fixed loopback ports; it is the only test in this binary,
//! so no other test of the workspace competes for them (cargo runs test binaries one at a time).
//! The stand-in runs its strict contract (`Contract::IotHub`): the crate meets exactly what a
//! real instance offers.
//!
//! The same run records what the crate sends (`--record-transcript`), then has a vdev device
//! (the core on the native host) go through the same steps against the same Platform, and
//! compares the two transcripts field by field: `docs/wire-contract.md` lists the differences
//! allowed.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spotflow::{
    DesiredProperties, DesiredPropertiesUpdatedCallback, DeviceClient, DeviceClientBuilder,
    MessageContext, ProvisioningOperation, ProvisioningOperationDisplayHandler,
};
use vdev_platform::{Config, Contract, Platform};

const BATCHES: usize = 10;
const MESSAGES_PER_BATCH: usize = 10;
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Admin {
    base: String,
    token: String,
    workspace: String,
}

impl Admin {
    fn url(&self, path: &str) -> String {
        format!("{}/workspaces/{}{path}", self.base, self.workspace)
    }

    fn get(&self, path: &str) -> Value {
        ureq::get(&self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_json()
            .expect("admin api answers json")
    }

    /// Waits until the Platform has ended the device's session: whatever it sent last (its
    /// DISCONNECT) is in the transcript then.
    fn wait_disconnected(&self, device_id: &str) {
        poll_until("the session to end", || {
            (self.get(&format!("/devices/{device_id}"))["connected"] == false).then_some(())
        });
    }

    /// What devices sent since the transcript was cleared.
    fn transcript(&self) -> Vec<Value> {
        ureq::get(&format!("{}/transcript", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
            .expect("GET /transcript")
            .into_json()
            .expect("a json array")
    }

    fn clear_transcript(&self) {
        ureq::delete(&format!("{}/transcript", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
            .expect("DELETE /transcript");
    }

    fn put(&self, path: &str, body: Value) -> Value {
        ureq::put(&self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token))
            .send_json(body)
            .unwrap_or_else(|e| panic!("PUT {path}: {e}"))
            .into_json()
            .expect("admin api answers json")
    }
}

/// Approves every operation the SDK displays, the way the SDK's own tests do.
struct ApproveThroughAdminApi(Admin);

impl ProvisioningOperationDisplayHandler for ApproveThroughAdminApi {
    fn display(&self, operation: &ProvisioningOperation) -> anyhow::Result<()> {
        self.0.put(
            "/provisioning-operations/approve",
            json!({"provisioningOperationId": operation.id}),
        );
        Ok(())
    }
}

struct DesiredChanges(mpsc::Sender<String>);

impl DesiredPropertiesUpdatedCallback for DesiredChanges {
    fn properties_updated(&self, properties: DesiredProperties) -> anyhow::Result<()> {
        self.0.send(properties.values)?;
        Ok(())
    }
}

fn build_client(
    admin: &Admin,
    device_id: &str,
    provisioning_token: &str,
    database: &Path,
    desired: mpsc::Sender<String>,
) -> DeviceClient {
    DeviceClientBuilder::new(
        Some(device_id.to_owned()),
        provisioning_token.to_owned(),
        database,
    )
    .with_instance("localhost".to_owned())
    .with_display_provisioning_operation_callback(Box::new(ApproveThroughAdminApi(admin.clone())))
    .with_desired_properties_updated_callback(Box::new(DesiredChanges(desired)))
    .build()
    .expect("the official SDK builds a client against the stand-in Platform")
}

fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn next_desired(rx: &mpsc::Receiver<String>) -> Value {
    let text = rx
        .recv_timeout(DEADLINE)
        .expect("the desired-properties callback fires");
    serde_json::from_str(&text).expect("desired properties are json")
}

#[test]
fn official_sdk_provisions_sends_in_order_and_syncs_twin_and_vdev_sends_what_it_sends() {
    let data = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The strict contract: only what a real instance offers (no stand-in extensions), the
    // plain listener serving the admin API alone. Blob storage's host name must differ from
    // the hub's and resolve without a hosts file: the loopback address itself.
    let config = Config {
        https: Some("127.0.0.1:443".parse().expect("address")),
        mqtt_tls: Some("127.0.0.1:8883".parse().expect("address")),
        mqtt_tcp: None,
        contract: Contract::IotHub,
        blob_host_name: Some("127.0.0.1".into()),
        record_transcript: true,
        ..Config::ephemeral(data.path().join("platform"))
    };
    let platform = runtime
        .block_on(Platform::start(config))
        .expect("platform starts on 443 and 8883 (run as root, nothing else on those ports)");
    let info = platform.info().clone();
    // SAFETY: set before the SDK creates its first TLS connector; this binary runs this one test,
    // and nothing else in the process reads or writes the environment concurrently.
    unsafe { std::env::set_var("SSL_CERT_FILE", &info.ca_certificate_path) };
    let admin = Admin {
        base: info.http_url.clone().expect("http listener"),
        token: info.admin_token.clone(),
        workspace: info.workspace_id.clone(),
    };
    let device_id = "official-sdk-device";
    let database = data.path().join("device.db");
    let (desired_tx, desired_rx) = mpsc::channel();

    let mut context = MessageContext::new(Some("sdk-group".into()), Some("sdk-stream".into()));
    context.set_compression(Some(spotflow::Compression::Fastest));
    {
        let client = build_client(
            &admin,
            device_id,
            &info.provisioning_token,
            &database,
            desired_tx.clone(),
        );
        assert_eq!(client.device_id().expect("device id"), device_id);
        assert_eq!(client.workspace_id().expect("workspace"), info.workspace_id);
        assert_eq!(next_desired(&desired_rx), json!({}));
        for batch in 0..BATCHES {
            let batch_id = format!("{batch:02}");
            for message in 0..MESSAGES_PER_BATCH {
                client
                    .enqueue_message(
                        &context,
                        Some(batch_id.clone()),
                        Some(format!("{message:02}")),
                        format!("payload {batch_id}/{message:02} ")
                            .repeat(50)
                            .into_bytes(),
                    )
                    .expect("enqueue");
            }
            client
                .enqueue_batch_completion(&context, batch_id)
                .expect("enqueue batch completion");
        }
        // One message too large for MQTT (incompressible, over 250,000 bytes) goes by upload.
        client
            .enqueue_message(
                &context,
                Some("large".into()),
                Some("00".into()),
                large_payload(),
            )
            .expect("enqueue large");
        // Dropped here with part of the queue still unsent: the restart below must finish it.
    }

    let client = build_client(
        &admin,
        device_id,
        &info.provisioning_token,
        &database,
        desired_tx,
    );
    poll_until("the restarted client to drain its queue", || {
        (client.pending_messages_count().expect("pending count") == 0).then_some(())
    });
    let expected_count = BATCHES * (MESSAGES_PER_BATCH + 1) + 1;
    let stored = poll_until("all messages stored", || {
        let stored = admin.get(&format!("/messages?deviceId={device_id}&limit=1000"));
        let rows = stored.as_array().expect("array").clone();
        (rows.len() >= expected_count).then_some(rows)
    });
    assert_eq!(
        stored.len(),
        expected_count,
        "every message stored exactly once"
    );
    let mut expected = Vec::new();
    for batch in 0..BATCHES {
        for message in 0..MESSAGES_PER_BATCH {
            expected.push((format!("{batch:02}"), Some(format!("{message:02}")), false));
        }
        expected.push((format!("{batch:02}"), None, true));
    }
    expected.push(("large".to_owned(), Some("00".to_owned()), false));
    let actual: Vec<(String, Option<String>, bool)> = stored
        .iter()
        .map(|m| {
            (
                m["batchId"].as_str().expect("batch id").to_owned(),
                m["messageId"].as_str().map(str::to_owned),
                m["completeBatch"].as_bool().expect("flag"),
            )
        })
        .collect();
    assert_eq!(
        actual, expected,
        "messages stored in the order they were enqueued"
    );
    let large = stored.last().expect("large message");
    assert_eq!(large["hasExternalizedPayload"], true);
    let blob_name = large["blobName"].as_str().expect("blob link");
    let blob = ureq::get(&admin.url(&format!(
        "/blobs/content?deviceId={device_id}&name={blob_name}"
    )))
    .set("Authorization", &format!("Bearer {}", admin.token))
    .call()
    .expect("blob content");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut blob.into_reader(), &mut bytes).expect("read blob");
    assert!(
        bytes == large_payload(),
        "the uploaded blob holds the large message's bytes"
    );
    assert!(
        stored
            .iter()
            .all(|m| m["streamGroup"] == "sdk-group" && m["stream"] == "sdk-stream")
    );
    assert!(
        stored.iter().any(|m| m["contentEncoding"] == "br"),
        "compressible payloads arrive brotli-compressed"
    );

    // Desired properties set through the admin API reach the SDK's callback.
    while desired_rx.try_recv().is_ok() {}
    let new_desired = json!({"interval": 5, "mode": "eco", "nested": {"a": 1, "b": "two"}});
    admin.put(
        &format!("/devices/{device_id}/desired-properties"),
        new_desired.clone(),
    );
    let received = poll_until("the desired properties callback", || {
        let value = next_desired(&desired_rx);
        (value == new_desired).then_some(value)
    });
    assert_eq!(
        received,
        admin.get(&format!("/devices/{device_id}/desired-properties"))
    );

    // Reported properties reach the Platform.
    client
        .update_reported_properties(r#"{"firmware": "1.2.3", "temperature": 21.5}"#)
        .expect("update reported");
    poll_until("reported properties acknowledged", || {
        (!client
            .any_pending_reported_properties_updates()
            .expect("pending reported"))
        .then_some(())
    });
    let mut reported = admin.get(&format!("/devices/{device_id}/reported-properties"));
    let object = reported.as_object_mut().expect("object");
    assert!(
        object
            .remove("$version")
            .is_some_and(|v| v.as_i64() > Some(1))
    );
    assert!(object.remove("$metadata").is_some());
    assert_eq!(reported, json!({"firmware": "1.2.3", "temperature": 21.5}));

    drop(client);

    // What the crate sent, then what a vdev device sends for the same steps.
    admin.wait_disconnected(device_id);
    let official = admin.transcript();
    let vdev = runtime.block_on(vdev_same_steps(&info, &admin, "vdev-device"));
    vdev_tests::transcript::assert_same_contract(
        &vdev_tests::transcript::normalise(&official, device_id, &info),
        &vdev_tests::transcript::normalise(&vdev, "vdev-device", &info),
    );
    runtime.block_on(platform.shutdown());
}

/// The steps of the official crate's run above, by a vdev device: provisioning, batches with
/// message ids and their completions, a large message by upload, a desired change and a
/// reported patch. Returns the transcript of its traffic.
async fn vdev_same_steps(
    info: &vdev_platform::PlatformInfo,
    admin: &Admin,
    device_id: &str,
) -> Vec<Value> {
    use vdev_core::{Compression, Event, MemoryStore, MessageOptions, StreamOptions};
    use vdev_tests::native::{NativeDevice, Network, SharedStore};

    let admin_now = admin.clone();
    tokio::task::spawn_blocking(move || admin_now.clear_transcript())
        .await
        .expect("cleared");
    let mut config = vdev_core::DeviceConfig::new("localhost", &info.provisioning_token);
    config.device_id = Some(vdev_core::DeviceId::parse(device_id).expect("an id"));
    config.transport = vdev_core::Transport::Tls;
    let network = Network {
        ca_pem: Some(std::fs::read(&info.ca_certificate_path).expect("the test CA")),
        resolve: Vec::new(),
    };
    let store: SharedStore =
        std::sync::Arc::new(std::sync::Mutex::new(MemoryStore::new("transcriptvdev")));
    let mut device = NativeDevice::start_with(config, store, [3; 32], network);
    let operation = wait_for(&mut device, "the provisioning operation", |e| match e {
        Event::ProvisioningOperation(operation) => Some(operation.id.clone()),
        _ => None,
    })
    .await;
    let approver = admin.clone();
    tokio::task::spawn_blocking(move || {
        approver.put(
            "/provisioning-operations/approve",
            json!({"provisioningOperationId": operation}),
        )
    })
    .await
    .expect("approved");

    let stream = StreamOptions {
        stream_group: Some("sdk-group".into()),
        stream: Some("sdk-stream".into()),
        compression: Compression::Fastest,
        ..Default::default()
    };
    let mut sent = 0;
    for batch in 0..2 {
        let batch_id = format!("{batch:02}");
        for message in 0..MESSAGES_PER_BATCH {
            let options = MessageOptions {
                batch_id: Some(batch_id.clone()),
                message_id: Some(format!("{message:02}")),
                ..Default::default()
            };
            let payload = format!("payload {batch_id}/{message:02} ").repeat(50);
            device
                .send_with(stream.clone(), options, payload.into_bytes())
                .await
                .expect("stored");
            sent += 1;
        }
        device
            .complete_batch(stream.clone(), &batch_id)
            .await
            .expect("stored");
        sent += 1;
    }
    let large = MessageOptions {
        batch_id: Some("large".into()),
        message_id: Some("00".into()),
        ..Default::default()
    };
    device
        .send_with(stream.clone(), large, large_payload())
        .await
        .expect("stored");
    sent += 1;
    let mut delivered = 0;
    wait_for(&mut device, "every message delivered", |e| {
        delivered += usize::from(matches!(e, Event::MessageDelivered { .. }));
        (delivered == sent).then_some(())
    })
    .await;

    let desired = json!({"interval": 7});
    let setter = admin.clone();
    let path = format!("/devices/{device_id}/desired-properties");
    let body = desired.clone();
    tokio::task::spawn_blocking(move || setter.put(&path, body))
        .await
        .expect("desired set");
    wait_for(&mut device, "the desired change", |e| match e {
        Event::DesiredPropertiesChanged { .. } => Some(()),
        _ => None,
    })
    .await;
    device.update_reported_properties(
        vdev_core::json::Value::parse(br#"{"firmware": "1.2.3", "temperature": 21.5}"#)
            .expect("a patch"),
    );
    wait_for(
        &mut device,
        "the reported patch acknowledged",
        |e| match e {
            Event::ReportedPropertiesAcknowledged => Some(()),
            _ => None,
        },
    )
    .await;
    device.stop().await;

    let reader = admin.clone();
    let device_id = device_id.to_owned();
    tokio::task::spawn_blocking(move || {
        reader.wait_disconnected(&device_id);
        reader.transcript()
    })
    .await
    .expect("transcript read")
}

/// Waits for the first event `pick` accepts.
async fn wait_for<T>(
    device: &mut vdev_tests::native::NativeDevice,
    what: &str,
    mut pick: impl FnMut(&vdev_core::Event) -> Option<T>,
) -> T {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = device.events.recv().await.expect("the device is running");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// 300,000 bytes that brotli cannot shrink, so the SDK must upload them.
fn large_payload() -> Vec<u8> {
    vdev_tests::payloads::incompressible(300_000)
}
