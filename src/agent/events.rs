//! [`AgentEvent`]: the one internal event type of a run. Each front door renders it into its own
//! wire shape (AstrBot SSE JSON, WebSocket frames, Live frames, compat APIs).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::Micros;

/// AstrBot's `agent_stats` payload, and (astrgate's addition) the provider and model that
/// answered: a fallback's when the provider asked for failed before its first token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    pub input_other: u64,
    pub input_cached: u64,
    pub output: u64,
    pub current_context_tokens: u64,
    /// Seconds since the epoch.
    pub start_time: f64,
    pub end_time: f64,
    /// Seconds from the request to the first token.
    pub time_to_first_token: f64,
    /// The `[[providers]] id` that answered (empty in logs written before it was recorded).
    #[serde(default)]
    pub provider_id: String,
    /// The model it answered with.
    #[serde(default)]
    pub model: String,
}

/// The audio of one spoken sentence, handed over once: the Live socket that sends it takes the
/// bytes, so a long spoken reply does not keep its audio in the run's log (only its text).
#[derive(Debug, Clone, Default)]
pub struct AudioData(Arc<std::sync::Mutex<Option<Bytes>>>);

impl AudioData {
    pub fn new(b: Bytes) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(b))))
    }

    /// The bytes, the first time; `None` after.
    pub fn take(&self) -> Option<Bytes> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl PartialEq for AudioData {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A media attachment the run produced (e.g. TTS speech of the reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaOut {
    pub attachment_id: String,
    /// `image`, `record`, `video` or `file`.
    pub kind: String,
    pub stored_name: String,
    pub original_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// Always first: which session this run belongs to.
    SessionId {
        session_id: String,
    },
    UserMessageSaved {
        id: i64,
        created_at: Micros,
        checkpoint: String,
    },
    RunStarted,
    /// A streamed piece of the reply (or of its reasoning).
    Delta {
        text: String,
        reasoning: bool,
    },
    /// A whole message (non-streaming mode, or pushed into a session from outside).
    Message {
        text: String,
        reasoning: bool,
    },
    AgentStats {
        stats: AgentStats,
    },
    /// End of a streamed reply: the full text and reasoning.
    Complete {
        text: String,
        reasoning: String,
    },
    Media {
        media: MediaOut,
    },
    /// Follows each `Media`: the attachment can be downloaded through `GET /api/v1/file`.
    AttachmentSaved {
        attachment_id: String,
        kind: String,
    },
    /// One spoken sentence (Live): never persisted with the run.
    Audio {
        text: String,
        #[serde(skip)]
        audio: AudioData,
        mime: String,
    },
    /// TTS timing for Live metrics.
    TtsStats {
        first_frame_secs: f64,
        total_secs: f64,
        tts: String,
    },
    MessageSaved {
        id: i64,
        created_at: Micros,
        checkpoint: String,
    },
    /// A proactive message (IM API) pushed into the session while this run streams.
    Proactive {
        text: String,
        message_id: i64,
    },
    Error {
        message: String,
        code: String,
    },
    /// Always last.
    End,
}

impl AgentEvent {
    pub fn is_end(&self) -> bool {
        matches!(self, AgentEvent::End)
    }

    /// Whether a run's next event comes from a store write it makes right after this one: the
    /// question's save after `session_id`, the reply's after `complete`.
    pub fn precedes_save(&self) -> bool {
        matches!(self, AgentEvent::SessionId { .. } | AgentEvent::Complete { .. })
    }

    /// Whether a run waits for the model after this event.
    pub fn precedes_model(&self) -> bool {
        matches!(self, AgentEvent::RunStarted)
    }
}

/// An event and its sequence number within its run.
pub type SeqEvent = (u64, Arc<AgentEvent>);

/// How a run log is stored: a non-reasoning delta — most of every log — is a bare JSON string;
/// every other event is its tagged object. A 20-token reply then fits one database page.
#[derive(Serialize)]
#[serde(untagged)]
enum StoredRef<'a> {
    Delta(&'a str),
    Event(&'a AgentEvent),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Delta(String),
    Event(AgentEvent),
}

pub fn encode_log(events: &[Arc<AgentEvent>]) -> serde_json::Result<String> {
    let stored: Vec<StoredRef<'_>> = events
        .iter()
        .map(|e| match &**e {
            AgentEvent::Delta { text, reasoning: false } => StoredRef::Delta(text),
            other => StoredRef::Event(other),
        })
        .collect();
    serde_json::to_string(&stored)
}

pub fn decode_log(s: &str) -> serde_json::Result<Vec<AgentEvent>> {
    let stored: Vec<Stored> = serde_json::from_str(s)?;
    Ok(stored
        .into_iter()
        .map(|e| match e {
            Stored::Delta(text) => AgentEvent::Delta { text, reasoning: false },
            Stored::Event(ev) => ev,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_logs_round_trip_and_old_logs_still_read() {
        let events: Vec<Arc<AgentEvent>> = vec![
            Arc::new(AgentEvent::SessionId { session_id: "s".into() }),
            Arc::new(AgentEvent::Delta { text: "tok0 ".into(), reasoning: false }),
            Arc::new(AgentEvent::Delta { text: "hmm".into(), reasoning: true }),
            Arc::new(AgentEvent::Complete { text: "tok0 ".into(), reasoning: "hmm".into() }),
            Arc::new(AgentEvent::End),
        ];
        let s = encode_log(&events).unwrap();
        assert!(s.contains(r#""tok0 ""#) && !s.contains(r#""text":"tok0 ","reasoning":false"#), "{s}");
        let back = decode_log(&s).unwrap();
        assert_eq!(back, events.iter().map(|e| (**e).clone()).collect::<Vec<_>>());
        let old = serde_json::to_string(&events.iter().map(|e| &**e).collect::<Vec<_>>()).unwrap();
        assert_eq!(decode_log(&old).unwrap(), back);
    }
}
