//! HTTP front doors. Handlers are thin: extract, authorise, validate, then call into the domain
//! modules and render their results in the wire shape of the front door they serve.

pub mod account;
pub mod api_keys;
pub mod audit;
pub mod binds;
pub mod chat;
pub mod chat_mux;
pub mod chat_ws;
pub mod chatui;
pub mod configs;
pub mod console;
pub mod conversation;
pub mod conversation_input;
pub mod dashboard;
pub mod errors;
pub mod file_headers;
pub mod files;
pub mod health;
pub mod im;
pub mod key_limits;
pub mod legacy_chat;
pub mod live_ws;
pub mod metrics;
pub mod openai;
pub mod openai_audio;
pub mod openai_chat;
pub mod openai_errors;
pub mod openai_stream;
pub mod params;
pub mod sessions;
pub mod spa;
pub mod sse;
mod sse_frames;
mod sse_window;
pub mod stage;
pub mod webui;
pub mod ws;
pub mod ws_recv;

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::app::AppState;
use crate::auth::caller::{Requirement, require_compat, require_dashboard, require_scope};
use crate::error::ApiError;

/// Every authenticated `/api/v1` route and what it requires. Routes can only be mounted through
/// this table, so none can exist without an authorisation layer.
fn v1_routes(state: &AppState) -> Vec<(&'static str, Requirement, MethodRouter<AppState>)> {
    use crate::auth::Scope::*;
    use Requirement::*;
    vec![
        ("/api/v1/chat", Scope(Chat), post(chat::send_chat)),
        ("/api/v1/chat/sessions", Scope(Chat), get(sessions::list_sessions)),
        ("/api/v1/chat/sessions/new", Scope(Chat), get(chatui::new_session)),
        ("/api/v1/chat/sessions/batch-delete", Scope(Chat), post(chatui::batch_delete)),
        (
            "/api/v1/chat/sessions/{session_id}",
            Scope(Chat),
            get(chatui::session_detail).patch(chatui::rename_session).delete(sessions::delete_session),
        ),
        ("/api/v1/chat/sessions/{session_id}/messages/{message_id}", Scope(Chat), patch(chatui::edit_message)),
        ("/api/v1/chat/sessions/{session_id}/messages/{message_id}/regenerate", Scope(Chat), post(chatui::regenerate)),
        ("/api/v1/chat/configs", Scope(Chat), get(chatui::chat_configs)),
        ("/api/v1/chat/projects", Scope(Chat), get(chatui::projects)),
        ("/api/v1/commands", Dashboard, get(chatui::commands)),
        ("/api/v1/providers", Scope(Provider), get(chatui::providers)),
        ("/api/v1/chat/sessions/{session_id}/messages", Scope(Chat), get(sessions::session_messages)),
        ("/api/v1/chat/sessions/{session_id}/stop", Scope(Chat), post(sessions::stop_session)),
        ("/api/v1/chat/runs/{run_id}/stream", Scope(Chat), get(sessions::resume_run)),
        ("/api/v1/configs", Scope(Config), get(configs::list_configs)),
        ("/api/v1/file", Scope(File), get(files::download).post(files::upload).layer(upload_limit(state))),
        ("/api/v1/im/bots", Scope(Im), get(im::list_bots)),
        ("/api/v1/im/message", Scope(Im), post(im::send_message)),
        ("/api/v1/im/messages", Scope(Im), post(im::send_message)),
        ("/api/v1/api-keys", Dashboard, get(api_keys::list).post(api_keys::create)),
        ("/api/v1/api-keys/{key_id}/revoke", Dashboard, post(api_keys::revoke)),
        ("/api/v1/api-keys/{key_id}", Dashboard, delete(api_keys::delete).patch(key_limits::update)),
        ("/api/v1/api-keys/{key_id}/usage", Dashboard, get(key_limits::usage)),
        ("/api/v1/audit", Dashboard, get(audit::list)),
        ("/api/v1/auth/account", Dashboard, axum::routing::patch(account::edit_account)),
        ("/api/v1/auth/socket-token", Dashboard, post(account::socket_token)),
        // What AstrBot's WebUI loads on every page and for its onboarding check.
        ("/api/v1/stats/version", Dashboard, get(webui::version)),
        ("/api/v1/stats/first-notice", Dashboard, get(webui::first_notice)),
        ("/api/v1/updates/check", Dashboard, get(webui::update_check)),
        ("/api/v1/system-config", Dashboard, get(webui::system_config)),
        ("/api/v1/providers/schema", Scope(Provider), get(webui::providers_schema)),
        ("/api/v1/config-profiles", Scope(Config), get(webui::config_profiles)),
        ("/api/v1/config-profiles/{config_id}", Scope(Config), get(webui::config_profile)),
        ("/api/v1/config-routes", Scope(Config), get(webui::config_routes)),
        ("/api/v1/config-routes/{umo}", Scope(Config), put(webui::put_config_route)),
        // The ChatUI's attachments: upload, and download by id or by stored name.
        ("/api/v1/files", Scope(File), post(files::upload).layer(upload_limit(state))),
        ("/api/v1/files/content", Scope(File), get(files::download_by_name)),
        ("/api/v1/files/{attachment_id}", Scope(File), get(files::download_by_path)),
        ("/api/v1/files/{attachment_id}/content", Scope(File), get(files::download_by_path)),
    ]
}

/// Upload routes enforce their own limit on the file while streaming; the whole body (other
/// fields included) is capped at that limit plus 1 MiB.
fn upload_limit(state: &AppState) -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(
        usize::try_from(state.config.files.max_upload_bytes).unwrap_or(usize::MAX).saturating_add(1 << 20),
    )
}

pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/api/auth/login", post(dashboard::login))
        .route("/api/v1/auth/login", post(dashboard::login))
        .route("/api/auth/logout", post(account::logout))
        .route("/api/v1/auth/logout", post(account::logout))
        .route("/api/auth/setup-status", get(account::setup_status))
        .route("/api/v1/auth/setup-status", get(account::setup_status))
        .route("/api/v1/stats/versions", get(webui::versions))
        .route("/api/stat/versions", get(webui::versions))
        .route("/api/v1/stats/start-time", get(webui::start_time))
        .route("/api/stat/start-time", get(webui::start_time))
        // WebSockets authenticate inside the upgrade, as AstrBot: accept, send an error frame,
        // close 1008 with the reason.
        .route("/api/v1/chat/ws", get(chat_ws::chat_ws))
        .route("/api/v1/live/ws", get(live_ws::live_v1))
        .route("/api/live_chat/ws", get(live_ws::live_chat_jwt))
        .route("/api/v1/live-chat/ws", get(live_ws::live_chat_jwt))
        .route("/api/unified_chat/ws", get(live_ws::unified_chat_jwt))
        .route("/api/v1/unified-chat/ws", get(live_ws::unified_chat_jwt))
        // The web console's static files (public: the data behind them needs the dashboard login).
        .route("/console", get(console::redirect))
        .route("/console/", get(console::index))
        .route("/console/{*path}", get(console::file));

    let legacy_dashboard = Router::new()
        .route("/api/apikey/list", get(api_keys::list))
        .route("/api/apikey/create", post(api_keys::create))
        .route("/api/apikey/revoke", post(api_keys::revoke_by_body))
        .route("/api/apikey/delete", post(api_keys::delete_by_body))
        .route("/api/auth/account", axum::routing::patch(account::edit_account))
        .route("/api/auth/account/edit", post(account::edit_account))
        .route("/api/stat/version", get(webui::version))
        .route("/api/update/check", get(webui::update_check))
        // AstrBot's older dashboard chat router, used by clients such as astrbotmcp.
        .route("/api/chat/send", post(legacy_chat::send))
        .route("/api/chat/new_session", get(chatui::new_session))
        .route("/api/chat/sessions", get(sessions::list_sessions))
        .route("/api/chat/get_session", get(legacy_chat::get_session))
        .route("/api/chat/stop", post(legacy_chat::stop))
        .route("/api/chat/delete_session", get(legacy_chat::delete_session))
        .route("/api/chat/batch_delete_sessions", post(legacy_chat::batch_delete))
        .route("/api/chat/update_session_display_name", post(legacy_chat::rename))
        .route("/api/chat/message/edit", post(legacy_chat::edit_message))
        .route("/api/chat/message/regenerate", post(legacy_chat::regenerate))
        .route("/api/chat/post_file", post(files::upload).layer(upload_limit(&state)))
        .route("/api/chat/get_file", get(files::download_by_name))
        .route("/api/chat/get_attachment", get(files::download))
        .route_layer(from_fn_with_state(state.auth(), require_dashboard));
    app = app.merge(legacy_dashboard);

    // The older chatbot APIs (seeds 002 and 004): scope `chat` unless opened for loopback use.
    let compat = Router::new()
        .route(
            "/v1/conversation",
            post(conversation::converse)
                .layer(axum::extract::DefaultBodyLimit::max(state.config.compat.max_body_bytes))
                .layer(from_fn_with_state(state.clone(), conversation::limit_large_bodies)),
        )
        .route("/chat", post(stage::stage_chat))
        .route("/set_info", post(stage::set_info))
        .route("/get_info", post(stage::get_info))
        .route("/delete_session", delete(stage::delete_session))
        .route_layer(from_fn_with_state(state.auth(), require_compat));
    app = app.merge(compat);
    // The OpenAI-compatible front door, with its own error objects.
    app = app.merge(openai::routes(&state));

    for (path, req, route) in v1_routes(&state) {
        app = app.route(path, route.route_layer(from_fn_with_state((state.auth(), req), require_scope)));
    }

    app = app.layer(axum::extract::DefaultBodyLimit::max(state.config.server.max_json_body_bytes)).layer(
        tower_http::timeout::RequestBodyTimeoutLayer::new(Duration::from_secs(
            state.config.server.request_body_timeout_secs,
        )),
    );
    let sensitive: [HeaderName; 3] = [header::AUTHORIZATION, header::COOKIE, HeaderName::from_static("x-api-key")];
    let app = app
        .fallback(spa::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(envelope_errors));
    metrics::layer(app, &state)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    tracing::info_span!(
                        "http",
                        method = %req.method(),
                        path = %crate::telemetry::mask_secrets(req.uri().path()),
                        query = %crate::telemetry::redact_query(req.uri().query()),
                        caller = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|res: &Response, latency: Duration, _: &Span| {
                    tracing::info!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1000.0,
                        "request"
                    );
                })
                .on_failure(()),
        )
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
        .with_state(state)
}

/// The last line of defence for the envelope: an error that did not come from our handlers (an
/// extractor's rejection such as a body over the limit or a path that is not UTF-8) arrives as
/// plain text; it is rewritten into the envelope with the same status. Client errors keep the
/// framework's short explanation; server errors never carry one.
async fn envelope_errors(res: Response) -> Response {
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let message = if status.is_server_error() {
        "Internal server error".to_string()
    } else {
        let bytes = axum::body::to_bytes(body, 1024).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        if text.is_empty() { status.canonical_reason().unwrap_or("Error").to_string() } else { text }
    };
    let mut out = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

async fn method_not_allowed() -> Response {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Deny by default, part one: every path this file mounts is in openapi.json, and every
    /// `/api/v1` one there states its authentication. The integration test
    /// `every_documented_v1_operation_is_guarded` then proves each of them refuses anonymous
    /// callers and keys without the scope, so a route cannot be added without both.
    #[test]
    fn every_mounted_path_is_documented_with_its_auth() {
        let mut mounted: BTreeSet<String> = BTreeSet::new();
        for src in [include_str!("mod.rs"), include_str!("openai.rs")] {
            let src = &src[..src.find("#[cfg(test)]").unwrap_or(src.len())];
            mounted.extend(
                src.split('"')
                    .skip(1)
                    .step_by(2)
                    .filter(|s| s.starts_with('/') && !s.contains(' ') && s.len() > 1 && !s.starts_with("//"))
                    // A catch-all `{*name}` is documented as `{name}`.
                    .map(|s| s.replace("{*", "{")),
            );
        }
        let spec: serde_json::Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        let documented: BTreeSet<String> = paths.keys().cloned().collect();
        assert_eq!(mounted, documented, "mounted paths and openapi.json differ");
        for (path, item) in paths {
            let openai = path.starts_with("/v1/") && path != "/v1/conversation";
            if openai || (path.starts_with("/api/v1/") && !path.starts_with("/api/v1/auth/")) {
                for (method, op) in item.as_object().unwrap() {
                    assert!(op.get("x-astrgate-auth").is_some(), "{method} {path} lacks x-astrgate-auth");
                }
            }
        }
    }
}
