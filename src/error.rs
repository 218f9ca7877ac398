//! The AstrBot response envelope and the one HTTP error type.
//!
//! Success is `{"status":"ok","message":null,"data":…}`; failure is
//! `{"status":"error","message":…,"data":null}` with a real HTTP status (our contract; AstrBot
//! answers most business errors with 200). Server errors never carry internal text: the cause
//! is logged and the client sees `Internal server error`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An error rendered as AstrBot's error envelope.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub data: Value,
    /// Sent as `Retry-After` (seconds) with 429 and 503 answers.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), data: Value::Null, retry_after: None }
    }
    /// 429 with `Retry-After`.
    pub fn too_many(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self { retry_after: Some(retry_after_secs.max(1)), ..Self::new(StatusCode::TOO_MANY_REQUESTS, message) }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    /// A store failure: 503 `Database unavailable` (with `Retry-After`) while the database
    /// cannot be reached, else 500 like [`ApiError::internal`].
    pub fn store(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return Self { retry_after: Some(5), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable") };
        }
        Self::internal(e)
    }
    /// Logs `cause` and answers 500 without revealing it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "message": self.message, "data": self.data});
        let mut res = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::store(e)
    }
}

/// `{"status":"ok","message":null,"data":data}`.
pub fn ok<T: Serialize>(data: T) -> Response {
    Json(json!({"status": "ok", "message": null, "data": data})).into_response()
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

/// A JSON body extractor whose rejections use our envelope: malformed JSON, wrong types and a
/// wrong Content-Type are 400, an oversized body 413. Type errors name the offending field.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<Value>::from_request(req, state).await.map_err(json_rejection)?;
        from_value(value).map(ApiJson)
    }
}

/// Deserialises `value` into `T`, naming the path of the first mismatch.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        // A hostile body can make the path enormous (deep nesting): keep the message readable.
        let path = crate::util::truncate_chars(&e.path().to_string(), 120).to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("Invalid request body: {inner}"))
        } else {
            ApiError::bad_request(format!("Invalid request body: {path}: {inner}"))
        }
    })
}

/// Maps axum's JSON rejection onto the envelope.
pub fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("Invalid request body: expected Content-Type: application/json")
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("Invalid JSON body: {}", capped(&e.body_text_inner())))
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::bad_request(format!("Invalid request body: {}", capped(&e.body_text_inner())))
        }
        JsonRejection::BytesRejection(e) => body_error(e.status(), &e),
        other => ApiError::bad_request(other.body_text()),
    }
}

/// A request body that could not be read: stalled past `[server] request_body_timeout_secs`
/// (408), over the route's limit (413), or broken off (400).
pub fn body_error(status: StatusCode, e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "Request body timed out");
        }
        cur = err.source();
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
    } else {
        ApiError::bad_request("Failed to read request body")
    }
}

/// The raw request body (within the route's `DefaultBodyLimit`), with [`body_error`]'s rejections.
pub struct RawBody(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        bytes::Bytes::from_request(req, state).await.map(RawBody).map_err(|e| body_error(e.status(), &e))
    }
}

/// Parser messages can quote an enormous path (deep nesting): keep the head and the cause.
fn capped(msg: &str) -> String {
    if msg.chars().count() <= 300 {
        return msg.to_string();
    }
    let tail: String = msg.chars().rev().take(100).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{} … {}", crate::util::truncate_chars(msg, 150), tail)
}

trait BodyTextInner {
    fn body_text_inner(&self) -> String;
}

impl<E: std::error::Error> BodyTextInner for E {
    /// axum prefixes its messages with "Failed to parse the request body as JSON: "; keep the cause only.
    fn body_text_inner(&self) -> String {
        let mut cur: &dyn std::error::Error = self;
        while let Some(next) = cur.source() {
            cur = next;
        }
        cur.to_string()
    }
}
