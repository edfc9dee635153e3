//! The WASI command component (`vdev-device.wasm`, release build) run by the wasmtime host
//! against the stand-in Platform on loopback: provisioning approved through the admin API,
//! messages stored in order, a restart on the same store directory, and a fleet of instances in
//! one host. The first test to run builds the component
//! (`cargo build -p vdev-wasi --target wasm32-wasip2 --release`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::timeout;
use vdev_platform::{Config, Platform, PlatformInfo};
use vdev_tests::wasi_host::{CommandRun, WasiHost};

const DEADLINE: Duration = Duration::from_secs(120);

async fn load_host() -> WasiHost {
    tokio::task::spawn_blocking(WasiHost::load)
        .await
        .expect("load task")
        .expect("the component builds and compiles")
}

fn device_args(info: &PlatformInfo, device_id: &str) -> Vec<String> {
    [
        "--instance-url",
        info.http_url.as_deref().expect("plain HTTP listener"),
        "--provisioning-token",
        &info.provisioning_token,
        "--device-id",
        device_id,
        "--transport",
        "tcp",
        "--provisioning-poll-interval-ms",
        "200",
        "--retry-initial-ms",
        "100",
        "--retry-max-ms",
        "1000",
        "--stream-group",
        "telemetry",
        "--stream",
        "wasi",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn spawn(host: &WasiHost, info: &PlatformInfo, device_id: &str, store: &Path) -> CommandRun {
    std::fs::create_dir_all(store).expect("store dir");
    host.spawn_command(&device_args(info, device_id), &[], store)
        .expect("instance starts")
}

async fn admin(info: &PlatformInfo, method: reqwest::Method, path: &str, body: Value) -> Value {
    let url = format!(
        "{}/workspaces/{}{path}",
        info.http_url.as_deref().expect("http"),
        info.workspace_id
    );
    let response = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(&info.admin_token)
        .json(&body)
        .send()
        .await
        .expect("admin call");
    assert!(
        response.status().is_success(),
        "admin call failed: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

/// Reads events until `pick` accepts one; every event seen is appended to `seen`.
async fn next_event<T>(
    run: &mut CommandRun,
    seen: &mut Vec<Value>,
    mut pick: impl FnMut(&Value) -> Option<T>,
) -> T {
    timeout(DEADLINE, async {
        loop {
            let line = run.lines.recv().await.unwrap_or_else(|| {
                panic!("the instance ended before the awaited event; saw {seen:?}")
            });
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            let found = pick(&event);
            seen.push(event);
            if let Some(found) = found {
                return found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("event within the deadline; saw {} events", seen.len()))
}

fn named(name: &'static str) -> impl FnMut(&Value) -> Option<Value> {
    move |event| (event["event"] == name).then(|| event.clone())
}

fn count(seen: &[Value], name: &str) -> usize {
    seen.iter().filter(|e| e["event"] == name).count()
}

/// Approves the instance's provisioning operation and waits until it registered.
async fn provision(info: &PlatformInfo, run: &mut CommandRun, seen: &mut Vec<Value>) {
    let operation = next_event(run, seen, named("provisioning-operation")).await;
    assert!(
        operation["verificationCode"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    admin(
        info,
        reqwest::Method::PUT,
        "/provisioning-operations/approve",
        json!({ "provisioningOperationId": operation["id"] }),
    )
    .await;
    next_event(run, seen, named("registered")).await;
}

async fn send_lines(run: &mut CommandRun, lines: impl Iterator<Item = String>) {
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    run.write_stdin(text.as_bytes()).await.expect("stdin open");
}

/// Waits for `done` and the exit code 0.
async fn finish(run: CommandRun, mut seen: Vec<Value>) -> Vec<Value> {
    let mut run = run;
    next_event(&mut run, &mut seen, named("done")).await;
    let code = timeout(DEADLINE, run.wait())
        .await
        .expect("exit within the deadline")
        .expect("the instance runs without a trap");
    assert_eq!(code, 0, "exit code; events: {seen:?}");
    seen
}

/// The payloads and sequence numbers the Platform stored for `device_id`, in its order.
async fn stored(info: &PlatformInfo, device_id: &str) -> (Vec<String>, Vec<u64>) {
    let path = format!("/devices/{device_id}/messages?limit=10000");
    let stored = admin(info, reqwest::Method::GET, &path, Value::Null).await;
    let list = stored.as_array().expect("message list");
    assert!(
        list.iter()
            .all(|m| m["streamGroup"] == "telemetry" && m["stream"] == "wasi")
    );
    let payloads = list
        .iter()
        .map(|m| m["payloadText"].as_str().expect("text payload").to_owned())
        .collect();
    let sequences = list
        .iter()
        .map(|m| m["sequence"]["n"].as_u64().expect("vdev-seq stored"))
        .collect();
    (payloads, sequences)
}

fn readings(device: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("{device} reading {n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_provisions_and_delivers_1000_messages_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(Config::ephemeral(dir.path().join("platform")))
        .await
        .expect("platform starts");
    let info = platform.info().clone();
    let host = load_host().await;
    let mut run = spawn(&host, &info, "wasi-1", &dir.path().join("device"));
    let mut seen = Vec::new();
    provision(&info, &mut run, &mut seen).await;

    let expected = readings("wasi-1", 0..1_000);
    send_lines(&mut run, expected.iter().cloned()).await;
    run.close_stdin();
    let seen = finish(run, seen).await;
    assert_eq!(count(&seen, "stored"), 1_000);
    assert_eq!(count(&seen, "message-delivered"), 1_000);

    let (payloads, sequences) = stored(&info, "wasi-1").await;
    assert_eq!(payloads, expected, "all messages stored once, in order");
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_restart_on_the_same_directory_resumes_without_provisioning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(Config::ephemeral(dir.path().join("platform")))
        .await
        .expect("platform starts");
    let info = platform.info().clone();
    let host = load_host().await;
    let store = dir.path().join("device");

    // First run: provision, store 300 messages, and end the instance at once after the last
    // send returned — some are still undelivered in the store.
    let mut run = spawn(&host, &info, "wasi-restart", &store);
    let mut seen = Vec::new();
    provision(&info, &mut run, &mut seen).await;
    let expected = readings("wasi-restart", 0..300);
    send_lines(&mut run, expected[..150].iter().cloned()).await;
    let mut stored_count = 0;
    next_event(&mut run, &mut seen, |e| {
        stored_count += usize::from(e["event"] == "stored");
        (stored_count == 150).then_some(())
    })
    .await;
    run.kill().await;

    // Second run on the same directory: no provisioning, the rest of the queue first, then
    // new messages; all stored once, in order, with sequence numbers that keep growing.
    let mut run = spawn(&host, &info, "wasi-restart", &store);
    let mut seen = Vec::new();
    next_event(&mut run, &mut seen, named("registered")).await;
    send_lines(&mut run, expected[150..].iter().cloned()).await;
    run.close_stdin();
    let seen = finish(run, seen).await;
    assert_eq!(
        count(&seen, "provisioning-operation"),
        0,
        "a restart reuses the saved Registration Token"
    );
    assert_eq!(count(&seen, "stored"), 150);

    let (payloads, sequences) = stored(&info, "wasi-restart").await;
    assert_eq!(
        payloads, expected,
        "every stored message delivered once, in order"
    );
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_hundred_instances_in_one_host_each_deliver_in_order() {
    const DEVICES: usize = 100;
    const MESSAGES: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(Config::ephemeral(dir.path().join("platform")))
        .await
        .expect("platform starts");
    let info = platform.info().clone();
    let host = load_host().await;

    let mut fleet = Vec::new();
    for n in 0..DEVICES {
        let device_id = format!("wasi-fleet-{n:03}");
        let mut run = spawn(&host, &info, &device_id, &dir.path().join(&device_id));
        let info = info.clone();
        fleet.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            provision(&info, &mut run, &mut seen).await;
            send_lines(&mut run, readings(&device_id, 0..MESSAGES).into_iter()).await;
            run.close_stdin();
            let seen = finish(run, seen).await;
            assert_eq!(count(&seen, "message-delivered"), MESSAGES, "{device_id}");
            device_id
        }));
    }
    for device in fleet {
        let device_id = device.await.expect("instance task");
        let (payloads, sequences) = stored(&info, &device_id).await;
        assert_eq!(payloads, readings(&device_id, 0..MESSAGES), "{device_id}");
        assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    }
    platform.shutdown().await;
}

fn addr(url: &str) -> SocketAddr {
    let host_port = url.split("://").nth(1).unwrap_or(url);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    let (host, port) = host_port.rsplit_once(':').expect("host:port");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{port}").parse().expect("socket address")
}

/// The same Platform (data dir and ports) started again.
fn restart_config(info: &PlatformInfo) -> Config {
    let mut config = Config::ephemeral(&info.data_dir);
    config.http = info.http_url.as_deref().map(addr);
    config.mqtt_tcp = info.gateway_endpoints.mqtt_tcp.as_deref().map(addr);
    config.mqtt_tls = info.gateway_endpoints.mqtt_tls.as_deref().map(addr);
    config
}

fn newest_segment(store: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(store)
        .expect("store dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-"))
        })
        .collect();
    segments.sort();
    segments.pop().expect("undelivered messages keep a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_cuts_a_torn_outbox_tail_and_drains_after_the_platform_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(Config::ephemeral(dir.path().join("platform")))
        .await
        .expect("platform starts");
    let info = platform.info().clone();
    let host = load_host().await;
    let store = dir.path().join("device");

    // Registered, then the Platform goes away: sends still return (stored), nothing is delivered.
    let mut run = spawn(&host, &info, "wasi-torn", &store);
    let mut seen = Vec::new();
    provision(&info, &mut run, &mut seen).await;
    next_event(&mut run, &mut seen, |e| {
        (e["event"] == "connection-state-changed" && e["state"] == "connected").then_some(())
    })
    .await;
    platform.shutdown().await;
    let expected = readings("wasi-torn", 0..50);
    send_lines(&mut run, expected.iter().cloned()).await;
    let mut stored_count = 0;
    next_event(&mut run, &mut seen, |e| {
        stored_count += usize::from(e["event"] == "stored");
        (stored_count == 50).then_some(())
    })
    .await;
    run.kill().await;

    // A crash in the middle of the next append leaves half a record header.
    let segment = newest_segment(&store);
    let mut bytes = std::fs::read(&segment).expect("segment");
    bytes.extend_from_slice(&[0x2a, 0x00, 0x00]);
    std::fs::write(&segment, &bytes).expect("torn tail written");

    let platform = Platform::start(restart_config(&info))
        .await
        .expect("platform restarts on the same data dir and ports");
    let mut run = spawn(&host, &info, "wasi-torn", &store);
    run.close_stdin();
    let mut seen = Vec::new();
    let recovery = next_event(&mut run, &mut seen, named("outbox-recovered")).await;
    assert_eq!(recovery["reason"], "torn frame header", "{recovery}");
    assert_eq!(recovery["cutBytes"], 3);
    let seen = finish(run, seen).await;
    assert_eq!(count(&seen, "provisioning-operation"), 0);

    let (payloads, sequences) = stored(&info, "wasi-torn").await;
    assert_eq!(
        payloads, expected,
        "the records before the torn tail all delivered, in order"
    );
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    platform.shutdown().await;
}
