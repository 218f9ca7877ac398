//! The agent in cluster mode: what a run does across instances (its session lease, its events
//! on a Redis stream), and what arrives from other instances (a stop, a proactive push).
//! Everything here is skipped when there is no cluster: the single-process path pays nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::DropGuard;

use super::Agent;
use super::events::{AgentEvent, SeqEvent};
use super::runs::RunHandle;
use crate::bus::Push;
use crate::bus::cluster::{Cluster, StreamEvent};

/// A publisher that cannot reach Redis gives up this long after its run ended (the finished
/// run's log is in the database anyway).
const GIVE_UP_AFTER_END: Duration = Duration::from_secs(30);

/// Who a streamed run belongs to, stored beside its events.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RunMeta {
    pub username: String,
    pub session_id: String,
    pub instance: String,
}

/// Following another instance's run through its Redis stream.
pub struct RemoteRun {
    run_id: String,
    rx: mpsc::Receiver<Vec<StreamEvent>>,
    /// Stops the follower task when the subscription is dropped (the client left).
    _stop: DropGuard,
}

impl RemoteRun {
    fn take(batch: Vec<StreamEvent>, out: &mut Vec<SeqEvent>) {
        for e in batch {
            match serde_json::from_str::<AgentEvent>(&e.json) {
                Ok(ev) => out.push((e.seq, Arc::new(ev))),
                Err(err) => tracing::warn!(seq = e.seq, error = %err, "skipped an unreadable run event from Redis"),
            }
        }
    }

    pub async fn recv(&mut self, out: &mut Vec<SeqEvent>) -> bool {
        match self.rx.recv().await {
            Some(batch) => {
                Self::take(batch, out);
                true
            }
            None => false,
        }
    }

    pub fn recv_now(&mut self, out: &mut Vec<SeqEvent>) {
        while let Ok(batch) = self.rx.try_recv() {
            Self::take(batch, out);
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }
}

impl Agent {
    /// Appends the run's events to its Redis stream as they come, so any instance can follow
    /// or resume it. A separate task: the run never waits for Redis. While Redis is away the
    /// events wait in the run's own (bounded) log and go out when it returns.
    pub(super) fn publish_events(&self, cluster: &Arc<Cluster>, h: &Arc<RunHandle>) {
        let meta = RunMeta {
            username: h.username.clone(),
            session_id: h.session_id.clone(),
            instance: cluster.instance_id().to_string(),
        };
        let Ok(meta) = serde_json::to_string(&meta) else { return };
        let (cluster, h, shutdown) = (cluster.clone(), h.clone(), self.shutdown.clone());
        self.tasks.spawn(async move {
            let mut sub = h.subscribe(0);
            let mut batch = Vec::new();
            let mut ended_at: Option<tokio::time::Instant> = None;
            while sub.recv(&mut batch).await {
                let events: Vec<StreamEvent> = batch
                    .drain(..)
                    .filter_map(|(seq, ev)| {
                        let last = ev.is_end();
                        serde_json::to_string(&*ev).ok().map(|json| StreamEvent { seq, json, last })
                    })
                    .collect();
                let mut backoff = Duration::from_millis(100);
                while let Err(e) = cluster.append_events(&h.run_id, &meta, &events).await {
                    if h.is_finished() {
                        let since = *ended_at.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() > GIVE_UP_AFTER_END || shutdown.is_cancelled() {
                            tracing::warn!(run.id = %h.run_id, error = %e, "gave up streaming the run's events to Redis");
                            return;
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        });
    }

    /// Follows a run of another instance from event `from`: `None` when Redis knows no such run.
    pub(super) async fn follow_remote(
        &self,
        cluster: &Arc<Cluster>,
        run_id: &str,
        from: u64,
    ) -> Result<Option<(RunMeta, RemoteRun)>, redis::RedisError> {
        let stop = self.shutdown.child_token();
        let Some((meta, rx)) = cluster.follow_run(run_id, from, &self.tasks, stop.clone()).await? else {
            return Ok(None);
        };
        let meta: RunMeta = serde_json::from_str(&meta)
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Parse, "unreadable run meta")))?;
        Ok(Some((meta, RemoteRun { run_id: run_id.to_string(), rx, _stop: stop.drop_guard() })))
    }

    /// Whether any instance runs the session now.
    pub async fn session_busy(&self, session_id: &str) -> bool {
        if self.runs.active_for_session(session_id).is_some() {
            return true;
        }
        match &self.cluster {
            Some(c) => c.holder(session_id).await.is_some(),
            None => false,
        }
    }

    /// The active run of the session on another instance, if any.
    pub(super) async fn remote_holder(&self, session_id: &str) -> Option<crate::bus::cluster::Holder> {
        let c = self.cluster.as_ref()?;
        c.holder(session_id).await.filter(|h| h.instance != c.instance_id())
    }

    /// Waits (up to `limit`) while another instance's run of the session is saving after a stop.
    pub(super) async fn settle_remote(&self, session_id: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while let Some(h) = self.remote_holder(session_id).await {
            if !h.stopping || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops this instance's run of the session (a stop sent to another instance); how many
    /// were stopped.
    pub fn stop_local(&self, session_id: &str) -> usize {
        match self.runs.active_for_session(session_id) {
            Some(run) if !run.cancel.is_cancelled() => {
                run.cancel.cancel();
                if let Some(c) = &self.cluster {
                    let (c, s, r) = (c.clone(), run.session_id.clone(), run.run_id.clone());
                    self.tasks.spawn(async move { c.mark_stopping(&s, &r).await });
                }
                1
            }
            _ => 0,
        }
    }

    /// A proactive message saved by another instance: into this instance's open stream of the
    /// session, and to the sockets bound to it here.
    pub fn deliver_push(&self, push: Push) {
        if let Some(run) = self.runs.active_for_session(&push.session_id) {
            let _ = run.try_push(AgentEvent::Proactive { text: push.text.clone(), message_id: push.message_id });
        }
        self.bus.publish(push);
    }
}
