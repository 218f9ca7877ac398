//! Dashboard login: `POST /api/auth/login` and `POST /api/v1/auth/login`.
//!
//! Rate limited per client IP (token bucket) before any work; a wrong username or password is
//! answered 401 after a fixed delay, so guessing is slow whatever the outcome.
//!
//! Audited: every login (`login`) and every wrong username or password (`login_failed`, with the
//! username tried and the client address; never the password). Refusals by the rate limiter and
//! the failure budget are not: they carry nothing verified and come at the attacker's pace, while
//! the attempts that reach the password check are bounded by the failure budget.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::audit::Action;
use crate::auth::caller::{COOKIE_NAME, client_ip};
use crate::auth::texts;
use crate::error::{ApiError, ok};

pub async fn login(State(state): State<AppState>, req: Request) -> Response {
    let ip = client_ip(
        req.headers(),
        req.extensions().get::<ConnectInfo<SocketAddr>>(),
        state.config.server.trust_forwarded_for,
    );
    let d = &state.dashboard;
    if !d.admit(ip).await {
        return rate_limited(1);
    }
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            let e = crate::error::body_error(StatusCode::BAD_REQUEST, &e);
            if e.status == StatusCode::REQUEST_TIMEOUT {
                return e.into_response();
            }
            return ApiError::bad_request("Invalid request payload").into_response();
        }
    };
    let Some((username, password)) = parse_credentials(&body) else {
        return ApiError::bad_request("Invalid request payload").into_response();
    };
    // Every attempt reserves a token of the global failure budget before any work (given back
    // unless it fails): once spent, guessing stops for everyone until it refills, however many
    // addresses the guesses come from.
    if let Err(retry_after) = d.reserve_attempt().await {
        return rate_limited(retry_after);
    }
    match d.verify(&username, &password).await {
        Ok(true) => state.audit.record(&username, Action::Login, None, Some(ip)),
        Ok(false) => {
            tracing::warn!(client.ip = %ip, "dashboard login failed");
            state.audit.record(&username, Action::LoginFailed, None, Some(ip));
            tokio::time::sleep(d.failure_delay).await;
            return ApiError::unauthorized(texts::LOGIN_FAILED).into_response();
        }
        Err(_) => {
            tracing::warn!(client.ip = %ip, "dashboard login refused: verifiers busy");
            return rate_limited(1);
        }
    }
    let token = d.issue(&username);
    let mut res = ok(json!({
        "token": token,
        "username": username,
        "change_pwd_hint": false,
        "md5_pwd_hint": false,
        "password_upgrade_required": false,
    }));
    let secure = if d.secure_cookie { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE_NAME}={token}; HttpOnly; Max-Age={}; Path=/; SameSite=Strict{secure}", d.token_ttl.as_secs());
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

fn rate_limited(retry_after: u64) -> Response {
    crate::metrics::rate_limited("login");
    ApiError::too_many(texts::LOGIN_RATE_LIMITED, retry_after).into_response()
}

fn parse_credentials(body: &Bytes) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let u = v.get("username")?.as_str()?.trim().to_string();
    let p = v.get("password")?.as_str()?.to_string();
    Some((u, p))
}
