//! The model's view of a user message: text, quoted replies, images as data URLs, documents as
//! their text (or PDFs as OpenAI `file` parts, for providers with `pdf_input = "file"`), text
//! files inlined up to a limit, other files named.
//!
//! Documents (PDF, docx, xlsx, pptx, ODF, HTML; see [`crate::documents`]) are read here, through
//! the builder's [`Reader`], which bounds how many are read at once. What happens to one that
//! cannot be read depends on whose problem it is: one the sender can fix (encrypted, corrupt, too
//! large, too slow to read) refuses the message with a 400 naming it, before anything is stored;
//! one the server cannot read right now (no `pdftotext`, a reader failure) is named only and the
//! reason logged; when every reader is busy for too long the message gets a 503 to retry.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use super::input::Resolved;
use crate::attachments::Blobs;
use crate::config::{FilesConfig, PdfInput};
use crate::documents::{self, Disposition, DocKind, Reader};
use crate::store::AttachmentRecord;

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The request cannot be served as sent (400).
    #[error("{0}")]
    Invalid(String),
    /// Every document reader stayed busy (503; the request may be retried).
    #[error("{0}")]
    Busy(String),
    #[error("reading attachment {0}: {1}")]
    Io(String, std::io::Error),
}

/// Largest image sent to a model, and the most image (and PDF file) bytes in one message.
pub const MAX_IMAGE_BYTES: i64 = 20 * 1024 * 1024;
pub const MAX_TOTAL_IMAGE_BYTES: i64 = 40 * 1024 * 1024;
/// Largest PDF sent to a model as a `file` part (OpenAI's limit per file is 32 MB).
pub const MAX_PDF_FILE_BYTES: i64 = 32 * 1024 * 1024;

/// Builds OpenAI content parts from resolved input.
pub struct PromptBuilder {
    pub blobs: Arc<Blobs>,
    pub inline_max: usize,
    /// Reads documents, at most `files.document_max_concurrent` at once.
    pub documents: Reader,
}

/// Extensions and MIME types treated as text for inlining.
fn is_text_like(name: &str, mime: &str) -> bool {
    const EXT: &[&str] = &[
        "txt", "md", "markdown", "json", "csv", "tsv", "xml", "yaml", "yml", "toml", "ini", "log", "html", "css", "js",
        "ts", "jsx", "tsx", "py", "rs", "go", "java", "kt", "c", "h", "cpp", "hpp", "cc", "cs", "rb", "php", "sh",
        "bash", "sql", "swift", "scala", "lua", "pl", "r", "m", "vue", "svelte",
    ];
    let ext = Path::new(name).extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    mime.starts_with("text/") || mime == "application/json" || mime == "application/xml" || EXT.contains(&ext.as_str())
}

impl PromptBuilder {
    /// A builder for attachments stored in `blobs`, with the `[files]` limits.
    pub fn new(blobs: Arc<Blobs>, files: &FilesConfig) -> Self {
        let limits = documents::Limits {
            max_text_bytes: files.document_text_max_bytes,
            max_input_bytes: files.document_max_bytes,
            timeout: std::time::Duration::from_secs(files.document_timeout_secs),
            ..documents::Limits::default()
        };
        Self {
            blobs,
            inline_max: files.inline_text_max_bytes,
            documents: Reader::new(limits, files.document_max_concurrent),
        }
    }

    /// Content parts for the model. `transcripts` holds the STT text of each `record` part, in
    /// order; `pdf_input` is how the turn's provider takes PDFs.
    pub async fn user_content(
        &self,
        parts: &[Resolved],
        transcripts: &[String],
        pdf_input: PdfInput,
    ) -> Result<Value, PromptError> {
        let mut out: Vec<Value> = Vec::new();
        let mut transcripts = transcripts.iter();
        let mut image_bytes = 0i64;
        for p in parts {
            if let Resolved::Attachment { rec, filename } = p
                && rec.kind == "image"
            {
                if rec.size > MAX_IMAGE_BYTES {
                    let max = MAX_IMAGE_BYTES >> 20;
                    return Err(PromptError::Invalid(format!(
                        "image {filename} is too large to send to a model (max {max} MiB)"
                    )));
                }
                image_bytes += rec.size;
            }
        }
        if image_bytes > MAX_TOTAL_IMAGE_BYTES {
            let max = MAX_TOTAL_IMAGE_BYTES >> 20;
            return Err(PromptError::Invalid(format!("too many image bytes in one message (max {max} MiB)")));
        }
        // PDFs sent as files count towards the same budget as images.
        let mut media_bytes = image_bytes;
        for p in parts {
            match p {
                Resolved::Plain(t) => out.push(json!({"type": "text", "text": t})),
                Resolved::Reply { quoted, selected_text, .. } => {
                    let q = selected_text.as_deref().filter(|s| !s.trim().is_empty()).unwrap_or(quoted);
                    out.push(
                        json!({"type": "text", "text": format!("[Quoting an earlier message]\n{q}\n[End of quote]")}),
                    );
                }
                Resolved::Attachment { rec, .. } if rec.kind == "image" => {
                    let bytes = self.blobs.read_all(rec).await.map_err(io_error(rec))?;
                    let url = format!("data:{};base64,{}", rec.mime_type, base64_of(&bytes));
                    out.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
                Resolved::Attachment { rec, filename } if rec.kind == "record" => {
                    let t = transcripts.next().cloned().unwrap_or_default();
                    let text = format!("[Voice message {filename}, transcribed]\n{t}");
                    out.push(json!({"type": "text", "text": text}));
                }
                Resolved::Attachment { rec, filename } if rec.kind == "file" => {
                    out.push(self.file_part(rec, filename, pdf_input, &mut media_bytes).await?);
                }
                Resolved::Attachment { rec, filename } => out.push(named(rec, filename)),
            }
        }
        // A plain-text message stays a plain string, the most widely supported shape.
        if out.len() == 1 && out[0]["type"] == "text" {
            return Ok(out[0]["text"].clone());
        }
        if out.iter().all(|p| p["type"] == "text") {
            let joined: Vec<&str> = out.iter().filter_map(|p| p["text"].as_str()).collect();
            return Ok(Value::String(joined.join("\n")));
        }
        Ok(Value::Array(out))
    }

    /// A `file` attachment: a document's text (or a PDF as a file part), a text file inlined,
    /// anything else named. Decided from what was stored (the uploader's name and the sniffed
    /// type), never from the name a chat request gives the part.
    async fn file_part(
        &self,
        rec: &AttachmentRecord,
        filename: &str,
        pdf_input: PdfInput,
        media_bytes: &mut i64,
    ) -> Result<Value, PromptError> {
        // Documents are read from a file (poppler is a separate process): the stored file, or a
        // temporary copy of the database's chunks, removed when this part is done.
        let file = self.blobs.local_file(rec).await.map_err(io_error(rec))?;
        let path = file.path.as_path();
        let kind = documents::detect_file(path, &rec.mime_type, &rec.original_name).await.map_err(io_error(rec))?;
        match kind {
            Some(DocKind::Pdf) if pdf_input == PdfInput::File => {
                if rec.size > MAX_PDF_FILE_BYTES {
                    let max = MAX_PDF_FILE_BYTES >> 20;
                    return Err(PromptError::Invalid(format!(
                        "PDF {filename} is too large to send to a model as a file (max {max} MiB)"
                    )));
                }
                *media_bytes += rec.size;
                if *media_bytes > MAX_TOTAL_IMAGE_BYTES {
                    let max = MAX_TOTAL_IMAGE_BYTES >> 20;
                    return Err(PromptError::Invalid(format!(
                        "too many image and PDF bytes in one message (max {max} MiB)"
                    )));
                }
                let bytes = tokio::fs::read(path).await.map_err(io_error(rec))?;
                let data = format!("data:application/pdf;base64,{}", base64_of(&bytes));
                Ok(json!({"type": "file", "file": {"filename": pdf_filename(filename), "file_data": data}}))
            }
            Some(kind) => self.document_text(path, kind, rec, filename).await,
            None if is_text_like(&rec.original_name, &rec.mime_type) && (rec.size as usize) <= self.inline_max => {
                let bytes = tokio::fs::read(path).await.map_err(io_error(rec))?;
                let text = String::from_utf8_lossy(&bytes);
                Ok(json!({"type": "text", "text": format!("[File {filename}]\n{text}\n[End of file {filename}]")}))
            }
            None => Ok(named(rec, filename)),
        }
    }

    /// A document's extracted text as a text part, or why there is none.
    async fn document_text(
        &self,
        path: &Path,
        kind: DocKind,
        rec: &AttachmentRecord,
        filename: &str,
    ) -> Result<Value, PromptError> {
        let started = std::time::Instant::now();
        match self.documents.extract(path, kind).await {
            Ok(doc) => {
                tracing::debug!(
                    attachment.id = %rec.attachment_id, document.kind = %kind, text_bytes = doc.text.len(),
                    truncated = doc.truncated, pages = ?doc.pages, elapsed_ms = started.elapsed().as_millis() as u64,
                    "document text extracted"
                );
                Ok(json!({"type": "text", "text": doc.render(filename, kind)}))
            }
            Err(e) => match e.disposition() {
                Disposition::Refuse => {
                    tracing::info!(attachment.id = %rec.attachment_id, document.kind = %kind, reason = %e, "document refused");
                    Err(PromptError::Invalid(format!("{filename}: {e}")))
                }
                Disposition::NameOnly => {
                    tracing::warn!(
                        attachment.id = %rec.attachment_id, document.kind = %kind, error = ?e,
                        "document named only: its text could not be extracted"
                    );
                    Ok(named(rec, filename))
                }
                Disposition::Busy => {
                    tracing::warn!(attachment.id = %rec.attachment_id, "every document reader stayed busy");
                    Err(PromptError::Busy(e.to_string()))
                }
            },
        }
    }
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn io_error(rec: &AttachmentRecord) -> impl FnOnce(std::io::Error) -> PromptError + '_ {
    move |e| PromptError::Io(rec.attachment_id.clone(), e)
}

/// An attachment the model is told about but cannot see.
fn named(rec: &AttachmentRecord, filename: &str) -> Value {
    let text =
        format!("[Attached {} {filename} ({}, {} bytes); its content is not shown]", rec.kind, rec.mime_type, rec.size);
    json!({"type": "text", "text": text})
}

/// The name a PDF file part carries: providers tell the type by its extension.
fn pdf_filename(filename: &str) -> String {
    if filename.to_ascii_lowercase().ends_with(".pdf") { filename.to_string() } else { format!("{filename}.pdf") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_detection() {
        assert!(is_text_like("a.rs", "application/octet-stream"));
        assert!(is_text_like("notes", "text/plain"));
        assert!(!is_text_like("a.pdf", "application/pdf"));
    }

    #[tokio::test]
    async fn without_pdftotext_a_pdf_is_named_or_sent_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let pdf = crate::documents::fixtures::pdf(&["words nobody reads"]);
        std::fs::write(dir.path().join("stored.pdf"), &pdf).unwrap();
        let reader = Reader::with_tools(documents::Limits::default(), 1, documents::PdfTools::default());
        let blobs = Arc::new(Blobs::Local(dir.path().to_path_buf()));
        let builder = PromptBuilder { blobs, inline_max: 1024, documents: reader };
        let rec = AttachmentRecord {
            attachment_id: "a1".into(),
            stored_name: "stored.pdf".into(),
            original_name: "scan.pdf".into(),
            kind: "file".into(),
            mime_type: "application/pdf".into(),
            size: pdf.len() as i64,
            sha256: String::new(),
            created_at: 0,
            owner: None,
        };
        let parts = [Resolved::Attachment { rec, filename: "scan".into() }];
        let v = builder.user_content(&parts, &[], PdfInput::Text).await.unwrap();
        let named = format!("[Attached file scan (application/pdf, {} bytes); its content is not shown]", pdf.len());
        assert_eq!(v, json!(named));
        // A provider that reads PDFs itself needs no pdftotext.
        let v = builder.user_content(&parts, &[], PdfInput::File).await.unwrap();
        assert_eq!(v[0]["type"], "file");
        assert_eq!(v[0]["file"]["filename"], "scan.pdf");
        assert!(v[0]["file"]["file_data"].as_str().unwrap().starts_with("data:application/pdf;base64,JVBERi0"));
    }

    #[test]
    fn pdf_file_parts_are_named_as_pdfs() {
        assert_eq!(pdf_filename("report.PDF"), "report.PDF");
        assert_eq!(pdf_filename("scan"), "scan.pdf");
    }
}
