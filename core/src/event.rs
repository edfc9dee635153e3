//! What the app is told: the one vocabulary of events that every host forwards.
//!
//! Each event has one name and one shape, defined here and nowhere else. Hosts do not re-list
//! events: they forward [`Event::to_value`] (a JSON object whose `kind` is the event's name and
//! whose other members are its fields, camelCase) and the one byte-string field an event may
//! carry, [`Event::payload`], which stays out of the JSON. [`EVENT_VOCABULARY`] lists every
//! name and field, so that a test can check the TypeScript declarations and the WIT against it.
//!
//! The event enums and the reasons they carry are deliberately not `#[non_exhaustive]`: a host
//! that maps them onto its own types (the WIT variants) must match every variant, so a new one
//! fails to compile there instead of being mislabelled by a catch-all arm.

use crate::prelude::*;

use serde::Serialize;

use crate::json::Value;
use crate::outbox::RejectReason;
use crate::provisioning::{ProvisioningError, ProvisioningOperation};
use crate::reason::{ConnectionLoss, Reason, RequestFailure, RequestKind, TokenDiscardReason};
use crate::store::{Seq, StoreError, StoreOperation, StoreRecovery};

/// Where the device stands with the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionState {
    /// Waiting for a technician to approve provisioning.
    Provisioning,
    /// Not connected; a reconnect is scheduled (or the device is stopped).
    Disconnected,
    /// Opening the connection.
    Connecting,
    /// Connected and subscribed: messages flow.
    Connected,
    /// Provisioning failed for good; messages stay queued.
    Failed,
    /// [`crate::Device::stop`] was called.
    Stopped,
}

impl ConnectionState {
    /// The state's name as hosts show it (JavaScript strings, WIT and JSON events), the same
    /// as its serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// How much a person watching a device's log wants to see an event, most severe first: every
/// host logs an event at [`Event::level`] and admits it by [`LogLevel::within`]. `Error` when
/// the device's storage is in trouble, `Warn` for a failure it works around or a message it
/// gives up on, `Info` for the milestones (provisioning, the connection), `Debug` for the
/// traffic of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// The device's storage is in trouble.
    Error,
    /// A failure worked around, or a message given up.
    Warn,
    /// Provisioning and the connection.
    Info,
    /// Every message's and update's progress.
    Debug,
}

impl LogLevel {
    /// Every level, most severe first.
    pub const ALL: [LogLevel; 4] = [Self::Error, Self::Warn, Self::Info, Self::Debug];

    /// The level's name in every host: `error`, `warn`, `info`, `debug`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }

    /// The level named `name` ([`LogLevel::name`]).
    pub fn from_name(name: &str) -> Option<LogLevel> {
        Self::ALL.into_iter().find(|level| level.name() == name)
    }

    /// Whether an event at this level is logged by an app that wants `most_detailed` and
    /// everything more severe.
    pub fn within(self, most_detailed: LogLevel) -> bool {
        self <= most_detailed
    }
}

/// What the app is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Show this operation (verification code, expiry) so a technician can approve it.
    ProvisioningOperation(ProvisioningOperation),
    /// The device holds a Registration Token and a credential for this identity.
    Registered {
        /// Workspace id.
        workspace_id: String,
        /// Device id.
        device_id: String,
    },
    /// Provisioning stopped for good; the device needs a new start with other settings.
    ProvisioningFailed(ProvisioningError),
    /// The connection state changed.
    ConnectionStateChanged(ConnectionState),
    /// The device went offline (the network is lost or the app says so, see
    /// [`crate::Input::AppOffline`]: the connection is closed and nothing is sent, sends are
    /// still stored) or online again.
    OfflineChanged {
        /// Whether it is offline now.
        offline: bool,
    },
    /// A connection to the gateway ended or could not be opened; the device reconnects after
    /// a backoff delay. Not emitted when the device closes it on purpose (stop, renewed
    /// credentials, a discarded token: that has its own event).
    ConnectionLost {
        /// Why.
        reason: ConnectionLoss,
    },
    /// A request to the Platform's HTTP API failed. The activity that made it retries after
    /// a backoff delay unless a terminal event ([`Event::ProvisioningFailed`],
    /// [`Event::RegistrationTokenDiscarded`], [`Event::MessageRejected`]) follows.
    RequestFailed {
        /// Which request.
        request: RequestKind,
        /// Why.
        failure: RequestFailure,
    },
    /// The device dropped its Registration Token and provisions again (its queue is kept).
    RegistrationTokenDiscarded {
        /// Why.
        reason: TokenDiscardReason,
    },
    /// Messages `first..=last` are durable in the host's store: their sends are done (the
    /// host resolves the app's promises on this event, never by its own reckoning).
    MessagesStored {
        /// The first sequence number.
        first: Seq,
        /// The last sequence number.
        last: Seq,
    },
    /// The Platform acknowledged this message.
    MessageDelivered {
        /// Its sequence number (what `send` returned).
        seq: Seq,
    },
    /// This message will never be delivered.
    MessageRejected {
        /// Its sequence number.
        seq: Seq,
        /// Why.
        reason: RejectReason,
    },
    /// Desired properties changed (also sent once after the first twin fetch).
    DesiredPropertiesChanged {
        /// The whole desired document (without `$version`).
        properties: Value,
        /// Its version.
        version: u64,
    },
    /// The Platform accepted a reported-properties patch.
    ReportedPropertiesAcknowledged,
    /// Reported-properties updates up to this revision (what
    /// [`crate::Device::update_reported_properties`] returned) are durable in the host's store:
    /// they reach the Platform even after a restart.
    ReportedPropertiesStored {
        /// The newest durable revision.
        revision: u64,
    },
    /// The Platform refused a reported-properties patch; it is sent again later.
    ReportedPropertiesRejected {
        /// The status it answered with.
        status: u16,
    },
    /// The gateway sent a packet larger than the device takes
    /// ([`crate::SessionConfig::max_packet_size`]): a cloud-to-device message or a twin document
    /// that big. It was discarded and the connection kept; a twin fetch that waited for it is
    /// asked again later.
    PacketDropped {
        /// The packet's size in bytes, as its header declared it.
        size: u64,
        /// The device's limit.
        limit: u64,
    },
    /// A cloud-to-device message.
    CloudToDeviceMessage {
        /// The property bag of its topic, decoded leniently (an escape that is not one stays
        /// as written), in order. In the event's JSON it is an object: a name given twice
        /// keeps its last value.
        properties: Vec<(String, String)>,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A storage operation failed; the core asks for it again after a delay (reading: the
    /// messages wait, none is lost; removing: a delivered message could be sent again after a
    /// restart until it succeeds; saving the state: the last state is saved again). Repeated
    /// failures mean the host's storage is in trouble. Appends that fail end in
    /// [`Event::MessageRejected`] instead.
    StoreFailed {
        /// Which operation.
        operation: StoreOperation,
        /// What the store said.
        reason: StoreError,
    },
    /// The saved state could not be read and was replaced (queued messages are untouched).
    SavedStateDiscarded {
        /// Why it was unreadable.
        reason: String,
    },
    /// The store cut an unreadable tail when it opened; the records before it are kept (see
    /// [`crate::Input::StoreRecovered`]).
    OutboxRecovered(Box<StoreRecovery>),
}

/// Every event's name and fields, as [`Event::to_value`] writes them (the byte-string
/// `payload` included). Reasons are objects `{code, message, ..}` (see [`crate::Reason`]).
pub const EVENT_VOCABULARY: &[(&str, &[&str])] = &[
    (
        "provisioningOperation",
        &["id", "verificationCode", "expiresAt"],
    ),
    ("registered", &["workspaceId", "deviceId"]),
    ("provisioningFailed", &["reason"]),
    ("connectionStateChanged", &["state"]),
    ("offlineChanged", &["offline"]),
    ("connectionLost", &["reason"]),
    ("requestFailed", &["request", "failure"]),
    ("registrationTokenDiscarded", &["reason"]),
    ("messagesStored", &["first", "last"]),
    ("messageDelivered", &["seq"]),
    ("messageRejected", &["seq", "reason"]),
    ("desiredPropertiesChanged", &["properties", "version"]),
    ("reportedPropertiesAcknowledged", &[]),
    ("reportedPropertiesStored", &["revision"]),
    ("reportedPropertiesRejected", &["status"]),
    ("packetDropped", &["size", "limit"]),
    ("cloudToDeviceMessage", &["properties", "payload"]),
    ("storeFailed", &["operation", "reason"]),
    ("savedStateDiscarded", &["reason"]),
    (
        "outboxRecovered",
        &["file", "validBytes", "cutBytes", "reason"],
    ),
];

impl Event {
    /// The event's name (camelCase; WIT spells it in kebab-case).
    pub fn name(&self) -> &'static str {
        match self {
            Self::ProvisioningOperation(_) => "provisioningOperation",
            Self::Registered { .. } => "registered",
            Self::ProvisioningFailed(_) => "provisioningFailed",
            Self::ConnectionStateChanged(_) => "connectionStateChanged",
            Self::OfflineChanged { .. } => "offlineChanged",
            Self::ConnectionLost { .. } => "connectionLost",
            Self::RequestFailed { .. } => "requestFailed",
            Self::RegistrationTokenDiscarded { .. } => "registrationTokenDiscarded",
            Self::MessagesStored { .. } => "messagesStored",
            Self::MessageDelivered { .. } => "messageDelivered",
            Self::MessageRejected { .. } => "messageRejected",
            Self::DesiredPropertiesChanged { .. } => "desiredPropertiesChanged",
            Self::ReportedPropertiesAcknowledged => "reportedPropertiesAcknowledged",
            Self::ReportedPropertiesStored { .. } => "reportedPropertiesStored",
            Self::ReportedPropertiesRejected { .. } => "reportedPropertiesRejected",
            Self::PacketDropped { .. } => "packetDropped",
            Self::CloudToDeviceMessage { .. } => "cloudToDeviceMessage",
            Self::StoreFailed { .. } => "storeFailed",
            Self::SavedStateDiscarded { .. } => "savedStateDiscarded",
            Self::OutboxRecovered(_) => "outboxRecovered",
        }
    }

    /// How much a person watching the device's log wants to see it, so that every host logs
    /// the same event at the same level (see [`LogLevel`]).
    pub fn level(&self) -> LogLevel {
        match self {
            Self::StoreFailed { .. } | Self::SavedStateDiscarded { .. } => LogLevel::Error,
            Self::ProvisioningFailed(_)
            | Self::ConnectionLost { .. }
            | Self::RequestFailed { .. }
            | Self::RegistrationTokenDiscarded { .. }
            | Self::MessageRejected { .. }
            | Self::ReportedPropertiesRejected { .. }
            | Self::PacketDropped { .. }
            | Self::OutboxRecovered(_) => LogLevel::Warn,
            Self::ProvisioningOperation(_)
            | Self::Registered { .. }
            | Self::ConnectionStateChanged(_)
            | Self::OfflineChanged { .. } => LogLevel::Info,
            Self::MessagesStored { .. }
            | Self::MessageDelivered { .. }
            | Self::DesiredPropertiesChanged { .. }
            | Self::ReportedPropertiesAcknowledged
            | Self::ReportedPropertiesStored { .. }
            | Self::CloudToDeviceMessage { .. } => LogLevel::Debug,
        }
    }

    /// The event as one JSON object: `kind` (its name) and its fields, except the byte string
    /// [`Event::payload`], which hosts attach in their own form.
    pub fn to_value(&self) -> Value {
        let mut fields: Vec<(&str, Value)> = vec![("kind", self.name().into())];
        match self {
            Self::ProvisioningOperation(op) => fields.extend([
                ("id", op.id.as_str().into()),
                ("verificationCode", op.verification_code.as_str().into()),
                ("expiresAt", op.expires_at.into()),
            ]),
            Self::Registered {
                workspace_id,
                device_id,
            } => fields.extend([
                ("workspaceId", workspace_id.as_str().into()),
                ("deviceId", device_id.as_str().into()),
            ]),
            Self::ProvisioningFailed(error) => fields.push(("reason", error.to_value())),
            Self::ConnectionStateChanged(state) => fields.push(("state", state.as_str().into())),
            Self::OfflineChanged { offline } => fields.push(("offline", (*offline).into())),
            Self::ConnectionLost { reason } => fields.push(("reason", reason.to_value())),
            Self::RequestFailed { request, failure } => fields.extend([
                ("request", request.as_str().into()),
                ("failure", failure.to_value()),
            ]),
            Self::RegistrationTokenDiscarded { reason } => {
                fields.push(("reason", reason.to_value()))
            }
            Self::MessagesStored { first, last } => {
                fields.extend([("first", (*first).into()), ("last", (*last).into())])
            }
            Self::MessageDelivered { seq } => fields.push(("seq", (*seq).into())),
            Self::MessageRejected { seq, reason } => {
                fields.extend([("seq", (*seq).into()), ("reason", reason.to_value())])
            }
            Self::DesiredPropertiesChanged {
                properties,
                version,
            } => fields.extend([
                ("properties", properties.clone()),
                ("version", (*version).into()),
            ]),
            Self::ReportedPropertiesAcknowledged => {}
            Self::ReportedPropertiesStored { revision } => {
                fields.push(("revision", (*revision).into()))
            }
            Self::ReportedPropertiesRejected { status } => {
                fields.push(("status", (*status).into()))
            }
            Self::PacketDropped { size, limit } => {
                fields.extend([("size", (*size).into()), ("limit", (*limit).into())])
            }
            Self::CloudToDeviceMessage { properties, .. } => {
                let properties = properties
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str().into()));
                fields.push(("properties", Value::object(properties)))
            }
            Self::StoreFailed { operation, reason } => fields.extend([
                ("operation", operation.as_str().into()),
                ("reason", reason.to_value()),
            ]),
            Self::SavedStateDiscarded { reason } => fields.push(("reason", reason.as_str().into())),
            Self::OutboxRecovered(recovery) => fields.extend([
                ("file", recovery.file.as_str().into()),
                ("validBytes", recovery.valid_bytes.into()),
                ("cutBytes", recovery.cut_bytes.into()),
                ("reason", recovery.reason.as_str().into()),
            ]),
        }
        Value::object(fields)
    }

    /// The event's byte-string field (`payload`), kept out of [`Event::to_value`].
    pub fn payload(&self) -> Option<&[u8]> {
        match self {
            Self::CloudToDeviceMessage { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// What this event settles of the `send` calls still waiting for their message to be
    /// stored: the one rule every host applies, instead of each reckoning durability itself.
    pub fn send_settlement(&self) -> Option<SendSettlement<'_>> {
        match self {
            Self::MessagesStored { first, last } => Some(SendSettlement::Stored {
                first: *first,
                last: *last,
            }),
            // A message is only ever rejected before it is stored because its append failed.
            Self::MessageRejected {
                seq,
                reason: RejectReason::NotStored(error),
            } => Some(SendSettlement::NotStored { seq: *seq, error }),
            _ => None,
        }
    }
}

/// How an event settles the `send` calls that wait for their message to be stored (see
/// [`Event::send_settlement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendSettlement<'a> {
    /// Messages `first..=last` are durable: their sends succeed.
    Stored {
        /// The first sequence number.
        first: Seq,
        /// The last sequence number.
        last: Seq,
    },
    /// Message `seq` was not stored: its send fails with `error`.
    NotStored {
        /// Its sequence number.
        seq: Seq,
        /// Why the store could not write it.
        error: &'a StoreError,
    },
}

impl<'a> SendSettlement<'a> {
    /// The sequence numbers whose sends this settles.
    pub fn seqs(self) -> core::ops::RangeInclusive<Seq> {
        match self {
            Self::Stored { first, last } => first..=last,
            Self::NotStored { seq, .. } => seq..=seq,
        }
    }

    /// The outcome of the send of `seq`, if this settles it.
    pub fn outcome(self, seq: Seq) -> Option<Result<Seq, &'a StoreError>> {
        if !self.seqs().contains(&seq) {
            return None;
        }
        Some(match self {
            Self::Stored { .. } => Ok(seq),
            Self::NotStored { error, .. } => Err(error),
        })
    }
}

/// `camelCase` as `kebab-case`: the WIT's and the command line's spelling of the names the
/// core gives in camelCase (events, tunables).
pub fn kebab_case(name: &str) -> String {
    let mut kebab = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            kebab.push('-');
            kebab.push(c.to_ascii_lowercase());
        } else {
            kebab.push(c);
        }
    }
    kebab
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::codec::ConnectReturnCode;

    /// One event of every kind (the `match` in [`Event::name`] makes a new kind a compile
    /// error there; this list must then grow too, or the vocabulary test below fails).
    fn one_of_each() -> Vec<Event> {
        vec![
            Event::ProvisioningOperation(ProvisioningOperation {
                id: "op".into(),
                verification_code: "ABC".into(),
                expires_at: 1,
            }),
            Event::Registered {
                workspace_id: "ws".into(),
                device_id: "dev".into(),
            },
            Event::ProvisioningFailed(ProvisioningError::InvalidProvisioningToken),
            Event::ConnectionStateChanged(ConnectionState::Connected),
            Event::OfflineChanged { offline: true },
            Event::ConnectionLost {
                reason: ConnectionLoss::Refused(ConnectReturnCode::NotAuthorized),
            },
            Event::RequestFailed {
                request: RequestKind::Register,
                failure: RequestFailure::TimedOut,
            },
            Event::RegistrationTokenDiscarded {
                reason: TokenDiscardReason::Expired,
            },
            Event::MessagesStored { first: 1, last: 2 },
            Event::MessageDelivered { seq: 1 },
            Event::MessageRejected {
                seq: 2,
                reason: RejectReason::Corrupt("bad".into()),
            },
            Event::DesiredPropertiesChanged {
                properties: Value::object([("a", 1u64.into())]),
                version: 3,
            },
            Event::ReportedPropertiesAcknowledged,
            Event::ReportedPropertiesStored { revision: 4 },
            Event::ReportedPropertiesRejected { status: 400 },
            Event::PacketDropped {
                size: 3 << 20,
                limit: 1 << 20,
            },
            Event::CloudToDeviceMessage {
                properties: vec![("a".into(), "b".into())],
                payload: b"hi".to_vec(),
            },
            Event::StoreFailed {
                operation: StoreOperation::Remove,
                reason: StoreError::QuotaExceeded,
            },
            Event::SavedStateDiscarded {
                reason: "bad json".into(),
            },
            Event::OutboxRecovered(Box::new(StoreRecovery {
                file: "segment-0".into(),
                valid_bytes: 10,
                cut_bytes: 3,
                reason: "torn write".into(),
            })),
        ]
    }

    #[test]
    fn log_levels_admit_the_more_severe_and_read_back_by_name() {
        for (at, level) in LogLevel::ALL.into_iter().enumerate() {
            assert_eq!(LogLevel::from_name(level.name()), Some(level));
            for (other_at, other) in LogLevel::ALL.into_iter().enumerate() {
                assert_eq!(
                    level.within(other),
                    at <= other_at,
                    "{level:?} within {other:?}"
                );
            }
        }
        assert_eq!(LogLevel::from_name("trace"), None);
        assert!(LogLevel::Error.within(LogLevel::Warn));
        assert!(!LogLevel::Debug.within(LogLevel::Info));
    }

    #[test]
    fn the_vocabulary_lists_every_event_with_exactly_the_fields_it_writes() {
        let events = one_of_each();
        assert_eq!(events.len(), EVENT_VOCABULARY.len());
        for (event, (name, fields)) in events.iter().zip(EVENT_VOCABULARY) {
            assert_eq!(event.name(), *name);
            let value = event.to_value();
            let mut written: Vec<&str> = value
                .as_object()
                .unwrap()
                .iter()
                .map(|(key, _)| key)
                .filter(|key| *key != "kind")
                .collect();
            if event.payload().is_some() {
                written.push("payload");
            }
            written.sort_unstable();
            let mut listed = fields.to_vec();
            listed.sort_unstable();
            assert_eq!(written, listed, "fields of {name}");
            assert_eq!(value.get("kind").and_then(Value::as_str), Some(*name));
        }
    }

    #[test]
    fn reasons_travel_with_a_code_and_a_message() {
        let event = Event::ConnectionLost {
            reason: ConnectionLoss::Unreachable("connection refused".into()),
        };
        assert_eq!(
            event.to_value().to_json(),
            r#"{"kind":"connectionLost","reason":{"code":"unreachable","message":"the gateway is unreachable: connection refused"}}"#
        );
    }

    #[test]
    fn only_stored_ranges_and_failed_appends_settle_sends() {
        let quota = StoreError::QuotaExceeded;
        let stored = Event::MessagesStored { first: 3, last: 5 };
        let settlement = stored.send_settlement().unwrap();
        assert_eq!(settlement.outcome(2), None);
        assert_eq!(settlement.outcome(4), Some(Ok(4)));
        let not_stored = Event::MessageRejected {
            seq: 7,
            reason: RejectReason::NotStored(quota.clone()),
        };
        assert_eq!(
            not_stored.send_settlement().unwrap().outcome(7),
            Some(Err(&quota))
        );
        // Rejected after it was stored: the send resolved long ago, nothing to settle.
        let corrupt = Event::MessageRejected {
            seq: 7,
            reason: RejectReason::Corrupt("bad".into()),
        };
        assert_eq!(corrupt.send_settlement(), None);
        assert_eq!(Event::MessageDelivered { seq: 4 }.send_settlement(), None);
    }
}
