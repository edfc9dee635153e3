//! The `library` world: `vdev:device/client` exported with `wit-bindgen`, each resource a thin
//! wrapper over a [`Driver`]. Resources are called through `&self`, and a stream sender shares
//! its device, so the driver sits in an `Rc<RefCell<..>>` — the single-threaded adapter layer is
//! the one place where that is fine (the core stays free of it).

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::rc::Rc;

use vdev_core::{
    Compression, ConnectionLoss, ConnectionState, Event, LogLevel, MessageOptions,
    ProvisioningError, RejectReason, RequestFailure, RequestKind, StoreError, StoreOperation,
    StreamOptions, TokenDiscardReason, Transport, Tunable, TwinError,
};

use crate::driver::{Driver, StartError, StoreFailure, now_ms};
use crate::notice::Notice;
use crate::settings::{Settings, SettingsError};

wit_bindgen::generate!({
    path: "../wit",
    world: "library",
    with: {
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        // No crate binds the logging proposal: its bindings are generated here.
        "wasi:logging/logging@0.1.0-draft": generate,
    },
});

use exports::vdev::device::client::{
    self, Device as DeviceHandle, Guest, GuestDevice, GuestStreamSender, StreamSender,
};
use vdev::device::types as wit;
use wasi::logging::logging::{self, Level};

struct Component;

export!(Component);

impl Guest for Component {
    type Device = DeviceResource;
    type StreamSender = StreamSenderResource;
}

/// A device resource.
pub(crate) struct DeviceResource {
    driver: Rc<RefCell<Driver>>,
    /// The most detailed level logged through `wasi:logging` (`configuration.log-level`).
    log_level: Option<LogLevel>,
}

/// Logs each event `poll` returns through the host's `wasi:logging`, at the level the core
/// gives it, as its JSON line (the command prints the same line), when `most_detailed` admits
/// that level (none: not even errors).
fn log_through_host(notices: &[Notice], most_detailed: Option<LogLevel>) {
    for notice in notices {
        let Notice::Core(event) = notice;
        let level = event.level();
        if most_detailed.is_some_and(|most| level.within(most)) {
            let level = match level {
                LogLevel::Error => Level::Error,
                LogLevel::Warn => Level::Warn,
                LogLevel::Info => Level::Info,
                LogLevel::Debug => Level::Debug,
            };
            logging::log(level, "vdev", &notice.to_json().to_string());
        }
    }
}

/// The core's level that `configuration.log-level` admits down to: `trace` admits everything
/// and `critical` nothing (the core logs nothing critical).
fn most_detailed(level: Level) -> Option<LogLevel> {
    match level {
        Level::Trace | Level::Debug => Some(LogLevel::Debug),
        Level::Info => Some(LogLevel::Info),
        Level::Warn => Some(LogLevel::Warn),
        Level::Error => Some(LogLevel::Error),
        Level::Critical => None,
    }
}

/// A stream sender resource.
pub(crate) struct StreamSenderResource {
    driver: Rc<RefCell<Driver>>,
    stream: StreamOptions,
}

fn stream_options(options: wit::StreamOptions) -> StreamOptions {
    StreamOptions {
        stream_group: options.stream_group,
        stream: options.stream,
        site_id: options.site_id,
        compression: match options.compression {
            wit::Compression::None => Compression::None,
            wit::Compression::Fastest => Compression::Fastest,
            wit::Compression::SmallestSize => Compression::SmallestSize,
        },
    }
}

fn message_options(options: wit::MessageOptions) -> MessageOptions {
    MessageOptions {
        batch_id: options.batch_id,
        message_id: options.message_id,
        batch_slice_id: options.batch_slice_id,
        chunk_id: options.chunk_id,
    }
}

fn send_error(failure: StoreFailure) -> wit::SendError {
    use vdev_core::SendError;
    match failure {
        StoreFailure::Refused(SendError::Message(e)) => {
            wit::SendError::InvalidMessage(e.to_string())
        }
        StoreFailure::Refused(SendError::Outbox(e)) => wit::SendError::OutboxFull(e.to_string()),
        StoreFailure::Refused(SendError::Stopped) => wit::SendError::Stopped,
        StoreFailure::NotStored(e) => wit::SendError::NotStored(store_failure(e)),
    }
}

fn connection_state(state: ConnectionState) -> wit::ConnectionState {
    match state {
        ConnectionState::Provisioning => wit::ConnectionState::Provisioning,
        ConnectionState::Disconnected => wit::ConnectionState::Disconnected,
        ConnectionState::Connecting => wit::ConnectionState::Connecting,
        ConnectionState::Connected => wit::ConnectionState::Connected,
        ConnectionState::Failed => wit::ConnectionState::Failed,
        ConnectionState::Stopped => wit::ConnectionState::Stopped,
    }
}

fn operation(op: &vdev_core::ProvisioningOperation) -> wit::ProvisioningOperation {
    wit::ProvisioningOperation {
        id: op.id.clone(),
        verification_code: op.verification_code.clone(),
        expires_at: op.expires_at,
    }
}

fn event(notice: Notice) -> wit::Event {
    match notice {
        Notice::Core(event) => match event {
            Event::ProvisioningOperation(op) => wit::Event::ProvisioningOperation(operation(&op)),
            Event::Registered {
                workspace_id,
                device_id,
            } => wit::Event::Registered(wit::Identity {
                workspace_id,
                device_id,
            }),
            Event::ProvisioningFailed(e) => wit::Event::ProvisioningFailed(provisioning_failure(e)),
            Event::ConnectionStateChanged(s) => {
                wit::Event::ConnectionStateChanged(connection_state(s))
            }
            Event::OfflineChanged { offline } => wit::Event::OfflineChanged(offline),
            Event::ConnectionLost { reason } => wit::Event::ConnectionLost(connection_loss(reason)),
            Event::RequestFailed { request, failure } => {
                wit::Event::RequestFailed(request_failed(request, failure))
            }
            Event::RegistrationTokenDiscarded { reason } => {
                wit::Event::RegistrationTokenDiscarded(match reason {
                    TokenDiscardReason::Refused { request, failure } => {
                        wit::TokenDiscardReason::Refused(request_failed(request, *failure))
                    }
                    TokenDiscardReason::Expired => wit::TokenDiscardReason::Expired,
                })
            }
            Event::MessagesStored { first, last } => {
                wit::Event::MessagesStored(wit::StoredRange { first, last })
            }
            Event::MessageDelivered { seq } => wit::Event::MessageDelivered(seq),
            Event::MessageRejected { seq, reason } => wit::Event::MessageRejected(wit::Rejection {
                seq,
                reason: reject_reason(reason),
            }),
            Event::DesiredPropertiesChanged {
                properties,
                version,
            } => wit::Event::DesiredPropertiesChanged(wit::DesiredProperties {
                properties: properties.to_string(),
                version: Some(version),
            }),
            Event::ReportedPropertiesAcknowledged => wit::Event::ReportedPropertiesAcknowledged,
            Event::ReportedPropertiesStored { revision } => {
                wit::Event::ReportedPropertiesStored(revision)
            }
            Event::ReportedPropertiesRejected { status } => {
                wit::Event::ReportedPropertiesRejected(status)
            }
            Event::PacketDropped { size, limit } => {
                wit::Event::PacketDropped(wit::DroppedPacket { size, limit })
            }
            Event::CloudToDeviceMessage {
                properties,
                payload,
            } => wit::Event::CloudToDeviceMessage(wit::CloudToDeviceMessage {
                properties,
                payload,
            }),
            Event::SavedStateDiscarded { reason } => wit::Event::SavedStateDiscarded(reason),
            Event::OutboxRecovered(recovery) => wit::Event::OutboxRecovered(wit::OutboxRecovery {
                file: recovery.file,
                valid_bytes: recovery.valid_bytes,
                cut_bytes: recovery.cut_bytes,
                reason: recovery.reason,
            }),
            Event::StoreFailed { operation, reason } => wit::Event::StoreFailed(wit::StoreFailed {
                operation: match operation {
                    StoreOperation::Load => wit::StoreOperation::Load,
                    StoreOperation::Remove => wit::StoreOperation::Remove,
                    StoreOperation::Reserve => wit::StoreOperation::Reserve,
                    StoreOperation::SaveState => wit::StoreOperation::SaveState,
                },
                reason: store_failure(reason),
            }),
        },
    }
}

fn connection_loss(reason: ConnectionLoss) -> wit::ConnectionLoss {
    match reason {
        ConnectionLoss::Refused(code) => wit::ConnectionLoss::Refused(code.code()),
        ConnectionLoss::Unreachable(text) => wit::ConnectionLoss::Unreachable(text),
        ConnectionLoss::Closed(text) => wit::ConnectionLoss::Closed(text),
        ConnectionLoss::ConnectTimedOut => wit::ConnectionLoss::ConnectTimedOut,
        ConnectionLoss::KeepAliveTimedOut => wit::ConnectionLoss::KeepAliveTimedOut,
        ConnectionLoss::AckTimedOut => wit::ConnectionLoss::AckTimedOut,
        ConnectionLoss::SubscriptionRefused => wit::ConnectionLoss::SubscriptionRefused,
        ConnectionLoss::Insecure(text) => wit::ConnectionLoss::Insecure(text),
        ConnectionLoss::Protocol(text) => wit::ConnectionLoss::Protocol(text),
    }
}

/// Which setting a start refused, and why.
fn invalid_setting(error: SettingsError) -> wit::InvalidSetting {
    match error {
        SettingsError::Invalid { name, reason } => wit::InvalidSetting { name, reason },
        SettingsError::Missing(name) => wit::InvalidSetting {
            name: name.into(),
            reason: "is missing".into(),
        },
        SettingsError::UnknownArgument(argument) => wit::InvalidSetting {
            name: argument,
            reason: "is not a setting".into(),
        },
    }
}

fn request_failed(request: RequestKind, failure: RequestFailure) -> wit::RequestFailed {
    wit::RequestFailed {
        request: match request {
            RequestKind::ProvisioningInit => wit::RequestKind::ProvisioningInit,
            RequestKind::ProvisioningComplete => wit::RequestKind::ProvisioningComplete,
            RequestKind::Register => wit::RequestKind::Register,
            RequestKind::RefreshToken => wit::RequestKind::RefreshToken,
            RequestKind::UploadSlot => wit::RequestKind::UploadSlot,
            RequestKind::UploadBlob => wit::RequestKind::UploadBlob,
            RequestKind::UploadNotify => wit::RequestKind::UploadNotify,
        },
        failure: request_failure(failure),
    }
}

fn request_failure(failure: RequestFailure) -> wit::RequestFailure {
    match failure {
        RequestFailure::Status {
            status,
            problem_type,
            detail,
        } => wit::RequestFailure::Status(wit::Problem {
            status,
            problem_type,
            detail,
        }),
        RequestFailure::Network(text) => wit::RequestFailure::Network(text),
        RequestFailure::Redirected { status } => wit::RequestFailure::Redirected(status),
        RequestFailure::Insecure(text) => wit::RequestFailure::Insecure(text),
        RequestFailure::TimedOut => wit::RequestFailure::TimedOut,
        RequestFailure::Malformed(text) => wit::RequestFailure::Malformed(text),
    }
}

fn provisioning_failure(error: ProvisioningError) -> wit::ProvisioningFailure {
    match error {
        ProvisioningError::Cancelled { operation_id } => {
            wit::ProvisioningFailure::Cancelled(operation_id)
        }
        ProvisioningError::Refused(failure) => {
            wit::ProvisioningFailure::Refused(request_failure(failure))
        }
        ProvisioningError::InvalidProvisioningToken => {
            wit::ProvisioningFailure::InvalidProvisioningToken
        }
    }
}

fn store_failure(error: StoreError) -> wit::StoreFailure {
    match error {
        StoreError::QuotaExceeded => wit::StoreFailure::QuotaExceeded,
        StoreError::Failed(text) => wit::StoreFailure::Failed(text),
    }
}

fn reject_reason(reason: RejectReason) -> wit::RejectReason {
    match reason {
        RejectReason::NotStored(error) => wit::RejectReason::NotStored(store_failure(error)),
        RejectReason::Corrupt(text) => wit::RejectReason::Corrupt(text),
        RejectReason::UploadRefused { request, failure } => {
            wit::RejectReason::UploadRefused(request_failed(request, *failure))
        }
        RejectReason::RefusedByGateway { attempts, minutes } => {
            wit::RejectReason::RefusedByGateway(wit::GatewayRefusal { attempts, minutes })
        }
        RejectReason::Unencodable(text) => wit::RejectReason::Unencodable(text),
    }
}

impl GuestDevice for DeviceResource {
    fn start(config: wit::Configuration) -> Result<DeviceHandle, wit::StartError> {
        let log_level = most_detailed(config.log_level.unwrap_or(Level::Error));
        let settings = Settings {
            instance_url: config.instance_url,
            provisioning_token: config.provisioning_token,
            device_id: config.device_id,
            provisioning_parameters: config.provisioning_parameters,
            transport: match config.transport {
                wit::Transport::Tcp => Transport::Tcp,
                wit::Transport::Tls => Transport::Tls,
                wit::Transport::WebSocket => Transport::WebSocket,
            },
            store_dir: config.store_dir,
            // The record's three fields first, then the list (which wins for a name in both).
            tunables: [
                (
                    Tunable::ProvisioningPollIntervalMs,
                    config.provisioning_poll_interval_ms,
                ),
                (Tunable::RetryInitialMs, config.retry_initial_ms),
                (Tunable::RetryMaxMs, config.retry_max_ms),
            ]
            .into_iter()
            .filter_map(|(tunable, value)| Some((tunable.kebab_name(), value?)))
            .chain(config.tunables)
            .collect(),
            tls_ca_file: config.tls_ca_file,
        };
        match Driver::start(&settings) {
            Ok(driver) => Ok(DeviceHandle::new(DeviceResource {
                driver: Rc::new(RefCell::new(driver)),
                log_level,
            })),
            Err(StartError::Settings(e)) => {
                Err(wit::StartError::InvalidConfiguration(invalid_setting(e)))
            }
            Err(StartError::Store(e)) => Err(wit::StartError::StoreUnavailable(e.to_string())),
        }
    }

    fn send(
        &self,
        stream: wit::StreamOptions,
        options: wit::MessageOptions,
        payload: Vec<u8>,
    ) -> Result<u64, wit::SendError> {
        self.driver
            .borrow_mut()
            .send(&stream_options(stream), &message_options(options), payload)
            .map_err(send_error)
    }

    fn enqueue_batch_completion(
        &self,
        stream: wit::StreamOptions,
        batch_id: String,
    ) -> Result<u64, wit::SendError> {
        self.driver
            .borrow_mut()
            .complete_batch(&stream_options(stream), &batch_id)
            .map_err(send_error)
    }

    fn enqueue_message_completion(
        &self,
        stream: wit::StreamOptions,
        batch_id: String,
        message_id: String,
    ) -> Result<u64, wit::SendError> {
        self.driver
            .borrow_mut()
            .complete_message(&stream_options(stream), &batch_id, &message_id)
            .map_err(send_error)
    }

    fn open_stream(&self, stream: wit::StreamOptions) -> StreamSender {
        StreamSender::new(StreamSenderResource {
            driver: self.driver.clone(),
            stream: stream_options(stream),
        })
    }

    fn update_reported_properties(&self, patch_json: String) -> Result<u64, wit::ReportedError> {
        vdev_core::parse_reported_patch(patch_json.as_bytes())
            .and_then(|patch| self.driver.borrow_mut().update_reported_properties(patch))
            .map_err(|error| match error {
                TwinError::Stopped => wit::ReportedError::Stopped,
                refused => wit::ReportedError::InvalidPatch(refused.to_string()),
            })
    }

    fn desired_properties(&self) -> wit::DesiredProperties {
        let driver = self.driver.borrow();
        let (properties, version) = driver.device().desired_properties();
        wit::DesiredProperties {
            properties: properties.to_string(),
            version,
        }
    }

    fn desired_properties_if_newer(&self, version: u64) -> Option<wit::DesiredProperties> {
        let driver = self.driver.borrow();
        let (properties, version) = driver.device().desired_properties_if_newer(version)?;
        Some(wit::DesiredProperties {
            properties: properties.to_string(),
            version: Some(version),
        })
    }

    fn reported_properties_pending(&self) -> bool {
        self.driver.borrow().device().reported_properties_pending()
    }

    fn reported_properties(&self) -> String {
        self.driver
            .borrow()
            .device()
            .reported_properties()
            .to_string()
    }

    fn pending_count(&self) -> u64 {
        self.driver.borrow().device().stats().pending_count
    }

    fn statistics(&self) -> wit::Statistics {
        let stats = self.driver.borrow().device().stats();
        wit::Statistics {
            pending_count: stats.pending_count,
            pending_bytes: stats.pending_bytes,
            oldest_enqueued_at: stats.oldest_enqueued_at,
            window_records: stats.window_records as u64,
            connection_state: connection_state(stats.connection_state),
            offline: stats.offline,
        }
    }

    fn provisioning_operation(&self) -> Option<wit::ProvisioningOperation> {
        self.driver
            .borrow()
            .device()
            .provisioning_operation()
            .as_ref()
            .map(operation)
    }

    fn identity(&self) -> Option<wit::Identity> {
        let driver = self.driver.borrow();
        let device = driver.device();
        Some(wit::Identity {
            workspace_id: device.workspace_id()?.to_owned(),
            device_id: device.device_id()?.to_owned(),
        })
    }

    fn poll(&self, timeout_ms: u32) -> Vec<wit::Event> {
        let mut driver = self.driver.borrow_mut();
        let end = now_ms() + u64::from(timeout_ms);
        loop {
            let wait = end.saturating_sub(now_ms());
            if driver.has_notices() {
                driver.turn(0, &[]);
            } else {
                driver.turn(wait, &[]);
            }
            if driver.has_notices() || now_ms() >= end {
                let notices = driver.take_notices();
                log_through_host(&notices, self.log_level);
                return notices.into_iter().map(event).collect();
            }
        }
    }

    fn set_offline(&self, offline: bool) {
        self.driver.borrow_mut().set_offline(offline);
    }

    fn stop(&self) {
        self.driver.borrow_mut().stop();
    }

    fn forget(&self, force: bool) -> Result<(), wit::ForgetError> {
        let mut driver = self.driver.borrow_mut();
        let pending = driver.device().stats().pending_count;
        if pending > 0 && !force {
            return Err(wit::ForgetError::MessagesPending(pending));
        }
        driver
            .forget()
            .map_err(|error| wit::ForgetError::StoreFailed(error.to_string()))
    }
}

impl GuestStreamSender for StreamSenderResource {
    fn send(&self, payload: Vec<u8>, options: wit::MessageOptions) -> Result<u64, wit::SendError> {
        self.driver
            .borrow_mut()
            .send(&self.stream, &message_options(options), payload)
            .map_err(send_error)
    }

    fn complete_batch(&self, batch_id: String) -> Result<u64, wit::SendError> {
        self.driver
            .borrow_mut()
            .complete_batch(&self.stream, &batch_id)
            .map_err(send_error)
    }

    fn complete_message(
        &self,
        batch_id: String,
        message_id: String,
    ) -> Result<u64, wit::SendError> {
        self.driver
            .borrow_mut()
            .complete_message(&self.stream, &batch_id, &message_id)
            .map_err(send_error)
    }
}

// `client` is referenced through the generated traits above.
#[allow(unused_imports)]
use client as _;
