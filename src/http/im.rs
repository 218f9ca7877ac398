//! IM endpoints (scope `im`): `POST /api/v1/im/message` (alias `/api/v1/im/messages`) and
//! `GET /api/v1/im/bots`.
//!
//! `umo` = `<platform_id>:<MessageType>:<session>`. The delivery (webchat history, open streams,
//! bound sockets; or a signed webhook) and the ownership rule are the agent's
//! ([`crate::agent::proactive`]); a failed webhook delivery is 502.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::agent::errors::TurnError;
use crate::agent::input;
use crate::agent::proactive::{Delivered, Target};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ok};

const MESSAGE_TYPES: [&str; 3] = ["GroupMessage", "FriendMessage", "OtherMessage"];

/// The configured platform ids (the built-in `webchat` is not listed, as in AstrBot).
pub async fn list_bots(State(state): State<AppState>, _caller: Caller) -> Response {
    ok(json!({ "bot_ids": state.agent.platform_ids() }))
}

/// Splits on the first two `:` with AstrBot's error texts.
pub fn parse_umo(umo: &str) -> Result<Target, String> {
    let parts: Vec<&str> = umo.splitn(3, ':').collect();
    if parts.len() < 3 {
        return Err(format!("Invalid umo: not enough values to unpack (expected 3, got {})", parts.len()));
    }
    if !MESSAGE_TYPES.contains(&parts[1]) {
        return Err(format!("Invalid umo: '{}' is not a valid MessageType", parts[1]));
    }
    if parts[0].is_empty() || parts[2].trim().is_empty() {
        return Err("Invalid umo: platform id and session must not be empty".into());
    }
    Ok(Target { platform_id: parts[0].to_string(), message_type: parts[1].to_string(), session: parts[2].to_string() })
}

pub async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("Invalid request body: expected a JSON object"))?;
    if obj.get("message").is_some_and(Value::is_null) {
        return Err(ApiError::bad_request("Missing key: message"));
    }
    let target = match obj.get("umo") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("Missing key: umo")),
        Some(Value::String(s)) => parse_umo(s.trim()).map_err(ApiError::bad_request)?,
        Some(_) => return Err(ApiError::bad_request("Invalid umo: umo must be a string")),
    };
    if !state.agent.knows_platform(&target.platform_id) {
        return Err(ApiError::bad_request(format!(
            "Bot not found or not running for platform: {}",
            target.platform_id
        )));
    }
    let parts = input::parse_message(obj.get("message").unwrap_or(&Value::Null), true).map_err(TurnError::from)?;
    match state.agent.send_proactive(&caller, &target, parts).await? {
        Ok(Delivered::Saved { message_id }) => Ok(ok(json!({ "message_id": message_id }))),
        Ok(Delivered::Sent) => Ok(ok(json!({}))),
        Err(failed) => Err(ApiError::new(StatusCode::BAD_GATEWAY, failed.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umo_parsing() {
        assert_eq!(parse_umo("webchat:FriendMessage:a:b").unwrap().session, "a:b");
        assert_eq!(
            parse_umo("webchat:FriendMessage").unwrap_err(),
            "Invalid umo: not enough values to unpack (expected 3, got 2)"
        );
        assert_eq!(parse_umo("webchat:Bogus:x").unwrap_err(), "Invalid umo: 'Bogus' is not a valid MessageType");
    }
}
