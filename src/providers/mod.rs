//! External model providers: LLM (OpenAI-compatible chat completions), and later STT and TTS.
//! These are the only paid services; tests stand them in with local fake servers.

pub mod keys;
pub mod llm;
pub mod sse_limit;
pub mod stt;
pub mod tts;

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use llm::{Endpoint, OpenAiProvider};

/// The configured providers, built once at start.
pub struct Providers {
    llm: Vec<Arc<OpenAiProvider>>,
    default_llm: Option<usize>,
    stt: Option<Arc<dyn stt::Stt>>,
    tts: Option<Arc<dyn tts::Tts>>,
}

impl Providers {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let endpoints = cfg
            .providers
            .iter()
            .map(|p| Endpoint::new(p).map(Arc::new).with_context(|| format!("provider {}", p.id)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Each provider with its own fallbacks (the endpoints are shared: one key state each).
        let llm = cfg
            .providers
            .iter()
            .zip(&endpoints)
            .map(|(p, ep)| {
                let fallbacks = p
                    .fallbacks
                    .iter()
                    .map(|f| endpoints.iter().find(|e| &e.id == f).cloned().with_context(|| format!("fallback {f}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(Arc::new(OpenAiProvider::with_fallbacks(ep.clone(), fallbacks)))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let default_llm = cfg.providers.iter().position(|p| p.default).or(if llm.is_empty() { None } else { Some(0) });
        let stt = build_stt(cfg)?.map(|s| Arc::new(Counted(s)) as Arc<dyn stt::Stt>);
        let tts = build_tts(cfg)?.map(|t| Arc::new(Counted(t)) as Arc<dyn tts::Tts>);
        Ok(Self { llm, default_llm, stt, tts })
    }

    pub fn llm(&self, id: &str) -> Option<&Arc<OpenAiProvider>> {
        self.llm.iter().find(|p| p.id == id)
    }

    /// Every configured LLM provider, in configuration order.
    pub fn llm_all(&self) -> &[Arc<OpenAiProvider>] {
        &self.llm
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

/// A speech provider whose failures are counted in `astrgate_upstream_errors_total`, under its
/// role and type (`stt:openai`, `stt:pocketsphinx`, `tts:espeak-ng`).
struct Counted<T: ?Sized>(Arc<T>);

#[async_trait::async_trait]
impl stt::Stt for Counted<dyn stt::Stt> {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn transcribe(&self, audio: bytes::Bytes, filename: &str, mime: &str) -> Result<String, stt::SttError> {
        let r = self.0.transcribe(audio, filename, mime).await;
        if let Some(kind) = r.as_ref().err().and_then(stt::SttError::kind) {
            crate::metrics::upstream_error(&format!("stt:{}", self.0.name()), kind);
        }
        r
    }
}

#[async_trait::async_trait]
impl tts::Tts for Counted<dyn tts::Tts> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn mime(&self) -> &str {
        self.0.mime()
    }
    async fn synthesize(&self, text: &str) -> Result<bytes::Bytes, tts::TtsError> {
        let r = self.0.synthesize(text).await;
        if let Err(e) = &r {
            crate::metrics::upstream_error(&format!("tts:{}", self.0.name()), e.kind());
        }
        r
    }
}

/// Finds an executable on PATH.
fn find_program(name: &str) -> Option<String> {
    if name.contains('/') {
        return std::path::Path::new(name).is_file().then(|| name.to_string());
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
        .map(|p| p.display().to_string())
}

const POCKETSPHINX: &str = "pocketsphinx_continuous";
const POCKETSPHINX_MODEL: &str = "/usr/share/pocketsphinx/model/en-us/en-us";

/// `[stt]`, or pocketsphinx when nothing is configured and it is installed.
fn build_stt(cfg: &Config) -> anyhow::Result<Option<Arc<dyn stt::Stt>>> {
    let tmp = cfg.data_dir.join("tmp");
    let Some(c) = &cfg.stt else {
        let auto = find_program(POCKETSPHINX).filter(|_| std::path::Path::new(POCKETSPHINX_MODEL).is_dir());
        return Ok(auto.map(|cmd| {
            Arc::new(stt::PocketSphinx::new(cmd, tmp, std::time::Duration::from_secs(60))) as Arc<dyn stt::Stt>
        }));
    };
    let timeout = std::time::Duration::from_secs(c.timeout_secs);
    Ok(match c.kind.as_str() {
        "openai" => {
            let url = c.base_url.as_deref().context("stt.base_url is required")?;
            Some(Arc::new(stt::OpenAiStt::new(c, url)?))
        }
        "pocketsphinx" => {
            let cmd = c.command.clone().unwrap_or_else(|| POCKETSPHINX.into());
            let cmd = find_program(&cmd).with_context(|| format!("stt: program {cmd} not found"))?;
            Some(Arc::new(stt::PocketSphinx::new(cmd, tmp, timeout)))
        }
        _ => None,
    })
}

/// `[tts]`, or espeak-ng when nothing is configured and it is installed.
fn build_tts(cfg: &Config) -> anyhow::Result<Option<Arc<dyn tts::Tts>>> {
    let Some(c) = &cfg.tts else {
        return Ok(find_program("espeak-ng").map(|cmd| {
            Arc::new(tts::EspeakTts::new(cmd, None, std::time::Duration::from_secs(60))) as Arc<dyn tts::Tts>
        }));
    };
    let timeout = std::time::Duration::from_secs(c.timeout_secs);
    Ok(match c.kind.as_str() {
        "openai" => {
            let url = c.base_url.as_deref().context("tts.base_url is required")?;
            Some(Arc::new(tts::OpenAiTts::new(c, url)?))
        }
        "espeak-ng" => {
            let cmd = c.command.clone().unwrap_or_else(|| "espeak-ng".into());
            let cmd = find_program(&cmd).with_context(|| format!("tts: program {cmd} not found"))?;
            Some(Arc::new(tts::EspeakTts::new(cmd, c.voice.clone(), timeout)))
        }
        _ => None,
    })
}
