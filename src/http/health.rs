//! `GET /healthz`: liveness, a database round trip, and the writer's health: while writes fail
//! (a full disk), each check retries one small write and answers 503 until it succeeds.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::{ApiError, ok};

pub async fn healthz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.store.ping().await {
        tracing::error!(error = %e, "health check: database unreachable");
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
    }
    if state.store.writes_failing()
        && let Err(e) = state.store.probe_write().await
    {
        tracing::error!(error = %e, "health check: database writes are failing");
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database writes are failing").into_response();
    }
    ok(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}
