//! The MQTT device gateway with an independent client (rumqttc) and raw sockets: telemetry with
//! its property bag and deduplication, twins, cloud-to-device, identity rules, refusals and
//! malformed input.

mod common;

use common::{Mqtt, TestPlatform, eventually};
use rumqttc::{ConnectReturnCode, Packet, SubscribeReasonCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn messages(platform: &TestPlatform, device: &str) -> Vec<Value> {
    let (_, body) = platform
        .admin(
            "GET",
            &format!("/devices/{device}/messages?limit=1000"),
            None,
        )
        .await;
    body.as_array().expect("message list").clone()
}

#[tokio::test]
async fn telemetry_is_stored_with_its_property_bag_and_replays_are_dropped() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("sensor-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));

    let bag = "stream-group-name=group%201&stream-name=s&site-id=site&batch-id=b1&batch-slice-id=sl\
               &message-id=m1&chunk-id=c1&content-encoding=br&complete-batch=true";
    mqtt.publish_message(
        device.events_topic(&format!("{bag}&vdev-seq=o1.1")),
        b"first".to_vec(),
    )
    .await;
    mqtt.publish_message(device.events_topic("vdev-seq=o1.2"), b"second".to_vec())
        .await;
    // Replays of n=1 and n=2 (the same payloads) are acknowledged but not stored again.
    mqtt.publish_message(device.events_topic("vdev-seq=o1.1"), b"first".to_vec())
        .await;
    mqtt.publish_message(device.events_topic("vdev-seq=o1.2"), b"second".to_vec())
        .await;
    // Another origin of the same device has its own sequence.
    mqtt.publish_message(
        device.events_topic("vdev-seq=o2.1"),
        b"other origin".to_vec(),
    )
    .await;
    mqtt.publish_message(device.events_topic("vdev-seq=o1.3"), b"third".to_vec())
        .await;
    // Without vdev-seq every copy is stored.
    mqtt.publish_message(device.events_topic(""), b"plain".to_vec())
        .await;
    mqtt.publish_message(device.events_topic(""), b"plain".to_vec())
        .await;

    let stored = messages(&platform, "sensor-01").await;
    let payloads: Vec<&str> = stored
        .iter()
        .map(|m| m["payloadText"].as_str().unwrap_or("<binary>"))
        .collect();
    let first = &stored[0];
    assert_eq!(
        payloads[1..],
        ["second", "other origin", "third", "plain", "plain"]
    );
    assert_eq!(first["streamGroup"], "group 1");
    assert_eq!(first["stream"], "s");
    assert_eq!(first["siteId"], "site");
    assert_eq!(first["batchId"], "b1");
    assert_eq!(first["batchSliceId"], "sl");
    assert_eq!(first["messageId"], "m1");
    assert_eq!(first["chunkId"], "c1");
    assert_eq!(first["contentEncoding"], "br");
    assert_eq!(first["completeBatch"], true);
    assert_eq!(first["sequence"], json!({"origin": "o1", "n": 1}));
    let seqs: Vec<Value> = stored.iter().map(|m| m["sequence"].clone()).collect();
    assert_eq!(seqs[2], json!({"origin": "o2", "n": 1}));
    assert_eq!(seqs[3], json!({"origin": "o1", "n": 3}));

    let (_, by_batch) = platform.admin("GET", "/messages?batchId=b1", None).await;
    assert_eq!(by_batch.as_array().map(Vec::len), Some(1));
    let (_, by_stream) = platform
        .admin("GET", "/messages?streamGroup=group%201&stream=s", None)
        .await;
    assert_eq!(by_stream.as_array().map(Vec::len), Some(1));

    // Paging and order: newest first, and forward from an id.
    let texts = |body: &Value| -> Vec<String> {
        body.as_array()
            .expect("message list")
            .iter()
            .map(|m| m["payloadText"].as_str().unwrap_or("<binary>").to_owned())
            .collect()
    };
    let (_, newest) = platform
        .admin("GET", "/messages?order=desc&limit=2", None)
        .await;
    assert_eq!(texts(&newest), ["plain", "plain"]);
    let second_id = stored[1]["id"].as_i64().expect("id");
    let (_, after) = platform
        .admin(
            "GET",
            &format!("/messages?deviceId=sensor-01&afterId={second_id}&limit=2"),
            None,
        )
        .await;
    assert_eq!(texts(&after), ["other origin", "third"]);
    let (_, other_device) = platform
        .admin("GET", "/messages?deviceId=sensor-99", None)
        .await;
    assert_eq!(texts(&other_device), Vec::<String>::new());
}

#[tokio::test]
async fn a_reused_sequence_number_with_another_payload_is_stored_and_flagged_as_a_conflict() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("sensor-02").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    for (seq, payload) in [
        ("o1.1", "one"),
        ("o1.2", "two"),
        // A true replay: dropped.
        ("o1.2", "two"),
        // A device whose storage rolled back numbers new messages again from 1: never dropped.
        ("o1.2", "two, again after a power cut"),
        ("o1.1", "one, again after a power cut"),
        // A number below the highest that was never stored is a conflict too.
        ("o1.0", "zero"),
        ("o1.3", "three"),
        ("o1.3", "three"),
    ] {
        mqtt.publish_message(
            device.events_topic(&format!("vdev-seq={seq}")),
            payload.as_bytes().to_vec(),
        )
        .await;
    }

    let stored = messages(&platform, "sensor-02").await;
    let rows: Vec<(&str, bool)> = stored
        .iter()
        .map(|m| {
            (
                m["payloadText"].as_str().unwrap_or("<binary>"),
                m["conflict"].as_bool().expect("a conflict flag"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("one", false),
            ("two", false),
            ("two, again after a power cut", true),
            ("one, again after a power cut", true),
            ("zero", true),
            ("three", false),
        ]
    );
    let (_, conflicts) = platform
        .admin("GET", "/messages?deviceId=sensor-02&conflict=true", None)
        .await;
    assert_eq!(conflicts.as_array().map(Vec::len), Some(3));
    let (status, workspace) = platform.admin("GET", "", None).await;
    assert_eq!(status, 200, "{workspace}");
    assert_eq!(workspace["sequenceConflicts"], 3);
}

#[tokio::test]
async fn malformed_sequence_closes_the_connection_and_stores_nothing() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("sensor-02").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    mqtt.publish_raw(device.events_topic("vdev-seq=UPPER.1"), b"x".to_vec())
        .await;
    assert!(
        mqtt.next_matching(|p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await
            .is_err()
    );
    assert!(messages(&platform, "sensor-02").await.is_empty());
}

#[tokio::test]
async fn pubacks_come_in_the_order_of_the_publishes_across_topics() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("order-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    // Telemetry waits for its commit; the reported-properties patch after it, at QoS 1 too
    // (as the official SDKs send it), must not be acknowledged first (MQTT 3.1.1, 4.6).
    let mut sent = Vec::new();
    for round in 0..5 {
        mqtt.publish_raw(
            device.events_topic(&format!("vdev-seq=o.{round}")),
            b"t".to_vec(),
        )
        .await;
        mqtt.publish_raw(
            format!("$iothub/twin/PATCH/properties/reported/?$rid={round}"),
            format!(r#"{{"round":{round}}}"#).into_bytes(),
        )
        .await;
        sent.extend([2 * round + 1, 2 * round + 2]);
    }
    let mut acknowledged = Vec::new();
    while acknowledged.len() < sent.len() {
        let pkid = mqtt
            .next_matching(|p| match p {
                Packet::PubAck(ack) => Some(ack.pkid),
                _ => None,
            })
            .await
            .expect("puback");
        acknowledged.push(pkid);
    }
    assert_eq!(acknowledged, sent, "PUBACKs in the order of the PUBLISHes");
}

#[tokio::test]
async fn twin_get_reported_patch_and_desired_push() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("twin-01").await;
    let (status, _) = platform
        .admin("PUT", "/devices/twin-01/tags", Some(json!({"site": "lab"})))
        .await;
    assert!(status.is_success());
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    assert_eq!(
        mqtt.subscribe("$iothub/twin/res/#").await,
        SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
    );
    mqtt.subscribe("$iothub/twin/PATCH/properties/desired/#")
        .await;

    mqtt.publish_raw("$iothub/twin/GET/?$rid=42".into(), Vec::new())
        .await;
    let (topic, twin) = mqtt
        .next_matching(|p| match p {
            Packet::Publish(p) if p.topic.starts_with("$iothub/twin/res/") => Some((
                p.topic.clone(),
                serde_json::from_slice::<Value>(&p.payload).ok()?,
            )),
            _ => None,
        })
        .await
        .expect("twin response");
    assert_eq!(topic, "$iothub/twin/res/200/?$rid=42");
    assert_eq!(
        twin,
        json!({"desired": {"$version": 1}, "reported": {"$version": 1}}),
        "tags never reach the device"
    );

    mqtt.publish_raw(
        "$iothub/twin/PATCH/properties/reported/?$rid=7".into(),
        br#"{"fw":"1.0","nested":{"a":1}}"#.to_vec(),
    )
    .await;
    let topic = mqtt
        .next_matching(|p| match p {
            Packet::Publish(p) if p.topic.contains("$rid=7") => Some(p.topic.clone()),
            _ => None,
        })
        .await
        .expect("patch response");
    assert_eq!(topic, "$iothub/twin/res/204/?$rid=7&$version=2");
    mqtt.publish_raw(
        "$iothub/twin/PATCH/properties/reported/?$rid=8".into(),
        b"not json".to_vec(),
    )
    .await;
    let topic = mqtt
        .next_matching(|p| match p {
            Packet::Publish(p) if p.topic.contains("$rid=8") => Some(p.topic.clone()),
            _ => None,
        })
        .await
        .expect("bad patch response");
    assert_eq!(topic, "$iothub/twin/res/400/?$rid=8");
    let (_, reported) = platform
        .admin("GET", "/devices/twin-01/reported-properties", None)
        .await;
    assert_eq!(reported["fw"], "1.0");
    assert_eq!(reported["$version"], 2);

    let (status, _) = platform
        .admin(
            "PUT",
            "/devices/twin-01/desired-properties",
            Some(json!({"interval": 5, "mode": "a"})),
        )
        .await;
    assert!(status.is_success());
    let (_, _) = platform
        .admin(
            "PUT",
            "/devices/twin-01/desired-properties",
            Some(json!({"interval": 6})),
        )
        .await;
    let mut patches = Vec::new();
    while patches.len() < 2 {
        let patch = mqtt
            .next_matching(|p| match p {
                Packet::Publish(p)
                    if p.topic
                        .starts_with("$iothub/twin/PATCH/properties/desired/") =>
                {
                    Some((
                        p.topic.clone(),
                        serde_json::from_slice::<Value>(&p.payload).ok()?,
                    ))
                }
                _ => None,
            })
            .await
            .expect("desired patch");
        patches.push(patch);
    }
    assert_eq!(
        patches[0].0,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    assert_eq!(
        patches[0].1,
        json!({"interval": 5, "mode": "a", "$version": 2})
    );
    assert_eq!(
        patches[1].1,
        json!({"interval": 6, "mode": null, "$version": 3}),
        "a merge patch removes keys with null"
    );
    let (_, desired) = platform
        .admin("GET", "/devices/twin-01/desired-properties", None)
        .await;
    assert_eq!(desired, json!({"interval": 6}));
}

#[tokio::test]
async fn cloud_to_device_messages_are_delivered_after_subscribing() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("c2d-01").await;
    let (status, _) = platform
        .admin(
            "POST",
            "/devices/c2d-01/c2d-messages",
            Some(json!({"queued": "before connect"})),
        )
        .await;
    assert!(status.is_success());
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    mqtt.subscribe(&format!(
        "devices/{}/messages/devicebound/#",
        device.client_id()
    ))
    .await;
    let payload = mqtt
        .next_matching(|p| match p {
            Packet::Publish(p) if p.topic.contains("/messages/devicebound/") => {
                Some(p.payload.to_vec())
            }
            _ => None,
        })
        .await
        .expect("c2d");
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).ok(),
        Some(json!({"queued": "before connect"}))
    );
}

#[tokio::test]
async fn message_properties_with_topic_wildcards_are_escaped_and_do_not_block_the_queue() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("c2d-02").await;
    for (query, body) in [("?a=1+2&tag=%23x&plain=yes", "first"), ("", "second")] {
        let (status, _) = platform
            .admin(
                "POST",
                &format!("/devices/c2d-02/c2d-messages{query}"),
                Some(json!(body)),
            )
            .await;
        assert!(status.is_success());
    }
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    let prefix = format!("devices/{}/messages/devicebound/", device.client_id());
    mqtt.subscribe(&format!("{prefix}#")).await;
    let mut received = Vec::new();
    while received.len() < 2 {
        let message = mqtt
            .next_matching(|p| match p {
                Packet::Publish(p) if p.topic.contains("/messages/devicebound/") => Some((
                    p.topic.clone(),
                    serde_json::from_slice::<Value>(&p.payload).ok()?,
                )),
                _ => None,
            })
            .await
            .expect("both messages arrive");
        received.push(message);
    }
    assert_eq!(
        received,
        [
            (
                format!("{prefix}a=1%2B2&tag=%23x&plain=yes"),
                json!("first")
            ),
            (prefix.clone(), json!("second")),
        ]
    );
    let (status, problem) = platform
        .admin(
            "POST",
            "/devices/c2d-02/c2d-messages?bad=%FF",
            Some(json!(1)),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
}

#[tokio::test]
async fn sessions_are_confined_to_their_own_device() {
    let platform = TestPlatform::start().await;
    let mine = platform.provision("mine-01").await;
    let other = platform.provision("other-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(mine.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    let foreign = format!("devices/{}/messages/devicebound/#", other.client_id());
    assert_eq!(mqtt.subscribe(&foreign).await, SubscribeReasonCode::Failure);
    assert_eq!(mqtt.subscribe("#").await, SubscribeReasonCode::Failure);
    mqtt.publish_raw(other.events_topic(""), b"spoofed".to_vec())
        .await;
    let outcome = mqtt
        .next_matching(|p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await;
    assert!(
        outcome.is_err(),
        "publishing as another device closes the connection"
    );
    assert!(messages(&platform, "other-01").await.is_empty());

    // Another device's credentials do not work with my client id.
    let mut options = mine.options(&host, port);
    options.set_credentials(mine.username(), other.sas.clone());
    let mut forged = Mqtt::spawn(options);
    assert!(forged.connack().await.is_err(), "connection refused");
}

#[tokio::test]
async fn a_newer_connection_with_the_same_device_id_wins() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("dup-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut first = Mqtt::spawn(device.options(&host, port));
    assert_eq!(first.connack().await, Ok(ConnectReturnCode::Success));
    let mut second = Mqtt::spawn(device.options(&host, port));
    assert_eq!(second.connack().await, Ok(ConnectReturnCode::Success));
    let first_end = first.next_matching(|_| None::<()>).await;
    assert!(first_end.is_err(), "the older connection is closed");
    second
        .publish_message(device.events_topic(""), b"still here".to_vec())
        .await;
    let (_, dev) = platform.admin("GET", "/devices/dup-01", None).await;
    assert_eq!(dev["connected"], true);
}

async fn raw_connect(port: u16, client_id: &str, username: &str, password: &str) -> Vec<u8> {
    raw_connection(port, client_id, username, password).await.1
}

/// A hand-made MQTT connection (no client library reading behind the test's back) and the
/// CONNACK it got.
async fn raw_connection(
    port: u16,
    client_id: &str,
    username: &str,
    password: &str,
) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let packet = connect_packet(client_id, username, password);
    stream.write_all(&packet).await.expect("write");
    let mut answer = vec![0; 4];
    tokio::time::timeout(common::DEADLINE, stream.read_exact(&mut answer))
        .await
        .expect("connack in time")
        .expect("connack");
    (stream, answer)
}

#[tokio::test]
async fn connect_refusals_use_the_mqtt_return_codes() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("auth-01").await;
    let (_, port) = platform.mqtt_tcp();
    let ok = raw_connect(port, &device.client_id(), &device.username(), &device.sas).await;
    assert_eq!(ok, [0x20, 2, 0, 0]);
    let malformed = raw_connect(port, &device.client_id(), &device.username(), "password").await;
    assert_eq!(malformed[3], 4, "bad user name or password");
    let forged = device.sas.replacen("sig=", "sig=AAAA", 1);
    let forged = raw_connect(port, &device.client_id(), &device.username(), &forged).await;
    assert_eq!(forged[3], 5, "not authorized");
    let bad_id = raw_connect(port, "no-colon", &device.username(), &device.sas).await;
    assert_eq!(bad_id[3], 2, "identifier rejected");
}

#[tokio::test]
async fn malformed_mqtt_closes_only_that_connection() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("junk-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut healthy = Mqtt::spawn(device.options(&host, port));
    assert_eq!(healthy.connack().await, Ok(ConnectReturnCode::Success));

    let mut junk = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    junk.write_all(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2, 3])
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(common::DEADLINE, junk.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the platform closes a connection that sends garbage"
    );

    healthy
        .publish_message(device.events_topic(""), b"after junk".to_vec())
        .await;
    assert_eq!(messages(&platform, "junk-01").await.len(), 1);
    let (status, _) = platform.admin("GET", "/devices", None).await;
    assert!(status.is_success(), "the http side keeps serving");
}

/// A CONNECT packet (MQTT 3.1.1, clean session, keep-alive 60 s) with these credentials.
fn connect_packet(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0010, 0, 60];
    for field in [client_id, username, password] {
        variable.extend_from_slice(&(field.len() as u16).to_be_bytes());
        variable.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10];
    packet.extend(encode_length(variable.len()));
    packet.extend(variable);
    packet
}

/// The gateway's MQTT-over-WebSocket URL.
fn websocket_url(platform: &TestPlatform) -> String {
    platform
        .platform
        .info()
        .gateway_endpoints
        .web_socket
        .clone()
        .expect("ws url")
}

#[tokio::test]
async fn websocket_transport_carries_mqtt() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("ws-01").await;
    let url = websocket_url(&platform);
    let port: u16 = url
        .trim_start_matches("ws://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut mqtt = Mqtt::spawn_websocket(&device, &url, port);
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    mqtt.publish_message(
        device.events_topic("vdev-seq=w.1"),
        b"over websocket".to_vec(),
    )
    .await;
    let stored = eventually("the websocket message", || async {
        let stored = messages(&platform, "ws-01").await;
        (!stored.is_empty()).then_some(stored)
    })
    .await;
    assert_eq!(stored[0]["payloadText"], "over websocket");
}

/// The MQTT packets in `bytes`, as (first byte, body).
fn mqtt_packets(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut packets = Vec::new();
    while let Some(&first) = bytes.first() {
        let (mut length, mut shift, mut at) = (0usize, 0, 1);
        while let Some(&byte) = bytes.get(at) {
            length |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            at += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let body = bytes
            .get(at..at + length)
            .expect("a whole packet per message");
        packets.push((first, body.to_vec()));
        bytes = &bytes[at + length..];
    }
    packets
}

#[tokio::test]
async fn the_pubacks_of_one_commit_leave_in_one_websocket_message() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let platform = TestPlatform::start().await;
    let device = platform.provision("ws-batch").await;
    let mut request = websocket_url(&platform)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket opens");
    let packet = connect_packet(&device.client_id(), &device.username(), &device.sas);
    socket
        .send(Message::Binary(packet.into()))
        .await
        .expect("connect");

    // 200 QoS 1 publishes in one WebSocket message.
    const COUNT: u16 = 200;
    let mut publishes = Vec::new();
    for id in 1..=COUNT {
        let topic = device.events_topic(&format!("vdev-seq=b.{id}"));
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(format!("message {id}").as_bytes());
        publishes.push(0x32);
        publishes.extend(encode_length(body.len()));
        publishes.extend(body);
    }
    socket
        .send(Message::Binary(publishes.into()))
        .await
        .expect("publishes");

    let mut acknowledged = Vec::new();
    let mut carrying_pubacks = 0;
    while acknowledged.len() < usize::from(COUNT) {
        let next = tokio::time::timeout(common::DEADLINE, socket.next())
            .await
            .expect("an answer in time")
            .expect("socket open")
            .expect("readable");
        let Message::Binary(bytes) = next else {
            continue;
        };
        let before = acknowledged.len();
        for (first, body) in mqtt_packets(&bytes) {
            if first == 0x40 {
                acknowledged.push(u16::from_be_bytes([body[0], body[1]]));
            }
        }
        if acknowledged.len() > before {
            carrying_pubacks += 1;
        }
    }
    // In order, each once; and far fewer messages than PUBACKs: those of one commit travel
    // together (a message per PUBACK cost a browser client one event per message).
    assert_eq!(acknowledged, (1..=COUNT).collect::<Vec<_>>());
    assert!(
        carrying_pubacks < usize::from(COUNT) / 4,
        "{COUNT} PUBACKs came in {carrying_pubacks} WebSocket messages"
    );
    assert_eq!(
        messages(&platform, "ws-batch").await.len(),
        usize::from(COUNT)
    );
}

fn encode_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return out;
        }
    }
}

#[tokio::test]
async fn a_session_ends_when_its_credential_expires() {
    let platform = TestPlatform::start_with(|config| vdev_platform::Config {
        sas_lifetime: std::time::Duration::from_secs(2),
        ..config
    })
    .await;
    let device = platform.provision("expiry-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    let ended = mqtt.next_matching(|_| None::<()>).await;
    assert!(
        ended.is_err(),
        "the gateway closes the session at credential expiry"
    );
    let mut stale = Mqtt::spawn(device.options(&host, port));
    assert!(
        stale.connack().await.is_err(),
        "an expired credential is refused"
    );
    let (_, registration) = platform.register(&device.registration_token).await;
    let renewed =
        common::Device::from_registration(&registration, device.registration_token.clone());
    let mut fresh = Mqtt::spawn(renewed.options(&host, port));
    assert_eq!(fresh.connack().await, Ok(ConnectReturnCode::Success));
}

#[tokio::test]
async fn an_oversized_mqtt_packet_closes_only_that_connection() {
    let platform = TestPlatform::start_with(|config| vdev_platform::Config {
        max_message_bytes: 1024,
        ..config
    })
    .await;
    let device = platform.provision("big-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    mqtt.publish_raw(device.events_topic(""), vec![b'x'; 8 * 1024])
        .await;
    let outcome = mqtt
        .next_matching(|p| matches!(p, Packet::PubAck(_)).then_some(()))
        .await;
    assert!(
        outcome.is_err(),
        "the oversized packet closes the connection"
    );
    assert!(messages(&platform, "big-01").await.is_empty());

    let mut again = Mqtt::spawn(device.options(&host, port));
    assert_eq!(again.connack().await, Ok(ConnectReturnCode::Success));
    again
        .publish_message(device.events_topic(""), b"small".to_vec())
        .await;
    assert_eq!(messages(&platform, "big-01").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_desired_property_writes_never_share_a_version() {
    let platform = TestPlatform::start().await;
    platform.provision("twin-02").await;
    // Many at once on a multi-threaded runtime, as the binary runs: read-diff-write races.
    let writes = (0..200).map(|i| {
        let platform = &platform;
        async move {
            platform
                .admin(
                    "PUT",
                    "/devices/twin-02/desired-properties",
                    Some(json!({ "writer": i })),
                )
                .await
        }
    });
    let answers = futures_util::future::join_all(writes).await;
    let mut versions: Vec<i64> = answers
        .iter()
        .map(|(status, body)| {
            assert!(status.is_success(), "{body}");
            body["$version"].as_i64().expect("a version")
        })
        .collect();
    versions.sort_unstable();
    let first = versions[0];
    assert_eq!(
        versions,
        (first..first + 200).collect::<Vec<i64>>(),
        "each write its own version"
    );
}

#[tokio::test]
async fn twins_are_bounded_at_32_kb_per_section_with_a_clear_refusal() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("twin-03").await;
    let big = "x".repeat(40 * 1024);
    let (status, problem) = platform
        .admin(
            "PUT",
            "/devices/twin-03/desired-properties",
            Some(json!({ "blob": big })),
        )
        .await;
    assert_eq!(status, 413, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("the limit is 32768")),
        "{problem}"
    );

    let (host, port) = platform.mqtt_tcp();
    let mut options = device.options(&host, port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let mut mqtt = Mqtt::spawn(options);
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    mqtt.subscribe("$iothub/twin/res/#").await;
    let response = |rid: &'static str| {
        move |p: &Packet| match p {
            Packet::Publish(p) if p.topic.contains(&format!("$rid={rid}")) => Some(p.topic.clone()),
            _ => None,
        }
    };
    mqtt.publish_raw(
        "$iothub/twin/PATCH/properties/reported/?$rid=1".into(),
        json!({ "blob": big }).to_string().into_bytes(),
    )
    .await;
    let topic = mqtt.next_matching(response("1")).await.expect("a response");
    assert!(topic.starts_with("$iothub/twin/res/413/"), "{topic}");
    // The connection stays, and a patch within the bound is taken.
    mqtt.publish_raw(
        "$iothub/twin/PATCH/properties/reported/?$rid=2".into(),
        br#"{"fw":"1.0"}"#.to_vec(),
    )
    .await;
    let topic = mqtt.next_matching(response("2")).await.expect("a response");
    assert!(topic.starts_with("$iothub/twin/res/204/"), "{topic}");
}

#[tokio::test]
async fn an_unauthenticated_client_cannot_make_the_gateway_buffer_a_huge_connect() {
    let platform = TestPlatform::start().await;
    let (_, port) = platform.mqtt_tcp();
    let mut client = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // A CONNECT that declares 16 MiB, then junk to fill it: far more than a CONNECT needs.
    client
        .write_all(&[0x10, 0x80, 0x80, 0x80, 0x08])
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let junk = vec![0u8; 16 * 1024];
    let mut written = 0usize;
    let closed = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(1), client.write_all(&junk)).await
        {
            Ok(Ok(())) => written += junk.len(),
            Ok(Err(_)) => break true,
            // The socket buffers are full and nobody reads: the gateway stopped reading.
            Err(_) => break false,
        }
        if written > 4 * 1024 * 1024 {
            break false;
        }
    };
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), client.read(&mut buf)).await;
    let closed = closed || matches!(read, Ok(Ok(0) | Err(_)));
    assert!(
        closed && started.elapsed() < std::time::Duration::from_secs(5),
        "the gateway closes an unauthenticated connection after a bounded amount of data \
         (wrote {written} bytes in {:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_and_others_are_served_meanwhile() {
    let platform = TestPlatform::start().await;
    let base = platform.base();
    let address = base.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(address.as_str()).await.expect("connect");
    slow.write_all(b"GET /console HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let trickle = async {
        // One header byte a second, never the blank line that ends them.
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            let mut buf = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(std::time::Duration::from_millis(10), slow.read(&mut buf))
                    .await
            {
                return;
            }
        }
    };
    let (_, status) = tokio::join!(
        tokio::time::timeout(std::time::Duration::from_secs(20), trickle),
        async {
            let (status, _) = platform.admin("GET", "/devices", None).await;
            status
        }
    );
    assert!(status.is_success(), "other clients are served meanwhile");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the trickling client is cut off after the header timeout, not after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_session_holds_a_bounded_number_of_subscriptions() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("subs-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    let mut granted = 0;
    for i in 0..40 {
        if let SubscribeReasonCode::Success(_) =
            mqtt.subscribe(&format!("$iothub/twin/res/{i}/#")).await
        {
            granted += 1;
        }
    }
    assert_eq!(granted, 32, "distinct filters are bounded per session");
    // Subscribing again to one it holds still works, and the session goes on.
    assert!(matches!(
        mqtt.subscribe("$iothub/twin/res/0/#").await,
        SubscribeReasonCode::Success(_)
    ));
    mqtt.publish_message(device.events_topic(""), b"still here".to_vec())
        .await;
    assert_eq!(messages(&platform, "subs-01").await.len(), 1);
}

#[tokio::test]
async fn connections_past_the_bound_are_closed_as_they_arrive() {
    let platform = TestPlatform::start_with(|config| vdev_platform::Config {
        max_connections: 3,
        ..config
    })
    .await;
    let (_, port) = platform.mqtt_tcp();
    let open = || TcpStream::connect(("127.0.0.1", port));
    // Closed at once: the read ends; admitted: nothing comes for a while (no CONNECT sent).
    async fn closed_at_once(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 8];
        matches!(
            tokio::time::timeout(std::time::Duration::from_millis(500), stream.read(&mut buf))
                .await,
            Ok(Ok(0) | Err(_))
        )
    }
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut stream = open().await.expect("connect");
        assert!(!closed_at_once(&mut stream).await, "within the bound");
        idle.push(stream);
    }
    let mut fourth = open().await.expect("connect");
    assert!(closed_at_once(&mut fourth).await, "past the bound");
    // One goes away: there is room again.
    drop(idle.pop());
    let admitted = common::eventually("room for a new connection", || async {
        let mut stream = open().await.expect("connect");
        (!closed_at_once(&mut stream).await).then_some(stream)
    })
    .await;
    drop(admitted);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_let_go_after_the_write_timeout_and_others_are_served() {
    let platform = TestPlatform::start_with(|config| vdev_platform::Config {
        write_timeout: std::time::Duration::from_secs(1),
        ..config
    })
    .await;
    let stuck = platform.provision("stuck-01").await;
    let (host, port) = platform.mqtt_tcp();
    let (mut stream, connack) =
        raw_connection(port, &stuck.client_id(), &stuck.username(), &stuck.sas).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "connected");
    // SUBSCRIBE (packet id 1) to its cloud-to-device topic at QoS 1; then it reads nothing more.
    let filter = format!("devices/{}/messages/devicebound/#", stuck.client_id());
    let mut subscribe = vec![0x82, (2 + 2 + filter.len() + 1) as u8, 0, 1];
    subscribe.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    subscribe.extend_from_slice(filter.as_bytes());
    subscribe.push(1);
    stream.write_all(&subscribe).await.expect("subscribe");
    let mut suback = [0u8; 5];
    tokio::time::timeout(common::DEADLINE, stream.read_exact(&mut suback))
        .await
        .expect("suback in time")
        .expect("suback");
    assert_eq!(suback, [0x90, 0x03, 0, 1, 1], "granted at QoS 1");
    // About 12 MB for it: more than the socket buffers hold, so the gateway's writes stall.
    let chunk = "x".repeat(60_000);
    for i in 0..200 {
        let (status, _) = platform
            .admin(
                "POST",
                "/devices/stuck-01/c2d-messages",
                Some(json!({"n": i, "filler": chunk})),
            )
            .await;
        assert!(status.is_success(), "queued while the session is stuck");
    }
    // Another device is served meanwhile.
    let other = platform.provision("other-01").await;
    let mut mqtt = Mqtt::spawn(other.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    mqtt.publish_message(other.events_topic(""), b"served".to_vec())
        .await;
    assert_eq!(messages(&platform, "other-01").await.len(), 1);
    // The stuck one is let go: its session ends although it never closes its socket.
    common::eventually("the stuck connection closed by the gateway", || async {
        let (_, device) = platform.admin("GET", "/devices/stuck-01", None).await;
        (device["connected"] == json!(false)).then_some(())
    })
    .await;
    drop(stream);
}

#[tokio::test]
async fn the_consoles_message_view_of_a_backlog_of_large_messages_stays_small() {
    let platform = TestPlatform::start().await;
    let device = platform.provision("backlog-01").await;
    let (host, port) = platform.mqtt_tcp();
    let mut mqtt = Mqtt::spawn(device.options(&host, port));
    assert_eq!(mqtt.connack().await, Ok(ConnectReturnCode::Success));
    // 100 messages of 9,000 bytes of two-byte characters (the test client's packets stay
    // under 10 KiB): 0.9 MB of payloads, 2 MB as whole payloads in JSON.
    let large = "é".repeat(4_500);
    for _ in 0..100 {
        mqtt.publish_message(device.events_topic(""), large.clone().into_bytes())
            .await;
    }
    // And an empty one, which is cut to nothing.
    mqtt.publish_message(device.events_topic(""), Vec::new())
        .await;
    assert_eq!(messages(&platform, "backlog-01").await.len(), 101);
    // The console's own query (console.html, loadMessages).
    let (status, view) = platform
        .admin(
            "GET",
            "/messages?limit=1000&order=desc&payloadBytes=200",
            None,
        )
        .await;
    assert!(status.is_success());
    let size = serde_json::to_vec(&view).expect("json").len();
    assert!(
        size < 150_000,
        "the view of 100 messages of 9,000 bytes is {size} bytes, not the payloads whole"
    );
    assert_eq!(view.as_array().map(Vec::len), Some(101));
    assert_eq!(view[0]["payloadSize"], json!(0), "the newest, empty one");
    assert_eq!(view[0]["payloadText"], json!(""));
    for message in &view.as_array().expect("an array")[1..] {
        assert_eq!(message["payloadSize"], json!(9_000));
        assert_eq!(message["payloadTruncated"], json!(true));
        assert_eq!(
            message["payloadText"],
            json!("é".repeat(100)),
            "the text up to the cut, whole characters only"
        );
    }
    // Without `payloadBytes`, payloads come whole.
    let (_, whole) = platform.admin("GET", "/messages?limit=1", None).await;
    assert_eq!(whole[0]["payloadSize"], json!(9_000), "the oldest");
    assert_eq!(whole[0]["payloadTruncated"], json!(false));
    assert_eq!(whole[0]["payloadText"], json!(large));
}
