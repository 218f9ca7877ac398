//! Sessions and runs outside a turn: listing, history, stop, delete, resume, binding a socket to
//! a session. Every operation on a named session checks that the acting user owns it.

use std::sync::Arc;

use super::Agent;
use super::errors::SessionError;
use super::events::AgentEvent;
use super::runs::Subscription;
use crate::bus::Push;
use crate::store::{MessageRecord, Page, SessionRecord, StoreError, StoreResult};

/// What resuming a run gives.
pub enum Resume {
    /// The run is still going: follow it from the cursor.
    Live(Subscription),
    /// The run is over: its stored events after `from`.
    Stored { run_id: String, events: Vec<AgentEvent>, from: u64 },
}

impl Agent {
    /// The session if `username` owns it.
    pub async fn owned_session(&self, session_id: &str, username: &str) -> Result<SessionRecord, SessionError> {
        if super::session::impossible(session_id) {
            return Err(SessionError::NotFound);
        }
        match self.store.get_session(session_id).await? {
            None => Err(SessionError::NotFound),
            Some(s) if s.creator != username => Err(SessionError::NotYours),
            Some(s) => Ok(s),
        }
    }

    /// A user's sessions, newest first.
    pub async fn list_sessions(
        &self,
        username: &str,
        platform: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Page<SessionRecord>> {
        self.store.list_sessions(username, platform, offset, limit).await
    }

    /// A page of a session's history.
    pub async fn history(
        &self,
        session_id: &str,
        username: &str,
        offset: i64,
        limit: i64,
        newest_first: bool,
    ) -> Result<(SessionRecord, Page<MessageRecord>), SessionError> {
        let session = self.owned_session(session_id, username).await?;
        let page = self.store.list_messages(session_id, offset, limit, newest_first).await?;
        Ok((session, page))
    }

    /// Stops the session's active run: how many were stopped (0 or 1).
    pub async fn stop_session(&self, session_id: &str, username: &str) -> Result<usize, SessionError> {
        self.owned_session(session_id, username).await?;
        Ok(self.stop_run_of(session_id).await)
    }

    /// Stops the session's run here, or on the instance that runs it (cluster mode).
    async fn stop_run_of(&self, session_id: &str) -> usize {
        if self.runs.active_for_session(session_id).is_some() {
            return self.stop_local(session_id);
        }
        let (Some(c), Some(holder)) = (&self.cluster, self.remote_holder(session_id).await) else { return 0 };
        if holder.stopping {
            return 0;
        }
        let sent = c.notify(crate::bus::cluster::Notice::Stop { session_id: session_id.to_string() }).await;
        usize::from(sent)
    }

    /// Stops the session's run, lets it save (so nothing lands in a deleted session), then
    /// deletes the session, its messages, runs and variables.
    pub async fn delete_session(&self, session_id: &str, username: &str) -> Result<(), SessionError> {
        self.owned_session(session_id, username).await?;
        self.delete_session_unchecked(session_id).await
    }

    pub(super) async fn delete_session_unchecked(&self, session_id: &str) -> Result<(), SessionError> {
        if self.stop_run_of(session_id).await > 0 || self.session_busy(session_id).await {
            self.settle(session_id, super::turn::SETTLE).await;
        }
        self.store.delete_session(session_id).await?;
        Ok(())
    }

    /// A run to resume from just after `last_event_id` (`<run_id>:<seq>`): followed live while
    /// it runs, replayed from the store once it is over.
    pub async fn resume(
        &self,
        run_id: &str,
        username: &str,
        last_event_id: Option<&str>,
    ) -> Result<Resume, SessionError> {
        let from = match last_event_id.map(str::trim).filter(|s| !s.is_empty()) {
            None => 0,
            Some(id) => {
                let (rid, seq) = id.rsplit_once(':').ok_or(SessionError::BadEventId)?;
                if rid != run_id {
                    return Err(SessionError::EventIdOfAnotherRun);
                }
                seq.parse::<u64>().map_err(|_| SessionError::BadEventId)?.saturating_add(1)
            }
        };
        if let Some(run) = self.runs.get(run_id) {
            if run.username != username {
                return Err(SessionError::RunNotYours);
            }
            return Ok(Resume::Live(run.subscribe(from)));
        }
        if let Some(c) = &self.cluster {
            // Another instance's run (or one that ended recently): its Redis stream.
            match self.follow_remote(c, run_id, from).await {
                Ok(Some((meta, remote))) => {
                    if meta.username != username {
                        return Err(SessionError::RunNotYours);
                    }
                    return Ok(Resume::Live(Subscription::remote(remote)));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(run.id = %run_id, error = %e, "following the run through Redis failed; replaying what the database has")
                }
            }
        }
        let Some(rec) = self.store.get_run(run_id).await? else {
            return Err(SessionError::RunUnavailable);
        };
        if rec.username != username {
            return Err(SessionError::RunNotYours);
        }
        let events = super::events::decode_log(&rec.events).map_err(|e| SessionError::Store(StoreError::Json(e)))?;
        Ok(Resume::Stored { run_id: run_id.to_string(), events, from })
    }

    /// Makes sure `username` owns `session_id` for a socket `bind`: an unknown session is
    /// created for them, an unowned one (left by an older proactive message) is claimed;
    /// another user's is refused (`false`).
    pub async fn own_or_create(&self, session_id: &str, username: &str) -> StoreResult<bool> {
        if let Some(s) = self.store.get_session(session_id).await? {
            if s.creator == username {
                return Ok(true);
            }
            if !s.creator.is_empty() {
                return Ok(false);
            }
            return Ok(self.store.claim_session(session_id, username).await?
                || self.store.get_session(session_id).await?.is_some_and(|s| s.creator == username));
        }
        self.store.create_session(&SessionRecord::new(session_id, "webchat", username)).await?;
        Ok(self.store.get_session(session_id).await?.is_some_and(|s| s.creator == username))
    }

    /// Subscribes to proactive messages of a session; each one is checked again against its
    /// owner before it is delivered (the session could have been deleted and recreated).
    pub fn subscribe_pushes(&self, session_id: &str) -> tokio::sync::broadcast::Receiver<Arc<Push>> {
        self.bus.subscribe(session_id)
    }

    /// Whether `username` still owns the session a push is for.
    pub async fn still_owns(&self, session_id: &str, username: &str) -> bool {
        matches!(self.store.get_session(session_id).await, Ok(Some(s)) if s.creator == username)
    }
}
