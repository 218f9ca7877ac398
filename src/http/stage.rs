//! The stage-coded call-centre API (seed 004): `POST /chat[?stream=true]`, `POST /set_info`,
//! `POST /get_info`, `DELETE /delete_session`.
//!
//! The model announces the conversation stage with a `<state>NNNN</state>` tag; the code is
//! remapped and named by `[stage]` (defaults from the seed) and the tag never reaches the text.
//! Streaming uses named SSE events `stage_code`, `text_delta`, `done`, `error`. Session
//! variables set with `/set_info` fill `{{key}}` placeholders in the profile's system prompt.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::params::Params;
use crate::agent::events::AgentEvent;
use crate::agent::runs::Subscription;
use crate::agent::turn::{ProfileSelect, SessionTarget, TurnInput, TurnKind, TurnRequest};
use crate::app::AppState;
use crate::auth::Caller;
use crate::compat::stage_tag::{Piece, StageTagFilter, resolve};
use crate::compat::tables;
use crate::error::{ApiError, ApiJson, ApiResult};

const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 64 * 1024;
/// Stage sessions are stored under this prefix and this owner.
pub const SESSION_PREFIX: &str = "stage!";
pub const OWNER: &str = "stage";

fn required_str<'a>(obj: &'a Map<String, Value>, key: &str) -> ApiResult<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(ApiError::bad_request(format!("Missing key: {key}"))),
        Some(Value::String(s)) if s.trim().is_empty() => Err(ApiError::bad_request(format!("{key} is empty"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!("Invalid request body: {key} must be a string"))),
    }
}

/// `timeStamp` is echoed back as sent (a string, or a number some clients send).
fn timestamp(obj: &Map<String, Value>) -> ApiResult<Value> {
    match obj.get("timeStamp") {
        None | Some(Value::Null) => Err(ApiError::bad_request("Missing key: timeStamp")),
        Some(v @ (Value::String(_) | Value::Number(_))) => Ok(v.clone()),
        Some(_) => Err(ApiError::bad_request("Invalid request body: timeStamp must be a string")),
    }
}

fn object(body: &Value) -> ApiResult<&Map<String, Value>> {
    body.as_object().ok_or_else(|| ApiError::bad_request("Invalid request body: expected a JSON object"))
}

fn session_key(session_id: &str) -> ApiResult<String> {
    if session_id.trim().chars().count() > crate::agent::session::MAX_SESSION_ID_CHARS {
        return Err(ApiError::bad_request("sessionId is too long (max 128 characters)"));
    }
    Ok(format!("{SESSION_PREFIX}{}", session_id.trim()))
}

fn ok_body(session_id: &str, ts: &Value, extra: Option<(&str, Value)>) -> Response {
    let mut v = json!({"code": 200, "msg": "success", "sessionId": session_id, "timeStamp": ts});
    if let Some((k, x)) = extra {
        v[k] = x;
    }
    axum::Json(v).into_response()
}

pub async fn set_info(
    State(state): State<AppState>,
    _caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let obj = object(&body)?;
    let sid = required_str(obj, "sessionId")?;
    let ts = timestamp(obj)?;
    let key = required_str(obj, "key")?.trim();
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(ApiError::bad_request(format!("key is too long (max {MAX_KEY_CHARS} characters)")));
    }
    let value = match obj.get("value") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("Missing key: value")),
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        Some(_) => return Err(ApiError::bad_request("Invalid request body: value must be a string")),
    };
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("value is too large (max {MAX_VALUE_CHARS} characters)"),
        ));
    }
    state.agent.set_session_var(&session_key(sid)?, key, &value).await?;
    Ok(ok_body(sid, &ts, None))
}

pub async fn get_info(
    State(state): State<AppState>,
    _caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let obj = object(&body)?;
    let sid = required_str(obj, "sessionId")?;
    let ts = timestamp(obj)?;
    let vars = state.agent.session_vars(&session_key(sid)?).await?;
    let data: Map<String, Value> = vars.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    Ok(ok_body(sid, &ts, Some(("data", Value::Object(data)))))
}

/// Deletes the session's variables and its conversation history.
pub async fn delete_session(
    State(state): State<AppState>,
    _caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let obj = object(&body)?;
    let sid = required_str(obj, "sessionId")?;
    let ts = timestamp(obj)?;
    state.agent.delete_compat_session(&session_key(sid)?, "stage").await?;
    Ok(ok_body(sid, &ts, None))
}

/// One SSE event as seed 004's server writes it: `json.dumps(data, ensure_ascii=False)`, i.e.
/// `", "` and `": "` separators and non-ASCII left as is. Clients that match bytes see the same.
fn named_event(name: &str, data: &Value) -> String {
    let mut out = format!("event: {name}\ndata: ").into_bytes();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, crate::compat::PythonJson);
    // A `Value` always serialises; writing into a Vec cannot fail.
    let _ = serde::Serialize::serialize(data, &mut ser);
    out.extend_from_slice(b"\n\n");
    String::from_utf8(out).unwrap_or_default()
}

pub async fn stage_chat(
    State(state): State<AppState>,
    caller: Caller,
    q: Params,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let obj = object(&body)?;
    let sid = required_str(obj, "sessionId")?.trim().to_string();
    let ts = timestamp(obj)?;
    let text = required_str(obj, "text")?.trim().to_string();
    let stream = q
        .get("stream")
        .map(|s| matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        .or_else(|| obj.get("stream").and_then(Value::as_bool))
        .unwrap_or(false);
    let skey = session_key(&sid)?;
    let vars = state.agent.session_vars(&skey).await?;
    let stored = json!({"type": "user", "message": [{"type": "plain", "text": text}]});
    let req = TurnRequest {
        caller,
        username: OWNER.into(),
        session: SessionTarget::Compat { id: skey, platform: "stage" },
        input: TurnInput::Built { stored, model: Value::String(text), title: None },
        profile: ProfileSelect::Compat,
        provider: None,
        model: None,
        streaming: None,
        kind: TurnKind::Compat { vars },
        reuse_checkpoint: None,
        door: crate::metrics::Door::Stage,
    };
    let run = state.agent.begin_turn(req).await?.run;
    let (remap, names) = tables(&state.config.stage);
    let sub = run.subscribe(0);
    if !stream {
        return collect(sub, &sid, &ts, &remap, &names).await;
    }
    // (subscription, tag filter, batch, failed, over)
    let st = (sub, StageTagFilter::new(), Vec::new(), false, false);
    let body = futures_util::stream::unfold(st, move |(mut sub, mut filter, mut batch, mut failed, mut over)| {
        let (remap, names) = (remap.clone(), names.clone());
        async move {
            if over {
                return None;
            }
            batch.clear();
            if !sub.recv(&mut batch).await {
                return None;
            }
            let mut out = String::new();
            for (_, ev) in &batch {
                let mut pieces = match &**ev {
                    AgentEvent::Delta { text, reasoning: false } => filter.push(text),
                    AgentEvent::Complete { .. } => filter.finish(),
                    AgentEvent::Error { message, .. } if !failed => {
                        failed = true;
                        out.push_str(&named_event("error", &json!({"msg": message, "code": "500"})));
                        continue;
                    }
                    // `End` follows the saved reply, so the next request finds the session free.
                    AgentEvent::End => {
                        if !failed {
                            out.push_str(&named_event("done", &json!({"status": "completed"})));
                        }
                        over = true;
                        break;
                    }
                    _ => continue,
                };
                if !failed {
                    out.push_str(&render(&mut pieces, &remap, &names));
                }
            }
            Some((Ok::<Bytes, std::convert::Infallible>(Bytes::from(out)), (sub, filter, batch, failed, over)))
        }
    });
    let mut res = Response::new(Body::from_stream(body));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

fn render(
    pieces: &mut Vec<Piece>,
    remap: &std::collections::BTreeMap<String, String>,
    names: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    for p in pieces.drain(..) {
        match p {
            Piece::Stage(code) => {
                let (code, name) = resolve(&code, remap, names);
                out.push_str(&named_event("stage_code", &json!({"nextStageCode": code, "nextStage": name})));
            }
            Piece::Text(t) => out.push_str(&named_event("text_delta", &json!({"text": t}))),
        }
    }
    out
}

/// Non-streaming: waits for the reply and answers one JSON object.
async fn collect(
    mut sub: Subscription,
    sid: &str,
    ts: &Value,
    remap: &std::collections::BTreeMap<String, String>,
    names: &std::collections::BTreeMap<String, String>,
) -> ApiResult<Response> {
    let mut filter = StageTagFilter::new();
    let mut pieces = Vec::new();
    let mut batch = Vec::new();
    let mut failure: Option<String> = None;
    while sub.recv(&mut batch).await {
        for (_, ev) in batch.drain(..) {
            match &*ev {
                AgentEvent::Delta { text, reasoning: false } => pieces.extend(filter.push(text)),
                AgentEvent::Error { message, .. } => failure = failure.or(Some(message.clone())),
                _ => {}
            }
        }
    }
    if let Some(message) = failure {
        return Err(ApiError::new(StatusCode::BAD_GATEWAY, message));
    }
    pieces.extend(filter.finish());
    let mut code = String::new();
    let mut name = String::new();
    let mut text = String::new();
    for p in pieces {
        match p {
            Piece::Stage(c) => (code, name) = resolve(&c, remap, names),
            Piece::Text(t) => text.push_str(&t),
        }
    }
    Ok(axum::Json(json!({"sessionId": sid, "timeStamp": ts, "nextStageCode": code, "nextStage": name, "text": text}))
        .into_response())
}
