//! Test hosts and helpers shared by the cross-crate tests in `tests/`.

pub mod native;
pub mod wasi_host;
