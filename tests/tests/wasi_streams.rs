//! Batches, slices, chunks and completion markers through the WASI library component
//! (`vdev:device/client` in wasmtime) to the stand-in Platform on loopback, read back through
//! the admin API as the wire contract defines them (docs/wire-contract.md, Telemetry): every id
//! and flag as sent, completion rows with `ignorePayload`, payloads intact, each row once, in
//! send order; and a stream with `fastest` compression, whose compressible payload arrives
//! Brotli-encoded (`contentEncoding: "br"`) and one that would not shrink arrives as it is.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use vdev_platform::PlatformInfo;
use vdev_tests::batch_plan::{STREAM_GROUP, Step, as_sent, plan};
use vdev_tests::library::{platform_host_and_store, poll_until};
use vdev_tests::payloads::incompressible;
use vdev_tests::platform_admin::{admin, approve, device_messages, sequence_numbers};
use vdev_tests::wasi_host::{LibraryConfig, LibraryDevice, LibraryMessageIds, LibraryStream};

const DEADLINE: Duration = Duration::from_secs(120);
const DEVICE: &str = "wasi-streams";
const STREAM: &str = "wasi-batches";
const COMPRESSED: &str = "wasi-compressed";

/// Queues `steps` in order through the component; returns their sequence numbers.
async fn queue(device: &mut LibraryDevice, steps: &[Step]) -> Vec<u64> {
    let stream = LibraryStream::named(STREAM_GROUP, STREAM);
    let mut seqs = Vec::new();
    for step in steps {
        let seq = match step {
            Step::Chunk {
                batch,
                slice,
                message,
                chunk,
                payload,
            } => {
                let ids = LibraryMessageIds {
                    batch_id: Some(batch.clone()),
                    message_id: Some(message.clone()),
                    batch_slice_id: Some(slice.clone()),
                    chunk_id: Some(chunk.clone()),
                };
                device.send_to(&stream, &ids, payload).await
            }
            Step::CompleteMessage { batch, message } => {
                device
                    .enqueue_message_completion(&stream, batch, message)
                    .await
            }
            Step::CompleteBatch { batch } => device.enqueue_batch_completion(&stream, batch).await,
        };
        seqs.push(seq.unwrap_or_else(|e| panic!("{step:?} stored: {e:#}")));
    }
    seqs
}

fn payload_of(row: &Value) -> Vec<u8> {
    STANDARD
        .decode(row["payloadBase64"].as_str().expect("payloadBase64"))
        .expect("base64")
}

/// The workspace's messages of the device in batch `batch_id`, as the admin API filters them.
async fn batch_rows(info: &PlatformInfo, batch_id: &str) -> Vec<Value> {
    let path = format!("/messages?deviceId={DEVICE}&batchId={batch_id}&limit=10000");
    match admin(info, reqwest::Method::GET, &path, Value::Null).await {
        Value::Array(rows) => rows,
        other => panic!("message list expected, got {other}"),
    }
}

/// Polls until `count` more messages were reported delivered.
async fn poll_until_delivered(device: &mut LibraryDevice, count: usize) {
    let mut seen = Vec::new();
    let mut delivered = 0;
    poll_until(device, &mut seen, DEADLINE, |e| {
        delivered += usize::from(e.name == "message-delivered");
        (delivered == count).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_batches_chunks_and_completions_reach_the_platform_as_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    let config = LibraryConfig::tcp(
        info.http_url.clone().expect("http"),
        info.provisioning_token.clone(),
        DEVICE.into(),
    );
    let mut device = host
        .start_library_device(&store, config)
        .await
        .expect("device starts");
    let batches = plan(DEVICE);

    // The first batch is stored while the device waits for approval, the second goes out on a
    // live connection: both roads keep the order.
    let mut seqs = queue(&mut device, &batches[0]).await;
    let mut seen = Vec::new();
    let operation_id = poll_until(&mut device, &mut seen, DEADLINE, |e| {
        (e.name == "provisioning-operation").then(|| e.string_field("id").expect("operation id"))
    })
    .await;
    approve(&info, &operation_id).await;
    poll_until(&mut device, &mut seen, DEADLINE, |e| {
        (e.name == "registered").then_some(())
    })
    .await;
    seqs.extend(queue(&mut device, &batches[1]).await);
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "numbered in send order: {seqs:?}"
    );

    // The compressed stream: a payload Brotli shrinks, and one it cannot.
    let compressed = LibraryStream {
        compression: "fastest".into(),
        ..LibraryStream::named(STREAM_GROUP, COMPRESSED)
    };
    let readings: Vec<u8> = (0..200)
        .map(|n| format!(r#"{{"sensor":"t1","n":{n},"celsius":21.5}}"#))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes();
    let noise = incompressible(4096);
    let none = LibraryMessageIds::default();
    for payload in [&readings, &noise] {
        let seq = device
            .send_to(&compressed, &none, payload)
            .await
            .expect("stored");
        seqs.push(seq);
    }

    let steps: Vec<&Step> = batches.iter().flatten().collect();
    poll_until_delivered(&mut device, steps.len() + 2).await;
    assert_eq!(device.pending_count().await.expect("pending"), 0);
    device.stop().await.expect("stops");

    let rows = device_messages(&info, DEVICE).await;
    assert_eq!(rows.len(), steps.len() + 2, "each message stored once");
    assert_eq!(
        sequence_numbers(&rows),
        seqs,
        "the Platform's order = send order"
    );
    let (batch_rows_stored, compressed_rows) = rows.split_at(steps.len());
    let stored: Vec<Value> = batch_rows_stored
        .iter()
        .map(|row| as_sent(row, &payload_of(row)))
        .collect();
    let expected: Vec<Value> = steps.iter().map(|step| step.expected_row(STREAM)).collect();
    assert_eq!(
        stored, expected,
        "ids, flags and payloads as sent, in order"
    );

    // The admin API's batch filter gives each batch whole, and nothing of the other.
    for batch in &batches {
        let batch_id = batch[0].batch();
        let rows = batch_rows(&info, batch_id).await;
        let expected: Vec<Value> = batch.iter().map(|step| step.expected_row(STREAM)).collect();
        assert_eq!(
            rows.iter()
                .map(|row| as_sent(row, &payload_of(row)))
                .collect::<Vec<_>>(),
            expected,
            "batch {batch_id}"
        );
    }

    let [shrunk, kept] = compressed_rows else {
        panic!("two compressed-stream rows: {compressed_rows:?}")
    };
    assert_eq!(shrunk["stream"], COMPRESSED);
    assert_eq!(shrunk["contentEncoding"], "br", "{shrunk}");
    let encoded = payload_of(shrunk);
    assert!(
        encoded.len() < readings.len() / 4,
        "compressed: {} of {} bytes",
        encoded.len(),
        readings.len()
    );
    let mut decoded = Vec::new();
    brotli::BrotliDecompress(&mut &encoded[..], &mut decoded).expect("valid Brotli");
    assert!(decoded == readings, "decodes to the payload sent");
    assert_eq!(shrunk["payloadText"], Value::Null, "not shown as text");
    // Brotli would make it larger: sent as it is, and said so.
    assert_eq!(kept["stream"], COMPRESSED);
    assert_eq!(kept["contentEncoding"], Value::Null, "{kept}");
    assert!(payload_of(kept) == noise, "the payload as sent");
    platform.shutdown().await;
}
