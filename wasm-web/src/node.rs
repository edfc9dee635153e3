//! What the Node.js build adds: the outbox kept in a directory (`vdev_core::file_outbox`, the
//! format and recovery rules the WASI component uses too) for the Node host (`js-node/`) to
//! perform with `fs`, and the input that tells the core what opening the directory cut.
//!
//! The Node host performs every store request the core polls, in order, one after the other:
//! [`Core`] keeps each one it hands out, and [`FileOutbox::plan`] takes the oldest, so the
//! requests never cross back from JavaScript.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use js_sys::{Array, Uint8Array};
use vdev_core::file_outbox::{self, FileJob, FileOp, FileOutboxOpener};
use vdev_core::{Input, StoreRecovery, StoreRequest};
use wasm_bindgen::prelude::*;

use crate::Core;

/// The outbox directory of one device: opened from the files the host reads, then the file
/// operations of each store request, and the core's answers to them.
#[wasm_bindgen]
#[derive(Debug)]
pub struct FileOutbox {
    opener: Option<FileOutboxOpener>,
    outbox: Option<file_outbox::FileOutbox>,
    job: Option<FileJob>,
    answers: VecDeque<Input<'static>>,
}

#[wasm_bindgen]
impl FileOutbox {
    /// Starts opening a directory.
    #[wasm_bindgen(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> FileOutbox {
        FileOutbox {
            opener: Some(FileOutboxOpener::new()),
            outbox: None,
            job: None,
            answers: VecDeque::new(),
        }
    }

    /// Of a directory's file names, the ones to read, in the order to hand them to `read`.
    #[wasm_bindgen(js_name = filesToRead)]
    pub fn files_to_read(names: Vec<String>) -> Vec<String> {
        FileOutboxOpener::files_to_read(names)
    }

    /// The content of `file` (one of `filesToRead`).
    pub fn read(&mut self, file: &str, content: &[u8]) {
        if let Some(opener) = self.opener.as_mut() {
            opener.read(file, content);
        }
    }

    /// Ends opening: `{ ops, recoveries }`, the operations that finish the recovery (to perform
    /// before anything else; opening fails if one does) and what was cut (`{ file, validBytes,
    /// cutBytes, reason }`, for `Core.storeRecovered`).
    pub fn open(&mut self) -> JsValue {
        let Some(opener) = self.opener.take() else {
            return object(&[
                ("ops", Array::new().into()),
                ("recoveries", Array::new().into()),
            ]);
        };
        let (outbox, ops, recoveries) = opener.finish();
        self.outbox = Some(outbox);
        let recoveries: Array = recoveries
            .into_iter()
            .map(|recovery| {
                object(&[
                    ("file", recovery.file.into()),
                    ("validBytes", number(recovery.valid_bytes)),
                    ("cutBytes", number(recovery.cut_bytes)),
                    ("reason", recovery.reason.into()),
                ])
            })
            .collect();
        object(&[("ops", ops_to_js(&ops)), ("recoveries", recoveries.into())])
    }

    /// What the core is made from: `{ origin, nextSeq, reserved, count, bytes, state }`.
    pub fn contents(&self) -> JsValue {
        let Some(outbox) = &self.outbox else {
            return JsValue::UNDEFINED;
        };
        let meta = outbox.meta();
        object(&[
            ("origin", meta.origin.into()),
            ("nextSeq", number(meta.next_seq)),
            ("reserved", optional_number(meta.reserved)),
            ("count", number(meta.count)),
            ("bytes", number(meta.bytes)),
            ("state", outbox.state().map_or(JsValue::UNDEFINED, bytes)),
        ])
    }

    /// The next job, from the oldest of at most `max` store requests `core` handed out and
    /// this outbox has not planned yet: `{ ops, onFailure, taken }` (perform `ops` in order;
    /// when one fails, `onFailure` too, ignoring its errors; `taken` requests were planned), or
    /// `undefined` when there is none. Appends that follow each other are one job (one write,
    /// one sync, answered together): the driver hands over one per `send`, and the store
    /// contract lets a host commit several requests as one unit.
    pub fn plan(&mut self, core: &mut Core, max: u32) -> JsValue {
        let Some(outbox) = self.outbox.as_mut() else {
            return JsValue::UNDEFINED;
        };
        if max == 0 {
            return JsValue::UNDEFINED;
        }
        let Some(mut request) = core.store_requests.pop_front() else {
            return JsValue::UNDEFINED;
        };
        let mut taken = 1;
        if let StoreRequest::Append { records } = &mut request {
            while taken < max
                && let Some(StoreRequest::Append { .. }) = core.store_requests.front()
            {
                if let Some(StoreRequest::Append { records: next }) =
                    core.store_requests.pop_front()
                {
                    records.extend(next);
                }
                taken += 1;
            }
        }
        let job = outbox.plan(request);
        let answer = object(&[
            ("ops", ops_to_js(&job.ops)),
            ("onFailure", ops_to_js(&job.on_failure)),
            ("taken", number(u64::from(taken))),
        ]);
        self.job = Some(job);
        answer
    }

    /// What happened to the operations of the last `plan`: all done (`failedAt` undefined, with
    /// the bytes of each `read` in `reads`), or the one at `failedAt` failed (`quotaExceeded`:
    /// the disk is full; `message` says why). Returns whether the core gets an answer, which
    /// `Core.fileAnswer` then hands it.
    pub fn finish(
        &mut self,
        #[wasm_bindgen(js_name = failedAt)] failed_at: Option<f64>,
        #[wasm_bindgen(js_name = quotaExceeded)] quota_exceeded: bool,
        message: String,
        reads: Array,
    ) -> bool {
        let (Some(outbox), Some(job)) = (self.outbox.as_mut(), self.job.take()) else {
            return false;
        };
        let outcome = match failed_at {
            Some(index) => Err((index as usize, crate::store_error(quota_exceeded, message))),
            None => Ok(reads.iter().map(|read| crate::bytes_of(&read)).collect()),
        };
        match outbox.finish(job, outcome) {
            Some(answer) => {
                self.answers.push_back(answer);
                true
            }
            None => false,
        }
    }
}

#[wasm_bindgen]
impl Core {
    /// Feeds the core the oldest answer `outbox.finish` made.
    #[wasm_bindgen(js_name = fileAnswer)]
    pub fn file_answer(&mut self, now: f64, outbox: &mut FileOutbox) {
        if let Some(answer) = outbox.answers.pop_front() {
            self.device.handle_input(now as u64, answer);
        }
    }

    /// Opening the outbox directory cut `cutBytes` of `file` after its first `validBytes`, for
    /// `reason` (one of `FileOutbox.open`'s recoveries): the app hears of it.
    #[wasm_bindgen(js_name = storeRecovered)]
    pub fn store_recovered(
        &mut self,
        now: f64,
        file: String,
        #[wasm_bindgen(js_name = validBytes)] valid_bytes: f64,
        #[wasm_bindgen(js_name = cutBytes)] cut_bytes: f64,
        reason: String,
    ) {
        let recovery = StoreRecovery {
            file,
            valid_bytes: valid_bytes as u64,
            cut_bytes: cut_bytes as u64,
            reason,
        };
        self.device
            .handle_input(now as u64, Input::StoreRecovered(recovery));
    }
}

/// File operations as plain objects, `op` naming each: `create` {file}, `write` {file, offset,
/// bytes, sync}, `truncate` {file, len}, `replace` {file, bytes}, `delete` {file}, `read`
/// {file, offset, len}.
fn ops_to_js(ops: &[FileOp]) -> JsValue {
    let ops: Array = ops
        .iter()
        .map(|op| match op {
            FileOp::Create { file } => object(&[("op", "create".into()), ("file", file.into())]),
            FileOp::Write {
                file,
                offset,
                bytes: data,
                sync,
            } => object(&[
                ("op", "write".into()),
                ("file", file.into()),
                ("offset", number(*offset)),
                ("bytes", Uint8Array::from(&data[..]).into()),
                ("sync", (*sync).into()),
            ]),
            FileOp::Truncate { file, len } => object(&[
                ("op", "truncate".into()),
                ("file", file.into()),
                ("len", number(*len)),
            ]),
            FileOp::Replace { file, bytes: data } => object(&[
                ("op", "replace".into()),
                ("file", file.into()),
                ("bytes", Uint8Array::from(&data[..]).into()),
            ]),
            FileOp::Delete { file } => object(&[("op", "delete".into()), ("file", file.into())]),
            FileOp::Read { file, offset, len } => object(&[
                ("op", "read".into()),
                ("file", file.into()),
                ("offset", number(*offset)),
                ("len", number(*len)),
            ]),
        })
        .collect();
    ops.into()
}

/// A plain object with these properties. (The Node.js build's file plans cross as objects: the
/// bytes they carry are many, and this build has no size budget as tight as the browser's.)
fn object(properties: &[(&str, JsValue)]) -> JsValue {
    let object = js_sys::Object::new();
    for (name, value) in properties {
        // Setting a property on a fresh plain object cannot throw.
        let _ = js_sys::Reflect::set(&object, &JsValue::from_str(name), value);
    }
    object.into()
}

fn number(value: u64) -> JsValue {
    JsValue::from_f64(value as f64)
}

fn optional_number(value: Option<u64>) -> JsValue {
    value.map_or(JsValue::NULL, number)
}

fn bytes(data: &[u8]) -> JsValue {
    js_sys::Uint8Array::from(data).into()
}
