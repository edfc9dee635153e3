//! Runs one device against the simulated Platform for one seed and checks the invariants.
//!
//! Faults happen during `[0, fault_end)`: network cuts and partitions, half-open connections
//! (the gateway goes silent without closing), dropped HTTP requests and answers, throttling
//! (429 and 503 with `Retry-After`, 423), failing and refused uploads, device crashes (appends
//! not yet durable are lost) and restarts from the store, power losses (the store also loses a
//! suffix of what it reported done and had not made durable: in a world with a relaxed store,
//! appends and state saves too; a message so lost is excused, a number handed out again is
//! not), token revocation, re-approval under a
//! new Device ID (the checks then follow both devices), duplicate Device ID
//! kicks (single ones and storms), gateway acknowledgements lost, and a technician who lets
//! operations expire. After `fault_end` the world is healthy and the device must drain its
//! queue within `drain_bound_ms`.
//!
//! Besides the end-of-run invariants, the harness checks while it runs: no token or credential
//! is used after its expiry, no endpoint is called again before the `Retry-After` it answered
//! has passed, a half-open connection is abandoned within keep-alive plus ping timeout, and a
//! kick storm sees a bounded number of CONNECTs (the backoff grows for short-lived sessions).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use serde_json::json;
use vdev_core::{
    BackoffConfig, Compression, ConnectionId, Device, DeviceConfig, DeviceId, Event, HttpRequest,
    HttpResponse, Input, MemoryStore, MessageOptions, Output, SendSettlement, SessionConfig,
    StoreError, StoreRequest, StreamOptions, Transport, TwinConfig,
};

use super::faults::{FaultCounts, Faults, Incident};
use super::platform::{Endpoint, POISON, PROVISIONING_TOKEN, Platform, StoredMessage, Validity};
use super::rng::Rng;

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const START: u64 = 1_800_000_000_000;
/// Session timing of the simulated device (see `Sim::config`).
const KEEP_ALIVE_MS: u64 = 30 * SECOND;
const PING_TIMEOUT_MS: u64 = 10 * SECOND;
/// A run of more events than this is an event storm: the world does not settle.
const MAX_STEPS: u64 = 2_000_000;

#[derive(Debug)]
enum Ev {
    DeviceTimer {
        instance: u64,
    },
    StoreDone {
        instance: u64,
    },
    HttpAtPlatform {
        instance: u64,
        request: HttpRequest,
    },
    HttpAtDevice {
        instance: u64,
        endpoint: Endpoint,
        id: vdev_core::RequestId,
        response: Result<HttpResponse, String>,
    },
    Connected {
        instance: u64,
        conn: ConnectionId,
        link: u64,
    },
    ConnectFailed {
        instance: u64,
        conn: ConnectionId,
    },
    BytesToPlatform {
        link: u64,
        bytes: Vec<u8>,
    },
    BytesToDevice {
        instance: u64,
        conn: ConnectionId,
        bytes: Vec<u8>,
    },
    ClosedToDevice {
        instance: u64,
        conn: ConnectionId,
    },
    AppSend,
    AppReport,
    Crash,
    Restart,
    Approve {
        op: String,
    },
    Revoke,
    Reidentify,
    PowerLoss,
    Cut,
    PartitionStart,
    PartitionEnd,
    DesiredChange,
    AckLossStart,
    AckLossEnd,
    SasExpiryCheck,
    /// Another connection with the same Device ID takes over; `remaining` more follow.
    Kick {
        remaining: u32,
    },
    /// A rival with the same Device ID keeps taking over every new session until `until`.
    KickStormStart {
        until: u64,
    },
    KickStormEnd,
    /// The rival's connection arrives and this link is closed by the gateway.
    KickLink {
        link: u64,
    },
    /// The gateway side of the live connection goes silent: no bytes, no close.
    HalfOpen,
    HalfOpenCheck {
        link: u64,
        since: u64,
    },
    /// The host loses its network and says so (`Input::NetworkLost`): the device must not try
    /// to connect or call HTTP until it is told the network is back.
    OfflineStart,
    OfflineEnd,
    /// The device's wall clock steps by `by` ms (the Platform's clock does not).
    ClockStep {
        by: i64,
    },
}

/// A kick storm in progress: how many CONNECTs the device sent during it.
#[derive(Debug)]
struct KickStorm {
    started: u64,
    until: u64,
    connects: u64,
    /// Restarts and new credentials during the storm: each may connect at once, legitimately.
    fresh_starts: u64,
}

struct Link {
    instance: u64,
    conn: ConnectionId,
    open: bool,
    to_platform_at: u64,
    to_device_at: u64,
    /// The gateway went silent: bytes in either direction vanish and no close is seen.
    half_open: bool,
}

/// Everything that happened, for the checks.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub sent: usize,
    pub crashes: usize,
    /// How often each fault struck, to show the seeds exercise them.
    pub faults: FaultCounts,
}

pub struct Sim {
    rng: Rng,
    faults: Faults,
    now: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    counter: u64,
    platform: Platform,
    device: Option<Device>,
    instance: u64,
    timer_at: Option<u64>,
    /// The store as the running process sees it.
    store: MemoryStore,
    /// What of it is on disk: a power loss keeps this and a prefix of `undurable`.
    durable_store: MemoryStore,
    /// Operations reported done but not yet on disk, in order.
    undurable: Vec<StoreRequest>,
    /// Messages whose append a relaxed store reported done and then lost in a power loss.
    lost_to_power: BTreeSet<u64>,
    /// Rejected messages still in the durable store at a power loss (their removal failed, or
    /// a relaxed store reported it done and lost it): the restarted device has them again, and
    /// sends them again.
    rejected_then_restored: BTreeSet<u64>,
    store_ops: std::collections::VecDeque<StoreRequest>,
    store_busy: bool,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    partitioned: bool,
    /// The host told the device the network is gone.
    offline: bool,
    latency_ms: u64,
    fault_end: u64,
    // What the app saw.
    attempted: BTreeMap<u64, Vec<u8>>,
    completed: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    rejected: BTreeSet<u64>,
    refused_sends: usize,
    reported_target: serde_json::Value,
    /// The reported properties after each update of this run (by revision) that the core has
    /// not yet said are durable, and the newest it said are: a restart must bring back one of
    /// these, never anything older.
    reported_revisions: Vec<(u64, serde_json::Value)>,
    /// Reported-properties updates made in this run.
    reported_updates: u64,
    /// The newest revision of this run the core said is stored (0: none).
    reported_stored: u64,
    /// The Device ID the app last heard of (`None` before the first registration).
    identity: Option<String>,
    /// Device IDs the technician handed out by re-approval.
    renames: u64,
    report: Report,
    message_counter: u64,
    large_every: u64,
    compression: Compression,
    trace: bool,
    operations_seen: usize,
    /// Per endpoint, the time before which the device must not call again (`Retry-After`).
    not_before: BTreeMap<Endpoint, u64>,
    kick_storm: Option<KickStorm>,
    /// Events run so far.
    steps: u64,
    /// Messages the app sent that the gateway refuses.
    poison_sent: u64,
    /// The device's wall clock minus the true time (the Platform's clock).
    clock_skew: i64,
    /// The forward steps of the device's clock so far: the core takes a step ahead as time
    /// passing, so its timers run this far ahead of the true time.
    clock_lead: u64,
    /// When the device's clock last stepped back.
    last_step_back: Option<u64>,
}

impl Sim {
    /// The world of `seed` with the faults of `seed` (what the simulation runs).
    pub fn from_seed(seed: u64) -> Self {
        Self::new(seed, Faults::draw(seed))
    }

    /// The world of `seed` (lifetimes, latency, the app's sends, every random timing) with the
    /// given faults.
    pub fn new(seed: u64, faults: Faults) -> Self {
        let mut rng = Rng::new(seed);
        let token_lifetime = match rng.below(3) {
            0 => None,
            1 => Some(rng.range(2 * MINUTE..30 * MINUTE)),
            _ => Some(rng.range(20 * MINUTE..120 * MINUTE)),
        };
        let sas_lifetime = rng.range(MINUTE..20 * MINUTE);
        let op_lifetime = rng.range(20 * SECOND..5 * MINUTE);
        let latency_ms = rng.range(1..60);
        let large_every = rng.pick(&[0, 0, 7]);
        let compression = rng.pick(&[Compression::None, Compression::Fastest]);
        let origin = format!("o{:x}", rng.next_u64() as u32);
        let mut platform = Platform::new(token_lifetime, sas_lifetime, op_lifetime);
        platform.insecure_endpoints_left = faults.insecure_endpoints;
        let fault_end = START + faults.window_ms;
        let mut sim = Self {
            rng,
            now: START,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            counter: 0,
            platform,
            device: None,
            instance: 0,
            timer_at: None,
            store: MemoryStore::new(origin.clone()),
            durable_store: MemoryStore::new(origin),
            undurable: Vec::new(),
            lost_to_power: BTreeSet::new(),
            rejected_then_restored: BTreeSet::new(),
            store_ops: Default::default(),
            store_busy: false,
            links: BTreeMap::new(),
            next_link: 1,
            partitioned: false,
            offline: false,
            faults,
            latency_ms,
            fault_end,
            attempted: BTreeMap::new(),
            completed: BTreeSet::new(),
            delivered: BTreeSet::new(),
            rejected: BTreeSet::new(),
            refused_sends: 0,
            reported_target: json!({}),
            reported_revisions: Vec::new(),
            reported_updates: 0,
            reported_stored: 0,
            identity: None,
            renames: 0,
            report: Report::default(),
            message_counter: 0,
            large_every,
            compression,
            trace: std::env::var("VDEV_SIM_TRACE").is_ok(),
            operations_seen: 0,
            not_before: BTreeMap::new(),
            kick_storm: None,
            steps: 0,
            poison_sent: 0,
            clock_skew: 0,
            clock_lead: 0,
            last_step_back: None,
        };
        sim.schedule_faults_and_app();
        sim
    }

    fn config(&self) -> DeviceConfig {
        let mut config = DeviceConfig::new("https://platform.sim", PROVISIONING_TOKEN);
        config.device_id = Some(DeviceId::parse("sim-device-1").unwrap());
        config.transport = Transport::Tcp;
        config.provisioning_poll_interval_ms = SECOND;
        config.http_timeout_ms = 5 * SECOND;
        config.upload_threshold = 2_000;
        config.backoff = BackoffConfig {
            initial_ms: 200,
            max_ms: 10 * SECOND,
        };
        config.session = SessionConfig {
            keep_alive_secs: (KEEP_ALIVE_MS / SECOND) as u16,
            ping_timeout_ms: PING_TIMEOUT_MS,
            connect_timeout_ms: 10 * SECOND,
            max_in_flight: 8,
            ack_timeout_ms: 15 * SECOND,
            stable_after_ms: 20 * SECOND,
            backoff: BackoffConfig {
                initial_ms: 200,
                max_ms: 10 * SECOND,
            },
            ..Default::default()
        };
        config.outbox.window_records = 16;
        config.twin = TwinConfig {
            request_timeout_ms: 10 * SECOND,
        };
        config
    }

    fn at(&mut self, time: u64, ev: Ev) {
        self.counter += 1;
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((time, self.counter, self.events.len() - 1)));
    }

    fn latency(&mut self) -> u64 {
        self.rng.range(1..self.latency_ms + 1)
    }

    fn schedule_faults_and_app(&mut self) {
        let span = self.fault_end - START;
        let sends = self.rng.range(10..60);
        for _ in 0..sends {
            let t = START + self.rng.range(0..span);
            self.at(t, Ev::AppSend);
            // Bursts: several sends at the same instant.
            if self.rng.chance(0.2) {
                for _ in 0..self.rng.range(1..6) {
                    self.at(t, Ev::AppSend);
                }
            }
        }
        for _ in 0..self.rng.range(0..4) {
            let t = START + self.rng.range(0..span);
            self.at(t, Ev::AppReport);
            let t = START + self.rng.range(0..span);
            self.at(t, Ev::DesiredChange);
        }
        let choices = self.faults.incidents.choices();
        for _ in 0..self.faults.incident_count {
            let t = START + self.rng.range(0..span);
            let incident = self.rng.weighted(&choices);
            self.schedule_incident(t, incident);
        }
        self.at(START, Ev::Restart);
        self.at(self.fault_end, Ev::PartitionEnd);
        self.at(self.fault_end, Ev::AckLossEnd);
        self.at(self.fault_end, Ev::OfflineEnd);
    }

    /// Schedules `incident` at `t`; those that last end by the end of the fault window.
    fn schedule_incident(&mut self, t: u64, incident: Incident) {
        let fault_end = self.fault_end.max(t);
        match incident {
            Incident::Crash => self.at(t, Ev::Crash),
            Incident::PowerLoss => self.at(t, Ev::PowerLoss),
            Incident::Cut => self.at(t, Ev::Cut),
            Incident::Partition => {
                let end = (t + self.rng.range(SECOND..2 * MINUTE)).min(fault_end);
                self.at(t, Ev::PartitionStart);
                self.at(end, Ev::PartitionEnd);
            }
            Incident::Revoke => self.at(t, Ev::Revoke),
            Incident::Reidentify => self.at(t, Ev::Reidentify),
            Incident::AckLoss => {
                let end = (t + self.rng.range(SECOND..MINUTE)).min(fault_end);
                self.at(t, Ev::AckLossStart);
                self.at(end, Ev::AckLossEnd);
            }
            Incident::Kick => {
                let remaining = self.rng.below(3) as u32;
                self.at(t, Ev::Kick { remaining });
            }
            Incident::KickStorm => {
                let until = (t + self.rng.range(20 * SECOND..2 * MINUTE)).min(fault_end);
                self.at(t, Ev::KickStormStart { until });
                self.at(until, Ev::KickStormEnd);
            }
            Incident::HalfOpen => self.at(t, Ev::HalfOpen),
            Incident::Offline => {
                let end = (t + self.rng.range(SECOND..2 * MINUTE)).min(fault_end);
                self.at(t, Ev::OfflineStart);
                self.at(end, Ev::OfflineEnd);
            }
            Incident::ClockStep => {
                let size = match self.rng.below(3) {
                    0 => self.rng.range(SECOND..MINUTE),
                    1 => self.rng.range(MINUTE..2 * HOUR),
                    _ => self.rng.range(2 * HOUR..2 * DAY),
                } as i64;
                let end = (t + self.rng.range(SECOND..2 * MINUTE)).min(fault_end);
                match self.rng.below(3) {
                    // Set back for good, as a restored virtual machine is.
                    0 => self.at(t, Ev::ClockStep { by: -size }),
                    // Wrong ahead, then corrected.
                    1 => {
                        self.at(t, Ev::ClockStep { by: size });
                        self.at(end, Ev::ClockStep { by: -size });
                    }
                    // Wrong behind, then corrected.
                    _ => {
                        self.at(t, Ev::ClockStep { by: -size });
                        self.at(end, Ev::ClockStep { by: size });
                    }
                }
            }
        }
    }

    /// Runs to the end and checks the invariants: until the device has drained after the fault
    /// window, or `drain_bound_ms` after it.
    pub fn run(mut self, drain_bound_ms: u64) -> Report {
        let window = self.fault_end.saturating_sub(self.now);
        self.drive_until(|sim| sim.now >= sim.fault_end, window);
        // Each message the gateway refuses holds the queue for the two minutes the core gives
        // it before giving it up (the core's `GATEWAY_REFUSAL_MS`), plus its reconnects.
        let refusals = self.poison_sent * 3 * MINUTE;
        let bound = (self.fault_end + drain_bound_ms + refusals).saturating_sub(self.now);
        self.drive_until(|sim| sim.now >= sim.fault_end && sim.is_drained(), bound);
        self.finish()
    }

    /// Runs the next event; false when there is none left (or the world stopped settling).
    pub fn step(&mut self) -> bool {
        let Some(Reverse((time, _, index))) = self.queue.pop() else {
            return false;
        };
        self.steps += 1;
        if self.steps > MAX_STEPS {
            self.report
                .violations
                .push("simulation did not settle (event storm)".into());
            self.queue.clear();
            return false;
        }
        self.now = self.now.max(time);
        let ev = self.events[index].take().expect("each event runs once");
        if self.trace {
            let text = format!("{ev:?}");
            println!("{:>9} {}", self.now - START, &text[..text.len().min(160)]);
        }
        self.handle(ev);
        true
    }

    /// Runs events until `done` holds (checked before each), the next event is more than
    /// `bound_ms` of simulated time away from now, or none is left. Returns whether `done`
    /// holds.
    pub fn drive_until(&mut self, mut done: impl FnMut(&Sim) -> bool, bound_ms: u64) -> bool {
        let deadline = self.now + bound_ms;
        loop {
            if done(self) {
                return true;
            }
            let next = self.queue.peek().map(|Reverse((time, _, _))| *time);
            if next.is_none_or(|time| time > deadline) || !self.step() {
                return false;
            }
        }
    }

    /// Runs every event of the next `bound_ms` of simulated time.
    pub fn drive(&mut self, bound_ms: u64) {
        self.drive_until(|_| false, bound_ms);
    }

    /// Makes `incident` strike now (one that lasts ends within the fault window, or at once
    /// after it).
    pub fn inject(&mut self, incident: Incident) {
        self.schedule_incident(self.now, incident);
    }

    /// The device's wall clock steps by `by` ms now (the Platform's does not).
    pub fn step_clock(&mut self, by: i64) {
        self.at(self.now, Ev::ClockStep { by });
    }

    /// The app reports a properties patch now (marked with the identity its device has).
    pub fn app_reports(&mut self) {
        self.at(self.now, Ev::AppReport);
    }

    /// Checks the end-of-run invariants and gives the report.
    pub fn finish(mut self) -> Report {
        self.check();
        self.report
    }

    /// Simulated milliseconds since the start.
    pub fn elapsed_ms(&self) -> u64 {
        self.now - START
    }

    /// When the fault window ends, in milliseconds since the start.
    pub fn fault_window_ms(&self) -> u64 {
        self.fault_end - START
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// What happened so far (the end-of-run checks are added by [`Sim::finish`]).
    pub fn report(&self) -> &Report {
        &self.report
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Telemetry the Platform stored, in the order it stored it (every origin).
    pub fn stored(&self) -> &[StoredMessage] {
        &self.platform.stored
    }

    /// Sequence numbers the core said are durable (`Event::MessagesStored`): each must reach
    /// the Platform, or be refused by it.
    pub fn durable(&self) -> &BTreeSet<u64> {
        &self.completed
    }

    /// Sequence numbers the core said were delivered (`Event::MessageDelivered`).
    pub fn delivered(&self) -> &BTreeSet<u64> {
        &self.delivered
    }

    /// The running device, if it is not crashed.
    pub fn device(&self) -> Option<&Device> {
        self.device.as_ref()
    }

    /// The device runs and has nothing left to do: its queue and store are empty, every
    /// durable message has its outcome, the twin agrees with the Platform.
    pub fn is_drained(&self) -> bool {
        let Some(device) = &self.device else {
            return false;
        };
        device.stats().pending_count == 0
            && self.store_ops.is_empty()
            // Removals the store failed are asked for again: done means the store is clean.
            && self.store.meta().count == 0
            && self
                .completed
                .iter()
                .all(|s| self.delivered.contains(s) || self.rejected.contains(s))
            && self.platform.reported == self.reported_target
            && device.desired_properties().1 == Some(self.platform.desired_version)
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::DeviceTimer { instance } => {
                if instance == self.instance && self.timer_at.is_some_and(|t| t <= now) {
                    self.timer_at = None;
                    self.with_device(|d, now| d.handle_timeout(now));
                }
            }
            Ev::StoreDone { instance } => self.store_done(instance),
            Ev::HttpAtPlatform { instance, request } => self.http_at_platform(instance, request),
            Ev::HttpAtDevice {
                instance,
                endpoint,
                id,
                response,
            } => {
                if instance == self.instance {
                    if let Ok(response) = &response
                        && let Some(seconds) = response
                            .retry_after
                            .as_deref()
                            .and_then(|value| value.parse::<u64>().ok())
                    {
                        let device_time = now + self.clock_lead;
                        self.not_before
                            .insert(endpoint, device_time + seconds * SECOND);
                    }
                    let input = match response {
                        Ok(response) => Input::HttpResponse { id, response },
                        Err(error) => Input::HttpFailed { id, error },
                    };
                    self.with_device(|d, now| d.handle_input(now, input));
                }
            }
            Ev::Connected {
                instance,
                conn,
                link,
            } => {
                if instance == self.instance && self.links.get(&link).is_some_and(|l| l.open) {
                    self.with_device(|d, now| d.handle_input(now, Input::Connected { conn }));
                }
            }
            Ev::ConnectFailed { instance, conn } => {
                if instance == self.instance {
                    let input = Input::Closed {
                        conn,
                        reason: "connection refused".into(),
                    };
                    self.with_device(|d, now| d.handle_input(now, input));
                }
            }
            Ev::BytesToPlatform { link, bytes } => self.bytes_to_platform(link, bytes),
            Ev::BytesToDevice {
                instance,
                conn,
                bytes,
            } => {
                // Bytes already on the wire arrive even if the peer closed after sending them.
                if instance == self.instance {
                    self.with_device(|d, now| {
                        d.handle_input(
                            now,
                            Input::Received {
                                conn,
                                bytes: &bytes,
                            },
                        )
                    });
                }
            }
            Ev::ClosedToDevice { instance, conn } => {
                if instance == self.instance {
                    let input = Input::Closed {
                        conn,
                        reason: "reset by peer".into(),
                    };
                    self.with_device(|d, now| d.handle_input(now, input));
                }
            }
            Ev::AppSend => self.app_send(),
            Ev::AppReport => {
                let n = self.rng.range(0..100);
                // `owner`: the identity the app's device has now; the Platform checks that no
                // other device ever receives the patch.
                let owner = self.identity.clone().unwrap_or_else(|| "none".into());
                let patch = json!({ "reading": n, "fw": { "v": n % 3 }, "owner": owner });
                json_patch::merge(&mut self.reported_target, &patch);
                if self.device.is_some() {
                    let patch = serde_json::from_value(patch).expect("a JSON value");
                    // Listed before the call: the core may say at once that it is stored.
                    self.reported_updates += 1;
                    let expected = self.reported_updates;
                    self.reported_revisions
                        .push((expected, self.reported_target.clone()));
                    let mut revision = 0;
                    self.with_device(|d, now| {
                        revision = d.update_reported_properties(now, patch).unwrap();
                    });
                    if revision != expected {
                        self.report.violations.push(format!(
                            "reported update number {expected} of this run got revision {revision}"
                        ));
                    }
                }
            }
            Ev::Crash => self.crash(),
            Ev::PowerLoss => self.power_loss(),
            Ev::Restart => self.restart(),
            Ev::Approve { op } => self.platform.approve(&op, now),
            Ev::Revoke => {
                for link in self.platform.revoke_all() {
                    self.cut_link(link);
                }
            }
            Ev::Reidentify => {
                self.renames += 1;
                let device_id = format!("sim-device-{}", self.renames + 1);
                for link in self.platform.reidentify(&device_id) {
                    self.cut_link(link);
                }
            }
            Ev::Cut => {
                self.cut_open_links();
            }
            Ev::PartitionStart => {
                self.partitioned = true;
                self.cut_open_links();
            }
            Ev::PartitionEnd => self.partitioned = false,
            Ev::OfflineStart => {
                if !self.offline {
                    self.report.faults.offline_periods += 1;
                }
                self.offline = true;
                self.partitioned = true;
                self.cut_open_links();
                if self.device.is_some() {
                    self.with_device(|d, now| d.handle_input(now, Input::NetworkLost));
                }
            }
            Ev::OfflineEnd => {
                if self.offline {
                    self.offline = false;
                    self.partitioned = false;
                    if self.device.is_some() {
                        self.with_device(|d, now| d.handle_input(now, Input::NetworkAvailable));
                    }
                }
            }
            Ev::DesiredChange => {
                let rate = self.rng.range(1..10);
                for (link, bytes) in self.platform.set_desired(json!({ "rate": rate })) {
                    self.send_to_device(link, bytes);
                }
            }
            Ev::AckLossStart => self.platform.drop_pubacks = true,
            Ev::AckLossEnd => self.platform.drop_pubacks = false,
            Ev::Kick { remaining } => {
                self.report.faults.kicks += 1;
                self.kick_live_sessions();
                if remaining > 0 {
                    let at = now + self.rng.range(SECOND..10 * SECOND);
                    self.at(
                        at,
                        Ev::Kick {
                            remaining: remaining - 1,
                        },
                    );
                }
            }
            Ev::KickStormStart { until } => {
                if self.kick_storm.is_none() {
                    self.report.faults.kick_storms += 1;
                    self.kick_storm = Some(KickStorm {
                        started: now,
                        until,
                        connects: 0,
                        fresh_starts: 0,
                    });
                    self.kick_live_sessions();
                }
            }
            Ev::KickStormEnd => self.end_kick_storm(),
            Ev::KickLink { link } => {
                if self.platform.conns.contains_key(&link) {
                    self.cut_link(link);
                }
            }
            Ev::HalfOpen => {
                let live: Vec<u64> = self
                    .links
                    .iter()
                    .filter(|(_, l)| l.open && !l.half_open && l.instance == self.instance)
                    .map(|(k, _)| *k)
                    .collect();
                for link in live {
                    self.report.faults.half_open += 1;
                    self.links.get_mut(&link).unwrap().half_open = true;
                    // The device has only its keep-alive and ack timers to notice.
                    let check_at = now + KEEP_ALIVE_MS + PING_TIMEOUT_MS + SECOND;
                    self.at(check_at, Ev::HalfOpenCheck { link, since: now });
                }
            }
            Ev::HalfOpenCheck { link, since } => {
                // A clock stepped back meanwhile cost the device the time between its last
                // input and the step (see the core's `clock` module): its timers may run late
                // by that much, once.
                let stepped_back = self.last_step_back.is_some_and(|at| at >= since);
                if let Some(l) = self.links.get(&link)
                    && l.open
                    && l.instance == self.instance
                    && !stepped_back
                {
                    self.report.violations.push(format!(
                        "half-open link {link} still used {} ms after the gateway went silent",
                        KEEP_ALIVE_MS + PING_TIMEOUT_MS + SECOND
                    ));
                }
            }
            Ev::ClockStep { by } => {
                self.clock_skew += by;
                if by > 0 {
                    self.report.faults.clock_steps_ahead += 1;
                    self.clock_lead += by as u64;
                    // Its backoff delays end early: a step ahead is time passing to it.
                    if let Some(storm) = &mut self.kick_storm {
                        storm.fresh_starts += 1;
                    }
                } else {
                    self.report.faults.clock_steps_back += 1;
                    self.last_step_back = Some(now);
                }
            }
            Ev::SasExpiryCheck => {
                let expired: Vec<u64> = self
                    .platform
                    .conns
                    .iter()
                    .filter(|(_, c)| c.sas_expires_at.is_some_and(|at| at <= now))
                    .map(|(k, _)| *k)
                    .collect();
                for link in expired {
                    self.cut_link(link);
                }
            }
        }
    }

    /// Every open link is reset (a cut, a partition, the host going offline).
    fn cut_open_links(&mut self) {
        let open: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.open)
            .map(|(k, _)| *k)
            .collect();
        for link in open {
            self.cut_link(link);
        }
    }

    /// The gateway closes every authenticated session of the device, as when another
    /// connection with the same Device ID arrives.
    fn kick_live_sessions(&mut self) {
        let live: Vec<u64> = self
            .platform
            .conns
            .iter()
            .filter(|(_, c)| c.device_id.is_some())
            .map(|(k, _)| *k)
            .collect();
        for link in live {
            self.cut_link(link);
        }
    }

    /// Without growing backoff a device kicked within a second of connecting would reconnect
    /// a few times per second; with it, the delay reaches `max_ms` (10 s) after a handful of
    /// kicks. The bound sits between the two: a few quick attempts, then one per 3 s, plus a
    /// fresh ramp for each restart or new credential.
    fn end_kick_storm(&mut self) {
        let Some(storm) = self.kick_storm.take() else {
            return;
        };
        let duration = storm.until.saturating_sub(storm.started);
        let bound = 8 + duration / (3 * SECOND) + 8 * storm.fresh_starts;
        if storm.connects > bound {
            self.report.violations.push(format!(
                "{} CONNECTs during a {duration} ms kick storm (bound {bound}): the backoff does not grow",
                storm.connects
            ));
        }
    }

    /// The device's wall clock.
    fn device_now(&self) -> u64 {
        self.now.saturating_add_signed(self.clock_skew)
    }

    fn with_device(&mut self, f: impl FnOnce(&mut Device, u64)) {
        let now = self.device_now();
        if let Some(device) = self.device.as_mut() {
            f(device, now);
            self.drain();
        }
    }

    fn app_send(&mut self) {
        let now = self.device_now();
        let Some(device) = self.device.as_mut() else {
            return; // the app is down with the device
        };
        self.message_counter += 1;
        let n = self.message_counter;
        let size = if self.large_every > 0 && n.is_multiple_of(self.large_every) {
            5_000
        } else {
            self.rng.range(1..200) as usize
        };
        // A small message the gateway refuses now and then: it must end rejected, not hold up
        // the queue.
        let poison = self.faults.poison_rate > 0.0 && self.rng.chance(self.faults.poison_rate);
        self.poison_sent += u64::from(poison);
        let size = if poison { 20 } else { size };
        let mut payload = if poison {
            [POISON, format!("{n} ").as_bytes()].concat()
        } else {
            format!("message {n} ").into_bytes()
        };
        payload.resize(size.max(payload.len()), b'x' + (n % 3) as u8);
        let stream = StreamOptions {
            stream_group: Some("g".into()),
            stream: Some("s".into()),
            compression: self.compression,
            ..Default::default()
        };
        let options = MessageOptions {
            batch_id: Some(format!("b{}", n / 10)),
            ..Default::default()
        };
        match device.send(now, &stream, &options, payload.clone()) {
            Ok(seq) => {
                self.attempted.insert(seq, payload);
                self.report.sent += 1;
            }
            Err(_) => self.refused_sends += 1,
        }
        self.drain();
    }

    fn crash(&mut self) {
        if self.device.take().is_none() {
            return;
        }
        self.report.crashes += 1;
        self.instance += 1;
        self.timer_at = None;
        // A new process cannot know what the old one was told.
        self.not_before.clear();
        // Storage operations not finished are lost with the process.
        self.store_ops.clear();
        self.store_busy = false;
        let open: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.open)
            .map(|(k, _)| *k)
            .collect();
        for link in open {
            // The OS resets the sockets of a killed process.
            self.links.get_mut(&link).unwrap().open = false;
            self.platform.close(link);
        }
        let delay = self.rng.range(0..5 * SECOND);
        self.at(self.now + delay, Ev::Restart);
    }

    fn restart(&mut self) {
        if self.device.is_some() {
            return;
        }
        self.instance += 1;
        if let Some(storm) = &mut self.kick_storm {
            storm.fresh_starts += 1;
        }
        let seed: [u8; 32] = self.rng.bytes();
        let device = Device::new(
            self.config(),
            self.device_now(),
            seed,
            &self.store.meta(),
            self.store.state(),
        );
        // What the app had reported lives in the device's saved state; the app's own target is
        // whatever the device restored.
        self.reported_target = serde_json::to_value(device.reported_properties()).expect("json");
        if self.reported_stored > 0
            && !self.faults.relaxed_store
            && !self
                .reported_revisions
                .iter()
                .any(|(_, target)| *target == self.reported_target)
        {
            self.report.violations.push(format!(
                "reported update {} was said to be stored, but the device came back with {}",
                self.reported_stored, self.reported_target
            ));
        }
        // Revisions count per run.
        self.reported_revisions.clear();
        self.reported_updates = 0;
        self.reported_stored = 0;
        self.identity = device.device_id().map(str::to_owned);
        self.device = Some(device);
        if self.offline {
            // A host knows at start that it has no network (the browser's `navigator.onLine`).
            let now = self.device_now();
            if let Some(device) = self.device.as_mut() {
                device.handle_input(now, Input::NetworkLost);
            }
        }
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            let Some(device) = self.device.as_mut() else {
                return;
            };
            let output = device.poll_output();
            match output {
                Output::Timeout(deadline) => {
                    // The host's timer waits on the true time for the device's wall clock.
                    let deadline = deadline.map(|at| at.saturating_add_signed(-self.clock_skew));
                    self.timer_at = deadline;
                    if let Some(at) = deadline {
                        let instance = self.instance;
                        self.at(at.max(self.now), Ev::DeviceTimer { instance });
                    }
                    return;
                }
                Output::Store(request) => {
                    self.store_ops.push_back(request);
                    self.kick_store();
                }
                Output::Http(request) if self.offline => self.report.violations.push(format!(
                    "HTTP {:?} {} while the host said the network is offline",
                    request.method, request.url
                )),
                Output::Connect { conn, .. } if self.offline => self.report.violations.push(
                    format!("connect {conn:?} while the host said the network is offline"),
                ),
                Output::Http(request) => self.http_out(request),
                Output::Connect {
                    endpoint: vdev_core::Endpoint::Tcp { host, .. },
                    ..
                } if host != "127.0.0.1" => self
                    .report
                    .violations
                    .push(format!("opened plain tcp to {host}, which is not loopback")),
                Output::Connect { conn, endpoint: _ } => self.connect(conn),
                Output::Transmit { conn, bytes } => self.transmit(conn, bytes),
                Output::Close { conn } => {
                    if let Some((&id, _)) = self
                        .links
                        .iter()
                        .find(|(_, l)| l.conn == conn && l.instance == self.instance)
                    {
                        self.links.get_mut(&id).unwrap().open = false;
                        let at = self.now + self.latency();
                        self.at(
                            at,
                            Ev::BytesToPlatform {
                                link: id,
                                bytes: Vec::new(),
                            },
                        );
                    }
                }
                Output::Event(event) => self.app_event(event),
            }
        }
    }

    fn app_event(&mut self, event: Event) {
        if self.trace {
            println!("{:>9}   event {event:?}", self.now - START);
        }
        // The app's send resolves here, by the rule every host applies: from now on the
        // message must not be lost.
        if let Some(settlement @ SendSettlement::Stored { .. }) = event.send_settlement() {
            self.completed.extend(settlement.seqs());
        }
        match event {
            Event::ReportedPropertiesStored { revision } => {
                // Keep the stored one (as the oldest a restart may bring back) and later ones.
                match self
                    .reported_revisions
                    .iter()
                    .position(|(r, _)| *r == revision)
                {
                    Some(at) => {
                        self.reported_revisions.drain(..at);
                        self.reported_stored = revision;
                    }
                    None => self.report.violations.push(format!(
                        "reported revision {revision} said stored was never handed out"
                    )),
                }
            }
            Event::MessageDelivered { seq } => {
                if !self.attempted.contains_key(&seq) {
                    self.report
                        .violations
                        .push(format!("delivered event for unknown seq {seq}"));
                }
                self.delivered.insert(seq);
            }
            Event::Registered { device_id, .. } => {
                if let Some(storm) = &mut self.kick_storm {
                    storm.fresh_starts += 1;
                }
                if self
                    .identity
                    .as_ref()
                    .is_some_and(|known| *known != device_id)
                {
                    // The device dropped the old identity's twin; what the app reports from
                    // here on is the new device's.
                    self.report.faults.identity_changes += 1;
                    if let Some(device) = &self.device {
                        self.reported_target =
                            serde_json::to_value(device.reported_properties()).expect("json");
                    }
                    // The old identity's updates are gone with its twin.
                    self.reported_revisions.clear();
                    self.reported_stored = 0;
                    if self.reported_target != json!({}) {
                        self.report.violations.push(format!(
                            "device {device_id} kept reported properties of the old identity: {}",
                            self.reported_target
                        ));
                    }
                }
                if self.identity.is_none() {
                    self.platform
                        .adopted_without_identity
                        .insert(device_id.clone());
                }
                self.identity = Some(device_id);
            }
            Event::MessageRejected { seq, reason } => {
                if self.completed.contains(&seq) && !self.refused_seqs().contains(&seq) {
                    self.report
                        .violations
                        .push(format!("durable message {seq} rejected: {reason}"));
                }
                self.rejected.insert(seq);
            }
            Event::ProvisioningFailed(error) => {
                self.report
                    .violations
                    .push(format!("provisioning failed: {error}"));
            }
            _ => {}
        }
    }

    /// Messages whose upload the Platform refused for good (blobs are named `<origin>-<seq>`).
    /// Messages the Platform refuses for good: uploads it refused (blobs are named
    /// `<origin>-<seq>`) and messages its gateway will not take.
    fn refused_seqs(&self) -> BTreeSet<u64> {
        let origin = self.store.meta().origin;
        let uploads = self
            .platform
            .refused_blobs
            .iter()
            .filter_map(|blob| blob.strip_prefix(&origin)?.strip_prefix('-')?.parse().ok());
        let poison = self
            .attempted
            .iter()
            .filter(|(_, payload)| payload.starts_with(POISON))
            .map(|(seq, _)| *seq);
        uploads.chain(poison).collect()
    }

    fn kick_store(&mut self) {
        if self.store_busy || self.store_ops.is_empty() {
            return;
        }
        self.store_busy = true;
        let delay = self.rng.range(0..5);
        let instance = self.instance;
        self.at(self.now + delay, Ev::StoreDone { instance });
    }

    fn store_done(&mut self, instance: u64) {
        if instance != self.instance {
            return;
        }
        self.store_busy = false;
        let Some(request) = self.store_ops.pop_front() else {
            return;
        };
        if let StoreRequest::Append { records } = &request
            && self.now < self.fault_end
            && self.rng.chance(self.faults.quota_fail)
        {
            let (first, last) = (records[0].seq, records[records.len() - 1].seq);
            let input = Input::AppendFailed {
                first,
                last,
                error: StoreError::QuotaExceeded,
            };
            self.with_device(|d, now| d.handle_input(now, input));
            self.kick_store();
            return;
        }
        if matches!(request, StoreRequest::Load { .. })
            && self.now < self.fault_end
            && self.rng.chance(self.faults.load_fail)
        {
            self.report.faults.failed_loads += 1;
            let input = Input::LoadFailed {
                error: StoreError::Failed("read error".into()),
            };
            self.with_device(|d, now| d.handle_input(now, input));
            self.kick_store();
            return;
        }
        if matches!(
            request,
            StoreRequest::Remove { .. } | StoreRequest::SaveState { .. }
        ) && self.now < self.fault_end
            && self.rng.chance(self.faults.write_fail)
        {
            self.report.faults.failed_writes += 1;
            let error = StoreError::Failed("write error".into());
            let input = match request {
                StoreRequest::Remove { seqs, bytes } => Input::RemoveFailed { seqs, bytes, error },
                _ => Input::SaveStateFailed { error },
            };
            self.with_device(|d, now| d.handle_input(now, input));
            self.kick_store();
            return;
        }
        if let StoreRequest::Remove { seqs, bytes } = &request {
            // Hosts like IndexedDB trust this figure instead of reading the records.
            let stored: u64 = self
                .store
                .records()
                .filter(|(seq, _)| seqs.binary_search(seq).is_ok())
                .map(|(_, data)| data.len() as u64)
                .sum();
            if stored != *bytes {
                self.report.violations.push(format!(
                    "removal of {seqs:?} claims {bytes} bytes, the store holds {stored}"
                ));
            }
        }
        let strict = match request {
            StoreRequest::Reserve { .. } => true,
            StoreRequest::Append { .. } | StoreRequest::SaveState { .. } => {
                !self.faults.relaxed_store
            }
            StoreRequest::Remove { .. } | StoreRequest::Load { .. } => false,
        };
        if !matches!(request, StoreRequest::Load { .. }) {
            self.undurable.push(request.clone());
        }
        // A strict write reaches the disk with everything before it (the log is ordered); the
        // rest gets there when the store checkpoints, at random moments.
        if strict || self.rng.chance(0.2) {
            for done in self.undurable.drain(..) {
                let _ = self.durable_store.execute(done);
            }
        }
        if let Some(answer) = self.store.execute(request) {
            self.with_device(|d, now| d.handle_input(now, answer));
        }
        self.kick_store();
    }

    /// The process dies and the store comes back as the disk has it: a prefix of what it
    /// reported done since the last durable point survives.
    fn power_loss(&mut self) {
        if self.device.is_none() {
            return;
        }
        self.report.faults.power_losses += 1;
        let survive = self.rng.range(0..self.undurable.len() as u64 + 1) as usize;
        let lost = self.undurable.split_off(survive);
        for done in self.undurable.drain(..) {
            let _ = self.durable_store.execute(done);
        }
        for request in &lost {
            if let StoreRequest::Append { records } = request {
                self.report.faults.lost_appends += records.len() as u64;
                self.lost_to_power.extend(records.iter().map(|r| r.seq));
            }
        }
        let restored: Vec<u64> = self
            .durable_store
            .records()
            .map(|(seq, _)| seq)
            .filter(|seq| self.rejected.contains(seq))
            .collect();
        self.rejected_then_restored.extend(restored);
        self.store = self.durable_store.clone();
        self.crash();
    }

    /// Whether the device's clock is behind the Platform's. Then it cannot know the Platform's
    /// instants (expiries it learnt since the step, or that a process started since read with
    /// that clock): it may present what expired, the Platform refuses it, and what must hold is
    /// that the device gets over that. Expiries are checked whenever its clock is right or
    /// ahead, which includes after every correction.
    fn clock_behind(&self) -> bool {
        self.clock_skew < 0
    }

    fn check_token_use(&mut self, request: &HttpRequest) {
        if self.clock_behind() {
            return;
        }
        let auth = request
            .headers
            .iter()
            .find(|(k, _)| k == "Authorization")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if let Some(token) = auth.strip_prefix("DeviceToken ") {
            if token != PROVISIONING_TOKEN
                && self.platform.token_validity(token, self.now) == Validity::Expired
            {
                self.report.violations.push(format!(
                    "registration token used after expiry at {}",
                    self.now
                ));
            }
        } else if auth.starts_with("SharedAccessSignature")
            && self.platform.sas_validity(&auth, self.now) == Validity::Expired
        {
            self.report
                .violations
                .push("SAS used for upload after expiry".into());
        }
        if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&request.body)
            && let Some(token) = body["registrationToken"].as_str()
            && self.platform.token_validity(token, self.now) == Validity::Expired
        {
            self.report
                .violations
                .push("registration token refreshed after expiry".into());
        }
    }

    fn http_out(&mut self, request: HttpRequest) {
        if self.trace {
            println!(
                "{:>9}   http {:?} {}",
                self.now - START,
                request.method,
                request.url
            );
        }
        self.check_token_use(&request);
        let endpoint = Endpoint::of(&request);
        // `Retry-After` is a wait on the device's timeline, which a step ahead moves on.
        let device_time = self.now + self.clock_lead;
        if let Some(&not_before) = self.not_before.get(&endpoint)
            && device_time < not_before
        {
            self.report.violations.push(format!(
                "{endpoint:?} called at {} ms, {} ms before its Retry-After passed",
                self.now - START,
                not_before - device_time
            ));
        }
        if self.partitioned || (self.now < self.fault_end && self.rng.chance(self.faults.http_loss))
        {
            return; // lost; the device's deadline catches it
        }
        let at = self.now + self.latency();
        let instance = self.instance;
        self.at(at, Ev::HttpAtPlatform { instance, request });
    }

    fn http_at_platform(&mut self, instance: u64, request: HttpRequest) {
        let before = self.platform.new_ops.len();
        let faults = (self.now < self.fault_end).then_some((&self.faults, &mut self.rng));
        let response = self.platform.http(self.now, &request, faults);
        for op in self
            .platform
            .new_ops
            .split_off(before.min(self.platform.new_ops.len()))
        {
            self.operations_seen += 1;
            let skipped = (self.faults.technician_skips_first && self.operations_seen == 1)
                || (self.now < self.fault_end
                    && self.rng.chance(self.faults.technician_ignore_rate));
            if skipped {
                self.report.faults.skipped_operations += 1;
                continue; // it expires, and the device must start another
            }
            // The technician approves after a while; during the fault window sometimes too late
            // for the operation, after it always in time (or the queue could never drain).
            let latest = if self.now < self.fault_end {
                90 * SECOND
            } else {
                (self.platform.op_lifetime / 2).clamp(SECOND + 1, 90 * SECOND)
            };
            let delay = self.rng.range(SECOND..latest);
            self.at(self.now + delay, Ev::Approve { op });
        }
        if self.partitioned || (self.now < self.fault_end && self.rng.chance(self.faults.http_loss))
        {
            return;
        }
        let at = self.now + self.latency();
        self.at(
            at,
            Ev::HttpAtDevice {
                instance,
                endpoint: Endpoint::of(&request),
                id: request.id,
                response: Ok(response),
            },
        );
    }

    fn connect(&mut self, conn: ConnectionId) {
        let instance = self.instance;
        let at = self.now + self.latency();
        if self.partitioned {
            self.at(at, Ev::ConnectFailed { instance, conn });
            return;
        }
        let link = self.next_link;
        self.next_link += 1;
        self.links.insert(
            link,
            Link {
                instance,
                conn,
                open: true,
                to_platform_at: at,
                to_device_at: at,
                half_open: false,
            },
        );
        self.platform.open(link);
        self.at(
            at,
            Ev::Connected {
                instance,
                conn,
                link,
            },
        );
    }

    fn transmit(&mut self, conn: ConnectionId, bytes: Vec<u8>) {
        let Some((&id, _)) = self
            .links
            .iter()
            .find(|(_, l)| l.conn == conn && l.instance == self.instance && l.open)
        else {
            return;
        };
        if let Some(violation) = self.check_connect_credential(&bytes) {
            self.report.violations.push(violation);
        }
        if bytes.first().is_some_and(|b| b >> 4 == 1)
            && let Some(storm) = &mut self.kick_storm
        {
            storm.connects += 1;
        }
        let latency = self.latency();
        let link = self.links.get_mut(&id).unwrap();
        // TCP keeps order: a later write never overtakes an earlier one.
        link.to_platform_at = link.to_platform_at.max(self.now + latency);
        let at = link.to_platform_at;
        self.at(at, Ev::BytesToPlatform { link: id, bytes });
    }

    fn check_connect_credential(&self, bytes: &[u8]) -> Option<String> {
        if !self.clock_behind()
            && bytes.first().is_some_and(|b| b >> 4 == 1)
            && let Ok(Some((vdev_core::testing::mqtt::Packet::Connect(c), _))) =
                vdev_core::testing::mqtt::decode(bytes, 1 << 20)
        {
            let sas = String::from_utf8(c.password.unwrap_or_default()).unwrap_or_default();
            if self.platform.sas_validity(&sas, self.now) == Validity::Expired {
                return Some(format!("CONNECT with an expired SAS at {}", self.now));
            }
        }
        None
    }

    fn bytes_to_platform(&mut self, link: u64, bytes: Vec<u8>) {
        if bytes.is_empty() {
            // The device closed the connection.
            self.platform.close(link);
            return;
        }
        if !self.platform.conns.contains_key(&link)
            || self.links.get(&link).is_some_and(|l| l.half_open)
        {
            return;
        }
        let was_authenticated = self.platform.conns[&link].device_id.is_some();
        let (reply, close) = self.platform.mqtt(self.now, link, &bytes);
        let authenticated = self
            .platform
            .conns
            .get(&link)
            .is_some_and(|c| c.device_id.is_some());
        if !was_authenticated
            && authenticated
            && self
                .kick_storm
                .as_ref()
                .is_some_and(|storm| self.now < storm.until)
        {
            // The rival reconnects soon after, well before the session counts as stable.
            let at = self.now + self.rng.range(100..1_500);
            self.at(at, Ev::KickLink { link });
        }
        if let Some(at) = self
            .platform
            .conns
            .get(&link)
            .and_then(|c| c.sas_expires_at)
        {
            self.at(at, Ev::SasExpiryCheck);
        }
        if !reply.is_empty() {
            self.send_to_device(link, reply);
        }
        if close {
            self.cut_link(link);
        }
    }

    fn send_to_device(&mut self, link_id: u64, bytes: Vec<u8>) {
        let latency = self.latency();
        let Some(link) = self.links.get_mut(&link_id) else {
            return;
        };
        if !link.open || link.half_open {
            return;
        }
        link.to_device_at = link.to_device_at.max(self.now + latency);
        let (at, instance, conn) = (link.to_device_at, link.instance, link.conn);
        self.at(
            at,
            Ev::BytesToDevice {
                instance,
                conn,
                bytes,
            },
        );
    }

    fn cut_link(&mut self, link_id: u64) {
        self.platform.close(link_id);
        let Some(link) = self.links.get_mut(&link_id) else {
            return;
        };
        if !link.open || link.half_open {
            return; // a silent gateway sends no reset either
        }
        link.open = false;
        // The reset reaches the device after everything already on the wire.
        let at = link.to_device_at.max(self.now) + 1;
        let (instance, conn) = (link.instance, link.conn);
        self.at(at, Ev::ClosedToDevice { instance, conn });
    }

    fn check(&mut self) {
        let refused = self.refused_seqs();
        self.report.faults.throttled = self.platform.throttled;
        self.report.faults.upload_errors = self.platform.upload_errors;
        self.report.faults.refused_uploads = self.platform.refused_blobs.len() as u64;
        self.report.faults.insecure_endpoints = self.platform.insecure_endpoints_announced;
        self.report.faults.refreshes = self.platform.refreshes;
        self.report.faults.refused_publishes = self.platform.refused_publishes;
        self.report.faults.refresh_retries = self.platform.refresh_retries;
        if self.platform.lost_refresh_answers_refused > 0 {
            self.report.violations.push(format!(
                "{} refreshes retried after a lost answer were refused: the device needed a \
                 technician",
                self.platform.lost_refresh_answers_refused
            ));
        }
        let violations = &mut self.report.violations;
        let origin = self.store.meta().origin;
        let stored: Vec<_> = self
            .platform
            .stored
            .iter()
            .filter(|m| m.origin == origin)
            .collect();
        // In order, each once, per device: the Platform drops replays per (device, origin), so a
        // message in flight when the identity changed may be stored again under the new one.
        let mut last_by_device: BTreeMap<&str, u64> = BTreeMap::new();
        for m in &stored {
            if let Some(last) = last_by_device.insert(&m.device_id, m.seq)
                && last >= m.seq
            {
                violations.push(format!(
                    "stored out of order for {}: {last} then {}",
                    m.device_id, m.seq
                ));
            }
        }
        violations.extend(self.platform.misdirected_patches.iter().cloned());
        let stored_seqs: BTreeSet<u64> = stored.iter().map(|m| m.seq).collect();
        // A message the Platform refused for good ends rejected: never delivered, never stored.
        for seq in refused.intersection(&self.completed) {
            // Unless a relaxed store lost it (see below): the device no longer knows it.
            if self.lost_to_power.contains(seq) && !self.rejected.contains(seq) {
                continue;
            }
            // A rejected message the store still held after a power loss is the restarted
            // device's to send again (removals are not durable requests): a gateway that takes
            // it then delivers it.
            let sent_again = self.rejected_then_restored.contains(seq);
            if !self.rejected.contains(seq) || (self.delivered.contains(seq) && !sent_again) {
                violations.push(format!(
                    "message {seq} refused by the platform has no rejected outcome"
                ));
            }
            if stored_seqs.contains(seq) {
                violations.push(format!("message {seq} refused by the platform was stored"));
            }
        }
        for m in &stored {
            let has = |k: &str, v: &str| m.properties.iter().any(|(a, b)| a == k && b == v);
            let has_batch = m
                .properties
                .iter()
                .any(|(k, v)| k == "batch-id" && v.starts_with('b'));
            if !has("stream-group-name", "g") || !has("stream-name", "s") || !has_batch {
                violations.push(format!("message {} lost its stream properties", m.seq));
            }
            match self.attempted.get(&m.seq) {
                Some(payload) if *payload == m.payload => {}
                Some(_) => {
                    violations.push(format!("message {} stored with another payload", m.seq))
                }
                None => violations.push(format!("message {} stored but never sent", m.seq)),
            }
        }
        for seq in self.completed.difference(&refused) {
            // A relaxed store reported these stored and lost them: the app was told a lie the
            // core cannot see. What the core must never do is hand their numbers out again
            // (the payload check above catches a number the Platform holds for another message).
            // Such a message may have reached the Platform before the loss; the restarted
            // device no longer knows it, so it gets no outcome either way.
            if self.lost_to_power.contains(seq) {
                continue;
            }
            if !stored_seqs.contains(seq) {
                violations.push(format!(
                    "message {seq} was stored durably by the device but never reached the platform"
                ));
            }
            if !self.delivered.contains(seq) {
                violations.push(format!("message {seq} has no delivered outcome"));
            }
        }
        let pending = self.device.as_ref().map(|d| d.stats().pending_count);
        if pending != Some(0) {
            violations.push(format!("queue did not drain: {pending:?} pending"));
        }
        if self.store.meta().count != 0 {
            violations.push(format!(
                "store still holds {} records",
                self.store.meta().count
            ));
        }
        if self.platform.reported != self.reported_target {
            violations.push(format!(
                "reported properties differ: platform {} device {}",
                self.platform.reported, self.reported_target
            ));
        }
        if let Some(device) = &self.device {
            let (desired, version) = device.desired_properties();
            let mut platform_desired = self.platform.desired.clone();
            if let Some(map) = platform_desired.as_object_mut() {
                map.remove("$version");
            }
            if version != Some(self.platform.desired_version)
                || serde_json::to_value(desired).ok() != Some(platform_desired)
            {
                violations.push(format!(
                    "desired properties differ: device {desired} v{version:?}, platform {} v{}",
                    self.platform.desired, self.platform.desired_version
                ));
            }
            // "If newer": the app that has version `v` gets nothing; one behind gets them.
            if let Some(v) = version {
                let behind = v
                    .checked_sub(1)
                    .map(|older| device.desired_properties_if_newer(older));
                if device.desired_properties_if_newer(v).is_some()
                    || behind.is_some_and(|newer| newer != Some((desired, v)))
                {
                    violations.push(format!("desired properties if newer than v{v} are wrong"));
                }
            }
        }
    }
}
