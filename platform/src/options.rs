//! Provisioning Token options and the rules that combine them: Registration Token lifetimes
//! (default, maximum, override mode, infinite) and who decides the Device ID (six modes).
//!
//! Semantics (documented for technicians in the console and README):
//! - `defaultRegistrationTokenLifetimeSeconds`: lifetime given when nobody overrides it; a number
//!   of seconds or `"infinite"` (needs `allowInfiniteLifetime`). Default 30 days.
//! - `maxRegistrationTokenLifetimeSeconds`: upper bound for any finite lifetime, default or
//!   override. Absent = no bound.
//! - `lifetimeOverrideMode`: `disabled` (the technician may not choose a lifetime), `allowed`
//!   (may choose one at approval), `enforced` (must choose one at approval).
//! - `allowInfiniteLifetime`: whether `"infinite"` is acceptable at all.
//! - `defaultDeviceId` and `deviceIdOverrideMode`, one of:
//!   `disabled` (always the default Device ID; required), `deviceAllowed` (the device may ask for
//!   one at init, else the default), `deviceEnforced` (the device must ask for one; no default),
//!   `technicianAllowed` (the technician may set one at approval, else the default; the device
//!   may not ask), `technicianEnforced` (the technician must set one; no default; the device may
//!   not ask), `deviceAndTechnicianAllowed` (the device may ask, the technician may override,
//!   else the default).
//! - `operationLifetimeSeconds`: how long a Provisioning Operation waits for approval (default 900).

use serde::{Deserialize, Serialize};

use crate::problem::Problem;

/// Thirty days, the default Registration Token lifetime.
pub const DEFAULT_LIFETIME_SECONDS: u64 = 30 * 24 * 3600;
/// Fifteen minutes, the default time an operation waits for approval.
pub const DEFAULT_OPERATION_LIFETIME_SECONDS: u64 = 900;

/// A Registration Token lifetime: seconds, or the word `"infinite"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Expires this many seconds after issue.
    Seconds(u64),
    /// Never expires.
    Infinite,
}

impl Serialize for Lifetime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Lifetime::Seconds(n) => s.serialize_u64(*n),
            Lifetime::Infinite => s.serialize_str("infinite"),
        }
    }
}

impl<'de> Deserialize<'de> for Lifetime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(n) => Ok(Lifetime::Seconds(n)),
            Raw::Word(w) if w == "infinite" => Ok(Lifetime::Infinite),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "lifetime must be a number of seconds or \"infinite\", not {w:?}"
            ))),
        }
    }
}

/// Whether the technician chooses the Registration Token lifetime at approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum LifetimeOverrideMode {
    /// The default lifetime always applies.
    #[default]
    Disabled,
    /// The technician may choose a lifetime.
    Allowed,
    /// The technician must choose a lifetime.
    Enforced,
}

/// Who decides the Device ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum DeviceIdOverrideMode {
    /// Always the token's default Device ID.
    Disabled,
    /// The device may ask for one; else the default.
    #[default]
    DeviceAllowed,
    /// The device must ask for one.
    DeviceEnforced,
    /// The technician may set one; else the default.
    TechnicianAllowed,
    /// The technician must set one.
    TechnicianEnforced,
    /// The device may ask, the technician may override; else the default.
    DeviceAndTechnicianAllowed,
}

impl DeviceIdOverrideMode {
    /// Whether a device may send `deviceId` with init.
    pub fn device_may_choose(self) -> bool {
        matches!(
            self,
            Self::DeviceAllowed | Self::DeviceEnforced | Self::DeviceAndTechnicianAllowed
        )
    }

    /// Whether a technician may set the Device ID at approval.
    pub fn technician_may_choose(self) -> bool {
        matches!(
            self,
            Self::TechnicianAllowed | Self::TechnicianEnforced | Self::DeviceAndTechnicianAllowed
        )
    }
}

fn default_lifetime() -> Lifetime {
    Lifetime::Seconds(DEFAULT_LIFETIME_SECONDS)
}

fn default_operation_lifetime() -> u64 {
    DEFAULT_OPERATION_LIFETIME_SECONDS
}

/// The options of a Provisioning Token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenOptions {
    /// Lifetime when nobody overrides it.
    #[serde(default = "default_lifetime")]
    pub default_registration_token_lifetime_seconds: Lifetime,
    /// Upper bound of finite lifetimes.
    #[serde(default)]
    pub max_registration_token_lifetime_seconds: Option<u64>,
    /// Whether the technician chooses the lifetime.
    #[serde(default)]
    pub lifetime_override_mode: LifetimeOverrideMode,
    /// Whether `"infinite"` is acceptable.
    #[serde(default)]
    pub allow_infinite_lifetime: bool,
    /// Device ID used when nobody else decides.
    #[serde(default)]
    pub default_device_id: Option<String>,
    /// Who decides the Device ID.
    #[serde(default)]
    pub device_id_override_mode: DeviceIdOverrideMode,
    /// How long an operation waits for approval.
    #[serde(default = "default_operation_lifetime")]
    pub operation_lifetime_seconds: u64,
}

impl Default for TokenOptions {
    fn default() -> Self {
        Self {
            default_registration_token_lifetime_seconds: default_lifetime(),
            max_registration_token_lifetime_seconds: None,
            lifetime_override_mode: LifetimeOverrideMode::Disabled,
            allow_infinite_lifetime: false,
            default_device_id: None,
            device_id_override_mode: DeviceIdOverrideMode::DeviceAllowed,
            operation_lifetime_seconds: DEFAULT_OPERATION_LIFETIME_SECONDS,
        }
    }
}

/// Check a Device ID: 4–90 characters of `0-9 a-z A-Z - _ .`.
pub fn check_device_id(id: &str) -> Result<(), Problem> {
    let valid_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if (4..=90).contains(&id.len()) && valid_chars {
        Ok(())
    } else {
        Err(Problem::bad_request(format!(
            "device id {id:?} is invalid: it must be 4 to 90 characters of 0-9 a-z A-Z - _ ."
        )))
    }
}

impl TokenOptions {
    /// Reject invalid values and combinations with a problem naming the rule.
    pub fn validate(&self) -> Result<(), Problem> {
        let invalid = |detail: &str| Err(Problem::invalid_options(detail.to_owned()));
        if self.operation_lifetime_seconds == 0 {
            return invalid("operationLifetimeSeconds must be greater than zero");
        }
        if self.max_registration_token_lifetime_seconds == Some(0) {
            return invalid("maxRegistrationTokenLifetimeSeconds must be greater than zero");
        }
        match self.default_registration_token_lifetime_seconds {
            Lifetime::Seconds(0) => {
                return invalid(
                    "defaultRegistrationTokenLifetimeSeconds must be greater than zero",
                );
            }
            Lifetime::Seconds(n) => {
                if let Some(max) = self.max_registration_token_lifetime_seconds
                    && n > max
                {
                    return invalid(
                        "defaultRegistrationTokenLifetimeSeconds exceeds maxRegistrationTokenLifetimeSeconds",
                    );
                }
            }
            Lifetime::Infinite if !self.allow_infinite_lifetime => {
                return invalid(
                    "an infinite defaultRegistrationTokenLifetimeSeconds needs allowInfiniteLifetime",
                );
            }
            Lifetime::Infinite => {}
        }
        if self.allow_infinite_lifetime
            && self.lifetime_override_mode == LifetimeOverrideMode::Disabled
            && self.default_registration_token_lifetime_seconds != Lifetime::Infinite
        {
            return invalid(
                "allowInfiniteLifetime has no effect: the default lifetime is finite and lifetimeOverrideMode is disabled",
            );
        }
        if let Some(id) = &self.default_device_id {
            check_device_id(id)
                .map_err(|p| Problem::invalid_options(format!("defaultDeviceId: {}", p.detail)))?;
        }
        use DeviceIdOverrideMode as M;
        match (self.device_id_override_mode, &self.default_device_id) {
            (M::Disabled, None) => invalid("deviceIdOverrideMode disabled needs a defaultDeviceId"),
            (M::DeviceEnforced | M::TechnicianEnforced, Some(_)) => invalid(
                "defaultDeviceId is never used when deviceIdOverrideMode is deviceEnforced or technicianEnforced",
            ),
            _ => Ok(()),
        }
    }

    /// The Device ID an operation proposes at init, given what the device asked for.
    /// `None` means the technician decides at approval.
    pub fn device_id_at_init(&self, requested: Option<&str>) -> Result<Option<String>, Problem> {
        use DeviceIdOverrideMode as M;
        if let Some(id) = requested {
            check_device_id(id)?;
            if !self.device_id_override_mode.device_may_choose() {
                if self.default_device_id.as_deref() == Some(id) {
                    return Ok(Some(id.to_owned()));
                }
                return Err(Problem::bad_request(
                    "this Provisioning Token does not let the device choose its Device ID",
                ));
            }
            return Ok(Some(id.to_owned()));
        }
        match self.device_id_override_mode {
            M::DeviceEnforced => Err(Problem::bad_request(
                "this Provisioning Token requires the device to send a deviceId",
            )),
            M::DeviceAllowed if self.default_device_id.is_none() => Err(Problem::bad_request(
                "send a deviceId: this Provisioning Token has no default Device ID",
            )),
            _ => Ok(self.default_device_id.clone()),
        }
    }

    /// The Device ID at approval, from the operation's proposal and the technician's override.
    pub fn device_id_at_approval(
        &self,
        proposed: Option<&str>,
        technician: Option<&str>,
    ) -> Result<String, Problem> {
        use DeviceIdOverrideMode as M;
        if let Some(id) = technician {
            if !self.device_id_override_mode.technician_may_choose() {
                return Err(Problem::bad_request(
                    "this Provisioning Token does not let the technician choose the Device ID",
                ));
            }
            check_device_id(id)?;
            return Ok(id.to_owned());
        }
        if self.device_id_override_mode == M::TechnicianEnforced {
            return Err(Problem::bad_request(
                "this Provisioning Token requires the technician to set deviceId at approval",
            ));
        }
        proposed.map(str::to_owned).ok_or_else(|| {
            Problem::bad_request("no Device ID is known for this operation: set deviceId")
        })
    }

    /// The Registration Token lifetime at approval, from the technician's override.
    pub fn lifetime_at_approval(&self, technician: Option<Lifetime>) -> Result<Lifetime, Problem> {
        let lifetime = match (self.lifetime_override_mode, technician) {
            (LifetimeOverrideMode::Disabled, Some(_)) => {
                return Err(Problem::bad_request(
                    "this Provisioning Token does not let the technician choose the Registration Token lifetime",
                ));
            }
            (LifetimeOverrideMode::Enforced, None) => {
                return Err(Problem::bad_request(
                    "this Provisioning Token requires registrationTokenLifetimeSeconds at approval",
                ));
            }
            (_, Some(lifetime)) => lifetime,
            (_, None) => self.default_registration_token_lifetime_seconds,
        };
        match lifetime {
            Lifetime::Seconds(0) => Err(Problem::bad_request(
                "registrationTokenLifetimeSeconds must be greater than zero",
            )),
            Lifetime::Seconds(n) => match self.max_registration_token_lifetime_seconds {
                Some(max) if n > max => Err(Problem::bad_request(format!(
                    "registrationTokenLifetimeSeconds {n} exceeds the maximum of {max}"
                ))),
                _ => Ok(lifetime),
            },
            Lifetime::Infinite if self.allow_infinite_lifetime => Ok(lifetime),
            Lifetime::Infinite => Err(Problem::bad_request(
                "this Provisioning Token does not allow an infinite Registration Token lifetime",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: serde_json::Value) -> TokenOptions {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        TokenOptions::default().validate().unwrap();
    }

    #[test]
    fn invalid_combinations_are_rejected() {
        for bad in [
            serde_json::json!({"defaultRegistrationTokenLifetimeSeconds": 0}),
            serde_json::json!({"defaultRegistrationTokenLifetimeSeconds": "infinite"}),
            serde_json::json!({"defaultRegistrationTokenLifetimeSeconds": 100, "maxRegistrationTokenLifetimeSeconds": 50}),
            serde_json::json!({"maxRegistrationTokenLifetimeSeconds": 0}),
            serde_json::json!({"allowInfiniteLifetime": true}),
            serde_json::json!({"deviceIdOverrideMode": "disabled"}),
            serde_json::json!({"deviceIdOverrideMode": "deviceEnforced", "defaultDeviceId": "dev-1"}),
            serde_json::json!({"deviceIdOverrideMode": "technicianEnforced", "defaultDeviceId": "dev-1"}),
            serde_json::json!({"defaultDeviceId": "x"}),
            serde_json::json!({"operationLifetimeSeconds": 0}),
        ] {
            let problem = options(bad.clone()).validate().unwrap_err();
            assert_eq!(problem.status.as_u16(), 400, "{bad}");
        }
    }
}
