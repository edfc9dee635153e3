//! The outbox and saved state in files: the core's storage contract (`vdev_core::StoreRequest`)
//! on plain `std::fs`, so it runs in a WASI preopened directory and natively in unit tests.
//!
//! The format, what opening recovers and which file operations each request takes are the
//! core's (`vdev_core::file_outbox`, shared with the Node.js host): this module only lists and
//! reads the directory, performs the [`FileOp`]s in order and hands back what happened. What
//! it adds is how a file operation is done durably here: a synced write is `sync_data`, a
//! replacement is a temporary file synced and renamed over the old one, and the directory is
//! synced after a file is created, renamed or deleted. A failed directory sync fails the
//! operation (a host without directory sync, reported as unsupported, is accepted).
//!
//! Files being written stay open between requests (a device appends to one segment for a long
//! time); a replaced, created or deleted file's handle is dropped first.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use vdev_core::file_outbox::{FileOp, FileOutbox, FileOutboxOpener};
use vdev_core::{Input, OutboxMeta, Seq, StoreError, StoreRecovery, StoreRequest};

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

/// A store directory opened for one device.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    outbox: FileOutbox,
    /// Files open for writing, by name.
    writing: BTreeMap<String, File>,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileStoreError {
    let path = path.display().to_string();
    move |source| FileStoreError::Io {
        action,
        path,
        source,
    }
}

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

/// The core's word for a failed file operation: a full disk is a quota error for every
/// operation, anything else fails with the action and the file named.
fn store_error(error: &FileStoreError) -> StoreError {
    let FileStoreError::Io { source, .. } = error;
    match source.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::QuotaExceeded,
        _ => StoreError::Failed(error.to_string()),
    }
}

impl FileStore {
    /// Opens the store in `dir` (created when missing), checking every record. Returns what
    /// had to be cut, if anything.
    pub fn open(dir: &Path) -> Result<(Self, Vec<StoreRecovery>), FileStoreError> {
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let names = fs::read_dir(dir)
            .map_err(io_error("list", dir))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok());
        let mut opener = FileOutboxOpener::new();
        for name in FileOutboxOpener::files_to_read(names) {
            let path = dir.join(&name);
            let bytes = fs::read(&path).map_err(io_error("read", &path))?;
            opener.read(&name, &bytes);
        }
        let (outbox, ops, recoveries) = opener.finish();
        let mut store = Self {
            dir: dir.to_owned(),
            outbox,
            writing: BTreeMap::new(),
        };
        store.perform(&ops).map_err(|(_, error)| error)?;
        Ok((store, recoveries))
    }

    /// Deletes what the device stored here (the outbox's files and the saved state with its
    /// identity and tokens), and the directory once nothing else is in it: files the app keeps
    /// there stay. For a stopped device: the store takes no request after it.
    pub fn forget(&mut self) -> Result<(), FileStoreError> {
        self.writing.clear();
        let names = fs::read_dir(&self.dir)
            .map_err(io_error("list", &self.dir))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok());
        for name in FileOutboxOpener::files_to_read(names) {
            let path = self.dir.join(&name);
            fs::remove_file(&path).map_err(io_error("delete", &path))?;
        }
        // Not empty: the app's own files stay, and so does the directory.
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }

    /// Segments roll over at `bytes` instead of 4 MiB (tests use small segments).
    pub fn with_segment_limit(mut self, bytes: u64) -> Self {
        self.outbox = self.outbox.with_segment_limit(bytes);
        self
    }

    /// What `vdev_core::Device::new` needs to know about the stored records.
    pub fn meta(&self) -> OutboxMeta {
        self.outbox.meta()
    }

    /// The saved device state, if any.
    pub fn state(&self) -> Option<&[u8]> {
        self.outbox.state()
    }

    /// The sequence numbers stored and not removed, ascending.
    pub fn live_seqs(&self) -> Vec<Seq> {
        self.outbox.live_seqs()
    }

    /// Number of segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.outbox.segment_count()
    }

    /// Performs `request`; returns the answer the core expects, if any: a failed append, load,
    /// removal or state save is such an answer (the core decides what follows).
    pub fn execute(&mut self, request: StoreRequest) -> Option<Input<'static>> {
        let job = self.outbox.plan(request);
        let outcome = self
            .perform(&job.ops)
            .map_err(|(index, error)| (index, store_error(&error)));
        if outcome.is_err() {
            // Best effort: what it cannot undo now, the core's format undoes at the next write.
            let _ = self.perform(&job.on_failure);
        }
        self.outbox.finish(job, outcome)
    }

    /// Performs `ops` in order until one fails; the bytes of each read.
    fn perform(&mut self, ops: &[FileOp]) -> Result<Vec<Vec<u8>>, (usize, FileStoreError)> {
        let mut reads = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            if let Some(bytes) = self.perform_one(op).map_err(|error| (index, error))? {
                reads.push(bytes);
            }
        }
        Ok(reads)
    }

    fn perform_one(&mut self, op: &FileOp) -> Result<Option<Vec<u8>>, FileStoreError> {
        let dir = self.dir.clone();
        match op {
            FileOp::Create { file } => {
                self.writing.remove(file);
                let path = dir.join(file);
                let handle = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_error("create", &path))?;
                sync_dir(&dir).map_err(io_error("sync directory", &dir))?;
                self.writing.insert(file.clone(), handle);
            }
            FileOp::Write {
                file,
                offset,
                bytes,
                sync,
            } => {
                let path = dir.join(file);
                let handle = self.writable(file)?;
                handle
                    .seek(SeekFrom::Start(*offset))
                    .and_then(|_| handle.write_all(bytes))
                    .map_err(io_error("write", &path))?;
                if *sync {
                    handle.sync_data().map_err(io_error("sync", &path))?;
                }
            }
            FileOp::Truncate { file, len } => {
                let path = dir.join(file);
                let handle = self.writable(file)?;
                handle.set_len(*len).map_err(io_error("truncate", &path))?;
                handle.sync_all().map_err(io_error("sync", &path))?;
            }
            FileOp::Replace { file, bytes } => {
                self.writing.remove(file);
                write_atomically(&dir, file, bytes)?;
            }
            FileOp::Delete { file } => {
                self.writing.remove(file);
                let path = dir.join(file);
                match fs::remove_file(&path) {
                    // Already gone (an earlier delete whose directory sync failed): done.
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    removed => removed.map_err(io_error("remove", &path))?,
                }
                sync_dir(&dir).map_err(io_error("sync directory", &dir))?;
            }
            FileOp::Read { file, offset, len } => {
                let path = dir.join(file);
                let mut handle = File::open(&path).map_err(io_error("open", &path))?;
                let mut bytes = vec![0; usize::try_from(*len).unwrap_or(usize::MAX)];
                handle
                    .seek(SeekFrom::Start(*offset))
                    .and_then(|_| handle.read_exact(&mut bytes))
                    .map_err(io_error("read", &path))?;
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    /// The open handle of `file` for writing, opened when it is not yet.
    fn writable(&mut self, file: &str) -> Result<&mut File, FileStoreError> {
        if !self.writing.contains_key(file) {
            let path = self.dir.join(file);
            let handle = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_error("open", &path))?;
            self.writing.insert(file.to_owned(), handle);
        }
        Ok(self.writing.get_mut(file).expect("inserted above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdev_core::Record;

    fn open(dir: &Path) -> (FileStore, Vec<StoreRecovery>) {
        let (store, recoveries) = FileStore::open(dir).expect("opens");
        (store.with_segment_limit(200), recoveries)
    }

    /// How far the tests reserve ahead, as the core does in blocks.
    const SEQ_RESERVE: u64 = 4096;

    /// Bytes of a frame header (length and checksum) in the core's format.
    const FRAME_HEADER: usize = 8;

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
        let segment = newest_segment(dir.path());
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
