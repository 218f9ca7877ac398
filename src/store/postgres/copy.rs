//! `copy-db` for PostgreSQL: pages of a table in primary-key order out, rows with their ids in.

use sqlx::{AssertSqlSafe, Row};

use super::super::copy::{ChunkRow, SettingRow, VarRow};
use super::*;

impl PgStore {
    pub(super) async fn export(&self, table: Table, offset: i64, limit: i64) -> StoreResult<Rows> {
        let sql =
            AssertSqlSafe(format!("SELECT * FROM {} ORDER BY {} LIMIT $1 OFFSET $2", table.name(), table.order_by()));
        let rows = sqlx::query(sql).bind(limit).bind(offset).fetch_all(&self.pool).await?;
        Ok(match table {
            Table::Settings => Rows::Settings(
                rows.iter()
                    .map(|r| {
                        Ok(SettingRow {
                            key: r.try_get("key")?,
                            value: r.try_get("value")?,
                            updated_at: r.try_get("updated_at")?,
                        })
                    })
                    .collect::<StoreResult<_>>()?,
            ),
            Table::ApiKeys => Rows::ApiKeys(rows.iter().map(api_key_from_row).collect::<StoreResult<_>>()?),
            Table::Sessions => Rows::Sessions(rows.iter().map(session_from_row).collect::<StoreResult<_>>()?),
            Table::Messages => Rows::Messages(rows.iter().map(message_from_row).collect::<StoreResult<_>>()?),
            Table::Runs => Rows::Runs(rows.iter().map(run_from_row).collect::<StoreResult<_>>()?),
            Table::Attachments => Rows::Attachments(rows.iter().map(attachment_from_row).collect::<StoreResult<_>>()?),
            Table::AttachmentChunks => Rows::Chunks(
                rows.iter()
                    .map(|r| {
                        Ok(ChunkRow {
                            attachment_id: r.try_get("attachment_id")?,
                            idx: r.try_get("idx")?,
                            data: r.try_get("data")?,
                        })
                    })
                    .collect::<StoreResult<_>>()?,
            ),
            Table::SessionVars => Rows::SessionVars(
                rows.iter()
                    .map(|r| {
                        Ok(VarRow {
                            session_id: r.try_get("session_id")?,
                            key: r.try_get("key")?,
                            value: r.try_get("value")?,
                            updated_at: r.try_get("updated_at")?,
                        })
                    })
                    .collect::<StoreResult<_>>()?,
            ),
            Table::KeyUsage => {
                Rows::KeyUsage(rows.iter().map(crate::store::usage::from_row).collect::<StoreResult<_>>()?)
            }
            Table::AuditEvents => {
                Rows::AuditEvents(rows.iter().map(crate::store::audit::from_row).collect::<StoreResult<_>>()?)
            }
        })
    }

    pub(super) async fn import(&self, rows: &Rows) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        match rows {
            Rows::Settings(v) => {
                for s in v {
                    sqlx::query(
                        "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    )
                    .bind(&s.key)
                    .bind(&s.value)
                    .bind(s.updated_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Rows::ApiKeys(v) => {
                for k in v {
                    let sql = AssertSqlSafe(format!("{INSERT_API_KEY} ON CONFLICT (key_id) DO NOTHING"));
                    bind_api_key(sqlx::query(sql), k, serde_json::to_string(&k.scopes)?).execute(&mut *tx).await?;
                }
            }
            Rows::Sessions(v) => {
                for s in v {
                    let sql = AssertSqlSafe(format!(
                        "{INSERT_SESSION} ON CONFLICT (session_id) DO UPDATE SET updated_at = excluded.updated_at"
                    ));
                    bind_session(sqlx::query(sql), s).execute(&mut *tx).await?;
                }
            }
            Rows::Messages(v) => {
                for m in v {
                    sqlx::query(
                        "INSERT INTO messages (id, session_id, platform_id, sender_id, sender_name, content, llm_checkpoint_id, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(m.id)
                    .bind(&m.session_id)
                    .bind(&m.platform_id)
                    .bind(&m.sender_id)
                    .bind(&m.sender_name)
                    .bind(serde_json::to_string(&m.content)?)
                    .bind(&m.llm_checkpoint_id)
                    .bind(m.created_at)
                    .bind(m.updated_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Rows::Runs(v) => {
                for r in v {
                    bind_run(sqlx::query(UPSERT_RUN), r).execute(&mut *tx).await?;
                }
            }
            Rows::Attachments(v) => {
                for a in v {
                    let sql = AssertSqlSafe(format!("{INSERT_ATTACHMENT} ON CONFLICT (attachment_id) DO NOTHING"));
                    bind_attachment(sqlx::query(sql), a).execute(&mut *tx).await?;
                }
            }
            Rows::Chunks(v) => {
                for c in v {
                    sqlx::query(
                        "INSERT INTO attachment_chunks (attachment_id, idx, data) VALUES ($1, $2, $3)
                         ON CONFLICT (attachment_id, idx) DO UPDATE SET data = excluded.data",
                    )
                    .bind(&c.attachment_id)
                    .bind(c.idx)
                    .bind(&c.data)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Rows::SessionVars(v) => {
                for s in v {
                    sqlx::query(
                        "INSERT INTO session_vars (session_id, key, value, updated_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    )
                    .bind(&s.session_id)
                    .bind(&s.key)
                    .bind(&s.value)
                    .bind(s.updated_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Rows::KeyUsage(v) => {
                for r in v {
                    crate::store::usage::add::<sqlx::Postgres>(r).build().execute(&mut *tx).await?;
                }
            }
            Rows::AuditEvents(v) => {
                for chunk in v.chunks(crate::store::audit::ROWS_PER_INSERT) {
                    let rows = chunk.iter().map(|r| (Some(r.id), &r.event));
                    crate::store::audit::insert::<sqlx::Postgres>(rows)?.build().execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
