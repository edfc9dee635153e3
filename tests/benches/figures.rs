//! The benchmark figures of issue 7 that run natively, each beside its anchor, in one run on one
//! machine against a fresh stand-in Platform per repetition: bundle size (read from the built
//! files), drain rate, WASI scale (`wasi_scale.rs`), send-to-stored latency and Platform
//! ingest. Rates are taken from the
//! Platform's own `receivedTime` of the first and last stored message, so connection set-up and
//! the senders' reconnect delays do not count. Each figure is the median of its repetitions.
//!
//! `cargo bench -p vdev-tests --bench figures -- [--quick] [--only KEY] [--repetitions N] [--out DIR]` (see
//! `tests/bench/run.sh`, which first runs the browser figures of `tests/bench/browser.mjs` and
//! the Node.js figures of `tests/bench/node.mjs` and hands their JSON over in
//! `VDEV_BENCH_BROWSER_JSON` and `VDEV_BENCH_NODE_JSON`; they are merged into one table).
//! `--quick` runs every figure with tiny counts: it checks the harness, its numbers mean
//! nothing. `--only KEY` runs one native figure (`bundle_size`, `drain_rate`, `wasi_scale`,
//! `latency`, `platform_ingest`) and merges no browser figures.
//!
//! The raw senders here encode MQTT by hand on purpose: they are the practical limit of the
//! Platform (no SDK logic at all), so they must not share code with the SDK they are compared to.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vdev_core::{ConnectionState, Event, MemoryStore, StreamOptions};
use vdev_platform::{Config, Platform, PlatformInfo, RunningPlatform};
use vdev_tests::native::{NativeDevice, SharedStore};
use vdev_tests::platform_admin::device_config;

const PAYLOAD_BYTES: usize = 256;
const WINDOW: usize = 100;
/// vdev-core's own window of publishes in flight (`SessionConfig::max_in_flight`).
const VDEV_WINDOW: usize = 256;
/// The `websocket` argument of [`RawDevice::connect`] and [`raw_rate`].
const OVER_WEBSOCKET: bool = true;
const OVER_TCP: bool = false;
const DEADLINE: Duration = Duration::from_secs(600);

struct Settings {
    quick: bool,
    out: PathBuf,
    repetitions: usize,
    drain_messages: usize,
    official_messages: usize,
    latency_seconds: u64,
    ingest_devices: usize,
    ingest_messages_per_device: usize,
    /// Instances per step of the WASI ramp.
    wasi_steps: Vec<usize>,
    wasi_window_seconds: u64,
    native_memory_devices: usize,
}

/// Whether a bigger number is better.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

struct Figure {
    key: String,
    title: String,
    unit: String,
    better: Better,
    /// `(who, value)`: vdev first, then its anchors.
    rows: Vec<(String, f64)>,
    note: String,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench"));
    let mut settings = if quick {
        Settings {
            quick,
            out,
            repetitions: 1,
            drain_messages: 2_000,
            official_messages: 300,
            latency_seconds: 1,
            ingest_devices: 100,
            ingest_messages_per_device: 10,
            wasi_steps: vec![10],
            wasi_window_seconds: 3,
            native_memory_devices: 10,
        }
    } else {
        Settings {
            quick,
            out,
            repetitions: 3,
            drain_messages: 100_000,
            official_messages: 20_000,
            latency_seconds: 10,
            ingest_devices: 100,
            ingest_messages_per_device: 1_000,
            wasi_steps: vec![
                50, 100, 150, 200, 250, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000,
            ],
            wasi_window_seconds: 30,
            native_memory_devices: 500,
        }
    };
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(repetitions) = option("--repetitions") {
        settings.repetitions = repetitions.parse().expect("--repetitions takes a number");
    }
    if let Some(which) = option("--child") {
        wasi_scale::run_child(&which, &settings);
        return;
    }
    let only = option("--only");
    let wanted = |key: &str| only.as_deref().is_none_or(|only| only == key);
    std::fs::create_dir_all(&settings.out).expect("output directory");

    let mut figures = Vec::new();
    if wanted("bundle_size") {
        eprintln!("bench: bundle size");
        figures.push(bundle_size());
    }
    if wanted("drain_rate") {
        eprintln!("bench: drain rate");
        figures.push(drain_rate(&settings));
    }
    if wanted("wasi_scale") {
        eprintln!("bench: wasi scale");
        figures.extend(wasi_scale::figures(&settings));
    }
    if wanted("latency") {
        eprintln!("bench: latency");
        figures.extend(latency(&settings));
    }
    if wanted("platform_ingest") {
        eprintln!("bench: platform ingest");
        figures.push(ingest(&settings));
    }
    if figures.is_empty() {
        eprintln!("--only names no figure: {}", only.unwrap_or_default());
        std::process::exit(2);
    }
    // The JavaScript figures (browser and Node.js), measured by their own harnesses.
    for variable in ["VDEV_BENCH_BROWSER_JSON", "VDEV_BENCH_NODE_JSON"] {
        if let Some(path) = std::env::var_os(variable)
            && only.is_none()
        {
            merge_browser_figures(&mut figures, Path::new(&path));
        }
    }

    let missing: Vec<&str> = figures
        .iter()
        .filter(|f| f.rows.is_empty() || f.rows.iter().any(|(_, v)| !v.is_finite()))
        .map(|f| f.key.as_str())
        .collect();
    write_results(&settings, &figures);
    if !missing.is_empty() {
        eprintln!("figures without a value: {}", missing.join(", "));
        std::process::exit(1);
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn payload(n: usize) -> Vec<u8> {
    let mut bytes = format!("{n:010} ").into_bytes();
    bytes.resize(PAYLOAD_BYTES, b'x');
    bytes
}

// ----- figure 1: bundle size ------------------------------------------------------------------

fn gzipped_size(files: &[PathBuf]) -> Option<f64> {
    let mut all = Vec::new();
    for file in files {
        all.extend(std::fs::read(file).ok()?);
    }
    let mut child = Command::new("gzip")
        .arg("-9c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &all));
    let output = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    Some(output.stdout.len() as f64 / 1024.0)
}

fn bundle_size() -> Figure {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pkg = root.join("wasm-web/pkg");
    let mqtt = std::env::var_os("VDEV_BENCH_MQTT_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/node_modules/mqtt/dist/mqtt.min.js")
        });
    let mut rows = Vec::new();
    let mut note = String::new();
    let vdev = gzipped_size(&[pkg.join("vdev_web_bg.wasm"), pkg.join("vdev_web.js")]);
    if vdev.is_none() {
        note.push_str("wasm-web/pkg is missing: run wasm-web/scripts/build.sh. ");
    }
    rows.push((
        "vdev-web (wasm + JS glue)".to_owned(),
        vdev.unwrap_or(f64::NAN),
    ));
    let anchor = gzipped_size(std::slice::from_ref(&mqtt));
    if anchor.is_none() {
        note.push_str(&format!("{} is missing. ", mqtt.display()));
    }
    rows.push((
        "MQTT.js dist/mqtt.min.js".to_owned(),
        anchor.unwrap_or(f64::NAN),
    ));
    Figure {
        key: "bundle_size".into(),
        title: "Bundle size, gzip -9".into(),
        unit: "KB".into(),
        better: Better::Lower,
        rows,
        note,
    }
}

// ----- the Platform and its APIs ------------------------------------------------------------

struct Stand {
    runtime: tokio::runtime::Runtime,
    platform: Option<RunningPlatform>,
    info: PlatformInfo,
    _dir: tempfile::TempDir,
}

impl Stand {
    /// A fresh Platform on its own runtime (two threads), so clients do not steal its workers.
    fn start(official_ports: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("platform runtime");
        let mut config = Config::ephemeral(dir.path().join("platform"));
        if official_ports {
            // The official crate hard-codes https on 443 and MQTT over TLS on 8883.
            config.https = Some("127.0.0.1:443".parse().expect("address"));
            config.mqtt_tls = Some("127.0.0.1:8883".parse().expect("address"));
        }
        let platform = runtime
            .block_on(Platform::start(config))
            .expect("platform starts");
        let info = platform.info().clone();
        Self {
            runtime,
            platform: Some(platform),
            info,
            _dir: dir,
        }
    }

    fn http(&self) -> &str {
        self.info.http_url.as_deref().expect("plain HTTP listener")
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!(
            "{}/workspaces/{}{path}",
            self.http(),
            self.info.workspace_id
        );
        admin_call(&self.info.admin_token, method, &url, body)
    }

    fn approve(&self, operation_id: &str) {
        self.admin(
            "PUT",
            "/provisioning-operations/approve",
            Some(json!({ "provisioningOperationId": operation_id })),
        );
    }

    /// Provisions and registers `device_id` over the device API; returns the SAS password.
    fn register(&self, device_id: &str) -> String {
        let token = self.info.provisioning_token.clone();
        let call = |method: &str, path: &str, token: &str, body: Value| -> Value {
            ureq::request(method, &format!("{}{path}", self.http()))
                .set("Authorization", &format!("DeviceToken {token}"))
                .send_json(body)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .into_json()
                .expect("json")
        };
        let operation = call(
            "POST",
            "/provisioning-operations/init",
            &token,
            json!({ "deviceId": device_id }),
        );
        let operation_id = operation["provisioningOperationId"]
            .as_str()
            .expect("operation id");
        self.approve(operation_id);
        let completed = call(
            "PUT",
            "/provisioning-operations/complete",
            &token,
            json!({ "provisioningOperationId": operation_id }),
        );
        let registration = call(
            "PUT",
            "/devices/register",
            completed["registrationToken"].as_str().expect("token"),
            json!({ "connectionStringType": "SharedAccessSignature" }),
        );
        registration["connectionString"]
            .as_str()
            .expect("connection string")
            .split(';')
            .find_map(|p| p.strip_prefix("SharedAccessSignature="))
            .expect("SAS in the connection string")
            .to_owned()
    }

    fn message_at(&self, order: &str) -> Option<(i64, i64)> {
        let rows = self.admin("GET", &format!("/messages?order={order}&limit=1"), None);
        let row = rows.as_array()?.first()?;
        let id = row["id"].as_i64()?;
        let received = chrono::DateTime::parse_from_rfc3339(row["receivedTime"].as_str()?)
            .ok()?
            .timestamp_millis();
        Some((id, received))
    }

    /// Waits until `count` messages are stored; returns the Platform's rate in messages/s
    /// between its first and last `receivedTime`.
    fn stored_rate(&self, count: usize) -> f64 {
        let started = Instant::now();
        loop {
            if let (Some((first_id, first_at)), Some((last_id, last_at))) =
                (self.message_at("asc"), self.message_at("desc"))
                && (last_id - first_id + 1) as usize >= count
            {
                let seconds = ((last_at - first_at).max(1)) as f64 / 1000.0;
                return (count.saturating_sub(1)).max(1) as f64 / seconds;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "only part of {count} messages stored in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        if let Some(platform) = self.platform.take() {
            self.runtime.block_on(platform.shutdown());
        }
    }
}

fn admin_call(token: &str, method: &str, url: &str, body: Option<Value>) -> Value {
    let request = ureq::request(method, url).set("Authorization", &format!("Bearer {token}"));
    let response = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    response
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
        .into_json()
        .unwrap_or(Value::Null)
}

// ----- raw MQTT 3.1.1, encoded by hand ------------------------------------------------------

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn mqtt_string(s: &str, out: &mut Vec<u8>) {
    out.extend((s.len() as u16).to_be_bytes());
    out.extend(s.as_bytes());
}

fn connect_packet(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string("MQTT", &mut body);
    body.extend([4, 0b1100_0010]); // level 4; username, password, clean session
    body.extend(240u16.to_be_bytes());
    mqtt_string(client_id, &mut body);
    mqtt_string(username, &mut body);
    mqtt_string(password, &mut body);
    let mut packet = vec![0x10];
    remaining_length(body.len(), &mut packet);
    packet.extend(body);
    packet
}

fn publish_packet(topic: &str, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x32];
    remaining_length(2 + topic.len() + 2 + payload.len(), &mut packet);
    mqtt_string(topic, &mut packet);
    packet.extend(packet_id.to_be_bytes());
    packet.extend(payload);
    packet
}

/// Splits complete packets off `buffer`: `(first byte, body)`.
fn take_packets(buffer: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut packets = Vec::new();
    loop {
        let (mut length, mut shift, mut at) = (0usize, 0, 1);
        let complete = loop {
            let Some(&byte) = buffer.get(at) else {
                break false;
            };
            length |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            at += 1;
            if byte & 0x80 == 0 {
                break true;
            }
        };
        if !complete || buffer.len() < at + length {
            return packets;
        }
        let body = buffer[at..at + length].to_vec();
        packets.push((buffer[0], body));
        buffer.drain(..at + length);
    }
}

/// One raw device session over TCP or a WebSocket.
enum RawLink {
    Tcp(TcpStream),
    Ws(Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>),
}

struct RawDevice {
    link: RawLink,
    topic: String,
    /// Whether each PUBLISH carries a `vdev-seq` property as vdev's do, so that the Platform
    /// does the same work per message (its replay check) for both.
    sequence_tags: bool,
    buffer: Vec<u8>,
}

impl RawDevice {
    async fn connect(stand: &Stand, device_id: &str, websocket: bool) -> Self {
        let sas = tokio::task::block_in_place(|| stand.register(device_id));
        let client_id = format!("{}:{device_id}", stand.info.workspace_id);
        let username = format!(
            "{}/{client_id}/?api-version=2018-06-30",
            stand.info.host_name
        );
        let link = if websocket {
            let url = format!(
                "{}/$iothub/websocket",
                stand.http().replacen("http://", "ws://", 1)
            );
            let mut request = url.into_client_request().expect("websocket request");
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
            let (ws, _) = tokio_tungstenite::connect_async(request)
                .await
                .expect("websocket opens");
            RawLink::Ws(Box::new(ws))
        } else {
            let endpoint = stand.info.gateway_endpoints.mqtt_tcp.clone().expect("tcp");
            let address = endpoint.replacen("localhost", "127.0.0.1", 1);
            RawLink::Tcp(TcpStream::connect(address).await.expect("tcp connects"))
        };
        let mut device = Self {
            link,
            topic: format!("devices/{client_id}/messages/events/"),
            sequence_tags: false,
            buffer: Vec::new(),
        };
        device
            .write(connect_packet(&client_id, &username, &sas))
            .await;
        let (kind, body) = device.next_packet().await;
        assert!(
            kind >> 4 == 2 && body.get(1) == Some(&0),
            "CONNACK accepted"
        );
        device
    }

    async fn write(&mut self, bytes: Vec<u8>) {
        match &mut self.link {
            RawLink::Tcp(stream) => stream.write_all(&bytes).await.expect("tcp write"),
            RawLink::Ws(ws) => ws
                .send(WsMessage::Binary(bytes.into()))
                .await
                .expect("websocket write"),
        }
    }

    async fn next_packet(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some(packet) = take_packets(&mut self.buffer).into_iter().next() {
                // Put back whatever followed it.
                return packet;
            }
            self.read_more().await;
        }
    }

    async fn read_more(&mut self) {
        match &mut self.link {
            RawLink::Tcp(stream) => {
                let mut chunk = [0u8; 16 * 1024];
                let n = stream.read(&mut chunk).await.expect("tcp read");
                assert!(n > 0, "gateway closed the connection");
                self.buffer.extend_from_slice(&chunk[..n]);
            }
            RawLink::Ws(ws) => loop {
                match ws.next().await.expect("websocket open").expect("read") {
                    WsMessage::Binary(bytes) => {
                        self.buffer.extend_from_slice(&bytes);
                        break;
                    }
                    WsMessage::Close(_) => panic!("gateway closed the websocket"),
                    _ => {}
                }
            },
        }
    }

    /// Publishes `count` messages at QoS 1 with at most `window` unacknowledged; with
    /// `per_second`, paces them and returns each message's publish-to-PUBACK time in ms.
    async fn publish(&mut self, count: usize, window: usize, per_second: Option<u64>) -> Vec<f64> {
        let mut sent_at = vec![Instant::now(); count];
        let mut latencies = Vec::with_capacity(count);
        let (mut sent, mut acked) = (0usize, 0usize);
        let started = Instant::now();
        while acked < count {
            while sent < count && sent - acked < window {
                if let Some(rate) = per_second {
                    let due = started + Duration::from_micros(sent as u64 * 1_000_000 / rate);
                    if Instant::now() < due {
                        if sent == acked {
                            tokio::time::sleep_until(due.into()).await;
                        } else {
                            break;
                        }
                    }
                }
                let packet_id = (sent % 65_535 + 1) as u16;
                sent_at[sent] = Instant::now();
                let packet = if self.sequence_tags {
                    let topic = format!("{}vdev-seq=raw.{}", self.topic, sent + 1);
                    publish_packet(&topic, packet_id, &payload(sent))
                } else {
                    publish_packet(&self.topic, packet_id, &payload(sent))
                };
                self.write(packet).await;
                sent += 1;
            }
            let wait = async {
                loop {
                    let packets = take_packets(&mut self.buffer);
                    if !packets.is_empty() {
                        return packets;
                    }
                    self.read_more().await;
                }
            };
            let packets = match per_second {
                // While pacing, wake up for the next due publish as well.
                Some(_) if sent < count => {
                    match tokio::time::timeout(Duration::from_millis(1), wait).await {
                        Ok(packets) => packets,
                        Err(_) => continue,
                    }
                }
                _ => wait.await,
            };
            for (kind, _) in packets {
                if kind >> 4 == 4 {
                    latencies.push(sent_at[acked].elapsed().as_secs_f64() * 1000.0);
                    acked += 1;
                }
            }
        }
        latencies
    }
}

// ----- vdev-core on the native host ---------------------------------------------------------

/// Starts a device, approves its operation and waits until it is connected.
async fn connected_vdev(stand: &Stand, device_id: &str) -> NativeDevice {
    let store: SharedStore = Arc::new(Mutex::new(MemoryStore::new(device_id.replace('-', ""))));
    let mut device = NativeDevice::start(device_config(&stand.info, device_id), store, [7; 32]);
    loop {
        match device.events.recv().await.expect("device runs") {
            Event::ProvisioningOperation(operation) => {
                tokio::task::block_in_place(|| stand.approve(&operation.id))
            }
            Event::ConnectionStateChanged(ConnectionState::Connected) => return device,
            _ => {}
        }
    }
}

// ----- figure 3: drain rate -----------------------------------------------------------------

fn drain_rate(settings: &Settings) -> Figure {
    let n = settings.drain_messages;
    let mut vdev = Vec::new();
    let mut raw = Vec::new();
    let mut raw_tcp = Vec::new();
    let mut official = Vec::new();
    for _ in 0..settings.repetitions {
        let stand = Stand::start(false);
        let runtime = client_runtime();
        runtime.block_on(async {
            let device = connected_vdev(&stand, "drain-vdev").await;
            device.set_network(false);
            for i in 0..n {
                device
                    .send(StreamOptions::default(), payload(i))
                    .await
                    .expect("stored");
            }
            device.set_network(true);
            tokio::task::block_in_place(|| vdev.push(stand.stored_rate(n)));
            device.stop().await;
        });
        stand.stop();

        raw.push(raw_rate(
            &runtime,
            "drain-raw",
            OVER_WEBSOCKET,
            false,
            n,
            WINDOW,
        ));

        // The same transport, window and Platform work per message (a `vdev-seq` property) as
        // vdev's: the ratio that says what vdev costs.
        raw_tcp.push(raw_rate(
            &runtime,
            "drain-raw-tcp",
            OVER_TCP,
            true,
            n,
            VDEV_WINDOW,
        ));

        official.push(official_drain(settings.official_messages));
    }
    Figure {
        key: "drain_rate".into(),
        title: "Drain rate of a stored backlog, QoS 1".into(),
        unit: "messages/s".into(),
        better: Better::Higher,
        rows: vec![
            (
                format!("vdev-core, native host, TCP ({n} messages)"),
                median(vdev),
            ),
            (
                format!(
                    "official spotflow crate, TLS ({} messages)",
                    settings.official_messages
                ),
                median(official),
            ),
            (
                format!("raw pre-encoded PUBLISH over one WebSocket, window {WINDOW}"),
                median(raw),
            ),
            (
                format!(
                    "raw pre-encoded PUBLISH over TCP, window {VDEV_WINDOW}, vdev-seq tagged (vdev's wire)"
                ),
                median(raw_tcp),
            ),
        ],
        note: "The raw senders are the wire's limit: no SDK logic at all. The tagged one sends \
               what vdev sends (a `vdev-seq` property per message, so the Platform makes the \
               same replay check) over the same transport with the same window."
            .into(),
    }
}

/// The rate at which a fresh Platform stored `count` messages from one raw device, `window`
/// unacknowledged at most, over a WebSocket or TCP, with or without `vdev-seq` tags.
fn raw_rate(
    runtime: &tokio::runtime::Runtime,
    device_id: &str,
    websocket: bool,
    sequence_tags: bool,
    count: usize,
    window: usize,
) -> f64 {
    let stand = Stand::start(false);
    runtime.block_on(async {
        let mut device = RawDevice::connect(&stand, device_id, websocket).await;
        device.sequence_tags = sequence_tags;
        device.publish(count, window, None).await;
    });
    let rate = stand.stored_rate(count);
    stand.stop();
    rate
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime")
}

/// The official SDK enqueues as fast as it can while connected; its client cannot be built
/// while the gateway refuses it (`build` waits for the connection), so its backlog is whatever
/// its sending thread has not caught up with. The rate counts from the first to the last
/// message the Platform stored.
fn official_drain(count: usize) -> f64 {
    let stand = Stand::start(true);
    // SAFETY: set before the official SDK creates its first TLS connector; the bench runs its
    // figures one after another and nothing else reads or writes the environment meanwhile.
    unsafe { std::env::set_var("SSL_CERT_FILE", &stand.info.ca_certificate_path) };
    let database = stand._dir.path().join("official.db");
    // The handler must be 'static: it approves through a copy of what it needs.
    let admin_token = stand.info.admin_token.clone();
    let approve_url = format!(
        "{}/workspaces/{}/provisioning-operations/approve",
        stand.http(),
        stand.info.workspace_id
    );
    struct ApproveOwned(String, String);
    impl spotflow::ProvisioningOperationDisplayHandler for ApproveOwned {
        fn display(&self, operation: &spotflow::ProvisioningOperation) -> anyhow::Result<()> {
            admin_call(
                &self.0,
                "PUT",
                &self.1,
                Some(json!({ "provisioningOperationId": operation.id })),
            );
            Ok(())
        }
    }
    let client = spotflow::DeviceClientBuilder::new(
        Some("drain-official".into()),
        stand.info.provisioning_token.clone(),
        &database,
    )
    .with_instance("localhost".into())
    .with_display_provisioning_operation_callback(Box::new(ApproveOwned(admin_token, approve_url)))
    .build()
    .expect("the official SDK builds a client");
    let context = spotflow::MessageContext::new(None, None);
    for i in 0..count {
        client
            .enqueue_message(&context, None, None, payload(i))
            .expect("enqueue");
    }
    let rate = stand.stored_rate(count);
    drop(client);
    stand.stop();
    rate
}

// ----- figure 5: WASI scale ----------------------------------------------------------------

// In its own file: the device tasks, the ramp and the stored-order check, run in child
// processes of this binary (`--child wasi_scale`, `--child native_memory`).
mod wasi_scale;

// ----- figure 6: latency --------------------------------------------------------------------

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn latency(settings: &Settings) -> [Figure; 2] {
    const RATE: u64 = 100;
    let count = (RATE * settings.latency_seconds) as usize;
    let (mut vdev_p50, mut vdev_p99, mut raw_p50, mut raw_p99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..settings.repetitions {
        let stand = Stand::start(false);
        let runtime = client_runtime();
        let mut latencies = runtime.block_on(async {
            let mut device = connected_vdev(&stand, "latency-vdev").await;
            let mut sent_at = std::collections::BTreeMap::new();
            let mut latencies = Vec::with_capacity(count);
            let started = tokio::time::Instant::now();
            let mut ticker = tokio::time::interval(Duration::from_millis(1000 / RATE));
            let mut sent = 0;
            while latencies.len() < count {
                tokio::select! {
                    _ = ticker.tick(), if sent < count => {
                        let instant = Instant::now();
                        let seq = device.send(StreamOptions::default(), payload(sent)).await.expect("stored");
                        sent_at.insert(seq, instant);
                        sent += 1;
                    }
                    event = device.events.recv() => {
                        if let Some(Event::MessageDelivered { seq }) = event
                            && let Some(at) = sent_at.remove(&seq)
                        {
                            latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                }
                assert!(started.elapsed() < DEADLINE, "latency run overran");
            }
            device.stop().await;
            latencies
        });
        latencies.sort_by(f64::total_cmp);
        vdev_p50.push(percentile(&latencies, 50.0));
        vdev_p99.push(percentile(&latencies, 99.0));
        let mut raw = runtime.block_on(async {
            let mut device = RawDevice::connect(&stand, "latency-raw", false).await;
            device.publish(count, WINDOW, Some(RATE)).await
        });
        raw.sort_by(f64::total_cmp);
        raw_p50.push(percentile(&raw, 50.0));
        raw_p99.push(percentile(&raw, 99.0));
        stand.stop();
    }
    let note =
        format!("{count} messages per repetition; vdev's time includes storing the message first.");
    [
        Figure {
            key: "latency_p50".into(),
            title: "Send to stored at the Platform (PUBACK) at 100 messages/s, p50".into(),
            unit: "ms".into(),
            better: Better::Lower,
            rows: vec![
                ("vdev-core, native host, TCP".into(), median(vdev_p50)),
                ("raw PUBLISH over TCP".into(), median(raw_p50)),
            ],
            note: note.clone(),
        },
        Figure {
            key: "latency_p99".into(),
            title: "Send to stored at the Platform (PUBACK) at 100 messages/s, p99".into(),
            unit: "ms".into(),
            better: Better::Lower,
            rows: vec![
                ("vdev-core, native host, TCP".into(), median(vdev_p99)),
                ("raw PUBLISH over TCP".into(), median(raw_p99)),
            ],
            note,
        },
    ]
}

// ----- figure 7: Platform ingest ------------------------------------------------------------

fn ingest(settings: &Settings) -> Figure {
    let devices = settings.ingest_devices;
    let per_device = settings.ingest_messages_per_device;
    let single = settings.drain_messages;
    let (mut many, mut one) = (Vec::new(), Vec::new());
    for _ in 0..settings.repetitions {
        let stand = Stand::start(false);
        let runtime = client_runtime();
        runtime.block_on(async {
            let mut links = Vec::new();
            for d in 0..devices {
                links.push(RawDevice::connect(&stand, &format!("ingest-{d:03}"), false).await);
            }
            let tasks: Vec<_> = links
                .into_iter()
                .map(|mut link| {
                    tokio::spawn(async move { link.publish(per_device, 10, None).await })
                })
                .collect();
            for task in tasks {
                task.await.expect("sender task");
            }
        });
        many.push(stand.stored_rate(devices * per_device));
        stand.stop();

        one.push(raw_rate(
            &runtime,
            "ingest-single",
            OVER_TCP,
            false,
            single,
            VDEV_WINDOW,
        ));
    }
    Figure {
        key: "platform_ingest".into(),
        title: "Platform ingest, durable (acknowledged once committed)".into(),
        unit: "messages/s".into(),
        better: Better::Higher,
        rows: vec![
            (
                format!("stand-in Platform, {devices} raw TCP devices x {per_device}, window 10"),
                median(many),
            ),
            (
                format!("stand-in Platform, 1 raw TCP device x {single}, window {VDEV_WINDOW}"),
                median(one),
            ),
        ],
        note: "The ceiling every SDK figure above runs against: raw pre-encoded senders, each \
               PUBACK waiting for the group commit that holds its message."
            .into(),
    }
}

/// Adds the figures measured in Chromium by `tests/bench/browser.mjs`. A figure measured both
/// there and here (the drain rate) gets the browser's rows first: vdev-web is the vdev row.
fn merge_browser_figures(figures: &mut Vec<Figure>, path: &Path) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("browser figures {}: {e}", path.display()));
    let document: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("browser figures {}: {e}", path.display()));
    for browser in figures_from_json(&document) {
        if let Some(figure) = figures.iter_mut().find(|f| f.key == browser.key) {
            figure.rows.splice(0..0, browser.rows);
            figure.note = format!("{} {}", browser.note, figure.note);
        } else {
            figures.push(browser);
        }
    }
}

/// The figures of a results document (`{"figures": [...]}`, as [`figures_to_json`] writes it);
/// a value that is not a number (JSON has no NaN) reads as missing.
fn figures_from_json(document: &Value) -> Vec<Figure> {
    let text_of = |value: &Value, field: &str| value[field].as_str().unwrap_or_default().to_owned();
    let mut figures = Vec::new();
    for figure in document["figures"].as_array().into_iter().flatten() {
        let rows: Vec<(String, f64)> = figure["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let value = row["value"].as_f64().unwrap_or(f64::NAN);
                (text_of(row, "who"), value)
            })
            .collect();
        figures.push(Figure {
            key: text_of(figure, "key"),
            title: text_of(figure, "title"),
            unit: text_of(figure, "unit"),
            better: match figure["better"].as_str() {
                Some("lower") => Better::Lower,
                _ => Better::Higher,
            },
            rows,
            note: text_of(figure, "note"),
        });
    }
    figures
}

fn figure_to_json(figure: &Figure) -> Value {
    json!({
        "key": figure.key,
        "title": figure.title,
        "unit": figure.unit,
        "better": match figure.better { Better::Higher => "higher", Better::Lower => "lower" },
        "rows": figure.rows.iter().map(|(who, value)| json!({"who": who, "value": value})).collect::<Vec<_>>(),
        "note": figure.note,
    })
}

fn figures_to_json(figures: &[Figure]) -> Value {
    json!({ "figures": figures.iter().map(figure_to_json).collect::<Vec<_>>() })
}

// ----- output -------------------------------------------------------------------------------

fn write_results(settings: &Settings, figures: &[Figure]) {
    let machine = machine_description();
    let mut markdown =
        String::from("| figure | who | value | anchor / vdev |\n|---|---|---|---|\n");
    let mut json_figures = Vec::new();
    for figure in figures {
        let first = figure.rows.first().map(|(_, v)| *v);
        for (i, (who, value)) in figure.rows.iter().enumerate() {
            // Anchor / vdev: above 1 the anchor has more of the unit (faster for rates,
            // bigger or slower for sizes and times).
            let ratio = match first {
                Some(base) if i > 0 => format!("{:.2}x", value / base),
                _ => String::new(),
            };
            let title = if i == 0 { figure.title.as_str() } else { "" };
            markdown.push_str(&format!(
                "| {title} | {who} | {value:.1} {} | {ratio} |\n",
                figure.unit
            ));
        }
        json_figures.push(figure_to_json(figure));
    }
    for figure in figures.iter().filter(|f| !f.note.is_empty()) {
        markdown.push_str(&format!("\n- {}: {}", figure.title, figure.note));
    }
    markdown.push_str(&format!(
        "\n\nMachine: {machine}. Mode: {}. Repetitions: {} (median).\n",
        if settings.quick {
            "quick (harness check, not figures)"
        } else {
            "full"
        },
        settings.repetitions
    ));
    let document = json!({
        "machine": machine,
        "quick": settings.quick,
        "repetitions": settings.repetitions,
        "figures": json_figures,
    });
    let md_path = settings.out.join("results.md");
    let json_path = settings.out.join("results.json");
    std::fs::write(&md_path, &markdown).expect("write markdown");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&document).expect("json"),
    )
    .expect("write json");
    println!("{markdown}");
    println!("results: {} and {}", md_path.display(), json_path.display());
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}
