//! Text to speech: the [`Tts`] trait, an OpenAI-compatible `/audio/speech` client and the offline
//! `espeak-ng` program.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::TtsConfig;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TtsError {
    #[error("TTS provider failed: {0}")]
    Failed(String),
    #[error("TTS provider timed out")]
    Timeout,
}

impl TtsError {
    /// The class of failure, as `astrgate_upstream_errors_total{kind}` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            TtsError::Failed(_) => "failed",
            TtsError::Timeout => "timeout",
        }
    }

    /// What a client is told; the provider's own text stays in the log.
    pub fn public_message(&self) -> String {
        match self {
            TtsError::Failed(_) => "the text-to-speech provider failed".into(),
            TtsError::Timeout => "the text-to-speech provider timed out".into(),
        }
    }
}

/// Turns one piece of text into one complete audio file.
#[async_trait]
pub trait Tts: Send + Sync + 'static {
    /// Provider type as reported in Live metrics (`openai`, `espeak-ng`).
    fn name(&self) -> &str;
    /// MIME type of the audio produced (`audio/wav`).
    fn mime(&self) -> &str;
    async fn synthesize(&self, text: &str) -> Result<Bytes, TtsError>;
}

/// Largest text handed to one synthesis call.
const MAX_TEXT_CHARS: usize = 4096;

pub struct OpenAiTts {
    url: String,
    api_key: Option<SecretString>,
    model: String,
    voice: String,
    client: reqwest::Client,
    timeout: Duration,
}

impl OpenAiTts {
    pub fn new(cfg: &TtsConfig, base_url: &str) -> Result<Self, reqwest::Error> {
        Ok(Self {
            url: format!("{}/audio/speech", base_url.trim_end_matches('/')),
            api_key: cfg.api_key.clone(),
            model: cfg.model.clone().unwrap_or_else(|| "tts-1".into()),
            voice: cfg.voice.clone().unwrap_or_else(|| "alloy".into()),
            client: reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?,
            timeout: Duration::from_secs(cfg.timeout_secs),
        })
    }
}

#[async_trait]
impl Tts for OpenAiTts {
    fn name(&self) -> &str {
        "openai"
    }
    fn mime(&self) -> &str {
        "audio/wav"
    }
    async fn synthesize(&self, text: &str) -> Result<Bytes, TtsError> {
        let text = crate::util::truncate_chars(text, MAX_TEXT_CHARS);
        let mut rb = self
            .client
            .post(&self.url)
            .json(&json!({"model": self.model, "input": text, "voice": self.voice, "response_format": "wav"}));
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k.expose_secret());
        }
        let work = async {
            let res = rb.send().await.map_err(|e| TtsError::Failed(e.without_url().to_string()))?;
            let status = res.status();
            let body = res.bytes().await.map_err(|e| TtsError::Failed(e.without_url().to_string()))?;
            if !status.is_success() {
                let msg = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
                return Err(TtsError::Failed(format!("HTTP {}: {msg}", status.as_u16())));
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| TtsError::Timeout)?
    }
}

/// `espeak-ng --stdout --stdin`: the text goes through stdin (never the command line), the WAV
/// comes back on stdout. The process is killed if the synthesis is dropped.
pub struct EspeakTts {
    command: String,
    voice: String,
    timeout: Duration,
}

impl EspeakTts {
    pub fn new(command: String, voice: Option<String>, timeout: Duration) -> Self {
        Self { command, voice: voice.unwrap_or_else(|| "en-us".into()), timeout }
    }
}

#[async_trait]
impl Tts for EspeakTts {
    fn name(&self) -> &str {
        "espeak-ng"
    }
    fn mime(&self) -> &str {
        "audio/wav"
    }
    async fn synthesize(&self, text: &str) -> Result<Bytes, TtsError> {
        let text = crate::util::truncate_chars(text, MAX_TEXT_CHARS).to_string();
        let work = async {
            let mut child = tokio::process::Command::new(&self.command)
                .args(["--stdout", "--stdin", "-v", &self.voice])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| TtsError::Failed(format!("cannot run {}: {e}", self.command)))?;
            let mut stdin = child.stdin.take().ok_or_else(|| TtsError::Failed("no stdin".into()))?;
            let mut stdout = child.stdout.take().ok_or_else(|| TtsError::Failed("no stdout".into()))?;
            let writer = async move {
                stdin.write_all(text.as_bytes()).await?;
                stdin.shutdown().await
            };
            let mut audio = Vec::new();
            let (w, r) = tokio::join!(writer, stdout.read_to_end(&mut audio));
            w.map_err(|e| TtsError::Failed(e.to_string()))?;
            r.map_err(|e| TtsError::Failed(e.to_string()))?;
            let status = child.wait().await.map_err(|e| TtsError::Failed(e.to_string()))?;
            if !status.success() || audio.len() <= 44 {
                return Err(TtsError::Failed(format!("espeak-ng exited with {status}")));
            }
            // espeak-ng cannot seek stdout, so its header sizes are placeholders: make them true.
            crate::audio::wav::fix_header(&mut audio);
            Ok(Bytes::from(audio))
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| TtsError::Timeout)?
    }
}
