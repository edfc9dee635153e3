//! What a device is started with, and how the command component reads it from its arguments
//! and environment. Plain Rust so it is unit-tested natively; the WIT `configuration` record maps
//! onto [`Settings`] field by field.

use vdev_core::{ConfigOption, DeviceConfig, DeviceId, LogLevel, Transport, Tunable};

/// Why settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A required setting is absent.
    #[error("missing setting {0} (argument --{0} or environment variable {env})", env = env_name(.0))]
    Missing(&'static str),
    /// A setting has a value that cannot be used.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// Which setting.
        name: String,
        /// Why.
        reason: String,
    },
    /// An argument that is not a known `--name value` pair.
    #[error("unknown argument {0}")]
    UnknownArgument(String),
}

/// The settings of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Base URL of the Platform's device API.
    pub instance_url: String,
    /// The Provisioning Token.
    pub provisioning_token: String,
    /// The Device ID to ask for.
    pub device_id: Option<String>,
    /// Extra parameters shown to the technician.
    pub provisioning_parameters: Vec<(String, String)>,
    /// How to carry MQTT.
    pub transport: Transport,
    /// Directory of the outbox and saved state.
    pub store_dir: String,
    /// The tunables set, by name ([`Tunable`]'s, either spelling), in the order given; the
    /// core's defaults for the others.
    pub tunables: Vec<(String, u64)>,
    /// A PEM file of CA certificates trusted for TLS besides the Mozilla roots.
    pub tls_ca_file: Option<String>,
}

impl Settings {
    /// The core's configuration for these settings.
    pub fn device_config(&self) -> Result<DeviceConfig, SettingsError> {
        let mut config = DeviceConfig::new(&self.instance_url, &self.provisioning_token);
        config.device_id = match &self.device_id {
            Some(id) => Some(DeviceId::parse(id).map_err(|error| SettingsError::Invalid {
                name: "device-id".into(),
                reason: error.to_string(),
            })?),
            None => None,
        };
        config.provisioning_parameters = self.provisioning_parameters.clone();
        config.transport = self.transport;
        let refused = |error: vdev_core::ConfigError| SettingsError::Invalid {
            name: setting_name(error.option),
            reason: error.reason,
        };
        for (name, value) in &self.tunables {
            config
                .set_tunable_named(name, *value, Tunable::kebab_name)
                .map_err(refused)?;
        }
        config.validate().map_err(refused)?;
        Ok(config)
    }
}

/// The setting's name for an option of the core's configuration.
fn setting_name(option: ConfigOption) -> String {
    let name = match option {
        ConfigOption::InstanceUrl => "instance-url",
        ConfigOption::ProvisioningToken => "provisioning-token",
        ConfigOption::Tunable(tunable) => return tunable.kebab_name(),
        ConfigOption::Tunables => "tunables",
        // The command's `--provisioning-parameter name=value`, the library's field.
        ConfigOption::ProvisioningParameters => "provisioning-parameters",
        ConfigOption::Transport => "transport",
    };
    name.into()
}

/// Where the command component's messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// One message per line of standard input; done at end of input.
    Stdin,
    /// A simulated temperature sensor: `count` readings (0: forever), one every `interval_ms`.
    Sensor {
        /// Time between readings.
        interval_ms: u64,
        /// How many readings; 0 means no end.
        count: u64,
    },
}

/// Everything the command component is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOptions {
    /// The device.
    pub settings: Settings,
    /// Where messages come from.
    pub source: Source,
    /// Stream group of the messages.
    pub stream_group: Option<String>,
    /// Stream of the messages.
    pub stream: Option<String>,
    /// Exit once the source is done and every stored message was delivered (otherwise keep
    /// running for cloud-to-device messages and desired properties).
    pub exit_when_delivered: bool,
    /// A JSON object merged into the reported properties at start (a JSON merge patch).
    pub reported_properties: Option<vdev_core::json::Value>,
    /// The most detailed level of the events also written to standard error (`None`: `off`,
    /// none).
    pub log_level: Option<LogLevel>,
}

/// The settings the command knows besides the tunables (every [`Tunable`], by its kebab-case
/// name), by argument name (`--name value` or `--name=value`); each can also come from the
/// environment variable `VDEV_` + the name in upper snake case.
pub const COMMAND_SETTINGS: &[&str] = &[
    "instance-url",
    "provisioning-token",
    "device-id",
    "provisioning-parameter",
    "transport",
    "store-dir",
    "source",
    "sensor-interval-ms",
    "sensor-count",
    "stream-group",
    "stream",
    "exit-when-delivered",
    "reported-properties",
    "tls-ca-file",
    "log-level",
];

/// `instance-url` → `VDEV_INSTANCE_URL`.
pub fn env_name(setting: &str) -> String {
    format!("VDEV_{}", setting.replace('-', "_").to_ascii_uppercase())
}

impl CommandOptions {
    /// Reads the options from arguments (after the program name) and environment variables;
    /// arguments win.
    pub fn parse(args: &[String], env: &[(String, String)]) -> Result<Self, SettingsError> {
        let known: Vec<String> = COMMAND_SETTINGS
            .iter()
            .map(|name| (*name).to_owned())
            .chain(Tunable::ALL.map(Tunable::kebab_name))
            .collect();
        let mut values: Vec<(&str, String)> = Vec::new();
        for name in &known {
            let key = env_name(name);
            if let Some((_, value)) = env.iter().find(|(k, _)| *k == key) {
                values.push((name, value.clone()));
            }
        }
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(SettingsError::UnknownArgument(arg.clone()));
            };
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (body, None),
            };
            let Some(known) = known.iter().find(|k| **k == name) else {
                return Err(SettingsError::UnknownArgument(arg.clone()));
            };
            let value = match inline {
                Some(value) => value,
                None => args.next().cloned().ok_or_else(|| SettingsError::Invalid {
                    name: name.into(),
                    reason: "needs a value".into(),
                })?,
            };
            if known != "provisioning-parameter" {
                values.retain(|(k, _)| k != known);
            }
            values.push((known, value));
        }
        Self::from_values(&values)
    }

    fn from_values(values: &[(&str, String)]) -> Result<Self, SettingsError> {
        let get = |name: &str| {
            values
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        let number = |name: &str| -> Result<Option<u64>, SettingsError> {
            get(name)
                .map(|v| {
                    v.parse().map_err(|_| SettingsError::Invalid {
                        name: name.into(),
                        reason: format!("{v:?} is not a whole number"),
                    })
                })
                .transpose()
        };
        let transport = match get("transport").as_deref() {
            None | Some("tls") => Transport::Tls,
            Some("tcp") => Transport::Tcp,
            Some("websocket") | Some("web-socket") => Transport::WebSocket,
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: "transport".into(),
                    reason: format!("{other:?} is not tcp, tls or websocket"),
                });
            }
        };
        let mut provisioning_parameters = Vec::new();
        for (name, value) in values {
            if *name == "provisioning-parameter" {
                let (key, value) = value
                    .split_once('=')
                    .ok_or_else(|| SettingsError::Invalid {
                        name: (*name).into(),
                        reason: format!("{value:?} is not name=value"),
                    })?;
                provisioning_parameters.push((key.to_owned(), value.to_owned()));
            }
        }
        let settings = Settings {
            instance_url: get("instance-url").ok_or(SettingsError::Missing("instance-url"))?,
            provisioning_token: get("provisioning-token")
                .ok_or(SettingsError::Missing("provisioning-token"))?,
            device_id: get("device-id"),
            provisioning_parameters,
            transport,
            store_dir: get("store-dir").unwrap_or_else(|| ".".into()),
            tunables: Tunable::ALL
                .into_iter()
                .filter_map(|tunable| {
                    let name = tunable.kebab_name();
                    number(&name).transpose().map(|v| Ok((name, v?)))
                })
                .collect::<Result<_, SettingsError>>()?,
            tls_ca_file: get("tls-ca-file"),
        };
        settings.device_config()?;
        let source = match get("source").as_deref() {
            None | Some("stdin") => Source::Stdin,
            Some("sensor") => Source::Sensor {
                interval_ms: number("sensor-interval-ms")?.unwrap_or(1_000),
                count: number("sensor-count")?.unwrap_or(0),
            },
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: "source".into(),
                    reason: format!("{other:?} is not stdin or sensor"),
                });
            }
        };
        let exit_when_delivered = match get("exit-when-delivered").as_deref() {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: "exit-when-delivered".into(),
                    reason: format!("{other:?} is not true or false"),
                });
            }
        };
        let reported_properties = get("reported-properties")
            .map(|text| {
                // The device's own rule for a patch, before it starts.
                vdev_core::parse_reported_patch(text.as_bytes()).map_err(|error| {
                    SettingsError::Invalid {
                        name: "reported-properties".into(),
                        reason: error.to_string(),
                    }
                })
            })
            .transpose()?;
        let log_level = match get("log-level").as_deref() {
            None => Some(LogLevel::Error),
            Some("off") => None,
            Some(level) => {
                Some(
                    LogLevel::from_name(level).ok_or_else(|| SettingsError::Invalid {
                        name: "log-level".into(),
                        reason: format!("{level:?} is not error, warn, info, debug or off"),
                    })?,
                )
            }
        };
        Ok(Self {
            settings,
            source,
            stream_group: get("stream-group"),
            stream: get("stream"),
            exit_when_delivered,
            reported_properties,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_override_the_environment() {
        let env = vec![
            (
                "VDEV_INSTANCE_URL".to_owned(),
                "http://127.0.0.1:1".to_owned(),
            ),
            ("VDEV_PROVISIONING_TOKEN".to_owned(), "env-token".to_owned()),
            ("VDEV_TRANSPORT".to_owned(), "tcp".to_owned()),
        ];
        let args = strings(&[
            "--provisioning-token",
            "arg-token",
            "--device-id=dev-1",
            "--source",
            "sensor",
            "--sensor-count",
            "5",
            "--provisioning-parameter",
            "room=lab",
            "--provisioning-parameter=floor=2",
            "--tls-ca-file",
            "certs/ca.pem",
        ]);
        let options = CommandOptions::parse(&args, &env).unwrap();
        assert_eq!(options.settings.provisioning_token, "arg-token");
        assert_eq!(options.settings.instance_url, "http://127.0.0.1:1");
        assert_eq!(options.settings.transport, Transport::Tcp);
        assert_eq!(options.settings.device_id.as_deref(), Some("dev-1"));
        assert_eq!(
            options.source,
            Source::Sensor {
                interval_ms: 1_000,
                count: 5
            }
        );
        assert_eq!(
            options.settings.provisioning_parameters,
            [("room".into(), "lab".into()), ("floor".into(), "2".into())]
        );
        assert!(options.exit_when_delivered);
        assert_eq!(options.reported_properties, None);
        assert_eq!(
            options.settings.tls_ca_file.as_deref(),
            Some("certs/ca.pem")
        );
    }

    #[test]
    fn reported_properties_come_from_the_environment_or_an_argument() {
        let base = vec![
            (
                "VDEV_INSTANCE_URL".to_owned(),
                "http://127.0.0.1:1".to_owned(),
            ),
            ("VDEV_PROVISIONING_TOKEN".to_owned(), "t".to_owned()),
        ];
        let mut env = base.clone();
        env.push((
            "VDEV_REPORTED_PROPERTIES".to_owned(),
            r#"{"firmware":"1.0","unit":"C"}"#.to_owned(),
        ));
        let from_env = CommandOptions::parse(&[], &env).unwrap();
        assert_eq!(
            from_env.reported_properties,
            vdev_core::json::Value::parse(br#"{"firmware":"1.0","unit":"C"}"#).ok()
        );
        let args = strings(&["--reported-properties", r#"{"firmware":"2.0"}"#]);
        let from_args = CommandOptions::parse(&args, &env).unwrap();
        assert_eq!(
            from_args.reported_properties,
            vdev_core::json::Value::parse(br#"{"firmware":"2.0"}"#).ok()
        );
        let refused = |text: &str| {
            let args = strings(&["--reported-properties", text]);
            CommandOptions::parse(&args, &base).unwrap_err().to_string()
        };
        assert_eq!(
            refused("[1]"),
            "invalid reported-properties: the reported properties patch is not a json object"
        );
        assert!(refused("{oops").starts_with(
            "invalid reported-properties: the reported properties patch is invalid json: "
        ));
        assert!(
            refused(r#"{"$version":1}"#).contains("is reserved"),
            "the device's own rule, before it starts"
        );
    }

    #[test]
    fn bad_values_are_explained() {
        let args = strings(&[
            "--instance-url",
            "http://127.0.0.1:1",
            "--provisioning-token",
            "t",
        ]);
        let with = |extra: &[&str]| {
            let mut all = args.clone();
            all.extend(strings(extra));
            CommandOptions::parse(&all, &[]).unwrap_err().to_string()
        };
        assert_eq!(
            with(&["--transport", "udp"]),
            "invalid transport: \"udp\" is not tcp, tls or websocket"
        );
        assert!(with(&["--device-id", "x"]).starts_with("invalid device-id"));
        assert_eq!(with(&["--bogus", "1"]), "unknown argument --bogus");
        assert_eq!(
            with(&["--provisioning-token", ""]),
            "invalid provisioning-token: is empty"
        );
        assert_eq!(
            with(&["--retry-initial-ms", "0"]),
            "invalid retry-initial-ms: 0 is not from 1 to 86400000"
        );
        assert_eq!(
            with(&["--max-in-flight", "70000"]),
            "invalid max-in-flight: 70000 is not from 1 to 65535"
        );
        assert_eq!(
            with(&["--keep-alive-seconds", "soon"]),
            "invalid keep-alive-seconds: \"soon\" is not a whole number"
        );
        assert_eq!(
            with(&["--retry-initial-ms", "5000", "--retry-max-ms", "100"]),
            "invalid retry-max-ms: 100 ms is below the first retry delay (5000 ms)"
        );
        assert!(
            with(&["--instance-url", "http://platform.example"])
                .starts_with("invalid instance-url: refusing unencrypted http://platform.example")
        );
        assert_eq!(
            CommandOptions::parse(&[], &[]).unwrap_err().to_string(),
            "missing setting instance-url (argument --instance-url or environment variable VDEV_INSTANCE_URL)"
        );
    }
}
