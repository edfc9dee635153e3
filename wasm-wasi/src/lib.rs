//! vdev as a WASI Preview 2 component.
//!
//! The WIT package `vdev:device` (in `wit/`) has two worlds, both built from this crate by
//! `cargo build -p vdev-wasi --target wasm32-wasip2 --release`:
//!
//! - `library` (`vdev_wasi.wasm`): exports `vdev:device/client`, a device resource that apps and
//!   hosts drive with `poll(timeout-ms)`;
//! - `command` (`vdev-device.wasm`): a ready virtual device for `wasmtime run`, configured by
//!   arguments and environment.
//!
//! The crate is an adapter and nothing more: [`vdev_core::Device`] holds all protocol logic;
//! here are the file outbox ([`file_store`]) and, on `wasm32-wasip2`, one event loop that
//! performs the core's outputs with `wasi:sockets`, `wasi:http`, `wasi:clocks` and
//! `wasi:random`. The file outbox and the option parsing are plain Rust and are unit-tested
//! natively; everything that touches WASI is compiled for `target_os = "wasi"` only.

// `deny`, not `forbid`: the code `wit-bindgen` generates for the library world needs `unsafe`,
// and only that module allows it.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

#[cfg(target_os = "wasi")]
pub mod command;
#[cfg(target_os = "wasi")]
mod component;
#[cfg(target_os = "wasi")]
pub mod driver;
pub mod file_store;
pub mod notice;
pub mod settings;
#[cfg(target_os = "wasi")]
mod tls;
// Plain Rust: its unit tests run natively too.
#[cfg(any(target_os = "wasi", test))]
mod websocket;

pub use file_store::{FileStore, FileStoreError};
pub use notice::Notice;
pub use settings::{CommandOptions, Settings, SettingsError, Source};
