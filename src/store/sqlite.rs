//! SQLite backend (WAL mode). Migrations are embedded in the binary and applied at connect.
//!
//! Writes go through a pool of exactly one connection, reads through a pool of several. SQLite
//! allows one writer at a time; with several writer connections, contended writers sleep in
//! SQLite's busy handler (1, 2, 5 … 100 ms backoff) and throughput collapses under load. One
//! writer makes them queue asynchronously for the connection instead, and WAL lets readers run
//! alongside it.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use super::*;
use crate::store::{audit, usage};

mod checkpoint;
mod copy;

/// The embedded migrations, in order. Never edit one that has shipped.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, "touch session trigger", include_str!("../../migrations/sqlite/0002_touch_session_trigger.sql")),
    (3, "owners", include_str!("../../migrations/sqlite/0003_owners.sql")),
    (4, "in-flight runs", include_str!("../../migrations/sqlite/0004_inflight_runs.sql")),
    (5, "run instance, attachment chunks", include_str!("../../migrations/sqlite/0005_run_instance.sql")),
    (6, "governance", include_str!("../../migrations/sqlite/0006_governance.sql")),
    (7, "audit log", include_str!("../../migrations/sqlite/0007_audit.sql")),
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(v, d, sql)| {
                Migration::new(*v, Cow::Borrowed(*d), MigrationType::Simple, AssertSqlSafe(*sql).into_sql_str(), false)
            })
            .collect(),
    )
}

pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// Set when the last group commit failed (e.g. the disk is full), cleared by the next one
    /// that succeeds or by a successful [`Store::probe_write`].
    write_failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The group-commit writer for sessions, messages and run logs (see `batch.rs`).
    batch: tokio::sync::mpsc::Sender<super::batch::WriteOp>,
    /// The database file.
    path: std::path::PathBuf,
    /// Resolves when the writer thread has finished ([`Store::close`] waits for it).
    writer: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// Tells the WAL checkpointer (`checkpoint.rs`) to do a last checkpoint and stop.
    closing_checkpoints: tokio_util::sync::CancellationToken,
    checkpointer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SqliteStore {
    /// Bytes available to us on the file system holding the database (None if unknown).
    fn free_bytes(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.path).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

impl Drop for SqliteStore {
    /// A store dropped without [`Store::close`] stops its checkpointer too (its writer ends when
    /// the last sender is gone).
    fn drop(&mut self) {
        self.closing_checkpoints.cancel();
    }
}

impl SqliteStore {
    async fn batched<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<StoreResult<T>>) -> super::batch::WriteOp,
    ) -> StoreResult<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Db(sqlx::Error::PoolClosed);
        self.batch.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// Below this much free space where the database lives, the health check counts writes as
/// failing even when small writes succeed.
const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Every connection's settings (sqlx's and the writer thread's).
const PRAGMAS: &[(&str, &str)] = &[
    // WAL + NORMAL: durable across application crashes, fsyncs only in checkpoints.
    ("synchronous", "NORMAL"),
    ("foreign_keys", "ON"),
    // Statement journals (multi-row inserts, triggers) in memory instead of a temp file.
    ("temp_store", "MEMORY"),
    // Checkpoint on commit every ~64 MiB of WAL instead of 4 MiB (this is what lets the WAL start
    // over); `checkpoint.rs` copies the pages back off the write path long before.
    ("wal_autocheckpoint", "16000"),
    // Once the WAL starts over, a WAL grown longer by a burst is cut back to 64 MiB.
    ("journal_size_limit", "67108864"),
];

impl SqliteStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let mut opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        for (name, value) in PRAGMAS {
            opts = opts.pragma(*name, *value);
        }
        if let Some(parent) = opts.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        // The rare writes; the writer thread takes SQLite's write lock in turn with it. A
        // connection handed back inside a transaction (a failed COMMIT or ROLLBACK, e.g. on a full
        // disk) is closed, not kept: idle in the pool it would hold the write lock, and every
        // write of the writer thread would wait for it.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .after_release(|conn, _| {
                Box::pin(async move {
                    use sqlx::Connection;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(opts.clone())
            .await?;
        migrator().run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(opts.clone().read_only(true))
            .await?;
        let (batch, rx) = tokio::sync::mpsc::channel(super::batch::QUEUE);
        let write_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closing_checkpoints = tokio_util::sync::CancellationToken::new();
        // Owned by the store: [`Store::close`] stops it after every queued write is answered,
        // and waits for it (it also ends when the store is dropped).
        let written = std::sync::Arc::new(tokio::sync::Notify::new());
        let writer = super::batch::start(opts.get_filename(), PRAGMAS, rx, write_failed.clone(), written.clone())?;
        // Its own connection, so a checkpoint's fsyncs never hold up a write. Stopped by `close`
        // after the writer, so it copies the last writes back too.
        let path = opts.get_filename().to_path_buf();
        let checkpoints = SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(opts).await?;
        let checkpointer = tokio::spawn(checkpoint::run(checkpoints, written, closing_checkpoints.clone()));
        Ok(Self {
            path,
            read,
            write,
            write_failed,
            batch,
            writer: std::sync::Mutex::new(Some(writer)),
            closing_checkpoints,
            checkpointer: std::sync::Mutex::new(Some(checkpointer)),
        })
    }
}

fn api_key_from_row(r: &SqliteRow) -> StoreResult<ApiKeyRecord> {
    let scopes: String = r.try_get("scopes")?;
    Ok(ApiKeyRecord {
        key_id: r.try_get("key_id")?,
        name: r.try_get("name")?,
        key_hash: r.try_get("key_hash")?,
        key_prefix: r.try_get("key_prefix")?,
        scopes: serde_json::from_str(&scopes)?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        last_used_at: r.try_get("last_used_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        username: r.try_get("username")?,
        limits: Limits::from_column(r.try_get("limits")?)?,
    })
}

fn session_from_row(r: &SqliteRow) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        session_id: r.try_get("session_id")?,
        platform_id: r.try_get("platform_id")?,
        creator: r.try_get("creator")?,
        display_name: r.try_get("display_name")?,
        is_group: r.try_get::<i64, _>("is_group")? != 0,
        profile_id: r.try_get("profile_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn message_from_row(r: &SqliteRow) -> StoreResult<MessageRecord> {
    let content: String = r.try_get("content")?;
    Ok(MessageRecord {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        platform_id: r.try_get("platform_id")?,
        sender_id: r.try_get("sender_id")?,
        sender_name: r.try_get("sender_name")?,
        content: serde_json::from_str(&content)?,
        llm_checkpoint_id: r.try_get("llm_checkpoint_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// The columns and placeholders of an API-key row, after `INSERT` or `INSERT OR IGNORE`.
pub(super) const INSERT_API_KEY: &str = "INTO api_keys (key_id, name, key_hash, key_prefix, scopes, created_by, created_at, updated_at, last_used_at, expires_at, revoked_at, username, limits)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

pub(super) fn bind_api_key<'q>(q: SqliteQuery<'q>, k: &'q ApiKeyRecord, scopes: String) -> SqliteQuery<'q> {
    q.bind(&k.key_id)
        .bind(&k.name)
        .bind(&k.key_hash)
        .bind(&k.key_prefix)
        .bind(scopes)
        .bind(&k.created_by)
        .bind(k.created_at)
        .bind(k.updated_at)
        .bind(k.last_used_at)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .bind(&k.username)
        .bind(k.limits.to_column())
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// An attachment row's columns and placeholders, after `INSERT` or `INSERT OR IGNORE`.
pub(super) const INSERT_ATTACHMENT: &str =
    "INTO attachments (attachment_id, stored_name, original_name, kind, mime_type, size, sha256, created_at, owner)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

pub(super) fn bind_attachment<'q>(q: SqliteQuery<'q>, a: &'q AttachmentRecord) -> SqliteQuery<'q> {
    q.bind(&a.attachment_id)
        .bind(&a.stored_name)
        .bind(&a.original_name)
        .bind(&a.kind)
        .bind(&a.mime_type)
        .bind(a.size)
        .bind(&a.sha256)
        .bind(a.created_at)
        .bind(&a.owner)
}

/// A run row's columns (9 placeholders each).
/// The run log's upsert, for the writer thread (`batch.rs`).
pub(super) const INSERT_RUN: &str = "INSERT OR REPLACE INTO runs (run_id, session_id, username, status, events, created_at, finished_at, message_id, instance_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

pub(super) const RUN_COLUMNS: &str =
    "runs (run_id, session_id, username, status, events, created_at, finished_at, message_id, instance_id)";

pub(super) fn bind_run<'q>(q: SqliteQuery<'q>, r: &'q RunRecord) -> SqliteQuery<'q> {
    q.bind(&r.run_id)
        .bind(&r.session_id)
        .bind(&r.username)
        .bind(&r.status)
        .bind(&r.events)
        .bind(r.created_at)
        .bind(r.finished_at)
        .bind(r.message_id)
        .bind(&r.instance_id)
}

fn attachment_from_row(r: &SqliteRow) -> StoreResult<AttachmentRecord> {
    Ok(AttachmentRecord {
        attachment_id: r.try_get("attachment_id")?,
        stored_name: r.try_get("stored_name")?,
        original_name: r.try_get("original_name")?,
        kind: r.try_get("kind")?,
        mime_type: r.try_get("mime_type")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
        created_at: r.try_get("created_at")?,
        owner: r.try_get("owner")?,
    })
}

fn run_from_row(r: &SqliteRow) -> StoreResult<RunRecord> {
    Ok(RunRecord {
        run_id: r.try_get("run_id")?,
        session_id: r.try_get("session_id")?,
        username: r.try_get("username")?,
        status: r.try_get("status")?,
        events: r.try_get("events")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
        message_id: r.try_get("message_id")?,
        instance_id: r.try_get("instance_id")?,
    })
}

const SESSION_COLS: &str =
    "session_id, platform_id, creator, display_name, is_group, profile_id, created_at, updated_at";

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = ?").bind(key).fetch_optional(&self.read).await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn init_setting(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query("INSERT OR IGNORE INTO settings (key, value, updated_at) VALUES (?, ?, ?)")
            .bind(key)
            .bind(value)
            .bind(now_micros())
            .execute(&self.write)
            .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = ?").bind(key).fetch_one(&self.write).await?;
        Ok(row.try_get("value")?)
    }

    async fn insert_api_key(&self, k: &ApiKeyRecord) -> StoreResult<()> {
        let sql = AssertSqlSafe(format!("INSERT {INSERT_API_KEY}"));
        bind_api_key(sqlx::query(sql), k, serde_json::to_string(&k.scopes)?).execute(&self.write).await?;
        Ok(())
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at DESC, key_id").fetch_all(&self.read).await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn find_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let row =
            sqlx::query("SELECT * FROM api_keys WHERE key_hash = ?").bind(key_hash).fetch_optional(&self.read).await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn get_api_key(&self, key_id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let row =
            sqlx::query("SELECT * FROM api_keys WHERE key_id = ?").bind(key_id).fetch_optional(&self.read).await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn revoke_api_key(&self, key_id: &str, now: Micros) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = ?, updated_at = ? WHERE key_id = ?")
            .bind(now)
            .bind(now)
            .bind(key_id)
            .execute(&self.write)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_api_key(&self, key_id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM api_keys WHERE key_id = ?").bind(key_id).execute(&self.write).await?;
        Ok(r.rows_affected() > 0)
    }

    async fn touch_api_keys(&self, touches: &[(String, Micros)]) -> StoreResult<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        for (key_id, at) in touches {
            sqlx::query("UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE key_id = ?")
                .bind(at)
                .bind(key_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn update_api_key(&self, key_id: &str, u: &KeyUpdate, now: Micros) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE api_keys SET name = COALESCE(?, name), limits = CASE WHEN ? THEN ? ELSE limits END,
               updated_at = ? WHERE key_id = ?",
        )
        .bind(&u.name)
        .bind(u.limits.is_some())
        .bind(u.limits.and_then(|l| l.to_column()))
        .bind(now)
        .bind(key_id)
        .execute(&self.write)
        .await;
        Ok(r?.rows_affected() > 0)
    }

    async fn add_usage(&self, rows: &[UsageRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        for row in rows {
            usage::add::<sqlx::Sqlite>(row).build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn key_usage(&self, key_id: &str, from_day: &str, to_day: &str) -> StoreResult<Vec<UsageRow>> {
        let rows = usage::range::<sqlx::Sqlite>(key_id, from_day, to_day).build().fetch_all(&self.read).await?;
        rows.iter().map(usage::from_row).collect()
    }

    async fn get_session(&self, session_id: &str) -> StoreResult<Option<SessionRecord>> {
        let sql = AssertSqlSafe(format!("SELECT {SESSION_COLS} FROM sessions WHERE session_id = ?"));
        let row = sqlx::query(sql).bind(session_id).fetch_optional(&self.read).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn create_session(&self, s: &SessionRecord) -> StoreResult<bool> {
        let s = s.clone();
        self.batched(|tx| super::batch::WriteOp::CreateSession(s, tx)).await
    }

    async fn claim_session(&self, session_id: &str, creator: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE sessions SET creator = ? WHERE session_id = ? AND creator = ''")
            .bind(creator)
            .bind(session_id)
            .execute(&self.write)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_session_profile(&self, session_id: &str, profile_id: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET profile_id = ? WHERE session_id = ?")
            .bind(profile_id)
            .bind(session_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn set_session_display_name(&self, session_id: &str, name: Option<&str>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sessions SET display_name = COALESCE(?, display_name), updated_at = ? WHERE session_id = ?",
        )
        .bind(name)
        .bind(now_micros())
        .bind(session_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn list_sessions(
        &self,
        creator: &str,
        platform_id: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Page<SessionRecord>> {
        let sql = AssertSqlSafe(format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE creator = ?1 AND (?2 IS NULL OR platform_id = ?2)
             ORDER BY updated_at DESC, session_id LIMIT ?3 OFFSET ?4"
        ));
        let rows =
            sqlx::query(sql).bind(creator).bind(platform_id).bind(limit).bind(offset).fetch_all(&self.read).await?;
        let total: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE creator = ?1 AND (?2 IS NULL OR platform_id = ?2)")
                .bind(creator)
                .bind(platform_id)
                .fetch_one(&self.read)
                .await?
                .try_get("n")?;
        Ok(Page { items: rows.iter().map(session_from_row).collect::<StoreResult<_>>()?, total })
    }

    async fn delete_session(&self, session_id: &str) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM messages WHERE session_id = ?").bind(session_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM runs WHERE session_id = ?").bind(session_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM session_vars WHERE session_id = ?").bind(session_id).execute(&mut *tx).await?;
        let r = sqlx::query("DELETE FROM sessions WHERE session_id = ?").bind(session_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_message(&self, m: &NewMessage) -> StoreResult<(i64, Micros)> {
        let m = m.clone();
        self.batched(|tx| super::batch::WriteOp::InsertMessage(m, None, tx)).await
    }

    async fn insert_first_message(&self, s: &SessionRecord, m: &NewMessage) -> StoreResult<(i64, Micros)> {
        let (s, m) = (s.clone(), m.clone());
        self.batched(|tx| super::batch::WriteOp::InsertMessage(m, Some(s), tx)).await
    }

    async fn rewrite_message(&self, id: i64, content: &Value, checkpoint: &str) -> StoreResult<()> {
        sqlx::query("UPDATE messages SET content = ?, llm_checkpoint_id = ?, updated_at = ? WHERE id = ?")
            .bind(serde_json::to_string(content)?)
            .bind(checkpoint)
            .bind(now_micros())
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn delete_messages_after(&self, session_id: &str, id: i64) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM messages WHERE session_id = ? AND id > ?")
            .bind(session_id)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(r.rows_affected())
    }

    async fn update_message(&self, id: i64, content: &Value) -> StoreResult<()> {
        let content = serde_json::to_string(content)?;
        self.batched(|tx| super::batch::WriteOp::UpdateMessage(id, content, tx)).await
    }

    async fn get_message(&self, id: i64) -> StoreResult<Option<MessageRecord>> {
        let row = sqlx::query("SELECT * FROM messages WHERE id = ?").bind(id).fetch_optional(&self.read).await?;
        row.as_ref().map(message_from_row).transpose()
    }

    async fn list_messages(
        &self,
        session_id: &str,
        offset: i64,
        limit: i64,
        newest_first: bool,
    ) -> StoreResult<Page<MessageRecord>> {
        let sql = if newest_first {
            "SELECT * FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT ? OFFSET ?"
        } else {
            "SELECT * FROM messages WHERE session_id = ? ORDER BY id ASC LIMIT ? OFFSET ?"
        };
        let rows = sqlx::query(sql).bind(session_id).bind(limit).bind(offset).fetch_all(&self.read).await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM messages WHERE session_id = ?")
            .bind(session_id)
            .fetch_one(&self.read)
            .await?
            .try_get("n")?;
        Ok(Page { items: rows.iter().map(message_from_row).collect::<StoreResult<_>>()?, total })
    }

    async fn recent_messages(&self, session_id: &str, limit: i64) -> StoreResult<Vec<MessageRecord>> {
        let rows = sqlx::query("SELECT * FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT ?")
            .bind(session_id)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        let mut out = rows.iter().map(message_from_row).collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn insert_run(&self, r: &RunRecord) -> StoreResult<()> {
        let r = r.clone();
        self.batched(|tx| super::batch::WriteOp::InsertRun(r, tx)).await
    }

    async fn save_reply(&self, reply: ReplySave) -> StoreResult<(i64, Micros)> {
        self.batched(|tx| super::batch::WriteOp::SaveReply(reply, tx)).await
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE run_id = ?").bind(run_id).fetch_optional(&self.read).await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn in_flight(&self) -> StoreResult<(Vec<RunRecord>, Vec<MessageRecord>)> {
        let runs = sqlx::query("SELECT * FROM runs WHERE status = 'running'").fetch_all(&self.write).await?;
        let msgs = sqlx::query("SELECT * FROM messages WHERE json_extract(content, '$.streaming') = 1")
            .fetch_all(&self.write)
            .await?;
        Ok((
            runs.iter().map(run_from_row).collect::<StoreResult<_>>()?,
            msgs.iter().map(message_from_row).collect::<StoreResult<_>>()?,
        ))
    }

    async fn close(&self) {
        // Queued after every write accepted so far; refused by a writer already gone.
        let _ = self.batch.send(super::batch::WriteOp::Close).await;
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        self.closing_checkpoints.cancel();
        let checkpointer = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(c) = checkpointer {
            let _ = c.await;
        }
        // Reads stay possible.
        self.write.close().await;
    }

    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    fn writes_failing(&self) -> bool {
        // A small write can succeed on a full disk (it reuses WAL space the checkpointer freed),
        // clearing the flag while any write that needs new pages still fails: a full file
        // system counts as failing too.
        self.write_failed.load(std::sync::atomic::Ordering::Relaxed)
            || self.free_bytes().is_some_and(|b| b < MIN_FREE_BYTES)
    }

    async fn probe_write(&self) -> StoreResult<()> {
        // Its own small write may succeed on a full disk (see `writes_failing`).
        if let Some(avail) = self.free_bytes()
            && avail < MIN_FREE_BYTES
        {
            self.write_failed.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("{avail} bytes free where the database lives"),
            )));
        }
        let r = sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ('health_probe', ?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(now_micros().to_string())
        .bind(now_micros())
        .execute(&self.write)
        .await;
        self.write_failed.store(r.is_err(), std::sync::atomic::Ordering::Relaxed);
        r.map(|_| ())?;
        Ok(())
    }

    async fn purge_runs(&self, finished_before: Micros) -> StoreResult<u64> {
        let r =
            sqlx::query("DELETE FROM runs WHERE finished_at < ?").bind(finished_before).execute(&self.write).await?;
        Ok(r.rows_affected())
    }

    async fn delete_attachment(&self, attachment_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM attachments WHERE attachment_id = ?").bind(attachment_id).execute(&self.write).await?;
        Ok(())
    }

    async fn insert_attachment(&self, a: &AttachmentRecord) -> StoreResult<()> {
        let sql = AssertSqlSafe(format!("INSERT {INSERT_ATTACHMENT}"));
        bind_attachment(sqlx::query(sql), a).execute(&self.write).await?;
        Ok(())
    }

    async fn get_attachment_by_stored_name(&self, stored_name: &str) -> StoreResult<Option<AttachmentRecord>> {
        let row = sqlx::query("SELECT * FROM attachments WHERE stored_name = ?")
            .bind(stored_name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(attachment_from_row).transpose()
    }

    async fn get_attachment(&self, attachment_id: &str) -> StoreResult<Option<AttachmentRecord>> {
        let row = sqlx::query("SELECT * FROM attachments WHERE attachment_id = ?")
            .bind(attachment_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(attachment_from_row).transpose()
    }

    async fn put_chunk(&self, attachment_id: &str, idx: i32, data: &[u8]) -> StoreResult<()> {
        sqlx::query("INSERT OR REPLACE INTO attachment_chunks (attachment_id, idx, data) VALUES (?, ?, ?)")
            .bind(attachment_id)
            .bind(idx)
            .bind(data)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn get_chunk(&self, attachment_id: &str, idx: i32) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT data FROM attachment_chunks WHERE attachment_id = ? AND idx = ?")
            .bind(attachment_id)
            .bind(idx)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("data")).transpose()?)
    }

    async fn delete_chunks(&self, attachment_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM attachment_chunks WHERE attachment_id = ?")
            .bind(attachment_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn count_rows(&self, table: Table) -> StoreResult<i64> {
        let sql = AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {}", table.name()));
        Ok(sqlx::query(sql).fetch_one(&self.read).await?.try_get("n")?)
    }

    async fn export_rows(&self, table: Table, offset: i64, limit: i64) -> StoreResult<Rows> {
        self.export(table, offset, limit).await
    }

    async fn import_rows(&self, rows: &Rows) -> StoreResult<()> {
        self.import(rows).await
    }

    async fn finish_import(&self) -> StoreResult<()> {
        // AUTOINCREMENT continues after the largest id inserted: nothing to do.
        Ok(())
    }

    async fn insert_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        for chunk in events.chunks(audit::ROWS_PER_INSERT) {
            audit::insert::<sqlx::Sqlite>(chunk.iter().map(|e| (None, e)))?.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit_events(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<AuditRecord>> {
        let rows = audit::list::<sqlx::Sqlite>(before, limit).build().fetch_all(&self.read).await?;
        rows.iter().map(audit::from_row).collect()
    }

    async fn purge_audit_events(&self, before: Micros) -> StoreResult<u64> {
        Ok(audit::purge::<sqlx::Sqlite>(before).build().execute(&self.write).await?.rows_affected())
    }

    async fn set_session_var(&self, session_id: &str, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO session_vars (session_id, key, value, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(session_id)
        .bind(key)
        .bind(value)
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn session_vars(&self, session_id: &str) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT key, value FROM session_vars WHERE session_id = ? ORDER BY key")
            .bind(session_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("key")?, r.try_get("value")?))).collect()
    }

    async fn delete_session_vars(&self, session_id: &str) -> StoreResult<u64> {
        let r =
            sqlx::query("DELETE FROM session_vars WHERE session_id = ?").bind(session_id).execute(&self.write).await?;
        Ok(r.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> SessionRecord {
        SessionRecord::new(id, "webchat", "u")
    }

    fn message(session: &str, text: &str) -> NewMessage {
        NewMessage {
            session_id: session.into(),
            platform_id: "webchat".into(),
            sender_id: "u".into(),
            sender_name: "u".into(),
            content: serde_json::json!({"type": "user", "message": [{"type": "plain", "text": text}]}),
            llm_checkpoint_id: None,
        }
    }

    #[tokio::test]
    async fn concurrent_writes_are_grouped_and_a_bad_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SqliteStore::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap());
        assert!(store.create_session(&session("a")).await.unwrap());
        assert!(!store.create_session(&session("a")).await.unwrap(), "a second create reports the session existed");
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = store.clone();
            // Every tenth write names a session that does not exist (a foreign-key failure).
            let target = if i % 10 == 9 { "missing".to_string() } else { "a".to_string() };
            tasks.push(tokio::spawn(async move { (i, s.insert_message(&message(&target, &format!("m{i}"))).await) }));
        }
        let mut failures = 0;
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                (i, Ok((id, _))) => {
                    ok += 1;
                    let m = store.get_message(id).await.unwrap().unwrap();
                    assert_eq!(m.content["message"][0]["text"], format!("m{i}"), "id {id} belongs to write {i}");
                }
                (i, Err(_)) => {
                    assert_eq!(i % 10, 9, "only the bad writes fail");
                    failures += 1;
                }
            }
        }
        assert_eq!((ok, failures), (45, 5));
        assert_eq!(store.list_messages("a", 0, 100, false).await.unwrap().total, 45);
        let s = store.get_session("a").await.unwrap().unwrap();
        assert!(s.updated_at >= s.created_at, "the trigger touched the session");
    }

    #[tokio::test]
    async fn close_applies_what_was_queued_refuses_what_comes_after_and_the_data_stays() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Arc::new(SqliteStore::connect(&url).await.unwrap());
        assert!(store.create_session(&session("a")).await.unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.insert_message(&message("a", &format!("m{i}"))).await })
            })
            .collect();
        // Every write accepted before `close` is answered with success.
        let closing = {
            let s = store.clone();
            tokio::spawn(async move { s.close().await })
        };
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        closing.await.unwrap();
        assert!(store.insert_message(&message("a", "late")).await.is_err(), "a write after close is refused");
        drop(store);
        let again = SqliteStore::connect(&url).await.unwrap();
        assert_eq!(again.list_messages("a", 0, 500, false).await.unwrap().total, ok, "every answered write is stored");
        assert!(ok > 0);
    }
}
