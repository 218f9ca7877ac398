//! Request parameters shared by the front doors: query maps, the acting username, pagination,
//! session ownership.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::SessionRecord;

const MAX_USERNAME_CHARS: usize = 255;

/// The query string as a map (first value wins). Never rejects, so errors stay ours.
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut map = HashMap::new();
        if let Some(q) = parts.uri.query() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        Ok(Params(map))
    }
}

impl Params {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
}

/// The acting username. An API-key caller must name one (AstrBot's texts); a dashboard JWT acts
/// as its own user unless it names another. A key bound to a username acts as that user (when
/// the request names nobody) and may name no other (403).
pub fn username(caller: &Caller, provided: Option<&Value>) -> Result<String, ApiError> {
    let named = named_username(caller, provided)?;
    if let Caller::ApiKey { username: Some(bound), .. } = caller
        && &named != bound
    {
        return Err(ApiError::forbidden(BOUND_TO_ANOTHER));
    }
    Ok(named)
}

/// The text for a key bound to a username that names another.
pub const BOUND_TO_ANOTHER: &str = "This API key is bound to another username";

fn named_username(caller: &Caller, provided: Option<&Value>) -> Result<String, ApiError> {
    match provided {
        None | Some(Value::Null) => match caller {
            Caller::Dashboard { username } => Ok(username.clone()),
            Caller::ApiKey { username: Some(bound), .. } => Ok(bound.clone()),
            Caller::ApiKey { .. } => Err(ApiError::bad_request("Missing key: username")),
        },
        Some(Value::String(s)) => {
            let u = s.trim();
            if u.is_empty() {
                Err(ApiError::bad_request("username is empty"))
            } else if u.chars().count() > MAX_USERNAME_CHARS {
                Err(ApiError::bad_request(format!("username is too long (max {MAX_USERNAME_CHARS} characters)")))
            } else {
                Ok(u.to_string())
            }
        }
        Some(_) => Err(ApiError::bad_request("Invalid request body: username must be a string")),
    }
}

/// Same, from a query parameter.
pub fn username_q(caller: &Caller, params: &Params) -> Result<String, ApiError> {
    username(caller, params.get("username").map(|s| Value::String(s.to_string())).as_ref())
}

/// AstrBot's page/page_size rules: integers, page ≥ 1, 1 ≤ page_size ≤ 100.
pub fn pagination(params: &Params, default_size: i64) -> Result<(i64, i64), ApiError> {
    let parse = |k: &str, d: i64| -> Result<i64, ApiError> {
        match params.get(k) {
            None => Ok(d),
            Some(v) => {
                v.trim().parse::<i64>().map_err(|_| ApiError::bad_request("page and page_size must be integers"))
            }
        }
    };
    let page = parse("page", 1)?.max(1);
    let size = parse("page_size", default_size)?.clamp(1, 100);
    Ok((page, size))
}

/// The session if `username` owns it: 404 when unknown, 403 when another user's.
pub async fn owned_session(state: &AppState, session_id: &str, username: &str) -> Result<SessionRecord, ApiError> {
    if crate::agent::session::impossible(session_id) {
        return Err(ApiError::not_found("Session not found"));
    }
    match state.store.get_session(session_id).await? {
        None => Err(ApiError::not_found("Session not found")),
        Some(s) if s.creator != username => Err(ApiError::forbidden("session_id belongs to another username")),
        Some(s) => Ok(s),
    }
}
