//! Runs: one task per chat turn, outliving the HTTP request that started it.
//!
//! Each run appends its events to an in-memory log (the replay buffer). Subscribers — SSE
//! responses, WebSocket sessions, resumers — keep their own cursor into that log and are woken
//! through a `watch` channel, so a slow or vanished subscriber never blocks the run and never
//! queues anything of its own: memory per run is bounded by `runs.max_events`, whatever the
//! number of subscribers. When the run ends its log is written to the store (for resumption
//! after the run is gone) and the run leaves the registry.
//!
//! In cluster mode a chat run's log is also appended to a Redis stream (`agent::cluster`), and a
//! [`Subscription`] may follow a run of another instance through it: the same cursor semantics
//! (sequence numbers, resume after any event), fed by a bounded channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::events::{AgentEvent, SeqEvent};
use crate::store::{Micros, now_micros};

/// Events kept free at the top of the log for the terminal events of a run that hit the cap.
const TERMINAL_RESERVE: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("run event limit reached")]
pub struct LogFull;

/// Why a run could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The session already has an active run.
    #[error("Session is busy")]
    Busy,
    /// `[runs] max_active` runs are active.
    #[error("Too many concurrent runs")]
    TooMany,
}

struct Log {
    events: Vec<Arc<AgentEvent>>,
    /// Text bytes of the streamed events so far (bounded by `max_bytes`).
    bytes: usize,
    finished: bool,
}

pub struct RunHandle {
    pub run_id: String,
    pub session_id: String,
    pub username: String,
    pub created_at: Micros,
    /// Cancelling stops the upstream request and any pending TTS at once.
    pub cancel: CancellationToken,
    log: Mutex<Log>,
    /// Bumped on every append and on finish; subscribers wait on it.
    tick: watch::Sender<u64>,
    max_events: usize,
    max_bytes: usize,
    /// Milliseconds of speech the run produced (usage accounting).
    audio_out_ms: std::sync::atomic::AtomicI64,
}

impl RunHandle {
    /// Counts speech the run produced (WAV; other formats are not measured).
    pub fn add_audio_out(&self, audio: &[u8], mime: &str) {
        if mime.contains("wav")
            && let Ok(w) = crate::audio::wav::parse(audio)
        {
            let ms = (w.duration_secs() * 1000.0).round() as i64;
            self.audio_out_ms.fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn audio_out_ms(&self) -> i64 {
        self.audio_out_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn new(
        run_id: String,
        session_id: String,
        username: String,
        cancel: CancellationToken,
        max_events: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            run_id,
            session_id,
            username,
            created_at: now_micros(),
            cancel,
            log: Mutex::new(Log { events: Vec::with_capacity(64), bytes: 0, finished: false }),
            tick: watch::channel(0).0,
            max_events,
            max_bytes,
            audio_out_ms: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event that must be recorded (terminal events); returns its sequence number.
    pub fn push(&self, ev: AgentEvent) -> u64 {
        let seq = {
            let mut log = self.lock();
            log.events.push(Arc::new(ev));
            log.events.len() as u64 - 1
        };
        self.tick.send_replace(seq + 1);
        seq
    }

    /// Appends a streaming event unless the run reached its event or byte limit.
    pub fn try_push(&self, ev: AgentEvent) -> Result<u64, LogFull> {
        let size = match &ev {
            AgentEvent::Delta { text, .. } | AgentEvent::Message { text, .. } | AgentEvent::Proactive { text, .. } => {
                text.len()
            }
            _ => 64,
        };
        let seq = {
            let mut log = self.lock();
            if log.events.len() + TERMINAL_RESERVE >= self.max_events || log.bytes + size > self.max_bytes {
                return Err(LogFull);
            }
            log.bytes += size;
            log.events.push(Arc::new(ev));
            log.events.len() as u64 - 1
        };
        self.tick.send_replace(seq + 1);
        Ok(seq)
    }

    /// Marks the log complete: subscribers drain it and stop.
    pub fn finish(&self) {
        let n = {
            let mut log = self.lock();
            log.finished = true;
            log.events.len() as u64
        };
        self.tick.send_replace(n + 1);
    }

    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// A copy of every event so far.
    pub fn snapshot(&self) -> Vec<Arc<AgentEvent>> {
        self.lock().events.clone()
    }

    /// Follows the log from sequence number `from` (0 = everything).
    pub fn subscribe(self: &Arc<Self>, from: u64) -> Subscription {
        Subscription(Cursor::Local { rx: self.tick.subscribe(), handle: self.clone(), next: from })
    }
}

/// A cursor into a run's log: this instance's run, or another instance's through Redis.
pub struct Subscription(Cursor);

enum Cursor {
    Local { handle: Arc<RunHandle>, next: u64, rx: watch::Receiver<u64> },
    Remote(super::cluster::RemoteRun),
}

impl Subscription {
    pub(super) fn remote(r: super::cluster::RemoteRun) -> Self {
        Subscription(Cursor::Remote(r))
    }

    /// Appends every event after the cursor to `out`, waiting until there is at least one.
    /// Returns `false` once the run has finished and everything was read. Cancel-safe.
    pub async fn recv(&mut self, out: &mut Vec<SeqEvent>) -> bool {
        let (handle, next, rx) = match &mut self.0 {
            Cursor::Local { handle, next, rx } => (handle, next, rx),
            Cursor::Remote(r) => return r.recv(out).await,
        };
        loop {
            // Mark the current tick as seen *before* reading the log, so an append that lands
            // between the read and the wait still wakes us.
            rx.borrow_and_update();
            {
                let log = handle.lock();
                let len = log.events.len() as u64;
                if *next < len {
                    out.extend((*next..len).map(|i| (i, log.events[i as usize].clone())));
                    *next = len;
                    return true;
                }
                if log.finished {
                    return false;
                }
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }

    /// Appends what is available now, without waiting.
    pub fn recv_now(&mut self, out: &mut Vec<SeqEvent>) {
        match &mut self.0 {
            Cursor::Local { handle, next, .. } => {
                let log = handle.lock();
                let len = log.events.len() as u64;
                if *next < len {
                    out.extend((*next..len).map(|i| (i, log.events[i as usize].clone())));
                    *next = len;
                }
            }
            Cursor::Remote(r) => r.recv_now(out),
        }
    }

    /// The run followed.
    pub fn run_id(&self) -> &str {
        match &self.0 {
            Cursor::Local { handle, .. } => &handle.run_id,
            Cursor::Remote(r) => r.run_id(),
        }
    }
}

#[derive(Default)]
struct Inner {
    runs: HashMap<String, Arc<RunHandle>>,
    by_session: HashMap<String, String>,
    /// Stateless requests in progress (see [`ActiveSlot`]).
    stateless: usize,
}

fn lock_inner(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The active runs, by id and by session (one active run per session), and the stateless
/// requests counted with them against `[runs] max_active`.
#[derive(Default)]
pub struct RunRegistry {
    inner: Arc<Mutex<Inner>>,
}

/// A stateless request (an OpenAI-compatible completion, speech or transcription) counted among
/// the active runs for as long as it is held: such a request has no run and no session, but it
/// holds an upstream request just the same.
pub struct ActiveSlot {
    inner: Arc<Mutex<Inner>>,
}

impl Drop for ActiveSlot {
    fn drop(&mut self) {
        let mut inner = lock_inner(&self.inner);
        inner.stateless = inner.stateless.saturating_sub(1);
        crate::metrics::runs_active(-1);
    }
}

/// `max_active` reached: counted as `astrgate_rate_limited_total{reason="max_active"}`.
fn too_many() -> StartError {
    crate::metrics::rate_limited("max_active");
    StartError::TooMany
}

impl RunRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock_inner(&self.inner)
    }

    /// Registers a run; fails when its session already has an active one, or when `max_active`
    /// runs (and stateless requests) are active.
    pub fn register(&self, h: Arc<RunHandle>, max_active: usize) -> Result<(), StartError> {
        let mut inner = self.lock();
        if inner.by_session.contains_key(&h.session_id) {
            return Err(StartError::Busy);
        }
        if inner.runs.len() + inner.stateless >= max_active {
            return Err(too_many());
        }
        inner.by_session.insert(h.session_id.clone(), h.run_id.clone());
        if inner.runs.insert(h.run_id.clone(), h).is_none() {
            crate::metrics::runs_active(1);
        }
        Ok(())
    }

    /// Counts a stateless request among the active runs until the slot is dropped; fails when
    /// `max_active` runs and stateless requests are active.
    pub fn admit(&self, max_active: usize) -> Result<ActiveSlot, StartError> {
        let mut inner = self.lock();
        if inner.runs.len() + inner.stateless >= max_active {
            return Err(too_many());
        }
        inner.stateless += 1;
        crate::metrics::runs_active(1);
        Ok(ActiveSlot { inner: self.inner.clone() })
    }

    /// Stateless requests in progress.
    pub fn stateless(&self) -> usize {
        self.lock().stateless
    }

    pub fn get(&self, run_id: &str) -> Option<Arc<RunHandle>> {
        self.lock().runs.get(run_id).cloned()
    }

    pub fn active_for_session(&self, session_id: &str) -> Option<Arc<RunHandle>> {
        let inner = self.lock();
        inner.by_session.get(session_id).and_then(|id| inner.runs.get(id)).cloned()
    }

    /// Frees the run's session for a new run (its reply is saved; the run stays resumable by id
    /// until [`RunRegistry::remove`], after its log is stored).
    pub fn release_session(&self, run_id: &str) {
        let mut inner = self.lock();
        if let Some(h) = inner.runs.get(run_id).cloned()
            && inner.by_session.get(&h.session_id).is_some_and(|r| r == run_id)
        {
            inner.by_session.remove(&h.session_id);
        }
    }

    pub fn remove(&self, run_id: &str) {
        let mut inner = self.lock();
        let Some(h) = inner.runs.remove(run_id) else { return };
        crate::metrics::runs_active(-1);
        if inner.by_session.get(&h.session_id).is_some_and(|r| r == run_id) {
            inner.by_session.remove(&h.session_id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(max: usize) -> Arc<RunHandle> {
        Arc::new(RunHandle::new("r".into(), "s".into(), "u".into(), CancellationToken::new(), max, usize::MAX))
    }

    #[tokio::test]
    async fn subscribers_replay_then_follow() {
        let h = handle(100);
        h.push(AgentEvent::RunStarted);
        let mut late = h.subscribe(0);
        let mut resumed = h.subscribe(1);
        let follower = tokio::spawn({
            let h = h.clone();
            async move {
                let mut sub = h.subscribe(0);
                let mut all = Vec::new();
                let mut buf = Vec::new();
                while sub.recv(&mut buf).await {
                    all.append(&mut buf);
                }
                all.into_iter().map(|(s, _)| s).collect::<Vec<_>>()
            }
        });
        for i in 0..5 {
            h.push(AgentEvent::Delta { text: i.to_string(), reasoning: false });
            tokio::task::yield_now().await;
        }
        h.push(AgentEvent::End);
        h.finish();
        assert_eq!(follower.await.unwrap(), (0..7).collect::<Vec<u64>>());
        let mut buf = Vec::new();
        assert!(late.recv(&mut buf).await);
        assert_eq!(buf.len(), 7);
        assert!(!late.recv(&mut buf).await);
        buf.clear();
        assert!(resumed.recv(&mut buf).await);
        assert_eq!(buf.first().map(|e| e.0), Some(1), "resuming starts after the last seen event");
    }

    #[test]
    fn the_log_is_bounded_but_terminal_events_fit() {
        let h = handle(20);
        let mut n = 0;
        while h.try_push(AgentEvent::Delta { text: "x".into(), reasoning: false }).is_ok() {
            n += 1;
        }
        assert_eq!(n, 20 - TERMINAL_RESERVE);
        h.push(AgentEvent::Error { message: "limit".into(), code: "X".into() });
        h.push(AgentEvent::End);
        assert_eq!(h.snapshot().len(), n + 2);
    }

    #[test]
    fn one_active_run_per_session() {
        let reg = RunRegistry::default();
        reg.register(handle(10), 10).unwrap();
        assert_eq!(reg.register(handle(10), 10), Err(StartError::Busy));
        reg.remove("r");
        assert!(reg.is_empty());
        reg.register(handle(10), 10).unwrap();
        let other = Arc::new(RunHandle::new("r2".into(), "s2".into(), "u".into(), CancellationToken::new(), 10, 10));
        assert_eq!(reg.register(other, 1), Err(StartError::TooMany));
    }

    #[test]
    fn stateless_slots_count_against_max_active() {
        let reg = RunRegistry::default();
        let slot = reg.admit(2).unwrap();
        reg.register(handle(10), 2).unwrap();
        assert!(matches!(reg.admit(2), Err(StartError::TooMany)));
        let other = Arc::new(RunHandle::new("r2".into(), "s2".into(), "u".into(), CancellationToken::new(), 10, 10));
        assert_eq!(reg.register(other, 2), Err(StartError::TooMany));
        drop(slot);
        assert_eq!(reg.stateless(), 0);
        assert!(reg.admit(2).is_ok());
    }

    #[test]
    fn the_log_is_bounded_by_bytes_too() {
        let h = Arc::new(RunHandle::new("r".into(), "s".into(), "u".into(), CancellationToken::new(), 1000, 100));
        assert!(h.try_push(AgentEvent::Delta { text: "x".repeat(60), reasoning: false }).is_ok());
        assert_eq!(h.try_push(AgentEvent::Delta { text: "x".repeat(60), reasoning: false }), Err(LogFull));
        assert!(h.try_push(AgentEvent::Delta { text: "x".repeat(40), reasoning: false }).is_ok());
    }
}
