//! An OpenAI-compatible `/chat/completions` client: streaming (parsed with a real SSE parser) and
//! non-streaming, `reasoning_content`, usage, upstream error bodies, and three timeouts
//! (connect, first token, idle between chunks).
//!
//! Dropping a [`ChatStream`] (or the future of [`OpenAiProvider::complete`]) aborts the upstream
//! request at once: that is how a cancelled run stops paying for tokens.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::sse_limit;
use crate::config::{PdfInput, ProviderConfig};

/// Largest upstream error body we read (the rest is ignored).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest non-streamed answer we accept (a streamed one is bounded by the run's byte cap).
const MAX_ANSWER_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LlmError {
    #[error("cannot reach the LLM provider: {0}")]
    Connect(String),
    #[error("the LLM provider did not answer within {0} s")]
    FirstTokenTimeout(u64),
    #[error("the LLM provider stalled for {0} s mid-stream")]
    IdleTimeout(u64),
    #[error("LLM provider error (HTTP {status}): {message}")]
    Upstream { status: u16, message: String },
    #[error("the LLM provider's stream broke off: {0}")]
    Interrupted(String),
    #[error("unreadable answer from the LLM provider: {0}")]
    Protocol(String),
}

impl LlmError {
    /// What a client is told: the class of failure, never the provider's own text (which can
    /// quote credentials, e.g. `Incorrect API key provided: sk-live-AB****yz`). The full error
    /// goes to the log.
    pub fn public_message(&self) -> String {
        match self {
            LlmError::Connect(_) => "The model provider is unreachable".into(),
            LlmError::FirstTokenTimeout(s) => format!("The model provider did not answer within {s} s"),
            LlmError::IdleTimeout(s) => format!("The model provider stalled for {s} s mid-stream"),
            LlmError::Upstream { status: 401 | 403, .. } => {
                "The model provider refused astrgate's credentials (provider authentication failed)".into()
            }
            LlmError::Upstream { status: 429, .. } => "The model provider is rate limiting requests (HTTP 429)".into(),
            LlmError::Upstream { status, .. } if (400..500).contains(status) => {
                format!("The model provider rejected the request (HTTP {status})")
            }
            LlmError::Upstream { status: 200, .. } => "The model provider answered with an error".into(),
            LlmError::Upstream { status, .. } => format!("The model provider is unavailable (HTTP {status})"),
            LlmError::Interrupted(_) => "The model provider's stream broke off".into(),
            LlmError::Protocol(_) => "The model provider sent an unreadable answer".into(),
        }
    }

    /// A stable machine-readable code for error events.
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::Connect(_) => "UPSTREAM_UNREACHABLE",
            LlmError::FirstTokenTimeout(_) | LlmError::IdleTimeout(_) => "UPSTREAM_TIMEOUT",
            LlmError::Upstream { .. } => "UPSTREAM_ERROR",
            LlmError::Interrupted(_) => "UPSTREAM_INTERRUPTED",
            LlmError::Protocol(_) => "UPSTREAM_PROTOCOL",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    Content(String),
    Reasoning(String),
    /// A `tool_calls` delta, exactly as the provider sent it (an array of partial calls).
    ToolCalls(Value),
    /// The answer's `finish_reason` (`stop`, `length`, `tool_calls`…).
    Finish(String),
    Usage(Usage),
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub content: String,
    pub reasoning: String,
    pub usage: Option<Usage>,
    /// The message's `tool_calls`, exactly as the provider sent them.
    pub tool_calls: Option<Value>,
    pub finish_reason: Option<String>,
}

/// What to ask. `messages` are OpenAI chat messages (content may be a string or parts).
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Value>,
    /// Request parameters sent as they are (`temperature`, `tools`, `stop`…), checked by the
    /// caller; they never replace `model`, `messages`, `stream` or `stream_options`. A request's
    /// `max_tokens`/`max_completion_tokens` and `temperature` win over the provider's defaults.
    pub params: serde_json::Map<String, Value>,
}

pub struct OpenAiProvider {
    pub id: String,
    pub model: String,
    /// How PDFs reach this provider (`[[providers]] pdf_input`).
    pub pdf_input: PdfInput,
    url: String,
    api_key: Option<SecretString>,
    client: reqwest::Client,
    first_token_timeout: Duration,
    idle_timeout: Duration,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider").field("id", &self.id).field("url", &self.url).finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    pub fn new(cfg: &ProviderConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            id: cfg.id.clone(),
            model: cfg.model.clone(),
            pdf_input: cfg.pdf_input,
            url: format!("{}/chat/completions", cfg.base_url.trim_end_matches('/')),
            api_key: cfg.api_key.clone(),
            client,
            first_token_timeout: Duration::from_secs(cfg.first_token_timeout_secs),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
            max_tokens: cfg.max_tokens,
            temperature: cfg.temperature,
        })
    }

    fn body(&self, req: &ChatRequest, stream: bool) -> Value {
        let mut body = json!({"model": req.model, "messages": req.messages, "stream": stream});
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        let asks = |k: &str| req.params.contains_key(k);
        if let Some(m) = self.max_tokens.filter(|_| !asks("max_tokens") && !asks("max_completion_tokens")) {
            body["max_tokens"] = json!(m);
        }
        if let Some(t) = self.temperature.filter(|_| !asks("temperature")) {
            body["temperature"] = json!(t);
        }
        for (k, v) in &req.params {
            if !matches!(k.as_str(), "model" | "messages" | "stream" | "stream_options") {
                body[k.as_str()] = v.clone();
            }
        }
        body
    }

    async fn send(&self, body: &Value, accept: &str) -> Result<reqwest::Response, LlmError> {
        let mut rb = self.client.post(&self.url).header("accept", accept).json(body);
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k.expose_secret());
        }
        let fut = rb.send();
        let res = match tokio::time::timeout(self.first_token_timeout, fut).await {
            Err(_) => return Err(LlmError::FirstTokenTimeout(self.first_token_timeout.as_secs())),
            Ok(Err(e)) => return Err(LlmError::Connect(describe(e))),
            Ok(Ok(r)) => r,
        };
        if !res.status().is_success() {
            let status = res.status().as_u16();
            // The error body is read under the idle timeout: a stalled body must not hang the run.
            let text =
                tokio::time::timeout(self.idle_timeout, read_capped(res, MAX_ERROR_BODY)).await.unwrap_or_default();
            return Err(LlmError::Upstream { status, message: error_message(&text, status) });
        }
        Ok(res)
    }

    /// Starts a streamed completion.
    pub async fn stream(&self, req: &ChatRequest) -> Result<ChatStream, LlmError> {
        let res = self.send(&self.body(req, true), "text/event-stream").await?;
        Ok(ChatStream {
            inner: Box::pin(sse_limit::capped(res.bytes_stream(), sse_limit::MAX_EVENT_BYTES).eventsource()),
            pending: VecDeque::new(),
            deadline: None,
            first: true,
            first_timeout: self.first_token_timeout,
            idle_timeout: self.idle_timeout,
            done: false,
            finished_reason: false,
        })
    }

    /// A non-streamed completion.
    pub async fn complete(&self, req: &ChatRequest) -> Result<Completion, LlmError> {
        let res = self.send(&self.body(req, false), "application/json").await?;
        let bytes = match tokio::time::timeout(self.first_token_timeout, read_limited(res, MAX_ANSWER_BODY)).await {
            Err(_) => return Err(LlmError::FirstTokenTimeout(self.first_token_timeout.as_secs())),
            Ok(r) => r?,
        };
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| LlmError::Protocol(e.to_string()))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Err(LlmError::Upstream { status: 200, message: error_text(err) });
        }
        let msg = &v["choices"][0]["message"];
        if msg.is_null() {
            return Err(LlmError::Protocol("no choices in the answer".into()));
        }
        Ok(Completion {
            content: msg["content"].as_str().unwrap_or_default().to_string(),
            reasoning: reasoning_of(msg).unwrap_or_default().to_string(),
            usage: v.get("usage").and_then(parse_usage),
            tool_calls: msg.get("tool_calls").filter(|t| !t.is_null()).cloned(),
            finish_reason: v["choices"][0]["finish_reason"].as_str().map(str::to_string),
        })
    }
}

type SseStream =
    Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, EventStreamError<sse_limit::ReadError>>> + Send>>;

/// A streamed answer; read it with [`ChatStream::next`]. The first-token and idle timeouts run
/// from the last event that carried something (text, a tool call, a finish, usage), whatever
/// the reads in between: [`ChatStream::next`] is
/// cancel-safe (a caller may drop it in a `select!`) and dropping it does not restart the clock.
pub struct ChatStream {
    inner: SseStream,
    pending: VecDeque<LlmEvent>,
    /// When the current wait for an event times out.
    deadline: Option<tokio::time::Instant>,
    first: bool,
    first_timeout: Duration,
    idle_timeout: Duration,
    done: bool,
    finished_reason: bool,
}

impl ChatStream {
    /// The next event; `None` at the normal end of the answer.
    pub async fn next(&mut self) -> Option<Result<LlmEvent, LlmError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            let limit = if self.first { self.first_timeout } else { self.idle_timeout };
            let deadline = *self.deadline.get_or_insert_with(|| tokio::time::Instant::now() + limit);
            let item = match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Err(_) => {
                    self.done = true;
                    let secs = limit.as_secs();
                    return Some(Err(if self.first {
                        LlmError::FirstTokenTimeout(secs)
                    } else {
                        LlmError::IdleTimeout(secs)
                    }));
                }
                Ok(i) => i,
            };
            match item {
                None => {
                    self.done = true;
                    // Some servers omit [DONE]; a finish_reason is proof enough that the answer is whole.
                    if self.finished_reason {
                        return None;
                    }
                    return Some(Err(LlmError::Interrupted("the stream ended before the answer was complete".into())));
                }
                Some(Err(EventStreamError::Transport(sse_limit::ReadError::Transport(e)))) => {
                    self.done = true;
                    return Some(Err(LlmError::Interrupted(describe(e))));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(LlmError::Protocol(e.to_string())));
                }
                Some(Ok(ev)) => {
                    let data = ev.data.trim();
                    if data.is_empty() {
                        continue;
                    }
                    if data == "[DONE]" {
                        self.done = true;
                        continue;
                    }
                    // Typed and borrowing: no map is built per chunk (this runs once per token).
                    let chunk: ChunkRaw<'_> = match serde_json::from_str(data) {
                        Ok(v) => v,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(LlmError::Protocol(format!("bad chunk: {e}"))));
                        }
                    };
                    if let Some(err) = chunk.error.as_ref().filter(|e| !e.is_null()) {
                        self.done = true;
                        return Some(Err(LlmError::Upstream { status: 200, message: error_text(err) }));
                    }
                    self.absorb(chunk);
                    // Only an event that says something restarts the clock: empty or
                    // content-less events for ever would otherwise hold the run open.
                    if !self.pending.is_empty() {
                        self.deadline = None;
                        self.first = false;
                    }
                }
            }
        }
    }

    fn absorb(&mut self, chunk: ChunkRaw<'_>) {
        if let Some(choice) = chunk.choices.into_iter().next() {
            let d = choice.delta;
            if let Some(r) = d.reasoning_content.or(d.reasoning).filter(|r| !r.is_empty()) {
                self.pending.push_back(LlmEvent::Reasoning(r.into_owned()));
            }
            if let Some(c) = d.content.filter(|c| !c.is_empty()) {
                self.pending.push_back(LlmEvent::Content(c.into_owned()));
            }
            if let Some(t) = d.tool_calls.filter(|t| !t.is_null()) {
                self.pending.push_back(LlmEvent::ToolCalls(t));
            }
            if let Some(f) = choice.finish_reason {
                self.finished_reason = true;
                self.pending.push_back(LlmEvent::Finish(f.into_owned()));
            }
        }
        if let Some(u) = chunk.usage {
            self.pending.push_back(LlmEvent::Usage(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            }));
        }
    }
}

/// One streamed chunk, as far as we read it.
#[derive(serde::Deserialize)]
struct ChunkRaw<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChoiceRaw<'a>>,
    #[serde(default)]
    usage: Option<UsageRaw>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(serde::Deserialize)]
struct ChoiceRaw<'a> {
    #[serde(default, borrow)]
    delta: DeltaRaw<'a>,
    /// Present and not null once the answer is complete.
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize, Default)]
struct DeltaRaw<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<std::borrow::Cow<'a, str>>,
    /// Rare (tool use only), so an owned value costs nothing on ordinary chunks.
    #[serde(default)]
    tool_calls: Option<Value>,
}

#[derive(serde::Deserialize)]
struct UsageRaw {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<DetailsRaw>,
}

#[derive(serde::Deserialize)]
struct DetailsRaw {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

fn reasoning_of(v: &Value) -> Option<&str> {
    v.get("reasoning_content").and_then(Value::as_str).or_else(|| v.get("reasoning").and_then(Value::as_str))
}

fn parse_usage(u: &Value) -> Option<Usage> {
    if u.is_null() {
        return None;
    }
    Some(Usage {
        prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
        cached_tokens: u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0),
    })
}

/// The upstream's own message from an OpenAI error body, else the raw text, else the status.
fn error_message(body: &str, status: u16) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v.get("error").is_some() => error_text(&v["error"]),
        Ok(v) if v.get("message").and_then(Value::as_str).is_some() => {
            v["message"].as_str().unwrap_or_default().to_string()
        }
        _ if !body.trim().is_empty() => crate::util::truncate_chars(body.trim(), 500).to_string(),
        _ => format!("HTTP {status}"),
    }
}

fn error_text(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        _ => err.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| err.to_string()),
    }
}

/// The whole body, or an error once it grows past `cap`.
async fn read_limited(mut res: reqwest::Response, cap: usize) -> Result<Vec<u8>, LlmError> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > cap {
                    return Err(LlmError::Protocol(format!("answer larger than {cap} bytes")));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) => return Err(LlmError::Interrupted(describe(e))),
        }
    }
}

async fn read_capped(mut res: reqwest::Response, cap: usize) -> String {
    let mut buf: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        let chunk: Bytes = chunk;
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= cap {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A reqwest error as text, without the URL (which could carry credentials in exotic setups).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_deltas_and_the_finish_reason_are_read() {
        let mut s = ChatStream {
            inner: Box::pin(futures_util::stream::empty()),
            pending: VecDeque::new(),
            deadline: None,
            first: true,
            first_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            done: false,
            finished_reason: false,
        };
        let calls = json!([{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]);
        let chunk = json!({"choices": [{"delta": {"content": "x", "tool_calls": calls}, "finish_reason": null}]});
        s.absorb(serde_json::from_str(&chunk.to_string()).unwrap());
        let fin = r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#;
        s.absorb(serde_json::from_str(fin).unwrap());
        let got: Vec<LlmEvent> = s.pending.drain(..).collect();
        assert_eq!(
            got,
            vec![LlmEvent::Content("x".into()), LlmEvent::ToolCalls(calls), LlmEvent::Finish("tool_calls".into())]
        );
        assert!(s.finished_reason);
    }

    #[test]
    fn params_pass_but_never_replace_the_request() {
        crate::util::install_crypto_provider();
        let cfg: crate::config::Config = crate::config::Config::from_toml(
            "[[providers]]\nid = \"p\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\nmax_tokens = 9\ntemperature = 0.5\n",
        )
        .unwrap();
        let p = OpenAiProvider::new(&cfg.providers[0]).unwrap();
        let mut params = serde_json::Map::new();
        params.insert("max_completion_tokens".into(), json!(3));
        params.insert("model".into(), json!("sneaky"));
        params.insert("tools".into(), json!([]));
        let req = ChatRequest { model: "m".into(), messages: vec![], params };
        let body = p.body(&req, true);
        assert_eq!(body["model"], "m");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!((body.get("max_tokens"), body["max_completion_tokens"].as_u64()), (None, Some(3)));
        assert_eq!(body["temperature"], json!(0.5f32));
        assert_eq!(body["tools"], json!([]));
    }

    #[test]
    fn error_bodies_are_read_like_openai() {
        assert_eq!(error_message(r#"{"error":{"message":"quota exceeded","type":"x"}}"#, 429), "quota exceeded");
        assert_eq!(error_message("upstream exploded", 500), "upstream exploded");
        assert_eq!(error_message("", 502), "HTTP 502");
        assert_eq!(error_message(r#"{"error":"plain"}"#, 400), "plain");
    }
}
