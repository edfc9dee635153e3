//! The stand-in Platform as the tests see it: its admin API (approve a provisioning operation,
//! read stored messages, twins and blobs), the device settings that point at it, and the
//! configuration that starts it again on the same data directory and ports. Shared by the
//! native, WASI command and WASI library tests so they check the Platform the same way.

use std::net::SocketAddr;

use serde_json::{Value, json};
use vdev_core::{DeviceConfig, DeviceId, Transport};
use vdev_platform::{Config, PlatformInfo};

/// Calls the admin API under the default workspace (`/workspaces/{ws}{path}`) and returns the
/// JSON answer (`null` when it has none); panics when the call fails, as a test should.
pub async fn admin(info: &PlatformInfo, method: reqwest::Method, path: &str, body: Value) -> Value {
    let url = format!(
        "{}/workspaces/{}{path}",
        info.http_url.as_deref().expect("plain HTTP listener"),
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
        "admin call {path} failed: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

/// Arms a fault of the stand-in (`POST /faults`), e.g. `{"target": "mqttConnect", "count": 1}`
/// to refuse the next MQTT CONNECT with return code 3 (server unavailable).
pub async fn arm_fault(info: &PlatformInfo, fault: Value) {
    let url = format!(
        "{}/faults",
        info.http_url.as_deref().expect("plain HTTP listener")
    );
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(&info.admin_token)
        .json(&fault)
        .send()
        .await
        .expect("admin call");
    assert!(
        response.status().is_success(),
        "arming {fault} failed: {}",
        response.status()
    );
}

/// Approves a provisioning operation, as a technician would in the console.
pub async fn approve(info: &PlatformInfo, operation_id: &str) {
    admin(
        info,
        reqwest::Method::PUT,
        "/provisioning-operations/approve",
        json!({ "provisioningOperationId": operation_id }),
    )
    .await;
}

/// The messages the Platform stored for `device_id`, oldest first.
pub async fn device_messages(info: &PlatformInfo, device_id: &str) -> Vec<Value> {
    let path = format!("/devices/{device_id}/messages?limit=10000");
    match admin(info, reqwest::Method::GET, &path, Value::Null).await {
        Value::Array(list) => list,
        other => panic!("message list expected, got {other}"),
    }
}

/// The stand-in's facts of the device's latest MQTT session: `keepAliveSeconds` (its
/// CONNECT's) and `peakInFlight` (the most telemetry publishes unacknowledged at once).
pub async fn device_session(info: &PlatformInfo, device_id: &str) -> Value {
    let path = format!("/devices/{device_id}/session");
    admin(info, reqwest::Method::GET, &path, Value::Null).await
}

/// The text payloads of stored messages, in the Platform's order.
pub fn payload_texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["payloadText"].as_str().expect("text payload").to_owned())
        .collect()
}

/// The `vdev-seq` numbers of stored messages, in the Platform's order.
pub fn sequence_numbers(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["sequence"]["n"].as_u64().expect("vdev-seq stored"))
        .collect()
}

/// True when every number is larger than the one before (none repeated, none reordered).
pub fn strictly_increasing(numbers: &[u64]) -> bool {
    numbers.windows(2).all(|w| w[0] < w[1])
}

/// Core settings for a device of this Platform over plain TCP, with short poll and retry
/// intervals so tests do not wait on defaults meant for the field.
pub fn device_config(info: &PlatformInfo, device_id: &str) -> DeviceConfig {
    let mut config = DeviceConfig::new(
        info.http_url.clone().expect("plain HTTP listener"),
        info.provisioning_token.clone(),
    );
    config.device_id = Some(DeviceId::parse(device_id).expect("valid id"));
    config.transport = Transport::Tcp;
    config.provisioning_poll_interval_ms = 200;
    config.backoff.initial_ms = 100;
    config.backoff.max_ms = 1_000;
    config.session.backoff = config.backoff;
    config
}

/// The same settings as command-component arguments, plus the stream the tests send to.
pub fn command_args(info: &PlatformInfo, device_id: &str) -> Vec<String> {
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

fn socket_addr(url: &str) -> SocketAddr {
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
pub fn restart_config(info: &PlatformInfo) -> Config {
    let mut config = Config::ephemeral(&info.data_dir);
    config.http = info.http_url.as_deref().map(socket_addr);
    config.mqtt_tcp = info.gateway_endpoints.mqtt_tcp.as_deref().map(socket_addr);
    config.mqtt_tls = info.gateway_endpoints.mqtt_tls.as_deref().map(socket_addr);
    config
}

/// The bytes of blob `name` of `device_id`, read through the admin API.
pub async fn blob_content(info: &PlatformInfo, device_id: &str, name: &str) -> Vec<u8> {
    reqwest::Client::new()
        .get(format!(
            "{}/workspaces/{}/blobs/content?deviceId={device_id}&name={name}",
            info.http_url.as_deref().expect("plain HTTP listener"),
            info.workspace_id
        ))
        .bearer_auth(&info.admin_token)
        .send()
        .await
        .expect("blob call")
        .error_for_status()
        .expect("the blob is stored")
        .bytes()
        .await
        .expect("blob body")
        .to_vec()
}

/// The strict stand-in (`Contract::IotHub`): HTTPS on 443 and MQTT over TLS on 8883 of `ip`
/// under `host_name`, blob storage under `blob_host_name` (`blob.<host>` when `None`), the plain
/// listener at `admin` serving the admin API only.
pub fn strict_config(
    data_dir: &std::path::Path,
    ip: std::net::IpAddr,
    host_name: &str,
    blob_host_name: Option<&str>,
    admin: &str,
) -> Config {
    Config {
        http: Some(admin.parse().expect("admin address")),
        https: Some(SocketAddr::new(ip, 443)),
        mqtt_tcp: None,
        mqtt_tls: Some(SocketAddr::new(ip, 8883)),
        host_name: host_name.into(),
        blob_host_name: blob_host_name.map(str::to_owned),
        contract: vdev_platform::Contract::IotHub,
        ..Config::ephemeral(data_dir)
    }
}
