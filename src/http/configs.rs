//! `GET /api/v1/configs` (scope `config`): the agent profiles, default last.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ok;

/// The profiles as AstrBot lists configs, default last with id `default`; with `is_default`
/// for `/api/v1/configs`, without it for the ChatUI's `info_list`.
pub fn profile_list(state: &AppState, with_default_flag: bool) -> Vec<Value> {
    let profiles = &state.agent.profiles;
    profiles
        .listing()
        .into_iter()
        .map(|p| {
            let id = if p.is_default { "default" } else { p.id.as_str() };
            let mut v = json!({"id": id, "name": profiles.listed_name(p), "path": format!("profiles.{}", p.id)});
            if with_default_flag {
                v["is_default"] = json!(p.is_default);
            }
            v
        })
        .collect()
}

pub async fn list_configs(State(state): State<AppState>, _caller: Caller) -> Response {
    ok(json!({ "configs": profile_list(&state, true) }))
}
