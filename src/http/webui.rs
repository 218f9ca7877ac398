//! What AstrBot's WebUI asks of every page besides chat: versions, start time, the update check,
//! the first-run notice, and the onboarding checks (platforms, provider schema, config profiles
//! and routes), answered from astrgate's own state in AstrBot 4.29.3's shapes. Features astrgate
//! does not have are not answered here at all: their paths stay 404, never 401, so the WebUI
//! shows an empty page instead of logging the user out.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::params::{self, Params};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ok};

/// The AstrBot release whose dashboard API astrgate speaks.
pub const ASTRBOT_VERSION: &str = "4.29.3";

/// The served WebUI's own version (`assets/version` in its build), else the one astrgate speaks.
fn webui_version(state: &AppState) -> String {
    state
        .config
        .dashboard
        .webui_dir
        .as_ref()
        .and_then(|d| std::fs::read(d.join("assets").join("version")).ok())
        .filter(|b| b.len() <= 64)
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("v{ASTRBOT_VERSION}"))
}

/// `GET /api/v1/stats/versions` and `/api/stat/versions` (public).
pub async fn versions(State(state): State<AppState>) -> Response {
    ok(json!({
        "webui_version": webui_version(&state),
        "astrbot_version": ASTRBOT_VERSION,
        "astrbot_code_version": ASTRBOT_VERSION,
        "astrgate_version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /api/v1/stats/start-time` and `/api/stat/start-time` (public): Unix seconds.
pub async fn start_time(State(state): State<AppState>) -> Response {
    ok(json!({ "start_time": state.started_at }))
}

/// `GET /api/v1/stats/version` and `/api/stat/version` (dashboard). The password hints stay
/// false: astrgate's password is generated strong or set by the operator, never a default.
pub async fn version(State(state): State<AppState>, _caller: Caller) -> Response {
    ok(json!({
        "version": ASTRBOT_VERSION,
        "dashboard_version": webui_version(&state),
        "astrgate_version": env!("CARGO_PKG_VERSION"),
        "change_pwd_hint": false,
        "md5_pwd_hint": false,
        "password_upgrade_required": false,
        "runtime": {"os": std::env::consts::OS, "arch": std::env::consts::ARCH},
    }))
}

/// `GET /api/v1/stats/first-notice` (dashboard): astrgate has no notice to show.
pub async fn first_notice(_caller: Caller) -> Response {
    ok(json!({ "content": null }))
}

/// `GET /api/v1/updates/check` and `/api/update/check` (dashboard): astrgate is not updated
/// from the dashboard, so there is never a new version to install from here.
pub async fn update_check(State(state): State<AppState>, _caller: Caller) -> Response {
    axum::Json(json!({
        "status": "success",
        "message": "已经是最新版本了。",
        "data": {
            "version": format!("v{ASTRBOT_VERSION}"),
            "has_new_version": false,
            "dashboard_version": webui_version(&state),
            "dashboard_has_new_version": false,
        },
    }))
    .into_response()
}

/// `GET /api/v1/system-config` (dashboard): the platforms messages arrive from (the web chat and
/// each configured webhook), the part of AstrBot's system config the WebUI's onboarding reads.
/// Nothing secret is included.
pub async fn system_config(State(state): State<AppState>, _caller: Caller) -> Response {
    let mut platforms = vec![json!({"id": "webchat", "type": "webchat", "enable": true})];
    platforms.extend(state.config.platforms.iter().map(|p| json!({"id": p.id, "type": "webhook", "enable": true})));
    ok(json!({ "config": { "platform": platforms } }))
}

/// The configured chat providers as AstrBot's provider configs (never with their keys).
pub fn provider_entries(state: &AppState) -> Vec<Value> {
    state
        .agent
        .providers
        .llm_all()
        .iter()
        .map(|p| {
            json!({"id": p.id, "type": "openai_chat_completion", "provider_type": "chat_completion",
                   "enable": true, "model": p.model, "provider_source_id": null})
        })
        .collect()
}

/// `GET /api/v1/providers/schema` (scope `provider`): the configured providers; astrgate has no
/// provider sources.
pub async fn providers_schema(State(state): State<AppState>, _caller: Caller) -> Response {
    ok(json!({ "providers": provider_entries(&state), "provider_sources": [] }))
}

/// `GET /api/v1/config-profiles` (scope `config`): `{"info_list": […]}`, default last.
pub async fn config_profiles(State(state): State<AppState>, _caller: Caller) -> Response {
    ok(json!({ "info_list": super::configs::profile_list(&state, false) }))
}

/// `GET /api/v1/config-profiles/{config_id}` (scope `config`): the parts of a profile the WebUI
/// reads (the agent runner, the provider); `default` names the default profile.
pub async fn config_profile(
    State(state): State<AppState>,
    _caller: Caller,
    Path(config_id): Path<String>,
) -> ApiResult<Response> {
    let profiles = &state.agent.profiles;
    let p = profiles.get(&config_id).ok_or_else(|| ApiError::not_found(format!("config_id not found: {config_id}")))?;
    let provider = profiles.provider_for(p, &state.agent.providers).map(|p| p.id.clone());
    Ok(ok(json!({
        "config": {
            "agent_runner": {"runner_type": "local"},
            "provider_settings": {"default_provider_id": provider},
        },
        "metadata": {"id": if p.is_default { "default" } else { p.id.as_str() }, "name": profiles.listed_name(p)},
    })))
}

/// The unified message origin AstrBot routes configs by, for a web chat session.
fn umo(username: &str, session_id: &str) -> String {
    format!("webchat:FriendMessage:webchat!{username}!{session_id}")
}

/// `GET /api/v1/config-routes` (scope `config`): the acting user's sessions bound to a profile.
pub async fn config_routes(State(state): State<AppState>, caller: Caller, q: Params) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    let routes = state.agent.session_routes(&username).await?;
    let routing: serde_json::Map<String, Value> =
        routes.into_iter().map(|(s, id)| (umo(&username, &s.session_id), Value::String(id))).collect();
    Ok(ok(json!({ "routing": routing })))
}

/// `PUT /api/v1/config-routes/{umo}` `{config_id}` (scope `config`): binds the session the UMO
/// names (`webchat:FriendMessage:webchat!<user>!<session_id>`) to a profile; owner-checked.
pub async fn put_config_route(
    State(state): State<AppState>,
    caller: Caller,
    Path(umo): Path<String>,
    q: Params,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let username = params::username_q(&caller, &q)?;
    let config_id = body
        .get("config_id")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing key: config_id"))?;
    let session_id = umo
        .strip_prefix("webchat:FriendMessage:webchat!")
        .and_then(|rest| rest.rsplit_once('!'))
        .map(|(_, sid)| sid)
        .filter(|sid| !sid.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("Invalid umo: {umo}")))?;
    state.agent.route_session(session_id, &username, config_id).await?;
    Ok(axum::Json(json!({"status": "ok", "message": "更新成功", "data": {}})).into_response())
}
