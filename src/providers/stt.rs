//! Speech to text: the [`Stt`] trait, an OpenAI-compatible `/audio/transcriptions` client and the
//! offline `pocketsphinx` recogniser.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};

use crate::audio::wav;
use crate::config::SttConfig;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SttError {
    #[error("STT provider failed: {0}")]
    Failed(String),
    #[error("STT provider timed out")]
    Timeout,
    #[error("{0}")]
    Unsupported(String),
}

impl SttError {
    /// The class of failure, as `astrgate_upstream_errors_total{kind}` names it; `None` for
    /// audio the provider cannot take (the client's, not the provider's failure).
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            SttError::Failed(_) => Some("failed"),
            SttError::Timeout => Some("timeout"),
            SttError::Unsupported(_) => None,
        }
    }

    /// What a client is told: the provider's own text stays in the log. `Unsupported` describes
    /// the client's audio, so it is shown.
    pub fn public_message(&self) -> String {
        match self {
            SttError::Failed(_) => "the speech-to-text provider failed".into(),
            SttError::Timeout => "the speech-to-text provider timed out".into(),
            SttError::Unsupported(m) => m.clone(),
        }
    }
}

/// Transcribes one audio file.
#[async_trait]
pub trait Stt: Send + Sync + 'static {
    /// Provider type as reported in Live metrics (`openai`, `pocketsphinx`).
    fn name(&self) -> &str;
    async fn transcribe(&self, audio: Bytes, filename: &str, mime: &str) -> Result<String, SttError>;
}

pub struct OpenAiStt {
    url: String,
    api_key: Option<SecretString>,
    model: String,
    client: reqwest::Client,
    timeout: Duration,
}

impl OpenAiStt {
    pub fn new(cfg: &SttConfig, base_url: &str) -> Result<Self, reqwest::Error> {
        Ok(Self {
            url: format!("{}/audio/transcriptions", base_url.trim_end_matches('/')),
            api_key: cfg.api_key.clone(),
            model: cfg.model.clone().unwrap_or_else(|| "whisper-1".into()),
            client: reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?,
            timeout: Duration::from_secs(cfg.timeout_secs),
        })
    }
}

#[async_trait]
impl Stt for OpenAiStt {
    fn name(&self) -> &str {
        "openai"
    }
    async fn transcribe(&self, audio: Bytes, filename: &str, mime: &str) -> Result<String, SttError> {
        let part = reqwest::multipart::Part::stream(audio)
            .file_name(filename.to_string())
            .mime_str(mime)
            .map_err(|e| SttError::Failed(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .part("file", part)
            .text("model", self.model.clone())
            .text("response_format", "json");
        let mut rb = self.client.post(&self.url).multipart(form);
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k.expose_secret());
        }
        let work = async {
            let res = rb.send().await.map_err(|e| SttError::Failed(e.without_url().to_string()))?;
            let status = res.status();
            let body = res.bytes().await.map_err(|e| SttError::Failed(e.without_url().to_string()))?;
            if !status.is_success() {
                let msg = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
                return Err(SttError::Failed(format!("HTTP {}: {msg}", status.as_u16())));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| SttError::Failed(format!("bad answer: {e}")))?;
            Ok(v["text"].as_str().unwrap_or_default().trim().to_string())
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| SttError::Timeout)?
    }
}

/// `pocketsphinx_continuous` (Debian `pocketsphinx` + `pocketsphinx-en-us`). Takes WAV input,
/// converts it to 16 kHz mono, and runs the recogniser on a temporary file.
pub struct PocketSphinx {
    command: String,
    tmp_dir: PathBuf,
    timeout: Duration,
}

impl PocketSphinx {
    pub fn new(command: String, tmp_dir: PathBuf, timeout: Duration) -> Self {
        Self { command, tmp_dir, timeout }
    }
}

/// Longest audio handed to the offline recogniser.
const MAX_SECONDS: f64 = 600.0;

/// Removes a temporary file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[async_trait]
impl Stt for PocketSphinx {
    fn name(&self) -> &str {
        "pocketsphinx"
    }
    async fn transcribe(&self, audio: Bytes, _filename: &str, _mime: &str) -> Result<String, SttError> {
        let parsed = wav::parse(&audio)
            .map_err(|e| SttError::Unsupported(format!("pocketsphinx needs 16-bit PCM WAV audio: {e}")))?;
        if parsed.duration_secs() > MAX_SECONDS {
            return Err(SttError::Unsupported(format!("audio longer than {MAX_SECONDS} s cannot be transcribed")));
        }
        let pcm = wav::to_mono(&parsed, 16_000);
        let file = wav::pcm16_to_wav(&wav::samples_to_bytes(&pcm), 16_000, 1);
        tokio::fs::create_dir_all(&self.tmp_dir).await.map_err(|e| SttError::Failed(e.to_string()))?;
        let tmp = TempFile(self.tmp_dir.join(format!("stt-{}.wav", uuid::Uuid::new_v4())));
        tokio::fs::write(&tmp.0, &file).await.map_err(|e| SttError::Failed(e.to_string()))?;
        let work = tokio::process::Command::new(&self.command)
            .arg("-infile")
            .arg(&tmp.0)
            .args(["-logfn", "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| SttError::Timeout)?
            .map_err(|e| SttError::Failed(format!("cannot run {}: {e}", self.command)))?;
        if !out.status.success() {
            return Err(SttError::Failed(format!("pocketsphinx exited with {}", out.status)));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "))
    }
}
