//! The outbox and saved state in files: the core's storage contract (`vdev_core::StoreRequest`)
//! on plain `std::fs`, so it runs in a WASI preopened directory and natively in unit tests.
//!
//! Hand-written because no crate offers this contract: a crash-safe log keyed by the core's
//! sequence numbers with out-of-order removal. Layout of the store directory:
//!
//! - `seg-<first seq, 20 digits>.log`: append-only segments of framed records
//!   (`len u32 LE | crc32 u32 LE | seq u64 LE | data`, the CRC covering `len`, `seq` and `data`).
//!   An append is written in one piece and `sync`ed before it is reported durable.
//! - `acks.log`: framed removal records — a cursor (every seq below it is gone) or a list of
//!   removed seqs. Removals are not synced: the contract allows losing one (the message is sent
//!   again and the Platform drops the replay).
//! - `origin`, `state`: the origin id (written with a reservation that carries one: the core
//!   makes it) and the saved state blob, each replaced atomically (temp file, sync, rename).
//! - `reserved`: the core's reservation (`StoreRequest::Reserve`), replaced atomically and
//!   synced before it is answered. The core numbers new messages from it at every start, so a
//!   store that lost records (a cut tail, a lost segment or `acks.log`) never hands out a number
//!   the Platform may hold.
//!
//! On open every segment is checked. The first frame that is short, oversized or fails its
//! checksum ends the valid part of that file: the rest is cut (never the records before it) and
//! reported as a [`StoreRecovery`]. A missing or unreadable `origin` or `reserved` file is handed to
//! the core as such (an empty origin, no reservation); the core decides that the store cannot
//! tell which numbers the Platform holds, starts a new origin (messages still stored may then
//! arrive twice, never be dropped as replays) and tells the app. A segment is deleted once all its records
//! are removed, after a compacted `acks.log` recording a cursor past them is in place, so the
//! high-water mark survives even when every segment is gone.
//!
//! What is synced before its answer is what `StoreRequest::must_be_durable` names (appends,
//! reservations, state saves); removals are not. Directories are synced after a file is
//! created, renamed or deleted; a failed directory sync
//! fails the operation (a host without directory sync, reported as unsupported, is accepted).
//!
//! Memory: 24 bytes per stored record for the index; record data stays on disk.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use vdev_core::{Input, OutboxMeta, Record, Seq, StoreError, StoreRecovery, StoreRequest};

/// Header bytes of a frame: length and checksum.
const FRAME_HEADER: usize = 8;
/// Largest frame payload accepted on open; anything larger is a corrupt length.
const MAX_FRAME: usize = 64 * 1024 * 1024;
// Every record the core appends (and its sequence number) reads back.
const _: () = assert!(vdev_core::MAX_RECORD_BYTES + 8 <= MAX_FRAME);
/// A new segment is started once the active one is this large.
const DEFAULT_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// `acks.log` is compacted when it grows past this.
const ACKS_COMPACT_BYTES: u64 = 256 * 1024;

const RESERVED: &str = "reserved";
const ORIGIN: &str = "origin";

const ACK_CURSOR: u8 = 0;
const ACK_REMOVED: u8 = 1;

/// Why the store could not be opened or a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileStoreError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: String,
        /// The error.
        source: io::Error,
    },
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
    path: PathBuf,
    len: u64,
    live: u64,
}

/// A store directory opened for one device.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    origin: String,
    state: Option<Vec<u8>>,
    /// Every record still in a segment, ascending by seq (removed ones until their segment goes).
    entries: Vec<Entry>,
    segments: BTreeMap<Seq, Segment>,
    active: Option<(Seq, File)>,
    acks: Option<File>,
    acks_len: u64,
    next_seq: Seq,
    /// No record at or above this was ever written (the `reserved` file); `None` when the file
    /// is missing or unreadable (the core decides what that means for the origin).
    reserved: Option<Seq>,
    count: u64,
    bytes: u64,
    segment_limit: u64,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileStoreError {
    let path = path.display().to_string();
    move |source| FileStoreError::Io {
        action,
        path,
        source,
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("records are far below 4 GiB (outbox limits)");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(payload);
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Where the first unreadable frame starts, and why it is unreadable.
type BadFrame = (u64, String);

/// Splits `bytes` into frame payloads (with their offsets); stops at the first bad frame and
/// says why.
fn read_frames(bytes: &[u8]) -> (Vec<(u64, &[u8])>, Option<BadFrame>) {
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < FRAME_HEADER {
            return (frames, Some((at as u64, "torn frame header".into())));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            return (
                frames,
                Some((at as u64, format!("frame length {len} is corrupt"))),
            );
        }
        if rest.len() < FRAME_HEADER + len {
            let reason = format!(
                "torn record: {} of {len} bytes present",
                rest.len() - FRAME_HEADER
            );
            return (frames, Some((at as u64, reason)));
        }
        let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&rest[0..4]);
        hasher.update(payload);
        if hasher.finalize() != crc {
            return (frames, Some((at as u64, "checksum mismatch".into())));
        }
        frames.push(((at + FRAME_HEADER) as u64, payload));
        at += FRAME_HEADER + len;
    }
    (frames, None)
}

/// Best effort: makes a rename or a new file durable in its directory. Some WASI hosts cannot
/// open directories as files; the data itself was already synced.
/// Makes the directory's entries (a new, renamed or deleted file) durable. A host that cannot
/// sync directories says so with `Unsupported`; that one is accepted, every other error is not.
fn sync_dir(dir: &Path) -> io::Result<()> {
    let synced = File::open(dir).and_then(|handle| handle.sync_all());
    match synced {
        Err(error) if error.kind() == io::ErrorKind::Unsupported => Ok(()),
        other => other,
    }
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FileStoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(bytes).map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_error("rename", &path))?;
    sync_dir(dir).map_err(io_error("sync directory", dir))
}

fn segment_name(first: Seq) -> String {
    format!("seg-{first:020}.log")
}

fn store_error(error: &io::Error) -> StoreError {
    match error.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::QuotaExceeded,
        _ => StoreError::Failed(error.to_string()),
    }
}

/// [`store_error`] of a failed file operation: a full disk is a quota error for every
/// operation, as it is for appends.
fn file_store_error(error: &FileStoreError) -> StoreError {
    let FileStoreError::Io { source, .. } = error;
    match store_error(source) {
        StoreError::QuotaExceeded => StoreError::QuotaExceeded,
        _ => StoreError::Failed(error.to_string()),
    }
}

impl FileStore {
    /// Opens the store in `dir` (created when missing), checking every record. Returns what
    /// had to be cut, if anything.
    pub fn open(dir: &Path) -> Result<(Self, Vec<StoreRecovery>), FileStoreError> {
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let origin_path = dir.join(ORIGIN);
        // Whether the text is an origin the core can use is the core's to decide.
        let origin = match fs::read(&origin_path) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).trim().to_owned())
                .filter(|origin| !origin.is_empty()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error("read", &origin_path)(error)),
        };
        let state_path = dir.join("state");
        let state = match fs::read(&state_path) {
            Ok(state) => Some(state),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error("read", &state_path)(error)),
        };
        let reserved_path = dir.join(RESERVED);
        let reserved = match fs::read_to_string(&reserved_path) {
            Ok(text) => text.trim().parse::<Seq>().ok(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error("read", &reserved_path)(error)),
        };
        let mut recoveries = Vec::new();
        let mut store = Self {
            dir: dir.to_owned(),
            origin: origin.clone().unwrap_or_default(),
            state,
            entries: Vec::new(),
            segments: BTreeMap::new(),
            active: None,
            acks: None,
            acks_len: 0,
            next_seq: 0,
            reserved,
            count: 0,
            bytes: 0,
            segment_limit: DEFAULT_SEGMENT_BYTES,
        };
        store.load_segments(&mut recoveries)?;
        store.load_acks(&mut recoveries)?;
        store.count = store.entries.iter().filter(|e| e.live).count() as u64;
        store.bytes = store
            .entries
            .iter()
            .filter(|e| e.live)
            .map(|e| u64::from(e.len))
            .sum();
        store.drop_empty_segments()?;
        Ok((store, recoveries))
    }

    /// Segments roll over at `bytes` instead of 4 MiB (tests use small segments).
    pub fn with_segment_limit(mut self, bytes: u64) -> Self {
        self.segment_limit = bytes.max(1);
        self
    }

    fn load_segments(&mut self, recoveries: &mut Vec<StoreRecovery>) -> Result<(), FileStoreError> {
        let mut names: Vec<(Seq, String)> = fs::read_dir(&self.dir)
            .map_err(io_error("list", &self.dir))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| {
                let first = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((first, name))
            })
            .collect();
        names.sort();
        for (first, name) in names {
            let path = self.dir.join(&name);
            let bytes = fs::read(&path).map_err(io_error("read", &path))?;
            let (frames, bad) = read_frames(&bytes);
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
                    valid = offset - FRAME_HEADER as u64;
                    reason = Some(format!("record {index} has an invalid sequence number"));
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
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error("open", &path))?;
                file.set_len(valid).map_err(io_error("truncate", &path))?;
                file.sync_all().map_err(io_error("sync", &path))?;
                recoveries.push(StoreRecovery {
                    file: name,
                    valid_bytes: valid,
                    cut_bytes: bytes.len() as u64 - valid,
                    reason,
                });
            }
            self.segments.insert(
                first,
                Segment {
                    path,
                    len: valid,
                    live,
                },
            );
        }
        Ok(())
    }

    fn load_acks(&mut self, recoveries: &mut Vec<StoreRecovery>) -> Result<(), FileStoreError> {
        let path = self.dir.join("acks.log");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(io_error("read", &path)(error)),
        };
        let (frames, bad) = read_frames(&bytes);
        let mut valid = bytes.len() as u64;
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
                    valid = offset - FRAME_HEADER as u64;
                    break;
                }
            }
        }
        if let Some((at, reason)) = bad {
            valid = valid.min(at);
            recoveries.push(StoreRecovery {
                file: "acks.log".into(),
                valid_bytes: valid,
                cut_bytes: bytes.len() as u64 - valid,
                reason,
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
        let acks = OpenOptions::new()
            .create(true)
            .append(false)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("open", &path))?;
        acks.set_len(valid).map_err(io_error("truncate", &path))?;
        self.acks = Some(acks);
        self.acks_len = valid;
        Ok(())
    }

    /// What `vdev_core::Device::new` needs to know about the stored records.
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

    /// Number of segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Performs `request`; returns the answer the core expects, if any: a failed append, load,
    /// removal or state save is such an answer (the core decides what follows).
    pub fn execute(&mut self, request: StoreRequest) -> Option<Input<'static>> {
        match request {
            StoreRequest::Append { records } => self.append(records),
            StoreRequest::Load {
                from,
                max_count,
                max_bytes,
            } => Some(match self.load(from, max_count, max_bytes) {
                Ok(records) => Input::Loaded { records },
                // The core asks again later; nothing is lost by a failed read.
                Err(error) => Input::LoadFailed {
                    error: file_store_error(&error),
                },
            }),
            StoreRequest::Remove { seqs, bytes } => match self.remove(&seqs) {
                Ok(()) => None,
                Err(error) => Some(Input::RemoveFailed {
                    seqs,
                    bytes,
                    error: file_store_error(&error),
                }),
            },
            StoreRequest::SaveState {
                state,
                reported_revision,
            } => match write_atomically(&self.dir, "state", &state) {
                Ok(()) => {
                    self.state = Some(state);
                    Some(Input::StateSaved { reported_revision })
                }
                Err(error) => Some(Input::SaveStateFailed {
                    error: file_store_error(&error),
                }),
            },
            StoreRequest::Reserve { below, origin } => {
                let reserved = self.reserved.unwrap_or(0).max(below);
                // The origin first: a crash between the two leaves the new origin with an
                // older reservation, which numbers under it can never collide with.
                let written = match &origin {
                    Some(origin) => write_atomically(&self.dir, ORIGIN, origin.as_bytes()),
                    None => Ok(()),
                }
                .and_then(|()| {
                    write_atomically(&self.dir, RESERVED, reserved.to_string().as_bytes())
                });
                match written {
                    Ok(()) => {
                        if let Some(origin) = origin {
                            self.origin = origin;
                        }
                        self.reserved = Some(reserved);
                        Some(Input::Reserved { below })
                    }
                    Err(error) => Some(Input::ReserveFailed {
                        below,
                        error: file_store_error(&error),
                    }),
                }
            }
        }
    }

    fn append(&mut self, records: Vec<Record>) -> Option<Input<'static>> {
        let (first, last) = (records.first()?.seq, records.last()?.seq);
        match self.append_durably(&records) {
            Ok(()) => Some(Input::Appended { first, last }),
            Err(error) => Some(Input::AppendFailed {
                first,
                last,
                error: store_error(&error),
            }),
        }
    }

    fn append_durably(&mut self, records: &[Record]) -> io::Result<()> {
        if let Some(newest) = self.entries.last()
            && records.first().is_some_and(|r| r.seq <= newest.seq)
        {
            return Err(io::Error::other("sequence numbers must grow"));
        }
        let rolls = self
            .active
            .as_ref()
            .and_then(|(first, _)| self.segments.get(first))
            .is_none_or(|segment| segment.len >= self.segment_limit);
        if rolls {
            let first = records[0].seq;
            let path = self.dir.join(segment_name(first));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            file.set_len(0)?;
            sync_dir(&self.dir)?;
            self.segments.insert(
                first,
                Segment {
                    path,
                    len: 0,
                    live: 0,
                },
            );
            self.active = Some((first, file));
        }
        let (segment_first, file) = self.active.as_mut().expect("an active segment was opened");
        let segment = self
            .segments
            .get_mut(segment_first)
            .expect("the active segment is listed");
        let mut buffer = Vec::new();
        let mut new_entries = Vec::with_capacity(records.len());
        for record in records {
            let mut payload = Vec::with_capacity(8 + record.data.len());
            payload.extend_from_slice(&record.seq.to_le_bytes());
            payload.extend_from_slice(&record.data);
            let offset = segment.len + buffer.len() as u64 + FRAME_HEADER as u64 + 8;
            buffer.extend_from_slice(&frame(&payload));
            new_entries.push(Entry {
                seq: record.seq,
                segment: *segment_first,
                offset,
                len: record.data.len() as u32,
                live: true,
            });
        }
        let written = file.write_all(&buffer).and_then(|()| file.sync_data());
        if let Err(error) = written {
            // All or none: cut what may have reached the file.
            let _ = file.set_len(segment.len);
            return Err(error);
        }
        segment.len += buffer.len() as u64;
        segment.live += records.len() as u64;
        self.count += records.len() as u64;
        self.bytes += records.iter().map(|r| r.data.len() as u64).sum::<u64>();
        self.next_seq = self.next_seq.max(records[records.len() - 1].seq + 1);
        self.entries.extend(new_entries);
        Ok(())
    }

    fn load(
        &mut self,
        from: Seq,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, FileStoreError> {
        let start = self.entries.partition_point(|e| e.seq < from);
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut open: Option<(Seq, File)> = None;
        for entry in self.entries[start..].iter().filter(|e| e.live) {
            if out.len() >= max_count || total >= max_bytes {
                break;
            }
            let Some(segment) = self.segments.get(&entry.segment) else {
                continue;
            };
            if open
                .as_ref()
                .is_none_or(|(first, _)| *first != entry.segment)
            {
                let file = File::open(&segment.path).map_err(io_error("open", &segment.path))?;
                open = Some((entry.segment, file));
            }
            let (_, file) = open.as_mut().expect("opened above");
            let mut data = vec![0; entry.len as usize];
            file.seek(SeekFrom::Start(entry.offset))
                .and_then(|_| file.read_exact(&mut data))
                .map_err(io_error("read", &segment.path))?;
            total += data.len();
            out.push(Record {
                seq: entry.seq,
                data,
            });
        }
        Ok(out)
    }

    fn remove(&mut self, seqs: &[Seq]) -> Result<(), FileStoreError> {
        let removed: Vec<usize> = seqs
            .iter()
            .filter_map(|seq| self.entries.binary_search_by_key(seq, |e| e.seq).ok())
            .filter(|&index| self.entries[index].live)
            .collect();
        if removed.is_empty() {
            return Ok(());
        }
        let mut payload = vec![ACK_REMOVED];
        for &index in &removed {
            payload.extend_from_slice(&self.entries[index].seq.to_le_bytes());
        }
        // Written first: a removal that failed leaves the records live, so the core's retry
        // finds them again.
        self.append_ack(&payload)?;
        for index in removed {
            let entry = &mut self.entries[index];
            entry.live = false;
            self.count -= 1;
            self.bytes -= u64::from(entry.len);
            if let Some(segment) = self.segments.get_mut(&entry.segment) {
                segment.live -= 1;
            }
        }
        self.drop_empty_segments()
    }

    fn append_ack(&mut self, payload: &[u8]) -> Result<(), FileStoreError> {
        let path = self.dir.join("acks.log");
        let bytes = frame(payload);
        let acks = self
            .acks
            .as_mut()
            .expect("acks.log is opened by FileStore::open");
        acks.seek(SeekFrom::Start(self.acks_len))
            .and_then(|_| acks.write_all(&bytes))
            .map_err(io_error("write", &path))?;
        self.acks_len += bytes.len() as u64;
        Ok(())
    }

    /// Deletes the oldest segments whose records are all removed, after recording a cursor past
    /// them; compacts `acks.log` when it grew large.
    fn drop_empty_segments(&mut self) -> Result<(), FileStoreError> {
        // The segment being appended to stays until it is full: a device that keeps up would
        // otherwise delete it, rewrite `acks.log` and create a new segment (five syncs instead
        // of one) for every message.
        let active = self.active.as_ref().map(|(first, _)| *first);
        let droppable: Vec<Seq> = self
            .segments
            .iter()
            .take_while(|(first, segment)| {
                segment.live == 0 && (Some(**first) != active || segment.len >= self.segment_limit)
            })
            .map(|(first, _)| *first)
            .collect();
        if droppable.is_empty() && self.acks_len < ACKS_COMPACT_BYTES {
            return Ok(());
        }
        self.compact_acks()?;
        for first in droppable {
            if self
                .active
                .as_ref()
                .is_some_and(|(active, _)| *active == first)
            {
                self.active = None;
            }
            if let Some(segment) = self.segments.remove(&first) {
                fs::remove_file(&segment.path).map_err(io_error("remove", &segment.path))?;
            }
            self.entries.retain(|e| e.segment != first);
        }
        Ok(())
    }

    /// Rewrites `acks.log` as a cursor (everything below the oldest live record) and the list
    /// of removed records above it that are still in segments.
    fn compact_acks(&mut self) -> Result<(), FileStoreError> {
        let cursor = self
            .entries
            .iter()
            .find(|e| e.live)
            .map_or(self.next_seq, |e| e.seq);
        let mut bytes = Vec::new();
        let mut cursor_payload = vec![ACK_CURSOR];
        cursor_payload.extend_from_slice(&cursor.to_le_bytes());
        bytes.extend_from_slice(&frame(&cursor_payload));
        let removed: Vec<Seq> = self
            .entries
            .iter()
            .filter(|e| !e.live && e.seq > cursor)
            .map(|e| e.seq)
            .collect();
        if !removed.is_empty() {
            let mut payload = vec![ACK_REMOVED];
            for seq in removed {
                payload.extend_from_slice(&seq.to_le_bytes());
            }
            bytes.extend_from_slice(&frame(&payload));
        }
        write_atomically(&self.dir, "acks.log", &bytes)?;
        let path = self.dir.join("acks.log");
        self.acks = Some(
            OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_error("open", &path))?,
        );
        self.acks_len = bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (FileStore, Vec<StoreRecovery>) {
        let (store, recoveries) = FileStore::open(dir).expect("opens");
        (store.with_segment_limit(200), recoveries)
    }

    /// How far the tests reserve ahead, as the core does in blocks.
    const SEQ_RESERVE: u64 = 4096;

    /// Appends `seqs`, reserving their numbers first when needed (with an origin when the
    /// store holds none), as the core does.
    fn append(store: &mut FileStore, seqs: std::ops::Range<u64>) {
        if seqs.end > store.meta().reserved.unwrap_or(0) || store.meta().origin.is_empty() {
            let below = seqs.end.div_ceil(SEQ_RESERVE) * SEQ_RESERVE;
            let origin = store.meta().origin.is_empty().then(|| "testorigin".into());
            let answer = store.execute(StoreRequest::Reserve { below, origin });
            assert_eq!(answer, Some(Input::Reserved { below }));
        }
        let records = seqs
            .map(|seq| Record {
                seq,
                data: format!("message {seq}").into_bytes(),
            })
            .collect::<Vec<_>>();
        let (first, last) = (records[0].seq, records[records.len() - 1].seq);
        let answer = store.execute(StoreRequest::Append { records });
        assert_eq!(answer, Some(Input::Appended { first, last }));
    }

    fn load_all(store: &mut FileStore) -> Vec<(Seq, String)> {
        match store.execute(StoreRequest::Load {
            from: 0,
            max_count: usize::MAX,
            max_bytes: usize::MAX,
        }) {
            Some(Input::Loaded { records }) => records
                .into_iter()
                .map(|r| (r.seq, String::from_utf8(r.data).unwrap()))
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn remove(store: &mut FileStore, seqs: impl IntoIterator<Item = u64>) {
        let seqs = seqs.into_iter().collect();
        // The file store reads the sizes it subtracts itself.
        let request = StoreRequest::Remove { seqs, bytes: 0 };
        assert_eq!(store.execute(request), None);
    }

    fn newest_segment(dir: &Path) -> PathBuf {
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
            .collect();
        names.sort();
        names.pop().expect("a segment")
    }

    #[test]
    fn a_read_that_fails_is_answered_as_a_failed_load_and_the_next_read_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        append(&mut store, 0..4);
        let segment = store.segments.values().next().unwrap().path.clone();
        let hidden = segment.with_extension("hidden");
        std::fs::rename(&segment, &hidden).unwrap();
        let answer = store.execute(StoreRequest::Load {
            from: 0,
            max_count: usize::MAX,
            max_bytes: usize::MAX,
        });
        let Some(Input::LoadFailed { error }) = answer else {
            panic!("a failed read is an answer for the core, got {answer:?}");
        };
        assert!(error.to_string().contains("open"), "{error}");
        std::fs::rename(&hidden, &segment).unwrap();
        assert_eq!(load_all(&mut store).len(), 4, "nothing was lost");
    }

    #[test]
    fn records_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        for first in (0..20).step_by(4) {
            append(&mut store, first..first + 4);
        }
        drop(store);
        let (mut store, recoveries) = open(dir.path());
        assert!(recoveries.is_empty());
        let loaded = load_all(&mut store);
        assert_eq!(loaded.len(), 20);
        assert_eq!(loaded[7], (7, "message 7".into()));
        assert_eq!(store.meta().origin, "testorigin");
        assert_eq!(store.meta().next_seq, 20);
        assert!(store.segment_count() > 1, "small segments roll over");
    }

    #[test]
    fn removals_are_a_cursor_that_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        append(&mut store, 0..10);
        remove(&mut store, [0, 1, 2, 5]);
        drop(store);
        let (mut store, _) = open(dir.path());
        assert_eq!(store.live_seqs(), [3, 4, 6, 7, 8, 9]);
        let meta = store.meta();
        assert_eq!((meta.count, meta.next_seq), (6, 10));
        let window = store.execute(StoreRequest::Load {
            from: 4,
            max_count: 2,
            max_bytes: usize::MAX,
        });
        let Some(Input::Loaded { records }) = window else {
            panic!("loaded")
        };
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 6]);
    }

    #[test]
    fn delivered_segments_are_deleted_and_the_high_water_mark_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        for n in 0..10 {
            append(&mut store, n * 5..n * 5 + 5);
        }
        let before = store.segment_count();
        remove(&mut store, 0..50);
        assert!(store.segment_count() < before);
        assert!(store.segment_count() <= 1, "only the active one may stay");
        drop(store);
        let (mut store, _) = open(dir.path());
        let meta = store.meta();
        assert_eq!((meta.count, meta.bytes, meta.next_seq), (0, 0, 50));
        append(&mut store, 50..52);
        assert_eq!(store.live_seqs(), [50, 51]);
    }

    #[test]
    fn a_store_that_keeps_up_appends_to_one_segment_until_it_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        append(&mut store, 0..1);
        let first = newest_segment(dir.path());
        let mut rolled_at = None;
        for seq in 1..40 {
            remove(&mut store, seq - 1..seq);
            append(&mut store, seq..seq + 1);
            if newest_segment(dir.path()) != first && rolled_at.is_none() {
                rolled_at = Some(seq);
            }
            assert_eq!(store.segment_count(), 1, "after message {seq}");
        }
        // Each record is about 30 bytes framed: the 200-byte test segment rolls over only
        // when it is full, not after every delivered message.
        let rolled_at = rolled_at.expect("the segment filled up and rolled over");
        assert!(rolled_at >= 5, "rolled over at message {rolled_at}");
        remove(&mut store, 39..40);
        drop(store);
        let (mut store, recoveries) = open(dir.path());
        assert!(recoveries.is_empty());
        let meta = store.meta();
        assert_eq!((meta.count, meta.bytes, meta.next_seq), (0, 0, 40));
        assert!(load_all(&mut store).is_empty());
    }

    #[test]
    fn a_torn_last_record_is_cut_and_the_records_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        append(&mut store, 0..4);
        drop(store);
        let segment = newest_segment(dir.path());
        let len = fs::metadata(&segment).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (mut store, recoveries) = open(dir.path());
        assert_eq!(recoveries.len(), 1, "{recoveries:?}");
        assert!(
            recoveries[0].reason.contains("torn record"),
            "{:?}",
            recoveries[0]
        );
        assert_eq!(store.live_seqs(), [0, 1, 2]);
        // The cut is durable and appends continue after the kept records.
        append(&mut store, 3..5);
        drop(store);
        let (mut store, recoveries) = open(dir.path());
        assert!(recoveries.is_empty());
        assert_eq!(
            load_all(&mut store).last().unwrap(),
            &(4, "message 4".into())
        );
    }

    #[test]
    fn a_flipped_byte_is_detected_and_only_the_tail_from_it_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        append(&mut store, 0..4);
        drop(store);
        let segment = newest_segment(dir.path());
        let mut bytes = fs::read(&segment).unwrap();
        let record_len = bytes.len() / 4;
        bytes[2 * record_len + 20] ^= 0x40;
        fs::write(&segment, &bytes).unwrap();
        let (store, recoveries) = open(dir.path());
        assert_eq!(recoveries.len(), 1);
        assert_eq!(recoveries[0].reason, "checksum mismatch");
        assert_eq!(recoveries[0].valid_bytes, 2 * record_len as u64);
        assert_eq!(store.live_seqs(), [0, 1]);
        // Records 2 and 3 may have been delivered: their numbers are never handed out again
        // (the core numbers from the reservation).
        assert!(store.meta().reserved >= Some(4), "{:?}", store.meta());
    }

    #[test]
    fn after_a_cut_numbering_resumes_above_every_number_ever_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        // Enough appends to raise the reservation more than once.
        for batch in 0..3 {
            let first = batch * SEQ_RESERVE;
            append(&mut store, first..first + SEQ_RESERVE);
        }
        let newest = 3 * SEQ_RESERVE - 1;
        // All delivered up to the newest but the removals never reached the disk, and the
        // segment holding the newest records is then cut from its first frame.
        drop(store);
        let segment = newest_segment(dir.path());
        let mut bytes = fs::read(&segment).unwrap();
        bytes[FRAME_HEADER + 2] ^= 0x01;
        fs::write(&segment, &bytes).unwrap();
        let (store, recoveries) = open(dir.path());
        assert_eq!(recoveries.len(), 1, "{recoveries:?}");
        let meta = store.meta();
        assert!(
            meta.next_seq.max(meta.reserved.unwrap_or(0)) > newest,
            "next {meta:?} must be above {newest}"
        );
    }

    #[test]
    fn a_lost_or_unreadable_reserved_or_origin_file_makes_the_core_start_a_new_origin() {
        for (file, content) in [
            ("reserved", None),
            ("reserved", Some("not a number")),
            ("origin", None),
            ("origin", Some("")),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, _) = open(dir.path());
            append(&mut store, 0..5);
            remove(&mut store, 0..5);
            drop(store);
            let path = dir.path().join(file);
            match content {
                None => fs::remove_file(&path).unwrap(),
                Some(text) => fs::write(&path, text).unwrap(),
            }
            let (mut store, recoveries) = open(dir.path());
            assert!(recoveries.is_empty(), "nothing was cut: {recoveries:?}");
            // The store says what it has; the core decides the numbers under it are unknown.
            let mut device = vdev_core::Device::new(
                vdev_core::DeviceConfig::new("https://platform.example", "token"),
                0,
                [1; 32],
                &store.meta(),
                None,
            );
            assert_ne!(device.outbox_origin(), "testorigin", "{file} {content:?}");
            let told = std::iter::from_fn(|| match device.poll_output() {
                vdev_core::Output::Timeout(_) => None,
                output => Some(output),
            })
            .any(|output| {
                matches!(output, vdev_core::Output::Event(vdev_core::Event::OutboxRecovered(r))
                    if r.reason.contains("new origin"))
            });
            assert!(told, "{file} {content:?}: the app is told");
            // The core's first reservation carries the new origin.
            let below = store.meta().next_seq + SEQ_RESERVE;
            let answer = store.execute(StoreRequest::Reserve {
                below,
                origin: Some("neworigin".into()),
            });
            assert_eq!(answer, Some(Input::Reserved { below }));
            drop(store);
            let (store, recoveries) = open(dir.path());
            assert_eq!(store.meta().origin, "neworigin", "the new origin is kept");
            assert!(recoveries.is_empty(), "{recoveries:?}");
        }
    }

    #[test]
    fn a_new_store_holds_no_origin_until_the_first_reservation_brings_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, recoveries) = open(dir.path());
        assert_eq!(store.meta().origin, "");
        assert!(recoveries.is_empty());
        assert_eq!(store.meta().reserved, None);
        append(&mut store, 0..1);
        drop(store);
        let (store, recoveries) = open(dir.path());
        assert_eq!(store.meta().origin, "testorigin");
        assert!(recoveries.is_empty(), "{recoveries:?}");
    }

    #[test]
    fn a_reservation_is_synced_answered_and_never_lowered() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        let answer = store.execute(StoreRequest::Reserve {
            below: 8_192,
            origin: None,
        });
        assert_eq!(answer, Some(Input::Reserved { below: 8_192 }));
        let _ = store.execute(StoreRequest::Reserve {
            below: 4_096,
            origin: None,
        });
        drop(store);
        let (store, _) = open(dir.path());
        assert_eq!(store.meta().reserved, Some(8_192));
    }

    #[test]
    fn a_torn_header_and_junk_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        append(&mut store, 0..2);
        drop(store);
        let segment = newest_segment(dir.path());
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&[0xff, 0xff, 0xff]).unwrap();
        drop(file);
        let (store, recoveries) = open(dir.path());
        assert_eq!(recoveries[0].reason, "torn frame header");
        assert_eq!(recoveries[0].cut_bytes, 3);
        assert_eq!(store.live_seqs(), [0, 1]);
    }

    #[test]
    fn state_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        assert_eq!(store.state(), None);
        let save = |store: &mut FileStore, state: &[u8], reported_revision| {
            store.execute(StoreRequest::SaveState {
                state: state.to_vec(),
                reported_revision,
            })
        };
        assert_eq!(
            save(&mut store, b"{\"a\":1}", 1),
            Some(Input::StateSaved {
                reported_revision: 1
            })
        );
        assert_eq!(
            save(&mut store, b"{\"a\":2}", 3),
            Some(Input::StateSaved {
                reported_revision: 3
            })
        );
        drop(store);
        let (store, _) = open(dir.path());
        assert_eq!(store.state(), Some(&b"{\"a\":2}"[..]));
        assert!(!dir.path().join("state.tmp").exists());
    }

    #[test]
    fn out_of_order_removal_keeps_segments_until_all_their_records_go() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        for n in 0..4 {
            append(&mut store, n * 5..n * 5 + 5);
        }
        let segments = store.segment_count();
        remove(&mut store, 1..20);
        assert_eq!(
            store.segment_count(),
            segments,
            "seq 0 keeps the oldest segment"
        );
        remove(&mut store, [0]);
        assert_eq!(store.live_seqs(), Vec::<u64>::new());
        drop(store);
        let (store, _) = open(dir.path());
        assert_eq!(store.meta().count, 0);
        assert_eq!(store.meta().next_seq, 20);
    }
}
