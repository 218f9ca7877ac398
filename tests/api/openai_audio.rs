//! `/v1/audio/speech` and `/v1/audio/transcriptions` over real HTTP with the offline defaults:
//! espeak-ng speaks, pocketsphinx listens (see `voice_formats.rs` on how loosely it is judged).

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use astrgate::audio::codec::{self, AudioFormat};

use crate::helpers::*;
use crate::openai::assert_openai_error;

const HELLO_WAV: &[u8] = include_bytes!("../../src/audio/testdata/hello-16k.wav");
const HELLO_MP3: &[u8] = include_bytes!("../../src/audio/testdata/hello.mp3");
const HELLO_AMR: &[u8] = include_bytes!("../../src/audio/testdata/hello.amr");
const HELLO_SILK: &[u8] = include_bytes!("../../src/audio/testdata/hello-tencent.silk");
const HELLO_OGG: &[u8] = include_bytes!("../../src/audio/testdata/hello-opus.ogg");
const HELLO_WEBM: &[u8] = include_bytes!("../../src/audio/testdata/hello-opus.webm");

fn is_hello(transcript: &str) -> bool {
    transcript
        .to_lowercase()
        .split_whitespace()
        .any(|w| w.trim_matches('.') == "hello" || w.trim_matches('.') == "world")
}

async fn offline_app(extra: &str) -> (TestApp, String) {
    let app = spawn_toml(extra).await;
    assert_eq!(app.state.agent.providers.stt().map(|s| s.name().to_string()).as_deref(), Some("pocketsphinx"));
    assert_eq!(app.state.agent.providers.tts().map(|t| t.name().to_string()).as_deref(), Some("espeak-ng"));
    let key = app.key(&["chat"]).await;
    (app, key)
}

async fn speech(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.http.post(app.url("/v1/audio/speech")).bearer_auth(key).json(&body).send().await.unwrap()
}

async fn transcribe(
    app: &TestApp,
    key: &str,
    name: &str,
    mime: &str,
    bytes: &[u8],
    format: Option<&str>,
) -> (StatusCode, String) {
    let mut form = Form::new()
        .part("file", Part::bytes(bytes.to_vec()).file_name(name.to_string()).mime_str(mime).unwrap())
        .text("model", "whisper-1");
    if let Some(f) = format {
        form = form.text("response_format", f.to_string());
    }
    let res = app.http.post(app.url("/v1/audio/transcriptions")).bearer_auth(key).multipart(form).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn speech_in_every_offered_format_and_a_400_naming_them() {
    let (app, key) = offline_app("").await;
    for (format, sniffed, mime) in [
        (None, Some(AudioFormat::Mp3), "audio/mpeg"),
        (Some("wav"), Some(AudioFormat::Wav), "audio/wav"),
        (Some("mp3"), Some(AudioFormat::Mp3), "audio/mpeg"),
        (Some("silk"), Some(AudioFormat::Silk), "audio/silk"),
        (Some("amr"), Some(AudioFormat::Amr), "audio/amr"),
        (Some("pcm"), None, "audio/pcm"),
    ] {
        let mut body = json!({"model": "tts-1", "voice": "alloy", "input": "Hello world."});
        if let Some(f) = format {
            body["response_format"] = json!(f);
        }
        let res = speech(&app, &key, body).await;
        assert_eq!(res.status(), 200, "{format:?}");
        assert_eq!(res.headers()["content-type"], mime);
        let audio = res.bytes().await.unwrap();
        assert_eq!(codec::sniff(&audio), sniffed, "{format:?}");
        if format == Some("pcm") {
            // Headerless 16-bit PCM at 24 kHz: about a second of speech, and not silence.
            assert_eq!(audio.len() % 2, 0);
            let secs = audio.len() as f64 / 48_000.0;
            assert!((0.3..5.0).contains(&secs), "{secs} s");
            let samples: Vec<i16> = audio.chunks(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
            assert!(samples.iter().any(|s| s.unsigned_abs() > 1000));
        }
    }
    for bad in ["opus", "aac", "flac"] {
        let res =
            speech(&app, &key, json!({"model": "tts-1", "voice": "alloy", "input": "Hi", "response_format": bad}))
                .await;
        let (s, e) = (res.status(), res.json::<Value>().await.unwrap());
        assert_openai_error(s, &e, 400, "invalid_request_error", None);
        assert_eq!(e["error"]["param"], "response_format");
        assert_eq!(
            e["error"]["message"],
            format!("response_format \"{bad}\" is not supported; supported formats: mp3, wav, pcm, silk, amr")
        );
    }
    let res = speech(&app, &key, json!({"model": "tts-1", "voice": "alloy", "input": "  "})).await;
    let (s, e) = (res.status(), res.json::<Value>().await.unwrap());
    assert_openai_error(s, &e, 400, "invalid_request_error", None);
    assert_eq!(e["error"]["param"], "input");
    let res = speech(&app, &key, json!({"input": "x".repeat(4097)})).await;
    assert_eq!(res.status(), 400);
    let no_chat = app.key(&["file"]).await;
    let res = speech(&app, &no_chat, json!({"input": "hi"})).await;
    let (s, e) = (res.status(), res.json::<Value>().await.unwrap());
    assert_openai_error(s, &e, 403, "permission_error", Some("insufficient_scope"));
}

#[tokio::test]
async fn transcriptions_take_every_format_the_other_front_doors_take() {
    let (app, key) = offline_app("").await;
    for (name, mime, bytes) in [
        ("hello.wav", "audio/wav", HELLO_WAV),
        ("hello.mp3", "audio/mpeg", HELLO_MP3),
        ("hello.amr", "audio/amr", HELLO_AMR),
        ("hello.silk", "application/octet-stream", HELLO_SILK),
        ("hello.ogg", "audio/ogg", HELLO_OGG),
        // Mislabelled: the bytes decide.
        ("voice.wav", "audio/wav", HELLO_WEBM),
    ] {
        let (s, body) = transcribe(&app, &key, name, mime, bytes, None).await;
        assert_eq!(s, 200, "{name}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(is_hello(v["text"].as_str().unwrap()), "{name}: {v}");
    }
    // Raw PCM needs its declaration.
    let pcm = &astrgate::audio::wav::parse(HELLO_WAV).unwrap().samples;
    let raw = astrgate::audio::wav::samples_to_bytes(pcm);
    let (s, text) = transcribe(&app, &key, "speech.pcm", "audio/pcm", &raw, Some("text")).await;
    assert_eq!(s, 200, "{text}");
    assert!(is_hello(&text), "{text}");

    // Errors.
    let (s, body) = transcribe(&app, &key, "broken.mp3", "audio/mpeg", b"ID3\x04\0\0\0\0\0\x05junk", None).await;
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_openai_error(s, &e, 400, "invalid_request_error", Some("invalid_audio"));
    assert!(e["error"]["message"].as_str().unwrap().contains("corrupt mp3 audio"), "{e}");
    let (s, body) = transcribe(&app, &key, "a.wav", "audio/wav", HELLO_WAV, Some("srt")).await;
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_openai_error(s, &e, 400, "invalid_request_error", None);
    assert_eq!(e["error"]["param"], "response_format");
    let form = Form::new().text("model", "whisper-1");
    let res =
        app.http.post(app.url("/v1/audio/transcriptions")).bearer_auth(&key).multipart(form).send().await.unwrap();
    let (s, e) = (res.status(), res.json::<Value>().await.unwrap());
    assert_openai_error(s, &e, 400, "invalid_request_error", None);
    assert_eq!(e["error"]["param"], "file");
}

#[tokio::test]
async fn transcriptions_are_bounded_in_size_and_length() {
    let (app, key) = offline_app("[openai]\nmax_audio_bytes = 65536\n[live]\nmax_utterance_secs = 1\n").await;
    let (s, body) = transcribe(&app, &key, "big.wav", "audio/wav", &vec![0u8; 200_000], None).await;
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_openai_error(s, &e, 413, "invalid_request_error", Some("request_too_large"));
    // hello-16k.wav is over a second long.
    let (s, body) = transcribe(&app, &key, "hello.wav", "audio/wav", HELLO_WAV, None).await;
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_openai_error(s, &e, 400, "invalid_request_error", Some("invalid_audio"));
    assert!(e["error"]["message"].as_str().unwrap().contains("longer than 1 s"), "{e}");
}

#[tokio::test]
async fn without_stt_or_tts_the_audio_routes_say_so() {
    let app = spawn_toml("[stt]\ntype = \"none\"\n[tts]\ntype = \"none\"\n").await;
    let key = app.key(&["chat"]).await;
    let res = speech(&app, &key, json!({"input": "hi"})).await;
    let (s, e) = (res.status(), res.json::<Value>().await.unwrap());
    assert_openai_error(s, &e, 503, "server_error", Some("not_configured"));
    let (s, body) = transcribe(&app, &key, "hello.wav", "audio/wav", HELLO_WAV, None).await;
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_openai_error(s, &e, 503, "server_error", Some("not_configured"));
}
