//! The deterministic simulator: a simulated clock, network, store and Platform around one
//! `vdev_core::Device`, with faults drawn from a seed.

pub mod harness;
pub mod platform;
