//! One device connection: drives `mqtt-protocol-core` (server role) over any byte transport,
//! authenticates CONNECT with the device's Shared Access Signature, and routes the IoT Hub
//! topics (telemetry, twin GET and reported PATCH, desired pushes, cloud-to-device).
//!
//! A session may only subscribe to and publish on its own device's topics: a SUBSCRIBE to
//! anything else is answered with the failure return code, a PUBLISH elsewhere closes the
//! connection (MQTT 3.1.1 has no negative PUBACK; IoT Hub does the same). Malformed packets close
//! that connection only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use mqtt_protocol_core::mqtt::common::Cursor;
use mqtt_protocol_core::mqtt::connection::{ConnectionOptions, Event, TimerKind};
use mqtt_protocol_core::mqtt::packet::v3_1_1;
use mqtt_protocol_core::mqtt::packet::{GenericPacketTrait, Packet, Qos};
use mqtt_protocol_core::mqtt::result_code::{ConnectReturnCode, SubackReturnCode};
use mqtt_protocol_core::mqtt::{Connection, Version, role};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::devices;
use crate::gateway::registry::SessionCommand;
use crate::messages::{IngestOutcome, Ingested, Telemetry};
use crate::options::check_device_id;
use crate::provisioning::credential_token_usable;
use crate::secrets::{SasError, verify_sas};
use crate::state::AppState;
use tokio::sync::oneshot::error::{RecvError, TryRecvError};

/// How long a new connection may take to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes a connection may send before its CONNECT is accepted. A CONNECT with a SAS is
/// under 2 KB; without this bound a client could declare a 16 MiB packet and make the gateway
/// buffer it before knowing who it is.
const PRE_AUTH_BYTES: usize = 64 * 1024;
/// Most topic filters one session holds: a device needs four (twin responses, desired
/// patches, methods, cloud-to-device); every distinct filter is kept and matched per message.
const MAX_SUBSCRIPTIONS: usize = 32;
/// Most telemetry messages, and most of their bytes, of one connection waiting for their
/// commit: past either, the session reads no more until the oldest is acknowledged (a client
/// that only sends cannot queue without bound).
const MAX_UNACKNOWLEDGED: usize = 1024;
const MAX_UNACKNOWLEDGED_BYTES: usize = 32 * 1024 * 1024;
const TWIN_RESPONSE_PREFIX: &str = "$iothub/twin/res/";
const DESIRED_PREFIX: &str = "$iothub/twin/PATCH/properties/desired/";
const METHODS_PREFIX: &str = "$iothub/methods/POST/";

/// A byte transport under an MQTT session (TCP, TLS, WebSocket).
pub trait Transport: Send {
    /// Read some bytes into `buf`; 0 means the peer closed.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Write all bytes.
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

struct Identity {
    workspace_id: String,
    device_id: String,
    session_id: u64,
    commands: mpsc::UnboundedReceiver<SessionCommand>,
    /// Granted filters with their maximum QoS.
    subscriptions: HashMap<String, Qos>,
    c2d_in_flight: HashMap<u16, i64>,
    /// IoT Hub closes a session when its credential expires; so does the stand-in.
    credential_expires_at: Instant,
}

impl Identity {
    fn events_topic(&self) -> String {
        format!(
            "devices/{}:{}/messages/events/",
            self.workspace_id, self.device_id
        )
    }

    fn devicebound_prefix(&self) -> String {
        format!(
            "devices/{}:{}/messages/devicebound/",
            self.workspace_id, self.device_id
        )
    }

    fn subscribed(&self, topic: &str) -> bool {
        self.granted_qos(topic).is_some()
    }

    /// The highest QoS granted by a filter matching `topic`.
    fn granted_qos(&self, topic: &str) -> Option<Qos> {
        self.subscriptions
            .iter()
            .filter(|(f, _)| topic_matches(f, topic))
            .map(|(_, qos)| *qos)
            .max_by_key(|qos| *qos as u8)
    }
}

/// MQTT topic filter matching (`+` one level, `#` the rest).
fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            _ => {
                if topic_levels.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Why the session ends.
enum Close {
    Normal(String),
}

struct Session<'a, T: Transport> {
    transport: T,
    state: &'a AppState,
    connection: Connection<role::Server>,
    identity: Option<Identity>,
    timers: HashMap<TimerKindKey, Instant>,
    peer: String,
    /// QoS 1 publishes not acknowledged yet, oldest first: the packet id the PUBACK carries,
    /// the payload's size and, for telemetry, its storage (`None`: nothing to wait for, it only
    /// waits for the PUBACKs before it, which MQTT sends in the order the publishes came).
    unacknowledged: VecDeque<(Option<u16>, usize, Option<Ingested>)>,
    /// The payload bytes of `unacknowledged`.
    unacknowledged_bytes: usize,
    /// The telemetry entries of `unacknowledged`, and their most at one time in this session
    /// (reported to the registry's facts when it rises).
    telemetry_unacknowledged: usize,
    peak_telemetry_unacknowledged: usize,
    /// Packets to write, joined: everything one wake-up produced (say, the PUBACKs of one group
    /// commit) goes out in one write, and over WebSocket in one binary message, which MQTT
    /// allows (a message may carry several packets). One message per PUBACK cost the client one
    /// event per message.
    outgoing: Vec<u8>,
}

/// Packets are written once this much is waiting, even in the middle of a wake-up.
const OUTGOING_FLUSH_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TimerKindKey {
    PingreqSend,
    PingreqRecv,
    PingrespRecv,
}

impl From<TimerKind> for TimerKindKey {
    fn from(kind: TimerKind) -> Self {
        match kind {
            TimerKind::PingreqSend => Self::PingreqSend,
            TimerKind::PingreqRecv => Self::PingreqRecv,
            TimerKind::PingrespRecv => Self::PingrespRecv,
        }
    }
}

impl From<TimerKindKey> for TimerKind {
    fn from(kind: TimerKindKey) -> Self {
        match kind {
            TimerKindKey::PingreqSend => Self::PingreqSend,
            TimerKindKey::PingreqRecv => Self::PingreqRecv,
            TimerKindKey::PingrespRecv => Self::PingrespRecv,
        }
    }
}

/// Run one device connection to its end.
pub async fn run<T: Transport>(
    transport: T,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    peer: String,
) {
    let max = u32::try_from(state.max_message_bytes).unwrap_or(u32::MAX);
    let options = ConnectionOptions::new().maximum_packet_size_recv(max.saturating_add(1024));
    let mut connection = Connection::<role::Server>::with_options(Version::Undetermined, options);
    connection.set_auto_pub_response(false);
    connection.set_auto_ping_response(true);
    let mut session = Session {
        transport,
        state: &state,
        connection,
        identity: None,
        timers: HashMap::new(),
        peer,
        unacknowledged: VecDeque::new(),
        unacknowledged_bytes: 0,
        telemetry_unacknowledged: 0,
        peak_telemetry_unacknowledged: 0,
        outgoing: Vec::new(),
    };
    let reason = session.drive(shutdown).await;
    let Close::Normal(reason) = reason;
    if let Some(identity) = &session.identity {
        tracing::info!(
            peer = %session.peer,
            device = %format!("{}:{}", identity.workspace_id, identity.device_id),
            %reason,
            "mqtt session closed"
        );
        state.sessions.unregister(
            &identity.workspace_id,
            &identity.device_id,
            identity.session_id,
        );
    } else {
        tracing::info!(peer = %session.peer, %reason, "mqtt connection closed before authentication");
    }
}

impl<T: Transport> Session<'_, T> {
    async fn drive(&mut self, shutdown: CancellationToken) -> Close {
        let connect_deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut buf = vec![0u8; 64 * 1024];
        let mut pre_auth_bytes = 0usize;
        loop {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, at)| (*k, *at));
            let wake_at = match (&self.identity, next_timer) {
                (None, Some((_, at))) => at.min(connect_deadline),
                (None, None) => connect_deadline,
                (Some(identity), Some((_, at))) => at.min(identity.credential_expires_at),
                (Some(identity), None) => identity.credential_expires_at,
            };
            let commands = async {
                match self.identity.as_mut() {
                    Some(identity) => identity.commands.recv().await,
                    None => std::future::pending().await,
                }
            };
            let reading = self.unacknowledged.len() < MAX_UNACKNOWLEDGED
                && self.unacknowledged_bytes < MAX_UNACKNOWLEDGED_BYTES;
            let stored = async {
                match self.unacknowledged.front_mut() {
                    Some((_, _, Some(ingested))) => ingested.await,
                    // Not telemetry: acknowledged as soon as it is the oldest.
                    Some((_, _, None)) => Ok(Ok(IngestOutcome::Duplicate)),
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Close::Normal("platform shutting down".into()),
                stored = stored => self.acknowledge(stored).await,
                command = commands => match command {
                    Some(command) => self.handle_command(command).await,
                    // The registry dropped this session's entry: a newer one replaced it.
                    None => return Close::Normal("session replaced".into()),
                },
                read = self.transport.read(&mut buf), if reading => match read {
                    Ok(0) => return Close::Normal("peer closed the connection".into()),
                    Ok(n) if self.identity.is_none()
                        && pre_auth_bytes.saturating_add(n) > PRE_AUTH_BYTES =>
                    {
                        return Close::Normal(format!(
                            "more than {PRE_AUTH_BYTES} bytes before the CONNECT was accepted"
                        ));
                    }
                    Ok(n) => {
                        if self.identity.is_none() {
                            pre_auth_bytes += n;
                        }
                        self.handle_bytes(&buf[..n]).await
                    }
                    Err(e) => return Close::Normal(format!("read failed: {e}")),
                },
                _ = tokio::time::sleep_until(wake_at) => {
                    let now = Instant::now();
                    match &self.identity {
                        None if now >= connect_deadline => {
                            return Close::Normal("no CONNECT within the time limit".into());
                        }
                        Some(identity) if now >= identity.credential_expires_at => {
                            return Close::Normal("the credential expired".into());
                        }
                        _ => {}
                    }
                    self.fire_timers().await
                }
            };
            // What this wake-up produced goes out now; before closing too (the PUBACKs of what
            // was stored, a refusing CONNACK).
            let flushed = self.flush().await;
            if let Err(close) = result.and(flushed) {
                return close;
            }
        }
    }

    async fn fire_timers(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        let due: Vec<TimerKindKey> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| *k)
            .collect();
        for kind in due {
            self.timers.remove(&kind);
            let events = self.connection.notify_timer_fired(kind.into());
            self.handle_events(events).await?;
        }
        Ok(())
    }

    async fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), Close> {
        let mut cursor = Cursor::new(bytes);
        while (cursor.position() as usize) < bytes.len() {
            let before = cursor.position();
            let events = self.connection.recv(&mut cursor);
            self.handle_events(events).await?;
            if cursor.position() == before {
                break;
            }
        }
        Ok(())
    }

    /// Queues a packet for the end of this wake-up; writes at once when much is waiting.
    async fn queue(&mut self, packet: &[u8]) -> Result<(), Close> {
        self.outgoing.extend_from_slice(packet);
        if self.outgoing.len() >= OUTGOING_FLUSH_BYTES {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Writes the queued packets, or closes the connection when the peer does not take them
    /// within the write timeout: a client that stops reading must not hold its session (and its
    /// device's place) for ever.
    async fn flush(&mut self) -> Result<(), Close> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let timeout = self.state.write_timeout;
        let written = tokio::time::timeout(timeout, self.transport.write(&self.outgoing)).await;
        // The buffer serves the next wake-up (without what a large packet grew it to).
        self.outgoing.clear();
        self.outgoing.shrink_to(OUTGOING_FLUSH_BYTES);
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Close::Normal(format!("write failed: {e}"))),
            Err(_) => Err(Close::Normal(format!(
                "the client took nothing for {} ms",
                timeout.as_millis()
            ))),
        }
    }

    async fn handle_events(&mut self, events: Vec<Event>) -> Result<(), Close> {
        let mut queue: VecDeque<Event> = events.into();
        while let Some(event) = queue.pop_front() {
            match event {
                Event::RequestSendPacket { packet, .. } => {
                    self.queue(&packet.to_continuous_buffer()).await?;
                }
                Event::NotifyPacketReceived(packet) => {
                    let more = self.handle_packet(packet).await?;
                    queue.extend(more);
                }
                Event::RequestTimerReset { kind, duration_ms } => {
                    self.timers.insert(
                        kind.into(),
                        Instant::now() + Duration::from_millis(duration_ms),
                    );
                }
                Event::RequestTimerCancel(kind) => {
                    self.timers.remove(&kind.into());
                }
                Event::NotifyError(error) => {
                    tracing::warn!(peer = %self.peer, ?error, "mqtt protocol error");
                }
                Event::RequestClose => {
                    return Err(Close::Normal("protocol error or keep-alive timeout".into()));
                }
                Event::NotifyPacketIdReleased(_) => {}
            }
        }
        Ok(())
    }

    async fn handle_packet(&mut self, packet: Packet) -> Result<Vec<Event>, Close> {
        if self.state.transcript.is_on() {
            self.state
                .transcript
                .push(crate::transcript::mqtt_entry(&packet));
        }
        match packet {
            Packet::V3_1_1Connect(connect) => self.handle_connect(&connect).await,
            Packet::V5_0Connect(_) => {
                // MQTT 3.1.1 §3.2.2.3: answer an unsupported protocol level with return code 1.
                self.queue(&[0x20, 0x02, 0x00, 0x01]).await?;
                Err(Close::Normal(
                    "mqtt 5 is not supported (iot hub speaks 3.1.1)".into(),
                ))
            }
            Packet::V3_1_1Subscribe(subscribe) => Ok(self.handle_subscribe(&subscribe)),
            Packet::V3_1_1Unsubscribe(unsubscribe) => {
                if let Some(identity) = self.identity.as_mut() {
                    for filter in unsubscribe.entries() {
                        identity.subscriptions.remove(filter.as_str());
                    }
                }
                let ack = v3_1_1::Unsuback::builder()
                    .packet_id(unsubscribe.packet_id())
                    .build()
                    .map_err(|e| Close::Normal(format!("cannot build unsuback: {e:?}")))?;
                Ok(self.connection.checked_send(ack))
            }
            Packet::V3_1_1Publish(publish) => self.handle_publish(&publish).await,
            Packet::V3_1_1Puback(ack) => {
                if let Some(identity) = self.identity.as_mut()
                    && let Some(id) = identity.c2d_in_flight.remove(&ack.packet_id())
                    && let Err(e) = devices::mark_c2d_delivered(self.state, id)
                {
                    tracing::error!(%e, "cannot mark cloud-to-device message delivered");
                }
                Ok(Vec::new())
            }
            Packet::V3_1_1Disconnect(_) => Err(Close::Normal("client disconnected".into())),
            _ => Ok(Vec::new()),
        }
    }

    fn authenticate(
        &self,
        connect: &v3_1_1::Connect,
    ) -> Result<(String, String, String, i64), ConnectReturnCode> {
        let (workspace_id, device_id) = connect
            .client_id()
            .split_once(':')
            .ok_or(ConnectReturnCode::IdentifierRejected)?;
        check_device_id(device_id).map_err(|_| ConnectReturnCode::IdentifierRejected)?;
        let client_id = connect.client_id();
        let username_ok = connect
            .user_name()
            .is_some_and(|u| u.split('/').nth(1) == Some(client_id));
        if !username_ok {
            return Err(ConnectReturnCode::BadUserNameOrPassword);
        }
        let password = connect
            .password()
            .and_then(|p| std::str::from_utf8(p).ok())
            .ok_or(ConnectReturnCode::BadUserNameOrPassword)?;
        let claims =
            verify_sas(&self.state.signing_key, password, now_ms() / 1000).map_err(|e| {
                tracing::info!(peer = %self.peer, %e, "mqtt connect refused");
                match e {
                    SasError::Malformed(_) => ConnectReturnCode::BadUserNameOrPassword,
                    SasError::BadSignature | SasError::Expired => ConnectReturnCode::NotAuthorized,
                }
            })?;
        if !claims.resource.ends_with(&format!("/devices/{client_id}")) {
            return Err(ConnectReturnCode::NotAuthorized);
        }
        match self.state.check_workspace(workspace_id, true) {
            Ok(()) => {}
            Err(p) if p.status.as_u16() == 423 => return Err(ConnectReturnCode::ServerUnavailable),
            Err(_) => return Err(ConnectReturnCode::NotAuthorized),
        }
        let usable = credential_token_usable(
            self.state,
            &claims.registration_token_id,
            workspace_id,
            device_id,
        )
        .map_err(|_| ConnectReturnCode::ServerUnavailable)?;
        let exists = devices::load_twin(self.state, workspace_id, device_id)
            .map_err(|_| ConnectReturnCode::ServerUnavailable)?
            .is_some();
        if !usable || !exists {
            return Err(ConnectReturnCode::NotAuthorized);
        }
        Ok((
            workspace_id.to_owned(),
            device_id.to_owned(),
            claims.registration_token_id,
            claims.expiry_seconds,
        ))
    }

    async fn handle_connect(&mut self, connect: &v3_1_1::Connect) -> Result<Vec<Event>, Close> {
        let outcome = if self.state.faults.take_mqtt_connect() {
            Err(ConnectReturnCode::ServerUnavailable)
        } else {
            self.authenticate(connect)
        };
        let code = match &outcome {
            Ok(_) => ConnectReturnCode::Accepted,
            Err(code) => *code,
        };
        let connack = v3_1_1::Connack::builder()
            .return_code(code)
            .session_present(false)
            .build()
            .map_err(|e| Close::Normal(format!("cannot build connack: {e:?}")))?;
        let events = self.connection.checked_send(connack);
        match outcome {
            Ok((workspace_id, device_id, token_id, expiry_seconds)) => {
                let remaining_ms = (expiry_seconds * 1000 - now_ms()).max(0);
                let credential_expires_at =
                    Instant::now() + Duration::from_millis(remaining_ms.unsigned_abs());
                let (session_id, commands) = self.state.sessions.register(
                    &workspace_id,
                    &device_id,
                    &token_id,
                    connect.keep_alive(),
                );
                tracing::info!(peer = %self.peer, device = %connect.client_id(), "mqtt session authenticated");
                let _ = devices::touch(self.state, &workspace_id, &device_id);
                self.identity = Some(Identity {
                    workspace_id,
                    device_id,
                    session_id,
                    commands,
                    subscriptions: HashMap::new(),
                    c2d_in_flight: HashMap::new(),
                    credential_expires_at,
                });
                Ok(events)
            }
            Err(code) => {
                for event in events {
                    if let Event::RequestSendPacket { packet, .. } = event {
                        self.queue(&packet.to_continuous_buffer()).await?;
                    }
                }
                Err(Close::Normal(format!("connect refused: {code}")))
            }
        }
    }

    fn handle_subscribe(&mut self, subscribe: &v3_1_1::Subscribe) -> Vec<Event> {
        let Some(identity) = self.identity.as_mut() else {
            return Vec::new();
        };
        let allowed_prefixes = [
            TWIN_RESPONSE_PREFIX.to_owned(),
            DESIRED_PREFIX.to_owned(),
            METHODS_PREFIX.to_owned(),
            identity.devicebound_prefix(),
        ];
        let mut codes = Vec::new();
        for entry in subscribe.entries() {
            let filter = entry.topic_filter();
            let room = identity.subscriptions.len() < MAX_SUBSCRIPTIONS
                || identity.subscriptions.contains_key(filter);
            if !room {
                tracing::warn!(peer = %self.peer, filter, "subscription refused: too many filters");
                codes.push(SubackReturnCode::Failure);
            } else if allowed_prefixes
                .iter()
                .any(|p| filter.starts_with(p.as_str()))
            {
                let granted = match entry.sub_opts().qos() {
                    Qos::AtMostOnce => Qos::AtMostOnce,
                    _ => Qos::AtLeastOnce,
                };
                identity.subscriptions.insert(filter.to_owned(), granted);
                codes.push(match granted {
                    Qos::AtMostOnce => SubackReturnCode::SuccessMaximumQos0,
                    _ => SubackReturnCode::SuccessMaximumQos1,
                });
            } else {
                tracing::warn!(peer = %self.peer, filter, "subscription outside the device's topics refused");
                codes.push(SubackReturnCode::Failure);
            }
        }
        let mut events = match v3_1_1::Suback::builder()
            .packet_id(subscribe.packet_id())
            .return_codes(codes)
            .build()
        {
            Ok(suback) => self.connection.checked_send(suback),
            Err(e) => {
                tracing::error!(?e, "cannot build suback");
                Vec::new()
            }
        };
        events.extend(self.deliver_c2d());
        events
    }

    fn publish_to_device(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        qos: Qos,
    ) -> (Vec<Event>, Option<u16>) {
        let mut builder = match v3_1_1::Publish::builder().topic_name(topic) {
            Ok(b) => b.qos(qos).payload(payload),
            Err(e) => {
                tracing::error!(?e, topic, "cannot build publish");
                return (Vec::new(), None);
            }
        };
        let mut packet_id = None;
        if qos != Qos::AtMostOnce {
            match self.connection.acquire_packet_id() {
                Ok(id) => {
                    builder = builder.packet_id(id);
                    packet_id = Some(id);
                }
                Err(e) => {
                    tracing::warn!(?e, "no packet id free");
                    return (Vec::new(), None);
                }
            }
        }
        match builder.build() {
            Ok(publish) => (self.connection.checked_send(publish), packet_id),
            Err(e) => {
                tracing::error!(?e, "cannot build publish");
                (Vec::new(), None)
            }
        }
    }

    fn deliver_c2d(&mut self) -> Vec<Event> {
        let Some(identity) = self.identity.as_ref() else {
            return Vec::new();
        };
        let prefix = identity.devicebound_prefix();
        let Some(qos) = identity.granted_qos(&prefix) else {
            return Vec::new();
        };
        let pending =
            match devices::pending_c2d(self.state, &identity.workspace_id, &identity.device_id) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(%e, "cannot load cloud-to-device messages");
                    return Vec::new();
                }
            };
        let in_flight: HashSet<i64> = identity.c2d_in_flight.values().copied().collect();
        let mut events = Vec::new();
        for (id, payload, properties) in pending
            .into_iter()
            .filter(|(id, ..)| !in_flight.contains(id))
        {
            let topic = format!("{prefix}{properties}");
            let (more, packet_id) = self.publish_to_device(&topic, payload, qos);
            if more.is_empty() {
                break;
            }
            events.extend(more);
            match (packet_id, self.identity.as_mut()) {
                (Some(packet_id), Some(identity)) => {
                    identity.c2d_in_flight.insert(packet_id, id);
                }
                // QoS 0 has no acknowledgement: handing it to the transport is delivery.
                _ => {
                    if let Err(e) = devices::mark_c2d_delivered(self.state, id) {
                        tracing::error!(%e, "cannot mark cloud-to-device message delivered");
                    }
                }
            }
        }
        events
    }

    fn twin_response(&mut self, status: u16, rid: &str, extra: &str, body: Vec<u8>) -> Vec<Event> {
        let topic = format!("{TWIN_RESPONSE_PREFIX}{status}/?$rid={rid}{extra}");
        if !self.identity.as_ref().is_some_and(|i| i.subscribed(&topic)) {
            return Vec::new();
        }
        self.publish_to_device(&topic, body, Qos::AtMostOnce).0
    }

    async fn handle_publish(&mut self, publish: &v3_1_1::Publish) -> Result<Vec<Event>, Close> {
        let Some(identity) = self.identity.as_ref() else {
            return Err(Close::Normal("publish before connect".into()));
        };
        let (workspace_id, device_id) = (identity.workspace_id.clone(), identity.device_id.clone());
        let topic = publish.topic_name().to_owned();
        let payload = publish.payload().as_slice().to_vec();
        let mut events = Vec::new();
        if publish.qos() == Qos::ExactlyOnce {
            return Err(Close::Normal("qos 2 is not supported".into()));
        }
        if let Some(bag) = topic.strip_prefix(&identity.events_topic()) {
            let message = Telemetry::new(&workspace_id, &device_id, bag, payload).map_err(|e| {
                tracing::warn!(peer = %self.peer, %e, "telemetry refused");
                Close::Normal(format!("telemetry refused: {e}"))
            })?;
            // Acknowledged once it is durable (`acknowledge`); the device was seen then too.
            let ingested = self.state.ingestor.submit(message);
            self.unacknowledged_bytes += publish.payload().len();
            // QoS 1 telemetry: a packet id to acknowledge and a storage to wait for (the same
            // test `acknowledge` counts it down by).
            if publish.packet_id().is_some() {
                self.telemetry_unacknowledged += 1;
                if self.telemetry_unacknowledged > self.peak_telemetry_unacknowledged {
                    self.peak_telemetry_unacknowledged = self.telemetry_unacknowledged;
                    self.state.sessions.record_in_flight(
                        &workspace_id,
                        &device_id,
                        identity.session_id,
                        self.peak_telemetry_unacknowledged,
                    );
                }
            }
            self.unacknowledged.push_back((
                publish.packet_id(),
                publish.payload().len(),
                Some(ingested),
            ));
            return Ok(events);
        } else if let Some(query) = topic.strip_prefix("$iothub/twin/GET/?") {
            let rid = request_id(query);
            let response = match devices::load_twin(self.state, &workspace_id, &device_id) {
                Ok(Some(twin)) => (200, devices::device_twin_document(&twin).to_string()),
                Ok(None) => (404, "{}".to_owned()),
                Err(e) => {
                    tracing::error!(%e, "cannot load twin");
                    (500, "{}".to_owned())
                }
            };
            events.extend(self.twin_response(response.0, &rid, "", response.1.into_bytes()));
        } else if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/?") {
            let rid = request_id(query);
            let patch = serde_json::from_slice::<Value>(&payload)
                .ok()
                .filter(Value::is_object);
            let response = match patch {
                None => (400, String::new()),
                Some(patch) => {
                    match devices::patch_reported(self.state, &workspace_id, &device_id, &patch) {
                        Ok(version) => (204, format!("&$version={version}")),
                        // Refused (too large): the device hears the status.
                        Err(p) if p.status.is_client_error() => {
                            tracing::warn!(detail = %p.detail, "reported properties refused");
                            (p.status.as_u16(), String::new())
                        }
                        Err(p) => {
                            tracing::error!(detail = %p.detail, "cannot patch reported properties");
                            (500, String::new())
                        }
                    }
                }
            };
            events.extend(self.twin_response(response.0, &rid, &response.1, Vec::new()));
        } else if topic.starts_with("$iothub/methods/res/") {
            // Direct-method responses are accepted and dropped: the stand-in invokes no methods.
        } else {
            return Err(Close::Normal(format!(
                "publish to {topic:?} is outside the device's topics"
            )));
        }
        let _ = devices::touch(self.state, &workspace_id, &device_id);
        if let Some(packet_id) = publish.packet_id() {
            if !self.unacknowledged.is_empty() {
                // Telemetry before it still waits for its commit: this PUBACK comes after theirs.
                self.unacknowledged.push_back((Some(packet_id), 0, None));
                return Ok(events);
            }
            let ack = v3_1_1::Puback::builder()
                .packet_id(packet_id)
                .build()
                .map_err(|e| Close::Normal(format!("cannot build puback: {e:?}")))?;
            events.extend(self.connection.checked_send(ack));
        }
        Ok(events)
    }

    /// The oldest unacknowledged publish is done (telemetry: durable, or it could not be
    /// stored): its PUBACK, in the order the publishes came. Those after it whose storage has
    /// answered too (a group commit answers many at once) are acknowledged with it, so their
    /// PUBACKs leave in one write.
    async fn acknowledge(
        &mut self,
        oldest: Result<Result<IngestOutcome, String>, RecvError>,
    ) -> Result<(), Close> {
        let mut stored = oldest.map_err(|_| ());
        loop {
            let Some((packet_id, bytes, ingested)) = self.unacknowledged.pop_front() else {
                return Ok(());
            };
            self.unacknowledged_bytes -= bytes;
            if packet_id.is_some() && ingested.is_some() {
                self.telemetry_unacknowledged -= 1;
            }
            match stored {
                // Stored, a replay dropped, or a conflict stored and flagged: the device is done.
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(Close::Normal(format!("telemetry not stored: {e}")));
                }
                Err(()) => return Err(Close::Normal("the telemetry writer stopped".into())),
            }
            if let Some(packet_id) = packet_id {
                let ack = v3_1_1::Puback::builder()
                    .packet_id(packet_id)
                    .build()
                    .map_err(|e| Close::Normal(format!("cannot build puback: {e:?}")))?;
                let events = self.connection.checked_send(ack);
                self.handle_events(events).await?;
            }
            stored = match self.unacknowledged.front_mut() {
                None => return Ok(()),
                // Not telemetry: acknowledged as soon as it is the oldest.
                Some((_, _, None)) => Ok(Ok(IngestOutcome::Duplicate)),
                Some((_, _, Some(ingested))) => match ingested.try_recv() {
                    Ok(answer) => Ok(answer),
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Closed) => Err(()),
                },
            };
        }
    }

    async fn handle_command(&mut self, command: SessionCommand) -> Result<(), Close> {
        let events = match command {
            SessionCommand::Disconnect(reason) => return Err(Close::Normal(reason)),
            SessionCommand::DesiredPatch { version, patch } => {
                let topic = format!("{DESIRED_PREFIX}?$version={version}");
                if self.identity.as_ref().is_some_and(|i| i.subscribed(&topic)) {
                    self.publish_to_device(&topic, patch.to_string().into_bytes(), Qos::AtMostOnce)
                        .0
                } else {
                    Vec::new()
                }
            }
            SessionCommand::CloudToDeviceQueued => self.deliver_c2d(),
        };
        self.handle_events(events).await
    }
}

fn request_id(query: &str) -> String {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("$rid="))
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_match_like_mqtt() {
        assert!(topic_matches(
            "$iothub/twin/res/#",
            "$iothub/twin/res/200/?$rid=1"
        ));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(!topic_matches("a/b", "a/b/c"));
    }
}
