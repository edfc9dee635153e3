//! Telemetry ingestion and queries: the IoT Hub property bag, deduplication by the device's
//! `vdev-seq` property, stored messages by device/stream/batch, and uploaded blobs.
//!
//! `vdev-seq=<origin>.<n>`: `origin` is 1–32 characters of `[0-9a-z]` naming one outbox of the
//! device, `n` a decimal number that strictly increases per origin (at most 2^63-1 here). A
//! message whose `n` is greater than the highest `n` stored for (device, origin) is stored. One
//! at or below it is a replay when the message stored under that number has the same payload:
//! it is acknowledged and dropped. With another payload (or none stored under that number) it is
//! a *conflict*: a device reused a number, for example after its storage rolled back. A
//! conflict is never dropped: it is stored, flagged (`conflict` in the message list, a count
//! per workspace, a mark in the console) and logged, and the highest `n` stays. Messages
//! without `vdev-seq` (official SDK, mosquitto) are stored as they come.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::percent_decode_str;
use rusqlite::{OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::clock::{now_ms, rfc3339};
use crate::problem::Problem;
use crate::state::AppState;
use crate::store::{Store, StoreError};

/// Why a telemetry message was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The property bag after `messages/events/` is not URL-encoded `key=value&...`.
    #[error("property bag is not valid url encoding: {0}")]
    BadPropertyBag(String),
    /// `vdev-seq` is present but not `<origin>.<n>`.
    #[error("vdev-seq {0:?} is not <origin>.<n> with origin of 1-32 [0-9a-z] and n a decimal u63")]
    BadSequence(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What ingestion did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored with this row id.
    Stored(i64),
    /// A replay of an already stored sequence number with the same payload; dropped.
    Duplicate,
    /// A reused sequence number with another payload: stored with this row id, flagged.
    Conflict(i64),
}

/// Parse an URL-encoded property bag (`a=1&b=x%20y`); keys without `=` get an empty value.
pub fn parse_property_bag(bag: &str) -> Result<Vec<(String, String)>, IngestError> {
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| IngestError::BadPropertyBag(bag.to_owned()))
    };
    bag.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => Ok((decode(k)?, decode(v)?)),
            None => Ok((decode(pair)?, String::new())),
        })
        .collect()
}

fn parse_sequence(value: &str) -> Result<(String, i64), IngestError> {
    let bad = || IngestError::BadSequence(value.to_owned());
    let (origin, n) = value.split_once('.').ok_or_else(bad)?;
    let origin_ok = (1..=32).contains(&origin.len())
        && origin
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase());
    if !origin_ok || n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = n.parse().map_err(|_| bad())?;
    Ok((origin.to_owned(), n))
}

#[derive(Deserialize)]
struct Link {
    link: String,
}

/// A telemetry message read from its topic, ready to be written.
#[derive(Debug)]
pub struct Telemetry {
    workspace_id: String,
    device_id: String,
    properties: Vec<(String, String)>,
    sequence: Option<(String, i64)>,
    payload: Vec<u8>,
}

impl Telemetry {
    /// Reads the property bag after `messages/events/`; refuses a bag or `vdev-seq` it cannot
    /// read before anything is written.
    pub fn new(
        workspace_id: &str,
        device_id: &str,
        property_bag: &str,
        payload: Vec<u8>,
    ) -> Result<Self, IngestError> {
        let properties = parse_property_bag(property_bag)?;
        let sequence = properties
            .iter()
            .find(|(k, _)| k == "vdev-seq")
            .map(|(_, v)| parse_sequence(v))
            .transpose()?;
        Ok(Self {
            workspace_id: workspace_id.to_owned(),
            device_id: device_id.to_owned(),
            properties,
            sequence,
            payload,
        })
    }

    fn get(&self, key: &str) -> Option<String> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// Stores one telemetry message (or drops it as a replay) in the caller's transaction.
fn write(tx: &rusqlite::Transaction<'_>, message: &Telemetry) -> Result<IngestOutcome, StoreError> {
    let Telemetry {
        workspace_id,
        device_id,
        sequence,
        payload,
        ..
    } = message;
    let externalized = message.flag("has-externalized-payload");
    let blob_name = if externalized {
        serde_json::from_slice::<Link>(payload).ok().map(|l| l.link)
    } else {
        None
    };
    let properties_json = Value::Object(
        message
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
    .to_string();
    let mut conflict = false;
    if let Some((origin, n)) = sequence {
        let last: Option<i64> = tx
            .prepare_cached(
                "SELECT last_n FROM message_sequences WHERE workspace_id = ?1 AND device_id = ?2
                 AND origin = ?3",
            )?
            .query_row(params![workspace_id, device_id, origin], |r| r.get(0))
            .optional()?;
        if last.is_some_and(|last| *n <= last) {
            let stored: Option<Vec<u8>> = tx
                .prepare_cached(
                    "SELECT payload FROM messages WHERE workspace_id = ?1 AND device_id = ?2
                     AND seq_origin = ?3 AND seq_n = ?4 ORDER BY id LIMIT 1",
                )?
                .query_row(params![workspace_id, device_id, origin, n], |r| r.get(0))
                .optional()?;
            if stored.as_deref() == Some(payload.as_slice()) {
                return Ok(IngestOutcome::Duplicate);
            }
            conflict = true;
        } else {
            tx.prepare_cached(
                "INSERT INTO message_sequences (workspace_id, device_id, origin, last_n)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (workspace_id, device_id, origin)
                 DO UPDATE SET last_n = excluded.last_n",
            )?
            .execute(params![workspace_id, device_id, origin, n])?;
        }
    }
    // Prepared once per connection and kept (rusqlite's statement cache): preparing these
    // statements anew for every message was most of the ingest thread's time.
    tx.prepare_cached(
        "INSERT INTO messages (workspace_id, device_id, received_at, stream_group, stream, site_id,
         batch_id, batch_slice_id, message_id, chunk_id, content_encoding, complete_batch,
         complete_message, ignore_payload, externalized, blob_name, seq_origin, seq_n,
         properties_json, payload, conflict)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
         ?19, ?20, ?21)",
    )?
    .execute(params![
        workspace_id,
        device_id,
        now_ms(),
        message.get("stream-group-name"),
        message.get("stream-name"),
        message.get("site-id"),
        message.get("batch-id"),
        message.get("batch-slice-id"),
        message.get("message-id"),
        message.get("chunk-id"),
        message.get("content-encoding"),
        message.flag("complete-batch"),
        message.flag("complete-message"),
        message.flag("ignore-payload"),
        externalized,
        blob_name,
        sequence.as_ref().map(|(o, _)| o.clone()),
        sequence.as_ref().map(|(_, n)| *n),
        properties_json,
        payload,
        conflict
    ])?;
    let id = tx.last_insert_rowid();
    if conflict {
        tracing::warn!(
            workspace_id,
            device_id,
            sequence = ?sequence,
            id,
            "sequence number reused with another payload: stored as a conflict"
        );
        return Ok(IngestOutcome::Conflict(id));
    }
    Ok(IngestOutcome::Stored(id))
}

/// The answer to one [`Ingestor::submit`]: given once the message is durable, or why it was
/// not stored.
pub type Ingested = tokio::sync::oneshot::Receiver<Result<IngestOutcome, String>>;

type Job = (
    Telemetry,
    tokio::sync::oneshot::Sender<Result<IngestOutcome, String>>,
);

/// Most messages, and most payload bytes, written in one transaction.
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Writes telemetry with group commit: one writer thread takes every message submitted while it
/// was busy, writes them in one transaction (`synchronous = FULL`, so the commit is on disk)
/// and only then answers each. A device is acknowledged for what is durable, and a burst costs
/// one disk flush instead of one per message. Messages are written in the order they were
/// submitted, so one connection's acknowledgements come in its order.
#[derive(Debug, Clone)]
pub struct Ingestor {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Ingestor {
    /// Starts the writer thread; it ends when the last `Ingestor` is dropped.
    pub fn start(store: Store) -> std::io::Result<Self> {
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("vdev-ingest".into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut bytes = first.0.payload.len();
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                        match queue.try_recv() {
                            Ok(job) => {
                                bytes += job.0.payload.len();
                                batch.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    // A bug that panics refuses this batch (its sessions hear the writer went
                    // away and close), not every later one.
                    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        write_batch(&store, batch)
                    }));
                    if written.is_err() {
                        tracing::error!("the telemetry writer panicked; its batch was not stored");
                    }
                }
            })?;
        Ok(Self { jobs })
    }

    /// Queues a message; the answer comes once it is durable.
    pub fn submit(&self, message: Telemetry) -> Ingested {
        let (answer, ingested) = tokio::sync::oneshot::channel();
        // A closed queue (the Platform stopping) drops `answer`: the session sees it as refused.
        let _ = self.jobs.send((message, answer));
        ingested
    }
}

/// One transaction for the whole batch: all of it is durable, or none (each job is refused).
fn write_batch(store: &Store, batch: Vec<Job>) {
    let mut db = store.lock();
    let written = (|| {
        let tx = db.transaction()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (message, _) in &batch {
            outcomes.push(write(&tx, message)?);
        }
        // The devices were seen: once per device per batch, in the same commit.
        let mut seen: Vec<(&str, &str)> = batch
            .iter()
            .map(|(m, _)| (m.workspace_id.as_str(), m.device_id.as_str()))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        for (workspace_id, device_id) in seen {
            tx.prepare_cached(
                "UPDATE devices SET last_seen_at = ?3 WHERE workspace_id = ?1 AND device_id = ?2",
            )?
            .execute(params![workspace_id, device_id, now_ms()])?;
        }
        tx.commit()?;
        Ok::<_, StoreError>(outcomes)
    })();
    drop(db);
    match written {
        Ok(outcomes) => {
            for ((_, answer), outcome) in batch.into_iter().zip(outcomes) {
                let _ = answer.send(Ok(outcome));
            }
        }
        Err(error) => {
            tracing::error!(%error, messages = batch.len(), "telemetry batch not stored");
            for (_, answer) in batch {
                let _ = answer.send(Err(error.to_string()));
            }
        }
    }
}

/// Filters of a message query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageQuery {
    /// Only this device.
    pub device_id: Option<String>,
    /// Only this stream group.
    pub stream_group: Option<String>,
    /// Only this stream.
    pub stream: Option<String>,
    /// Only this batch.
    pub batch_id: Option<String>,
    /// Only rows with a greater id (paging forward).
    pub after_id: Option<i64>,
    /// Only rows with a smaller id (paging back from the newest with `order=desc`).
    pub before_id: Option<i64>,
    /// Only conflicts (`true`) or only the others (`false`).
    pub conflict: Option<bool>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<u32>,
    /// `asc` (default, oldest first) or `desc` (newest first).
    pub order: Option<String>,
    /// At most this many bytes of each payload (the rest stays in the database, and
    /// `payloadTruncated` says so): what a view of many messages asks for, so that a backlog of
    /// large messages costs it little. Whole payloads when absent.
    pub payload_bytes: Option<u32>,
}

/// Stored messages matching the query.
pub fn query(state: &AppState, workspace_id: &str, q: &MessageQuery) -> Result<Value, Problem> {
    state.check_workspace(workspace_id, false)?;
    let order = match q.order.as_deref() {
        None | Some("asc") => "ASC",
        Some("desc") => "DESC",
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "order must be asc or desc, not {other:?}"
            )));
        }
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    // Only the filters given go into the statement: `(?n IS NULL OR column = ?n)` keeps SQLite
    // from using an index, and then every query sorts the whole workspace (28 ms at 100,000
    // messages, under the lock that ingestion needs).
    let mut filters = vec!["workspace_id = ?"];
    let mut values: Vec<rusqlite::types::Value> = vec![workspace_id.to_owned().into()];
    let optional = [
        ("device_id = ?", q.device_id.clone().map(Into::into)),
        ("stream_group = ?", q.stream_group.clone().map(Into::into)),
        ("stream = ?", q.stream.clone().map(Into::into)),
        ("batch_id = ?", q.batch_id.clone().map(Into::into)),
        ("id > ?", q.after_id.map(Into::into)),
        ("id < ?", q.before_id.map(Into::into)),
        ("conflict = ?", q.conflict.map(|c| i64::from(c).into())),
    ];
    for (filter, value) in optional {
        if let Some(value) = value {
            filters.push(filter);
            values.push(value);
        }
    }
    values.push(i64::from(limit).into());
    // SQLite cuts the payload itself, so a long one is never read whole under the lock (and
    // `substr` of an empty blob is NULL, hence the `coalesce`).
    // Whole payloads: any length above SQLite's largest blob (a length near i64::MAX overflows
    // inside `substr` and gives an empty blob).
    let payload_bytes = q.payload_bytes.map_or(i64::from(i32::MAX), i64::from);
    values.insert(0, payload_bytes.into());
    let db = state.store.lock();
    let mut stmt = db
        .prepare(&format!(
            "SELECT id, device_id, received_at, stream_group, stream, site_id, batch_id,
             batch_slice_id, message_id, chunk_id, content_encoding, complete_batch,
             complete_message, ignore_payload, externalized, blob_name, seq_origin, seq_n,
             properties_json, coalesce(substr(payload, 1, ?), x''), conflict, length(payload) FROM messages
             WHERE {} ORDER BY id {order} LIMIT ?",
            filters.join(" AND ")
        ))
        .map_err(StoreError::from)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values), |r| {
            let payload: Vec<u8> = r.get(19)?;
            let size: i64 = r.get(21)?;
            let encoding: Option<String> = r.get(10)?;
            let text = match encoding {
                None => utf8_text(&payload),
                Some(_) => None,
            };
            let properties: String = r.get(18)?;
            let origin: Option<String> = r.get(16)?;
            let n: Option<i64> = r.get(17)?;
            Ok(json!({
                "id": r.get::<_, i64>(0)?,
                "deviceId": r.get::<_, String>(1)?,
                "receivedTime": rfc3339(r.get(2)?),
                "streamGroup": r.get::<_, Option<String>>(3)?,
                "stream": r.get::<_, Option<String>>(4)?,
                "siteId": r.get::<_, Option<String>>(5)?,
                "batchId": r.get::<_, Option<String>>(6)?,
                "batchSliceId": r.get::<_, Option<String>>(7)?,
                "messageId": r.get::<_, Option<String>>(8)?,
                "chunkId": r.get::<_, Option<String>>(9)?,
                "contentEncoding": encoding,
                "completeBatch": r.get::<_, bool>(11)?,
                "completeMessage": r.get::<_, bool>(12)?,
                "ignorePayload": r.get::<_, bool>(13)?,
                "hasExternalizedPayload": r.get::<_, bool>(14)?,
                "blobName": r.get::<_, Option<String>>(15)?,
                "sequence": origin.map(|o| json!({"origin": o, "n": n})),
                "conflict": r.get::<_, bool>(20)?,
                "properties": serde_json::from_str::<Value>(&properties).unwrap_or(Value::Null),
                "payloadSize": size,
                "payloadTruncated": i64::try_from(payload.len()).unwrap_or(i64::MAX) < size,
                "payloadText": text,
                "payloadBase64": STANDARD.encode(&payload),
            }))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(StoreError::from)?;
    Ok(Value::Array(rows))
}

/// Longest window of [`message_rate`], in seconds.
pub const MAX_RATE_SECONDS: u32 = 3600;

/// How many messages of one device the Platform received in each whole second of the last
/// `seconds` (the last bucket is the current, partial second), oldest first.
pub fn message_rate(
    state: &AppState,
    workspace_id: &str,
    device_id: &str,
    seconds: u32,
) -> Result<Value, Problem> {
    state.check_workspace(workspace_id, false)?;
    if !(1..=MAX_RATE_SECONDS).contains(&seconds) {
        return Err(Problem::bad_request(format!(
            "seconds must be from 1 to {MAX_RATE_SECONDS}, not {seconds}"
        )));
    }
    let end_second = now_ms().div_euclid(1000) + 1;
    let start_second = end_second - i64::from(seconds);
    let mut counts = vec![0u64; seconds as usize];
    let db = state.store.lock();
    // Newest first along the (workspace, device, id) index, stopping at the first row before
    // the window: the single writer numbers rows in the order it stamps them, so this reads the
    // window's rows and one more, never the device's whole history (which a GROUP BY over
    // received_at would scan, there being no index on it). A wall clock stepped back can end the
    // walk early; the chart then shows fewer messages for that minute, nothing worse.
    let mut stmt = db
        .prepare_cached(
            "SELECT received_at FROM messages WHERE workspace_id = ?1 AND device_id = ?2
             ORDER BY id DESC",
        )
        .map_err(StoreError::from)?;
    let mut rows = stmt
        .query(params![workspace_id, device_id])
        .map_err(StoreError::from)?;
    while let Some(row) = rows.next().map_err(StoreError::from)? {
        let received_at: i64 = row.get(0).map_err(StoreError::from)?;
        let second = received_at.div_euclid(1000);
        if second < start_second {
            break;
        }
        if let Some(count) = usize::try_from(second - start_second)
            .ok()
            .and_then(|i| counts.get_mut(i))
        {
            *count += 1;
        }
    }
    Ok(json!({
        "deviceId": device_id,
        "bucketSeconds": 1,
        "fromTime": rfc3339(start_second * 1000),
        "fromMs": start_second * 1000,
        "toTime": rfc3339(end_second * 1000),
        "total": counts.iter().sum::<u64>(),
        "counts": counts,
    }))
}

/// The payload as text when it is UTF-8; a character cut at the end (by `payloadBytes`) is left
/// out rather than making the whole text unreadable.
fn utf8_text(payload: &[u8]) -> Option<String> {
    match std::str::from_utf8(payload) {
        Ok(text) => Some(text.to_owned()),
        Err(cut) if cut.error_len().is_none() => std::str::from_utf8(&payload[..cut.valid_up_to()])
            .ok()
            .map(str::to_owned),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_bags_decode_and_keep_bare_keys() {
        let bag = parse_property_bag("a=x%20y&b=&flag&c=%2F").unwrap();
        let expected = [("a", "x y"), ("b", ""), ("flag", ""), ("c", "/")];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(bag, expected);
        assert!(parse_property_bag("a=%FF").is_err());
    }

    #[test]
    fn sequences_follow_the_documented_grammar() {
        assert_eq!(parse_sequence("abc123.42").unwrap(), ("abc123".into(), 42));
        assert!(parse_sequence(&format!("{}.1", "a".repeat(32))).is_ok());
        for bad in [
            "",
            ".1",
            "abc",
            "abc.",
            "ABC.1",
            "a-b.1",
            "abc.-1",
            "abc.1.2",
            "abc.9223372036854775808",
        ] {
            assert!(parse_sequence(bad).is_err(), "{bad}");
        }
        assert!(parse_sequence(&format!("{}.1", "a".repeat(33))).is_err());
    }
}
