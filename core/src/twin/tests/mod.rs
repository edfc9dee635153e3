//! Unit tests of the twin machine: scripted sessions checked publish by publish and event by
//! event, and property tests, among them convergence over the lossy network of [`net`].

use crate::prelude::*;

mod net;

use super::topics::VERSION_KEY;
use super::*;

const T0: u64 = 1_700_000_000_000;

/// One observable output, in the order `drain` collects them: publishes, then events.
#[derive(Debug, PartialEq)]
enum Out {
    /// Topic and body (`Null` for an empty body).
    Publish(String, Value),
    Event(TwinEvent),
}

fn drain(twin: &mut Twin) -> Vec<Out> {
    let mut outputs = Vec::new();
    while let Some(publish) = twin.poll_publish() {
        let body = if publish.payload.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&publish.payload).expect("the twin publishes json")
        };
        outputs.push(Out::Publish(publish.topic, body));
    }
    while let Some(event) = twin.poll_event() {
        outputs.push(Out::Event(event));
    }
    outputs
}

fn get(rid: u64) -> Out {
    Out::Publish(format!("$iothub/twin/GET/?$rid={rid}"), Value::Null)
}

fn report(rid: u64, patch: Value) -> Out {
    Out::Publish(
        format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
        patch,
    )
}

fn desired_changed(properties: Value, version: u64) -> Out {
    Out::Event(TwinEvent::DesiredChanged {
        properties,
        version,
    })
}

fn acked(version: Option<u64>) -> Out {
    Out::Event(TwinEvent::ReportedAcknowledged { version })
}

fn rejected(status: u16) -> Out {
    Out::Event(TwinEvent::ReportedRejected { status })
}

fn res(status: u16, rid: u64) -> String {
    format!("$iothub/twin/res/{status}/?$rid={rid}")
}

fn desired_topic(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

fn twin_body(
    desired: Value,
    desired_version: u64,
    reported: Value,
    reported_version: u64,
) -> Vec<u8> {
    let mut desired = desired;
    desired
        .as_object_mut()
        .unwrap()
        .insert(VERSION_KEY.into(), desired_version.into());
    let mut reported = reported;
    reported
        .as_object_mut()
        .unwrap()
        .insert(VERSION_KEY.into(), reported_version.into());
    value!({ "desired": desired, "reported": reported })
        .to_string()
        .into_bytes()
}

fn patch_body(patch: Value, version: u64) -> Vec<u8> {
    let mut patch = patch;
    patch
        .as_object_mut()
        .unwrap()
        .insert(VERSION_KEY.into(), version.into());
    patch.to_string().into_bytes()
}

/// A twin whose session is synced at desired `{"rate":5}` v3 and reported `{}` v1, with
/// everything drained; the next rid is 1.
fn synced_twin() -> Twin {
    let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(0)]);
    assert!(twin.handle_publish(
        T0,
        &res(200, 0),
        &twin_body(value!({"rate": 5}), 3, value!({}), 1)
    ));
    assert_eq!(drain(&mut twin), [desired_changed(value!({"rate": 5}), 3)]);
    assert!(twin.is_synced());
    let _ = twin.take_state_dirty();
    twin
}

#[test]
fn first_session_gets_the_twin_then_reports_the_diff() {
    let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
    twin.update_reported(T0, value!({"fw": "1.0"})).unwrap();
    assert_eq!(drain(&mut twin), [], "nothing is sent outside a session");
    assert_eq!(twin.poll_timeout(), None);

    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(0)]);
    assert!(!twin.is_synced());
    assert_eq!(twin.poll_timeout(), Some(T0 + 30_000));

    let body = br#"{"desired":{"rate":5,"$version":3},"reported":{"old":1,"$version":7}}"#;
    assert!(twin.handle_publish(T0 + 5, "$iothub/twin/res/200/?$rid=0", body));
    assert_eq!(
        drain(&mut twin),
        [
            report(1, value!({"fw": "1.0", "old": null})),
            desired_changed(value!({"rate": 5}), 3),
        ]
    );
    assert!(twin.is_synced());
    assert!(twin.pending_reported());

    assert!(twin.handle_publish(T0 + 9, "$iothub/twin/res/204/?$rid=1&$version=8", b""));
    assert_eq!(drain(&mut twin), [acked(Some(8))]);
    assert!(!twin.pending_reported());
    assert_eq!(twin.poll_timeout(), None);
    assert!(twin.take_state_dirty());
    assert_eq!(
        twin.state(),
        &TwinState {
            desired: value!({"rate": 5}),
            desired_version: Some(3),
            reported_target: value!({"fw": "1.0"}),
            reported_acked: value!({"fw": "1.0"}),
            next_rid: 2,
        }
    );
    assert_eq!(twin.desired(), (&value!({"rate": 5}), Some(3)));
    assert_eq!(twin.reported(), &value!({"fw": "1.0"}));
}

#[test]
fn desired_patches_in_order_are_merged() {
    let mut twin = synced_twin();
    let topic = desired_topic(4);
    let body = patch_body(value!({"rate": 6, "mode": {"eco": true}}), 4);
    assert!(twin.handle_publish(T0, &topic, &body));
    assert_eq!(
        drain(&mut twin),
        [desired_changed(
            value!({"rate": 6, "mode": {"eco": true}}),
            4
        )]
    );
    assert!(twin.take_state_dirty());

    let body = patch_body(value!({"rate": null, "mode": {"level": 2}}), 5);
    assert!(twin.handle_publish(T0, &desired_topic(5), &body));
    assert_eq!(
        drain(&mut twin),
        [desired_changed(
            value!({"mode": {"eco": true, "level": 2}}),
            5
        )]
    );
    assert_eq!(twin.desired().1, Some(5));
}

#[test]
fn stale_and_duplicate_desired_patches_are_ignored() {
    let mut twin = synced_twin();
    assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"rate": 6}), 4)));
    assert_eq!(drain(&mut twin), [desired_changed(value!({"rate": 6}), 4)]);
    let _ = twin.take_state_dirty();

    for version in [4, 3, 1, 0] {
        let body = patch_body(value!({"rate": 100 + version}), version);
        assert!(twin.handle_publish(T0, &desired_topic(version), &body));
    }
    assert_eq!(drain(&mut twin), []);
    assert!(!twin.take_state_dirty());
    assert_eq!(twin.desired(), (&value!({"rate": 6}), Some(4)));
}

#[test]
fn gap_in_desired_versions_fetches_the_whole_twin() {
    let mut twin = synced_twin();
    assert!(twin.handle_publish(T0, &desired_topic(5), &patch_body(value!({"b": 1}), 5)));
    assert_eq!(drain(&mut twin), [get(1)], "version 4 was missed");
    assert_eq!(twin.desired(), (&value!({"rate": 5}), Some(3)));

    // A second gap while the GET is in flight does not send another one...
    assert!(twin.handle_publish(T0, &desired_topic(6), &patch_body(value!({"c": 1}), 6)));
    assert_eq!(drain(&mut twin), []);
    // ...but an answer that predates it is followed by one more GET.
    let body = twin_body(value!({"a": 1, "b": 1}), 5, value!({}), 1);
    assert!(twin.handle_publish(T0, &res(200, 1), &body));
    assert_eq!(
        drain(&mut twin),
        [get(2), desired_changed(value!({"a": 1, "b": 1}), 5)]
    );
    let body = twin_body(value!({"a": 1, "b": 1, "c": 1}), 6, value!({}), 1);
    assert!(twin.handle_publish(T0, &res(200, 2), &body));
    assert_eq!(
        drain(&mut twin),
        [desired_changed(value!({"a": 1, "b": 1, "c": 1}), 6)]
    );
}

#[test]
fn patch_before_the_first_answer_is_covered_by_the_get() {
    let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(0)]);
    assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"x": 1}), 4)));
    assert_eq!(
        drain(&mut twin),
        [],
        "the GET in flight may already include it"
    );

    let body = twin_body(value!({"x": 1}), 4, value!({}), 1);
    assert!(twin.handle_publish(T0, &res(200, 0), &body));
    assert_eq!(drain(&mut twin), [desired_changed(value!({"x": 1}), 4)]);
}

#[test]
fn patch_newer_than_the_first_answer_fetches_again() {
    let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(0)]);
    assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"x": 1}), 4)));
    let body = twin_body(value!({}), 3, value!({}), 1);
    assert!(twin.handle_publish(T0, &res(200, 0), &body));
    assert_eq!(drain(&mut twin), [get(1), desired_changed(value!({}), 3)]);
    let body = twin_body(value!({"x": 1}), 4, value!({}), 1);
    assert!(twin.handle_publish(T0, &res(200, 1), &body));
    assert_eq!(drain(&mut twin), [desired_changed(value!({"x": 1}), 4)]);
}

#[test]
fn an_answer_older_than_applied_patches_is_ignored() {
    let mut twin = synced_twin();
    // An unreadable patch: something changed, so the whole twin is fetched.
    assert!(twin.handle_publish(T0, &desired_topic(4), b"{broken"));
    assert_eq!(drain(&mut twin), [get(1)]);
    assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"rate": 6}), 4)));
    assert_eq!(drain(&mut twin), [desired_changed(value!({"rate": 6}), 4)]);
    // The GET was answered before patch 4 existed.
    let body = twin_body(value!({"rate": 5}), 3, value!({}), 1);
    assert!(twin.handle_publish(T0, &res(200, 1), &body));
    assert_eq!(drain(&mut twin), []);
    assert_eq!(twin.desired(), (&value!({"rate": 6}), Some(4)));
}

#[test]
fn an_answer_older_than_acknowledged_reports_keeps_them() {
    let mut twin = synced_twin();
    twin.update_reported(T0, value!({"a": 1})).unwrap();
    assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
    assert!(twin.handle_publish(T0, &desired_topic(5), &patch_body(value!({"b": 1}), 5)));
    assert_eq!(drain(&mut twin), [get(2)]);
    assert!(twin.handle_publish(T0, "$iothub/twin/res/204/?$rid=1&$version=2", b""));
    assert_eq!(drain(&mut twin), [acked(Some(2))]);
    // The GET was answered before the patch was applied: its reported part is older.
    let body = twin_body(value!({"rate": 5, "b": 1}), 5, value!({}), 1);
    assert!(twin.handle_publish(T0, &res(200, 2), &body));
    assert_eq!(
        drain(&mut twin),
        [desired_changed(value!({"rate": 5, "b": 1}), 5)]
    );
    assert_eq!(twin.state().reported_acked, value!({"a": 1}));
    assert!(!twin.pending_reported());
}

#[test]
fn get_matching_the_stored_copy_emits_nothing() {
    let state = TwinState {
        desired: value!({"rate": 5}),
        desired_version: Some(3),
        reported_target: value!({"fw": "1.0"}),
        reported_acked: value!({"fw": "1.0"}),
        next_rid: 10,
    };
    let mut twin = Twin::new(TwinConfig::default(), state.clone());
    assert!(!twin.take_state_dirty());
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(10)]);
    let body = twin_body(value!({"rate": 5}), 3, value!({"fw": "1.0"}), 2);
    assert!(twin.handle_publish(T0, &res(200, 10), &body));
    assert_eq!(drain(&mut twin), []);
    assert_eq!(twin.poll_timeout(), None);
}

#[test]
fn get_with_other_content_at_the_stored_version_is_an_event() {
    let state = TwinState {
        desired: value!({"rate": 5}),
        desired_version: Some(3),
        ..TwinState::default()
    };
    let mut twin = Twin::new(TwinConfig::default(), state);
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(0)]);
    // E.g. a Platform that was reset: its answer is the truth even at a lower version.
    let body = twin_body(value!({"rate": 7}), 1, value!({}), 1);
    assert!(twin.handle_publish(T0, &res(200, 0), &body));
    assert_eq!(drain(&mut twin), [desired_changed(value!({"rate": 7}), 1)]);
}

#[test]
fn get_strips_metadata_and_versions() {
    let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
    twin.on_session_ready(T0);
    let _ = drain(&mut twin);
    let body = value!({
        "desired": {"a": 1, "$version": 2, "$metadata": {"$lastUpdated": "x"}},
        "reported": {"b": 2, "$version": 4, "$metadata": {}},
    });
    let topic = "$iothub/twin/res/200/?$rid=0&$version=9";
    assert!(twin.handle_publish(T0, topic, body.to_string().as_bytes()));
    assert_eq!(
        drain(&mut twin),
        [
            report(1, value!({"b": null})),
            desired_changed(value!({"a": 1}), 2)
        ]
    );
    assert_eq!(twin.state().reported_acked, value!({"b": 2}));
}

#[test]
fn restart_with_a_patch_in_flight_resends_it_as_a_diff() {
    let mut twin = synced_twin();
    twin.update_reported(T0, value!({"a": 1})).unwrap();
    assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
    assert!(twin.take_state_dirty());
    let stored = twin.state().clone();
    drop(twin);

    // The Platform never got it.
    let mut twin = Twin::new(TwinConfig::default(), stored.clone());
    assert!(twin.pending_reported());
    twin.on_session_ready(T0 + 1_000);
    assert_eq!(drain(&mut twin), [get(2)]);
    let body = twin_body(value!({"rate": 5}), 3, value!({}), 1);
    assert!(twin.handle_publish(T0 + 1_000, &res(200, 2), &body));
    assert_eq!(drain(&mut twin), [report(3, value!({"a": 1}))]);

    // The Platform applied it before the restart.
    let mut twin = Twin::new(TwinConfig::default(), stored);
    twin.on_session_ready(T0 + 1_000);
    assert_eq!(drain(&mut twin), [get(2)]);
    let body = twin_body(value!({"rate": 5}), 3, value!({"a": 1}), 2);
    assert!(twin.handle_publish(T0 + 1_000, &res(200, 2), &body));
    assert_eq!(drain(&mut twin), []);
    assert!(!twin.pending_reported());
}

#[test]
fn rids_continue_from_the_stored_counter() {
    let state = TwinState {
        next_rid: 41,
        ..TwinState::default()
    };
    let mut twin = Twin::new(TwinConfig::default(), state);
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(41)]);
    assert!(twin.take_state_dirty(), "a used rid must be persisted");
    assert_eq!(twin.state().next_rid, 42);
}

#[test]
fn unanswered_get_is_sent_again_after_the_timeout() {
    let config = TwinConfig {
        request_timeout_ms: 5_000,
    };
    let mut twin = Twin::new(config, TwinState::default());
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(0)]);
    assert_eq!(twin.poll_timeout(), Some(T0 + 5_000));

    twin.handle_timeout(T0 + 4_999);
    assert_eq!(drain(&mut twin), [], "an early call is a no-op");
    twin.handle_timeout(T0 + 5_000);
    assert_eq!(drain(&mut twin), [get(1)]);
    twin.handle_timeout(T0 + 5_000);
    assert_eq!(drain(&mut twin), [], "handle_timeout is idempotent");
    assert_eq!(twin.poll_timeout(), Some(T0 + 10_000));

    // The late answer to the first GET is for a forgotten rid.
    let body = twin_body(value!({}), 1, value!({}), 1);
    assert!(twin.handle_publish(T0 + 6_000, &res(200, 0), &body));
    assert_eq!(drain(&mut twin), []);
    assert!(!twin.is_synced());
    assert!(twin.handle_publish(T0 + 6_000, &res(200, 1), &body));
    assert_eq!(drain(&mut twin), [desired_changed(value!({}), 1)]);
    assert!(twin.is_synced());
}

#[test]
fn unanswered_reported_patch_is_resent_as_a_fresh_diff() {
    let mut twin = synced_twin();
    twin.update_reported(T0, value!({"a": 1})).unwrap();
    assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
    twin.update_reported(T0 + 10, value!({"b": 2})).unwrap();
    assert_eq!(drain(&mut twin), [], "one patch in flight at a time");
    assert_eq!(twin.poll_timeout(), Some(T0 + 30_000));

    twin.handle_timeout(T0 + 30_000);
    assert_eq!(drain(&mut twin), [report(2, value!({"a": 1, "b": 2}))]);
    assert!(twin.handle_publish(T0 + 30_001, "$iothub/twin/res/204/?$rid=1&$version=2", b""));
    assert_eq!(drain(&mut twin), [], "the timed-out request is forgotten");
    assert!(twin.handle_publish(T0 + 30_002, "$iothub/twin/res/204/?$rid=2&$version=2", b""));
    assert_eq!(drain(&mut twin), [acked(Some(2))]);
    assert!(!twin.pending_reported());
}

#[test]
fn updates_while_a_patch_is_in_flight_go_next_as_one_diff() {
    let mut twin = synced_twin();
    twin.update_reported(T0, value!({"a": 1, "c": {"d": 1}}))
        .unwrap();
    assert_eq!(
        drain(&mut twin),
        [report(1, value!({"a": 1, "c": {"d": 1}}))]
    );
    twin.update_reported(T0, value!({"b": 2})).unwrap();
    twin.update_reported(T0, value!({"a": null, "c": {"e": 2}}))
        .unwrap();
    assert_eq!(drain(&mut twin), []);
    assert!(twin.handle_publish(T0, "$iothub/twin/res/204/?$rid=1&$version=2", b""));
    assert_eq!(
        drain(&mut twin),
        [
            report(2, value!({"a": null, "b": 2, "c": {"e": 2}})),
            acked(Some(2)),
        ]
    );
    assert!(twin.handle_publish(T0, "$iothub/twin/res/204/?$rid=2&$version=3", b""));
    assert_eq!(drain(&mut twin), [acked(Some(3))]);
    assert_eq!(
        twin.state().reported_acked,
        value!({"b": 2, "c": {"d": 1, "e": 2}})
    );
}

#[test]
fn refused_reported_patch_is_retried_with_backoff() {
    let mut twin = synced_twin();
    twin.update_reported(T0, value!({"a": 1})).unwrap();
    assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);

    assert!(twin.handle_publish(T0, &res(500, 1), b""));
    assert_eq!(drain(&mut twin), [rejected(500)]);
    assert_eq!(twin.poll_timeout(), Some(T0 + 1_000));
    twin.handle_timeout(T0 + 1_000);
    assert_eq!(drain(&mut twin), [report(2, value!({"a": 1}))]);

    assert!(twin.handle_publish(T0 + 1_000, &res(429, 2), b""));
    assert_eq!(drain(&mut twin), [rejected(429)]);
    assert_eq!(twin.poll_timeout(), Some(T0 + 3_000), "the delay doubles");
    twin.handle_timeout(T0 + 3_000);
    assert_eq!(drain(&mut twin), [report(3, value!({"a": 1}))]);

    assert!(twin.handle_publish(T0 + 3_000, &res(204, 3), b""));
    assert_eq!(drain(&mut twin), [acked(None)]);
    assert!(!twin.pending_reported());
}

#[test]
fn refused_get_is_retried_with_backoff() {
    let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(0)]);
    assert!(twin.handle_publish(T0, &res(503, 0), b""));
    assert_eq!(drain(&mut twin), []);
    assert_eq!(twin.poll_timeout(), Some(T0 + 1_000));
    twin.handle_timeout(T0 + 1_000);
    assert_eq!(drain(&mut twin), [get(1)]);
    assert_eq!(twin.poll_timeout(), Some(T0 + 31_000));
}

#[test]
fn retry_delay_doubles_up_to_its_cap() {
    let delays: Vec<u64> = (1..=9).map(retry_delay).collect();
    assert_eq!(
        delays,
        [
            1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
        ]
    );
    assert_eq!(retry_delay(u32::MAX), RETRY_MAX_MS);
}

#[test]
fn empty_diff_sends_nothing() {
    let mut twin = synced_twin();
    twin.update_reported(T0, value!({"gone": null})).unwrap();
    twin.update_reported(T0, value!({})).unwrap();
    assert_eq!(drain(&mut twin), []);
    assert!(!twin.take_state_dirty());

    twin.update_reported(T0, value!({"a": 1})).unwrap();
    assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
    assert!(twin.handle_publish(T0, &res(204, 1), b""));
    assert_eq!(drain(&mut twin), [acked(None)]);
    twin.update_reported(T0, value!({"a": 1})).unwrap();
    assert_eq!(drain(&mut twin), []);
    assert_eq!(twin.poll_timeout(), None);
}

#[test]
fn update_reported_refuses_non_objects_and_reserved_names() {
    let mut twin = synced_twin();
    for patch in [value!(5), value!([1]), value!(null), value!("a")] {
        assert_eq!(twin.update_reported(T0, patch), Err(TwinError::NotAnObject));
    }
    let error = twin
        .update_reported(T0, value!({"a": {"$b": 1}}))
        .unwrap_err();
    assert_eq!(
        error,
        TwinError::ReservedName {
            name: "$b".to_owned()
        }
    );
    assert_eq!(
        error.to_string(),
        "the reported property name '$b' is reserved: names starting with '$' belong to the platform"
    );
    assert!(matches!(
        twin.update_reported(T0, value!({"$version": 9})),
        Err(TwinError::ReservedName { .. })
    ));
    assert_eq!(drain(&mut twin), []);
    assert!(!twin.take_state_dirty());
    assert_eq!(twin.reported(), &value!({}));
}

#[test]
fn session_lost_forgets_requests_and_resyncs() {
    let mut twin = synced_twin();
    twin.update_reported(T0, value!({"a": 1})).unwrap();
    assert_eq!(drain(&mut twin), [report(1, value!({"a": 1}))]);
    twin.on_session_lost();
    assert!(!twin.is_synced());
    assert_eq!(twin.poll_timeout(), None);
    twin.update_reported(T0, value!({"b": 2})).unwrap();
    assert_eq!(drain(&mut twin), []);
    // Answers and patches that arrive between sessions are consumed and ignored.
    assert!(twin.handle_publish(T0, &res(204, 1), b""));
    assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"z": 1}), 4)));
    assert_eq!(drain(&mut twin), []);

    twin.on_session_ready(T0 + 100);
    assert_eq!(drain(&mut twin), [get(2)]);
    let body = twin_body(value!({"rate": 5}), 3, value!({}), 1);
    assert!(twin.handle_publish(T0 + 100, &res(200, 2), &body));
    assert_eq!(drain(&mut twin), [report(3, value!({"a": 1, "b": 2}))]);
}

#[test]
fn unpolled_publishes_of_a_lost_session_are_dropped() {
    let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
    twin.on_session_ready(T0);
    twin.on_session_lost();
    assert_eq!(drain(&mut twin), []);
    twin.on_session_ready(T0);
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(2)], "a repeated ready starts over");
}

#[test]
fn unpolled_events_of_one_kind_are_coalesced() {
    let mut twin = synced_twin();
    assert!(twin.handle_publish(T0, &desired_topic(4), &patch_body(value!({"a": 1}), 4)));
    twin.update_reported(T0, value!({"x": 1})).unwrap();
    assert!(twin.handle_publish(T0, &res(204, 1), b""));
    assert!(twin.handle_publish(T0, &desired_topic(5), &patch_body(value!({"b": 2}), 5)));
    assert_eq!(
        drain(&mut twin),
        [
            report(1, value!({"x": 1})),
            acked(None),
            desired_changed(value!({"rate": 5, "a": 1, "b": 2}), 5),
        ]
    );
}

#[test]
fn junk_answers_and_topics_change_nothing() {
    let mut twin = synced_twin();
    let before = twin.state().clone();
    let valid = twin_body(value!({"evil": 1}), 99, value!({"evil": 1}), 99);
    let junk: [(&str, &[u8]); 12] = [
        ("$iothub/twin/res/200/?$rid=999", &valid),
        ("$iothub/twin/res/200/?$rid=0", &valid),
        ("$iothub/twin/res/abc/?$rid=1", &valid),
        ("$iothub/twin/res/200/", &valid),
        ("$iothub/twin/res/", b""),
        ("$iothub/twin/res/200/?$rid=notanumber", &valid),
        ("$iothub/twin/res/200/?$rid=-1", &valid),
        ("$iothub/twin/res/200/?rid=1", &valid),
        ("$iothub/twin/", b"\xff\xfe"),
        ("$iothub/twin/whatever/else", b"{}"),
        (
            "$iothub/twin/PATCH/properties/reported/?$rid=1",
            b"{\"a\":1}",
        ),
        ("$iothub/twin/GET/?$rid=0", b""),
    ];
    for (topic, payload) in junk {
        assert!(twin.handle_publish(T0, topic, payload), "{topic}");
        assert_eq!(drain(&mut twin), [], "{topic}");
    }
    assert!(!twin.handle_publish(T0, "devices/ws:dev/messages/devicebound/", b"x"));
    assert!(!twin.handle_publish(T0, "$iothub/twi", b"x"));
    assert!(!twin.take_state_dirty());
    assert_eq!(twin.state(), &before);
    assert_eq!(twin.poll_timeout(), None);
}

#[test]
fn junk_get_answers_schedule_a_retry_and_keep_the_stored_data() {
    let state = TwinState {
        desired: value!({"rate": 5}),
        desired_version: Some(3),
        ..TwinState::default()
    };
    let mut twin = Twin::new(TwinConfig::default(), state.clone());
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(0)]);
    let answers: [(&str, &[u8]); 10] = [
        ("200", b"not json"),
        ("200", b"[]"),
        ("200", b"{}"),
        ("200", br#"{"desired":5}"#),
        ("200", br#"{"desired":{"a":1}}"#),
        ("200", br#"{"desired":{"$version":-1}}"#),
        ("200", br#"{"desired":{"$version":"1"}}"#),
        ("200", br#"{"desired":{"$version":1},"reported":7}"#),
        ("abc", br#"{"desired":{"$version":1}}"#),
        ("404", br#"{"desired":{"$version":1}}"#),
    ];
    let mut now = T0;
    for (rid, (status, payload)) in (0..).zip(answers) {
        let topic = format!("$iothub/twin/res/{status}/?$rid={rid}");
        assert!(twin.handle_publish(now, &topic, payload), "{topic}");
        assert_eq!(drain(&mut twin), [], "{topic}");
        assert!(!twin.is_synced());
        now = twin.poll_timeout().expect("a retry is scheduled");
        twin.handle_timeout(now);
        assert_eq!(drain(&mut twin), [get(rid + 1)], "{topic}");
    }
    assert_eq!(twin.desired(), (&value!({"rate": 5}), Some(3)));
    assert_eq!(twin.reported(), &value!({}));
}

#[test]
fn junk_desired_patches_fetch_the_whole_twin() {
    let mut twin = synced_twin();
    let junk: [(String, &[u8]); 6] = [
        (desired_topic(4), b"{broken"),
        (desired_topic(4), b"[1]"),
        (desired_topic(4), br#"{"a":1,"$version":5}"#),
        (
            "$iothub/twin/PATCH/properties/desired/?$version=x".to_owned(),
            b"{}",
        ),
        (
            "$iothub/twin/PATCH/properties/desired/".to_owned(),
            br#"{"a":1}"#,
        ),
        (desired_topic(4), br#"{"a":1,"$version":"4"}"#),
    ];
    for (rid, (topic, payload)) in (1..).zip(junk) {
        assert!(twin.handle_publish(T0, &topic, payload), "{topic}");
        assert_eq!(drain(&mut twin), [get(rid)], "{topic}");
        // The twin did not change, so the answer brings no event.
        let body = twin_body(value!({"rate": 5}), 3, value!({}), 1);
        assert!(twin.handle_publish(T0, &res(200, rid), &body));
        assert_eq!(drain(&mut twin), [], "{topic}");
    }
    assert_eq!(twin.desired(), (&value!({"rate": 5}), Some(3)));
}

#[test]
fn desired_version_may_come_from_the_body_or_an_encoded_query() {
    let mut twin = synced_twin();
    let topic = "$iothub/twin/PATCH/properties/desired/";
    assert!(twin.handle_publish(T0, topic, &patch_body(value!({"a": 1}), 4)));
    assert_eq!(
        drain(&mut twin),
        [desired_changed(value!({"rate": 5, "a": 1}), 4)]
    );
    let topic = "$iothub/twin/PATCH/properties/desired/?%24version=5";
    assert!(twin.handle_publish(T0, topic, br#"{"b":2}"#));
    assert_eq!(
        drain(&mut twin),
        [desired_changed(value!({"rate": 5, "a": 1, "b": 2}), 5)]
    );
}

#[test]
fn stored_junk_is_normalized() {
    let state = TwinState {
        desired: value!(5),
        desired_version: Some(3),
        reported_target: value!({"a": null, "b": {"c": null, "d": [null]}}),
        reported_acked: value!("x"),
        next_rid: 7,
    };
    let mut twin = Twin::new(TwinConfig::default(), state);
    assert!(twin.take_state_dirty());
    assert_eq!(
        twin.state(),
        &TwinState {
            desired: value!({}),
            desired_version: None,
            reported_target: value!({"b": {"d": [null]}}),
            reported_acked: value!({}),
            next_rid: 7,
        }
    );
    let twin = Twin::new(
        TwinConfig::default(),
        TwinState {
            reported_target: value!(null),
            ..TwinState::default()
        },
    );
    assert_eq!(twin.reported(), &value!({}));
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
    twin.on_session_ready(T0);
    assert_eq!(drain(&mut twin), [get(0)]);
    assert!(twin.handle_publish(T0 - 10_000, &res(500, 0), b""));
    assert_eq!(twin.poll_timeout(), Some(T0 + 1_000));
    twin.handle_timeout(0);
    assert_eq!(drain(&mut twin), []);
}

#[test]
fn rid_counter_wraps_instead_of_panicking() {
    let state = TwinState {
        next_rid: u64::MAX,
        ..TwinState::default()
    };
    let mut twin = Twin::new(TwinConfig::default(), state);
    twin.on_session_ready(u64::MAX);
    assert_eq!(drain(&mut twin), [get(u64::MAX)]);
    assert_eq!(twin.state().next_rid, 0);
    assert_eq!(twin.poll_timeout(), Some(u64::MAX));
}

#[test]
fn twin_is_send_and_events_are_small() {
    fn is_send<T: Send>() {}
    is_send::<Twin>();
    is_send::<TwinEvent>();
    assert!(core::mem::size_of::<TwinEvent>() <= 48);
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;
    use super::net::{Sim, op};
    use super::{T0, patch_body, twin_body};
    use crate::json::strategies::json_object;

    proptest! {
        #[test]
        fn desired_patches_in_order_equal_the_merged_result(
            initial in json_object(false),
            patches in prop::collection::vec(json_object(true), 0..8),
        ) {
            let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
            twin.on_session_ready(T0);
            let _ = twin.poll_publish();
            let body = twin_body(initial.clone(), 1, value!({}), 1);
            twin.handle_publish(T0, "$iothub/twin/res/200/?$rid=0", &body);

            let mut expected = initial;
            for (version, patch) in (2..).zip(&patches) {
                json::merge(&mut expected, patch);
                let topic = format!("$iothub/twin/PATCH/properties/desired/?$version={version}");
                prop_assert!(twin.handle_publish(T0, &topic, &patch_body(patch.clone(), version)));
            }
            let version = 1 + patches.len() as u64;
            prop_assert_eq!(twin.desired(), (&expected, Some(version)));
            prop_assert_eq!(twin.poll_publish(), None, "no GET: nothing was missed");
            let mut last_event = None;
            while let Some(event) = twin.poll_event() {
                last_event = Some(event);
            }
            prop_assert_eq!(
                last_event,
                Some(TwinEvent::DesiredChanged { properties: expected, version })
            );
        }

        #[test]
        fn twin_converges_over_a_lossy_network(ops in prop::collection::vec(op(), 0..80)) {
            let mut sim = Sim::new();
            for op in ops {
                sim.step(op);
                sim.check_invariants()?;
            }
            sim.settle()?;
        }
    }
}
