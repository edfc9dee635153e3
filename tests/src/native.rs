//! A native host for `vdev-core`: tokio sockets for MQTT (plain TCP, or TLS with rustls),
//! reqwest for HTTP, and a [`MemoryStore`] shared across restarts of the device. It is the
//! thinnest possible adapter — feed inputs, drain outputs, arm one timer — so a test that passes
//! here proves the core, not the glue. [`Network`] says which CA it trusts and which host names
//! it resolves itself (the strict stand-in's, on a loopback address of its own).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vdev_core::{
    ConnectionId, Device, DeviceConfig, Endpoint, Event, HttpRequest, HttpResponse, Input,
    MemoryStore, MessageOptions, Method, Output, RequestId, SendError, Seq, Stats, StreamOptions,
};

/// A store that outlives one run of the device, as a disk would.
pub type SharedStore = Arc<Mutex<MemoryStore>>;

/// Milliseconds since the Unix epoch, the core's notion of time.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

enum Command {
    Send {
        stream: StreamOptions,
        options: MessageOptions,
        payload: Vec<u8>,
        stored: oneshot::Sender<Result<Seq, SendError>>,
    },
    CompleteBatch {
        stream: StreamOptions,
        batch_id: String,
        stored: oneshot::Sender<Result<Seq, SendError>>,
    },
    Stats(oneshot::Sender<Stats>),
    Network(bool),
    Reported(vdev_core::json::Value),
    Stop(oneshot::Sender<()>),
}

/// The writing half of an MQTT connection, plain or TLS.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// What the host trusts and resolves besides the system's.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// PEM of a certificate authority to trust (the stand-in's test CA); none: plain TCP only.
    pub ca_pem: Option<Vec<u8>>,
    /// Host names resolved here, without DNS.
    pub resolve: Vec<(String, IpAddr)>,
}

enum Io {
    Http(RequestId, Result<HttpResponse, String>),
    Connected(ConnectionId, Writer),
    Data(ConnectionId, Vec<u8>),
    Closed(ConnectionId, String),
}

/// A running device driven by tokio.
pub struct NativeDevice {
    commands: mpsc::UnboundedSender<Command>,
    /// Everything the core told the app, in order.
    pub events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

impl NativeDevice {
    /// Starts a device on `store` (its saved state and queued messages are resumed).
    pub fn start(config: DeviceConfig, store: SharedStore, seed: [u8; 32]) -> Self {
        Self::start_with(config, store, seed, Network::default())
    }

    /// [`NativeDevice::start`] with a CA to trust and host names to resolve.
    pub fn start_with(
        config: DeviceConfig,
        store: SharedStore,
        seed: [u8; 32],
        network: Network,
    ) -> Self {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(config, store, seed, network, command_rx, event_tx));
        Self {
            commands,
            events,
            task,
        }
    }

    /// Queues a message; resolves once it is durable in the store.
    pub async fn send(&self, stream: StreamOptions, payload: Vec<u8>) -> Result<Seq, SendError> {
        self.send_with(stream, MessageOptions::default(), payload)
            .await
    }

    /// [`NativeDevice::send`] with a batch id, message id, slice or chunk.
    pub async fn send_with(
        &self,
        stream: StreamOptions,
        options: MessageOptions,
        payload: Vec<u8>,
    ) -> Result<Seq, SendError> {
        let (stored, reply) = oneshot::channel();
        self.commands
            .send(Command::Send {
                stream,
                options,
                payload,
                stored,
            })
            .expect("device task is running");
        reply.await.expect("device task answers")
    }

    /// Queues the marker that completes batch `batch_id`; resolves once it is durable.
    pub async fn complete_batch(
        &self,
        stream: StreamOptions,
        batch_id: &str,
    ) -> Result<Seq, SendError> {
        let (stored, reply) = oneshot::channel();
        self.commands
            .send(Command::CompleteBatch {
                stream,
                batch_id: batch_id.to_owned(),
                stored,
            })
            .expect("device task is running");
        reply.await.expect("device task answers")
    }

    /// Queue and connection figures.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .expect("device task is running");
        rx.await.expect("device task answers")
    }

    /// Merges `patch` into the reported properties (they reach the Platform when connected).
    pub fn update_reported_properties(&self, patch: vdev_core::json::Value) {
        self.commands
            .send(Command::Reported(patch))
            .expect("device task is running");
    }

    /// Tells the device whether the host has a network (`Input::NetworkAvailable` /
    /// `Input::NetworkLost`), as a browser's `online`/`offline` events would.
    pub fn set_network(&self, available: bool) {
        self.commands
            .send(Command::Network(available))
            .expect("device task is running");
    }

    /// Stops the device (its store keeps everything) and waits for the task to end.
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }
}

struct Host {
    device: Device,
    store: SharedStore,
    io_tx: mpsc::UnboundedSender<Io>,
    writers: HashMap<ConnectionId, Writer>,
    waiting_durable: BTreeMap<Seq, oneshot::Sender<Result<Seq, SendError>>>,
    events: mpsc::UnboundedSender<Event>,
    http: reqwest::Client,
    network: Arc<Network>,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// The HTTP client and the MQTT TLS connector of `network`.
fn clients(network: &Network) -> (reqwest::Client, Option<tokio_rustls::TlsConnector>) {
    let mut builder = reqwest::Client::builder();
    for (name, ip) in &network.resolve {
        builder = builder.resolve(name, SocketAddr::new(*ip, 0));
    }
    let Some(pem) = &network.ca_pem else {
        return (builder.build().expect("http client"), None);
    };
    builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("a CA"));
    let config = crate::tls::client_config_trusting(pem).expect("the test CA");
    (
        builder.build().expect("http client"),
        Some(tokio_rustls::TlsConnector::from(config)),
    )
}

async fn run(
    config: DeviceConfig,
    store: SharedStore,
    seed: [u8; 32],
    network: Network,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let device = {
        let store = store.lock().expect("store lock");
        Device::new(config, now_ms(), seed, &store.meta(), store.state())
    };
    let (io_tx, mut io_rx) = mpsc::unbounded_channel();
    let (http, tls) = clients(&network);
    let mut host = Host {
        device,
        store,
        io_tx,
        writers: HashMap::new(),
        waiting_durable: BTreeMap::new(),
        events,
        http,
        network: Arc::new(network),
        tls,
    };
    loop {
        let deadline = host.drain().await;
        let sleep = match deadline {
            Some(at) => {
                let wait = at.saturating_sub(now_ms());
                Instant::now() + Duration::from_millis(wait)
            }
            None => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            () = tokio::time::sleep_until(sleep) => host.device.handle_timeout(now_ms()),
            Some(io) = io_rx.recv() => host.handle_io(io),
            command = commands.recv() => match command {
                Some(Command::Send { stream, options, payload, stored }) => {
                    match host.device.send(now_ms(), &stream, &options, payload) {
                        Ok(seq) => { host.waiting_durable.insert(seq, stored); }
                        Err(error) => { let _ = stored.send(Err(error)); }
                    }
                }
                Some(Command::CompleteBatch { stream, batch_id, stored }) => {
                    match host.device.enqueue_batch_completion(now_ms(), &stream, &batch_id) {
                        Ok(seq) => { host.waiting_durable.insert(seq, stored); }
                        Err(error) => { let _ = stored.send(Err(error)); }
                    }
                }
                Some(Command::Stats(reply)) => { let _ = reply.send(host.device.stats()); }
                Some(Command::Reported(patch)) => {
                    host.device
                        .update_reported_properties(now_ms(), patch)
                        .expect("a valid patch");
                }
                Some(Command::Network(available)) => {
                    let input = if available { Input::NetworkAvailable } else { Input::NetworkLost };
                    host.device.handle_input(now_ms(), input);
                }
                Some(Command::Stop(reply)) => {
                    host.device.stop(now_ms());
                    host.drain().await;
                    let _ = reply.send(());
                    return;
                }
                None => return,
            },
        }
    }
}

impl Host {
    /// Performs every output until the core names its next deadline.
    async fn drain(&mut self) -> Option<u64> {
        loop {
            match self.device.poll_output() {
                Output::Timeout(deadline) => return deadline,
                Output::Store(request) => {
                    let answer = self.store.lock().expect("store lock").execute(request);
                    if let Some(answer) = answer {
                        if let Input::Appended { first, last } = &answer {
                            let durable: Vec<Seq> = self
                                .waiting_durable
                                .range(first..=last)
                                .map(|(s, _)| *s)
                                .collect();
                            for seq in durable {
                                if let Some(reply) = self.waiting_durable.remove(&seq) {
                                    let _ = reply.send(Ok(seq));
                                }
                            }
                        }
                        self.device.handle_input(now_ms(), answer);
                    }
                }
                Output::Http(request) => self.http(request),
                Output::Connect { conn, endpoint } => self.connect(conn, endpoint),
                Output::Transmit { conn, bytes } => {
                    let failed = match self.writers.get_mut(&conn) {
                        Some(writer) => writer.write_all(&bytes).await.err(),
                        None => None,
                    };
                    if let Some(error) = failed {
                        self.writers.remove(&conn);
                        let reason = format!("write failed: {error}");
                        self.device
                            .handle_input(now_ms(), Input::Closed { conn, reason });
                    }
                }
                Output::Close { conn } => {
                    if let Some(mut writer) = self.writers.remove(&conn) {
                        let _ = writer.shutdown().await;
                    }
                }
                Output::Event(event) => {
                    let _ = self.events.send(event);
                }
            }
        }
    }

    fn handle_io(&mut self, io: Io) {
        let now = now_ms();
        match io {
            Io::Http(id, Ok(response)) => self
                .device
                .handle_input(now, Input::HttpResponse { id, response }),
            Io::Http(id, Err(error)) => self
                .device
                .handle_input(now, Input::HttpFailed { id, error }),
            Io::Connected(conn, writer) => {
                self.writers.insert(conn, writer);
                self.device.handle_input(now, Input::Connected { conn });
            }
            Io::Data(conn, bytes) => self.device.handle_input(
                now,
                Input::Received {
                    conn,
                    bytes: &bytes,
                },
            ),
            Io::Closed(conn, reason) => {
                self.writers.remove(&conn);
                self.device
                    .handle_input(now, Input::Closed { conn, reason });
            }
        }
    }

    fn http(&self, request: HttpRequest) {
        let client = self.http.clone();
        let io = self.io_tx.clone();
        tokio::spawn(async move {
            let method = match request.method {
                Method::Get => reqwest::Method::GET,
                Method::Post => reqwest::Method::POST,
                Method::Put => reqwest::Method::PUT,
            };
            let timeout = Duration::from_millis(request.deadline.saturating_sub(now_ms()));
            let mut builder = client
                .request(method, &request.url)
                .timeout(timeout)
                .body(request.body);
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            let result = async {
                let response = builder.send().await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.bytes().await.map_err(|e| e.to_string())?.to_vec();
                Ok(HttpResponse {
                    status,
                    retry_after,
                    body,
                })
            }
            .await;
            let _ = io.send(Io::Http(request.id, result));
        });
    }

    fn connect(&self, conn: ConnectionId, endpoint: Endpoint) {
        let io = self.io_tx.clone();
        let (network, tls) = (self.network.clone(), self.tls.clone());
        tokio::spawn(async move {
            let (host, port, secure) = match endpoint {
                Endpoint::Tcp { host, port } => (host, port, false),
                Endpoint::Tls { host, port } => (host, port, true),
                Endpoint::WebSocket { .. } => {
                    let _ = io.send(Io::Closed(conn, "this host speaks TCP and TLS only".into()));
                    return;
                }
            };
            let resolved = network.resolve.iter().find(|(name, _)| *name == host);
            let stream = match resolved {
                Some((_, ip)) => TcpStream::connect(SocketAddr::new(*ip, port)).await,
                None => TcpStream::connect((host.as_str(), port)).await,
            };
            let stream = match stream {
                Ok(stream) => stream,
                Err(error) => {
                    let _ = io.send(Io::Closed(conn, format!("connect failed: {error}")));
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let (mut reader, writer): (Box<dyn AsyncRead + Send + Unpin>, Writer) = if secure {
                let (Some(tls), Ok(name)) = (tls, ServerName::try_from(host.clone())) else {
                    let _ = io.send(Io::Closed(conn, "no CA to trust for tls".into()));
                    return;
                };
                match tls.connect(name, stream).await {
                    Ok(stream) => {
                        let (reader, writer) = tokio::io::split(stream);
                        (Box::new(reader), Box::new(writer))
                    }
                    Err(error) => {
                        let _ = io.send(Io::Closed(conn, format!("tls failed: {error}")));
                        return;
                    }
                }
            } else {
                let (reader, writer) = stream.into_split();
                (Box::new(reader), Box::new(writer))
            };
            if io.send(Io::Connected(conn, writer)).is_err() {
                return;
            }
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buffer).await {
                    Ok(0) => {
                        let _ = io.send(Io::Closed(conn, "closed by the gateway".into()));
                        return;
                    }
                    Ok(n) => {
                        if io.send(Io::Data(conn, buffer[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = io.send(Io::Closed(conn, format!("read failed: {error}")));
                        return;
                    }
                }
            }
        });
    }
}
