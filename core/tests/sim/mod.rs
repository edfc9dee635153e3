//! The deterministic simulator: a simulated clock, network, store and Platform around one
//! `vdev_core::Device`, with faults drawn from a seed.

#![allow(dead_code)] // each test program uses its part of the harness

pub mod faults;
pub mod harness;
pub mod platform;
pub mod rng;
