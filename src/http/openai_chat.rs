//! `POST /v1/chat/completions`: OpenAI's request parsed into a
//! [`CompletionRequest`], answered whole (`chat.completion`) or streamed
//! ([`super::openai_stream`]).
//!
//! Passed to the provider unchanged: [`PASSED`] (tools and tool_choice included), after a type
//! check so that a malformed value is our 400, not the provider's. Refused: `n` > 1, `logprobs`
//! (chunks are rebuilt here, without the provider's log probabilities), the deprecated
//! `functions`/`function_call` (use `tools`). Other fields are ignored.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::openai_errors::{OpenAiError, OpenAiJson, completion_error};
use crate::agent::completion::{Answer, ChatMessage, CompletionRequest, Content, ContentPart, Role};
use crate::app::AppState;
use crate::auth::Caller;
use crate::providers::llm::{Completion, Usage};

/// Most messages in one request.
const MAX_MESSAGES: usize = 1024;

/// Parameters passed through, and the JSON type each must have.
pub const PASSED: [(&str, Kind); 15] = [
    ("temperature", Kind::Number),
    ("top_p", Kind::Number),
    ("max_tokens", Kind::Count),
    ("max_completion_tokens", Kind::Count),
    ("stop", Kind::Stop),
    ("seed", Kind::Integer),
    ("presence_penalty", Kind::Number),
    ("frequency_penalty", Kind::Number),
    ("response_format", Kind::Object),
    ("user", Kind::String),
    ("tools", Kind::Array),
    ("tool_choice", Kind::StringOrObject),
    ("parallel_tool_calls", Kind::Bool),
    ("logit_bias", Kind::Object),
    ("reasoning_effort", Kind::String),
];

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Number,
    Integer,
    /// An integer of at least 1.
    Count,
    String,
    Bool,
    Object,
    Array,
    StringOrObject,
    /// A string or up to 4 strings.
    Stop,
}

impl Kind {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Kind::Number => v.is_number(),
            Kind::Integer => crate::util::json_i64(v).is_some() || v.is_u64(),
            Kind::Count => crate::util::json_u64(v).is_some_and(|n| n >= 1),
            Kind::String => v.is_string(),
            Kind::Bool => v.is_boolean(),
            Kind::Object => v.is_object(),
            Kind::Array => v.is_array(),
            Kind::StringOrObject => v.is_string() || v.is_object(),
            Kind::Stop => v.is_string() || v.as_array().is_some_and(|a| a.len() <= 4 && a.iter().all(Value::is_string)),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Number => "a number",
            Kind::Integer => "an integer",
            Kind::Count => "an integer of at least 1",
            Kind::String => "a string",
            Kind::Bool => "a boolean",
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::StringOrObject => "a string or an object",
            Kind::Stop => "a string or an array of up to 4 strings",
        }
    }
}

pub async fn completions(State(state): State<AppState>, caller: Caller, OpenAiJson(body): OpenAiJson) -> Response {
    let (req, include_usage) = match parse(caller, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let model = req.model.clone();
    match state.agent.complete_stateless(req).await {
        Err(e) => completion_error(e).into_response(),
        Ok(Answer::Stream(s)) => super::openai_stream::render(s, model, include_usage, &state.config.server),
        Ok(Answer::Whole(c)) => axum::Json(whole(&model, *c)).into_response(),
    }
}

/// The request, and whether the stream ends with a usage chunk.
fn parse(caller: Caller, body: Value) -> Result<(CompletionRequest, bool), OpenAiError> {
    let Value::Object(mut obj) = body else {
        return Err(OpenAiError::invalid(None, "The request body must be a JSON object"));
    };
    let model = match obj.remove("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
        _ => return Err(OpenAiError::invalid(Some("model"), "you must provide a model parameter")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(expected("stream", "a boolean")),
    };
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(expected("stream_options.include_usage", "a boolean")),
        },
        Some(_) => return Err(expected("stream_options", "an object")),
    };
    match obj.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if crate::util::json_u64(n) == Some(1) => {}
        Some(n) if crate::util::json_u64(n).is_some_and(|n| n > 1) => {
            return Err(OpenAiError::invalid(Some("n"), "n > 1 is not supported: ask for one choice"));
        }
        Some(_) => return Err(expected("n", "an integer of at least 1")),
    }
    if obj.get("logprobs").is_some_and(|v| v.as_bool() == Some(true)) {
        return Err(OpenAiError::invalid(Some("logprobs"), "logprobs are not supported"));
    }
    for old in ["functions", "function_call"] {
        if obj.get(old).is_some_and(|v| !v.is_null()) {
            return Err(OpenAiError::invalid(Some(old), format!("{old} is not supported: use tools and tool_choice")));
        }
    }
    let messages = match obj.remove("messages") {
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(OpenAiError::invalid(Some("messages"), "messages must not be empty"));
        }
        Some(Value::Array(a)) if a.len() > MAX_MESSAGES => {
            return Err(OpenAiError::invalid(Some("messages"), format!("too many messages (max {MAX_MESSAGES})")));
        }
        Some(Value::Array(a)) => a.into_iter().enumerate().map(|(i, m)| message(i, m)).collect::<Result<_, _>>()?,
        _ => return Err(OpenAiError::invalid(Some("messages"), "you must provide a messages array")),
    };
    let mut params = Map::new();
    for (name, kind) in PASSED {
        match obj.remove(name) {
            None | Some(Value::Null) => {}
            Some(v) if kind.accepts(&v) => {
                // `5.0` is the integer 5 (as JSON Schema has it); the provider gets `5`.
                let v = match kind {
                    Kind::Integer | Kind::Count => crate::util::json_i64(&v).map_or(v, Value::from),
                    _ => v,
                };
                params.insert(name.to_string(), v);
            }
            Some(_) => return Err(expected(name, kind.expected())),
        }
    }
    Ok((CompletionRequest { caller, model, messages, params, stream }, include_usage && stream))
}

fn expected(param: &str, what: &str) -> OpenAiError {
    OpenAiError::invalid(Some(param), format!("{param} must be {what}"))
}

fn message(i: usize, v: Value) -> Result<ChatMessage, OpenAiError> {
    let Value::Object(mut fields) = v else {
        return Err(expected(&format!("messages[{i}]"), "an object"));
    };
    let role = match fields.remove("role") {
        Some(Value::String(r)) => Role::parse(&r)
            .ok_or_else(|| OpenAiError::invalid(Some(&format!("messages[{i}].role")), format!("unknown role: {r}")))?,
        _ => return Err(OpenAiError::invalid(Some(&format!("messages[{i}].role")), "each message needs a role")),
    };
    let content = match fields.remove("content") {
        None => Content::Absent,
        Some(Value::Null) => Content::Null,
        Some(Value::String(s)) => Content::Text(s),
        Some(Value::Array(parts)) => {
            Content::Parts(parts.into_iter().enumerate().map(|(j, p)| part(i, j, p)).collect::<Result<_, _>>()?)
        }
        Some(_) => return Err(expected(&format!("messages[{i}].content"), "a string or an array of parts")),
    };
    let needs_content = !matches!(role, Role::Assistant);
    if needs_content && matches!(content, Content::Absent | Content::Null) {
        return Err(OpenAiError::invalid(
            Some(&format!("messages[{i}].content")),
            format!("a {} message needs content", role.as_str()),
        ));
    }
    Ok(ChatMessage { role, content, fields })
}

fn part(i: usize, j: usize, p: Value) -> Result<ContentPart, OpenAiError> {
    let param = format!("messages[{i}].content[{j}]");
    let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
    match ty {
        "text" => match p.get("text") {
            Some(Value::String(t)) => Ok(ContentPart::Text(t.clone())),
            _ => Err(expected(&format!("{param}.text"), "a string")),
        },
        "image_url" => {
            let image = &p["image_url"];
            // Some clients send the URL itself instead of `{url}`.
            let url = image.as_str().or_else(|| image.get("url").and_then(Value::as_str));
            let Some(url) = url else {
                return Err(expected(&format!("{param}.image_url.url"), "a string"));
            };
            Ok(ContentPart::Image { url: url.to_string(), detail: image.get("detail").cloned() })
        }
        "file" => match p["file"].get("file_id") {
            Some(Value::String(id)) if !id.trim().is_empty() => Ok(ContentPart::Attachment {
                file_id: id.trim().to_string(),
                filename: p["file"].get("filename").and_then(Value::as_str).map(str::to_string),
            }),
            Some(_) => Err(expected(&format!("{param}.file.file_id"), "a non-empty string")),
            None if p["file"].get("file_data").is_some_and(Value::is_string) => Ok(ContentPart::Other(p)),
            None => Err(OpenAiError::invalid(Some(&param), "a file part needs file_id or file_data")),
        },
        "input_audio" | "refusal" => Ok(ContentPart::Other(p)),
        other => Err(OpenAiError::invalid(Some(&param), format!("unsupported content part type: {other:?}"))),
    }
}

pub fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// A whole answer as `chat.completion`.
fn whole(model: &str, c: Completion) -> Value {
    let mut message = json!({"role": "assistant", "content": c.content});
    if c.content.is_empty() && c.tool_calls.is_some() {
        message["content"] = Value::Null;
    }
    if let Some(t) = c.tool_calls {
        message["tool_calls"] = t;
    }
    if !c.reasoning.is_empty() {
        message["reasoning_content"] = json!(c.reasoning);
    }
    let mut v = json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": c.finish_reason.as_deref().unwrap_or("stop")}],
    });
    if let Some(u) = &c.usage {
        v["usage"] = usage_json(u);
    }
    v
}
