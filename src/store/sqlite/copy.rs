//! `copy-db` for SQLite: pages of a table in primary-key order out, rows with their ids in.

use sqlx::{AssertSqlSafe, Row};

use super::super::copy::{ChunkRow, SettingRow, VarRow};
use super::*;

impl SqliteStore {
    pub(super) async fn export(&self, table: Table, offset: i64, limit: i64) -> StoreResult<Rows> {
        let sql =
            AssertSqlSafe(format!("SELECT * FROM {} ORDER BY {} LIMIT ? OFFSET ?", table.name(), table.order_by()));
        let rows = sqlx::query(sql).bind(limit).bind(offset).fetch_all(&self.read).await?;
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
        let mut tx = self.write.begin().await?;
        match rows {
            Rows::Settings(v) => {
                for s in v {
                    sqlx::query("INSERT OR REPLACE INTO settings (key, value, updated_at) VALUES (?, ?, ?)")
                        .bind(&s.key)
                        .bind(&s.value)
                        .bind(s.updated_at)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            Rows::ApiKeys(v) => {
                for k in v {
                    let sql = AssertSqlSafe(format!("INSERT OR IGNORE {INSERT_API_KEY}"));
                    bind_api_key(sqlx::query(sql), k, serde_json::to_string(&k.scopes)?).execute(&mut *tx).await?;
                }
            }
            Rows::Sessions(v) => {
                for s in v {
                    // An upsert, not a replace: replacing would cascade to the session's messages.
                    sqlx::query(
                        "INSERT INTO sessions (session_id, platform_id, creator, display_name, is_group, profile_id, created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET updated_at = excluded.updated_at",
                    )
                    .bind(&s.session_id)
                    .bind(&s.platform_id)
                    .bind(&s.creator)
                    .bind(&s.display_name)
                    .bind(i64::from(s.is_group))
                    .bind(&s.profile_id)
                    .bind(s.created_at)
                    .bind(s.updated_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Rows::Messages(v) => {
                for m in v {
                    sqlx::query(
                        "INSERT OR IGNORE INTO messages (id, session_id, platform_id, sender_id, sender_name, content, llm_checkpoint_id, created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    let sql = AssertSqlSafe(format!(
                        "INSERT OR REPLACE INTO {RUN_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    ));
                    bind_run(sqlx::query(sql), r).execute(&mut *tx).await?;
                }
            }
            Rows::Attachments(v) => {
                for a in v {
                    let sql = AssertSqlSafe(format!("INSERT OR IGNORE {INSERT_ATTACHMENT}"));
                    bind_attachment(sqlx::query(sql), a).execute(&mut *tx).await?;
                }
            }
            Rows::Chunks(v) => {
                for c in v {
                    sqlx::query("INSERT OR REPLACE INTO attachment_chunks (attachment_id, idx, data) VALUES (?, ?, ?)")
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
                        "INSERT OR REPLACE INTO session_vars (session_id, key, value, updated_at) VALUES (?, ?, ?, ?)",
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
                    crate::store::usage::add::<sqlx::Sqlite>(r).build().execute(&mut *tx).await?;
                }
            }
            Rows::AuditEvents(v) => {
                for chunk in v.chunks(crate::store::audit::ROWS_PER_INSERT) {
                    let rows = chunk.iter().map(|r| (Some(r.id), &r.event));
                    crate::store::audit::insert::<sqlx::Sqlite>(rows)?.build().execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
