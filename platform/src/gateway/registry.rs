//! Live MQTT sessions by device: at most one per Device ID (a newer connection closes the older
//! one), and the channel through which the HTTP side reaches a connected device.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::mpsc;

/// What the rest of the Platform asks a live session to do.
#[derive(Debug, Clone)]
pub enum SessionCommand {
    /// Close the connection, for the logged reason.
    Disconnect(String),
    /// Push a desired-properties merge patch (body includes `$version`).
    DesiredPatch {
        /// The new desired version.
        version: i64,
        /// The merge patch.
        patch: Value,
    },
    /// New cloud-to-device messages are queued.
    CloudToDeviceQueued,
}

#[derive(Debug)]
struct Entry {
    session_id: u64,
    token_id: String,
    sender: mpsc::UnboundedSender<SessionCommand>,
}

/// What the stand-in remembers of a device's latest authenticated MQTT session, so that a
/// test (or a technician) can see that the device's tunables reached the wire: the keep-alive
/// its CONNECT asked for, and the most telemetry publishes it had unacknowledged at once (at
/// most the device's in-flight window).
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionFacts {
    session_id: u64,
    /// The CONNECT's keep-alive, in seconds.
    pub keep_alive_seconds: u16,
    /// The most QoS 1 telemetry publishes received and not yet acknowledged at one time.
    pub peak_in_flight: usize,
}

/// The registry of live sessions.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<(String, String), Entry>>,
    facts: Mutex<HashMap<(String, String), SessionFacts>>,
    next_id: AtomicU64,
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_facts(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), SessionFacts>> {
        self.facts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Register a newly authenticated session, closing an older one of the same device.
    pub fn register(
        &self,
        workspace_id: &str,
        device_id: &str,
        token_id: &str,
        keep_alive_seconds: u16,
    ) -> (u64, mpsc::UnboundedReceiver<SessionCommand>) {
        let session_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Under the sessions lock, so the facts always belong to the session registered last
        // (locks taken in this order only: sessions, then facts).
        let mut sessions = self.lock();
        self.lock_facts().insert(
            (workspace_id.to_owned(), device_id.to_owned()),
            SessionFacts {
                session_id,
                keep_alive_seconds,
                peak_in_flight: 0,
            },
        );
        let (sender, receiver) = mpsc::unbounded_channel();
        let old = sessions.insert(
            (workspace_id.to_owned(), device_id.to_owned()),
            Entry {
                session_id,
                token_id: token_id.to_owned(),
                sender,
            },
        );
        if let Some(old) = old {
            // The old session may already be gone; then there is nobody to tell.
            let _ = old.sender.send(SessionCommand::Disconnect(
                "a newer connection with the same device id".to_owned(),
            ));
        }
        (session_id, receiver)
    }

    /// A new high of the session's unacknowledged telemetry (the session calls this only when
    /// its own peak rises, so not once per message).
    pub fn record_in_flight(
        &self,
        workspace_id: &str,
        device_id: &str,
        session_id: u64,
        peak: usize,
    ) {
        if let Some(facts) = self
            .lock_facts()
            .get_mut(&(workspace_id.to_owned(), device_id.to_owned()))
            .filter(|facts| facts.session_id == session_id)
        {
            facts.peak_in_flight = facts.peak_in_flight.max(peak);
        }
    }

    /// The facts of the device's latest session, live or ended.
    pub fn facts(&self, workspace_id: &str, device_id: &str) -> Option<SessionFacts> {
        self.lock_facts()
            .get(&(workspace_id.to_owned(), device_id.to_owned()))
            .copied()
    }

    /// Forget a session that ended (only if it is still the registered one).
    pub fn unregister(&self, workspace_id: &str, device_id: &str, session_id: u64) {
        let mut sessions = self.lock();
        let key = (workspace_id.to_owned(), device_id.to_owned());
        if sessions
            .get(&key)
            .is_some_and(|e| e.session_id == session_id)
        {
            sessions.remove(&key);
        }
    }

    /// Deliver a command to the device's live session, if any.
    pub fn send(&self, workspace_id: &str, device_id: &str, command: SessionCommand) {
        if let Some(entry) = self
            .lock()
            .get(&(workspace_id.to_owned(), device_id.to_owned()))
        {
            let _ = entry.sender.send(command);
        }
    }

    /// Whether the device has a live session.
    pub fn is_connected(&self, workspace_id: &str, device_id: &str) -> bool {
        self.lock()
            .contains_key(&(workspace_id.to_owned(), device_id.to_owned()))
    }

    /// Close the device's live session and forget its facts (the device is deleted).
    pub fn forget_device(&self, workspace_id: &str, device_id: &str, reason: &str) {
        self.lock_facts()
            .remove(&(workspace_id.to_owned(), device_id.to_owned()));
        self.disconnect_device(workspace_id, device_id, reason);
    }

    /// Close the device's live session.
    pub fn disconnect_device(&self, workspace_id: &str, device_id: &str, reason: &str) {
        self.send(
            workspace_id,
            device_id,
            SessionCommand::Disconnect(reason.to_owned()),
        );
    }

    /// Close live sessions that authenticated with credentials of this Registration Token.
    pub fn disconnect_token(&self, token_id: &str, reason: &str) {
        for entry in self.lock().values().filter(|e| e.token_id == token_id) {
            let _ = entry
                .sender
                .send(SessionCommand::Disconnect(reason.to_owned()));
        }
    }
}
