//! User input: AstrBot message parts (`plain`, `reply`, `image`/`record`/`file`/`video`) parsed,
//! checked against the store, and turned into both the stored form and the model's content.
//!
//! Two parsing modes, as in AstrBot: chat is lenient (non-objects and unknown part types are
//! skipped) and IM is strict (each bad part is an error). Unlike AstrBot, an unknown
//! `attachment_id` is always an error (`attachment not found: <id>`), never silently dropped.

use serde_json::{Value, json};

use crate::auth::Caller;
use crate::store::{AttachmentRecord, Store, StoreError};

pub const EMPTY_MESSAGE: &str = "Message content is empty (reply only is not allowed)";

/// Parts accepted in one message, and attachments among them: each attachment costs a lookup
/// and possibly a file read or a transcription, so their number is bounded.
pub const MAX_PARTS: usize = 64;
pub const MAX_ATTACHMENTS: usize = 16;

/// Kinds of attachment parts.
pub const ATTACHMENT_KINDS: [&str; 4] = ["image", "record", "file", "video"];

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Plain(String),
    Reply { message_id: i64, selected_text: Option<String> },
    Attachment { declared: String, attachment_id: String, filename: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A validation failure with AstrBot's text (400).
    #[error("{0}")]
    Invalid(String),
    /// A reference to something that does not exist (400 as well; the text names it).
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(s: impl Into<String>) -> InputError {
    InputError::Invalid(s.into())
}

/// Parses `message` (a string or a list of parts).
pub fn parse_message(v: &Value, strict: bool) -> Result<Vec<Part>, InputError> {
    match v {
        Value::String(s) => {
            let t = s.trim();
            Ok(if t.is_empty() { vec![] } else { vec![Part::Plain(t.to_string())] })
        }
        Value::Array(items) => {
            if items.len() > MAX_PARTS {
                return Err(invalid(format!("too many message parts (max {MAX_PARTS})")));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Some(obj) = item.as_object() else {
                    if strict {
                        return Err(invalid("message part must be an object"));
                    }
                    continue;
                };
                let ty = obj.get("type").and_then(Value::as_str).unwrap_or_default();
                match ty {
                    "plain" | "text" => {
                        if let Some(t) = obj.get("text").and_then(Value::as_str) {
                            out.push(Part::Plain(t.to_string()));
                        } else if strict {
                            return Err(invalid("plain part missing text"));
                        }
                    }
                    "reply" => match obj.get("message_id").and_then(as_id) {
                        Some(id) => out.push(Part::Reply {
                            message_id: id,
                            selected_text: obj.get("selected_text").and_then(Value::as_str).map(str::to_string),
                        }),
                        None if strict || obj.contains_key("message_id") => {
                            return Err(invalid("reply part missing message_id"));
                        }
                        None => {}
                    },
                    t if ATTACHMENT_KINDS.contains(&t) => match obj.get("attachment_id").and_then(Value::as_str) {
                        Some(id) if !id.trim().is_empty() => out.push(Part::Attachment {
                            declared: t.to_string(),
                            attachment_id: id.trim().to_string(),
                            filename: obj.get("filename").and_then(Value::as_str).map(str::to_string),
                        }),
                        _ => return Err(invalid(format!("{t} part missing attachment_id"))),
                    },
                    other => {
                        if strict {
                            return Err(invalid(format!("unsupported message part type: {other}")));
                        }
                    }
                }
            }
            Ok(out)
        }
        _ => Err(invalid("message must be a string or list")),
    }
}

/// `files`: a list of attachment ids, or of objects with `attachment_id`.
pub fn parse_files(v: &Value) -> Result<Vec<Part>, InputError> {
    let Value::Array(items) = v else {
        return Err(invalid("files must be a list"));
    };
    if items.len() > MAX_ATTACHMENTS {
        return Err(invalid(format!("too many attachments (max {MAX_ATTACHMENTS})")));
    }
    items
        .iter()
        .map(|i| {
            let id = i.as_str().or_else(|| i.get("attachment_id").and_then(Value::as_str));
            match id {
                Some(id) if !id.trim().is_empty() => Ok(Part::Attachment {
                    declared: "file".into(),
                    attachment_id: id.trim().to_string(),
                    filename: i.get("filename").and_then(Value::as_str).map(str::to_string),
                }),
                _ => Err(invalid("file part missing attachment_id")),
            }
        })
        .collect()
}

fn as_id(v: &Value) -> Option<i64> {
    crate::util::json_i64(v).or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// True when the parts carry real content (not only replies or blank text).
pub fn has_content(parts: &[Part]) -> bool {
    parts.iter().any(|p| match p {
        Part::Plain(t) => !t.trim().is_empty(),
        Part::Attachment { .. } => true,
        Part::Reply { .. } => false,
    })
}

/// A part after its references were checked.
#[derive(Debug, Clone)]
pub enum Resolved {
    Plain(String),
    Reply { message_id: i64, quoted: String, selected_text: Option<String> },
    Attachment { rec: AttachmentRecord, filename: String },
}

/// Checks replies (same session only) and attachments against the store.
/// Looks up every referenced message and attachment. An attachment another caller owns is
/// `attachment not found: <id>` exactly like an unknown one, so ids reveal nothing. An
/// attachment whose bytes are gone is `file not found: <stored name>`
/// (AstrBot names the full path; we do not reveal server paths).
pub async fn resolve(
    store: &dyn Store,
    blobs: &crate::attachments::Blobs,
    caller: &Caller,
    session_id: &str,
    parts: Vec<Part>,
) -> Result<Vec<Resolved>, InputError> {
    // No count of attachments in all: the message's 64 parts and the 16 of `files` bound it, each
    // limit one the request's schema states (a sum of the two could not be).
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        out.push(match p {
            Part::Plain(t) => Resolved::Plain(t),
            Part::Reply { message_id, selected_text } => {
                // Only messages of the same session can be quoted: an id never reveals another
                // user's history.
                let msg = store.get_message(message_id).await?.filter(|m| m.session_id == session_id);
                let Some(msg) = msg else {
                    return Err(InputError::NotFound(format!("reply message not found: {message_id}")));
                };
                Resolved::Reply { message_id, quoted: message_text(&msg.content), selected_text }
            }
            Part::Attachment { attachment_id, filename, .. } => {
                let rec = store
                    .get_attachment(&attachment_id)
                    .await?
                    .filter(|r| caller.may_use_attachment(r.owner.as_deref()));
                let Some(rec) = rec else {
                    return Err(InputError::NotFound(format!("attachment not found: {attachment_id}")));
                };
                if !blobs.exists(&rec).await {
                    return Err(InputError::NotFound(format!("file not found: {}", rec.stored_name)));
                }
                let filename = filename.filter(|f| !f.trim().is_empty()).unwrap_or_else(|| rec.original_name.clone());
                Resolved::Attachment { rec, filename }
            }
        });
    }
    Ok(out)
}

/// The stored form of a user message: `{"type":"user","message":[parts]}` (no file paths).
pub fn stored_user_content(parts: &[Resolved]) -> Value {
    let message: Vec<Value> = parts
        .iter()
        .map(|p| match p {
            Resolved::Plain(t) => json!({"type": "plain", "text": t}),
            Resolved::Reply { message_id, selected_text, .. } => {
                let mut v = json!({"type": "reply", "message_id": message_id});
                if let Some(s) = selected_text {
                    v["selected_text"] = json!(s);
                }
                v
            }
            Resolved::Attachment { rec, filename } => {
                json!({"type": rec.kind, "attachment_id": rec.attachment_id, "filename": filename, "mime_type": rec.mime_type})
            }
        })
        .collect();
    json!({"type": "user", "message": message})
}

/// The plain text of a stored message (user or bot), attachments named in brackets.
pub fn message_text(content: &Value) -> String {
    let mut out = String::new();
    for part in content["message"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let piece = match part["type"].as_str().unwrap_or_default() {
            "plain" => part["text"].as_str().unwrap_or_default().to_string(),
            "reply" => continue,
            kind => format!("[{kind}: {}]", part["filename"].as_str().unwrap_or("attachment")),
        };
        if !out.is_empty() && !piece.is_empty() {
            out.push('\n');
        }
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_and_strict_parsing() {
        let v = json!([{"type": "plain", "text": "hi"}, 5, {"type": "weird"}, {"type": "reply", "message_id": "7"}]);
        let parts = parse_message(&v, false).unwrap();
        assert_eq!(parts, vec![Part::Plain("hi".into()), Part::Reply { message_id: 7, selected_text: None }]);
        assert_eq!(parse_message(&v, true).unwrap_err().to_string(), "message part must be an object");
        let v = json!([{"type": "weird"}]);
        assert_eq!(parse_message(&v, true).unwrap_err().to_string(), "unsupported message part type: weird");
        let v = json!([{"type": "image"}]);
        assert_eq!(parse_message(&v, false).unwrap_err().to_string(), "image part missing attachment_id");
        assert_eq!(parse_message(&json!(3), false).unwrap_err().to_string(), "message must be a string or list");
        assert_eq!(parse_message(&json!("  "), false).unwrap(), vec![]);
    }

    #[test]
    fn content_check() {
        assert!(!has_content(&[Part::Reply { message_id: 1, selected_text: None }]));
        assert!(!has_content(&[Part::Plain("  ".into())]));
        assert!(has_content(&[Part::Plain("x".into())]));
    }

    #[test]
    fn text_of_stored_messages() {
        let c = json!({"type": "user", "message": [{"type": "plain", "text": "look"}, {"type": "image", "filename": "a.png"}]});
        assert_eq!(message_text(&c), "look\n[image: a.png]");
    }
}
