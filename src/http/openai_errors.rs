//! Errors of the OpenAI-compatible front door, and only of it: OpenAI's error object
//! `{"error":{"message","type","param","code"}}` with a real status. Each typed error of the
//! domain is mapped here by its variant; provider failures show their public message (the detail
//! is logged where they happen), our own failures `Internal server error`.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::agent::completion::CompletionError;
use crate::agent::errors::{SessionError, TurnError};
use crate::agent::stateless_audio::SpeakError;
use crate::auth::caller::AuthFailure;
use crate::error::ApiError;
use crate::providers::llm::LlmError;
use crate::providers::stt::SttError;

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

/// One OpenAI error object and its status.
#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Sent as `Retry-After` (seconds).
    pub retry_after: Option<u64>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code, retry_after: None }
    }

    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        Self { param: param.map(str::to_string), ..Self::new(StatusCode::BAD_REQUEST, INVALID, None, message) }
    }

    fn retry(self, secs: u64) -> Self {
        Self { retry_after: Some(secs), ..self }
    }

    /// Logs `cause` and answers 500 without revealing it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, SERVER, None, "Internal server error")
    }

    /// A store failure: 503 `database_unavailable` while the database cannot be reached, else 500.
    pub fn store(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVER,
                Some("database_unavailable"),
                "Database unavailable",
            )
            .retry(5);
        }
        Self::internal(e)
    }

    /// `{"error": {…}}`, also the last chunk of a stream that failed.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        res
    }
}

/// The route layer's refusal (see [`crate::auth::caller::Guard`]).
pub fn auth_failure(e: AuthFailure) -> Response {
    let err = match e {
        AuthFailure::InsufficientScope => {
            OpenAiError::new(StatusCode::FORBIDDEN, "permission_error", Some("insufficient_scope"), e.to_string())
        }
        AuthFailure::Limited(x) => limited(x),
        AuthFailure::Store(e) => OpenAiError::store(e),
        AuthFailure::Missing | AuthFailure::InvalidKey | AuthFailure::TokenExpired | AuthFailure::InvalidToken => {
            OpenAiError::new(StatusCode::UNAUTHORIZED, INVALID, Some("invalid_api_key"), e.to_string())
        }
    };
    err.into_response()
}

/// A key's limit, as OpenAI reports its own: 429 `rate_limit_exceeded` (requests, concurrent
/// runs) or 429 `insufficient_quota` (the day's tokens).
pub fn limited(x: crate::governance::Exceeded) -> OpenAiError {
    use crate::governance::Exceeded;
    let (kind, code) = match x {
        Exceeded::Rate { .. } => ("requests", "rate_limit_exceeded"),
        Exceeded::Concurrency => ("requests", "rate_limit_exceeded"),
        Exceeded::Tokens => ("insufficient_quota", "insufficient_quota"),
    };
    OpenAiError::new(StatusCode::TOO_MANY_REQUESTS, kind, Some(code), x.to_string()).retry(x.retry_after_secs())
}

/// An error of the framework's extractors (a body over the limit, malformed JSON), which come
/// typed as the envelope's [`ApiError`]: its status decides the kind, its text is for the client.
impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        match e.status {
            s if s.is_server_error() => Self::new(s, SERVER, None, "Internal server error"),
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(e.status, INVALID, Some("request_too_large"), e.message),
            s => Self::new(s, INVALID, None, e.message),
        }
    }
}

pub fn completion_error(e: CompletionError) -> OpenAiError {
    match e {
        CompletionError::ModelNotFound(m) => OpenAiError {
            param: Some("model".into()),
            ..OpenAiError::new(
                StatusCode::NOT_FOUND,
                INVALID,
                Some("model_not_found"),
                format!("The model `{m}` does not exist or you do not have access to it."),
            )
        },
        CompletionError::Invalid { param, message } => OpenAiError::invalid(Some(&param), message),
        CompletionError::Turn(t) => turn_error(t),
        CompletionError::Upstream(u) => llm_error(&u),
        CompletionError::Cancelled => {
            OpenAiError::new(StatusCode::SERVICE_UNAVAILABLE, SERVER, Some("shutting_down"), e.to_string()).retry(5)
        }
    }
}

/// A provider failure: 503 when the provider is unreachable or turning requests away (retry
/// later), else 502; always the public message.
pub fn llm_error(e: &LlmError) -> OpenAiError {
    let (status, code) = match e {
        LlmError::Connect(_) | LlmError::Upstream { status: 429 | 503 | 529, .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable")
        }
        LlmError::FirstTokenTimeout(_) | LlmError::IdleTimeout(_) => (StatusCode::BAD_GATEWAY, "upstream_timeout"),
        LlmError::Upstream { .. } | LlmError::Interrupted(_) | LlmError::Protocol(_) => {
            (StatusCode::BAD_GATEWAY, "upstream_error")
        }
    };
    let err = OpenAiError::new(status, SERVER, Some(code), e.public_message());
    if status == StatusCode::SERVICE_UNAVAILABLE { err.retry(5) } else { err }
}

pub fn turn_error(e: TurnError) -> OpenAiError {
    let msg = e.to_string();
    match e {
        TurnError::Config(_) | TurnError::Invalid(_) => OpenAiError::invalid(None, msg),
        TurnError::Audio { .. } | TurnError::Transcription { err: SttError::Unsupported(_), .. } => {
            OpenAiError { code: Some("invalid_audio"), ..OpenAiError::invalid(Some("file"), msg) }
        }
        TurnError::User(_) | TurnError::Session(SessionError::NotYours | SessionError::RunNotYours) => {
            OpenAiError::new(StatusCode::FORBIDDEN, "permission_error", None, msg)
        }
        TurnError::Session(SessionError::Store(e)) | TurnError::Store(e) => OpenAiError::store(e),
        TurnError::Session(_) => OpenAiError::invalid(None, msg),
        TurnError::Transcription { .. } => {
            OpenAiError::new(StatusCode::BAD_GATEWAY, SERVER, Some("upstream_error"), msg)
        }
        TurnError::NoStt(_) | TurnError::NoProvider => {
            OpenAiError::new(StatusCode::SERVICE_UNAVAILABLE, SERVER, Some("not_configured"), msg)
        }
        TurnError::TooManyRuns => {
            OpenAiError::new(StatusCode::TOO_MANY_REQUESTS, "requests", Some("rate_limit_exceeded"), msg).retry(1)
        }
        TurnError::Overloaded(_) => OpenAiError::new(StatusCode::SERVICE_UNAVAILABLE, SERVER, None, msg).retry(5),
        TurnError::Limited(x) => limited(x),
        TurnError::Internal(m) => OpenAiError::internal(m),
    }
}

pub fn speak_error(e: SpeakError) -> OpenAiError {
    use crate::agent::audio::{AudioError, SpeechError};
    match e {
        SpeakError::Turn(t) => turn_error(t),
        SpeakError::Speech(SpeechError::NoTts) => OpenAiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER,
            Some("not_configured"),
            "No TTS provider is configured",
        ),
        SpeakError::Speech(SpeechError::Tts(t)) => {
            tracing::warn!(error = %t, "speech failed");
            OpenAiError::new(StatusCode::BAD_GATEWAY, SERVER, Some("upstream_error"), t.public_message())
        }
        SpeakError::Speech(SpeechError::Audio(a @ (AudioError::Codec(_) | AudioError::Worker(_)))) => {
            OpenAiError::internal(a)
        }
    }
}

/// A JSON body whose rejections are OpenAI error objects: malformed JSON or a wrong
/// Content-Type 400, an oversized body 413, a stalled one 408.
pub struct OpenAiJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for OpenAiJson {
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<Value>::from_request(req, state).await {
            Ok(Json(v)) => Ok(OpenAiJson(v)),
            Err(rej) => Err(crate::error::json_rejection(rej).into()),
        }
    }
}
