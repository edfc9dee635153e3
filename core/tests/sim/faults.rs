//! What can go wrong in one simulated world, and how often it did.
//!
//! [`Faults`] holds every fault's weight, drawn from the seed in [`Faults::draw`]; a scenario
//! test builds its own (`Faults { http_loss: 0.1, ..Faults::none() }`). [`FaultCounts`] counts the
//! faults that struck, for the `faults:` line of the simulation. A new fault is a field here, a
//! line in `draw`, its use in the harness or the Platform, and (if it is worth showing) a
//! counter in `fault_counts!`.

use std::fmt;

use super::rng::Rng;

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;

/// The faults of one world. Rates are chances per occasion (per request, per store operation,
/// per new provisioning operation) during the fault window; after the window the world is
/// healthy and the device must drain its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Length of the fault window from the start; the app also sends during it.
    pub window_ms: u64,
    /// How many incidents strike at random times in the window, each chosen by `incidents`.
    pub incident_count: u64,
    /// Relative weights of the incidents.
    pub incidents: IncidentWeights,
    /// Chance that an HTTP request, or its answer, is lost.
    pub http_loss: f64,
    /// Chance that an append fails with `QuotaExceeded`.
    pub quota_fail: f64,
    /// Chance that a store read fails.
    pub load_fail: f64,
    /// Chance that a removal or a state save fails (the core must ask for it again).
    pub write_fail: f64,
    /// Chance that a device call is answered 429, 503 (both with `Retry-After`) or 423.
    pub throttle_rate: f64,
    /// Chance that a blob `PUT` or an upload notification fails with 500.
    pub upload_error_rate: f64,
    /// Chance that a `files` request is refused for good (400).
    pub upload_refusal_rate: f64,
    /// How many register answers first announce a cleartext endpoint off loopback.
    pub insecure_endpoints: u32,
    /// The technician never approves the first operation (it expires; a later one is approved).
    pub technician_skips_first: bool,
    /// Chance that the technician lets an operation of the fault window expire.
    pub technician_ignore_rate: f64,
    /// The store reports appends and state saves done before they reach the disk (IndexedDB's
    /// `relaxed` durability); otherwise only removals lag. Reservations are always durable.
    pub relaxed_store: bool,
    /// Chance that a message of the app is one the gateway refuses (closes the connection on).
    pub poison_rate: f64,
}

/// Something that strikes at one instant of the fault window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incident {
    /// The device process dies (appends not yet durable are lost) and restarts from its store.
    Crash,
    /// The machine loses power: the process dies and the store loses every write it had not
    /// yet made durable, a suffix of what it reported done.
    PowerLoss,
    /// Every open connection is reset.
    Cut,
    /// The network is gone (no close seen) for a while.
    Partition,
    /// Every token and credential of the device is revoked.
    Revoke,
    /// Every token and credential is revoked and the technician approves the device's next
    /// provisioning under a new Device ID: the device must take the new identity with a fresh
    /// twin, and carry nothing of the old device's twin across.
    Reidentify,
    /// The gateway stops acknowledging publishes for a while.
    AckLoss,
    /// Another connection with the same Device ID takes over, up to twice more after.
    Kick,
    /// A rival with the same Device ID takes over every new session for a while.
    KickStorm,
    /// The gateway goes silent on the live connection: no bytes, no close.
    HalfOpen,
    /// The host loses its network and says so, for a while.
    Offline,
    /// The device's wall clock steps by up to two days: back for good (a restored virtual
    /// machine), ahead and corrected back later, or back and corrected ahead later (NTP).
    ClockStep,
}

/// Relative weights of the incidents (0: never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentWeights {
    pub crash: u32,
    pub power_loss: u32,
    pub cut: u32,
    pub partition: u32,
    pub revoke: u32,
    pub reidentify: u32,
    pub ack_loss: u32,
    pub kick: u32,
    pub kick_storm: u32,
    pub half_open: u32,
    pub offline: u32,
    pub clock_step: u32,
}

impl IncidentWeights {
    /// The mix of the random worlds: crashes and cuts most often, half-open links and offline
    /// periods rarely.
    pub fn usual() -> Self {
        Self {
            crash: 8,
            power_loss: 4,
            cut: 9,
            partition: 4,
            revoke: 4,
            reidentify: 2,
            ack_loss: 4,
            kick: 4,
            kick_storm: 4,
            half_open: 2,
            offline: 1,
            clock_step: 3,
        }
    }

    pub fn choices(&self) -> [(Incident, u32); 12] {
        [
            (Incident::Crash, self.crash),
            (Incident::PowerLoss, self.power_loss),
            (Incident::Cut, self.cut),
            (Incident::Partition, self.partition),
            (Incident::Revoke, self.revoke),
            (Incident::Reidentify, self.reidentify),
            (Incident::AckLoss, self.ack_loss),
            (Incident::Kick, self.kick),
            (Incident::KickStorm, self.kick_storm),
            (Incident::HalfOpen, self.half_open),
            (Incident::Offline, self.offline),
            (Incident::ClockStep, self.clock_step),
        ]
    }
}

/// Salt of the faults' random stream, so that they are drawn independently of the world's
/// (lifetimes, latency, the app's sends), which the harness draws from the seed itself.
const FAULTS_STREAM: u64 = 0xFA17_5EED_0000_0001;

impl Faults {
    /// A healthy world: a two-minute window in which the app sends and nothing goes wrong.
    pub fn none() -> Self {
        Self {
            window_ms: 2 * MINUTE,
            incident_count: 0,
            incidents: IncidentWeights::usual(),
            http_loss: 0.0,
            quota_fail: 0.0,
            load_fail: 0.0,
            write_fail: 0.0,
            throttle_rate: 0.0,
            upload_error_rate: 0.0,
            upload_refusal_rate: 0.0,
            insecure_endpoints: 0,
            technician_skips_first: false,
            technician_ignore_rate: 0.0,
            relaxed_store: false,
            poison_rate: 0.0,
        }
    }

    /// The faults of `seed`'s world: most are off in a third of the worlds or more, so that
    /// each also meets worlds where only the others strike.
    pub fn draw(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ FAULTS_STREAM);
        Self {
            window_ms: rng.range(MINUTE..8 * MINUTE),
            incident_count: rng.below(8),
            incidents: IncidentWeights::usual(),
            http_loss: rng.pick(&[0.0, 0.02, 0.1]),
            quota_fail: rng.pick(&[0.0, 0.0, 0.05]),
            load_fail: rng.pick(&[0.0, 0.0, 0.3]),
            write_fail: rng.pick(&[0.0, 0.0, 0.3]),
            throttle_rate: rng.pick(&[0.0, 0.0, 0.05, 0.15]),
            upload_error_rate: rng.pick(&[0.0, 0.1, 0.3]),
            upload_refusal_rate: rng.pick(&[0.0, 0.0, 0.15]),
            insecure_endpoints: rng.pick(&[0, 0, 3]),
            technician_skips_first: rng.chance(0.2),
            technician_ignore_rate: rng.pick(&[0.0, 0.0, 0.2]),
            relaxed_store: rng.chance(0.5),
            poison_rate: rng.pick(&[0.0, 0.0, 0.0, 0.01]),
        }
    }
}

/// Declares [`FaultCounts`]: each counter with the name the `faults:` line gives it, in the
/// line's order.
macro_rules! fault_counts {
    ($($field:ident: $name:literal),* $(,)?) => {
        /// How often each fault struck (summed over seeds for the `faults:` line).
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct FaultCounts {
            $(#[doc = $name] pub $field: u64,)*
        }

        impl FaultCounts {
            pub fn add(&mut self, other: &Self) {
                $(self.$field += other.$field;)*
            }

            /// Each counter with its name, in the line's order.
            pub fn entries(&self) -> Vec<(u64, &'static str)> {
                vec![$((self.$field, $name)),*]
            }
        }
    };
}

fault_counts! {
    kicks: "kicks",
    kick_storms: "kick storms",
    half_open: "half-open links",
    throttled: "throttled calls",
    upload_errors: "upload errors",
    refused_uploads: "refused uploads",
    skipped_operations: "operations left to expire",
    offline_periods: "offline periods",
    failed_loads: "failed loads",
    failed_writes: "failed writes",
    insecure_endpoints: "cleartext endpoints refused",
    identity_changes: "identity changes",
    power_losses: "power losses",
    refreshes: "token refreshes superseding the old token",
    refresh_retries: "refreshes retried after a lost answer",
    refused_publishes: "publishes the gateway refused",
    lost_appends: "appends lost by relaxed stores",
    clock_steps_back: "clock steps back",
    clock_steps_ahead: "clock steps ahead",
}

/// `<n> <name>, <n> <name>, ...`
impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (count, name)) in self.entries().into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{count} {name}")?;
        }
        Ok(())
    }
}
