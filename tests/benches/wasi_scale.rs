//! Figure 5 of issue 7, WASI scale: how many `vdev-wasi` devices (the library world, one store
//! directory each) one wasmtime host runs at one message per second each with every message
//! stored at the Platform once and in order, and the memory each instance costs; against the
//! memory of a `vdev-core` device on the native host.
//!
//! The devices run on one engine (the components are compiled once, before anything is timed),
//! each in its own task of one tokio runtime apart from the Platform's. The ramp adds devices
//! step by step (those of earlier steps keep running); each step passes when, over its window,
//! every device sent on time, every message sent in the window was acknowledged (PUBACK, i.e.
//! stored) within one send interval at p99 and all of them within a few seconds after the
//! window, and the Platform holds each device's messages gap-free, unrepeated and in order.
//! The figure is the largest step that passed.
//!
//! Memory is the growth of the process's resident set (`VmRSS`) over the devices running, so it
//! includes the Platform's share per connection (it runs in the same process). Each
//! measurement runs in a child process of the bench (`--child wasi_scale`, `--child
//! native_memory`) so memory freed by earlier figures cannot hide the growth.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vdev_core::StreamOptions;
use vdev_platform::PlatformInfo;
use vdev_tests::wasi_host::{LibraryConfig, LibraryDevice, LibraryEvent, WasiHost};
use wasmtime::component::Val;

use super::{Better, Figure, PAYLOAD_BYTES, Settings, Stand, connected_vdev, percentile};

const SEND_INTERVAL: Duration = Duration::from_secs(1);
/// After the window, every message sent in it must be stored within this.
const CATCH_UP: Duration = Duration::from_secs(5);
/// The ramp stops before a step would take the process past this resident set.
const RSS_LIMIT_BYTES: f64 = 8.0 * 1024.0 * 1024.0 * 1024.0;
const MB: f64 = 1024.0 * 1024.0;

/// The process's resident set in bytes.
fn rss_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(f64::NAN, |kb| kb * 1024.0)
}

/// CPU time the process has used (user and system), in seconds.
fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, counted after the command name's closing parenthesis;
    // the kernel counts them in clock ticks of 1/100 s.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
            Some((ticks(11)? + ticks(12)?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// Open file descriptors of the process, and its limit on them.
fn open_files() -> (f64, f64) {
    let open = std::fs::read_dir("/proc/self/fd").map_or(f64::NAN, |dir| dir.count() as f64);
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(f64::INFINITY);
    (open, limit)
}

fn device_id(index: usize) -> String {
    format!("wasi-scale-{index:05}")
}

/// 256 bytes naming the device and the message's counter, read back by [`parse_message`].
fn message(index: usize, counter: u64) -> Vec<u8> {
    let mut bytes = format!("d{index:05} c{counter:09} ").into_bytes();
    bytes.resize(PAYLOAD_BYTES, b'x');
    bytes
}

fn parse_message(text: &str) -> Option<(usize, u64)> {
    let mut words = text.split(' ');
    let index = words.next()?.strip_prefix('d')?.parse().ok()?;
    let counter = words.next()?.strip_prefix('c')?.parse().ok()?;
    Some((index, counter))
}

// ----- one WASI device --------------------------------------------------------------------

/// What a device task reports to the ramp.
#[derive(Default)]
struct DeviceStats {
    connected: bool,
    sent: u64,
    delivered: u64,
    /// `(sent at, send to acknowledged in ms)` of messages acknowledged since the window opened.
    lags: Vec<(Instant, f64)>,
    /// The longest a send started after it was due since the window opened, in ms.
    late_ms: f64,
    /// Times the connection left `connected` after it was first up.
    disconnects: u64,
    linear_memory: usize,
    failure: Option<String>,
}

struct Shared {
    info: PlatformInfo,
    http: reqwest::Client,
    stop: AtomicBool,
}

fn lock(stats: &Mutex<DeviceStats>) -> std::sync::MutexGuard<'_, DeviceStats> {
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Approves a provisioning operation as the device shows it (each device task does its own,
/// so a thousand devices are approved side by side, not one after another).
async fn approve(shared: &Shared, operation_id: &str) -> Result<(), String> {
    let url = format!(
        "{}/workspaces/{}/provisioning-operations/approve",
        shared.info.http_url.as_deref().unwrap_or_default(),
        shared.info.workspace_id
    );
    let response = shared
        .http
        .put(url)
        .bearer_auth(&shared.info.admin_token)
        .json(&json!({ "provisioningOperationId": operation_id }))
        .send()
        .await
        .map_err(|e| format!("approving {operation_id}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "approving {operation_id}: status {}",
            response.status()
        ));
    }
    Ok(())
}

fn connection_state(event: &LibraryEvent) -> Option<&str> {
    match &event.payload {
        Some(Val::Enum(state)) if event.name == "connection-state-changed" => Some(state),
        _ => None,
    }
}

/// `device.poll` for at most `timeout`.
async fn poll(device: &mut LibraryDevice, timeout: Duration) -> Result<Vec<LibraryEvent>, String> {
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    device
        .poll(timeout_ms)
        .await
        .map_err(|e| format!("poll: {e:#}"))
}

async fn run_device(
    host: WasiHost,
    index: usize,
    store_dir: PathBuf,
    shared: Arc<Shared>,
    stats: Arc<Mutex<DeviceStats>>,
) {
    if let Err(failure) = drive_device(&host, index, &store_dir, &shared, &stats).await {
        lock(&stats).failure = Some(format!("{}: {failure}", device_id(index)));
    }
}

async fn drive_device(
    host: &WasiHost,
    index: usize,
    store_dir: &std::path::Path,
    shared: &Shared,
    stats: &Mutex<DeviceStats>,
) -> Result<(), String> {
    std::fs::create_dir_all(store_dir).map_err(|e| format!("store directory: {e}"))?;
    let config = LibraryConfig::tcp(
        shared.info.http_url.clone().unwrap_or_default(),
        shared.info.provisioning_token.clone(),
        device_id(index),
    );
    let mut device = host
        .start_library_device(store_dir, config)
        .await
        .map_err(|e| format!("start: {e:#}"))?;

    let mut connected = false;
    while !connected {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        for event in poll(&mut device, Duration::from_millis(500)).await? {
            if event.name == "provisioning-operation" {
                let id = event
                    .string_field("id")
                    .ok_or("a provisioning operation without an id")?;
                approve(shared, &id).await?;
            }
            connected |= connection_state(&event) == Some("connected");
        }
    }
    {
        let mut stats = lock(stats);
        stats.connected = true;
        stats.linear_memory = device.linear_memory_bytes();
    }

    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut counter = 0;
    let mut due = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= due {
            let late = now - due;
            let seq = device
                .send(&message(index, counter))
                .await
                .map_err(|e| format!("send: {e:#}"))?;
            sent_at.insert(seq, now);
            counter += 1;
            due += SEND_INTERVAL;
            let mut stats = lock(stats);
            stats.sent = counter;
            stats.late_ms = stats.late_ms.max(late.as_secs_f64() * 1e3);
            stats.linear_memory = device.linear_memory_bytes();
        }
        for event in poll(&mut device, due.saturating_duration_since(Instant::now())).await? {
            match (event.name.as_str(), &event.payload) {
                ("message-delivered", Some(Val::U64(seq))) => {
                    if let Some(at) = sent_at.remove(seq) {
                        let mut stats = lock(stats);
                        stats.delivered += 1;
                        stats.lags.push((at, at.elapsed().as_secs_f64() * 1e3));
                    }
                }
                ("message-rejected", payload) => return Err(format!("rejected: {payload:?}")),
                _ => {
                    if let Some(state) = connection_state(&event) {
                        lock(stats).disconnects += u64::from(state != "connected");
                    }
                }
            }
        }
    }
    device.stop().await.map_err(|e| format!("stop: {e:#}"))
}

// ----- what the Platform stored ------------------------------------------------------------

/// Reads the Platform's stored messages forward from where it last stopped and checks that
/// every device's counters follow each other: nothing missing, repeated or out of order.
#[derive(Default)]
struct StoredCheck {
    after_id: i64,
    /// Per device, the counter its next stored message must carry (= messages stored).
    next: Vec<u64>,
    rows: u64,
}

impl StoredCheck {
    fn read(&mut self, stand: &Stand, devices: usize) -> Result<(), String> {
        const PAGE: usize = 10_000;
        self.next.resize(devices, 0);
        loop {
            let path = format!("/messages?afterId={}&limit={PAGE}", self.after_id);
            let page = stand.admin("GET", &path, None);
            let rows = page.as_array().ok_or("the message list is not a list")?;
            for row in rows {
                self.after_id = row["id"].as_i64().ok_or("a stored message without id")?;
                self.rows += 1;
                let text = row["payloadText"].as_str().unwrap_or_default();
                let (index, counter) =
                    parse_message(text).ok_or_else(|| format!("a foreign message: {row}"))?;
                let next = self
                    .next
                    .get_mut(index)
                    .ok_or_else(|| format!("a message of unknown device {index}"))?;
                if row["deviceId"] != device_id(index) || counter != *next {
                    return Err(format!(
                        "{}: stored counter {counter} where {} was due (missing, repeated \
                         or out of order)",
                        device_id(index),
                        *next
                    ));
                }
                *next += 1;
            }
            if rows.len() < PAGE {
                return Ok(());
            }
        }
    }
}

// ----- the ramp ---------------------------------------------------------------------------

struct Step {
    instances: usize,
    passed: bool,
    /// Why it failed, if it did.
    failure: String,
    /// Open file descriptors at the end of the window.
    open_files: f64,
    /// CPU the whole process (devices and Platform) used over the window, in % of one core.
    cpu_percent: f64,
    connect_seconds: f64,
    window_messages: usize,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    late_max_ms: f64,
    caught_up_ms: f64,
    rss_per_instance_mb: f64,
    linear_per_instance_mb: f64,
}

impl Step {
    fn summary(&self) -> String {
        if self.connect_seconds.is_nan() {
            return format!("{}: failed ({})", self.instances, self.failure);
        }
        let verdict = if self.passed {
            "passed".to_owned()
        } else {
            format!("failed ({})", self.failure)
        };
        format!(
            "{}: {verdict}, connected in {:.1} s, {} messages in the window, send to stored \
             p50 {:.0} ms / p99 {:.0} ms / max {:.0} ms, sends late by at most {:.0} ms, all \
             stored {:.0} ms after the window, {:.2} MB RSS per instance, {:.0} open files, CPU {:.0}% of one core",
            self.instances,
            self.connect_seconds,
            self.window_messages,
            self.lag_p50_ms,
            self.lag_p99_ms,
            self.lag_max_ms,
            self.late_max_ms,
            self.caught_up_ms,
            self.rss_per_instance_mb,
            self.open_files,
            self.cpu_percent,
        )
    }
}

/// Waits until `done` holds or `deadline` passes, checking every 50 ms; true if it held.
fn wait_for(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if done() {
            return true;
        }
        if started.elapsed() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The child process's part: runs the ramp and returns figures 5 (instances, memory).
pub fn measure(settings: &Settings) -> Vec<Figure> {
    // Compiling the components is not part of the figure.
    let compiling = Instant::now();
    let host = WasiHost::load().expect("the WASI components build and compile");
    eprintln!(
        "bench: wasi scale: components built and compiled in {:.1} s",
        compiling.elapsed().as_secs_f64()
    );
    let stand = Stand::start(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("device runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = Arc::new(Shared {
        info: stand.info.clone(),
        http: reqwest::Client::new(),
        stop: AtomicBool::new(false),
    });
    let window = Duration::from_secs(settings.wasi_window_seconds);
    let baseline = rss_bytes();
    let mut devices: Vec<Arc<Mutex<DeviceStats>>> = Vec::new();
    let mut tasks = Vec::new();
    let mut check = StoredCheck::default();
    let mut steps: Vec<Step> = Vec::new();
    let mut stopped_early = String::new();

    for &instances in &settings.wasi_steps {
        if let Some(last) = steps.last() {
            let added = (instances - last.instances) as f64;
            let projected = rss_bytes() + last.rss_per_instance_mb * MB * added;
            if projected > RSS_LIMIT_BYTES {
                stopped_early = format!(
                    " The ramp stopped before {instances}: it would take the process past \
                     {:.0} GB.",
                    RSS_LIMIT_BYTES / 1024.0 / MB
                );
                break;
            }
            let (open, limit) = open_files();
            let projected = open + last.open_files / last.instances as f64 * added;
            if projected > 0.9 * limit {
                stopped_early = format!(
                    " The ramp stopped before {instances}: it would need about {projected:.0} \
                     open files, the limit is {limit:.0}."
                );
                break;
            }
        }
        eprintln!("bench: wasi scale: {instances} instances");
        let started = Instant::now();
        for index in devices.len()..instances {
            let stats = Arc::new(Mutex::new(DeviceStats::default()));
            devices.push(stats.clone());
            tasks.push(runtime.spawn(run_device(
                host.clone(),
                index,
                dir.path().join(device_id(index)),
                shared.clone(),
                stats,
            )));
        }
        let failures = || {
            devices
                .iter()
                .filter_map(|d| lock(d).failure.clone())
                .collect::<Vec<_>>()
        };
        let connected = || devices.iter().filter(|d| lock(d).connected).count();
        let connect_deadline =
            Duration::from_secs(60) + Duration::from_millis(50) * instances as u32;
        let all_connected = wait_for(connect_deadline, || {
            connected() == instances || !failures().is_empty()
        });
        let failed = |failure: String| Step {
            instances,
            passed: false,
            failure,
            connect_seconds: f64::NAN,
            window_messages: 0,
            lag_p50_ms: f64::NAN,
            lag_p99_ms: f64::NAN,
            lag_max_ms: f64::NAN,
            late_max_ms: f64::NAN,
            caught_up_ms: f64::NAN,
            rss_per_instance_mb: f64::NAN,
            linear_per_instance_mb: f64::NAN,
            open_files: f64::NAN,
            cpu_percent: f64::NAN,
        };
        if !all_connected || connected() < instances {
            let mut reason = format!(
                "{} of {instances} connected within {} s",
                connected(),
                connect_deadline.as_secs()
            );
            if let Some(first) = failures().first() {
                reason.push_str(&format!("; {first}"));
            }
            steps.push(failed(reason));
            break;
        }
        let connect_seconds = started.elapsed().as_secs_f64();

        // The window: every device sends once a second; the ramp only watches.
        let window_start = Instant::now();
        for stats in &devices {
            let mut stats = lock(stats);
            stats.lags.clear();
            stats.late_ms = 0.0;
        }
        let sent_before: Vec<u64> = devices.iter().map(|d| lock(d).sent).collect();
        let cpu_before = cpu_seconds();
        std::thread::sleep(window);
        let window_end = Instant::now();
        let cpu_percent = (cpu_seconds() - cpu_before) / window.as_secs_f64() * 100.0;
        let sent_by_end: Vec<u64> = devices.iter().map(|d| lock(d).sent).collect();
        let caught_up = wait_for(CATCH_UP, || {
            devices
                .iter()
                .zip(&sent_by_end)
                .all(|(d, &sent)| lock(d).delivered >= sent)
        });
        let caught_up_ms = window_end.elapsed().as_secs_f64() * 1e3;
        let rss = rss_bytes();
        let (open_files, _) = open_files();
        let stored = check.read(&stand, instances).and_then(|()| {
            match check.next.iter().zip(&sent_by_end).position(|(s, e)| s < e) {
                Some(index) if caught_up => Err(format!(
                    "{} acknowledged {} messages but the Platform holds {}",
                    device_id(index),
                    sent_by_end[index],
                    check.next[index]
                )),
                _ => Ok(()),
            }
        });

        let mut lags: Vec<f64> = Vec::new();
        let (mut late_max_ms, mut linear) = (0.0f64, 0usize);
        for stats in &devices {
            let stats = lock(stats);
            lags.extend(
                stats
                    .lags
                    .iter()
                    .filter(|(at, _)| *at >= window_start && *at <= window_end)
                    .map(|(_, lag)| *lag),
            );
            late_max_ms = late_max_ms.max(stats.late_ms);
            linear += stats.linear_memory;
        }
        lags.sort_by(f64::total_cmp);
        let window_messages: u64 = sent_by_end
            .iter()
            .zip(&sent_before)
            .map(|(end, start)| end - start)
            .sum();
        let mut step = failed(String::new());
        step.connect_seconds = connect_seconds;
        step.window_messages = window_messages as usize;
        step.lag_p50_ms = percentile(&lags, 50.0);
        step.lag_p99_ms = percentile(&lags, 99.0);
        step.lag_max_ms = lags.last().copied().unwrap_or(f64::NAN);
        step.late_max_ms = late_max_ms;
        step.caught_up_ms = caught_up_ms;
        step.rss_per_instance_mb = (rss - baseline) / instances as f64 / MB;
        step.linear_per_instance_mb = linear as f64 / instances as f64 / MB;
        step.open_files = open_files;
        step.cpu_percent = cpu_percent;
        let disconnects: u64 = devices.iter().map(|d| lock(d).disconnects).sum();
        let window_ms = window.as_secs_f64() * 1e3;
        step.failure = if let Some(first) = failures().first() {
            first.clone()
        } else if let Err(stored) = stored {
            stored
        } else if !caught_up {
            format!("not all stored {} s after the window", CATCH_UP.as_secs())
        } else if lags.is_empty() || step.lag_p99_ms > SEND_INTERVAL.as_secs_f64() * 1e3 {
            "send to stored p99 above one send interval".to_owned()
        } else if late_max_ms >= SEND_INTERVAL.as_secs_f64() * 1e3 {
            "sends fell a send interval behind".to_owned()
        } else if (window_messages as f64) < instances as f64 * (window_ms / 1e3 - 1.0) {
            format!("only {window_messages} messages sent in the window")
        } else if disconnects > 0 {
            format!("{disconnects} disconnects")
        } else {
            String::new()
        };
        step.passed = step.failure.is_empty();
        eprintln!("bench: wasi scale: {}", step.summary());
        let passed = step.passed;
        steps.push(step);
        if !passed {
            break;
        }
    }

    shared.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    });
    drop(runtime);
    stand.stop();

    let best = steps
        .iter()
        .filter(|s| s.passed)
        .max_by_key(|s| s.instances);
    let summaries: Vec<String> = steps.iter().map(Step::summary).collect();
    let scale_note = format!(
        "The library world on one wasmtime engine, {} s window per step, devices of earlier \
         steps keep running. A step passes when every message sent in the window is stored \
         (PUBACK) within one send interval at p99 and all within {} s after the window, the \
         Platform holds each device's messages gap-free, unrepeated and in order, and no send \
         falls a second behind. The CPU share of each step tells where the time goes: well below \
         the two cores with the lag rising, the devices wait on the disk (every send is \
         durable: written and synced before it returns). Steps: {}.{stopped_early} No anchor: \
         no other SDK runs as a WASI component.",
        window.as_secs(),
        CATCH_UP.as_secs(),
        summaries.join("; "),
    );
    let memory_note = match best {
        Some(step) => format!(
            "Growth of the process's resident set over {} running instances, divided by them; \
             it includes the stand-in Platform's share per connection (same process). The \
             wasm linear memory of an instance has grown to {:.2} MB (pages it never touched \
             take no RSS). The native anchor holds its outbox in \
             memory (MemoryStore), vdev-wasi in files.",
            step.instances, step.linear_per_instance_mb
        ),
        None => "No step passed.".to_owned(),
    };
    vec![
        Figure {
            key: "wasi_scale".into(),
            title: "WASI scale: instances on one wasmtime host at 1 message/s each, all stored in \
                    order"
                .into(),
            unit: "instances".into(),
            better: Better::Higher,
            rows: vec![(
                "vdev-wasi library world".into(),
                best.map_or(f64::NAN, |s| s.instances as f64),
            )],
            note: scale_note,
        },
        Figure {
            key: "wasi_memory".into(),
            title: "WASI scale: memory per instance".into(),
            unit: "MB".into(),
            better: Better::Lower,
            rows: vec![(
                format!(
                    "vdev-wasi library world, RSS growth at {} instances",
                    best.map_or(0, |s| s.instances)
                ),
                best.map_or(f64::NAN, |s| s.rss_per_instance_mb),
            )],
            note: memory_note,
        },
    ]
}

// ----- the anchor: vdev-core on the native host -------------------------------------------

/// The child process's part for the anchor: resident-set growth per native `vdev-core` device,
/// connected and sending one message per second for the window, in MB.
pub fn native_memory(settings: &Settings) -> f64 {
    let devices = settings.native_memory_devices;
    let stand = Arc::new(Stand::start(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("device runtime");
    let baseline = rss_bytes();
    let connected = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..devices)
        .map(|index| {
            let (stand, connected, stop) = (stand.clone(), connected.clone(), stop.clone());
            runtime.spawn(async move {
                let mut device = connected_vdev(&stand, &format!("native-memory-{index:05}")).await;
                connected.fetch_add(1, Ordering::Relaxed);
                let mut ticker = tokio::time::interval(SEND_INTERVAL);
                let mut counter = 0;
                while !stop.load(Ordering::Relaxed) {
                    tokio::select! {
                        _ = ticker.tick() => {
                            device
                                .send(StreamOptions::default(), message(index, counter))
                                .await
                                .expect("stored");
                            counter += 1;
                        }
                        event = device.events.recv() => {
                            if event.is_none() {
                                break;
                            }
                        }
                    }
                }
                device.stop().await;
            })
        })
        .collect();
    let all_connected = wait_for(Duration::from_secs(120), || {
        connected.load(Ordering::Relaxed) == devices
    });
    assert!(all_connected, "native devices connect");
    std::thread::sleep(Duration::from_secs(settings.wasi_window_seconds));
    let per_device = (rss_bytes() - baseline) / devices as f64 / MB;
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for task in tasks {
            task.await.expect("native device task");
        }
    });
    drop(runtime);
    if let Ok(stand) = Arc::try_unwrap(stand) {
        stand.stop();
    }
    per_device
}

/// Runs the figure in child processes (see the module doc) and returns its figures; a child
/// that fails leaves its values missing, which the bench reports.
pub fn figures(settings: &Settings) -> Vec<Figure> {
    let child = |which: &str| -> Result<Value, String> {
        let exe = std::env::current_exe().map_err(|e| format!("the bench binary: {e}"))?;
        let mut command = std::process::Command::new(exe);
        command.args(["--child", which]);
        if settings.quick {
            command.arg("--quick");
        }
        let output = command
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("starting the {which} child: {e}"))?;
        if !output.status.success() {
            return Err(format!("the {which} child failed: {}", output.status));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| format!("the {which} child: {e}"))
    };
    eprintln!("bench: wasi scale: native anchor");
    let anchor = child("native_memory");
    let mut figures = match child("wasi_scale") {
        Ok(document) => super::figures_from_json(&document),
        Err(failure) => vec![
            Figure {
                key: "wasi_scale".into(),
                title: "WASI scale: instances on one wasmtime host".into(),
                unit: "instances".into(),
                better: Better::Higher,
                rows: vec![("vdev-wasi library world".into(), f64::NAN)],
                note: failure.clone(),
            },
            Figure {
                key: "wasi_memory".into(),
                title: "WASI scale: memory per instance".into(),
                unit: "MB".into(),
                better: Better::Lower,
                rows: vec![("vdev-wasi library world".into(), f64::NAN)],
                note: failure,
            },
        ],
    };
    if let Some(memory) = figures.iter_mut().find(|f| f.key == "wasi_memory") {
        let value = match &anchor {
            Ok(value) => value.as_f64().unwrap_or(f64::NAN),
            Err(failure) => {
                memory.note.push_str(&format!(" Anchor: {failure}."));
                f64::NAN
            }
        };
        memory.rows.push((
            format!(
                "vdev-core native host, RSS growth at {} devices",
                settings.native_memory_devices
            ),
            value,
        ));
    }
    figures
}

/// What a child process prints: its figures as JSON.
pub fn run_child(which: &str, settings: &Settings) {
    let document = match which {
        "wasi_scale" => super::figures_to_json(&measure(settings)),
        "native_memory" => json!(native_memory(settings)),
        other => panic!("unknown child {other:?}"),
    };
    println!("{document}");
}
