//! SQLite state of the Platform (rusqlite, bundled): workspaces, tokens (hashed), provisioning
//! operations, devices with their twins, messages, cloud-to-device queue, uploads, fleet
//! configurations. One connection behind a mutex: the stand-in favours simple and correct over
//! fast, and every statement here is short.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

/// A failure of the Platform's own storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused or failed a statement.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A JSON column could not be read back.
    #[error("stored json is corrupt: {0}")]
    Json(#[from] serde_json::Error),
}

const SCHEMA: &str = r#"
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workspaces (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS provisioning_tokens (
    id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE, options_json TEXT NOT NULL,
    created_at INTEGER NOT NULL, revoked_at INTEGER);
CREATE TABLE IF NOT EXISTS provisioning_operations (
    id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, provisioning_token_id TEXT NOT NULL,
    verification_code TEXT NOT NULL, requested_device_id TEXT, parameters_json TEXT NOT NULL,
    state TEXT NOT NULL, cancellation_cause TEXT, created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, approved_at INTEGER, device_id TEXT,
    lifetime_ms INTEGER, lifetime_infinite INTEGER, completed_at INTEGER, closed_at INTEGER);
CREATE TABLE IF NOT EXISTS registration_tokens (
    id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, device_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE, provisioning_token_id TEXT NOT NULL, operation_id TEXT,
    created_at INTEGER NOT NULL, expires_at INTEGER, state TEXT NOT NULL, closed_at INTEGER);
CREATE TABLE IF NOT EXISTS devices (
    workspace_id TEXT NOT NULL, device_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    desired_json TEXT NOT NULL, desired_version INTEGER NOT NULL,
    reported_json TEXT NOT NULL, reported_version INTEGER NOT NULL, reported_updated_at INTEGER,
    desired_updated_at INTEGER, tags_json TEXT NOT NULL, last_seen_at INTEGER,
    PRIMARY KEY (workspace_id, device_id));
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, workspace_id TEXT NOT NULL, device_id TEXT NOT NULL,
    received_at INTEGER NOT NULL, stream_group TEXT, stream TEXT, site_id TEXT, batch_id TEXT,
    batch_slice_id TEXT, message_id TEXT, chunk_id TEXT, content_encoding TEXT,
    complete_batch INTEGER NOT NULL, complete_message INTEGER NOT NULL,
    ignore_payload INTEGER NOT NULL, externalized INTEGER NOT NULL, blob_name TEXT,
    seq_origin TEXT, seq_n INTEGER, properties_json TEXT NOT NULL, payload BLOB NOT NULL,
    conflict INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_by_device ON messages (workspace_id, device_id, id);
CREATE INDEX IF NOT EXISTS messages_by_workspace ON messages (workspace_id, id);
CREATE TABLE IF NOT EXISTS message_sequences (
    workspace_id TEXT NOT NULL, device_id TEXT NOT NULL, origin TEXT NOT NULL,
    last_n INTEGER NOT NULL, PRIMARY KEY (workspace_id, device_id, origin));
CREATE TABLE IF NOT EXISTS c2d_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, workspace_id TEXT NOT NULL, device_id TEXT NOT NULL,
    payload BLOB NOT NULL, properties TEXT NOT NULL, created_at INTEGER NOT NULL,
    delivered_at INTEGER);
CREATE TABLE IF NOT EXISTS uploads (
    correlation_id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, device_id TEXT NOT NULL,
    blob_name TEXT NOT NULL, created_at INTEGER NOT NULL, uploaded_at INTEGER, size INTEGER,
    notified_at INTEGER, success INTEGER);
CREATE TABLE IF NOT EXISTS fleet_configurations (
    id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, name TEXT NOT NULL,
    target_tags_json TEXT NOT NULL, target_reported_json TEXT NOT NULL,
    desired_json TEXT NOT NULL, created_at INTEGER NOT NULL);
"#;

/// Indexes on columns a database made by an earlier version may lack (added after them).
const INDEXES: &str = r#"
CREATE INDEX IF NOT EXISTS messages_by_sequence
    ON messages (workspace_id, device_id, seq_origin, seq_n);
CREATE INDEX IF NOT EXISTS messages_conflicts ON messages (workspace_id) WHERE conflict = 1;
"#;

/// Columns added after the first release: (table, column, definition).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("messages", "conflict", "INTEGER NOT NULL DEFAULT 0"),
    // The token a refresh replaced this one with, and when it was first used.
    ("registration_tokens", "superseded_by", "TEXT"),
    ("registration_tokens", "used_at", "INTEGER"),
];

/// The Platform's database. Clones share the one connection (the ingest writer holds one).
#[derive(Debug, Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
}

impl Store {
    /// Open (and create or migrate) the database file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        for (table, column, definition) in ADDED_COLUMNS {
            let present: bool = connection.query_row(
                &format!("SELECT count(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                params![column],
                |r| r.get(0),
            )?;
            if !present {
                connection.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                ))?;
            }
        }
        connection.execute_batch(INDEXES)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Exclusive access to the connection for a short series of statements.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock is a bug elsewhere; the connection itself stays usable.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A stored setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Store a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}
