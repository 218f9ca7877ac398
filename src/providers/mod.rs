//! External model providers: LLM (OpenAI-compatible chat completions), and later STT and TTS.
//! These are the only paid services; tests stand them in with local fake servers.

pub mod llm;
pub mod stt;
pub mod tts;

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use llm::OpenAiProvider;

/// The configured providers, built once at start.
pub struct Providers {
    llm: Vec<Arc<OpenAiProvider>>,
    default_llm: Option<usize>,
    stt: Option<Arc<dyn stt::Stt>>,
    tts: Option<Arc<dyn tts::Tts>>,
}

impl Providers {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let llm = cfg
            .providers
            .iter()
            .map(|p| OpenAiProvider::new(p).map(Arc::new).with_context(|| format!("provider {}", p.id)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let default_llm = cfg.providers.iter().position(|p| p.default).or(if llm.is_empty() { None } else { Some(0) });
        Ok(Self { llm, default_llm, stt: None, tts: None })
    }

    pub fn llm(&self, id: &str) -> Option<&Arc<OpenAiProvider>> {
        self.llm.iter().find(|p| p.id == id)
    }

    pub fn default_llm(&self) -> Option<&Arc<OpenAiProvider>> {
        self.default_llm.map(|i| &self.llm[i])
    }

    pub fn stt(&self) -> Option<&Arc<dyn stt::Stt>> {
        self.stt.as_ref()
    }

    pub fn tts(&self) -> Option<&Arc<dyn tts::Tts>> {
        self.tts.as_ref()
    }
}
