//! Scenarios on the simulator's step API (`core/tests/sim`): a world with chosen faults, driven
//! to a chosen moment, an incident injected there, then assertions on what the Platform got.
//! The random worlds of `simulation.rs` meet such moments by chance; a scenario meets them on
//! purpose, in every run.

mod sim;

use std::collections::BTreeSet;

use sim::faults::{Faults, Incident};
use sim::harness::Sim;

const MINUTE: u64 = 60 * 1_000;

#[test]
fn a_device_that_crashes_mid_stream_delivers_everything_in_order_once() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, Faults::none());
        // Mid-stream: the Platform has some of the telemetry and the device has more queued.
        let mid_stream = sim.drive_until(
            |sim| {
                sim.stored().len() >= 3
                    && sim
                        .device()
                        .is_some_and(|device| device.stats().pending_count > 0)
            },
            sim.fault_window_ms(),
        );
        assert!(mid_stream, "seed {seed}: the stream never got going");
        let stored_before_crash = sim.stored().len();

        sim.inject(Incident::Crash);
        let drained = sim.drive_until(
            |sim| sim.elapsed_ms() >= sim.fault_window_ms() && sim.is_drained(),
            sim.fault_window_ms() + 10 * MINUTE,
        );

        assert!(drained, "seed {seed}: the restarted device did not drain");
        let seqs: Vec<u64> = sim.stored().iter().map(|m| m.seq).collect();
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "seed {seed}: stored out of order or twice: {seqs:?}"
        );
        assert!(
            seqs.len() > stored_before_crash,
            "seed {seed}: nothing stored after the crash"
        );
        let stored: BTreeSet<u64> = seqs.into_iter().collect();
        assert_eq!(
            &stored,
            sim.durable(),
            "seed {seed}: the Platform has exactly the messages the device called durable"
        );
        assert_eq!(sim.delivered(), sim.durable(), "seed {seed}");
        let report = sim.finish();
        assert_eq!(report.crashes, 1, "seed {seed}");
        assert_eq!(report.violations, Vec::<String>::new(), "seed {seed}");
    }
}
