//! The shared state every HTTP handler and MQTT session sees.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::gateway::registry::SessionRegistry;
use crate::problem::Problem;
use crate::store::Store;

/// Where devices reach the gateway; filled in once the listeners are bound.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayEndpoints {
    /// `host:port` of MQTT over plain TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_tcp: Option<String>,
    /// `host:port` of MQTT over TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_tls: Option<String>,
    /// `ws://` URL of MQTT over WebSocket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_socket: Option<String>,
    /// Base URL of the device HTTP endpoints (file uploads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// Everything shared.
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Writes telemetry with group commit (acknowledged once durable).
    pub ingestor: crate::messages::Ingestor,
    /// Key that signs device Shared Access Signatures and upload URLs.
    pub signing_key: [u8; 32],
    /// Hash of the admin bearer token.
    pub admin_token_hash: String,
    /// Host name devices are told to use (`iotHubHostName`).
    pub host_name: String,
    /// Host name of the blob storage (`hostName` of an upload answer).
    pub blob_host_name: String,
    /// Which contract devices get.
    pub contract: crate::Contract,
    /// Lifetime of an issued MQTT credential, in seconds.
    pub sas_lifetime_seconds: i64,
    /// Largest JSON body accepted.
    pub max_json_body_bytes: usize,
    /// Largest MQTT packet and uploaded blob accepted.
    pub max_message_bytes: usize,
    /// Most connections open at once on each listener.
    pub max_connections: usize,
    /// How long a write may wait for a client that does not read before its connection closes.
    pub write_timeout: std::time::Duration,
    /// Directory of uploaded blobs.
    pub blob_dir: PathBuf,
    /// Live MQTT sessions.
    pub sessions: SessionRegistry,
    /// Gateway endpoints, set once after binding.
    pub endpoints: OnceLock<GatewayEndpoints>,
    /// Base URL of the plain HTTP listener, set once after binding.
    pub http_base: OnceLock<String>,
    /// Faults armed for device tests.
    pub faults: crate::faults::Faults,
    /// What devices sent, when recording is on.
    pub transcript: crate::transcript::Transcript,
    /// Cancelled when the Platform stops.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Connection tasks, awaited on shutdown.
    pub tasks: tokio_util::task::TaskTracker,
}

impl AppState {
    /// Fail with 404 unless the workspace exists; 423 when `require_enabled` and it is disabled.
    pub fn check_workspace(
        &self,
        workspace_id: &str,
        require_enabled: bool,
    ) -> Result<(), Problem> {
        let disabled: Option<bool> = {
            let db = self.store.lock();
            rusqlite::OptionalExtension::optional(db.query_row(
                "SELECT disabled FROM workspaces WHERE id = ?1",
                [workspace_id],
                |r| r.get(0),
            ))
            .map_err(crate::store::StoreError::from)?
        };
        match disabled {
            None => Err(Problem::not_found(format!(
                "workspace {workspace_id} does not exist"
            ))),
            Some(true) if require_enabled => Err(Problem::workspace_disabled()),
            Some(_) => Ok(()),
        }
    }
}

/// The connections open on one listener, bounded: past the bound a new one is closed as it
/// arrives, so idle or hostile clients cannot take every descriptor and task.
#[derive(Debug)]
pub struct OpenConnections {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// One open connection, counted until it is dropped.
#[derive(Debug)]
pub struct OpenConnection(std::sync::Arc<OpenConnections>);

impl OpenConnections {
    /// At most `max` at once.
    pub fn new(max: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            open: std::sync::atomic::AtomicUsize::new(0),
            max,
        })
    }

    /// Counts one more, or `None` when `max` are open.
    pub fn admit(self: &std::sync::Arc<Self>) -> Option<OpenConnection> {
        use std::sync::atomic::Ordering;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| OpenConnection(self.clone()))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
