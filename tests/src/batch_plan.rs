//! The batch plan both end-to-end batch tests send (the browser's `wasm-web/tests/streams.rs`
//! and the WASI component's `tests/tests/wasi_streams.rs`): two batches of slices, messages in
//! chunks, both completion markers; and how the Platform's admin API must show each step.
//!
//! Plain Rust and `serde_json` only, so the browser test (a wasm crate that cannot depend on
//! this one) includes this file by path (`#[path]`) and both hosts check the same plan.

use serde_json::{Value, json};

/// The stream group of both tests' batches.
pub const STREAM_GROUP: &str = "telemetry";

/// One thing the app queues: a chunk of a message, or the marker that completes a message or
/// a batch.
#[derive(Debug, Clone)]
pub enum Step {
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
    pub fn batch(&self) -> &str {
        match self {
            Step::Chunk { batch, .. }
            | Step::CompleteMessage { batch, .. }
            | Step::CompleteBatch { batch } => batch,
        }
    }

    /// The row the Platform must store for this step in `stream` (of [`STREAM_GROUP`]), in the
    /// admin API's words, as [`as_sent`] reads a stored row.
    pub fn expected_row(&self, stream: &str) -> Value {
        let row = |slice: Option<&str>,
                   message: Option<&str>,
                   chunk: Option<&str>,
                   complete_batch: bool,
                   complete_message: bool,
                   payload: &[u8]| {
            json!({
                "streamGroup": STREAM_GROUP,
                "stream": stream,
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

/// Two batches named after `run`, each of two slices of two messages in three chunks: each
/// message's chunks are followed by its completion, each batch by its own. One chunk of each
/// message is binary (every byte value), so a payload mangled as text would show.
pub fn plan(run: &str) -> Vec<Vec<Step>> {
    (1..=2)
        .map(|b| {
            let batch = format!("{run}-batch-{b}");
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

/// A payload as a failed comparison should show it: its text, or its bytes in hex.
pub fn readable(payload: &[u8]) -> Value {
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

/// What the tests compare of a stored row: its stream, ids, flags, encoding and `payload` (the
/// row's `payloadBase64` decoded, which each host does its own way).
pub fn as_sent(row: &Value, payload: &[u8]) -> Value {
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
    seen["payload"] = readable(payload);
    seen
}
