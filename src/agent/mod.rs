//! The agent: the turn service every front door calls ([`turn`]), the run task and its replay
//! log ([`runs`], [`pipeline`]), sessions ([`sessions`]), proactive messages ([`proactive`]),
//! the Live turn ([`live`]), stateless completions, speech and transcription ([`completion`],
//! [`stateless_audio`]), speech in and out ([`stt`], [`audio`]), and what they are made of
//! (profiles, input, prompts, history).
//! Nothing here imports axum or knows a wire format; front doors render [`events::AgentEvent`]
//! and map the typed [`errors`].

pub mod audio;
pub mod chatui;
pub mod checkpoint;
pub mod cluster;
pub mod compat;
pub mod completion;
pub mod errors;
pub mod events;
pub mod history;
pub mod input;
pub mod live;
pub mod media;
pub mod metering;
pub mod pipeline;
pub mod proactive;
pub mod profiles;
pub mod prompt;
pub mod runs;
pub mod session;
pub mod sessions;
pub mod stateless_audio;
pub mod stt;
pub mod turn;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::providers::Providers;
use crate::store::Store;
use pipeline::Turn;
use profiles::Profiles;
use runs::{RunHandle, RunRegistry, StartError};

/// The agent service shared by every front door.
pub struct Agent {
    pub store: Arc<dyn Store>,
    pub runs: RunRegistry,
    pub providers: Arc<Providers>,
    pub profiles: Arc<Profiles>,
    /// Builds the model's view of a user message.
    pub prompt: Arc<prompt::PromptBuilder>,
    /// Live subscribers of sessions (proactive pushes).
    pub bus: Arc<crate::bus::SessionBus>,
    /// Cluster mode (`redis_url`): session leases, run streams and notices shared with the
    /// other instances; `None` for a single instance.
    pub cluster: Option<Arc<crate::bus::cluster::Cluster>>,
    /// Configured outbound platforms by id.
    pub platforms: Arc<std::collections::HashMap<String, crate::platforms::webhook::Webhook>>,
    /// `[compat] profile`.
    pub compat_profile_id: Option<String>,
    /// `[live] min_sentence_chars`: the shortest sentence handed to TTS.
    pub min_sentence_chars: usize,
    pub max_events: usize,
    /// Text bytes one run may stream (`[runs] max_log_bytes`).
    pub max_log_bytes: usize,
    /// Runs active at once (`[runs] max_active`).
    pub max_active: usize,
    /// Decoding voice for STT and encoding speech, on a bounded blocking pool.
    pub audio: audio::AudioCodecs,
    /// Where attachment bytes live (generated media, such as spoken replies, included).
    pub blobs: Arc<crate::attachments::Blobs>,
    /// Per-key limits and usage.
    pub governor: crate::governance::Governor,
    pub tasks: TaskTracker,
    /// Runs hold child tokens: shutdown cancels them all.
    pub shutdown: CancellationToken,
}

impl Agent {
    /// This instance's id in cluster mode; `None` for a single instance.
    pub fn instance_id(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.instance_id().to_string())
    }

    /// Waits (up to `limit`) while the session's active run is one that was cancelled and is
    /// only saving what it had; a run still answering leaves the session busy at once.
    pub async fn settle(&self, session_id: &str, limit: std::time::Duration) {
        let Some(run) = self.runs.active_for_session(session_id) else {
            if self.cluster.is_some() {
                self.settle_remote(session_id, limit).await;
            }
            return;
        };
        if !run.cancel.is_cancelled() {
            return;
        }
        let mut sub = run.subscribe(u64::MAX);
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(limit, async {
            while sub.recv(&mut sink).await {
                sink.clear();
            }
        })
        .await;
    }

    /// Registers and starts a run; fails when the session already has one (on any instance,
    /// in cluster mode) or too many runs are active.
    pub async fn start(self: &Arc<Self>, turn: Turn) -> Result<Arc<RunHandle>, StartError> {
        let handle = Arc::new(RunHandle::new(
            turn.run_id.clone(),
            turn.session_id.clone(),
            turn.username.clone(),
            turn.parent_cancel.as_ref().unwrap_or(&self.shutdown).child_token(),
            self.max_events,
            self.max_log_bytes,
        ));
        self.runs.register(handle.clone(), self.max_active)?;
        if let Some(c) = &self.cluster {
            // This instance's registry is checked first (no round trip when it is busy here).
            if c.acquire(&turn.session_id, &turn.run_id).await == crate::bus::cluster::Lease::Busy {
                self.runs.remove(&turn.run_id);
                return Err(StartError::Busy);
            }
            if turn.persist_events {
                self.publish_events(c, &handle);
            }
        }
        handle.push(events::AgentEvent::SessionId { session_id: turn.session_id.clone() });
        let agent = self.clone();
        let h = handle.clone();
        self.tasks.spawn(async move { pipeline::run(agent, turn, h).await });
        Ok(handle)
    }
}
