//! Speech to text for every front door: voice records attached to chat messages, voice messages
//! of `/v1/conversation`, Live utterances (and later `/v1/audio/transcriptions`). One place for
//! the limits and for what a failure means. Whatever the format, the audio is first decoded to
//! 16 kHz mono WAV ([`super::audio`]), so every STT provider takes every format.

use bytes::Bytes;

use super::Agent;
use super::errors::TurnError;
use super::input::Resolved;
use crate::audio::codec::AudioFormat;
use crate::auth::Caller;

/// Voice records transcribed for one message, and the largest one.
const MAX_RECORDS: usize = 4;
const MAX_RECORD_BYTES: i64 = 25 * 1024 * 1024;

impl Agent {
    /// Transcribes `audio` in any supported format: the bytes decide the format, `declared` only
    /// fills in for headerless PCM. `what` names the input in errors (a file name,
    /// `messages[1]`…) and `subject` what cannot be transcribed without a provider
    /// (`record attachments`…).
    pub async fn transcribe(
        &self,
        caller: &Caller,
        audio: Bytes,
        declared: Option<AudioFormat>,
        what: &str,
        subject: &'static str,
    ) -> Result<String, TurnError> {
        if self.providers.stt().is_none() {
            return Err(TurnError::NoStt(subject));
        }
        let wav = self.decode_for_stt(audio, declared, what).await?;
        self.record_audio(caller, super::metering::wav_ms(&wav), 0);
        self.recognise(wav, what, subject).await
    }

    /// Speech recognition of a 16 kHz mono WAV made by [`Agent::decode_for_stt`].
    pub async fn recognise(&self, wav: Bytes, what: &str, subject: &'static str) -> Result<String, TurnError> {
        let Some(stt) = self.providers.stt() else {
            return Err(TurnError::NoStt(subject));
        };
        stt.transcribe(wav, "speech.wav", "audio/wav").await.map_err(|err| {
            tracing::warn!(error = %err, what, "transcription failed");
            TurnError::Transcription { what: what.to_string(), err }
        })
    }

    /// The STT text of every `record` attachment, in order.
    pub(super) async fn transcribe_records(
        &self,
        caller: &Caller,
        parts: &[Resolved],
    ) -> Result<Vec<String>, TurnError> {
        let records: Vec<_> = parts
            .iter()
            .filter_map(|p| match p {
                Resolved::Attachment { rec, filename } if rec.kind == "record" => Some((rec, filename)),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if self.providers.stt().is_none() {
            return Err(TurnError::NoStt("record attachments"));
        }
        if records.len() > MAX_RECORDS {
            return Err(TurnError::Invalid(format!("too many record attachments in one message (max {MAX_RECORDS})")));
        }
        if let Some((_, name)) = records.iter().find(|(r, _)| r.size > MAX_RECORD_BYTES) {
            return Err(TurnError::Invalid(format!("record {name} is too large to transcribe (max 25 MiB)")));
        }
        let mut out = Vec::with_capacity(records.len());
        for (rec, filename) in records {
            let bytes = self.blobs.read_all(rec).await.map_err(|e| TurnError::Internal(e.to_string()))?;
            // The stored type was sniffed at upload; the name's extension is the last resort.
            let declared = AudioFormat::from_name(&rec.mime_type)
                .or_else(|| rec.original_name.rsplit_once('.').and_then(|(_, ext)| AudioFormat::from_name(ext)));
            let what = format!("record {filename}");
            out.push(self.transcribe(caller, Bytes::from(bytes), declared, &what, "record attachments").await?);
        }
        Ok(out)
    }
}
