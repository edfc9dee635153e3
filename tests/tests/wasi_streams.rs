//! Batches, slices, chunks and completion markers through the WASI library component
//! (`vdev:device/client` in wasmtime) to the stand-in Platform on loopback, read back through
//! the admin API as the wire contract defines them (docs/wire-contract.md, Telemetry): every id
//! and flag as sent, completion rows with `ignorePayload`, payloads intact, each row once, in
//! send order; and a stream with `fastest` compression, whose compressible payload arrives
//! Brotli-encoded (`contentEncoding: "br"`) and one that would not shrink arrives as it is.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use vdev_platform::PlatformInfo;
use vdev_tests::library::{platform_host_and_store, poll_until};
use vdev_tests::platform_admin::{admin, approve, device_messages, sequence_numbers};
use vdev_tests::wasi_host::{LibraryConfig, LibraryDevice, LibraryMessageIds, LibraryStream};

const DEADLINE: Duration = Duration::from_secs(120);
const DEVICE: &str = "wasi-streams";
const STREAM_GROUP: &str = "telemetry";
const STREAM: &str = "wasi-batches";
const COMPRESSED: &str = "wasi-compressed";

/// One thing the app queues: a chunk of a message, or the marker that completes a message or
/// a batch.
#[derive(Debug, Clone)]
enum Step {
    Chunk {
        batch: String,
        slice: String,
        message: String,
        chunk: String,
        payload: Vec<u8>,
    },
    CompleteMessage {
        batch: String,
        message: String,
    },
    CompleteBatch {
        batch: String,
    },
}

impl Step {
    fn batch(&self) -> &str {
        match self {
            Step::Chunk { batch, .. }
            | Step::CompleteMessage { batch, .. }
            | Step::CompleteBatch { batch } => batch,
        }
    }

    /// The row the Platform must store for this step, in the admin API's words.
    fn expected_row(&self) -> Value {
        let row = |slice: Option<&str>,
                   message: Option<&str>,
                   chunk: Option<&str>,
                   complete_batch: bool,
                   complete_message: bool,
                   payload: &[u8]| {
            json!({
                "streamGroup": STREAM_GROUP,
                "stream": STREAM,
                "batchId": self.batch(),
                "batchSliceId": slice,
                "messageId": message,
                "chunkId": chunk,
                "completeBatch": complete_batch,
                "completeMessage": complete_message,
                "ignorePayload": complete_batch || complete_message,
                "contentEncoding": null,
                "payload": readable(payload),
            })
        };
        match self {
            Step::Chunk {
                slice,
                message,
                chunk,
                payload,
                ..
            } => row(
                Some(slice.as_str()),
                Some(message.as_str()),
                Some(chunk.as_str()),
                false,
                false,
                payload,
            ),
            // A marker names only what it completes; its payload is empty (and ignored).
            Step::CompleteMessage { message, .. } => {
                row(None, Some(message.as_str()), None, false, true, &[])
            }
            Step::CompleteBatch { .. } => row(None, None, None, true, false, &[]),
        }
    }
}

/// Two batches, each of two slices of two messages in three chunks: each message's chunks are
/// followed by its completion, each batch by its own. One chunk of each message is binary (every
/// byte value), so a payload mangled as text would show.
fn plan() -> Vec<Vec<Step>> {
    (1..=2)
        .map(|b| {
            let batch = format!("{DEVICE}-batch-{b}");
            let mut steps = Vec::new();
            for s in 1..=2 {
                for m in 1..=2 {
                    let message = format!("message-{s}.{m}");
                    for c in 0..3 {
                        let payload = if c == 1 {
                            (0..=255u8).rev().chain([b, s, m]).collect()
                        } else {
                            format!("batch {b} slice {s} message {m} chunk {c}").into_bytes()
                        };
                        steps.push(Step::Chunk {
                            batch: batch.clone(),
                            slice: format!("slice-{s}"),
                            message: message.clone(),
                            chunk: format!("chunk-{c}"),
                            payload,
                        });
                    }
                    steps.push(Step::CompleteMessage {
                        batch: batch.clone(),
                        message,
                    });
                }
            }
            steps.push(Step::CompleteBatch { batch });
            steps
        })
        .collect()
}

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

/// A payload as a failed comparison should show it: its text, or its bytes in hex.
fn readable(payload: &[u8]) -> Value {
    match std::str::from_utf8(payload) {
        Ok(text) => json!(text),
        Err(_) => json!(format!(
            "hex {}",
            payload
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )),
    }
}

/// What the test compares of a stored row: its stream, ids, flags, encoding and payload.
fn as_sent(row: &Value) -> Value {
    let mut seen = json!({});
    for key in [
        "streamGroup",
        "stream",
        "batchId",
        "batchSliceId",
        "messageId",
        "chunkId",
        "completeBatch",
        "completeMessage",
        "ignorePayload",
        "contentEncoding",
    ] {
        seen[key] = row[key].clone();
    }
    seen["payload"] = readable(&payload_of(row));
    seen
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

/// Bytes no compressor can shrink (xorshift), reproducible.
fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
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
    let batches = plan();

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
    let stored: Vec<Value> = batch_rows_stored.iter().map(as_sent).collect();
    let expected: Vec<Value> = steps.iter().map(|step| step.expected_row()).collect();
    assert_eq!(
        stored, expected,
        "ids, flags and payloads as sent, in order"
    );

    // The admin API's batch filter gives each batch whole, and nothing of the other.
    for batch in &batches {
        let batch_id = batch[0].batch();
        let rows = batch_rows(&info, batch_id).await;
        let expected: Vec<Value> = batch.iter().map(Step::expected_row).collect();
        assert_eq!(
            rows.iter().map(as_sent).collect::<Vec<_>>(),
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
