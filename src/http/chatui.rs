//! The endpoints AstrBot's WebUI chat page (the ChatUI) uses besides `POST /api/v1/chat`, with
//! AstrBot 4.29.3's shapes and texts (scope `chat`; a dashboard JWT acts as its own user, an API
//! key as the `username` it names): new session, a session with its history page, rename,
//! batch delete, edit the latest question, regenerate the latest answer, and the lists the page
//! loads (configs, providers, projects, commands). Errors are AstrBot's texts with real statuses.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::params::{self, Params};
use super::sse;
use crate::agent::chatui::ChatUiError;
use crate::agent::input;
use crate::agent::turn::{ProfileSelect, SessionTarget, TurnInput, TurnKind, TurnRequest};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, RawBody, ok};
use crate::store::MessageRecord;

pub fn chatui_error(e: ChatUiError) -> ApiError {
    match e {
        ChatUiError::SessionNotFound(_) | ChatUiError::MessageNotFound(_) => ApiError::not_found(e.to_string()),
        ChatUiError::PermissionDenied => ApiError::forbidden(e.to_string()),
        ChatUiError::Invalid(_) | ChatUiError::UnknownConfig(_) => ApiError::bad_request(e.to_string()),
        ChatUiError::Session(s) => super::errors::session_error(s),
        ChatUiError::Store(e) => ApiError::store(e),
    }
}

impl From<ChatUiError> for ApiError {
    fn from(e: ChatUiError) -> Self {
        chatui_error(e)
    }
}

/// A history row as the ChatUI reads it (`user_id` is the session).
pub fn history_entry(m: &MessageRecord) -> Value {
    json!({
        "id": m.id,
        "platform_id": m.platform_id,
        "user_id": m.session_id,
        "sender_id": m.sender_id,
        "sender_name": m.sender_name,
        "content": m.content,
        "llm_checkpoint_id": m.llm_checkpoint_id,
        "created_at": crate::util::iso_utc(m.created_at),
        "updated_at": crate::util::iso_utc(m.updated_at),
    })
}

/// `GET /api/v1/chat/sessions/new?platform_id=` → `{session_id, platform_id}`.
pub async fn new_session(State(state): State<AppState>, caller: Caller, q: Params) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    let platform = q.get("platform_id").map(str::trim).filter(|p| !p.is_empty()).unwrap_or("webchat");
    let s = state.agent.new_session(&username, platform).await?;
    Ok(ok(json!({"session_id": s.session_id, "platform_id": s.platform_id})))
}

/// A page number from the query (`default` when absent), within `min..=max`.
fn page_param(q: &Params, key: &str, default: i64, max: i64) -> ApiResult<i64> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!("{key} must be an integer between 1 and {max}"))),
        },
    }
}

/// `GET /api/v1/chat/sessions/{session_id}?page=&page_size=`: the newest page first.
pub async fn session_detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    q: Params,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    let (page, size) = (page_param(&q, "page", 1, i64::MAX)?, page_param(&q, "page_size", 1000, 1000)?);
    detail(&state, &username, &session_id, page, size).await
}

/// A session with one page of its history, as the ChatUI reads it.
pub async fn detail(state: &AppState, username: &str, session_id: &str, page: i64, size: i64) -> ApiResult<Response> {
    let d = state.agent.session_detail(session_id, username, page, size).await?;
    Ok(ok(json!({
        "session": super::sessions::session_json(&d.session),
        "history": d.history.iter().map(history_entry).collect::<Vec<_>>(),
        "total": d.total,
        "page": page,
        "page_size": size,
        "has_more": d.has_more,
        "threads": [],
        "is_running": !d.active_runs.is_empty(),
        "active_runs": d.active_runs,
    })))
}

/// `PATCH /api/v1/chat/sessions/{session_id}` `{display_name}` → `{}`.
pub async fn rename_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    q: Params,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    if !body.is_object() {
        return Err(ApiError::bad_request("Invalid request body: expected a JSON object"));
    }
    let name = match body.get("display_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(crate::util::truncate_chars(s.trim(), 255).to_string()),
        Some(_) => return Err(ApiError::bad_request("Invalid request body: display_name must be a string")),
    };
    state.agent.rename_session(&session_id, &username, name.as_deref()).await?;
    Ok(ok(json!({})))
}

/// The `session_ids` of a batch delete (AstrBot's text for a missing or empty list, or one that
/// is not a list of strings).
pub fn session_ids(body: &Value) -> ApiResult<Vec<String>> {
    let ids: Vec<String> = body
        .get("session_ids")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<_>>())
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(ApiError::bad_request("Missing or invalid key: session_ids"));
    }
    if ids.len() > 1000 {
        return Err(ApiError::bad_request("too many session_ids (max 1000)"));
    }
    Ok(ids)
}

/// `POST /api/v1/chat/sessions/batch-delete` `{session_ids}`.
pub async fn batch_delete(
    State(state): State<AppState>,
    caller: Caller,
    q: Params,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    let ids = session_ids(&body)?;
    let (deleted, failed) = state.agent.batch_delete(&username, &ids).await;
    let items: Vec<Value> = failed.iter().map(|(id, reason)| json!({"session_id": id, "reason": reason})).collect();
    Ok(ok(json!({"deleted_count": deleted, "failed_count": items.len(), "failed_items": items})))
}

/// `PATCH /api/v1/chat/sessions/{session_id}/messages/{message_id}` `{content}`: edits the latest
/// question; the client then asks for the new answer.
pub async fn edit_message(
    State(state): State<AppState>,
    caller: Caller,
    Path((session_id, message_id)): Path<(String, String)>,
    q: Params,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    edit(&state, &username, &session_id, &message_id, &body).await
}

/// Edits the latest question of a session (`message_id` as the client sent it).
pub async fn edit(
    state: &AppState,
    username: &str,
    session_id: &str,
    message_id: &str,
    body: &Value,
) -> ApiResult<Response> {
    let id: i64 = message_id
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid literal for int() with base 10: '{message_id}'")))?;
    let Some(content) = body.get("content").filter(|c| c.is_object()) else {
        return Err(ApiError::bad_request("Missing key: content"));
    };
    let m = state.agent.edit_latest_question(session_id, username, id, content).await?;
    Ok(ok(json!({"message": history_entry(&m), "needs_regenerate": true, "truncated_after_message": true})))
}

/// `POST /api/v1/chat/sessions/{session_id}/messages/{message_id}/regenerate`: the latest answer
/// again, streamed like `POST /api/v1/chat` (without `user_message_saved`).
pub async fn regenerate(
    State(state): State<AppState>,
    caller: Caller,
    Path((session_id, message_id)): Path<(String, String)>,
    q: Params,
    RawBody(raw): RawBody,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    // The body is optional: the WebUI sends the provider, the model and flags.
    let body: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?
    };
    regenerate_turn(&state, caller, username, session_id, &message_id, &body, crate::metrics::Door::ChatUi).await
}

/// Answers the latest question of a session again (`message_id` names the answer), as SSE.
pub async fn regenerate_turn(
    state: &AppState,
    caller: Caller,
    username: String,
    session_id: String,
    message_id: &str,
    body: &Value,
    door: crate::metrics::Door,
) -> ApiResult<Response> {
    let id: i64 = message_id.trim().parse().map_err(|_| ApiError::bad_request("Invalid key: message_id"))?;
    let question = state.agent.prepare_regenerate(&session_id, &username, id).await?;
    let parts =
        input::parse_message(&question.content["message"], false).map_err(crate::agent::errors::TurnError::from)?;
    let pick =
        |k: &str| body.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let req = TurnRequest {
        caller,
        username,
        session: SessionTarget::Owned { id: Some(session_id), default: None, new_platform: "webchat" },
        input: TurnInput::Parts(parts),
        profile: ProfileSelect::Session,
        provider: pick("selected_provider"),
        model: pick("selected_model"),
        streaming: body["flags"]["enable_streaming"].as_bool().or_else(|| body["enable_streaming"].as_bool()),
        kind: TurnKind::Chat,
        reuse_checkpoint: question.llm_checkpoint_id,
        door,
    };
    let started = state.agent.begin_turn(req).await?;
    Ok(sse::stream_run(started.run.subscribe(0), Duration::from_secs(state.config.server.sse_keepalive_secs.max(1)))
        .await)
}

/// `GET /api/v1/chat/configs` → `{"info_list":[{id,name,path}…]}`, the default last.
pub async fn chat_configs(State(state): State<AppState>, _caller: Caller) -> Response {
    ok(json!({ "info_list": super::configs::profile_list(&state, false) }))
}

/// `GET /api/v1/providers?capability=chat` (scope `provider`): the configured chat providers as
/// AstrBot's provider picker reads them. API keys are never shown.
pub async fn providers(State(state): State<AppState>, _caller: Caller, q: Params) -> Response {
    let chat = matches!(q.get("capability"), None | Some("chat" | "chat_completion"));
    let list: Vec<Value> = if chat { super::webui::provider_entries(&state) } else { Vec::new() };
    ok(json!({"providers": list, "model_metadata": {}}))
}

/// `GET /api/v1/chat/projects`: astrgate has no ChatUI projects.
pub async fn projects(_caller: Caller) -> Response {
    ok(json!([]))
}

/// `GET /api/v1/commands`: astrgate has no slash commands.
pub async fn commands(_caller: Caller) -> Response {
    ok(json!({"items": [], "summary": {"total": 0, "disabled": 0, "conflicts": 0}, "wake_prefix": ["/"]}))
}
