//! Text to speech: the [`Tts`] trait and its providers.

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TtsError {
    #[error("TTS provider failed: {0}")]
    Failed(String),
    #[error("TTS provider timed out")]
    Timeout,
}

/// Turns one piece of text into one complete audio file.
#[async_trait]
pub trait Tts: Send + Sync + 'static {
    /// Provider type as reported in Live metrics (`openai`, `espeak-ng`).
    fn name(&self) -> &str;
    /// MIME type of the audio produced (`audio/wav`, `audio/mpeg`).
    fn mime(&self) -> &str;
    async fn synthesize(&self, text: &str) -> Result<Bytes, TtsError>;
}
