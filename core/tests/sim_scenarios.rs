//! Scenarios on the simulator's step API (`core/tests/sim`): a world with chosen faults, driven
//! to a chosen moment, an incident injected there, then assertions on what the Platform got.
//! The random worlds of `simulation.rs` meet such moments by chance; a scenario meets them on
//! purpose, in every run.

mod sim;

use std::collections::BTreeSet;

use sim::faults::{Faults, Incident};
use sim::harness::Sim;

const MINUTE: u64 = 60 * 1_000;

/// Drives `sim` to mid-stream: the Platform has some of the telemetry and the device has more
/// queued.
fn drive_to_mid_stream(sim: &mut Sim, seed: u64) {
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
}

#[test]
fn a_device_that_crashes_mid_stream_delivers_everything_in_order_once() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, Faults::none());
        drive_to_mid_stream(&mut sim, seed);
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

#[test]
fn a_device_approved_again_under_another_id_carries_nothing_of_the_old_twin_across_a_restart() {
    for seed in 0..10 {
        let mut sim = Sim::new(seed, Faults::none());
        // Device 1 runs, has reported properties and telemetry in flight.
        let running = sim.drive_until(
            |sim| {
                sim.device()
                    .is_some_and(|device| device.device_id() == Some("sim-device-1"))
                    && sim.stored().len() >= 2
            },
            sim.fault_window_ms(),
        );
        assert!(running, "seed {seed}: device 1 never got going");
        sim.app_reports();
        sim.drive(50);

        // The technician approves its next provisioning as sim-device-2.
        sim.inject(Incident::Reidentify);
        sim.app_reports();
        let renamed = sim.drive_until(
            |sim| {
                sim.device()
                    .is_some_and(|device| device.device_id() == Some("sim-device-2"))
            },
            10 * MINUTE,
        );
        assert!(
            renamed,
            "seed {seed}: the device never took its new identity"
        );
        // The process dies in the window right after the change: before the new identity is
        // saved (even seeds) or after (odd seeds), and restarts from what it saved.
        if seed % 2 == 1 {
            sim.drive(100);
        }
        sim.inject(Incident::Crash);
        assert!(
            sim.drive_until(|sim| sim.device().is_none(), 0),
            "seed {seed}"
        );
        let back = sim.drive_until(
            |sim| {
                sim.device().is_some_and(|device| {
                    device.device_id() == Some("sim-device-2") && device.is_twin_synced()
                })
            },
            10 * MINUTE,
        );
        assert!(
            back,
            "seed {seed}: the restarted device never synced as device 2"
        );
        sim.app_reports();

        let drained = sim.drive_until(
            |sim| sim.elapsed_ms() >= sim.fault_window_ms() && sim.is_drained(),
            sim.fault_window_ms() + 10 * MINUTE,
        );
        assert!(drained, "seed {seed}: the device did not drain");
        assert_eq!(
            sim.device().and_then(|device| device.device_id()),
            Some("sim-device-2"),
            "seed {seed}"
        );
        assert_eq!(
            sim.platform().misdirected_patches,
            Vec::<String>::new(),
            "seed {seed}: device 1's reported properties reached device 2"
        );
        assert_eq!(
            sim.platform().reported["owner"],
            "sim-device-2",
            "seed {seed}: device 2's twin holds what the app reported as device 2"
        );
        // Every message the device called durable reached the Platform under one identity or
        // the other, in order per device.
        let stored: BTreeSet<u64> = sim.stored().iter().map(|m| m.seq).collect();
        assert!(sim.durable().is_subset(&stored), "seed {seed}");
        assert!(
            sim.stored().iter().any(|m| m.device_id == "sim-device-2"),
            "seed {seed}: nothing stored under the new identity"
        );
        let report = sim.finish();
        // Twice when the crash came before the new identity was saved: the restarted device
        // comes back as device 1 and changes again.
        assert!(
            (1..=2).contains(&report.faults.identity_changes),
            "seed {seed}: {} identity changes",
            report.faults.identity_changes
        );
        assert_eq!(report.violations, Vec::<String>::new(), "seed {seed}");
    }
}

#[test]
fn a_clock_set_back_for_good_or_ahead_until_corrected_does_not_stop_the_device() {
    const DAY: i64 = 24 * 60 * MINUTE as i64;
    for seed in 0..10 {
        let mut sim = Sim::new(seed, Faults::none());
        drive_to_mid_stream(&mut sim, seed);

        // The clock steps and the connection drops at the same moment: the reconnect, the
        // keep-alives and every retry hang on timers set across the step. Set back, a core
        // that only clamped its time slept through the day. Set ahead, every timer fires at
        // once and every expiry looks past until the clock is corrected (a clock that stays a
        // day ahead makes every token of a shorter lifetime look expired on arrival, which no
        // client can help).
        let set_back = seed % 2 == 0;
        sim.step_clock(if set_back { -DAY } else { DAY });
        sim.inject(Incident::Cut);
        if !set_back {
            sim.drive(30_000);
            sim.step_clock(-DAY);
        }
        let drained = sim.drive_until(
            |sim| sim.elapsed_ms() >= sim.fault_window_ms() && sim.is_drained(),
            sim.fault_window_ms() + 10 * MINUTE,
        );

        assert!(
            drained,
            "seed {seed}: after the clock was set {} the device did not drain within minutes",
            if set_back { "back" } else { "ahead" }
        );
        let seqs: Vec<u64> = sim.stored().iter().map(|m| m.seq).collect();
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "seed {seed}: stored out of order or twice: {seqs:?}"
        );
        let stored: BTreeSet<u64> = seqs.into_iter().collect();
        assert_eq!(&stored, sim.durable(), "seed {seed}");
        assert_eq!(sim.delivered(), sim.durable(), "seed {seed}");
        let report = sim.finish();
        assert_eq!(report.violations, Vec::<String>::new(), "seed {seed}");
    }
}
