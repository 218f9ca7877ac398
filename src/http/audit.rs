//! The audit log over HTTP: `GET /api/v1/audit?limit=&before=` (dashboard JWT only), and the
//! [`Actor`] extractor with which handlers record what a dashboard user did (see `crate::audit`).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use serde_json::{Value, json};

use super::params::Params;
use crate::app::AppState;
use crate::audit::Action;
use crate::auth::caller::{Caller, client_ip};
use crate::error::{ApiError, ApiResult, ok};
use crate::store::AuditRecord;
use crate::util::iso_local;

/// Events per page unless `limit` says otherwise, and the most `limit` may ask for.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

/// Who is acting, for the audit log: the authorised caller's name (the dashboard username) and
/// the client address (`[server] trust_forwarded_for` rules). Like [`Caller`], it exists only on
/// routes behind an authorising layer.
pub struct Actor {
    pub name: String,
    pub ip: IpAddr,
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let trust = state.config.server.trust_forwarded_for;
        let ip = client_ip(&parts.headers, parts.extensions.get::<ConnectInfo<SocketAddr>>(), trust);
        Ok(Actor { name: caller.label(), ip })
    }
}

impl Actor {
    /// Records that this actor did `action` to `target`.
    pub fn record(&self, state: &AppState, action: Action, target: Option<&str>) {
        state.audit.record(&self.name, action, target, Some(self.ip));
    }

    /// [`Actor::record`] with a small JSON object saying more.
    pub fn record_detail(&self, state: &AppState, action: Action, target: Option<&str>, detail: Value) {
        state.audit.record_detail(&self.name, action, target, Some(self.ip), detail);
    }
}

/// `limit` (1–500, default 50) and `before` (an event id, ≥ 1), or a 400 that says which is wrong.
pub fn page(params: &Params) -> Result<(Option<i64>, i64), ApiError> {
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_LIMIT}")))?,
    };
    let before = match params.get("before") {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::bad_request("before must be a positive integer (an event id)"))?,
        ),
    };
    Ok((before, limit))
}

fn event_json(r: &AuditRecord) -> Value {
    let e = &r.event;
    json!({
        "id": r.id,
        "time": iso_local(e.time),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "ip": e.ip,
        "detail": e.detail,
    })
}

/// `GET /api/v1/audit`: the newest events first, and `next_before` (the id to pass as `before`
/// for the next, older page) when there are older ones.
pub async fn list(State(state): State<AppState>, _caller: Caller, params: Params) -> ApiResult {
    let (before, limit) = page(&params)?;
    let mut events = state.audit.list(before, limit + 1).await?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_before = if more { events.last().map(|e| e.id) } else { None };
    Ok(ok(json!({
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
        "next_before": next_before,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> Params {
        Params(q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn limit_and_before_are_checked() {
        assert_eq!(page(&params(&[])).ok(), Some((None, 50)));
        assert_eq!(page(&params(&[("limit", "500"), ("before", "7")])).ok(), Some((Some(7), 500)));
        for bad in ["0", "501", "-1", "ten", "", "1.5"] {
            let e = page(&params(&[("limit", bad)])).err().map(|e| e.message);
            assert_eq!(e.as_deref(), Some("limit must be an integer from 1 to 500"), "{bad:?}");
        }
        for bad in ["0", "-3", "x", ""] {
            let e = page(&params(&[("before", bad)])).err().map(|e| e.message);
            assert_eq!(e.as_deref(), Some("before must be a positive integer (an event id)"), "{bad:?}");
        }
    }
}
