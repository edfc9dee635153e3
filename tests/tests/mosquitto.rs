//! Debian's mosquitto clients (`mosquitto_pub`, `mosquitto_sub`, package `mosquitto-clients`)
//! against the MQTT gateway over plain TCP, with a device's SAS credential: a third,
//! independent MQTT implementation.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vdev_platform::{Config, Platform, PlatformInfo};

const DEADLINE: Duration = Duration::from_secs(20);

fn admin(info: &PlatformInfo, method: &str, path: &str, body: Option<Value>) -> Value {
    let url = format!(
        "{}/workspaces/{}{path}",
        info.http_url.as_deref().expect("http"),
        info.workspace_id
    );
    let request =
        ureq::request(method, &url).set("Authorization", &format!("Bearer {}", info.admin_token));
    let response = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    response
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        .into_json()
        .unwrap_or(Value::Null)
}

fn device(info: &PlatformInfo, path: &str, token: &str, body: Value) -> Value {
    let url = format!("{}{path}", info.http_url.as_deref().expect("http"));
    let method = if path.ends_with("/init") {
        "POST"
    } else {
        "PUT"
    };
    ureq::request(method, &url)
        .set("Authorization", &format!("DeviceToken {token}"))
        .send_json(body)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .into_json()
        .expect("json")
}

/// Provision and register `device_id`; returns the SAS password.
fn register(info: &PlatformInfo, device_id: &str) -> String {
    let pt = &info.provisioning_token;
    let op = device(
        info,
        "/provisioning-operations/init",
        pt,
        json!({"deviceId": device_id}),
    );
    let op_id = op["provisioningOperationId"].as_str().expect("op");
    admin(
        info,
        "PUT",
        "/provisioning-operations/approve",
        Some(json!({"provisioningOperationId": op_id})),
    );
    let rt = device(
        info,
        "/provisioning-operations/complete",
        pt,
        json!({"provisioningOperationId": op_id}),
    );
    let registration = device(
        info,
        "/devices/register",
        rt["registrationToken"].as_str().expect("rt"),
        json!({"connectionStringType": "SharedAccessSignature"}),
    );
    let connection_string = registration["connectionString"].as_str().expect("cs");
    connection_string
        .split(';')
        .find_map(|p| p.strip_prefix("SharedAccessSignature="))
        .expect("sas")
        .to_owned()
}

fn mosquitto(program: &str) -> Command {
    let mut command = Command::new(program);
    command.stdin(Stdio::null());
    command
}

fn run(mut command: Command) -> std::process::Output {
    command
        .output()
        .expect("mosquitto clients are installed (Debian package mosquitto-clients)")
}

#[test]
fn mosquitto_clients_publish_telemetry_and_receive_cloud_to_device() {
    let data = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let platform = runtime
        .block_on(Platform::start(Config::ephemeral(data.path())))
        .expect("platform starts");
    let info = platform.info().clone();
    let sas = register(&info, "mosquitto-01");
    let client_id = format!("{}:mosquitto-01", info.workspace_id);
    let username = format!("localhost/{client_id}/?api-version=2018-06-30");
    let endpoint = info.gateway_endpoints.mqtt_tcp.clone().expect("mqtt tcp");
    let (host, port) = endpoint.rsplit_once(':').expect("host:port");
    let common = |command: &mut Command| {
        command.args(["-h", host, "-p", port, "-V", "mqttv311", "-i", &client_id]);
        command.args(["-u", &username, "-P", &sas, "-q", "1"]);
    };

    for n in 1..=3 {
        let mut publish = mosquitto("mosquitto_pub");
        common(&mut publish);
        publish.args([
            "-t",
            &format!("devices/{client_id}/messages/events/stream-group-name=g&stream-name=mosq&message-id={n}"),
            "-m",
            &format!("{{\"n\":{n}}}"),
        ]);
        let output = run(publish);
        assert!(
            output.status.success(),
            "mosquitto_pub: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stored = admin(&info, "GET", "/devices/mosquitto-01/messages", None);
    let ids: Vec<&str> = stored
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["messageId"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["1", "2", "3"]);
    assert_eq!(stored[0]["payloadText"], "{\"n\":1}");
    assert_eq!(stored[0]["stream"], "mosq");

    // A refused credential makes mosquitto_pub fail.
    let mut refused = mosquitto("mosquitto_pub");
    refused.args([
        "-h", host, "-p", port, "-V", "mqttv311", "-i", &client_id, "-u", &username,
    ]);
    refused.args([
        "-P",
        "SharedAccessSignature sr=x&sig=y&se=1&skn=z",
        "-t",
        "t",
        "-m",
        "x",
    ]);
    assert!(!run(refused).status.success());

    // mosquitto_sub receives a cloud-to-device message queued through the admin API.
    admin(
        &info,
        "POST",
        "/devices/mosquitto-01/c2d-messages",
        Some(json!({"hello": "device"})),
    );
    let mut subscribe = mosquitto("mosquitto_sub");
    common(&mut subscribe);
    subscribe.args([
        "-t",
        &format!("devices/{client_id}/messages/devicebound/#"),
        "-C",
        "1",
        "-W",
        "20",
    ]);
    let started = Instant::now();
    let output = run(subscribe);
    assert!(started.elapsed() < DEADLINE + Duration::from_secs(5));
    assert!(
        output.status.success(),
        "mosquitto_sub: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "{\"hello\":\"device\"}"
    );

    runtime.block_on(platform.shutdown());
}
