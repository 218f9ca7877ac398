//! Agent profiles (AstrBot calls them configs): system prompt, provider, model, history depth,
//! streaming default, TTS. Defined in `[[profiles]]`; with none configured there is one built-in
//! profile `default`. The id `default` always names the default profile.

use std::sync::Arc;

use crate::config::Config;

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub system_prompt: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub history_turns: u32,
    pub streaming: bool,
    pub tts: bool,
    pub show_reasoning: bool,
    pub is_default: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LookupError {
    NotFound,
    Empty,
    Ambiguous,
}

#[derive(Debug, Clone)]
pub struct Profiles {
    list: Vec<Arc<Profile>>,
    default_idx: usize,
}

pub const DEFAULT_ID: &str = "default";

impl Profiles {
    pub fn from_config(cfg: &Config) -> Self {
        if cfg.profiles.is_empty() {
            let p = Profile {
                id: DEFAULT_ID.into(),
                name: DEFAULT_ID.into(),
                system_prompt: String::new(),
                provider: None,
                model: None,
                history_turns: 10,
                streaming: true,
                tts: false,
                show_reasoning: true,
                is_default: true,
            };
            return Self { list: vec![Arc::new(p)], default_idx: 0 };
        }
        let default_idx = cfg.profiles.iter().position(|p| p.default).unwrap_or(0);
        let list = cfg
            .profiles
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Arc::new(Profile {
                    id: p.id.clone(),
                    name: p.name.clone().unwrap_or_else(|| p.id.clone()),
                    system_prompt: p.system_prompt.clone(),
                    provider: p.provider.clone(),
                    model: p.model.clone(),
                    history_turns: p.history_turns,
                    streaming: p.streaming,
                    tts: p.tts,
                    show_reasoning: p.show_reasoning,
                    is_default: i == default_idx,
                })
            })
            .collect();
        Self { list, default_idx }
    }

    pub fn default_profile(&self) -> &Arc<Profile> {
        &self.list[self.default_idx]
    }

    /// By id; `default` names the default profile.
    pub fn get(&self, id: &str) -> Option<&Arc<Profile>> {
        self.list.iter().find(|p| p.id == id).or_else(|| (id == DEFAULT_ID).then(|| self.default_profile()))
    }

    /// The name `GET /api/v1/configs` shows: AstrBot always lists its default config as
    /// `default`, whatever it is called; the others by their display name.
    pub fn listed_name<'a>(&self, p: &'a Profile) -> &'a str {
        if p.is_default { DEFAULT_ID } else { &p.name }
    }

    /// By the name the listing shows (names need not be unique).
    pub fn by_name(&self, name: &str) -> Result<&Arc<Profile>, LookupError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(LookupError::Empty);
        }
        let mut hits = self.list.iter().filter(|p| self.listed_name(p) == name);
        match (hits.next(), hits.next()) {
            (Some(p), None) => Ok(p),
            (Some(_), Some(_)) => Err(LookupError::Ambiguous),
            (None, _) => Err(LookupError::NotFound),
        }
    }

    /// The profile's provider, else the default one.
    pub fn provider_for<'a>(
        &self,
        profile: &Profile,
        providers: &'a crate::providers::Providers,
    ) -> Option<&'a Arc<crate::providers::llm::OpenAiProvider>> {
        profile.provider.as_deref().and_then(|id| providers.llm(id)).or_else(|| providers.default_llm())
    }

    /// Whether a profile chooses this model.
    pub fn names_model(&self, model: &str) -> bool {
        self.list.iter().any(|p| p.model.as_deref() == Some(model))
    }

    /// All profiles with the default last, as AstrBot lists configs.
    pub fn listing(&self) -> Vec<&Arc<Profile>> {
        let mut v: Vec<&Arc<Profile>> = self.list.iter().filter(|p| !p.is_default).collect();
        v.push(self.default_profile());
        v
    }
}
