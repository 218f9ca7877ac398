//! Cluster mode: several instances behind one load balancer, sharing PostgreSQL for data and
//! Redis for transient coordination. Owns every Redis key of the installation (all under
//! `[cluster] key_prefix`):
//!
//! - `instances` (sorted set): heartbeats; an instance missing for a lease TTL is gone, and
//!   crash recovery may close the runs it left.
//! - `lease:<session>`: the one active run of a session, `instance|run|running|stopping`, with a
//!   TTL that this instance refreshes while the run lives. If the instance dies, the lease
//!   expires and the session is free again.
//! - `run:<run_id>` (stream) and `runmeta:<run_id>`: a chat run's events, entry id `0-<seq+1>`,
//!   so a client resumes from any instance after its `Last-Event-ID` with no gap and no
//!   duplicate; both expire `run_stream_ttl_secs` after the last write.
//! - `ctl` (pub/sub): notices between instances — stop a session's run, a proactive push, a key
//!   revoked or deleted, the dashboard account changed.
//! - `bucket:<name>`: token buckets shared by every instance (login limits, keys' requests per
//!   minute).
//! - `slots:<key_id>` (hash) and `tokens:<key_id>:<day>`: a key's runs in progress per instance
//!   and its tokens of the day (`counters.rs`).
//!
//! Redis is not trusted to stay up: every command has a timeout, and while Redis is away this
//! instance keeps serving its own runs (leases degrade to this instance's own registry), says
//! so in the log and in `/healthz`, and re-establishes its leases and subscriptions when Redis
//! returns. Nothing here knows about runs or HTTP: events arrive as JSON strings.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Push;
use super::scripts;

mod counters;
mod streams;
pub use streams::StreamEvent;

/// How long one Redis command may take before it counts as a failure.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the heartbeat runs (it is also the liveness probe behind `/healthz`).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A follower's blocking read waits at most this long before it checks its stream still exists.
const FOLLOW_BLOCK_MS: usize = 2000;
/// Notices waiting for the app's dispatcher.
const NOTICE_QUEUE: usize = 1024;

/// What the cluster needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis_url: String,
    pub key_prefix: String,
    pub instance_id: String,
    pub lease_ttl: Duration,
    pub run_stream_ttl: Duration,
    /// Remote run followers (each holds a Redis connection) at once.
    pub max_followers: usize,
}

/// Messages between instances (the `ctl` channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// Stop the session's active run, wherever it is.
    Stop { session_id: String },
    /// A proactive message was saved: show it on sockets bound to the session and in its open
    /// stream.
    Push { push: Push },
    /// A key was revoked or deleted: drop it from the key cache.
    KeyChanged { key_id: String },
    /// The dashboard account changed or logged out: reload it from the database.
    AccountChanged,
    /// Local only: this instance (re)subscribed after a gap and may have missed notices, so
    /// caches must be dropped.
    #[serde(skip)]
    Resynced,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    notice: Notice,
}

/// The outcome of claiming a session for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Acquired,
    /// Another instance runs this session.
    Busy,
    /// Redis cannot be reached: only this instance's own registry guards the session.
    Unavailable,
}

/// Who holds a session's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub instance: String,
    pub run_id: String,
    /// The run was stopped and is saving what it said.
    pub stopping: bool,
}

struct OwnLease {
    run_id: String,
    stopping: bool,
}

pub struct Cluster {
    settings: Settings,
    client: redis::Client,
    conn: ConnectionManager,
    up: AtomicBool,
    /// Whether Redis was ever reached (the first contact is not a "recovery").
    ever_up: AtomicBool,
    /// Unix seconds since when Redis has been unreachable (0 while it is up).
    down_since: AtomicI64,
    /// When the outage was last logged (unix seconds): once a minute, never per request.
    logged_at: AtomicI64,
    /// Instances seen alive by the last heartbeat.
    live: Mutex<HashSet<String>>,
    /// Leases this instance holds, by session.
    leases: Mutex<HashMap<String, OwnLease>>,
    /// Leases whose release failed (Redis away), retried by the heartbeat.
    unreleased: Mutex<Vec<(String, String)>>,
    /// Bumped when Redis comes back: the subscriber starts over.
    recovered: watch::Sender<u64>,
    /// When the leases were last renewed (every third of their TTL, not every heartbeat).
    renewed_at: Mutex<Option<tokio::time::Instant>>,
    followers: Arc<tokio::sync::Semaphore>,
    heartbeat: redis::Script,
    release: redis::Script,
    refresh: redis::Script,
    append: redis::Script,
    bucket: redis::Script,
    slot_take: redis::Script,
    slot_give: redis::Script,
    tokens: redis::Script,
}

fn timeout<T>(r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>) -> redis::RedisResult<T> {
    r.unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "Redis command timed out"))))
}

impl Cluster {
    /// Prepares the connection (lazily: Redis may be down at start) without contacting Redis.
    pub fn new(settings: Settings) -> redis::RedisResult<Arc<Self>> {
        let client = redis::Client::open(settings.redis_url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Arc::new(Self {
            followers: Arc::new(tokio::sync::Semaphore::new(settings.max_followers)),
            settings,
            client,
            conn,
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            down_since: AtomicI64::new(chrono::Utc::now().timestamp()),
            logged_at: AtomicI64::new(0),
            live: Mutex::new(HashSet::new()),
            leases: Mutex::new(HashMap::new()),
            unreleased: Mutex::new(Vec::new()),
            recovered: watch::channel(0).0,
            renewed_at: Mutex::new(None),
            heartbeat: redis::Script::new(scripts::HEARTBEAT),
            release: redis::Script::new(scripts::RELEASE),
            refresh: redis::Script::new(scripts::REFRESH),
            append: redis::Script::new(scripts::APPEND),
            bucket: redis::Script::new(scripts::BUCKET),
            slot_take: redis::Script::new(scripts::SLOT_TAKE),
            slot_give: redis::Script::new(scripts::SLOT_GIVE),
            tokens: redis::Script::new(scripts::TOKENS),
        }))
    }

    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.settings.key_prefix)
    }

    pub fn instance_id(&self) -> &str {
        &self.settings.instance_id
    }

    /// Whether the last heartbeat reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Unix seconds since when Redis has been unreachable.
    pub fn down_since(&self) -> Option<i64> {
        Some(self.down_since.load(Ordering::Relaxed)).filter(|s| *s > 0 && !self.is_up())
    }

    /// Runs the first heartbeat, then starts the heartbeat (liveness, lease refresh) and the
    /// subscriber, which hands notices from other instances to `notices`. Both stop with
    /// `shutdown`.
    pub async fn start(self: &Arc<Self>, tasks: &TaskTracker, shutdown: CancellationToken) -> mpsc::Receiver<Notice> {
        self.beat().await;
        let (tx, rx) = mpsc::channel(NOTICE_QUEUE);
        let me = self.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move { me.heartbeat_loop(stop).await });
        let me = self.clone();
        tasks.spawn(async move { me.subscriber(tx, shutdown).await });
        rx
    }

    /// The instances alive as of the last heartbeat (this one included); `None` while Redis is
    /// away (then nobody can tell which instances are gone).
    pub fn live_instances(&self) -> Option<HashSet<String>> {
        self.is_up().then(|| self.live.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// One heartbeat: liveness in, live instances out, leases kept alive. Logs transitions.
    async fn beat(&self) {
        let mut conn = self.conn.clone();
        let ttl = self.settings.lease_ttl.as_millis() as u64;
        let r: redis::RedisResult<Vec<String>> = timeout(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                self.heartbeat.key(self.key("instances")).arg(self.instance_id()).arg(ttl).invoke_async(&mut conn),
            )
            .await,
        );
        match r {
            Ok(live) => {
                *self.live.lock().unwrap_or_else(|p| p.into_inner()) = live.into_iter().collect();
                if !self.up.swap(true, Ordering::Relaxed) {
                    let since = self.down_since.swap(0, Ordering::Relaxed);
                    if self.ever_up.swap(true, Ordering::Relaxed) {
                        let secs = chrono::Utc::now().timestamp() - since;
                        tracing::info!(down_secs = secs, "Redis is reachable again: cluster coordination resumed");
                    } else {
                        tracing::info!(instance = %self.instance_id(), "connected to Redis: cluster mode");
                    }
                    self.logged_at.store(0, Ordering::Relaxed);
                    self.recovered.send_modify(|g| *g += 1);
                    // Back after a gap: leases may have lapsed meanwhile.
                    *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                let due = {
                    let mut at = self.renewed_at.lock().unwrap_or_else(|p| p.into_inner());
                    let due = at.is_none_or(|t| t.elapsed() >= self.settings.lease_ttl / 3);
                    if due {
                        *at = Some(tokio::time::Instant::now());
                    }
                    due
                };
                if due {
                    self.refresh_leases().await;
                }
                self.retry_releases().await;
            }
            Err(e) => {
                let now = chrono::Utc::now().timestamp();
                if self.up.swap(false, Ordering::Relaxed) {
                    self.down_since.store(now, Ordering::Relaxed);
                }
                if now - self.logged_at.load(Ordering::Relaxed) >= 60 {
                    self.logged_at.store(now, Ordering::Relaxed);
                    tracing::error!(
                        error = %e,
                        down_secs = now - self.down_since.load(Ordering::Relaxed),
                        "Redis unreachable: serving this instance's own runs only; stop, resume and pushes across instances, shared login limits and key revocation are paused until it returns"
                    );
                }
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.beat().await,
            }
        }
        // Leaving: other instances need not wait for our heartbeat to lapse.
        let mut conn = self.conn.clone();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, conn.zrem::<_, _, ()>(self.key("instances"), self.instance_id()))
            .await;
    }

    fn lease_value(&self, run_id: &str, stopping: bool) -> (String, String) {
        let prefix = format!("{}|{run_id}|", self.instance_id());
        let value = format!("{prefix}{}", if stopping { "stopping" } else { "running" });
        (prefix, value)
    }

    /// Claims `session_id` for `run_id`.
    pub async fn acquire(&self, session_id: &str, run_id: &str) -> Lease {
        let (_, value) = self.lease_value(run_id, false);
        let mut conn = self.conn.clone();
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(self.settings.lease_ttl.as_millis() as u64));
        let r: redis::RedisResult<Option<String>> = timeout(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                conn.set_options(self.key(&format!("lease:{session_id}")), &value, opts),
            )
            .await,
        );
        let outcome = match r {
            Ok(Some(_)) => Lease::Acquired,
            Ok(None) => return Lease::Busy,
            Err(e) => {
                tracing::warn!(session.id = %session_id, error = %e, "Redis unreachable: the session is guarded on this instance only");
                Lease::Unavailable
            }
        };
        // Also when Redis is away: the heartbeat creates the lease once Redis is back.
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session_id.to_string(), OwnLease { run_id: run_id.to_string(), stopping: false });
        outcome
    }

    /// Frees the session (only if the lease is still this run's).
    pub async fn release(&self, session_id: &str, run_id: &str) {
        {
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            if leases.get(session_id).is_some_and(|l| l.run_id == run_id) {
                leases.remove(session_id);
            }
        }
        if self.try_release(session_id, run_id).await.is_err() {
            self.unreleased.lock().unwrap_or_else(|p| p.into_inner()).push((session_id.into(), run_id.into()));
        }
    }

    async fn try_release(&self, session_id: &str, run_id: &str) -> redis::RedisResult<()> {
        let (prefix, _) = self.lease_value(run_id, false);
        let mut conn = self.conn.clone();
        timeout(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                self.release.key(self.key(&format!("lease:{session_id}"))).arg(prefix).invoke_async::<i64>(&mut conn),
            )
            .await,
        )
        .map(|_| ())
    }

    async fn retry_releases(&self) {
        let pending = std::mem::take(&mut *self.unreleased.lock().unwrap_or_else(|p| p.into_inner()));
        for (s, r) in pending {
            if self.try_release(&s, &r).await.is_err() {
                self.unreleased.lock().unwrap_or_else(|p| p.into_inner()).push((s, r));
            }
        }
    }

    /// Marks this instance's run of the session as stopping (it is saving what it said): a
    /// new turn of the session waits for it instead of answering busy at once.
    pub async fn mark_stopping(&self, session_id: &str, run_id: &str) {
        if let Some(l) = self.leases.lock().unwrap_or_else(|p| p.into_inner()).get_mut(session_id)
            && l.run_id == run_id
        {
            l.stopping = true;
        }
        let _ = self.refresh_one(session_id, run_id, true).await;
    }

    async fn refresh_one(&self, session_id: &str, run_id: &str, stopping: bool) -> redis::RedisResult<i64> {
        let (prefix, value) = self.lease_value(run_id, stopping);
        let mut conn = self.conn.clone();
        timeout(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                self.refresh
                    .key(self.key(&format!("lease:{session_id}")))
                    .arg(prefix)
                    .arg(value)
                    .arg(self.settings.lease_ttl.as_millis() as u64)
                    .invoke_async(&mut conn),
            )
            .await,
        )
    }

    async fn refresh_leases(&self) {
        let own: Vec<(String, String, bool)> = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(s, l)| (s.clone(), l.run_id.clone(), l.stopping))
            .collect();
        let results = futures_util::future::join_all(own.iter().map(|(s, r, st)| self.refresh_one(s, r, *st))).await;
        for ((session, run, _), r) in own.iter().zip(results) {
            if let Ok(0) = r {
                tracing::warn!(session.id = %session, run.id = %run, "another instance took this session's lease while Redis was away");
            }
        }
    }

    /// Who runs the session, if anyone (`None` too while Redis is away).
    pub async fn holder(&self, session_id: &str) -> Option<Holder> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<Option<String>> =
            timeout(tokio::time::timeout(COMMAND_TIMEOUT, conn.get(self.key(&format!("lease:{session_id}")))).await);
        let v = r.ok().flatten()?;
        let mut parts = v.splitn(3, '|');
        let (instance, run_id, state) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Holder { instance: instance.into(), run_id: run_id.into(), stopping: state == "stopping" })
    }

    /// Tells every other instance; false when Redis could not be reached.
    pub async fn notify(&self, notice: Notice) -> bool {
        let Ok(json) = serde_json::to_string(&Envelope { from: self.instance_id().to_string(), notice }) else {
            return false;
        };
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> =
            timeout(tokio::time::timeout(COMMAND_TIMEOUT, conn.publish(self.key("ctl"), json)).await);
        if let Err(e) = &r {
            tracing::warn!(error = %e, "Redis unreachable: a notice to the other instances was not sent");
        }
        r.is_ok()
    }

    /// Receives notices until shutdown, resubscribing after every gap (each subscription starts
    /// with [`Notice::Resynced`]: what was published meanwhile is lost).
    async fn subscriber(self: Arc<Self>, tx: mpsc::Sender<Notice>, shutdown: CancellationToken) {
        let mut recovered = self.recovered.subscribe();
        let channel = self.key("ctl");
        loop {
            recovered.borrow_and_update();
            let pubsub = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = tokio::time::timeout(COMMAND_TIMEOUT * 2, self.client.get_async_pubsub()) => p,
            };
            let mut pubsub = match pubsub {
                Ok(Ok(p)) => p,
                _ => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(HEARTBEAT) => continue,
                    }
                }
            };
            if !matches!(tokio::time::timeout(COMMAND_TIMEOUT, pubsub.subscribe(&channel)).await, Ok(Ok(()))) {
                continue;
            }
            if tx.send(Notice::Resynced).await.is_err() {
                return;
            }
            let mut messages = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    // Redis came back after a gap this connection may not have noticed.
                    _ = recovered.changed() => break,
                    m = messages.next() => m,
                };
                let Some(msg) = msg else { break };
                let Ok(env) = serde_json::from_slice::<Envelope>(msg.get_payload_bytes()) else {
                    tracing::warn!("ignored an unreadable cluster notice");
                    continue;
                };
                if env.from == self.instance_id() {
                    continue;
                }
                if tx.send(env.notice).await.is_err() {
                    return;
                }
            }
        }
    }

    /// A shared token bucket (see [`scripts::BUCKET`]): `Some((taken, tokens left))`, or `None`
    /// while Redis is away.
    pub async fn take_bucket(&self, name: &str, burst: f64, per_sec: f64, delta: f64) -> Option<(bool, f64)> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<(i64, String)> = timeout(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                self.bucket
                    .key(self.key(&format!("bucket:{name}")))
                    .arg(burst)
                    .arg(per_sec)
                    .arg(delta)
                    .invoke_async(&mut conn),
            )
            .await,
        );
        match r {
            Ok((ok, left)) => Some((ok == 1, left.parse().unwrap_or(0.0))),
            Err(e) => {
                tracing::warn!(error = %e, "Redis unreachable: login limits are this instance's own");
                None
            }
        }
    }
}
