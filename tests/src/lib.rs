//! Test hosts and helpers shared by the cross-crate tests in `tests/`.

pub mod batch_plan;
pub mod command_events;
pub mod library;
pub mod native;
pub mod payloads;
pub mod platform_admin;
pub mod tls;
pub mod transcript;
pub mod wasi_host;
