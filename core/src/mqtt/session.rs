//! The MQTT client session: one connection at a time, from CONNECT to a subscribed, ready
//! session; keep-alive and dead-connection detection; QoS 1 publishes acknowledged by packet
//! id with several in flight; reconnects with backoff.
//!
//! A reconnect after a connection that did not last `stable_after_ms` counts as a failure, so
//! the delay grows. That is what stops two devices sharing one Device ID from kicking each
//! other off the gateway in a tight loop.

use crate::prelude::*;

use crate::backoff::{Backoff, BackoffConfig};
use crate::cleartext::{check_plain_host, check_url};
use crate::keyed::KeyedVec;
use crate::mqtt::codec::{
    self, ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAckCode, Subscribe,
};
use crate::reason::ConnectionLoss;
use crate::rng::Rng;
use crate::text::Describe;

/// Identifies one transport connection; inputs about an older connection are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

/// Where to open the MQTT connection. A `host` is a name or an IP address, an IPv6 address
/// without brackets (`::1`), ready for a resolver and for TLS server-name checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Plain TCP (stand-in Platform on loopback).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// TCP with TLS; the server name to verify is `host`.
    Tls {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
    },
    /// WebSocket with subprotocol `mqtt`, binary frames.
    WebSocket {
        /// `ws://` or `wss://` URL.
        url: String,
    },
}

/// Timing and capacity of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// MQTT keep-alive interval in seconds.
    pub keep_alive_secs: u16,
    /// How long to wait for PINGRESP before declaring the connection dead.
    pub ping_timeout_ms: u64,
    /// How long opening, CONNACK and SUBACK may take together.
    pub connect_timeout_ms: u64,
    /// QoS 1 publishes awaiting PUBACK at once. The default, 256, is what a browser draining a
    /// backlog needs to keep the connection busy: each message waits about a round trip and a
    /// Platform commit for its PUBACK (32 drained at 1,300 messages/s in Chromium, 256 at
    /// 9,900/s, with the other changes of the same measurement).
    pub max_in_flight: usize,
    /// Largest packet accepted from the gateway.
    pub max_packet_size: usize,
    /// A publish not acknowledged within this time means the connection is broken (a gateway
    /// that silently dropped it): reconnect, and everything unacknowledged goes again.
    pub ack_timeout_ms: u64,
    /// A connection that lasted this long resets the reconnect backoff.
    pub stable_after_ms: u64,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            keep_alive_secs: 60,
            ping_timeout_ms: 20_000,
            connect_timeout_ms: 30_000,
            max_in_flight: 256,
            max_packet_size: 1 << 20,
            ack_timeout_ms: 60_000,
            stable_after_ms: 60_000,
            backoff: BackoffConfig::default(),
        }
    }
}

/// What the session needs to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectParams {
    pub(crate) endpoint: Endpoint,
    pub(crate) client_id: String,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) subscriptions: Vec<(String, QoS)>,
    /// The password stops working at this time (ms since the epoch).
    pub(crate) expires_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionOutput {
    Connect {
        conn: ConnectionId,
        endpoint: Endpoint,
    },
    Transmit {
        conn: ConnectionId,
        bytes: Vec<u8>,
    },
    Close {
        conn: ConnectionId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionEvent {
    Connecting,
    Ready,
    Lost {
        /// Why, or `None` when the device closed it on purpose (stopped, new credentials).
        reason: Option<ConnectionLoss>,
        /// Connection attempts in a row that never became ready (0 after a working session and
        /// for a deliberate close).
        failed_attempts: u32,
    },
    /// The credential expired before a connection could use it; new parameters are needed.
    CredentialExpired,
    Incoming(Publish),
    Acked(u16),
    /// A packet larger than `limit` arrived and is being discarded.
    PacketDropped {
        size: usize,
        limit: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No credentials, or stopped.
    Idle,
    /// Connect at this time.
    Waiting {
        at: u64,
    },
    /// The transport is being opened.
    Opening {
        conn: ConnectionId,
        deadline: u64,
    },
    AwaitingConnAck {
        conn: ConnectionId,
        deadline: u64,
    },
    AwaitingSubAck {
        conn: ConnectionId,
        deadline: u64,
        packet_id: u16,
    },
    Ready {
        conn: ConnectionId,
        since: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Session {
    config: SessionConfig,
    params: Option<ConnectParams>,
    state: State,
    next_conn: u64,
    next_packet_id: u16,
    /// Send time by packet id, of the publishes awaiting their PUBACK.
    in_flight: KeyedVec<u64>,
    /// The window filled up: no publish until a quarter of it is free again, so that a backlog
    /// goes out in runs (one transmit of many publishes) rather than one publish per PUBACK.
    /// Measured in Chromium: one WebSocket send per publish was an eighth of a drain's time.
    window_full: bool,
    rx: Vec<u8>,
    /// Bytes of an oversized incoming packet still to be discarded as they arrive.
    skip: usize,
    tx: Vec<u8>,
    last_sent_at: u64,
    /// When bytes last came from the gateway: a silent gateway is probed even while we send.
    last_received_at: u64,
    ping_deadline: Option<u64>,
    backoff: Backoff,
    failed_attempts: u32,
    /// The host says there is no network: hold connection attempts until it comes back.
    offline: bool,
    rng: Rng,
    outputs: Vec<SessionOutput>,
    events: Vec<SessionEvent>,
}

impl Session {
    pub(crate) fn new(config: SessionConfig, rng: &mut Rng) -> Self {
        Self {
            config,
            params: None,
            state: State::Idle,
            next_conn: 1,
            next_packet_id: (rng.below_or_equal(u64::from(u16::MAX - 1)) + 1) as u16,
            in_flight: KeyedVec::default(),
            window_full: false,
            rx: Vec::new(),
            skip: 0,
            tx: Vec::new(),
            last_sent_at: 0,
            last_received_at: 0,
            ping_deadline: None,
            backoff: Backoff::new(config.backoff),
            failed_attempts: 0,
            offline: false,
            rng: rng.fork(),
            outputs: Vec::new(),
            events: Vec::new(),
        }
    }

    /// New credentials. A live connection is closed and reopened with them right away
    /// (they are renewed before the old ones expire, so this is not a failure).
    pub(crate) fn set_params(&mut self, now: u64, params: ConnectParams) {
        self.params = Some(params);
        // Failed attempts in a row were with the old credentials.
        self.failed_attempts = 0;
        match self.state {
            State::Idle | State::Waiting { .. } => self.state = State::Waiting { at: now },
            _ => {
                self.send_packet(now, &Packet::Disconnect);
                self.drop_connection();
                self.state = State::Waiting { at: now };
            }
        }
    }

    /// Forget the credentials and close the connection (e.g. the device must provision again).
    pub(crate) fn clear_params(&mut self, now: u64) {
        self.params = None;
        if self.connection().is_some() {
            if self.is_ready() {
                // Say goodbye so the gateway does not wait for the keep-alive to expire.
                self.send_packet(now, &Packet::Disconnect);
            }
            self.drop_connection();
        }
        self.state = State::Idle;
    }

    /// The network is back: skip the rest of the backoff delay.
    pub(crate) fn reconnect_soon(&mut self, now: u64) {
        self.offline = false;
        if let State::Waiting { at } = &mut self.state {
            *at = (*at).min(now);
        }
    }

    /// The network is gone: close the connection and hold attempts until [`Self::reconnect_soon`].
    /// Not a failure of the gateway, so it neither counts as a failed attempt nor grows the backoff.
    pub(crate) fn go_offline(&mut self, now: u64) {
        self.offline = true;
        if self.connection().is_some() {
            self.drop_connection();
        }
        if self.params.is_some() {
            self.state = State::Waiting { at: now };
        }
    }

    pub(crate) fn is_offline(&self) -> bool {
        self.offline
    }

    pub(crate) fn connection(&self) -> Option<ConnectionId> {
        match self.state {
            State::Opening { conn, .. }
            | State::AwaitingConnAck { conn, .. }
            | State::AwaitingSubAck { conn, .. }
            | State::Ready { conn, .. } => Some(conn),
            _ => None,
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// The connection is gone: nothing of it awaits a PUBACK any more.
    fn forget_in_flight(&mut self) {
        self.in_flight.clear();
        self.window_full = false;
    }

    pub(crate) fn can_publish(&self) -> bool {
        self.is_ready() && !self.window_full && self.in_flight.len() < self.config.max_in_flight
    }

    /// Publishes at QoS 1; returns the packet id the PUBACK will carry.
    pub(crate) fn publish(
        &mut self,
        now: u64,
        topic: String,
        payload: Vec<u8>,
        dup: bool,
    ) -> Result<u16, codec::EncodeError> {
        let packet_id = self.allocate_packet_id();
        let packet = Packet::Publish(Publish {
            topic,
            qos: QoS::AtLeastOnce,
            packet_id: Some(packet_id),
            dup,
            retain: false,
            payload,
        });
        self.encode(now, &packet)?;
        self.in_flight.insert(u64::from(packet_id), now);
        self.window_full = self.in_flight.len() >= self.config.max_in_flight;
        Ok(packet_id)
    }

    /// Publishes at QoS 0 (twin requests, which have their own answers and timeouts).
    pub(crate) fn publish_qos0(&mut self, now: u64, topic: String, payload: Vec<u8>) {
        let packet = Packet::Publish(Publish {
            topic,
            qos: QoS::AtMostOnce,
            packet_id: None,
            dup: false,
            retain: false,
            payload,
        });
        // A twin topic and JSON body always encode; if not, the request times out and retries.
        let _ = self.encode(now, &packet);
    }

    fn allocate_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains_key(u64::from(id)) {
                return id;
            }
        }
    }

    fn encode(&mut self, now: u64, packet: &Packet) -> Result<(), codec::EncodeError> {
        packet.encode(&mut self.tx)?;
        self.last_sent_at = now;
        Ok(())
    }

    fn send_packet(&mut self, now: u64, packet: &Packet) {
        // Control packets without user data always encode.
        let _ = self.encode(now, packet);
    }

    pub(crate) fn handle_connected(&mut self, now: u64, conn: ConnectionId) {
        let State::Opening { conn: current, .. } = self.state else {
            return;
        };
        if current != conn {
            return;
        }
        let Some(params) = &self.params else {
            return;
        };
        let connect = Packet::Connect(Connect {
            client_id: params.client_id.clone(),
            username: Some(params.username.clone()),
            password: Some(params.password.clone().into_bytes()),
            keep_alive_secs: self.config.keep_alive_secs,
            clean_session: true,
        });
        if let Err(error) = self.encode(now, &connect) {
            return self.fail(
                now,
                ConnectionLoss::Protocol(text!("cannot encode CONNECT: ", error)),
            );
        }
        self.state = State::AwaitingConnAck {
            conn,
            deadline: now + self.config.connect_timeout_ms,
        };
    }

    pub(crate) fn handle_closed(&mut self, now: u64, conn: ConnectionId, reason: &str) {
        if self.connection() == Some(conn) {
            self.outputs_drop_pending_tx();
            // A transport that never opened is unreachable; one that did was closed.
            let loss = if matches!(self.state, State::Opening { .. }) {
                ConnectionLoss::Unreachable(reason.to_owned())
            } else {
                ConnectionLoss::Closed(reason.to_owned())
            };
            self.lose(now, loss);
        }
    }

    pub(crate) fn handle_received(&mut self, now: u64, conn: ConnectionId, bytes: &[u8]) {
        if self.connection() != Some(conn) {
            return;
        }
        self.rx.extend_from_slice(bytes);
        self.ping_deadline = None;
        self.last_received_at = now;
        loop {
            if self.skip > 0 {
                let skipped = self.skip.min(self.rx.len());
                self.rx.drain(..skipped);
                self.skip -= skipped;
                if self.skip > 0 {
                    return;
                }
            }
            match codec::decode(&self.rx, self.config.max_packet_size) {
                Ok(Some((packet, used))) => {
                    self.rx.drain(..used);
                    self.handle_packet(now, packet);
                    if self.connection() != Some(conn) {
                        return;
                    }
                }
                Ok(None) => return,
                // A packet larger than the device takes (a twin grown past every bound) is
                // discarded as it arrives and the connection kept: closing would fetch the same
                // packet again on every reconnect, for ever. What waited for it times out.
                Err(codec::DecodeError::PacketTooLarge { size, max }) => {
                    self.skip = size;
                    self.events
                        .push(SessionEvent::PacketDropped { size, limit: max });
                }
                Err(error) => {
                    return self.fail(
                        now,
                        ConnectionLoss::Protocol(text!("malformed packet: ", error)),
                    );
                }
            }
        }
    }

    fn handle_packet(&mut self, now: u64, packet: Packet) {
        match (self.state.clone(), packet) {
            (State::AwaitingConnAck { conn, deadline }, Packet::ConnAck(ConnAck { code, .. })) => {
                if code != ConnectReturnCode::Accepted {
                    return self.fail(now, ConnectionLoss::Refused(code));
                }
                let subscriptions = self
                    .params
                    .as_ref()
                    .map(|p| p.subscriptions.clone())
                    .unwrap_or_default();
                if subscriptions.is_empty() {
                    return self.become_ready(now, conn);
                }
                let packet_id = self.allocate_packet_id();
                self.send_packet(
                    now,
                    &Packet::Subscribe(Subscribe {
                        packet_id,
                        filters: subscriptions,
                    }),
                );
                self.state = State::AwaitingSubAck {
                    conn,
                    deadline,
                    packet_id,
                };
            }
            (
                State::AwaitingSubAck {
                    conn, packet_id, ..
                },
                Packet::SubAck(ack),
            ) if ack.packet_id == packet_id => {
                if ack.codes.contains(&SubAckCode::Failure) {
                    return self.fail(now, ConnectionLoss::SubscriptionRefused);
                }
                self.become_ready(now, conn);
            }
            (State::Ready { .. }, Packet::Publish(publish)) => {
                if let Some(packet_id) = publish.packet_id {
                    self.send_packet(now, &Packet::PubAck { packet_id });
                }
                self.events.push(SessionEvent::Incoming(publish));
            }
            (State::Ready { .. }, Packet::PubAck { packet_id }) => {
                if self.in_flight.remove(u64::from(packet_id)).is_some() {
                    self.events.push(SessionEvent::Acked(packet_id));
                }
                let refill_at = self.config.max_in_flight - self.config.max_in_flight.div_ceil(4);
                if self.in_flight.len() <= refill_at {
                    self.window_full = false;
                }
            }
            (_, Packet::PingResp) => {}
            (_, other) => {
                let unexpected = text!("unexpected ", other.kind());
                self.fail(now, ConnectionLoss::Protocol(unexpected));
            }
        }
    }

    fn become_ready(&mut self, now: u64, conn: ConnectionId) {
        self.state = State::Ready { conn, since: now };
        self.failed_attempts = 0;
        self.events.push(SessionEvent::Ready);
    }

    pub(crate) fn handle_timeout(&mut self, now: u64) {
        match self.state {
            State::Waiting { at } if at <= now && !self.offline => self.open(now),
            State::Opening { deadline, .. }
            | State::AwaitingConnAck { deadline, .. }
            | State::AwaitingSubAck { deadline, .. }
                if deadline <= now =>
            {
                self.fail(now, ConnectionLoss::ConnectTimedOut)
            }
            State::Ready { .. } => {
                if self.ack_deadline().is_some_and(|at| at <= now) {
                    return self.fail(now, ConnectionLoss::AckTimedOut);
                }
                if self.ping_deadline.is_some_and(|at| at <= now) {
                    return self.fail(now, ConnectionLoss::KeepAliveTimedOut);
                }
                if self.ping_deadline.is_none() && self.keep_alive_due() <= now {
                    self.send_packet(now, &Packet::PingReq);
                    self.ping_deadline = Some(now + self.config.ping_timeout_ms);
                }
            }
            _ => {}
        }
    }

    fn ack_deadline(&self) -> Option<u64> {
        let oldest = self.in_flight.values().min()?;
        Some(oldest + self.config.ack_timeout_ms)
    }

    fn keep_alive_due(&self) -> u64 {
        self.last_sent_at.min(self.last_received_at)
            + u64::from(self.config.keep_alive_secs) * 1_000
    }

    fn open(&mut self, now: u64) {
        let Some(params) = &self.params else {
            self.state = State::Idle;
            return;
        };
        if params.expires_at.is_some_and(|at| at <= now) {
            // Connecting with it would only be refused; never present an expired credential.
            self.params = None;
            self.state = State::Idle;
            self.events.push(SessionEvent::CredentialExpired);
            return;
        }
        let refused = match &params.endpoint {
            Endpoint::Tcp { host, port } => check_plain_host(host, *port).err(),
            Endpoint::WebSocket { url } => check_url(url).err(),
            Endpoint::Tls { .. } => None,
        };
        if let Some(refused) = refused {
            // Never opened: a failed attempt like any other, so the device renews its
            // credential (and with it the announced endpoints) every few of them.
            return self.lose(now, ConnectionLoss::Insecure(refused.text()));
        }
        let conn = ConnectionId(self.next_conn);
        self.next_conn += 1;
        self.rx.clear();
        self.skip = 0;
        self.tx.clear();
        self.ping_deadline = None;
        self.outputs.push(SessionOutput::Connect {
            conn,
            endpoint: params.endpoint.clone(),
        });
        self.events.push(SessionEvent::Connecting);
        self.state = State::Opening {
            conn,
            deadline: now + self.config.connect_timeout_ms,
        };
    }

    /// A protocol failure on our side of the connection: close it and retry later.
    fn fail(&mut self, now: u64, reason: ConnectionLoss) {
        if let Some(conn) = self.connection() {
            self.outputs_drop_pending_tx();
            self.outputs.push(SessionOutput::Close { conn });
        }
        self.lose(now, reason);
    }

    fn drop_connection(&mut self) {
        if let Some(conn) = self.connection() {
            self.flush_tx(conn);
            self.outputs.push(SessionOutput::Close { conn });
        }
        self.forget_in_flight();
        // Closed on purpose: no attempt failed.
        self.events.push(SessionEvent::Lost {
            reason: None,
            failed_attempts: 0,
        });
        self.state = State::Idle;
    }

    fn lose(&mut self, now: u64, reason: ConnectionLoss) {
        if let State::Ready { since, .. } = self.state
            && now.saturating_sub(since) >= self.config.stable_after_ms
        {
            self.backoff.reset();
        }
        if !matches!(self.state, State::Ready { .. }) {
            self.failed_attempts = self.failed_attempts.saturating_add(1);
        }
        self.forget_in_flight();
        self.events.push(SessionEvent::Lost {
            reason: Some(reason),
            failed_attempts: self.failed_attempts,
        });
        self.state = if self.params.is_some() {
            State::Waiting {
                at: now + self.backoff_delay(),
            }
        } else {
            State::Idle
        };
    }

    fn backoff_delay(&mut self) -> u64 {
        self.backoff.next_delay(&mut self.rng, None)
    }

    fn outputs_drop_pending_tx(&mut self) {
        self.tx.clear();
    }

    fn flush_tx(&mut self, conn: ConnectionId) {
        if !self.tx.is_empty() {
            self.outputs.push(SessionOutput::Transmit {
                conn,
                bytes: core::mem::take(&mut self.tx),
            });
        }
    }

    #[must_use]
    pub(crate) fn poll_output(&mut self) -> Option<SessionOutput> {
        if let Some(conn) = self.connection()
            && !matches!(self.state, State::Opening { .. })
        {
            self.flush_tx(conn);
        }
        (!self.outputs.is_empty()).then(|| self.outputs.remove(0))
    }

    #[must_use]
    pub(crate) fn poll_event(&mut self) -> Option<SessionEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Idle => None,
            State::Waiting { .. } if self.offline => None,
            State::Waiting { at } => Some(at),
            State::Opening { deadline, .. }
            | State::AwaitingConnAck { deadline, .. }
            | State::AwaitingSubAck { deadline, .. } => Some(deadline),
            State::Ready { .. } => {
                let keep_alive = self.ping_deadline.unwrap_or(self.keep_alive_due());
                Some(
                    self.ack_deadline()
                        .map_or(keep_alive, |ack| ack.min(keep_alive)),
                )
            }
        }
    }
}
