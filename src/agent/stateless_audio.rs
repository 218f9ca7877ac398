//! Speech and transcription as stateless requests (the OpenAI-compatible `/v1/audio/*`): the same
//! conversion and providers as every other front door ([`super::audio`], [`super::stt`]),
//! counted against `[runs] max_active` while they run, like a stateless completion.

use bytes::Bytes;

use super::Agent;
use super::audio::SpeechError;
use super::errors::TurnError;
use crate::audio::codec::AudioFormat;
use crate::auth::Caller;

/// How synthesised speech is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechOut {
    /// A file in this format (wav, mp3, silk, amr).
    File(AudioFormat),
    /// Headerless 16-bit little-endian mono PCM at this rate.
    Pcm { rate: u32 },
}

/// Why speech could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SpeakError {
    /// Not admitted (too many runs).
    #[error(transparent)]
    Turn(#[from] TurnError),
    #[error(transparent)]
    Speech(#[from] SpeechError),
}

impl Agent {
    /// `text` spoken by the configured TTS provider, encoded as `out` asks.
    pub async fn speak_stateless(&self, caller: &Caller, text: &str, out: SpeechOut) -> Result<Bytes, SpeakError> {
        let _slot = self.admit_stateless(caller).await?;
        let tts = self.providers.tts().ok_or(SpeechError::NoTts)?;
        let audio = tts.synthesize(text).await.map_err(SpeechError::Tts)?;
        // Measured on the provider's WAV (other formats it may answer in are not measured).
        self.record_audio(caller, 0, super::metering::wav_ms(&audio));
        Ok(match out {
            SpeechOut::File(format) => self.audio.encode_speech(audio, format).await.map_err(SpeechError::Audio)?,
            SpeechOut::Pcm { rate } => self.audio.speech_to_pcm(audio, rate).await.map_err(SpeechError::Audio)?,
        })
    }

    /// `audio` in any supported format (the bytes decide; `declared` only names raw PCM)
    /// transcribed by the configured STT provider. `what` names the input in errors.
    pub async fn transcribe_stateless(
        &self,
        caller: &Caller,
        audio: Bytes,
        declared: Option<AudioFormat>,
        what: &str,
    ) -> Result<String, TurnError> {
        if self.providers.stt().is_none() {
            return Err(TurnError::NoStt("audio files"));
        }
        let _slot = self.admit_stateless(caller).await?;
        let wav = self.decode_for_stt(audio, declared, what).await?;
        self.record_audio(caller, super::metering::wav_ms(&wav), 0);
        self.recognise(wav, what, "audio files").await
    }
}
