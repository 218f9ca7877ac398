//! `GET /healthz`: liveness, a database round trip, and the writer's health: while writes fail
//! (a full disk), each check retries one small write and answers 503 until it succeeds.
//! In cluster mode it also reports Redis: while Redis is away the instance still serves its own
//! runs, so it answers 200 with `"status": "degraded"` (a load balancer keeps sending traffic)
//! and `"redis": "unavailable"` with the time it went away.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::{ApiError, ok};

pub async fn healthz(State(state): State<AppState>) -> Response {
    if let Err(problem) = crate::store::check_health(state.agent.store.as_ref()).await {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, problem).into_response();
    }
    let mut body = serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")});
    if let Some(c) = &state.agent.cluster {
        body["instance"] = c.instance_id().into();
        if c.is_up() {
            body["redis"] = "ok".into();
        } else {
            body["status"] = "degraded".into();
            body["redis"] = "unavailable".into();
            body["redis_down_since"] = c.down_since().map(|s| crate::util::iso_local(s * 1_000_000)).into();
        }
    }
    ok(body)
}
