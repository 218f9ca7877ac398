//! AstrBot's legacy dashboard chat router, `/api/chat/*` (dashboard JWT, header or cookie): loose
//! JSON bodies and query strings in front of the same services as the v1 ChatUI endpoints, with
//! AstrBot 4.29.3's texts. Uploads and downloads are the attachment handlers themselves.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::params::{self, Params, required};
use super::{chatui, sse};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, RawBody, ok};

/// The body as a JSON object, or AstrBot's texts for anything else.
fn object(raw: &[u8]) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request("Invalid JSON body: expected object")),
        Err(_) => Err(ApiError::bad_request("Missing JSON body")),
    }
}

fn body_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// `POST /api/chat/send`: the ChatUI send of older WebUIs, streamed exactly like `POST /api/v1/chat`.
pub async fn send(State(state): State<AppState>, caller: Caller, RawBody(raw): RawBody) -> ApiResult<Response> {
    let obj = match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(o)) => o,
        _ => return Err(ApiError::bad_request("Missing JSON body")),
    };
    if !obj.contains_key("message") && !obj.contains_key("files") {
        return Err(ApiError::bad_request("Missing key: message or files"));
    }
    let Some(sid) = obj.get("session_id").or_else(|| obj.get("conversation_id")) else {
        return Err(ApiError::bad_request("Missing key: session_id or conversation_id"));
    };
    if sid.is_null() || sid.as_str().is_some_and(|s| s.trim().is_empty()) {
        return Err(ApiError::bad_request("session_id is empty"));
    }
    let started =
        state.agent.begin_turn(super::chat::parse_chat(&caller, &obj, None, crate::metrics::Door::LegacyChat)?).await?;
    Ok(sse::stream_run(started.run.subscribe(0), Duration::from_secs(state.config.server.sse_keepalive_secs.max(1)))
        .await)
}

/// `GET /api/chat/get_session?session_id=`: the session with its whole history (up to 1000).
pub async fn get_session(State(state): State<AppState>, caller: Caller, q: Params) -> ApiResult<Response> {
    let sid = q.required("session_id")?;
    chatui::detail(&state, &params::username_q(&caller, &q)?, sid, 1, 1000).await
}

/// `POST /api/chat/stop {session_id}` → `{"stopped_count": n}`.
pub async fn stop(State(state): State<AppState>, caller: Caller, RawBody(raw): RawBody) -> ApiResult<Response> {
    let obj = object(&raw)?;
    let sid = required(body_str(&obj, "session_id"), "session_id")?;
    let n = state.agent.stop_session(sid, &params::username(&caller, None)?).await?;
    Ok(ok(json!({ "stopped_count": n })))
}

/// `GET /api/chat/delete_session?session_id=` → `{}` (a deleting GET, as AstrBot has it; the
/// cookie check treats it as a write).
pub async fn delete_session(State(state): State<AppState>, caller: Caller, q: Params) -> ApiResult<Response> {
    let sid = q.required("session_id")?;
    state.agent.delete_session(sid, &params::username_q(&caller, &q)?).await?;
    Ok(ok(json!({})))
}

/// `POST /api/chat/batch_delete_sessions {session_ids}`.
pub async fn batch_delete(State(state): State<AppState>, caller: Caller, RawBody(raw): RawBody) -> ApiResult<Response> {
    let obj = object(&raw)?;
    let ids = chatui::session_ids(&Value::Object(obj))?;
    let (deleted, failed) = state.agent.batch_delete(&params::username(&caller, None)?, &ids).await;
    let items: Vec<Value> = failed.iter().map(|(id, reason)| json!({"session_id": id, "reason": reason})).collect();
    Ok(ok(json!({"deleted_count": deleted, "failed_count": items.len(), "failed_items": items})))
}

/// `POST /api/chat/update_session_display_name {session_id, display_name}` → `{}`; an empty name
/// is allowed, a missing or null one is not.
pub async fn rename(State(state): State<AppState>, caller: Caller, RawBody(raw): RawBody) -> ApiResult<Response> {
    let obj = object(&raw)?;
    let sid = required(body_str(&obj, "session_id"), "session_id")?;
    let name = match obj.get("display_name") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("Missing key: display_name")),
        Some(Value::String(s)) => crate::util::truncate_chars(s.trim(), 255).to_string(),
        Some(_) => return Err(ApiError::bad_request("Invalid request body: display_name must be a string")),
    };
    state.agent.rename_session(sid, &params::username(&caller, None)?, Some(&name)).await?;
    Ok(ok(json!({})))
}

/// `POST /api/chat/message/edit {session_id, message_id, content}`.
pub async fn edit_message(State(state): State<AppState>, caller: Caller, RawBody(raw): RawBody) -> ApiResult<Response> {
    let obj = object(&raw)?;
    let sid = required(body_str(&obj, "session_id"), "session_id")?;
    let mid = message_id(&obj)?;
    chatui::edit(&state, &params::username(&caller, None)?, sid, &mid, &Value::Object(obj.clone())).await
}

/// `POST /api/chat/message/regenerate {session_id, message_id, …}` → SSE.
pub async fn regenerate(State(state): State<AppState>, caller: Caller, RawBody(raw): RawBody) -> ApiResult<Response> {
    let obj = object(&raw)?;
    let sid = required(body_str(&obj, "session_id"), "session_id")?.to_string();
    let mid = message_id(&obj)?;
    let username = params::username(&caller, None)?;
    let door = crate::metrics::Door::LegacyChat;
    chatui::regenerate_turn(&state, caller, username, sid, &mid, &Value::Object(obj), door).await
}

/// `message_id` as a string, whether the client sent a number or a string.
fn message_id(obj: &Map<String, Value>) -> ApiResult<String> {
    match obj.get("message_id") {
        Some(n @ Value::Number(_)) => Ok(crate::util::json_i64(n).map_or_else(|| n.to_string(), |i| i.to_string())),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(ApiError::bad_request("Missing key: message_id")),
    }
}
