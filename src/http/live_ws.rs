//! The Live / unified WebSockets (seed 000, notes §12):
//!
//! - `/api/v1/live/ws?username=&ct=live|chat` — API key (scope `chat`) or dashboard JWT;
//! - `/api/live_chat/ws?token=`, `/api/v1/live-chat/ws?token=` — dashboard JWT, Live mode;
//! - `/api/unified_chat/ws?token=`, `/api/v1/unified-chat/ws?token=` — dashboard JWT, `ct` per frame.
//!
//! Live mode: `start_speaking` / `speaking_part` (base64 PCM s16le mono 16 kHz) / `end_speaking`,
//! or `text_input`, start a turn: STT → agent run with sentence-level TTS → `bot_delta_chunk`,
//! `bot_text_chunk` + `response` per sentence, `metrics`, `end`. The receive loop never waits for
//! a turn, so `interrupt` (or a new `start_speaking`, barge-in) cancels the model stream and
//! pending TTS at once and answers `stop_play` then `end`; the interrupted turn is saved.
//!
//! Chat mode (`ct: "chat"`): `send` (multiplexed by `message_id`), `bind` (proactive pushes of a
//! session), `interrupt`; frames carry `"ct":"chat"`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::chat::{prepare, start};
use super::sse::chat_event_json;
use super::ws::{self, CLOSE_GOING_AWAY, Outbox};
use crate::agent::events::AgentEvent;
use crate::agent::pipeline::{Speech, Turn};
use crate::app::AppState;
use crate::auth::caller::{Requirement, authenticate, query_param};
use crate::auth::jwt::JwtError;
use crate::auth::{Caller, Scope};
use crate::store::SessionRecord;
use crate::util::{iso_utc, now_ms};

const SAMPLE_RATE: u32 = 16_000;
const MAX_CHAT_SENDS: usize = 16;
const MAX_BINDS: usize = 32;
/// AstrBot's text for an utterance that cannot be assembled.
const ASSEMBLY_FAILED: &str = "音频组装失败";

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
) -> Response {
    let ws = match ws::upgrade_or_426(ws, state.config.live.max_frame_bytes) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let q = uri.query();
    let auth = authenticate(&state, &ws::without_cookies(&headers), q, Requirement::Scope(Scope::Chat)).await;
    let username = query_param(q, "username");
    let ct =
        query_param(q, "ct").map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).unwrap_or_else(|| "live".into());
    ws.on_upgrade(move |socket| async move {
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
) -> Response {
    jwt_socket(state, ws, uri, Some(Mode::Live))
}

/// `/api/unified_chat/ws` and `/api/v1/unified-chat/ws`: dashboard JWT, `ct` per frame.
pub async fn unified_chat_jwt(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    uri: Uri,
) -> Response {
    jwt_socket(state, ws, uri, None)
}

fn jwt_socket(
    state: AppState,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    uri: Uri,
    mode: Option<Mode>,
) -> Response {
    let ws = match ws::upgrade_or_426(ws, state.config.live.max_frame_bytes) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let token = query_param(uri.query(), "token").filter(|t| !t.is_empty());
    let claims = token.map(|t| state.dashboard.decode(&t));
    ws.on_upgrade(move |socket| async move {
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

struct Utterance {
    stamp: String,
    pcm: Vec<u8>,
    started: Instant,
}

struct LiveTurn {
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl LiveTurn {
    fn active(&self) -> bool {
        !self.task.is_finished()
    }
}

/// One connection.
struct Conn {
    state: AppState,
    caller: Caller,
    username: String,
    /// `webchat_live!<user>!<uuid>`: the session of this connection's Live turns.
    session_id: String,
    /// Set once that session exists, so later turns skip the insert.
    session_ready: Arc<std::sync::atomic::AtomicBool>,
    force: Option<Mode>,
    out: Outbox,
    speaking: Option<Utterance>,
    turn: Option<LiveTurn>,
    /// Chat-mode sends in flight: their task and the token that interrupts them.
    chat_sends: HashMap<String, (JoinHandle<()>, CancellationToken)>,
    binds: HashMap<String, JoinHandle<()>>,
}

async fn serve(state: AppState, caller: Caller, username: String, force: Option<Mode>, socket: WebSocket) {
    let (mut incoming, out, writer) = ws::split(
        socket,
        ws::Timing {
            write_timeout: state.config.live.write_timeout(),
            ping_interval: state.config.live.ping_interval(),
        },
    );
    let mut c = Conn {
        session_id: format!("webchat_live!{username}!{}", uuid::Uuid::now_v7()),
        session_ready: Arc::default(),
        state,
        caller,
        username,
        force,
        out,
        speaking: None,
        turn: None,
        chat_sends: HashMap::new(),
        binds: HashMap::new(),
    };
    let limit = c.state.config.live.max_frame_bytes;
    loop {
        let msg = tokio::select! {
            _ = c.state.shutdown.cancelled() => {
                c.out.close(CLOSE_GOING_AWAY, "server shutting down");
                break;
            }
            _ = c.out.gone() => break,
            m = ws::next_or_idle(&mut incoming, c.state.config.live.idle_timeout()) => match m {
                Some(m) => m,
                None => {
                    c.out.close(ws::CLOSE_IDLE.0, ws::CLOSE_IDLE.1);
                    break;
                }
            },
        };
        let text = match msg {
            Some(Err(e)) if ws::is_too_big(&e) => {
                c.live_error("INVALID_MESSAGE_FORMAT", &format!("message too large (limit {limit} bytes)"));
                c.out.close(ws::CLOSE_TOO_BIG, "message too large");
                break;
            }
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                c.live_error("INVALID_MESSAGE_FORMAT", "binary frames are not supported");
                continue;
            }
            Some(Ok(_)) => continue,
        };
        if text.len() > limit {
            c.live_error("INVALID_MESSAGE_FORMAT", &format!("message too large (limit {limit} bytes)"));
            continue;
        }
        let frame = match ws::parse_frame(&text) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                c.live_error("INVALID_MESSAGE_FORMAT", "message must be an object");
                continue;
            }
            Err(e) => {
                c.live_error("INVALID_MESSAGE_FORMAT", e);
                continue;
            }
        };
        let mode = c.force.unwrap_or(match frame.get("ct").and_then(Value::as_str) {
            Some("chat") => Mode::Chat,
            _ => Mode::Live,
        });
        match mode {
            Mode::Live => c.live_frame(frame),
            Mode::Chat => c.chat_frame(frame).await,
        }
    }
    // The client is gone: a Live turn has nobody to speak to, so it stops (and is saved);
    // chat runs are independent and finish on their own.
    if let Some(t) = c.turn.take() {
        t.token.cancel();
    }
    for (_, (t, _)) in c.chat_sends.drain() {
        t.abort();
    }
    for (_, t) in c.binds.drain() {
        t.abort();
    }
    drop(c.out);
    let _ = writer.await;
}

impl Conn {
    fn live_error(&self, code: &str, data: &str) {
        self.out.control(&json!({"t": "error", "data": data, "code": code}));
    }

    fn busy(&self) -> bool {
        self.turn.as_ref().is_some_and(LiveTurn::active)
    }

    fn live_frame(&mut self, f: Map<String, Value>) {
        match f.get("t").and_then(Value::as_str).unwrap_or_default() {
            "start_speaking" => {
                let Some(stamp) = f.get("stamp").and_then(stamp_of) else {
                    return self.live_error("INVALID_MESSAGE_FORMAT", "start_speaking needs a stamp");
                };
                // Barge-in: talking over the bot interrupts it.
                if self.busy() {
                    self.interrupt();
                }
                self.speaking = Some(Utterance { stamp, pcm: Vec::new(), started: Instant::now() });
            }
            "speaking_part" => {
                let max = self.state.config.live.max_utterance_secs as usize * SAMPLE_RATE as usize * 2;
                let Some(u) = self.speaking.as_mut() else {
                    return self
                        .live_error("INVALID_MESSAGE_FORMAT", "speaking_part outside start_speaking/end_speaking");
                };
                let decoded = f
                    .get("data")
                    .and_then(Value::as_str)
                    .map(|d| base64::engine::general_purpose::STANDARD.decode(d.trim()));
                match decoded {
                    Some(Ok(bytes)) => {
                        if u.pcm.len() + bytes.len() > max {
                            self.speaking = None;
                            let secs = self.state.config.live.max_utterance_secs;
                            return self
                                .live_error("AUDIO_TOO_LONG", &format!("utterance longer than {secs} s; discarded"));
                        }
                        u.pcm.extend_from_slice(&bytes);
                    }
                    _ => self.live_error("INVALID_MESSAGE_FORMAT", "speaking_part data must be base64 PCM"),
                }
            }
            "end_speaking" => {
                if self.busy() {
                    return self.live_error("PROCESSING_ERROR", "Session is busy");
                }
                let stamp = f.get("stamp").and_then(stamp_of);
                match self.speaking.take() {
                    Some(u) if Some(&u.stamp) == stamp.as_ref() && u.pcm.len() >= 2 => {
                        tracing::debug!(username = %self.username, secs = u.started.elapsed().as_secs_f64(), "utterance received");
                        self.start_turn(Input::Audio { pcm: u.pcm, assemble_started: Instant::now() });
                    }
                    other => {
                        // A mismatched stamp leaves the current utterance going.
                        if let Some(u) = other
                            && Some(&u.stamp) != stamp.as_ref()
                        {
                            self.speaking = Some(u);
                        }
                        self.out
                            .control(&json!({"t": "error", "data": ASSEMBLY_FAILED, "code": "INVALID_MESSAGE_FORMAT"}));
                    }
                }
            }
            "text_input" => {
                if self.busy() {
                    return self.live_error("PROCESSING_ERROR", "Session is busy");
                }
                let text = f
                    .get("text")
                    .and_then(Value::as_str)
                    .or_else(|| f.get("message").and_then(Value::as_str))
                    .map(str::trim)
                    .unwrap_or_default();
                if text.is_empty() {
                    return self.live_error("INVALID_MESSAGE_FORMAT", "message must be non-empty text");
                }
                self.start_turn(Input::Text(text.to_string()));
            }
            "interrupt" => {
                if self.busy() {
                    self.interrupt();
                }
            }
            "ping" => self.out.control(&json!({"t": "pong"})),
            other => self.live_error("INVALID_MESSAGE_FORMAT", &format!("Unsupported message type: {other}")),
        }
    }

    /// Cancels the current turn (model stream and TTS stop at once), drops its queued audio,
    /// and tells the client to stop playing.
    fn interrupt(&mut self) {
        if let Some(t) = self.turn.take() {
            t.token.cancel();
            self.out.bump_generation();
            self.out.control(&json!({"t": "stop_play"}));
            self.out.control(&json!({"t": "end"}));
            tracing::info!(username = %self.username, "live turn interrupted");
        }
    }

    fn start_turn(&mut self, input: Input) {
        let generation = self.out.bump_generation();
        let token = self.state.shutdown.child_token();
        let ctx = TurnCtx {
            state: self.state.clone(),
            username: self.username.clone(),
            owner: self.caller.owner_tag(),
            session_id: self.session_id.clone(),
            session_ready: self.session_ready.clone(),
            out: self.out.clone(),
            generation,
            token: token.clone(),
        };
        let t = token.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = t.cancelled() => {}
                _ = live_turn(&ctx, input) => {}
            }
        });
        self.turn = Some(LiveTurn { token, task });
    }

    async fn chat_frame(&mut self, f: Map<String, Value>) {
        self.chat_sends.retain(|_, (t, _)| !t.is_finished());
        self.binds.retain(|_, t| !t.is_finished());
        match f.get("t").and_then(Value::as_str).unwrap_or("send") {
            "send" => {
                let mid = match f.get("message_id") {
                    Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                    _ => uuid::Uuid::new_v4().to_string(),
                };
                if self.chat_sends.contains_key(&mid) {
                    return chat_error(&self.out, "INVALID_MESSAGE_FORMAT", "Duplicate active message_id", Some(&mid));
                }
                if self.chat_sends.len() >= MAX_CHAT_SENDS {
                    return chat_error(&self.out, "PROCESSING_ERROR", "too many concurrent sends", Some(&mid));
                }
                if !f.get("message").is_some_and(Value::is_array) {
                    return chat_error(&self.out, "INVALID_MESSAGE_FORMAT", "message must be list", Some(&mid));
                }
                let mut body = f;
                body.insert("username".into(), json!(self.username));
                let stop = CancellationToken::new();
                let (state, caller, out, m, st) =
                    (self.state.clone(), self.caller.clone(), self.out.clone(), mid.clone(), stop.clone());
                let default_session = self.session_id.clone();
                // Validation, start and forwarding run in the send's own task.
                let task =
                    tokio::spawn(async move { chat_send(state, caller, body, default_session, out, m, st).await });
                self.chat_sends.insert(mid, (task, stop));
            }
            "bind" => {
                let Some(sid) = f
                    .get("session_id")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                else {
                    return chat_error(&self.out, "INVALID_MESSAGE_FORMAT", "session_id is required", None);
                };
                if let Err(e) = crate::agent::session::check_client_id("session_id", &sid) {
                    return chat_error(&self.out, "INVALID_MESSAGE_FORMAT", &e.to_string(), None);
                }
                let bind_key = sid.clone();
                // Binds refused by their ownership check have ended; they do not count.
                self.binds.retain(|_, t| !t.is_finished());
                if !self.binds.contains_key(&sid) && self.binds.len() >= MAX_BINDS {
                    return chat_error(
                        &self.out,
                        "INVALID_MESSAGE_FORMAT",
                        &format!("too many bound sessions (limit {MAX_BINDS})"),
                        None,
                    );
                }
                let mut r = [0u8; 8];
                crate::util::fill_random(&mut r);
                let sub_id = format!("ws_sub_{}", hex::encode(r));
                // Subscribed now, so nothing pushed meanwhile is missed; the ownership check reads
                // the store in the bind's own task, never in this receive loop.
                let rx = self.state.bus.subscribe(&sid);
                let (state, username, out) = (self.state.clone(), self.username.clone(), self.out.clone());
                let task = tokio::spawn(async move {
                    match own_session(&state, &sid, &username).await {
                        Ok(true) => {}
                        Ok(false) => {
                            return chat_error(&out, "SESSION_ERROR", "session_id belongs to another username", None);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "bind: reading the session failed");
                            return chat_error(&out, "PROCESSING_ERROR", "Internal server error", None);
                        }
                    }
                    out.control(
                        &json!({"ct": "chat", "type": "session_bound", "session_id": sid, "message_id": sub_id}),
                    );
                    forward_pushes(state, username, rx, out, sub_id).await;
                });
                if let Some(old) = self.binds.insert(bind_key, task) {
                    old.abort();
                }
            }
            "interrupt" => {
                let target = f.get("message_id").and_then(Value::as_str).map(str::to_string);
                for (mid, (_, stop)) in &self.chat_sends {
                    if target.as_ref().is_none_or(|t| t == mid) {
                        stop.cancel();
                    }
                }
                let mut v = json!({"ct": "chat", "t": "error", "data": "INTERRUPTED", "code": "INTERRUPTED"});
                if let Some(m) = target {
                    v["message_id"] = json!(m);
                }
                self.out.control(&v);
            }
            "ping" => self.out.control(&json!({"ct": "chat", "type": "pong"})),
            other => {
                chat_error(&self.out, "INVALID_MESSAGE_FORMAT", &format!("Unsupported message type: {other}"), None)
            }
        }
    }
}

fn chat_error(out: &Outbox, code: &str, data: &str, mid: Option<&str>) {
    let mut v = json!({"ct": "chat", "t": "error", "data": data, "code": code});
    if let Some(m) = mid {
        v["message_id"] = json!(m);
    }
    out.control(&v);
}

/// Makes sure `username` owns `session_id`: an unknown session is created for them, an unowned
/// one (made by a proactive message) is claimed; another user's is refused (`false`).
async fn own_session(state: &AppState, session_id: &str, username: &str) -> Result<bool, crate::store::StoreError> {
    if let Some(s) = state.store.get_session(session_id).await? {
        if s.creator == username {
            return Ok(true);
        }
        if !s.creator.is_empty() {
            return Ok(false);
        }
        return Ok(state.store.claim_session(session_id, username).await?
            || state.store.get_session(session_id).await?.is_some_and(|s| s.creator == username));
    }
    state.store.create_session(&SessionRecord::new(session_id, "webchat", username)).await?;
    Ok(state.store.get_session(session_id).await?.is_some_and(|s| s.creator == username))
}

/// Forwards proactive messages of a bound session, re-checking ownership for each one (the
/// session could have been deleted and recreated by someone else).
async fn forward_pushes(
    state: AppState,
    username: String,
    mut rx: tokio::sync::broadcast::Receiver<Arc<crate::bus::Push>>,
    out: Outbox,
    sub: String,
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
        match state.store.get_session(&push.session_id).await {
            Ok(Some(s)) if s.creator == username => {}
            _ => return,
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

/// One chat-mode send: validate, start, forward; `stop` (interrupt) cancels the run itself.
async fn chat_send(
    state: AppState,
    caller: Caller,
    body: Map<String, Value>,
    default_session: String,
    out: Outbox,
    mid: String,
    stop: CancellationToken,
) {
    let prepared = match prepare(&state, &caller, &body, "webchat", Some(&default_session)).await {
        Ok(p) => p,
        Err(e) => {
            let code = if e.status.is_server_error() { "PROCESSING_ERROR" } else { "INVALID_MESSAGE_FORMAT" };
            return chat_error(&out, code, &e.message, Some(&mid));
        }
    };
    let run = match start(&state, prepared).await {
        Ok(r) => r,
        Err(e) => return chat_error(&out, "PROCESSING_ERROR", &e.message, Some(&mid)),
    };
    let mut sub = run.subscribe(0);
    let mut batch = Vec::new();
    let mut stopped = false;
    loop {
        let more = tokio::select! {
            _ = stop.cancelled(), if !stopped => {
                stopped = true;
                run.cancel.cancel();
                continue;
            }
            more = sub.recv(&mut batch) => more,
        };
        if !more {
            return;
        }
        for (_, ev) in batch.drain(..) {
            let Some(mut v) = chat_event_json(&run.run_id, &ev) else { continue };
            if let Value::Object(o) = &mut v {
                o.insert("message_id".into(), json!(mid));
                let mut framed = Map::new();
                framed.insert("ct".into(), json!("chat"));
                framed.extend(std::mem::take(o));
                *o = framed;
            }
            if !out.data(&v).await {
                return;
            }
        }
    }
}

fn stamp_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

enum Input {
    Audio { pcm: Vec<u8>, assemble_started: Instant },
    Text(String),
}

struct TurnCtx {
    state: AppState,
    username: String,
    owner: String,
    session_id: String,
    session_ready: Arc<std::sync::atomic::AtomicBool>,
    out: Outbox,
    generation: u64,
    token: CancellationToken,
}

impl TurnCtx {
    async fn send(&self, v: Value) -> bool {
        self.out.turn_data(self.generation, &v).await
    }

    async fn error_and_end(&self, code: &str, data: &str) {
        self.send(json!({"t": "error", "data": data, "code": code})).await;
        self.send(json!({"t": "end"})).await;
    }
}

/// One Live turn: (STT) → run with sentence TTS → frames. Cancelled from outside via `ctx.token`.
async fn live_turn(ctx: &TurnCtx, input: Input) {
    let state = &ctx.state;
    let mut prefetched = None;
    let (text, started) = match input {
        Input::Text(t) => {
            let started = Instant::now();
            ctx.send(json!({"t": "metrics", "data": {"input_type": "text"}})).await;
            (t, started)
        }
        Input::Audio { pcm, assemble_started } => {
            let wav = crate::voice::wav::pcm16_to_wav(&pcm, SAMPLE_RATE, 1);
            let assemble = assemble_started.elapsed().as_secs_f64();
            ctx.send(json!({"t": "metrics", "data": {"wav_assemble_time": assemble, "input_type": "audio"}})).await;
            let started = Instant::now();
            let Some(stt) = state.providers.stt().cloned() else {
                return ctx
                    .error_and_end("STT_NOT_CONFIGURED", "No STT provider is configured (语音识别服务未配置)")
                    .await;
            };
            ctx.send(json!({"t": "metrics", "data": {"stt": stt.name()}})).await;
            // The history does not depend on what was said: read it while STT runs.
            let turns = i64::from(state.profiles.default_profile().history_turns) * 2;
            let (heard, history) = tokio::join!(
                stt.transcribe(bytes::Bytes::from(wav), "live.wav", "audio/wav"),
                state.store.recent_messages(&ctx.session_id, turns)
            );
            prefetched = history.ok();
            match heard {
                Err(e) => {
                    tracing::warn!(error = %e, "live: transcription failed");
                    return ctx.error_and_end("STT_ERROR", &format!("处理失败: {}", e.public_message())).await;
                }
                Ok(t) if t.trim().is_empty() => {
                    return ctx.error_and_end("STT_EMPTY", "No speech was recognised (empty transcript)").await;
                }
                Ok(t) => (t.trim().to_string(), started),
            }
        }
    };
    ctx.send(json!({"t": "user_msg", "data": {"text": text, "ts": now_ms()}})).await;

    let profile = state.profiles.default_profile().clone();
    let Some(provider) = state.providers.for_profile(&profile).cloned() else {
        return ctx.error_and_end("PROCESSING_ERROR", "No LLM provider is configured").await;
    };
    let model = profile.model.clone().unwrap_or_else(|| provider.model.clone());
    let session = SessionRecord {
        display_name: Some(crate::util::truncate_chars(&text, 40).to_string()),
        ..SessionRecord::new(&ctx.session_id, "live", &ctx.username)
    };
    if !ctx.session_ready.load(std::sync::atomic::Ordering::Relaxed) {
        if let Err(e) = state.store.create_session(&session).await {
            tracing::error!(error = %e, "live: creating the session failed");
            return ctx.error_and_end("PROCESSING_ERROR", "Internal server error").await;
        }
        ctx.session_ready.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let playback = Arc::new(crate::voice::speak::Playback::default());
    let speech = state.providers.tts().cloned().map(|tts| Speech {
        tts,
        min_sentence_chars: state.config.live.min_sentence_chars,
        playback: playback.clone(),
    });
    let turn = Turn {
        run_id: uuid::Uuid::now_v7().to_string(),
        session_id: ctx.session_id.clone(),
        platform_id: "live".into(),
        username: ctx.username.clone(),
        owner: ctx.owner.clone(),
        user_content: Some(json!({"type": "user", "message": [{"type": "plain", "text": text}]})),
        model_input: Value::String(text),
        system_prompt: profile.system_prompt.clone(),
        history_turns: profile.history_turns,
        fresh_session: false,
        prefetched_history: prefetched,
        provider,
        model: model.clone(),
        streaming: true,
        show_reasoning: false,
        persist_events: false,
        speech,
        speak_reply: None,
        parent_cancel: Some(ctx.token.clone()),
    };
    // An interrupted turn of this session may still be saving what it had said.
    state.agent.settle(&ctx.session_id, std::time::Duration::from_secs(5)).await;
    let run = match state.agent.start(turn) {
        Ok(r) => r,
        Err(crate::agent::runs::StartError::Busy) => {
            return ctx.error_and_end("PROCESSING_ERROR", "Session is busy").await;
        }
        Err(crate::agent::runs::StartError::TooMany) => {
            return ctx.error_and_end("TOO_MANY_RUNS", "Too many concurrent runs").await;
        }
    };

    let mut sub = run.subscribe(0);
    let mut batch = Vec::new();
    let mut audio_played = false;
    let mut bot_text = String::new();
    let mut failed = false;
    while sub.recv(&mut batch).await {
        for (_, ev) in batch.drain(..) {
            let ok = match &*ev {
                // Raw deltas only: reasoning and tool text are never spoken or shown here.
                AgentEvent::Delta { text, reasoning: false } => {
                    bot_text.push_str(text);
                    ctx.send(json!({"t": "bot_delta_chunk", "data": {"text": text}})).await
                }
                AgentEvent::Audio { text, audio, .. } => {
                    if !audio_played {
                        audio_played = true;
                        ctx.send(json!({"t": "metrics", "data": {"speak_to_first_frame": started.elapsed().as_secs_f64()}})).await;
                    }
                    let b64 = base64::engine::general_purpose::STANDARD.encode(audio.take().unwrap_or_default());
                    let sent = ctx.send(json!({"t": "bot_text_chunk", "data": {"text": text}})).await
                        && ctx.send(json!({"t": "response", "data": b64})).await;
                    // The frame is on its way to the socket: the next sentence may be synthesised.
                    playback.played_one();
                    sent
                }
                AgentEvent::AgentStats { stats } => {
                    ctx.send(json!({"t": "metrics", "data": {"llm_ttft": stats.time_to_first_token, "llm_total_time": stats.end_time - stats.start_time}})).await
                }
                AgentEvent::TtsStats { first_frame_secs, total_secs, tts } => {
                    ctx.send(json!({"t": "metrics", "data": {"tts_total_time": total_secs, "tts_first_frame_time": first_frame_secs, "tts": tts, "chat_model": model}}))
                        .await
                }
                AgentEvent::Error { message, code } => {
                    failed = true;
                    ctx.send(json!({"t": "error", "data": message, "code": code})).await
                }
                // `End` comes after the reply is saved and the session is free again.
                AgentEvent::End => {
                    let nothing_said = failed && bot_text.is_empty();
                    if !audio_played && !nothing_said {
                        ctx.send(json!({"t": "bot_msg", "data": {"text": bot_text, "ts": now_ms()}})).await;
                    }
                    ctx.send(json!({"t": "end"})).await;
                    ctx.send(json!({"t": "metrics", "data": {"wav_to_tts_total_time": started.elapsed().as_secs_f64()}})).await;
                    return;
                }
                _ => true,
            };
            if !ok {
                return;
            }
        }
    }
}
