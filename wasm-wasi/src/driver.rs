//! The single-threaded event loop that drives [`vdev_core::Device`] with WASI I/O: MQTT over
//! `wasi:sockets` TCP, HTTP over `wasi:http/outgoing-handler`, timers on
//! `wasi:clocks/monotonic-clock`, the seed from `wasi:random`, the [`FileStore`] in a preopened
//! directory, and MQTT over TLS with a rustls session ([`crate::tls`]) on the same TCP stream,
//! and MQTT over WebSocket ([`crate::websocket`]) on top of either.
//!
//! It is written on `wasi:io/poll` directly rather than on an async runtime: the library world
//! hands control back to its caller after every `poll(timeout-ms)`, so sockets and pending
//! requests must live in the driver between calls — `wstd`'s reactor only exists inside one
//! `block_on`, and futures parked across two of them would lose their wake-ups. Each turn:
//! drain the core's outputs, poll every pollable plus the core's deadline once, feed what is
//! ready, repeat. Protocol decisions all stay in the core.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use vdev_core::{
    ConnectionId, Device, Endpoint, HttpRequest, HttpResponse, Input, MessageOptions, Method,
    Output, RequestId, SendError, Seq, StoreError, StreamOptions, TwinError,
};
use wasip2::clocks::{monotonic_clock, wall_clock};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method as HttpMethod,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::poll::{self, Pollable};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};
use wasip2::sockets::network::{
    ErrorCode as SocketError, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress,
    Ipv6SocketAddress, Network,
};
use wasip2::sockets::tcp::TcpSocket;
use wasip2::sockets::{instance_network, ip_name_lookup, tcp_create_socket};

use crate::file_store::{FileStore, FileStoreError};
use crate::notice::Notice;
use crate::settings::{Settings, SettingsError};
use crate::tls::TlsSession;
use crate::websocket::WebSocketSession;

/// Most bytes read from a socket or response body per call.
const READ_CHUNK: u64 = 64 * 1024;
/// Most request-body bytes written per turn of the loop, so a large upload shares the loop
/// with the MQTT connection instead of holding it.
const BODY_CHUNK_PER_TURN: usize = 256 * 1024;

/// Milliseconds since the Unix epoch from `wasi:clocks/wall-clock`, the core's notion of time.
pub fn now_ms() -> u64 {
    let now = wall_clock::now();
    now.seconds * 1_000 + u64::from(now.nanoseconds / 1_000_000)
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The settings are unusable.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The store directory could not be opened.
    #[error("store unavailable: {0}")]
    Store(#[from] crate::file_store::FileStoreError),
}

/// Why a message was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreFailure {
    /// The core refused it.
    #[error(transparent)]
    Refused(#[from] SendError),
    /// The file store could not write it durably.
    #[error("not stored: {0}")]
    NotStored(StoreError),
}

#[derive(Debug)]
enum Conn {
    Connecting {
        ready: Pollable,
        socket: TcpSocket,
        /// The server name to check, for a TLS connection.
        tls_host: Option<String>,
        /// The URL to upgrade to, for MQTT over WebSocket.
        web_socket: Option<String>,
    },
    Open {
        /// The TLS session, for a TLS connection; the core hears of the connection once its
        /// handshake is done.
        tls: Option<Box<TlsSession>>,
        /// The WebSocket on top (of TLS or TCP), for MQTT over WebSocket; the core hears of the
        /// connection once its upgrade is done.
        web_socket: Option<Box<WebSocketSession>>,
        // Field order is drop order: pollables before their streams, streams before the socket.
        readable: Pollable,
        writable: Pollable,
        input: InputStream,
        output: OutputStream,
        pending: Vec<u8>,
        socket: TcpSocket,
    },
}

#[derive(Debug)]
struct PendingHttp {
    // Field order is drop order: the body (if still being written) before the response.
    body: Option<BodyWriter>,
    progress: ResponseProgress,
    /// When the core gives up on it (it times the request out itself); the host lets go then.
    deadline: u64,
    /// The most body bytes the core takes (`HttpRequest::max_response_bytes`).
    max_response_bytes: u32,
}

/// Where a request's response is: its head awaited, or its body read as it arrives, a little
/// every turn it is readable (a blocking read would hold the loop, MQTT keep-alive included,
/// for as long as a slow server trickles).
#[derive(Debug)]
enum ResponseProgress {
    Head {
        ready: Pollable,
        response: FutureIncomingResponse,
    },
    Body(Box<BodyReader>),
}

#[derive(Debug)]
struct BodyReader {
    // Field order is drop order: the pollable before its stream, the stream before its body,
    // the body before its response.
    readable: Pollable,
    stream: InputStream,
    incoming: IncomingBody,
    _response: IncomingResponse,
    status: u16,
    retry_after: Option<String>,
    bytes: Vec<u8>,
    /// Reading stops one byte past this (`HttpRequest::max_response_bytes`).
    max_bytes: u32,
}

impl BodyReader {
    fn new(response: IncomingResponse, max_bytes: u32) -> Result<Self, String> {
        let status = response.status();
        // Every value, joined as `fetch` joins them: the core decides which counts.
        let values = response.headers().get("retry-after");
        let retry_after = (!values.is_empty()).then(|| {
            values
                .iter()
                .map(|value| String::from_utf8_lossy(value).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        });
        let incoming = response
            .consume()
            .map_err(|()| "response body taken".to_owned())?;
        let stream = incoming
            .stream()
            .map_err(|()| "response body taken".to_owned())?;
        Ok(Self {
            readable: stream.subscribe(),
            stream,
            incoming,
            _response: response,
            status,
            retry_after,
            bytes: Vec::new(),
            max_bytes,
        })
    }

    /// Takes what the body has now: `None` while more is to come, the response once it ended.
    fn read_available(&mut self) -> Option<Result<(), String>> {
        loop {
            match self.stream.read(READ_CHUNK) {
                Ok(chunk) if chunk.is_empty() => return None,
                Ok(chunk) => {
                    self.bytes.extend_from_slice(&chunk);
                    if self.bytes.len() > self.max_bytes as usize {
                        // One byte past the core's limit is enough for it to see the answer
                        // is too long; the rest is never read.
                        self.bytes.truncate(self.max_bytes as usize + 1);
                        return Some(Ok(()));
                    }
                }
                Err(StreamError::Closed) => return Some(Ok(())),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Some(Err(format!("response body: {}", e.to_debug_string())));
                }
            }
        }
    }

    fn finish(self) -> HttpResponse {
        let Self {
            readable,
            stream,
            incoming,
            _response,
            status,
            retry_after,
            bytes,
            max_bytes,
        } = self;
        drop(readable);
        drop(stream);
        // A body cut at the limit is dropped unfinished: its trailers are never read. Either
        // way it goes before its response.
        if bytes.len() <= max_bytes as usize {
            drop(IncomingBody::finish(incoming));
        } else {
            drop(incoming);
        }
        drop(_response);
        HttpResponse {
            status,
            retry_after,
            body: bytes,
        }
    }
}

/// A request body written as the host takes it, a little every turn the stream is writable,
/// instead of with blocking writes that would hold the loop for the whole upload.
#[derive(Debug)]
struct BodyWriter {
    // Field order is drop order: the pollable before its stream, the stream before the body
    // (`finish` needs the stream gone).
    writable: Pollable,
    stream: OutputStream,
    body: OutgoingBody,
    bytes: Vec<u8>,
    written: usize,
}

/// What writing a request body came to this turn.
enum BodyProgress {
    /// More to write once the stream is writable again.
    Waiting(BodyWriter),
    /// Written and finished.
    Done,
}

impl BodyWriter {
    fn new(body: OutgoingBody, bytes: Vec<u8>) -> Result<Self, String> {
        let stream = body.write().map_err(|()| "request body taken".to_owned())?;
        Ok(Self {
            writable: stream.subscribe(),
            stream,
            body,
            bytes,
            written: 0,
        })
    }

    /// Writes what the stream takes now (at most [`BODY_CHUNK_PER_TURN`]); finishes the body
    /// once every byte is written.
    fn advance(mut self) -> Result<BodyProgress, String> {
        let mut budget = BODY_CHUNK_PER_TURN;
        while self.written < self.bytes.len() && budget > 0 {
            let allowed = self
                .stream
                .check_write()
                .map_err(|e| format!("request body: {}", stream_error(e)))?;
            if allowed == 0 {
                return Ok(BodyProgress::Waiting(self));
            }
            let n = (self.bytes.len() - self.written)
                .min(usize::try_from(allowed).unwrap_or(usize::MAX))
                .min(budget);
            self.stream
                .write(&self.bytes[self.written..self.written + n])
                .map_err(|e| format!("request body: {}", stream_error(e)))?;
            self.written += n;
            budget -= n;
        }
        if self.written < self.bytes.len() {
            return Ok(BodyProgress::Waiting(self));
        }
        let Self {
            writable,
            stream,
            body,
            ..
        } = self;
        drop(writable);
        let flushed = stream.flush();
        // The stream goes before its body, also when the flush failed (a refused connection):
        // a body dropped with its stream alive traps ("resource has children").
        drop(stream);
        flushed.map_err(|e| format!("request body: {}", stream_error(e)))?;
        OutgoingBody::finish(body, None).map_err(|e| format!("request body: {e:?}"))?;
        Ok(BodyProgress::Done)
    }
}

fn stream_error(error: StreamError) -> String {
    match error {
        StreamError::Closed => "closed".to_owned(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Waiter {
    Timer,
    Conn(ConnectionId),
    Http(RequestId),
    HttpBody(RequestId),
    Extra(usize),
}

/// A device, its store and its open connections and requests.
#[derive(Debug)]
pub struct Driver {
    device: Device,
    store: FileStore,
    network: Network,
    conns: BTreeMap<ConnectionId, Conn>,
    requests: BTreeMap<RequestId, PendingHttp>,
    notices: VecDeque<Notice>,
    deadline: Option<u64>,
    tls_config: Arc<rustls::ClientConfig>,
}

impl Driver {
    /// Opens the store and creates the device; nothing is sent until the first turn.
    pub fn start(settings: &Settings) -> Result<Self, StartError> {
        let config = settings.device_config()?;
        let (store, recoveries) = FileStore::open(Path::new(&settings.store_dir))?;
        let seed: [u8; 32] = wasip2::random::random::get_random_bytes(32)
            .try_into()
            .expect("wasi:random returns the 32 bytes asked for");
        // Also for `tcp`: the core falls back to MQTT over TLS on the hub host when the
        // Platform announces no plain endpoint (a real Platform never does).
        let ca_pem = match &settings.tls_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                StartError::Settings(crate::settings::SettingsError::Invalid {
                    name: "tls-ca-file".into(),
                    reason: format!("{path}: {e}"),
                })
            })?),
            None => None,
        };
        // A CA file that holds no usable certificate is the setting's fault too.
        let tls_config = crate::tls::client_config(ca_pem.as_deref()).map_err(|reason| {
            StartError::Settings(crate::settings::SettingsError::Invalid {
                name: "tls-ca-file".into(),
                reason,
            })
        })?;
        let mut device = Device::new(config, now_ms(), seed, &store.meta(), store.state());
        for recovery in recoveries {
            device.handle_input(now_ms(), Input::StoreRecovered(recovery));
        }
        let mut driver = Self {
            device,
            store,
            network: instance_network::instance_network(),
            conns: BTreeMap::new(),
            requests: BTreeMap::new(),
            notices: VecDeque::new(),
            deadline: None,
            tls_config,
        };
        driver.drain();
        Ok(driver)
    }

    /// The device, for its getters.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Everything to tell the app since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        self.notices.drain(..).collect()
    }

    /// True when there is something to tell the app.
    pub fn has_notices(&self) -> bool {
        !self.notices.is_empty()
    }

    /// Stores a message; returns once it is durable.
    pub fn send(
        &mut self,
        stream: &StreamOptions,
        options: &MessageOptions,
        payload: Vec<u8>,
    ) -> Result<Seq, StoreFailure> {
        self.store_with(|device, now| device.send(now, stream, options, payload))
    }

    /// Stores the marker closing a batch; returns once it is durable.
    pub fn complete_batch(
        &mut self,
        stream: &StreamOptions,
        batch_id: &str,
    ) -> Result<Seq, StoreFailure> {
        self.store_with(|device, now| device.enqueue_batch_completion(now, stream, batch_id))
    }

    /// Stores the marker closing a message of a batch; returns once it is durable.
    pub fn complete_message(
        &mut self,
        stream: &StreamOptions,
        batch_id: &str,
        message_id: &str,
    ) -> Result<Seq, StoreFailure> {
        self.store_with(|device, now| {
            device.enqueue_message_completion(now, stream, batch_id, message_id)
        })
    }

    fn store_with(
        &mut self,
        enqueue: impl FnOnce(&mut Device, u64) -> Result<Seq, SendError>,
    ) -> Result<Seq, StoreFailure> {
        let seq = enqueue(&mut self.device, now_ms())?;
        self.drain();
        // The store runs synchronously within the drain: the core has settled the send by now.
        let settled = self
            .notices
            .iter()
            .find_map(|Notice::Core(event)| event.send_settlement()?.outcome(seq));
        match settled {
            Some(Ok(seq)) => Ok(seq),
            Some(Err(error)) => Err(StoreFailure::NotStored(error.clone())),
            None => Err(StoreFailure::NotStored(StoreError::Failed(
                "the core did not settle the send".into(),
            ))),
        }
    }

    /// Merges a JSON patch into the reported properties; returns the update's revision (see
    /// `Event::ReportedPropertiesStored`).
    pub fn update_reported_properties(
        &mut self,
        patch: vdev_core::json::Value,
    ) -> Result<u64, TwinError> {
        let result = self.device.update_reported_properties(now_ms(), patch);
        self.drain();
        result
    }

    /// The app holds the device offline (`true`: the connection closes, sends are stored and
    /// wait) or lets it go online (`false`: reconnect now, without the backoff delay).
    pub fn set_offline(&mut self, offline: bool) {
        self.device
            .handle_input(now_ms(), Input::AppOffline(offline));
        self.drain();
    }

    /// Stops the device and closes its connections.
    pub fn stop(&mut self) {
        self.device.stop(now_ms());
        self.drain();
        self.conns.clear();
        self.requests.clear();
    }

    /// Stops and deletes what the device stored (see [`FileStore::forget`]).
    pub fn forget(&mut self) -> Result<(), FileStoreError> {
        self.stop();
        self.store.forget()
    }

    /// One turn of the loop: waits at most `max_wait_ms` (less when the core's deadline is
    /// sooner) for a timer, a socket, a response or one of `extra`, feeds what is ready, and
    /// returns the indices of the `extra` pollables that are ready.
    pub fn turn(&mut self, max_wait_ms: u64, extra: &[&Pollable]) -> Vec<usize> {
        self.drain();
        let wait_ms = match self.deadline {
            Some(deadline) => deadline.saturating_sub(now_ms()).min(max_wait_ms),
            None => max_wait_ms,
        };
        let timer = monotonic_clock::subscribe_duration(wait_ms.saturating_mul(1_000_000));
        let ready: Vec<Waiter> = {
            let mut pollables: Vec<&Pollable> = vec![&timer];
            let mut waiters = vec![Waiter::Timer];
            for (id, conn) in &self.conns {
                match conn {
                    Conn::Connecting { ready, .. } => pollables.push(ready),
                    Conn::Open {
                        readable,
                        writable,
                        pending,
                        ..
                    } => {
                        pollables.push(readable);
                        if !pending.is_empty() {
                            waiters.push(Waiter::Conn(*id));
                            pollables.push(writable);
                        }
                    }
                }
                waiters.push(Waiter::Conn(*id));
            }
            for (id, request) in &self.requests {
                pollables.push(match &request.progress {
                    ResponseProgress::Head { ready, .. } => ready,
                    ResponseProgress::Body(reader) => &reader.readable,
                });
                waiters.push(Waiter::Http(*id));
                if let Some(body) = &request.body {
                    pollables.push(&body.writable);
                    waiters.push(Waiter::HttpBody(*id));
                }
            }
            for (index, pollable) in extra.iter().enumerate() {
                pollables.push(pollable);
                waiters.push(Waiter::Extra(index));
            }
            poll::poll(&pollables)
                .into_iter()
                .filter_map(|index| waiters.get(index as usize).copied())
                .collect()
        };
        drop(timer);
        let mut extra_ready = Vec::new();
        for waiter in ready {
            match waiter {
                Waiter::Timer => {}
                Waiter::Conn(id) => self.service_conn(id),
                Waiter::Http(id) => self.service_http(id),
                Waiter::HttpBody(id) => self.write_request_body(id),
                Waiter::Extra(index) => extra_ready.push(index),
            }
        }
        let now = now_ms();
        // The core times a request out at its deadline; the host lets go of it then.
        self.requests.retain(|_, request| request.deadline > now);
        if self.deadline.is_some_and(|deadline| deadline <= now) {
            self.device.handle_timeout(now);
        }
        self.drain();
        extra_ready
    }

    /// Performs the core's outputs until it names its next deadline.
    fn drain(&mut self) {
        loop {
            match self.device.poll_output() {
                Output::Timeout(deadline) => {
                    self.deadline = deadline;
                    return;
                }
                Output::Store(request) => {
                    if let Some(answer) = self.store.execute(request) {
                        self.device.handle_input(now_ms(), answer);
                    }
                }
                Output::Http(request) => self.start_http(request),
                Output::Connect { conn, endpoint } => self.connect(conn, endpoint),
                Output::Transmit { conn, bytes } => self.transmit(conn, &bytes),
                Output::Close { conn } => {
                    if let Some(Conn::Open {
                        tls,
                        web_socket,
                        output,
                        socket,
                        ..
                    }) = self.conns.get_mut(&conn)
                    {
                        // Best effort: the close frame and the alert go if the stream takes
                        // them now.
                        let mut goodbye = match web_socket {
                            Some(session) => down(tls, &session.close()).unwrap_or_default(),
                            None => Vec::new(),
                        };
                        if let Some(session) = tls {
                            goodbye.extend(session.close());
                        }
                        if output
                            .check_write()
                            .is_ok_and(|n| n >= goodbye.len() as u64)
                        {
                            let _ = output.write(&goodbye).and_then(|()| output.flush());
                        }
                        let _ = socket.shutdown(wasip2::sockets::tcp::ShutdownType::Both);
                    }
                    self.conns.remove(&conn);
                }
                Output::Event(event) => self.notices.push_back(Notice::Core(event)),
            }
        }
    }

    fn transmit(&mut self, conn: ConnectionId, bytes: &[u8]) {
        let Some(Conn::Open {
            pending,
            tls,
            web_socket,
            ..
        }) = self.conns.get_mut(&conn)
        else {
            return;
        };
        let framed = match web_socket {
            Some(session) => session.send(bytes),
            None => Ok(bytes.to_vec()),
        };
        match framed.and_then(|framed| down(tls, &framed)) {
            Ok(out) => pending.extend_from_slice(&out),
            Err(reason) => return self.closed(conn, reason),
        }
        self.flush(conn);
    }

    fn closed(&mut self, conn: ConnectionId, reason: String) {
        self.conns.remove(&conn);
        self.device
            .handle_input(now_ms(), Input::Closed { conn, reason });
    }

    fn connect(&mut self, conn: ConnectionId, endpoint: Endpoint) {
        let (host, port, tls_host, web_socket) = match endpoint {
            Endpoint::Tcp { host, port } => (host, port, None, None),
            Endpoint::Tls { host, port } => {
                let name = host.clone();
                (host, port, Some(name), None)
            }
            Endpoint::WebSocket { url } => match crate::websocket::target(&url) {
                Ok(target) => {
                    let tls_host = target.tls.then(|| target.host.clone());
                    (target.host, target.port, tls_host, Some(url))
                }
                Err(reason) => return self.closed(conn, reason),
            },
        };
        match self.start_connect(&host, port) {
            Ok((socket, ready)) => {
                self.conns.insert(
                    conn,
                    Conn::Connecting {
                        ready,
                        socket,
                        tls_host,
                        web_socket,
                    },
                );
            }
            Err(reason) => self.closed(conn, reason),
        }
    }

    fn start_connect(&self, host: &str, port: u16) -> Result<(TcpSocket, Pollable), String> {
        let address = resolve(&self.network, host)?;
        let (family, remote) = match address {
            IpAddress::Ipv4(address) => (
                IpAddressFamily::Ipv4,
                IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address }),
            ),
            IpAddress::Ipv6(address) => (
                IpAddressFamily::Ipv6,
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port,
                    address,
                    flow_info: 0,
                    scope_id: 0,
                }),
            ),
        };
        let socket = tcp_create_socket::create_tcp_socket(family)
            .map_err(|e| format!("socket: {}", socket_error(e)))?;
        socket
            .start_connect(&self.network, remote)
            .map_err(|e| format!("connect to {host}:{port}: {}", socket_error(e)))?;
        let ready = socket.subscribe();
        Ok((socket, ready))
    }

    fn service_conn(&mut self, id: ConnectionId) {
        match self.conns.remove(&id) {
            Some(Conn::Connecting {
                ready,
                socket,
                tls_host,
                web_socket,
            }) => {
                drop(ready);
                match socket.finish_connect() {
                    Ok((input, output)) => {
                        let _ = socket.set_keep_alive_enabled(true);
                        let mut tls = match self.start_tls(tls_host.as_deref()) {
                            Ok(tls) => tls,
                            Err(reason) => return self.closed(id, reason),
                        };
                        let mut pending = tls
                            .as_mut()
                            .map(|session| session.take_outgoing())
                            .unwrap_or_default();
                        // The upgrade request goes right behind the ClientHello: rustls holds
                        // it until its handshake is done.
                        let web_socket = match web_socket.as_deref().map(WebSocketSession::new) {
                            Some(Ok(mut session)) => {
                                match down(&mut tls, &session.take_outgoing()) {
                                    Ok(request) => pending.extend(request),
                                    Err(reason) => return self.closed(id, reason),
                                }
                                Some(Box::new(session))
                            }
                            Some(Err(reason)) => return self.closed(id, reason),
                            None => None,
                        };
                        let handshaking = tls.is_some() || web_socket.is_some();
                        self.conns.insert(
                            id,
                            Conn::Open {
                                tls,
                                web_socket,
                                readable: input.subscribe(),
                                writable: output.subscribe(),
                                input,
                                output,
                                pending,
                                socket,
                            },
                        );
                        if handshaking {
                            self.flush(id);
                        } else {
                            self.device
                                .handle_input(now_ms(), Input::Connected { conn: id });
                        }
                    }
                    Err(SocketError::WouldBlock) => {
                        let ready = socket.subscribe();
                        self.conns.insert(
                            id,
                            Conn::Connecting {
                                ready,
                                socket,
                                tls_host,
                                web_socket,
                            },
                        );
                    }
                    Err(error) => {
                        self.closed(id, format!("connect failed: {}", socket_error(error)))
                    }
                }
            }
            Some(open @ Conn::Open { .. }) => {
                self.conns.insert(id, open);
                self.read(id);
                self.flush(id);
            }
            None => {}
        }
    }

    /// A TLS session for a connection to `host`, or none for plain TCP.
    fn start_tls(&self, host: Option<&str>) -> Result<Option<Box<TlsSession>>, String> {
        let Some(host) = host else {
            return Ok(None);
        };
        TlsSession::new(self.tls_config.clone(), host).map(|session| Some(Box::new(session)))
    }

    fn read(&mut self, id: ConnectionId) {
        let Some(Conn::Open {
            input,
            tls,
            web_socket,
            pending,
            ..
        }) = self.conns.get_mut(&id)
        else {
            return;
        };
        let bytes = match input.read(READ_CHUNK) {
            Ok(bytes) if bytes.is_empty() => return,
            Ok(bytes) => bytes,
            Err(StreamError::Closed) => return self.closed(id, "closed by the gateway".into()),
            Err(StreamError::LastOperationFailed(error)) => {
                return self.closed(id, format!("read failed: {}", error.to_debug_string()));
            }
        };
        // Up the layers: TLS, then WebSocket, then the core. The core hears of the connection
        // when the top layer is ready.
        let mut connected = false;
        let plaintext = match tls {
            None => bytes,
            Some(session) => {
                let was_handshaking = session.is_handshaking();
                let received = match session.receive(&bytes) {
                    Ok(received) => received,
                    Err(reason) => return self.closed(id, reason),
                };
                pending.extend_from_slice(&received.to_send);
                connected = was_handshaking && !session.is_handshaking();
                received.plaintext
            }
        };
        let (mqtt, gone) = match web_socket {
            None => (plaintext, None),
            Some(session) => {
                let received = match session.receive(&plaintext) {
                    Ok(received) => received,
                    Err(reason) => return self.closed(id, reason),
                };
                match down(tls, &received.to_send) {
                    Ok(out) => pending.extend_from_slice(&out),
                    Err(reason) => return self.closed(id, reason),
                }
                connected = received.opened;
                (received.payload, received.closed)
            }
        };
        if connected {
            self.device
                .handle_input(now_ms(), Input::Connected { conn: id });
        }
        if !mqtt.is_empty() {
            self.device.handle_input(
                now_ms(),
                Input::Received {
                    conn: id,
                    bytes: &mqtt,
                },
            );
        }
        if let Some(reason) = gone {
            // The answer to the close goes before the stream does.
            self.flush(id);
            self.closed(id, reason);
        }
    }

    /// Writes as much of the pending bytes as the stream takes now; the rest waits for the
    /// stream's pollable.
    fn flush(&mut self, id: ConnectionId) {
        let Some(Conn::Open {
            output, pending, ..
        }) = self.conns.get_mut(&id)
        else {
            return;
        };
        let mut failure = None;
        while !pending.is_empty() {
            match output.check_write() {
                Ok(0) => break,
                Ok(allowed) => {
                    let n = pending
                        .len()
                        .min(usize::try_from(allowed).unwrap_or(usize::MAX));
                    if let Err(error) = output.write(&pending[..n]).and_then(|()| output.flush()) {
                        failure = Some(error);
                        break;
                    }
                    pending.drain(..n);
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if let Some(error) = failure {
            let reason = match error {
                StreamError::Closed => "closed by the gateway".to_owned(),
                StreamError::LastOperationFailed(e) => {
                    format!("write failed: {}", e.to_debug_string())
                }
            };
            self.closed(id, reason);
        }
    }

    fn start_http(&mut self, request: HttpRequest) {
        let (id, deadline, max_response_bytes) =
            (request.id, request.deadline, request.max_response_bytes);
        match send_request(request) {
            Ok((response, body)) => {
                let ready = response.subscribe();
                self.requests.insert(
                    id,
                    PendingHttp {
                        body: Some(body),
                        progress: ResponseProgress::Head { ready, response },
                        deadline,
                        max_response_bytes,
                    },
                );
                self.write_request_body(id);
            }
            Err(error) => self
                .device
                .handle_input(now_ms(), Input::HttpFailed { id, error }),
        }
    }

    /// Writes more of a request's body; a failure fails the request.
    fn write_request_body(&mut self, id: RequestId) {
        let Some(pending) = self.requests.get_mut(&id) else {
            return;
        };
        let Some(body) = pending.body.take() else {
            return;
        };
        match body.advance() {
            Ok(BodyProgress::Waiting(body)) => pending.body = Some(body),
            Ok(BodyProgress::Done) => {}
            Err(error) => {
                self.requests.remove(&id);
                self.device
                    .handle_input(now_ms(), Input::HttpFailed { id, error });
            }
        }
    }

    fn service_http(&mut self, id: RequestId) {
        let Some(pending) = self.requests.get_mut(&id) else {
            return;
        };
        if let ResponseProgress::Head { response, .. } = &pending.progress {
            let head = match response.get() {
                None => return,
                Some(Ok(Ok(response))) => BodyReader::new(response, pending.max_response_bytes),
                Some(Ok(Err(error))) => Err(format!("http: {error:?}")),
                Some(Err(())) => Err("http: response already taken".to_owned()),
            };
            match head {
                Ok(reader) => pending.progress = ResponseProgress::Body(Box::new(reader)),
                Err(error) => return self.fail_http(id, error),
            }
        }
        let ResponseProgress::Body(reader) = &mut pending.progress else {
            return;
        };
        match reader.read_available() {
            None => {}
            Some(Err(error)) => self.fail_http(id, error),
            Some(Ok(())) => {
                let Some(PendingHttp {
                    progress: ResponseProgress::Body(reader),
                    ..
                }) = self.requests.remove(&id)
                else {
                    return;
                };
                let response = reader.finish();
                self.device
                    .handle_input(now_ms(), Input::HttpResponse { id, response });
            }
        }
    }

    fn fail_http(&mut self, id: RequestId, error: String) {
        self.requests.remove(&id);
        self.device
            .handle_input(now_ms(), Input::HttpFailed { id, error });
    }
}

/// Bytes for the stream: encrypted by the TLS session when there is one.
fn down(tls: &mut Option<Box<TlsSession>>, bytes: &[u8]) -> Result<Vec<u8>, String> {
    match tls {
        _ if bytes.is_empty() => Ok(Vec::new()),
        Some(session) => session.encrypt(bytes),
        None => Ok(bytes.to_vec()),
    }
}

fn socket_error(error: SocketError) -> String {
    format!("{error:?}").to_lowercase()
}

/// An IP literal as it is, or the first address a name resolves to (the lookup is short and
/// blocks this turn only).
fn resolve(network: &Network, host: &str) -> Result<IpAddress, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                IpAddress::Ipv4((a, b, c, d))
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddress::Ipv6((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
            }
        });
    }
    let lookup = ip_name_lookup::resolve_addresses(network, host)
        .map_err(|e| format!("resolve {host}: {}", socket_error(e)))?;
    let ready = lookup.subscribe();
    loop {
        match lookup.resolve_next_address() {
            Ok(Some(address)) => return Ok(address),
            Ok(None) => return Err(format!("resolve {host}: no address")),
            Err(SocketError::WouldBlock) => ready.block(),
            Err(error) => return Err(format!("resolve {host}: {}", socket_error(error))),
        }
    }
}

/// `scheme://authority/path?query` of an absolute URL the core built.
fn split_url(url: &str) -> Result<(Scheme, &str, &str), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not an absolute url: {url}"))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    Ok((scheme, authority, path))
}

/// Hands the request to the host; its body is written afterwards, as the host takes it.
fn send_request(request: HttpRequest) -> Result<(FutureIncomingResponse, BodyWriter), String> {
    let (scheme, authority, path) = split_url(&request.url)?;
    let entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries).map_err(|e| format!("header: {e:?}"))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method {
        Method::Get => HttpMethod::Get,
        Method::Post => HttpMethod::Post,
        Method::Put => HttpMethod::Put,
    };
    let invalid = |what: &str| format!("invalid request {what}");
    outgoing
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    outgoing
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let body = outgoing.body().map_err(|()| invalid("body"))?;
    let options = RequestOptions::new();
    let budget_ns = request.deadline.saturating_sub(now_ms()).max(1) * 1_000_000;
    let _ = options.set_connect_timeout(Some(budget_ns));
    let _ = options.set_first_byte_timeout(Some(budget_ns));
    let response =
        outgoing_handler::handle(outgoing, Some(options)).map_err(|e| format!("http: {e:?}"))?;
    let body = BodyWriter::new(body, request.body)?;
    Ok((response, body))
}
