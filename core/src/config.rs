//! Everything a host chooses when it creates a device, with defaults that suit a real Platform.

use crate::backoff::BackoffConfig;
use crate::cleartext::{InsecureUrl, check_url};
use crate::identity::DeviceId;
use crate::mqtt::session::SessionConfig;
use crate::outbox::OutboxLimits;
use crate::twin::TwinConfig;

/// How the host carries MQTT. The gateway's own endpoints are used when it announces them (a
/// stand-in Platform); otherwise the IoT Hub defaults apply (TLS on 8883, `wss://<host>/$iothub/websocket`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Plain TCP where the Platform offers it (loopback stand-in), TLS otherwise.
    Tcp,
    /// TCP with TLS.
    #[default]
    Tls,
    /// WebSocket (what a browser uses).
    WebSocket,
}

/// Configuration of a [`crate::Device`].
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Base URL of the Platform's device API, e.g. `https://example.com` or `http://127.0.0.1:8080`.
    pub instance_url: String,
    /// The Provisioning Token.
    pub provisioning_token: String,
    /// The Device ID to ask for; the Platform or the technician chooses when absent.
    pub device_id: Option<DeviceId>,
    /// Extra parameters shown to the technician who approves the operation.
    pub provisioning_parameters: Vec<(String, String)>,
    /// How to carry MQTT.
    pub transport: Transport,
    /// How often to ask whether the operation was approved.
    pub provisioning_poll_interval_ms: u64,
    /// How long an HTTP request may take before it counts as failed (uploads get more time per byte).
    pub http_timeout_ms: u64,
    /// Payloads larger than this after compression go by HTTP upload.
    pub upload_threshold: usize,
    /// Retry delays of provisioning, registration and uploads.
    pub backoff: BackoffConfig,
    /// MQTT session timing and window.
    pub session: SessionConfig,
    /// Outbox bounds.
    pub outbox: OutboxLimits,
    /// Twin request timing.
    pub twin: TwinConfig,
}

impl DeviceConfig {
    /// A configuration with defaults for everything but the Platform and the token.
    pub fn new(instance_url: impl Into<String>, provisioning_token: impl Into<String>) -> Self {
        Self {
            instance_url: instance_url.into(),
            provisioning_token: provisioning_token.into(),
            device_id: None,
            provisioning_parameters: Vec::new(),
            transport: Transport::default(),
            provisioning_poll_interval_ms: 2_000,
            http_timeout_ms: 30_000,
            upload_threshold: 250_000,
            backoff: BackoffConfig::default(),
            session: SessionConfig::default(),
            outbox: OutboxLimits::default(),
            twin: TwinConfig::default(),
        }
    }

    /// Checks what the host should refuse at start: an instance URL the cleartext rule does
    /// not allow (hosts call this so the app hears it at once; a device made anyway refuses
    /// every request to it, with that reason).
    pub fn validate(&self) -> Result<(), InsecureUrl> {
        check_url(&self.instance_url)
    }
}
