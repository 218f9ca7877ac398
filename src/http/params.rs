//! Request parameters shared by the front doors: query maps, the acting username, pagination,
//! session ownership.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;

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

    /// A parameter that must be present and not blank (AstrBot's `Missing key: {k}`), trimmed.
    pub fn required(&self, k: &str) -> Result<&str, ApiError> {
        required(self.get(k), k)
    }
}

/// A value that must be present and not blank (AstrBot's `Missing key: {key}`), trimmed.
pub fn required<'a>(v: Option<&'a str>, key: &str) -> Result<&'a str, ApiError> {
    v.map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad_request(format!("Missing key: {key}")))
}

/// The acting username (see [`Caller::act_as`]), as an HTTP error when it cannot be used.
pub fn username(caller: &Caller, provided: Option<&Value>) -> Result<String, ApiError> {
    caller.act_as(provided).map_err(super::errors::user_error)
}

/// The text for a key bound to a username that names another.
pub const BOUND_TO_ANOTHER: &str = "This API key is bound to another username";

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
