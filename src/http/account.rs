//! The dashboard account beyond login: `GET /api/auth/setup-status` (and `/api/v1/…`),
//! `POST /api/auth/logout` (and `/api/v1/…`), and changing the username and password
//! (`PATCH /api/v1/auth/account`, `PATCH /api/auth/account`, `POST /api/auth/account/edit`).
//! Shapes and texts are AstrBot 4.29.3's. Also astrgate's `POST /api/v1/auth/socket-token`, which
//! the web console calls before it opens a `?token=` socket.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Caller;
use crate::auth::caller::{check_cookie_request, dashboard_token};
use crate::auth::dashboard::AccountError;
use crate::error::{ApiError, ApiJson, ApiResult, ok};

/// Nothing to set up: the account exists from the first start (a generated or configured
/// password), so the WebUI never needs its first-run page.
pub async fn setup_status() -> Response {
    ok(json!({"setup_required": false, "skip_default_password_auth": false, "password_upgrade_required": false}))
}

/// Clears the cookie and, when the request carries a valid dashboard token, revokes every token
/// issued so far (there is one account).
pub async fn logout(State(state): State<AppState>, req: Request) -> Response {
    if let Some((token, via_cookie)) = dashboard_token(req.headers())
        && state.dashboard.decode(token).is_ok()
    {
        // A foreign page must not log the user out with their own cookie.
        if via_cookie && let Err(e) = check_cookie_request(&req, state.config.server.trust_forwarded_for) {
            return e.into_response();
        }
        if let Err(e) = state.dashboard.revoke_all().await {
            return ApiError::internal(e).into_response();
        }
        tracing::info!("dashboard logout: earlier tokens revoked");
    }
    let mut res = axum::Json(json!({"status": "ok", "message": "已退出登录", "data": {}})).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("astrbot_dashboard_jwt=; HttpOnly; Max-Age=0; Path=/; SameSite=Strict"),
    );
    res
}

/// `POST /api/v1/auth/socket-token` (dashboard only): `{token, expires_in}`, a token that opens the
/// `?token=` WebSockets for a minute and is refused by every HTTP route. The console reaches it
/// with its HttpOnly cookie (same-origin JSON only, as every cookie-carried write), so the page
/// never holds the login token and only a short-lived, socket-only one ever goes into a URL.
pub async fn socket_token(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let Some(username) = caller.dashboard_username() else {
        return Err(ApiError::forbidden(crate::auth::texts::INSUFFICIENT_SCOPE));
    };
    let token = state.dashboard.issue_socket(username);
    let mut res = ok(json!({"token": token, "expires_in": crate::auth::dashboard::SOCKET_TOKEN_TTL_SECS}));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

fn field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

/// `{password, new_password?, confirm_password?, new_username?}`: AstrBot's checks and texts.
/// Every token issued before stops working (the WebUI logs out after this).
pub async fn edit_account(
    State(state): State<AppState>,
    _caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let Some(current) = field(&body, "password") else {
        return Err(ApiError::bad_request("Invalid request payload"));
    };
    if body.get("new_password").is_some_and(|v| !v.is_null() && !v.is_string()) {
        return Err(ApiError::bad_request("新密码无效"));
    }
    let result = state
        .dashboard
        .change_account(
            current,
            field(&body, "new_username"),
            field(&body, "new_password"),
            field(&body, "confirm_password"),
        )
        .await;
    match result {
        Ok(()) => {
            tracing::info!("dashboard account changed");
            Ok(axum::Json(json!({"status": "ok", "message": "Updated account successfully", "data": {}}))
                .into_response())
        }
        Err(AccountError::Busy) => Err(ApiError::too_many(crate::auth::texts::LOGIN_RATE_LIMITED, 1)),
        Err(AccountError::Store) => Err(ApiError::internal("saving the dashboard account failed")),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}
