//! A model of the Platform's wire contract for the simulator: provisioning operations with a
//! technician, Registration Tokens with lifetimes and revocation, SAS credentials, an MQTT
//! gateway with deduplication by `vdev-seq`, the twin and file uploads.
//!
//! It is written from docs/wire-contract.md, not from the core's code: the point is to hold the
//! device to the contract. During the fault window the harness lets it answer with the failures a
//! real Platform gives: 429 and 503 with `Retry-After`, 423 (workspace disabled), transient 500s on
//! the blob and the upload notification, and a final 400 that refuses an upload for good. It
//! decodes MQTT with the core's public codec; the real stand-in Platform (`vdev-platform`) checks
//! the codec against an independent implementation.

use std::collections::{BTreeMap, BTreeSet};

use super::faults::Faults;
use super::rng::Rng;
use serde_json::{Value, json};
use vdev_core::testing::mqtt::{
    self as codec, ConnAck, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubAckCode,
};
use vdev_core::testing::{decode_property_bag, format_rfc3339, format_timespan};
use vdev_core::{HttpRequest, HttpResponse, Method};

pub const WORKSPACE: &str = "ws1";
pub const PROVISIONING_TOKEN: &str = "pt-secret";
pub const HOST: &str = "hub.sim";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpState {
    Pending,
    Approved,
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub expires_at: u64,
    pub state: OpState,
    pub device_id: String,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub device_id: String,
    pub expires_at: Option<u64>,
    pub revoked: bool,
    /// Replaced by a refresh: by which token, and when.
    pub superseded: Option<(String, u64)>,
    /// Used for `register` or `refresh`.
    pub used: bool,
}

/// What a payload starts with when the simulated gateway refuses it.
pub const POISON: &[u8] = b"POISON ";

/// How long a token superseded by a refresh may refresh again while its successor is unused
/// (the stand-in's rule: the device never got the answer).
const REFRESH_RETRY_GRACE_MS: u64 = 15 * 60 * 1_000;

#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The device whose connection published it.
    pub device_id: String,
    pub origin: String,
    pub seq: u64,
    pub payload: Vec<u8>,
    pub properties: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct BrokerConn {
    rx: Vec<u8>,
    pub device_id: Option<String>,
    pub sas_expires_at: Option<u64>,
}

/// What a token or credential was when it was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Expired,
    Revoked,
    Unknown,
}

#[derive(Debug)]
pub struct Platform {
    pub ops: BTreeMap<String, Operation>,
    pub tokens: BTreeMap<String, Token>,
    pub sas: BTreeMap<String, (String, u64)>,
    pub token_lifetime: Option<u64>,
    pub sas_lifetime: u64,
    pub op_lifetime: u64,
    pub stored: Vec<StoredMessage>,
    pub replays_dropped: u64,
    /// The highest sequence number stored per (device, origin), as the stand-in keeps it.
    max_seq: BTreeMap<(String, String), u64>,
    pub conns: BTreeMap<u64, BrokerConn>,
    pub desired: Value,
    pub desired_version: u64,
    pub reported: Value,
    pub reported_version: u64,
    /// The device the twin above belongs to (the newest identity approved); a new identity
    /// gets a fresh twin. Identities only move forward here, so no twin is ever needed again.
    twin_owner: Option<String>,
    /// Identities the device took while it knew none (the harness adds them): a reported patch
    /// the app made before any registration belongs to such a one. After a crash that lost
    /// an unsaved identity there can be two.
    pub adopted_without_identity: BTreeSet<String>,
    /// The Device ID the technician gives every later approval (after a re-approval under a
    /// new Device ID); `None`: the one the device asked for.
    assigned_device_id: Option<String>,
    /// Reported patches that reached a device other than the one the app made them for.
    pub misdirected_patches: Vec<String>,
    pub blobs: BTreeMap<String, Vec<u8>>,
    uploads: BTreeMap<String, String>,
    counter: u64,
    /// Operations created since the harness last looked (for the technician).
    pub new_ops: Vec<String>,
    pub drop_pubacks: bool,
    /// How many register answers still announce a cleartext endpoint off loopback.
    pub insecure_endpoints_left: u32,
    /// How many did.
    pub insecure_endpoints_announced: u64,
    /// Blob names whose upload was refused for good; asking again gets the same answer.
    pub refused_blobs: Vec<String>,
    /// Answers 429, 503 or 423 given.
    pub throttled: u64,
    /// Transient upload failures (500) given.
    pub upload_errors: u64,
    /// Refreshes answered (each supersedes the token it replaced).
    pub refreshes: u64,
    /// Refreshes retried with a superseded token after a lost answer, and allowed.
    pub refresh_retries: u64,
    /// Whether such a retry is allowed (the stand-in's rule; off only to show what it prevents).
    pub refresh_retry_grace: bool,
    /// Such retries refused while `refresh_retry_grace` is off: each sends the device to a
    /// technician.
    pub lost_refresh_answers_refused: u64,
    /// Publishes refused by closing the connection (poison messages).
    pub refused_publishes: u64,
}

/// Which device call a request is: faults and the `Retry-After` check are per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Init,
    Complete,
    Register,
    Refresh,
    Files,
    Blob,
    Notification,
    Other,
}

impl Endpoint {
    pub fn of(request: &HttpRequest) -> Self {
        let path = request.url.split('?').next().unwrap_or("");
        match (request.method, path) {
            (Method::Post, p) if p.ends_with("/provisioning-operations/init") => Self::Init,
            (Method::Put, p) if p.ends_with("/provisioning-operations/complete") => Self::Complete,
            (Method::Put, p) if p.ends_with("/devices/register") => Self::Register,
            (Method::Put, p) if p.ends_with("/registration-tokens/refresh") => Self::Refresh,
            (Method::Post, p) if p.ends_with("/files") => Self::Files,
            (Method::Post, p) if p.ends_with("/files/notifications") => Self::Notification,
            (Method::Put, p) if p.starts_with("https://blobs.sim/") => Self::Blob,
            _ => Self::Other,
        }
    }
}

impl Platform {
    pub fn new(token_lifetime: Option<u64>, sas_lifetime: u64, op_lifetime: u64) -> Self {
        Self {
            ops: BTreeMap::new(),
            tokens: BTreeMap::new(),
            sas: BTreeMap::new(),
            token_lifetime,
            sas_lifetime,
            op_lifetime,
            stored: Vec::new(),
            replays_dropped: 0,
            max_seq: BTreeMap::new(),
            conns: BTreeMap::new(),
            desired: json!({}),
            desired_version: 1,
            reported: json!({}),
            reported_version: 1,
            twin_owner: None,
            adopted_without_identity: BTreeSet::new(),
            assigned_device_id: None,
            misdirected_patches: Vec::new(),
            blobs: BTreeMap::new(),
            uploads: BTreeMap::new(),
            counter: 0,
            new_ops: Vec::new(),
            drop_pubacks: false,
            insecure_endpoints_left: 0,
            insecure_endpoints_announced: 0,
            refused_blobs: Vec::new(),
            throttled: 0,
            upload_errors: 0,
            refreshes: 0,
            refresh_retries: 0,
            refresh_retry_grace: true,
            lost_refresh_answers_refused: 0,
            refused_publishes: 0,
        }
    }

    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    pub fn token_validity(&self, token: &str, now: u64) -> Validity {
        match self.tokens.get(token) {
            None => Validity::Unknown,
            Some(t) if t.revoked || t.superseded.is_some() => Validity::Revoked,
            Some(t) if t.expires_at.is_some_and(|at| now >= at) => Validity::Expired,
            Some(_) => Validity::Valid,
        }
    }

    pub fn sas_validity(&self, sas: &str, now: u64) -> Validity {
        match self.sas.get(sas) {
            None => Validity::Unknown,
            Some((_, at)) if now >= *at => Validity::Expired,
            Some(_) => Validity::Valid,
        }
    }

    pub fn approve(&mut self, op_id: &str, now: u64) {
        if let Some(op) = self.ops.get_mut(op_id)
            && op.state == OpState::Pending
            && op.expires_at > now
        {
            op.state = OpState::Approved;
            if let Some(assigned) = &self.assigned_device_id {
                op.device_id = assigned.clone();
            }
            let device_id = op.device_id.clone();
            if self.twin_owner.as_ref() != Some(&device_id) {
                if self.twin_owner.is_some() {
                    self.desired = json!({});
                    self.desired_version = 1;
                    self.reported = json!({});
                    self.reported_version = 1;
                }
                self.twin_owner = Some(device_id);
            }
        }
    }

    /// The technician re-approves the device under a new Device ID: every token and credential
    /// of the old identity is revoked, and the next approval gives `device_id`. Returns
    /// connections to close.
    pub fn reidentify(&mut self, device_id: &str) -> Vec<u64> {
        self.assigned_device_id = Some(device_id.to_owned());
        self.revoke_all()
    }

    /// Revokes every token and credential of the device; returns connections to close.
    pub fn revoke_all(&mut self) -> Vec<u64> {
        for token in self.tokens.values_mut() {
            token.revoked = true;
        }
        self.sas.clear();
        self.conns.keys().copied().collect()
    }

    pub fn set_desired(&mut self, patch: Value) -> Vec<(u64, Vec<u8>)> {
        json_patch::merge(&mut self.desired, &patch);
        self.desired_version += 1;
        let mut body = patch;
        body["$version"] = json!(self.desired_version);
        let packet = Packet::Publish(Publish {
            topic: format!(
                "$iothub/twin/PATCH/properties/desired/?$version={}",
                self.desired_version
            ),
            qos: QoS::AtMostOnce,
            packet_id: None,
            dup: false,
            retain: false,
            payload: body.to_string().into_bytes(),
        });
        let mut bytes = Vec::new();
        packet.encode(&mut bytes).unwrap();
        self.conns
            .iter()
            .filter(|(_, c)| c.device_id.is_some())
            .map(|(id, _)| (*id, bytes.clone()))
            .collect()
    }

    // ----- HTTP ---------------------------------------------------------------------------

    /// Answers a device call; `faults` are the world's faults and the harness's randomness,
    /// while faults are allowed.
    pub fn http(
        &mut self,
        now: u64,
        request: &HttpRequest,
        faults: Option<(&Faults, &mut Rng)>,
    ) -> HttpResponse {
        let endpoint = Endpoint::of(request);
        if let Some((faults, rng)) = faults {
            if endpoint != Endpoint::Other && rng.chance(faults.throttle_rate) {
                self.throttled += 1;
                return match rng.below(3) {
                    0 => retry_after(429, rng.range(1..21)),
                    1 => retry_after(503, rng.range(1..21)),
                    _ => problem(423, "/problems/workspaceDisabled"),
                };
            }
            if matches!(endpoint, Endpoint::Blob | Endpoint::Notification)
                && rng.chance(faults.upload_error_rate)
            {
                self.upload_errors += 1;
                return status(500);
            }
            if endpoint == Endpoint::Files && rng.chance(faults.upload_refusal_rate) {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                // Refused for good means from the first request on: a blob already uploaded
                // (its link message possibly stored) is not refused afterwards.
                if let Some(blob) = body["blobName"].as_str()
                    && !self.blobs.contains_key(blob)
                {
                    self.refused_blobs.push(blob.to_owned());
                }
            }
        }
        self.answer(now, request)
    }

    fn answer(&mut self, now: u64, request: &HttpRequest) -> HttpResponse {
        let auth = request
            .headers
            .iter()
            .find(|(k, _)| k == "Authorization")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let path = request
            .url
            .strip_prefix("https://platform.sim")
            .or_else(|| request.url.strip_prefix("https://blobs.sim"))
            .unwrap_or(&request.url);
        let device_token = auth.strip_prefix("DeviceToken ").unwrap_or("");
        match (request.method, path.split('?').next().unwrap_or("")) {
            (Method::Post, "/provisioning-operations/init") => {
                if device_token != PROVISIONING_TOKEN {
                    return problem(401, "/problems/unauthorized");
                }
                let id = self.next("op");
                let device_id = body["deviceId"]
                    .as_str()
                    .unwrap_or("sim-default")
                    .to_owned();
                let code = format!("{:06}", self.counter * 7919 % 1_000_000);
                self.ops.insert(
                    id.clone(),
                    Operation {
                        expires_at: now + self.op_lifetime,
                        state: OpState::Pending,
                        device_id,
                    },
                );
                self.new_ops.push(id.clone());
                ok(json!({
                    "provisioningOperationId": id,
                    "verificationCode": code,
                    "expirationTime": format_rfc3339(now + self.op_lifetime),
                }))
            }
            (Method::Put, "/provisioning-operations/complete") => {
                if device_token != PROVISIONING_TOKEN {
                    return problem(401, "/problems/unauthorized");
                }
                let id = body["provisioningOperationId"].as_str().unwrap_or("");
                let Some(op) = self.ops.get(id).cloned() else {
                    return problem(404, "/problems/notFound");
                };
                match op.state {
                    _ if op.expires_at <= now => problem(
                        410,
                        "/problems/deviceProvisioning/provisioningOperationExpired",
                    ),
                    OpState::Pending => status(202),
                    OpState::Approved => {
                        // A new token invalidates the older ones of this device.
                        for t in self.tokens.values_mut() {
                            if t.device_id == op.device_id {
                                t.revoked = true;
                            }
                        }
                        let token = self.next("rt");
                        let expires_at = self.token_lifetime.map(|l| now + l);
                        self.tokens.insert(
                            token.clone(),
                            Token {
                                device_id: op.device_id.clone(),
                                expires_at,
                                revoked: false,
                                superseded: None,
                                used: false,
                            },
                        );
                        ok(json!({
                            "registrationToken": token,
                            "expirationTime": expires_at.map(format_rfc3339),
                        }))
                    }
                }
            }
            (Method::Put, "/devices/register") => {
                let token = device_token.to_owned();
                if self.token_validity(&token, now) != Validity::Valid {
                    return problem(401, "/problems/unauthorized");
                }
                let t = self.tokens[&token].clone();
                self.tokens.get_mut(&token).expect("valid").used = true;
                let sas = format!(
                    "SharedAccessSignature sr={HOST}&sig={}&se={}",
                    self.next("sig"),
                    (now + self.sas_lifetime) / 1000
                );
                self.sas
                    .insert(sas.clone(), (t.device_id.clone(), now + self.sas_lifetime));
                let remaining = t.expires_at.map(|at| format_timespan((at - now) as i64));
                // A misconfigured gateway first: plain MQTT announced off loopback, which the
                // device must refuse to open (and get past by registering again).
                let mqtt_tcp = if self.insecure_endpoints_left > 0 {
                    self.insecure_endpoints_left -= 1;
                    self.insecure_endpoints_announced += 1;
                    "192.0.2.7:1883"
                } else {
                    "127.0.0.1:1883"
                };
                ok(json!({
                    "connectionString": format!("HostName={HOST};DeviceId={WORKSPACE}:{};SharedAccessSignature={sas}", t.device_id),
                    "iotHubHostName": HOST,
                    "connectionStringType": "SharedAccessSignature",
                    "connectionStringExpiration": format_rfc3339(now + self.sas_lifetime),
                    "tokenRemainingLifetime": remaining,
                    "gatewayEndpoints": {"mqttTcp": mqtt_tcp, "http": "https://platform.sim"},
                }))
            }
            (Method::Put, "/devices/registration-tokens/refresh") => {
                if device_token != PROVISIONING_TOKEN {
                    return problem(401, "/problems/unauthorized");
                }
                let old = body["registrationToken"].as_str().unwrap_or("").to_owned();
                // As the stand-in: the presented token when it is valid; when a refresh
                // replaced it moments ago and its successor was never used, the device lost
                // that answer and this is its retry.
                let replaced = match self.tokens.get(&old) {
                    _ if self.token_validity(&old, now) == Validity::Valid => old.clone(),
                    Some(Token {
                        revoked: false,
                        superseded: Some((successor, at)),
                        expires_at,
                        ..
                    }) if expires_at.is_none_or(|e| now < e)
                        && now - at <= REFRESH_RETRY_GRACE_MS
                        && self.token_validity(successor, now) == Validity::Valid
                        && !self.tokens[successor].used =>
                    {
                        if !self.refresh_retry_grace {
                            self.lost_refresh_answers_refused += 1;
                            return problem(401, "/problems/unauthorized");
                        }
                        self.refresh_retries += 1;
                        successor.clone()
                    }
                    _ => return problem(401, "/problems/unauthorized"),
                };
                let device_id = self.tokens[&old].device_id.clone();
                let token = self.next("rt");
                let expires_at = self.token_lifetime.map(|l| now + l);
                self.tokens.insert(
                    token.clone(),
                    Token {
                        device_id,
                        expires_at,
                        revoked: false,
                        superseded: None,
                        used: false,
                    },
                );
                self.refreshes += 1;
                for id in [&old, &replaced] {
                    if let Some(t) = self.tokens.get_mut(id) {
                        t.used = true;
                        t.superseded = Some((token.clone(), now));
                    }
                }
                ok(
                    json!({"registrationToken": token, "expirationTime": expires_at.map(format_rfc3339)}),
                )
            }
            (Method::Post, p) if p.ends_with("/files") => {
                if self.sas_validity(auth, now) != Validity::Valid {
                    return problem(401, "/problems/unauthorized");
                }
                let blob = body["blobName"].as_str().unwrap_or("").to_owned();
                if self.refused_blobs.contains(&blob) {
                    return problem(400, "/problems/upload/blobRefused");
                }
                let correlation = self.next("corr");
                self.uploads.insert(correlation.clone(), blob.clone());
                ok(json!({
                    "correlationId": correlation,
                    "hostName": "blobs.sim",
                    "containerName": "c",
                    "blobName": blob,
                    "sasToken": "?sig=x",
                    "uploadUrl": format!("https://blobs.sim/c/{blob}?sig=x"),
                }))
            }
            (Method::Put, p) if p.starts_with("/c/") => {
                self.blobs
                    .insert(p["/c/".len()..].to_owned(), request.body.clone());
                status(201)
            }
            (Method::Post, p) if p.ends_with("/files/notifications") => {
                if self.sas_validity(auth, now) != Validity::Valid {
                    return problem(401, "/problems/unauthorized");
                }
                status(204)
            }
            _ => problem(404, "/problems/notFound"),
        }
    }

    // ----- MQTT ---------------------------------------------------------------------------

    pub fn open(&mut self, link: u64) {
        self.conns.insert(link, BrokerConn::default());
    }

    pub fn close(&mut self, link: u64) {
        self.conns.remove(&link);
    }

    /// Bytes from the device; returns bytes to send back and whether to close the connection.
    pub fn mqtt(&mut self, now: u64, link: u64, bytes: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let Some(conn) = self.conns.get_mut(&link) else {
            return (out, true);
        };
        conn.rx.extend_from_slice(bytes);
        loop {
            let conn = self.conns.get_mut(&link).expect("checked above");
            let (packet, used) = match codec::decode(&conn.rx, 1 << 24) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => return (out, false),
                Err(error) => panic!("device sent a malformed packet: {error}"),
            };
            conn.rx.drain(..used);
            if !self.handle_packet(now, link, packet, &mut out) {
                return (out, true);
            }
        }
    }

    fn handle_packet(&mut self, now: u64, link: u64, packet: Packet, out: &mut Vec<u8>) -> bool {
        let send = |out: &mut Vec<u8>, p: Packet| p.encode(out).unwrap();
        let conn_device = self.conns[&link].device_id.clone();
        match packet {
            Packet::Connect(connect) => {
                let password =
                    String::from_utf8(connect.password.unwrap_or_default()).unwrap_or_default();
                let accepted = match self.sas.get(&password) {
                    Some((device, at)) if *at > now => {
                        let expected = format!("{WORKSPACE}:{device}");
                        connect.client_id == expected
                            && connect.username.as_deref()
                                == Some(&format!("{HOST}/{expected}/?api-version=2018-06-30"))
                    }
                    _ => false,
                };
                if !accepted {
                    send(
                        out,
                        Packet::ConnAck(ConnAck {
                            session_present: false,
                            code: ConnectReturnCode::NotAuthorized,
                        }),
                    );
                    return false;
                }
                let (device, at) = self.sas[&password].clone();
                let conn = self.conns.get_mut(&link).unwrap();
                conn.device_id = Some(device);
                conn.sas_expires_at = Some(at);
                send(
                    out,
                    Packet::ConnAck(ConnAck {
                        session_present: false,
                        code: ConnectReturnCode::Accepted,
                    }),
                );
            }
            _ if conn_device.is_none() => return false,
            Packet::Subscribe(s) => {
                let codes = s
                    .filters
                    .iter()
                    .map(|(_, q)| SubAckCode::Granted(*q))
                    .collect();
                send(
                    out,
                    Packet::SubAck(SubAck {
                        packet_id: s.packet_id,
                        codes,
                    }),
                );
            }
            Packet::PingReq => send(out, Packet::PingResp),
            Packet::Publish(p) => return self.handle_publish(now, conn_device.unwrap(), p, out),
            Packet::Disconnect => return false,
            _ => {}
        }
        true
    }

    fn handle_publish(&mut self, _now: u64, device: String, p: Publish, out: &mut Vec<u8>) -> bool {
        let send = |out: &mut Vec<u8>, p: Packet| p.encode(out).unwrap();
        let events_prefix = format!("devices/{WORKSPACE}:{device}/messages/events/");
        if let Some(bag) = p.topic.strip_prefix(&events_prefix) {
            let properties = decode_property_bag(bag).expect("property bag decodes");
            let seq_tag = properties
                .iter()
                .find(|(k, _)| k == "vdev-seq")
                .map(|(_, v)| v.clone());
            let (origin, seq) = seq_tag
                .as_deref()
                .and_then(|t| t.split_once('.'))
                .map(|(o, s)| (o.to_owned(), s.parse::<u64>().expect("seq is a number")))
                .expect("vdev always sends vdev-seq");
            let key = (device.clone(), origin.clone());
            let fresh = self.max_seq.get(&key).is_none_or(|max| seq > *max);
            // A message this gateway refuses: the connection is closed on it, unacknowledged,
            // as a gateway does with a PUBLISH it will not take (MQTT 3.1.1 has no NACK).
            if fresh && p.payload.starts_with(POISON) {
                self.refused_publishes += 1;
                return false;
            }
            if fresh {
                self.max_seq.insert(key, seq);
                let externalized = properties
                    .iter()
                    .any(|(k, v)| k == "has-externalized-payload" && v == "true");
                let payload = if externalized {
                    let link: Value = serde_json::from_slice(&p.payload).expect("link JSON");
                    let name = link["link"].as_str().expect("link name");
                    self.blobs
                        .get(name)
                        .cloned()
                        .expect("the blob was uploaded before the link")
                } else {
                    p.payload
                };
                let compressed = properties
                    .iter()
                    .any(|(k, v)| k == "content-encoding" && v == "br");
                let payload = if compressed {
                    let mut plain = Vec::new();
                    brotli::BrotliDecompress(&mut &payload[..], &mut plain).expect("valid brotli");
                    plain
                } else {
                    payload
                };
                self.stored.push(StoredMessage {
                    device_id: device.clone(),
                    origin,
                    seq,
                    payload,
                    properties,
                });
            } else {
                self.replays_dropped += 1;
            }
            if !self.drop_pubacks
                && let Some(packet_id) = p.packet_id
            {
                send(out, Packet::PubAck { packet_id });
            }
            return true;
        }
        if let Some(rest) = p.topic.strip_prefix("$iothub/twin/GET/?$rid=") {
            let body = json!({
                "desired": merge_version(&self.desired, self.desired_version),
                "reported": merge_version(&self.reported, self.reported_version),
            });
            send(out, twin_response(200, rest, body.to_string().into_bytes()));
            return true;
        }
        if let Some(rest) = p
            .topic
            .strip_prefix("$iothub/twin/PATCH/properties/reported/?$rid=")
        {
            let patch: Value = serde_json::from_slice(&p.payload).expect("reported patch JSON");
            // The app marks each patch with the identity its device had when it made it.
            if let Some(owner) = patch["owner"].as_str() {
                let adopted = self.adopted_without_identity.contains(&device);
                if owner != device && !(owner == "none" && adopted) {
                    self.misdirected_patches
                        .push(format!("device {device} got the reported patch {patch}"));
                }
            }
            json_patch::merge(&mut self.reported, &patch);
            self.reported_version += 1;
            let rid = format!("{rest}&$version={}", self.reported_version);
            send(out, twin_response(204, &rid, Vec::new()));
            return true;
        }
        panic!("device published to an unexpected topic {}", p.topic);
    }
}

fn merge_version(doc: &Value, version: u64) -> Value {
    let mut doc = doc.clone();
    doc["$version"] = json!(version);
    doc
}

fn twin_response(status: u16, rid: &str, payload: Vec<u8>) -> Packet {
    Packet::Publish(Publish {
        topic: format!("$iothub/twin/res/{status}/?$rid={rid}"),
        qos: QoS::AtMostOnce,
        packet_id: None,
        dup: false,
        retain: false,
        payload,
    })
}

fn status(code: u16) -> HttpResponse {
    HttpResponse {
        status: code,
        retry_after: None,
        body: Vec::new(),
    }
}

fn ok(body: Value) -> HttpResponse {
    HttpResponse {
        status: 200,
        retry_after: None,
        body: body.to_string().into_bytes(),
    }
}

fn retry_after(code: u16, seconds: u64) -> HttpResponse {
    HttpResponse {
        status: code,
        retry_after: Some(seconds.to_string()),
        body: Vec::new(),
    }
}

fn problem(code: u16, kind: &str) -> HttpResponse {
    HttpResponse {
        status: code,
        retry_after: None,
        body: json!({"type": kind, "title": "gone", "status": code})
            .to_string()
            .into_bytes(),
    }
}
