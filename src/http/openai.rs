//! The OpenAI-compatible front door (any OpenAI SDK, LangChain, LiteLLM…): `GET /v1/models`,
//! `POST /v1/chat/completions` ([`super::openai_chat`], streamed by [`super::openai_stream`]),
//! `POST /v1/audio/speech` and `/v1/audio/transcriptions` ([`super::openai_audio`]). The same
//! keys as the Open API (`Authorization: Bearer abk_…`): scope `chat` for completions and audio,
//! any valid key for the models. Errors are OpenAI's error objects ([`super::openai_errors`]).
//! Stateless: the request carries the conversation, nothing is stored.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::openai_errors::{OpenAiError, auth_failure, completion_error};
use crate::agent::completion::{CompletionError, ModelEntry};
use crate::app::AppState;
use crate::auth::Caller;
use crate::auth::Scope;
use crate::auth::caller::{Guard, Requirement, require_guard};

/// The routes, each behind its requirement. Mounted at the root, beside `/v1/conversation`.
pub fn routes(state: &AppState) -> Router<AppState> {
    let guard = |requirement| {
        from_fn_with_state(Guard { auth: state.auth(), requirement, reject: auth_failure }, require_guard)
    };
    let cfg = &state.config.openai;
    let chat = Requirement::Scope(Scope::Chat);
    Router::new()
        .route("/v1/models", get(list_models).route_layer(guard(Requirement::AnyKey)))
        .route("/v1/models/{*model}", get(get_model).route_layer(guard(Requirement::AnyKey)))
        .route(
            "/v1/chat/completions",
            post(super::openai_chat::completions)
                .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
                .layer(from_fn_with_state(state.clone(), limit_large_bodies))
                .route_layer(guard(chat)),
        )
        .route("/v1/audio/speech", post(super::openai_audio::speech).route_layer(guard(chat)))
        .route(
            "/v1/audio/transcriptions",
            post(super::openai_audio::transcriptions)
                // The other form fields are small; the file is checked against its own limit.
                .layer(DefaultBodyLimit::max(cfg.max_audio_bytes.saturating_add(64 * 1024)))
                .layer(from_fn_with_state(state.clone(), limit_large_bodies))
                .route_layer(guard(chat)),
        )
}

/// Large bodies share the `/v1/conversation` limit on how many are read at once.
async fn limit_large_bodies(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(permit) = super::conversation::admit_large_body(&state, req.headers()).await else {
        let msg = "Too many large requests in progress; try again shortly";
        let mut err = OpenAiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", None, msg);
        err.retry_after = Some(5);
        return err.into_response();
    };
    let res = next.run(req).await;
    drop(permit);
    res
}

fn model_json(m: &ModelEntry, created: i64) -> Value {
    json!({"id": m.id, "object": "model", "created": created, "owned_by": m.owned_by})
}

/// OpenAI's list object: each profile id and each `provider_id/model`.
pub async fn list_models(State(state): State<AppState>, _caller: Caller) -> Response {
    let data: Vec<Value> = state.agent.models().iter().map(|m| model_json(m, state.started_at)).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn get_model(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> Response {
    match state.agent.models().iter().find(|m| m.id == id) {
        Some(m) => axum::Json(model_json(m, state.started_at)).into_response(),
        None => completion_error(CompletionError::ModelNotFound(id)).into_response(),
    }
}
