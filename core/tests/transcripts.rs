//! Transcript tests: one `Device` driven by hand against a scripted Platform and gateway, with
//! the exact sequence of its outputs asserted (in the manner of rustls's `tests/unbuffered.rs`).
//! A change of behaviour shows up here as a readable diff of transcript lines.

mod common;

use common::{
    BASE_URL, HOST, Host, MINUTE, OPERATION_ID, SAS, T0, complete_body, config, init_body,
    register_body,
};
use serde_json::{Value, json};
use vdev_core::testing::mqtt::{ConnectReturnCode, Packet, Publish, QoS};
use vdev_core::{
    DeviceConfig, HttpResponse, Input, MemoryStore, OutboxError, ProvisioningError, SendError,
};

const CANCELLED: &str = "/problems/deviceProvisioning/provisioningOperationCancelled";
const EXPIRED: &str = "/problems/deviceProvisioning/provisioningOperationExpired";

fn problem(kind: &str) -> Value {
    json!({ "type": kind, "title": "gone", "status": 410 })
}

/// The Platform's 401: a problem with its type.
fn unauthorized() -> Value {
    json!({ "type": "/problems/unauthorized", "title": "Unauthorized", "status": 401 })
}

#[test]
fn fresh_provisioning_to_connected_transcript() {
    let (mut host, start) = Host::fresh();
    assert_eq!(
        start,
        [
            "event state Provisioning",
            "http POST /provisioning-operations/init",
        ]
    );
    let init = host.pending[0].clone();
    assert_eq!(
        serde_json::from_slice::<Value>(&init.body).unwrap(),
        json!({ "deviceId": "dev-1" })
    );
    assert!(
        init.headers
            .contains(&("Authorization".into(), "DeviceToken pt-1".into()))
    );

    assert_eq!(
        host.answer(
            "/provisioning-operations/init",
            200,
            init_body(OPERATION_ID)
        ),
        ["store save-state", "event operation op-1 code 123456"]
    );
    assert_eq!(host.deadline, Some(T0 + 1_000), "polls after the interval");
    assert_eq!(
        host.advance(),
        ["http PUT /provisioning-operations/complete"]
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&host.pending[0].body).unwrap(),
        json!({ "provisioningOperationId": "op-1" })
    );
    assert_eq!(
        host.answer("/provisioning-operations/complete", 202, Value::Null),
        [] as [&str; 0]
    );
    assert_eq!(
        host.advance(),
        ["http PUT /provisioning-operations/complete"]
    );
    assert_eq!(
        host.answer("/provisioning-operations/complete", 202, Value::Null),
        [] as [&str; 0]
    );
    assert_eq!(
        host.advance(),
        ["http PUT /provisioning-operations/complete"]
    );
    assert_eq!(
        host.answer("/provisioning-operations/complete", 200, complete_body()),
        [
            "store save-state",
            "event state Disconnected",
            "http PUT /devices/register",
        ]
    );
    assert!(
        host.pending[0]
            .headers
            .contains(&("Authorization".into(), "DeviceToken rt-1".into())),
        "register uses the Registration Token"
    );
    assert_eq!(
        host.answer("/devices/register", 200, register_body()),
        [
            "store save-state",
            "event registered ws1:dev-1",
            "connect tcp 127.0.0.1:1883",
            "event state Connecting",
        ]
    );
    let conn = host.conn.unwrap();
    assert_eq!(
        host.input(Input::Connected { conn }),
        ["send CONNECT ws1:dev-1"]
    );
    let Packet::Connect(connect) = &host.sent[0] else {
        panic!("the first packet is CONNECT");
    };
    assert_eq!(connect.client_id, "ws1:dev-1");
    assert_eq!(
        connect.username.as_deref(),
        Some("hub.example/ws1:dev-1/?api-version=2018-06-30")
    );
    assert_eq!(connect.password.as_deref(), Some(SAS.as_bytes()));
    assert!(connect.clean_session);

    assert_eq!(
        host.connack(ConnectReturnCode::Accepted),
        [
            "send SUBSCRIBE $iothub/twin/res/# q0, $iothub/twin/PATCH/properties/desired/# q0, devices/ws1:dev-1/messages/devicebound/# q1"
        ]
    );
    assert_eq!(
        host.suback(),
        ["store save-state", "send twin GET", "event state Connected"]
    );
    assert!(!host.device.is_twin_synced());
    assert_eq!(
        host.twin_response(),
        ["store save-state", "event desired v1"]
    );
    assert!(host.device.is_twin_synced());
}

#[test]
fn restart_with_a_saved_operation_resumes_polling_it() {
    let mut first = Host::provisioning();
    first.answer(
        "/provisioning-operations/init",
        200,
        init_body(OPERATION_ID),
    );
    first.wait(30_000);
    let store = first.store.clone();

    let device_config: DeviceConfig = common::config();
    let (mut second, start) = Host::new(device_config, store);
    // No new `init`: the same operation is shown again and its approval polled.
    assert_eq!(
        start,
        [
            "store save-state",
            "event state Provisioning",
            "event operation op-1 code 123456",
            "http PUT /provisioning-operations/complete",
        ]
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&second.pending[0].body).unwrap(),
        json!({ "provisioningOperationId": "op-1" })
    );
    assert_eq!(
        second.answer("/provisioning-operations/complete", 200, complete_body()),
        [
            "store save-state",
            "event state Disconnected",
            "http PUT /devices/register",
        ]
    );
}

#[test]
fn cancelled_operation_ends_provisioning() {
    let mut host = Host::provisioning();
    host.answer(
        "/provisioning-operations/init",
        200,
        init_body(OPERATION_ID),
    );
    host.advance();
    assert_eq!(
        host.answer("/provisioning-operations/complete", 410, problem(CANCELLED)),
        [
            "store save-state",
            "event request provisioningComplete failed: status 410: gone",
            "event state Failed",
            "event provisioning failed: provisioning operation op-1 was cancelled",
        ]
    );
    assert!(host.events.contains(&vdev_core::Event::ProvisioningFailed(
        ProvisioningError::Cancelled {
            operation_id: OPERATION_ID.into()
        }
    )));
    assert_eq!(host.deadline, None, "nothing more happens");
}

#[test]
fn expired_operation_starts_a_new_one() {
    let mut host = Host::provisioning();
    host.answer(
        "/provisioning-operations/init",
        200,
        init_body(OPERATION_ID),
    );
    host.advance();
    assert_eq!(
        host.answer("/provisioning-operations/complete", 410, problem(EXPIRED)),
        [
            "event request provisioningComplete failed: status 410: gone",
            "http POST /provisioning-operations/init"
        ]
    );
    assert_eq!(
        host.answer("/provisioning-operations/init", 200, init_body("op-2")),
        ["store save-state", "event operation op-2 code 123456"]
    );
    assert_eq!(
        host.advance(),
        ["http PUT /provisioning-operations/complete"]
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&host.pending[0].body).unwrap(),
        json!({ "provisioningOperationId": "op-2" })
    );
}

#[test]
fn invalid_provisioning_token_ends_provisioning() {
    let mut host = Host::provisioning();
    assert_eq!(
        host.answer("/provisioning-operations/init", 401, unauthorized()),
        [
            "store save-state",
            "event request provisioningInit failed: status 401: Unauthorized",
            "event state Failed",
            "event provisioning failed: provisioning token is invalid, expired or revoked",
        ]
    );
    assert_eq!(
        host.events.last(),
        Some(&vdev_core::Event::ProvisioningFailed(
            ProvisioningError::InvalidProvisioningToken
        ))
    );
}

#[test]
fn bad_request_is_refused_without_retry() {
    let mut host = Host::provisioning();
    let body = json!({
        "type": "/problems/badRequest",
        "title": "Bad Request",
        "detail": "deviceId is invalid",
        "status": 400
    });
    assert_eq!(
        host.answer("/provisioning-operations/init", 400, body),
        [
            "store save-state",
            "event request provisioningInit failed: status 400: deviceId is invalid",
            "event state Failed",
            "event provisioning failed: provisioning request refused: status 400: deviceId is invalid",
        ]
    );
    assert_eq!(host.deadline, None, "no retry");
    assert!(host.pending.is_empty());
}

#[test]
fn retry_after_on_init_delays_the_next_call() {
    let mut host = Host::provisioning();
    let throttled = HttpResponse {
        status: 429,
        retry_after: Some("7".into()),
        body: Vec::new(),
    };
    assert_eq!(
        host.answer_raw("/provisioning-operations/init", throttled),
        ["event request provisioningInit failed: status 429"]
    );
    assert_eq!(host.deadline, Some(T0 + 7_000));
}

#[test]
fn unauthorized_register_at_run_time_provisions_again_and_keeps_the_queue() {
    let mut host = Host::connected();
    let conn = host.conn.unwrap();
    assert_eq!(
        host.input(Input::Closed {
            conn,
            reason: "reset".into()
        }),
        [
            "event connection lost: the connection closed: reset",
            "event state Disconnected"
        ]
    );
    let (first, _) = host.send("one");
    let (second, _) = host.send("two");
    assert_eq!(host.store.meta().count, 2);

    assert_eq!(
        host.advance(),
        ["connect tcp 127.0.0.1:1883", "event state Connecting"]
    );
    let conn = host.conn.unwrap();
    assert_eq!(
        host.input(Input::Connected { conn }),
        ["send CONNECT ws1:dev-1"]
    );
    // The gateway no longer accepts the signature: the device registers again.
    assert_eq!(
        host.connack(ConnectReturnCode::NotAuthorized),
        [
            "close",
            "event connection lost: the gateway refused the connection: not authorized (CONNACK code 5)",
            "event state Disconnected",
            "http PUT /devices/register"
        ]
    );
    // The Registration Token was revoked: provisioning starts over, with a new operation.
    assert_eq!(
        host.answer("/devices/register", 401, unauthorized()),
        [
            "store save-state",
            "event request register failed: status 401: Unauthorized",
            "event token discarded: the platform refused the registration token on register: status 401: Unauthorized",
            "event state Provisioning",
            "http POST /provisioning-operations/init",
        ]
    );
    assert_eq!(host.device.stats().pending_count, 2);
    let stored: Vec<u64> = host.store.records().map(|(seq, _)| seq).collect();
    assert_eq!(stored, [first, second]);
    assert!(
        !host
            .events
            .iter()
            .any(|e| matches!(e, vdev_core::Event::MessageRejected { .. }))
    );
}

#[test]
fn message_is_published_only_after_it_is_durable() {
    let mut host = Host::connected();
    host.hold_appends = true;
    let (seq, lines) = host.send("21.5");
    // The first append of a run waits for a durable reservation of its numbers.
    assert_eq!(lines, ["store reserve below 4096", "store append 0..=0"]);
    // Any input drives the device; the message must still wait for its append.
    assert_eq!(host.receive(Packet::PingResp), [] as [&str; 0]);
    host.wait(1);
    assert_eq!(host.input(Input::Timeout), [] as [&str; 0]);
    assert!(host.telemetry().is_empty(), "not durable yet");
    assert_eq!(
        host.release_appends(),
        [
            format!("send PUBLISH seq {seq}"),
            format!("event stored {seq}..={seq}")
        ]
    );
}

#[test]
fn pubacks_out_of_order_finish_the_message_they_acknowledge() {
    let mut host = Host::connected();
    let seqs: Vec<u64> = (0..3).map(|i| host.send(&format!("m{i}")).0).collect();
    let published = host.telemetry();
    assert_eq!(
        published.iter().map(|(_, seq)| *seq).collect::<Vec<_>>(),
        seqs
    );
    let ids: Vec<u16> = published.iter().map(|(id, _)| *id).collect();
    // Removals wait while messages are in flight, then go together.
    assert_eq!(
        host.receive(Packet::PubAck { packet_id: ids[2] }),
        ["event delivered 2"]
    );
    assert_eq!(
        host.receive(Packet::PubAck { packet_id: ids[0] }),
        ["event delivered 0"]
    );
    // A duplicate acknowledgement changes nothing.
    assert_eq!(
        host.receive(Packet::PubAck { packet_id: ids[2] }),
        [] as [&str; 0]
    );
    assert_eq!(
        host.receive(Packet::PubAck { packet_id: ids[1] }),
        ["store remove [0, 1, 2]", "event delivered 1"]
    );
    assert_eq!(host.store.meta().count, 0);
}

#[test]
fn full_outbox_refuses_the_message() {
    let mut config = common::config();
    config.outbox.max_messages = 2;
    let (mut host, _) = Host::new(config, MemoryStore::new("o1"));
    host.send("one");
    host.send("two");
    let refused = host.device.send(
        host.now,
        &Default::default(),
        &Default::default(),
        b"three".to_vec(),
    );
    assert!(
        matches!(
            refused,
            Err(SendError::Outbox(OutboxError::Full {
                count: 2,
                max_messages: 2,
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(host.drain(), [] as [&str; 0], "nothing was stored");
    assert_eq!(host.store.meta().count, 2);
}

#[test]
fn operation_expiring_unapproved_is_replaced_after_its_expiry() {
    let mut host = Host::provisioning();
    host.answer(
        "/provisioning-operations/init",
        200,
        init_body(OPERATION_ID),
    );
    // The technician never approves: the device polls every second until the expiry.
    let mut polls = 0;
    loop {
        let lines = host.advance();
        if lines != ["http PUT /provisioning-operations/complete"] {
            assert_eq!(lines, ["http POST /provisioning-operations/init"]);
            break;
        }
        polls += 1;
        assert!(polls <= 600, "still polling an expired operation");
        host.answer("/provisioning-operations/complete", 202, Value::Null);
    }
    assert!(polls > 500, "polled every second: {polls}");
    assert_eq!(
        host.now,
        T0 + 10 * MINUTE,
        "a new operation right at expiry"
    );
}

#[test]
fn silent_gateway_is_probed_even_while_the_device_keeps_sending() {
    let mut host = Host::connected();
    let last_heard = host.now;
    // An unanswered reported-properties patch is sent again and again, so the device never
    // falls silent itself; only the gateway's silence can reveal the dead connection.
    host.device
        .update_reported_properties(
            host.now,
            vdev_core::json::Value::parse(br#"{"fw":"1.0"}"#).unwrap(),
        )
        .unwrap();
    let mut lines = host.drain();
    let keep_alive = 60_000;
    let ping_timeout = 20_000;
    while host.conn.is_some() && host.now <= last_heard + keep_alive + ping_timeout {
        lines.extend(host.advance());
    }
    assert!(lines.contains(&"send twin PATCH reported".to_owned()));
    let ping = lines.iter().position(|l| l == "send PINGREQ");
    let close = lines.iter().position(|l| l == "close");
    assert!(
        ping.is_some() && close > ping,
        "no keep-alive probe and close: {lines:?}"
    );
    assert!(
        lines[close.unwrap()..]
            .contains(&"event connection lost: no answer to the keep-alive ping".to_owned()),
        "the app is told why: {lines:?}"
    );
    assert!(host.now <= last_heard + keep_alive + ping_timeout);
}

#[test]
fn retry_after_on_register_holds_even_when_connections_keep_failing() {
    let mut host = Host::connected();
    let conn = host.conn.unwrap();
    host.input(Input::Closed {
        conn,
        reason: "reset".into(),
    });
    let throttled = HttpResponse {
        status: 503,
        retry_after: Some("300".into()),
        body: Vec::new(),
    };
    let mut answered_at = None;
    // Connection attempts time out one after another (every third one asks for a fresh
    // credential), but the Platform asked for five minutes of quiet on `register`.
    while host.now < T0 + 30 * MINUTE {
        let lines = host.advance();
        if lines.contains(&"http PUT /devices/register".to_owned()) {
            if let Some(at) = answered_at {
                assert!(
                    host.now >= at + 300_000,
                    "register called {} ms after a Retry-After of 300 s",
                    host.now - at
                );
                return;
            }
            answered_at = Some(host.now);
            host.answer_raw("/devices/register", throttled.clone());
        }
    }
    panic!("register was never called again");
}

#[test]
fn retry_after_on_complete_outlives_an_operation_that_expired_meanwhile() {
    let mut host = Host::provisioning();
    let mut short_lived = init_body(OPERATION_ID);
    short_lived["expirationTime"] = json!(vdev_core::testing::format_rfc3339(T0 + 5_000));
    host.answer("/provisioning-operations/init", 200, short_lived);
    assert_eq!(
        host.advance(),
        ["http PUT /provisioning-operations/complete"]
    );
    let throttled_at = host.now;
    let throttled = HttpResponse {
        status: 429,
        retry_after: Some("30".into()),
        body: Vec::new(),
    };
    host.answer_raw("/provisioning-operations/complete", throttled);
    assert_eq!(host.advance(), ["http POST /provisioning-operations/init"]);
    assert_eq!(
        host.now,
        T0 + 5_000,
        "a new operation when the first expires"
    );
    host.answer("/provisioning-operations/init", 200, init_body("op-2"));
    assert_eq!(
        host.advance(),
        ["http PUT /provisioning-operations/complete"]
    );
    assert_eq!(
        host.now,
        throttled_at + 30_000,
        "complete waits out its Retry-After"
    );
}

#[test]
fn failed_credential_renewal_waits_before_the_next_register() {
    let mut host = Host::connected();
    let throttled = HttpResponse {
        status: 503,
        retry_after: Some("60".into()),
        body: Vec::new(),
    };
    let mut throttled_at = None;
    // The signature lasts an hour and is renewed after 80% of it; the gateway answers pings.
    while host.now < T0 + 60 * MINUTE {
        let lines = host.advance();
        if lines.contains(&"send PINGREQ".to_owned()) {
            host.receive(Packet::PingResp);
        }
        if lines.contains(&"http PUT /devices/register".to_owned()) {
            if let Some(at) = throttled_at {
                assert_eq!(
                    host.now,
                    at + 60_000,
                    "the renewal waits out its Retry-After"
                );
                return;
            }
            assert!(
                host.now >= T0 + 48 * MINUTE,
                "renewed after 80% of the lifetime"
            );
            throttled_at = Some(host.now);
            let lines = host.answer_raw("/devices/register", throttled.clone());
            assert!(!lines.contains(&"http PUT /devices/register".to_owned()));
        }
    }
    panic!("the credential was not renewed");
}

#[test]
fn offline_closes_the_connection_and_holds_everything_until_the_network_is_back() {
    let mut host = Host::connected();
    assert_eq!(
        host.input(Input::NetworkLost),
        ["close", "event offline true", "event state Disconnected"]
    );
    // Sends are still stored while offline; nothing touches the network.
    let (first, lines) = host.send("one");
    assert_eq!(
        lines,
        [
            "store reserve below 4096",
            "store append 0..=0",
            "event stored 0..=0"
        ]
    );
    let (second, _) = host.send("two");
    // The only timer left is the credential's renewal, far ahead: no reconnect attempts.
    assert!(host.deadline.is_some_and(|at| at > host.now + 10 * MINUTE));
    host.wait(10 * MINUTE);
    assert_eq!(host.input(Input::Timeout), [] as [&str; 0]);

    assert_eq!(
        host.input(Input::NetworkAvailable),
        [
            "event offline false",
            "connect tcp 127.0.0.1:1883",
            "event state Connecting"
        ],
        "reconnects at once, without a backoff delay"
    );
    let conn = host.conn.unwrap();
    host.input(Input::Connected { conn });
    host.connack(ConnectReturnCode::Accepted);
    host.suback();
    let seqs: Vec<u64> = host.telemetry().iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, [first, second], "the queue drains in order");
}

#[test]
fn the_device_is_offline_while_the_network_or_the_app_says_so() {
    let mut host = Host::connected();
    assert_eq!(
        host.input(Input::AppOffline(true)),
        ["close", "event offline true", "event state Disconnected"]
    );
    // The browser's network comes and goes meanwhile: the app still holds the device offline.
    assert_eq!(host.input(Input::NetworkLost), [] as [&str; 0]);
    assert_eq!(host.input(Input::NetworkAvailable), [] as [&str; 0]);
    assert_eq!(host.input(Input::NetworkLost), [] as [&str; 0]);
    // The app lets go, but the network is still lost.
    assert_eq!(host.input(Input::AppOffline(false)), [] as [&str; 0]);
    assert_eq!(
        host.input(Input::NetworkAvailable),
        [
            "event offline false",
            "connect tcp 127.0.0.1:1883",
            "event state Connecting"
        ]
    );
    // Said twice, nothing changes.
    assert_eq!(host.input(Input::AppOffline(false)), [] as [&str; 0]);
}

#[test]
fn offline_holds_provisioning_calls_and_sends_them_when_the_network_is_back() {
    let mut host = Host::provisioning();
    host.answer(
        "/provisioning-operations/init",
        200,
        init_body(OPERATION_ID),
    );
    assert_eq!(host.input(Input::NetworkLost), ["event offline true"]);
    assert_eq!(
        host.advance(),
        [] as [&str; 0],
        "the poll waits for the network"
    );
    host.wait(MINUTE);
    assert_eq!(host.input(Input::Timeout), [] as [&str; 0]);
    assert_eq!(
        host.input(Input::NetworkAvailable),
        [
            "http PUT /provisioning-operations/complete",
            "event offline false"
        ]
    );
    assert!(
        host.pending[0].deadline > host.now,
        "its timeout starts when it is sent"
    );
}

/// The answer to `register` once the technician approved the device under another Device ID.
fn register_body_as(device_id: &str) -> Value {
    let mut body = register_body();
    body["connectionString"] = json!(format!(
        "HostName={HOST};DeviceId=ws1:{device_id};SharedAccessSignature={SAS}"
    ));
    body
}

/// The payloads of the reported-properties PATCHes in `packets`.
fn reported_patches(packets: &[Packet]) -> Vec<Value> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p)
                if p.topic
                    .starts_with("$iothub/twin/PATCH/properties/reported/") =>
            {
                Some(serde_json::from_slice(&p.payload).expect("a JSON merge patch"))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_identity_change_never_carries_the_old_devices_reported_properties_across_a_restart() {
    // Device A (ws1:dev-1) reports properties; the Platform never acknowledges them.
    let mut host = Host::connected();
    let a_reported = json!({ "owner": "device-a", "firmware": "a-1.0" });
    host.device
        .update_reported_properties(
            host.now,
            vdev_core::json::Value::parse(a_reported.to_string().as_bytes()).unwrap(),
        )
        .unwrap();
    assert_eq!(
        host.drain(),
        [
            "store save-state",
            "send twin PATCH reported",
            "event reported 1 stored"
        ]
    );
    assert_eq!(reported_patches(&host.sent), [a_reported]);

    // Its Registration Token is revoked: it provisions again, and the technician approves it
    // under another Device ID.
    let conn = host.conn.unwrap();
    host.input(Input::Closed {
        conn,
        reason: "reset".into(),
    });
    host.advance();
    let conn = host.conn.unwrap();
    host.input(Input::Connected { conn });
    host.connack(ConnectReturnCode::NotAuthorized);
    assert_eq!(
        host.answer("/devices/register", 401, unauthorized()),
        [
            "store save-state",
            "event request register failed: status 401: Unauthorized",
            "event token discarded: the platform refused the registration token on register: status 401: Unauthorized",
            "event state Provisioning",
            "http POST /provisioning-operations/init",
        ]
    );
    host.answer("/provisioning-operations/init", 200, init_body("op-2"));
    host.advance();
    host.answer("/provisioning-operations/complete", 200, complete_body());
    let before_b = host.sent.len();
    assert_eq!(
        host.answer("/devices/register", 200, register_body_as("dev-2")),
        [
            "store save-state",
            "event registered ws1:dev-2",
            "connect tcp 127.0.0.1:1883",
            "event state Connecting",
        ],
        "the identity change is saved at once"
    );
    // The device is restarted from what it saved as device B, before B ever connected.
    let saved_as_b = host.store.clone();

    // B's own connection carries nothing of A's.
    let conn = host.conn.unwrap();
    host.input(Input::Connected { conn });
    host.connack(ConnectReturnCode::Accepted);
    host.suback();
    host.twin_response();
    assert!(host.device.is_twin_synced());
    assert_eq!(
        reported_patches(&host.sent[before_b..]),
        [] as [Value; 0],
        "device B's live connection carried reported properties"
    );

    // Restarted from that saved state, device B still never reports A's properties.
    let (mut restarted, _) = Host::new(common::config(), saved_as_b);
    assert_eq!(restarted.device.device_id(), Some("dev-2"));
    restarted.answer("/devices/register", 200, register_body_as("dev-2"));
    let conn = restarted.conn.expect("the restarted device connects");
    assert_eq!(
        restarted.input(Input::Connected { conn }),
        ["send CONNECT ws1:dev-2"]
    );
    restarted.connack(ConnectReturnCode::Accepted);
    restarted.suback();
    restarted.twin_response();
    assert!(restarted.device.is_twin_synced());
    assert_eq!(
        reported_patches(&restarted.sent),
        [] as [Value; 0],
        "device A's reported properties were sent to device B after the restart"
    );
    assert_eq!(
        restarted.device.reported_properties(),
        &vdev_core::json::Value::parse(b"{}").unwrap()
    );
    assert!(!restarted.device.reported_properties_pending());
}

#[test]
fn a_failed_removal_is_asked_again_later_until_the_store_takes_it() {
    let mut host = Host::connected();
    let (seq, _) = host.send("one");
    let (packet_id, _) = host.telemetry()[0];
    host.failing_writes = Some("disk unplugged".into());
    assert_eq!(
        host.receive(Packet::PubAck { packet_id }),
        [
            format!("store remove [{seq}]"),
            format!("event delivered {seq}"),
            "event store failed: remove storage failed: disk unplugged".into(),
        ]
    );
    assert_eq!(host.store.meta().count, 1, "the record is still there");
    // The core asks again after a second, then after two, while it keeps failing.
    let first_retry = host.deadline.expect("a retry is due");
    assert!(first_retry <= host.now + 1_000);
    assert_eq!(
        host.advance(),
        [
            format!("store remove [{seq}]"),
            "event store failed: remove storage failed: disk unplugged".into(),
        ]
    );
    let second_retry = host.deadline.expect("another retry is due");
    assert!(second_retry >= host.now + 2_000 || second_retry > first_retry + 1_000);
    host.failing_writes = None;
    host.now = second_retry;
    host.device.handle_timeout(host.now);
    assert_eq!(host.drain(), [format!("store remove [{seq}]")]);
    assert_eq!(host.store.meta().count, 0, "removed at last");
}

#[test]
fn a_failed_state_save_is_saved_again_later_with_the_newest_state() {
    let mut host = Host::connected();
    host.failing_writes = Some("read-only file system".into());
    let patch = vdev_core::json::Value::parse(br#"{"firmware":"2.0"}"#).unwrap();
    host.device
        .update_reported_properties(host.now, patch)
        .unwrap();
    assert_eq!(
        host.drain(),
        [
            "store save-state",
            "send twin PATCH reported",
            "event store failed: saveState storage failed: read-only file system"
        ]
    );
    let saved_before = host.store.state().map(<[u8]>::to_vec);
    host.failing_writes = None;
    host.wait(1_000);
    host.device.handle_timeout(host.now);
    assert!(host.drain().contains(&"store save-state".to_owned()));
    let saved: Value = serde_json::from_slice(host.store.state().unwrap()).unwrap();
    assert_ne!(host.store.state().map(<[u8]>::to_vec), saved_before);
    assert_eq!(saved["twin"]["reported_target"]["firmware"], "2.0");
}

#[test]
fn an_announced_cleartext_endpoint_off_loopback_is_never_opened() {
    let mut host = Host::provisioning();
    host.answer(
        "/provisioning-operations/init",
        200,
        init_body(OPERATION_ID),
    );
    host.advance();
    host.answer("/provisioning-operations/complete", 200, complete_body());
    let mut body = register_body();
    body["gatewayEndpoints"] = json!({ "mqttTcp": "10.1.2.3:1883" });
    let lines = host.answer("/devices/register", 200, body);
    assert!(
        !lines.iter().any(|line| line.starts_with("connect")),
        "{lines:?}"
    );
    assert!(
        lines.contains(
            &"event connection lost: refusing unencrypted tcp://10.1.2.3:1883: ws://, http:// and plain tcp are allowed only for loopback hosts, use wss://, https:// or tls"
                .to_owned()
        ),
        "{lines:?}"
    );
    assert!(host.conn.is_none(), "nothing was opened");
}

#[test]
fn a_redirect_is_reported_and_retried_never_followed() {
    let mut host = Host::provisioning();
    let redirect = HttpResponse {
        status: 302,
        retry_after: None,
        body: Vec::new(),
    };
    assert_eq!(
        host.answer_raw("/provisioning-operations/init", redirect),
        [
            "event request provisioningInit failed: the answer was a redirect (status 302), which the device does not follow"
        ]
    );
    assert!(
        host.pending.is_empty(),
        "no request to the redirect's target"
    );
    assert_eq!(
        host.advance(),
        ["http POST /provisioning-operations/init"],
        "tried again later at the same URL"
    );
    assert_eq!(
        host.pending[0].url,
        format!("{BASE_URL}/provisioning-operations/init")
    );
}

#[test]
fn a_cleartext_instance_url_off_loopback_is_refused_and_never_requested() {
    let mut config = config();
    config.instance_url = "http://platform.example".into();
    assert!(config.validate().is_err());
    let (host, lines) = Host::new(config, MemoryStore::new("k3x9q2"));
    assert!(host.pending.is_empty(), "no request left: {lines:?}");
    assert!(
        lines.iter().any(|line| line
            == "event request provisioningInit failed: refusing unencrypted http://platform.example/provisioning-operations/init: ws://, http:// and plain tcp are allowed only for loopback hosts, use wss://, https:// or tls"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("event provisioning failed")),
        "{lines:?}"
    );
}

#[test]
fn fresh_credentials_landing_during_a_connect_attempt_are_used_not_renewed_again() {
    let mut host = Host::connected();
    // The gateway stops answering: every third failed attempt in a row renews the credential.
    let conn = host.conn.unwrap();
    host.input(Input::Closed {
        conn,
        reason: "reset".into(),
    });
    let mut failed = 0;
    loop {
        let lines = host.advance();
        if lines.contains(&"http PUT /devices/register".to_owned()) {
            break;
        }
        if lines.iter().any(|l| l.starts_with("connect ")) {
            failed += 1;
            assert!(failed <= 3, "no renewal after {failed} failed attempts");
            let conn = host.conn.unwrap();
            let lines = host.input(Input::Closed {
                conn,
                reason: "connection refused".into(),
            });
            if lines.contains(&"http PUT /devices/register".to_owned()) {
                break;
            }
        }
    }
    assert_eq!(failed, 3);
    // The next attempt starts with the old credential while the renewal is on its way.
    let lines = host.advance();
    assert!(lines.iter().any(|l| l.starts_with("connect ")), "{lines:?}");
    let lines = host.answer("/devices/register", 200, register_body());
    assert!(
        !lines.contains(&"http PUT /devices/register".to_owned()),
        "the fresh credential was renewed at once: {lines:?}"
    );
    let conn = host.conn.unwrap();
    host.input(Input::Connected { conn });
    host.connack(ConnectReturnCode::Accepted);
    host.suback();
    assert!(
        !host
            .advance()
            .contains(&"http PUT /devices/register".to_owned()),
        "renewed again before the fresh credential's renewal time"
    );
}

/// A page that is not the Platform's answer: a proxy's or captive portal's HTML.
fn proxy_page(status: u16) -> HttpResponse {
    HttpResponse {
        status,
        retry_after: None,
        body: b"<html><body>Access denied by proxy</body></html>".to_vec(),
    }
}

#[test]
fn a_proxys_refusal_of_register_backs_off_and_keeps_the_registration_token() {
    let mut host = Host::connected();
    let conn = host.conn.unwrap();
    host.input(Input::Closed {
        conn,
        reason: "reset".into(),
    });
    host.advance();
    let conn = host.conn.unwrap();
    host.input(Input::Connected { conn });
    host.connack(ConnectReturnCode::NotAuthorized);
    for status in [403, 404, 409, 401, 400] {
        let lines = host.answer_raw("/devices/register", proxy_page(status));
        assert!(
            !lines.iter().any(|l| l.contains("token discarded")),
            "a {status} without the Platform's problem discarded the token: {lines:?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("/provisioning-operations/init")),
            "a {status} page sent the device to a technician: {lines:?}"
        );
        // Asked again after the backoff, with the same token (the session's own attempts
        // may come first).
        let again = (0..20).any(|_| {
            let lines = host.advance();
            if let Some(conn) = host.conn
                && lines.iter().any(|l| l.starts_with("connect "))
            {
                host.input(Input::Closed {
                    conn,
                    reason: "connection refused".into(),
                });
            }
            lines.contains(&"http PUT /devices/register".to_owned())
        });
        assert!(again, "{status}: register was not asked again");
    }
    // The Platform's own answer still counts.
    let lines = host.answer("/devices/register", 401, unauthorized());
    assert!(
        lines.iter().any(|l| l.contains("token discarded")),
        "{lines:?}"
    );
}

#[test]
fn a_proxys_refusal_of_provisioning_backs_off_instead_of_failing_for_good() {
    let mut host = Host::provisioning();
    for status in [403, 404, 409, 401, 400] {
        let lines = host.answer_raw("/provisioning-operations/init", proxy_page(status));
        assert!(
            !lines.iter().any(|l| l.contains("provisioning failed")),
            "a {status} page failed provisioning for good: {lines:?}"
        );
        let lines = host.advance();
        assert!(
            lines.contains(&"http POST /provisioning-operations/init".to_owned()),
            "{status}: {lines:?}"
        );
    }
    let lines = host.answer("/provisioning-operations/init", 401, unauthorized());
    assert!(
        lines.iter().any(|l| l.contains("provisioning failed")),
        "{lines:?}"
    );
}

#[test]
fn a_packet_larger_than_the_device_takes_is_skipped_and_the_connection_kept() {
    let mut host = Host::connected();
    let big = Packet::Publish(Publish {
        topic: "devices/ws1:dev-1/messages/devicebound/big=1".into(),
        qos: QoS::AtMostOnce,
        packet_id: None,
        dup: false,
        retain: false,
        payload: vec![b'x'; 3 << 20],
    });
    let small = Packet::Publish(Publish {
        topic: "devices/ws1:dev-1/messages/devicebound/small=1".into(),
        qos: QoS::AtMostOnce,
        packet_id: None,
        dup: false,
        retain: false,
        payload: b"after".to_vec(),
    });
    let mut bytes = Vec::new();
    big.encode(&mut bytes).unwrap();
    small.encode(&mut bytes).unwrap();
    let mut small_bytes = Vec::new();
    small.encode(&mut small_bytes).unwrap();
    let small_len = small_bytes.len();
    let conn = host.conn.unwrap();
    // Arriving in pieces, the oversized one split across them.
    let mut lines = Vec::new();
    for chunk in bytes.chunks(700 * 1024) {
        lines.extend(host.input(Input::Received { conn, bytes: chunk }));
    }
    assert!(
        !lines
            .iter()
            .any(|l| l == "close" || l.contains("connection lost")),
        "the connection is kept: {lines:?}"
    );
    let c2d: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("small=1") || l.contains("big=1"))
        .collect();
    assert_eq!(
        c2d.len(),
        1,
        "only the message after it is taken: {lines:?}"
    );
    assert!(c2d[0].contains("small=1"), "{lines:?}");
    let dropped: Vec<&String> = lines.iter().filter(|l| l.contains("dropped")).collect();
    assert_eq!(
        dropped,
        [&format!(
            "event packet of {} bytes dropped, limit {}",
            bytes.len() - small_len,
            1 << 20
        )],
        "the app is told, once"
    );
}

#[test]
fn an_answer_that_cannot_be_read_is_reported_and_asked_again() {
    let mut host = Host::provisioning();
    assert_eq!(
        host.answer(
            "/provisioning-operations/init",
            200,
            json!({"provisioningOperationId": "op-1", "expirationTime": "2030-01-01T00:00:00Z"}),
        ),
        [
            "event request provisioningInit failed: the answer could not be read: missing field `verificationCode`"
        ]
    );
    assert_eq!(host.advance(), ["http POST /provisioning-operations/init"]);
    host.answer(
        "/provisioning-operations/init",
        200,
        init_body(OPERATION_ID),
    );
    host.advance();
    host.answer("/provisioning-operations/complete", 200, complete_body());
    assert_eq!(
        host.answer(
            "/devices/register",
            200,
            json!({"connectionString": "HostName=hub.example"}),
        ),
        [
            "event request register failed: the answer could not be read: field `connectionString`: connection string has no DeviceId part"
        ]
    );
    assert_eq!(host.advance(), ["http PUT /devices/register"]);
}

#[test]
fn an_answer_longer_than_the_device_reads_is_refused_by_the_core_in_every_host() {
    let mut host = Host::provisioning();
    // The host stops reading one byte past the limit and hands over what it read.
    let cut = vec![b' '; vdev_core::MAX_ANSWER_BYTES as usize + 1];
    let oversized = |status| HttpResponse {
        status,
        retry_after: None,
        body: cut.clone(),
    };
    assert_eq!(
        host.answer_raw("/provisioning-operations/init", oversized(200)),
        [
            "event request provisioningInit failed: the answer could not be read: it is longer than the 1048576 bytes the device reads"
        ]
    );
    assert_eq!(host.advance(), ["http POST /provisioning-operations/init"]);
    // An error status still counts; its body is not read.
    assert_eq!(
        host.answer_raw("/provisioning-operations/init", oversized(503)),
        ["event request provisioningInit failed: status 503"]
    );
    assert_eq!(host.advance(), ["http POST /provisioning-operations/init"]);
    // The host's abort at the deadline, seen before the core's own timeout: no answer in time.
    let request = host.pending.pop_front().expect("a request is pending");
    host.wait(request.deadline - host.now);
    assert_eq!(
        host.input(Input::HttpFailed {
            id: request.id,
            error: "AbortError: signal is aborted without reason".into(),
        }),
        ["event request provisioningInit failed: no answer in time"]
    );
}

#[test]
fn a_refused_upload_rejects_its_message_naming_the_step_and_the_platforms_words() {
    let mut config = config();
    config.upload_threshold = 16;
    let mut host = Host::connected_with(config);
    let (seq, lines) = host.send("a payload over sixteen bytes");
    assert!(
        lines.iter().any(|line| line.contains("/files?")),
        "the upload starts: {lines:?}"
    );
    let refusal = json!({
        "type": "/problems/upload/blobRefused",
        "title": "Bad Request",
        "detail": "blob names must be lowercase",
    });
    assert_eq!(
        host.answer("/files?", 400, refusal),
        [
            format!("store remove [{seq}]"),
            "event request uploadSlot failed: status 400: blob names must be lowercase".to_owned(),
            format!(
                "event rejected {seq}: its upload failed for good on uploadSlot: status 400: blob names must be lowercase"
            ),
        ]
    );
}

#[test]
fn an_announced_cleartext_upload_url_off_loopback_is_never_used_and_rejects_the_message() {
    let mut config = config();
    config.upload_threshold = 16;
    let mut host = Host::connected_with(config);
    let (seq, _) = host.send("a payload over sixteen bytes");
    let slot = json!({
        "correlationId": "c1",
        "hostName": "blobs.example",
        "containerName": "c",
        "blobName": "b",
        "sasToken": "?sig=x",
        "uploadUrl": "http://blobs.example/c/b?sig=x",
    });
    let lines = host.answer("/files?", 200, slot);
    assert!(
        host.pending.is_empty(),
        "no request to the cleartext URL: {:?}",
        host.pending
    );
    assert!(
        lines.contains(&format!(
            "event rejected {seq}: its upload failed for good on uploadBlob: refusing unencrypted http://blobs.example/c/b?sig=x: ws://, http:// and plain tcp are allowed only for loopback hosts, use wss://, https:// or tls"
        )),
        "{lines:?}"
    );
}

#[test]
fn being_told_the_network_is_there_while_online_skips_no_backoff_and_a_stopped_device_takes_nothing()
 {
    let mut host = Host::connected();
    let conn = host.conn.expect("connected");
    let lines = host.input(Input::Closed {
        conn,
        reason: "reset".into(),
    });
    assert!(
        !lines.iter().any(|line| line.starts_with("connect")),
        "a reconnect waits for its backoff delay: {lines:?}"
    );
    let lines = host.input(Input::NetworkAvailable);
    assert!(
        lines.is_empty(),
        "the device was online all along: nothing changes, no early reconnect: {lines:?}"
    );
    host.device.stop(host.now);
    host.drain();
    assert_eq!(
        host.device.update_reported_properties(
            host.now,
            vdev_core::json::Value::parse(br#"{"fw":"2"}"#).unwrap()
        ),
        Err(vdev_core::TwinError::Stopped)
    );
    assert!(
        host.input(Input::NetworkLost).is_empty(),
        "a stopped device does not go offline"
    );
}

#[test]
fn after_the_clock_is_set_back_a_day_timers_and_expiries_follow_the_wall_clock() {
    const DAY: u64 = 24 * 60 * MINUTE;
    let mut host = Host::provisioning();
    // The wall clock goes back a day (a restored virtual machine) while `init` is on its way;
    // the Platform's answer is read with the clock as it now stands.
    host.now -= DAY;
    let expires_at = host.now + 10 * MINUTE;
    let init = json!({
        "provisioningOperationId": OPERATION_ID,
        "verificationCode": "123456",
        "expirationTime": vdev_core::testing::format_rfc3339(expires_at),
    });
    // The operation is shown and polled, not taken for expired (a core that clamped its time
    // kept the day-later time and started a new operation at once).
    assert_eq!(
        host.answer("/provisioning-operations/init", 200, init),
        ["store save-state", "event operation op-1 code 123456"]
    );
    assert_eq!(
        host.device.provisioning_operation().map(|op| op.expires_at),
        Some(expires_at),
        "the app is shown the expiry on the wall clock"
    );
    let saved: Value = serde_json::from_slice(host.store.state().unwrap()).unwrap();
    assert_eq!(saved["operation"]["expires_at"], json!(expires_at));
    // The host's timer is set on its own (stepped) clock: the poll is a second away, not a
    // day and a second.
    assert_eq!(host.deadline, Some(host.now + 1_000));
    assert_eq!(
        host.advance(),
        ["http PUT /provisioning-operations/complete"]
    );
}
