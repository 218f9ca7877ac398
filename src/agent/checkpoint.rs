//! Saving a reply while it streams, so that a crash (kill -9, power loss) loses at most about a
//! second of it.
//!
//! At most once per [`INTERVAL`], and only when the reply grew, the run writes its partial reply
//! as the bot message (`"streaming": true`, inserted the first time, updated after) and, for
//! runs kept for resumption, its event log as a `running` run. Both writes go through the
//! store's group commit, so a busy server pays for them in shared transactions, and a turn that
//! finishes within the first second writes nothing extra at all. At the end the message gets
//! its final content and the run its final log and status, in one write. After a crash, [`recover`] (at start) marks
//! what was left `running` or `streaming` as interrupted, keeping the text that was saved.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::events::{AgentEvent, encode_log};
use super::runs::RunHandle;
use crate::store::{Micros, NewMessage, ReplyMessage, ReplySave, RunClose, RunRecord, Store, StoreResult, now_micros};

/// How often a streaming reply is saved, at most.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The content of a bot message: `text`, plus reasoning when there is some.
pub fn bot_content(text: &str, reasoning: &str) -> Value {
    let mut content = json!({"type": "bot", "message": [{"type": "plain", "text": text}]});
    if !reasoning.is_empty() {
        content["reasoning"] = json!(reasoning);
    }
    content
}

/// The periodic saver of one run.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    tasks: tokio_util::task::TaskTracker,
    run: Arc<RunHandle>,
    platform_id: String,
    checkpoint: String,
    persist_events: bool,
    /// This instance's id in cluster mode: written on the run and on the streaming reply, so
    /// that recovery closes only what an instance that is gone left behind.
    instance: Option<String>,
    /// The reply message, once written: (id, created_at).
    pub message: Option<(i64, Micros)>,
    /// The first insert of the message, when the run was cancelled while it was under way: its
    /// id must be known before the final save, or the reply would be saved twice.
    pending: Option<tokio::task::JoinHandle<crate::store::StoreResult<(i64, Micros)>>>,
    saved_len: usize,
    /// The run log was written, closed, with the reply ([`Checkpointer::finish`]).
    pub run_closed: bool,
}

impl Checkpointer {
    pub fn new(
        store: Arc<dyn Store>,
        tasks: tokio_util::task::TaskTracker,
        run: Arc<RunHandle>,
        platform_id: &str,
        checkpoint: &str,
        persist_events: bool,
        instance: Option<String>,
    ) -> Self {
        Self {
            store,
            tasks,
            run,
            platform_id: platform_id.to_string(),
            checkpoint: checkpoint.to_string(),
            persist_events,
            instance,
            message: None,
            pending: None,
            saved_len: 0,
            run_closed: false,
        }
    }

    /// Saves the partial reply if it grew since the last save (the caller ticks every
    /// [`INTERVAL`]). A failed save is logged and the reply goes on streaming: the final save
    /// will report the failure.
    pub async fn tick(&mut self, text: &str, reasoning: &str) {
        let len = text.len() + reasoning.len();
        if len == self.saved_len {
            return;
        }
        self.saved_len = len;
        let mut content = bot_content(text, reasoning);
        content["streaming"] = json!(true);
        if let Some(i) = &self.instance {
            content["instance"] = json!(i);
        }
        if let Err(e) = self.save_message(&content).await {
            tracing::warn!(run.id = %self.run.run_id, error = %e, "saving the partial reply failed");
            return;
        }
        if self.persist_events {
            self.save_run("running").await;
        }
    }

    /// Writes the reply message: inserted the first time, updated after. Safe to cancel: an
    /// insert under way finishes on its own and is picked up by the next call.
    async fn save_message(&mut self, content: &Value) -> StoreResult<(i64, Micros)> {
        let Some((id, at)) = self.written().await? else {
            let msg = self.new_message(content.clone());
            let store = self.store.clone();
            self.pending = Some(self.tasks.spawn(async move { store.insert_message(&msg).await }));
            return self.settle_insert().await;
        };
        self.store.update_message(id, content).await?;
        Ok((id, at))
    }

    /// The reply message's id and creation time once it was written (waiting for an insert
    /// under way); `None` when it never was.
    async fn written(&mut self) -> StoreResult<Option<(i64, Micros)>> {
        match (self.message, &self.pending) {
            (Some(m), _) => Ok(Some(m)),
            (None, Some(_)) => self.settle_insert().await.map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The reply's final save: the message with `content` and, for a run kept for resumption,
    /// its log closed the way the run is about to end (`message_saved` with the reply's id, then
    /// `end`), both in one write. The caller then pushes those two events.
    pub async fn finish(&mut self, content: Value) -> StoreResult<(i64, Micros)> {
        let message = match self.written().await? {
            None => ReplyMessage::Insert(self.new_message(content)),
            Some((id, created_at)) => ReplyMessage::Update { id, created_at, content },
        };
        let run = self.persist_events.then(|| self.closing_run());
        let saved = self.store.save_reply(ReplySave { message, run }).await?;
        self.message = Some(saved);
        self.run_closed = self.persist_events;
        Ok(saved)
    }

    fn new_message(&self, content: Value) -> NewMessage {
        NewMessage {
            session_id: self.run.session_id.clone(),
            platform_id: self.platform_id.clone(),
            sender_id: "bot".into(),
            sender_name: "bot".into(),
            content,
            llm_checkpoint_id: Some(self.checkpoint.clone()),
        }
    }

    /// The run as it will be once `message_saved` and `end` are pushed.
    fn closing_run(&self) -> RunClose {
        let events = self.run.snapshot();
        let checkpoint = self.checkpoint.clone();
        RunClose {
            record: self.record(closed_status(&events), String::new()),
            log: Box::new(move |id, created_at| {
                let mut all = events.clone();
                all.push(Arc::new(AgentEvent::MessageSaved { id, created_at, checkpoint: checkpoint.clone() }));
                all.push(Arc::new(AgentEvent::End));
                encode_log(&all)
            }),
        }
    }

    /// Waits for the first insert of the message, if one is under way.
    async fn settle_insert(&mut self) -> crate::store::StoreResult<(i64, Micros)> {
        let Some(handle) = self.pending.as_mut() else {
            return self.message.ok_or_else(|| crate::store::StoreError::Io(std::io::Error::other("no reply message")));
        };
        let result = handle.await;
        self.pending = None;
        let saved = result.map_err(|e| crate::store::StoreError::Io(std::io::Error::other(e.to_string())))??;
        self.message = Some(saved);
        Ok(saved)
    }

    /// Writes the run's event log with `status`.
    fn record(&self, status: &str, events: String) -> RunRecord {
        RunRecord {
            run_id: self.run.run_id.clone(),
            session_id: self.run.session_id.clone(),
            username: self.run.username.clone(),
            status: status.into(),
            events,
            created_at: self.run.created_at,
            finished_at: now_micros(),
            message_id: self.message.map(|m| m.0),
            instance_id: self.instance.clone(),
        }
    }

    pub async fn save_run(&self, status: &str) {
        let events = self.run.snapshot();
        let json = match encode_log(&events) {
            Ok(j) => j,
            Err(e) => return tracing::warn!(run.id = %self.run.run_id, error = %e, "serialising the run log failed"),
        };
        let rec = self.record(status, json);
        if let Err(e) = self.store.insert_run(&rec).await {
            tracing::warn!(run.id = %self.run.run_id, error = %e, "saving the run log failed");
        }
    }
}

/// The status of a finished run with these events: `error` if one was an error, else `done`.
pub fn closed_status(events: &[Arc<AgentEvent>]) -> &'static str {
    if events.iter().any(|e| matches!(**e, AgentEvent::Error { .. })) { "error" } else { "done" }
}

/// Which in-flight work [`recover`] may close.
pub enum Scope<'a> {
    /// Everything (one instance, at start: nothing of its own is running yet).
    All,
    /// Cluster mode: only what instances outside `live` left, and only once it has not been
    /// saved since `idle_before` (a live instance saves a streaming reply every second).
    DeadInstances { live: &'a std::collections::HashSet<String>, idle_before: Micros },
}

impl Scope<'_> {
    fn closes(&self, instance: Option<&str>, saved_at: Micros) -> bool {
        match self {
            Scope::All => true,
            Scope::DeadInstances { live, idle_before } => {
                instance.is_none_or(|i| !live.contains(i)) && saved_at < *idle_before
            }
        }
    }
}

/// Closes what a crash left in flight. Replies still flagged `streaming` become `interrupted`;
/// each `running` run gets the end a stopped run would have had (`complete` with the saved text,
/// `message_saved`, `end`) and the status `interrupted`, so it can be resumed. Returns how many
/// runs were closed.
pub async fn recover(store: &dyn Store, scope: Scope<'_>) -> crate::store::StoreResult<usize> {
    let (runs, messages) = store.in_flight().await?;
    let mut replies = 0;
    for m in messages {
        let instance = m.content.get("instance").and_then(Value::as_str);
        if !scope.closes(instance, m.updated_at) {
            continue;
        }
        let mut content = m.content.clone();
        if let Some(map) = content.as_object_mut() {
            map.shift_remove("streaming");
            map.shift_remove("instance");
            map.insert("interrupted".into(), json!(true));
        }
        store.update_message(m.id, &content).await?;
        replies += 1;
    }
    let runs: Vec<_> = runs.into_iter().filter(|r| scope.closes(r.instance_id.as_deref(), r.finished_at)).collect();
    for mut run in runs.iter().cloned() {
        let mut events = super::events::decode_log(&run.events).unwrap_or_default();
        events.retain(|e| !e.is_end());
        let (mut text, mut reasoning) = (String::new(), String::new());
        for e in &events {
            if let AgentEvent::Delta { text: t, reasoning: r } = e {
                if *r { reasoning.push_str(t) } else { text.push_str(t) }
            }
        }
        events.push(AgentEvent::Complete { text, reasoning });
        if let Some(id) = run.message_id
            && let Ok(Some(m)) = store.get_message(id).await
        {
            let checkpoint = m.llm_checkpoint_id.unwrap_or_default();
            events.push(AgentEvent::MessageSaved { id, created_at: m.created_at, checkpoint });
        }
        events.push(AgentEvent::End);
        let events: Vec<Arc<AgentEvent>> = events.into_iter().map(Arc::new).collect();
        run.events = encode_log(&events)?;
        run.status = "interrupted".into();
        run.finished_at = now_micros();
        store.insert_run(&run).await?;
    }
    if !runs.is_empty() || replies > 0 {
        tracing::warn!(
            runs = runs.len(),
            replies,
            "closed runs left in flight by an instance that stopped (marked interrupted)"
        );
    }
    Ok(runs.len())
}
