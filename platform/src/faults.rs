//! Fault injection for device tests: an admin can make the next N device HTTP calls (by path
//! prefix) answer an error status with `Retry-After`, or the next N MQTT CONNECTs be refused
//! with "server unavailable", so SDKs can be tested on 429/503 handling and backoff.

use std::sync::Mutex;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;

/// Where a fault applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum FaultTarget {
    /// Device HTTP calls whose path starts with `pathPrefix`.
    #[default]
    Http,
    /// MQTT CONNECT (refused with return code 3).
    MqttConnect,
}

fn one() -> u32 {
    1
}

/// A fault as the admin API accepts and lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Where it applies.
    #[serde(default)]
    pub target: FaultTarget,
    /// For HTTP faults: path prefix, e.g. `/devices/register` (empty = every device call).
    #[serde(default)]
    pub path_prefix: String,
    /// For HTTP faults: the status to answer (400-599).
    #[serde(default)]
    pub status: Option<u16>,
    /// For HTTP faults: `Retry-After` seconds.
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// How many calls it still affects.
    #[serde(default = "one")]
    pub count: u32,
}

/// The armed faults.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<Vec<Fault>>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arm a fault after checking it.
    pub fn arm(&self, fault: Fault) -> Result<(), Problem> {
        if fault.count == 0 {
            return Err(Problem::bad_request("count must be at least 1"));
        }
        if fault.target == FaultTarget::Http
            && !fault.status.is_some_and(|s| (400..=599).contains(&s))
        {
            return Err(Problem::bad_request(
                "an http fault needs a status from 400 to 599",
            ));
        }
        self.lock().push(fault);
        Ok(())
    }

    /// The armed faults.
    pub fn list(&self) -> Vec<Fault> {
        self.lock().clone()
    }

    /// Disarm everything.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn take(&self, matches: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut armed = self.lock();
        let index = armed.iter().position(matches)?;
        let fault = armed[index].clone();
        armed[index].count -= 1;
        if armed[index].count == 0 {
            armed.remove(index);
        }
        Some(fault)
    }

    /// The injected answer for a device HTTP call, if one is armed for its path.
    pub fn take_http(&self, path: &str) -> Option<Problem> {
        let fault =
            self.take(|f| f.target == FaultTarget::Http && path.starts_with(&f.path_prefix))?;
        let status = fault
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut problem = Problem::new(
            status,
            "Injected fault",
            "a fault armed through the admin api",
        );
        problem.retry_after_seconds = fault.retry_after_seconds;
        Some(problem)
    }

    /// Whether the next MQTT CONNECT is to be refused.
    pub fn take_mqtt_connect(&self) -> bool {
        self.take(|f| f.target == FaultTarget::MqttConnect)
            .is_some()
    }
}
