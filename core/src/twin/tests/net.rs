//! The test network of the twin's property tests: a fake Platform that answers twin requests
//! the way IoT Hub does, a network between it and the twin that drops, reorders and refuses
//! messages, restarts and reconnects, and the invariants checked after every step.

use crate::prelude::*;

use alloc::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::super::topics::GET_TOPIC_PREFIX;
use super::super::{Twin, TwinConfig, TwinPublish, TwinState};
use super::{T0, patch_body, twin_body};
use crate::json::strategies::json_object;
use crate::json::{self, Value};

#[derive(Debug, Clone)]
pub(super) enum Op {
    UpdateReported(Value),
    PlatformSetsDesired(Value),
    /// The oldest device publish reaches the Platform, which answers it.
    DeliverUp,
    DeliverDown,
    DropUp,
    DropDown,
    /// The two oldest messages to the device swap places.
    ReorderDown,
    /// The Platform answers with an error status instead.
    RefuseUp(u16),
    Advance(u64),
    Reconnect,
    Restart,
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => json_object(true).prop_map(Op::UpdateReported),
        3 => json_object(true).prop_map(Op::PlatformSetsDesired),
        6 => Just(Op::DeliverUp),
        6 => Just(Op::DeliverDown),
        1 => Just(Op::DropUp),
        1 => Just(Op::DropDown),
        1 => Just(Op::ReorderDown),
        1 => prop_oneof![Just(429u16), Just(500), Just(400)].prop_map(Op::RefuseUp),
        2 => (0u64..70_000).prop_map(Op::Advance),
        1 => Just(Op::Reconnect),
        1 => Just(Op::Restart),
    ]
}

/// A Platform that answers twin requests the way IoT Hub does.
#[derive(Debug)]
struct FakePlatform {
    desired: Value,
    desired_version: u64,
    /// Every desired document the Platform ever had, by version.
    desired_history: BTreeMap<u64, Value>,
    reported: Value,
    reported_version: u64,
}

impl FakePlatform {
    fn answer(&mut self, publish: &TwinPublish) -> (String, Vec<u8>) {
        let (_, rid) = publish
            .topic
            .rsplit_once("$rid=")
            .expect("requests carry a rid");
        if publish.topic.starts_with(GET_TOPIC_PREFIX) {
            let body = twin_body(
                self.desired.clone(),
                self.desired_version,
                self.reported.clone(),
                self.reported_version,
            );
            (format!("$iothub/twin/res/200/?$rid={rid}"), body)
        } else {
            let patch: Value = serde_json::from_slice(&publish.payload).expect("json patch");
            json::merge(&mut self.reported, &patch);
            self.reported_version += 1;
            let topic = format!(
                "$iothub/twin/res/204/?$rid={rid}&$version={}",
                self.reported_version
            );
            (topic, Vec::new())
        }
    }

    fn set_desired(&mut self, patch: &Value) -> (String, Vec<u8>) {
        json::merge(&mut self.desired, patch);
        self.desired_version += 1;
        self.desired_history
            .insert(self.desired_version, self.desired.clone());
        let topic = format!(
            "$iothub/twin/PATCH/properties/desired/?$version={}",
            self.desired_version
        );
        (topic, patch_body(patch.clone(), self.desired_version))
    }
}

#[derive(Debug)]
pub(super) struct Sim {
    now: u64,
    twin: Twin,
    stored: TwinState,
    platform: FakePlatform,
    up: VecDeque<TwinPublish>,
    down: VecDeque<(String, Vec<u8>)>,
    highest_desired_version: Option<u64>,
}

impl Sim {
    pub(super) fn new() -> Self {
        let mut twin = Twin::new(TwinConfig::default(), TwinState::default());
        twin.on_session_ready(T0);
        let desired = value!({"rate": 1});
        let mut sim = Self {
            now: T0,
            twin,
            stored: TwinState::default(),
            platform: FakePlatform {
                desired_history: BTreeMap::from([(1, desired.clone())]),
                desired,
                desired_version: 1,
                reported: value!({"stale": true}),
                reported_version: 1,
            },
            up: VecDeque::new(),
            down: VecDeque::new(),
            highest_desired_version: None,
        };
        sim.collect();
        sim
    }

    pub(super) fn step(&mut self, op: Op) {
        match op {
            Op::UpdateReported(patch) => {
                self.twin
                    .update_reported(self.now, patch)
                    .expect("valid patch");
            }
            Op::PlatformSetsDesired(patch) => {
                let message = self.platform.set_desired(&patch);
                self.down.push_back(message);
            }
            Op::DeliverUp => {
                if let Some(publish) = self.up.pop_front() {
                    let answer = self.platform.answer(&publish);
                    self.down.push_back(answer);
                }
            }
            Op::DeliverDown => {
                if let Some((topic, payload)) = self.down.pop_front() {
                    assert!(self.twin.handle_publish(self.now, &topic, &payload));
                }
            }
            Op::DropUp => drop(self.up.pop_front()),
            Op::DropDown => drop(self.down.pop_front()),
            Op::ReorderDown => {
                if self.down.len() >= 2 {
                    self.down.swap(0, 1);
                }
            }
            Op::RefuseUp(status) => {
                if let Some(publish) = self.up.pop_front() {
                    let (_, rid) = publish.topic.rsplit_once("$rid=").expect("rid");
                    self.down
                        .push_back((format!("$iothub/twin/res/{status}/?$rid={rid}"), Vec::new()));
                }
            }
            Op::Advance(ms) => {
                self.now += ms;
                self.twin.handle_timeout(self.now);
            }
            Op::Reconnect => self.reconnect(),
            Op::Restart => {
                self.twin = Twin::new(TwinConfig::default(), self.stored.clone());
                self.reconnect();
            }
        }
        self.collect();
    }

    fn reconnect(&mut self) {
        self.up.clear();
        self.down.clear();
        self.twin.on_session_lost();
        self.twin.on_session_ready(self.now);
    }

    /// Moves the twin's outputs to the network and the store, as a host would.
    fn collect(&mut self) {
        while let Some(publish) = self.twin.poll_publish() {
            self.up.push_back(publish);
        }
        while self.twin.poll_event().is_some() {}
        if self.twin.take_state_dirty() {
            self.stored = self.twin.state().clone();
        }
    }

    pub(super) fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            self.twin.state(),
            &self.stored,
            "every change was flagged dirty"
        );
        let (desired, version) = self.twin.desired();
        if let Some(version) = version {
            prop_assert_eq!(
                self.platform.desired_history.get(&version),
                Some(desired),
                "the twin only ever shows a document the Platform had"
            );
            prop_assert!(
                self.highest_desired_version <= Some(version),
                "no going back"
            );
            self.highest_desired_version = Some(version);
        }
        Ok(())
    }

    /// A reliable network from now on: after a reconnect (a lost desired patch means a
    /// lost connection with MQTT QoS 1), everything must converge.
    pub(super) fn settle(&mut self) -> Result<(), TestCaseError> {
        self.reconnect();
        self.collect();
        for _ in 0..100 {
            if let Some(publish) = self.up.pop_front() {
                let answer = self.platform.answer(&publish);
                self.down.push_back(answer);
            } else if let Some((topic, payload)) = self.down.pop_front() {
                self.twin.handle_publish(self.now, &topic, &payload);
            } else if let Some(deadline) = self.twin.poll_timeout() {
                self.now = self.now.max(deadline);
                self.twin.handle_timeout(self.now);
            } else {
                break;
            }
            self.collect();
            self.check_invariants()?;
        }
        prop_assert!(self.twin.poll_timeout().is_none(), "the twin went quiet");
        prop_assert!(self.twin.is_synced());
        prop_assert!(!self.twin.pending_reported());
        prop_assert_eq!(&self.platform.reported, self.twin.reported());
        prop_assert_eq!(
            self.twin.desired(),
            (&self.platform.desired, Some(self.platform.desired_version))
        );
        Ok(())
    }
}
