//! An OpenAI-compatible `/chat/completions` client: streaming (parsed with a real SSE parser) and
//! non-streaming, `reasoning_content`, usage, upstream error bodies, and three timeouts
//! (connect, first token, idle between chunks).
//!
//! Resilience, per provider: several API keys used in turn, each cooling down after a 429 or 401
//! ([`super::keys`]); `retries` before the first token with exponential backoff and jitter; then
//! the provider's `fallbacks` in order. Never after a token was yielded: no answer is given twice.
//! Every failed attempt passes through [`note_attempt_failed`]; the provider (and model) that
//! answered is on the answer ([`ChatStream::answered_by`], [`Completion::answered_by`]).
//!
//! Dropping a [`ChatStream`] (or the future of [`OpenAiProvider::complete`]) aborts the upstream
//! request at once, retries and fallbacks included: that is how a cancelled run stops paying for
//! tokens.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::keys::{self, KeyRing};
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

    /// The failure's class as a metric label: `connect`, `first_token_timeout`, `idle_timeout`,
    /// `rate_limited` (429), `auth` (401, 403), `http_4xx`, `http_5xx`, `error_reply` (an error
    /// object in a 200 answer), `interrupted`, `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Connect(_) => "connect",
            LlmError::FirstTokenTimeout(_) => "first_token_timeout",
            LlmError::IdleTimeout(_) => "idle_timeout",
            LlmError::Upstream { status: 429, .. } => "rate_limited",
            LlmError::Upstream { status: 401 | 403, .. } => "auth",
            LlmError::Upstream { status: 400..=499, .. } => "http_4xx",
            LlmError::Upstream { status: 500..=599, .. } => "http_5xx",
            LlmError::Upstream { .. } => "error_reply",
            LlmError::Interrupted(_) => "interrupted",
            LlmError::Protocol(_) => "protocol",
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
    /// The provider and model that gave it.
    pub answered_by: Answerer,
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

/// One configured provider's endpoint: its URL, keys, timeouts and retries. Shared by every
/// provider that names it as a fallback, so its keys' cooldowns are the same wherever it is used.
pub struct Endpoint {
    pub id: String,
    /// The model it answers with when it stands in for another provider.
    pub model: String,
    pdf_input: PdfInput,
    url: String,
    keys: KeyRing,
    client: reqwest::Client,
    first_token_timeout: Duration,
    idle_timeout: Duration,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    retries: u32,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn new(cfg: &ProviderConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        let keys = match &cfg.api_key {
            Some(k) => vec![k.clone()],
            None => cfg.api_keys.clone(),
        };
        Ok(Self {
            id: cfg.id.clone(),
            model: cfg.model.clone(),
            pdf_input: cfg.pdf_input,
            url: format!("{}/chat/completions", cfg.base_url.trim_end_matches('/')),
            keys: KeyRing::new(keys),
            client,
            first_token_timeout: Duration::from_secs(cfg.first_token_timeout_secs),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
            max_tokens: cfg.max_tokens,
            temperature: cfg.temperature,
            retries: cfg.retries,
        })
    }

    fn body(&self, req: &ChatRequest, model: &str, stream: bool) -> Value {
        let mut body = json!({"model": model, "messages": req.messages, "stream": stream});
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

    /// One HTTP request with key `key`; an answer of 429 or 401 makes that key cool down.
    async fn send(&self, key: usize, body: &Value, accept: &str) -> Result<reqwest::Response, LlmError> {
        let mut rb = self.client.post(&self.url).header("accept", accept).json(body);
        if let Some(k) = self.keys.secret(key) {
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
            let wait = keys::retry_after(res.headers(), std::time::SystemTime::now());
            if let Some(rest) = keys::cooldown(status, wait) {
                // The key's position only: never the key.
                tracing::info!(provider = %self.id, key = key, status, rest_secs = rest.as_secs_f64(), "API key cools down");
                self.keys.cool_down(key, rest, Instant::now());
            }
            // The error body is read under the idle timeout: a stalled body must not hang the run.
            let text =
                tokio::time::timeout(self.idle_timeout, read_capped(res, MAX_ERROR_BODY)).await.unwrap_or_default();
            return Err(LlmError::Upstream { status, message: error_message(&text, status) });
        }
        Ok(res)
    }

    /// One attempt: the open stream, or the whole answer.
    async fn attempt(&self, key: usize, req: &ChatRequest, model: &str, want: Want) -> Result<Got, LlmError> {
        match want {
            Want::Stream => {
                let res = self.send(key, &self.body(req, model, true), "text/event-stream").await?;
                Ok(Got::Stream(Leg::new(res, self.first_token_timeout, self.idle_timeout)))
            }
            Want::Whole => {
                let res = self.send(key, &self.body(req, model, false), "application/json").await?;
                let read = tokio::time::timeout(self.first_token_timeout, read_limited(res, MAX_ANSWER_BODY)).await;
                let bytes = read.map_err(|_| LlmError::FirstTokenTimeout(self.first_token_timeout.as_secs()))??;
                Ok(Got::Whole(parse_completion(&bytes)?))
            }
        }
    }
}

/// A provider as the agent asks it: its own endpoint first, then its fallbacks (`[[providers]]
/// fallbacks`), each with its own model, keys and retries. See [`OpenAiProvider::stream`].
pub struct OpenAiProvider {
    pub id: String,
    pub model: String,
    /// How PDFs reach this provider (`[[providers]] pdf_input`).
    pub pdf_input: PdfInput,
    /// This provider's endpoint, then its fallbacks in order.
    legs: Arc<[Arc<Endpoint>]>,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider").field("id", &self.id).field("legs", &self.legs).finish_non_exhaustive()
    }
}

/// Which provider answered, with which model (a fallback answers with its own model).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answerer {
    pub provider: String,
    pub model: String,
}

/// Where a request is in its chain: which endpoint (0 = the provider asked for) and how many
/// attempts that endpoint has had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    leg: usize,
    attempt: u32,
}

impl Cursor {
    const START: Cursor = Cursor { leg: 0, attempt: 0 };
}

#[derive(Clone, Copy)]
enum Want {
    Stream,
    Whole,
}

enum Got {
    Stream(Leg),
    Whole(Completion),
}

/// What a failure before the first token leads to.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Ask the same provider again (within its `retries`), then the fallbacks.
    Retry,
    /// Ask the next fallback: the same provider would most likely fail the same way again.
    Fallback,
    /// The request itself was refused: no other attempt would do better.
    Stop,
}

/// How each failure class is handled before the first token.
fn next_step(e: &LlmError) -> Next {
    match e {
        LlmError::Connect(_) | LlmError::Interrupted(_) => Next::Retry,
        LlmError::Upstream { status: 401 | 408 | 429, .. } => Next::Retry,
        LlmError::Upstream { status: 500..=599, .. } => Next::Retry,
        // A wait of a whole first-token timeout is not repeated on the same provider.
        LlmError::FirstTokenTimeout(_) | LlmError::Protocol(_) => Next::Fallback,
        LlmError::Upstream { status: 403 | 404, .. } => Next::Fallback,
        LlmError::Upstream { .. } | LlmError::IdleTimeout(_) => Next::Stop,
    }
}

/// The attempt after a failure of the one at `at`: `None` when there is none to make.
fn after_failure(legs: &[Arc<Endpoint>], at: Cursor, e: &LlmError) -> Option<Cursor> {
    let made = at.attempt + 1;
    match next_step(e) {
        Next::Stop => None,
        Next::Retry if legs.get(at.leg).is_some_and(|l| made <= l.retries) => {
            Some(Cursor { leg: at.leg, attempt: made })
        }
        Next::Retry | Next::Fallback => Some(Cursor { leg: at.leg + 1, attempt: 0 }),
    }
}

/// The first wait before a retry; it doubles per retry up to [`BACKOFF_CAP`] ("full jitter": the
/// actual wait is uniformly random below that).
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A retry waits for a cooling key at most this long; a longer rest gives the provider up.
const MAX_KEY_WAIT: Duration = Duration::from_secs(5);

fn backoff(retry: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1u32 << retry.min(16)).min(BACKOFF_CAP);
    let mut b = [0u8; 8];
    crate::util::fill_random(&mut b);
    ceiling.mul_f64(u64::from_le_bytes(b) as f64 / u64::MAX as f64)
}

/// Every failed upstream attempt passes here — before the first token (then retried or handed to
/// a fallback) or after it (then the answer's error): the one place where upstream errors are
/// counted per provider and [`LlmError::kind`]. It logs the provider id and the error, never a
/// key (an upstream's own text can quote one masked, as OpenAI's does; it stays in the log).
pub fn note_attempt_failed(provider: &str, err: &LlmError) {
    tracing::warn!(provider, kind = err.kind(), error = %err, "upstream attempt failed");
    crate::metrics::upstream_error(provider, err.kind());
}

/// Asks from `at` on: each endpoint up to its retries, then the next, until one answers. `last`
/// is the error of the attempt before `at`, returned if nothing is left to ask.
async fn ask(
    legs: &[Arc<Endpoint>],
    req: &ChatRequest,
    want: Want,
    mut at: Cursor,
    mut last: Option<LlmError>,
) -> Result<(Got, Cursor), LlmError> {
    loop {
        let Some(ep) = legs.get(at.leg) else {
            return Err(last.unwrap_or_else(|| LlmError::Connect("no provider left to ask".into())));
        };
        let retrying = at.attempt > 0;
        let mut wait = if retrying { backoff(at.attempt - 1) } else { Duration::ZERO };
        let pick = ep.keys.pick(Instant::now());
        if let Some(rest) = pick.cooling_for {
            // Every key of this provider was told to wait. A first attempt goes to the next
            // fallback instead (the last provider of the chain is asked anyway: a default
            // cooldown is a guess, and must not make a provider unusable); a retry waits for
            // the key only briefly.
            let give_up = if retrying { rest > MAX_KEY_WAIT } else { at.leg + 1 < legs.len() };
            if give_up {
                tracing::debug!(provider = %ep.id, rest_secs = rest.as_secs_f64(), "every key cools down: next provider");
                at = Cursor { leg: at.leg + 1, attempt: 0 };
                continue;
            }
            if retrying {
                wait = wait.max(rest);
            }
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let model = if at.leg == 0 { req.model.as_str() } else { ep.model.as_str() };
        match ep.attempt(pick.index, req, model, want).await {
            Ok(got) => {
                ep.keys.succeeded(pick.index);
                if at.leg > 0 {
                    tracing::info!(provider = %legs[0].id, fallback = %ep.id, "a fallback provider answers");
                }
                return Ok((got, at));
            }
            Err(e) => {
                note_attempt_failed(&ep.id, &e);
                at = match after_failure(legs, at, &e) {
                    Some(next) => next,
                    None => return Err(e),
                };
                last = Some(e);
            }
        }
    }
}

impl OpenAiProvider {
    /// A provider without fallbacks.
    pub fn new(cfg: &ProviderConfig) -> Result<Self, reqwest::Error> {
        Ok(Self::with_fallbacks(Arc::new(Endpoint::new(cfg)?), Vec::new()))
    }

    /// `primary`, then `fallbacks` in order (their own fallbacks are not followed).
    pub fn with_fallbacks(primary: Arc<Endpoint>, fallbacks: Vec<Arc<Endpoint>>) -> Self {
        Self {
            id: primary.id.clone(),
            model: primary.model.clone(),
            pdf_input: primary.pdf_input,
            legs: std::iter::once(primary).chain(fallbacks).collect(),
        }
    }

    fn answerer(&self, at: Cursor, asked: &str) -> Answerer {
        let ep = &self.legs[at.leg.min(self.legs.len() - 1)];
        Answerer { provider: ep.id.clone(), model: if at.leg == 0 { asked.to_string() } else { ep.model.clone() } }
    }

    /// Starts a streamed completion.
    ///
    /// Until the first event has been read, a failure is not the caller's: a connect error, 429
    /// or 5xx (and a stream broken off before its first chunk) is asked again after a backoff,
    /// up to `retries` times, with the next key in turn; then each fallback is asked in order,
    /// with its own model. Once an event was yielded, errors are the caller's (no retry, no
    /// fallback: the answer would be given twice). [`ChatStream::answered_by`] says who answered.
    /// Dropping the future or the stream stops all of it at once.
    pub async fn stream(&self, req: ChatRequest) -> Result<ChatStream, LlmError> {
        let (got, at) = ask(&self.legs, &req, Want::Stream, Cursor::START, None).await?;
        let Got::Stream(leg) = got else {
            return Err(LlmError::Protocol("a whole answer where a stream was asked for".into()));
        };
        Ok(ChatStream {
            answered_by: self.answerer(at, &req.model),
            legs: self.legs.clone(),
            asked_model: req.model.clone(),
            req: Some(Arc::new(req)),
            leg: Some(leg),
            at,
            reopen: None,
            done: false,
        })
    }

    /// A non-streamed completion, with the same retries and fallbacks as [`Self::stream`] (the
    /// whole answer is the first token).
    pub async fn complete(&self, req: &ChatRequest) -> Result<Completion, LlmError> {
        let (got, at) = ask(&self.legs, req, Want::Whole, Cursor::START, None).await?;
        let Got::Whole(mut c) = got else {
            return Err(LlmError::Protocol("a stream where a whole answer was asked for".into()));
        };
        c.answered_by = self.answerer(at, &req.model);
        Ok(c)
    }
}

type SseStream =
    Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, EventStreamError<sse_limit::ReadError>>> + Send>>;

type Reopen = Pin<Box<dyn Future<Output = Result<(Got, Cursor), LlmError>> + Send>>;

/// A streamed answer; read it with [`ChatStream::next`], which is cancel-safe (a caller may drop
/// it in a `select!`): the timeouts run from the last event that carried something (text, a tool
/// call, a finish, usage) whatever the reads in between, and a retry or fallback under way goes
/// on where it was.
pub struct ChatStream {
    legs: Arc<[Arc<Endpoint>]>,
    asked_model: String,
    /// Kept until the first event, for asking again; then dropped (it can be large).
    req: Option<Arc<ChatRequest>>,
    leg: Option<Leg>,
    at: Cursor,
    reopen: Option<Reopen>,
    answered_by: Answerer,
    done: bool,
}

impl ChatStream {
    /// The next event; `None` at the normal end of the answer.
    pub async fn next(&mut self) -> Option<Result<LlmEvent, LlmError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(reopen) = self.reopen.as_mut() {
                let r = reopen.await;
                self.reopen = None;
                match r {
                    Ok((Got::Stream(leg), at)) => {
                        let ep = &self.legs[at.leg];
                        let model = if at.leg == 0 { self.asked_model.clone() } else { ep.model.clone() };
                        self.answered_by = Answerer { provider: ep.id.clone(), model };
                        (self.leg, self.at) = (Some(leg), at);
                    }
                    Ok((Got::Whole(_), _)) => {
                        self.done = true;
                        return Some(Err(LlmError::Protocol("a whole answer where a stream was asked for".into())));
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let leg = self.leg.as_mut()?;
            match leg.next().await {
                Some(Ok(ev)) => {
                    self.req = None;
                    return Some(Ok(ev));
                }
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => {
                    note_attempt_failed(&self.answered_by.provider, &e);
                    self.leg = None;
                    // Nothing was yielded yet: the request can be asked again, here or elsewhere.
                    if let Some(req) = &self.req
                        && let Some(next) = after_failure(&self.legs, self.at, &e)
                    {
                        let (legs, req) = (self.legs.clone(), req.clone());
                        self.reopen =
                            Some(Box::pin(async move { ask(&legs, &req, Want::Stream, next, Some(e)).await }));
                        continue;
                    }
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// The provider and model whose answer this is (so far: until the first event, a retry or a
    /// fallback may still change it).
    pub fn answered_by(&self) -> &Answerer {
        &self.answered_by
    }
}

/// The stream of one attempt.
struct Leg {
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

impl Leg {
    fn new(res: reqwest::Response, first_timeout: Duration, idle_timeout: Duration) -> Self {
        Leg {
            inner: Box::pin(sse_limit::capped(res.bytes_stream(), sse_limit::MAX_EVENT_BYTES).eventsource()),
            pending: VecDeque::new(),
            deadline: None,
            first: true,
            first_timeout,
            idle_timeout,
            done: false,
            finished_reason: false,
        }
    }

    /// The next event; `None` at the normal end of the answer. Cancel-safe.
    async fn next(&mut self) -> Option<Result<LlmEvent, LlmError>> {
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
                Some(Ok(ev)) => match parse_stream_data(&ev.data, &mut self.pending) {
                    Ok(Payload::Empty) => {}
                    Ok(Payload::Done) => self.done = true,
                    Ok(Payload::Chunk { finished }) => {
                        self.finished_reason |= finished;
                        // Only a chunk that says something restarts the clock: empty or
                        // content-less events for ever would otherwise hold the run open.
                        if !self.pending.is_empty() {
                            self.deadline = None;
                            self.first = false;
                        }
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            }
        }
    }
}

/// What one `data:` payload of a streamed answer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Blank.
    Empty,
    /// `[DONE]`: the answer is over.
    Done,
    /// A chunk; `finished` when it carried a `finish_reason`.
    Chunk { finished: bool },
}

/// Parses one `data:` payload of a streamed answer (the upstream's SSE chunk parser). A chunk's
/// events are appended to `out` — reasoning, content, tool calls, the finish reason, then usage;
/// empty deltas are none. An `error` object in the chunk is an [`LlmError::Upstream`] error
/// (status 200), a payload that is no chunk a [`LlmError::Protocol`] error.
pub fn parse_stream_data(data: &str, out: &mut VecDeque<LlmEvent>) -> Result<Payload, LlmError> {
    let data = data.trim();
    if data.is_empty() {
        return Ok(Payload::Empty);
    }
    if data == "[DONE]" {
        return Ok(Payload::Done);
    }
    // Typed and borrowing: no map is built per chunk (this runs once per token).
    let Obj(chunk): Obj<ChunkRaw<'_>> =
        serde_json::from_str(data).map_err(|e| LlmError::Protocol(format!("bad chunk: {e}")))?;
    if let Some(err) = chunk.error.as_ref().filter(|e| !e.is_null()) {
        return Err(LlmError::Upstream { status: 200, message: error_text(err) });
    }
    let mut finished = false;
    if let Some(Obj(choice)) = chunk.choices.and_then(|c| c.into_iter().next()) {
        if let Some(Obj(d)) = choice.delta {
            if let Some(r) = non_empty(d.reasoning_content).or_else(|| non_empty(d.reasoning)) {
                out.push_back(LlmEvent::Reasoning(r.into_owned()));
            }
            if let Some(c) = non_empty(d.content) {
                out.push_back(LlmEvent::Content(c.into_owned()));
            }
            if let Some(t) = d.tool_calls.filter(|t| !t.is_null()) {
                out.push_back(LlmEvent::ToolCalls(t));
            }
        }
        if let Some(f) = choice.finish_reason {
            finished = true;
            out.push_back(LlmEvent::Finish(f.into_owned()));
        }
    }
    if let Some(Obj(u)) = chunk.usage {
        out.push_back(LlmEvent::Usage(Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.prompt_tokens_details.and_then(|Obj(d)| d.cached_tokens).unwrap_or(0),
        }));
    }
    Ok(Payload::Chunk { finished })
}

fn non_empty(t: Option<std::borrow::Cow<'_, str>>) -> Option<std::borrow::Cow<'_, str>> {
    t.filter(|t| !t.is_empty())
}

/// Parses a whole (non-streamed) answer. An `error` object is an [`LlmError::Upstream`] error
/// (status 200); anything without a first choice's message a [`LlmError::Protocol`] error.
pub fn parse_completion(body: &[u8]) -> Result<Completion, LlmError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| LlmError::Protocol(e.to_string()))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        return Err(LlmError::Upstream { status: 200, message: error_text(err) });
    }
    let msg = &v["choices"][0]["message"];
    if !msg.is_object() {
        return Err(LlmError::Protocol("no choices in the answer".into()));
    }
    Ok(Completion {
        content: msg["content"].as_str().unwrap_or_default().to_string(),
        reasoning: reasoning_of(msg).unwrap_or_default().to_string(),
        usage: v.get("usage").and_then(parse_usage),
        tool_calls: msg.get("tool_calls").filter(|t| !t.is_null()).cloned(),
        finish_reason: v["choices"][0]["finish_reason"].as_str().map(str::to_string),
        answered_by: Answerer::default(),
    })
}

/// One streamed chunk, as far as we read it. Every level must be a JSON object ([`Obj`]); a
/// `null` where a part may be absent is the part absent.
#[derive(serde::Deserialize)]
struct ChunkRaw<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<Obj<ChoiceRaw<'a>>>>,
    #[serde(default)]
    usage: Option<Obj<UsageRaw>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(serde::Deserialize)]
struct ChoiceRaw<'a> {
    #[serde(default, borrow)]
    delta: Option<Obj<DeltaRaw<'a>>>,
    /// Present and not null once the answer is complete.
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
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
    prompt_tokens_details: Option<Obj<DetailsRaw>>,
}

#[derive(serde::Deserialize)]
struct DetailsRaw {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// A `T` read only from a JSON object: serde's derived structs also accept an array of their
/// fields in order, which made `[[[]],[]]` a chunk with usage (found by the `llm_chunk` fuzz
/// target).
struct Obj<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
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
        let mut out = VecDeque::new();
        let calls = json!([{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]);
        let chunk = json!({"choices": [{"delta": {"content": "x", "tool_calls": calls}, "finish_reason": null}]});
        assert_eq!(parse_stream_data(&chunk.to_string(), &mut out), Ok(Payload::Chunk { finished: false }));
        let fin = r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#;
        assert_eq!(parse_stream_data(fin, &mut out), Ok(Payload::Chunk { finished: true }));
        let got: Vec<LlmEvent> = out.drain(..).collect();
        assert_eq!(
            got,
            vec![LlmEvent::Content("x".into()), LlmEvent::ToolCalls(calls), LlmEvent::Finish("tool_calls".into())]
        );
    }

    #[test]
    fn stream_payloads_are_events_usage_or_errors() {
        let mut out = VecDeque::new();
        assert_eq!(parse_stream_data("  ", &mut out), Ok(Payload::Empty));
        assert_eq!(parse_stream_data(" [DONE]\n", &mut out), Ok(Payload::Done));
        let both = r#"{"choices":[{"delta":{"reasoning_content":"r","content":""}}],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#;
        assert_eq!(parse_stream_data(both, &mut out), Ok(Payload::Chunk { finished: false }));
        let usage = Usage { prompt_tokens: 5, completion_tokens: 2, cached_tokens: 1 };
        assert_eq!(Vec::from(std::mem::take(&mut out)), [LlmEvent::Reasoning("r".into()), LlmEvent::Usage(usage)]);
        let err = parse_stream_data(r#"{"error":{"message":"overloaded"}}"#, &mut out);
        assert_eq!(err, Err(LlmError::Upstream { status: 200, message: "overloaded".into() }));
        assert!(matches!(parse_stream_data("{\"choices\":", &mut out), Err(LlmError::Protocol(_))));
        assert!(matches!(parse_stream_data("[1]", &mut out), Err(LlmError::Protocol(_))));
        // Found by the fuzz target: serde reads a struct from an array of its fields too.
        assert!(matches!(parse_stream_data("[[[]],[]]", &mut out), Err(LlmError::Protocol(_))));
        let nested = r#"{"choices":[[{"content":"x"}]]}"#;
        assert!(matches!(parse_stream_data(nested, &mut out), Err(LlmError::Protocol(_))));
        assert!(out.is_empty());
        // A null part is an absent one; an empty reasoning_content does not hide `reasoning`.
        let lax = r#"{"choices":[{"delta":null,"finish_reason":"stop"}],"usage":null}"#;
        assert_eq!(parse_stream_data(lax, &mut out), Ok(Payload::Chunk { finished: true }));
        assert_eq!(parse_stream_data(r#"{"choices":null}"#, &mut out), Ok(Payload::Chunk { finished: false }));
        let both = r#"{"choices":[{"delta":{"reasoning_content":"","reasoning":"r2"}}]}"#;
        assert_eq!(parse_stream_data(both, &mut out), Ok(Payload::Chunk { finished: false }));
        let got = Vec::from(std::mem::take(&mut out));
        assert_eq!(got, [LlmEvent::Finish("stop".into()), LlmEvent::Reasoning("r2".into())]);
        assert!(out.is_empty());
        let whole = parse_completion(br#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}]}"#).unwrap();
        assert_eq!((whole.content.as_str(), whole.finish_reason.as_deref()), ("hi", Some("stop")));
        assert!(matches!(parse_completion(br#"{"choices":[]}"#), Err(LlmError::Protocol(_))));
        assert!(matches!(parse_completion(br#"{"error":"no"}"#), Err(LlmError::Upstream { status: 200, .. })));
    }

    fn legs(retries: &[u32]) -> Vec<Arc<Endpoint>> {
        crate::util::install_crypto_provider();
        retries
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let toml = format!("[[providers]]\nid = \"p{i}\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m{i}\"\nretries = {r}\n");
                let cfg = crate::config::Config::from_toml(&toml).unwrap();
                Arc::new(Endpoint::new(&cfg.providers[0]).unwrap())
            })
            .collect()
    }

    #[test]
    fn retries_then_fallbacks_then_the_error() {
        let legs = legs(&[1, 0]);
        let at = Cursor::START;
        let e500 = LlmError::Upstream { status: 500, message: String::new() };
        let next = after_failure(&legs, at, &e500);
        assert_eq!(next, Some(Cursor { leg: 0, attempt: 1 }), "a retry on the same provider");
        let next = after_failure(&legs, Cursor { leg: 0, attempt: 1 }, &LlmError::Connect(String::new()));
        assert_eq!(next, Some(Cursor { leg: 1, attempt: 0 }), "retries spent: the fallback");
        assert_eq!(after_failure(&legs, at, &LlmError::FirstTokenTimeout(60)), Some(Cursor { leg: 1, attempt: 0 }));
        let e400 = LlmError::Upstream { status: 400, message: String::new() };
        assert_eq!(after_failure(&legs, at, &e400), None, "a refused request is not asked again");
        assert_eq!(next_step(&LlmError::Upstream { status: 429, message: String::new() }), Next::Retry);
        assert_eq!(next_step(&LlmError::Upstream { status: 200, message: String::new() }), Next::Stop);
        for retry in 0..40 {
            let cap = BACKOFF_BASE.saturating_mul(1 << retry.min(16)).min(BACKOFF_CAP);
            assert!(backoff(retry) <= cap);
        }
    }

    #[tokio::test]
    async fn an_unreachable_chain_ends_with_the_last_error_and_names_no_key() {
        let legs = legs(&[0, 0]);
        let req = ChatRequest { model: "asked".into(), ..ChatRequest::default() };
        match ask(&legs, &req, Want::Whole, Cursor::START, None).await {
            Err(LlmError::Connect(m)) => assert!(!m.contains("127.0.0.1"), "{m}"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("port 1 answered"),
        }
    }

    #[test]
    fn params_pass_but_never_replace_the_request() {
        crate::util::install_crypto_provider();
        let cfg: crate::config::Config = crate::config::Config::from_toml(
            "[[providers]]\nid = \"p\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\nmax_tokens = 9\ntemperature = 0.5\n",
        )
        .unwrap();
        let p = Endpoint::new(&cfg.providers[0]).unwrap();
        let mut params = serde_json::Map::new();
        params.insert("max_completion_tokens".into(), json!(3));
        params.insert("model".into(), json!("sneaky"));
        params.insert("tools".into(), json!([]));
        let req = ChatRequest { model: "m".into(), messages: vec![], params };
        let body = p.body(&req, "m", true);
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
