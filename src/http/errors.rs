//! How the agent's typed errors look on the HTTP front doors: a status and AstrBot's text in
//! the envelope. The WebSocket dialects map the same errors to codes (`ws_code`).

use axum::http::StatusCode;

use crate::agent::errors::{SessionError, TurnError};
use crate::agent::runs::StartError;
use crate::auth::UserError;
use crate::error::ApiError;

pub fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::BoundToAnother | UserError::Reserved => ApiError::forbidden(e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

pub fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::TooLong(_)
        | SessionError::Reserved(..)
        | SessionError::NotAString(_)
        | SessionError::BadEventId
        | SessionError::EventIdOfAnotherRun => ApiError::bad_request(e.to_string()),
        SessionError::NotFound | SessionError::RunUnavailable => ApiError::not_found(e.to_string()),
        SessionError::NotYours | SessionError::RunNotYours => ApiError::forbidden(e.to_string()),
        SessionError::Busy => ApiError::conflict(e.to_string()),
        SessionError::Store(e) => ApiError::store(e),
    }
}

/// The HTTP status of a turn error.
pub fn turn_error_status(e: &TurnError) -> StatusCode {
    match e {
        TurnError::User(UserError::BoundToAnother | UserError::Reserved) => StatusCode::FORBIDDEN,
        TurnError::User(_)
        | TurnError::Config(_)
        | TurnError::Invalid(_)
        | TurnError::NoStt(_)
        | TurnError::Audio { .. } => StatusCode::BAD_REQUEST,
        TurnError::Session(SessionError::NotFound | SessionError::RunUnavailable) => StatusCode::NOT_FOUND,
        TurnError::Session(SessionError::NotYours | SessionError::RunNotYours) => StatusCode::FORBIDDEN,
        TurnError::Session(SessionError::Busy) => StatusCode::CONFLICT,
        TurnError::Session(SessionError::Store(e)) | TurnError::Store(e) if e.is_unavailable() => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        TurnError::Session(SessionError::Store(_)) | TurnError::Store(_) | TurnError::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        TurnError::Session(_) => StatusCode::BAD_REQUEST,
        TurnError::Transcription { err: crate::providers::stt::SttError::Unsupported(_), .. } => {
            StatusCode::BAD_REQUEST
        }
        TurnError::Transcription { .. } => StatusCode::BAD_GATEWAY,
        TurnError::NoProvider | TurnError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        TurnError::TooManyRuns | TurnError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
    }
}

pub fn turn_error(e: TurnError) -> ApiError {
    match e {
        TurnError::User(u) => user_error(u),
        TurnError::Session(s) => session_error(s),
        TurnError::Config(_) | TurnError::Invalid(_) | TurnError::NoStt(_) | TurnError::Audio { .. } => {
            ApiError::bad_request(e.to_string())
        }
        TurnError::Transcription { err: crate::providers::stt::SttError::Unsupported(_), .. } => {
            ApiError::bad_request(e.to_string())
        }
        TurnError::Transcription { .. } => {
            tracing::warn!(error = ?e, "transcription failed");
            ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
        }
        TurnError::NoProvider => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        TurnError::TooManyRuns => ApiError::too_many(e.to_string(), 1),
        TurnError::Limited(x) => ApiError::too_many(x.to_string(), x.retry_after_secs()),
        TurnError::Overloaded(m) => {
            ApiError { retry_after: Some(5), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m) }
        }
        TurnError::Store(e) => ApiError::store(e),
        TurnError::Internal(m) => ApiError::internal(m),
    }
}

impl From<TurnError> for ApiError {
    fn from(e: TurnError) -> Self {
        turn_error(e)
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        session_error(e)
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        turn_error(e.into())
    }
}

/// The code a WebSocket error frame carries for `e` (AstrBot's codes on the chat socket).
pub fn ws_code(e: &TurnError) -> &'static str {
    match e {
        TurnError::User(_) => "BAD_USER",
        TurnError::Session(SessionError::Store(_)) => "PROCESSING_ERROR",
        TurnError::Session(_) => "SESSION_ERROR",
        TurnError::Config(_) => "CONFIG_ERROR",
        TurnError::TooManyRuns => "TOO_MANY_RUNS",
        TurnError::Limited(x) => x.code(),
        TurnError::Transcription { err: crate::providers::stt::SttError::Unsupported(_), .. } => "INVALID_MESSAGE",
        TurnError::Transcription { .. } | TurnError::Store(_) | TurnError::Internal(_) | TurnError::Overloaded(_) => {
            "PROCESSING_ERROR"
        }
        TurnError::Invalid(_) | TurnError::NoStt(_) | TurnError::Audio { .. } | TurnError::NoProvider => {
            "INVALID_MESSAGE"
        }
    }
}
