//! Attachments a front door hands to the agent: media that arrived inline with a message (the
//! `/v1/conversation` API's base64 images and voice), uploads, and downloads — always with
//! their owner.

use bytes::Bytes;
use serde_json::{Value, json};

use super::Agent;
use super::errors::TurnError;
use crate::auth::Caller;
use crate::store::{AttachmentRecord, StoreResult};

/// One inline medium, to be kept as an attachment of the stored message part `index`.
pub struct Media {
    pub index: usize,
    pub name: String,
    pub mime: String,
    pub bytes: Bytes,
}

impl Agent {
    /// Saves every medium for `owner` and completes its stored part with the attachment's id,
    /// sanitised name and detected type. All or nothing: on a failure the ones saved are
    /// removed again.
    pub async fn save_media(
        &self,
        owner: &str,
        media: Vec<Media>,
        stored_parts: &mut [Value],
    ) -> Result<Vec<AttachmentRecord>, TurnError> {
        let mut saved = Vec::with_capacity(media.len());
        for m in media {
            let rec =
                crate::attachments::save_bytes(self.store.as_ref(), &self.blobs, owner, &m.name, &m.mime, &m.bytes)
                    .await;
            match rec {
                Ok(rec) => {
                    if let Some(part) = stored_parts.get_mut(m.index) {
                        part["attachment_id"] = json!(rec.attachment_id);
                        part["filename"] = json!(rec.original_name);
                        part["mime_type"] = json!(rec.mime_type);
                    }
                    saved.push(rec);
                }
                Err(e) => {
                    self.discard_media(&saved).await;
                    return Err(TurnError::Internal(e.to_string()));
                }
            }
        }
        Ok(saved)
    }

    /// Removes attachments saved for a request that failed after all.
    pub async fn discard_media(&self, saved: &[AttachmentRecord]) {
        for rec in saved {
            crate::attachments::discard(self.store.as_ref(), &self.blobs, rec).await;
        }
    }

    /// Records a finished upload.
    pub async fn record_upload(&self, rec: &AttachmentRecord) -> StoreResult<()> {
        self.store.insert_attachment(rec).await
    }

    /// Same, by its stored file name.
    pub async fn attachment_by_name_for(
        &self,
        caller: &Caller,
        stored_name: &str,
    ) -> StoreResult<Option<AttachmentRecord>> {
        Ok(self
            .store
            .get_attachment_by_stored_name(stored_name)
            .await?
            .filter(|r| caller.may_use_attachment(r.owner.as_deref())))
    }

    /// An attachment `caller` may use; another key's is `None`, exactly like an unknown one.
    pub async fn attachment_for(&self, caller: &Caller, attachment_id: &str) -> StoreResult<Option<AttachmentRecord>> {
        Ok(self.store.get_attachment(attachment_id).await?.filter(|r| caller.may_use_attachment(r.owner.as_deref())))
    }
}
