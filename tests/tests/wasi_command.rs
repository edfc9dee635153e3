//! The WASI command component (`vdev-device.wasm`, release build) run by the wasmtime host
//! against the stand-in Platform on loopback: provisioning approved through the admin API,
//! messages stored in order, a restart on the same store directory, a fleet of instances in one
//! host, desired and reported properties, a 1 MB message sent by upload, and tunables given as
//! flags seen on the wire (the Platform's facts of the session). The first test to
//! run builds the component (`cargo build -p vdev-wasi --target wasm32-wasip2 --release`).
//! Crashes, corrupt outbox files and Platform restarts are in `wasi_recovery.rs`.

use std::path::Path;

use serde_json::{Value, json};
use tokio::time::timeout;
use vdev_platform::{Config, Platform, PlatformInfo, RunningPlatform};
use vdev_tests::command_events::{
    DEADLINE, as_stdin, count, named, next_event, nth_named, provision, readings,
};
use vdev_tests::platform_admin::{
    admin, blob_content, command_args, device_messages, device_session, payload_texts,
    sequence_numbers, strict_config, strictly_increasing,
};
use vdev_tests::wasi_host::{CommandRun, WasiHost};

async fn load_host() -> WasiHost {
    tokio::task::spawn_blocking(WasiHost::load)
        .await
        .expect("load task")
        .expect("the component builds and compiles")
}

/// A stand-in Platform with its data in `dir`, what it announces, and the host with the
/// command component compiled.
async fn platform_and_host(dir: &Path) -> (RunningPlatform, PlatformInfo, WasiHost) {
    let platform = Platform::start(Config::ephemeral(dir.join("platform")))
        .await
        .expect("platform starts");
    let info = platform.info().clone();
    (platform, info, load_host().await)
}

fn spawn_with(
    host: &WasiHost,
    info: &PlatformInfo,
    device_id: &str,
    store: &Path,
    extra_args: &[&str],
    env: &[(String, String)],
) -> CommandRun {
    std::fs::create_dir_all(store).expect("store dir");
    let mut args = command_args(info, device_id);
    args.extend(extra_args.iter().map(|s| (*s).to_owned()));
    host.spawn_command(&args, env, store)
        .expect("instance starts")
}

fn spawn(host: &WasiHost, info: &PlatformInfo, device_id: &str, store: &Path) -> CommandRun {
    spawn_with(host, info, device_id, store, &[], &[])
}

async fn send_lines(run: &mut CommandRun, lines: &[String]) {
    run.write_stdin(as_stdin(lines).as_bytes())
        .await
        .expect("stdin open");
}

/// Waits for `done` and the exit code 0.
async fn finish(mut run: CommandRun, mut seen: Vec<Value>) -> Vec<Value> {
    next_event(&mut run.lines, &mut seen, named("done")).await;
    let code = timeout(DEADLINE, run.wait())
        .await
        .expect("exit within the deadline")
        .expect("the instance runs without a trap");
    assert_eq!(code, 0, "exit code; events: {seen:?}");
    seen
}

/// The payloads and sequence numbers the Platform stored for `device_id`, in its order.
async fn stored(info: &PlatformInfo, device_id: &str) -> (Vec<String>, Vec<u64>) {
    let messages = device_messages(info, device_id).await;
    assert!(
        messages
            .iter()
            .all(|m| m["streamGroup"] == "telemetry" && m["stream"] == "wasi")
    );
    (payload_texts(&messages), sequence_numbers(&messages))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_provisions_and_delivers_1000_messages_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, info, host) = platform_and_host(dir.path()).await;
    let mut run = spawn(&host, &info, "wasi-1", &dir.path().join("device"));
    let mut seen = Vec::new();
    provision(&info, &mut run.lines, &mut seen).await;

    let expected = readings("wasi-1", 0..1_000);
    send_lines(&mut run, &expected).await;
    run.close_stdin();
    let seen = finish(run, seen).await;
    assert_eq!(count(&seen, "stored"), 1_000);
    assert_eq!(count(&seen, "message-delivered"), 1_000);

    let (payloads, sequences) = stored(&info, "wasi-1").await;
    assert_eq!(payloads, expected, "all messages stored once, in order");
    assert!(strictly_increasing(&sequences));
    // The default window sends in runs: the Platform saw several unacknowledged at once.
    let session = device_session(&info, "wasi-1").await;
    assert!(session["peakInFlight"].as_u64() > Some(1), "{session}");
    assert_eq!(session["keepAliveSeconds"], 60, "{session}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_flags_tune_the_session_and_its_log_level() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, info, host) = platform_and_host(dir.path()).await;
    let flags = [
        "--max-in-flight",
        "1",
        "--keep-alive-seconds",
        "17",
        "--log-level",
        "info",
    ];
    let store = dir.path().join("device");
    let mut run = spawn_with(&host, &info, "wasi-tuned", &store, &flags, &[]);
    let mut seen = Vec::new();
    provision(&info, &mut run.lines, &mut seen).await;
    let expected = readings("wasi-tuned", 0..200);
    send_lines(&mut run, &expected).await;
    run.close_stdin();
    next_event(&mut run.lines, &mut seen, named("done")).await;
    let (code, log) = timeout(DEADLINE, run.wait_with_stderr())
        .await
        .expect("exit within the deadline")
        .expect("the instance runs without a trap");
    assert_eq!(code, 0, "exit code; events: {seen:?}");
    // `--log-level info`: the events at info and above also go to standard error, as a log.
    for event in [
        "provisioning-operation",
        "registered",
        "connection-state-changed",
    ] {
        assert!(
            log.iter()
                .any(|line| line.starts_with("vdev-device: info: ")
                    && line.contains(&format!(r#""event":"{event}""#))),
            "{event} at info: {log:?}"
        );
    }
    assert!(
        log.iter()
            .all(|line| !line.contains(r#""event":"message-delivered""#)),
        "nothing below info: {log:?}"
    );

    let (payloads, _) = stored(&info, "wasi-tuned").await;
    assert_eq!(payloads, expected, "all messages stored once, in order");
    let session = device_session(&info, "wasi-tuned").await;
    assert_eq!(
        session["peakInFlight"], 1,
        "one publish at a time: {session}"
    );
    assert_eq!(
        session["keepAliveSeconds"], 17,
        "the CONNECT's keep-alive: {session}"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_restart_on_the_same_directory_resumes_without_provisioning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, info, host) = platform_and_host(dir.path()).await;
    let store = dir.path().join("device");

    // First run: provision, store 150 messages, and end the instance at once after the last
    // send returned — some are still undelivered in the store.
    let mut run = spawn(&host, &info, "wasi-restart", &store);
    let mut seen = Vec::new();
    provision(&info, &mut run.lines, &mut seen).await;
    let expected = readings("wasi-restart", 0..300);
    send_lines(&mut run, &expected[..150]).await;
    next_event(&mut run.lines, &mut seen, nth_named("stored", 150)).await;
    run.kill().await;

    // Second run on the same directory: no provisioning, the rest of the queue first, then
    // new messages; all stored once, in order, with sequence numbers that keep growing.
    let mut run = spawn(&host, &info, "wasi-restart", &store);
    let mut seen = Vec::new();
    next_event(&mut run.lines, &mut seen, named("registered")).await;
    send_lines(&mut run, &expected[150..]).await;
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
    assert!(strictly_increasing(&sequences));
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_hundred_instances_in_one_host_each_deliver_in_order() {
    const DEVICES: usize = 100;
    const MESSAGES: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, info, host) = platform_and_host(dir.path()).await;

    let mut fleet = Vec::new();
    for n in 0..DEVICES {
        let device_id = format!("wasi-fleet-{n:03}");
        let mut run = spawn(&host, &info, &device_id, &dir.path().join(&device_id));
        let info = info.clone();
        fleet.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            provision(&info, &mut run.lines, &mut seen).await;
            send_lines(&mut run, &readings(&device_id, 0..MESSAGES)).await;
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
        assert!(strictly_increasing(&sequences));
    }
    platform.shutdown().await;
}

/// The `properties` of `desired-properties-changed` events, parsed.
fn desired(event: &Value) -> Option<Value> {
    if event["event"] != "desired-properties-changed" {
        return None;
    }
    match &event["properties"] {
        Value::String(text) => serde_json::from_str(text).ok(),
        other => Some(other.clone()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_reports_properties_from_its_environment_and_prints_desired_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, info, host) = platform_and_host(dir.path()).await;
    let store = dir.path().join("device");
    // Reported properties from the environment (the documented `VDEV_REPORTED_PROPERTIES`); an
    // argument would win over it.
    let env = [(
        "VDEV_REPORTED_PROPERTIES".to_owned(),
        r#"{"firmware":"2.4.0","sensor":{"model":"sim-1"}}"#.to_owned(),
    )];
    let mut run = spawn_with(&host, &info, "wasi-twin", &store, &[], &env);
    let mut seen = Vec::new();
    provision(&info, &mut run.lines, &mut seen).await;
    next_event(
        &mut run.lines,
        &mut seen,
        named("reported-properties-acknowledged"),
    )
    .await;
    let reported = admin(
        &info,
        reqwest::Method::GET,
        "/devices/wasi-twin/reported-properties",
        Value::Null,
    )
    .await;
    assert_eq!(reported["firmware"], "2.4.0", "{reported}");
    assert_eq!(reported["sensor"]["model"], "sim-1", "{reported}");

    // Desired properties set by a technician are printed as the device sees them, each change.
    for interval in [5, 7] {
        admin(
            &info,
            reqwest::Method::PATCH,
            "/devices/wasi-twin/desired-properties",
            json!({ "interval": interval }),
        )
        .await;
        let properties = next_event(&mut run.lines, &mut seen, |e| {
            desired(e).filter(|d| d["interval"] == interval)
        })
        .await;
        assert_eq!(properties["interval"], interval, "{properties}");
    }
    run.close_stdin();
    finish(run, seen).await;

    // A restart with other reported properties in its arguments updates them at the Platform.
    let mut run = spawn_with(
        &host,
        &info,
        "wasi-twin",
        &store,
        &["--reported-properties", r#"{"firmware":"2.5.0"}"#],
        &env,
    );
    let mut seen = Vec::new();
    next_event(
        &mut run.lines,
        &mut seen,
        named("reported-properties-acknowledged"),
    )
    .await;
    run.close_stdin();
    finish(run, seen).await;
    let reported = admin(
        &info,
        reqwest::Method::GET,
        "/devices/wasi-twin/reported-properties",
        Value::Null,
    )
    .await;
    assert_eq!(
        reported["firmware"], "2.5.0",
        "the argument wins: {reported}"
    );
    assert_eq!(reported["sensor"]["model"], "sim-1", "{reported}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_sends_a_1_mb_message_by_upload() {
    const SIZE: usize = 1_000_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, info, host) = platform_and_host(dir.path()).await;
    let mut run = spawn(&host, &info, "wasi-upload", &dir.path().join("device"));
    let mut seen = Vec::new();
    provision(&info, &mut run.lines, &mut seen).await;

    let big = incompressible_line(0x9e37_79b9_7f4a_7c15, SIZE);
    let lines = vec!["before".to_owned(), big.clone(), "after".to_owned()];
    send_lines(&mut run, &lines).await;
    run.close_stdin();
    let seen = finish(run, seen).await;
    assert_eq!(count(&seen, "message-delivered"), 3);

    let messages = device_messages(&info, "wasi-upload").await;
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0]["payloadText"], "before");
    assert_eq!(messages[2]["payloadText"], "after");
    let uploaded = &messages[1];
    assert_eq!(uploaded["hasExternalizedPayload"], true, "{uploaded}");
    let blob_name = uploaded["blobName"].as_str().expect("a blob link");
    assert!(strictly_increasing(&sequence_numbers(&messages)));

    let blob = blob_content(&info, "wasi-upload", blob_name).await;
    assert_eq!(blob.len(), SIZE, "the whole message was uploaded");
    assert!(blob[..] == *big.as_bytes(), "the blob is the message");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_delivers_over_mqtt_tls_trusting_the_platform_ca() {
    const MESSAGES: usize = 50;
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, info, host) = platform_and_host(dir.path()).await;
    assert!(info.gateway_endpoints.mqtt_tls.is_some(), "TLS listener");
    let store = dir.path().join("device");
    std::fs::create_dir_all(&store).expect("store dir");
    // The component reads the CA through its preopened directory.
    std::fs::copy(&info.ca_certificate_path, store.join("platform-ca.pem")).expect("ca copied");
    let tls_args = ["--transport", "tls", "--tls-ca-file", "platform-ca.pem"];
    let mut run = spawn_with(&host, &info, "wasi-tls", &store, &tls_args, &[]);
    let mut seen = Vec::new();
    provision(&info, &mut run.lines, &mut seen).await;
    let expected = readings("wasi-tls", 0..MESSAGES);
    send_lines(&mut run, &expected).await;
    run.close_stdin();
    let seen = finish(run, seen).await;
    assert_eq!(count(&seen, "message-delivered"), MESSAGES);

    let (payloads, sequences) = stored(&info, "wasi-tls").await;
    assert_eq!(payloads, expected, "all stored once, in order, over TLS");
    assert!(strictly_increasing(&sequences));
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_against_the_strict_contract_delivers_in_order_and_uploads() {
    // The strict stand-in on 127.0.0.1:443 and :8883 under `localhost`, blob storage under
    // `127.0.0.1`, as in wasi_library.rs; port 443 needs root.
    if std::net::TcpListener::bind(("127.0.0.1", 443)).is_err() {
        eprintln!("SKIPPED: cannot bind 127.0.0.1:443 (needs root)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(strict_config(
        &dir.path().join("platform"),
        [127, 0, 0, 1].into(),
        "localhost",
        Some("127.0.0.1"),
        "127.0.0.1:0",
    ))
    .await
    .expect("the strict platform starts");
    let info = platform.info().clone();
    let host = load_host().await;
    let store = dir.path().join("device");
    std::fs::create_dir_all(&store).expect("store dir");
    std::fs::copy(&info.ca_certificate_path, store.join("platform-ca.pem")).expect("ca copied");
    let mut args = command_args(&info, "wasi-cmd-strict");
    // The instance is the hub host over HTTPS; MQTT over TLS trusts the test CA's file.
    args[1] = "https://localhost".into();
    let strict = ["--transport", "tls", "--tls-ca-file", "platform-ca.pem"];
    args.retain(|arg| arg != "--transport" && arg != "tcp");
    args.extend(strict.iter().map(|s| (*s).to_owned()));
    let ca = std::fs::read(&info.ca_certificate_path).expect("the CA");
    let mut run = host
        .spawn_command_trusting(&args, &[], &store, Some(&ca))
        .expect("instance starts");
    let mut seen = Vec::new();
    provision(&info, &mut run.lines, &mut seen).await;
    // 200 readings with a 1 MB incompressible line among them: it goes by upload.
    let big = incompressible_line(0x2545_f491_4f6c_dd1d, 1_000_000);
    let mut lines = readings("wasi-cmd-strict", 0..100);
    lines.push(big.clone());
    lines.extend(readings("wasi-cmd-strict", 100..200));
    send_lines(&mut run, &lines).await;
    run.close_stdin();
    let seen = finish(run, seen).await;
    assert_eq!(count(&seen, "message-delivered"), 201);

    let messages = device_messages(&info, "wasi-cmd-strict").await;
    let texts: Vec<String> = messages
        .iter()
        .filter(|m| m["hasExternalizedPayload"] != true)
        .map(|m| m["payloadText"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        texts,
        readings("wasi-cmd-strict", 0..200),
        "200 readings in order, each once"
    );
    let link = messages
        .iter()
        .find(|m| m["hasExternalizedPayload"] == true)
        .expect("the large line went by upload");
    assert_eq!(link["sequence"]["n"], 100, "in its place in the order");
    let blob = blob_content(
        &info,
        "wasi-cmd-strict",
        link["blobName"].as_str().expect("a blob name"),
    )
    .await;
    assert!(blob[..] == *big.as_bytes(), "the blob is the message");
    platform.shutdown().await;
}

/// `len` letters brotli cannot shrink under the upload threshold (a repeated pattern it would):
/// a deterministic xorshift stream from `seed`, one stdin line.
fn incompressible_line(seed: u64, len: usize) -> String {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}
