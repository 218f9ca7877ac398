//! Chat-mode `bind` on the Live / unified sockets: proactive messages of a session pushed to the
//! socket as they are saved. Each bind is a task (on the tracker) that checks ownership first —
//! in its own task, never in the receive loop — and again for every push, since the session
//! could have been deleted and recreated by someone else.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use tokio::task::JoinHandle;

use super::chat_mux::{ChatDialect, UnifiedDialect};
use super::ws::Outbox;
use crate::agent::Agent;
use crate::app::AppState;
use crate::bus::Push;
use crate::util::iso_utc;

/// Sessions one socket may be bound to at once.
const MAX_BINDS: usize = 32;

#[derive(Default)]
pub struct Binds {
    tasks: HashMap<String, JoinHandle<()>>,
}

impl Binds {
    pub fn bind(&mut self, state: &AppState, username: &str, session_id: &str, out: &Outbox) {
        let d = UnifiedDialect;
        if let Err(e) = crate::agent::session::check_client_id("session_id", session_id) {
            return out.control(&d.error("INVALID_MESSAGE_FORMAT", &e.to_string(), None));
        }
        // Binds refused by their ownership check have ended; they do not count.
        self.tasks.retain(|_, t| !t.is_finished());
        if !self.tasks.contains_key(session_id) && self.tasks.len() >= MAX_BINDS {
            let text = format!("too many bound sessions (limit {MAX_BINDS})");
            return out.control(&d.error("INVALID_MESSAGE_FORMAT", &text, None));
        }
        let mut r = [0u8; 8];
        crate::util::fill_random(&mut r);
        let sub_id = format!("ws_sub_{}", hex::encode(r));
        // Subscribed now, so nothing pushed meanwhile is missed.
        let rx = state.agent.subscribe_pushes(session_id);
        let (agent, username, out, sid) =
            (state.agent.clone(), username.to_string(), out.clone(), session_id.to_string());
        let task = state.tasks.spawn(async move {
            match agent.own_or_create(&sid, &username).await {
                Ok(true) => {}
                Ok(false) => {
                    return out.control(&d.error("SESSION_ERROR", "session_id belongs to another username", None));
                }
                Err(e) => {
                    tracing::error!(error = %e, "bind: reading the session failed");
                    return out.control(&d.error("PROCESSING_ERROR", "Internal server error", None));
                }
            }
            out.control(&json!({"ct": "chat", "type": "session_bound", "session_id": sid, "message_id": sub_id}));
            forward_pushes(&agent, &username, rx, &out, &sub_id).await;
        });
        if let Some(old) = self.tasks.insert(session_id.to_string(), task) {
            old.abort();
        }
    }

    pub fn close(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
    }
}

/// Forwards proactive messages of a bound session, re-checking ownership for each one.
async fn forward_pushes(
    agent: &Agent,
    username: &str,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Push>>,
    out: &Outbox,
    sub: &str,
) {
    loop {
        let push = match rx.recv().await {
            Ok(p) => p,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "bound socket fell behind");
                continue;
            }
            Err(_) => return,
        };
        if !agent.still_owns(&push.session_id, username).await {
            return;
        }
        let pushed = json!({"ct": "chat", "type": "complete", "data": push.text, "chain_type": "proactive", "streaming": false,
            "session_id": push.session_id, "message_id": sub, "history_id": push.message_id});
        let saved = json!({"ct": "chat", "type": "message_saved", "data": {"id": push.message_id, "created_at": iso_utc(push.created_at)},
            "session_id": push.session_id, "message_id": sub});
        if !out.data(&pushed).await || !out.data(&saved).await {
            return;
        }
    }
}
