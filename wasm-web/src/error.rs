//! The errors the JavaScript API rejects its promises with (as `Error`s carrying these messages).

use vdev_core::{DeviceIdError, SendError, StoreError, TwinError};

use crate::store::OpenError;

/// Why a call of the JavaScript API failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An option has the wrong type or value.
    #[error("option {name}: {problem}")]
    InvalidOption {
        /// The option's name as JavaScript spells it.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The Device ID option is not a valid Device ID.
    #[error("option deviceId: {0}")]
    InvalidDeviceId(#[from] DeviceIdError),
    /// The IndexedDB database could not be opened.
    #[error(transparent)]
    Storage(#[from] OpenError),
    /// The browser gave no random bytes.
    #[error("{0}")]
    NoRandomness(String),
    /// The core refused the message (invalid, outbox full, stopped).
    #[error("message refused: {0}")]
    Refused(#[from] SendError),
    /// The store could not keep the message; nothing else that was stored is lost.
    #[error("message not stored: {}", not_stored(.0))]
    NotStored(StoreError),
    /// The reported-properties patch is invalid.
    #[error(transparent)]
    Reported(#[from] TwinError),
    /// The client was stopped.
    #[error("the client is stopped")]
    Stopped,
    /// The browser's Web Locks refused a request (see `tabs.rs`).
    #[error("cannot coordinate with other tabs: {0}")]
    NoLocks(String),
    /// The client of another tab that drives the device refused the call; the message is its.
    #[error("{0}")]
    FromOwner(String),
}

fn not_stored(error: &StoreError) -> String {
    match error {
        StoreError::QuotaExceeded => "the browser's storage quota for this site is exhausted \
             (QuotaExceededError); messages stored before are kept"
            .into(),
        other => other.to_string(),
    }
}
