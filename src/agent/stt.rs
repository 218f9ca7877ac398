//! Speech to text for every front door: voice records attached to chat messages, voice messages
//! of `/v1/conversation`, Live utterances. One place for the limits and for what a failure means.

use bytes::Bytes;

use super::Agent;
use super::errors::TurnError;
use super::input::Resolved;

/// Voice records transcribed for one message, and the largest one.
const MAX_RECORDS: usize = 4;
const MAX_RECORD_BYTES: i64 = 25 * 1024 * 1024;

impl Agent {
    /// Transcribes `audio`; `what` names the input in errors (a file name, `messages[1]`…) and
    /// `subject` what cannot be transcribed without a provider (`record attachments`…).
    pub async fn transcribe(
        &self,
        audio: Bytes,
        filename: &str,
        mime: &str,
        what: &str,
        subject: &'static str,
    ) -> Result<String, TurnError> {
        let Some(stt) = self.providers.stt() else {
            return Err(TurnError::NoStt(subject));
        };
        stt.transcribe(audio, filename, mime).await.map_err(|err| {
            tracing::warn!(error = %err, what, "transcription failed");
            TurnError::Transcription { what: what.to_string(), err }
        })
    }

    /// The STT text of every `record` attachment, in order.
    pub(super) async fn transcribe_records(&self, parts: &[Resolved]) -> Result<Vec<String>, TurnError> {
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
            let path = self.prompt.attachments_dir.join(&rec.stored_name);
            let bytes = tokio::fs::read(&path).await.map_err(|e| TurnError::Internal(e.to_string()))?;
            out.push(
                self.transcribe(Bytes::from(bytes), filename, &rec.mime_type, filename, "record attachments").await?,
            );
        }
        Ok(out)
    }
}
