//! Audio conversion for every front door, in one place: voice that users send (a `record`
//! attachment, a `/v1/conversation` voice message, a Live utterance, later
//! `/v1/audio/transcriptions`) is decoded to 16 kHz mono WAV before speech recognition, so every
//! STT provider takes every format; speech is encoded to the format a client asked for.
//!
//! The codecs ([`crate::audio::codec`]) are blocking CPU work. They run on tokio's blocking pool,
//! never on the async runtime, and at most [`AudioCodecs::slots`] at once (one per core): a burst
//! of uploads then waits its turn instead of taking every core from the server. Decoded input is
//! capped at `[live] max_utterance_secs`, the one length limit for speech a user sends.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::Agent;
use super::errors::TurnError;
use crate::audio::codec::{self, AudioFormat, CodecError};
use crate::audio::wav;
use crate::providers::tts::TtsError;

/// Longest synthesised speech that is re-encoded. Not a limit on users: TTS output comes from our
/// provider, and a long reply may well speak for minutes (the TTS text is capped at 4096 chars).
pub const MAX_SPOKEN_SECS: u32 = 600;

/// Why audio could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The audio itself (bad input, see [`CodecError::is_bad_input`]) or an encoder failure.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The blocking task did not finish (the runtime is shutting down).
    #[error("audio conversion did not finish: {0}")]
    Worker(String),
}

/// Why a reply could not be spoken in the asked format.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error("no TTS provider is configured")]
    NoTts,
    #[error(transparent)]
    Tts(#[from] TtsError),
    #[error(transparent)]
    Audio(#[from] AudioError),
}

/// The bounded pool the codecs run on, and the length limit of decoded input.
pub struct AudioCodecs {
    permits: Arc<Semaphore>,
    slots: usize,
    max_input_secs: u32,
}

impl AudioCodecs {
    /// One slot per core; decoded input is capped at `max_input_secs`.
    pub fn new(max_input_secs: u32) -> Self {
        let slots = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { permits: Arc::new(Semaphore::new(slots)), slots, max_input_secs }
    }

    /// Conversions that may run at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Decodes `audio` (the bytes decide the format; `declared` only fills in for raw PCM) to a
    /// 16 kHz mono 16-bit WAV, as speech recognition takes it.
    pub async fn decode_for_stt(&self, audio: Bytes, declared: Option<AudioFormat>) -> Result<Bytes, AudioError> {
        let max_secs = self.max_input_secs;
        self.run(move || {
            let pcm = codec::decode_to_pcm16k(&audio, declared, max_secs)?;
            Ok(Bytes::from(wav::pcm16_to_wav(&wav::samples_to_bytes(&pcm), codec::STT_RATE, 1)))
        })
        .await
    }

    /// Converts synthesised speech (a WAV or MP3 from the TTS provider) to `to`; audio already
    /// in `to` is passed through (a WAV only gets its header sizes fixed).
    pub async fn encode_speech(&self, audio: Bytes, to: AudioFormat) -> Result<Bytes, AudioError> {
        self.run(move || codec::transcode(&audio, None, to, MAX_SPOKEN_SECS).map(Bytes::from)).await
    }

    /// Converts synthesised speech to headerless 16-bit little-endian mono PCM at `rate` Hz (what
    /// OpenAI's `pcm` response format is, at 24 kHz).
    pub async fn speech_to_pcm(&self, audio: Bytes, rate: u32) -> Result<Bytes, AudioError> {
        self.run(move || {
            let wav_bytes = codec::transcode(&audio, None, AudioFormat::Wav, MAX_SPOKEN_SECS)?;
            let parsed = wav::parse(&wav_bytes)
                .map_err(|e| CodecError::Encoder { format: AudioFormat::Pcm16, detail: e.to_string() })?;
            Ok(Bytes::from(wav::samples_to_bytes(&wav::to_mono(&parsed, rate))))
        })
        .await
    }

    /// Runs `work` on the blocking pool once a slot is free. The slot travels with the work, so
    /// a caller that goes away while it runs does not free the slot early.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, CodecError> + Send + 'static,
    ) -> Result<T, AudioError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|e| AudioError::Worker(e.to_string()))?;
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| AudioError::Worker(e.to_string()))?;
        Ok(done?)
    }
}

impl Agent {
    /// `audio` decoded to a 16 kHz mono WAV for speech recognition; errors name `what` (a file
    /// name, `messages[1]`, `utterance`…) and the format.
    pub async fn decode_for_stt(
        &self,
        audio: Bytes,
        declared: Option<AudioFormat>,
        what: &str,
    ) -> Result<Bytes, TurnError> {
        self.audio.decode_for_stt(audio, declared).await.map_err(|e| audio_error(what, e))
    }

    /// `text` spoken by the TTS provider and encoded to `format` (`format` echoes what a client
    /// asked for; the provider's WAV passes through unchanged when WAV was asked).
    pub async fn synthesize(&self, text: &str, format: AudioFormat) -> Result<Bytes, SpeechError> {
        let tts = self.providers.tts().ok_or(SpeechError::NoTts)?;
        let audio = tts.synthesize(text).await?;
        Ok(self.audio.encode_speech(audio, format).await?)
    }
}

/// A conversion failure as a turn error: the client's audio (400, naming `what` and the format)
/// or a failure of ours.
fn audio_error(what: &str, e: AudioError) -> TurnError {
    match e {
        AudioError::Codec(err) if err.is_bad_input() => TurnError::Audio { what: what.to_string(), err },
        other => {
            tracing::error!(error = %other, what, "decoding audio failed");
            TurnError::Internal(other.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_wav(rate: u32, secs: f32) -> Bytes {
        let samples: Vec<i16> =
            (0..(rate as f32 * secs) as usize).map(|i| ((i as f32 / 9.0).sin() * 9_000.0) as i16).collect();
        Bytes::from(wav::pcm16_to_wav(&wav::samples_to_bytes(&samples), rate, 1))
    }

    #[tokio::test]
    async fn decodes_to_16k_wav_and_encodes_speech() {
        let codecs = AudioCodecs::new(2);
        assert!(codecs.slots() >= 1);
        let mp3 = codecs.encode_speech(tone_wav(22_050, 1.0), AudioFormat::Mp3).await.unwrap();
        assert_eq!(codec::sniff(&mp3), Some(AudioFormat::Mp3));
        let wav16 = codecs.decode_for_stt(mp3, Some(AudioFormat::Wav)).await.unwrap();
        let parsed = wav::parse(&wav16).unwrap();
        assert_eq!((parsed.sample_rate, parsed.channels), (16_000, 1));
        assert!((parsed.duration_secs() - 1.0).abs() < 0.1, "{}", parsed.duration_secs());
        let pcm = codecs.speech_to_pcm(tone_wav(22_050, 1.0), 24_000).await.unwrap();
        assert_eq!(pcm.len(), 24_000 * 2, "one second of 16-bit samples at 24 kHz");
        let same = tone_wav(16_000, 0.5);
        assert_eq!(codecs.encode_speech(same.clone(), AudioFormat::Wav).await.unwrap(), same);
    }

    #[tokio::test]
    async fn bad_input_and_the_cap_are_codec_errors() {
        let codecs = AudioCodecs::new(1);
        let e = codecs.decode_for_stt(tone_wav(16_000, 2.0), None).await.unwrap_err();
        assert!(matches!(e, AudioError::Codec(CodecError::TooLong { max_secs: 1 })), "{e:?}");
        let e = codecs.decode_for_stt(Bytes::from_static(b"ID3\x04\0\0\0\0\0\x05junk"), None).await.unwrap_err();
        assert!(e.to_string().starts_with("corrupt mp3 audio"), "{e}");
        let turn = audio_error("messages[0]", e);
        assert!(turn.to_string().starts_with("messages[0]: corrupt mp3 audio"), "{turn}");
    }

    #[tokio::test]
    async fn a_burst_is_bounded_by_the_slots() {
        let codecs = Arc::new(AudioCodecs::new(60));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..(codecs.slots() * 3) {
            let (codecs, running, peak) = (codecs.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                codecs
                    .run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(now, SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, SeqCst);
                        Ok(())
                    })
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= codecs.slots());
    }
}
