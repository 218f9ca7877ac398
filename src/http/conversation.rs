//! `POST /v1/conversation` (seed 002): the older chatbot HTTP API.
//!
//! Request `{session_id, user_id, group_id?, nickname?, messages:[{type: text|image|voice, value,
//! format?}], is_manager?, prefered_format?}`. Images (base64) go to the model; voice (base64 +
//! `format`) in any supported format is decoded and transcribed by the agent. The answer is SSE:
//! one `data: {"messages":[…]}` frame with the reply as `text`, plus `voice` as a `data:` URL in
//! `prefered_format` (wav, mp3, silk, amr; default wav) when the profile speaks (`tts = true`);
//! asking for another format is a 400 that names the supported ones.
//!
//! Sessions are stored as `conv!<session_id>` (platform `conversation`), owned by the first
//! `user_id`; a group's members share them.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::agent::events::AgentEvent;
use crate::agent::turn::{ProfileSelect, SessionTarget, TurnInput, TurnKind, TurnRequest};
use crate::app::AppState;
use crate::audio::codec::AudioFormat;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};

pub const SESSION_PREFIX: &str = "conv!";
/// Voice formats astrgate can produce, named in `prefered_format` as [`AudioFormat::name`].
pub const SUPPORTED_VOICE_OUT: [AudioFormat; 4] =
    [AudioFormat::Wav, AudioFormat::Mp3, AudioFormat::Silk, AudioFormat::Amr];
const MAX_MESSAGES: usize = 32;

fn text_field(obj: &Map<String, Value>, key: &str, required: bool) -> ApiResult<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) if required => Err(ApiError::bad_request(format!("Missing key: {key}"))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            Err(ApiError::bad_request(format!("{key} is empty")))
        }
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        // Some bots send numeric ids.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ApiError::bad_request(format!("Invalid request body: {key} must be a string"))),
    }
}

/// Bodies above this size count as large media requests.
const LARGE_BODY: u64 = 1024 * 1024;

/// Admits at most `[compat] max_concurrent_large_bodies` large requests (over 1 MiB, or of
/// unknown length) at once, before their body is read: each one briefly holds several copies
/// of its media (the body, the parsed JSON, the decoded bytes, the model request), so their
/// number, not only their size, bounds memory. Others wait up to 10 s, then get 503.
pub async fn limit_large_bodies(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(permit) = admit_large_body(&state, req.headers()).await else {
        let mut res = axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many large requests in progress; try again shortly",
        ));
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(5));
        return res;
    };
    let res = next.run(req).await;
    drop(permit);
    res
}

/// A place among the large requests (`None`: the request is small), waiting up to 10 s;
/// `Err` when none became free. Shared with the OpenAI-compatible front door.
pub async fn admit_large_body(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ()> {
    let len =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if len.is_some_and(|l| l <= LARGE_BODY) {
        return Ok(None);
    }
    let wait = tokio::time::timeout(std::time::Duration::from_secs(10), state.large_bodies.clone().acquire_owned());
    match wait.await {
        Ok(Ok(permit)) => Ok(Some(permit)),
        _ => Err(()),
    }
}

pub async fn converse(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("Invalid request body: expected a JSON object"))?;
    let session_id = text_field(obj, "session_id", true)?.unwrap_or_default();
    let user_id = text_field(obj, "user_id", true)?.unwrap_or_default();
    let group_id = text_field(obj, "group_id", false)?;
    let nickname = text_field(obj, "nickname", false)?;
    if session_id.chars().count() > crate::agent::session::MAX_SESSION_ID_CHARS || user_id.chars().count() > 255 {
        return Err(ApiError::bad_request("session_id or user_id is too long"));
    }
    // A key bound to a username may only speak as that user.
    if let Caller::ApiKey { username: Some(bound), .. } = &caller
        && bound != &user_id
    {
        return Err(ApiError::forbidden(super::params::BOUND_TO_ANOTHER));
    }
    let format =
        text_field(obj, "prefered_format", false)?.map(|f| f.to_ascii_lowercase()).unwrap_or_else(|| "wav".into());
    let messages = match obj.get("messages") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("Missing key: messages")),
        Some(Value::Array(a)) if a.is_empty() => return Err(ApiError::bad_request("messages must not be empty")),
        Some(Value::Array(a)) if a.len() > MAX_MESSAGES => {
            return Err(ApiError::bad_request(format!("too many messages (max {MAX_MESSAGES})")));
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::bad_request("messages must be a list")),
    };

    let agent = &state.agent;
    let speaks = agent.compat_profile().tts && agent.providers.tts().is_some();
    let voice_out = match SUPPORTED_VOICE_OUT.into_iter().find(|f| f.name() == format) {
        Some(f) => f,
        None if speaks => {
            let names: Vec<&str> = SUPPORTED_VOICE_OUT.iter().map(|f| f.name()).collect();
            return Err(ApiError::bad_request(format!(
                "prefered_format \"{format}\" is not supported: astrgate has no {format} encoder; supported formats: {}",
                names.join(", ")
            )));
        }
        None => AudioFormat::Wav,
    };

    let skey = format!("{SESSION_PREFIX}{session_id}");
    agent.precheck_compat(&skey).await?;
    // Validate, decode and transcribe everything before anything is stored.
    let mut decoded = super::conversation_input::decode(agent, &caller, messages).await?;
    // Everything is valid: only now are the media kept, and a request that still fails (the
    // session turning busy meanwhile) takes its media with it.
    let owner = caller.owner_tag();
    let saved = agent.save_media(&owner, std::mem::take(&mut decoded.media), &mut decoded.stored_parts).await?;
    let model_parts = decoded.model_parts;
    let model = if model_parts.iter().all(|p| p["type"] == "text") {
        Value::String(model_parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"))
    } else {
        Value::Array(model_parts)
    };
    let mut stored = json!({"type": "user", "message": decoded.stored_parts, "user_id": user_id});
    if let Some(n) = &nickname {
        stored["nickname"] = json!(n);
    }
    if let Some(g) = &group_id {
        stored["group_id"] = json!(g);
    }
    let req = TurnRequest {
        caller: caller.clone(),
        username: user_id,
        session: SessionTarget::Compat { id: skey, platform: "conversation" },
        input: TurnInput::Built { stored, model, title: None },
        profile: ProfileSelect::Compat,
        provider: None,
        model: None,
        streaming: None,
        kind: TurnKind::Compat { vars: Vec::new() },
        reuse_checkpoint: None,
        door: crate::metrics::Door::Conversation,
    };
    let run = match agent.begin_turn(req).await {
        Ok(started) => started.run,
        Err(e) => {
            agent.discard_media(&saved).await;
            return Err(e.into());
        }
    };

    let agent = state.agent.clone();
    let stream = futures_util::stream::once(async move {
        let mut sub = run.subscribe(0);
        let mut batch = Vec::new();
        let mut failure: Option<(String, String)> = None;
        let mut text = String::new();
        // Read to the end of the run (its reply saved, its session free again).
        while sub.recv(&mut batch).await {
            for (_, ev) in batch.drain(..) {
                match &*ev {
                    AgentEvent::Complete { text: t, .. } => text = t.clone(),
                    AgentEvent::Error { message, code } if failure.is_none() => {
                        failure = Some((code.clone(), message.clone()))
                    }
                    _ => {}
                }
            }
        }
        let frame = match failure {
            Some((code, message)) => {
                json!({"messages": [{"type": "text", "value": message}], "error": {"code": code, "message": message}})
            }
            None => {
                let mut msgs = vec![json!({"type": "text", "value": text})];
                if speaks && !text.trim().is_empty() {
                    match agent.synthesize(&text, voice_out).await {
                        Ok(audio) => {
                            let b64 = base64::engine::general_purpose::STANDARD.encode(&audio);
                            let url = format!("data:{};base64,{b64}", voice_out.mime());
                            msgs.push(json!({"type": "voice", "value": url, "format": format}));
                        }
                        Err(e) => tracing::warn!(error = %e, "conversation: speaking the reply failed"),
                    }
                }
                json!({"messages": msgs})
            }
        };
        Ok::<Bytes, std::convert::Infallible>(Bytes::from(format!("data: {frame}\n\n")))
    });
    let mut res = Response::new(Body::from_stream(stream));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}
