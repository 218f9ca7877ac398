//! The Live voice protocol (seed 000, notes §12) as a state machine: no sockets, no HTTP, no
//! agent. Client frames arrive parsed ([`LiveIn`]); the session assembles utterances
//! (`start_speaking` / `speaking_part` / `end_speaking`, with stamps and a length cap), starts a
//! turn per utterance or `text_input` through a [`LiveTurns`] runner, and interrupts it on
//! `interrupt` or when the user starts speaking over the bot (barge-in). Everything it says goes
//! to a [`LiveSink`] as [`LiveOut`] frames. A socket adapter feeds it frames; tests feed it
//! through channels.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Raw PCM of Live utterances: 16-bit mono at this rate.
pub const SAMPLE_RATE: u32 = 16_000;
/// AstrBot's text for an utterance that cannot be assembled.
pub const ASSEMBLY_FAILED: &str = "音频组装失败";

/// A stamp identifying one utterance: a non-empty string or a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(pub String);

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if !s.is_empty() => Ok(Stamp(s)),
            Value::Number(n) => Ok(Stamp(n.to_string())),
            _ => Err(serde::de::Error::custom("a stamp is a non-empty string or a number")),
        }
    }
}

/// Lenient fields: a wrong type reads as absent, and the session answers with its own text.
fn lenient<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(serde_json::from_value(Value::deserialize(d)?).ok())
}

/// A client frame of Live mode, by its `t`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum LiveIn {
    StartSpeaking {
        #[serde(default, deserialize_with = "lenient")]
        stamp: Option<Stamp>,
    },
    SpeakingPart {
        #[serde(default, deserialize_with = "lenient")]
        data: Option<String>,
    },
    EndSpeaking {
        #[serde(default, deserialize_with = "lenient")]
        stamp: Option<Stamp>,
    },
    TextInput {
        #[serde(default, deserialize_with = "lenient")]
        text: Option<String>,
        #[serde(default, deserialize_with = "lenient")]
        message: Option<String>,
    },
    Interrupt,
    Ping,
}

impl LiveIn {
    /// Parses a frame object; `Err` is the error frame's text (an unknown or missing `t`).
    pub fn parse(frame: serde_json::Map<String, Value>) -> Result<LiveIn, String> {
        let t = frame.get("t").and_then(Value::as_str).unwrap_or_default().to_string();
        serde_json::from_value(Value::Object(frame)).map_err(|_| format!("Unsupported message type: {t}"))
    }
}

/// A frame to the client, Live mode. Serialised as AstrBot writes them: `{"t": …, "data": …}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum LiveOut {
    Error {
        data: String,
        code: String,
    },
    Pong,
    StopPlay,
    End,
    Metrics {
        data: Value,
    },
    UserMsg {
        data: TextAt,
    },
    BotDeltaChunk {
        data: Text,
    },
    BotTextChunk {
        data: Text,
    },
    /// One sentence of speech, base64.
    Response {
        data: String,
    },
    BotMsg {
        data: TextAt,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Text {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextAt {
    pub text: String,
    /// Unix milliseconds.
    pub ts: i64,
}

impl LiveOut {
    pub fn error(code: &str, data: impl Into<String>) -> LiveOut {
        LiveOut::Error { data: data.into(), code: code.to_string() }
    }

    pub fn metrics(data: Value) -> LiveOut {
        LiveOut::Metrics { data }
    }
}

/// Where a Live session's frames go (a socket's writer; a channel in tests).
pub trait LiveSink: Send + Sync + 'static {
    /// Queues a control frame at once (errors, pongs, `stop_play`, `end`).
    fn control(&self, frame: LiveOut);
    /// Queues a frame of turn `generation`, waiting for room; `false` once the client is gone.
    /// Frames of a generation that was replaced are dropped unsent.
    fn turn_frame(&self, generation: u64, frame: LiveOut) -> BoxFuture<'_, bool>;
    /// Starts a new turn generation.
    fn next_generation(&self) -> u64;
}

/// The frames of one turn.
#[derive(Clone)]
pub struct TurnOut {
    sink: Arc<dyn LiveSink>,
    generation: u64,
}

impl TurnOut {
    pub async fn send(&self, frame: LiveOut) -> bool {
        self.sink.turn_frame(self.generation, frame).await
    }

    /// An error, then `end`.
    pub async fn error_and_end(&self, code: &str, data: &str) {
        self.send(LiveOut::error(code, data)).await;
        self.send(LiveOut::End).await;
    }
}

/// What a Live turn starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveInput {
    /// An utterance as assembled from its parts, and when its assembly began: 16 kHz mono
    /// 16-bit PCM, or a whole encoded file (WAV, MP3, Ogg, WebM, AMR, SILK) that the runner
    /// recognises by its magic number and decodes.
    Audio {
        audio: Vec<u8>,
        assembled_from: Instant,
    },
    Text(String),
}

/// Runs one Live turn (speech to text, the model, speech), writing its frames to `out`; must
/// stop promptly when `cancel` is cancelled.
pub trait LiveTurns: Send + Sync + 'static {
    fn run(&self, input: LiveInput, out: TurnOut, cancel: CancellationToken) -> BoxFuture<'static, ()>;
}

struct Utterance {
    stamp: Stamp,
    /// The parts' bytes, in order.
    audio: Vec<u8>,
}

struct ActiveTurn {
    token: CancellationToken,
    task: JoinHandle<()>,
}

/// One client's Live session.
pub struct LiveSession {
    sink: Arc<dyn LiveSink>,
    turns: Arc<dyn LiveTurns>,
    tasks: TaskTracker,
    /// Turns hold children of this token (shutdown cancels them all).
    parent: CancellationToken,
    max_utterance_secs: u32,
    speaking: Option<Utterance>,
    turn: Option<ActiveTurn>,
}

impl LiveSession {
    pub fn new(
        sink: Arc<dyn LiveSink>,
        turns: Arc<dyn LiveTurns>,
        tasks: TaskTracker,
        parent: CancellationToken,
        max_utterance_secs: u32,
    ) -> Self {
        Self { sink, turns, tasks, parent, max_utterance_secs, speaking: None, turn: None }
    }

    fn error(&self, code: &str, data: impl Into<String>) {
        self.sink.control(LiveOut::error(code, data));
    }

    /// True while a turn is running.
    pub fn busy(&self) -> bool {
        self.turn.as_ref().is_some_and(|t| !t.task.is_finished())
    }

    /// Handles one client frame. Never waits: a turn runs in its own task.
    pub fn handle(&mut self, frame: LiveIn) {
        match frame {
            LiveIn::StartSpeaking { stamp } => {
                let Some(stamp) = stamp else {
                    return self.error("INVALID_MESSAGE_FORMAT", "start_speaking needs a stamp");
                };
                // Barge-in: talking over the bot interrupts it.
                if self.busy() {
                    self.interrupt();
                }
                self.speaking = Some(Utterance { stamp, audio: Vec::new() });
            }
            LiveIn::SpeakingPart { data } => self.speaking_part(data),
            LiveIn::EndSpeaking { stamp } => self.end_speaking(stamp),
            LiveIn::TextInput { text, message } => {
                if self.busy() {
                    return self.error("PROCESSING_ERROR", "Session is busy");
                }
                let text = text.or(message).map(|t| t.trim().to_string()).unwrap_or_default();
                if text.is_empty() {
                    return self.error("INVALID_MESSAGE_FORMAT", "message must be non-empty text");
                }
                self.start_turn(LiveInput::Text(text));
            }
            LiveIn::Interrupt => {
                if self.busy() {
                    self.interrupt();
                }
            }
            LiveIn::Ping => self.sink.control(LiveOut::Pong),
        }
    }

    /// Appends a part. The cap is in bytes, those of `max_utterance_secs` of 16 kHz mono PCM,
    /// whatever the format: encoded audio fits far longer (its decoded length is capped by the
    /// runner), and memory stays bounded either way.
    fn speaking_part(&mut self, data: Option<String>) {
        let max = self.max_utterance_secs as usize * SAMPLE_RATE as usize * 2;
        let Some(u) = self.speaking.as_mut() else {
            return self.error("INVALID_MESSAGE_FORMAT", "speaking_part outside start_speaking/end_speaking");
        };
        match data.map(|d| base64::engine::general_purpose::STANDARD.decode(d.trim())) {
            Some(Ok(bytes)) => {
                if u.audio.len() + bytes.len() > max {
                    self.speaking = None;
                    let secs = self.max_utterance_secs;
                    return self.error("AUDIO_TOO_LONG", format!("utterance longer than {secs} s; discarded"));
                }
                u.audio.extend_from_slice(&bytes);
            }
            _ => self.error("INVALID_MESSAGE_FORMAT", "speaking_part data must be base64 PCM"),
        }
    }

    fn end_speaking(&mut self, stamp: Option<Stamp>) {
        if self.busy() {
            return self.error("PROCESSING_ERROR", "Session is busy");
        }
        match self.speaking.take() {
            Some(u) if Some(&u.stamp) == stamp.as_ref() && u.audio.len() >= 2 => {
                self.start_turn(LiveInput::Audio { audio: u.audio, assembled_from: Instant::now() });
            }
            other => {
                // A mismatched stamp leaves the current utterance going.
                if let Some(u) = other
                    && Some(&u.stamp) != stamp.as_ref()
                {
                    self.speaking = Some(u);
                }
                self.error("INVALID_MESSAGE_FORMAT", ASSEMBLY_FAILED);
            }
        }
    }

    /// Cancels the current turn (model stream and speech stop at once), drops its queued
    /// frames, and tells the client to stop playing.
    fn interrupt(&mut self) {
        if let Some(t) = self.turn.take() {
            t.token.cancel();
            self.sink.next_generation();
            self.sink.control(LiveOut::StopPlay);
            self.sink.control(LiveOut::End);
            tracing::info!("live turn interrupted");
        }
    }

    fn start_turn(&mut self, input: LiveInput) {
        let generation = self.sink.next_generation();
        let token = self.parent.child_token();
        let out = TurnOut { sink: self.sink.clone(), generation };
        let work = self.turns.run(input, out, token.clone());
        let t = token.clone();
        let task = self.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = t.cancelled() => {}
                _ = work => {}
            }
        });
        self.turn = Some(ActiveTurn { token, task });
    }

    /// The client is gone: a Live turn has nobody to speak to, so it stops (and is saved).
    pub fn close(&mut self) {
        if let Some(t) = self.turn.take() {
            t.token.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;

    /// Frames as the client would receive them, with their generation (`None`: control).
    struct ChannelSink {
        tx: mpsc::UnboundedSender<(Option<u64>, LiveOut)>,
        generation: AtomicU64,
    }

    impl LiveSink for ChannelSink {
        fn control(&self, frame: LiveOut) {
            let _ = self.tx.send((None, frame));
        }
        fn turn_frame(&self, generation: u64, frame: LiveOut) -> BoxFuture<'_, bool> {
            Box::pin(async move {
                // The writer drops frames of replaced generations.
                if generation == self.generation.load(Ordering::SeqCst) {
                    let _ = self.tx.send((Some(generation), frame));
                }
                true
            })
        }
        fn next_generation(&self) -> u64 {
            self.generation.fetch_add(1, Ordering::SeqCst) + 1
        }
    }

    /// Records each turn's input; a turn answers one delta, then waits until cancelled or told
    /// to finish.
    #[derive(Default)]
    struct FakeTurns {
        inputs: Mutex<Vec<LiveInput>>,
        /// Each turn's token: the real runner hands it to the run, which stops when it is cancelled.
        tokens: Mutex<Vec<CancellationToken>>,
        finish: Arc<tokio::sync::Notify>,
    }

    impl FakeTurns {
        fn cancelled(&self) -> usize {
            self.tokens.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|t| t.is_cancelled()).count()
        }
    }

    impl LiveTurns for FakeTurns {
        fn run(&self, input: LiveInput, out: TurnOut, cancel: CancellationToken) -> BoxFuture<'static, ()> {
            self.inputs.lock().unwrap_or_else(|p| p.into_inner()).push(input);
            self.tokens.lock().unwrap_or_else(|p| p.into_inner()).push(cancel);
            let finish = self.finish.clone();
            Box::pin(async move {
                out.send(LiveOut::BotDeltaChunk { data: Text { text: "hi".into() } }).await;
                finish.notified().await;
                out.send(LiveOut::End).await;
            })
        }
    }

    type Frames = mpsc::UnboundedReceiver<(Option<u64>, LiveOut)>;

    fn session(max_secs: u32) -> (LiveSession, Frames, Arc<FakeTurns>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = Arc::new(ChannelSink { tx, generation: AtomicU64::new(0) });
        let turns = Arc::new(FakeTurns::default());
        let s = LiveSession::new(sink, turns.clone(), TaskTracker::new(), CancellationToken::new(), max_secs);
        (s, rx, turns)
    }

    fn frame(v: Value) -> LiveIn {
        match v {
            Value::Object(o) => LiveIn::parse(o).unwrap_or_else(|e| panic!("{e}")),
            _ => unreachable!(),
        }
    }

    fn pcm_b64(bytes: usize) -> String {
        base64::engine::general_purpose::STANDARD.encode(vec![1u8; bytes])
    }

    async fn next(rx: &mut Frames) -> LiveOut {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .ok()
            .flatten()
            .map(|f| f.1)
            .unwrap_or(LiveOut::End)
    }

    #[test]
    fn frames_parse_once_with_lenient_fields() {
        assert_eq!(
            frame(json!({"t": "start_speaking", "stamp": 7})),
            LiveIn::StartSpeaking { stamp: Some(Stamp("7".into())) }
        );
        assert_eq!(frame(json!({"t": "start_speaking", "stamp": ""})), LiveIn::StartSpeaking { stamp: None });
        assert_eq!(frame(json!({"t": "speaking_part", "data": 5})), LiveIn::SpeakingPart { data: None });
        assert_eq!(frame(json!({"t": "ping", "extra": 1})), LiveIn::Ping);
        let Value::Object(o) = json!({"t": "dance"}) else { unreachable!() };
        assert_eq!(LiveIn::parse(o), Err("Unsupported message type: dance".into()));
        let Value::Object(o) = json!({"x": 1}) else { unreachable!() };
        assert_eq!(LiveIn::parse(o), Err("Unsupported message type: ".into()));
        let out = serde_json::to_value(LiveOut::error("X", "y")).unwrap_or_default();
        assert_eq!(out.to_string(), r#"{"t":"error","data":"y","code":"X"}"#);
        assert_eq!(serde_json::to_value(LiveOut::StopPlay).unwrap_or_default(), json!({"t": "stop_play"}));
    }

    #[tokio::test]
    async fn an_utterance_becomes_one_turn() {
        let (mut s, mut rx, turns) = session(60);
        s.handle(frame(json!({"t": "start_speaking", "stamp": "a"})));
        s.handle(frame(json!({"t": "speaking_part", "data": pcm_b64(640)})));
        s.handle(frame(json!({"t": "speaking_part", "data": pcm_b64(640)})));
        s.handle(frame(json!({"t": "end_speaking", "stamp": "a"})));
        assert_eq!(next(&mut rx).await, LiveOut::BotDeltaChunk { data: Text { text: "hi".into() } });
        let inputs = turns.inputs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(matches!(&inputs[..], [LiveInput::Audio { audio, .. }] if audio.len() == 1280));
        // Busy: a second utterance or a text cannot start another turn.
        s.handle(frame(json!({"t": "text_input", "text": "more"})));
        assert_eq!(next(&mut rx).await, LiveOut::error("PROCESSING_ERROR", "Session is busy"));
        turns.finish.notify_one();
        assert_eq!(next(&mut rx).await, LiveOut::End);
    }

    #[tokio::test]
    async fn stamps_must_match_and_parts_need_an_utterance() {
        let (mut s, mut rx, turns) = session(60);
        s.handle(frame(json!({"t": "speaking_part", "data": pcm_b64(10)})));
        assert_eq!(
            next(&mut rx).await,
            LiveOut::error("INVALID_MESSAGE_FORMAT", "speaking_part outside start_speaking/end_speaking")
        );
        s.handle(frame(json!({"t": "start_speaking"})));
        assert_eq!(next(&mut rx).await, LiveOut::error("INVALID_MESSAGE_FORMAT", "start_speaking needs a stamp"));
        s.handle(frame(json!({"t": "start_speaking", "stamp": 1})));
        s.handle(frame(json!({"t": "speaking_part", "data": "not base64!"})));
        assert_eq!(
            next(&mut rx).await,
            LiveOut::error("INVALID_MESSAGE_FORMAT", "speaking_part data must be base64 PCM")
        );
        s.handle(frame(json!({"t": "speaking_part", "data": pcm_b64(100)})));
        // The wrong stamp fails and leaves the utterance going; the right one completes it.
        s.handle(frame(json!({"t": "end_speaking", "stamp": 2})));
        assert_eq!(next(&mut rx).await, LiveOut::error("INVALID_MESSAGE_FORMAT", ASSEMBLY_FAILED));
        s.handle(frame(json!({"t": "end_speaking", "stamp": "1"})));
        assert_eq!(next(&mut rx).await, LiveOut::BotDeltaChunk { data: Text { text: "hi".into() } });
        assert_eq!(turns.inputs.lock().unwrap_or_else(|p| p.into_inner()).len(), 1);
    }

    #[tokio::test]
    async fn the_utterance_cap_discards_the_utterance() {
        let (mut s, mut rx, turns) = session(1);
        s.handle(frame(json!({"t": "start_speaking", "stamp": "a"})));
        s.handle(frame(json!({"t": "speaking_part", "data": pcm_b64(30_000)})));
        s.handle(frame(json!({"t": "speaking_part", "data": pcm_b64(3_000)})));
        assert_eq!(next(&mut rx).await, LiveOut::error("AUDIO_TOO_LONG", "utterance longer than 1 s; discarded"));
        s.handle(frame(json!({"t": "end_speaking", "stamp": "a"})));
        assert_eq!(next(&mut rx).await, LiveOut::error("INVALID_MESSAGE_FORMAT", ASSEMBLY_FAILED));
        assert!(turns.inputs.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
    }

    #[tokio::test]
    async fn interrupt_and_barge_in_cancel_the_turn_and_stop_play() {
        let (mut s, mut rx, turns) = session(60);
        s.handle(frame(json!({"t": "text_input", "message": " hello "})));
        assert_eq!(next(&mut rx).await, LiveOut::BotDeltaChunk { data: Text { text: "hi".into() } });
        assert_eq!(turns.inputs.lock().unwrap_or_else(|p| p.into_inner())[0], LiveInput::Text("hello".into()));
        s.handle(frame(json!({"t": "interrupt"})));
        assert_eq!(next(&mut rx).await, LiveOut::StopPlay);
        assert_eq!(next(&mut rx).await, LiveOut::End);
        // Speaking over a running turn interrupts it too.
        s.handle(frame(json!({"t": "text_input", "text": "again"})));
        assert_eq!(next(&mut rx).await, LiveOut::BotDeltaChunk { data: Text { text: "hi".into() } });
        s.handle(frame(json!({"t": "start_speaking", "stamp": "b"})));
        assert_eq!(next(&mut rx).await, LiveOut::StopPlay);
        assert_eq!(next(&mut rx).await, LiveOut::End);
        assert_eq!(turns.cancelled(), 2, "both turns were cancelled");
        assert!(!s.busy());
        // Nothing to interrupt: no frames. A ping is answered.
        s.handle(frame(json!({"t": "interrupt"})));
        s.handle(frame(json!({"t": "ping"})));
        assert_eq!(next(&mut rx).await, LiveOut::Pong);
        s.handle(frame(json!({"t": "text_input", "text": "  "})));
        assert_eq!(next(&mut rx).await, LiveOut::error("INVALID_MESSAGE_FORMAT", "message must be non-empty text"));
    }
}
