//! The contract between the core and the host's durable storage, and an in-memory store.
//!
//! The core never touches storage. It emits [`StoreRequest`]s, which the host executes **in the
//! order they were emitted** (IndexedDB transactions on one object store, appends to one file),
//! and answers each of them: appends ([`crate::Input::Appended`] /
//! [`crate::Input::AppendFailed`]), loads ([`crate::Input::Loaded`] /
//! [`crate::Input::LoadFailed`]), reservations ([`crate::Input::Reserved`] /
//! [`crate::Input::ReserveFailed`]), state saves ([`crate::Input::StateSaved`] /
//! [`crate::Input::SaveStateFailed`]) and removals when they fail
//! ([`crate::Input::RemoveFailed`]). Every retry is the core's decision, the same for every
//! host.
//!
//! Failures are answered per request, and the core handles each answer on its own, so a host
//! may commit several requests as one unit (the browser runs the requests of one turn as one
//! IndexedDB transaction): when the unit fails, nothing of it was written and every request in
//! it is answered with the failure (an append in it fails too, and its sends are told so). A
//! host that writes requests one by one (the WASI file store) fails only the one that failed.
//! Both are right; neither reports a write done that is not.
//!
//! Damaged data: a store that keeps records one by one (IndexedDB) hands back a record it
//! cannot read as it is, and the core rejects that message as corrupt
//! ([`crate::RejectReason::Corrupt`]) and goes on with the next. A log whose framing breaks
//! (a torn write, a flipped byte in a length) cannot find the records after the damage: it
//! cuts the log there when it opens, keeping every record before it, and says so with
//! [`crate::Input::StoreRecovered`]. A torn write was never reported stored (a write is
//! reported once it is durable); damage to older records loses the records from there on, and
//! the recovery says how many bytes were cut.
//!
//! What a store keeps:
//! - records keyed by sequence number, each an opaque byte string;
//! - the *origin*: a random id, so the Platform can tell a replay from a new message even if a
//!   device's storage is wiped and sequence numbers start again. The core makes it and decides
//!   when a new one is needed: a store hands back what it holds ([`OutboxMeta::origin`], empty
//!   when it holds none or cannot vouch for the numbers used under it), and the core writes a
//!   new one with its first reservation ([`StoreRequest::Reserve`]) when that is not an origin
//!   it can use. No stored message is sent before that reservation is durable, so no message
//!   goes out under an origin that a crash could still replace;
//! - the high-water mark: one past the highest sequence ever appended, kept even after those
//!   records are removed (a store that forgot it would reuse sequence numbers, and the
//!   Platform would drop new messages as replays);
//! - the *reservation*: a sequence number below which numbers may have been handed out, written
//!   durably ([`StoreRequest::Reserve`]) before any record at or above the previous one is
//!   appended. A store that loses writes it had reported done (a power cut under relaxed
//!   durability, a restored backup) may come back with an older high-water mark; the core
//!   starts numbering at the reservation at every start, so it never hands out a number the
//!   Platform may already hold;
//! - one opaque state blob ([`StoreRequest::SaveState`]): identity, tokens, pending
//!   provisioning operation, twin.
//!
//! [`MemoryStore`] implements it in memory for tests, simulations and hosts that do not need
//! durability.

use crate::prelude::*;

use alloc::collections::BTreeMap;

use crate::reason::Reason;
use crate::text::Describe;

/// Per-device sequence number of a stored message.
pub type Seq = u64;

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: Seq,
    /// The core's encoding of the message; opaque to the store.
    pub data: Vec<u8>,
}

/// A new origin id from 16 random bytes: 32 characters of `0-9 a-f` (128 random bits, so two
/// stores never share one in practice).
pub(crate) fn new_origin(random: [u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut origin = String::with_capacity(32);
    for byte in random {
        origin.push(char::from(DIGITS[usize::from(byte >> 4)]));
        origin.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    origin
}

/// Whether the Platform takes `origin` as an origin id: 1 to 32 characters of `0-9 a-z`.
pub(crate) fn is_usable_origin(origin: &str) -> bool {
    (1..=32).contains(&origin.len())
        && origin
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// What the host reads from its store before creating the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMeta {
    /// The origin id the store holds, as the last [`StoreRequest::Reserve`] that carried one
    /// wrote it, or empty when it holds none (or none it can read). The core decides whether it
    /// can use it (see [`OutboxMeta::reserved`]) and makes a new one when not.
    pub origin: String,
    /// One past the highest sequence number ever appended (0 for a new store): the store's
    /// high-water mark, at least one past its highest record.
    pub next_seq: Seq,
    /// The last [`StoreRequest::Reserve`] made durable; `None` when the store holds none or
    /// cannot read it. A store that holds anything (a record, a high-water mark) without a
    /// readable reservation cannot tell which numbers the Platform may hold under its origin:
    /// the core then starts a new origin and tells the app ([`crate::Event::OutboxRecovered`]).
    pub reserved: Option<Seq>,
    /// Number of records stored.
    pub count: u64,
    /// Total bytes of the stored records' data.
    pub bytes: u64,
}

/// A storage operation for the host to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "store requests must be executed in order; dropping one loses or stalls messages"]
pub enum StoreRequest {
    /// Durably append these records (consecutive sequence numbers), all or none, then answer
    /// with [`crate::Input::Appended`] or [`crate::Input::AppendFailed`] for the same range.
    Append {
        /// The records, in sequence order.
        records: Vec<Record>,
    },
    /// Read records with `seq >= from` in ascending order, at most `max_count` of them, stopping
    /// after the record that brings the total data size to `max_bytes` or more (always at
    /// least one record when there is one). Answer with [`crate::Input::Loaded`], or
    /// [`crate::Input::LoadFailed`] when nothing could be read (the core asks again later).
    Load {
        /// Lowest sequence number wanted.
        from: Seq,
        /// Most records to return.
        max_count: usize,
        /// Byte budget, see above.
        max_bytes: usize,
    },
    /// Remove these records (delivered or rejected). No answer when it worked; when it failed,
    /// [`crate::Input::RemoveFailed`] with the same `seqs` and `bytes`, and the core asks again
    /// later. Losing a remove to a crash is harmless: the message is sent again and the
    /// Platform drops the replay.
    Remove {
        /// The sequence numbers, ascending.
        seqs: Vec<Seq>,
        /// Their total size in bytes, as appended: a store that keeps a byte count but cannot
        /// read sizes cheaply (IndexedDB) subtracts this instead of reading every record.
        bytes: u64,
    },
    /// Durably record that sequence numbers below `below` may be in use, before answering
    /// [`crate::Input::Reserved`] (or [`crate::Input::ReserveFailed`]). This one must reach
    /// the disk before its answer even where other writes may lag (IndexedDB's `strict`
    /// durability, an `fsync`): it is what keeps numbers unique across a store that loses
    /// recent writes. Hand the value back as [`OutboxMeta::reserved`].
    Reserve {
        /// One past the highest sequence number the core may use.
        below: Seq,
        /// A new origin id, to write durably with the reservation (both or neither) and hand
        /// back as [`OutboxMeta::origin`] from now on.
        origin: Option<String>,
    },
    /// Durably replace the saved device state, then answer [`crate::Input::StateSaved`] with
    /// the same `reported_revision` (or [`crate::Input::SaveStateFailed`]: the core saves its
    /// state again later).
    SaveState {
        /// Opaque bytes (JSON); hand them back to [`crate::Device::new`] on the next start.
        state: Vec<u8>,
        /// Which reported-properties updates the state includes; hand it back as it is.
        reported_revision: u64,
    },
}

impl StoreRequest {
    /// Whether the host must have the request on disk before it answers (IndexedDB's `strict`
    /// durability, an `fsync`): appends (their sends resolve on the answer), reservations (they
    /// keep numbers unique across lost writes) and state saves (reported properties are
    /// declared stored on the answer). Loads change nothing, and a lost removal only sends a
    /// message again, which the Platform drops as a replay.
    pub fn must_be_durable(&self) -> bool {
        match self {
            Self::Append { .. } | Self::Reserve { .. } | Self::SaveState { .. } => true,
            Self::Load { .. } | Self::Remove { .. } => false,
        }
    }
}

/// What a store cut when it opened: an unreadable tail (a torn write, a flipped byte), after
/// the records it kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRecovery {
    /// Which part of the store (a segment file, a database).
    pub file: String,
    /// Bytes of valid records kept.
    pub valid_bytes: u64,
    /// Bytes cut after them.
    pub cut_bytes: u64,
    /// Why they were unreadable.
    pub reason: String,
}

/// Which storage operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    /// [`StoreRequest::Load`].
    Load,
    /// [`StoreRequest::Remove`].
    Remove,
    /// [`StoreRequest::SaveState`].
    SaveState,
    /// [`StoreRequest::Reserve`].
    Reserve,
}

impl StoreOperation {
    /// The stable name apps see.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Remove => "remove",
            Self::SaveState => "saveState",
            Self::Reserve => "reserve",
        }
    }
}

/// Why a store could not perform an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The storage quota is exhausted (the browser's `QuotaExceededError`, a full disk).
    QuotaExceeded,
    /// Any other storage failure, with the host's description.
    Failed(String),
}

impl Describe for StoreError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::QuotaExceeded => put!(
                out,
                "the storage quota is exhausted (what was stored before is kept)"
            ),
            Self::Failed(why) => put!(out, "storage failed: ", why),
        }
    }
}

described!(StoreError);

impl Reason for StoreError {
    fn code(&self) -> &'static str {
        match self {
            Self::QuotaExceeded => "quotaExceeded",
            Self::Failed(_) => "failed",
        }
    }
}

/// An in-memory store that follows the contract exactly.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    origin: String,
    records: BTreeMap<Seq, Vec<u8>>,
    next_seq: Seq,
    reserved: Seq,
    bytes: u64,
    state: Option<Vec<u8>>,
}

impl MemoryStore {
    /// A new, empty store with the given origin id.
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            ..Default::default()
        }
    }

    /// What [`crate::Device::new`] needs to know about the stored records.
    pub fn meta(&self) -> OutboxMeta {
        OutboxMeta {
            origin: self.origin.clone(),
            next_seq: self.next_seq,
            reserved: Some(self.reserved),
            count: self.records.len() as u64,
            bytes: self.bytes,
        }
    }

    /// The saved device state, if any.
    pub fn state(&self) -> Option<&[u8]> {
        self.state.as_deref()
    }

    /// The stored records in order.
    pub fn records(&self) -> impl Iterator<Item = (Seq, &[u8])> {
        self.records
            .iter()
            .map(|(seq, data)| (*seq, data.as_slice()))
    }

    /// Performs `request`; returns the answer the core expects, if any.
    pub fn execute(&mut self, request: StoreRequest) -> Option<crate::Input<'static>> {
        match request {
            StoreRequest::Append { records } => {
                let (first, last) = (records.first()?.seq, records.last()?.seq);
                for record in records {
                    self.next_seq = self.next_seq.max(record.seq + 1);
                    self.bytes += record.data.len() as u64;
                    if let Some(old) = self.records.insert(record.seq, record.data) {
                        self.bytes -= old.len() as u64;
                    }
                }
                Some(crate::Input::Appended { first, last })
            }
            StoreRequest::Load {
                from,
                max_count,
                max_bytes,
            } => Some(crate::Input::Loaded {
                records: self.load(from, max_count, max_bytes),
            }),
            StoreRequest::Remove { seqs, .. } => {
                for seq in seqs {
                    if let Some(old) = self.records.remove(&seq) {
                        self.bytes -= old.len() as u64;
                    }
                }
                None
            }
            StoreRequest::SaveState {
                state,
                reported_revision,
            } => {
                self.state = Some(state);
                Some(crate::Input::StateSaved { reported_revision })
            }
            StoreRequest::Reserve { below, origin } => {
                if let Some(origin) = origin {
                    self.origin = origin;
                }
                self.reserved = self.reserved.max(below);
                Some(crate::Input::Reserved { below })
            }
        }
    }

    fn load(&self, from: Seq, max_count: usize, max_bytes: usize) -> Vec<Record> {
        let mut out = Vec::new();
        let mut total = 0;
        for (seq, data) in self.records.range(from..).take(max_count) {
            if total >= max_bytes {
                break;
            }
            total += data.len();
            out.push(Record {
                seq: *seq,
                data: data.clone(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_origins_are_32_lowercase_hex_digits() {
        assert_eq!(
            new_origin([
                0x00, 0x0f, 0xa0, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
            ]),
            "000fa0ff0102030405060708090a0b0c"
        );
    }

    fn append(store: &mut MemoryStore, seqs: core::ops::Range<u64>) {
        let records = seqs
            .map(|seq| Record {
                seq,
                data: vec![seq as u8; 10],
            })
            .collect();
        let _ = store.execute(StoreRequest::Append { records });
    }

    #[test]
    fn high_water_mark_survives_removal() {
        let mut store = MemoryStore::new("o1");
        append(&mut store, 0..5);
        let _ = store.execute(StoreRequest::Remove {
            seqs: vec![0, 1, 2, 3, 4],
            bytes: 50,
        });
        let meta = store.meta();
        assert_eq!((meta.next_seq, meta.count, meta.bytes), (5, 0, 0));
    }

    #[test]
    fn load_respects_count_and_bytes() {
        let mut store = MemoryStore::new("o1");
        append(&mut store, 0..10);
        let loaded = |input: Option<crate::Input<'_>>| match input {
            Some(crate::Input::Loaded { records }) => {
                records.iter().map(|r| r.seq).collect::<Vec<_>>()
            }
            other => panic!("unexpected {other:?}"),
        };
        let by_count = store.execute(StoreRequest::Load {
            from: 3,
            max_count: 2,
            max_bytes: 1_000,
        });
        assert_eq!(loaded(by_count), [3, 4]);
        let by_bytes = store.execute(StoreRequest::Load {
            from: 8,
            max_count: 10,
            max_bytes: 15,
        });
        assert_eq!(loaded(by_bytes), [8, 9]);
        let one_at_least = store.execute(StoreRequest::Load {
            from: 0,
            max_count: 10,
            max_bytes: 1,
        });
        assert_eq!(loaded(one_at_least), [0]);
    }
}
