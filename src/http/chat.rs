//! `POST /api/v1/chat` (scope `chat`): validates a turn with AstrBot's texts and order (notes
//! §6.2), starts a run and streams it as SSE.
//!
//! Everything is validated before anything is written, so a rejected request leaves no session
//! or message behind. [`prepare`] is shared with the WebSocket chat front doors.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::params;
use super::sse;
use crate::agent::input::{self, EMPTY_MESSAGE, InputError, Part, Resolved};
use crate::agent::pipeline::Turn;
use crate::agent::profiles::{LookupError, Profile};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::store::SessionRecord;

const TITLE_CHARS: usize = 40;

/// A validated turn, ready to start.
pub struct Prepared {
    pub turn: Turn,
    /// The session to create first, when it is new.
    pub new_session: Option<SessionRecord>,
    /// A profile binding to persist on the session (`Some(None)` = back to the default).
    pub bind_profile: Option<Option<String>>,
    /// The session exists without an owner (made by a proactive message): claim it on start.
    pub claim: bool,
}

pub async fn send_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("Invalid request body: expected a JSON object"))?;
    let prepared = prepare(&state, &caller, obj, "webchat", None).await?;
    let handle = start(&state, prepared).await?;
    Ok(sse::stream_run(handle.subscribe(0), Duration::from_secs(state.config.server.sse_keepalive_secs.max(1))))
}

/// Creates the session if needed, binds the profile, and starts the run.
pub async fn start(state: &AppState, p: Prepared) -> ApiResult<Arc<crate::agent::runs::RunHandle>> {
    // A run that was just stopped may still be saving its partial reply: let it finish.
    state.agent.settle(&p.turn.session_id, Duration::from_secs(5)).await;
    if state.agent.runs.active_for_session(&p.turn.session_id).is_some() {
        return Err(ApiError::conflict("Session is busy"));
    }
    if let Some(s) = &p.new_session
        && !state.store.create_session(s).await?
    {
        // Created concurrently by someone else: ownership decides.
        params::owned_session(state, &s.session_id, &s.creator).await?;
    }
    if p.claim && !state.store.claim_session(&p.turn.session_id, &p.turn.username).await? {
        // Claimed concurrently: ownership decides.
        params::owned_session(state, &p.turn.session_id, &p.turn.username).await?;
    }
    if let Some(binding) = &p.bind_profile {
        state.store.set_session_profile(&p.turn.session_id, binding.as_deref()).await?;
    }
    Ok(state.agent.start(p.turn)?)
}

/// Validates a chat request body (AstrBot's order and texts) into a [`Prepared`] turn.
/// `default_session` is a session id the server chose for requests that name none (exempt from
/// the reserved-prefix rule; a new session otherwise).
pub async fn prepare(
    state: &AppState,
    caller: &Caller,
    obj: &Map<String, Value>,
    platform_id: &str,
    default_session: Option<&str>,
) -> ApiResult<Prepared> {
    let username = params::username(caller, obj.get("username"))?;
    let session_id = session_id_of(obj)?.or_else(|| default_session.map(str::to_string));
    let existing = match &session_id {
        Some(id) => state.store.get_session(id).await?,
        None => None,
    };
    // A session created by a proactive message has no owner yet: the first chat claims it
    // (in `start`, once everything is validated).
    let claim = existing.as_ref().is_some_and(|s| s.creator.is_empty());
    if let Some(s) = &existing
        && s.creator != username
        && !claim
    {
        return Err(ApiError::forbidden("session_id belongs to another username"));
    }
    let chosen = chosen_profile(state, obj)?;
    let profile: Arc<Profile> = match (&chosen, &existing) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => s
            .profile_id
            .as_deref()
            .and_then(|id| state.profiles.get(id))
            .cloned()
            .unwrap_or_else(|| state.profiles.default_profile().clone()),
        (None, None) => state.profiles.default_profile().clone(),
    };

    let mut parts: Vec<Part> = Vec::new();
    let message = obj.get("message").filter(|v| !v.is_null());
    let files = obj.get("files").filter(|v| !v.is_null());
    if message.is_none() && files.is_none() {
        return Err(ApiError::bad_request("Missing key: message or files"));
    }
    if let Some(m) = message {
        parts.extend(input::parse_message(m, false).map_err(input_error)?);
    }
    if let Some(f) = files {
        parts.extend(input::parse_files(f).map_err(input_error)?);
    }
    if !input::has_content(&parts) {
        return Err(ApiError::bad_request(EMPTY_MESSAGE));
    }

    let provider = match obj.get("selected_provider").filter(|v| !v.is_null()) {
        Some(Value::String(id)) if !id.trim().is_empty() => state
            .providers
            .llm(id.trim())
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("selected_provider not found: {}", id.trim())))?,
        Some(Value::String(_)) | None => state.providers.for_profile(&profile).cloned().ok_or_else(|| {
            ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "No LLM provider is configured")
        })?,
        Some(_) => return Err(ApiError::bad_request("Invalid request body: selected_provider must be a string")),
    };
    let model = match obj.get("selected_model").filter(|v| !v.is_null()) {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
        Some(Value::String(_)) | None => profile.model.clone().unwrap_or_else(|| provider.model.clone()),
        Some(_) => return Err(ApiError::bad_request("Invalid request body: selected_model must be a string")),
    };
    let streaming = obj
        .get("flags")
        .and_then(|f| f.get("enable_streaming"))
        .and_then(Value::as_bool)
        .or_else(|| obj.get("enable_streaming").and_then(Value::as_bool))
        .unwrap_or(profile.streaming);

    let session_id = session_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let resolved = input::resolve(state.store.as_ref(), &state.prompt.attachments_dir, caller, &session_id, parts)
        .await
        .map_err(input_error)?;
    let transcripts = transcribe_records(state, &resolved).await?;
    let model_input = state.prompt.user_content(&resolved, &transcripts).await.map_err(|e| match e {
        crate::agent::prompt::PromptError::Invalid(m) => ApiError::bad_request(m),
        other => ApiError::internal(other),
    })?;

    let new_session = existing.is_none().then(|| {
        let title = resolved.iter().find_map(|p| match p {
            Resolved::Plain(t) if !t.trim().is_empty() => {
                Some(crate::util::truncate_chars(t.trim(), TITLE_CHARS).to_string())
            }
            _ => None,
        });
        SessionRecord { display_name: title, ..SessionRecord::new(&session_id, platform_id, &username) }
    });
    let bind_profile = chosen.map(|p| if p.is_default { None } else { Some(p.id.clone()) });

    Ok(Prepared {
        turn: Turn {
            run_id: uuid::Uuid::now_v7().to_string(),
            session_id,
            platform_id: existing.map(|s| s.platform_id).unwrap_or_else(|| platform_id.to_string()),
            username,
            owner: caller.owner_tag(),
            user_content: Some(input::stored_user_content(&resolved)),
            model_input,
            system_prompt: profile.system_prompt.clone(),
            history_turns: profile.history_turns,
            fresh_session: new_session.is_some(),
            prefetched_history: None,
            provider,
            model,
            streaming,
            show_reasoning: profile.show_reasoning,
            persist_events: true,
            speech: None,
            speak_reply: if profile.tts { state.providers.tts().cloned() } else { None },
            parent_cancel: None,
        },
        new_session,
        bind_profile,
        claim,
    })
}

/// `session_id`, else the deprecated `conversation_id` (only when `session_id` is absent).
fn session_id_of(obj: &Map<String, Value>) -> ApiResult<Option<String>> {
    let (key, v) = match obj.get("session_id") {
        Some(v) => ("session_id", v),
        None => match obj.get("conversation_id") {
            Some(v) => ("conversation_id", v),
            None => return Ok(None),
        },
    };
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            crate::agent::session::check_client_id(key, s).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(Some(s.to_string()))
        }
        _ => Err(ApiError::bad_request(format!("Invalid request body: {key} must be a string"))),
    }
}

/// `config_id` / `config_name`, with AstrBot's texts.
fn chosen_profile(state: &AppState, obj: &Map<String, Value>) -> ApiResult<Option<Arc<Profile>>> {
    if let Some(v) = obj.get("config_id").filter(|v| !v.is_null()) {
        let id =
            v.as_str().ok_or_else(|| ApiError::bad_request("Invalid request body: config_id must be a string"))?.trim();
        return state
            .profiles
            .get(id)
            .cloned()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("config_id not found: {id}")));
    }
    if let Some(v) = obj.get("config_name").filter(|v| !v.is_null()) {
        let name =
            v.as_str().ok_or_else(|| ApiError::bad_request("Invalid request body: config_name must be a string"))?;
        return match state.profiles.by_name(name) {
            Ok(p) => Ok(Some(p.clone())),
            Err(LookupError::Empty) => Err(ApiError::bad_request("config_name is empty")),
            Err(LookupError::NotFound) => Err(ApiError::bad_request(format!("config_name not found: {}", name.trim()))),
            Err(LookupError::Ambiguous) => {
                Err(ApiError::bad_request(format!("config_name is ambiguous, please use config_id: {}", name.trim())))
            }
        };
    }
    Ok(None)
}

pub fn input_error(e: InputError) -> ApiError {
    match e {
        InputError::Invalid(m) | InputError::NotFound(m) => ApiError::bad_request(m),
        InputError::Store(e) => ApiError::internal(e),
    }
}

/// STT text of every `record` attachment, in order; a clear error when no STT is configured.
async fn transcribe_records(state: &AppState, parts: &[Resolved]) -> ApiResult<Vec<String>> {
    let records: Vec<_> = parts
        .iter()
        .filter_map(|p| match p {
            Resolved::Attachment { rec, filename } if rec.kind == "record" => Some((rec, filename)),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let Some(stt) = state.providers.stt() else {
        return Err(ApiError::bad_request("No STT provider is configured: record attachments cannot be transcribed"));
    };
    const MAX_RECORDS: usize = 4;
    const MAX_RECORD_BYTES: i64 = 25 * 1024 * 1024;
    if records.len() > MAX_RECORDS {
        return Err(ApiError::bad_request(format!("too many record attachments in one message (max {MAX_RECORDS})")));
    }
    if let Some((_, name)) = records.iter().find(|(r, _)| r.size > MAX_RECORD_BYTES) {
        return Err(ApiError::bad_request(format!("record {name} is too large to transcribe (max 25 MiB)")));
    }
    let mut out = Vec::with_capacity(records.len());
    for (rec, filename) in records {
        let path = state.prompt.attachments_dir.join(&rec.stored_name);
        let bytes = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
        let text = stt.transcribe(Bytes::from(bytes), filename, &rec.mime_type).await.map_err(|e| {
            tracing::warn!(error = %e, "transcribing a record failed");
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                format!("transcribing {filename} failed: {}", e.public_message()),
            )
        })?;
        out.push(text);
    }
    Ok(out)
}
