//! `GET /api/v1/configs` (scope `config`): the agent profiles, default last.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ok;

pub async fn list_configs(State(state): State<AppState>, _caller: Caller) -> Response {
    let configs: Vec<_> = state
        .agent
        .profiles
        .listing()
        .into_iter()
        .map(|p| {
            let id = if p.is_default { "default" } else { p.id.as_str() };
            let name = state.agent.profiles.listed_name(p);
            json!({"id": id, "name": name, "path": format!("profiles.{}", p.id), "is_default": p.is_default})
        })
        .collect();
    ok(json!({ "configs": configs }))
}
