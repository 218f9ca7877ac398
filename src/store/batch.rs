//! Group commit for the hot write path (sessions, messages, run logs), on a thread of its own.
//!
//! One thread owns the single write connection for these writes (a `rusqlite` connection to
//! the same file): it takes every write that is waiting, applies them in one transaction, and
//! answers each caller. Nothing crosses a thread per statement: sqlx runs each SQLite connection
//! on a worker thread and hands every statement (and `BEGIN`, `COMMIT`) over to it, which made a
//! chat turn's four writes cost ~12 context switches on that thread alone and as many wake-ups
//! of the runtime (docs/performance.md). Here a write costs one wake-up of this thread and one of
//! the caller, however many statements it runs; under load a batch holds many turns, so even
//! those are paid per batch. If a batch fails (one bad row fails the transaction), its writes
//! are retried one by one so only the bad one fails.
//!
//! The store's other writes (keys, settings, renames…) are rare and go through sqlx's own write
//! connection; the two take SQLite's write lock in turn (WAL allows one writer at a time), and
//! this connection's busy handler waits for the other in steps from 50 µs doubling to 20 ms.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    Micros, NewMessage, ReplyMessage, ReplySave, RunRecord, SessionRecord, StoreError, StoreResult, now_micros,
};

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 128;
/// Writes waiting for the writer; callers wait for room beyond this.
pub const QUEUE: usize = 1024;
/// How long a write waits for the other write connection before it fails as busy.
const BUSY_FOR: Duration = Duration::from_secs(10);
const BUSY_STEP: Duration = Duration::from_micros(50);
const BUSY_STEP_MAX: Duration = Duration::from_millis(20);

pub enum WriteOp {
    CreateSession(SessionRecord, oneshot::Sender<StoreResult<bool>>),
    /// A message, and first its session when it is new (created in the same transaction).
    InsertMessage(NewMessage, Option<SessionRecord>, oneshot::Sender<StoreResult<(i64, Micros)>>),
    /// A message's new content (serialised), e.g. a reply saved while it streams.
    UpdateMessage(i64, String, oneshot::Sender<StoreResult<()>>),
    InsertRun(RunRecord, oneshot::Sender<StoreResult<()>>),
    /// A reply and its run log (one write; see [`ReplySave`]).
    SaveReply(ReplySave, oneshot::Sender<StoreResult<(i64, Micros)>>),
    /// Sent by `Store::close`: the writes queued before it are applied, later ones refused.
    Close,
}

/// Opens the writer's connection to the database at `path` (already migrated) and starts its
/// thread. The thread runs until every sender is gone or a [`WriteOp::Close`] arrived and every
/// write queued before it was applied; the returned receiver resolves then. `failed` tells
/// whether the last batch failed; `written` is notified after every batch that committed (the
/// WAL checkpointer waits for it).
pub fn start(
    path: &Path,
    pragmas: &[(&str, &str)],
    rx: mpsc::Receiver<WriteOp>,
    failed: Arc<AtomicBool>,
    written: Arc<Notify>,
) -> StoreResult<oneshot::Receiver<()>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sqlite_error)?;
    for (name, value) in pragmas {
        conn.pragma_update(None, name, value).map_err(sqlite_error)?;
    }
    conn.busy_handler(Some(wait_busy)).map_err(sqlite_error)?;
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || {
        run(conn, rx, &failed, &written);
        drop(done);
    })?;
    Ok(finished)
}

/// SQLite's busy handler: before the `n`th retry of a statement that found the database locked,
/// sleeps 50 µs doubling up to 20 ms (SQLite's own waits start at 1 ms, far longer than the other
/// connection's rare writes hold the lock; a lock held long, e.g. while a full disk fails every
/// write, is then polled 50 times a second, not 20,000), and gives up after 10 s in all.
fn wait_busy(n: i32) -> bool {
    busy_step(n).map(std::thread::sleep).is_some()
}

/// The sleep before the `n`th retry, or None once [`BUSY_FOR`] has been spent.
fn busy_step(n: i32) -> Option<Duration> {
    let step = |i: i32| BUSY_STEP.saturating_mul(1 << i.clamp(0, 9)).min(BUSY_STEP_MAX);
    let waited: Duration = (0..n.max(0)).map(step).sum();
    (waited < BUSY_FOR).then(|| step(n))
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<WriteOp>, failed: &AtomicBool, written: &Notify) {
    let mut ops: Vec<WriteOp> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        take(&mut rx, first, &mut ops);
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => take(&mut rx, op, &mut ops),
                Err(_) => break,
            }
        }
        if ops.is_empty() {
            continue;
        }
        match apply(&mut conn, &ops) {
            Ok(results) => {
                failed.store(false, Ordering::Relaxed);
                written.notify_one();
                for (op, r) in ops.drain(..).zip(results) {
                    reply(op, Ok(r));
                }
            }
            Err(e) if ops.len() == 1 => {
                tracing::error!(error = %e, "database write failed");
                failed.store(true, Ordering::Relaxed);
                if let Some(op) = ops.pop() {
                    reply(op, Err(sqlite_error(e)));
                }
            }
            Err(_) => {
                // Isolate the failing write: one batch of one each.
                let mut any_ok = false;
                for op in std::mem::take(&mut ops) {
                    let r = apply(&mut conn, std::slice::from_ref(&op)).map(|mut v| v.remove(0));
                    any_ok |= r.is_ok();
                    reply(op, r.map_err(sqlite_error));
                }
                failed.store(!any_ok, Ordering::Relaxed);
                if any_ok {
                    written.notify_one();
                }
            }
        }
    }
}

/// Queues `op` for the batch, or on [`WriteOp::Close`] refuses further writes (those already
/// queued are still received).
fn take(rx: &mut mpsc::Receiver<WriteOp>, op: WriteOp, ops: &mut Vec<WriteOp>) {
    match op {
        WriteOp::Close => rx.close(),
        op => ops.push(op),
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
        (WriteOp::InsertMessage(_, _, tx), Ok(Done::Message(id, at))) => drop(tx.send(Ok((id, at)))),
        (WriteOp::InsertRun(_, tx), Ok(Done::Run)) => drop(tx.send(Ok(()))),
        (WriteOp::SaveReply(_, tx), Ok(Done::Message(id, at))) => drop(tx.send(Ok((id, at)))),
        (WriteOp::SaveReply(_, tx), Err(e)) => drop(tx.send(Err(e))),
        (WriteOp::UpdateMessage(_, _, tx), Ok(Done::Updated)) => drop(tx.send(Ok(()))),
        (WriteOp::UpdateMessage(_, _, tx), Err(e)) => drop(tx.send(Err(e))),
        (WriteOp::CreateSession(_, tx), Err(e)) => drop(tx.send(Err(e))),
        (WriteOp::InsertMessage(_, _, tx), Err(e)) => drop(tx.send(Err(e))),
        (WriteOp::InsertRun(_, tx), Err(e)) => drop(tx.send(Err(e))),
        (WriteOp::Close, _) => {}
        (op, Ok(_)) => reply(op, Err(StoreError::Db(sqlx::Error::Protocol("mismatched batch result".into())))),
    }
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(e)
}

/// Applies `ops` in order in one transaction.
fn apply(conn: &mut Connection, ops: &[WriteOp]) -> rusqlite::Result<Vec<Done>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_micros();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        out.push(match op {
            WriteOp::CreateSession(s, _) => Done::Created(create_session(&tx, s)?),
            WriteOp::InsertMessage(m, session, _) => {
                if let Some(s) = session {
                    create_session(&tx, s)?;
                }
                let (id, at) = insert_message(&tx, m, now)?;
                Done::Message(id, at)
            }
            WriteOp::InsertRun(r, _) => {
                insert_run(&tx, r)?;
                Done::Run
            }
            WriteOp::UpdateMessage(id, content, _) => {
                update_message(&tx, *id, content, now)?;
                Done::Updated
            }
            WriteOp::SaveReply(r, _) => {
                let (id, at) = match &r.message {
                    ReplyMessage::Insert(m) => insert_message(&tx, m, now)?,
                    ReplyMessage::Update { id, created_at, content } => {
                        update_message(&tx, *id, &serde_json::to_string(content).map_err(conversion)?, now)?;
                        (*id, *created_at)
                    }
                };
                if let Some(run) = &r.run {
                    insert_run(&tx, &run.complete(id, at).map_err(conversion)?)?;
                }
                Done::Message(id, at)
            }
            WriteOp::Close => Done::Updated,
        });
    }
    tx.commit()?;
    Ok(out)
}

fn conversion(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Creates a session unless one with its id exists; true when created.
fn create_session(tx: &rusqlite::Transaction<'_>, s: &SessionRecord) -> rusqlite::Result<bool> {
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO sessions (session_id, platform_id, creator, display_name, is_group, profile_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    let n = st.execute(params![
        s.session_id,
        s.platform_id,
        s.creator,
        s.display_name,
        i64::from(s.is_group),
        s.profile_id,
        s.created_at,
        s.updated_at
    ])?;
    Ok(n == 1)
}

/// Inserts a message (a trigger touches its session's `updated_at`); returns its id and time.
fn insert_message(tx: &rusqlite::Transaction<'_>, m: &NewMessage, now: Micros) -> rusqlite::Result<(i64, Micros)> {
    let content = serde_json::to_string(&m.content).map_err(conversion)?;
    let mut st = tx.prepare_cached(
        "INSERT INTO messages (session_id, platform_id, sender_id, sender_name, content, llm_checkpoint_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    st.execute(params![
        m.session_id,
        m.platform_id,
        m.sender_id,
        m.sender_name,
        content,
        m.llm_checkpoint_id,
        now,
        now
    ])?;
    Ok((tx.last_insert_rowid(), now))
}

fn update_message(tx: &rusqlite::Transaction<'_>, id: i64, content: &str, now: Micros) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached("UPDATE messages SET content = ?, updated_at = ? WHERE id = ?")?;
    st.execute(params![content, now, id])?;
    Ok(())
}

fn insert_run(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(super::sqlite::INSERT_RUN)?;
    st.execute(params![
        r.run_id,
        r.session_id,
        r.username,
        r.status,
        r.events,
        r.created_at,
        r.finished_at,
        r.message_id,
        r.instance_id
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_waits_start_short_back_off_and_end_after_ten_seconds() {
        assert_eq!(busy_step(0), Some(Duration::from_micros(50)));
        assert_eq!(busy_step(1), Some(Duration::from_micros(100)));
        assert_eq!(busy_step(20), Some(BUSY_STEP_MAX));
        let steps: Vec<Duration> = (0..).map_while(busy_step).collect();
        let total: Duration = steps.iter().sum();
        assert!(total >= BUSY_FOR && total < BUSY_FOR + BUSY_STEP_MAX, "{total:?}");
        // A long-held lock is polled about 50 times a second, not 20,000.
        assert!(steps.len() < 520, "{}", steps.len());
    }
}
