//! A scripted host for tests that drive one `Device` by hand: no randomness, no clock, no
//! simulated network. Every output is performed at once (store requests against a
//! `MemoryStore`, unless appends are held back) and written down as one readable line, so a test
//! can assert the exact transcript; the test plays the Platform and the gateway.

#![allow(dead_code)]

use std::collections::VecDeque;

use serde_json::{Value, json};
use vdev_core::testing::mqtt::{
    self as codec, ConnAck, ConnectReturnCode, Packet, Publish, QoS, SubAck,
};
use vdev_core::testing::{decode_property_bag, format_rfc3339};
use vdev_core::{
    BackoffConfig, ConnectionId, Device, DeviceConfig, DeviceId, Endpoint, Event, HttpRequest,
    HttpResponse, Input, MemoryStore, Output, StoreError, StoreRequest, Transport,
};

pub const T0: u64 = 1_800_000_000_000;
pub const MINUTE: u64 = 60_000;
pub const BASE_URL: &str = "http://127.0.0.1:8080";
pub const HOST: &str = "hub.example";
pub const SAS: &str = "SharedAccessSignature sr=hub.example&sig=c2ln&se=1800003600";
pub const OPERATION_ID: &str = "op-1";

pub fn config() -> DeviceConfig {
    let mut config = DeviceConfig::new(BASE_URL, "pt-1");
    config.device_id = Some(DeviceId::parse("dev-1").expect("a valid device id"));
    config.transport = Transport::Tcp;
    config.provisioning_poll_interval_ms = 1_000;
    config.backoff = BackoffConfig {
        initial_ms: 100,
        max_ms: 1_000,
    };
    config.session.backoff = config.backoff;
    config
}

pub fn init_body(operation_id: &str) -> Value {
    json!({
        "provisioningOperationId": operation_id,
        "verificationCode": "123456",
        "expirationTime": format_rfc3339(T0 + 10 * MINUTE),
    })
}

pub fn complete_body() -> Value {
    json!({
        "registrationToken": "rt-1",
        "expirationTime": format_rfc3339(T0 + 24 * 60 * MINUTE),
    })
}

pub fn register_body() -> Value {
    json!({
        "connectionString": format!("HostName={HOST};DeviceId=ws1:dev-1;SharedAccessSignature={SAS}"),
        "iotHubHostName": HOST,
        "connectionStringType": "SharedAccessSignature",
        "connectionStringExpiration": format_rfc3339(T0 + 60 * MINUTE),
        "tokenRemainingLifetime": "1.00:00:00",
        "gatewayEndpoints": { "mqttTcp": "127.0.0.1:1883" },
    })
}

pub struct Host {
    pub device: Device,
    pub now: u64,
    pub store: MemoryStore,
    /// When set, `Append` requests wait in `held` until the test executes them.
    pub hold_appends: bool,
    pub held: Vec<StoreRequest>,
    /// When set, `Remove` and `SaveState` requests fail with this text instead of running.
    pub failing_writes: Option<String>,
    /// Requests the device made and the test has not answered yet, oldest first.
    pub pending: VecDeque<HttpRequest>,
    /// Every packet the device wrote, in order.
    pub sent: Vec<Packet>,
    pub events: Vec<Event>,
    pub conn: Option<ConnectionId>,
    pub deadline: Option<u64>,
}

impl Host {
    pub fn new(config: DeviceConfig, store: MemoryStore) -> (Self, Vec<String>) {
        let device = Device::new(config, T0, [7; 32], &store.meta(), store.state());
        let mut host = Self {
            device,
            now: T0,
            store,
            hold_appends: false,
            held: Vec::new(),
            failing_writes: None,
            pending: VecDeque::new(),
            sent: Vec::new(),
            events: Vec::new(),
            conn: None,
            deadline: None,
        };
        let transcript = host.drain();
        (host, transcript)
    }

    pub fn fresh() -> (Self, Vec<String>) {
        Self::new(config(), MemoryStore::new("o1"))
    }

    /// Polls until `Timeout`, performing and describing each output. A deadline that is
    /// already due is served at once, as a host's zero-delay timer would; a device that keeps
    /// asking to be woken in the past is a busy loop and fails the test.
    pub fn drain(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut wakeups = 0;
        for _ in 0..10_000 {
            match self.device.poll_output() {
                Output::Timeout(deadline) => {
                    self.deadline = deadline;
                    if deadline.is_some_and(|at| at <= self.now) {
                        wakeups += 1;
                        assert!(
                            wakeups < 10,
                            "the device asks to be woken in the past, again and again"
                        );
                        self.device.handle_timeout(self.now);
                        continue;
                    }
                    return lines;
                }
                Output::Http(request) => {
                    lines.push(format!(
                        "http {} {}",
                        request.method.as_str(),
                        path(&request)
                    ));
                    self.pending.push_back(request);
                }
                Output::Connect { conn, endpoint } => {
                    lines.push(match endpoint {
                        Endpoint::Tcp { host, port } => format!("connect tcp {host}:{port}"),
                        other => format!("connect {other:?}"),
                    });
                    self.conn = Some(conn);
                }
                Output::Transmit { conn, bytes } => {
                    assert_eq!(Some(conn), self.conn, "bytes go to the open connection");
                    let mut rest = &bytes[..];
                    while !rest.is_empty() {
                        let (packet, used) = codec::decode(rest, 1 << 24)
                            .expect("the device writes valid MQTT")
                            .expect("the device writes whole packets");
                        rest = &rest[used..];
                        lines.push(format!("send {}", describe_packet(&packet)));
                        self.sent.push(packet);
                    }
                }
                Output::Close { conn } => {
                    assert_eq!(Some(conn), self.conn);
                    lines.push("close".into());
                    self.conn = None;
                }
                Output::Store(request) => {
                    lines.push(format!("store {}", describe_store(&request)));
                    let failure = self.failing_writes.clone().map(StoreError::Failed);
                    if self.hold_appends && matches!(request, StoreRequest::Append { .. }) {
                        self.held.push(request);
                    } else if let (Some(error), StoreRequest::Remove { seqs, bytes }) =
                        (&failure, &request)
                    {
                        let (seqs, bytes, error) = (seqs.clone(), *bytes, error.clone());
                        self.device
                            .handle_input(self.now, Input::RemoveFailed { seqs, bytes, error });
                    } else if let (Some(error), StoreRequest::SaveState { .. }) =
                        (failure, &request)
                    {
                        self.device
                            .handle_input(self.now, Input::SaveStateFailed { error });
                    } else if let Some(answer) = self.store.execute(request) {
                        self.device.handle_input(self.now, answer);
                    }
                }
                Output::Event(event) => {
                    lines.push(format!("event {}", describe_event(&event)));
                    self.events.push(event);
                }
            }
        }
        panic!("the device never asked for a timeout");
    }

    /// Moves the clock to the device's deadline and wakes it.
    pub fn advance(&mut self) -> Vec<String> {
        let at = self.deadline.expect("the device asked to be woken");
        self.now = self.now.max(at);
        self.device.handle_timeout(self.now);
        self.drain()
    }

    /// Moves the clock by `ms` (without waking the device).
    pub fn wait(&mut self, ms: u64) {
        self.now += ms;
    }

    pub fn input(&mut self, input: Input<'_>) -> Vec<String> {
        self.device.handle_input(self.now, input);
        self.drain()
    }

    /// Answers the oldest pending request, which must be a call to `path`.
    pub fn answer(&mut self, path_part: &str, status: u16, body: Value) -> Vec<String> {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.answer_raw(
            path_part,
            HttpResponse {
                status,
                retry_after: None,
                body,
            },
        )
    }

    pub fn answer_raw(&mut self, path_part: &str, response: HttpResponse) -> Vec<String> {
        let request = self.pending.pop_front().expect("a request is pending");
        assert!(
            path(&request).contains(path_part),
            "expected a call to {path_part}, the device made {}",
            path(&request)
        );
        self.input(Input::HttpResponse {
            id: request.id,
            response,
        })
    }

    /// The gateway sends `packet` on the open connection.
    pub fn receive(&mut self, packet: Packet) -> Vec<String> {
        let mut bytes = Vec::new();
        packet
            .encode(&mut bytes)
            .expect("the test encodes valid MQTT");
        let conn = self.conn.expect("a connection is open");
        self.input(Input::Received {
            conn,
            bytes: &bytes,
        })
    }

    pub fn connack(&mut self, code: ConnectReturnCode) -> Vec<String> {
        self.receive(Packet::ConnAck(ConnAck {
            session_present: false,
            code,
        }))
    }

    /// Answers the last SUBSCRIBE with every filter granted.
    pub fn suback(&mut self) -> Vec<String> {
        let Some(Packet::Subscribe(subscribe)) = self
            .sent
            .iter()
            .rev()
            .find(|p| matches!(p, Packet::Subscribe(_)))
            .cloned()
        else {
            panic!("the device sent no SUBSCRIBE");
        };
        let codes = subscribe
            .filters
            .iter()
            .map(|(_, qos)| codec::SubAckCode::Granted(*qos))
            .collect();
        self.receive(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            codes,
        }))
    }

    /// Answers the last twin GET with an empty twin.
    pub fn twin_response(&mut self) -> Vec<String> {
        let rid = self
            .sent
            .iter()
            .rev()
            .find_map(|p| match p {
                Packet::Publish(p) => p
                    .topic
                    .strip_prefix("$iothub/twin/GET/?$rid=")
                    .map(String::from),
                _ => None,
            })
            .expect("the device asked for the twin");
        self.receive(Packet::Publish(Publish {
            topic: format!("$iothub/twin/res/200/?$rid={rid}"),
            qos: QoS::AtMostOnce,
            packet_id: None,
            dup: false,
            retain: false,
            payload: json!({"desired": {"$version": 1}, "reported": {"$version": 1}})
                .to_string()
                .into_bytes(),
        }))
    }

    /// Packet ids of the telemetry PUBLISHes sent so far, with their `vdev-seq` number.
    pub fn telemetry(&self) -> Vec<(u16, u64)> {
        self.sent
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) if p.topic.contains("/messages/events/") => {
                    Some((p.packet_id?, telemetry_seq(&p.topic)))
                }
                _ => None,
            })
            .collect()
    }

    /// A fresh device that has made its `init` call.
    pub fn provisioning() -> Self {
        let (host, _) = Self::fresh();
        host
    }

    /// Runs provisioning, registration and the MQTT handshake with a cooperative Platform.
    pub fn connected() -> Self {
        Self::connected_with(config())
    }

    /// [`Host::connected`] with this configuration.
    pub fn connected_with(config: DeviceConfig) -> Self {
        let (mut host, _) = Self::new(config, MemoryStore::new("o1"));
        host.answer(
            "/provisioning-operations/init",
            200,
            init_body(OPERATION_ID),
        );
        host.advance();
        host.answer("/provisioning-operations/complete", 200, complete_body());
        host.answer("/devices/register", 200, register_body());
        host.input(Input::Connected {
            conn: host.conn.expect("the device connects"),
        });
        host.connack(ConnectReturnCode::Accepted);
        host.suback();
        host.twin_response();
        assert!(host.device.is_twin_synced());
        host
    }

    /// Queues a small message with default stream options.
    pub fn send(&mut self, payload: &str) -> (u64, Vec<String>) {
        let seq = self
            .device
            .send(
                self.now,
                &Default::default(),
                &Default::default(),
                payload.as_bytes().to_vec(),
            )
            .expect("the outbox has room");
        (seq, self.drain())
    }

    /// Executes the held appends and tells the device.
    pub fn release_appends(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for request in std::mem::take(&mut self.held) {
            if let Some(answer) = self.store.execute(request) {
                self.device.handle_input(self.now, answer);
                lines.extend(self.drain());
            }
        }
        lines
    }
}

pub fn path(request: &HttpRequest) -> &str {
    request.url.strip_prefix(BASE_URL).unwrap_or(&request.url)
}

fn telemetry_seq(topic: &str) -> u64 {
    let (_, bag) = topic
        .split_once("/messages/events/")
        .expect("a telemetry topic");
    let properties = decode_property_bag(bag).expect("the property bag decodes");
    let (_, tag) = properties
        .iter()
        .find(|(k, _)| k == "vdev-seq")
        .expect("vdev-seq is always sent");
    tag.rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .expect("vdev-seq is <origin>.<seq>")
}

fn describe_packet(packet: &Packet) -> String {
    match packet {
        Packet::Connect(c) => format!("CONNECT {}", c.client_id),
        Packet::Subscribe(s) => format!(
            "SUBSCRIBE {}",
            s.filters
                .iter()
                .map(|(f, q)| format!("{f} q{}", *q as u8))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Packet::Publish(p) if p.topic.starts_with("$iothub/twin/GET/") => "twin GET".into(),
        Packet::Publish(p)
            if p.topic
                .starts_with("$iothub/twin/PATCH/properties/reported/") =>
        {
            "twin PATCH reported".into()
        }
        Packet::Publish(p) if p.topic.contains("/messages/events/") => {
            format!("PUBLISH seq {}", telemetry_seq(&p.topic))
        }
        Packet::Publish(p) => format!("PUBLISH {}", p.topic),
        Packet::PubAck { .. } => "PUBACK".into(),
        Packet::PingReq => "PINGREQ".into(),
        Packet::Disconnect => "DISCONNECT".into(),
        other => format!("{other:?}"),
    }
}

fn describe_store(request: &StoreRequest) -> String {
    match request {
        StoreRequest::Append { records } => format!(
            "append {}..={}",
            records.first().map_or(0, |r| r.seq),
            records.last().map_or(0, |r| r.seq)
        ),
        StoreRequest::Remove { seqs, .. } => format!("remove {seqs:?}"),
        StoreRequest::Load { from, .. } => format!("load from {from}"),
        StoreRequest::SaveState { .. } => "save-state".into(),
        StoreRequest::Reserve {
            below,
            origin: None,
        } => format!("reserve below {below}"),
        StoreRequest::Reserve {
            below,
            origin: Some(origin),
        } => format!("reserve below {below} under a new origin {origin}"),
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::ProvisioningOperation(op) => {
            format!("operation {} code {}", op.id, op.verification_code)
        }
        Event::Registered {
            workspace_id,
            device_id,
        } => format!("registered {workspace_id}:{device_id}"),
        Event::ProvisioningFailed(error) => format!("provisioning failed: {error}"),
        Event::ConnectionStateChanged(state) => format!("state {state:?}"),
        Event::OfflineChanged { offline } => format!("offline {offline}"),
        Event::PacketDropped { size, limit } => {
            format!("packet of {size} bytes dropped, limit {limit}")
        }
        Event::ReportedPropertiesStored { revision } => format!("reported {revision} stored"),
        Event::CloudToDeviceMessage { properties, .. } => {
            let pairs: Vec<String> = properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("cloud-to-device message {}", pairs.join("&"))
        }
        Event::MessageDelivered { seq } => format!("delivered {seq}"),
        Event::MessageRejected { seq, reason } => format!("rejected {seq}: {reason}"),
        Event::DesiredPropertiesChanged { version, .. } => format!("desired v{version}"),
        Event::ConnectionLost { reason } => format!("connection lost: {reason}"),
        Event::RequestFailed { request, failure } => {
            format!("request {} failed: {failure}", request.as_str())
        }
        Event::RegistrationTokenDiscarded { reason } => format!("token discarded: {reason}"),
        Event::MessagesStored { first, last } => format!("stored {first}..={last}"),
        Event::StoreFailed { operation, reason } => {
            format!("store failed: {} {reason}", operation.as_str())
        }
        other => format!("{other:?}"),
    }
}
