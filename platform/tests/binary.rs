//! The `vdev-platform` binary as a real process: it prints where everything is, writes
//! `platform.json`, keeps its state (tokens, devices, messages) across a hard kill and restart,
//! and acknowledges a message only once it is flushed to disk.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Device, Mqtt};
use rumqttc::ConnectReturnCode;
use serde_json::{Value, json};
use vdev_platform::PlatformInfo;

struct Running {
    child: Child,
    /// The Platform's own process when `child` is a wrapper that outlives its kill (strace).
    platform_pid: Option<u32>,
    info: PlatformInfo,
    printed: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(pid) = self.platform_pid {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary and wait (bounded) until it prints the path of platform.json.
fn start(data_dir: &Path) -> Running {
    start_wrapped(data_dir, None)
}

/// [`start`], with at most `max_open_files` file descriptors (the shell's `ulimit -n`).
fn start_with_open_files(data_dir: &Path, max_open_files: u32) -> Running {
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(format!("ulimit -n {max_open_files} && exec \"$0\" \"$@\""));
    start_wrapped(data_dir, Some(shell))
}

/// [`start`] under `strace -f`, which writes the disk flushes and socket writes of every thread
/// to `trace`.
fn start_traced(data_dir: &Path, trace: &Path) -> Running {
    let mut strace = Command::new("strace");
    strace
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,write,writev,sendto,sendmsg",
            "-o",
        ])
        .arg(trace);
    let mut running = start_wrapped(data_dir, Some(strace));
    // Killing strace would leave the Platform running, detached: remember its own process.
    let id = running.child.id();
    let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
        .expect("the children of strace");
    running.platform_pid = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok());
    assert!(running.platform_pid.is_some(), "strace runs the Platform");
    running
}

/// Starts the binary, through `wrapper` (a command that runs the binary given as its last
/// argument) when there is one.
fn start_wrapped(data_dir: &Path, wrapper: Option<Command>) -> Running {
    let binary = env!("CARGO_BIN_EXE_vdev-platform");
    let mut command = match wrapper {
        Some(mut wrapper) => {
            wrapper.arg(binary);
            wrapper
        }
        None => Command::new(binary),
    };
    let mut child = command
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--http",
            "127.0.0.1:0",
            "--mqtt-tcp",
            "127.0.0.1:0",
            "--mqtt-tls",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("platform.json:") {
                let _ = tx.send(printed.clone());
            }
        }
    });
    let printed = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the binary prints its platform.json path");
    let info: PlatformInfo = serde_json::from_slice(
        &std::fs::read(data_dir.join("platform.json")).expect("platform.json written"),
    )
    .expect("platform.json parses");
    Running {
        child,
        platform_pid: None,
        info,
        printed,
    }
}

async fn call(
    info: &PlatformInfo,
    method: &str,
    path: &str,
    auth: &str,
    body: Value,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let response = client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{path}", info.http_url.as_deref().expect("http")),
        )
        .header("Authorization", auth)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn binary_prints_its_endpoints_and_keeps_state_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = start(dir.path());
    let info = first.info.clone();
    for shown in [
        &info.admin_token,
        &info.workspace_id,
        &info.provisioning_token,
        &info.console_url,
    ] {
        assert!(
            first.printed.contains(shown.as_str()),
            "printed: {}",
            first.printed
        );
    }
    assert!(info.ca_certificate_path.exists());
    // The files holding secrets are readable by their owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        let tls_dir = info.ca_certificate_path.parent().expect("tls dir");
        for secret in [info.info_path.clone(), tls_dir.join("server-key.pem")] {
            let mode = std::fs::metadata(&secret)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", secret.display());
        }
    }

    let admin = format!("Bearer {}", info.admin_token);
    let (device, host, port) = provision(&info, "proc-01").await;
    let rt = device.registration_token.clone();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    mqtt.publish_message(
        device.events_topic("vdev-seq=p.1"),
        b"before restart".to_vec(),
    )
    .await;
    drop(mqtt);
    drop(first); // SIGKILL: no graceful shutdown

    let second = start(dir.path());
    let again = second.info.clone();
    assert_eq!(again.admin_token, info.admin_token);
    assert_eq!(again.workspace_id, info.workspace_id);
    assert_eq!(again.provisioning_token, info.provisioning_token);
    let (status, registration) = register(again.clone(), rt).await;
    assert_eq!(status, 200, "the registration token survives the restart");
    let device = Device::from_registration(&registration, device.registration_token.clone());
    let (host, port) = mqtt_endpoint(&registration);
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    // The replayed sequence number is still known: it is dropped, the next one is stored.
    mqtt.publish_message(
        device.events_topic("vdev-seq=p.1"),
        b"before restart".to_vec(),
    )
    .await;
    mqtt.publish_message(
        device.events_topic("vdev-seq=p.2"),
        b"after restart".to_vec(),
    )
    .await;
    let (_, stored) = call(
        &again,
        "GET",
        &format!(
            "/workspaces/{}/devices/proc-01/messages",
            again.workspace_id
        ),
        &admin,
        Value::Null,
    )
    .await;
    let payloads: Vec<&str> = stored
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["payloadText"].as_str())
        .collect();
    assert_eq!(payloads, ["before restart", "after restart"]);
}

/// Provisions `device_id` through the HTTP API (init, approve, complete, register): the device
/// and the MQTT TCP endpoint it was told.
async fn provision(info: &PlatformInfo, device_id: &str) -> (Device, String, u16) {
    let pt = format!("DeviceToken {}", info.provisioning_token);
    let admin = format!("Bearer {}", info.admin_token);
    let (_, op) = call(
        info,
        "POST",
        "/provisioning-operations/init",
        &pt,
        json!({ "deviceId": device_id }),
    )
    .await;
    let op_id = op["provisioningOperationId"].clone();
    let approve_path = format!(
        "/workspaces/{}/provisioning-operations/approve",
        info.workspace_id
    );
    let (status, _) = call(
        info,
        "PUT",
        &approve_path,
        &admin,
        json!({"provisioningOperationId": op_id}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, rt) = call(
        info,
        "PUT",
        "/provisioning-operations/complete",
        &pt,
        json!({"provisioningOperationId": op_id}),
    )
    .await;
    let rt = rt["registrationToken"].as_str().expect("rt").to_owned();
    let (status, registration) = register(info.clone(), rt.clone()).await;
    assert_eq!(status, 200);
    let device = Device::from_registration(&registration, rt);
    let (host, port) = mqtt_endpoint(&registration);
    (device, host, port)
}

/// The MQTT TCP endpoint a register answer announces, as host and port.
fn mqtt_endpoint(registration: &Value) -> (String, u16) {
    registration["gatewayEndpoints"]["mqttTcp"]
        .as_str()
        .and_then(|e| e.rsplit_once(':'))
        .map(|(h, p)| (h.to_owned(), p.parse::<u16>().expect("port")))
        .expect("mqtt endpoint in the register response")
}

async fn register(info: PlatformInfo, rt: String) -> (u16, Value) {
    call(
        &info,
        "PUT",
        "/devices/register",
        &format!("DeviceToken {rt}"),
        json!({"connectionStringType": "SharedAccessSignature"}),
    )
    .await
}

#[tokio::test]
async fn a_message_is_acknowledged_only_once_it_is_flushed_to_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("strace.txt");
    let running = start_traced(&dir.path().join("data"), &trace);
    let (device, host, port) = provision(&running.info, "flushed-01").await;
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    const MESSAGES: u8 = 10;
    for n in 1..=MESSAGES {
        // One at a time: each PUBACK must come after a flush that happened after the previous.
        mqtt.publish_message(
            device.events_topic(&format!("vdev-seq=f.{n}")),
            format!("reading {n}").into_bytes(),
        )
        .await;
    }
    drop(mqtt);
    drop(running);
    // Each PUBACK (bytes 0x40 0x02, strace's "@\2") written to a socket follows a completed
    // fsync/fdatasync since the one before it.
    let trace = std::fs::read_to_string(&trace).expect("strace wrote its trace");
    let mut flushed = false;
    let mut acknowledged = 0;
    for line in trace.lines() {
        let completed = line.contains(" = 0") && !line.contains("unfinished");
        if (line.contains("fdatasync") || line.contains("fsync")) && completed {
            flushed = true;
        }
        let written = ["write(", "writev(", "sendto(", "sendmsg("]
            .iter()
            .any(|call| line.contains(call));
        if written && line.contains(r#""@\2\0"#) {
            acknowledged += 1;
            assert!(
                flushed,
                "PUBACK {acknowledged} was written before its message was flushed to disk: {line}"
            );
            flushed = false;
        }
    }
    assert_eq!(acknowledged, MESSAGES, "every message acknowledged");
}

/// CPU time the process `pid` has used, user and system, in clock ticks (1/100 s here).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loops_wait_instead_of_spinning_and_recover() {
    let dir = tempfile::tempdir().expect("temp dir");
    let running = start_with_open_files(dir.path(), 64);
    let mqtt = running
        .info
        .gateway_endpoints
        .mqtt_tcp
        .clone()
        .expect("mqtt tcp endpoint");
    let http = running.info.http_url.clone().expect("http url");
    let http_address = http.trim_start_matches("http://").to_owned();
    // More connections than the process may hold files: the kernel queues the rest, and every
    // accept fails with EMFILE until some close.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(std::net::TcpStream::connect(&mqtt).expect("connect"));
        held.push(std::net::TcpStream::connect(&http_address).expect("connect"));
    }
    // Over a window of two seconds the process uses little CPU: an accept loop that retried at
    // once would use all of one core (about 200 ticks).
    let before = cpu_ticks(running.child.id());
    tokio::time::sleep(Duration::from_secs(2)).await; // the measurement window
    let used = cpu_ticks(running.child.id()) - before;
    assert!(
        used < 60,
        "{used} ticks of CPU in 2 s while out of file descriptors: the accept loop spins"
    );
    // Once the connections go, the Platform serves again.
    drop(held);
    let admin = format!("Bearer {}", running.info.admin_token);
    common::eventually("the Platform answers again", || async {
        let path = format!("/workspaces/{}/devices", running.info.workspace_id);
        let (status, _) = call(&running.info, "GET", &path, &admin, Value::Null).await;
        (status == 200).then_some(())
    })
    .await;
}
