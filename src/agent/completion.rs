//! Stateless completions: the turn of the OpenAI-compatible front door.
//!
//! The request carries the whole conversation and nothing is stored as a session. The front door
//! parses its wire format into a [`CompletionRequest`] and calls [`Agent::complete_stateless`],
//! which
//! - resolves `model`: a profile id (its provider, its model, its system prompt prepended to the
//!   request's own messages) or `provider_id/model` (that provider and model, no profile);
//! - counts the request against `[runs] max_active` for as long as it runs ([`ActiveSlot`]);
//! - checks image parts (base64 `data:` URLs that really are images, within the chat limits, or
//!   `https://` URLs) and resolves `file` parts naming an attachment (`file_id`) as a chat turn
//!   does: the caller's own attachments only, documents read as text, voice transcribed;
//! - asks the provider with the request's parameters (tools included) passed through unchanged,
//!   and answers a [`CompletionStream`] or a whole [`Completion`].
//!
//! Cancellation: dropping the stream (the client went away) aborts the upstream request at once;
//! shutdown cancels it through the agent's token. Nothing here is resumable.
//!
//! Usage: the upstream is always asked for usage; it is on the whole completion and on the
//! stream ([`CompletionStream::usage`]), and it is accounted in [`Agent::record_usage`] — the one
//! place where per-key counting (the governance issue) hooks in, beside the admission in
//! [`Agent::complete_stateless`] where its per-key limits would refuse a request.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::Agent;
use super::errors::TurnError;
use super::input::{self, Part};
use super::prompt::{MAX_IMAGE_BYTES, MAX_TOTAL_IMAGE_BYTES, PromptError};
use crate::auth::Caller;
use crate::providers::llm::{ChatRequest, ChatStream, Completion, LlmError, LlmEvent, OpenAiProvider, Usage};

/// Longest `https://` image URL accepted.
const MAX_IMAGE_URL_CHARS: usize = 8192;

/// One stateless completion, parsed by its front door.
pub struct CompletionRequest {
    pub caller: Caller,
    /// A profile id, or `provider_id/model`.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Parameters sent to the provider unchanged (checked by the front door).
    pub params: Map<String, Value>,
    pub stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "function" => Role::Function,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub role: Role,
    pub content: Content,
    /// The message's other fields (`name`, `tool_calls`, `tool_call_id`…), sent unchanged.
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub enum Content {
    /// No `content` key.
    Absent,
    /// `content: null` (an assistant message with tool calls).
    Null,
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone)]
pub enum ContentPart {
    Text(String),
    /// `image_url`: a base64 `data:image/…` URL or an `https://` URL.
    Image {
        url: String,
        detail: Option<Value>,
    },
    /// `file` naming an astrgate attachment by `file_id`.
    Attachment {
        file_id: String,
        filename: Option<String>,
    },
    /// Other parts (`input_audio`, `file` with inline `file_data`), sent unchanged.
    Other(Value),
}

/// What a stateless request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    /// Neither a profile id nor `provider_id/model` of a configured provider (404).
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),
    /// A part of the request that cannot be served; `param` names it (`messages[1].content[0]`).
    #[error("{message}")]
    Invalid { param: String, message: String },
    /// As a chat turn fails: attachments, transcription, no provider, too many runs…
    #[error(transparent)]
    Turn(#[from] TurnError),
    /// The provider failed (logged here with its detail; the client gets its public message).
    #[error(transparent)]
    Upstream(LlmError),
    /// The server is shutting down.
    #[error("The server is shutting down")]
    Cancelled,
}

fn invalid(param: String, message: impl Into<String>) -> CompletionError {
    CompletionError::Invalid { param, message: message.into() }
}

/// A model as `GET /v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub id: String,
    /// The provider id (`astrgate` for a profile without a usable provider).
    pub owned_by: String,
}

/// Where a request's `model` leads.
pub struct ModelTarget {
    pub provider: Arc<OpenAiProvider>,
    pub model: String,
    pub system_prompt: String,
}

/// A stateless answer.
pub enum Answer {
    Stream(Box<CompletionStream>),
    Whole(Box<Completion>),
}

impl Agent {
    /// Every model a client may name: profile ids, then each provider's `id/model`, then the
    /// models profiles choose on their providers.
    pub fn models(&self) -> Vec<ModelEntry> {
        let mut out: Vec<ModelEntry> = Vec::new();
        let mut push = |id: String, owned_by: &str| {
            if !out.iter().any(|m| m.id == id) {
                out.push(ModelEntry { id, owned_by: owned_by.to_string() });
            }
        };
        let mut profiles = self.profiles.listing();
        profiles.rotate_right(1); // the default profile first
        for p in &profiles {
            let provider = self.profiles.provider_for(p, &self.providers);
            push(p.id.clone(), provider.map(|p| p.id.as_str()).unwrap_or("astrgate"));
        }
        for p in self.providers.llm_all() {
            push(format!("{}/{}", p.id, p.model), &p.id);
        }
        for p in &profiles {
            if let (Some(model), Some(provider)) = (&p.model, self.profiles.provider_for(p, &self.providers)) {
                push(format!("{}/{model}", provider.id), &provider.id);
            }
        }
        out
    }

    /// A profile id, else `provider_id/model` of a configured provider.
    pub fn resolve_model(&self, name: &str) -> Result<ModelTarget, CompletionError> {
        let name = name.trim();
        if let Some(p) = self.profiles.get(name) {
            let provider = self.profiles.provider_for(p, &self.providers).cloned().ok_or(TurnError::NoProvider)?;
            let model = p.model.clone().unwrap_or_else(|| provider.model.clone());
            return Ok(ModelTarget { provider, model, system_prompt: p.system_prompt.clone() });
        }
        if let Some((id, model)) = name.split_once('/')
            && !model.trim().is_empty()
            && let Some(provider) = self.providers.llm(id)
        {
            let model = model.trim().to_string();
            return Ok(ModelTarget { provider: provider.clone(), model, system_prompt: String::new() });
        }
        Err(CompletionError::ModelNotFound(name.to_string()))
    }

    /// `model` as the metrics label it: a model the configuration names (a provider's or a
    /// profile's), else [`crate::metrics::OTHER_MODEL`], so clients cannot add label values.
    pub fn model_label<'a>(&self, provider: &OpenAiProvider, model: &'a str) -> &'a str {
        if model == provider.model || self.profiles.names_model(model) { model } else { crate::metrics::OTHER_MODEL }
    }

    /// Checks, then asks the provider (see the module docs).
    pub async fn complete_stateless(self: &Arc<Self>, req: CompletionRequest) -> Result<Answer, CompletionError> {
        let CompletionRequest { caller, model, messages, params, stream } = req;
        let started = std::time::Instant::now();
        let target = self.resolve_model(&model)?;
        let slot = self.admit_stateless(&caller).await?;
        let messages = self.upstream_messages(&caller, &target, messages).await?;
        let chat = ChatRequest { model: target.model.clone(), messages, params };
        let cancel = self.shutdown.child_token();
        let provider = target.provider.clone();
        if stream {
            let inner = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(CompletionError::Cancelled),
                r = provider.stream(chat) => r.map_err(|e| upstream_failed(&provider.id, e))?,
            };
            return Ok(Answer::Stream(Box::new(CompletionStream {
                inner,
                cancel,
                agent: self.clone(),
                caller,
                usage: None,
                done: false,
                started: Some(started),
                _slot: slot,
            })));
        }
        let whole = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(CompletionError::Cancelled),
            r = provider.complete(&chat) => r.map_err(|e| upstream_failed(&provider.id, e))?,
        };
        crate::metrics::first_token(crate::metrics::Door::OpenAi, started.elapsed());
        self.record_usage(&caller, &whole.answered_by.provider, &whole.answered_by.model, whole.usage);
        Ok(Answer::Whole(Box::new(whole)))
    }

    /// Accounts the tokens of a stateless request, under the provider and model that answered
    /// (a fallback's when the one asked failed first): a log line (naming the key, never the key
    /// itself), and the key's usage of the day.
    pub fn record_usage(&self, caller: &Caller, provider: &str, model: &str, usage: Option<Usage>) {
        let u = usage.unwrap_or_default();
        if let Some((key_id, _)) = caller.account() {
            let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.governor.record(
                key_id,
                crate::store::UsageCounts {
                    prompt_tokens: tokens(u.prompt_tokens),
                    completion_tokens: tokens(u.completion_tokens),
                    ..Default::default()
                },
            );
        }
        if let Some(p) = usage.and(self.providers.llm(provider)) {
            crate::metrics::tokens(provider, self.model_label(p, model), u.prompt_tokens, u.completion_tokens);
        }
        tracing::info!(
            caller = %caller.label(), provider, model, usage_reported = usage.is_some(),
            prompt_tokens = u.prompt_tokens, completion_tokens = u.completion_tokens, "completion usage"
        );
    }

    /// The provider's messages: the profile's system prompt, then the request's messages with
    /// their image parts checked and attachment parts resolved.
    async fn upstream_messages(
        &self,
        caller: &Caller,
        target: &ModelTarget,
        messages: Vec<ChatMessage>,
    ) -> Result<Vec<Value>, CompletionError> {
        let mut out = Vec::with_capacity(messages.len() + 1);
        if !target.system_prompt.trim().is_empty() {
            out.push(json!({"role": "system", "content": target.system_prompt}));
        }
        let mut budget = Budget::default();
        for (i, m) in messages.into_iter().enumerate() {
            let mut v = m.fields;
            v.insert("role".into(), json!(m.role.as_str()));
            match m.content {
                Content::Absent => {}
                Content::Null => {
                    v.insert("content".into(), Value::Null);
                }
                Content::Text(t) => {
                    v.insert("content".into(), Value::String(t));
                }
                Content::Parts(parts) => {
                    let parts = self.upstream_parts(caller, target, parts, i, &mut budget).await?;
                    v.insert("content".into(), Value::Array(parts));
                }
            }
            out.push(Value::Object(v));
        }
        Ok(out)
    }

    async fn upstream_parts(
        &self,
        caller: &Caller,
        target: &ModelTarget,
        parts: Vec<ContentPart>,
        i: usize,
        budget: &mut Budget,
    ) -> Result<Vec<Value>, CompletionError> {
        let mut out = Vec::with_capacity(parts.len());
        for (j, part) in parts.into_iter().enumerate() {
            let param = format!("messages[{i}].content[{j}]");
            match part {
                ContentPart::Text(t) => out.push(json!({"type": "text", "text": t})),
                ContentPart::Image { url, detail } => {
                    check_image(&url, &param, budget)?;
                    let mut image = json!({"url": url});
                    if let Some(d) = detail {
                        image["detail"] = d;
                    }
                    out.push(json!({"type": "image_url", "image_url": image}));
                }
                ContentPart::Attachment { file_id, filename } => {
                    budget.attachments += 1;
                    if budget.attachments > input::MAX_ATTACHMENTS {
                        let max = input::MAX_ATTACHMENTS;
                        return Err(invalid(param, format!("too many attachments (max {max})")));
                    }
                    match self.attachment_content(caller, target, file_id, filename).await? {
                        Value::Array(parts) => out.extend(parts),
                        other => out.push(json!({"type": "text", "text": other})),
                    }
                }
                ContentPart::Other(v) => out.push(v),
            }
        }
        Ok(out)
    }

    /// An attachment as the model sees it in a chat turn (the caller's own only).
    async fn attachment_content(
        &self,
        caller: &Caller,
        target: &ModelTarget,
        file_id: String,
        filename: Option<String>,
    ) -> Result<Value, TurnError> {
        let part = Part::Attachment { declared: "file".into(), attachment_id: file_id, filename };
        // No session: there is nothing a `reply` could quote, and none is parsed here.
        let resolved = input::resolve(self.store.as_ref(), &self.blobs, caller, "", vec![part]).await?;
        let transcripts = self.transcribe_records(caller, &resolved).await?;
        self.prompt.user_content(&resolved, &transcripts, target.provider.pdf_input).await.map_err(|e| match e {
            PromptError::Invalid(m) => TurnError::Invalid(m),
            PromptError::Busy(m) => TurnError::Overloaded(m),
            other => TurnError::Internal(other.to_string()),
        })
    }
}

fn upstream_failed(provider: &str, e: LlmError) -> CompletionError {
    tracing::warn!(provider, error = %e, "provider failed (stateless completion)");
    CompletionError::Upstream(e)
}

/// What one request may carry across all its messages.
#[derive(Default)]
struct Budget {
    image_bytes: usize,
    attachments: usize,
}

/// A base64 `data:` URL that decodes to an image within the chat limits, or an `https://` URL
/// (fetched by the provider).
fn check_image(url: &str, param: &str, budget: &mut Budget) -> Result<(), CompletionError> {
    let param = format!("{param}.image_url.url");
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(invalid(param, "image data URL without data"));
        };
        let Some(declared) = meta.strip_suffix(";base64") else {
            return Err(invalid(param, "image data URLs must be base64 (data:image/png;base64,…)"));
        };
        let max = MAX_IMAGE_BYTES as usize;
        // Base64 is 4 characters per 3 bytes: refuse an oversized image before decoding it.
        if data.len() / 4 * 3 > max + 3 {
            return Err(invalid(param, format!("image is too large to send to a model (max {} MiB)", max >> 20)));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|_| invalid(param.clone(), "image data URL is not valid base64"))?;
        if bytes.len() > max {
            return Err(invalid(param, format!("image is too large to send to a model (max {} MiB)", max >> 20)));
        }
        budget.image_bytes += bytes.len();
        if budget.image_bytes > MAX_TOTAL_IMAGE_BYTES as usize {
            let total = MAX_TOTAL_IMAGE_BYTES >> 20;
            return Err(invalid(param, format!("too many image bytes in one request (max {total} MiB)")));
        }
        let head = &bytes[..bytes.len().min(crate::attachments::SNIFF_BYTES)];
        let (_, kind) = crate::attachments::classify(head, Some(declared), "image");
        if kind != "image" {
            return Err(invalid(param, "image data URL does not hold an image"));
        }
        return Ok(());
    }
    let https = url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if !https || url.len() > MAX_IMAGE_URL_CHARS || reqwest::Url::parse(url).is_err() {
        return Err(invalid(param, "image_url.url must be a base64 data: URL or an https:// URL"));
    }
    Ok(())
}

/// A streamed stateless answer. Read it with [`CompletionStream::next`]; dropping it aborts the
/// upstream request at once and frees its slot.
pub struct CompletionStream {
    inner: ChatStream,
    cancel: CancellationToken,
    agent: Arc<Agent>,
    caller: Caller,
    usage: Option<Usage>,
    done: bool,
    /// When the request arrived, until its first token is counted.
    started: Option<std::time::Instant>,
    _slot: super::metering::StatelessSlot,
}

impl CompletionStream {
    /// The next event; `None` at the normal end of the answer (when its usage is accounted).
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<LlmEvent, CompletionError>> {
        if self.done {
            return None;
        }
        let ev = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Some(Err(CompletionError::Cancelled)),
            ev = self.inner.next() => ev.map(|r| r.map_err(|e| upstream_failed(&self.inner.answered_by().provider, e))),
        };
        match &ev {
            None => {
                self.done = true;
                let by = self.inner.answered_by();
                self.agent.record_usage(&self.caller, &by.provider, &by.model, self.usage);
            }
            Some(Err(_)) => self.done = true,
            Some(Ok(LlmEvent::Usage(u))) => self.usage = Some(*u),
            Some(Ok(LlmEvent::Content(_) | LlmEvent::Reasoning(_) | LlmEvent::ToolCalls(_))) => {
                if let Some(t) = self.started.take() {
                    crate::metrics::first_token(crate::metrics::Door::OpenAi, t.elapsed());
                }
            }
            Some(Ok(_)) => {}
        }
        ev
    }

    /// The usage the provider reported, once it did (its last chunk).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_1X1: &str =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

    #[test]
    fn image_urls() {
        let mut b = Budget::default();
        check_image(&format!("data:image/png;base64,{PNG_1X1}"), "p", &mut b).unwrap();
        check_image("https://example.com/cat.png", "p", &mut b).unwrap();
        let err = |url: &str| match check_image(url, "messages[0].content[1]", &mut Budget::default()) {
            Err(CompletionError::Invalid { param, message }) => (param, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(err("http://example.com/cat.png").0, "messages[0].content[1].image_url.url");
        assert!(err("file:///etc/passwd").1.contains("https://"));
        assert!(err("data:image/png,rawbytes").1.contains("base64"));
        assert!(err("data:image/png;base64,@@@").1.contains("not valid base64"));
        assert!(err("data:image/png;base64,aGVsbG8gd29ybGQ=").1.contains("does not hold an image"));
    }

    #[test]
    fn roles_round_trip() {
        for r in ["system", "developer", "user", "assistant", "tool", "function"] {
            assert_eq!(Role::parse(r).map(Role::as_str), Some(r));
        }
        assert_eq!(Role::parse("robot"), None);
    }
}
