//! Governance: per-key limits and usage accounting.
//!
//! A key's [`Limits`] are checked at three points: every request made with the key (HTTP
//! requests when they are authorised, and each turn a socket starts) takes a token from its
//! `requests_per_minute` bucket; every run (a turn, an OpenAI completion, a speech or
//! transcription request) needs one of its `concurrent_runs` slots, held by a [`RunPermit`]
//! until the run ends, and is refused once the day's tokens reach `tokens_per_day`. Refusals
//! are typed ([`Exceeded`]); each front door shows them in its own shape.
//!
//! Alone, an instance counts in memory. In cluster mode the counts are shared through Redis
//! (the [`Shared`] counters): one bucket per key, run slots counted per instance (a dead
//! instance's slots are forgotten with it), the day's tokens in one counter per key and day.
//! While Redis is away each instance falls back to its own counts.
//!
//! Usage (requests, runs, tokens, audio seconds per key per UTC day) is added up in memory by
//! the [`UsageBook`] and written in batches, never once per request.

pub mod usage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::task::TaskTracker;

pub use crate::store::Limits;
use crate::store::{Store, UsageCounts};
pub use usage::UsageBook;

/// Why a key's request or run was refused. The texts are the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("Rate limit exceeded")]
    Rate { retry_after_secs: u64 },
    #[error("Too many concurrent runs")]
    Concurrency,
    #[error("Token quota exceeded")]
    Tokens,
}

impl Exceeded {
    /// The label of `astrgate_rate_limited_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Exceeded::Rate { .. } => "rate",
            Exceeded::Concurrency => "concurrency",
            Exceeded::Tokens => "tokens",
        }
    }

    /// The code of a socket's error frame.
    pub fn code(self) -> &'static str {
        match self {
            Exceeded::Rate { .. } => "RATE_LIMITED",
            Exceeded::Concurrency => "TOO_MANY_RUNS",
            Exceeded::Tokens => "QUOTA_EXCEEDED",
        }
    }

    /// When trying again may succeed: the bucket's next token, a second for a slot, the next
    /// UTC midnight for the day's tokens.
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Exceeded::Rate { retry_after_secs } => retry_after_secs.max(1),
            Exceeded::Concurrency => 1,
            Exceeded::Tokens => {
                let now = chrono::Utc::now();
                let secs = chrono::Timelike::num_seconds_from_midnight(&now);
                u64::from(86_400 - secs).max(1)
            }
        }
    }
}

/// The counters the instances of a cluster share (implemented over Redis by the app). Every
/// method answers `None` while the shared store is away.
#[async_trait::async_trait]
pub trait Shared: Send + Sync {
    /// Takes one token from the bucket `name`: `(taken, tokens left)`.
    async fn take(&self, name: &str, burst: f64, per_sec: f64) -> Option<(bool, f64)>;
    /// Takes one of a key's `limit` run slots.
    async fn take_slot(&self, key_id: &str, limit: u32) -> Option<bool>;
    async fn give_slot(&self, key_id: &str);
    /// Adds `add` tokens to a key's day (created from `stored` when missing): the total.
    async fn add_tokens(&self, key_id: &str, day: &str, stored: i64, add: i64) -> Option<i64>;
}

/// What the governor keeps for one key on this instance.
#[derive(Default)]
struct KeyState {
    /// `requests_per_minute`: the limit it was made for, tokens left and when they were
    /// counted. A changed limit starts a new, full bucket.
    bucket: Option<(u32, f64, Instant)>,
    /// Runs of the key in progress here.
    running: u32,
    /// The day and its tokens as this instance knows them (the store's total when first
    /// needed, plus what ran here since).
    tokens: Option<(String, i64)>,
}

struct Inner {
    store: Arc<dyn Store>,
    shared: Option<Arc<dyn Shared>>,
    keys: Mutex<HashMap<String, KeyState>>,
    book: UsageBook,
    tasks: TaskTracker,
    /// Called with the reason of every refusal (the metrics).
    on_refused: fn(&'static str),
}

/// Limits and usage of API keys (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Governor {
    inner: Arc<Inner>,
}

/// Today, UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

impl Governor {
    pub fn new(store: Arc<dyn Store>, shared: Option<Arc<dyn Shared>>, tasks: TaskTracker) -> Self {
        Self::with_refusal_hook(store, shared, tasks, |_| {})
    }

    pub fn with_refusal_hook(
        store: Arc<dyn Store>,
        shared: Option<Arc<dyn Shared>>,
        tasks: TaskTracker,
        on_refused: fn(&'static str),
    ) -> Self {
        let book = UsageBook::new(store.clone());
        Self { inner: Arc::new(Inner { store, shared, keys: Mutex::new(HashMap::new()), book, tasks, on_refused }) }
    }

    pub fn book(&self) -> &UsageBook {
        &self.inner.book
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyState>> {
        self.inner.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse<T>(&self, e: Exceeded) -> Result<T, Exceeded> {
        (self.inner.on_refused)(e.reason());
        tracing::info!(reason = e.reason(), "key limit reached");
        Err(e)
    }

    /// One request made with `key_id`: counted, and refused when the key's
    /// `requests_per_minute` bucket is empty.
    pub async fn admit_request(&self, key_id: &str, limits: &Limits) -> Result<(), Exceeded> {
        if let Some(rpm) = limits.requests_per_minute {
            let burst = f64::from(rpm);
            let per_sec = burst / 60.0;
            // Named after the limit too: a changed limit starts a new, full bucket.
            let shared = match &self.inner.shared {
                Some(s) => s.take(&format!("rpm:{key_id}:{rpm}"), burst, per_sec).await,
                None => None,
            };
            let (taken, left) = shared.unwrap_or_else(|| self.take_local(key_id, rpm));
            if !taken {
                let wait = ((1.0 - left).max(0.0) / per_sec).ceil();
                return self.refuse(Exceeded::Rate { retry_after_secs: (wait as u64).max(1) });
            }
        }
        self.inner.book.add(key_id, &UsageCounts { requests: 1, ..Default::default() });
        Ok(())
    }

    fn take_local(&self, key_id: &str, rpm: u32) -> (bool, f64) {
        let (burst, per_sec) = (f64::from(rpm), f64::from(rpm) / 60.0);
        let now = Instant::now();
        let mut keys = self.keys();
        let st = keys.entry(key_id.to_string()).or_default();
        if st.bucket.is_none_or(|(limit, ..)| limit != rpm) {
            st.bucket = Some((rpm, burst, now));
        }
        let Some((_, tokens, at)) = st.bucket.as_mut() else { return (false, 0.0) };
        let refilled = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            (true, *tokens)
        } else {
            *tokens = refilled;
            (false, refilled)
        }
    }

    /// A run of `key_id` about to start: refused when the day's tokens are spent or every
    /// `concurrent_runs` slot is busy. The permit holds the slot until it is dropped and
    /// records the run's tokens and audio.
    pub async fn admit_run(&self, key_id: &str, limits: &Limits) -> Result<RunPermit, Exceeded> {
        if let Some(quota) = limits.tokens_per_day
            && self.tokens_today(key_id).await >= i64::try_from(quota).unwrap_or(i64::MAX)
        {
            return self.refuse(Exceeded::Tokens);
        }
        let mut shared_slot = false;
        if let Some(limit) = limits.concurrent_runs {
            let shared = match &self.inner.shared {
                Some(s) => s.take_slot(key_id, limit).await,
                None => None,
            };
            match shared {
                Some(true) => shared_slot = true,
                Some(false) => return self.refuse(Exceeded::Concurrency),
                None => {
                    let mut keys = self.keys();
                    let st = keys.entry(key_id.to_string()).or_default();
                    if st.running >= limit {
                        drop(keys);
                        return self.refuse(Exceeded::Concurrency);
                    }
                }
            }
        }
        self.keys().entry(key_id.to_string()).or_default().running += 1;
        self.inner.book.add(key_id, &UsageCounts { runs: 1, ..Default::default() });
        Ok(RunPermit { gov: self.clone(), key_id: key_id.to_string(), shared_slot })
    }

    /// The key's tokens today: this instance's count (from the store when first needed), or
    /// the cluster's.
    pub async fn tokens_today(&self, key_id: &str) -> i64 {
        let day = today();
        let known = self.keys().get(key_id).and_then(|s| s.tokens.as_ref().filter(|(d, _)| *d == day).map(|t| t.1));
        let used = match known {
            Some(u) => u,
            None => {
                let stored = self.inner.book.day_total(key_id, &day).await.map(|c| c.tokens()).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "reading a key's usage failed: counting from zero");
                    0
                });
                let mut keys = self.keys();
                let st = keys.entry(key_id.to_string()).or_default();
                match &st.tokens {
                    // Counted meanwhile by a run that finished: keep that.
                    Some((d, u)) if *d == day => *u,
                    _ => {
                        st.tokens = Some((day.clone(), stored));
                        stored
                    }
                }
            }
        };
        match &self.inner.shared {
            Some(s) => s.add_tokens(key_id, &day, used, 0).await.unwrap_or(used),
            None => used,
        }
    }

    /// Records what a run of `key_id` used.
    pub fn record(&self, key_id: &str, counts: UsageCounts) {
        if counts == UsageCounts::default() {
            return;
        }
        self.inner.book.add(key_id, &counts);
        let tokens = counts.tokens();
        if tokens == 0 {
            return;
        }
        let day = today();
        let before = {
            let mut keys = self.keys();
            let st = keys.entry(key_id.to_string()).or_default();
            match &mut st.tokens {
                Some((d, u)) if *d == day => {
                    *u += tokens;
                    Some(*u - tokens)
                }
                // Not read today yet: the next check reads the store and the book (which has
                // these tokens).
                _ => None,
            }
        };
        if let (Some(s), Some(before)) = (self.inner.shared.clone(), before) {
            let key_id = key_id.to_string();
            self.inner.tasks.spawn(async move {
                s.add_tokens(&key_id, &day, before, tokens).await;
            });
        }
    }

    /// Writes the usage added up since the last flush.
    pub async fn flush(&self) -> crate::store::StoreResult<()> {
        self.inner.book.flush().await
    }

    /// Runs of `key_id` in progress on this instance.
    pub fn running(&self, key_id: &str) -> u32 {
        self.keys().get(key_id).map(|s| s.running).unwrap_or(0)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }
}

/// One of a key's run slots, held while the run lives; the run's usage is recorded through it.
pub struct RunPermit {
    gov: Governor,
    key_id: String,
    shared_slot: bool,
}

impl std::fmt::Debug for RunPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunPermit").field("key_id", &self.key_id).finish()
    }
}

impl RunPermit {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Tokens as the upstream reported them.
    pub fn tokens(&self, prompt: u64, completion: u64) {
        let counts = UsageCounts {
            prompt_tokens: i64::try_from(prompt).unwrap_or(i64::MAX),
            completion_tokens: i64::try_from(completion).unwrap_or(i64::MAX),
            ..Default::default()
        };
        self.gov.record(&self.key_id, counts);
    }

    /// Audio heard (transcribed) and spoken, in milliseconds.
    pub fn audio(&self, in_ms: i64, out_ms: i64) {
        self.gov.record(&self.key_id, UsageCounts { audio_in_ms: in_ms, audio_out_ms: out_ms, ..Default::default() });
    }
}

impl Drop for RunPermit {
    fn drop(&mut self) {
        if let Some(st) = self.gov.keys().get_mut(&self.key_id) {
            st.running = st.running.saturating_sub(1);
        }
        if self.shared_slot
            && let Some(s) = self.gov.inner.shared.clone()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let key_id = std::mem::take(&mut self.key_id);
            self.gov.inner.tasks.spawn(async move { s.give_slot(&key_id).await });
        }
    }
}
