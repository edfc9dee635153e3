//! The single-threaded event loop that drives [`vdev_core::Device`] with WASI I/O: MQTT over
//! `wasi:sockets` TCP, HTTP over `wasi:http/outgoing-handler`, timers on
//! `wasi:clocks/monotonic-clock`, the seed from `wasi:random`, the [`FileStore`] in a preopened
//! directory.
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

use vdev_core::{
    ConnectionId, Device, Endpoint, HttpRequest, HttpResponse, Input, MessageOptions, Method,
    Output, RequestId, SendError, Seq, StoreError, StreamOptions,
};
use wasip2::clocks::{monotonic_clock, wall_clock};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, FutureIncomingResponse, IncomingBody, Method as HttpMethod, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::poll::{self, Pollable};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};
use wasip2::sockets::network::{
    ErrorCode as SocketError, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress,
    Ipv6SocketAddress, Network,
};
use wasip2::sockets::tcp::TcpSocket;
use wasip2::sockets::{instance_network, ip_name_lookup, tcp_create_socket};

use crate::file_store::FileStore;
use crate::notice::Notice;
use crate::settings::{Settings, SettingsError};

/// Most bytes read from a socket or response body per call.
const READ_CHUNK: u64 = 64 * 1024;
/// `wasi:io` lets a blocking write carry at most this much per call.
const BLOCKING_WRITE_CHUNK: usize = 4096;

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
    },
    Open {
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
    ready: Pollable,
    response: FutureIncomingResponse,
}

#[derive(Debug, Clone, Copy)]
enum Waiter {
    Timer,
    Conn(ConnectionId),
    Http(RequestId),
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
    /// Appends answered during the current drain: `(first, last, failure)`.
    appended: Vec<(Seq, Seq, Option<StoreError>)>,
    deadline: Option<u64>,
}

fn origin_from(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

impl Driver {
    /// Opens the store and creates the device; nothing is sent until the first turn.
    pub fn start(settings: &Settings) -> Result<Self, StartError> {
        let config = settings.device_config()?;
        let (store, recoveries) = FileStore::open(Path::new(&settings.store_dir), || {
            origin_from(&wasip2::random::random::get_random_bytes(12))
        })?;
        let seed: [u8; 32] = wasip2::random::random::get_random_bytes(32)
            .try_into()
            .expect("wasi:random returns the 32 bytes asked for");
        let device = Device::new(config, now_ms(), seed, &store.meta(), store.state());
        let mut driver = Self {
            device,
            store,
            network: instance_network::instance_network(),
            conns: BTreeMap::new(),
            requests: BTreeMap::new(),
            notices: recoveries.into_iter().map(Notice::Recovered).collect(),
            appended: Vec::new(),
            deadline: None,
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
        let outcome = self
            .appended
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&seq))
            .map(|(_, _, failure)| failure.clone());
        self.appended.clear();
        match outcome {
            Some(None) => Ok(seq),
            Some(Some(error)) => Err(StoreFailure::NotStored(error)),
            None => Err(StoreFailure::NotStored(StoreError::Failed(
                "the core asked for no append".into(),
            ))),
        }
    }

    /// Merges a JSON patch into the reported properties.
    pub fn update_reported_properties(&mut self, patch: serde_json::Value) -> Result<(), String> {
        let result = self
            .device
            .update_reported_properties(now_ms(), patch)
            .map_err(|e| e.to_string());
        self.drain();
        result
    }

    /// Stops the device and closes its connections.
    pub fn stop(&mut self) {
        self.device.stop(now_ms());
        self.drain();
        self.conns.clear();
        self.requests.clear();
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
                pollables.push(&request.ready);
                waiters.push(Waiter::Http(*id));
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
                Waiter::Extra(index) => extra_ready.push(index),
            }
        }
        let now = now_ms();
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
                Output::Store(request) => match self.store.execute(request) {
                    Ok(Some(answer)) => {
                        match &answer {
                            Input::Appended { first, last } => {
                                self.appended.push((*first, *last, None));
                            }
                            Input::AppendFailed { first, last, error } => {
                                self.appended.push((*first, *last, Some(error.clone())));
                            }
                            _ => {}
                        }
                        self.device.handle_input(now_ms(), answer);
                    }
                    Ok(None) => {}
                    Err(error) => self
                        .notices
                        .push_back(Notice::StoreFailed(error.to_string())),
                },
                Output::Http(request) => self.start_http(request),
                Output::Connect { conn, endpoint } => self.connect(conn, endpoint),
                Output::Transmit { conn, bytes } => {
                    if let Some(Conn::Open { pending, .. }) = self.conns.get_mut(&conn) {
                        pending.extend_from_slice(&bytes);
                        self.flush(conn);
                    }
                }
                Output::Close { conn } => {
                    if let Some(Conn::Open { socket, .. }) = self.conns.get(&conn) {
                        let _ = socket.shutdown(wasip2::sockets::tcp::ShutdownType::Both);
                    }
                    self.conns.remove(&conn);
                }
                Output::Event(event) => self.notices.push_back(Notice::Core(event)),
            }
        }
    }

    fn closed(&mut self, conn: ConnectionId, reason: String) {
        self.conns.remove(&conn);
        self.device
            .handle_input(now_ms(), Input::Closed { conn, reason });
    }

    fn connect(&mut self, conn: ConnectionId, endpoint: Endpoint) {
        let (host, port) = match endpoint {
            Endpoint::Tcp { host, port } => (host, port),
            Endpoint::Tls { .. } => {
                let reason = "TLS is not available in the WASI component; use transport tcp";
                return self.closed(conn, reason.into());
            }
            Endpoint::WebSocket { .. } => {
                let reason = "WebSocket is not available in the WASI component; use transport tcp";
                return self.closed(conn, reason.into());
            }
        };
        match self.start_connect(&host, port) {
            Ok((socket, ready)) => {
                self.conns.insert(conn, Conn::Connecting { ready, socket });
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
            Some(Conn::Connecting { ready, socket }) => {
                drop(ready);
                match socket.finish_connect() {
                    Ok((input, output)) => {
                        let _ = socket.set_keep_alive_enabled(true);
                        self.conns.insert(
                            id,
                            Conn::Open {
                                readable: input.subscribe(),
                                writable: output.subscribe(),
                                input,
                                output,
                                pending: Vec::new(),
                                socket,
                            },
                        );
                        self.device
                            .handle_input(now_ms(), Input::Connected { conn: id });
                    }
                    Err(SocketError::WouldBlock) => {
                        let ready = socket.subscribe();
                        self.conns.insert(id, Conn::Connecting { ready, socket });
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

    fn read(&mut self, id: ConnectionId) {
        let Some(Conn::Open { input, .. }) = self.conns.get(&id) else {
            return;
        };
        match input.read(READ_CHUNK) {
            Ok(bytes) if bytes.is_empty() => {}
            Ok(bytes) => self.device.handle_input(
                now_ms(),
                Input::Received {
                    conn: id,
                    bytes: &bytes,
                },
            ),
            Err(StreamError::Closed) => self.closed(id, "closed by the gateway".into()),
            Err(StreamError::LastOperationFailed(error)) => {
                self.closed(id, format!("read failed: {}", error.to_debug_string()))
            }
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
        let id = request.id;
        match send_request(request) {
            Ok(response) => {
                let ready = response.subscribe();
                self.requests.insert(id, PendingHttp { ready, response });
            }
            Err(error) => self
                .device
                .handle_input(now_ms(), Input::HttpFailed { id, error }),
        }
    }

    fn service_http(&mut self, id: RequestId) {
        let Some(pending) = self.requests.get(&id) else {
            return;
        };
        let result = match pending.response.get() {
            None => return,
            Some(Ok(Ok(response))) => read_response(&response),
            Some(Ok(Err(error))) => Err(format!("http: {error:?}")),
            Some(Err(())) => Err("http: response already taken".to_owned()),
        };
        self.requests.remove(&id);
        let input = match result {
            Ok(response) => Input::HttpResponse { id, response },
            Err(error) => Input::HttpFailed { id, error },
        };
        self.device.handle_input(now_ms(), input);
    }
}

fn socket_error(error: SocketError) -> String {
    format!("{error:?}").to_lowercase()
}

/// An IP literal as it is, or the first address a name resolves to (the lookup is short and
/// blocks this turn only).
fn resolve(network: &Network, host: &str) -> Result<IpAddress, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
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

fn send_request(request: HttpRequest) -> Result<FutureIncomingResponse, String> {
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
    write_body(body, &request.body)?;
    Ok(response)
}

/// Streams the body after the request was handed over (the host consumes it as it goes).
fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    {
        let stream = body.write().map_err(|()| "request body taken".to_owned())?;
        for chunk in bytes.chunks(BLOCKING_WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("request body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| format!("request body: {e:?}"))
}

fn read_response(response: &wasip2::http::types::IncomingResponse) -> Result<HttpResponse, String> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .first()
        .map(|value| String::from_utf8_lossy(value).into_owned());
    let incoming = response
        .consume()
        .map_err(|()| "response body taken".to_owned())?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| "response body taken".to_owned())?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!("response body: {}", e.to_debug_string()));
                }
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    Ok(HttpResponse {
        status,
        retry_after,
        body,
    })
}
