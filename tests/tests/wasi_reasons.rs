//! Every way the device can fail to make progress reaches a WASI app with a specific reason
//! (the WIT `event` variant, in the core's vocabulary) within 10 s, in the library component
//! driven by the wasmtime host against the stand-in Platform: nothing listening at the instance
//! URL, a wrong Provisioning Token, the gateway refusing the CONNECT, a revoked Registration
//! Token (the gateway refuses the
//! credential, the Platform the token), a gateway whose TLS certificate is signed by a CA the
//! device does not trust, and a redirect to a cleartext URL that is not loopback (refused, never
//! followed); a cleartext instance URL off loopback is refused at start. And the HTTP client
//! holds up: a server that stalls mid-body does not hold the device's loop, and a body larger
//! than the cap fails the request with that reason.

use std::time::Duration;

use serde_json::Value;
use vdev_platform::{Config, Platform, PlatformInfo};
use vdev_tests::library::{platform_host_and_store, poll_until};
use vdev_tests::platform_admin::{admin, approve, arm_fault};
use vdev_tests::wasi_host::{LibraryConfig, LibraryDevice, LibraryEvent};
use wasmtime::component::Val;

/// The acceptance bound: the app hears why within this time.
const WITHIN: Duration = Duration::from_secs(10);

/// The id of the device's provisioning operation, once it shows it.
async fn operation_id(device: &mut LibraryDevice, seen: &mut Vec<LibraryEvent>) -> String {
    poll_until(device, seen, Duration::from_secs(60), |e| {
        (e.name == "provisioning-operation").then(|| e.string_field("id").expect("operation id"))
    })
    .await
}

/// The failure of a failed `provisioning-init` request, if `event` is one.
fn init_failure(event: &LibraryEvent) -> Option<Val> {
    let failed = payload_of(event, "request-failed")?;
    (field(failed, "request") == Some(&Val::Enum("provisioning-init".into())))
        .then(|| field(failed, "failure").cloned())?
}

/// The payload of an event named `name`.
fn payload_of<'a>(event: &'a LibraryEvent, name: &str) -> Option<&'a Val> {
    (event.name == name).then_some(event.payload.as_ref()?)
}

fn field<'a>(record: &'a Val, name: &str) -> Option<&'a Val> {
    match record {
        Val::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => None,
    }
}

/// A variant's case name and payload.
fn case(value: &Val) -> Option<(&str, Option<&Val>)> {
    match value {
        Val::Variant(name, payload) => Some((name.as_str(), payload.as_deref())),
        _ => None,
    }
}

fn config(info: &PlatformInfo, instance_url: String, device_id: &str) -> LibraryConfig {
    LibraryConfig::tcp(
        instance_url,
        info.provisioning_token.clone(),
        device_id.into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_at_the_instance_url_is_a_network_failure_of_the_provisioning_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    // Port 9 (discard) on loopback: nothing listens there on the test machines.
    let mut device = host
        .start_library_device(
            &store,
            config(&info, "http://127.0.0.1:9".into(), "wasi-nowhere"),
        )
        .await
        .expect("device starts");
    let mut seen = Vec::new();
    let failure = poll_until(&mut device, &mut seen, WITHIN, init_failure).await;
    let (code, text) = case(&failure).expect("a failure variant");
    assert_eq!(code, "network", "{failure:?}");
    assert!(
        matches!(text, Some(Val::String(text)) if !text.is_empty()),
        "the host's words: {failure:?}"
    );
    device.stop().await.expect("stops");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_provisioning_token_ends_provisioning_with_that_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    let mut wrong = config(&info, info.http_url.clone().expect("http"), "wasi-badtoken");
    wrong.provisioning_token = "not-a-token".into();
    let mut device = host
        .start_library_device(&store, wrong)
        .await
        .expect("device starts");
    let mut seen = Vec::new();
    let reason = poll_until(&mut device, &mut seen, WITHIN, |e| {
        payload_of(e, "provisioning-failed").cloned()
    })
    .await;
    assert_eq!(case(&reason), Some(("invalid-provisioning-token", None)));
    let status = seen.iter().find_map(|e| {
        let failure = field(payload_of(e, "request-failed")?, "failure")?;
        let (_, Some(problem)) = case(failure)? else {
            return None;
        };
        field(problem, "status").cloned()
    });
    assert_eq!(
        status,
        Some(Val::U16(401)),
        "the Platform's answer travels with it"
    );
    device.stop().await.expect("stops");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_registration_token_is_discarded_with_the_platforms_refusal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    let device_id = "wasi-revoked";
    let mut device = host
        .start_library_device(
            &store,
            config(&info, info.http_url.clone().expect("http"), device_id),
        )
        .await
        .expect("device starts");
    let mut seen = Vec::new();
    let operation = operation_id(&mut device, &mut seen).await;
    approve(&info, &operation).await;
    poll_until(&mut device, &mut seen, Duration::from_secs(60), |e| {
        (payload_of(e, "connection-state-changed") == Some(&Val::Enum("connected".into())))
            .then_some(())
    })
    .await;

    let tokens = admin(
        &info,
        reqwest::Method::GET,
        &format!("/registration-tokens?deviceId={device_id}"),
        Value::Null,
    )
    .await;
    let active = tokens
        .as_array()
        .and_then(|tokens| tokens.iter().find(|t| t["state"] == "active"))
        .unwrap_or_else(|| panic!("an active registration token in {tokens}"));
    admin(
        &info,
        reqwest::Method::POST,
        &format!(
            "/registration-tokens/{}/revoke",
            active["id"].as_str().unwrap()
        ),
        Value::Null,
    )
    .await;

    let reason = poll_until(&mut device, &mut seen, WITHIN, |e| {
        payload_of(e, "registration-token-discarded").cloned()
    })
    .await;
    let (code, refused) = case(&reason).expect("a reason variant");
    assert_eq!(code, "refused", "{reason:?}");
    let refused = refused.expect("the refused request");
    let failure = field(refused, "failure").expect("its failure");
    let (_, problem) = case(failure).expect("a failure variant");
    assert_eq!(
        problem.and_then(|p| field(p, "status")),
        Some(&Val::U16(401)),
        "{reason:?}"
    );
    let lost = seen
        .iter()
        .find_map(|e| payload_of(e, "connection-lost"))
        .unwrap_or_else(|| panic!("the connection's end has a reason too; saw {seen:?}"));
    let (code, _) = case(lost).expect("a loss variant");
    assert!(["closed", "refused"].contains(&code), "{lost:?}");
    device.stop().await.expect("stops");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_certificate_from_an_untrusted_ca_is_an_unreachable_gateway_with_the_tls_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    // Another Platform's CA: a real CA certificate, but not the one that signed this gateway's.
    let other = Platform::start(Config::ephemeral(dir.path().join("other")))
        .await
        .expect("second platform starts");
    std::fs::copy(
        &other.info().ca_certificate_path,
        store.join("other-ca.pem"),
    )
    .expect("ca copied");
    let untrusting = LibraryConfig {
        tls_ca_file: Some("other-ca.pem".into()),
        ..config(
            &info,
            info.http_url.clone().expect("http"),
            "wasi-untrusted",
        )
    };
    let mut device = host
        .start_library_device(&store, untrusting)
        .await
        .expect("device starts");
    let mut seen = Vec::new();
    let operation = operation_id(&mut device, &mut seen).await;
    approve(&info, &operation).await;
    let loss = poll_until(&mut device, &mut seen, WITHIN, |e| {
        payload_of(e, "connection-lost").cloned()
    })
    .await;
    let (code, text) = case(&loss).expect("a loss variant");
    assert_eq!(code, "unreachable", "{loss:?}");
    let Some(Val::String(text)) = text else {
        panic!("the TLS error in words: {loss:?}");
    };
    assert!(
        text.to_lowercase().contains("certificate"),
        "the reason names the certificate problem: {text}"
    );
    device.stop().await.expect("stops");
    other.shutdown().await;
    platform.shutdown().await;
}

/// A loopback HTTP server that answers every request under `/redirect/` with a 302 to a
/// cleartext URL that is not loopback by the device's rule (`[::ffff:127.0.0.1]`), which still
/// lands here: requests that followed it are counted.
async fn redirecting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let followed = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = followed.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                // The whole request, body included, before answering: a client still writing
                // its body to a closed connection would fail on that instead.
                let head_end = request
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(0, |at| at + 4);
                let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                let body_length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                let chunked = head.contains("transfer-encoding: chunked");
                let complete = |request: &[u8]| {
                    if chunked {
                        request[head_end..].ends_with(b"0\r\n\r\n")
                    } else {
                        request.len() >= head_end + body_length
                    }
                };
                while !complete(&request) {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let answer = if let Some(rest) = path.strip_prefix("/redirect") {
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: http://[::ffff:127.0.0.1]:{port}/followed{rest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                } else {
                    counter.fetch_add(1, Ordering::SeqCst);
                    "HTTP/1.1 410 Gone\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
                };
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/redirect"), followed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_cleartext_url_is_refused_and_never_followed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    let (instance, followed) = redirecting_server().await;
    let mut device = host
        .start_library_device(&store, config(&info, instance, "wasi-redirect"))
        .await
        .expect("device starts");
    let mut seen = Vec::new();
    let failure = poll_until(&mut device, &mut seen, WITHIN, init_failure).await;
    assert_eq!(
        case(&failure),
        Some((
            "redirected",
            Some(&Val::Option(Some(Box::new(Val::U16(302)))))
        )),
        "{failure:?}"
    );
    device.stop().await.expect("stops");
    assert_eq!(
        followed.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never followed"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleartext_instance_url_off_loopback_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    let error = host
        .start_library_device(
            &store,
            config(&info, "http://platform.example".into(), "wasi-cleartext"),
        )
        .await
        .err()
        .expect("start refused");
    let error = format!("{error:#}");
    assert!(
        error.contains("invalid-configuration")
            && error.contains(r#"String("instance-url")"#)
            && error.contains("refusing unencrypted http://platform.example"),
        "{error}"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refusing_the_connect_is_told_with_its_connack_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    let mut device = host
        .start_library_device(
            &store,
            config(&info, info.http_url.clone().expect("http"), "wasi-refused"),
        )
        .await
        .expect("device starts");
    let mut seen = Vec::new();
    let operation = operation_id(&mut device, &mut seen).await;
    // The next CONNECT (this device's first) is refused: "server unavailable", code 3.
    arm_fault(
        &info,
        serde_json::json!({ "target": "mqttConnect", "count": 1 }),
    )
    .await;
    approve(&info, &operation).await;
    let loss = poll_until(&mut device, &mut seen, WITHIN, |e| {
        payload_of(e, "connection-lost").cloned()
    })
    .await;
    assert_eq!(
        case(&loss),
        Some(("refused", Some(&Val::U8(3)))),
        "{loss:?}"
    );
    // And the device gets past it: the next attempt connects.
    poll_until(&mut device, &mut seen, Duration::from_secs(60), |e| {
        (payload_of(e, "connection-state-changed") == Some(&Val::Enum("connected".into())))
            .then_some(())
    })
    .await;
    device.stop().await.expect("stops");
    platform.shutdown().await;
}

/// A loopback HTTP server that answers every request with `head` and then `body`, and keeps
/// the connection open afterwards (a server that stalls mid-body). Its URL.
async fn stalling_server(head: String, body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body).await;
            held.push(socket);
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stalls_mid_body_does_not_hold_the_device_loop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    // The head promises 1000 bytes; one comes, then nothing, for ever.
    let url = stalling_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n".into(),
        b"{".to_vec(),
    )
    .await;
    let mut device = host
        .start_library_device(&store, config(&info, url, "wasi-stall"))
        .await
        .expect("device starts");
    // Every poll comes back within its own bound while the body hangs (a blocking read of the
    // body would hold the first one for as long as the server stalls).
    let polls = async {
        for _ in 0..10 {
            device.poll(200).await.expect("poll");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), polls)
        .await
        .expect("the loop is not held by a stalled response body");
    device.stop().await.expect("stops");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_body_fails_the_request_with_that_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (platform, host, store) = platform_host_and_store(dir.path()).await;
    let info = platform.info().clone();
    // Above the core's limit: the device stops reading there.
    let size = 5 * 1024 * 1024;
    let url = stalling_server(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
        ),
        vec![b' '; size],
    )
    .await;
    let mut device = host
        .start_library_device(&store, config(&info, url, "wasi-huge"))
        .await
        .expect("device starts");
    let mut seen = Vec::new();
    let failure = poll_until(&mut device, &mut seen, WITHIN, init_failure).await;
    let (code, text) = case(&failure).expect("a failure variant");
    assert_eq!(code, "malformed", "{failure:?}");
    assert!(
        matches!(text, Some(Val::String(text))
            if text == &format!("it is longer than the {} bytes the device reads", vdev_core::MAX_ANSWER_BYTES)),
        "{failure:?}"
    );
    device.stop().await.expect("stops");
    platform.shutdown().await;
}
