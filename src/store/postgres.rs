//! PostgreSQL backend: a pool of connections shared by every caller, for several instances on
//! one database. Migrations (`migrations/postgres/`) are embedded and applied at connect, like
//! SQLite's; sqlx keeps its migration table and takes an advisory lock while migrating, so
//! instances starting together do not race.
//!
//! No group commit here: PostgreSQL handles concurrent writers itself, so each write is one
//! statement (a message insert bumps its session in the same statement, through a CTE).

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use super::*;
use crate::store::{audit, usage};

mod copy;

/// Connections per instance unless `database_max_connections` says otherwise.
pub const DEFAULT_POOL: u32 = 16;

/// The embedded migrations, in order. Never edit one that has shipped.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
    (2, "governance", include_str!("../../migrations/postgres/0002_governance.sql")),
    (3, "audit log", include_str!("../../migrations/postgres/0003_audit.sql")),
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

pub struct PgStore {
    pool: PgPool,
    /// Set when the last write failed, cleared by the next one that succeeds.
    write_failed: AtomicBool,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        migrator().run(&pool).await?;
        Ok(Self { pool, write_failed: AtomicBool::new(false) })
    }

    /// Records whether a write worked (for [`Store::writes_failing`]).
    /// [`Store::insert_first_message`]: one transaction, one commit.
    async fn insert_first_message_in_tx(&self, session: &SessionRecord, m: &NewMessage) -> StoreResult<(i64, Micros)> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let sql = AssertSqlSafe(format!("{INSERT_SESSION} ON CONFLICT (session_id) DO NOTHING"));
        bind_session(sqlx::query(sql), session).execute(&mut *tx).await?;
        let id: i64 = insert_message(m, now)?.fetch_one(&mut *tx).await?.try_get("id")?;
        tx.commit().await?;
        Ok((id, now))
    }

    /// [`Store::save_reply`]: one transaction, one commit.
    async fn save_reply_in_tx(&self, reply: &ReplySave) -> StoreResult<(i64, Micros)> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let (id, at) = match &reply.message {
            ReplyMessage::Insert(m) => (insert_message(m, now)?.fetch_one(&mut *tx).await?.try_get("id")?, now),
            ReplyMessage::Update { id, created_at, content } => {
                sqlx::query("UPDATE messages SET content = $1, updated_at = $2 WHERE id = $3")
                    .bind(serde_json::to_string(content)?)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                (*id, *created_at)
            }
        };
        if let Some(run) = &reply.run {
            let rec = run.complete(id, at)?;
            bind_run(sqlx::query(UPSERT_RUN), &rec).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok((id, at))
    }

    fn track<T>(&self, r: Result<T, sqlx::Error>) -> StoreResult<T> {
        self.write_failed.store(r.is_err(), Ordering::Relaxed);
        Ok(r?)
    }
}

fn api_key_from_row(r: &PgRow) -> StoreResult<ApiKeyRecord> {
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

fn session_from_row(r: &PgRow) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        session_id: r.try_get("session_id")?,
        platform_id: r.try_get("platform_id")?,
        creator: r.try_get("creator")?,
        display_name: r.try_get("display_name")?,
        is_group: r.try_get("is_group")?,
        profile_id: r.try_get("profile_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn message_from_row(r: &PgRow) -> StoreResult<MessageRecord> {
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

fn run_from_row(r: &PgRow) -> StoreResult<RunRecord> {
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

fn attachment_from_row(r: &PgRow) -> StoreResult<AttachmentRecord> {
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

const SESSION_COLS: &str =
    "session_id, platform_id, creator, display_name, is_group, profile_id, created_at, updated_at";

const INSERT_API_KEY: &str = "INSERT INTO api_keys (key_id, name, key_hash, key_prefix, scopes, created_by, created_at, updated_at, last_used_at, expires_at, revoked_at, username, limits)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

const UPSERT_RUN: &str =
    "INSERT INTO runs (run_id, session_id, username, status, events, created_at, finished_at, message_id, instance_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (run_id) DO UPDATE SET session_id = excluded.session_id, username = excluded.username,
       status = excluded.status, events = excluded.events, created_at = excluded.created_at,
       finished_at = excluded.finished_at, message_id = excluded.message_id, instance_id = excluded.instance_id";

const INSERT_ATTACHMENT: &str = "INSERT INTO attachments (attachment_id, stored_name, original_name, kind, mime_type, size, sha256, created_at, owner)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

const INSERT_SESSION: &str = "INSERT INTO sessions (session_id, platform_id, creator, display_name, is_group, profile_id, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

fn bind_session<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    s: &'q SessionRecord,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&s.session_id)
        .bind(&s.platform_id)
        .bind(&s.creator)
        .bind(&s.display_name)
        .bind(s.is_group)
        .bind(&s.profile_id)
        .bind(s.created_at)
        .bind(s.updated_at)
}

/// Inserts a message and moves its session's `updated_at` in the same statement (SQLite does it
/// with a trigger); the row holds its `id`.
fn insert_message(
    m: &NewMessage,
    now: Micros,
) -> StoreResult<sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>> {
    Ok(sqlx::query(
        "WITH m AS (
            INSERT INTO messages (session_id, platform_id, sender_id, sender_name, content, llm_checkpoint_id, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id
         ), touched AS (
            UPDATE sessions SET updated_at = $7 WHERE session_id = $1
         )
         SELECT id FROM m",
    )
    .bind(&m.session_id)
    .bind(&m.platform_id)
    .bind(&m.sender_id)
    .bind(&m.sender_name)
    .bind(serde_json::to_string(&m.content)?)
    .bind(&m.llm_checkpoint_id)
    .bind(now))
}

fn bind_run<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    r: &'q RunRecord,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
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

fn bind_api_key<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    k: &'q ApiKeyRecord,
    scopes: String,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
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

fn bind_attachment<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    a: &'q AttachmentRecord,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
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

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn init_setting(&self, key: &str, value: &str) -> StoreResult<String> {
        // Instances starting together: the first insert wins and every one reads the winner.
        let r = sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .bind(now_micros())
        .execute(&self.pool)
        .await;
        self.track(r)?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_one(&self.pool).await?;
        Ok(row.try_get("value")?)
    }

    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let r = sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(now_micros())
        .execute(&self.pool)
        .await;
        self.track(r)?;
        Ok(())
    }

    async fn insert_api_key(&self, k: &ApiKeyRecord) -> StoreResult<()> {
        let scopes = serde_json::to_string(&k.scopes)?;
        let r = bind_api_key(sqlx::query(INSERT_API_KEY), k, scopes).execute(&self.pool).await;
        self.track(r)?;
        Ok(())
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at DESC, key_id").fetch_all(&self.pool).await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn find_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let row =
            sqlx::query("SELECT * FROM api_keys WHERE key_hash = $1").bind(key_hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn get_api_key(&self, key_id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let row =
            sqlx::query("SELECT * FROM api_keys WHERE key_id = $1").bind(key_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn revoke_api_key(&self, key_id: &str, now: Micros) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = $1, updated_at = $1 WHERE key_id = $2")
            .bind(now)
            .bind(key_id)
            .execute(&self.pool)
            .await;
        Ok(self.track(r)?.rows_affected() > 0)
    }

    async fn delete_api_key(&self, key_id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM api_keys WHERE key_id = $1").bind(key_id).execute(&self.pool).await;
        Ok(self.track(r)?.rows_affected() > 0)
    }

    async fn touch_api_keys(&self, touches: &[(String, Micros)]) -> StoreResult<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = touches.iter().map(|(k, _)| k.as_str()).collect();
        let ats: Vec<i64> = touches.iter().map(|(_, a)| *a).collect();
        let r = sqlx::query(
            "UPDATE api_keys AS a SET last_used_at = GREATEST(COALESCE(a.last_used_at, 0), t.at)
             FROM UNNEST($1::text[], $2::bigint[]) AS t(id, at) WHERE a.key_id = t.id",
        )
        .bind(&ids)
        .bind(&ats)
        .execute(&self.pool)
        .await;
        self.track(r)?;
        Ok(())
    }

    async fn update_api_key(&self, key_id: &str, u: &KeyUpdate, now: Micros) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE api_keys SET name = COALESCE($1, name), limits = CASE WHEN $2 THEN $3 ELSE limits END,
               updated_at = $4 WHERE key_id = $5",
        )
        .bind(&u.name)
        .bind(u.limits.is_some())
        .bind(u.limits.and_then(|l| l.to_column()))
        .bind(now)
        .bind(key_id)
        .execute(&self.pool)
        .await;
        Ok(self.track(r)?.rows_affected() > 0)
    }

    async fn add_usage(&self, rows: &[UsageRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for row in rows {
            usage::add::<sqlx::Postgres>(row).build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn key_usage(&self, key_id: &str, from_day: &str, to_day: &str) -> StoreResult<Vec<UsageRow>> {
        let rows = usage::range::<sqlx::Postgres>(key_id, from_day, to_day).build().fetch_all(&self.pool).await?;
        rows.iter().map(usage::from_row).collect()
    }

    async fn get_session(&self, session_id: &str) -> StoreResult<Option<SessionRecord>> {
        let sql = AssertSqlSafe(format!("SELECT {SESSION_COLS} FROM sessions WHERE session_id = $1"));
        let row = sqlx::query(sql).bind(session_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn create_session(&self, s: &SessionRecord) -> StoreResult<bool> {
        let sql = AssertSqlSafe(format!("{INSERT_SESSION} ON CONFLICT (session_id) DO NOTHING"));
        let r = bind_session(sqlx::query(sql), s).execute(&self.pool).await;
        Ok(self.track(r)?.rows_affected() > 0)
    }

    async fn claim_session(&self, session_id: &str, creator: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE sessions SET creator = $1 WHERE session_id = $2 AND creator = ''")
            .bind(creator)
            .bind(session_id)
            .execute(&self.pool)
            .await;
        Ok(self.track(r)?.rows_affected() > 0)
    }

    async fn set_session_profile(&self, session_id: &str, profile_id: Option<&str>) -> StoreResult<()> {
        let r = sqlx::query("UPDATE sessions SET profile_id = $1 WHERE session_id = $2")
            .bind(profile_id)
            .bind(session_id)
            .execute(&self.pool)
            .await;
        self.track(r)?;
        Ok(())
    }

    async fn set_session_display_name(&self, session_id: &str, name: Option<&str>) -> StoreResult<()> {
        let r = sqlx::query(
            "UPDATE sessions SET display_name = COALESCE($1, display_name), updated_at = $2 WHERE session_id = $3",
        )
        .bind(name)
        .bind(now_micros())
        .bind(session_id)
        .execute(&self.pool)
        .await;
        self.track(r)?;
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
            "SELECT {SESSION_COLS} FROM sessions WHERE creator = $1 AND ($2::text IS NULL OR platform_id = $2)
             ORDER BY updated_at DESC, session_id LIMIT $3 OFFSET $4"
        ));
        let rows =
            sqlx::query(sql).bind(creator).bind(platform_id).bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let total: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM sessions WHERE creator = $1 AND ($2::text IS NULL OR platform_id = $2)",
        )
        .bind(creator)
        .bind(platform_id)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(Page { items: rows.iter().map(session_from_row).collect::<StoreResult<_>>()?, total })
    }

    async fn delete_session(&self, session_id: &str) -> StoreResult<bool> {
        let r: Result<bool, sqlx::Error> = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM messages WHERE session_id = $1").bind(session_id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM runs WHERE session_id = $1").bind(session_id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM session_vars WHERE session_id = $1").bind(session_id).execute(&mut *tx).await?;
            let r =
                sqlx::query("DELETE FROM sessions WHERE session_id = $1").bind(session_id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(r.rows_affected() > 0)
        }
        .await;
        self.track(r)
    }

    async fn insert_message(&self, m: &NewMessage) -> StoreResult<(i64, Micros)> {
        let now = now_micros();
        let r = insert_message(m, now)?.fetch_one(&self.pool).await;
        let id: i64 = self.track(r)?.try_get("id")?;
        Ok((id, now))
    }

    async fn insert_first_message(&self, session: &SessionRecord, m: &NewMessage) -> StoreResult<(i64, Micros)> {
        let r = self.insert_first_message_in_tx(session, m).await;
        self.write_failed.store(matches!(r, Err(StoreError::Db(_))), Ordering::Relaxed);
        r
    }

    async fn update_message(&self, id: i64, content: &Value) -> StoreResult<()> {
        let r = sqlx::query("UPDATE messages SET content = $1, updated_at = $2 WHERE id = $3")
            .bind(serde_json::to_string(content)?)
            .bind(now_micros())
            .bind(id)
            .execute(&self.pool)
            .await;
        self.track(r)?;
        Ok(())
    }

    async fn rewrite_message(&self, id: i64, content: &Value, checkpoint: &str) -> StoreResult<()> {
        let r = sqlx::query("UPDATE messages SET content = $1, llm_checkpoint_id = $2, updated_at = $3 WHERE id = $4")
            .bind(serde_json::to_string(content)?)
            .bind(checkpoint)
            .bind(now_micros())
            .bind(id)
            .execute(&self.pool)
            .await;
        self.track(r)?;
        Ok(())
    }

    async fn delete_messages_after(&self, session_id: &str, id: i64) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM messages WHERE session_id = $1 AND id > $2")
            .bind(session_id)
            .bind(id)
            .execute(&self.pool)
            .await;
        Ok(self.track(r)?.rows_affected())
    }

    async fn get_message(&self, id: i64) -> StoreResult<Option<MessageRecord>> {
        let row = sqlx::query("SELECT * FROM messages WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
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
            "SELECT * FROM messages WHERE session_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
        } else {
            "SELECT * FROM messages WHERE session_id = $1 ORDER BY id ASC LIMIT $2 OFFSET $3"
        };
        let rows = sqlx::query(sql).bind(session_id).bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM messages WHERE session_id = $1")
            .bind(session_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(Page { items: rows.iter().map(message_from_row).collect::<StoreResult<_>>()?, total })
    }

    async fn recent_messages(&self, session_id: &str, limit: i64) -> StoreResult<Vec<MessageRecord>> {
        let rows = sqlx::query("SELECT * FROM messages WHERE session_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(session_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows.iter().map(message_from_row).collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn insert_run(&self, r: &RunRecord) -> StoreResult<()> {
        let res = bind_run(sqlx::query(UPSERT_RUN), r).execute(&self.pool).await;
        self.track(res)?;
        Ok(())
    }

    async fn save_reply(&self, reply: ReplySave) -> StoreResult<(i64, Micros)> {
        let r = self.save_reply_in_tx(&reply).await;
        self.write_failed.store(matches!(r, Err(StoreError::Db(_))), Ordering::Relaxed);
        r
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE run_id = $1").bind(run_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn purge_runs(&self, finished_before: Micros) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM runs WHERE finished_at < $1 AND status <> 'running'")
            .bind(finished_before)
            .execute(&self.pool)
            .await;
        Ok(self.track(r)?.rows_affected())
    }

    async fn in_flight(&self) -> StoreResult<(Vec<RunRecord>, Vec<MessageRecord>)> {
        let runs = sqlx::query("SELECT * FROM runs WHERE status = 'running'").fetch_all(&self.pool).await?;
        let msgs = sqlx::query("SELECT * FROM messages WHERE (content::jsonb ->> 'streaming') = 'true'")
            .fetch_all(&self.pool)
            .await?;
        Ok((
            runs.iter().map(run_from_row).collect::<StoreResult<_>>()?,
            msgs.iter().map(message_from_row).collect::<StoreResult<_>>()?,
        ))
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn writes_failing(&self) -> bool {
        self.write_failed.load(Ordering::Relaxed)
    }

    async fn probe_write(&self) -> StoreResult<()> {
        self.put_setting("health_probe", &now_micros().to_string()).await
    }

    async fn insert_attachment(&self, a: &AttachmentRecord) -> StoreResult<()> {
        let r = bind_attachment(sqlx::query(INSERT_ATTACHMENT), a).execute(&self.pool).await;
        self.track(r)?;
        Ok(())
    }

    async fn get_attachment(&self, attachment_id: &str) -> StoreResult<Option<AttachmentRecord>> {
        let row = sqlx::query("SELECT * FROM attachments WHERE attachment_id = $1")
            .bind(attachment_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(attachment_from_row).transpose()
    }

    async fn get_attachment_by_stored_name(&self, stored_name: &str) -> StoreResult<Option<AttachmentRecord>> {
        let row = sqlx::query("SELECT * FROM attachments WHERE stored_name = $1")
            .bind(stored_name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(attachment_from_row).transpose()
    }

    async fn delete_attachment(&self, attachment_id: &str) -> StoreResult<()> {
        let r = sqlx::query("DELETE FROM attachments WHERE attachment_id = $1")
            .bind(attachment_id)
            .execute(&self.pool)
            .await;
        self.track(r)?;
        Ok(())
    }

    async fn put_chunk(&self, attachment_id: &str, idx: i32, data: &[u8]) -> StoreResult<()> {
        let r = sqlx::query(
            "INSERT INTO attachment_chunks (attachment_id, idx, data) VALUES ($1, $2, $3)
             ON CONFLICT (attachment_id, idx) DO UPDATE SET data = excluded.data",
        )
        .bind(attachment_id)
        .bind(idx)
        .bind(data)
        .execute(&self.pool)
        .await;
        self.track(r)?;
        Ok(())
    }

    async fn get_chunk(&self, attachment_id: &str, idx: i32) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT data FROM attachment_chunks WHERE attachment_id = $1 AND idx = $2")
            .bind(attachment_id)
            .bind(idx)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("data")).transpose()?)
    }

    async fn delete_chunks(&self, attachment_id: &str) -> StoreResult<()> {
        let r = sqlx::query("DELETE FROM attachment_chunks WHERE attachment_id = $1")
            .bind(attachment_id)
            .execute(&self.pool)
            .await;
        self.track(r)?;
        Ok(())
    }

    async fn count_rows(&self, table: Table) -> StoreResult<i64> {
        let sql = AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {}", table.name()));
        Ok(sqlx::query(sql).fetch_one(&self.pool).await?.try_get("n")?)
    }

    async fn export_rows(&self, table: Table, offset: i64, limit: i64) -> StoreResult<Rows> {
        self.export(table, offset, limit).await
    }

    async fn import_rows(&self, rows: &Rows) -> StoreResult<()> {
        self.import(rows).await
    }

    async fn finish_import(&self) -> StoreResult<()> {
        for table in ["messages", "audit_events"] {
            let sql = AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            ));
            sqlx::query(sql).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn insert_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in events.chunks(audit::ROWS_PER_INSERT) {
            audit::insert::<sqlx::Postgres>(chunk.iter().map(|e| (None, e)))?.build().execute(&mut *tx).await?;
        }
        let r = tx.commit().await;
        self.track(r)?;
        Ok(())
    }

    async fn list_audit_events(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<AuditRecord>> {
        let rows = audit::list::<sqlx::Postgres>(before, limit).build().fetch_all(&self.pool).await?;
        rows.iter().map(audit::from_row).collect()
    }

    async fn purge_audit_events(&self, before: Micros) -> StoreResult<u64> {
        let r = audit::purge::<sqlx::Postgres>(before).build().execute(&self.pool).await;
        Ok(self.track(r)?.rows_affected())
    }

    async fn set_session_var(&self, session_id: &str, key: &str, value: &str) -> StoreResult<()> {
        let r = sqlx::query(
            "INSERT INTO session_vars (session_id, key, value, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(session_id)
        .bind(key)
        .bind(value)
        .bind(now_micros())
        .execute(&self.pool)
        .await;
        self.track(r)?;
        Ok(())
    }

    async fn session_vars(&self, session_id: &str) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT key, value FROM session_vars WHERE session_id = $1 ORDER BY key")
            .bind(session_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("key")?, r.try_get("value")?))).collect()
    }

    async fn delete_session_vars(&self, session_id: &str) -> StoreResult<u64> {
        let r =
            sqlx::query("DELETE FROM session_vars WHERE session_id = $1").bind(session_id).execute(&self.pool).await;
        Ok(self.track(r)?.rows_affected())
    }
}
