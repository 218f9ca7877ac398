//! `/api/v1/chat/ws` (scope `chat`): AstrBot's Open API chat over a WebSocket (notes §11).
//!
//! Client frames are JSON objects with `t` (default `send`): `send` starts a turn exactly like
//! `POST /api/v1/chat`; `ping` → `{"type":"pong"}`. Sends are multiplexed by `message_id` (AstrBot
//! handles them one at a time and stops answering pings meanwhile); each one's frames carry its
//! `message_id`. Runs belong to the server: a client that leaves stops nothing.

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{MatchedPath, State, ws::rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::chat_mux::{ChatDialect, ChatMux, MAX_SENDS, OpenApiDialect};
use super::ws;
use crate::app::AppState;
use crate::auth::caller::{Requirement, authenticate};
use crate::auth::{Caller, Scope};

pub async fn chat_ws(
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
    let auth =
        authenticate(&state.auth(), &ws::without_cookies(&headers), uri.query(), Requirement::Scope(Scope::Chat)).await;
    let tasks = state.tasks.clone();
    ws::on_upgrade(ws, &tasks, &endpoint, move |socket| async move {
        match auth {
            Err(e) => {
                ws::refuse(socket, json!({"type": "error", "code": "UNAUTHORIZED", "data": e.message}), &e.message)
                    .await
            }
            Ok(caller) => serve(state, caller, socket).await,
        }
    })
}

fn error(code: &str, data: &str) -> Value {
    OpenApiDialect.error(code, data, None)
}

async fn serve(state: AppState, caller: Caller, socket: WebSocket) {
    let (incoming, out, writer) = ws::split(socket, state.socket_timing());
    let mut mux = ChatMux::new(OpenApiDialect, format!("too many concurrent sends (limit {MAX_SENDS})"));
    let frames = ws::Frames {
        max_bytes: state.config.live.max_frame_bytes,
        idle: state.config.live.idle_timeout(),
        shutdown: state.shutdown.clone(),
        error,
        invalid: "INVALID_MESSAGE",
    };
    let mut rx = ws::Receiver::new(incoming, out.clone(), frames);
    while let Some(frame) = rx.next().await {
        match frame.get("t").and_then(Value::as_str).unwrap_or("send") {
            "ping" => out.control(&json!({"type": "pong"})),
            "send" => {
                let mid = ChatMux::<OpenApiDialect>::message_id(&frame);
                mux.send(&state, &caller, mid, frame, None, &out);
            }
            other => out.control(&error("INVALID_MESSAGE", &format!("Unsupported message type: {other}"))),
        }
    }
    // Forwarders stop; the runs themselves go on and are saved.
    mux.close();
    drop(rx);
    drop(out);
    let _ = writer.await;
}
