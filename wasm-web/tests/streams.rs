//! Batches, slices, chunks and completion markers from a real `DeviceClient` to a real
//! `vdev-platform` (started by `wasm-web/scripts/test.sh`), read back through the admin API as
//! the wire contract defines them (docs/wire-contract.md, Telemetry): every id and flag as sent,
//! completion rows with `ignorePayload`, payloads intact, each row once, in send order; and
//! through the technician console's message view, which labels each id and marks the ends.

#![cfg(target_arch = "wasm32")]

mod common;
// The plan and row checks the WASI test shares (plain Rust: this wasm crate cannot depend on
// vdev-tests, so the file is included by path).
#[path = "../../tests/src/batch_plan.rs"]
mod batch_plan;

use batch_plan::{STREAM_GROUP, Step, as_sent, plan};

use common::{
    DeviceClient, Recorder, StreamSender, field_string, js_object, platform, unique, wait_until,
};
use js_sys::{Function, Promise, Reflect};
use serde_json::{Value, json};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const STREAM: &str = "web-batches";

/// Queues `steps` in one JavaScript turn (their order is the call order, not the order the
/// stores finish in); returns their sequence numbers.
async fn queue(sender: &StreamSender, steps: &[Step]) -> Vec<u64> {
    let pending: Vec<JsFuture> = steps
        .iter()
        .map(|step| {
            let promise = match step {
                Step::Chunk {
                    batch,
                    slice,
                    message,
                    chunk,
                    payload,
                } => {
                    let options = js_object(&[
                        ("batchId", batch.as_str().into()),
                        ("batchSliceId", slice.as_str().into()),
                        ("messageId", message.as_str().into()),
                        ("chunkId", chunk.as_str().into()),
                    ]);
                    let bytes = js_sys::Uint8Array::from(payload.as_slice());
                    sender.send_message(bytes.into(), Some(options.unchecked_into()))
                }
                Step::CompleteMessage { batch, message } => {
                    sender.enqueue_message_completion(batch, message)
                }
                Step::CompleteBatch { batch } => sender.enqueue_batch_completion(batch),
            };
            JsFuture::from(promise)
        })
        .collect();
    let mut seqs = Vec::new();
    for stored in pending {
        let seq = stored.await.expect("stored");
        seqs.push(seq.as_f64().expect("a sequence number") as u64);
    }
    seqs
}

/// The bytes of a row's `payloadBase64` (decoded by the page's own `atob`).
fn payload_of(row: &Value) -> Vec<u8> {
    let atob: Function = Reflect::get(&js_sys::global(), &"atob".into())
        .unwrap()
        .unchecked_into();
    let encoded = row["payloadBase64"].as_str().expect("payloadBase64");
    let binary = atob
        .call1(&JsValue::NULL, &encoded.into())
        .expect("base64")
        .as_string()
        .unwrap();
    binary.chars().map(|c| c as u32 as u8).collect()
}

fn sequences(rows: &[Value]) -> Vec<u64> {
    rows.iter()
        .map(|row| row["sequence"]["n"].as_u64().expect("vdev-seq stored"))
        .collect()
}

/// The workspace's messages of `device_id` in batch `batch_id`, as the admin API filters them.
async fn batch_rows(device_id: &str, batch_id: &str) -> Vec<Value> {
    let platform = platform();
    let path = format!(
        "/workspaces/{}/messages?deviceId={device_id}&batchId={batch_id}&limit=10000",
        platform.workspace
    );
    let (status, answer) = platform.admin("GET", &path, None).await;
    assert_eq!(status, 200, "messages answered {answer}");
    answer.as_array().cloned().unwrap_or_default()
}

/// How the console's message view must show this step's row: its ids, each labelled; the end
/// it marks, if a completion; and its payload, none for a completion (the Platform ignores it).
fn console_row(step: &Step) -> Value {
    let labelled = |pairs: &[(&str, &str)]| -> Vec<String> {
        pairs
            .iter()
            .map(|(label, id)| format!("{label} {id}"))
            .collect()
    };
    match step {
        Step::Chunk {
            batch,
            slice,
            message,
            chunk,
            payload,
        } => json!({
            "ids": labelled(&[("batch", batch), ("slice", slice), ("message", message), ("chunk", chunk)]),
            "ends": [],
            "payload": String::from_utf8(payload.clone())
                .unwrap_or_else(|_| format!("{} bytes", payload.len())),
        }),
        Step::CompleteMessage { batch, message } => json!({
            "ids": labelled(&[("batch", batch), ("message", message)]),
            "ends": ["message end"],
            "payload": "—",
        }),
        Step::CompleteBatch { batch } => json!({
            "ids": labelled(&[("batch", batch)]),
            "ends": ["batch end"],
            "payload": "—",
        }),
    }
}

/// Opens the technician console, shows the device's messages there as a technician would, and
/// checks every row (newest first, all on its first page) against the steps sent.
async fn check_console(device_id: &str, steps: &[&Step]) {
    let platform = platform();
    let frame = platform.open_console().await;
    let run = |args: &str, body: &str, values: &[JsValue]| -> JsValue {
        let values: js_sys::Array = std::iter::once(&frame).chain(values).collect();
        Function::new_with_args(&format!("frame, {args}"), body)
            .apply(&JsValue::NULL, &values)
            .expect("the console script runs")
    };
    let workspace = JsValue::from_str(platform.workspace);
    wait_until("the console's workspaces", 15_000.0, || {
        run(
            "workspace",
            r#"return frame.contentDocument.querySelector(`#workspace option[value="${workspace}"]`) !== null;"#,
            std::slice::from_ref(&workspace),
        )
        .is_truthy()
    })
    .await;
    run(
        "workspace, deviceId",
        r#"const page = frame.contentDocument;
        const select = page.getElementById("workspace");
        select.value = workspace;
        select.dispatchEvent(new Event("change"));
        page.querySelector('#tabs button[data-tab="messages"]').click();
        page.getElementById("msg-device").value = deviceId;
        page.getElementById("msg-refresh").click();"#,
        &[workspace.clone(), device_id.into()],
    );
    let read = || -> Vec<Value> {
        let shown = run(
            "",
            r##"return JSON.stringify([...frame.contentDocument.querySelectorAll("#msgs tr[data-id]")].map((row) => {
              const ids = row.querySelector("[data-ids]");
              return {
                ids: [...ids.querySelectorAll(".ids")].map((id) => id.textContent),
                ends: [...ids.querySelectorAll(".pill")].map((end) => end.textContent),
                payload: row.querySelector("[data-payload]").textContent,
              };
            }));"##,
            &[],
        );
        serde_json::from_str(&shown.as_string().expect("JSON")).expect("rows")
    };
    wait_until("the console's rows of the device", 15_000.0, || {
        read().len() == steps.len()
    })
    .await;
    let expected: Vec<Value> = steps.iter().rev().map(|step| console_row(step)).collect();
    assert_eq!(read(), expected, "the console's rows, newest first");
    run("", "frame.remove();", &[]);
}

async fn await_promise(promise: Promise) -> JsValue {
    JsFuture::from(promise).await.expect("the promise resolves")
}

#[wasm_bindgen_test]
async fn batches_of_slices_and_chunks_with_both_completions_reach_the_platform_as_sent() {
    let (database, device_id) = (unique("vdev-streams"), unique("web-streams"));
    let platform = platform();
    let (operations, on_operation) = Recorder::new();
    let client = DeviceClient::start(js_object(&[
        ("instance", platform.url.into()),
        ("provisioningToken", platform.provisioning_token.into()),
        ("deviceId", device_id.as_str().into()),
        ("database", database.as_str().into()),
        ("onProvisioningOperation", on_operation.into()),
    ]))
    .await
    .expect("the client starts");
    let sender = client
        .create_stream_sender(Some(
            js_object(&[
                ("streamGroup", STREAM_GROUP.into()),
                ("stream", STREAM.into()),
            ])
            .unchecked_into(),
        ))
        .expect("a sender");
    let batches = plan(&device_id);

    // The first batch is stored while the device waits for approval, the second goes out on a
    // live connection: both roads keep the order.
    let mut seqs = queue(&sender, &batches[0]).await;
    wait_until("a provisioning operation", 60_000.0, || {
        operations.len() == 1
    })
    .await;
    let operation = field_string(&operations.first_args()[0], "id").expect("an operation id");
    platform.approve(&operation).await;
    wait_until("the connected state", 30_000.0, || {
        field_string(&client.statistics(), "connectionState").as_deref() == Some("connected")
    })
    .await;
    seqs.extend(queue(&sender, &batches[1]).await);
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "numbered in send order: {seqs:?}"
    );
    await_promise(client.wait_enqueued_messages_sent()).await;
    assert_eq!(client.pending_messages_count(), 0.0);

    let steps: Vec<&Step> = batches.iter().flatten().collect();
    let rows = platform.messages(&device_id).await;
    let stored: Vec<Value> = rows
        .iter()
        .map(|row| as_sent(row, &payload_of(row)))
        .collect();
    let expected: Vec<Value> = steps.iter().map(|step| step.expected_row(STREAM)).collect();
    assert_eq!(stored.len(), expected.len(), "each step stored once");
    assert_eq!(
        stored, expected,
        "ids, flags and payloads as sent, in order"
    );
    assert_eq!(
        sequences(&rows),
        seqs,
        "in the Platform's order = send order"
    );

    // The admin API's batch filter gives each batch whole, and nothing of the other.
    for batch in &batches {
        let batch_id = batch[0].batch();
        let rows = batch_rows(&device_id, batch_id).await;
        let expected: Vec<Value> = batch.iter().map(|step| step.expected_row(STREAM)).collect();
        assert_eq!(
            rows.iter()
                .map(|row| as_sent(row, &payload_of(row)))
                .collect::<Vec<_>>(),
            expected,
            "batch {batch_id}"
        );
    }

    check_console(&device_id, &steps).await;

    // A completion without the id it completes is refused at the call, and nothing is queued.
    let call = |method: &str, args: &[JsValue]| -> Promise {
        let function: Function = Reflect::get(&sender, &method.into())
            .unwrap()
            .unchecked_into();
        let args: js_sys::Array = args.iter().collect();
        function.apply(&sender, &args).unwrap().unchecked_into()
    };
    let batch_id = batches[1][0].batch();
    for (method, args, said) in [
        (
            "enqueueBatchCompletion",
            vec![],
            "invalidOption: option batchId: must be a string",
        ),
        (
            "enqueueMessageCompletion",
            vec![JsValue::from_str(batch_id)],
            "invalidOption: option messageId: must be a string",
        ),
        (
            "enqueueMessageCompletion",
            vec![JsValue::NULL, "message-1.1".into()],
            "invalidOption: option batchId: must be a string",
        ),
        // An empty id completes nothing the app sent: the core refuses it.
        (
            "enqueueBatchCompletion",
            vec!["".into()],
            "invalidMessage: message refused: batch id is required",
        ),
        (
            "enqueueMessageCompletion",
            vec![JsValue::from_str(batch_id), "".into()],
            "invalidMessage: message refused: message id is required",
        ),
    ] {
        let error = JsFuture::from(call(method, &args))
            .await
            .expect_err("refused");
        assert_eq!(common::api_error(error), said, "{method}{args:?}");
    }
    assert_eq!(client.pending_messages_count(), 0.0, "nothing queued");
    await_promise(client.stop()).await;
    assert_eq!(
        platform.messages(&device_id).await.len(),
        steps.len(),
        "nothing more reached the Platform"
    );
    common::delete_database(&database)
        .await
        .expect("the database is deleted");
}
