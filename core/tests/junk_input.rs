//! Fuzz-style properties: a device fed arbitrary bytes by the gateway and arbitrary answers by
//! the Platform never panics, never writes malformed MQTT, never asks to be woken in the past
//! in a loop, and never loses a queued message: each one is still in the store unless the
//! device reported it delivered.

mod common;

use common::{Host, complete_body, init_body, register_body};
use proptest::prelude::*;
use serde_json::Value;
use vdev_core::{Event, HttpResponse, Input};

#[derive(Debug, Clone)]
enum Action {
    /// Bytes from the gateway on the open connection.
    Bytes(Vec<u8>),
    /// The answer to the oldest pending HTTP request.
    Answer(HttpResponse),
    /// The transport connection opened.
    Connected,
    /// The device's timer fired.
    Advance,
}

/// Valid Platform answers with a few bytes changed: closer to the parsers' edge cases than
/// uniform noise.
fn mutated_body() -> impl Strategy<Value = Vec<u8>> {
    let valid = prop_oneof![
        Just(init_body("op-1")),
        Just(complete_body()),
        Just(register_body()),
        Just(Value::Null),
    ];
    (
        valid,
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    )
        .prop_map(|(body, edits)| {
            let mut bytes = body.to_string().into_bytes();
            for (at, byte) in edits {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
            }
            bytes
        })
}

fn response() -> impl Strategy<Value = HttpResponse> {
    let status = prop_oneof![
        Just(200u16),
        Just(202),
        Just(400),
        Just(401),
        Just(404),
        Just(410),
        Just(423),
        Just(429),
        Just(503),
        any::<u16>(),
    ];
    let body = prop_oneof![mutated_body(), prop::collection::vec(any::<u8>(), 0..64)];
    let retry_after = prop::option::of(prop_oneof![
        "[0-9]{1,6}",
        any::<String>(),
        Just("Wed, 25 Nov 2026 18:02:00 GMT".to_owned()),
    ]);
    (status, body, retry_after).prop_map(|(status, body, retry_after)| HttpResponse {
        status,
        retry_after,
        body,
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Action::Bytes),
        3 => response().prop_map(Action::Answer),
        1 => Just(Action::Connected),
        2 => Just(Action::Advance),
    ]
}

fn apply(host: &mut Host, action: Action) {
    match action {
        Action::Bytes(bytes) => {
            if let Some(conn) = host.conn {
                host.input(Input::Received {
                    conn,
                    bytes: &bytes,
                });
            }
        }
        Action::Answer(response) => {
            if !host.pending.is_empty() {
                host.answer_raw("", response);
            }
        }
        Action::Connected => {
            if let Some(conn) = host.conn {
                host.input(Input::Connected { conn });
            }
        }
        Action::Advance => {
            if host.deadline.is_some() {
                host.advance();
            }
        }
    }
}

/// Every queued message is in the store or was reported delivered; none was rejected.
fn assert_queue_kept(host: &Host, queued: &[u64]) -> Result<(), TestCaseError> {
    let stored: Vec<u64> = host.store.records().map(|(seq, _)| seq).collect();
    for seq in queued {
        let delivered = host.events.contains(&Event::MessageDelivered { seq: *seq });
        prop_assert!(
            stored.contains(seq) || delivered,
            "message {} vanished: store {:?}",
            seq,
            stored
        );
    }
    let rejected = host
        .events
        .iter()
        .any(|e| matches!(e, Event::MessageRejected { .. }));
    prop_assert!(
        !rejected,
        "a queued message was rejected: {:?}",
        host.events
    );
    Ok(())
}

proptest! {
    #[test]
    fn junk_from_a_connected_gateway_keeps_the_queue(actions in prop::collection::vec(action(), 1..40)) {
        let mut host = Host::connected();
        let queued: Vec<u64> = (0..3).map(|i| host.send(&format!("m{i}")).0).collect();
        prop_assert_eq!(host.telemetry().len(), 3, "published, waiting for PUBACK");
        for action in actions {
            apply(&mut host, action);
        }
        assert_queue_kept(&host, &queued)?;
    }

    #[test]
    fn junk_answers_during_provisioning_keep_the_queue(actions in prop::collection::vec(action(), 1..40)) {
        let mut host = Host::provisioning();
        let queued: Vec<u64> = (0..2).map(|i| host.send(&format!("m{i}")).0).collect();
        for action in actions {
            apply(&mut host, action);
        }
        assert_queue_kept(&host, &queued)?;
    }
}
