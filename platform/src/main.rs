//! `vdev-platform` command: start the stand-in Platform with sensible defaults, print where
//! everything is, and serve until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use vdev_platform::{Config, Platform};

/// Local stand-in of the IoT Platform for vdev: device API, MQTT gateway, technician console.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Data directory (database, blobs, TLS files, platform.json).
    #[arg(long, env = "VDEV_DATA_DIR", default_value = "./vdev-data")]
    data_dir: PathBuf,
    /// Plain HTTP listener: device API, admin API, console, MQTT over WebSocket ("off" to disable).
    #[arg(long, env = "VDEV_HTTP", default_value = "127.0.0.1:8080")]
    http: String,
    /// HTTPS listener with the same routes (the official SDK needs 127.0.0.1:443).
    #[arg(long, env = "VDEV_HTTPS", default_value = "off")]
    https: String,
    /// MQTT over plain TCP.
    #[arg(long, env = "VDEV_MQTT_TCP", default_value = "127.0.0.1:1883")]
    mqtt_tcp: String,
    /// MQTT over TLS (the official SDK needs 127.0.0.1:8883).
    #[arg(long, env = "VDEV_MQTT_TLS", default_value = "127.0.0.1:8883")]
    mqtt_tls: String,
    /// Host name told to devices and put in the TLS certificate.
    #[arg(long, env = "VDEV_HOST_NAME", default_value = "localhost")]
    host_name: String,
    /// Admin bearer token (default: the one in platform.json, or a new random one).
    #[arg(long, env = "VDEV_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Lifetime of MQTT credentials issued at registration, in seconds.
    #[arg(long, default_value_t = 3600)]
    sas_lifetime_seconds: u64,
    /// What devices get: "extended" (the stand-in's additions: gatewayEndpoints, uploadUrl) or
    /// "iothub" (only what a real instance offers; needs --mqtt-tcp off and --https, and --http
    /// then serves the admin API and the console only).
    #[arg(long, env = "VDEV_CONTRACT", default_value = "extended")]
    contract: vdev_platform::Contract,
    /// Host name of blob storage in upload answers (default: blob.<host name>).
    #[arg(long, env = "VDEV_BLOB_HOST_NAME")]
    blob_host_name: Option<String>,
    /// Record what devices send (every device HTTP request and MQTT packet, secrets as their
    /// shape); the admin API reads it at GET /transcript and clears it with DELETE.
    #[arg(long)]
    record_transcript: bool,
}

fn listener(value: &str, flag: &str) -> Result<Option<SocketAddr>, String> {
    if value == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = value
        .parse()
        .map_err(|e| format!("--{flag} {value:?}: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--{flag} {addr}: only loopback addresses are allowed"
        ));
    }
    Ok(Some(addr))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let parsed = (|| {
        Ok::<_, String>(Config {
            data_dir: args.data_dir.clone(),
            http: listener(&args.http, "http")?,
            https: listener(&args.https, "https")?,
            mqtt_tcp: listener(&args.mqtt_tcp, "mqtt-tcp")?,
            mqtt_tls: listener(&args.mqtt_tls, "mqtt-tls")?,
            host_name: args.host_name.clone(),
            admin_token: args.admin_token.clone(),
            sas_lifetime: Duration::from_secs(args.sas_lifetime_seconds),
            contract: args.contract,
            blob_host_name: args.blob_host_name.clone(),
            record_transcript: args.record_transcript,
            ..Config::ephemeral(&args.data_dir)
        })
    })();
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let platform = match Platform::start(config).await {
        Ok(platform) => platform,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let info = platform.info();
    println!("vdev-platform is running");
    println!(
        "  console:            {}#token={}",
        info.console_url, info.admin_token
    );
    if let Some(url) = &info.http_url {
        println!("  instance url:       {url}");
    }
    if let Some(url) = &info.https_url {
        println!("  https instance url: {url}");
    }
    let endpoints = &info.gateway_endpoints;
    for (name, value) in [
        ("mqtt tcp", &endpoints.mqtt_tcp),
        ("mqtt tls", &endpoints.mqtt_tls),
        ("mqtt websocket", &endpoints.web_socket),
    ] {
        if let Some(value) = value {
            println!("  {name:<19} {value}");
        }
    }
    println!("  admin token:        {}", info.admin_token);
    println!("  workspace:          {}", info.workspace_id);
    println!("  provisioning token: {}", info.provisioning_token);
    println!(
        "  test CA:            {}",
        info.ca_certificate_path.display()
    );
    println!("  platform.json:      {}", info.info_path.display());
    if tokio::signal::ctrl_c().await.is_err() {
        eprintln!("error: cannot wait for ctrl-c");
    }
    platform.shutdown().await;
    std::process::ExitCode::SUCCESS
}
