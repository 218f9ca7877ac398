//! [`AgentEvent`]: the one internal event type of a run. Each front door renders it into its own
//! wire shape (AstrBot SSE JSON, WebSocket frames, Live frames, compat APIs).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::Micros;

/// AstrBot's `agent_stats` payload.
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
        audio: Bytes,
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
}

/// An event and its sequence number within its run.
pub type SeqEvent = (u64, Arc<AgentEvent>);
