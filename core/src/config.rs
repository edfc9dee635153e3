//! Everything a host chooses when it creates a device, with defaults that suit a real Platform.

use crate::prelude::*;

use crate::backoff::BackoffConfig;
use crate::cleartext::check_url;
use crate::identity::DeviceId;
use crate::mqtt::session::SessionConfig;
use crate::outbox::OutboxLimits;
use crate::text::Describe;
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

    /// Sets a tunable, refusing a value outside its bounds (which [`DeviceConfig::validate`]
    /// checks again, for fields set directly).
    pub fn set_tunable(&mut self, tunable: Tunable, value: u64) -> Result<(), ConfigError> {
        tunable.check(value)?;
        // Within the bounds, every value fits its field.
        let small = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        match tunable {
            Tunable::KeepAliveSeconds => {
                self.session.keep_alive_secs = u16::try_from(value).unwrap_or(u16::MAX);
            }
            Tunable::PingTimeoutMs => self.session.ping_timeout_ms = value,
            Tunable::ConnectTimeoutMs => self.session.connect_timeout_ms = value,
            Tunable::AckTimeoutMs => self.session.ack_timeout_ms = value,
            Tunable::MaxInFlight => self.session.max_in_flight = small(value),
            Tunable::OutboxMaxMessages => self.outbox.max_messages = value,
            Tunable::OutboxMaxBytes => self.outbox.max_bytes = value,
            Tunable::RetryInitialMs => self.set_retry_delays(value, self.backoff.max_ms),
            Tunable::RetryMaxMs => self.set_retry_delays(self.backoff.initial_ms, value),
            Tunable::HttpTimeoutMs => self.http_timeout_ms = value,
            Tunable::TwinTimeoutMs => self.twin.request_timeout_ms = value,
            Tunable::ProvisioningPollIntervalMs => self.provisioning_poll_interval_ms = value,
        }
        Ok(())
    }

    /// Sets the tunable `name` (either spelling of [`Tunable`]); an unknown name is refused,
    /// listing the known ones as the host spells them (`spelled`: [`Tunable::name`] or
    /// [`Tunable::kebab_name`]).
    pub fn set_tunable_named(
        &mut self,
        name: &str,
        value: u64,
        spelled: fn(Tunable) -> String,
    ) -> Result<(), ConfigError> {
        let tunable = Tunable::from_name(name).ok_or_else(|| {
            let mut reason = text!('"', name, "\" is not one of ");
            for (at, tunable) in Tunable::ALL.into_iter().enumerate() {
                reason.push_str(if at == 0 { "" } else { ", " });
                reason.push_str(&spelled(tunable));
            }
            ConfigError {
                option: ConfigOption::Tunables,
                reason,
            }
        })?;
        self.set_tunable(tunable, value)
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
            let mut reason = text!(
                self.transport.as_str(),
                " is not available in this host; use "
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
            reason: error.text(),
        })?;
        if self.provisioning_token.trim().is_empty() {
            return refuse(ConfigOption::ProvisioningToken, "is empty");
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
                    reason: text!("the name \"", name, "\" is given twice"),
                });
            }
        }
        for tunable in Tunable::ALL {
            tunable.check(tunable.value(self))?;
        }
        // Both retry delays (the HTTP calls' and reconnecting's): set apart by a native app.
        for backoff in [self.backoff, self.session.backoff] {
            if backoff.initial_ms == 0 {
                return refuse(
                    ConfigOption::Tunable(Tunable::RetryInitialMs),
                    "0 is not above 0",
                );
            }
            if backoff.max_ms < backoff.initial_ms {
                return Err(ConfigError {
                    option: ConfigOption::Tunable(Tunable::RetryMaxMs),
                    reason: text!(
                        backoff.max_ms,
                        " ms is below the first retry delay (",
                        backoff.initial_ms,
                        " ms)"
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
        text!("https://", trimmed)
    }
}

/// A number of [`DeviceConfig`] a host lets its app tune. One list, with its names and bounds,
/// so that every host offers the same tunables under the same names and the core alone checks
/// them: JavaScript spells them in camelCase ([`Tunable::name`]), WIT and the command line in
/// kebab-case ([`Tunable::kebab_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunable {
    /// MQTT keep-alive interval, seconds ([`SessionConfig::keep_alive_secs`]).
    KeepAliveSeconds,
    /// How long a PINGRESP may take before the connection counts as dead.
    PingTimeoutMs,
    /// How long opening a connection, its CONNACK and SUBACK may take together.
    ConnectTimeoutMs,
    /// How long a publish may wait for its PUBACK before the connection counts as broken.
    AckTimeoutMs,
    /// QoS 1 publishes awaiting PUBACK at once (the in-flight window).
    MaxInFlight,
    /// Most messages stored at once ([`OutboxLimits::max_messages`]).
    OutboxMaxMessages,
    /// Most bytes of stored messages at once ([`OutboxLimits::max_bytes`]).
    OutboxMaxBytes,
    /// First retry and reconnect delay.
    RetryInitialMs,
    /// Longest retry and reconnect delay.
    RetryMaxMs,
    /// How long an HTTP request may take ([`DeviceConfig::http_timeout_ms`]).
    HttpTimeoutMs,
    /// How long a twin request may stay unanswered before it is sent again.
    TwinTimeoutMs,
    /// How often to ask whether provisioning was approved.
    ProvisioningPollIntervalMs,
}

/// A day: the longest delay or timeout any tunable takes (a timer past it is a mistake).
const DAY_MS: u64 = 86_400_000;

impl Tunable {
    /// Every tunable, in the order hosts document them.
    pub const ALL: [Tunable; 12] = [
        Self::KeepAliveSeconds,
        Self::PingTimeoutMs,
        Self::ConnectTimeoutMs,
        Self::AckTimeoutMs,
        Self::MaxInFlight,
        Self::OutboxMaxMessages,
        Self::OutboxMaxBytes,
        Self::RetryInitialMs,
        Self::RetryMaxMs,
        Self::HttpTimeoutMs,
        Self::TwinTimeoutMs,
        Self::ProvisioningPollIntervalMs,
    ];

    /// The name in JavaScript.
    pub fn name(self) -> &'static str {
        match self {
            Self::KeepAliveSeconds => "keepAliveSeconds",
            Self::PingTimeoutMs => "pingTimeoutMs",
            Self::ConnectTimeoutMs => "connectTimeoutMs",
            Self::AckTimeoutMs => "ackTimeoutMs",
            Self::MaxInFlight => "maxInFlight",
            Self::OutboxMaxMessages => "outboxMaxMessages",
            Self::OutboxMaxBytes => "outboxMaxBytes",
            Self::RetryInitialMs => "retryInitialMs",
            Self::RetryMaxMs => "retryMaxMs",
            Self::HttpTimeoutMs => "httpTimeoutMs",
            Self::TwinTimeoutMs => "twinTimeoutMs",
            Self::ProvisioningPollIntervalMs => "provisioningPollIntervalMs",
        }
    }

    /// The name in WIT and on the command line: [`Tunable::name`] in kebab-case.
    pub fn kebab_name(self) -> String {
        crate::event::kebab_case(self.name())
    }

    /// The tunable of either name.
    pub fn from_name(name: &str) -> Option<Tunable> {
        Self::ALL
            .into_iter()
            .find(|tunable| tunable.name() == name || tunable.kebab_name() == name)
    }

    /// The least and the most it takes.
    pub fn bounds(self) -> (u64, u64) {
        match self {
            // MQTT's field is 16 bits; 0 (no keep-alive) would leave a dead connection unseen.
            Self::KeepAliveSeconds => (1, u64::from(u16::MAX)),
            // Packet identifiers are 16 bits, and 0 is not one.
            Self::MaxInFlight => (1, 65_535),
            // The sequence numbers and sizes a host's numbers hold exactly (JavaScript's 2^53).
            Self::OutboxMaxMessages | Self::OutboxMaxBytes => (1, 1 << 53),
            _ => (1, DAY_MS),
        }
    }

    /// Refuses a value outside the bounds.
    fn check(self, value: u64) -> Result<(), ConfigError> {
        let (least, most) = self.bounds();
        if (least..=most).contains(&value) {
            return Ok(());
        }
        Err(ConfigError {
            option: ConfigOption::Tunable(self),
            reason: text!(value, " is not from ", least, " to ", most),
        })
    }

    /// Its value in `config`.
    pub fn value(self, config: &DeviceConfig) -> u64 {
        match self {
            Self::KeepAliveSeconds => u64::from(config.session.keep_alive_secs),
            Self::PingTimeoutMs => config.session.ping_timeout_ms,
            Self::ConnectTimeoutMs => config.session.connect_timeout_ms,
            Self::AckTimeoutMs => config.session.ack_timeout_ms,
            Self::MaxInFlight => config.session.max_in_flight as u64,
            Self::OutboxMaxMessages => config.outbox.max_messages,
            Self::OutboxMaxBytes => config.outbox.max_bytes,
            Self::RetryInitialMs => config.backoff.initial_ms,
            Self::RetryMaxMs => config.backoff.max_ms,
            Self::HttpTimeoutMs => config.http_timeout_ms,
            Self::TwinTimeoutMs => config.twin.request_timeout_ms,
            Self::ProvisioningPollIntervalMs => config.provisioning_poll_interval_ms,
        }
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
    /// One of the numbers a host may tune.
    Tunable(Tunable),
    /// The tunables as a whole: a name that is none of them.
    Tunables,
    /// [`DeviceConfig::provisioning_parameters`].
    ProvisioningParameters,
    /// [`DeviceConfig::transport`].
    Transport,
}

/// A configuration the device cannot start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Which option.
    pub option: ConfigOption,
    /// Why, without the option's name.
    pub reason: String,
}

impl Describe for ConfigError {
    fn describe(&self, out: &mut String) {
        put!(out, self.reason);
    }
}

described!(ConfigError);

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
        let tunable = ConfigOption::Tunable;
        assert_eq!(
            refused(|c| c.provisioning_poll_interval_ms = 0),
            tunable(Tunable::ProvisioningPollIntervalMs)
        );
        assert_eq!(
            refused(|c| c.http_timeout_ms = 0),
            tunable(Tunable::HttpTimeoutMs)
        );
        assert_eq!(
            refused(|c| c.set_retry_delays(0, 10)),
            tunable(Tunable::RetryInitialMs)
        );
        assert_eq!(
            refused(|c| c.set_retry_delays(5_000, 1_000)),
            tunable(Tunable::RetryMaxMs)
        );
        assert_eq!(
            refused(|c| c.session.backoff.max_ms = 1),
            tunable(Tunable::RetryMaxMs)
        );
    }

    #[test]
    fn every_tunable_is_set_by_either_name_and_checked_against_its_bounds() {
        let camel = |tunable: Tunable| tunable.name().to_owned();
        assert_eq!(Tunable::MaxInFlight.kebab_name(), "max-in-flight");
        assert_eq!(Tunable::from_name("max-inflight"), None);
        assert_eq!(Tunable::from_name("max-in-flight-"), None);
        for tunable in Tunable::ALL {
            let (least, most) = tunable.bounds();
            for name in [tunable.name().to_owned(), tunable.kebab_name()] {
                let name = name.as_str();
                assert_eq!(Tunable::from_name(name), Some(tunable), "{name}");
                let mut config = DeviceConfig::new("example.com", "token");
                config.set_tunable_named(name, most, camel).unwrap();
                // The retry bounds go together: the longest delay may not be below the first.
                config.set_tunable(Tunable::RetryMaxMs, DAY_MS).unwrap();
                assert_eq!(config.validate(), Ok(()), "{name} = {most}");
                assert_eq!(tunable.value(&config), most, "{name} is kept as set");
                config.set_tunable(Tunable::RetryInitialMs, 1).unwrap();
                config.set_tunable_named(name, least, camel).unwrap();
                assert_eq!(config.validate(), Ok(()), "{name} = {least}");
            }
            let mut config = DeviceConfig::new("example.com", "token");
            let error = config.set_tunable(tunable, least - 1).unwrap_err();
            assert_eq!(error.option, ConfigOption::Tunable(tunable));
            assert_eq!(
                error.reason,
                format!("{} is not from {least} to {most}", least - 1)
            );
            let error = config.set_tunable(tunable, most + 1).unwrap_err();
            assert_eq!(
                error.option,
                ConfigOption::Tunable(tunable),
                "above the most"
            );
            assert_eq!(config.validate(), Ok(()), "a refused value is not set");
        }
        let mut config = DeviceConfig::new("example.com", "token");
        let unknown = config
            .set_tunable_named("keepalive", 30, camel)
            .unwrap_err();
        assert_eq!(unknown.option, ConfigOption::Tunables);
        assert!(
            unknown
                .reason
                .starts_with("\"keepalive\" is not one of keepAliveSeconds, pingTimeoutMs"),
            "{}",
            unknown.reason
        );
        let kebab = config.set_tunable_named("keepalive", 30, Tunable::kebab_name);
        assert!(
            kebab
                .unwrap_err()
                .reason
                .ends_with(", twin-timeout-ms, provisioning-poll-interval-ms")
        );
    }
}
