//! The outbox: sequence numbers, durability, the bounded in-memory window over the host's
//! store, delivery order, acknowledgements and the outcome of every message.
//!
//! Invariants (checked by the simulator):
//! - a message is published only after the host confirmed its append, and in sequence order;
//! - the window holds a contiguous run `[window front, load_from)` of the stored sequence
//!   numbers; everything at or above `load_from` is in the store but not in memory, so a backlog
//!   of any size costs only the window's memory;
//! - after a reconnect, the messages that were in flight are at the front of the window and go
//!   first, in order;
//! - every message ends with exactly one outcome: delivered, or rejected with a reason.

use crate::prelude::*;

use alloc::collections::VecDeque;

use crate::json::Value;
use crate::keyed::KeyedVec;
use crate::message::StoredMessage;
use crate::reason::{Reason, RequestFailure, RequestKind};
use crate::store::{
    OutboxMeta, Record, Seq, StoreError, StoreRecovery, StoreRequest, is_usable_origin,
};
use crate::text::Describe;

/// Bounds of the outbox, with the policy that applies when they are reached.
///
/// When either limit would be exceeded, `send` fails with [`OutboxError::Full`] and the message
/// is not stored; messages already stored are never dropped to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most messages stored at once.
    pub max_messages: u64,
    /// Most bytes of stored records at once.
    pub max_bytes: u64,
    /// Most records kept in memory (the window over the store).
    pub window_records: usize,
    /// Byte budget of the records kept in memory (at least one record is always kept).
    pub window_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            max_messages: 10_000_000,
            max_bytes: 1 << 30,
            window_records: 2_048,
            window_bytes: 4 << 20,
        }
    }
}

/// Why a message was not accepted into the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboxError {
    /// Storing the message would exceed a limit of [`OutboxLimits`].
    Full {
        /// Messages stored now.
        count: u64,
        /// Bytes stored now.
        bytes: u64,
        /// The message limit.
        max_messages: u64,
        /// The byte limit.
        max_bytes: u64,
    },
}

impl Describe for OutboxError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Full {
                count,
                bytes,
                max_messages,
                max_bytes,
            } => put!(
                out,
                "outbox is full: ",
                count,
                " messages, ",
                bytes,
                " bytes stored (limits: ",
                max_messages,
                " messages, ",
                max_bytes,
                " bytes)"
            ),
        }
    }
}

described!(OutboxError);

/// Why a stored message will never be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The host's store failed to append it; `send` reported the same error.
    NotStored(StoreError),
    /// The stored record could not be read back.
    Corrupt(String),
    /// The payload upload failed for good on this step: the Platform refused it, or the URL it
    /// gave breaks the cleartext rule.
    UploadRefused {
        /// The upload step that was refused.
        request: RequestKind,
        /// How (boxed: it keeps [`crate::Event`] small).
        failure: Box<RequestFailure>,
    },
    /// The message does not fit in an MQTT packet.
    Unencodable(String),
    /// Every connection that carried it ended before its acknowledgement, again and again for
    /// a long time: the gateway refuses it (MQTT 3.1.1 can only say so by closing), and it
    /// would otherwise hold up every message behind it forever.
    RefusedByGateway {
        /// Connections that ended with it unacknowledged, in a row.
        attempts: u32,
        /// Minutes from the first of them to the last.
        minutes: u64,
    },
}

impl Describe for RejectReason {
    fn describe(&self, out: &mut String) {
        match self {
            Self::NotStored(error) => put!(out, "not stored: ", error),
            Self::Corrupt(why) => put!(out, "stored record is unreadable: ", why),
            Self::UploadRefused { request, failure } => {
                put!(
                    out,
                    "its upload failed for good on ",
                    request.as_str(),
                    ": ",
                    **failure
                )
            }
            Self::Unencodable(why) => put!(out, "message cannot be encoded: ", why),
            Self::RefusedByGateway { attempts, minutes } => put!(
                out,
                "the gateway closed the connection ",
                attempts,
                " times in a row, over ",
                minutes,
                " minutes, after receiving it and before acknowledging it"
            ),
        }
    }
}

described!(RejectReason);

impl Reason for RejectReason {
    fn code(&self) -> &'static str {
        match self {
            Self::NotStored(_) => "notStored",
            Self::Corrupt(_) => "corrupt",
            Self::UploadRefused { .. } => "uploadRefused",
            Self::Unencodable(_) => "unencodable",
            Self::RefusedByGateway { .. } => "refusedByGateway",
        }
    }

    fn details(&self) -> Vec<(&'static str, Value)> {
        match self {
            Self::NotStored(error) => vec![("storeError", error.to_value())],
            Self::UploadRefused { request, failure } => vec![
                ("request", request.as_str().into()),
                ("failure", failure.to_value()),
            ],
            Self::RefusedByGateway { attempts, minutes } => vec![
                ("attempts", u64::from(*attempts).into()),
                ("minutes", (*minutes).into()),
            ],
            _ => Vec::new(),
        }
    }
}

/// What became of messages: durable (not final yet), then delivered or rejected (final).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `first..=last` are durable in the host's store: the app's sends may resolve.
    Stored(Seq, Seq),
    Delivered(Seq),
    Rejected(Seq, RejectReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Appended by the app; the host has not confirmed durability yet.
    Storing,
    /// Durable, waiting its turn.
    Ready,
    /// Published, waiting for PUBACK.
    InFlight,
    /// Delivered or rejected; removed from the front when everything before it is.
    Done,
}

#[derive(Debug)]
struct Slot {
    seq: Seq,
    state: SlotState,
    size: usize,
    message: Result<StoredMessage, RejectReason>,
    /// Blob name once the payload was uploaded (externalized messages only).
    uploaded: Option<String>,
    /// Published at least once on some connection: set DUP when it goes again.
    sent_before: bool,
    /// Connections in a row that ended with this message the oldest unacknowledged one, and
    /// when the first of them ended.
    unacked_losses: u32,
    first_unacked_loss_at: u64,
}

/// A message is taken for refused by the gateway once this many connections in a row ended
/// with it the oldest unacknowledged one...
const GATEWAY_REFUSAL_ATTEMPTS: u32 = 10;
/// ...over at least this long: longer than a burst of kicks or a flaky minute lasts, so only a
/// message the gateway really refuses is given up (the queue behind it waits meanwhile).
const GATEWAY_REFUSAL_MS: u64 = 2 * 60 * 1_000;

/// A message at the head of the queue that may be published now.
#[derive(Debug)]
pub(crate) struct Publishable<'a> {
    pub(crate) seq: Seq,
    pub(crate) message: &'a StoredMessage,
    pub(crate) uploaded: Option<&'a str>,
    pub(crate) dup: bool,
}

/// First delay before a failed load or removal is asked again; it doubles up to
/// [`STORE_RETRY_MAX_MS`].
const STORE_RETRY_FIRST_MS: u64 = 1_000;
const STORE_RETRY_MAX_MS: u64 = 60_000;

/// The delay before asking the store again after `failures` failures in a row.
pub(crate) fn retry_delay(failures: u32) -> u64 {
    STORE_RETRY_FIRST_MS
        .saturating_mul(1 << failures.min(16))
        .min(STORE_RETRY_MAX_MS)
}

/// How many sequence numbers one [`StoreRequest::Reserve`] covers: one extra durable write per
/// this many messages, and at most this many numbers skipped at each start.
const RESERVE_BLOCK: Seq = 4_096;

/// A load request waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct PendingLoad {
    /// The first sequence number not yet sent to the store when the load was requested: an
    /// exhausted answer means nothing else exists below it.
    target: Seq,
    max_count: usize,
    max_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    limits: OutboxLimits,
    origin: String,
    /// Whether `origin` is durable in the store. A new one rides on the next reservation, and
    /// nothing stored is loaded (so nothing is sent) before it lands.
    origin_saved: bool,
    /// Why a new origin was started over a store that held something, for the app.
    recovery: Option<StoreRecovery>,
    next_seq: Seq,
    count: u64,
    bytes: u64,
    window: VecDeque<Slot>,
    window_size: usize,
    /// Lowest sequence number that is neither in the window nor delivered.
    load_from: Seq,
    /// The outstanding load, if any.
    loading: Option<PendingLoad>,
    /// Loads that failed in a row, and when to ask again after the last one.
    load_failures: u32,
    load_retry_at: Option<u64>,
    appends: Vec<Record>,
    /// No record at or above this is appended until a reservation above it is durable.
    reserved: Seq,
    /// The reservation asked for and not answered yet.
    reserving: Option<Seq>,
    /// Reservations that failed in a row, and when to ask again after the last one.
    reserve_failures: u32,
    reserve_retry_at: Option<u64>,
    /// Record sizes of appends the host has not confirmed yet.
    unconfirmed: KeyedVec<usize>,
    removals: Vec<Seq>,
    /// Bytes of the records in `removals`.
    removal_bytes: u64,
    /// `removals` holds a rejected message: it goes at once (see `removals_due`).
    removing_rejected: bool,
    /// Removals the host failed to perform, asked again at `removal_retry_at`.
    retry_removals: Vec<Seq>,
    retry_removal_bytes: u64,
    removal_failures: u32,
    removal_retry_at: Option<u64>,
    outcomes: VecDeque<Outcome>,
}

impl Outbox {
    /// `fresh_origin` makes a new origin id, used when the store holds none the core can use.
    pub(crate) fn new(
        limits: OutboxLimits,
        meta: &OutboxMeta,
        fresh_origin: impl FnOnce() -> String,
    ) -> Self {
        // Numbers below the reservation may have been handed out before a store that lost
        // recent writes came back: new messages start at it, whatever the high-water mark says.
        let next_seq = meta.next_seq.max(meta.reserved.unwrap_or(0));
        // An origin is written only with a reservation (`Reserve { origin }`): one without the
        // other is damage (or a store from before reservations), and then the numbers the
        // Platform holds under that origin are unknown.
        let usable = is_usable_origin(&meta.origin);
        let holds_anything = meta.next_seq > 0 || meta.count > 0;
        let recovery = match (usable, meta.reserved) {
            (true, Some(_)) => None,
            (true, None) => Some("the store's reservation is missing or unreadable"),
            (false, _) if holds_anything || meta.reserved.is_some() || !meta.origin.is_empty() => {
                Some("the store's origin is missing or unusable")
            }
            // A new store.
            (false, _) => None,
        }
        .map(|why| StoreRecovery {
            file: "origin".into(),
            valid_bytes: 0,
            cut_bytes: 0,
            reason: text!(why, ": new messages are numbered under a new origin"),
        });
        // Without both, a new origin starts a namespace none of those numbers can collide with.
        let origin_saved = usable && meta.reserved.is_some();
        Self {
            limits,
            origin: if origin_saved {
                meta.origin.clone()
            } else {
                fresh_origin()
            },
            origin_saved,
            recovery,
            next_seq,
            count: meta.count,
            bytes: meta.bytes,
            window: VecDeque::new(),
            window_size: 0,
            load_from: if meta.count == 0 { next_seq } else { 0 },
            loading: None,
            load_failures: 0,
            load_retry_at: None,
            appends: Vec::new(),
            reserved: next_seq,
            reserving: None,
            reserve_failures: 0,
            reserve_retry_at: None,
            unconfirmed: KeyedVec::default(),
            removals: Vec::new(),
            removal_bytes: 0,
            removing_rejected: false,
            retry_removals: Vec::new(),
            retry_removal_bytes: 0,
            removal_failures: 0,
            removal_retry_at: None,
            outcomes: VecDeque::new(),
        }
    }

    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// Why the store's origin was replaced at start, once.
    pub(crate) fn take_recovery(&mut self) -> Option<StoreRecovery> {
        self.recovery.take()
    }

    /// Accepts a message; it is published once the host confirms the append.
    pub(crate) fn enqueue(&mut self, message: StoredMessage) -> Result<Seq, OutboxError> {
        let data = message.encode();
        let size = data.len();
        if self.count + 1 > self.limits.max_messages
            || self.bytes + size as u64 > self.limits.max_bytes
        {
            return Err(OutboxError::Full {
                count: self.count,
                bytes: self.bytes,
                max_messages: self.limits.max_messages,
                max_bytes: self.limits.max_bytes,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.count += 1;
        self.bytes += size as u64;
        // Straight into the window when nothing older waits in the store and there is room:
        // a live stream never needs a round trip through storage.
        if self.load_from == seq && self.loading.is_none() && self.has_room() {
            self.push_slot(seq, SlotState::Storing, size, Ok(message));
            self.load_from = seq + 1;
        }
        self.unconfirmed.insert(seq, size);
        self.appends.push(Record { seq, data });
        Ok(seq)
    }

    fn has_room(&self) -> bool {
        self.window.is_empty()
            || (self.window.len() < self.limits.window_records
                && self.window_size < self.limits.window_bytes)
    }

    fn push_slot(
        &mut self,
        seq: Seq,
        state: SlotState,
        size: usize,
        message: Result<StoredMessage, RejectReason>,
    ) {
        self.window_size += size;
        self.window.push_back(Slot {
            seq,
            state,
            size,
            message,
            uploaded: None,
            sent_before: false,
            unacked_losses: 0,
            first_unacked_loss_at: 0,
        });
    }

    /// The host confirmed that `first..=last` are durable.
    pub(crate) fn handle_appended(&mut self, first: Seq, last: Seq) {
        // Only appends still waiting for an answer become durable now; a repeated answer is
        // a host bug that must not tell the app twice.
        let confirmed = self.unconfirmed.remove_range(first..=last);
        if let (Some((first, _)), Some((last, _))) = (confirmed.first(), confirmed.last()) {
            self.outcomes.push_back(Outcome::Stored(*first, *last));
        }
        // The window is in sequence order: only the answered range is visited (a scan of the
        // whole window per answer was 4% of the native benchmark's CPU, one answer per append).
        let start = self.window.partition_point(|slot| slot.seq < first);
        for slot in self.window.range_mut(start..) {
            if slot.seq > last {
                break;
            }
            if slot.state == SlotState::Storing {
                slot.state = SlotState::Ready;
            }
        }
    }

    /// The host could not store `first..=last`: they are rejected and forgotten.
    pub(crate) fn handle_append_failed(&mut self, first: Seq, last: Seq, error: &StoreError) {
        for seq in first..=last {
            // Only appends still waiting for an answer can fail; anything else is a host bug
            // that must not corrupt the accounting.
            let Some(size) = self.unconfirmed.remove(seq) else {
                continue;
            };
            if let Some(index) = self.window.iter().position(|s| s.seq == seq)
                && let Some(slot) = self.window.remove(index)
            {
                self.window_size -= slot.size;
            }
            self.count = self.count.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(size as u64);
            self.outcomes.push_back(Outcome::Rejected(
                seq,
                RejectReason::NotStored(error.clone()),
            ));
        }
    }

    /// The host made the reservation up to `below` durable.
    pub(crate) fn handle_reserved(&mut self, below: Seq) {
        if self.reserving == Some(below) {
            self.reserving = None;
            self.reserve_failures = 0;
            self.origin_saved = true;
        }
        self.reserved = self.reserved.max(below);
    }

    /// The host could not make the reservation durable: ask again later; appends wait.
    pub(crate) fn handle_reserve_failed(&mut self, now: u64, below: Seq) {
        if self.reserving == Some(below) {
            self.reserving = None;
            self.reserve_retry_at = Some(now + retry_delay(self.reserve_failures));
            self.reserve_failures = self.reserve_failures.saturating_add(1);
        }
    }

    /// Records loaded from the store, in answer to the outstanding load.
    pub(crate) fn handle_loaded(&mut self, records: Vec<Record>) {
        let Some(load) = self.loading.take() else {
            return;
        };
        self.load_failures = 0;
        self.load_retry_at = None;
        let exhausted = records.len() < load.max_count
            && records.iter().map(|r| r.data.len()).sum::<usize>() < load.max_bytes;
        for record in records {
            // A load answer may overlap what the window already has; keep order strict.
            if record.seq < self.load_from {
                continue;
            }
            let message = StoredMessage::decode(&record.data)
                .map_err(|error| RejectReason::Corrupt(error.text()));
            self.push_slot(record.seq, SlotState::Ready, record.data.len(), message);
            self.load_from = record.seq + 1;
        }
        if exhausted {
            // Nothing else existed below `target` when the store answered.
            self.load_from = self.load_from.max(load.target);
        }
        self.reject_corrupt_front();
    }

    /// The outstanding load read nothing: ask again later, waiting longer after each failure
    /// in a row (a store that fails at once must not be asked in a busy loop).
    pub(crate) fn handle_load_failed(&mut self, now: u64) {
        if self.loading.take().is_none() {
            return;
        }
        let delay = retry_delay(self.load_failures);
        self.load_failures = self.load_failures.saturating_add(1);
        self.load_retry_at = Some(now + delay);
    }

    /// A removal failed in the host's store: it is asked again later (a removal lost for good
    /// would leave a delivered message to be sent again after a restart, and the store's
    /// figures wrong), waiting longer after each failure in a row.
    pub(crate) fn handle_remove_failed(&mut self, now: u64, seqs: Vec<Seq>, bytes: u64) {
        // Messages finish out of order (an upload takes longer), so lists from different
        // requests interleave: each seq goes to its place (a sort would link 2.5 KB more).
        for seq in seqs {
            insert_ascending(&mut self.retry_removals, seq);
        }
        self.retry_removal_bytes += bytes;
        self.removal_retry_at = Some(now + retry_delay(self.removal_failures));
        self.removal_failures = self.removal_failures.saturating_add(1);
    }

    /// When a failed load or removal is due to be asked again.
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        let load = self
            .load_retry_at
            .filter(|_| self.loading.is_none() && self.load_from < self.next_seq);
        let reserve = self
            .reserve_retry_at
            .filter(|_| !self.origin_saved || !self.appends.is_empty());
        [load, self.removal_retry_at, reserve]
            .into_iter()
            .flatten()
            .min()
    }

    fn reject_corrupt_front(&mut self) {
        for slot in &mut self.window {
            if slot.state == SlotState::Ready
                && let Err(reason) = &slot.message
            {
                slot.state = SlotState::Done;
                self.outcomes
                    .push_back(Outcome::Rejected(slot.seq, reason.clone()));
                insert_ascending(&mut self.removals, slot.seq);
                self.removal_bytes += slot.size as u64;
                self.removing_rejected = true;
            }
        }
        self.pop_done();
    }

    /// Whether a load is worth a store transaction now: the window is empty, or a quarter of it
    /// is free. Loading as soon as one record fitted made one transaction per burst of
    /// acknowledgements, each a few small reads (in Chromium about 13 ms a transaction, and the
    /// window ran dry while they queued). Waiting for half made loads large but late: the
    /// window ran dry while one was read. Measured in Chromium, draining 100,000 (window 2,048):
    /// 8,400/s loading at half free, 9,900/s at a quarter.
    fn wants_load(&self) -> bool {
        self.window.is_empty()
            || (self.window.len() <= self.limits.window_records / 4 * 3
                && self.window_size <= self.limits.window_bytes / 4 * 3)
    }

    /// Whether the removals gathered so far go to the store on their own. They are not urgent
    /// (a delivered record that a crash leaves behind is sent again, and the Platform drops it
    /// by its sequence number), so they wait for the next load and share its transaction,
    /// until a window's worth has gathered or nothing is in flight any more (the queue drained,
    /// or waits for the network). A drain thus makes one transaction per load, not two.
    /// A rejected message goes at once: sent again after a crash, it could end differently
    /// the second time (a gateway that refused it may take it), and the app was told.
    fn removals_due(&self) -> bool {
        self.removing_rejected
            || self.removals.len() >= self.limits.window_records
            || !self
                .window
                .iter()
                .any(|slot| slot.state == SlotState::InFlight)
    }

    fn load_request_size(&self) -> (usize, usize) {
        let count = self.limits.window_records.saturating_sub(self.window.len());
        let bytes = self.limits.window_bytes.saturating_sub(self.window_size);
        (count.max(1), bytes.max(1))
    }

    /// The next message to publish, if the one at the head of the order is ready.
    pub(crate) fn next_publishable(&self) -> Option<Publishable<'_>> {
        let slot = self
            .window
            .iter()
            .find(|slot| slot.state != SlotState::InFlight && slot.state != SlotState::Done)?;
        if slot.state != SlotState::Ready {
            return None;
        }
        Some(Publishable {
            seq: slot.seq,
            message: slot.message.as_ref().ok()?,
            uploaded: slot.uploaded.as_deref(),
            dup: slot.sent_before,
        })
    }

    pub(crate) fn mark_uploaded(&mut self, seq: Seq, blob_name: String) {
        if let Some(slot) = self.slot_mut(seq) {
            slot.uploaded = Some(blob_name);
        }
    }

    pub(crate) fn mark_in_flight(&mut self, seq: Seq) {
        if let Some(slot) = self.slot_mut(seq) {
            slot.state = SlotState::InFlight;
            slot.sent_before = true;
        }
    }

    /// The Platform acknowledged `seq`.
    pub(crate) fn handle_delivered(&mut self, seq: Seq) {
        self.finish(seq, Outcome::Delivered(seq));
    }

    /// `seq` will never be delivered.
    pub(crate) fn reject(&mut self, seq: Seq, reason: RejectReason) {
        self.finish(seq, Outcome::Rejected(seq, reason));
    }

    fn finish(&mut self, seq: Seq, outcome: Outcome) {
        let Some(slot) = self.slot_mut(seq) else {
            return;
        };
        if slot.state == SlotState::Done {
            return;
        }
        slot.state = SlotState::Done;
        let size = slot.size as u64;
        insert_ascending(&mut self.removals, seq);
        self.removal_bytes += size;
        self.removing_rejected |= matches!(outcome, Outcome::Rejected(..));
        self.outcomes.push_back(outcome);
        self.pop_done();
    }

    fn pop_done(&mut self) {
        while let Some(slot) = self
            .window
            .pop_front_if(|slot| slot.state == SlotState::Done)
        {
            self.window_size -= slot.size;
            self.count = self.count.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(slot.size as u64);
        }
    }

    /// The connection dropped: whatever was in flight goes again, first, in order.
    pub(crate) fn handle_connection_lost(&mut self, now: u64) {
        let mut refused = None;
        // The oldest message still unacknowledged is the one a refusing gateway closed on (it
        // handles publishes in order and acknowledges the ones before).
        if let Some(oldest) = self
            .window
            .iter_mut()
            .find(|slot| slot.state == SlotState::InFlight)
        {
            if oldest.unacked_losses == 0 {
                oldest.first_unacked_loss_at = now;
            }
            oldest.unacked_losses = oldest.unacked_losses.saturating_add(1);
            let over = now.saturating_sub(oldest.first_unacked_loss_at);
            if oldest.unacked_losses >= GATEWAY_REFUSAL_ATTEMPTS && over >= GATEWAY_REFUSAL_MS {
                refused = Some((
                    oldest.seq,
                    RejectReason::RefusedByGateway {
                        attempts: oldest.unacked_losses,
                        minutes: over / 60_000,
                    },
                ));
            }
        }
        for slot in &mut self.window {
            if slot.state == SlotState::InFlight {
                slot.state = SlotState::Ready;
            }
        }
        if let Some((seq, reason)) = refused {
            self.reject(seq, reason);
        }
    }

    fn slot_mut(&mut self, seq: Seq) -> Option<&mut Slot> {
        let front = self.window.front()?.seq;
        // The window is sorted by sequence; search instead of indexing since there may be gaps.
        if seq < front {
            return None;
        }
        let index = self.window.binary_search_by_key(&seq, |s| s.seq).ok()?;
        self.window.get_mut(index)
    }

    /// The next storage operation to perform, if any.
    #[must_use]
    pub(crate) fn poll_store(&mut self, now: u64) -> Option<StoreRequest> {
        // The next block is reserved while the current one still has room, so a steady stream
        // never waits for it; appends beyond the durable reservation wait.
        let reservation_due = !self.origin_saved
            || (!self.appends.is_empty()
                && self.next_seq.saturating_add(RESERVE_BLOCK / 2) > self.reserved);
        if self.reserving.is_none()
            && reservation_due
            && self.reserve_retry_at.is_none_or(|at| at <= now)
        {
            self.reserve_retry_at = None;
            // Whole blocks past the current reservation, enough for every number given out.
            let behind = self.next_seq.saturating_sub(self.reserved);
            let below = self
                .reserved
                .saturating_add((behind / RESERVE_BLOCK + 1).saturating_mul(RESERVE_BLOCK));
            self.reserving = Some(below);
            return Some(StoreRequest::Reserve {
                below,
                origin: (!self.origin_saved).then(|| self.origin.clone()),
            });
        }
        let durable_prefix = self
            .appends
            .iter()
            .take_while(|record| record.seq < self.reserved)
            .count();
        if durable_prefix > 0 {
            let rest = self.appends.split_off(durable_prefix);
            return Some(StoreRequest::Append {
                records: core::mem::replace(&mut self.appends, rest),
            });
        }
        let mut retrying = false;
        if self.removal_retry_at.is_some_and(|at| at <= now) {
            // The failed removals join the new ones, in ascending order.
            self.removal_retry_at = None;
            for seq in core::mem::take(&mut self.retry_removals) {
                insert_ascending(&mut self.removals, seq);
            }
            self.removal_bytes += core::mem::take(&mut self.retry_removal_bytes);
            retrying = true;
        }
        let load_due = self.loading.is_none()
            && self.origin_saved
            && self.load_from < self.next_seq
            && self.wants_load()
            && self.load_retry_at.is_none_or(|at| at <= now);
        if !self.removals.is_empty() && (retrying || load_due || self.removals_due()) {
            // Failures in a row end with a removal that carries no failed one.
            if !retrying && self.removal_retry_at.is_none() {
                self.removal_failures = 0;
            }
            self.removing_rejected = false;
            let seqs = core::mem::take(&mut self.removals);
            let bytes = core::mem::take(&mut self.removal_bytes);
            return Some(StoreRequest::Remove { seqs, bytes });
        }
        if load_due {
            self.load_retry_at = None;
            let (max_count, max_bytes) = self.load_request_size();
            self.loading = Some(PendingLoad {
                // Appends waiting for a reservation reach the store after this load: the
                // answer says nothing about them.
                target: self
                    .appends
                    .first()
                    .map_or(self.next_seq, |record| record.seq),
                max_count,
                max_bytes,
            });
            return Some(StoreRequest::Load {
                from: self.load_from,
                max_count,
                max_bytes,
            });
        }
        None
    }

    #[must_use]
    pub(crate) fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcomes.pop_front()
    }

    /// Messages stored and not yet delivered or rejected.
    pub(crate) fn pending_count(&self) -> u64 {
        self.count
    }

    /// Bytes of the records stored and not yet delivered or rejected.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.bytes
    }

    /// Enqueue time of the oldest undelivered message, when it is in memory.
    pub(crate) fn oldest_enqueued_at(&self) -> Option<u64> {
        self.window
            .iter()
            .find(|s| s.state != SlotState::Done)
            .and_then(|s| s.message.as_ref().ok())
            .map(|m| m.enqueued_at)
    }

    pub(crate) fn in_memory(&self) -> (usize, usize) {
        (self.window.len(), self.window_size)
    }
}

/// Adds `seq` to ascending `seqs` in its place. Removals must reach the store ascending;
/// records mostly finish in order, so this is nearly always a push, and the outbox needs no
/// sort (which would cost the browser bundle ~1.5 KB gzipped).
fn insert_ascending(seqs: &mut Vec<Seq>, seq: Seq) {
    let at = seqs.partition_point(|&queued| queued < seq);
    seqs.insert(at, seq);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Marker, StreamOptions};
    use crate::store::MemoryStore;

    fn message(n: u8) -> StoredMessage {
        StoredMessage::build(
            &StreamOptions::default(),
            &Default::default(),
            Marker::Data,
            vec![n; 8],
            usize::MAX,
            0,
            None::<&mut crate::message::BuiltInBrotli>,
        )
        .unwrap()
    }

    fn drain(outbox: &mut Outbox, store: &mut MemoryStore) {
        while let Some(request) = outbox.poll_store(0) {
            if let StoreRequest::Remove { seqs, bytes } = &request {
                assert!(seqs.is_sorted(), "removal {seqs:?} is not ascending");
                let stored: u64 = store
                    .records()
                    .filter(|(seq, _)| seqs.contains(seq))
                    .map(|(_, data)| data.len() as u64)
                    .sum();
                assert_eq!(*bytes, stored, "bytes of removal {seqs:?}");
            }
            match store.execute(request) {
                Some(crate::Input::Appended { first, last }) => outbox.handle_appended(first, last),
                Some(crate::Input::Loaded { records }) => outbox.handle_loaded(records),
                Some(crate::Input::Reserved { below }) => outbox.handle_reserved(below),
                _ => {}
            }
        }
    }

    /// A store and an outbox holding `count` durable messages, numbered from 0.
    fn stored_outbox(count: u8) -> (MemoryStore, Outbox) {
        let mut store = MemoryStore::new("o");
        let mut outbox = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        for n in 0..count {
            outbox.enqueue(message(n)).unwrap();
        }
        drain(&mut outbox, &mut store);
        (store, outbox)
    }

    fn publish_all(outbox: &mut Outbox) -> Vec<Seq> {
        let mut sent = Vec::new();
        while let Some(p) = outbox.next_publishable() {
            let seq = p.seq;
            outbox.mark_in_flight(seq);
            sent.push(seq);
        }
        sent
    }

    #[test]
    fn removals_reach_the_store_ascending_whatever_order_records_finish_in() {
        let (_store, mut outbox) = stored_outbox(6);
        assert_eq!(publish_all(&mut outbox), [0, 1, 2, 3, 4, 5]);
        for seq in [4, 1, 5] {
            outbox.handle_delivered(seq);
        }
        outbox.reject(3, RejectReason::Unencodable("test".into()));
        outbox.handle_delivered(0);
        outbox.handle_delivered(2);
        let Some(StoreRequest::Remove { seqs, .. }) = outbox.poll_store(0) else {
            panic!("a removal was expected");
        };
        assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn nothing_is_published_before_it_is_durable() {
        let mut store = MemoryStore::new("o");
        let mut outbox = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        outbox.enqueue(message(1)).unwrap();
        assert!(outbox.next_publishable().is_none());
        drain(&mut outbox, &mut store);
        assert_eq!(publish_all(&mut outbox), [0]);
    }

    #[test]
    fn a_backlog_larger_than_the_window_drains_in_order_with_bounded_memory() {
        let limits = OutboxLimits {
            window_records: 4,
            ..Default::default()
        };
        let mut store = MemoryStore::new("o");
        let mut outbox = Outbox::new(limits, &store.meta(), unused_origin);
        for n in 0..50 {
            outbox.enqueue(message(n)).unwrap();
        }
        drain(&mut outbox, &mut store);
        let mut delivered = Vec::new();
        loop {
            drain(&mut outbox, &mut store);
            assert!(outbox.in_memory().0 <= 4);
            let sent = publish_all(&mut outbox);
            if sent.is_empty() {
                break;
            }
            for seq in sent {
                outbox.handle_delivered(seq);
                delivered.push(seq);
            }
        }
        assert_eq!(delivered, (0..50).collect::<Vec<_>>());
        drain(&mut outbox, &mut store);
        assert_eq!(store.meta().count, 0);
        assert_eq!(outbox.pending_count(), 0);
    }

    #[test]
    fn in_flight_messages_go_first_after_a_reconnect() {
        let (_store, mut outbox) = stored_outbox(5);
        assert_eq!(publish_all(&mut outbox), [0, 1, 2, 3, 4]);
        outbox.handle_delivered(1);
        outbox.handle_connection_lost(0);
        let again: Vec<(Seq, bool)> = core::iter::from_fn(|| {
            let p = outbox.next_publishable()?;
            let item = (p.seq, p.dup);
            outbox.mark_in_flight(item.0);
            Some(item)
        })
        .collect();
        assert_eq!(again, [(0, true), (2, true), (3, true), (4, true)]);
    }

    #[test]
    fn restart_resumes_from_the_store() {
        let (mut store, mut outbox) = stored_outbox(3);
        publish_all(&mut outbox);
        outbox.handle_delivered(0);
        outbox.handle_connection_lost(0);
        drain(&mut outbox, &mut store);
        let mut restarted = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        drain(&mut restarted, &mut store);
        assert_eq!(publish_all(&mut restarted), [1, 2]);
        // New messages start at the reservation: numbers below it may have been handed out.
        assert_eq!(restarted.enqueue(message(9)).unwrap(), RESERVE_BLOCK);
    }

    #[test]
    fn removals_wait_while_messages_are_in_flight_and_go_once_none_is() {
        let (mut store, mut outbox) = stored_outbox(3);
        publish_all(&mut outbox);
        outbox.handle_delivered(0);
        drain(&mut outbox, &mut store);
        // 1 and 2 are in flight: the removal of 0 waits to go with a later one.
        assert_eq!(store.meta().count, 3);
        // A crash now sends the delivered message again (the Platform drops it by its number).
        let mut restarted = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        drain(&mut restarted, &mut store);
        assert_eq!(publish_all(&mut restarted), [0, 1, 2]);
        // Without a crash: once nothing is in flight, every removal reaches the store.
        outbox.handle_delivered(1);
        drain(&mut outbox, &mut store);
        assert_eq!(store.meta().count, 3);
        outbox.handle_delivered(2);
        drain(&mut outbox, &mut store);
        assert_eq!(store.meta().count, 0);
    }

    #[test]
    fn a_rejected_message_is_removed_at_once_even_with_others_in_flight() {
        let (mut store, mut outbox) = stored_outbox(3);
        publish_all(&mut outbox);
        outbox.reject(0, RejectReason::Corrupt("test".into()));
        drain(&mut outbox, &mut store);
        assert_eq!(store.meta().count, 2);
    }

    #[test]
    fn a_load_waits_until_a_quarter_of_the_window_is_free_and_takes_the_removals_along() {
        let limits = OutboxLimits {
            window_records: 8,
            ..OutboxLimits::default()
        };
        let mut store = MemoryStore::new("o");
        let mut outbox = Outbox::new(limits, &store.meta(), unused_origin);
        for n in 0..16 {
            outbox.enqueue(message(n)).unwrap();
        }
        drain(&mut outbox, &mut store);
        assert_eq!(publish_all(&mut outbox), (0..8).collect::<Vec<_>>());
        // One record free of eight: no load yet, and the removal waits (seven in flight).
        outbox.handle_delivered(0);
        assert_eq!(outbox.poll_store(0), None);
        // Two free: the removals and a load of two, one after the other (one transaction).
        outbox.handle_delivered(1);
        let size = store.records().next().unwrap().1.len() as u64;
        assert_eq!(
            outbox.poll_store(0),
            Some(StoreRequest::Remove {
                seqs: vec![0, 1],
                bytes: 2 * size
            })
        );
        assert!(matches!(
            outbox.poll_store(0),
            Some(StoreRequest::Load {
                from: 8,
                max_count: 2,
                ..
            })
        ));
    }

    #[test]
    fn appends_wait_until_a_reservation_above_them_is_durable() {
        let mut store = MemoryStore::new("o");
        let mut outbox = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        outbox.enqueue(message(1)).unwrap();
        assert_eq!(
            outbox.poll_store(0),
            Some(StoreRequest::Reserve {
                below: RESERVE_BLOCK,
                origin: None
            })
        );
        assert_eq!(
            outbox.poll_store(0),
            None,
            "the append waits for the reservation"
        );
        outbox.handle_reserve_failed(0, RESERVE_BLOCK);
        assert_eq!(outbox.poll_timeout(), Some(1_000));
        assert_eq!(outbox.poll_store(500), None, "asked again after the delay");
        assert_eq!(
            outbox.poll_store(1_000),
            Some(StoreRequest::Reserve {
                below: RESERVE_BLOCK,
                origin: None
            })
        );
        let _ = store.execute(StoreRequest::Reserve {
            origin: None,
            below: RESERVE_BLOCK,
        });
        outbox.handle_reserved(RESERVE_BLOCK);
        assert!(matches!(
            outbox.poll_store(1_000),
            Some(StoreRequest::Append { records }) if records.len() == 1
        ));
    }

    #[test]
    fn a_store_that_lost_appends_it_reported_done_never_gets_their_numbers_again() {
        let mut store = MemoryStore::new("o");
        let mut outbox = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        for n in 0..3 {
            outbox.enqueue(message(n)).unwrap();
        }
        // Only the reservation reached the disk; the appends were reported done and then lost
        // (a power cut under relaxed durability), the high-water mark with them.
        let Some(reserve @ StoreRequest::Reserve { below, .. }) = outbox.poll_store(0) else {
            panic!("a reservation first");
        };
        let _ = store.execute(reserve);
        outbox.handle_reserved(below);
        assert!(matches!(
            outbox.poll_store(0),
            Some(StoreRequest::Append { .. })
        ));
        assert_eq!(store.meta().next_seq, 0);

        let mut restarted = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        assert_eq!(restarted.enqueue(message(9)).unwrap(), below);
    }

    #[test]
    fn a_message_waiting_for_its_reservation_is_not_skipped_by_a_load_that_overtakes_it() {
        let (mut store, _) = stored_outbox(3);
        let mut restarted = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        let seq = restarted.enqueue(message(9)).unwrap();
        let Some(reserve @ StoreRequest::Reserve { .. }) = restarted.poll_store(0) else {
            panic!("the append waits for a reservation");
        };
        // The stored backlog is loaded while the new message still waits.
        let Some(load @ StoreRequest::Load { .. }) = restarted.poll_store(0) else {
            panic!("the backlog is loaded meanwhile");
        };
        let Some(crate::Input::Loaded { records }) = store.execute(load) else {
            panic!("loaded");
        };
        restarted.handle_loaded(records);
        let Some(crate::Input::Reserved { below }) = store.execute(reserve) else {
            panic!("reserved");
        };
        restarted.handle_reserved(below);
        drain(&mut restarted, &mut store);
        assert_eq!(publish_all(&mut restarted), [0, 1, 2, seq]);
    }

    /// For stores that hold a usable origin: the core never needs a new one.
    fn unused_origin() -> String {
        panic!("the store's origin is usable")
    }

    #[test]
    fn an_origin_the_platform_would_refuse_is_replaced_and_saved_before_anything_is_sent() {
        for bad in ["", "Not Valid!", &"a".repeat(33), "ABC"] {
            // A store holding a message under an origin the core cannot use.
            let mut store = MemoryStore::new(bad);
            let _ = store.execute(StoreRequest::Append {
                records: vec![Record {
                    seq: 0,
                    data: message(1).encode(),
                }],
            });
            let mut outbox =
                Outbox::new(OutboxLimits::default(), &store.meta(), || "fresh1".into());
            assert_eq!(outbox.origin(), "fresh1", "{bad:?}");
            let reserve = outbox.poll_store(0);
            assert!(
                matches!(&reserve, Some(StoreRequest::Reserve { origin: Some(o), .. }) if o == "fresh1"),
                "the new origin is saved first, before the stored message is loaded: {reserve:?}"
            );
            assert_eq!(outbox.poll_store(0), None, "no load before it is durable");
            let Some(crate::Input::Reserved { below }) = store.execute(reserve.unwrap()) else {
                panic!("reserved");
            };
            outbox.handle_reserved(below);
            assert!(matches!(
                outbox.poll_store(0),
                Some(StoreRequest::Load { from: 0, .. })
            ));
            assert_eq!(store.meta().origin, "fresh1", "kept for the next start");
            let restarted = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
            assert_eq!(restarted.origin(), "fresh1");
        }
    }

    #[test]
    fn a_store_that_holds_messages_without_a_readable_reservation_gets_a_new_origin_and_says_so() {
        let holding = OutboxMeta {
            origin: "abc123".into(),
            next_seq: 7,
            reserved: None,
            count: 2,
            bytes: 20,
        };
        let mut outbox = Outbox::new(OutboxLimits::default(), &holding, || "fresh2".into());
        assert_eq!(
            outbox.origin(),
            "fresh2",
            "numbers under abc123 are unknown"
        );
        let recovery = outbox.take_recovery().expect("the app is told");
        assert!(
            recovery.reason.contains("reservation is missing"),
            "{recovery:?}"
        );
        assert!(
            outbox.next_seq >= 7,
            "numbering goes on from the high-water mark"
        );
        // The same store with its reservation keeps its origin; an empty one needs none.
        let kept = OutboxMeta {
            reserved: Some(4_096),
            ..holding.clone()
        };
        let mut outbox = Outbox::new(OutboxLimits::default(), &kept, unused_origin);
        assert_eq!(outbox.origin(), "abc123");
        assert!(outbox.take_recovery().is_none());
        // An origin without a reservation, even over no records: the reservation was lost with
        // every record (its numbers may be at the Platform).
        let bare = OutboxMeta {
            next_seq: 0,
            count: 0,
            bytes: 0,
            ..holding.clone()
        };
        let mut outbox = Outbox::new(OutboxLimits::default(), &bare, || "fresh4".into());
        assert_eq!(outbox.origin(), "fresh4");
        assert!(outbox.take_recovery().is_some());
        let empty = OutboxMeta {
            origin: String::new(),
            next_seq: 0,
            reserved: None,
            count: 0,
            bytes: 0,
        };
        let mut outbox = Outbox::new(OutboxLimits::default(), &empty, || "fresh3".into());
        assert_eq!(outbox.origin(), "fresh3");
        assert!(
            outbox.take_recovery().is_none(),
            "a new store is no recovery"
        );
    }

    #[test]
    fn the_next_block_is_reserved_before_the_current_one_runs_out() {
        let mut store = MemoryStore::new("o");
        let mut outbox = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        let mut reservations = Vec::new();
        for n in 0..3 * RESERVE_BLOCK {
            outbox.enqueue(message(n as u8)).unwrap();
            while let Some(request) = outbox.poll_store(0) {
                match store.execute(request) {
                    Some(crate::Input::Reserved { below }) => {
                        reservations.push((n, below));
                        outbox.handle_reserved(below);
                    }
                    Some(crate::Input::Appended { first, last }) => {
                        assert!(
                            last < outbox.reserved,
                            "{first}..={last} appended unreserved"
                        );
                        outbox.handle_appended(first, last);
                    }
                    _ => {}
                }
            }
            assert!(
                outbox.appends.is_empty(),
                "message {n} waited for a reservation"
            );
        }
        assert_eq!(
            reservations,
            [
                (0, RESERVE_BLOCK),
                (RESERVE_BLOCK / 2, 2 * RESERVE_BLOCK),
                (RESERVE_BLOCK * 3 / 2, 3 * RESERVE_BLOCK),
                (RESERVE_BLOCK * 5 / 2, 4 * RESERVE_BLOCK),
            ]
        );
    }

    #[test]
    fn full_outbox_refuses_without_touching_stored_messages() {
        let limits = OutboxLimits {
            max_messages: 2,
            ..Default::default()
        };
        let mut store = MemoryStore::new("o");
        let mut outbox = Outbox::new(limits, &store.meta(), unused_origin);
        outbox.enqueue(message(0)).unwrap();
        outbox.enqueue(message(1)).unwrap();
        assert!(matches!(
            outbox.enqueue(message(2)),
            Err(OutboxError::Full { count: 2, .. })
        ));
        drain(&mut outbox, &mut store);
        assert_eq!(store.meta().count, 2);
    }

    #[test]
    fn a_failed_load_is_asked_again_later_with_growing_delays_and_loses_nothing() {
        let (mut store, _first) = stored_outbox(3);
        // A restart: the window must be loaded from the store.
        let mut outbox = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        let Some(StoreRequest::Load { from: 0, .. }) = outbox.poll_store(0) else {
            panic!("the restarted outbox loads its window");
        };
        outbox.handle_load_failed(0);
        assert!(
            outbox.poll_store(0).is_none(),
            "no busy loop on a failing store"
        );
        assert_eq!(outbox.poll_timeout(), Some(1_000));
        assert!(matches!(
            outbox.poll_store(1_000),
            Some(StoreRequest::Load { from: 0, .. })
        ));
        outbox.handle_load_failed(1_000);
        assert_eq!(outbox.poll_timeout(), Some(3_000), "the delay doubles");
        let request = outbox.poll_store(3_000).expect("asked again");
        let Some(crate::Input::Loaded { records }) = store.execute(request) else {
            panic!("the store answers the load");
        };
        outbox.handle_loaded(records);
        assert_eq!(outbox.poll_timeout(), None);
        assert_eq!(publish_all(&mut outbox), [0, 1, 2]);
    }

    #[test]
    fn failed_appends_are_rejected_and_freed() {
        let mut outbox = Outbox::new(
            OutboxLimits::default(),
            &MemoryStore::new("o").meta(),
            unused_origin,
        );
        outbox.enqueue(message(0)).unwrap();
        let _ = outbox.poll_store(0);
        outbox.handle_append_failed(0, 0, &StoreError::QuotaExceeded);
        assert_eq!(
            outbox.poll_outcome(),
            Some(Outcome::Rejected(
                0,
                RejectReason::NotStored(StoreError::QuotaExceeded)
            ))
        );
        assert_eq!(outbox.pending_count(), 0);
        assert!(outbox.next_publishable().is_none());
    }

    #[test]
    fn corrupt_records_are_rejected_not_fatal() {
        let mut store = MemoryStore::new("o");
        let _ = store.execute(StoreRequest::Append {
            records: vec![
                Record {
                    seq: 0,
                    data: vec![99, 1, 2],
                },
                Record {
                    seq: 1,
                    data: message(1).encode(),
                },
            ],
        });
        let mut outbox = Outbox::new(OutboxLimits::default(), &store.meta(), unused_origin);
        drain(&mut outbox, &mut store);
        assert!(matches!(
            outbox.poll_outcome(),
            Some(Outcome::Rejected(0, RejectReason::Corrupt(_)))
        ));
        assert_eq!(publish_all(&mut outbox), [1]);
    }
}
