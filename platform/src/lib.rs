//! `vdev-platform`: a local stand-in of the IoT Platform for vdev's development, demo and tests.
//!
//! It serves, on loopback: the device HTTP API (provisioning, registration, token refresh,
//! large-message upload), the admin/technician API and console, and an MQTT device gateway in
//! the IoT Hub dialect over TCP, TLS and WebSocket. State lives in SQLite in a data directory, so
//! a restart keeps everything. It shares no code with `vdev-core` on purpose: it is the SDK's
//! independent test oracle.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vdev_platform::StartError> {
//! let platform = vdev_platform::Platform::start(vdev_platform::Config::ephemeral("/tmp/vdev")).await?;
//! println!("console: {}", platform.info().console_url);
//! platform.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]
#![forbid(unsafe_code)]

mod clock;
pub mod devices;
pub mod faults;
pub mod gateway;
mod http;
mod merge;
pub mod messages;
pub mod options;
pub mod problem;
pub mod provisioning;
mod secrets;
pub mod state;
pub mod store;
pub mod tls;
pub mod transcript;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::options::{DeviceIdOverrideMode, Lifetime, LifetimeOverrideMode, TokenOptions};
use crate::state::{AppState, GatewayEndpoints};
use crate::store::{Store, StoreError};

/// How to run the Platform.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the database, blobs, TLS files and `platform.json`.
    pub data_dir: PathBuf,
    /// Plain HTTP listener (device API, admin API, console, MQTT over WebSocket; only the admin
    /// API and the console under [`Contract::IotHub`]).
    pub http: Option<SocketAddr>,
    /// HTTPS listener with the same routes (the official SDK needs port 443).
    pub https: Option<SocketAddr>,
    /// MQTT over plain TCP.
    pub mqtt_tcp: Option<SocketAddr>,
    /// MQTT over TLS (the official SDK needs port 8883).
    pub mqtt_tls: Option<SocketAddr>,
    /// Host name devices are told (`iotHubHostName`) and the TLS certificate is for.
    pub host_name: String,
    /// Admin bearer token; `None` = keep the one in `platform.json`, or make a new one.
    pub admin_token: Option<String>,
    /// Lifetime of MQTT credentials issued by `register`.
    pub sas_lifetime: Duration,
    /// Largest JSON request body.
    pub max_json_body_bytes: usize,
    /// Largest MQTT packet payload and uploaded blob.
    pub max_message_bytes: usize,
    /// Most connections open at once on each listener; more are closed as they arrive.
    pub max_connections: usize,
    /// How long a write to an MQTT client may wait for it to read before its connection is
    /// closed.
    pub write_timeout: Duration,
    /// Which contract devices get: the stand-in's extensions, or only what a real IoT Hub-based
    /// instance offers.
    pub contract: Contract,
    /// Host name of the blob storage upload answers name (`hostName`); it must differ from
    /// `host_name` under [`Contract::IotHub`]. Default: `blob.<host_name>`.
    pub blob_host_name: Option<String>,
    /// Keep a transcript of what devices send (`transcript.rs`), read and cleared through the
    /// admin API (`GET`/`DELETE /transcript`): for comparing clients. It grows with the traffic.
    pub record_transcript: bool,
}

/// What the Platform offers devices beyond the real instance's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Contract {
    /// The stand-in's extensions: `gatewayEndpoints` in the registration answer (plain TCP, a
    /// loopback WebSocket, the HTTP base) and `uploadUrl` in the file-upload answer, so devices
    /// can use plain listeners on ephemeral ports.
    #[default]
    Extended,
    /// Only what a real instance offers: no `gatewayEndpoints`, no `uploadUrl`, nothing plain
    /// for devices (a plain HTTP listener serves the admin API and the console only). Devices
    /// find MQTT over TLS on 8883 and over WebSocket on 443 under the hub host
    /// name, the file-upload API on the hub host and blob storage under its own host name, which
    /// checks a `PUT` as Azure Blob storage does (`x-ms-blob-type: BlockBlob`, the SAS query).
    IotHub,
}

impl std::str::FromStr for Contract {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "extended" => Ok(Self::Extended),
            "iothub" => Ok(Self::IotHub),
            other => Err(format!("{other:?} is not extended or iothub")),
        }
    }
}

impl Config {
    /// Every listener on an ephemeral loopback port, HTTPS off: what tests want.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let any = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        Self {
            data_dir: data_dir.into(),
            http: any,
            https: None,
            mqtt_tcp: any,
            mqtt_tls: any,
            host_name: "localhost".to_owned(),
            admin_token: None,
            sas_lifetime: Duration::from_secs(3600),
            max_json_body_bytes: 64 * 1024,
            max_message_bytes: 16 * 1024 * 1024,
            max_connections: 10_000,
            write_timeout: Duration::from_secs(30),
            contract: Contract::Extended,
            blob_host_name: None,
            record_transcript: false,
        }
    }
}

/// What a started Platform tells its users; also written to `<data-dir>/platform.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlatformInfo {
    /// Admin bearer token.
    pub admin_token: String,
    /// The default workspace.
    pub workspace_id: String,
    /// A ready Provisioning Token of the default workspace.
    pub provisioning_token: String,
    /// Base URL of the plain HTTP listener (the instance URL for vdev).
    pub http_url: Option<String>,
    /// Base URL of the HTTPS listener.
    pub https_url: Option<String>,
    /// Where devices reach the MQTT gateway.
    pub gateway_endpoints: GatewayEndpoints,
    /// The technician console.
    pub console_url: String,
    /// PEM of the test CA that signed the TLS certificate.
    pub ca_certificate_path: PathBuf,
    /// Host name in the TLS certificate and `iotHubHostName`.
    pub host_name: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Path of this file.
    pub info_path: PathBuf,
}

/// Why the Platform did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be created or written.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The telemetry writer's thread could not be started.
    #[error("cannot start the telemetry writer: {0}")]
    Writer(std::io::Error),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// TLS material could not be made.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The configuration contradicts its contract (a plain listener under `iothub`).
    #[error("{0}")]
    Contract(String),
    /// The default workspace or token could not be made.
    #[error("cannot create defaults: {0}")]
    Defaults(String),
}

/// The Platform.
#[derive(Debug)]
pub struct Platform;

/// A running Platform; drop it or call [`RunningPlatform::shutdown`] to stop.
#[derive(Debug)]
pub struct RunningPlatform {
    info: PlatformInfo,
    state: Arc<AppState>,
    servers: Vec<JoinHandle<()>>,
}

impl RunningPlatform {
    /// Addresses, tokens and paths.
    pub fn info(&self) -> &PlatformInfo {
        &self.info
    }

    /// The shared state (for in-process inspection by tests).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stop every listener and session and wait for them to end.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        self.state.shutdown.cancel();
        for server in self.servers.drain(..) {
            let _ = server.await;
        }
        self.state.tasks.close();
        self.state.tasks.wait().await;
    }
}

impl Drop for RunningPlatform {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

fn data_dir_error(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::DataDir {
        path: path.to_owned(),
        source,
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, bound))
}

impl Platform {
    /// Open the data directory, make the defaults, bind every listener and start serving.
    pub async fn start(config: Config) -> Result<RunningPlatform, StartError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(data_dir_error(&data_dir))?;
        let info_path = data_dir.join("platform.json");
        let previous: Option<PlatformInfo> = std::fs::read(&info_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let admin_token = config
            .admin_token
            .clone()
            .or_else(|| previous.as_ref().map(|p| p.admin_token.clone()))
            .unwrap_or_else(|| secrets::random_token("admin_"));
        check_contract(&config)?;
        let state = open_state(&config, &admin_token)?;
        let (workspace_id, provisioning_token) = ensure_defaults(&state, previous.as_ref())?;
        let tls = tls::load_or_create(&data_dir.join("tls"), &tls_names(&config))?;
        let listeners = match bind_listeners(&config, &state, &tls).await {
            Ok(listeners) => listeners,
            Err(e) => {
                // Listeners bound before the failure stop with the shared token.
                state.shutdown.cancel();
                return Err(e);
            }
        };
        let base = listeners
            .http_url
            .clone()
            .or_else(|| listeners.https_url.clone())
            .unwrap_or_default();
        let info = PlatformInfo {
            admin_token,
            workspace_id,
            provisioning_token,
            console_url: format!("{base}/console"),
            http_url: listeners.http_url,
            https_url: listeners.https_url,
            gateway_endpoints: listeners.endpoints,
            ca_certificate_path: tls.ca_path,
            host_name: config.host_name.clone(),
            data_dir: data_dir.clone(),
            info_path: info_path.clone(),
        };
        let json = serde_json::to_vec_pretty(&info).map_err(StoreError::from)?;
        // It holds the admin and Provisioning Tokens.
        crate::secrets::write_private(&info_path, &json).map_err(data_dir_error(&data_dir))?;
        Ok(RunningPlatform {
            info,
            state,
            servers: listeners.servers,
        })
    }
}

/// The database, the signing key (kept in the database) and the shared state.
fn open_state(config: &Config, admin_token: &str) -> Result<Arc<AppState>, StartError> {
    let store = Store::open(&config.data_dir.join("platform.db"))?;
    let signing_key = match store
        .setting("signing_key")?
        .and_then(|k| STANDARD.decode(k).ok())
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
    {
        Some(key) => key,
        None => {
            let key = secrets::random_key();
            store.set_setting("signing_key", &STANDARD.encode(key))?;
            key
        }
    };
    Ok(Arc::new(AppState {
        ingestor: crate::messages::Ingestor::start(store.clone()).map_err(StartError::Writer)?,
        store,
        signing_key,
        admin_token_hash: secrets::hash_token(admin_token),
        host_name: config.host_name.clone(),
        blob_host_name: blob_host_name(config),
        contract: config.contract,
        sas_lifetime_seconds: i64::try_from(config.sas_lifetime.as_secs()).unwrap_or(3600),
        max_json_body_bytes: config.max_json_body_bytes,
        max_message_bytes: config.max_message_bytes,
        max_connections: config.max_connections,
        write_timeout: config.write_timeout,
        blob_dir: config.data_dir.join("blobs"),
        sessions: Default::default(),
        faults: Default::default(),
        transcript: crate::transcript::Transcript::new(config.record_transcript),
        endpoints: OnceLock::new(),
        http_base: OnceLock::new(),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    }))
}

/// The blob storage's host name: the configured one, or `blob.<host name>`.
fn blob_host_name(config: &Config) -> String {
    config
        .blob_host_name
        .clone()
        .unwrap_or_else(|| format!("blob.{}", config.host_name))
}

/// What the server certificate is for: the hub and blob host names, loopback, and the
/// addresses the TLS listeners bind (a test may give each Platform its own loopback address).
fn tls_names(config: &Config) -> Vec<String> {
    let mut names = vec![config.host_name.clone(), blob_host_name(config)];
    let ips = [config.https, config.mqtt_tls]
        .into_iter()
        .flatten()
        .map(|addr| addr.ip().to_string());
    for ip in ["127.0.0.1".to_owned(), "::1".to_owned()]
        .into_iter()
        .chain(ips)
    {
        if !names.contains(&ip) {
            names.push(ip);
        }
    }
    names
}

/// Under [`Contract::IotHub`] devices get no plain listener, and the blob host is its own.
fn check_contract(config: &Config) -> Result<(), StartError> {
    if config.contract != Contract::IotHub {
        return Ok(());
    }
    if config.mqtt_tcp.is_some() {
        return Err(StartError::Contract(
            "the iothub contract has no plain MQTT listener: set mqtt-tcp off".into(),
        ));
    }
    if config.https.is_none() {
        return Err(StartError::Contract(
            "the iothub contract serves its HTTP API over https: set an https listener".into(),
        ));
    }
    if blob_host_name(config) == config.host_name {
        return Err(StartError::Contract(
            "the iothub contract's blob storage has a host name of its own".into(),
        ));
    }
    Ok(())
}

/// What binding the listeners produced.
struct Listeners {
    servers: Vec<JoinHandle<()>>,
    endpoints: GatewayEndpoints,
    http_url: Option<String>,
    https_url: Option<String>,
}

/// Bind every configured listener and spawn its server.
async fn bind_listeners(
    config: &Config,
    state: &Arc<AppState>,
    tls: &tls::TlsMaterial,
) -> Result<Listeners, StartError> {
    let mut listeners = Listeners {
        servers: Vec::new(),
        endpoints: GatewayEndpoints::default(),
        http_url: None,
        https_url: None,
    };
    let router = http::router(state.clone(), false);
    if let Some(addr) = config.http {
        let (listener, bound) = bind(addr).await?;
        let url = format!("http://{bound}");
        let strict = config.contract == Contract::IotHub;
        if !strict {
            listeners.endpoints.http = Some(url.clone());
            listeners.endpoints.web_socket = Some(format!("ws://{bound}/$iothub/websocket"));
            let _ = state.http_base.set(url.clone());
        }
        listeners.http_url = Some(url);
        listeners.servers.push(tokio::spawn(http::serve_http(
            listener,
            None,
            config.max_connections,
            if strict {
                http::router(state.clone(), true)
            } else {
                router.clone()
            },
            state.shutdown.clone(),
            state.tasks.clone(),
        )));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config.clone());
    if let Some(addr) = config.https {
        let (listener, bound) = bind(addr).await?;
        let url = match bound.port() {
            443 => format!("https://{}", config.host_name),
            port => format!("https://{}:{port}", config.host_name),
        };
        listeners.https_url = Some(url.clone());
        if state.http_base.get().is_none() {
            let _ = state.http_base.set(url);
        }
        listeners.servers.push(tokio::spawn(http::serve_http(
            listener,
            Some(acceptor.clone()),
            config.max_connections,
            router,
            state.shutdown.clone(),
            state.tasks.clone(),
        )));
    }
    if let Some(addr) = config.mqtt_tcp {
        let (listener, bound) = bind(addr).await?;
        listeners.endpoints.mqtt_tcp = Some(bound.to_string());
        listeners
            .servers
            .push(tokio::spawn(gateway::transport::serve_tcp(
                listener,
                state.clone(),
                state.shutdown.clone(),
                state.tasks.clone(),
            )));
    }
    if let Some(addr) = config.mqtt_tls {
        let (listener, bound) = bind(addr).await?;
        listeners.endpoints.mqtt_tls = Some(format!("{}:{}", config.host_name, bound.port()));
        listeners
            .servers
            .push(tokio::spawn(gateway::transport::serve_tls(
                listener,
                acceptor,
                state.clone(),
                state.shutdown.clone(),
                state.tasks.clone(),
            )));
    }
    let _ = state.endpoints.set(listeners.endpoints.clone());
    Ok(listeners)
}

/// The default workspace and a ready Provisioning Token (kept across restarts via platform.json).
fn ensure_defaults(
    state: &AppState,
    previous: Option<&PlatformInfo>,
) -> Result<(String, String), StartError> {
    let defaults = |p: problem::Problem| StartError::Defaults(p.detail);
    let workspace_id = match state.store.setting("default_workspace")? {
        Some(id) if state.check_workspace(&id, false).is_ok() => id,
        _ => {
            let workspace = provisioning::create_workspace(state, "default").map_err(defaults)?;
            let id = workspace["id"].as_str().unwrap_or_default().to_owned();
            state.store.set_setting("default_workspace", &id)?;
            id
        }
    };
    if let Some(previous) = previous
        && previous.workspace_id == workspace_id
        && provisioning::authenticate_provisioning_token(state, &previous.provisioning_token)
            .is_ok()
    {
        return Ok((workspace_id, previous.provisioning_token.clone()));
    }
    let (_, token) = provisioning::create_provisioning_token(
        state,
        &workspace_id,
        "default",
        &TokenOptions::default(),
    )
    .map_err(defaults)?;
    Ok((workspace_id, token))
}
