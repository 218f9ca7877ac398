//! IM endpoints (scope `im`): `POST /api/v1/im/message` (alias `/api/v1/im/messages`) and
//! `GET /api/v1/im/bots`.
//!
//! `umo` = `<platform_id>:<MessageType>:<session>`. For the built-in `webchat` the message is
//! saved to the session's history as a bot message, injected into the session's running chat
//! stream (as AstrBot does), and pushed to every WebSocket bound to the session. For a configured
//! webhook platform it is delivered, signed, with retries; a failed delivery is 502.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::chat::input_error;
use crate::agent::events::AgentEvent;
use crate::agent::input::{self, EMPTY_MESSAGE};
use crate::app::AppState;
use crate::auth::Caller;
use crate::bus::Push;
use crate::error::{ApiError, ApiJson, ApiResult, ok};
use crate::store::{NewMessage, SessionRecord};

const MESSAGE_TYPES: [&str; 3] = ["GroupMessage", "FriendMessage", "OtherMessage"];

/// The configured platform ids (the built-in `webchat` is not listed, as in AstrBot).
pub async fn list_bots(State(state): State<AppState>, _caller: Caller) -> Response {
    let ids: Vec<&str> = state.config.platforms.iter().map(|p| p.id.as_str()).collect();
    ok(json!({ "bot_ids": ids }))
}

/// A parsed unified message origin.
#[derive(Debug, PartialEq)]
pub struct Umo {
    pub platform_id: String,
    pub message_type: String,
    pub session: String,
}

/// Splits on the first two `:` with AstrBot's error texts.
pub fn parse_umo(umo: &str) -> Result<Umo, String> {
    let parts: Vec<&str> = umo.splitn(3, ':').collect();
    if parts.len() < 3 {
        return Err(format!("Invalid umo: not enough values to unpack (expected 3, got {})", parts.len()));
    }
    if !MESSAGE_TYPES.contains(&parts[1]) {
        return Err(format!("Invalid umo: '{}' is not a valid MessageType", parts[1]));
    }
    if parts[0].is_empty() || parts[2].trim().is_empty() {
        return Err("Invalid umo: platform id and session must not be empty".into());
    }
    Ok(Umo { platform_id: parts[0].to_string(), message_type: parts[1].to_string(), session: parts[2].to_string() })
}

pub async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("Invalid request body: expected a JSON object"))?;
    if obj.get("message").is_some_and(Value::is_null) {
        return Err(ApiError::bad_request("Missing key: message"));
    }
    let umo = match obj.get("umo") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("Missing key: umo")),
        Some(Value::String(s)) => parse_umo(s.trim()).map_err(ApiError::bad_request)?,
        Some(_) => return Err(ApiError::bad_request("Invalid umo: umo must be a string")),
    };
    let webchat = umo.platform_id == "webchat";
    if !webchat && !state.platforms.contains_key(&umo.platform_id) {
        return Err(ApiError::bad_request(format!("Bot not found or not running for platform: {}", umo.platform_id)));
    }
    let parts = input::parse_message(obj.get("message").unwrap_or(&Value::Null), true).map_err(input_error)?;
    if !input::has_content(&parts) {
        return Err(ApiError::bad_request(EMPTY_MESSAGE));
    }
    // `webchat!<user>!<session>` names the owner too.
    let (owner, session_id) = match umo.session.strip_prefix("webchat!").and_then(|r| r.split_once('!')) {
        Some((user, sid)) if webchat => (Some(user.to_string()), sid.to_string()),
        _ => (None, umo.session.clone()),
    };
    if webchat {
        crate::agent::session::check_client_id("umo", &session_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    // A key bound to a username may only write to that user's sessions, and name no other.
    let bound = match &caller {
        Caller::ApiKey { username: Some(u), .. } => Some(u.as_str()),
        _ => None,
    };
    if let (Some(b), Some(o)) = (bound, owner.as_deref())
        && b != o
    {
        return Err(ApiError::forbidden(super::params::BOUND_TO_ANOTHER));
    }
    let resolved = input::resolve(state.store.as_ref(), &state.prompt.attachments_dir, &caller, &session_id, parts)
        .await
        .map_err(input_error)?;
    // The webchat session is checked before anything is written or delivered.
    let existing =
        if webchat { Some(check_session(&state, &session_id, owner.as_deref(), bound).await?) } else { None };
    let content = input::stored_user_content(&resolved);
    let message = content["message"].clone();
    let text = input::message_text(&content);

    let Some(existing) = existing else {
        let payload = json!({
            "platform_id": umo.platform_id,
            "umo": format!("{}:{}:{}", umo.platform_id, umo.message_type, umo.session),
            "message_type": umo.message_type,
            "session_id": umo.session,
            "message": message,
            "text": text,
            "timestamp": chrono::Utc::now().timestamp(),
        });
        let hook = &state.platforms[&umo.platform_id];
        return match hook.deliver(&payload).await {
            Ok(()) => Ok(ok(json!({}))),
            Err(reason) => Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("Failed to send message: {reason}"))),
        };
    };
    let session = ensure_session(&state, existing, &session_id, owner.as_deref(), &umo).await?;
    let bot_content = json!({"type": "bot", "message": message, "proactive": true});
    let msg = NewMessage {
        session_id: session_id.clone(),
        platform_id: session.platform_id.clone(),
        sender_id: "bot".into(),
        sender_name: "bot".into(),
        content: bot_content.clone(),
        llm_checkpoint_id: None,
    };
    let (id, created_at) = state.store.insert_message(&msg).await?;
    // Shown in the open stream too, unless that run's event log is full (it is saved either way).
    if let Some(run) = state.agent.runs.active_for_session(&session_id) {
        let _ = run.try_push(AgentEvent::Proactive { text: text.clone(), message_id: id });
    }
    let delivered = state.bus.publish(Push {
        session_id: session_id.clone(),
        message_id: id,
        created_at,
        content: bot_content,
        text,
    });
    tracing::info!(session.id = %session_id, subscribers = delivered, "proactive message saved");
    Ok(ok(json!({"message_id": id})))
}

/// Where a proactive webchat message goes, under one rule for both umo forms:
///
/// - the session id picks the session; an `im` key acts for the operator and may write to any
///   existing session;
/// - `webchat!<user>!<id>` additionally asserts the owner: another user's session is 403, and a
///   session that does not exist yet is created for `<user>` (an unowned one is claimed by them);
/// - a bare `<id>` that does not exist is 404: no session is created without an owner, so a
///   message can never become the first message of whoever opens that id later;
/// - a key bound to a username may only write to that user's sessions.
///
/// Only reads: [`ensure_session`] writes once the whole message is known to be valid.
async fn check_session(
    state: &AppState,
    session_id: &str,
    owner: Option<&str>,
    bound: Option<&str>,
) -> ApiResult<Option<SessionRecord>> {
    let existing = state.store.get_session(session_id).await?;
    let effective_owner = match (&existing, owner) {
        (Some(s), Some(o)) if s.creator.is_empty() => o.to_string(),
        (Some(s), _) => s.creator.clone(),
        (None, Some(o)) => o.to_string(),
        (None, None) => return Err(ApiError::not_found("Session not found")),
    };
    if owner.is_some_and(|o| o != effective_owner) || bound.is_some_and(|b| b != effective_owner) {
        return Err(ApiError::forbidden("session_id belongs to another username"));
    }
    Ok(existing)
}

/// Creates or claims the session [`check_session`] approved.
async fn ensure_session(
    state: &AppState,
    existing: Option<SessionRecord>,
    session_id: &str,
    owner: Option<&str>,
    umo: &Umo,
) -> ApiResult<SessionRecord> {
    let owner = owner.unwrap_or_default();
    let session = match existing {
        Some(s) if !s.creator.is_empty() => return Ok(s),
        Some(_) => {
            state.store.claim_session(session_id, owner).await?;
            state.store.get_session(session_id).await?
        }
        None => {
            let s = SessionRecord {
                is_group: umo.message_type == "GroupMessage",
                ..SessionRecord::new(session_id, "webchat", owner)
            };
            state.store.create_session(&s).await?;
            state.store.get_session(session_id).await?
        }
    };
    // Created or claimed concurrently by someone else: ownership decides.
    match session {
        Some(s) if s.creator == owner => Ok(s),
        _ => Err(ApiError::forbidden("session_id belongs to another username")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umo_parsing() {
        assert_eq!(parse_umo("webchat:FriendMessage:a:b").unwrap().session, "a:b");
        assert_eq!(
            parse_umo("webchat:FriendMessage").unwrap_err(),
            "Invalid umo: not enough values to unpack (expected 3, got 2)"
        );
        assert_eq!(parse_umo("webchat:Bogus:x").unwrap_err(), "Invalid umo: 'Bogus' is not a valid MessageType");
    }
}
