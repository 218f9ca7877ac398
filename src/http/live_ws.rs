//! The Live / unified WebSockets (seed 000, notes §12):
//!
//! - `/api/v1/live/ws?username=&ct=live|chat` — API key (scope `chat`) or dashboard JWT;
//! - `/api/live_chat/ws?token=`, `/api/v1/live-chat/ws?token=` — dashboard JWT, Live mode;
//! - `/api/unified_chat/ws?token=`, `/api/v1/unified-chat/ws?token=` — dashboard JWT, `ct` per frame.
//!
//! This file is the adapter only: authentication, then the shared receive loop feeding each frame
//! to Live mode — the [`LiveSession`] state machine (`voice/live.rs`), whose turns the agent runs
//! ([`LiveRunner`]: STT → run with sentence-level TTS → frames) — or to chat mode (`ct: "chat"`):
//! `send` through the chat multiplexer, `bind` (proactive pushes of a session), `interrupt`.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::binds::Binds;
use super::chat_mux::{ChatDialect, ChatMux, UnifiedDialect};
use super::ws::{self, Outbox};
use crate::agent::live::LiveRunner;
use crate::app::AppState;
use crate::auth::caller::{Requirement, authenticate, query_param};
use crate::auth::jwt::JwtError;
use crate::auth::{Caller, Scope};
use crate::voice::live::{LiveIn, LiveSession};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Live,
    Chat,
}

/// `/api/v1/live/ws`: API key (or JWT), `username` and `ct` in the query.
pub async fn live_v1(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: HeaderMap,
    uri: Uri,
    endpoint: MatchedPath,
) -> Response {
    let ws = match ws::upgrade_or_426(ws, state.config.live.max_frame_bytes) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let q = uri.query();
    let auth = authenticate(&state.auth(), &ws::without_cookies(&headers), q, Requirement::Scope(Scope::Chat)).await;
    let username = query_param(q, "username");
    let ct =
        query_param(q, "ct").map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).unwrap_or_else(|| "live".into());
    let tasks = state.tasks.clone();
    ws::on_upgrade(ws, &tasks, &endpoint, move |socket| async move {
        let caller = match auth {
            Ok(c) => c,
            Err(e) => {
                return ws::refuse(
                    socket,
                    json!({"type": "error", "code": "UNAUTHORIZED", "data": e.message}),
                    &e.message,
                )
                .await;
            }
        };
        let provided = username.map(Value::String);
        let username = match super::params::username(&caller, provided.as_ref()) {
            Ok(u) => u,
            Err(e) => {
                return ws::refuse(socket, json!({"type": "error", "code": "BAD_USER", "data": e.message}), &e.message)
                    .await;
            }
        };
        let mode = match ct.as_str() {
            "live" => Mode::Live,
            "chat" => Mode::Chat,
            _ => {
                return ws::refuse(
                    socket,
                    json!({"type": "error", "code": "INVALID_MESSAGE", "data": "ct must be 'live' or 'chat'"}),
                    "Invalid ct",
                )
                .await;
            }
        };
        serve(state, caller, username, Some(mode), socket).await
    })
}

/// `/api/live_chat/ws` and `/api/v1/live-chat/ws`: dashboard JWT in `?token=`, Live mode.
pub async fn live_chat_jwt(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    uri: Uri,
    endpoint: MatchedPath,
) -> Response {
    jwt_socket(state, ws, uri, endpoint, Some(Mode::Live))
}

/// `/api/unified_chat/ws` and `/api/v1/unified-chat/ws`: dashboard JWT, `ct` per frame.
pub async fn unified_chat_jwt(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    uri: Uri,
    endpoint: MatchedPath,
) -> Response {
    jwt_socket(state, ws, uri, endpoint, None)
}

fn jwt_socket(
    state: AppState,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    uri: Uri,
    endpoint: MatchedPath,
    mode: Option<Mode>,
) -> Response {
    let ws = match ws::upgrade_or_426(ws, state.config.live.max_frame_bytes) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let token = query_param(uri.query(), "token").filter(|t| !t.is_empty());
    // A login token, or a short-lived socket token (`POST /api/v1/auth/socket-token`).
    let claims = token.map(|t| state.dashboard.decode_socket(&t));
    let tasks = state.tasks.clone();
    ws::on_upgrade(ws, &tasks, &endpoint, move |socket| async move {
        let reason = match claims {
            None => "Missing authentication token",
            Some(Err(JwtError::Expired)) => "Token expired",
            Some(Err(JwtError::Invalid | JwtError::NoUsername | JwtError::Rejected)) => "Invalid token",
            Some(Ok(c)) => {
                let caller = Caller::Dashboard { username: c.username.clone() };
                return serve(state, caller, c.username, mode, socket).await;
            }
        };
        ws::refuse(socket, json!({"t": "error", "code": "UNAUTHORIZED", "data": reason}), reason).await
    })
}

/// A Live-mode error frame.
fn live_error(code: &str, data: &str) -> Value {
    json!({"t": "error", "data": data, "code": code})
}

/// One connection.
async fn serve(state: AppState, caller: Caller, username: String, force: Option<Mode>, socket: WebSocket) {
    let (incoming, out, writer) = ws::split(socket, state.socket_timing());
    let session_id = format!("webchat_live!{username}!{}", uuid::Uuid::now_v7());
    let runner = LiveRunner {
        agent: state.agent.clone(),
        caller: caller.clone(),
        username: username.clone(),
        session_id: session_id.clone(),
    };
    let mut live = LiveSession::new(
        Arc::new(out.clone()),
        Arc::new(runner),
        state.tasks.clone(),
        state.shutdown.clone(),
        state.config.live.max_utterance_secs,
    );
    let mut mux = ChatMux::new(UnifiedDialect, "too many concurrent sends".into());
    let mut binds = Binds::default();
    let frames = ws::Frames {
        max_bytes: state.config.live.max_frame_bytes,
        idle: state.config.live.idle_timeout(),
        shutdown: state.shutdown.clone(),
        error: live_error,
        invalid: "INVALID_MESSAGE_FORMAT",
    };
    let mut rx = ws::Receiver::new(incoming, out.clone(), frames);
    while let Some(frame) = rx.next().await {
        let mode = force.unwrap_or(match frame.get("ct").and_then(Value::as_str) {
            Some("chat") => Mode::Chat,
            _ => Mode::Live,
        });
        match mode {
            Mode::Live => match LiveIn::parse(frame) {
                Ok(f) => live.handle(f),
                Err(text) => out.control(&live_error("INVALID_MESSAGE_FORMAT", &text)),
            },
            Mode::Chat => chat_frame(&state, &caller, &username, &session_id, &out, &mut mux, &mut binds, frame),
        }
    }
    drop(rx);
    // The client is gone: a Live turn has nobody to speak to, so it stops (and is saved);
    // chat runs are independent and finish on their own.
    live.close();
    mux.close();
    binds.close();
    drop(out);
    let _ = writer.await;
}

/// A chat-mode frame: `send`, `bind`, `interrupt`, `ping`.
#[allow(clippy::too_many_arguments)]
fn chat_frame(
    state: &AppState,
    caller: &Caller,
    username: &str,
    session_id: &str,
    out: &Outbox,
    mux: &mut ChatMux<UnifiedDialect>,
    binds: &mut Binds,
    f: Map<String, Value>,
) {
    let d = UnifiedDialect;
    match f.get("t").and_then(Value::as_str).unwrap_or("send") {
        "send" => {
            let mid = ChatMux::<UnifiedDialect>::message_id(&f);
            let mut body = f;
            body.insert("username".into(), json!(username));
            // A send that names no session goes to this connection's own.
            mux.send(state, caller, mid, body, Some(session_id.to_string()), out);
        }
        "bind" => {
            let sid = f.get("session_id").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
            match sid {
                None => out.control(&d.error("INVALID_MESSAGE_FORMAT", "session_id is required", None)),
                Some(sid) => binds.bind(state, username, sid, out),
            }
        }
        "interrupt" => {
            let target = f.get("message_id").and_then(Value::as_str);
            mux.interrupt(target);
            out.control(&d.error("INTERRUPTED", "INTERRUPTED", target));
        }
        "ping" => out.control(&json!({"ct": "chat", "type": "pong"})),
        other => out.control(&d.error("INVALID_MESSAGE_FORMAT", &format!("Unsupported message type: {other}"), None)),
    }
}
