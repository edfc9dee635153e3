//! A wasmtime host for the vdev WASI component (`vdev-wasi`): it loads the release build of the
//! command component, grants each instance one directory (its store) and loopback-only
//! networking — TCP connects and outgoing HTTP to anything but 127.0.0.0/8 and ::1 are denied —
//! and runs many instances at once on one engine, each in its own tokio task.
//!
//! The component is built on first use with
//! `cargo build -p vdev-wasi --target wasm32-wasip2 --release` (the artifact paths are read from
//! cargo's JSON messages, so any `CARGO_TARGET_DIR` works); `VDEV_WASI_COMMAND` names a prebuilt
//! command component instead.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wasmtime::component::{Component, Func, Linker, ResourceAny, ResourceTable, Val};
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Errors of the host are wasmtime's (anyhow) errors.
pub type Result<T> = wasmtime::Result<T>;

/// True for addresses a test may send traffic to.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

fn socket_allowed(addr: SocketAddr, use_: SocketAddrUse) -> bool {
    match use_ {
        // A connect binds implicitly to the wildcard address first.
        SocketAddrUse::TcpBind => is_loopback(addr.ip()) || addr.ip().is_unspecified(),
        SocketAddrUse::TcpConnect => is_loopback(addr.ip()),
        _ => false,
    }
}

/// Outgoing HTTP hooks that deny every host but a loopback address (or `localhost`), and
/// trust a test CA for `https://` when one is given (wasmtime's own sender trusts the public
/// roots only, and the component's HTTP TLS is the host's).
struct LoopbackOnly {
    https: Option<Arc<rustls::ClientConfig>>,
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>> + Send>,
);

/// Sends `request` over HTTPS trusting `config`: one HTTP/1.1 connection for it, as wasmtime's
/// default sender makes (the component's own deadlines bound it).
async fn send_trusting(
    config: Arc<rustls::ClientConfig>,
    mut request: http::Request<WasiBody>,
) -> std::result::Result<Sent, wasmtime_wasi_http::Error> {
    use http_body_util::BodyExt;
    use wasmtime_wasi_http::Error;
    let host = request.uri().host().unwrap_or_default().to_owned();
    let port = request.uri().port_u16().unwrap_or(443);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(Error::Connect)?;
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| Error::Tls(std::io::Error::other(e)))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(Error::Tls)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream)).await?;
    let driven = tokio::spawn(connection);
    // Sent to the server itself, not through a proxy: the path alone.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = sender.send_request(request).await?;
    let io = async move {
        match driven.await {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Ok(()),
        }
    };
    Ok((
        response.map(|body| body.map_err(Error::from).boxed_unsync()),
        Box::new(io),
    ))
}

impl WasiHttpHooks for LoopbackOnly {
    #[allow(clippy::type_complexity)]
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = std::result::Result<
                    (
                        http::Response<WasiBody>,
                        Box<
                            dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>>
                                + Send,
                        >,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let host = request.uri().host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let allowed = host == "localhost" || host.parse::<IpAddr>().is_ok_and(is_loopback);
        let https = (request.uri().scheme_str() == Some("https"))
            .then(|| self.https.clone())
            .flatten();
        Box::new(async move {
            if !allowed {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            if let Some(config) = https {
                return send_trusting(config, request).await;
            }
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io)
                    as Box<
                        dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
            ))
        })
    }
}

struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: LoopbackOnly,
    table: ResourceTable,
    memory: LinearMemoryTally,
    /// What the library component logged through `wasi:logging`, oldest first.
    logs: Vec<LogLine>,
}

/// One `wasi:logging` call of the library component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The level's name: `debug`, `info`, `warn`, `error`, ...
    pub level: String,
    /// Who logged (vdev: `vdev`).
    pub context: String,
    /// The line: the event's JSON.
    pub message: String,
}

/// Counts the linear memory of an instance as wasmtime grows it (it limits nothing): the
/// component model gives the host no handle on a component's core memories.
#[derive(Default)]
struct LinearMemoryTally {
    bytes: usize,
}

impl ResourceLimiter for LinearMemoryTally {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        self.bytes = self.bytes.saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(true)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The two components of one release build of `vdev-wasi`.
#[derive(Debug, Clone)]
pub struct ComponentPaths {
    /// `vdev-device.wasm`, the `command` world.
    pub command: PathBuf,
    /// `vdev_wasi.wasm`, the `library` world.
    pub library: PathBuf,
}

/// Builds the release components once per test process and returns their paths
/// (`VDEV_WASI_COMMAND` and `VDEV_WASI_LIBRARY` name prebuilt ones instead).
pub fn component_paths() -> Result<ComponentPaths> {
    static PATHS: OnceLock<std::result::Result<ComponentPaths, String>> = OnceLock::new();
    PATHS
        .get_or_init(|| {
            if let (Ok(command), Ok(library)) = (
                std::env::var("VDEV_WASI_COMMAND"),
                std::env::var("VDEV_WASI_LIBRARY"),
            ) {
                return Ok(ComponentPaths {
                    command: command.into(),
                    library: library.into(),
                });
            }
            build_components().map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(wasmtime::Error::msg)
}

fn build_components() -> Result<ComponentPaths> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Process::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "-p",
            "vdev-wasi",
            "--target",
            "wasm32-wasip2",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .output()?;
    if !output.status.success() {
        wasmtime::bail!(
            "building the component failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Every `"<path>.wasm"` string in cargo's artifact messages.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wasm: Vec<PathBuf> = stdout
        .split('"')
        .filter(|piece| piece.ends_with(".wasm"))
        .map(PathBuf::from)
        .collect();
    let find = |name: &str| {
        wasm.iter()
            .find(|p| p.file_name().is_some_and(|f| f == name))
            .cloned()
            .ok_or_else(|| wasmtime::Error::msg(format!("cargo reported no {name} artifact")))
    };
    Ok(ComponentPaths {
        command: find("vdev-device.wasm")?,
        library: find("vdev_wasi.wasm")?,
    })
}

/// One engine and the compiled components, shared by every instance.
#[derive(Clone)]
pub struct WasiHost {
    engine: Engine,
    command: Component,
    /// Absent in a host loaded with [`WasiHost::load_command`].
    library: Option<Component>,
    linker: std::sync::Arc<Linker<State>>,
}

impl WasiHost {
    /// Builds (or locates) and compiles both components once per test process; every caller
    /// shares the engine and the compiled code (compiling is the slow part of a debug host).
    pub fn load() -> Result<Self> {
        static HOST: OnceLock<std::result::Result<WasiHost, String>> = OnceLock::new();
        HOST.get_or_init(|| Self::compile().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(wasmtime::Error::msg)
    }

    /// The command component only, for a host process that runs one command instance:
    /// `VDEV_WASI_COMMAND_COMPILED` names a file written by [`WasiHost::save_compiled_command`]
    /// (loading it takes milliseconds; compiling takes seconds in a debug build), otherwise
    /// `VDEV_WASI_COMMAND` or the release build is compiled.
    pub fn load_command() -> Result<Self> {
        if let Ok(compiled) = std::env::var("VDEV_WASI_COMMAND_COMPILED") {
            let engine = Engine::new(&Config::new())?;
            // SAFETY: `deserialize_file` trusts the file to be wasmtime's own compiled code for
            // this engine configuration; the variable is meant only for files written by
            // `save_compiled_command` of this same build (a mismatched wasmtime version or
            // configuration is still detected and refused by wasmtime).
            #[allow(unsafe_code)]
            let command = unsafe { Component::deserialize_file(&engine, &compiled)? };
            return Self::with_components(engine, command, None);
        }
        let command = match std::env::var("VDEV_WASI_COMMAND") {
            Ok(path) => PathBuf::from(path),
            Err(_) => component_paths()?.command,
        };
        Self::compile_from(&command, None)
    }

    /// Writes the compiled command component to `path`, for `VDEV_WASI_COMMAND_COMPILED`.
    pub fn save_compiled_command(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.command.serialize()?)?;
        Ok(())
    }

    fn compile() -> Result<Self> {
        let paths = component_paths()?;
        Self::compile_from(&paths.command, Some(&paths.library))
    }

    fn compile_from(command: &Path, library: Option<&Path>) -> Result<Self> {
        let engine = Engine::new(&Config::new())?;
        let command = Component::from_file(&engine, command)?;
        let library = library
            .map(|path| Component::from_file(&engine, path))
            .transpose()?;
        Self::with_components(engine, command, library)
    }

    fn with_components(
        engine: Engine,
        command: Component,
        library: Option<Component>,
    ) -> Result<Self> {
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // The library world logs through `wasi:logging`: this host keeps every line per
        // instance, for the tests to read.
        linker
            .instance("wasi:logging/logging@0.1.0-draft")?
            .func_new("log", |mut store, _, params, _| {
                let [Val::Enum(level), Val::String(context), Val::String(message)] = params else {
                    wasmtime::bail!("wasi:logging log called with {params:?}");
                };
                store.data_mut().logs.push(LogLine {
                    level: level.clone(),
                    context: context.clone(),
                    message: message.clone(),
                });
                Ok(())
            })?;
        Ok(Self {
            engine,
            command,
            library,
            linker: std::sync::Arc::new(linker),
        })
    }

    fn context(
        args: &[String],
        env: &[(String, String)],
        store_dir: &Path,
        stdin: AsyncStdinStream,
        stdout: AsyncStdoutStream,
        stderr: Option<AsyncStdoutStream>,
        https_ca_pem: Option<&[u8]>,
    ) -> Result<State> {
        let https = https_ca_pem
            .map(crate::tls::client_config_trusting)
            .transpose()
            .map_err(wasmtime::Error::msg)?;
        let mut builder = WasiCtxBuilder::new();
        let mut argv = vec!["vdev-device".to_owned()];
        argv.extend(args.iter().cloned());
        builder
            .args(&argv)
            .envs(env)
            .stdin(stdin)
            .stdout(stdout)
            .preopened_dir(store_dir, ".", FsPerms::ReadWrite)?
            .allow_tcp(true)
            .allow_udp(false)
            .allow_ip_name_lookup(true)
            .socket_addr_check(|addr, use_| Box::pin(async move { socket_allowed(addr, use_) }));
        match stderr {
            Some(stderr) => builder.stderr(stderr),
            None => builder.inherit_stderr(),
        };
        Ok(State {
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            hooks: LoopbackOnly { https },
            table: ResourceTable::new(),
            memory: LinearMemoryTally::default(),
            logs: Vec::new(),
        })
    }

    /// Instantiates the library component with its store in `store_dir` and starts a device
    /// through `vdev:device/client` (`device.start`).
    pub async fn start_library_device(
        &self,
        store_dir: &Path,
        config: LibraryConfig,
    ) -> Result<LibraryDevice> {
        let state = Self::context(
            &[],
            &[],
            store_dir,
            AsyncStdinStream::new(tokio::io::empty()),
            AsyncStdoutStream::new(1024, tokio::io::sink()),
            None,
            config.https_ca_pem.as_deref(),
        )?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        let library = self
            .library
            .as_ref()
            .ok_or_else(|| wasmtime::Error::msg("this host did not load the library component"))?;
        let instance = self.linker.instantiate_async(&mut store, library).await?;
        let client = instance
            .get_export_index(&mut store, None, CLIENT)
            .ok_or_else(|| wasmtime::Error::msg("the component exports no vdev:device/client"))?;
        let func = |store: &mut Store<State>, name: &str| {
            instance
                .get_export_index(&mut *store, Some(&client), name)
                .and_then(|index| instance.get_func(&mut *store, index))
                .ok_or_else(|| wasmtime::Error::msg(format!("client has no {name}")))
        };
        let start = func(&mut store, "[static]device.start")?;
        let funcs = LibraryFuncs {
            send: func(&mut store, "[method]device.send")?,
            poll: func(&mut store, "[method]device.poll")?,
            pending_count: func(&mut store, "[method]device.pending-count")?,
            update_reported: func(&mut store, "[method]device.update-reported-properties")?,
            desired_if_newer: func(&mut store, "[method]device.desired-properties-if-newer")?,
            reported_pending: func(&mut store, "[method]device.reported-properties-pending")?,
            forget: func(&mut store, "[method]device.forget")?,
            set_offline: func(&mut store, "[method]device.set-offline")?,
            stop: func(&mut store, "[method]device.stop")?,
            enqueue_batch_completion: func(&mut store, "[method]device.enqueue-batch-completion")?,
            enqueue_message_completion: func(
                &mut store,
                "[method]device.enqueue-message-completion",
            )?,
        };
        let mut result = [Val::Bool(false)];
        start
            .call_async(&mut store, &[config.to_val()], &mut result)
            .await?;
        let device = match ok_value(&result[0])? {
            Some(Val::Resource(device)) => device,
            other => wasmtime::bail!("device.start returned {other:?}"),
        };
        Ok(LibraryDevice {
            store,
            device,
            funcs,
            unread: Vec::new(),
        })
    }

    /// Starts one instance of the command component with `args` and `env`, its store in
    /// `store_dir` (preopened as `.`).
    pub fn spawn_command(
        &self,
        args: &[String],
        env: &[(String, String)],
        store_dir: &Path,
    ) -> Result<CommandRun> {
        self.spawn_command_trusting(args, env, store_dir, None)
    }

    /// [`WasiHost::spawn_command`] whose `wasi:http` requests to `https://` trust the CA of
    /// `https_ca_pem` (the component's HTTP TLS is the host's).
    pub fn spawn_command_trusting(
        &self,
        args: &[String],
        env: &[(String, String)],
        store_dir: &Path,
        https_ca_pem: Option<&[u8]>,
    ) -> Result<CommandRun> {
        let (stdin_writer, stdin_reader) = tokio::io::duplex(64 * 1024);
        let (stdout_writer, stdout_reader) = tokio::io::duplex(64 * 1024);
        let (stderr_writer, stderr_reader) = tokio::io::duplex(64 * 1024);
        let state = Self::context(
            args,
            env,
            store_dir,
            AsyncStdinStream::new(stdin_reader),
            AsyncStdoutStream::new(64 * 1024, stdout_writer),
            Some(AsyncStdoutStream::new(64 * 1024, stderr_writer)),
            https_ca_pem,
        )?;
        let mut store = Store::new(&self.engine, state);
        let component = self.command.clone();
        let linker = self.linker.clone();
        let task = tokio::spawn(async move {
            let command = Command::instantiate_async(&mut store, &component, &linker).await?;
            match command.wasi_cli_run().call_run(&mut store).await {
                Ok(Ok(())) => Ok(0),
                Ok(Err(())) => Ok(1),
                Err(error) => match error.downcast_ref::<I32Exit>() {
                    Some(exit) => Ok(exit.0),
                    None => Err(error),
                },
            }
        });
        let (line_tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout_reader).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if line_tx.send(line).is_err() {
                    return;
                }
            }
        });
        // Standard error is kept for the test and still shown, as an inherited one would be.
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut reader = BufReader::new(stderr_reader).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("{line}");
                kept.push(line);
            }
            kept
        });
        Ok(CommandRun {
            lines,
            stderr,
            stdin: Some(stdin_writer),
            task,
        })
    }
}

/// A running instance of the command component.
pub struct CommandRun {
    /// Its standard output, line by line (JSON events).
    pub lines: mpsc::UnboundedReceiver<String>,
    /// Its standard error, every line once it is closed.
    stderr: JoinHandle<Vec<String>>,
    stdin: Option<DuplexStream>,
    task: JoinHandle<Result<i32>>,
}

impl CommandRun {
    /// Writes to its standard input.
    pub async fn write_stdin(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| wasmtime::Error::msg("stdin is closed"))?;
        stdin.write_all(bytes).await?;
        Ok(())
    }

    /// Ends its standard input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the instance to exit; returns its exit code.
    pub async fn wait(self) -> Result<i32> {
        self.task.await?
    }

    /// [`CommandRun::wait`], and every line it wrote to standard error (the instance is gone,
    /// so its standard error is closed and read to the end).
    pub async fn wait_with_stderr(self) -> Result<(i32, Vec<String>)> {
        let code = self.task.await??;
        Ok((code, self.stderr.await?))
    }

    /// Ends the instance at once, wherever it is (its store directory stays as it was).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The exported interface of the library world.
const CLIENT: &str = "vdev:device/client@0.2.0";

/// The WIT `configuration` record, for the library world.
#[derive(Debug, Clone)]
pub struct LibraryConfig {
    /// Base URL of the Platform's device API.
    pub instance_url: String,
    /// The Provisioning Token.
    pub provisioning_token: String,
    /// The Device ID to ask for.
    pub device_id: String,
    /// MQTT over TLS trusting this CA file (inside the store directory) besides the Mozilla
    /// roots; plain TCP when `None`.
    pub tls_ca_file: Option<String>,
    /// MQTT over WebSocket (`wss://` with `tls_ca_file`, at the URL the Platform announces or
    /// at `/$iothub/websocket` of the hub) instead of TCP or TLS.
    pub web_socket: bool,
    /// The host's, not the component's: `wasi:http` requests to `https://` trust this CA (PEM)
    /// instead of the public roots (the component's HTTP TLS is the host's).
    pub https_ca_pem: Option<Vec<u8>>,
    /// The record's `tunables`: numbers to tune, by kebab-case name.
    pub tunables: Vec<(String, u64)>,
    /// The record's `log-level` (`debug`, `info`, ...): the component's default when `None`.
    pub log_level: Option<String>,
}

impl LibraryConfig {
    /// A device that asks for `device_id` and speaks plain TCP (the loopback stand-in's way).
    pub fn tcp(instance_url: String, provisioning_token: String, device_id: String) -> Self {
        Self {
            instance_url,
            provisioning_token,
            device_id,
            tls_ca_file: None,
            web_socket: false,
            https_ca_pem: None,
            tunables: Vec::new(),
            log_level: None,
        }
    }

    fn to_val(&self) -> Val {
        let some = |v: Val| Val::Option(Some(Box::new(v)));
        Val::Record(vec![
            (
                "instance-url".into(),
                Val::String(self.instance_url.clone()),
            ),
            (
                "provisioning-token".into(),
                Val::String(self.provisioning_token.clone()),
            ),
            (
                "device-id".into(),
                some(Val::String(self.device_id.clone())),
            ),
            ("provisioning-parameters".into(), Val::List(Vec::new())),
            (
                "transport".into(),
                Val::Enum(
                    match (self.web_socket, self.tls_ca_file.is_some()) {
                        (true, _) => "web-socket",
                        (false, true) => "tls",
                        (false, false) => "tcp",
                    }
                    .into(),
                ),
            ),
            (
                "tls-ca-file".into(),
                Val::Option(
                    self.tls_ca_file
                        .clone()
                        .map(|path| Box::new(Val::String(path))),
                ),
            ),
            ("store-dir".into(), Val::String(".".into())),
            ("provisioning-poll-interval-ms".into(), some(Val::U64(200))),
            ("retry-initial-ms".into(), some(Val::U64(100))),
            ("retry-max-ms".into(), some(Val::U64(1_000))),
            (
                "tunables".into(),
                Val::List(
                    self.tunables
                        .iter()
                        .map(|(name, value)| {
                            Val::Tuple(vec![Val::String(name.clone()), Val::U64(*value)])
                        })
                        .collect(),
                ),
            ),
            (
                "log-level".into(),
                Val::Option(
                    self.log_level
                        .clone()
                        .map(|level| Box::new(Val::Enum(level))),
                ),
            ),
        ])
    }
}

struct LibraryFuncs {
    send: Func,
    poll: Func,
    pending_count: Func,
    update_reported: Func,
    desired_if_newer: Func,
    reported_pending: Func,
    forget: Func,
    set_offline: Func,
    stop: Func,
    enqueue_batch_completion: Func,
    enqueue_message_completion: Func,
}

/// A device of the library world, called through `vdev:device/client`.
pub struct LibraryDevice {
    store: Store<State>,
    device: ResourceAny,
    funcs: LibraryFuncs,
    /// Events polled but handed back unread ([`LibraryDevice::unread`]).
    unread: Vec<LibraryEvent>,
}

/// The WIT `stream-options` record: where messages go and whether they are compressed.
#[derive(Debug, Clone)]
pub struct LibraryStream {
    pub stream_group: Option<String>,
    pub stream: Option<String>,
    pub site_id: Option<String>,
    /// The `compression` case: `none`, `fastest` or `smallest-size`.
    pub compression: String,
}

impl LibraryStream {
    /// Stream `stream` of group `stream_group`, uncompressed.
    pub fn named(stream_group: &str, stream: &str) -> Self {
        Self {
            stream_group: Some(stream_group.into()),
            stream: Some(stream.into()),
            site_id: None,
            compression: "none".into(),
        }
    }

    fn to_val(&self) -> Val {
        let text = |v: &Option<String>| Val::Option(v.clone().map(|s| Box::new(Val::String(s))));
        Val::Record(vec![
            ("stream-group".into(), text(&self.stream_group)),
            ("stream".into(), text(&self.stream)),
            ("site-id".into(), text(&self.site_id)),
            ("compression".into(), Val::Enum(self.compression.clone())),
        ])
    }
}

/// The WIT `message-options` record: the ids of one message within its stream.
#[derive(Debug, Clone, Default)]
pub struct LibraryMessageIds {
    pub batch_id: Option<String>,
    pub message_id: Option<String>,
    pub batch_slice_id: Option<String>,
    pub chunk_id: Option<String>,
}

impl LibraryMessageIds {
    fn to_val(&self) -> Val {
        let text = |v: &Option<String>| Val::Option(v.clone().map(|s| Box::new(Val::String(s))));
        Val::Record(vec![
            ("batch-id".into(), text(&self.batch_id)),
            ("message-id".into(), text(&self.message_id)),
            ("batch-slice-id".into(), text(&self.batch_slice_id)),
            ("chunk-id".into(), text(&self.chunk_id)),
        ])
    }
}

/// One `event` of the library world: its case name and payload.
#[derive(Debug, Clone)]
pub struct LibraryEvent {
    /// The case, e.g. `provisioning-operation`, `message-delivered`.
    pub name: String,
    /// Its payload, if the case has one.
    pub payload: Option<Val>,
}

impl LibraryEvent {
    /// A field of a record payload, when it is a string.
    pub fn string_field(&self, field: &str) -> Option<String> {
        match &self.payload {
            Some(Val::Record(fields)) => fields.iter().find_map(|(name, value)| match value {
                Val::String(text) if name == field => Some(text.clone()),
                _ => None,
            }),
            _ => None,
        }
    }
}

/// The `ok` value of a `result`, or its error as text.
fn ok_value(value: &Val) -> Result<Option<Val>> {
    match value {
        Val::Result(Ok(value)) => Ok(value.as_deref().cloned()),
        Val::Result(Err(error)) => wasmtime::bail!("call failed: {error:?}"),
        other => wasmtime::bail!("not a result: {other:?}"),
    }
}

impl LibraryDevice {
    /// `device.send` to stream group `telemetry`, stream `wasi`; returns the sequence number
    /// once the message is durable.
    pub async fn send(&mut self, payload: &[u8]) -> Result<u64> {
        let none = || Val::Option(None);
        let some = |v: &str| Val::Option(Some(Box::new(Val::String(v.into()))));
        let stream = Val::Record(vec![
            ("stream-group".into(), some("telemetry")),
            ("stream".into(), some("wasi")),
            ("site-id".into(), none()),
            ("compression".into(), Val::Enum("none".into())),
        ]);
        let options = Val::Record(vec![
            ("batch-id".into(), none()),
            ("message-id".into(), none()),
            ("batch-slice-id".into(), none()),
            ("chunk-id".into(), none()),
        ]);
        let bytes = Val::List(payload.iter().map(|b| Val::U8(*b)).collect());
        let params = [Val::Resource(self.device), stream, options, bytes];
        let mut result = [Val::Bool(false)];
        self.funcs
            .send
            .call_async(&mut self.store, &params, &mut result)
            .await?;
        match ok_value(&result[0])? {
            Some(Val::U64(seq)) => Ok(seq),
            other => wasmtime::bail!("send returned {other:?}"),
        }
    }

    /// `device.send` with the stream and ids given; returns the sequence number once durable.
    pub async fn send_to(
        &mut self,
        stream: &LibraryStream,
        ids: &LibraryMessageIds,
        payload: &[u8],
    ) -> Result<u64> {
        let bytes = Val::List(payload.iter().map(|b| Val::U8(*b)).collect());
        let params = [
            Val::Resource(self.device),
            stream.to_val(),
            ids.to_val(),
            bytes,
        ];
        let send = self.funcs.send;
        self.call_for_seq(send, &params, "send").await
    }

    /// `device.enqueue-batch-completion`: the marker that completes batch `batch_id`.
    pub async fn enqueue_batch_completion(
        &mut self,
        stream: &LibraryStream,
        batch_id: &str,
    ) -> Result<u64> {
        let params = [
            Val::Resource(self.device),
            stream.to_val(),
            Val::String(batch_id.into()),
        ];
        let func = self.funcs.enqueue_batch_completion;
        self.call_for_seq(func, &params, "enqueue-batch-completion")
            .await
    }

    /// `device.enqueue-message-completion`: the marker that completes message `message_id` of
    /// batch `batch_id`.
    pub async fn enqueue_message_completion(
        &mut self,
        stream: &LibraryStream,
        batch_id: &str,
        message_id: &str,
    ) -> Result<u64> {
        let params = [
            Val::Resource(self.device),
            stream.to_val(),
            Val::String(batch_id.into()),
            Val::String(message_id.into()),
        ];
        let func = self.funcs.enqueue_message_completion;
        self.call_for_seq(func, &params, "enqueue-message-completion")
            .await
    }

    /// Calls a function whose answer is `result<u64, send-error>`; the error as text.
    async fn call_for_seq(&mut self, func: Func, params: &[Val], name: &str) -> Result<u64> {
        let mut result = [Val::Bool(false)];
        func.call_async(&mut self.store, params, &mut result)
            .await?;
        match ok_value(&result[0])? {
            Some(Val::U64(seq)) => Ok(seq),
            other => wasmtime::bail!("{name} returned {other:?}"),
        }
    }

    /// Hands events back: the next [`LibraryDevice::poll`] returns them first, without polling.
    pub fn unread(&mut self, events: impl IntoIterator<Item = LibraryEvent>) {
        let mut events: Vec<LibraryEvent> = events.into_iter().collect();
        events.append(&mut self.unread);
        self.unread = events;
    }

    /// `device.poll(timeout-ms)` (or the events handed back unread, if any).
    pub async fn poll(&mut self, timeout_ms: u32) -> Result<Vec<LibraryEvent>> {
        if !self.unread.is_empty() {
            return Ok(std::mem::take(&mut self.unread));
        }
        let mut result = [Val::Bool(false)];
        self.funcs
            .poll
            .call_async(
                &mut self.store,
                &[Val::Resource(self.device), Val::U32(timeout_ms)],
                &mut result,
            )
            .await?;
        let Val::List(events) = &result[0] else {
            wasmtime::bail!("poll returned {:?}", result[0]);
        };
        events
            .iter()
            .map(|event| match event {
                Val::Variant(name, payload) => Ok(LibraryEvent {
                    name: name.clone(),
                    payload: payload.as_deref().cloned(),
                }),
                other => wasmtime::bail!("not an event: {other:?}"),
            })
            .collect()
    }

    /// What the component logged through `wasi:logging` so far, oldest first.
    pub fn logs(&self) -> &[LogLine] {
        &self.store.data().logs
    }

    /// `device.pending-count()`.
    pub async fn pending_count(&mut self) -> Result<u64> {
        let mut result = [Val::Bool(false)];
        self.funcs
            .pending_count
            .call_async(&mut self.store, &[Val::Resource(self.device)], &mut result)
            .await?;
        match result[0] {
            Val::U64(count) => Ok(count),
            ref other => wasmtime::bail!("pending-count returned {other:?}"),
        }
    }

    /// `device.update-reported-properties(patch-json)`.
    /// `device.update-reported-properties`; returns the update's revision.
    pub async fn update_reported_properties(&mut self, patch_json: &str) -> Result<u64> {
        let mut result = [Val::Bool(false)];
        self.funcs
            .update_reported
            .call_async(
                &mut self.store,
                &[Val::Resource(self.device), Val::String(patch_json.into())],
                &mut result,
            )
            .await?;
        match ok_value(&result[0])? {
            Some(Val::U64(revision)) => Ok(revision),
            other => wasmtime::bail!("update-reported-properties returned {other:?}"),
        }
    }

    /// `device.desired-properties-if-newer(version)`: the properties' JSON and their version.
    pub async fn desired_properties_if_newer(
        &mut self,
        version: u64,
    ) -> Result<Option<(String, Option<u64>)>> {
        let mut result = [Val::Bool(false)];
        self.funcs
            .desired_if_newer
            .call_async(
                &mut self.store,
                &[Val::Resource(self.device), Val::U64(version)],
                &mut result,
            )
            .await?;
        let Val::Option(desired) = &result[0] else {
            wasmtime::bail!("desired-properties-if-newer returned {:?}", result[0]);
        };
        let Some(desired) = desired else {
            return Ok(None);
        };
        let Val::Record(fields) = desired.as_ref() else {
            wasmtime::bail!("not a desired-properties record: {desired:?}");
        };
        let (mut properties, mut version) = (String::new(), None);
        for (name, value) in fields {
            match (name.as_str(), value) {
                ("properties", Val::String(json)) => properties = json.clone(),
                ("version", Val::Option(Some(v))) => {
                    if let Val::U64(v) = v.as_ref() {
                        version = Some(*v);
                    }
                }
                _ => {}
            }
        }
        Ok(Some((properties, version)))
    }

    /// `device.forget(force)`; a refusal as its error's text.
    pub async fn forget(&mut self, force: bool) -> Result<()> {
        let mut result = [Val::Bool(false)];
        self.funcs
            .forget
            .call_async(
                &mut self.store,
                &[Val::Resource(self.device), Val::Bool(force)],
                &mut result,
            )
            .await?;
        ok_value(&result[0]).map(|_| ())
    }

    /// `device.reported-properties-pending()`.
    pub async fn reported_properties_pending(&mut self) -> Result<bool> {
        let mut result = [Val::Bool(false)];
        self.funcs
            .reported_pending
            .call_async(&mut self.store, &[Val::Resource(self.device)], &mut result)
            .await?;
        match result[0] {
            Val::Bool(pending) => Ok(pending),
            ref other => wasmtime::bail!("reported-properties-pending returned {other:?}"),
        }
    }

    /// The bytes of wasm linear memory this instance has grown to (all its core memories).
    pub fn linear_memory_bytes(&self) -> usize {
        self.store.data().memory.bytes
    }

    /// `device.stop()`, then drops the resource.
    /// `device.set-offline(offline)`.
    pub async fn set_offline(&mut self, offline: bool) -> Result<()> {
        self.funcs
            .set_offline
            .call_async(
                &mut self.store,
                &[Val::Resource(self.device), Val::Bool(offline)],
                &mut [],
            )
            .await
    }

    pub async fn stop(mut self) -> Result<()> {
        self.funcs
            .stop
            .call_async(&mut self.store, &[Val::Resource(self.device)], &mut [])
            .await?;
        self.device.resource_drop_async(&mut self.store).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_connects_are_allowed() {
        let at = |ip: &str| SocketAddr::new(ip.parse().expect("ip"), 1883);
        assert!(socket_allowed(at("127.0.0.1"), SocketAddrUse::TcpConnect));
        assert!(socket_allowed(at("127.8.9.10"), SocketAddrUse::TcpConnect));
        assert!(socket_allowed(at("::1"), SocketAddrUse::TcpConnect));
        assert!(!socket_allowed(at("192.0.2.1"), SocketAddrUse::TcpConnect));
        assert!(!socket_allowed(
            at("::ffff:192.0.2.1"),
            SocketAddrUse::TcpConnect
        ));
        assert!(socket_allowed(at("0.0.0.0"), SocketAddrUse::TcpBind));
        assert!(!socket_allowed(at("192.0.2.1"), SocketAddrUse::TcpBind));
        assert!(!socket_allowed(at("127.0.0.1"), SocketAddrUse::TcpListen));
        assert!(!socket_allowed(at("127.0.0.1"), SocketAddrUse::UdpBind));
    }
}
