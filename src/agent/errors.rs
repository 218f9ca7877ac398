//! Typed errors of the agent's services. Texts are AstrBot's (they are part of the wire
//! contract); how each error is shown — an HTTP status, a WebSocket error code, an OpenAI error
//! object — is decided by each front door (`http/errors.rs`), never by matching on the text.

use crate::audio::codec::CodecError;
use crate::auth::UserError;
use crate::providers::stt::SttError;
use crate::store::StoreError;

/// About a session or a run.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A client-chosen id over 128 bytes.
    #[error("{0} is too long (max 128 bytes)")]
    TooLong(&'static str),
    /// A client-chosen id under a prefix astrgate keeps for its own sessions.
    #[error("{0} uses a reserved prefix: {1}")]
    Reserved(&'static str, &'static str),
    /// A session id that is not a string.
    #[error("Invalid request body: {0} must be a string")]
    NotAString(&'static str),
    #[error("Session not found")]
    NotFound,
    #[error("session_id belongs to another username")]
    NotYours,
    #[error("Session is busy")]
    Busy,
    #[error("run_id belongs to another username")]
    RunNotYours,
    #[error("Chat run is unavailable")]
    RunUnavailable,
    #[error("Invalid Last-Event-ID")]
    BadEventId,
    #[error("Last-Event-ID belongs to another run")]
    EventIdOfAnotherRun,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::agent::session::SessionIdError> for SessionError {
    fn from(e: crate::agent::session::SessionIdError) -> Self {
        match e {
            crate::agent::session::SessionIdError::TooLong(f) => SessionError::TooLong(f),
            crate::agent::session::SessionIdError::Reserved(f, p) => SessionError::Reserved(f, p),
        }
    }
}

/// Why a turn could not start. Everything is checked before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The acting username (missing, empty, too long, not a string, or not the key's own).
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Session(#[from] SessionError),
    /// `config_id` / `config_name`.
    #[error("{0}")]
    Config(String),
    /// The message, its parts, attachments, provider or model (400).
    #[error("{0}")]
    Invalid(String),
    /// An audio part, but no STT provider; names what could not be transcribed.
    #[error("No STT provider is configured: {0} cannot be transcribed")]
    NoStt(&'static str),
    /// The STT provider failed on `what`; `Unsupported` is the client's audio (400), the rest
    /// the provider's failure (502).
    #[error("transcribing {what} failed: {}", err.public_message())]
    Transcription { what: String, err: SttError },
    /// Voice the client sent that cannot be decoded: corrupt, unsupported, unrecognised, or
    /// longer than `[live] max_utterance_secs` (400). `what` names it, the error the format.
    #[error("{what}: {err}")]
    Audio { what: String, err: CodecError },
    #[error("No LLM provider is configured")]
    NoProvider,
    #[error("Too many concurrent runs")]
    TooManyRuns,
    /// A shared resource (the document readers) stayed busy: retry shortly (503).
    #[error("{0}")]
    Overloaded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure of ours (an attachment that cannot be read, media that cannot be saved): the
    /// detail is logged, the client sees `Internal server error`.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::agent::runs::StartError> for TurnError {
    fn from(e: crate::agent::runs::StartError) -> Self {
        match e {
            crate::agent::runs::StartError::Busy => TurnError::Session(SessionError::Busy),
            crate::agent::runs::StartError::TooMany => TurnError::TooManyRuns,
        }
    }
}

impl From<crate::agent::input::InputError> for TurnError {
    fn from(e: crate::agent::input::InputError) -> Self {
        match e {
            crate::agent::input::InputError::Invalid(m) | crate::agent::input::InputError::NotFound(m) => {
                TurnError::Invalid(m)
            }
            crate::agent::input::InputError::Store(e) => TurnError::Store(e),
        }
    }
}

impl From<crate::agent::session::SessionIdError> for TurnError {
    fn from(e: crate::agent::session::SessionIdError) -> Self {
        TurnError::Session(e.into())
    }
}

/// The class of an LLM provider failure, as `astrgate_upstream_errors_total{kind}` names it.
/// (It belongs on `LlmError` as a method once `providers/llm.rs` counts its own attempts.)
pub fn llm_error_kind(e: &crate::providers::llm::LlmError) -> &'static str {
    use crate::providers::llm::LlmError;
    match e {
        LlmError::Connect(_) => "connect",
        LlmError::FirstTokenTimeout(_) | LlmError::IdleTimeout(_) => "timeout",
        LlmError::Upstream { status: 429, .. } => "http_429",
        LlmError::Upstream { status: 400..=499, .. } => "http_4xx",
        LlmError::Upstream { status: 500..=599, .. } => "http_5xx",
        LlmError::Upstream { .. } => "http_error",
        LlmError::Interrupted(_) => "interrupted",
        LlmError::Protocol(_) => "protocol",
    }
}

/// Counts a failed LLM request that reached the agent (the request's final failure).
pub fn count_upstream_error(provider: &str, e: &crate::providers::llm::LlmError) {
    crate::metrics::upstream_error(provider, llm_error_kind(e));
}
