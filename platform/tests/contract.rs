//! The strict contract (`Contract::IotHub`): what a real IoT Hub-based instance offers and
//! nothing more. Talks HTTPS to the Platform's own loopback listener under the hub and blob
//! host names (the certificate covers both), with a tiny HTTP/1.1 client over tokio-rustls, so
//! no name needs resolving.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vdev_platform::{Config, Contract, Platform, StartError};

const HUB: &str = "hub.contract.test";
const BLOB: &str = "blob.hub.contract.test";

fn strict(dir: &std::path::Path) -> Config {
    Config {
        http: None,
        mqtt_tcp: None,
        https: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        host_name: HUB.into(),
        contract: Contract::IotHub,
        ..Config::ephemeral(dir)
    }
}

/// One HTTPS request to `addr` for `host`, trusting the Platform's CA: (status, body).
async fn https(
    addr: SocketAddr,
    ca: &std::path::Path,
    host: &str,
    request: (&str, &str),
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (method, path) = request;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca pem") {
        roots.add(cert.expect("ca cert")).expect("ca added");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connects");
    let name = ServerName::try_from(host.to_owned()).expect("server name");
    let mut tls = connector.connect(name, tcp).await.expect("tls handshake");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await.expect("writes");
    tls.write_all(body).await.expect("writes");
    let mut answer = Vec::new();
    // A close without close_notify is the server's business; what arrived is the answer.
    let _ = tls.read_to_end(&mut answer).await;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut body = answer[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    (status, body)
}

fn unchunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&bytes[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[end + 2..end + 2 + size]);
        bytes = &bytes[end + 4 + size..];
    }
}

/// A JSON request's headers with this `Authorization`.
fn json_headers(auth: &str) -> Vec<(&str, &str)> {
    vec![
        ("Content-Type", "application/json"),
        ("Authorization", auth),
    ]
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

#[tokio::test]
async fn a_strict_platform_offers_only_what_a_real_instance_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::start(strict(dir.path()))
        .await
        .expect("strict platform starts");
    let info = platform.info().clone();
    assert_eq!(info.http_url, None);
    let url = info.https_url.clone().expect("https");
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ca = info.ca_certificate_path.clone();
    let admin_auth = format!("Bearer {}", info.admin_token);

    // Provision and register a device over the device API.
    let token_auth = format!("DeviceToken {}", info.provisioning_token);
    let (status, body) = https(
        addr,
        &ca,
        HUB,
        ("POST", "/provisioning-operations/init"),
        &json_headers(&token_auth),
        json!({"deviceId": "strict-1"}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", json_of(&body));
    let operation = json_of(&body)["provisioningOperationId"]
        .as_str()
        .expect("id")
        .to_owned();
    let approve = format!(
        "/workspaces/{}/provisioning-operations/approve",
        info.workspace_id
    );
    let (status, _) = https(
        addr,
        &ca,
        HUB,
        ("PUT", &approve),
        &json_headers(&admin_auth),
        json!({"provisioningOperationId": operation})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert!(status < 300);
    let (_, body) = https(
        addr,
        &ca,
        HUB,
        ("PUT", "/provisioning-operations/complete"),
        &json_headers(&token_auth),
        json!({"provisioningOperationId": operation})
            .to_string()
            .as_bytes(),
    )
    .await;
    let registration = json_of(&body)["registrationToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let device_auth = format!("DeviceToken {registration}");
    let (status, body) = https(
        addr,
        &ca,
        HUB,
        ("PUT", "/devices/register"),
        &json_headers(&device_auth),
        br#"{"connectionStringType":"SharedAccessSignature"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let registered = json_of(&body);
    assert_eq!(registered["iotHubHostName"], HUB);
    assert!(
        registered.get("gatewayEndpoints").is_none(),
        "no stand-in endpoints: {registered}"
    );

    // The file-upload API names blob storage under its own host name, with no ready URL.
    let sas = registered["connectionString"]
        .as_str()
        .and_then(|c| c.split(";SharedAccessSignature=").nth(1))
        .expect("a SAS")
        .to_owned();
    let files = format!("/devices/{}:strict-1/files", info.workspace_id);
    let (status, body) = https(
        addr,
        &ca,
        HUB,
        ("POST", &files),
        &json_headers(&sas),
        br#"{"blobName":"a/b.bin"}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", json_of(&body));
    let slot = json_of(&body);
    assert_eq!(slot["hostName"], BLOB);
    assert!(
        slot.get("uploadUrl").is_none(),
        "no stand-in upload URL: {slot}"
    );
    let blob_path = format!(
        "/{}/{}{}",
        slot["containerName"].as_str().expect("container"),
        slot["blobName"].as_str().expect("blob"),
        slot["sasToken"].as_str().expect("sas")
    );

    // Blob storage answers under its own name only, and takes block blobs only.
    let block = [("x-ms-blob-type", "BlockBlob")];
    let (status, _) = https(addr, &ca, HUB, ("PUT", &blob_path), &block, b"data").await;
    assert_eq!(status, 404, "the hub host is not blob storage");
    let (status, _) = https(addr, &ca, BLOB, ("PUT", &blob_path), &[], b"data").await;
    assert_eq!(status, 400, "a PUT without x-ms-blob-type is refused");
    let (status, _) = https(addr, &ca, BLOB, ("PUT", &blob_path), &block, b"data").await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn a_strict_platform_has_nothing_plain_for_devices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let with_mqtt = Config {
        mqtt_tcp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..strict(dir.path())
    };
    let Err(error) = Platform::start(with_mqtt).await else {
        panic!("plain MQTT under the iothub contract must be refused");
    };
    assert!(matches!(error, StartError::Contract(_)), "{error}");
    assert!(
        error.to_string().contains("no plain MQTT listener"),
        "{error}"
    );

    // A plain HTTP listener serves the admin API and the console, and nothing of a device's.
    let with_http = Config {
        http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..strict(dir.path())
    };
    let platform = Platform::start(with_http).await.expect("starts");
    let info = platform.info().clone();
    let base = info.http_url.clone().expect("http");
    let client = reqwest::Client::new();
    let admin = client
        .get(format!("{base}/workspaces/{}/devices", info.workspace_id))
        .bearer_auth(&info.admin_token)
        .send()
        .await
        .expect("answers");
    assert_eq!(admin.status(), 200);
    let init = client
        .post(format!("{base}/provisioning-operations/init"))
        .header(
            "Authorization",
            format!("DeviceToken {}", info.provisioning_token),
        )
        .json(&json!({}))
        .send()
        .await
        .expect("answers");
    assert_eq!(init.status(), 404, "no device API in plain text");
    assert!(info.gateway_endpoints.web_socket.is_none());
}
