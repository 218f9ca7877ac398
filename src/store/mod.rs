//! Persistence: the [`Store`] trait and the records it keeps.
//!
//! Everything durable goes through this trait: SQLite (`sqlite://…`, the default, one process)
//! or PostgreSQL (`postgres://…`, shared by several instances), chosen by URL; callers do not
//! know which. Timestamps are unix microseconds (UTC) in the database and are formatted at the
//! HTTP edge. Nothing here knows about HTTP.

mod audit;
mod batch;
pub mod copy;
mod postgres;
mod sqlite;
mod usage;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

pub use copy::{Rows, Table};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Unix time in microseconds, UTC.
pub type Micros = i64;

pub fn now_micros() -> Micros {
    chrono::Utc::now().timestamp_micros()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// From the SQLite store's writer thread (`batch.rs`), which uses rusqlite.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// The database cannot be reached just now (down, restarting, or no connection free within
    /// the pool's wait): a retry later may work, unlike a failing statement.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)) => true,
            // PostgreSQL's classes 08 (connection exception) and 57P (shutting down, starting up).
            StoreError::Db(sqlx::Error::Database(e)) => {
                e.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
            }
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub name: String,
    pub key_hash: String,
    pub key_prefix: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: Micros,
    pub updated_at: Micros,
    pub last_used_at: Option<Micros>,
    pub expires_at: Option<Micros>,
    pub revoked_at: Option<Micros>,
    /// When set, the key may only act as this username.
    pub username: Option<String>,
    /// Per-key limits (all unlimited by default).
    pub limits: Limits,
}

/// A key's limits; `None` is unlimited. Stored as JSON (`NULL` when every field is unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests made with the key per minute (a token bucket of this size, refilled evenly).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Runs (turns and OpenAI completions) in progress at once.
    #[serde(default)]
    pub concurrent_runs: Option<u32>,
    /// Prompt + completion tokens, as the upstream reports them, per UTC day.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        *self == Limits::default()
    }

    /// The stored form: `None` (SQL `NULL`) when unlimited.
    pub fn to_column(&self) -> Option<String> {
        (!self.is_unlimited()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    pub fn from_column(v: Option<String>) -> StoreResult<Limits> {
        Ok(match v {
            Some(s) if !s.trim().is_empty() => serde_json::from_str(&s)?,
            _ => Limits::default(),
        })
    }
}

/// What a key did on one UTC day. Audio is kept in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: i64,
    pub runs: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub audio_in_ms: i64,
    pub audio_out_ms: i64,
}

impl UsageCounts {
    pub fn add(&mut self, o: &UsageCounts) {
        self.requests += o.requests;
        self.runs += o.runs;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.audio_in_ms += o.audio_in_ms;
        self.audio_out_ms += o.audio_out_ms;
    }

    pub fn tokens(&self) -> i64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// One key's usage on one day (`YYYY-MM-DD`, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub key_id: String,
    pub day: String,
    pub counts: UsageCounts,
}

/// Changes to a key (`None` leaves a field as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub limits: Option<Limits>,
}

impl ApiKeyRecord {
    /// Active = not revoked and not expired at `now`.
    pub fn is_active(&self, now: Micros) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub session_id: String,
    pub platform_id: String,
    pub creator: String,
    pub display_name: Option<String>,
    pub is_group: bool,
    pub profile_id: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

impl SessionRecord {
    /// A new, empty session created now.
    pub fn new(session_id: &str, platform_id: &str, creator: &str) -> Self {
        let now = now_micros();
        Self {
            session_id: session_id.to_string(),
            platform_id: platform_id.to_string(),
            creator: creator.to_string(),
            display_name: None,
            is_group: false,
            profile_id: None,
            created_at: now,
            updated_at: now,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: i64,
    pub session_id: String,
    pub platform_id: String,
    pub sender_id: String,
    pub sender_name: String,
    pub content: Value,
    pub llm_checkpoint_id: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub session_id: String,
    pub platform_id: String,
    pub sender_id: String,
    pub sender_name: String,
    pub content: Value,
    pub llm_checkpoint_id: Option<String>,
}

/// A finished run and the events it produced, kept for resumption.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub session_id: String,
    pub username: String,
    pub status: String,
    /// JSON array of events.
    pub events: String,
    pub created_at: Micros,
    /// When it finished, or (status `running`) when it was last saved.
    pub finished_at: Micros,
    /// The reply message the run wrote (saved while streaming).
    pub message_id: Option<i64>,
    /// The instance running it (cluster mode), so that recovery closes only runs of instances
    /// that are gone.
    pub instance_id: Option<String>,
}

/// A reply's final save: the message and, for a run kept for resumption, its closed run log, in
/// one transaction (one write, so `message_saved` and `end` are durable together).
pub struct ReplySave {
    pub message: ReplyMessage,
    pub run: Option<RunClose>,
}

/// The reply message: new, or already written while it streamed.
pub enum ReplyMessage {
    Insert(NewMessage),
    Update { id: i64, created_at: Micros, content: Value },
}

/// The run record written with a reply. Its `message_id` is set to the reply's id and its
/// `events` to what `log` makes of the reply's id and creation time (the log ends with the
/// `message_saved` event that names them).
pub struct RunClose {
    pub record: RunRecord,
    pub log: Box<dyn Fn(i64, Micros) -> serde_json::Result<String> + Send + Sync>,
}

impl RunClose {
    /// The record to write once the reply is `(id, created_at)`.
    pub fn complete(&self, id: i64, created_at: Micros) -> StoreResult<RunRecord> {
        Ok(RunRecord { events: (self.log)(id, created_at)?, message_id: Some(id), ..self.record.clone() })
    }
}

#[derive(Debug, Clone)]
pub struct AttachmentRecord {
    pub attachment_id: String,
    pub stored_name: String,
    pub original_name: String,
    pub kind: String,
    pub mime_type: String,
    pub size: i64,
    pub sha256: String,
    pub created_at: Micros,
    /// Who uploaded or generated it (`key:<key_id>` or `user:<username>`); `None` for attachments
    /// stored before owners were recorded.
    pub owner: Option<String>,
}

/// One event of the audit log, as recorded (the database gives it its id).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub time: Micros,
    /// Who acted: the dashboard username, `cli`, or the username a failed login tried.
    pub actor: String,
    /// `login`, `login_failed`, `api_key.create`, `api_key.revoke`, `api_key.delete`, …
    pub action: String,
    /// What it acted on (a key id), when anything.
    pub target: Option<String>,
    /// The client address, for actions that came over HTTP.
    pub ip: Option<String>,
    /// A small JSON object with more about the event (e.g. a new key's name and scopes).
    pub detail: Option<Value>,
}

/// A stored audit event: its id (which orders the log) and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub event: AuditEvent,
}

/// One page of a listing plus the total of the filtered set.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;

    // settings
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Inserts `value` unless `key` exists; returns the value that is stored afterwards.
    async fn init_setting(&self, key: &str, value: &str) -> StoreResult<String>;
    /// Sets `key` to `value`.
    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()>;

    // api keys
    async fn insert_api_key(&self, rec: &ApiKeyRecord) -> StoreResult<()>;
    /// Newest first.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn find_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>>;
    async fn get_api_key(&self, key_id: &str) -> StoreResult<Option<ApiKeyRecord>>;
    async fn revoke_api_key(&self, key_id: &str, now: Micros) -> StoreResult<bool>;
    async fn delete_api_key(&self, key_id: &str) -> StoreResult<bool>;
    /// Records `last_used_at` for many keys in one transaction.
    async fn touch_api_keys(&self, touches: &[(String, Micros)]) -> StoreResult<()>;
    /// Changes a key's name and limits; false when there is no such key.
    async fn update_api_key(&self, key_id: &str, update: &KeyUpdate, now: Micros) -> StoreResult<bool>;

    // usage
    /// Adds each row's counts to the stored ones (creating rows), in one transaction.
    async fn add_usage(&self, rows: &[UsageRow]) -> StoreResult<()>;
    /// A key's rows from `from_day` to `to_day` (inclusive), oldest first.
    async fn key_usage(&self, key_id: &str, from_day: &str, to_day: &str) -> StoreResult<Vec<UsageRow>>;

    // sessions
    async fn get_session(&self, session_id: &str) -> StoreResult<Option<SessionRecord>>;
    /// Inserts the session unless it exists; returns whether it was created.
    async fn create_session(&self, rec: &SessionRecord) -> StoreResult<bool>;
    /// Gives an unowned session (creator `""`, made by a proactive message) to `creator`.
    async fn claim_session(&self, session_id: &str, creator: &str) -> StoreResult<bool>;
    async fn set_session_profile(&self, session_id: &str, profile_id: Option<&str>) -> StoreResult<()>;
    /// Renames a session (`None` keeps the name) and marks it updated now.
    async fn set_session_display_name(&self, session_id: &str, name: Option<&str>) -> StoreResult<()>;
    /// Newest `updated_at` first.
    async fn list_sessions(
        &self,
        creator: &str,
        platform_id: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Page<SessionRecord>>;
    /// Deletes the session, its messages, runs and variables.
    async fn delete_session(&self, session_id: &str) -> StoreResult<bool>;

    // messages
    /// Saves a message and bumps the session's `updated_at` in one transaction.
    async fn insert_message(&self, msg: &NewMessage) -> StoreResult<(i64, Micros)>;
    /// Creates `session` (unless it exists) and inserts its first message, in one transaction.
    async fn insert_first_message(&self, session: &SessionRecord, msg: &NewMessage) -> StoreResult<(i64, Micros)>;
    /// Replaces a message's content (a reply saved while it streams).
    async fn update_message(&self, id: i64, content: &Value) -> StoreResult<()>;
    /// Replaces a message's content and checkpoint (an edited question).
    async fn rewrite_message(&self, id: i64, content: &Value, checkpoint: &str) -> StoreResult<()>;
    /// Deletes the session's messages after message `id`; how many.
    async fn delete_messages_after(&self, session_id: &str, id: i64) -> StoreResult<u64>;
    async fn get_message(&self, id: i64) -> StoreResult<Option<MessageRecord>>;
    async fn list_messages(
        &self,
        session_id: &str,
        offset: i64,
        limit: i64,
        newest_first: bool,
    ) -> StoreResult<Page<MessageRecord>>;
    /// The `limit` newest messages of a session, oldest first.
    async fn recent_messages(&self, session_id: &str, limit: i64) -> StoreResult<Vec<MessageRecord>>;

    // runs
    async fn insert_run(&self, rec: &RunRecord) -> StoreResult<()>;
    /// Writes a reply and its run log in one transaction; returns the reply's id and creation time.
    async fn save_reply(&self, reply: ReplySave) -> StoreResult<(i64, Micros)>;
    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>>;
    async fn purge_runs(&self, finished_before: Micros) -> StoreResult<u64>;
    /// What may have been left in flight: runs with status `running`, and messages still
    /// flagged `"streaming": true` (crash recovery decides which of them to close).
    async fn in_flight(&self) -> StoreResult<(Vec<RunRecord>, Vec<MessageRecord>)>;

    /// Finishes the queued writes and closes the writer (at shutdown); reads keep working.
    async fn close(&self);

    // health
    /// True when the last write failed (e.g. the disk is full); SQLite: also while the disk holding
    /// the database is (nearly) full.
    fn writes_failing(&self) -> bool;
    /// A small real write; clears [`Store::writes_failing`] when it succeeds.
    async fn probe_write(&self) -> StoreResult<()>;

    // attachments
    async fn insert_attachment(&self, rec: &AttachmentRecord) -> StoreResult<()>;
    async fn get_attachment(&self, attachment_id: &str) -> StoreResult<Option<AttachmentRecord>>;
    async fn get_attachment_by_stored_name(&self, stored_name: &str) -> StoreResult<Option<AttachmentRecord>>;
    /// Removes an attachment's row (its file is the caller's to remove).
    async fn delete_attachment(&self, attachment_id: &str) -> StoreResult<()>;

    // attachment bytes kept in the database ([files] storage = "database")
    /// Stores chunk `idx` of an attachment's bytes (replacing one with the same index).
    async fn put_chunk(&self, attachment_id: &str, idx: i32, data: &[u8]) -> StoreResult<()>;
    /// Chunk `idx` of an attachment's bytes.
    async fn get_chunk(&self, attachment_id: &str, idx: i32) -> StoreResult<Option<Vec<u8>>>;
    /// Removes every chunk of an attachment.
    async fn delete_chunks(&self, attachment_id: &str) -> StoreResult<()>;

    // moving an installation (`astrgate copy-db`)
    /// Rows in a table.
    async fn count_rows(&self, table: Table) -> StoreResult<i64>;
    /// A page of a table's rows in primary-key order.
    async fn export_rows(&self, table: Table, offset: i64, limit: i64) -> StoreResult<Rows>;
    /// Inserts rows exactly as exported (ids kept), in one transaction; rows that exist are
    /// updated.
    async fn import_rows(&self, rows: &Rows) -> StoreResult<()>;
    /// After an import: generated ids continue after the imported ones.
    async fn finish_import(&self) -> StoreResult<()>;

    // the audit log
    /// Appends events in one transaction; their ids follow the slice's order.
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()>;
    /// Newest first (highest id first): at most `limit` events, only those with an id below
    /// `before` when it is given.
    async fn list_audit_events(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<AuditRecord>>;
    /// Removes the events recorded before `before`; how many.
    async fn purge_audit_events(&self, before: Micros) -> StoreResult<u64>;

    // per-session variables (stage API)
    async fn set_session_var(&self, session_id: &str, key: &str, value: &str) -> StoreResult<()>;
    async fn session_vars(&self, session_id: &str) -> StoreResult<Vec<(String, String)>>;
    async fn delete_session_vars(&self, session_id: &str) -> StoreResult<u64>;
}

/// The store's health: a read round trip, and — while writes are failing (a full disk) — one
/// small write, retried at every check until it succeeds. `Err` is what to tell a client.
pub async fn check_health(store: &dyn Store) -> Result<(), &'static str> {
    if let Err(e) = store.ping().await {
        tracing::error!(error = %e, "health check: database unreachable");
        return Err("database unavailable");
    }
    if store.writes_failing()
        && let Err(e) = store.probe_write().await
    {
        tracing::error!(error = %e, "health check: database writes are failing");
        return Err("database writes are failing");
    }
    Ok(())
}

/// Opens the store named by `url` and applies the embedded migrations.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    connect_with(url, postgres::DEFAULT_POOL).await
}

/// [`connect`], with at most `pool` connections to PostgreSQL (SQLite ignores it).
pub async fn connect_with(url: &str, pool: u32) -> StoreResult<Arc<dyn Store>> {
    match Backend::of(url) {
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteStore::connect(url).await?)),
        Some(Backend::Postgres) => Ok(Arc::new(PgStore::connect(url, pool).await?)),
        None => Err(StoreError::UnsupportedUrl(redact_url(url))),
    }
}

/// The database behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// Drops credentials from a database URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
