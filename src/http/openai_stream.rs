//! A stateless completion streamed as OpenAI's `chat.completion.chunk` SSE: one id for every
//! chunk, a first chunk with the role, deltas (`content`, `reasoning_content`, `tool_calls` as the
//! provider sent them), a chunk with the `finish_reason`, with `stream_options.include_usage` a
//! last chunk with `usage` and no choices, then `data: [DONE]`. A failure after the stream began
//! is a `data: {"error":{…}}` chunk and the end, without `[DONE]` (the SDKs raise it).
//!
//! The body owns the [`CompletionStream`]: when the client goes away the server drops the body,
//! which drops the upstream request at once. Events available together go out in one write; a
//! `: keepalive` comment (which SSE clients ignore) is written after `[server]
//! sse_keepalive_secs` of silence, which also notices a vanished client while the model thinks.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::FutureExt;
use serde_json::{Value, json};

use super::openai_chat::{completion_id, usage_json};
use super::openai_errors::completion_error;
use crate::agent::completion::{CompletionError, CompletionStream};
use crate::config::ServerConfig;
use crate::providers::llm::LlmEvent;

struct Render {
    stream: Box<CompletionStream>,
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    started: bool,
    finished: bool,
}

impl Render {
    fn chunk(&self, out: &mut String, delta: Value, finish: Option<&str>) {
        let mut c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        sse(out, &c);
    }

    /// Renders one event; true when the stream is over.
    fn absorb(&mut self, ev: Option<Result<LlmEvent, CompletionError>>, out: &mut String) -> bool {
        match ev {
            Some(Ok(LlmEvent::Content(t))) => self.chunk(out, json!({"content": t}), None),
            Some(Ok(LlmEvent::Reasoning(t))) => self.chunk(out, json!({"reasoning_content": t}), None),
            Some(Ok(LlmEvent::ToolCalls(calls))) => self.chunk(out, json!({"tool_calls": calls}), None),
            Some(Ok(LlmEvent::Finish(reason))) => {
                if !self.finished {
                    self.finished = true;
                    self.chunk(out, json!({}), Some(&reason));
                }
            }
            // Kept by the stream itself, and sent last.
            Some(Ok(LlmEvent::Usage(_))) => {}
            Some(Err(e)) => {
                sse(out, &completion_error(e).body());
                return true;
            }
            None => {
                if !self.finished {
                    self.finished = true;
                    self.chunk(out, json!({}), Some("stop"));
                }
                if self.include_usage
                    && let Some(u) = self.stream.usage()
                {
                    let c = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage_json(&u),
                    });
                    sse(out, &c);
                }
                out.push_str("data: [DONE]\n\n");
                return true;
            }
        }
        false
    }
}

fn sse(out: &mut String, v: &Value) {
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

pub fn render(stream: Box<CompletionStream>, model: String, include_usage: bool, server: &ServerConfig) -> Response {
    let keepalive = Duration::from_secs(server.sse_keepalive_secs.max(1));
    let state = Render {
        stream,
        id: completion_id(),
        created: chrono::Utc::now().timestamp(),
        model,
        include_usage,
        started: false,
        finished: false,
    };
    let body = futures_util::stream::unfold(Some(state), move |st| async move {
        let mut st = st?;
        let mut out = String::new();
        if !st.started {
            st.started = true;
            st.chunk(&mut out, json!({"role": "assistant", "content": ""}), None);
            return Some((Ok::<Bytes, std::convert::Infallible>(Bytes::from(out)), Some(st)));
        }
        let ev = tokio::select! {
            ev = st.stream.next() => ev,
            _ = tokio::time::sleep(keepalive) => {
                return Some((Ok(Bytes::from_static(b": keepalive\n\n")), Some(st)));
            }
        };
        let mut ended = st.absorb(ev, &mut out);
        // Whatever else is ready goes in the same write (`next` is cancel-safe).
        while !ended && let Some(ev) = st.stream.next().now_or_never() {
            ended = st.absorb(ev, &mut out);
        }
        Some((Ok(Bytes::from(out)), (!ended).then_some(st)))
    });
    let mut res = Response::new(Body::from_stream(body));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
