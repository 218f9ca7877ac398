//! The chat multiplexer shared by the chat sockets: the Open API chat socket
//! (`/api/v1/chat/ws`) and chat mode of the Live / unified sockets (`ct: "chat"`). Sends are
//! multiplexed by `message_id`: each runs in a task of its own (parse → turn service → the run's
//! events), so the receive loop never waits, and pings are answered during a long reply. Each
//! dialect renders errors and events its own way ([`ChatDialect`]).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::sse::chat_event_json;
use super::ws::Outbox;
use crate::agent::errors::TurnError;
use crate::agent::events::AgentEvent;
use crate::app::AppState;
use crate::auth::Caller;
use crate::util::iso_utc;

/// Concurrent sends one socket may have in flight.
pub const MAX_SENDS: usize = 16;

/// How one chat socket dialect writes its frames.
pub trait ChatDialect: Send + Sync + 'static {
    /// A send refused before anything else is checked: (code, text).
    fn precheck(&self, frame: &Map<String, Value>) -> Option<(&'static str, &'static str)>;
    /// An error frame.
    fn error(&self, code: &str, data: &str, message_id: Option<&str>) -> Value;
    /// The code of a malformed frame.
    fn invalid(&self) -> &'static str;
    /// The code of a turn that could not start.
    fn turn_error(&self, e: &TurnError) -> &'static str;
    /// An event of the send `message_id` in session `session_id`; `None` to skip it.
    fn event(&self, run_id: &str, ev: &AgentEvent, session_id: &str, message_id: &str) -> Option<Value>;
    /// The front door, as the metrics name it.
    fn door(&self) -> crate::metrics::Door;
}

/// AstrBot's Open API chat socket: `type` frames, `message_id` on each.
pub struct OpenApiDialect;

impl ChatDialect for OpenApiDialect {
    fn door(&self) -> crate::metrics::Door {
        crate::metrics::Door::ChatWs
    }
    // AstrBot checks the message before the username on this socket.
    fn precheck(&self, frame: &Map<String, Value>) -> Option<(&'static str, &'static str)> {
        let absent = |k: &str| frame.get(k).is_none_or(Value::is_null);
        (absent("message") && absent("files")).then_some(("INVALID_MESSAGE", "Missing key: message"))
    }
    fn error(&self, code: &str, data: &str, message_id: Option<&str>) -> Value {
        let mut v = json!({"type": "error", "code": code, "data": data});
        if let Some(m) = message_id {
            v["message_id"] = json!(m);
        }
        v
    }
    fn invalid(&self) -> &'static str {
        "INVALID_MESSAGE"
    }
    fn turn_error(&self, e: &TurnError) -> &'static str {
        super::errors::ws_code(e)
    }
    fn event(&self, run_id: &str, ev: &AgentEvent, session_id: &str, mid: &str) -> Option<Value> {
        Some(match ev {
            AgentEvent::SessionId { session_id } => {
                json!({"type": "session_id", "data": null, "session_id": session_id, "message_id": mid})
            }
            AgentEvent::UserMessageSaved { .. } => return None,
            AgentEvent::MessageSaved { id, created_at, .. } => {
                json!({"type": "message_saved", "data": {"id": id, "created_at": iso_utc(*created_at)}, "session_id": session_id, "message_id": mid})
            }
            other => {
                // Every frame names its send, so concurrent sends can be told apart.
                let mut v = chat_event_json(run_id, other)?;
                v["message_id"] = json!(mid);
                v
            }
        })
    }
}

/// Chat mode of the Live / unified sockets: AstrBot's chat events with `"ct": "chat"` first.
pub struct UnifiedDialect;

impl ChatDialect for UnifiedDialect {
    fn door(&self) -> crate::metrics::Door {
        crate::metrics::Door::UnifiedWs
    }
    fn precheck(&self, frame: &Map<String, Value>) -> Option<(&'static str, &'static str)> {
        (!frame.get("message").is_some_and(Value::is_array))
            .then_some(("INVALID_MESSAGE_FORMAT", "message must be list"))
    }
    fn error(&self, code: &str, data: &str, message_id: Option<&str>) -> Value {
        let mut v = json!({"ct": "chat", "t": "error", "data": data, "code": code});
        if let Some(m) = message_id {
            v["message_id"] = json!(m);
        }
        v
    }
    fn invalid(&self) -> &'static str {
        "INVALID_MESSAGE_FORMAT"
    }
    fn turn_error(&self, e: &TurnError) -> &'static str {
        use crate::agent::errors::SessionError;
        match e {
            TurnError::Session(SessionError::Busy) | TurnError::TooManyRuns => "PROCESSING_ERROR",
            TurnError::Limited(x) => x.code(),
            _ if super::errors::turn_error_status(e).is_server_error() => "PROCESSING_ERROR",
            _ => "INVALID_MESSAGE_FORMAT",
        }
    }
    fn event(&self, run_id: &str, ev: &AgentEvent, _session_id: &str, mid: &str) -> Option<Value> {
        let Value::Object(o) = chat_event_json(run_id, ev)? else { return None };
        let mut framed = Map::new();
        framed.insert("ct".into(), json!("chat"));
        framed.extend(o);
        framed.insert("message_id".into(), json!(mid));
        Some(Value::Object(framed))
    }
}

/// The sends in flight on one socket.
pub struct ChatMux<D: ChatDialect> {
    dialect: std::sync::Arc<D>,
    sends: HashMap<String, (JoinHandle<()>, CancellationToken)>,
    too_many: String,
}

impl<D: ChatDialect> ChatMux<D> {
    pub fn new(dialect: D, too_many: String) -> Self {
        Self { dialect: std::sync::Arc::new(dialect), sends: HashMap::new(), too_many }
    }

    pub fn dialect(&self) -> &D {
        &self.dialect
    }

    /// The `message_id` a send frame names, or a new one.
    pub fn message_id(frame: &Map<String, Value>) -> String {
        match frame.get("message_id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Starts a send: checked and parsed in its own task, then its run's events forwarded.
    /// `default_session` is where a send that names no session goes.
    pub fn send(
        &mut self,
        state: &AppState,
        caller: &Caller,
        mid: String,
        body: Map<String, Value>,
        default_session: Option<String>,
        out: &Outbox,
    ) {
        self.sends.retain(|_, (t, _)| !t.is_finished());
        let d = &self.dialect;
        if self.sends.contains_key(&mid) {
            return out.control(&d.error(d.invalid(), "Duplicate active message_id", Some(&mid)));
        }
        if self.sends.len() >= MAX_SENDS {
            return out.control(&d.error("PROCESSING_ERROR", &self.too_many, Some(&mid)));
        }
        if let Some((code, text)) = d.precheck(&body) {
            return out.control(&d.error(code, text, Some(&mid)));
        }
        let stop = CancellationToken::new();
        let (agent, caller, out, d, m, st) =
            (state.agent.clone(), caller.clone(), out.clone(), self.dialect.clone(), mid.clone(), stop.clone());
        let task = state.tasks.spawn(async move {
            // Each turn is a request of the key (its `requests_per_minute`).
            let started = match super::chat::parse_chat(&caller, &body, default_session.as_deref(), d.door()) {
                Ok(req) => match agent.admit_request(&caller).await {
                    Ok(()) => agent.begin_turn(req).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let run = match started {
                Ok(s) => s.run,
                Err(e) => {
                    let code = d.turn_error(&e);
                    // The HTTP mapping's text: internal failures never show their cause.
                    let text = super::errors::turn_error(e).message;
                    return out.control(&d.error(code, &text, Some(&m)));
                }
            };
            forward(&*d, &run, &out, &m, &st).await;
        });
        self.sends.insert(mid, (task, stop));
    }

    /// Interrupts the send `target` (all when `None`): its run stops and saves what it said.
    pub fn interrupt(&self, target: Option<&str>) {
        for (mid, (_, stop)) in &self.sends {
            if target.is_none_or(|t| t == mid) {
                stop.cancel();
            }
        }
    }

    /// The socket is gone: the forwarders stop; the runs go on and are saved.
    pub fn close(&mut self) {
        for (_, (t, _)) in self.sends.drain() {
            t.abort();
        }
    }
}

/// Forwards a send's run events; `stop` (interrupt) cancels the run itself.
async fn forward<D: ChatDialect>(
    d: &D,
    run: &std::sync::Arc<crate::agent::runs::RunHandle>,
    out: &Outbox,
    mid: &str,
    stop: &CancellationToken,
) {
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
            let Some(frame) = d.event(&run.run_id, &ev, &run.session_id, mid) else { continue };
            if !out.data(&frame).await {
                return;
            }
        }
    }
}
