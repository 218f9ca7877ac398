//! The `messages` of a `/v1/conversation` request: text, base64 images, base64 voice, decoded
//! once and checked before anything is stored. Voice in any supported format (wav, mp3, silk,
//! amr, ogg, webm, raw PCM) goes through the agent's decode and STT.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::agent::Agent;
use crate::agent::errors::TurnError;
use crate::agent::media::Media;
use crate::audio::codec::{self, AudioFormat};

/// The request's content: the model's parts, the stored parts, and the media to keep.
pub struct Decoded {
    pub model_parts: Vec<Value>,
    pub stored_parts: Vec<Value>,
    pub media: Vec<Media>,
}

/// Base64 with or without a `data:…;base64,` prefix, decoded once. Also returns the base64 text
/// itself when it is clean (no whitespace), so an image can go to the model without being
/// encoded again.
fn decode_b64(v: &str) -> Option<(Vec<u8>, Option<&str>)> {
    let raw = match v.split_once(";base64,") {
        Some((head, rest)) if head.starts_with("data:") => rest,
        _ => v,
    };
    let engine = &base64::engine::general_purpose::STANDARD;
    if raw.bytes().any(|b| b.is_ascii_whitespace()) {
        // Rare (line-wrapped base64): one cleaned copy.
        let cleaned: Vec<u8> = raw.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        return engine.decode(&cleaned).ok().map(|d| (d, None));
    }
    engine.decode(raw.as_bytes()).ok().map(|d| (d, Some(raw)))
}

fn invalid(s: String) -> TurnError {
    TurnError::Invalid(s)
}

/// Decodes and checks every message, transcribing voice (errors name `messages[i]`).
pub async fn decode(agent: &Agent, caller: &crate::auth::Caller, messages: &[Value]) -> Result<Decoded, TurnError> {
    let mut out = Decoded { model_parts: Vec::new(), stored_parts: Vec::new(), media: Vec::new() };
    for (i, m) in messages.iter().enumerate() {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or_default();
        let value = m
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].value must be a string")))?;
        match ty {
            "text" => {
                if !value.trim().is_empty() {
                    out.model_parts.push(json!({"type": "text", "text": value}));
                    out.stored_parts.push(json!({"type": "plain", "text": value}));
                }
            }
            "image" => {
                let (bytes, clean_b64) =
                    decode_b64(value).ok_or_else(|| invalid(format!("messages[{i}].value is not valid base64")))?;
                let head = &bytes[..bytes.len().min(crate::attachments::SNIFF_BYTES)];
                let (mime, kind) = crate::attachments::classify(head, None, "image");
                if kind != "image" {
                    return Err(invalid(format!("messages[{i}] is not a recognised image")));
                }
                let url = match clean_b64 {
                    Some(b64) => format!("data:{mime};base64,{b64}"),
                    None => format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes)),
                };
                out.model_parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                let name = format!("image.{}", mime.rsplit('/').next().unwrap_or("img"));
                out.stored_parts
                    .push(json!({"type": "image", "attachment_id": null, "filename": name, "mime_type": mime}));
                out.media.push(Media { index: out.stored_parts.len() - 1, name, mime, bytes: Bytes::from(bytes) });
            }
            "voice" => {
                let (bytes, _) =
                    decode_b64(value).ok_or_else(|| invalid(format!("messages[{i}].value is not valid base64")))?;
                let bytes = Bytes::from(bytes);
                // The bytes decide; `format` only names headerless PCM (and an unknown name says nothing).
                let declared = m.get("format").and_then(Value::as_str).and_then(AudioFormat::from_name);
                let what = format!("messages[{i}]");
                let text = agent.transcribe(caller, bytes.clone(), declared, &what, "voice messages").await?;
                if text.trim().is_empty() {
                    return Err(invalid(format!("messages[{i}]: no speech was recognised")));
                }
                // Decoded, so recognised: named after what it is, not what it was said to be.
                let format = codec::sniff(&bytes).or(declared).unwrap_or(AudioFormat::Wav);
                let (name, mime) = (format!("voice.{}", format.extension()), format.mime().to_string());
                out.model_parts.push(json!({"type": "text", "text": text}));
                out.stored_parts.push(json!({"type": "record", "attachment_id": null, "filename": name, "mime_type": mime, "transcript": text}));
                out.media.push(Media { index: out.stored_parts.len() - 1, name, mime, bytes });
            }
            other => return Err(invalid(format!("messages[{i}].type must be text, image or voice, got {other:?}"))),
        }
    }
    if out.model_parts.is_empty() {
        return Err(invalid("Message content is empty".into()));
    }
    Ok(out)
}
