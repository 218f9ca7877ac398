//! `/api/v1/chat/ws` (scope `chat`): AstrBot's Open API chat over a WebSocket (notes §11).
//!
//! Client frames are JSON objects with `t` (default `send`): `send` starts a turn exactly like
//! `POST /api/v1/chat`; `ping` → `{"type":"pong"}`. Sends are multiplexed by `message_id` (AstrBot
//! handles them one at a time and stops answering pings meanwhile); each one's frames carry its
//! `message_id`. Runs belong to the server: a client that leaves stops nothing.

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{State, ws::rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use super::chat::{prepare, start};
use super::sse::chat_event_json;
use super::ws::{self, CLOSE_GOING_AWAY, Outbox};
use crate::agent::events::AgentEvent;
use crate::app::AppState;
use crate::auth::caller::{Requirement, authenticate};
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::util::iso_utc;

/// Concurrent sends one socket may have in flight.
const MAX_ACTIVE_SENDS: usize = 16;

pub async fn chat_ws(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ws = match ws::upgrade_or_426(ws, state.config.live.max_frame_bytes) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let auth = authenticate(&state, &ws::without_cookies(&headers), uri.query(), Requirement::Scope(Scope::Chat)).await;
    ws.on_upgrade(move |socket| async move {
        match auth {
            Err(e) => {
                ws::refuse(socket, json!({"type": "error", "code": "UNAUTHORIZED", "data": e.message}), &e.message)
                    .await
            }
            Ok(caller) => serve(state, caller, socket).await,
        }
    })
}

fn error_frame(code: &str, data: &str, message_id: Option<&str>) -> Value {
    let mut v = json!({"type": "error", "code": code, "data": data});
    if let Some(m) = message_id {
        v["message_id"] = json!(m);
    }
    v
}

/// AstrBot's error code for a validation message.
pub fn code_for(e: &ApiError) -> &'static str {
    let m = e.message.as_str();
    if e.status.as_u16() == 429 {
        "TOO_MANY_RUNS"
    } else if e.status.is_server_error() && e.status.as_u16() != 503 {
        "PROCESSING_ERROR"
    } else if m.starts_with("Missing key: username") || m.starts_with("username is") || m.contains("username must") {
        "BAD_USER"
    } else if m.starts_with("config_") {
        "CONFIG_ERROR"
    } else if m.contains("session") || m.contains("Session") {
        "SESSION_ERROR"
    } else {
        "INVALID_MESSAGE"
    }
}

async fn serve(state: AppState, caller: Caller, socket: WebSocket) {
    let (mut incoming, out, writer) = ws::split(
        socket,
        ws::Timing {
            write_timeout: state.config.live.write_timeout(),
            ping_interval: state.config.live.ping_interval(),
        },
    );
    let mut active: HashMap<String, JoinHandle<()>> = HashMap::new();
    let limit = state.config.live.max_frame_bytes;
    loop {
        let msg = tokio::select! {
            _ = state.shutdown.cancelled() => {
                out.close(CLOSE_GOING_AWAY, "server shutting down");
                break;
            }
            _ = out.gone() => break,
            m = ws::next_or_idle(&mut incoming, state.config.live.idle_timeout()) => match m {
                Some(m) => m,
                None => {
                    out.close(ws::CLOSE_IDLE.0, ws::CLOSE_IDLE.1);
                    break;
                }
            },
        };
        let text = match msg {
            Some(Err(e)) if ws::is_too_big(&e) => {
                out.control(&error_frame("INVALID_MESSAGE", &format!("message too large (limit {limit} bytes)"), None));
                out.close(ws::CLOSE_TOO_BIG, "message too large");
                break;
            }
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                out.control(&error_frame("INVALID_MESSAGE", "binary frames are not supported", None));
                continue;
            }
            Some(Ok(_)) => continue,
        };
        if text.len() > limit {
            out.control(&error_frame("INVALID_MESSAGE", &format!("message too large (limit {limit} bytes)"), None));
            continue;
        }
        let frame = match ws::parse_frame(&text) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                out.control(&error_frame("INVALID_MESSAGE", "message must be an object", None));
                continue;
            }
            Err(e) => {
                out.control(&error_frame("INVALID_MESSAGE", e, None));
                continue;
            }
        };
        active.retain(|_, t| !t.is_finished());
        match frame.get("t").and_then(Value::as_str).unwrap_or("send") {
            "ping" => out.control(&json!({"type": "pong"})),
            "send" => handle_send(&state, &caller, frame, &out, &mut active).await,
            other => out.control(&error_frame("INVALID_MESSAGE", &format!("Unsupported message type: {other}"), None)),
        }
    }
    // Forwarders stop; the runs themselves go on and are saved.
    for (_, t) in active {
        t.abort();
    }
    drop(out);
    let _ = writer.await;
}

async fn handle_send(
    state: &AppState,
    caller: &Caller,
    frame: Map<String, Value>,
    out: &Outbox,
    active: &mut HashMap<String, JoinHandle<()>>,
) {
    let mid = match frame.get("message_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    if active.contains_key(&mid) {
        out.control(&error_frame("INVALID_MESSAGE", "Duplicate active message_id", Some(&mid)));
        return;
    }
    if active.len() >= MAX_ACTIVE_SENDS {
        out.control(&error_frame(
            "PROCESSING_ERROR",
            &format!("too many concurrent sends (limit {MAX_ACTIVE_SENDS})"),
            Some(&mid),
        ));
        return;
    }
    // Validation, start and forwarding run in the send's own task: the receive loop never waits.
    let (state, caller, out, m) = (state.clone(), caller.clone(), out.clone(), mid.clone());
    let task = tokio::spawn(async move { run_send(state, caller, frame, out, m).await });
    active.insert(mid, task);
}

async fn run_send(state: AppState, caller: Caller, frame: Map<String, Value>, out: Outbox, mid: String) {
    // AstrBot checks the message before the username on this socket.
    if frame.get("message").is_none_or(Value::is_null) && frame.get("files").is_none_or(Value::is_null) {
        out.control(&error_frame("INVALID_MESSAGE", "Missing key: message", Some(&mid)));
        return;
    }
    let prepared = match prepare(&state, &caller, &frame, "webchat", None).await {
        Ok(p) => p,
        Err(e) => return out.control(&error_frame(code_for(&e), &e.message, Some(&mid))),
    };
    let session_id = prepared.turn.session_id.clone();
    let run = match start(&state, prepared).await {
        Ok(r) => r,
        Err(e) => return out.control(&error_frame(code_for(&e), &e.message, Some(&mid))),
    };
    let mut sub = run.subscribe(0);
    let mut batch = Vec::new();
    while sub.recv(&mut batch).await {
        for (_, ev) in batch.drain(..) {
            let frame = match &*ev {
                AgentEvent::SessionId { session_id } => {
                    json!({"type": "session_id", "data": null, "session_id": session_id, "message_id": mid})
                }
                AgentEvent::UserMessageSaved { .. } => continue,
                AgentEvent::MessageSaved { id, created_at, .. } => {
                    json!({"type": "message_saved", "data": {"id": id, "created_at": iso_utc(*created_at)}, "session_id": session_id, "message_id": mid})
                }
                other => match chat_event_json(&run.run_id, other) {
                    // Every frame names its send, so concurrent sends can be told apart.
                    Some(mut v) => {
                        v["message_id"] = json!(mid);
                        v
                    }
                    None => continue,
                },
            };
            if !out.data(&frame).await {
                return;
            }
        }
    }
}
