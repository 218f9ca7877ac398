//! Governance of API keys (dashboard JWT only): a key's `limits` as requests give them, `PATCH
//! /api/v1/api-keys/{key_id}` and `GET /api/v1/api-keys/{key_id}/usage`.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::auth::caller::Caller;
use crate::error::{ApiError, ApiResult, RawBody, ok};
use crate::store::{KeyUpdate, Limits, UsageCounts};

const MAX_RPM: u64 = 1_000_000;
const MAX_CONCURRENT: u64 = 100_000;
const MAX_TOKENS: u64 = 1_000_000_000_000;
/// Days a usage request may cover.
const MAX_DAYS: i64 = 366;
const DEFAULT_DAYS: i64 = 30;

/// A key's limits as JSON: every field, `null` when unlimited.
pub fn limits_json(l: &Limits) -> Value {
    json!({
        "requests_per_minute": l.requests_per_minute,
        "concurrent_runs": l.concurrent_runs,
        "tokens_per_day": l.tokens_per_day,
    })
}

/// `limits` of a request applied over `base`: absent keeps `base`, `null` is unlimited, and an
/// object sets the fields it names (`null` = unlimited) and keeps the others.
pub fn parse_limits(v: Option<&Value>, base: Limits) -> Result<Limits, ApiError> {
    let obj = match v {
        None => return Ok(base),
        Some(Value::Null) => return Ok(Limits::default()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::bad_request("limits must be an object")),
    };
    if let Some(k) =
        obj.keys().find(|k| !matches!(k.as_str(), "requests_per_minute" | "concurrent_runs" | "tokens_per_day"))
    {
        return Err(ApiError::bad_request(format!("Unknown limit: {}", crate::util::truncate_chars(k, 64))));
    }
    let field = |name: &str, max: u64| -> Result<Option<Option<u64>>, ApiError> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Number(n)) if n.as_u64().is_some_and(|x| (1..=max).contains(&x)) => Ok(Some(n.as_u64())),
            Some(_) => Err(ApiError::bad_request(format!("limits.{name} must be null or an integer from 1 to {max}"))),
        }
    };
    let mut l = base;
    if let Some(x) = field("requests_per_minute", MAX_RPM)? {
        l.requests_per_minute = x.map(|x| x as u32);
    }
    if let Some(x) = field("concurrent_runs", MAX_CONCURRENT)? {
        l.concurrent_runs = x.map(|x| x as u32);
    }
    if let Some(x) = field("tokens_per_day", MAX_TOKENS)? {
        l.tokens_per_day = x;
    }
    Ok(l)
}

/// `PATCH /api/v1/api-keys/{key_id}`: `name` and `limits` (merged, see [`parse_limits`]).
pub async fn update(
    State(state): State<AppState>,
    actor: super::audit::Actor,
    Path(key_id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let obj = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(ApiError::bad_request("Invalid request payload")),
        Err(e) => return Err(ApiError::bad_request(format!("Invalid JSON body: {e}"))),
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "name" | "limits")) {
        return Err(ApiError::bad_request(format!("Unknown field: {}", crate::util::truncate_chars(k, 64))));
    }
    let Some(current) = state.keys.get(&key_id).await? else {
        return Err(ApiError::not_found("API key not found"));
    };
    let update = KeyUpdate {
        name: match obj.get("name") {
            None => None,
            Some(v) => Some(super::api_keys::parse_name(v)?),
        },
        limits: obj.contains_key("limits").then(|| parse_limits(obj.get("limits"), current.limits)).transpose()?,
    };
    let Some(rec) = state.keys.update(&key_id, &update).await? else {
        return Err(ApiError::not_found("API key not found"));
    };
    tracing::info!(key.id = %key_id, "api key updated");
    let mut changed = Map::new();
    if let Some(n) = &update.name {
        changed.insert("name".into(), json!(n));
    }
    if let Some(l) = &update.limits {
        changed.insert("limits".into(), limits_json(l));
    }
    actor.record_detail(&state, crate::audit::Action::ApiKeyUpdate, Some(&key_id), Value::Object(changed));
    Ok(ok(super::api_keys::key_json(&rec)))
}

fn counts_json(c: &UsageCounts) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("requests".into(), json!(c.requests));
    m.insert("runs".into(), json!(c.runs));
    m.insert("prompt_tokens".into(), json!(c.prompt_tokens));
    m.insert("completion_tokens".into(), json!(c.completion_tokens));
    m.insert("total_tokens".into(), json!(c.tokens()));
    m.insert("audio_in_seconds".into(), json!(c.audio_in_ms as f64 / 1000.0));
    m.insert("audio_out_seconds".into(), json!(c.audio_out_ms as f64 / 1000.0));
    m
}

/// `GET /api/v1/api-keys/{key_id}/usage?days=N`: the last N UTC days (today included), every
/// day listed (zeros included), oldest first, with the totals over them.
pub async fn usage(
    State(state): State<AppState>,
    _caller: Caller,
    Path(key_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let days = match crate::auth::caller::query_param(query.as_deref(), "days") {
        None => DEFAULT_DAYS,
        Some(d) => match d.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_DAYS).contains(&n) => n,
            _ => return Err(ApiError::bad_request(format!("days must be an integer from 1 to {MAX_DAYS}"))),
        },
    };
    let Some(key) = state.keys.get(&key_id).await? else {
        return Err(ApiError::not_found("API key not found"));
    };
    let today = chrono::Utc::now().date_naive();
    let first = today - chrono::Days::new((days - 1) as u64);
    let fmt = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let rows = state.agent.governor.book().range(&key.key_id, &fmt(first), &fmt(today)).await?;
    let mut total = UsageCounts::default();
    let mut by_day: std::collections::HashMap<String, UsageCounts> = std::collections::HashMap::new();
    for r in rows {
        total.add(&r.counts);
        by_day.insert(r.day, r.counts);
    }
    let list: Vec<Value> = first
        .iter_days()
        .take(days as usize)
        .map(|d| {
            let day = fmt(d);
            let mut m = Map::new();
            m.insert("date".into(), json!(day));
            m.extend(counts_json(&by_day.get(&day).copied().unwrap_or_default()));
            Value::Object(m)
        })
        .collect();
    let mut out = Map::new();
    out.insert("key_id".into(), json!(key.key_id));
    out.extend(counts_json(&total));
    out.insert("limits".into(), limits_json(&key.limits));
    out.insert("days".into(), Value::Array(list));
    Ok(ok(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value, base: Limits) -> Result<Limits, String> {
        parse_limits(Some(&v), base).map_err(|e| e.message)
    }

    #[test]
    fn limits_merge_like_a_patch() {
        let base = Limits { requests_per_minute: Some(10), concurrent_runs: Some(2), tokens_per_day: None };
        assert_eq!(parse_limits(None, base).ok(), Some(base));
        assert_eq!(parse(Value::Null, base), Ok(Limits::default()));
        assert_eq!(
            parse(json!({"concurrent_runs": null, "tokens_per_day": 500}), base),
            Ok(Limits { requests_per_minute: Some(10), concurrent_runs: None, tokens_per_day: Some(500) })
        );
    }

    #[test]
    fn bad_limits_are_named() {
        let d = Limits::default();
        assert_eq!(parse(json!(5), d), Err("limits must be an object".into()));
        assert_eq!(parse(json!({"rpm": 5}), d), Err("Unknown limit: rpm".into()));
        for bad in [json!(0), json!(-1), json!(1.5), json!("5"), json!(2_000_000)] {
            assert_eq!(
                parse(json!({"requests_per_minute": bad}), d),
                Err("limits.requests_per_minute must be null or an integer from 1 to 1000000".into())
            );
        }
    }
}
