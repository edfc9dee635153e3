//! The browser's outbox store: the core's storage contract (`vdev_core::StoreRequest`) kept in
//! one IndexedDB database.
//!
//! Layout (database version 1):
//! - object store `records`: key = sequence number, value = the record's bytes (`Uint8Array`);
//! - object store `meta`: `origin` (string, made once from random bytes when the database is
//!   created), `nextSeq` (the high-water mark, kept after records are removed), `bytes` (total
//!   size of the stored records, so that opening a large backlog needs no scan) and `state`
//!   (the core's state blob).
//!
//! [`IdbStore::execute`] runs a whole batch of requests in **one** readwrite transaction and
//! answers only once that transaction has committed, so an `Appended` answer means durable.
//! Inside a transaction nothing but IndexedDB requests is awaited (it commits by itself as soon
//! as it has no pending request).
//!
//! Hand-written over web-sys instead of the `idb` crate, for the bundle's size: a request is
//! awaited as a `Promise` that its own `onsuccess`/`onerror` settle, so there is no Rust closure
//! per request type, no second oneshot channel (idb brings tokio's) and no error type of its
//! own; the package was 8.8 KB smaller gzipped without `idb` (163,097 -> 152,823 bytes when it
//! went). The promise's continuations run as microtasks of the request's event, while the
//! transaction is still active, as with `idb`'s callbacks.

use js_sys::{Array, Promise, Reflect, Uint8Array};
use vdev_core::{Input, OutboxMeta, Record, Seq, StoreError, StoreRequest};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    IdbCursorWithValue, IdbDatabase, IdbFactory, IdbKeyRange, IdbObjectStore, IdbRequest,
    IdbTransaction, IdbTransactionMode,
};

use crate::runtime::{Listener, describe, random_bytes};

const RECORDS: &str = "records";
const META: &str = "meta";
const SCHEMA_VERSION: u32 = 1;
const ORIGIN: &str = "origin";
const NEXT_SEQ: &str = "nextSeq";
const BYTES: &str = "bytes";
const STATE: &str = "state";

/// Why a store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The environment has no IndexedDB (or refuses it, as some private modes do).
    #[error("indexeddb is unavailable: {0}")]
    Unavailable(String),
    /// The database exists but could not be opened or read.
    #[error("cannot open database '{name}': {reason}")]
    Failed {
        /// The database name.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// What the store held when it was opened: what `vdev_core::Device::new` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContents {
    /// Origin, high-water mark, count and bytes of the stored records.
    pub meta: OutboxMeta,
    /// The last saved state blob.
    pub state: Option<Vec<u8>>,
}

/// One IndexedDB database holding one device's outbox and state.
#[derive(Debug)]
pub struct IdbStore {
    name: String,
    database: IdbDatabase,
    _on_version_change: Listener,
}

impl IdbStore {
    /// Opens (creating on first use) the database `name` and reads what it holds.
    pub async fn open(name: &str) -> Result<(Self, StoredContents), OpenError> {
        let failed = |reason: String| OpenError::Failed {
            name: name.to_owned(),
            reason,
        };
        let request = factory()?
            .open_with_u32(name, SCHEMA_VERSION)
            .map_err(|e| failed(describe(&e)))?;
        // Only version 1 exists: create whichever store is missing.
        let upgrade = {
            let opening = request.clone();
            Listener::new(&request, "upgradeneeded", move |_| {
                // The result of an open request is its database, from `upgradeneeded` on.
                let Ok(database) = opening.result() else {
                    return;
                };
                let database: IdbDatabase = database.unchecked_into();
                let existing = database.object_store_names();
                for store in [RECORDS, META] {
                    if !existing.contains(store) {
                        let _ = database.create_object_store(store);
                    }
                }
            })
        };
        let opened = finished(&request).await;
        drop(upgrade);
        let database: IdbDatabase = opened.map_err(failed)?.unchecked_into();
        // Let a later schema upgrade or a deletion of this database proceed instead of
        // blocking on this connection; the device then sees storage errors.
        let on_version_change = {
            let closing = database.clone();
            Listener::new(&database, "versionchange", move |_| closing.close())
        };
        let store = Self {
            name: name.to_owned(),
            database,
            _on_version_change: on_version_change,
        };
        let contents = store
            .read_contents()
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok((store, contents))
    }

    /// Deletes the database `name` and everything in it (it must not be open).
    pub async fn delete(name: &str) -> Result<(), OpenError> {
        let request = factory()?
            .delete_database(name)
            .map_err(|e| OpenError::Unavailable(describe(&e)))?;
        finished(&request)
            .await
            .map(drop)
            .map_err(|reason| OpenError::Failed {
                name: name.to_owned(),
                reason,
            })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes the connection once running transactions have finished.
    pub fn close(&self) {
        self.database.close();
    }

    /// Reads the meta entries, creating the origin on first use, and counts the records.
    async fn read_contents(&self) -> Result<StoredContents, StoreError> {
        let fresh_origin = new_origin()?;
        let batch = Batch::begin(&self.database)?;
        let result = async {
            let origin = get(&batch.meta, ORIGIN).await?.as_string();
            let next_seq = read_number(&batch.meta, NEXT_SEQ).await?;
            let bytes = read_number(&batch.meta, BYTES).await?;
            let state = get(&batch.meta, STATE).await?;
            let state = (!state.is_undefined()).then(|| bytes_of(&state));
            let count = batch.records.count().map_err(failed)?;
            let count = number(&finished(&count).await.map_err(StoreError::Failed)?);
            let origin = match origin {
                Some(origin) => origin,
                None => {
                    put(&batch.meta, &JsValue::from_str(&fresh_origin), ORIGIN)?;
                    put(&batch.meta, &JsValue::from_f64(0.0), NEXT_SEQ)?;
                    put(&batch.meta, &JsValue::from_f64(0.0), BYTES)?;
                    fresh_origin
                }
            };
            let meta = OutboxMeta {
                origin,
                next_seq,
                count,
                bytes,
            };
            Ok(StoredContents { meta, state })
        }
        .await;
        batch.finish(result).await
    }

    /// Performs `requests` in order in one transaction. Answers (for appends and loads, in
    /// order) come back only after the transaction committed; on error nothing of the batch
    /// was stored.
    pub async fn execute(
        &self,
        requests: &[StoreRequest],
    ) -> Result<Vec<Input<'static>>, StoreError> {
        let batch = Batch::begin(&self.database)?;
        let result = batch.run(requests).await;
        batch.finish(result).await
    }
}

/// The global `indexedDB`, in pages and workers alike.
fn factory() -> Result<IdbFactory, OpenError> {
    // No `instanceof IDBFactory` check: an object without `open` makes the call throw, which
    // is reported.
    let factory = Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB"))
        .map_err(|e| OpenError::Unavailable(describe(&e)))?;
    if !factory.is_object() {
        return Err(OpenError::Unavailable(
            "this environment has no indexedDB".into(),
        ));
    }
    Ok(factory.unchecked_into())
}

/// Waits for `request` to finish: its `result`, or its `error` described.
async fn finished(request: &IdbRequest) -> Result<JsValue, String> {
    let settled = Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    match JsFuture::from(settled).await {
        Ok(_) => request.result().map_err(|e| describe(&e)),
        Err(_) => Err(match request.error() {
            Ok(Some(error)) => describe(&error),
            _ => "the indexeddb request failed".into(),
        }),
    }
}

/// One readwrite transaction over both object stores, watched from its start so that its
/// `complete` or `abort` event cannot be missed.
struct Batch {
    transaction: IdbTransaction,
    records: IdbObjectStore,
    meta: IdbObjectStore,
    /// Resolves on `complete`, rejects on `abort`.
    settled: JsFuture,
}

impl Batch {
    fn begin(database: &IdbDatabase) -> Result<Self, StoreError> {
        let stores = Array::of2(&JsValue::from_str(RECORDS), &JsValue::from_str(META));
        let transaction = database
            .transaction_with_str_sequence_and_mode(&stores, IdbTransactionMode::Readwrite)
            .map_err(failed)?;
        let settled = JsFuture::from(Promise::new(&mut |resolve, reject| {
            transaction.set_oncomplete(Some(&resolve));
            transaction.set_onabort(Some(&reject));
        }));
        let records = transaction.object_store(RECORDS).map_err(failed)?;
        let meta = transaction.object_store(META).map_err(failed)?;
        Ok(Self {
            transaction,
            records,
            meta,
            settled,
        })
    }

    /// Waits for the transaction to settle. A failed step aborts it, so nothing of it stays.
    async fn finish<T>(self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            // Throws only when the transaction already finished (or aborted itself).
            let _ = self.transaction.abort();
        }
        let settled = self.settled.await;
        match (result, settled) {
            (Ok(value), Ok(_)) => Ok(value),
            (Err(error), _) => Err(error),
            (Ok(_), Err(_)) => Err(classify(self.transaction.error())),
        }
    }

    async fn run(&self, requests: &[StoreRequest]) -> Result<Vec<Input<'static>>, StoreError> {
        let mut next_seq = read_number(&self.meta, NEXT_SEQ).await?;
        let mut bytes = read_number(&self.meta, BYTES).await?;
        let mut answers = Vec::new();
        for request in requests {
            match request {
                StoreRequest::Append { records } => {
                    for record in records {
                        let value = Uint8Array::from(record.data.as_slice());
                        self.records
                            .put_with_key(&value, &key_seq(record.seq))
                            .map_err(failed)?;
                        bytes += record.data.len() as u64;
                        next_seq = next_seq.max(record.seq + 1);
                    }
                    if let (Some(first), Some(last)) = (records.first(), records.last()) {
                        answers.push(Input::Appended {
                            first: first.seq,
                            last: last.seq,
                        });
                    }
                }
                StoreRequest::Remove {
                    seqs,
                    bytes: removed,
                } => {
                    self.remove(seqs)?;
                    bytes = bytes.saturating_sub(*removed);
                }
                StoreRequest::Load {
                    from,
                    max_count,
                    max_bytes,
                } => answers.push(Input::Loaded {
                    records: self.load(*from, *max_count, *max_bytes).await?,
                }),
                StoreRequest::SaveState { state } => {
                    put(&self.meta, &Uint8Array::from(state.as_slice()), STATE)?;
                }
            }
        }
        put(&self.meta, &JsValue::from_f64(next_seq as f64), NEXT_SEQ)?;
        put(&self.meta, &JsValue::from_f64(bytes as f64), BYTES)?;
        Ok(answers)
    }

    /// Deletes `seqs` (ascending): one key-range delete per run of consecutive numbers, which
    /// is one request for a drained window instead of a read and a delete per record.
    fn remove(&self, seqs: &[Seq]) -> Result<(), StoreError> {
        let mut rest = seqs;
        while let Some(&first) = rest.first() {
            let run = rest
                .windows(2)
                .position(|pair| pair[1] != pair[0] + 1)
                .map_or(rest.len(), |end| end + 1);
            let last = rest[run - 1];
            let query = if first == last {
                key_seq(first)
            } else {
                IdbKeyRange::bound(&key_seq(first), &key_seq(last))
                    .map_err(failed)?
                    .into()
            };
            // The request completes before the transaction does; its errors abort the
            // transaction, which `finish` reports.
            self.records.delete(&query).map_err(failed)?;
            rest = &rest[run..];
        }
        Ok(())
    }

    /// Records with `seq >= from`, ascending, within the count and byte budget of the contract.
    async fn load(
        &self,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let range = IdbKeyRange::lower_bound(&key_seq(from)).map_err(failed)?;
        let request = self
            .records
            .open_cursor_with_range(&range)
            .map_err(failed)?;
        let mut records = Vec::new();
        let mut total = 0;
        // The request's result is the cursor, moved on by `continue`; null past the last record.
        let mut cursor = finished(&request).await.map_err(StoreError::Failed)?;
        while records.len() < max_count && total < max_bytes {
            if cursor.is_null() || cursor.is_undefined() {
                break;
            }
            let at: &IdbCursorWithValue = cursor.unchecked_ref();
            let (key, value) = (at.key().map_err(failed)?, at.value().map_err(failed)?);
            // Keys are only ever written by `put` above; anything else is skipped, not trusted.
            if let Some(seq) = key.as_f64().filter(|k| k.fract() == 0.0 && *k >= 0.0) {
                // A value that is not bytes becomes an empty record, which the core rejects
                // as corrupt with a reason instead of stalling the queue.
                let data = bytes_of(&value);
                total += data.len();
                records.push(Record {
                    seq: seq as Seq,
                    data,
                });
            }
            if records.len() >= max_count || total >= max_bytes {
                break;
            }
            at.continue_().map_err(failed)?;
            cursor = finished(&request).await.map_err(StoreError::Failed)?;
        }
        Ok(records)
    }
}

fn key_seq(seq: Seq) -> JsValue {
    // Sequence numbers stay far below 2^53, where f64 keys are exact.
    JsValue::from_f64(seq as f64)
}

fn put(store: &IdbObjectStore, value: &JsValue, name: &str) -> Result<(), StoreError> {
    store
        .put_with_key(value, &JsValue::from_str(name))
        .map(drop)
        .map_err(failed)
}

/// The meta entry `name` (`undefined` when there is none).
async fn get(store: &IdbObjectStore, name: &str) -> Result<JsValue, StoreError> {
    let request = store.get(&JsValue::from_str(name)).map_err(failed)?;
    finished(&request).await.map_err(StoreError::Failed)
}

async fn read_number(store: &IdbObjectStore, name: &str) -> Result<u64, StoreError> {
    Ok(number(&get(store, name).await?))
}

/// A stored count, high-water mark or size; 0 when absent or not a count.
fn number(value: &JsValue) -> u64 {
    value
        .as_f64()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map_or(0, |n| n as u64)
}

fn bytes_of(value: &JsValue) -> Vec<u8> {
    value
        .dyn_ref::<Uint8Array>()
        .map(Uint8Array::to_vec)
        .unwrap_or_default()
}

/// A new origin id (the core's format) from 16 random bytes.
fn new_origin() -> Result<String, StoreError> {
    let bytes = random_bytes::<16>().map_err(StoreError::Failed)?;
    Ok(vdev_core::new_origin(bytes))
}

/// A call IndexedDB refused synchronously (it threw).
fn failed(error: JsValue) -> StoreError {
    StoreError::Failed(describe(&error))
}

/// Maps the error an aborted transaction carries to the core's storage errors.
fn classify(error: Option<web_sys::DomException>) -> StoreError {
    match error {
        Some(error) if error.name() == "QuotaExceededError" => StoreError::QuotaExceeded,
        Some(error) => StoreError::Failed(format!("{}: {}", error.name(), error.message())),
        None => StoreError::Failed("transaction aborted".into()),
    }
}
