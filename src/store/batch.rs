//! Group commit for the hot write path (sessions, messages, run logs).
//!
//! sqlx runs each SQLite connection on its own thread, so every statement, `BEGIN` and `COMMIT`
//! is a cross-thread round trip; at one chat turn = four small write transactions, the writer
//! spent nearly all its time on hand-offs (~300 turns/s). Here one task owns the single writer
//! connection: it takes every write that is waiting, applies them in one transaction with one
//! multi-row statement per table, and answers each caller. Under load a batch holds many turns,
//! so the round trips are paid per batch instead of per row; alone, a write costs what it did.
//! If a batch fails (one bad row fails the statement), its writes are retried one by one so only
//! the bad one fails.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{mpsc, oneshot};

use super::{Micros, NewMessage, RunRecord, SessionRecord, StoreError, StoreResult, now_micros};

/// Most writes applied in one transaction (keeps statements far below SQLite's 32,766 variables).
const MAX_BATCH: usize = 128;
/// Writes waiting for the writer; callers wait for room beyond this.
pub const QUEUE: usize = 1024;

pub enum WriteOp {
    CreateSession(SessionRecord, oneshot::Sender<StoreResult<bool>>),
    InsertMessage(NewMessage, oneshot::Sender<StoreResult<(i64, Micros)>>),
    /// A message's new content (serialised), e.g. a reply saved while it streams.
    UpdateMessage(i64, String, oneshot::Sender<StoreResult<()>>),
    InsertRun(RunRecord, oneshot::Sender<StoreResult<()>>),
}

/// Runs until every sender is gone, or `closing` is cancelled and every write queued by then
/// was applied. `failed` tells whether the last batch failed.
pub async fn writer(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<WriteOp>,
    failed: Arc<AtomicBool>,
    closing: tokio_util::sync::CancellationToken,
) {
    let mut ops: Vec<WriteOp> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            op = rx.recv() => op,
            _ = closing.cancelled(), if !rx.is_closed() => {
                // No new writes; the queued ones are still received (then `None`).
                rx.close();
                continue;
            }
        };
        let Some(first) = first else { break };
        ops.push(first);
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        match apply(&pool, &ops).await {
            Ok(results) => {
                failed.store(false, Ordering::Relaxed);
                for (op, r) in ops.drain(..).zip(results) {
                    reply(op, Ok(r));
                }
            }
            Err(e) if ops.len() == 1 => {
                tracing::error!(error = %e, "database write failed");
                failed.store(true, Ordering::Relaxed);
                if let Some(op) = ops.pop() {
                    reply(op, Err(e));
                }
            }
            Err(_) => {
                // Isolate the failing write: one batch of one each.
                let mut any_ok = false;
                for op in std::mem::take(&mut ops) {
                    let r = apply(&pool, std::slice::from_ref(&op)).await.map(|mut v| v.remove(0));
                    any_ok |= r.is_ok();
                    reply(op, r);
                }
                failed.store(!any_ok, Ordering::Relaxed);
            }
        }
    }
}

/// What each write produced, in order.
pub enum Done {
    Created(bool),
    Message(i64, Micros),
    Updated,
    Run,
}

fn reply(op: WriteOp, r: StoreResult<Done>) {
    // A caller that went away no longer needs its answer.
    match (op, r) {
        (WriteOp::CreateSession(_, tx), Ok(Done::Created(b))) => drop(tx.send(Ok(b))),
        (WriteOp::InsertMessage(_, tx), Ok(Done::Message(id, at))) => drop(tx.send(Ok((id, at)))),
        (WriteOp::InsertRun(_, tx), Ok(Done::Run)) => drop(tx.send(Ok(()))),
        (WriteOp::UpdateMessage(_, _, tx), Ok(Done::Updated)) => drop(tx.send(Ok(()))),
        (WriteOp::UpdateMessage(_, _, tx), Err(e)) => drop(tx.send(Err(e))),
        (WriteOp::CreateSession(_, tx), Err(e)) => drop(tx.send(Err(e))),
        (WriteOp::InsertMessage(_, tx), Err(e)) => drop(tx.send(Err(e))),
        (WriteOp::InsertRun(_, tx), Err(e)) => drop(tx.send(Err(e))),
        (op, Ok(_)) => reply(op, Err(StoreError::Db(sqlx::Error::Protocol("mismatched batch result".into())))),
    }
}

fn values(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(","));
    vec![one; rows].join(",")
}

async fn apply(pool: &SqlitePool, ops: &[WriteOp]) -> StoreResult<Vec<Done>> {
    let kinds = [
        ops.iter().any(|o| matches!(o, WriteOp::CreateSession(..))),
        ops.iter().any(|o| matches!(o, WriteOp::InsertMessage(..))),
        ops.iter().any(|o| matches!(o, WriteOp::InsertRun(..))),
        ops.iter().any(|o| matches!(o, WriteOp::UpdateMessage(..))),
    ];
    let mut conn = pool.acquire().await?;
    // One statement is atomic on its own; several share one transaction, held by sqlx's guard
    // so that it is rolled back (and the write lock released) on any failure.
    if kinds.iter().filter(|k| **k).count() > 1 {
        use sqlx::Connection;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let result = apply_on(&mut tx, ops).await?;
        tx.commit().await?;
        return Ok(result);
    }
    apply_on(&mut conn, ops).await
}

async fn apply_on(tx: &mut sqlx::SqliteConnection, ops: &[WriteOp]) -> StoreResult<Vec<Done>> {
    let mut out: Vec<Option<Done>> = (0..ops.len()).map(|_| None).collect();

    // Sessions first: messages of this batch may belong to them.
    let sessions: Vec<(usize, &SessionRecord)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| if let WriteOp::CreateSession(s, _) = o { Some((i, s)) } else { None })
        .collect();
    if !sessions.is_empty() {
        let sql = format!(
            "INSERT OR IGNORE INTO sessions (session_id, platform_id, creator, display_name, is_group, profile_id, created_at, updated_at) VALUES {} RETURNING session_id",
            values(sessions.len(), 8)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (_, s) in &sessions {
            q = q
                .bind(&s.session_id)
                .bind(&s.platform_id)
                .bind(&s.creator)
                .bind(&s.display_name)
                .bind(i64::from(s.is_group))
                .bind(&s.profile_id)
                .bind(s.created_at)
                .bind(s.updated_at);
        }
        let created: HashSet<String> = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("session_id"))
            .collect::<Result<_, _>>()?;
        // The same id twice in one batch: only its first write created it.
        let mut claimed = HashSet::new();
        for (i, s) in sessions {
            let first = claimed.insert(s.session_id.as_str());
            out[i] = Some(Done::Created(first && created.contains(&s.session_id)));
        }
    }

    let msgs: Vec<(usize, &NewMessage)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| if let WriteOp::InsertMessage(m, _) = o { Some((i, m)) } else { None })
        .collect();
    if !msgs.is_empty() {
        let now = now_micros();
        let sql = format!(
            "INSERT INTO messages (session_id, platform_id, sender_id, sender_name, content, llm_checkpoint_id, created_at, updated_at) VALUES {} RETURNING id",
            values(msgs.len(), 8)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (_, m) in &msgs {
            q = q
                .bind(&m.session_id)
                .bind(&m.platform_id)
                .bind(&m.sender_id)
                .bind(&m.sender_name)
                .bind(serde_json::to_string(&m.content)?)
                .bind(&m.llm_checkpoint_id)
                .bind(now)
                .bind(now);
        }
        // One writer, one statement: the ids are consecutive in VALUES order (RETURNING itself
        // does not promise an order, so sort them). A trigger touches each session's updated_at.
        let mut ids: Vec<i64> =
            q.fetch_all(&mut *tx).await?.iter().map(|r| r.try_get::<i64, _>("id")).collect::<Result<_, _>>()?;
        ids.sort_unstable();
        if ids.len() != msgs.len() {
            return Err(StoreError::Db(sqlx::Error::Protocol("message ids missing".into())));
        }
        for ((i, _), id) in msgs.into_iter().zip(ids) {
            out[i] = Some(Done::Message(id, now));
        }
    }

    let runs: Vec<(usize, &RunRecord)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| if let WriteOp::InsertRun(r, _) = o { Some((i, r)) } else { None })
        .collect();
    if !runs.is_empty() {
        let sql = format!("INSERT OR REPLACE INTO {} VALUES {}", super::sqlite::RUN_COLUMNS, values(runs.len(), 9));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (_, r) in &runs {
            q = super::sqlite::bind_run(q, r);
        }
        q.execute(&mut *tx).await?;
        for (i, _) in runs {
            out[i] = Some(Done::Run);
        }
    }
    // Rare (a streaming reply saved once a second): one statement each, after the inserts.
    for (i, op) in ops.iter().enumerate() {
        if let WriteOp::UpdateMessage(id, content, _) = op {
            sqlx::query("UPDATE messages SET content = ?, updated_at = ? WHERE id = ?")
                .bind(content)
                .bind(now_micros())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            out[i] = Some(Done::Updated);
        }
    }
    out.into_iter().map(|d| d.ok_or_else(|| StoreError::Db(sqlx::Error::Protocol("unanswered write".into())))).collect()
}
