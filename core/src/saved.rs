//! The saved device state: what [`StoreRequest::SaveState`](crate::StoreRequest::SaveState)
//! carries between runs, and its JSON form.
//!
//! This module owns the facade's part of that state (the pending provisioning operation, the
//! Registration Token and the identity), the one document it is written as, and when it is
//! written ([`StateSaves`]: after a change, again after a failed write, and which
//! reported-properties updates each write makes durable). The twin's part
//! is not kept here but taken from the live twin each time the state is written, so there is no
//! second copy to fall out of step with it. The document's format is fixed: it must read what
//! earlier versions wrote and write the same document back.

use crate::prelude::*;

use crate::clock::Clock;
use crate::json::{self, Value};
use crate::outbox::retry_delay;
use crate::provisioning::ProvisioningOperation;
use crate::token::RegistrationToken;
use crate::twin::TwinState;

/// The facade's own part of the saved state: provisioning and identity.
#[derive(Debug, Default)]
pub(crate) struct SavedState {
    pub(crate) operation: Option<ProvisioningOperation>,
    pub(crate) token: Option<RegistrationToken>,
    pub(crate) workspace_id: Option<String>,
    pub(crate) device_id: Option<String>,
}

impl SavedState {
    /// The JSON the host stores (`StoreRequest::SaveState`), with `twin` as the twin's part.
    /// The core keeps expiries on its own timeline; they are saved as the wall clock reads
    /// them, since the next run's timeline starts at the wall clock.
    pub(crate) fn to_json(&self, twin: &TwinState, clock: Clock) -> Vec<u8> {
        Value::object([
            (
                "operation",
                self.operation.as_ref().map(|op| op.to_saved(clock)).into(),
            ),
            (
                "token",
                self.token
                    .as_ref()
                    .map(|token| token.to_saved(clock))
                    .into(),
            ),
            ("workspace_id", self.workspace_id.as_deref().into()),
            ("device_id", self.device_id.as_deref().into()),
            ("twin", twin.to_saved()),
        ])
        .to_json()
        .into_bytes()
    }

    /// Reads [`SavedState::to_json`]'s form back, with the twin's part for the twin; missing
    /// parts are absent.
    pub(crate) fn parse(bytes: &[u8]) -> Result<(Self, TwinState), String> {
        let object = json::parse_object(bytes)?;
        let part = |key: &str| json::optional_object(&object, key);
        let saved = Self {
            operation: part("operation")?
                .map(ProvisioningOperation::from_saved)
                .transpose()
                .map_err(|e| text!("operation: ", e))?,
            token: part("token")?
                .map(RegistrationToken::from_saved)
                .transpose()
                .map_err(|e| text!("token: ", e))?,
            workspace_id: json::optional_string(&object, "workspace_id")?,
            device_id: json::optional_string(&object, "device_id")?,
        };
        let twin = part("twin")?
            .map(TwinState::from_saved)
            .transpose()
            .map_err(|e| text!("twin: ", e))?
            .unwrap_or_default();
        Ok((saved, twin))
    }
}

/// When the state is written: once something in it changed, again after a failed write (with
/// the store retry delays), and which reported-properties updates each write makes durable.
#[derive(Debug, Default)]
pub(crate) struct StateSaves {
    /// Something changed since the last write was asked for.
    pending: bool,
    /// When a failed write is asked for again, and how many failed in a row.
    retry_at: Option<u64>,
    failures: u32,
    revisions: ReportedRevisions,
}

impl StateSaves {
    /// Something in the state changed: write it soon.
    pub(crate) fn ask(&mut self) {
        self.pending = true;
    }

    /// Whether a write is due now; if so, the reported-properties revision it includes.
    pub(crate) fn due(&mut self, now: u64) -> Option<u64> {
        let retrying = self.retry_at.is_some_and(|at| at <= now);
        if !self.pending && !retrying {
            return None;
        }
        // Failures in a row end with a write asked for while no retry was pending. A newer
        // state replaces a failed one, so a pending retry is done by this write.
        if self.retry_at.is_none() {
            self.failures = 0;
        }
        self.retry_at = None;
        self.pending = false;
        Some(self.revisions.saving())
    }

    /// The write failed: the newest state is written again after a delay.
    pub(crate) fn failed(&mut self, now: u64) {
        self.retry_at = Some(now + retry_delay(self.failures));
        self.failures = self.failures.saturating_add(1);
    }

    /// A write that included `revision` is durable: the newest durable revision, when news.
    pub(crate) fn saved(&mut self, revision: u64) -> Option<u64> {
        self.revisions.saved(revision)
    }

    /// Numbers a reported-properties update (see [`ReportedRevisions::update`]).
    pub(crate) fn reported_update(&mut self, changed: bool) -> (u64, Option<u64>) {
        self.revisions.update(changed)
    }

    /// When a failed write is asked for again.
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.retry_at
    }
}

/// Which reported-properties updates are durable. Each update gets a revision (1, 2, .. in
/// this run); each [`StoreRequest::SaveState`](crate::StoreRequest::SaveState) carries the
/// newest revision it includes, and the host hands it back when the state is durable. An update
/// that changed nothing is durable as soon as everything before it is.
#[derive(Debug, Default)]
pub(crate) struct ReportedRevisions {
    /// The newest revision handed out.
    last: u64,
    /// The newest revision that changed what is saved.
    last_change: u64,
    /// Every revision up to this one is durable.
    stored: u64,
}

impl ReportedRevisions {
    /// Numbers an update; returns its revision and, when it is durable already (it changed
    /// nothing and everything before it is saved), that revision again.
    pub(crate) fn update(&mut self, changed: bool) -> (u64, Option<u64>) {
        self.last += 1;
        if changed {
            self.last_change = self.last;
            (self.last, None)
        } else if self.stored >= self.last_change {
            self.stored = self.last;
            (self.last, Some(self.last))
        } else {
            (self.last, None)
        }
    }

    /// The revision a state saved now includes.
    pub(crate) fn saving(&self) -> u64 {
        self.last
    }

    /// A state that included `revision` is durable: returns the newest revision durable now,
    /// when that is news.
    pub(crate) fn saved(&mut self, revision: u64) -> Option<u64> {
        // Updates after the last change are durable with it.
        let through = if revision >= self.last_change {
            self.last
        } else {
            revision
        };
        (through > self.stored).then(|| {
            self.stored = through;
            through
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved state as the serde-derived code of earlier versions wrote it.
    const WRITTEN_BEFORE: &str = r#"{"operation":{"id":"op-1","verification_code":"ABC123","expires_at":1700000000000},"token":{"token":"tok","obtained_at":5,"expires_at":null},"workspace_id":"ws","device_id":"dev-1","twin":{"desired":{"a":1},"desired_version":3,"reported_target":{"b":2},"reported_acked":{},"next_rid":7}}"#;

    #[test]
    fn saved_state_reads_what_earlier_versions_wrote_and_writes_the_same_document() {
        let (saved, twin) = SavedState::parse(WRITTEN_BEFORE.as_bytes()).unwrap();
        let operation = saved.operation.as_ref().unwrap();
        assert_eq!(
            (operation.id.as_str(), operation.expires_at),
            ("op-1", 1_700_000_000_000)
        );
        let token = saved.token.as_ref().unwrap();
        assert_eq!((token.obtained_at, token.expires_at), (5, None));
        assert_eq!(saved.device_id.as_deref(), Some("dev-1"));
        assert_eq!((twin.desired_version, twin.next_rid), (Some(3), 7));
        let written: serde_json::Value =
            serde_json::from_slice(&saved.to_json(&twin, Clock::starting_at(0))).unwrap();
        let before: serde_json::Value = serde_json::from_str(WRITTEN_BEFORE).unwrap();
        assert_eq!(written, before);
    }

    #[test]
    fn a_saved_state_of_the_wrong_shape_is_refused_with_a_reason_naming_the_field() {
        assert_eq!(
            SavedState::parse(br#"{"token":{"token":5}}"#).unwrap_err(),
            "token: field `token`: expected a string, found a number"
        );
        assert_eq!(
            SavedState::parse(b"[]").unwrap_err(),
            "expected a JSON object, found an array"
        );
        let (empty, twin) = SavedState::parse(b"{}").unwrap();
        assert!(empty.token.is_none() && empty.operation.is_none());
        assert_eq!(twin, TwinState::default());
    }

    #[test]
    fn reported_revisions_are_durable_once_a_state_that_includes_them_is() {
        let mut revisions = ReportedRevisions::default();
        assert_eq!(revisions.update(false), (1, Some(1)), "nothing to save");
        assert_eq!(revisions.update(true), (2, None));
        let first_save = revisions.saving();
        assert_eq!(revisions.update(true), (3, None));
        assert_eq!(revisions.update(false), (4, None), "waits for 3");
        let second_save = revisions.saving();
        assert_eq!(revisions.saved(first_save), Some(2));
        assert_eq!(
            revisions.saved(first_save),
            None,
            "an echo twice is no news"
        );
        assert_eq!(revisions.saved(second_save), Some(4));
        assert_eq!(revisions.update(false), (5, Some(5)));
    }
}
