//! `GET /healthz`: liveness plus a database round trip.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::{ApiError, ok};

pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => ok(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}
