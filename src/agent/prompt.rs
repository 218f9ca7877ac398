//! The model's view of a user message: text, quoted replies, images as data URLs, text files
//! inlined up to a limit, other files named.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};

use super::input::Resolved;

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The request cannot be served as sent (400).
    #[error("{0}")]
    Invalid(String),
    #[error("reading attachment {0}: {1}")]
    Io(String, std::io::Error),
}

/// Largest image sent to a model, and the most image bytes in one message.
pub const MAX_IMAGE_BYTES: i64 = 20 * 1024 * 1024;
pub const MAX_TOTAL_IMAGE_BYTES: i64 = 40 * 1024 * 1024;

/// Builds OpenAI content parts from resolved input.
pub struct PromptBuilder {
    pub attachments_dir: PathBuf,
    pub inline_max: usize,
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
    fn path_of(&self, stored_name: &str) -> PathBuf {
        self.attachments_dir.join(stored_name)
    }

    /// Content parts for the model. `transcripts` holds the STT text of each `record` part, in order.
    pub async fn user_content(&self, parts: &[Resolved], transcripts: &[String]) -> Result<Value, PromptError> {
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
        for p in parts {
            match p {
                Resolved::Plain(t) => out.push(json!({"type": "text", "text": t})),
                Resolved::Reply { quoted, selected_text, .. } => {
                    let q = selected_text.as_deref().filter(|s| !s.trim().is_empty()).unwrap_or(quoted);
                    out.push(json!({"type": "text", "text": format!("[Quoting an earlier message]\n{q}\n[End of quote]")}));
                }
                Resolved::Attachment { rec, filename } => match rec.kind.as_str() {
                    "image" => {
                        let bytes = tokio::fs::read(self.path_of(&rec.stored_name))
                            .await
                            .map_err(|e| PromptError::Io(rec.attachment_id.clone(), e))?;
                        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                        out.push(json!({"type": "image_url", "image_url": {"url": format!("data:{};base64,{b64}", rec.mime_type)}}));
                    }
                    "record" => {
                        let t = transcripts.next().cloned().unwrap_or_default();
                        out.push(json!({"type": "text", "text": format!("[Voice message {filename}, transcribed]\n{t}")}));
                    }
                    // Decided from what was stored (the uploader's name and the sniffed type),
                    // never from the name a chat request gives the part.
                    _ if is_text_like(&rec.original_name, &rec.mime_type) && (rec.size as usize) <= self.inline_max => {
                        let bytes = tokio::fs::read(self.path_of(&rec.stored_name))
                            .await
                            .map_err(|e| PromptError::Io(rec.attachment_id.clone(), e))?;
                        let text = String::from_utf8_lossy(&bytes);
                        out.push(json!({"type": "text", "text": format!("[File {filename}]\n{text}\n[End of file {filename}]")}));
                    }
                    kind => out.push(json!({"type": "text", "text": format!("[Attached {kind} {filename} ({}, {} bytes); its content is not shown]", rec.mime_type, rec.size)})),
                },
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
}
