//! The audit log: who logged in to the dashboard, who failed to, and who created, changed, revoked
//! or deleted an API key.
//!
//! Recording never waits and never fails the action it records: [`Audit::record`] puts the event
//! on a bounded queue and returns. A writer task takes everything queued once a second and writes
//! it in one transaction, so a flood (thousands of failed logins) costs at most [`QUEUE`] events
//! of memory and one write a second. Events that find the queue full are dropped and counted: a
//! warning is logged at most once a minute, and the next batch records how many were lost (an
//! `audit.dropped` event by actor `system`), so a gap in the log is visible in the log. Reading
//! ([`Audit::list`]) writes this instance's queue first, so a reader sees every event recorded
//! before its request (other instances' within a second). At shutdown [`Audit::close`] writes what
//! is queued. Old events are deleted after `[audit] retention_days` (at start and hourly).
//!
//! What is recorded is bounded and never secret: the actor (a dashboard username, `cli`, or the
//! username a failed login tried) and the target are cut to [`MAX_FIELD_CHARS`] characters with
//! control characters replaced; passwords and keys are never handed to this module.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{ApiKeyRecord, AuditEvent, AuditRecord, Store, StoreResult, now_micros};

/// Events waiting to be written, at most; more are dropped and counted.
pub const QUEUE: usize = 1024;
/// How often the writer writes what is queued.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often events past the retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// The least time between two warnings about dropped events.
const WARN_EVERY_MICROS: i64 = 60_000_000;
/// The longest actor or target kept (longer ones are cut).
pub const MAX_FIELD_CHARS: usize = 128;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A dashboard login succeeded.
    Login,
    /// A dashboard login was refused for a wrong username or password.
    LoginFailed,
    ApiKeyCreate,
    ApiKeyRevoke,
    ApiKeyDelete,
    /// A key's name, scopes, limits… changed.
    ApiKeyUpdate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::LoginFailed => "login_failed",
            Action::ApiKeyCreate => "api_key.create",
            Action::ApiKeyRevoke => "api_key.revoke",
            Action::ApiKeyDelete => "api_key.delete",
            Action::ApiKeyUpdate => "api_key.update",
        }
    }
}

/// The audit service (one per process, in the app state).
pub struct Audit {
    store: Arc<dyn Store>,
    tx: mpsc::Sender<AuditEvent>,
    /// The queue's other end, shared by the writer and whoever flushes; held while a batch is
    /// written, so batches are written one at a time and in order.
    rx: tokio::sync::Mutex<mpsc::Receiver<AuditEvent>>,
    /// Dropped since the last batch (recorded with it).
    dropped: AtomicU64,
    /// Dropped since start.
    dropped_total: AtomicU64,
    /// When the last warning about dropped events was logged (unix µs).
    last_warning: AtomicI64,
    retention_days: u32,
    closing: CancellationToken,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>, retention_days: u32) -> Self {
        Self::with_queue(store, retention_days, QUEUE)
    }

    /// With a queue of `capacity` events.
    pub fn with_queue(store: Arc<dyn Store>, retention_days: u32, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self {
            store,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            dropped: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            last_warning: AtomicI64::new(i64::MIN),
            retention_days,
            closing: CancellationToken::new(),
            writer: std::sync::Mutex::new(None),
        }
    }

    /// Records that `actor` did `action` to `target` from `ip` (`None` for the command line).
    /// Never waits: when the queue is full the event is dropped and counted.
    pub fn record(&self, actor: &str, action: Action, target: Option<&str>, ip: Option<IpAddr>) {
        self.enqueue(actor, action, target, ip, None);
    }

    /// [`Audit::record`] with a small JSON object saying more (e.g. a new key's name and scopes).
    pub fn record_detail(&self, actor: &str, action: Action, target: Option<&str>, ip: Option<IpAddr>, detail: Value) {
        self.enqueue(actor, action, target, ip, Some(detail));
    }

    fn enqueue(&self, actor: &str, action: Action, target: Option<&str>, ip: Option<IpAddr>, detail: Option<Value>) {
        let event = AuditEvent {
            time: now_micros(),
            actor: clean(actor),
            action: action.as_str().to_string(),
            target: target.map(clean),
            ip: ip.map(|ip| ip.to_string()),
            detail,
        };
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => self.count_dropped(1),
        }
    }

    fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        let total = self.dropped_total.fetch_add(n, Ordering::Relaxed) + n;
        let now = now_micros();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MICROS
            && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(dropped_total = total, "audit log: events dropped (the queue was full or closed)");
        }
    }

    /// Events waiting to be written.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Events dropped since start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    /// Writes everything queued now, in one transaction, followed by an `audit.dropped` event when
    /// events were lost since the last batch. Events whose write fails are counted as dropped.
    pub async fn flush(&self) -> StoreResult<()> {
        let mut rx = self.rx.lock().await;
        let mut batch = Vec::with_capacity(rx.len() + 1);
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        // The lost events came when the queue was full, after those it held: the count goes last.
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.push(AuditEvent {
                time: now_micros(),
                actor: "system".into(),
                action: "audit.dropped".into(),
                target: None,
                ip: None,
                detail: Some(json!({"count": lost})),
            });
        }
        if batch.is_empty() {
            return Ok(());
        }
        let r = self.store.insert_audit_events(&batch).await;
        if r.is_err() {
            // Kept nowhere else: counted, so that the next batch written says what was lost.
            self.dropped.fetch_add(lost, Ordering::Relaxed);
            self.count_dropped((batch.len() - usize::from(lost > 0)) as u64);
        }
        r
    }

    async fn flush_logged(&self) {
        if let Err(e) = self.flush().await {
            tracing::error!(error = %e, "audit log: writing events failed");
        }
    }

    /// Deletes the events older than `[audit] retention_days` (none when it is 0); how many.
    pub async fn purge(&self) -> StoreResult<u64> {
        if self.retention_days == 0 {
            return Ok(0);
        }
        let cutoff = now_micros() - i64::from(self.retention_days) * 86_400_000_000;
        self.store.purge_audit_events(cutoff).await
    }

    /// The log, newest first: at most `limit` events below the id `before`, after this instance's
    /// queue was written.
    pub async fn list(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<AuditRecord>> {
        self.flush_logged().await;
        self.store.list_audit_events(before, limit).await
    }

    /// Starts the writer (a batch a second) and the retention purge (at start, then hourly) on
    /// `tasks`; [`Audit::close`] stops them.
    pub fn start(self: &Arc<Self>, tasks: &TaskTracker) {
        let a = self.clone();
        let handle = tasks.spawn(async move {
            let mut flush = tokio::time::interval(FLUSH_EVERY);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut purge = tokio::time::interval(PURGE_EVERY);
            purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = a.closing.cancelled() => break,
                    _ = flush.tick() => a.flush_logged().await,
                    _ = purge.tick() => match a.purge().await {
                        Ok(n) if n > 0 => tracing::info!(purged = n, "audit log: old events deleted"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "audit log: deleting old events failed"),
                    },
                }
            }
        });
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Stops the writer, refuses further events (they are counted as dropped) and writes what is
    /// queued. Called at shutdown once no request is left, and by the command line.
    pub async fn close(&self) {
        self.closing.cancel();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        self.rx.lock().await.close();
        self.flush_logged().await;
    }
}

/// What an `api_key.create` event says of the new key: its name, scopes and bound username.
pub fn key_detail(rec: &ApiKeyRecord) -> Value {
    json!({"name": rec.name, "scopes": rec.scopes, "username": rec.username})
}

/// At most [`MAX_FIELD_CHARS`] characters, control characters replaced.
fn clean(s: &str) -> String {
    s.chars().take(MAX_FIELD_CHARS).map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        crate::store::connect(&format!("sqlite://{}", dir.path().join("a.db").display())).await.unwrap()
    }

    fn ip() -> Option<IpAddr> {
        Some(IpAddr::from([203, 0, 113, 9]))
    }

    /// A login flood: memory stays at the queue's bound, nothing is written per attempt, the
    /// surplus is counted, and the one batch written says how many were lost.
    #[tokio::test]
    async fn a_flood_is_bounded_and_written_in_one_batch_that_counts_the_loss() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let audit = Audit::with_queue(s.clone(), 90, 16);
        for i in 0..10_000 {
            audit.record(&format!("guess{i}"), Action::LoginFailed, None, ip());
            assert!(audit.queued() <= 16);
        }
        assert_eq!((audit.queued(), audit.dropped_total()), (16, 9_984));
        assert!(s.list_audit_events(None, 100).await.unwrap().is_empty(), "recording writes nothing by itself");
        audit.flush().await.unwrap();
        assert_eq!(audit.queued(), 0);
        let rows = s.list_audit_events(None, 100).await.unwrap();
        assert_eq!(rows.len(), 17, "the queue's 16 and one event that counts the rest");
        let newest = &rows[0].event;
        assert_eq!((newest.action.as_str(), newest.actor.as_str()), ("audit.dropped", "system"));
        assert_eq!(newest.detail, Some(json!({"count": 9_984})));
        assert_eq!(rows[16].event.actor, "guess0", "the first 16 attempts were kept, in order");
        assert_eq!(rows[1].event.actor, "guess15");
        assert!(
            rows[1..].iter().all(|r| r.event.action == "login_failed" && r.event.ip.as_deref() == Some("203.0.113.9"))
        );
        // The count is reported once.
        audit.record("astrgate", Action::Login, None, ip());
        audit.flush().await.unwrap();
        let rows = s.list_audit_events(None, 100).await.unwrap();
        assert_eq!((rows.len(), rows[0].event.action.as_str()), (18, "login"));
    }

    #[tokio::test]
    async fn fields_are_cut_and_control_characters_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let audit = Audit::new(s.clone(), 90);
        let long = "é".repeat(5_000);
        audit.record(&long, Action::LoginFailed, Some("k\n1\u{1b}[31m"), None);
        audit.flush().await.unwrap();
        let e = s.list_audit_events(None, 1).await.unwrap().remove(0).event;
        assert_eq!(e.actor.chars().count(), MAX_FIELD_CHARS);
        assert_eq!(e.target.as_deref(), Some("k\u{fffd}1\u{fffd}[31m"));
        assert_eq!(e.ip, None);
    }

    #[tokio::test]
    async fn retention_deletes_only_older_events_and_zero_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let day = 86_400_000_000;
        let at = |time: i64, actor: &str| AuditEvent {
            time,
            actor: actor.into(),
            action: "login".into(),
            target: None,
            ip: None,
            detail: None,
        };
        let now = now_micros();
        s.insert_audit_events(&[at(now - 40 * day, "old"), at(now - 29 * day, "recent"), at(now, "now")])
            .await
            .unwrap();
        assert_eq!(Audit::new(s.clone(), 0).purge().await.unwrap(), 0, "0 keeps them forever");
        assert_eq!(Audit::new(s.clone(), 30).purge().await.unwrap(), 1);
        let left: Vec<String> =
            s.list_audit_events(None, 10).await.unwrap().into_iter().map(|r| r.event.actor).collect();
        assert_eq!(left, ["now", "recent"]);
    }

    /// The writer runs on the app's tracker; closing writes what is queued and refuses the rest.
    #[tokio::test]
    async fn close_writes_what_is_queued_and_later_events_are_counted_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let audit = Arc::new(Audit::new(s.clone(), 90));
        let tasks = TaskTracker::new();
        audit.start(&tasks);
        audit.record("cli", Action::ApiKeyRevoke, Some("k1"), None);
        audit.close().await;
        tasks.close();
        tasks.wait().await;
        let rows = s.list_audit_events(None, 10).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.event.action.as_str()).collect::<Vec<_>>(), ["api_key.revoke"]);
        audit.record("cli", Action::ApiKeyRevoke, Some("k2"), None);
        assert_eq!((audit.queued(), audit.dropped_total()), (0, 1));
    }
}
