//! The outbox kept in a directory of files, as a sans-IO state machine: the on-disk format, what
//! opening recovers, and which file operations each [`StoreRequest`] takes. This module does no
//! I/O: a host that keeps the outbox in files (the WASI component, the Node.js package) reads
//! the files it is asked to, performs the [`FileOp`]s it is given in order and hands back what
//! happened; no format or recovery rule lives in a host, so the two cannot drift apart.
//!
//! Hand-written because no crate offers this contract: a crash-safe log keyed by the core's
//! sequence numbers, with out-of-order removal, that does no I/O itself. Layout of the
//! directory:
//!
//! - `seg-<first seq, 20 digits>.log`: segments of framed records
//!   (`len u32 LE | crc32 u32 LE | seq u64 LE | data`, the CRC covering `len`, `seq` and `data`).
//!   An append is written in one piece and synced before it is reported durable.
//! - `acks.log`: framed removal records, a cursor (every seq below it is gone) or a list of
//!   removed seqs. Removals are not synced: the contract allows losing one (the message is sent
//!   again and the Platform drops the replay).
//! - `origin`, `state`: the origin id (written with a reservation that carries one: the core
//!   makes it) and the saved state blob, each replaced atomically.
//! - `reserved`: the core's reservation ([`StoreRequest::Reserve`]), replaced atomically
//!   before it is answered. The core numbers new messages from it at every start, so a store
//!   that lost records (a cut tail, a lost segment or `acks.log`) never hands out a number the
//!   Platform may hold.
//!
//! On open every segment is checked. The first frame that is short, oversized or fails its
//! checksum ends the valid part of that file: the rest is cut (never the records before it) and
//! reported as a [`StoreRecovery`]. A missing or unreadable `origin` or `reserved` file is
//! handed to the core as such (an empty origin, no reservation); the core decides that the store
//! cannot tell which numbers the Platform holds, starts a new origin and tells the app. A
//! segment is deleted once all its records are removed, after a compacted `acks.log` recording
//! a cursor past them is in place, so the high-water mark survives even when every segment is
//! gone.
//!
//! What is synced before its answer is what [`StoreRequest::must_be_durable`] names (appends,
//! reservations, state saves); removals are not. Memory: about 40 bytes per stored record for
//! the index; record data stays on disk.

use crate::prelude::*;

use alloc::collections::BTreeMap;

use crate::device::Input;
use crate::store::{OutboxMeta, Record, Seq, StoreError, StoreRecovery, StoreRequest};
use crate::text::Zeros;

/// The file holding the origin id.
pub const ORIGIN_FILE: &str = "origin";
/// The file holding the reservation (decimal text).
pub const RESERVED_FILE: &str = "reserved";
/// The file holding the saved state blob.
pub const STATE_FILE: &str = "state";
/// The removal log.
pub const ACKS_FILE: &str = "acks.log";

/// Header bytes of a frame: length and checksum.
const FRAME_HEADER: u64 = 8;
/// Bytes before a record's data in its frame: the header and the sequence number.
const RECORD_HEADER: u64 = FRAME_HEADER + 8;
/// Largest frame payload accepted on open; anything larger is a corrupt length.
const MAX_FRAME: usize = 64 * 1024 * 1024;
// Every record the core appends (and its sequence number) reads back.
const _: () = assert!(crate::message::MAX_RECORD_BYTES + 8 <= MAX_FRAME);
/// A new segment is started once the active one is this large.
const DEFAULT_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// `acks.log` is compacted when it grows past this.
const ACKS_COMPACT_BYTES: u64 = 256 * 1024;

const ACK_CURSOR: u8 = 0;
const ACK_REMOVED: u8 = 1;

/// One file operation for the host, on a file of the store's directory (named without a path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// Create `file` empty (replacing one of that name) and make its directory entry durable.
    Create {
        /// The file.
        file: String,
    },
    /// Write `bytes` at `offset` of `file` (which exists); with `sync`, make them durable
    /// (`fdatasync`) before the operation counts as done.
    Write {
        /// The file.
        file: String,
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
        /// Whether they must be durable.
        sync: bool,
    },
    /// Cut `file` to `len` bytes and make that durable.
    Truncate {
        /// The file.
        file: String,
        /// Its new length.
        len: u64,
    },
    /// Replace `file` with `bytes` atomically and durably: write a temporary file, sync it,
    /// rename it over `file`, sync the directory.
    Replace {
        /// The file.
        file: String,
        /// Its new content.
        bytes: Vec<u8>,
    },
    /// Delete `file` and make that durable in the directory.
    Delete {
        /// The file.
        file: String,
    },
    /// Read `len` bytes at `offset` of `file`; the bytes are this operation's result.
    Read {
        /// The file.
        file: String,
        /// Where to start.
        offset: u64,
        /// How many bytes (all of them are there: the index says so).
        len: u64,
    },
}

/// What the host did with a job's operations: every one done (with the bytes of each
/// [`FileOp::Read`], in order), or the operation at this index failed (the ones before it were
/// done, none after it was tried).
pub type FileOpsOutcome = Result<Vec<Vec<u8>>, (usize, StoreError)>;

/// The operations one [`StoreRequest`] takes. Perform [`FileJob::ops`] in order, stopping at
/// the first that fails; when one failed, perform [`FileJob::on_failure`] too (best effort,
/// its own failures ignored); then hand the outcome to [`FileOutbox::finish`].
#[derive(Debug)]
#[must_use]
pub struct FileJob {
    /// What to do, in order.
    pub ops: Vec<FileOp>,
    /// What to undo when one of `ops` failed: a failed append's bytes are cut at once, so that
    /// records the app was told were not stored never come back at the next start.
    pub on_failure: Vec<FileOp>,
    pending: Pending,
}

#[derive(Debug)]
enum Pending {
    /// Answered without touching a file.
    Answer(Option<Input<'static>>),
    Append {
        first: Seq,
        last: Seq,
        segment: Seq,
        /// Index of the `Create` of a new segment, if the append starts one.
        create: Option<usize>,
        entries: Vec<Entry>,
        written: u64,
    },
    Load {
        /// Per read: the entries it covers.
        reads: Vec<Vec<Entry>>,
    },
    Remove {
        seqs: Vec<Seq>,
        bytes: u64,
        removed: Vec<usize>,
        /// Whether op 0 appends the removal to `acks.log` (else the rewrite records it).
        appended: bool,
        ack_bytes: u64,
        compaction: Option<Compaction>,
    },
    SaveState {
        state: Vec<u8>,
        reported_revision: u64,
    },
    Reserve {
        below: Seq,
        reserved: Seq,
        origin: Option<String>,
    },
}

/// A rewrite of `acks.log` (the op after the removal's own), then the deletes of segments
/// whose records are all removed.
#[derive(Debug)]
struct Compaction {
    acks_len: u64,
    dropped: Vec<Seq>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: Seq,
    segment: Seq,
    /// Offset of the record's data (past the frame header and seq).
    offset: u64,
    len: u32,
    live: bool,
}

#[derive(Debug)]
struct Segment {
    len: u64,
    live: u64,
    /// An append to it failed: what lies past `len` may be a torn write, cut before the next.
    torn: bool,
}

/// The name of the segment whose first record is `first`.
fn segment_name(first: Seq) -> String {
    text!("seg-", Zeros(first, 20), ".log")
}

/// The first sequence number of the segment named `name`, if it is one.
fn segment_first(name: &str) -> Option<Seq> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    // Exactly the form `segment_name` writes: another spelling of the same number would be a
    // second file claiming the same segment.
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("records are far below 4 GiB (outbox limits)");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(payload);
    let mut out = Vec::with_capacity(FRAME_HEADER as usize + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Where the first unreadable frame starts, and why it is unreadable.
type BadFrame = (u64, String);

/// Splits `bytes` into frame payloads (with the offsets of the payloads); stops at the first
/// bad frame and says why.
fn read_frames(bytes: &[u8]) -> (Vec<(u64, &[u8])>, Option<BadFrame>) {
    let header = FRAME_HEADER as usize;
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < header {
            return (frames, Some((at as u64, "torn frame header".into())));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            return (
                frames,
                Some((at as u64, text!("frame length ", len, " is corrupt"))),
            );
        }
        if rest.len() < header + len {
            let reason = text!(
                "torn record: ",
                rest.len() - header,
                " of ",
                len,
                " bytes present"
            );
            return (frames, Some((at as u64, reason)));
        }
        let payload = &rest[header..header + len];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&rest[0..4]);
        hasher.update(payload);
        if hasher.finalize() != crc {
            return (frames, Some((at as u64, "checksum mismatch".into())));
        }
        frames.push(((at + header) as u64, payload));
        at += header + len;
    }
    (frames, None)
}

fn seqs_payload(kind: u8, seqs: impl IntoIterator<Item = Seq>) -> Vec<u8> {
    let mut payload = vec![kind];
    for seq in seqs {
        payload.extend_from_slice(&seq.to_le_bytes());
    }
    payload
}

/// Opens a [`FileOutbox`] from what its directory holds: hand it each file
/// [`FileOutboxOpener::files_to_read`] names, in that order, then [`FileOutboxOpener::finish`].
#[derive(Debug, Default)]
pub struct FileOutboxOpener {
    origin: Option<String>,
    reserved: Option<Seq>,
    state: Option<Vec<u8>>,
    acks: Vec<u8>,
    entries: Vec<Entry>,
    segments: BTreeMap<Seq, Segment>,
    next_seq: Seq,
    ops: Vec<FileOp>,
    recoveries: Vec<StoreRecovery>,
}

impl FileOutboxOpener {
    /// Starts opening.
    pub fn new() -> Self {
        Self::default()
    }

    /// The files of a directory listing (`names`) to read, in the order to hand them over:
    /// segments ascending, then the others. Names that are not the store's are left alone.
    pub fn files_to_read(names: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut segments: Vec<(Seq, String)> = Vec::new();
        let mut others = Vec::new();
        for name in names {
            if let Some(first) = segment_first(&name) {
                segments.push((first, name));
            } else if [ORIGIN_FILE, RESERVED_FILE, STATE_FILE, ACKS_FILE].contains(&name.as_str()) {
                others.push(name);
            }
        }
        segments.sort();
        others.sort();
        segments
            .into_iter()
            .map(|(_, name)| name)
            .chain(others)
            .collect()
    }

    /// The content of `file` (one of [`FileOutboxOpener::files_to_read`]).
    pub fn read(&mut self, file: &str, bytes: &[u8]) {
        match file {
            // Whether the text is an origin the core can use is the core's to decide.
            ORIGIN_FILE => {
                self.origin = Some(String::from_utf8_lossy(bytes).trim().to_owned())
                    .filter(|origin| !origin.is_empty());
            }
            RESERVED_FILE => {
                self.reserved = core::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.trim().parse().ok());
            }
            STATE_FILE => self.state = Some(bytes.to_vec()),
            ACKS_FILE => self.acks = bytes.to_vec(),
            name => {
                if let Some(first) = segment_first(name) {
                    self.read_segment(first, name, bytes);
                }
            }
        }
    }

    fn read_segment(&mut self, first: Seq, name: &str, bytes: &[u8]) {
        let (frames, bad) = read_frames(bytes);
        let mut valid = bytes.len() as u64;
        let mut reason = bad.map(|(at, reason)| {
            valid = at;
            reason
        });
        let mut live = 0;
        for (index, (offset, payload)) in frames.iter().enumerate() {
            let seq = match payload.get(..8) {
                Some(seq) => Seq::from_le_bytes(seq.try_into().expect("8 bytes")),
                None => Seq::MAX,
            };
            let in_order = self.entries.last().is_none_or(|last| last.seq < seq);
            if seq == Seq::MAX || !in_order {
                valid = offset - FRAME_HEADER;
                reason = Some(text!("record ", index, " has an invalid sequence number"));
                break;
            }
            self.entries.push(Entry {
                seq,
                segment: first,
                offset: offset + 8,
                len: (payload.len() - 8) as u32,
                live: true,
            });
            self.next_seq = self.next_seq.max(seq.saturating_add(1));
            live += 1;
        }
        if let Some(reason) = reason {
            self.entries
                .retain(|e| e.segment != first || e.offset < valid);
            live = self.entries.iter().filter(|e| e.segment == first).count() as u64;
            self.ops.push(FileOp::Truncate {
                file: name.to_owned(),
                len: valid,
            });
            self.recoveries.push(StoreRecovery {
                file: name.to_owned(),
                valid_bytes: valid,
                cut_bytes: bytes.len() as u64 - valid,
                reason,
            });
        }
        self.segments.insert(
            first,
            Segment {
                len: valid,
                live,
                torn: false,
            },
        );
    }

    /// The opened store, the operations that finish the recovery (cut tails, segments whose
    /// records are all removed) for the host to perform before any request, and what was cut.
    pub fn finish(mut self) -> (FileOutbox, Vec<FileOp>, Vec<StoreRecovery>) {
        let acks = core::mem::take(&mut self.acks);
        let (frames, bad) = read_frames(&acks);
        let mut valid = acks.len() as u64;
        for (offset, payload) in &frames {
            let seqs: Vec<Seq> = payload
                .get(1..)
                .unwrap_or_default()
                .chunks_exact(8)
                .map(|c| Seq::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            match (payload.first(), seqs.as_slice()) {
                (Some(&ACK_CURSOR), [cursor]) => {
                    self.next_seq = self.next_seq.max(*cursor);
                    for entry in self.entries.iter_mut().take_while(|e| e.seq < *cursor) {
                        entry.live = false;
                    }
                }
                (Some(&ACK_REMOVED), seqs) => {
                    for seq in seqs {
                        // A removed record may have been cut by a recovery: its number was
                        // still used and must not be given again.
                        self.next_seq = self.next_seq.max(seq.saturating_add(1));
                        if let Ok(index) = self.entries.binary_search_by_key(seq, |e| e.seq) {
                            self.entries[index].live = false;
                        }
                    }
                }
                _ => {
                    valid = offset - FRAME_HEADER;
                    break;
                }
            }
        }
        if let Some((at, reason)) = bad {
            valid = valid.min(at);
            self.recoveries.push(StoreRecovery {
                file: ACKS_FILE.into(),
                valid_bytes: valid,
                cut_bytes: acks.len() as u64 - valid,
                reason,
            });
        }
        if valid < acks.len() as u64 {
            self.ops.push(FileOp::Truncate {
                file: ACKS_FILE.into(),
                len: valid,
            });
        } else if acks.is_empty() {
            // The removal log is written at offsets: it must exist.
            self.ops.push(FileOp::Create {
                file: ACKS_FILE.into(),
            });
        }
        for segment in self.segments.values_mut() {
            segment.live = 0;
        }
        for entry in self.entries.iter().filter(|e| e.live) {
            if let Some(segment) = self.segments.get_mut(&entry.segment) {
                segment.live += 1;
            }
        }
        let live = self.entries.iter().filter(|e| e.live);
        let (count, bytes) = live.fold((0, 0), |(n, b), e| (n + 1, b + u64::from(e.len)));
        let mut outbox = FileOutbox {
            origin: self.origin.unwrap_or_default(),
            reserved: self.reserved,
            state: self.state,
            entries: self.entries,
            segments: self.segments,
            active: None,
            acks_len: valid,
            acks_in_doubt: false,
            next_seq: self.next_seq,
            count,
            bytes,
            segment_limit: DEFAULT_SEGMENT_BYTES,
        };
        let mut ops = self.ops;
        if let Some(compaction) = outbox.plan_compaction(&mut ops, false) {
            outbox.apply_compaction(&compaction, compaction.dropped.len());
        }
        (outbox, ops, self.recoveries)
    }
}

/// An outbox directory, opened (see [`FileOutboxOpener`]).
#[derive(Debug)]
pub struct FileOutbox {
    origin: String,
    /// No record at or above this was ever written (the `reserved` file); `None` when the file
    /// is missing or unreadable (the core decides what that means for the origin).
    reserved: Option<Seq>,
    state: Option<Vec<u8>>,
    /// Every record still in a segment, ascending by seq (removed ones until their segment goes).
    entries: Vec<Entry>,
    segments: BTreeMap<Seq, Segment>,
    /// The segment appends go to; a new one is started at the first append after opening.
    active: Option<Seq>,
    acks_len: u64,
    /// A rewrite of `acks.log` failed: whether it is the old or the new file is unknown, so
    /// the next removal rewrites it whole instead of appending at an offset.
    acks_in_doubt: bool,
    next_seq: Seq,
    count: u64,
    bytes: u64,
    segment_limit: u64,
}

impl FileOutbox {
    /// Segments roll over at `bytes` instead of 4 MiB (tests use small segments).
    pub fn with_segment_limit(mut self, bytes: u64) -> Self {
        self.segment_limit = bytes.max(1);
        self
    }

    /// What [`crate::Device::new`] needs to know about the stored records.
    pub fn meta(&self) -> OutboxMeta {
        OutboxMeta {
            origin: self.origin.clone(),
            next_seq: self.next_seq,
            reserved: self.reserved,
            count: self.count,
            bytes: self.bytes,
        }
    }

    /// The saved device state, if any.
    pub fn state(&self) -> Option<&[u8]> {
        self.state.as_deref()
    }

    /// The sequence numbers stored and not removed, ascending.
    pub fn live_seqs(&self) -> Vec<Seq> {
        self.entries
            .iter()
            .filter(|e| e.live)
            .map(|e| e.seq)
            .collect()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The file operations `request` takes.
    pub fn plan(&mut self, request: StoreRequest) -> FileJob {
        match request {
            StoreRequest::Append { records } => self.plan_append(records),
            StoreRequest::Load {
                from,
                max_count,
                max_bytes,
            } => self.plan_load(from, max_count, max_bytes),
            StoreRequest::Remove { seqs, bytes } => self.plan_remove(seqs, bytes),
            StoreRequest::SaveState {
                state,
                reported_revision,
            } => FileJob {
                ops: vec![FileOp::Replace {
                    file: STATE_FILE.into(),
                    bytes: state.clone(),
                }],
                on_failure: Vec::new(),
                pending: Pending::SaveState {
                    state,
                    reported_revision,
                },
            },
            StoreRequest::Reserve { below, origin } => {
                let reserved = self.reserved.unwrap_or(0).max(below);
                // The origin first: a crash between the two leaves the new origin with an
                // older reservation, which numbers under it can never collide with.
                let mut ops: Vec<FileOp> = origin
                    .iter()
                    .map(|origin| FileOp::Replace {
                        file: ORIGIN_FILE.into(),
                        bytes: origin.as_bytes().to_vec(),
                    })
                    .collect();
                ops.push(FileOp::Replace {
                    file: RESERVED_FILE.into(),
                    bytes: text!(reserved).into_bytes(),
                });
                FileJob {
                    ops,
                    on_failure: Vec::new(),
                    pending: Pending::Reserve {
                        below,
                        reserved,
                        origin,
                    },
                }
            }
        }
    }

    /// Takes what the host did with `job` and gives the answer the core expects, if any: a
    /// failed append, load, removal, reservation or state save is such an answer (the core
    /// decides what follows).
    pub fn finish(&mut self, job: FileJob, outcome: FileOpsOutcome) -> Option<Input<'static>> {
        let failed = outcome.as_ref().err().map(|(index, _)| *index);
        let done = |index: usize| failed.is_none_or(|failed| index < failed);
        match job.pending {
            Pending::Answer(answer) => answer,
            Pending::Append {
                first,
                last,
                segment,
                create,
                entries,
                written,
            } => {
                if let Some(create) = create
                    && done(create)
                {
                    self.segments.insert(
                        segment,
                        Segment {
                            len: 0,
                            live: 0,
                            torn: false,
                        },
                    );
                    self.active = Some(segment);
                }
                let Some(segment) = self.segments.get_mut(&segment) else {
                    let (_, error) = outcome.err()?;
                    return Some(Input::AppendFailed { first, last, error });
                };
                if let Err((_, error)) = outcome {
                    // All or none: what may have reached the file is cut before the next write.
                    segment.torn = true;
                    return Some(Input::AppendFailed { first, last, error });
                }
                segment.torn = false;
                segment.len += written;
                segment.live += entries.len() as u64;
                self.count += entries.len() as u64;
                self.bytes += entries.iter().map(|e| u64::from(e.len)).sum::<u64>();
                self.next_seq = self.next_seq.max(last + 1);
                self.entries.extend(entries);
                Some(Input::Appended { first, last })
            }
            Pending::Load { reads } => match outcome {
                Ok(bytes) => {
                    let mut records = Vec::new();
                    for (entries, read) in reads.iter().zip(&bytes) {
                        let start = entries.first().map_or(0, |e| e.offset);
                        for entry in entries {
                            let at = (entry.offset - start) as usize;
                            let data = read.get(at..at + entry.len as usize);
                            records.push(Record {
                                seq: entry.seq,
                                // A short read hands the record over empty: the core rejects it
                                // as corrupt with a reason instead of stalling the queue.
                                data: data.map(<[u8]>::to_vec).unwrap_or_default(),
                            });
                        }
                    }
                    Some(Input::Loaded { records })
                }
                Err((_, error)) => Some(Input::LoadFailed { error }),
            },
            Pending::Remove {
                seqs,
                bytes,
                removed,
                appended,
                ack_bytes,
                compaction,
            } => {
                // The removal is recorded by the appended frame (op 0) or, when `acks.log` was
                // in doubt, by its rewrite (op 0 too).
                let rewrite = usize::from(appended);
                if compaction.is_some() && !done(rewrite) {
                    // Renamed into place or not: the next removal rewrites it whole.
                    self.acks_in_doubt = true;
                }
                if !done(0) {
                    // The removal was not recorded: its records stay live, so the core's retry
                    // finds them again.
                    let (_, error) = outcome.err()?;
                    return Some(Input::RemoveFailed { seqs, bytes, error });
                }
                self.acks_len += ack_bytes;
                for index in removed {
                    let entry = &mut self.entries[index];
                    entry.live = false;
                    self.count -= 1;
                    self.bytes -= u64::from(entry.len);
                    if let Some(segment) = self.segments.get_mut(&entry.segment) {
                        segment.live -= 1;
                    }
                }
                if let Some(compaction) = compaction
                    && done(rewrite)
                {
                    let deleted = (0..compaction.dropped.len())
                        .take_while(|i| done(rewrite + 1 + i))
                        .count();
                    self.apply_compaction(&compaction, deleted);
                    self.acks_in_doubt = false;
                }
                let (_, error) = outcome.err()?;
                Some(Input::RemoveFailed { seqs, bytes, error })
            }
            Pending::SaveState {
                state,
                reported_revision,
            } => match outcome {
                Ok(_) => {
                    self.state = Some(state);
                    Some(Input::StateSaved { reported_revision })
                }
                Err((_, error)) => Some(Input::SaveStateFailed { error }),
            },
            Pending::Reserve {
                below,
                reserved,
                origin,
            } => match outcome {
                Ok(_) => {
                    if let Some(origin) = origin {
                        self.origin = origin;
                    }
                    self.reserved = Some(reserved);
                    Some(Input::Reserved { below })
                }
                Err((_, error)) => Some(Input::ReserveFailed { below, error }),
            },
        }
    }

    fn plan_append(&mut self, records: Vec<Record>) -> FileJob {
        let answer = |answer| FileJob {
            ops: Vec::new(),
            on_failure: Vec::new(),
            pending: Pending::Answer(answer),
        };
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return answer(None);
        };
        let (first, last) = (first.seq, last.seq);
        let in_order = records.windows(2).all(|pair| pair[0].seq < pair[1].seq);
        if !in_order
            || self
                .entries
                .last()
                .is_some_and(|newest| first <= newest.seq)
        {
            return answer(Some(Input::AppendFailed {
                first,
                last,
                error: StoreError::Failed("sequence numbers must grow".into()),
            }));
        }
        let mut ops = Vec::new();
        let current = self
            .active
            .and_then(|active| Some((active, self.segments.get(&active)?)))
            .filter(|(_, segment)| segment.len < self.segment_limit);
        let (segment, len, create) = match current {
            Some((active, segment)) => {
                if segment.torn {
                    ops.push(FileOp::Truncate {
                        file: segment_name(active),
                        len: segment.len,
                    });
                }
                (active, segment.len, None)
            }
            None => {
                ops.push(FileOp::Create {
                    file: segment_name(first),
                });
                (first, 0, Some(ops.len() - 1))
            }
        };
        let mut buffer = Vec::new();
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            let mut payload = Vec::with_capacity(8 + record.data.len());
            payload.extend_from_slice(&record.seq.to_le_bytes());
            payload.extend_from_slice(&record.data);
            entries.push(Entry {
                seq: record.seq,
                segment,
                offset: len + buffer.len() as u64 + RECORD_HEADER,
                len: record.data.len() as u32,
                live: true,
            });
            buffer.extend_from_slice(&frame(&payload));
        }
        let written = buffer.len() as u64;
        ops.push(FileOp::Write {
            file: segment_name(segment),
            offset: len,
            bytes: buffer,
            sync: true,
        });
        let on_failure = vec![FileOp::Truncate {
            file: segment_name(segment),
            len,
        }];
        FileJob {
            ops,
            on_failure,
            pending: Pending::Append {
                first,
                last,
                segment,
                create,
                entries,
                written,
            },
        }
    }

    fn plan_load(&self, from: Seq, max_count: usize, max_bytes: usize) -> FileJob {
        let start = self.entries.partition_point(|e| e.seq < from);
        let mut reads: Vec<Vec<Entry>> = Vec::new();
        let (mut count, mut total) = (0usize, 0usize);
        for entry in self.entries[start..].iter().filter(|e| e.live) {
            if count >= max_count || total >= max_bytes {
                break;
            }
            if !self.segments.contains_key(&entry.segment) {
                continue;
            }
            count += 1;
            total += entry.len as usize;
            // One read per run of records in one segment.
            match reads.last_mut() {
                Some(run) if run.last().is_some_and(|e| e.segment == entry.segment) => {
                    run.push(*entry)
                }
                _ => reads.push(vec![*entry]),
            }
        }
        let ops = reads
            .iter()
            .map(|run| {
                let (first, last) = (run[0], run[run.len() - 1]);
                FileOp::Read {
                    file: segment_name(first.segment),
                    offset: first.offset,
                    len: last.offset + u64::from(last.len) - first.offset,
                }
            })
            .collect();
        FileJob {
            ops,
            on_failure: Vec::new(),
            pending: Pending::Load { reads },
        }
    }

    fn plan_remove(&mut self, seqs: Vec<Seq>, bytes: u64) -> FileJob {
        let mut removed: Vec<usize> = seqs
            .iter()
            .filter_map(|seq| self.entries.binary_search_by_key(seq, |e| e.seq).ok())
            .filter(|&index| self.entries[index].live)
            .collect();
        // A number named twice is removed once.
        removed.sort_unstable();
        removed.dedup();
        if removed.is_empty() {
            return FileJob {
                ops: Vec::new(),
                on_failure: Vec::new(),
                pending: Pending::Answer(None),
            };
        }
        // Appended to `acks.log`, unless what that file holds is in doubt (a rewrite of it
        // failed after it may have been renamed into place): then it is rewritten whole.
        let mut ops = Vec::new();
        let mut ack_bytes = 0;
        if !self.acks_in_doubt {
            let ack = frame(&seqs_payload(
                ACK_REMOVED,
                removed.iter().map(|&index| self.entries[index].seq),
            ));
            ack_bytes = ack.len() as u64;
            ops.push(FileOp::Write {
                file: ACKS_FILE.into(),
                offset: self.acks_len,
                bytes: ack,
                sync: false,
            });
        }
        // The compaction is planned on the state after the removal, then that state is put
        // back: it changes only when the host says the removal was recorded.
        let marked: Vec<(usize, Seq)> = removed
            .iter()
            .map(|&index| (index, self.entries[index].segment))
            .collect();
        for &(index, segment) in &marked {
            self.entries[index].live = false;
            if let Some(segment) = self.segments.get_mut(&segment) {
                segment.live -= 1;
            }
        }
        let acks_len = self.acks_len;
        self.acks_len += ack_bytes;
        let compaction = self.plan_compaction(&mut ops, self.acks_in_doubt);
        self.acks_len = acks_len;
        for &(index, segment) in &marked {
            self.entries[index].live = true;
            if let Some(segment) = self.segments.get_mut(&segment) {
                segment.live += 1;
            }
        }
        FileJob {
            ops,
            on_failure: Vec::new(),
            pending: Pending::Remove {
                seqs,
                bytes,
                removed,
                appended: ack_bytes > 0,
                ack_bytes,
                compaction,
            },
        }
    }

    /// When the oldest segments hold no live record (or `acks.log` grew large, or `force`): a
    /// rewrite of `acks.log` as a cursor past them and the deletes of those segments, appended
    /// to `ops`.
    fn plan_compaction(&self, ops: &mut Vec<FileOp>, force: bool) -> Option<Compaction> {
        // The segment being appended to stays until it is full: a device that keeps up would
        // otherwise delete it, rewrite `acks.log` and create a new segment (five syncs instead
        // of one) for every message.
        let dropped: Vec<Seq> = self
            .segments
            .iter()
            .take_while(|(first, segment)| {
                segment.live == 0
                    && (Some(**first) != self.active || segment.len >= self.segment_limit)
            })
            .map(|(first, _)| *first)
            .collect();
        if dropped.is_empty() && self.acks_len < ACKS_COMPACT_BYTES && !force {
            return None;
        }
        // A cursor below the oldest live record, and the removed records above it that are
        // still in segments.
        let cursor = self
            .entries
            .iter()
            .find(|e| e.live)
            .map_or(self.next_seq, |e| e.seq);
        let mut bytes = frame(&seqs_payload(ACK_CURSOR, [cursor]));
        let removed: Vec<Seq> = self
            .entries
            .iter()
            .filter(|e| !e.live && e.seq > cursor)
            .map(|e| e.seq)
            .collect();
        if !removed.is_empty() {
            bytes.extend_from_slice(&frame(&seqs_payload(ACK_REMOVED, removed)));
        }
        let acks_len = bytes.len() as u64;
        ops.push(FileOp::Replace {
            file: ACKS_FILE.into(),
            bytes,
        });
        ops.extend(dropped.iter().map(|&first| FileOp::Delete {
            file: segment_name(first),
        }));
        Some(Compaction { acks_len, dropped })
    }

    /// `acks.log` was rewritten and the first `deleted` segments of `compaction` are gone.
    fn apply_compaction(&mut self, compaction: &Compaction, deleted: usize) {
        self.acks_len = compaction.acks_len;
        for first in &compaction.dropped[..deleted] {
            if self.active == Some(*first) {
                self.active = None;
            }
            self.segments.remove(first);
            self.entries.retain(|e| e.segment != *first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl FileOutboxOpener {
        /// Opened empty, with 64-byte segments.
        fn with_limit_for_tests(self) -> (FileOutbox, Vec<FileOp>, Vec<StoreRecovery>) {
            let (outbox, ops, recoveries) = self.finish();
            (outbox.with_segment_limit(64), ops, recoveries)
        }
    }

    #[test]
    fn frames_read_back_and_the_first_bad_one_ends_them() {
        let mut bytes = frame(b"one");
        bytes.extend_from_slice(&frame(b"two"));
        let (frames, bad) = read_frames(&bytes);
        assert_eq!(
            frames.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            [&b"one"[..], b"two"]
        );
        assert_eq!(bad, None);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let (frames, bad) = read_frames(&bytes);
        assert_eq!(frames.len(), 1);
        assert_eq!(bad, Some((11, "checksum mismatch".into())));
    }

    #[test]
    fn only_the_stores_files_are_read_segments_first_in_order() {
        let names = [
            "state",
            "seg-00000000000000000010.log",
            "notes.txt",
            "acks.log",
        ]
        .into_iter()
        .chain(["seg-00000000000000000002.log", "origin.tmp", "reserved"])
        .map(String::from);
        assert_eq!(
            FileOutboxOpener::files_to_read(names),
            [
                "seg-00000000000000000002.log",
                "seg-00000000000000000010.log",
                "acks.log",
                "reserved",
                "state"
            ]
        );
    }

    #[test]
    fn a_failed_append_is_cut_before_the_next_write_to_its_segment() {
        let (mut outbox, ops, _) = FileOutboxOpener::new().finish();
        assert_eq!(
            ops,
            [FileOp::Create {
                file: ACKS_FILE.into()
            }]
        );
        let record = |seq| Record {
            seq,
            data: vec![7; 10],
        };
        let job = outbox.plan(StoreRequest::Append {
            records: vec![record(0)],
        });
        assert!(matches!(
            job.ops[..],
            [FileOp::Create { .. }, FileOp::Write { offset: 0, .. }]
        ));
        let error = StoreError::Failed("disk gone".into());
        let answer = outbox.finish(job, Err((1, error.clone())));
        assert_eq!(
            answer,
            Some(Input::AppendFailed {
                first: 0,
                last: 0,
                error
            })
        );
        let job = outbox.plan(StoreRequest::Append {
            records: vec![record(1)],
        });
        let name = segment_name(0);
        assert_eq!(job.ops[0], FileOp::Truncate { file: name, len: 0 });
        assert!(matches!(job.ops[1], FileOp::Write { offset: 0, .. }));
        let answer = outbox.finish(job, Ok(Vec::new()));
        assert_eq!(answer, Some(Input::Appended { first: 1, last: 1 }));
        assert_eq!(outbox.live_seqs(), [1]);
    }

    #[test]
    fn a_failed_append_is_cut_at_once_and_only_canonical_segment_names_are_read() {
        let (mut outbox, _, _) = FileOutboxOpener::new().finish();
        let job = outbox.plan(StoreRequest::Append {
            records: vec![Record {
                seq: 0,
                data: vec![1; 8],
            }],
        });
        assert_eq!(
            job.on_failure,
            [FileOp::Truncate {
                file: segment_name(0),
                len: 0
            }],
            "what a failed write left is cut before anyone reads it"
        );
        let names = [
            "seg-5.log",
            "seg-+0000000000000000005.log",
            "seg-00000000000000000005.log",
        ];
        assert_eq!(
            FileOutboxOpener::files_to_read(names.map(String::from)),
            ["seg-00000000000000000005.log"]
        );
    }

    #[test]
    fn after_a_failed_rewrite_of_the_acks_the_next_removal_rewrites_them_whole() {
        let (mut outbox, _, _) = FileOutboxOpener::new().with_limit_for_tests();
        let records = (0..4)
            .map(|seq| Record {
                seq,
                data: vec![1; 40],
            })
            .collect();
        let job = outbox.plan(StoreRequest::Append { records });
        let _ = outbox.finish(job, Ok(Vec::new()));
        // Segment 0 is full (limit 64 bytes) and its records all go: a compaction is planned.
        let job = outbox.plan(StoreRequest::Remove {
            seqs: vec![0, 1, 2, 3, 3],
            bytes: 160,
        });
        assert!(matches!(
            job.ops[..],
            [FileOp::Write { .. }, FileOp::Replace { .. }, ..]
        ));
        let error = StoreError::Failed("rename acks.log".into());
        let answer = outbox.finish(job, Err((1, error)));
        assert!(matches!(answer, Some(Input::RemoveFailed { .. })));
        assert_eq!(
            outbox.meta().count,
            0,
            "recorded by the appended frame, each once"
        );
        let job = outbox.plan(StoreRequest::Append {
            records: vec![Record {
                seq: 4,
                data: vec![1; 8],
            }],
        });
        let _ = outbox.finish(job, Ok(Vec::new()));
        let job = outbox.plan(StoreRequest::Remove {
            seqs: vec![4],
            bytes: 8,
        });
        assert!(
            matches!(job.ops.first(), Some(FileOp::Replace { file, .. }) if file == ACKS_FILE),
            "no append at an offset into a file in doubt: {:?}",
            job.ops
        );
        assert_eq!(outbox.finish(job, Ok(Vec::new())), None);
        assert_eq!(outbox.meta().count, 0);
    }

    #[test]
    fn a_removal_the_host_could_not_record_leaves_its_records_live() {
        let (mut outbox, _, _) = FileOutboxOpener::new().finish();
        let records = (0..3)
            .map(|seq| Record {
                seq,
                data: vec![1; 4],
            })
            .collect();
        let job = outbox.plan(StoreRequest::Append { records });
        let _ = outbox.finish(job, Ok(Vec::new()));
        let job = outbox.plan(StoreRequest::Remove {
            seqs: vec![0, 1],
            bytes: 8,
        });
        let error = StoreError::Failed("write acks.log".into());
        let answer = outbox.finish(job, Err((0, error.clone())));
        assert_eq!(
            answer,
            Some(Input::RemoveFailed {
                seqs: vec![0, 1],
                bytes: 8,
                error
            })
        );
        assert_eq!(outbox.live_seqs(), [0, 1, 2]);
        assert_eq!(outbox.meta().count, 3);
    }
}
