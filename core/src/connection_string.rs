//! The `connectionString` of the Platform's `register` response: its host, ids and signature
//! (the MQTT credentials built from them are `iothub`'s).
//!
//! Its shape is `HostName=<host>;DeviceId=<workspaceId>:<deviceId>;SharedAccessSignature=
//! SharedAccessSignature sr=<..>&sig=<..>&se=<unix seconds>`. Parts may come in any order and
//! each value runs from the first `=` of its part to the next `;`, so values may contain `=`
//! (the signature always does). Unknown parts are ignored, so the Platform can add some.
//!
//! The signature is a credential: neither `Debug` nor any error message shows it.

use crate::prelude::*;

use core::fmt;

use crate::excerpt::excerpt;
use crate::text::Describe;

/// What the `SharedAccessSignature` value starts with (it doubles as the MQTT password).
const SAS_PREFIX: &str = "SharedAccessSignature ";

/// A parsed `connectionString`: where to connect and with which credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The IoT Hub host, from `HostName`.
    pub host_name: String,
    /// The workspace, the part of `DeviceId` before the first `:`.
    pub workspace_id: String,
    /// The device, the part of `DeviceId` after the first `:`.
    pub device_id: String,
    /// The whole `SharedAccessSignature sr=..&sig=..&se=..` value: the MQTT password.
    pub shared_access_signature: String,
}

/// Why a text is not a connection string this module can use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionStringError {
    /// A required part (`HostName`, `DeviceId` or `SharedAccessSignature`) is absent.
    MissingPart {
        /// The name of the absent part.
        part: &'static str,
    },
    /// A required part appears more than once, so it is unclear which one counts.
    DuplicatePart {
        /// The name of the repeated part.
        part: &'static str,
    },
    /// A part has no `=` between its name and its value.
    PartWithoutValue {
        /// The position of the part among the `;`-separated parts.
        index: usize,
    },
    /// A required part has an empty value.
    EmptyValue {
        /// The name of the empty part.
        part: &'static str,
    },
    /// `DeviceId` is not `<workspaceId>:<deviceId>` with both sides non-empty.
    InvalidDeviceId {
        /// The `DeviceId` value, shortened to its first 64 characters and `…` when longer.
        value: String,
    },
    /// `SharedAccessSignature` does not start with `SharedAccessSignature `.
    InvalidSignature,
}

impl Describe for ConnectionStringError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::MissingPart { part } => put!(out, "connection string has no ", part, " part"),
            Self::DuplicatePart { part } => {
                put!(out, "connection string has more than one ", part, " part")
            }
            Self::PartWithoutValue { index } => put!(
                out,
                "connection string part ",
                index,
                " (counting from 0) has no '=' between name and value"
            ),
            Self::EmptyValue { part } => put!(out, "connection string part ", part, " is empty"),
            Self::InvalidDeviceId { value } => put!(
                out,
                "connection string DeviceId '",
                value,
                "' is not of the form <workspaceId>:<deviceId>"
            ),
            Self::InvalidSignature => put!(
                out,
                "connection string SharedAccessSignature value does not start with \"SharedAccessSignature \""
            ),
        }
    }
}

described!(ConnectionStringError);

impl ConnectionString {
    /// Parses a `connectionString` from the `register` response.
    pub fn parse(text: &str) -> Result<Self, ConnectionStringError> {
        let mut host_name = None;
        let mut iot_hub_device_id = None;
        let mut signature = None;
        for (index, part) in text.split(';').enumerate() {
            // Tolerates a trailing or doubled `;`.
            if part.is_empty() {
                continue;
            }
            let (name, value) = part
                .split_once('=')
                .ok_or(ConnectionStringError::PartWithoutValue { index })?;
            let (slot, part) = match name {
                "HostName" => (&mut host_name, "HostName"),
                "DeviceId" => (&mut iot_hub_device_id, "DeviceId"),
                "SharedAccessSignature" => (&mut signature, "SharedAccessSignature"),
                _ => continue,
            };
            if value.is_empty() {
                return Err(ConnectionStringError::EmptyValue { part });
            }
            if slot.replace(value).is_some() {
                return Err(ConnectionStringError::DuplicatePart { part });
            }
        }

        let host_name = host_name.ok_or(ConnectionStringError::MissingPart { part: "HostName" })?;
        let iot_hub_device_id =
            iot_hub_device_id.ok_or(ConnectionStringError::MissingPart { part: "DeviceId" })?;
        let signature = signature.ok_or(ConnectionStringError::MissingPart {
            part: "SharedAccessSignature",
        })?;
        let (workspace_id, device_id) = iot_hub_device_id
            .split_once(':')
            .filter(|(workspace, device)| !workspace.is_empty() && !device.is_empty())
            .ok_or_else(|| ConnectionStringError::InvalidDeviceId {
                value: excerpt(iot_hub_device_id, EXCERPT_CHARS),
            })?;
        if !signature.starts_with(SAS_PREFIX) {
            return Err(ConnectionStringError::InvalidSignature);
        }
        Ok(Self {
            host_name: host_name.to_owned(),
            workspace_id: workspace_id.to_owned(),
            device_id: device_id.to_owned(),
            shared_access_signature: signature.to_owned(),
        })
    }

    /// When the signature expires, from its `se` field (Unix seconds), in ms since the epoch.
    ///
    /// `None` when the signature has no `se` field or it is not a whole number of seconds.
    pub fn sas_expiry_ms(&self) -> Option<u64> {
        let fields = self.shared_access_signature.strip_prefix(SAS_PREFIX)?;
        let seconds = fields
            .split('&')
            .find_map(|field| field.strip_prefix("se="))?;
        if !seconds.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        seconds.parse::<u64>().ok()?.checked_mul(1_000)
    }

    #[cfg(test)]
    /// Writes the connection string back in the Platform's order (this includes the secret).
    pub fn to_connection_string(&self) -> String {
        format!(
            "HostName={};DeviceId={}:{};SharedAccessSignature={}",
            self.host_name, self.workspace_id, self.device_id, self.shared_access_signature
        )
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host_name", &self.host_name)
            .field("workspace_id", &self.workspace_id)
            .field("device_id", &self.device_id)
            .field("shared_access_signature", &"<redacted>")
            .finish()
    }
}

/// Error messages quote at most this many characters of the rejected text.
const EXCERPT_CHARS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "HostName=iothub-test.azure-devices.net;\
        DeviceId=3f2504e0-4f89-11d3-9a0c-0305e82c3301:my-device;\
        SharedAccessSignature=SharedAccessSignature \
        sr=iothub-test.azure-devices.net%2Fdevices%2F3f2504e0-4f89-11d3-9a0c-0305e82c3301%3Amy-device\
        &sig=Zm9vYmFy%2Bc2lnbmF0dXJl%3D&se=1795629600";

    #[test]
    fn parses_the_platform_shape() {
        let parsed = ConnectionString::parse(SAMPLE).unwrap();
        assert_eq!(parsed.host_name, "iothub-test.azure-devices.net");
        assert_eq!(parsed.workspace_id, "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
        assert_eq!(parsed.device_id, "my-device");
        assert!(
            parsed
                .shared_access_signature
                .starts_with("SharedAccessSignature sr=iothub-test")
        );
        assert!(parsed.shared_access_signature.ends_with("&se=1795629600"));
        assert_eq!(parsed.sas_expiry_ms(), Some(1_795_629_600_000));
        assert_eq!(parsed.to_connection_string(), SAMPLE);
    }

    #[test]
    fn accepts_any_order_unknown_parts_and_stray_semicolons() {
        let text = ";SharedAccessSignature=SharedAccessSignature sig=a=b&se=10&sr=x;;\
                    GatewayHostName=gw.local;DeviceId=ws:dev;HostName=127.0.0.1;";
        let parsed = ConnectionString::parse(text).unwrap();
        assert_eq!(parsed.host_name, "127.0.0.1");
        assert_eq!(parsed.workspace_id, "ws");
        assert_eq!(parsed.device_id, "dev");
        assert_eq!(
            parsed.shared_access_signature,
            "SharedAccessSignature sig=a=b&se=10&sr=x"
        );
        assert_eq!(parsed.sas_expiry_ms(), Some(10_000));
    }

    #[test]
    fn device_id_splits_at_the_first_colon() {
        let text =
            "HostName=h;DeviceId=ws:dev:extra;SharedAccessSignature=SharedAccessSignature se=1";
        let parsed = ConnectionString::parse(text).unwrap();
        assert_eq!(parsed.workspace_id, "ws");
        assert_eq!(parsed.device_id, "dev:extra");
    }

    #[test]
    fn reports_what_is_missing_or_wrong() {
        let sas = "SharedAccessSignature=SharedAccessSignature se=1";
        let cases = [
            (
                format!("DeviceId=ws:dev;{sas}"),
                ConnectionStringError::MissingPart { part: "HostName" },
            ),
            (
                format!("HostName=h;{sas}"),
                ConnectionStringError::MissingPart { part: "DeviceId" },
            ),
            (
                "HostName=h;DeviceId=ws:dev".to_owned(),
                ConnectionStringError::MissingPart {
                    part: "SharedAccessSignature",
                },
            ),
            (
                format!("HostName=h;HostName=g;DeviceId=ws:dev;{sas}"),
                ConnectionStringError::DuplicatePart { part: "HostName" },
            ),
            (
                format!("HostName=;DeviceId=ws:dev;{sas}"),
                ConnectionStringError::EmptyValue { part: "HostName" },
            ),
            (
                format!("HostName=h;garbage;DeviceId=ws:dev;{sas}"),
                ConnectionStringError::PartWithoutValue { index: 1 },
            ),
            (
                format!("HostName=h;DeviceId=wsdev;{sas}"),
                ConnectionStringError::InvalidDeviceId {
                    value: "wsdev".into(),
                },
            ),
            (
                format!("HostName=h;DeviceId=:dev;{sas}"),
                ConnectionStringError::InvalidDeviceId {
                    value: ":dev".into(),
                },
            ),
            (
                format!("HostName=h;DeviceId=ws:;{sas}"),
                ConnectionStringError::InvalidDeviceId {
                    value: "ws:".into(),
                },
            ),
            (
                "HostName=h;DeviceId=ws:dev;SharedAccessSignature=sr=x&sig=secret".to_owned(),
                ConnectionStringError::InvalidSignature,
            ),
            (
                "HostName=h;DeviceId=ws:dev;SharedAccessKey=c2VjcmV0".to_owned(),
                ConnectionStringError::MissingPart {
                    part: "SharedAccessSignature",
                },
            ),
            (
                String::new(),
                ConnectionStringError::MissingPart { part: "HostName" },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(ConnectionString::parse(&text), Err(expected), "{text}");
        }
        assert_eq!(
            ConnectionStringError::InvalidDeviceId {
                value: "wsdev".into()
            }
            .to_string(),
            r#"connection string DeviceId 'wsdev' is not of the form <workspaceId>:<deviceId>"#
        );
    }

    #[test]
    fn never_shows_the_signature() {
        let parsed = ConnectionString::parse(SAMPLE).unwrap();
        let debug = format!("{parsed:?}");
        assert!(!debug.contains("sig="), "{debug}");
        assert!(debug.contains("my-device"));
        let error = ConnectionString::parse(
            "HostName=h;DeviceId=ws:dev;SharedAccessSignature=sig=topsecret",
        )
        .unwrap_err();
        assert!(!error.to_string().contains("topsecret"));
        let error = ConnectionString::parse("HostName=h;topsecret").unwrap_err();
        assert!(!error.to_string().contains("topsecret"));
    }

    #[test]
    fn expiry_is_none_unless_se_is_whole_seconds() {
        let with_sas = |sas: &str| ConnectionString {
            host_name: "h".into(),
            workspace_id: "ws".into(),
            device_id: "dev".into(),
            shared_access_signature: sas.into(),
        };
        for sas in [
            "SharedAccessSignature sr=x&sig=y",
            "SharedAccessSignature se=",
            "SharedAccessSignature se=-5",
            "SharedAccessSignature se=+5",
            "SharedAccessSignature se=1.5",
            "SharedAccessSignature se=99999999999999999999",
            "SharedAccessSignature se=18446744073709552",
            "sr=x&se=5",
        ] {
            assert_eq!(with_sas(sas).sas_expiry_ms(), None, "{sas}");
        }
        assert_eq!(
            with_sas("SharedAccessSignature se=0").sas_expiry_ms(),
            Some(0)
        );
        assert_eq!(
            with_sas("SharedAccessSignature sr=a&sig=b&se=7&skn=c").sas_expiry_ms(),
            Some(7_000)
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            host_name in "[a-zA-Z0-9.:-]{1,40}",
            workspace_id in "[^;:]{1,40}",
            device_id in "[^;]{1,40}",
            resource in "[^;&]{0,40}",
            signature in "[^;&]{0,60}",
            expiry_seconds in 0u64..=u64::MAX / 1_000,
        ) {
            let original = ConnectionString {
                host_name,
                workspace_id,
                device_id,
                shared_access_signature: format!(
                    "SharedAccessSignature sr={resource}&sig={signature}&se={expiry_seconds}"
                ),
            };
            let parsed = ConnectionString::parse(&original.to_connection_string()).unwrap();
            prop_assert_eq!(&parsed, &original);
            prop_assert_eq!(parsed.sas_expiry_ms(), Some(expiry_seconds * 1_000));
        }

        #[test]
        fn junk_never_panics(text in any::<String>()) {
            if let Ok(parsed) = ConnectionString::parse(&text) {
                let _ = parsed.sas_expiry_ms();
            }
        }

        #[test]
        fn near_misses_never_panic(
            parts in proptest::collection::vec(
                "(HostName|DeviceId|SharedAccessSignature|X)?=?[a-z:=& ]{0,8}(SharedAccessSignature se=[0-9]{0,25})?",
                0..6,
            )
        ) {
            if let Ok(parsed) = ConnectionString::parse(&parts.join(";")) {
                let _ = parsed.sas_expiry_ms();
            }
        }
    }
}
