//! # vdev-web
//!
//! The browser SDK of vdev: the sans-IO `vdev-core` device driven by browser I/O and exported
//! to JavaScript with wasm-bindgen (npm package `vdev-web`).
//!
//! - [`DeviceClient`] and [`StreamSender`] are the JavaScript API (camelCase, Promises,
//!   TypeScript types).
//! - The driver task owns the device: it feeds it WebSocket, `fetch`, IndexedDB, timer and
//!   `online` events and performs what it asks, draining outputs until `Output::Timeout`.
//!   It makes no protocol decision of its own.
//! - One client per database drives the device (Web Locks); the others forward their calls
//!   to it over a `BroadcastChannel` and take over when it stops (see `tabs.rs`).
//! - The driver's timer runs in a tiny dedicated worker, so background-tab throttling does not
//!   starve the MQTT keep-alive (see `timer.rs`).
//! - [`IdbStore`] keeps the outbox and the device state in IndexedDB (the core's storage
//!   contract); a message's promise resolves once its transaction has committed.
//!
//! ```js
//! import init, { DeviceClient } from "vdev-web";
//! await init();
//! const client = await DeviceClient.start({
//!   instance: "example.com",
//!   provisioningToken: "...",
//!   database: "vdev-thermostat",
//!   onProvisioningOperation: (op) => console.log("approve", op.verificationCode),
//! });
//! const sender = client.createStreamSender({ stream: "temperature" });
//! const sequence = await sender.sendMessage(JSON.stringify({ celsius: 21.5 }));
//! ```

#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

mod api;
mod channel;
mod driver;
mod error;
mod http;
mod runtime;
mod socket;
mod store;
mod tabs;
mod timer;

pub use api::{
    DesiredProperties, DeviceClient, DonePromise, Payload, PropertiesPatch, SendOptions,
    SequencePromise, StartOptions, StartPromise, Statistics, StreamSender, StreamSenderOptions,
};
pub use error::ClientError;

// Talc instead of Rust's default allocator (dlmalloc) in the browser: smaller in the bundle
// and no slower.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
pub use store::{IdbStore, OpenError, StoredContents};
