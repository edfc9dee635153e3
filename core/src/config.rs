//! Everything a host chooses when it creates a device, with defaults that suit a real Platform.

use thiserror::Error;

use crate::backoff::BackoffConfig;
use crate::cleartext::check_url;
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

impl Transport {
    /// The transport's name as hosts spell it in settings and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::WebSocket => "websocket",
        }
    }
}

/// Configuration of a [`crate::Device`].
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Base URL of the Platform's device API, e.g. `https://example.com` or `http://127.0.0.1:8080`
    /// ([`DeviceConfig::new`] accepts a bare host name, meaning `https://`).
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
    /// A configuration with defaults for everything but the Platform and the token. A bare
    /// host name (`example.com`, `example.com:8443`) means `https://`; trailing slashes go.
    pub fn new(instance_url: impl Into<String>, provisioning_token: impl Into<String>) -> Self {
        Self {
            instance_url: normalize_instance_url(instance_url.into()),
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

    /// Sets the retry delays of everything that retries: provisioning, registration, uploads
    /// and reconnecting.
    pub fn set_retry_delays(&mut self, initial_ms: u64, max_ms: u64) {
        self.backoff = BackoffConfig { initial_ms, max_ms };
        self.session.backoff = self.backoff;
    }

    /// Checks what every host refuses at start, so the app hears it at once with the option
    /// it names: an empty instance URL or token, an instance URL the cleartext rule does not
    /// allow, and timings that cannot work. (A device made anyway refuses every request to a
    /// refused URL, with that reason.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_for(&[Transport::Tcp, Transport::Tls, Transport::WebSocket])
    }

    /// [`DeviceConfig::validate`] for a host that can open only the `available` transports
    /// (a browser only WebSocket): the device never asks it for another.
    pub fn validate_for(&self, available: &[Transport]) -> Result<(), ConfigError> {
        if !available.contains(&self.transport) {
            let mut reason = format!(
                "{} is not available in this host; use ",
                self.transport.as_str()
            );
            for (at, transport) in available.iter().enumerate() {
                reason.push_str(if at == 0 { "" } else { " or " });
                reason.push_str(transport.as_str());
            }
            return Err(ConfigError {
                option: ConfigOption::Transport,
                reason,
            });
        }
        let refuse = |option, reason: &str| {
            Err(ConfigError {
                option,
                reason: reason.to_owned(),
            })
        };
        if self.instance_url.is_empty() {
            return refuse(ConfigOption::InstanceUrl, "is empty");
        }
        check_url(&self.instance_url).map_err(|error| ConfigError {
            option: ConfigOption::InstanceUrl,
            reason: error.to_string(),
        })?;
        if self.provisioning_token.trim().is_empty() {
            return refuse(ConfigOption::ProvisioningToken, "is empty");
        }
        if self.provisioning_poll_interval_ms == 0 {
            return refuse(ConfigOption::ProvisioningPollInterval, "must be above 0 ms");
        }
        if self.http_timeout_ms == 0 {
            return refuse(ConfigOption::HttpTimeout, "must be above 0 ms");
        }
        // Shown to the technician by name: a nameless one or two of one name would be lost.
        for (at, (name, _)) in self.provisioning_parameters.iter().enumerate() {
            if name.trim().is_empty() {
                return refuse(ConfigOption::ProvisioningParameters, "a name is empty");
            }
            if self.provisioning_parameters[..at]
                .iter()
                .any(|(n, _)| n == name)
            {
                return Err(ConfigError {
                    option: ConfigOption::ProvisioningParameters,
                    // Quoted by hand: `{:?}` would link the Debug escaper (1.8 KB of wasm).
                    reason: format!("the name \"{name}\" is given twice"),
                });
            }
        }
        for backoff in [self.backoff, self.session.backoff] {
            if backoff.initial_ms == 0 {
                return refuse(ConfigOption::RetryInitial, "must be above 0 ms");
            }
            if backoff.max_ms < backoff.initial_ms {
                return Err(ConfigError {
                    option: ConfigOption::RetryMax,
                    reason: format!(
                        "{} ms is below the first retry delay ({} ms)",
                        backoff.max_ms, backoff.initial_ms
                    ),
                });
            }
        }
        Ok(())
    }
}

/// `example.com` → `https://example.com`; `http://127.0.0.1:8080/` → `http://127.0.0.1:8080`.
fn normalize_instance_url(url: String) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    // On bytes: `str::find` and `str` slicing would link a string searcher and the slicing
    // panic path into the wasm (about 2 KB).
    let bytes = trimmed.as_bytes();
    let has_scheme = bytes
        .windows(3)
        .position(|w| w == b"://")
        .is_some_and(|at| !bytes[..at].iter().any(|b| matches!(b, b'/' | b'?' | b'#')));
    if has_scheme || trimmed.is_empty() {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    }
}

/// Which option of [`DeviceConfig`] a [`ConfigError`] is about (hosts name it in their own
/// spelling: `instance` in JavaScript, `instance-url` in WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOption {
    /// [`DeviceConfig::instance_url`].
    InstanceUrl,
    /// [`DeviceConfig::provisioning_token`].
    ProvisioningToken,
    /// [`DeviceConfig::provisioning_poll_interval_ms`].
    ProvisioningPollInterval,
    /// [`DeviceConfig::http_timeout_ms`].
    HttpTimeout,
    /// The first retry delay ([`BackoffConfig::initial_ms`]).
    RetryInitial,
    /// The longest retry delay ([`BackoffConfig::max_ms`]).
    RetryMax,
    /// [`DeviceConfig::provisioning_parameters`].
    ProvisioningParameters,
    /// [`DeviceConfig::transport`].
    Transport,
}

/// A configuration the device cannot start with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct ConfigError {
    /// Which option.
    pub option: ConfigOption,
    /// Why, without the option's name.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_parameters_need_distinct_names() {
        let mut config = DeviceConfig::new("https://platform.example", "token");
        config.provisioning_parameters =
            vec![("room".into(), "a".into()), ("room".into(), "b".into())];
        assert_eq!(
            config.validate().map_err(|e| (e.option, e.reason)),
            Err((
                ConfigOption::ProvisioningParameters,
                "the name \"room\" is given twice".into()
            ))
        );
        config.provisioning_parameters = vec![(" ".into(), "a".into())];
        assert_eq!(
            config.validate().map_err(|e| e.option),
            Err(ConfigOption::ProvisioningParameters)
        );
        config.provisioning_parameters =
            vec![("room".into(), "".into()), ("floor".into(), "1".into())];
        assert_eq!(config.validate(), Ok(()), "empty values are fine");
    }

    #[test]
    fn a_bare_host_means_https_and_trailing_slashes_go() {
        for (given, meant) in [
            ("example.com", "https://example.com"),
            ("example.com:8443/", "https://example.com:8443"),
            (" http://127.0.0.1:8080// ", "http://127.0.0.1:8080"),
            ("https://example.com/base/", "https://example.com/base"),
            (
                "example.com/path?next=http://x",
                "https://example.com/path?next=http://x",
            ),
        ] {
            assert_eq!(DeviceConfig::new(given, "t").instance_url, meant, "{given}");
        }
    }

    #[test]
    fn what_no_host_may_start_with_names_its_option() {
        let refused = |edit: fn(&mut DeviceConfig)| {
            let mut config = DeviceConfig::new("https://example.com", "token");
            edit(&mut config);
            config.validate().unwrap_err().option
        };
        assert!(DeviceConfig::new("example.com", "token").validate().is_ok());
        let mut websocket = DeviceConfig::new("example.com", "token");
        websocket.transport = Transport::WebSocket;
        let unavailable = websocket
            .validate_for(&[Transport::Tcp, Transport::Tls])
            .unwrap_err();
        assert_eq!(unavailable.option, ConfigOption::Transport);
        assert_eq!(
            unavailable.reason,
            "websocket is not available in this host; use tcp or tls"
        );
        assert_eq!(
            refused(|c| c.instance_url.clear()),
            ConfigOption::InstanceUrl
        );
        assert_eq!(
            refused(|c| c.instance_url = "http://example.com".into()),
            ConfigOption::InstanceUrl
        );
        assert_eq!(
            refused(|c| c.provisioning_token = " ".into()),
            ConfigOption::ProvisioningToken
        );
        assert_eq!(
            refused(|c| c.provisioning_poll_interval_ms = 0),
            ConfigOption::ProvisioningPollInterval
        );
        assert_eq!(
            refused(|c| c.http_timeout_ms = 0),
            ConfigOption::HttpTimeout
        );
        assert_eq!(
            refused(|c| c.set_retry_delays(0, 10)),
            ConfigOption::RetryInitial
        );
        assert_eq!(
            refused(|c| c.set_retry_delays(5_000, 1_000)),
            ConfigOption::RetryMax
        );
        assert_eq!(
            refused(|c| c.session.backoff.max_ms = 1),
            ConfigOption::RetryMax
        );
    }
}
