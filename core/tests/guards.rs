//! Guard tests (in the manner of str0m's `rtc_is_send` and `event_is_reasonably_sized`):
//! properties of the public types that a refactor could break without any behaviour test
//! noticing.

use std::error::Error;
use std::fmt::Debug;
use std::mem::size_of;

use vdev_core::testing::mqtt::{
    ConnAck, Connect, ConnectReturnCode, DecodeError, EncodeError, Packet, Publish, QoS, SubAck,
    SubAckCode, Subscribe,
};
use vdev_core::testing::{
    ConnectionString, ConnectionStringError, PropertyBagError, TimeSpanError, TimestampError,
};
use vdev_core::{
    BackoffConfig, Compression, ConnectionId, ConnectionInfo, ConnectionState, Device,
    DeviceConfig, DeviceId, DeviceIdError, Endpoint, Event, GatewayEndpoints, HttpRequest,
    HttpResponse, Input, MemoryStore, MessageError, MessageOptions, Method, OutboxError,
    OutboxLimits, OutboxMeta, Output, ProvisioningError, ProvisioningOperation, Record,
    RecordError, RegistrationToken, RejectReason, RequestFailure, RequestId, RequestKind,
    SendError, SessionConfig, Stats, StoreError, StoreRequest, StreamOptions, Transport,
    TwinConfig, TwinError, TwinState,
};

fn is_send<T: Send>() {}
fn is_debug<T: Debug>() {}
fn is_error<T: Error + Send + Sync + 'static>() {}

/// A host may run the device on a worker thread or move it between tasks of a multi-threaded
/// runtime; the core holds no `Rc` or other thread-bound state.
#[test]
fn device_and_its_outputs_are_send() {
    is_send::<Device>();
    is_send::<Output>();
    is_send::<Event>();
    is_send::<Input<'static>>();
    is_send::<MemoryStore>();
}

/// `poll_output` returns an `Output` by value for every step of the drain loop, and events are
/// queued inside the device. Measured on 64-bit targets: `Output` is 96 bytes (its largest
/// variant is `Http(HttpRequest)`: url, headers and body vectors, id, deadline and the answer limit) and `Event`
/// 56 bytes. A variant that embeds a large value instead of boxing it fails here.
#[test]
fn output_and_event_are_reasonably_sized() {
    let output = size_of::<Output>();
    let event = size_of::<Event>();
    assert!(output <= 96, "Output grew to {output} bytes");
    assert!(event <= 64, "Event grew to {event} bytes");
}

/// Hosts log what they get from the core; every public type prints with `{:?}`.
#[test]
fn public_types_are_debug() {
    is_debug::<Device>();
    is_debug::<DeviceConfig>();
    is_debug::<Transport>();
    is_debug::<BackoffConfig>();
    is_debug::<SessionConfig>();
    is_debug::<OutboxLimits>();
    is_debug::<TwinConfig>();
    is_debug::<Input<'static>>();
    is_debug::<Output>();
    is_debug::<Event>();
    is_debug::<ConnectionState>();
    is_debug::<Stats>();
    is_debug::<HttpRequest>();
    is_debug::<HttpResponse>();
    is_debug::<Method>();
    is_debug::<RequestId>();
    is_debug::<ConnectionId>();
    is_debug::<Endpoint>();
    is_debug::<StoreRequest>();
    is_debug::<Record>();
    is_debug::<OutboxMeta>();
    is_debug::<MemoryStore>();
    is_debug::<DeviceId>();
    is_debug::<ConnectionString>();
    is_debug::<ConnectionInfo>();
    is_debug::<GatewayEndpoints>();
    is_debug::<RegistrationToken>();
    is_debug::<ProvisioningOperation>();
    is_debug::<StreamOptions>();
    is_debug::<MessageOptions>();
    is_debug::<Compression>();
    is_debug::<TwinState>();
    is_debug::<RejectReason>();
    is_debug::<Packet>();
    is_debug::<Connect>();
    is_debug::<ConnAck>();
    is_debug::<ConnectReturnCode>();
    is_debug::<Publish>();
    is_debug::<Subscribe>();
    is_debug::<SubAck>();
    is_debug::<SubAckCode>();
    is_debug::<QoS>();
}

/// Errors go into `Box<dyn Error + Send + Sync>` (and `anyhow`) in host code.
#[test]
fn public_errors_are_std_errors() {
    is_error::<SendError>();
    is_error::<OutboxError>();
    is_error::<StoreError>();
    is_error::<ProvisioningError>();
    is_error::<RejectReason>();
    is_error::<MessageError>();
    is_error::<RecordError>();
    is_error::<DeviceIdError>();
    is_error::<ConnectionStringError>();
    is_error::<PropertyBagError>();
    is_error::<TimeSpanError>();
    is_error::<TimestampError>();
    is_error::<TwinError>();
    is_error::<EncodeError>();
    is_error::<DecodeError>();
}

/// Error messages are lowercase sentences without a trailing period (house style), so hosts
/// can embed them in their own messages.
#[test]
fn error_messages_are_lowercase() {
    let messages = [
        SendError::Stopped.to_string(),
        StoreError::QuotaExceeded.to_string(),
        ProvisioningError::InvalidProvisioningToken.to_string(),
        ProvisioningError::Cancelled {
            operation_id: "op-1".into(),
        }
        .to_string(),
        RejectReason::UploadRefused {
            request: RequestKind::UploadBlob,
            failure: Box::new(RequestFailure::TimedOut),
        }
        .to_string(),
        RequestFailure::Malformed("missing field `x`".into()).to_string(),
        DeviceId::parse("x").unwrap_err().to_string(),
    ];
    for message in messages {
        let first = message.chars().next().unwrap();
        assert!(
            !first.is_uppercase() && !message.ends_with('.'),
            "{message}"
        );
    }
}

#[test]
fn connection_state_names_are_their_serde_names() {
    use vdev_core::ConnectionState::*;
    for state in [
        Provisioning,
        Disconnected,
        Connecting,
        Connected,
        Failed,
        Stopped,
    ] {
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            serde_json::Value::from(state.as_str())
        );
    }
}
