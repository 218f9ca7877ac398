//! The run task: owns one chat turn from the saved user message to the saved reply.
//!
//! Order of events: `SessionId`, `UserMessageSaved`, `RunStarted`, deltas (or whole messages),
//! `AgentStats`, `Complete`, `MessageSaved`, `End` (pushed by [`run`] after the session is free). A provider failure becomes `Error` — with the
//! provider's message — and is saved too, so history never shows an empty reply. Cancellation
//! (stop, interrupt, shutdown) drops the upstream request at once and saves what was said.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Agent;
use super::checkpoint::{self, Checkpointer, bot_content};
use super::events::{AgentEvent, AgentStats};
use super::history::model_messages;
use super::runs::{LogFull, RunHandle};
use crate::providers::llm::{Answerer, ChatRequest, LlmError, LlmEvent, OpenAiProvider, Usage};
use crate::store::{NewMessage, now_micros};

/// Everything a run needs, decided by the front door before it starts.
pub struct Turn {
    pub run_id: String,
    pub session_id: String,
    pub platform_id: String,
    pub username: String,
    /// The owner recorded on media the run generates (the caller's owner tag).
    pub owner: String,
    /// The stored form of the user message; `None` when it is stored already (under
    /// `checkpoint`).
    pub user_content: Option<Value>,
    /// The checkpoint linking the question and its answer; a new one when `None`.
    pub checkpoint: Option<String>,
    /// The model's content for the new user message (a string or OpenAI parts).
    pub model_input: Value,
    pub system_prompt: String,
    pub history_turns: u32,
    /// The session was created for this turn: there is no history to read.
    pub fresh_session: bool,
    /// A new session to create with the turn's first write (the question's).
    pub new_session: Option<crate::store::SessionRecord>,
    /// History already read by the front door (Live reads it while STT runs).
    pub prefetched_history: Option<Vec<crate::store::MessageRecord>>,
    pub provider: Arc<OpenAiProvider>,
    pub model: String,
    pub streaming: bool,
    pub show_reasoning: bool,
    /// Keep the event log in the store when the run ends (for resume).
    pub persist_events: bool,
    /// Speak the reply sentence by sentence while it is generated (Live).
    pub speech: Option<Speech>,
    /// Speak the finished reply into a `record` attachment (profiles with `tts = true`).
    pub speak_reply: Option<Arc<dyn crate::providers::tts::Tts>>,
    /// When set, the run's token is a child of this one (a Live turn cancels its run with it).
    pub parent_cancel: Option<tokio_util::sync::CancellationToken>,
    /// The key's run slot, held until the run ends; its tokens and audio are recorded on it.
    pub meter: Option<crate::governance::RunPermit>,
    /// The front door, and when the turn service took the turn (for the first-token metric).
    pub door: crate::metrics::Door,
    pub accepted: Instant,
}

pub use crate::voice::speak::Speech;

/// The speech worker reports into the run's log.
impl crate::voice::speak::SpeechSink for RunHandle {
    fn sentence(&self, text: String, audio: bytes::Bytes, mime: &str) {
        self.add_audio_out(&audio, mime);
        self.push(AgentEvent::Audio { text, audio: super::events::AudioData::new(audio), mime: mime.to_string() });
    }

    fn finished(&self, first_frame_secs: f64, total_secs: f64, tts: &str) {
        self.push(AgentEvent::TtsStats { first_frame_secs, total_secs, tts: tts.to_string() });
    }

    fn label(&self) -> &str {
        &self.run_id
    }
}

enum Failure {
    Cancelled,
    Llm(LlmError),
    TooLong,
}

impl From<LogFull> for Failure {
    fn from(_: LogFull) -> Self {
        Failure::TooLong
    }
}

struct Progress {
    text: String,
    reasoning: String,
    usage: Option<Usage>,
    first_token: Option<Instant>,
    /// The provider and model that answered (a fallback, when the one asked failed first).
    answered_by: Option<Answerer>,
}

pub async fn run(agent: Arc<Agent>, mut turn: Turn, h: Arc<RunHandle>) {
    let checkpoint = turn.checkpoint.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut ckpt = Checkpointer::new(
        agent.store.clone(),
        agent.tasks.clone(),
        h.clone(),
        &turn.platform_id,
        &checkpoint,
        turn.persist_events,
        agent.instance_id(),
    );
    drive(&agent, &mut turn, &h, &mut ckpt, &checkpoint).await;
    // The reply is saved. Free the session *before* `End` is visible, so a client that sees
    // `end` can start its next turn at once.
    agent.runs.release_session(&h.run_id);
    if let Some(c) = &agent.cluster {
        c.release(&h.session_id, &h.run_id).await;
    }
    h.push(AgentEvent::End);
    h.finish();
    // A run log not closed with the reply (its save failed) is written on its own.
    if turn.persist_events && !ckpt.run_closed {
        ckpt.save_run(checkpoint::closed_status(&h.snapshot())).await;
    }
    agent.runs.remove(&h.run_id);
}

async fn drive(agent: &Agent, turn: &mut Turn, h: &Arc<RunHandle>, ckpt: &mut Checkpointer, checkpoint: &str) {
    let store = agent.store.as_ref();
    // History is read before the new message is saved, so it holds only earlier turns.
    let history = if let Some(h) = &turn.prefetched_history {
        h.clone()
    } else if turn.history_turns > 0 && !turn.fresh_session {
        match store.recent_messages(&turn.session_id, i64::from(turn.history_turns) * 2).await {
            Ok(h) => h,
            Err(e) => return fail_early(h, &e.to_string()),
        }
    } else {
        Vec::new()
    };
    // A question stored already is the model's input, not its history.
    let history: Vec<_> = if turn.user_content.is_none() {
        history.into_iter().filter(|m| m.llm_checkpoint_id.as_deref() != Some(checkpoint)).collect()
    } else {
        history
    };
    // The user message is saved before the model is called: a message that cannot be saved (a
    // full disk) costs no model call, and a crash mid-reply still finds the question.
    if let (Some(s), None) = (&turn.new_session, &turn.user_content)
        && let Err(e) = store.create_session(s).await
    {
        return fail_early(h, &e.to_string());
    }
    if let Some(content) = &turn.user_content {
        let msg = NewMessage {
            session_id: turn.session_id.clone(),
            platform_id: turn.platform_id.clone(),
            sender_id: turn.username.clone(),
            sender_name: turn.username.clone(),
            content: content.clone(),
            llm_checkpoint_id: Some(checkpoint.to_string()),
        };
        let saved = match &turn.new_session {
            Some(s) => store.insert_first_message(s, &msg).await,
            None => store.insert_message(&msg).await,
        };
        match saved {
            Ok((id, created_at)) => {
                h.push(AgentEvent::UserMessageSaved { id, created_at, checkpoint: checkpoint.to_string() });
            }
            Err(e) => return fail_early(h, &e.to_string()),
        }
    }
    h.push(AgentEvent::RunStarted);
    let request = ChatRequest {
        model: turn.model.clone(),
        // Moved, not copied: the input can hold megabytes of inline media.
        messages: model_messages(&turn.system_prompt, &history, std::mem::take(&mut turn.model_input)),
        params: serde_json::Map::new(),
    };

    let start_wall = now_micros();
    let started = Instant::now();
    let mut p =
        Progress { text: String::new(), reasoning: String::new(), usage: None, first_token: None, answered_by: None };

    // Live: deltas also feed the sentence segmenter, whose sentences a TTS worker speaks while
    // the model keeps writing.
    let (speech_tx, speech_task) = match &turn.speech {
        Some(s) => {
            let (tx, rx) = mpsc::channel::<String>(64);
            let sink: Arc<dyn crate::voice::speak::SpeechSink> = h.clone();
            let task = crate::voice::speak::spawn_worker(s.clone(), rx, h.cancel.clone(), agent.tasks.clone(), sink);
            (Some(tx), Some(task))
        }
        None => (None, None),
    };

    let result = {
        let work = generate(&turn.provider, request, turn.streaming, turn.show_reasoning, h, &mut p, speech_tx, ckpt);
        tokio::select! {
            biased;
            _ = h.cancel.cancelled() => Err(Failure::Cancelled),
            r = work => r,
        }
    };
    // The model is done here: the stats (Live's `llm_total_time`) must not count the speech of
    // the last sentences, which the worker may still be synthesising.
    let end_wall = now_micros();
    // Tokens are the answering provider's: accounting (and `agent_stats`) names it.
    let answered_by = p
        .answered_by
        .take()
        .unwrap_or_else(|| Answerer { provider: turn.provider.id.clone(), model: turn.model.clone() });
    record_metrics(agent, turn, &p, &answered_by);
    let stats = AgentStats {
        input_other: p.usage.map(|u| u.prompt_tokens.saturating_sub(u.cached_tokens)).unwrap_or(0),
        input_cached: p.usage.map(|u| u.cached_tokens).unwrap_or(0),
        output: p.usage.map(|u| u.completion_tokens).unwrap_or(0),
        current_context_tokens: p.usage.map(|u| u.prompt_tokens).unwrap_or(0),
        start_time: crate::util::epoch_secs_f64(start_wall),
        end_time: crate::util::epoch_secs_f64(end_wall),
        time_to_first_token: p.first_token.map(|t| t.duration_since(started).as_secs_f64()).unwrap_or(0.0),
        provider_id: answered_by.provider,
        model: answered_by.model,
    };
    if let Some(task) = speech_task {
        // As in AstrBot, the model's stats go out when the model is done, while the last
        // sentences may still be spoken.
        if result.is_ok() {
            h.push(AgentEvent::AgentStats { stats: stats.clone() });
        }
        // The worker drains what the segmenter produced (unless cancelled) before the turn ends.
        let _ = task.await;
    }

    let mut content = bot_content(&p.text, "");
    match result {
        Ok(()) => {
            if turn.speech.is_none() {
                h.push(AgentEvent::AgentStats { stats: stats.clone() });
            }
            if turn.streaming {
                h.push(AgentEvent::Complete { text: p.text.clone(), reasoning: p.reasoning.clone() });
            } else {
                if turn.show_reasoning && !p.reasoning.is_empty() {
                    h.push(AgentEvent::Message { text: p.reasoning.clone(), reasoning: true });
                }
                h.push(AgentEvent::Message { text: p.text.clone(), reasoning: false });
            }
            content["agent_stats"] = serde_json::to_value(&stats).unwrap_or(Value::Null);
            if let Some(tts) = &turn.speak_reply
                && !p.text.trim().is_empty()
            {
                speak_reply(agent, h, &turn.owner, tts.as_ref(), &p.text, &mut content).await;
            }
        }
        Err(Failure::Cancelled) => {
            tracing::info!(run.id = %h.run_id, "run interrupted");
            if turn.streaming {
                h.push(AgentEvent::Complete { text: p.text.clone(), reasoning: p.reasoning.clone() });
            } else if !p.text.is_empty() {
                h.push(AgentEvent::Message { text: p.text.clone(), reasoning: false });
            }
            content["interrupted"] = json!(true);
        }
        Err(Failure::Llm(e)) => {
            tracing::warn!(run.id = %h.run_id, provider = %turn.provider.id, error = %e, "provider failed");
            let message = e.public_message();
            h.push(AgentEvent::Error { message: message.clone(), code: e.code().into() });
            if p.text.is_empty() {
                content["message"] = json!([{"type": "plain", "text": message}]);
            }
            content["error"] = json!(message);
        }
        Err(Failure::TooLong) => {
            let message = "The reply exceeded the run's size limit and was cut off".to_string();
            h.push(AgentEvent::Error { message: message.clone(), code: "RUN_LIMIT".into() });
            content["error"] = json!(message);
        }
    }
    if let Some(m) = &turn.meter {
        if let Some(u) = p.usage {
            m.tokens(u.prompt_tokens, u.completion_tokens);
        }
        m.audio(0, h.audio_out_ms());
    }
    if !p.reasoning.is_empty() {
        content["reasoning"] = json!(p.reasoning);
    }
    match ckpt.finish(content).await {
        Ok((id, created_at)) => {
            h.push(AgentEvent::MessageSaved { id, created_at, checkpoint: checkpoint.to_string() });
        }
        Err(e) => {
            tracing::error!(run.id = %h.run_id, error = %e, "saving the reply failed");
            h.push(AgentEvent::Error { message: "Failed to save the reply".into(), code: "STORE_ERROR".into() });
        }
    }
}

/// Synthesises the whole reply and attaches it as a `record` (media out). A TTS failure does not
/// fail the turn: the text reply stands, and the failure is noted on the saved message.
async fn speak_reply(
    agent: &Agent,
    h: &RunHandle,
    owner: &str,
    tts: &dyn crate::providers::tts::Tts,
    text: &str,
    content: &mut Value,
) {
    let audio = tokio::select! {
        _ = h.cancel.cancelled() => return,
        a = tts.synthesize(text) => a,
    };
    let audio = match audio {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(run.id = %h.run_id, error = %e, "speaking the reply failed");
            content["tts_error"] = json!(e.public_message());
            return;
        }
    };
    h.add_audio_out(&audio, tts.mime());
    let ext = if tts.mime() == "audio/mpeg" { "mp3" } else { "wav" };
    match crate::attachments::save_bytes(
        agent.store.as_ref(),
        &agent.blobs,
        owner,
        &format!("reply.{ext}"),
        tts.mime(),
        &audio,
    )
    .await
    {
        Ok(rec) => {
            h.push(AgentEvent::Media {
                media: super::events::MediaOut {
                    attachment_id: rec.attachment_id.clone(),
                    kind: "record".into(),
                    stored_name: rec.stored_name.clone(),
                    original_name: rec.original_name.clone(),
                },
            });
            h.push(AgentEvent::AttachmentSaved { attachment_id: rec.attachment_id.clone(), kind: "record".into() });
            if let Some(parts) = content["message"].as_array_mut() {
                parts.push(json!({"type": "record", "attachment_id": rec.attachment_id, "filename": rec.original_name, "mime_type": rec.mime_type}));
            }
        }
        Err(e) => {
            tracing::error!(run.id = %h.run_id, error = %e, "saving the spoken reply failed");
            content["tts_error"] = json!("saving the audio failed");
        }
    }
}

/// The run's first token, its tokens and a provider failure, as metrics.
/// The turn's first-token time, and its tokens under the provider and model that answered
/// (failed attempts are counted where they happen, in `providers::llm`).
fn record_metrics(agent: &Agent, turn: &Turn, p: &Progress, answered_by: &Answerer) {
    if let Some(t) = p.first_token {
        crate::metrics::first_token(turn.door, t.duration_since(turn.accepted));
    }
    if let Some(u) = p.usage {
        let provider = agent.providers.llm(&answered_by.provider).unwrap_or(&turn.provider);
        let model = agent.model_label(provider, &answered_by.model);
        crate::metrics::tokens(&answered_by.provider, model, u.prompt_tokens, u.completion_tokens);
    }
}

fn fail_early(h: &RunHandle, cause: &str) {
    tracing::error!(run.id = %h.run_id, error = %cause, "run failed before the model was called");
    h.push(AgentEvent::Error { message: "Failed to save the message".into(), code: "STORE_ERROR".into() });
}

/// Asks the model and records what it says, saving the partial reply about once a second
/// while it streams. Dropping this future aborts the request.
#[allow(clippy::too_many_arguments)]
async fn generate(
    provider: &OpenAiProvider,
    req: ChatRequest,
    streaming: bool,
    show_reasoning: bool,
    h: &RunHandle,
    p: &mut Progress,
    speech: Option<mpsc::Sender<String>>,
    ckpt: &mut Checkpointer,
) -> Result<(), Failure> {
    if !streaming && speech.is_none() {
        let c = provider.complete(&req).await.map_err(Failure::Llm)?;
        p.first_token = Some(Instant::now());
        p.answered_by = Some(c.answered_by);
        p.text = c.content;
        p.reasoning = c.reasoning;
        p.usage = c.usage;
        return Ok(());
    }
    let mut stream = provider.stream(req).await.map_err(Failure::Llm)?;
    let mut save = tokio::time::interval_at(tokio::time::Instant::now() + checkpoint::INTERVAL, checkpoint::INTERVAL);
    save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `ChatStream::next` is cancel-safe and keeps its timeouts across the save ticks.
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = save.tick() => {
                ckpt.tick(&p.text, &p.reasoning).await;
                continue;
            }
        };
        let Some(ev) = ev else { return Ok(()) };
        let ev = ev.map_err(Failure::Llm)?;
        // Retries and fallbacks end with the first event: from here on, this is who answers.
        if p.answered_by.is_none() {
            p.answered_by = Some(stream.answered_by().clone());
        }
        match ev {
            LlmEvent::Content(t) => {
                p.first_token.get_or_insert_with(Instant::now);
                p.text.push_str(&t);
                if let Some(tx) = &speech {
                    // Bounded: if TTS falls behind, generation waits rather than buffering without limit.
                    if tx.send(t.clone()).await.is_err() {
                        return Err(Failure::Cancelled);
                    }
                }
                if streaming {
                    h.try_push(AgentEvent::Delta { text: t, reasoning: false })?;
                }
            }
            LlmEvent::Reasoning(t) => {
                p.first_token.get_or_insert_with(Instant::now);
                p.reasoning.push_str(&t);
                if streaming && show_reasoning {
                    h.try_push(AgentEvent::Delta { text: t, reasoning: true })?;
                }
            }
            LlmEvent::Usage(u) => p.usage = Some(u),
            // Chat turns send no tools, and the end of the stream is the end of the answer.
            LlmEvent::ToolCalls(_) | LlmEvent::Finish(_) => {}
        }
    }
}
