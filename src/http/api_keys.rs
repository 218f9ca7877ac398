//! API-key management (dashboard JWT only): `/api/v1/api-keys…` and the legacy `/api/apikey/*`.
//!
//! Bodies, key object fields and error texts follow AstrBot (notes §3.4); validation errors are
//! 400 and an unknown key is 404. The raw key appears exactly once, in the create response.
//! Creating, revoking and deleting a key are recorded in the audit log (`super::audit::Actor`).

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::audit::Actor;
use crate::app::AppState;
use crate::audit::Action;
use crate::auth::Scope;
use crate::auth::caller::Caller;
use crate::error::{ApiError, ApiResult, RawBody, ok};
use crate::store::{ApiKeyRecord, Limits, now_micros};
use crate::util::iso_local;

const DEFAULT_NAME: &str = "Untitled API Key";
const MAX_NAME_CHARS: usize = 255;
const MAX_EXPIRES_DAYS: i64 = 36_500;

/// The key object as AstrBot renders it (timestamps in the server's local offset), plus
/// `username` for keys bound to one.
pub fn key_json(k: &ApiKeyRecord) -> Value {
    let now = now_micros();
    let mut v = json!({
        "key_id": k.key_id,
        "name": k.name,
        "key_prefix": k.key_prefix,
        "scopes": k.scopes,
        "created_by": k.created_by,
        "created_at": iso_local(k.created_at),
        "updated_at": iso_local(k.updated_at),
        "last_used_at": k.last_used_at.map(iso_local),
        "expires_at": k.expires_at.map(iso_local),
        "revoked_at": k.revoked_at.map(iso_local),
        "is_revoked": k.revoked_at.is_some(),
        "is_expired": k.expires_at.is_some_and(|e| e <= now),
    });
    if let Some(u) = &k.username {
        v["username"] = json!(u);
    }
    v["limits"] = super::key_limits::limits_json(&k.limits);
    v
}

pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult {
    let keys = state.keys.list().await?;
    Ok(ok(keys.iter().map(key_json).collect::<Vec<_>>()))
}

/// Parsed and validated create request.
#[derive(Debug, PartialEq)]
pub struct CreateRequest {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_in_days: Option<i64>,
    /// Binds the key to one username.
    pub username: Option<String>,
    /// `[api_keys] default_limits`, overridden by the request's `limits`.
    pub limits: Limits,
}

/// A key's name: blank or `null` is AstrBot's default name.
pub fn parse_name(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok(DEFAULT_NAME.to_string()),
        Value::String(s) if s.trim().is_empty() => Ok(DEFAULT_NAME.to_string()),
        Value::String(s) if s.trim().chars().count() > MAX_NAME_CHARS => {
            Err(ApiError::bad_request(format!("name is too long (max {MAX_NAME_CHARS} characters)")))
        }
        Value::String(s) => Ok(s.trim().to_string()),
        _ => Err(ApiError::bad_request("name must be a string")),
    }
}

/// Validates a create body with AstrBot's texts. An empty body means all defaults.
pub fn parse_create(body: &Map<String, Value>, default_limits: Limits) -> Result<CreateRequest, ApiError> {
    let name = body.get("name").map(parse_name).transpose()?.unwrap_or_else(|| DEFAULT_NAME.to_string());
    let scopes = Scope::parse_list(body.get("scopes")).map_err(ApiError::bad_request)?;
    let expires_in_days = match body.get("expires_in_days") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let d = as_integer(v).ok_or_else(|| ApiError::bad_request("expires_in_days must be an integer"))?;
            if d <= 0 {
                return Err(ApiError::bad_request("expires_in_days must be greater than 0"));
            }
            if d > MAX_EXPIRES_DAYS {
                return Err(ApiError::bad_request(format!("expires_in_days must be at most {MAX_EXPIRES_DAYS}")));
            }
            Some(d)
        }
    };
    let username = match body.get("username") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => return Err(ApiError::bad_request("username is empty")),
        Some(Value::String(s)) if s.trim().chars().count() > MAX_NAME_CHARS => {
            return Err(ApiError::bad_request(format!("username is too long (max {MAX_NAME_CHARS} characters)")));
        }
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => return Err(ApiError::bad_request("username must be a string")),
    };
    let limits = super::key_limits::parse_limits(body.get("limits"), default_limits)?;
    Ok(CreateRequest { name, scopes, expires_in_days, username, limits })
}

/// Integers, integral floats and integer strings (pydantic's lax mode accepts these too).
fn as_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map(|f| f as i64))
        }
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The body as a JSON object; an empty body is `{}`.
fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("Invalid request payload")),
        Err(e) => Err(ApiError::bad_request(format!("Invalid JSON body: {e}"))),
    }
}

pub async fn create(State(state): State<AppState>, caller: Caller, actor: Actor, RawBody(body): RawBody) -> ApiResult {
    let req = parse_create(&body_object(&body)?, state.config.api_keys.default_limits)?;
    let created_by = caller.dashboard_username().unwrap_or("dashboard").to_string();
    let (rec, raw) = state
        .keys
        .create(&req.name, &req.scopes, req.expires_in_days, req.username.as_deref(), req.limits, &created_by)
        .await?;
    tracing::info!(key.id = %rec.key_id, "api key created");
    actor.record_detail(&state, Action::ApiKeyCreate, Some(&rec.key_id), crate::audit::key_detail(&rec));
    let mut obj = key_json(&rec);
    obj["api_key"] = Value::String(raw);
    Ok(ok(obj))
}

async fn do_revoke(state: &AppState, actor: &Actor, key_id: &str) -> ApiResult {
    if !state.keys.revoke(key_id).await? {
        return Err(ApiError::not_found("API key not found"));
    }
    tracing::info!(key.id = %key_id, "api key revoked");
    actor.record(state, Action::ApiKeyRevoke, Some(key_id));
    Ok(ok(json!({})))
}

async fn do_delete(state: &AppState, actor: &Actor, key_id: &str) -> ApiResult {
    if !state.keys.delete(key_id).await? {
        return Err(ApiError::not_found("API key not found"));
    }
    tracing::info!(key.id = %key_id, "api key deleted");
    actor.record(state, Action::ApiKeyDelete, Some(key_id));
    Ok(ok(json!({})))
}

fn key_id_from_body(body: &[u8]) -> Result<String, ApiError> {
    match body_object(body)?.get("key_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(ApiError::bad_request("Missing key: key_id")),
    }
}

pub async fn revoke(State(state): State<AppState>, actor: Actor, Path(key_id): Path<String>) -> ApiResult<Response> {
    do_revoke(&state, &actor, &key_id).await
}

pub async fn delete(State(state): State<AppState>, actor: Actor, Path(key_id): Path<String>) -> ApiResult<Response> {
    do_delete(&state, &actor, &key_id).await
}

pub async fn revoke_by_body(
    State(state): State<AppState>,
    actor: Actor,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    do_revoke(&state, &actor, &key_id_from_body(&body)?).await
}

pub async fn delete_by_body(
    State(state): State<AppState>,
    actor: Actor,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    do_delete(&state, &actor, &key_id_from_body(&body)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn err(v: Value) -> String {
        parse_create(&obj(v), Limits::default()).err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn create_defaults() {
        let r = parse_create(&Map::new(), Limits::default()).ok();
        assert_eq!(
            r,
            Some(CreateRequest {
                name: DEFAULT_NAME.into(),
                scopes: Scope::DEFAULT.to_vec(),
                expires_in_days: None,
                username: None,
                limits: Limits::default(),
            })
        );
    }

    #[test]
    fn create_errors_use_astrbot_texts() {
        assert_eq!(err(json!({"scopes": "chat"})), "Invalid scopes");
        assert_eq!(err(json!({"scopes": ["chat", "bogus", "x"]})), "Invalid scopes: bogus, x");
        assert_eq!(err(json!({"scopes": []})), "At least one valid scope is required");
        assert_eq!(err(json!({"expires_in_days": "soon"})), "expires_in_days must be an integer");
        assert_eq!(err(json!({"expires_in_days": 1.5})), "expires_in_days must be an integer");
        assert_eq!(err(json!({"expires_in_days": 0})), "expires_in_days must be greater than 0");
        assert_eq!(err(json!({"name": 5})), "name must be a string");
        let r = parse_create(&obj(json!({"scopes": ["im", "im"], "expires_in_days": "3"})), Limits::default()).ok();
        assert_eq!(r.map(|r| (r.scopes, r.expires_in_days)), Some((vec![Scope::Im], Some(3))));
    }
}
