//! `POST /api/v1/chat` (scope `chat`): AstrBot's chat body parsed into a turn, started by the
//! turn service, streamed as SSE. [`parse_chat`] is shared with the chat sockets.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use serde_json::{Map, Value};

use super::sse;
use crate::agent::errors::{SessionError, TurnError};
use crate::agent::input::{self, Part};
use crate::agent::turn::{ProfileChoice, ProfileSelect, SessionTarget, TurnInput, TurnKind, TurnRequest};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::metrics::Door;

pub async fn send_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("Invalid request body: expected a JSON object"))?;
    let started = state.agent.begin_turn(parse_chat(&caller, obj, None, Door::SseChat)?).await?;
    Ok(sse::stream_run(started.run.subscribe(0), Duration::from_secs(state.config.server.sse_keepalive_secs.max(1)))
        .await)
}

/// A chat body (AstrBot's fields and texts) as a turn through `door`. `default_session` is the
/// session a request that names none goes to (a socket's own); otherwise such a request starts a
/// new one.
pub fn parse_chat(
    caller: &Caller,
    obj: &Map<String, Value>,
    default_session: Option<&str>,
    door: Door,
) -> Result<TurnRequest, TurnError> {
    let username = caller.act_as(obj.get("username"))?;
    let id = session_id_of(obj)?;
    let profile = match profile_choice(obj)? {
        Some(c) => ProfileSelect::Chosen(c),
        None => ProfileSelect::Session,
    };
    let message = obj.get("message").filter(|v| !v.is_null());
    let files = obj.get("files").filter(|v| !v.is_null());
    if message.is_none() && files.is_none() {
        return Err(TurnError::Invalid("Missing key: message or files".into()));
    }
    let mut parts: Vec<Part> = Vec::new();
    if let Some(m) = message {
        parts.extend(input::parse_message(m, false)?);
    }
    if let Some(f) = files {
        parts.extend(input::parse_files(f)?);
    }
    // AstrBot's WebUI fields for an answer to a question stored already (after an edit).
    let reuse_checkpoint = match obj.get("_skip_user_history") {
        Some(Value::Bool(true)) => optional_str(obj, "_llm_checkpoint_id")?,
        _ => None,
    };
    let streaming = obj
        .get("flags")
        .and_then(|f| f.get("enable_streaming"))
        .and_then(Value::as_bool)
        .or_else(|| obj.get("enable_streaming").and_then(Value::as_bool));
    Ok(TurnRequest {
        caller: caller.clone(),
        username,
        session: SessionTarget::Owned { id, default: default_session.map(str::to_string), new_platform: "webchat" },
        input: TurnInput::Parts(parts),
        profile,
        provider: optional_str(obj, "selected_provider")?,
        model: optional_str(obj, "selected_model")?,
        streaming,
        kind: TurnKind::Chat,
        reuse_checkpoint,
        door,
    })
}

/// `session_id`, else the deprecated `conversation_id` (only when `session_id` is absent).
fn session_id_of(obj: &Map<String, Value>) -> Result<Option<String>, SessionError> {
    let (key, v) = match obj.get("session_id") {
        Some(v) => ("session_id", v),
        None => match obj.get("conversation_id") {
            Some(v) => ("conversation_id", v),
            None => return Ok(None),
        },
    };
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => {
            crate::agent::session::check_client_id(key, s.trim())?;
            Ok(Some(s.trim().to_string()))
        }
        _ => Err(SessionError::NotAString(key)),
    }
}

/// `config_id` / `config_name`.
fn profile_choice(obj: &Map<String, Value>) -> Result<Option<ProfileChoice>, TurnError> {
    if let Some(v) = obj.get("config_id").filter(|v| !v.is_null()) {
        let id =
            v.as_str().ok_or_else(|| TurnError::Invalid("Invalid request body: config_id must be a string".into()))?;
        return Ok(Some(ProfileChoice::Id(id.to_string())));
    }
    if let Some(v) = obj.get("config_name").filter(|v| !v.is_null()) {
        let name = v
            .as_str()
            .ok_or_else(|| TurnError::Invalid("Invalid request body: config_name must be a string".into()))?;
        return Ok(Some(ProfileChoice::Name(name.to_string())));
    }
    Ok(None)
}

/// A string field that may be absent, null or blank (then `None`).
fn optional_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, TurnError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(_) => Err(TurnError::Invalid(format!("Invalid request body: {key} must be a string"))),
    }
}
