//! Sessions, history, stop and resume (scope `chat`). Sessions belong to `username`; another
//! username gets 403, an unknown session 404.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::params::{self, Params};
use super::sse;
use crate::agent::sessions::Resume;
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ok};
use crate::store::{MessageRecord, SessionRecord};
use crate::util::iso_utc;

pub fn session_json(s: &SessionRecord) -> Value {
    json!({
        "session_id": s.session_id,
        "platform_id": s.platform_id,
        "creator": s.creator,
        "display_name": s.display_name,
        "is_group": i64::from(s.is_group),
        "created_at": iso_utc(s.created_at),
        "updated_at": iso_utc(s.updated_at),
    })
}

pub fn message_json(m: &MessageRecord) -> Value {
    json!({
        "id": m.id,
        "session_id": m.session_id,
        "platform_id": m.platform_id,
        "sender_id": m.sender_id,
        "sender_name": m.sender_name,
        "content": m.content,
        "llm_checkpoint_id": m.llm_checkpoint_id,
        "created_at": iso_utc(m.created_at),
        "updated_at": iso_utc(m.updated_at),
    })
}

/// `GET /api/v1/chat/sessions?username=&page=&page_size=&platform_id=`, newest first.
/// A dashboard JWT without `username` gets AstrBot's plain list of its own sessions.
pub async fn list_sessions(State(state): State<AppState>, caller: Caller, q: Params) -> ApiResult<Response> {
    // AstrBot: a dashboard user without paging asks for the plain list (at most 100); with
    // `page` or `page_size` (as the WebUI's sidebar sends) for the paginated form.
    let plain_list =
        caller.is_dashboard() && q.get("username").is_none() && q.get("page").is_none() && q.get("page_size").is_none();
    let username = params::username_q(&caller, &q)?;
    let (page, size) = params::pagination(&q, 20)?;
    let platform = q.get("platform_id").map(str::trim).filter(|p| !p.is_empty());
    if plain_list {
        let p = state.agent.list_sessions(&username, platform, 0, 100).await?;
        return Ok(ok(p.items.iter().map(session_json).collect::<Vec<_>>()));
    }
    let p = state.agent.list_sessions(&username, platform, (page - 1).saturating_mul(size), size).await?;
    Ok(ok(json!({
        "sessions": p.items.iter().map(session_json).collect::<Vec<_>>(),
        "page": page,
        "page_size": size,
        "total": p.total,
    })))
}

/// `GET /api/v1/chat/sessions/{session_id}/messages?username=&page=&page_size=&order=asc|desc`.
pub async fn session_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    q: Params,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    let (page, size) = params::pagination(&q, 50)?;
    let newest_first = match q.get("order").unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        _ => return Err(ApiError::bad_request("order must be asc or desc")),
    };
    let (session, p) =
        state.agent.history(&session_id, &username, (page - 1).saturating_mul(size), size, newest_first).await?;
    Ok(ok(json!({
        "session": session_json(&session),
        "messages": p.items.iter().map(message_json).collect::<Vec<_>>(),
        "page": page,
        "page_size": size,
        "total": p.total,
    })))
}

/// `DELETE /api/v1/chat/sessions/{session_id}?username=`: stops its run, deletes it and its history.
pub async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    q: Params,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    state.agent.delete_session(&session_id, &username).await?;
    Ok(ok(json!({})))
}

/// `POST /api/v1/chat/sessions/{session_id}/stop?username=` → `{"stopped_count": n}`.
pub async fn stop_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    q: Params,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    let n = state.agent.stop_session(&session_id, &username).await?;
    Ok(ok(json!({ "stopped_count": n })))
}

/// `GET /api/v1/chat/runs/{run_id}/stream?username=`: replays what the client missed (after
/// `Last-Event-ID` or `?last_event_id=`), then follows the run live; a finished run replays from
/// the store.
pub async fn resume_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    q: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.get("last_event_id").map(str::to_string));
    let keepalive = Duration::from_secs(state.config.server.sse_keepalive_secs.max(1));
    Ok(match state.agent.resume(&run_id, &username, last.as_deref()).await? {
        Resume::Live(sub) => sse::stream_run(sub, keepalive).await,
        Resume::Stored { run_id, events, from } => sse::replay_events(&run_id, events, from),
    })
}
