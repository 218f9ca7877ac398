//! What AstrBot's WebUI chat page (the ChatUI) does besides sending: new sessions, a session with
//! its history page and running runs, rename, batch delete, editing the latest question and
//! regenerating the latest answer. Texts are AstrBot 4.29.3's dashboard texts.

use serde_json::{Value, json};

use super::Agent;
use super::errors::SessionError;
use super::events::AgentEvent;
use crate::store::{MessageRecord, SessionRecord};

/// Why a ChatUI operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChatUiError {
    #[error("Session {0} not found")]
    SessionNotFound(String),
    #[error("Permission denied")]
    PermissionDenied,
    #[error("Message {0} not found")]
    MessageNotFound(i64),
    #[error("config_id not found: {0}")]
    UnknownConfig(String),
    /// Any other of AstrBot's texts (400).
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A session's page of history, as the ChatUI reads it.
pub struct Detail {
    pub session: SessionRecord,
    /// Oldest first within the page; page 1 holds the newest messages.
    pub history: Vec<MessageRecord>,
    pub total: i64,
    pub has_more: bool,
    /// AstrBot's run snapshots of the session's running run.
    pub active_runs: Vec<Value>,
}

impl Agent {
    /// The session if `username` owns it (the dashboard's texts).
    pub async fn chatui_session(&self, session_id: &str, username: &str) -> Result<SessionRecord, ChatUiError> {
        let s = if super::session::impossible(session_id) { None } else { self.store.get_session(session_id).await? };
        match s {
            // AstrBot's text names the id; an id no session can have is cut, never echoed whole.
            None => Err(ChatUiError::SessionNotFound(crate::util::truncate_chars(session_id, 128).to_string())),
            Some(s) if s.creator != username => Err(ChatUiError::PermissionDenied),
            Some(s) => Ok(s),
        }
    }

    /// A new, empty session of `username`.
    pub async fn new_session(&self, username: &str, platform_id: &str) -> Result<SessionRecord, ChatUiError> {
        let rec = SessionRecord::new(&uuid::Uuid::now_v7().to_string(), platform_id, username);
        self.store.create_session(&rec).await?;
        Ok(rec)
    }

    /// A page of the session's history, newest page first (each page oldest first).
    pub async fn session_detail(
        &self,
        session_id: &str,
        username: &str,
        page: i64,
        page_size: i64,
    ) -> Result<Detail, ChatUiError> {
        let session = self.chatui_session(session_id, username).await?;
        let offset = (page - 1).saturating_mul(page_size);
        let p = self.store.list_messages(session_id, offset, page_size, true).await?;
        let mut history = p.items;
        history.reverse();
        let has_more = offset + (history.len() as i64) < p.total;
        let active_runs = match self.runs.active_for_session(session_id) {
            Some(run) => {
                let events = run.snapshot();
                let text: String = events
                    .iter()
                    .filter_map(|e| match &**e {
                        AgentEvent::Delta { text, reasoning: false } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                let checkpoint = events.iter().find_map(|e| match &**e {
                    AgentEvent::UserMessageSaved { checkpoint, .. } => Some(checkpoint.clone()),
                    _ => None,
                });
                vec![json!({
                    "run_id": run.run_id, "session_id": run.session_id, "llm_checkpoint_id": checkpoint,
                    "status": "running", "revision": events.len(),
                    "content": {"type": "bot", "message": [{"type": "plain", "text": text}]},
                })]
            }
            // Running on another instance (cluster mode): what the lease says.
            None => match self.remote_holder(session_id).await {
                Some(h) => vec![json!({
                    "run_id": h.run_id, "session_id": session_id, "llm_checkpoint_id": null,
                    "status": "running", "revision": 0,
                    "content": {"type": "bot", "message": [{"type": "plain", "text": ""}]},
                })],
                None => Vec::new(),
            },
        };
        Ok(Detail { session, history, total: p.total, has_more, active_runs })
    }

    /// Renames a session (`None` only marks it updated).
    pub async fn rename_session(
        &self,
        session_id: &str,
        username: &str,
        name: Option<&str>,
    ) -> Result<(), ChatUiError> {
        self.chatui_session(session_id, username).await?;
        self.store.set_session_display_name(session_id, name).await?;
        Ok(())
    }

    /// Deletes several sessions: how many went, and why the others did not.
    pub async fn batch_delete(&self, username: &str, ids: &[String]) -> (usize, Vec<(String, &'static str)>) {
        let mut deleted = 0;
        let mut failed = Vec::new();
        for id in ids {
            match self.chatui_session(id, username).await {
                Ok(_) => match self.delete_session_unchecked(id).await {
                    Ok(()) => deleted += 1,
                    Err(_) => failed.push((id.clone(), "internal_error")),
                },
                Err(ChatUiError::SessionNotFound(_)) => failed.push((id.clone(), "not found")),
                Err(ChatUiError::PermissionDenied) => failed.push((id.clone(), "permission denied")),
                Err(_) => failed.push((id.clone(), "internal_error")),
            }
        }
        (deleted, failed)
    }

    /// A message of the session (its checks, in AstrBot's order).
    async fn session_message(&self, session_id: &str, message_id: i64) -> Result<MessageRecord, ChatUiError> {
        let m = self.store.get_message(message_id).await?.ok_or(ChatUiError::MessageNotFound(message_id))?;
        if m.session_id != session_id {
            return Err(ChatUiError::Invalid("Message does not belong to the session"));
        }
        if !m.content.is_object() || !m.content["message"].is_array() {
            return Err(ChatUiError::Invalid("Invalid message content"));
        }
        Ok(m)
    }

    /// The newest user message of the session.
    async fn latest_user_message(&self, session_id: &str) -> Result<Option<MessageRecord>, ChatUiError> {
        let recent = self.store.recent_messages(session_id, 64).await?;
        Ok(recent.into_iter().rev().find(|m| m.content["type"] == "user"))
    }

    /// Replaces the latest question with `content` under a new checkpoint, and deletes what came
    /// after it. The client then asks for the new answer (`_skip_user_history`).
    pub async fn edit_latest_question(
        &self,
        session_id: &str,
        username: &str,
        message_id: i64,
        content: &Value,
    ) -> Result<MessageRecord, ChatUiError> {
        match content["type"].as_str() {
            Some("user" | "bot") => {}
            _ => return Err(ChatUiError::Invalid("Invalid key: content.type")),
        }
        if !content["message"].is_array() {
            return Err(ChatUiError::Invalid("Missing key: content.message"));
        }
        self.chatui_session(session_id, username).await?;
        let m = self.session_message(session_id, message_id).await?;
        if m.content["type"] != content["type"] {
            return Err(ChatUiError::Invalid("Message type cannot be changed"));
        }
        if m.content["type"] != "user" {
            return Err(ChatUiError::Invalid("Only user messages can be edited"));
        }
        if self.latest_user_message(session_id).await?.map(|l| l.id) != Some(message_id) {
            return Err(ChatUiError::Invalid("Only the latest user message can be edited"));
        }
        if m.llm_checkpoint_id.is_none() {
            return Err(ChatUiError::Invalid("This message is not linked to LLM history and cannot be edited"));
        }
        if self.session_busy(session_id).await {
            return Err(SessionError::Busy.into());
        }
        let checkpoint = uuid::Uuid::new_v4().to_string();
        self.store.rewrite_message(message_id, content, &checkpoint).await?;
        self.store.delete_messages_after(session_id, message_id).await?;
        self.store.set_session_display_name(session_id, None).await?;
        self.store.get_message(message_id).await?.ok_or(ChatUiError::MessageNotFound(message_id))
    }

    /// Removes the latest answer (bot message `message_id`) so it can be asked again: the
    /// question it answered, to be sent with its checkpoint (`_skip_user_history`).
    pub async fn prepare_regenerate(
        &self,
        session_id: &str,
        username: &str,
        message_id: i64,
    ) -> Result<MessageRecord, ChatUiError> {
        self.chatui_session(session_id, username).await?;
        let m = self.session_message(session_id, message_id).await?;
        if m.content["type"] != "bot" {
            return Err(ChatUiError::Invalid("Only bot messages can be regenerated"));
        }
        let Some(checkpoint) = m.llm_checkpoint_id.clone() else {
            return Err(ChatUiError::Invalid("Message is not linked to LLM history"));
        };
        let question = self
            .store
            .recent_messages(session_id, 64)
            .await?
            .into_iter()
            .rev()
            .find(|q| q.content["type"] == "user" && q.llm_checkpoint_id.as_deref() == Some(checkpoint.as_str()))
            .ok_or(ChatUiError::Invalid("Linked user message not found"))?;
        if self.latest_user_message(session_id).await?.map(|l| l.id) != Some(question.id) {
            return Err(ChatUiError::Invalid("Regenerating older turns requires branching"));
        }
        if self.session_busy(session_id).await {
            return Err(SessionError::Busy.into());
        }
        self.store.delete_messages_after(session_id, question.id).await?;
        Ok(question)
    }

    /// Binds a session of `username` to a configuration profile (AstrBot's config route for the
    /// session's UMO); `default` unbinds it.
    pub async fn route_session(&self, session_id: &str, username: &str, config_id: &str) -> Result<(), ChatUiError> {
        self.chatui_session(session_id, username).await?;
        let p = self.profiles.get(config_id).ok_or_else(|| ChatUiError::UnknownConfig(config_id.to_string()))?;
        self.store.set_session_profile(session_id, (!p.is_default).then_some(p.id.as_str())).await?;
        Ok(())
    }

    /// The sessions of `username` (up to 1000, newest first) bound to a profile, with its id.
    pub async fn session_routes(&self, username: &str) -> Result<Vec<(SessionRecord, String)>, ChatUiError> {
        let page = self.store.list_sessions(username, None, 0, 1000).await?;
        Ok(page
            .items
            .into_iter()
            .filter_map(|s| {
                let id = s.profile_id.clone()?;
                Some((s, id))
            })
            .collect())
    }
}
