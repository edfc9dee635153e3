//! # vdev-core
//!
//! The whole logic of the vdev device SDK — provisioning, Registration Token lifetime, the MQTT
//! session, the durable outbox, the twin, large-message uploads and backoff — as a pure state
//! machine. It does **no I/O, reads no clock, draws no random numbers and takes no locks**: the
//! host (browser, WASI component, native test driver) feeds it inputs stamped with the current
//! time and performs the outputs it asks for. One code path serves every host, and the whole
//! device can be run inside a deterministic simulator.
//!
//! ## Run loop
//!
//! After **any** call that changes the device (an input, a timeout, a command such as
//! [`Device::send`]), poll [`Device::poll_output`] until it returns [`Output::Timeout`]:
//!
//! 1. Create the [`Device`] with its configuration, the time, 32 random bytes and what the
//!    store holds ([`OutboxMeta`] and the saved state blob).
//! 2. Drain outputs: perform [`Output::Http`], [`Output::Connect`], [`Output::Transmit`],
//!    [`Output::Close`] and [`Output::Store`] (store requests in order), show
//!    [`Output::Event`]s to the app.
//! 3. On [`Output::Timeout`], arm one timer for that deadline.
//! 4. When something happens — a response, bytes, a closed connection, a finished store
//!    operation, the timer — call [`Device::handle_input`] (or [`Device::handle_timeout`]) with
//!    the current time, then go to 2.
//!
//! ```no_run
//! use vdev_core::{Device, DeviceConfig, Input, MemoryStore, Output};
//!
//! fn now() -> u64 {
//!     // The host's clock: milliseconds since the Unix epoch.
//!     # 1_800_000_000_000
//! }
//!
//! let mut store = MemoryStore::new("k3x9q2");
//! let config = DeviceConfig::new("http://127.0.0.1:8080", "provisioning-token");
//! let mut device = Device::new(config, now(), [7; 32], &store.meta(), store.state());
//! let seq = device
//!     .send(now(), &Default::default(), &Default::default(), b"21.5".to_vec())
//!     .expect("the outbox has room");
//! loop {
//!     match device.poll_output() {
//!         Output::Store(request) => {
//!             if let Some(answer) = store.execute(request) {
//!                 device.handle_input(now(), answer);
//!             }
//!         }
//!         Output::Event(event) => println!("message {seq}: {event:?}"),
//!         Output::Timeout(deadline) => {
//!             // Sleep until `deadline` or until I/O is ready, feed what happened, then:
//!             let _ = deadline;
//!             device.handle_input(now(), Input::Timeout);
//!         }
//!         // Perform HTTP requests and socket operations, answering with `handle_input`.
//!         _ => {}
//!     }
//! }
//! ```
//!
//! ## Design
//!
//! There are no callbacks: a callback would need shared ownership of the device, which means
//! `Rc<RefCell<..>>` or locks, and re-entrancy bugs when the callback calls back in. Instead
//! everything the core wants to happen is a value the host polls, as in quinn-proto and str0m.
//! Time is an argument: the host's wall clock, which the core turns into a timeline of its own
//! that a backward step of the clock does not stop (see the `clock` module).
//! Randomness comes from the host's seed, so a simulation run is reproducible from its seed.
//!
//! ## Panics, errors and unwraps
//!
//! Input from the network, the Platform, the store and the app never panics: malformed packets
//! close the connection, bad JSON is retried or reported, unreadable records are rejected with
//! a reason. Every `expect` in the crate names the invariant that makes it unreachable.
//!
//! ## Durability
//!
//! [`Device::send`] returns a sequence number; the message is durable once the host has
//! executed the [`StoreRequest::Append`] it produces (the host resolves the app's promise
//! then). Only durable messages are published. Every message ends with
//! [`Event::MessageDelivered`] or [`Event::MessageRejected`].

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

// `no_std` with `alloc`: the core needs no more than a heap, and a host that links no `std`
// (the browser build) can then bring its own panic handler (see `wasm-web/SIZE.md`). The
// `brotli` encoder is the one part that needs `std`; the unit tests use it too.
extern crate alloc;
#[cfg(any(test, feature = "brotli"))]
extern crate std;

/// What `std`'s prelude gives every module and `core`'s does not.
mod prelude {
    pub(crate) use alloc::borrow::ToOwned;
    pub(crate) use alloc::boxed::Box;
    pub(crate) use alloc::string::String;
    pub(crate) use alloc::vec;
    pub(crate) use alloc::vec::Vec;
    // Tests only: the core's own texts are written with `text!` (see `text`).
    #[cfg(test)]
    pub(crate) use alloc::{format, string::ToString};
}

/// serde_json's `json!`, as a core JSON value: for the unit tests, and defined before the
/// modules so that all of them see it.
#[cfg(test)]
macro_rules! value {
    ($($json:tt)+) => {
        serde_json::from_value::<$crate::json::Value>(serde_json::json!($($json)+)).unwrap()
    };
}

// First: its macros (`text!`, `put!`, `described!`) are seen only by the modules after it.
#[macro_use]
mod text;
mod backoff;
mod cleartext;
mod clock;
mod config;
// The wire-format modules marked below are `pub` inside private modules: `testing` re-exports them for the
// tests and the simulator; without it they are crate-internal. Of MQTT the app sees only
// `ConnectReturnCode` (inside `ConnectionLoss`) and the session's endpoint types.
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod connection_string;
mod device;
mod event;
mod excerpt;
#[cfg(feature = "file-outbox")]
pub mod file_outbox;
mod http;
mod identity;
mod iothub;
pub mod json;
mod keyed;
mod message;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod mqtt;
mod outbox;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod property_bag;
mod provisioning;
mod publish;
mod reason;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod retry_after;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod rng;
mod saved;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod timespan;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod timestamp;
mod token;
mod twin;
mod upload;

pub use backoff::BackoffConfig;
pub use cleartext::{InsecureUrl, check_url};
pub use config::{ConfigError, ConfigOption, DeviceConfig, Transport, Tunable};
pub use device::{Device, Input, Output, SendError, Stats};
pub use event::{ConnectionState, EVENT_VOCABULARY, Event, LogLevel, SendSettlement, kebab_case};
pub use http::{HttpRequest, HttpResponse, MAX_ANSWER_BYTES, Method, RequestId};
pub use identity::{DEVICE_ID_MAX_LEN, DEVICE_ID_MIN_LEN, DeviceId, DeviceIdError};
pub use iothub::GatewayEndpoints;
pub use message::{
    BrotliEncoder, Compression, MAX_PAYLOAD_BYTES, MAX_RECORD_BYTES, MessageError, MessageOptions,
    RecordError, StreamOptions,
};
pub use mqtt::codec::ConnectReturnCode;
pub use mqtt::session::{ConnectionId, Endpoint, SessionConfig};
pub use outbox::{OutboxError, OutboxLimits, RejectReason};
pub use provisioning::{ProvisioningError, ProvisioningOperation};
pub use reason::{
    ConnectionLoss, REASON_VOCABULARY, Reason, ReasonCode, RequestFailure, RequestKind,
    TokenDiscardReason,
};
pub use store::{
    MemoryStore, OutboxMeta, Record, Seq, StoreError, StoreOperation, StoreRecovery, StoreRequest,
};
pub use text::{Describe, Piece};
pub use token::{ConnectionInfo, RegistrationToken};
pub use twin::{TwinConfig, TwinError, TwinState, parse_reported_patch};
