//! IM endpoints (scope `im`): `GET /api/v1/im/bots`.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ok;

/// The configured platform ids (the built-in `webchat` is not listed, as in AstrBot).
pub async fn list_bots(State(state): State<AppState>, _caller: Caller) -> Response {
    let ids: Vec<&str> = state.config.platforms.iter().map(|p| p.id.as_str()).collect();
    ok(json!({ "bot_ids": ids }))
}
