//! Deterministic simulation of a device against a model of the Platform, over thousands of
//! seeds. Prints `simulation: <N> seeds, <V> violations` (a plain `main`, not a libtest test, so
//! the line shows in every run). Reproduce a seed with
//! `VDEV_SIM_SEED=<seed> cargo test -p vdev-core --test simulation -- --nocapture`; choose the
//! number of seeds with `VDEV_SIM_SEEDS` (default 10,000).

mod sim;

use sim::faults::FaultCounts;
use sim::harness::Sim;

const DRAIN_BOUND_MS: u64 = 10 * 60 * 1_000;

fn main() {
    let seeds: Vec<u64> = match std::env::var("VDEV_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("VDEV_SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("VDEV_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(10_000u64);
            (0..count).collect()
        }
    };
    let mut violations = 0usize;
    let mut failing = Vec::new();
    let (mut sent, mut crashes) = (0usize, 0usize);
    let mut faults = FaultCounts::default();
    for &seed in &seeds {
        let report = Sim::from_seed(seed).run(DRAIN_BOUND_MS);
        sent += report.sent;
        crashes += report.crashes;
        faults.add(&report.faults);
        if !report.violations.is_empty() {
            violations += report.violations.len();
            if failing.len() < 10 {
                failing.push((seed, report.violations));
            }
        }
    }
    println!(
        "simulation: {} seeds, {violations} violations ({sent} messages, {crashes} crashes)",
        seeds.len()
    );
    println!("faults: {faults}");
    for (seed, list) in &failing {
        println!(
            "seed {seed}: {}",
            list.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    if violations > 0 {
        eprintln!("reproduce a failing seed with VDEV_SIM_SEED=<seed> VDEV_SIM_TRACE=1");
        std::process::exit(1);
    }
}
