//! Speech to text: the [`Stt`] trait and its providers.

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SttError {
    #[error("STT provider failed: {0}")]
    Failed(String),
    #[error("STT provider timed out")]
    Timeout,
}

/// Transcribes one audio file (WAV unless the provider says otherwise).
#[async_trait]
pub trait Stt: Send + Sync + 'static {
    /// Provider type as reported in Live metrics (`openai`, `pocketsphinx`).
    fn name(&self) -> &str;
    async fn transcribe(&self, audio: Bytes, filename: &str, mime: &str) -> Result<String, SttError>;
}
