//! `GET /healthz`: liveness, a database round trip, and the writer's health: while writes fail
//! (a full disk), each check retries one small write and answers 503 until it succeeds.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::{ApiError, ok};

pub async fn healthz(State(state): State<AppState>) -> Response {
    match crate::store::check_health(state.agent.store.as_ref()).await {
        Ok(()) => ok(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})),
        Err(problem) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, problem).into_response(),
    }
}
