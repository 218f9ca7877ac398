//! The turn service: the one place where a turn of any front door is checked and started.
//!
//! A front door parses its own wire format into a [`TurnRequest`] (the caller, the username it
//! acts as, the session, the input, the profile/provider/model selection, the kind of turn) and
//! calls [`Agent::begin_turn`]. This checks, in AstrBot's order and with its texts, the session
//! (ownership, claim), the profile, provider and model, the content; resolves attachments (the
//! caller's own only), transcribes voice parts, builds the model's input; waits for a stopped run
//! of the session to finish saving; and only then writes anything — the session, its profile
//! binding — and starts the run. It answers the run or a [`TurnError`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Agent;
use super::errors::{SessionError, TurnError};
use super::input::{self, EMPTY_MESSAGE, Part, Resolved};
use super::pipeline::{Speech, Turn};
use super::profiles::{LookupError, Profile};
use super::runs::RunHandle;
use crate::auth::Caller;
use crate::providers::llm::OpenAiProvider;
use crate::store::{MessageRecord, SessionRecord};

/// How long a new turn waits for a stopped run of its session to finish saving.
pub const SETTLE: Duration = Duration::from_secs(5);
const TITLE_CHARS: usize = 40;

/// Which session a turn goes to.
#[derive(Debug, Clone)]
pub enum SessionTarget {
    /// A session of the acting user: `id` as the client named it (checked with
    /// [`super::session::check_client_id`]), or the server's `default`, or a new uuid. Another
    /// user's session is refused; an unowned one is claimed; a missing one is created on
    /// `new_platform`.
    Owned { id: Option<String>, default: Option<String>, new_platform: &'static str },
    /// A session a compat API keeps under its own prefix and platform: created when missing,
    /// refused when another API made it.
    Compat { id: String, platform: &'static str },
}

/// What the user said.
#[derive(Debug, Clone)]
pub enum TurnInput {
    /// AstrBot message parts: resolved against the store (replies of this session, the
    /// caller's own attachments), voice records transcribed, turned into the model's content.
    Parts(Vec<Part>),
    /// Built by the front door: the stored message and the model's content.
    Built { stored: Value, model: Value, title: Option<String> },
}

/// A profile chosen by `config_id` or `config_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileChoice {
    Id(String),
    Name(String),
}

/// Which profile a turn uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSelect {
    /// The session's bound profile, else the default.
    Session,
    /// Chosen by the request, and bound to the session for later turns.
    Chosen(ProfileChoice),
    /// The default profile.
    Default,
    /// `[compat] profile`, else the default.
    Compat,
}

/// What kind of turn, which decides the run's settings.
pub enum TurnKind {
    /// A chat turn (SSE, chat sockets): the profile decides streaming (unless the request
    /// does), reasoning and spoken replies; the run log is kept for resumption.
    Chat,
    /// A Live voice turn: streamed, spoken sentence by sentence, cancelled with the socket's
    /// turn token. `history` may be read while STT ran.
    Live { speech: Option<Speech>, cancel: CancellationToken, history: Option<Vec<MessageRecord>> },
    /// A compat API turn: streamed; `{{key}}` placeholders of the system prompt filled from
    /// `vars`.
    Compat { vars: Vec<(String, String)> },
}

/// One turn, parsed and type-checked by its front door.
pub struct TurnRequest {
    pub caller: Caller,
    /// The user the turn acts as ([`Caller::act_as`]).
    pub username: String,
    pub session: SessionTarget,
    pub input: TurnInput,
    pub profile: ProfileSelect,
    /// `selected_provider`, trimmed, non-empty.
    pub provider: Option<String>,
    /// `selected_model`, trimmed, non-empty.
    pub model: Option<String>,
    /// `enable_streaming` when the request says.
    pub streaming: Option<bool>,
    pub kind: TurnKind,
    /// The question is already stored with this checkpoint (an edited question, a
    /// regenerated answer: AstrBot's `_skip_user_history` + `_llm_checkpoint_id`): it is not
    /// saved again nor sent twice, and the answer takes the same checkpoint.
    pub reuse_checkpoint: Option<String>,
    /// The front door, as the metrics name it.
    pub door: crate::metrics::Door,
}

/// A started turn.
pub struct Started {
    pub run: Arc<RunHandle>,
    pub profile: Arc<Profile>,
    /// The model asked.
    pub model: String,
}

/// What [`Agent::begin_turn`] decided before writing anything.
struct Plan {
    session_id: String,
    existing: Option<SessionRecord>,
    claim: bool,
    /// The id was made here: no one else can have the session, so it is created with the turn's
    /// first write instead of a write of its own.
    generated: bool,
}

impl Agent {
    /// Checks and starts a turn (see the module docs).
    pub async fn begin_turn(self: &Arc<Self>, req: TurnRequest) -> Result<Started, TurnError> {
        let TurnRequest {
            caller,
            username,
            session,
            input,
            profile: select,
            provider,
            model,
            streaming,
            kind,
            reuse_checkpoint,
            door,
        } = req;
        let accepted = std::time::Instant::now();
        let plan = self.plan_session(&session, &username).await?;
        let chosen = match &select {
            ProfileSelect::Chosen(c) => Some(self.choose_profile(c)?),
            _ => None,
        };
        let profile = self.profile_of(&select, chosen.as_ref(), plan.existing.as_ref());
        if let TurnInput::Parts(parts) = &input
            && !input::has_content(parts)
        {
            return Err(TurnError::Invalid(EMPTY_MESSAGE.into()));
        }
        let provider = self.provider_of(provider.as_deref(), &profile)?;
        let model = model.or_else(|| profile.model.clone()).unwrap_or_else(|| provider.model.clone());
        // The key's run slot and day's tokens, before any transcription or storage.
        let meter = self.admit_run(&caller).await?;
        let (stored, model_input, title) = match input {
            TurnInput::Parts(parts) => {
                let resolved =
                    input::resolve(self.store.as_ref(), &self.blobs, &caller, &plan.session_id, parts).await?;
                let transcripts = self.transcribe_records(&caller, &resolved).await?;
                // The provider is known: it decides whether PDFs go as text or as files.
                let model_input = self.prompt.user_content(&resolved, &transcripts, provider.pdf_input).await.map_err(
                    |e| match e {
                        super::prompt::PromptError::Invalid(m) => TurnError::Invalid(m),
                        super::prompt::PromptError::Busy(m) => TurnError::Overloaded(m),
                        other => TurnError::Internal(other.to_string()),
                    },
                )?;
                (input::stored_user_content(&resolved), model_input, title_of(&resolved))
            }
            TurnInput::Built { stored, model, title } => (stored, model, title),
        };

        // Everything is valid. A run of this session that was just stopped may still be saving
        // its partial reply: let it finish, then the session must be free.
        self.settle(&plan.session_id, SETTLE).await;
        if self.session_busy(&plan.session_id).await {
            return Err(SessionError::Busy.into());
        }
        let chosen_id = chosen.as_ref().map(|p| (!p.is_default).then(|| p.id.clone()));
        let (fresh, new_session) = match (&plan.existing, &session) {
            (None, SessionTarget::Owned { new_platform, .. }) if plan.generated => {
                let rec = SessionRecord {
                    display_name: title,
                    profile_id: chosen_id.flatten(),
                    ..SessionRecord::new(&plan.session_id, new_platform, &username)
                };
                (true, Some(rec))
            }
            _ => {
                let fresh = self.write_session(&session, &username, &plan, title).await?;
                if let Some(id) = chosen_id {
                    self.store.set_session_profile(&plan.session_id, id.as_deref()).await?;
                }
                (fresh, None)
            }
        };
        let platform_id = match (&plan.existing, &session) {
            (Some(s), _) => s.platform_id.clone(),
            (None, SessionTarget::Owned { new_platform, .. }) => new_platform.to_string(),
            (None, SessionTarget::Compat { platform, .. }) => platform.to_string(),
        };
        let base = Turn {
            run_id: uuid::Uuid::now_v7().to_string(),
            session_id: plan.session_id,
            platform_id,
            owner: caller.owner_tag(),
            username,
            user_content: reuse_checkpoint.is_none().then_some(stored),
            checkpoint: reuse_checkpoint,
            model_input,
            system_prompt: profile.system_prompt.clone(),
            history_turns: profile.history_turns,
            fresh_session: fresh,
            new_session,
            prefetched_history: None,
            provider,
            model: model.clone(),
            streaming: true,
            show_reasoning: false,
            persist_events: false,
            speech: None,
            speak_reply: None,
            parent_cancel: None,
            meter,
            door,
            accepted,
        };
        let turn = self.settings_for(kind, streaming, &profile, base);
        let run = self.start(turn).await?;
        Ok(Started { run, profile, model })
    }

    /// The session a turn goes to, checked but not written.
    async fn plan_session(&self, session: &SessionTarget, username: &str) -> Result<Plan, TurnError> {
        match session {
            SessionTarget::Owned { id, default, .. } => {
                let Some(id) = id.clone().or_else(|| default.clone()) else {
                    return Ok(Plan {
                        session_id: uuid::Uuid::now_v7().to_string(),
                        existing: None,
                        claim: false,
                        generated: true,
                    });
                };
                let existing = self.store.get_session(&id).await?;
                // A session made by an older proactive message has no owner yet: claimed below.
                let claim = existing.as_ref().is_some_and(|s| s.creator.is_empty());
                if existing.as_ref().is_some_and(|s| s.creator != username && !claim) {
                    return Err(SessionError::NotYours.into());
                }
                Ok(Plan { session_id: id, existing, claim, generated: false })
            }
            SessionTarget::Compat { id, platform } => {
                let existing = self.store.get_session(id).await?;
                if existing.as_ref().is_some_and(|s| &s.platform_id != platform) {
                    return Err(SessionError::NotYours.into());
                }
                Ok(Plan { session_id: id.clone(), existing, claim: false, generated: false })
            }
        }
    }

    /// Creates or claims the session; true when it was created for this turn.
    async fn write_session(
        &self,
        target: &SessionTarget,
        username: &str,
        plan: &Plan,
        title: Option<String>,
    ) -> Result<bool, TurnError> {
        if let Some(existing) = plan.existing.as_ref().filter(|_| !plan.claim) {
            // A session made empty (the ChatUI's "new session") is titled by its first message.
            if existing.display_name.is_none()
                && let Some(t) = &title
            {
                self.store.set_session_display_name(&plan.session_id, Some(t)).await?;
            }
            return Ok(false);
        }
        let created = match (&plan.existing, target) {
            (Some(_), _) => {
                if !self.store.claim_session(&plan.session_id, username).await? {
                    // Claimed concurrently: ownership decides.
                    self.owned_session(&plan.session_id, username).await?;
                }
                false
            }
            (None, SessionTarget::Owned { new_platform, .. }) => {
                let rec = SessionRecord {
                    display_name: title,
                    ..SessionRecord::new(&plan.session_id, new_platform, username)
                };
                let created = self.store.create_session(&rec).await?;
                if !created {
                    // Created concurrently by someone else: ownership decides.
                    self.owned_session(&plan.session_id, username).await?;
                }
                created
            }
            (None, SessionTarget::Compat { id, platform }) => {
                self.store.create_session(&SessionRecord::new(id, platform, username)).await?
            }
        };
        Ok(created)
    }

    /// `config_id` / `config_name`, with AstrBot's texts.
    fn choose_profile(&self, c: &ProfileChoice) -> Result<Arc<Profile>, TurnError> {
        match c {
            ProfileChoice::Id(id) => self
                .profiles
                .get(id.trim())
                .cloned()
                .ok_or_else(|| TurnError::Config(format!("config_id not found: {}", id.trim()))),
            ProfileChoice::Name(name) => match self.profiles.by_name(name) {
                Ok(p) => Ok(p.clone()),
                Err(LookupError::Empty) => Err(TurnError::Config("config_name is empty".into())),
                Err(LookupError::NotFound) => Err(TurnError::Config(format!("config_name not found: {}", name.trim()))),
                Err(LookupError::Ambiguous) => {
                    Err(TurnError::Config(format!("config_name is ambiguous, please use config_id: {}", name.trim())))
                }
            },
        }
    }

    fn profile_of(
        &self,
        select: &ProfileSelect,
        chosen: Option<&Arc<Profile>>,
        existing: Option<&SessionRecord>,
    ) -> Arc<Profile> {
        match (select, chosen) {
            (_, Some(p)) => p.clone(),
            (ProfileSelect::Session, None) => existing
                .and_then(|s| s.profile_id.as_deref())
                .and_then(|id| self.profiles.get(id))
                .unwrap_or_else(|| self.profiles.default_profile())
                .clone(),
            (ProfileSelect::Compat, None) => self.compat_profile().clone(),
            _ => self.profiles.default_profile().clone(),
        }
    }

    /// The profile of the compat APIs: `[compat] profile`, else the default profile.
    pub fn compat_profile(&self) -> &Arc<Profile> {
        self.compat_profile_id
            .as_deref()
            .and_then(|id| self.profiles.get(id))
            .unwrap_or_else(|| self.profiles.default_profile())
    }

    /// `selected_provider`, else the profile's provider, else the default one.
    fn provider_of(&self, selected: Option<&str>, profile: &Profile) -> Result<Arc<OpenAiProvider>, TurnError> {
        match selected {
            Some(id) => self
                .providers
                .llm(id)
                .cloned()
                .ok_or_else(|| TurnError::Invalid(format!("selected_provider not found: {id}"))),
            None => self.profiles.provider_for(profile, &self.providers).cloned().ok_or(TurnError::NoProvider),
        }
    }

    /// Fails early — before any decoding, STT or storage — when a compat turn could not start.
    pub async fn precheck_compat(&self, session_id: &str) -> Result<(), TurnError> {
        if self.profiles.provider_for(self.compat_profile(), &self.providers).is_none() {
            return Err(TurnError::NoProvider);
        }
        if self.session_busy(session_id).await {
            return Err(SessionError::Busy.into());
        }
        Ok(())
    }

    /// The run's settings for each kind of turn.
    fn settings_for(&self, kind: TurnKind, streaming: Option<bool>, profile: &Profile, base: Turn) -> Turn {
        match kind {
            TurnKind::Chat => Turn {
                streaming: streaming.unwrap_or(profile.streaming),
                show_reasoning: profile.show_reasoning,
                persist_events: true,
                speak_reply: if profile.tts { self.providers.tts().cloned() } else { None },
                ..base
            },
            TurnKind::Live { speech, cancel, history } => {
                Turn { speech, parent_cancel: Some(cancel), prefetched_history: history, fresh_session: false, ..base }
            }
            TurnKind::Compat { vars } => Turn {
                system_prompt: crate::compat::fill_placeholders(&profile.system_prompt, &vars),
                fresh_session: false,
                ..base
            },
        }
    }
}

/// A new session's title: the start of the first plain text.
fn title_of(parts: &[Resolved]) -> Option<String> {
    parts.iter().find_map(|p| match p {
        Resolved::Plain(t) if !t.trim().is_empty() => {
            Some(crate::util::truncate_chars(t.trim(), TITLE_CHARS).to_string())
        }
        _ => None,
    })
}

/// The title of a session that starts with `text`.
pub fn title_from_text(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| crate::util::truncate_chars(t, TITLE_CHARS).to_string())
}
