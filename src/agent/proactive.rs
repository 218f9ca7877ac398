//! Proactive messages (the IM API): to a webchat session — saved as a bot message, shown in
//! its open stream, pushed to bound sockets — or to a configured webhook platform.
//!
//! One ownership rule for both forms of a webchat session (`<id>` and `webchat!<user>!<id>`):
//! the id picks the session, and an `im` key, acting for the operator, may write to any session
//! that exists; the prefixed form also asserts the owner (another user's session is refused, a
//! missing one is created for that user, an unowned one is claimed); a bare id that does not
//! exist is not found, so no session is ever created without an owner; a key bound to a
//! username may only write to that user's sessions.

use serde_json::{Value, json};

use super::Agent;
use super::errors::{SessionError, TurnError};
use super::events::AgentEvent;
use super::input::{self, EMPTY_MESSAGE, Part};
use crate::auth::{Caller, UserError};
use crate::bus::Push;
use crate::store::{NewMessage, SessionRecord};

/// Where a proactive message goes (a parsed `umo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub platform_id: String,
    pub message_type: String,
    pub session: String,
}

/// What became of a proactive message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Saved in a webchat session's history.
    Saved { message_id: i64 },
    /// Accepted by a webhook platform.
    Sent,
}

/// A webhook that could not be reached (502).
#[derive(Debug, thiserror::Error)]
#[error("Failed to send message: {0}")]
pub struct DeliveryFailed(pub String);

impl Agent {
    /// Whether a platform can receive proactive messages (`webchat` always can).
    pub fn knows_platform(&self, platform_id: &str) -> bool {
        platform_id == "webchat" || self.platforms.contains_key(platform_id)
    }

    /// The configured platform ids (`webchat` is not listed, as in AstrBot).
    pub fn platform_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.platforms.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// Sends `parts` (parsed strictly, with content) to `target`.
    pub async fn send_proactive(
        &self,
        caller: &Caller,
        target: &Target,
        parts: Vec<Part>,
    ) -> Result<Result<Delivered, DeliveryFailed>, TurnError> {
        if !input::has_content(&parts) {
            return Err(TurnError::Invalid(EMPTY_MESSAGE.into()));
        }
        let webchat = target.platform_id == "webchat";
        // `webchat!<user>!<session>` names the owner too.
        let (owner, session_id) = match target.session.strip_prefix("webchat!").and_then(|r| r.split_once('!')) {
            Some((user, sid)) if webchat => (Some(user.to_string()), sid.to_string()),
            _ => (None, target.session.clone()),
        };
        if webchat {
            super::session::check_client_id("umo", &session_id)?;
        }
        let bound = match caller {
            Caller::ApiKey { username: Some(u), .. } => Some(u.as_str()),
            _ => None,
        };
        if let (Some(b), Some(o)) = (bound, owner.as_deref())
            && b != o
        {
            return Err(UserError::BoundToAnother.into());
        }
        let resolved = input::resolve(self.store.as_ref(), &self.blobs, caller, &session_id, parts).await?;
        let content = input::stored_user_content(&resolved);
        let message = content["message"].clone();
        let text = input::message_text(&content);
        if !webchat {
            let payload = json!({
                "platform_id": target.platform_id,
                "umo": format!("{}:{}:{}", target.platform_id, target.message_type, target.session),
                "message_type": target.message_type,
                "session_id": target.session,
                "message": message,
                "text": text,
                "timestamp": chrono::Utc::now().timestamp(),
            });
            let Some(hook) = self.platforms.get(&target.platform_id) else {
                return Err(TurnError::Invalid(format!(
                    "Bot not found or not running for platform: {}",
                    target.platform_id
                )));
            };
            return Ok(hook.deliver(&payload).await.map(|()| Delivered::Sent).map_err(DeliveryFailed));
        }
        let existing = self.check_push_session(&session_id, owner.as_deref(), bound).await?;
        let session = self.ensure_push_session(existing, &session_id, owner.as_deref(), target).await?;
        let message_id = self.save_push(&session, message, text).await?;
        Ok(Ok(Delivered::Saved { message_id }))
    }

    /// The webchat session a push goes to, checked (see the module docs) but not written.
    async fn check_push_session(
        &self,
        session_id: &str,
        owner: Option<&str>,
        bound: Option<&str>,
    ) -> Result<Option<SessionRecord>, SessionError> {
        let existing = self.store.get_session(session_id).await?;
        let effective_owner = match (&existing, owner) {
            (Some(s), Some(o)) if s.creator.is_empty() => o.to_string(),
            (Some(s), _) => s.creator.clone(),
            (None, Some(o)) => o.to_string(),
            (None, None) => return Err(SessionError::NotFound),
        };
        if owner.is_some_and(|o| o != effective_owner) || bound.is_some_and(|b| b != effective_owner) {
            return Err(SessionError::NotYours);
        }
        Ok(existing)
    }

    /// Creates or claims the session [`Agent::check_push_session`] approved.
    async fn ensure_push_session(
        &self,
        existing: Option<SessionRecord>,
        session_id: &str,
        owner: Option<&str>,
        target: &Target,
    ) -> Result<SessionRecord, SessionError> {
        let owner = owner.unwrap_or_default();
        let session = match existing {
            Some(s) if !s.creator.is_empty() => return Ok(s),
            Some(_) => {
                self.store.claim_session(session_id, owner).await?;
                self.store.get_session(session_id).await?
            }
            None => {
                let s = SessionRecord {
                    is_group: target.message_type == "GroupMessage",
                    ..SessionRecord::new(session_id, "webchat", owner)
                };
                self.store.create_session(&s).await?;
                self.store.get_session(session_id).await?
            }
        };
        // Created or claimed concurrently by someone else: ownership decides.
        match session {
            Some(s) if s.creator == owner => Ok(s),
            _ => Err(SessionError::NotYours),
        }
    }

    /// Saves the push as a bot message, shows it in the session's open stream and on the
    /// sockets bound to it.
    async fn save_push(&self, session: &SessionRecord, message: Value, text: String) -> Result<i64, TurnError> {
        let content = json!({"type": "bot", "message": message, "proactive": true});
        let msg = NewMessage {
            session_id: session.session_id.clone(),
            platform_id: session.platform_id.clone(),
            sender_id: "bot".into(),
            sender_name: "bot".into(),
            content: content.clone(),
            llm_checkpoint_id: None,
        };
        let (id, created_at) = self.store.insert_message(&msg).await?;
        // Shown in the open stream too, unless that run's event log is full (it is saved either way).
        if let Some(run) = self.runs.active_for_session(&session.session_id) {
            let _ = run.try_push(AgentEvent::Proactive { text: text.clone(), message_id: id });
        }
        let push = Push { session_id: session.session_id.clone(), message_id: id, created_at, content, text };
        if let Some(c) = &self.cluster {
            // Sockets bound to the session, and its open stream, on the other instances.
            c.notify(crate::bus::cluster::Notice::Push { push: push.clone() }).await;
        }
        let delivered = self.bus.publish(push);
        tracing::info!(session.id = %session.session_id, subscribers = delivered, "proactive message saved");
        Ok(id)
    }
}
