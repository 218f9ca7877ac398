//! The Live turn: speech to text (the utterance decoded first: raw PCM, or an encoded file
//! recognised by its magic number), a run with sentence-level speech, and its Live frames. The
//! [`crate::voice::live::LiveSession`] state machine starts one per utterance (or `text_input`)
//! through [`LiveRunner`], and cancels it on interrupt, barge-in or disconnect.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Agent;
use super::errors::{SessionError, TurnError};
use super::events::AgentEvent;
use super::turn::{ProfileSelect, SessionTarget, TurnInput, TurnKind, TurnRequest, title_from_text};
use crate::audio::codec::{self, AudioFormat, CodecError};
use crate::auth::Caller;
use crate::metrics::LiveStage;
use crate::voice::live::{LiveInput, LiveOut, LiveTurns, Text, TextAt, TurnOut};
use crate::voice::speak::{Playback, Speech};

/// How an utterance is named in errors.
const UTTERANCE: &str = "utterance";

/// What was said, when hearing it started, and the session's history read meanwhile.
type Heard = (String, Instant, Option<Vec<crate::store::MessageRecord>>);

/// Runs the Live turns of one connection, in its own session (`webchat_live!<user>!<uuid>`).
pub struct LiveRunner {
    pub agent: Arc<Agent>,
    pub caller: Caller,
    pub username: String,
    pub session_id: String,
}

impl LiveTurns for LiveRunner {
    fn run(&self, input: LiveInput, out: TurnOut, cancel: CancellationToken) -> BoxFuture<'static, ()> {
        let ctx = Ctx {
            agent: self.agent.clone(),
            caller: self.caller.clone(),
            username: self.username.clone(),
            session_id: self.session_id.clone(),
            out,
            cancel,
        };
        Box::pin(async move { ctx.turn(input).await })
    }
}

struct Ctx {
    agent: Arc<Agent>,
    caller: Caller,
    username: String,
    session_id: String,
    out: TurnOut,
    cancel: CancellationToken,
}

fn now_ms() -> i64 {
    crate::util::now_ms()
}

impl Ctx {
    async fn metrics(&self, data: Value) -> bool {
        self.out.send(LiveOut::metrics(data)).await
    }

    /// The text of the turn (transcribed for an utterance), and the history read meanwhile.
    async fn hear(&self, input: LiveInput) -> Option<Heard> {
        match input {
            LiveInput::Text(t) => {
                let started = Instant::now();
                self.metrics(json!({"input_type": "text"})).await;
                Some((t, started, None))
            }
            LiveInput::Audio { audio, assembled_from } => self.hear_audio(audio, assembled_from).await,
        }
    }

    /// An utterance, decoded to a WAV, then transcribed while the history is read.
    async fn hear_audio(&self, audio: Vec<u8>, assembled_from: Instant) -> Option<Heard> {
        let wav = self.decode_utterance(audio).await?;
        let assemble = assembled_from.elapsed().as_secs_f64();
        self.metrics(json!({"wav_assemble_time": assemble, "input_type": "audio"})).await;
        let started = Instant::now();
        let Some(stt) = self.agent.providers.stt() else {
            self.out.error_and_end("STT_NOT_CONFIGURED", "No STT provider is configured (语音识别服务未配置)").await;
            return None;
        };
        self.metrics(json!({"stt": stt.name()})).await;
        self.agent.record_audio(&self.caller, super::metering::wav_ms(&wav), 0);
        // The history does not depend on what was said: read it while STT runs.
        let turns = i64::from(self.agent.profiles.default_profile().history_turns) * 2;
        let recognise = async {
            let heard = self.agent.recognise(wav, UTTERANCE, "speech").await;
            if heard.is_ok() {
                crate::metrics::live_stage(LiveStage::Stt, started.elapsed());
            }
            heard
        };
        let (heard, history) = tokio::join!(recognise, self.agent.store.recent_messages(&self.session_id, turns));
        let text = self.transcript(heard).await?;
        Some((text, started, history.ok()))
    }

    /// Raw PCM, or an encoded file recognised by its magic number, as a 16 kHz WAV; `None` once
    /// the client was told why not.
    async fn decode_utterance(&self, mut audio: Vec<u8>) -> Option<Bytes> {
        if codec::sniff(&audio).is_none() {
            // Raw PCM, as before: a trailing odd byte is not a sample.
            audio.truncate(audio.len() & !1);
        }
        match self.agent.decode_for_stt(Bytes::from(audio), Some(AudioFormat::Pcm16), UTTERANCE).await {
            Ok(wav) => Some(wav),
            Err(e) => {
                self.refuse_audio(e).await;
                None
            }
        }
    }

    /// The trimmed transcript; `None` once the client was told it failed or heard nothing.
    async fn transcript(&self, heard: Result<String, TurnError>) -> Option<String> {
        match heard {
            Err(TurnError::Transcription { err, .. }) => {
                let text = format!("处理失败: {}", err.public_message());
                self.out.error_and_end("STT_ERROR", &text).await;
                None
            }
            Err(e) => {
                self.out.error_and_end("STT_ERROR", &e.to_string()).await;
                None
            }
            Ok(t) if t.trim().is_empty() => {
                self.out.error_and_end("STT_EMPTY", "No speech was recognised (empty transcript)").await;
                None
            }
            Ok(t) => Some(t.trim().to_string()),
        }
    }

    /// An utterance that cannot be decoded: too long (`AUDIO_TOO_LONG`, as for raw PCM over the
    /// cap), not audio we know, or corrupt (`INVALID_MESSAGE_FORMAT`, naming the format).
    async fn refuse_audio(&self, e: TurnError) {
        let code = match &e {
            TurnError::Audio { err: CodecError::TooLong { .. }, .. } => "AUDIO_TOO_LONG",
            TurnError::Audio { .. } => "INVALID_MESSAGE_FORMAT",
            _ => "PROCESSING_ERROR",
        };
        let text = if code == "PROCESSING_ERROR" { "Internal server error".to_string() } else { e.to_string() };
        self.out.error_and_end(code, &text).await;
    }

    async fn turn(self, input: LiveInput) {
        // Each turn is a request of the key (its `requests_per_minute`), refused before STT.
        if let Err(e) = self.agent.admit_request(&self.caller).await {
            return self.refuse(e).await;
        }
        let Some((text, started, history)) = self.hear(input).await else { return };
        self.out.send(LiveOut::UserMsg { data: TextAt { text: text.clone(), ts: now_ms() } }).await;
        let playback = Arc::new(Playback::default());
        let speech = self.agent.providers.tts().cloned().map(|tts| Speech {
            tts,
            min_sentence_chars: self.agent.min_sentence_chars,
            playback: playback.clone(),
        });
        let req = TurnRequest {
            caller: self.caller.clone(),
            username: self.username.clone(),
            session: SessionTarget::Owned { id: None, default: Some(self.session_id.clone()), new_platform: "live" },
            input: TurnInput::Built {
                stored: json!({"type": "user", "message": [{"type": "plain", "text": text}]}),
                model: Value::String(text.clone()),
                title: title_from_text(&text),
            },
            profile: ProfileSelect::Default,
            provider: None,
            model: None,
            streaming: Some(true),
            kind: TurnKind::Live { speech, cancel: self.cancel.clone(), history },
            reuse_checkpoint: None,
            door: crate::metrics::Door::Live,
        };
        let started_turn = match self.agent.begin_turn(req).await {
            Ok(s) => s,
            Err(e) => return self.refuse(e).await,
        };
        self.forward(started_turn.run, &started_turn.model, &playback, started).await;
    }

    /// A turn that could not start: an error frame with its code, then `end`.
    async fn refuse(&self, e: TurnError) {
        let (code, text) = match &e {
            TurnError::TooManyRuns => ("TOO_MANY_RUNS", e.to_string()),
            TurnError::Limited(x) => (x.code(), e.to_string()),
            TurnError::Session(SessionError::Store(_)) | TurnError::Store(_) | TurnError::Internal(_) => {
                tracing::error!(error = %e, "live: starting the turn failed");
                ("PROCESSING_ERROR", "Internal server error".to_string())
            }
            _ => ("PROCESSING_ERROR", e.to_string()),
        };
        self.out.error_and_end(code, &text).await;
    }

    /// The run's events as Live frames, until `end`.
    async fn forward(&self, run: Arc<super::runs::RunHandle>, model: &str, playback: &Playback, started: Instant) {
        let mut sub = run.subscribe(0);
        let mut batch = Vec::new();
        let mut audio_played = false;
        let mut first_token = true;
        let mut bot_text = String::new();
        let mut failed = false;
        while sub.recv(&mut batch).await {
            for (_, ev) in batch.drain(..) {
                let ok = match &*ev {
                    // Raw deltas only: reasoning and tool text are never spoken or shown here.
                    AgentEvent::Delta { text, reasoning: false } => {
                        if std::mem::take(&mut first_token) {
                            crate::metrics::live_stage(LiveStage::FirstToken, started.elapsed());
                        }
                        bot_text.push_str(text);
                        self.out.send(LiveOut::BotDeltaChunk { data: Text { text: text.clone() } }).await
                    }
                    AgentEvent::Audio { text, audio, .. } => {
                        if !audio_played {
                            audio_played = true;
                            crate::metrics::live_stage(LiveStage::FirstAudio, started.elapsed());
                            self.metrics(json!({"speak_to_first_frame": started.elapsed().as_secs_f64()})).await;
                        }
                        let b64 = base64::engine::general_purpose::STANDARD.encode(audio.take().unwrap_or_default());
                        let sent = self.out.send(LiveOut::BotTextChunk { data: Text { text: text.clone() } }).await
                            && self.out.send(LiveOut::Response { data: b64 }).await;
                        // The frame is on its way to the socket: the next sentence may be synthesised.
                        playback.played_one();
                        sent
                    }
                    AgentEvent::AgentStats { stats } => {
                        self.metrics(json!({"llm_ttft": stats.time_to_first_token, "llm_total_time": stats.end_time - stats.start_time}))
                            .await
                    }
                    AgentEvent::TtsStats { first_frame_secs, total_secs, tts } => {
                        self.metrics(json!({"tts_total_time": total_secs, "tts_first_frame_time": first_frame_secs, "tts": tts, "chat_model": model}))
                            .await
                    }
                    AgentEvent::Error { message, code } => {
                        failed = true;
                        self.out.send(LiveOut::error(code, message.clone())).await
                    }
                    // `End` comes after the reply is saved and the session is free again.
                    AgentEvent::End => {
                        let nothing_said = failed && bot_text.is_empty();
                        if !audio_played && !nothing_said {
                            let text = std::mem::take(&mut bot_text);
                            self.out.send(LiveOut::BotMsg { data: TextAt { text, ts: now_ms() } }).await;
                        }
                        self.out.send(LiveOut::End).await;
                        self.metrics(json!({"wav_to_tts_total_time": started.elapsed().as_secs_f64()})).await;
                        return;
                    }
                    _ => true,
                };
                if !ok {
                    return;
                }
            }
        }
    }
}
