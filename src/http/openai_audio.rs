//! `POST /v1/audio/speech` and `POST /v1/audio/transcriptions`, so that the OpenAI SDKs' audio
//! calls work with the configured TTS and STT (espeak-ng and pocketsphinx offline by default).
//!
//! Speech: `{model, input, voice, response_format?, speed?, instructions?}`; the configured TTS
//! speaks with its own voice (`model`, `voice`, `speed` and `instructions` are accepted and not
//! used). `response_format` is `mp3` (OpenAI's default), `wav`, `pcm` (headerless 16-bit
//! little-endian mono at 24 kHz, as OpenAI's), or astrgate's `silk` and `amr`; anything else is a
//! 400 naming these.
//!
//! Transcriptions: multipart `file` in any format the other front doors take (wav, mp3, silk,
//! amr, ogg, webm; the bytes decide, a declared `pcm` names raw 16 kHz PCM), at most `[openai]
//! max_audio_bytes`, decoded length capped by `[live] max_utterance_secs`; `model` accepted,
//! `response_format` `json` (default) or `text`; `language`, `prompt` and `temperature` ignored.

use axum::extract::State;
use axum::extract::multipart::{Field, Multipart, MultipartError, MultipartRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use super::openai_errors::{OpenAiError, OpenAiJson, speak_error, turn_error};
use crate::agent::stateless_audio::SpeechOut;
use crate::app::AppState;
use crate::audio::codec::AudioFormat;
use crate::auth::Caller;

/// OpenAI's limit on `input`.
const MAX_INPUT_CHARS: usize = 4096;
/// Largest text form field (`model`, `prompt`…) read.
const MAX_FIELD_BYTES: usize = 16 * 1024;
/// The rate of OpenAI's `pcm`.
const PCM_RATE: u32 = 24_000;
pub const SPEECH_FORMATS: [&str; 5] = ["mp3", "wav", "pcm", "silk", "amr"];

fn speech_out(name: &str) -> Option<SpeechOut> {
    Some(match name {
        "pcm" => SpeechOut::Pcm { rate: PCM_RATE },
        "mp3" => SpeechOut::File(AudioFormat::Mp3),
        "wav" => SpeechOut::File(AudioFormat::Wav),
        "silk" => SpeechOut::File(AudioFormat::Silk),
        "amr" => SpeechOut::File(AudioFormat::Amr),
        _ => return None,
    })
}

fn optional_str<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Result<Option<&'a str>, OpenAiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(OpenAiError::invalid(Some(key), format!("{key} must be a string"))),
    }
}

pub async fn speech(State(state): State<AppState>, caller: Caller, OpenAiJson(body): OpenAiJson) -> Response {
    match speak(&state, &caller, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn speak(state: &AppState, caller: &Caller, body: Value) -> Result<Response, OpenAiError> {
    let Value::Object(obj) = body else {
        return Err(OpenAiError::invalid(None, "The request body must be a JSON object"));
    };
    let input = optional_str(&obj, "input")?.unwrap_or_default();
    if input.trim().is_empty() {
        return Err(OpenAiError::invalid(Some("input"), "you must provide the input text"));
    }
    if input.chars().count() > MAX_INPUT_CHARS {
        return Err(OpenAiError::invalid(
            Some("input"),
            format!("input is too long (max {MAX_INPUT_CHARS} characters)"),
        ));
    }
    for key in ["model", "voice", "instructions"] {
        optional_str(&obj, key)?;
    }
    if obj.get("speed").is_some_and(|s| !s.is_null() && !s.is_number()) {
        return Err(OpenAiError::invalid(Some("speed"), "speed must be a number"));
    }
    let format = optional_str(&obj, "response_format")?.unwrap_or("mp3").trim().to_ascii_lowercase();
    let Some(out) = speech_out(&format) else {
        let supported = SPEECH_FORMATS.join(", ");
        return Err(OpenAiError::invalid(
            Some("response_format"),
            format!("response_format \"{format}\" is not supported; supported formats: {supported}"),
        ));
    };
    let audio = state.agent.speak_stateless(caller, input, out).await.map_err(speak_error)?;
    let mime = match out {
        SpeechOut::File(f) => f.mime(),
        SpeechOut::Pcm { .. } => "audio/pcm",
    };
    let mut res = Response::new(axum::body::Body::from(audio));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    Ok(res)
}

pub async fn transcriptions(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    match transcribe(&state, &caller, multipart).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The uploaded file: its bytes, its name and its declared type.
struct Upload {
    bytes: Bytes,
    name: String,
    declared: Option<AudioFormat>,
}

async fn transcribe(
    state: &AppState,
    caller: &Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, OpenAiError> {
    let mut mp =
        multipart.map_err(|e| OpenAiError::invalid(None, format!("Invalid multipart body: {}", e.body_text())))?;
    let max = state.config.openai.max_audio_bytes;
    let mut upload: Option<Upload> = None;
    let mut format = "json".to_string();
    while let Some(mut field) = mp.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "file" => {
                let name = field.file_name().unwrap_or("file").to_string();
                let declared = field
                    .content_type()
                    .and_then(AudioFormat::from_name)
                    .or_else(|| name.rsplit_once('.').and_then(|(_, ext)| AudioFormat::from_name(ext)));
                let bytes = read_capped(&mut field, max, "file").await?;
                upload = Some(Upload { bytes, name, declared });
            }
            "response_format" => {
                let raw = read_capped(&mut field, MAX_FIELD_BYTES, "response_format").await?;
                format = String::from_utf8_lossy(&raw).trim().to_ascii_lowercase();
            }
            other => {
                // `model`, `language`, `prompt`, `temperature`…: read (bounded) and not used.
                let other = other.to_string();
                read_capped(&mut field, MAX_FIELD_BYTES, &other).await?;
            }
        }
    }
    if !matches!(format.as_str(), "json" | "text") {
        return Err(OpenAiError::invalid(
            Some("response_format"),
            format!("response_format \"{format}\" is not supported; supported formats: json, text"),
        ));
    }
    let Some(up) = upload else {
        return Err(OpenAiError::invalid(Some("file"), "you must provide an audio file in the file field"));
    };
    if up.bytes.is_empty() {
        return Err(OpenAiError::invalid(Some("file"), "the audio file is empty"));
    }
    let what = crate::attachments::sanitize_filename(&up.name);
    let text = state.agent.transcribe_stateless(caller, up.bytes, up.declared, &what).await.map_err(turn_error)?;
    Ok(if format == "text" {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
    } else {
        axum::Json(json!({"text": text})).into_response()
    })
}

/// A field's bytes, refused with 413 past `cap`.
async fn read_capped(field: &mut Field<'_>, cap: usize, name: &str) -> Result<Bytes, OpenAiError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if buf.len() + chunk.len() > cap {
            return Err(OpenAiError {
                param: Some(name.to_string()),
                ..OpenAiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    Some("request_too_large"),
                    format!("{name} is too large (max {cap} bytes)"),
                )
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn multipart_error(e: MultipartError) -> OpenAiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return OpenAiError::new(status, "invalid_request_error", Some("request_too_large"), "Request body too large");
    }
    let read = crate::error::body_error(status, &e);
    if read.status == StatusCode::REQUEST_TIMEOUT {
        return read.into();
    }
    OpenAiError::invalid(None, format!("Invalid multipart body: {}", e.body_text()))
}
