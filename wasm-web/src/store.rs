//! The browser's outbox store: the core's storage contract (`vdev_core::StoreRequest`) kept in
//! one IndexedDB database through the `idb` crate.
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

use std::cell::Cell;
use std::rc::Rc;

use futures_channel::oneshot;
use gloo_events::EventListener;
use idb::{
    Database, Factory, KeyRange, ObjectStore, ObjectStoreParams, Query, Transaction,
    TransactionMode,
};
use js_sys::Uint8Array;
use vdev_core::{Input, OutboxMeta, Record, Seq, StoreError, StoreRequest};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::IdbTransaction;

use crate::runtime::{hex, random_bytes};

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
    database: Database,
}

impl IdbStore {
    /// Opens (creating on first use) the database `name` and reads what it holds.
    pub async fn open(name: &str) -> Result<(Self, StoredContents), OpenError> {
        let failed = |reason: String| OpenError::Failed {
            name: name.to_owned(),
            reason,
        };
        let factory = Factory::new().map_err(|e| OpenError::Unavailable(e.to_string()))?;
        let mut request = factory
            .open(name, Some(SCHEMA_VERSION))
            .map_err(|e| failed(e.to_string()))?;
        request.on_upgrade_needed(|event| {
            use idb::DatabaseEvent as _;
            // Only version 1 exists: create whichever store is missing.
            if let Ok(database) = event.database() {
                let existing = database.store_names();
                for store in [RECORDS, META] {
                    if !existing.iter().any(|name| name == store) {
                        let _ = database.create_object_store(store, ObjectStoreParams::new());
                    }
                }
            }
        });
        let mut database = request.await.map_err(|e| failed(e.to_string()))?;
        // Let a later schema upgrade or a deletion of this database proceed instead of
        // blocking on this connection; the device then sees storage errors.
        database.on_version_change(|event| {
            if let Some(target) = event.target()
                && let Ok(database) = target.dyn_into::<web_sys::IdbDatabase>()
            {
                database.close();
            }
        });
        let store = Self {
            name: name.to_owned(),
            database,
        };
        let contents = store
            .read_contents()
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok((store, contents))
    }

    /// Deletes the database `name` and everything in it (it must not be open).
    pub async fn delete(name: &str) -> Result<(), OpenError> {
        let factory = Factory::new().map_err(|e| OpenError::Unavailable(e.to_string()))?;
        factory
            .delete(name)
            .map_err(|e| OpenError::Unavailable(e.to_string()))?
            .await
            .map_err(|e| OpenError::Failed {
                name: name.to_owned(),
                reason: e.to_string(),
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
            let origin = batch.meta.get(key_str(ORIGIN)).map_err(failed)?.await;
            let origin = origin.map_err(failed)?.and_then(|v| v.as_string());
            let next_seq = read_number(&batch.meta, NEXT_SEQ).await?;
            let bytes = read_number(&batch.meta, BYTES).await?;
            let state = batch.meta.get(key_str(STATE)).map_err(failed)?.await;
            let state = state.map_err(failed)?.map(|v| bytes_of(&v));
            let count = batch.records.count(None).map_err(failed)?.await;
            let count = u64::from(count.map_err(failed)?);
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

/// One readwrite transaction over both object stores, watched from its start so that its
/// `complete` or `abort` event cannot be missed.
struct Batch {
    transaction: IdbTransaction,
    records: ObjectStore,
    meta: ObjectStore,
    settled: oneshot::Receiver<Result<(), StoreError>>,
    _listeners: [EventListener; 2],
}

impl Batch {
    fn begin(database: &Database) -> Result<Self, StoreError> {
        let transaction: IdbTransaction = database
            .transaction(&[RECORDS, META], TransactionMode::ReadWrite)
            .map_err(failed)?
            .into();
        let (sender, settled) = oneshot::channel();
        let sender = Rc::new(Cell::new(Some(sender)));
        let on_complete = {
            let sender = sender.clone();
            EventListener::once(&transaction, "complete", move |_| {
                if let Some(sender) = sender.take() {
                    let _ = sender.send(Ok(()));
                }
            })
        };
        let on_abort = {
            let aborted = transaction.clone();
            EventListener::once(&transaction, "abort", move |_| {
                if let Some(sender) = sender.take() {
                    let _ = sender.send(Err(classify(aborted.error())));
                }
            })
        };
        let scoped = Transaction::from(transaction.clone());
        let records = scoped.object_store(RECORDS).map_err(failed)?;
        let meta = scoped.object_store(META).map_err(failed)?;
        Ok(Self {
            transaction,
            records,
            meta,
            settled,
            _listeners: [on_complete, on_abort],
        })
    }

    /// Waits for the transaction to settle. A failed step aborts it, so nothing of it stays.
    async fn finish<T>(self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            // Throws only when the transaction already finished (or aborted itself).
            let _ = self.transaction.abort();
        }
        let settled = self
            .settled
            .await
            .unwrap_or_else(|_| Err(StoreError::Failed("transaction was dropped".into())));
        match (result, settled) {
            (Ok(value), Ok(())) => Ok(value),
            (Err(error), _) | (Ok(_), Err(error)) => Err(error),
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
                            .put(&value, Some(&JsValue::from(key_seq(record.seq))))
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
                let range = KeyRange::bound(
                    &JsValue::from_f64(first as f64),
                    &JsValue::from_f64(last as f64),
                    Some(false),
                    Some(false),
                )
                .map_err(failed)?;
                Query::KeyRange(range)
            };
            // The request completes before the transaction does; its errors abort the
            // transaction, which `finish` reports.
            drop(self.records.delete(query).map_err(failed)?);
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
        let range = KeyRange::lower_bound(&key_seq(from).into(), Some(false)).map_err(failed)?;
        let cursor = self
            .records
            .open_cursor(Some(Query::KeyRange(range)), None)
            .map_err(failed)?
            .await
            .map_err(failed)?;
        let Some(cursor) = cursor else {
            return Ok(Vec::new());
        };
        let mut cursor = cursor.into_managed();
        let mut records = Vec::new();
        let mut total = 0;
        while records.len() < max_count && total < max_bytes {
            let (Some(key), Some(value)) = (
                cursor.key().map_err(failed)?,
                cursor.value().map_err(failed)?,
            ) else {
                break;
            };
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
            cursor.next(None).await.map_err(failed)?;
        }
        Ok(records)
    }
}

fn key_seq(seq: Seq) -> Query {
    // Sequence numbers stay far below 2^53, where f64 keys are exact.
    Query::Key(JsValue::from_f64(seq as f64))
}

fn key_str(name: &str) -> Query {
    Query::Key(JsValue::from_str(name))
}

fn put(store: &ObjectStore, value: &JsValue, name: &str) -> Result<(), StoreError> {
    store
        .put(value, Some(&JsValue::from_str(name)))
        .map(drop)
        .map_err(failed)
}

async fn read_number(store: &ObjectStore, name: &str) -> Result<u64, StoreError> {
    let value = store.get(key_str(name)).map_err(failed)?.await;
    Ok(value
        .map_err(failed)?
        .and_then(|v| v.as_f64())
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map_or(0, |n| n as u64))
}

fn bytes_of(value: &JsValue) -> Vec<u8> {
    value
        .dyn_ref::<Uint8Array>()
        .map(Uint8Array::to_vec)
        .unwrap_or_default()
}

/// A new origin id: 32 characters of `0-9 a-f` from 16 random bytes.
fn new_origin() -> Result<String, StoreError> {
    let bytes = random_bytes::<16>().map_err(StoreError::Failed)?;
    Ok(hex(&bytes))
}

fn failed(error: idb::Error) -> StoreError {
    StoreError::Failed(error.to_string())
}

/// Maps the error an aborted transaction carries to the core's storage errors.
fn classify(error: Option<web_sys::DomException>) -> StoreError {
    match error {
        Some(error) if error.name() == "QuotaExceededError" => StoreError::QuotaExceeded,
        Some(error) => StoreError::Failed(format!("{}: {}", error.name(), error.message())),
        None => StoreError::Failed("transaction aborted".into()),
    }
}
