//! Voice in every format, both directions (issue 20), over real HTTP and WebSocket. The inputs
//! are the committed fixtures of `src/audio/testdata`: one espeak-ng phrase ("Hello world.")
//! converted the way users' clients convert it — ffmpeg (mp3, ogg/opus, ogg/vorbis, webm/opus),
//! sox (amr), silk-python and pilk (silk) — by `make-fixtures.sh`. The offline default STT,
//! pocketsphinx, must hear them; spoken replies (espeak-ng) must be real files of the asked
//! format, which pocketsphinx must hear again when they are sent back.
//!
//! pocketsphinx is a small model and mishears lossy speech now and then ("though world" for the
//! 32 kbit/s MP3), always the same way for the same bytes: a transcript counts as heard when it
//! has a word of the phrase. Garbage, silence or a wrong decode gives none.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use astrgate::audio::codec::{self, AudioFormat};

use crate::fake_llm::{FakeLlm, Reply, text};
use crate::files::upload;
use crate::helpers::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

const HELLO_WAV: &[u8] = include_bytes!("../../src/audio/testdata/hello-16k.wav");
const HELLO_MP3: &[u8] = include_bytes!("../../src/audio/testdata/hello.mp3");
const HELLO_AMR: &[u8] = include_bytes!("../../src/audio/testdata/hello.amr");
const HELLO_TENCENT_SILK: &[u8] = include_bytes!("../../src/audio/testdata/hello-tencent.silk");
const HELLO_SKYPE_SILK: &[u8] = include_bytes!("../../src/audio/testdata/hello-skype.silk");
const HELLO_OPUS_OGG: &[u8] = include_bytes!("../../src/audio/testdata/hello-opus.ogg");
const HELLO_VORBIS_OGG: &[u8] = include_bytes!("../../src/audio/testdata/hello-vorbis.ogg");
const HELLO_OPUS_WEBM: &[u8] = include_bytes!("../../src/audio/testdata/hello-opus.webm");

/// What the model is scripted to answer: espeak-ng speaks it, and pocketsphinx must hear it.
const REPLY: &str = "Hello world.";

/// Whether pocketsphinx heard the phrase (see the module docs).
fn is_hello(transcript: &str) -> bool {
    transcript.split_whitespace().any(|w| w == "hello" || w == "world")
}

/// The fake model, the offline STT and TTS (pocketsphinx, espeak-ng), a profile that speaks.
async fn speaking_app(extra: &str) -> (TestApp, FakeLlm, String) {
    let fake = FakeLlm::start().await;
    let app =
        spawn_toml(&format!("{}\n[[profiles]]\nid = \"voice\"\ntts = true\n{extra}", fake.provider_toml("fake"))).await;
    assert_eq!(app.state.agent.providers.stt().map(|s| s.name().to_string()).as_deref(), Some("pocketsphinx"));
    let key = app.key(&["chat", "file"]).await;
    (app, fake, key)
}

/// A `/v1/conversation` turn: the status and either the SSE frame or the error envelope.
async fn converse(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    let res = app.http.post(app.url("/v1/conversation")).bearer_auth(key).json(&body).send().await.unwrap();
    let status = res.status();
    let raw = res.text().await.unwrap();
    let json = raw.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or(&raw);
    (status, serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {raw:?}")))
}

fn voice_body(session: &str, audio: &[u8], declared: Option<&str>, prefered: &str) -> Value {
    let mut voice = json!({"type": "voice", "value": B64.encode(audio)});
    if let Some(f) = declared {
        voice["format"] = json!(f);
    }
    json!({"session_id": session, "user_id": "u", "messages": [voice], "prefered_format": prefered})
}

/// The last user message the model received in request `i`.
fn heard(fake: &FakeLlm, i: usize) -> String {
    let req = &fake.requests()[i];
    req["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string()
}

/// The stored user message's voice part of a `/v1/conversation` session.
async fn stored_voice(app: &TestApp, key: &str, session: &str) -> Value {
    let url = app.url(&format!("/api/v1/chat/sessions/conv!{session}/messages?username=u"));
    let (_, h) = send(app.http.get(url).bearer_auth(key)).await;
    h["data"]["messages"][0]["content"]["message"][0].clone()
}

/// Sends `input` as voice, asks for the reply in `out`, and checks both directions: pocketsphinx
/// heard the input, the reply's data URL is a real `out` file (MIME, magic, length), and sent
/// back as voice it is heard again.
async fn both_ways(input: &[u8], declared: &str, out: AudioFormat, magic: &[u8]) {
    let (app, fake, key) = speaking_app("").await;
    fake.push(Reply::Chunks { chunks: text(REPLY), delay: Default::default(), first_delay: Default::default() });
    let (s, v) = converse(&app, &key, voice_body("in", input, Some(declared), out.name())).await;
    assert_eq!(s, 200, "{v}");
    let first = heard(&fake, 0);
    assert!(is_hello(&first), "{declared}: pocketsphinx heard {first:?}");
    let voice = &v["messages"][1];
    assert_eq!((voice["type"].as_str(), voice["format"].as_str()), (Some("voice"), Some(out.name())), "{v}");
    let url = voice["value"].as_str().unwrap();
    let b64 = url.strip_prefix(&format!("data:{};base64,", out.mime())).unwrap_or_else(|| panic!("{out}: {url:.40}"));
    let audio = B64.decode(b64).unwrap();
    assert!(audio.starts_with(magic), "{out}: starts {:02x?}", &audio[..audio.len().min(10)]);
    assert_eq!(codec::sniff(&audio), Some(out));
    let secs = codec::decode_to_pcm16k(&audio, None, 60).unwrap().len() as f32 / 16_000.0;
    assert!(secs > 0.5, "{out}: {secs} s of speech");
    // The other direction: our own file, sent back, is speech pocketsphinx recognises.
    let (s, v) = converse(&app, &key, voice_body("back", &audio, Some(out.name()), "wav")).await;
    assert_eq!(s, 200, "{v}");
    let again = heard(&fake, 1);
    assert!(is_hello(&again), "{out} reply sent back: pocketsphinx heard {again:?}");
    let part = stored_voice(&app, &key, "back").await;
    assert_eq!(part["filename"], format!("voice.{}", out.extension()));
}

#[tokio::test]
async fn wav_both_ways() {
    both_ways(HELLO_WAV, "wav", AudioFormat::Wav, b"RIFF").await;
}

#[tokio::test]
async fn mp3_both_ways() {
    // ffmpeg's MP3 carries an ID3v2 tag; ours is bare LAME frames.
    both_ways(HELLO_MP3, "mp3", AudioFormat::Mp3, &[0xFF]).await;
}

#[tokio::test]
async fn silk_both_ways() {
    both_ways(HELLO_TENCENT_SILK, "silk", AudioFormat::Silk, b"\x02#!SILK_V3").await;
}

#[tokio::test]
async fn amr_both_ways() {
    both_ways(HELLO_AMR, "amr", AudioFormat::Amr, b"#!AMR\n").await;
}

/// Formats that are only decoded (Ogg and WebM from browsers and Telegram, SILK in the Skype SDK's
/// own form), and raw PCM, which needs its `format`.
#[tokio::test]
async fn ogg_webm_skype_silk_and_raw_pcm_are_heard() {
    let (app, fake, key) = speaking_app("").await;
    let pcm = astrgate::audio::wav::samples_to_bytes(&astrgate::audio::wav::parse(HELLO_WAV).unwrap().samples);
    let inputs: [(&str, &[u8], &str, &str); 5] = [
        ("opus", HELLO_OPUS_OGG, "ogg", "voice.ogg"),
        ("vorbis", HELLO_VORBIS_OGG, "ogg", "voice.ogg"),
        ("webm", HELLO_OPUS_WEBM, "webm", "voice.webm"),
        ("skype", HELLO_SKYPE_SILK, "silk", "voice.silk"),
        ("pcm", &pcm, "pcm", "voice.pcm"),
    ];
    for (i, (session, bytes, declared, name)) in inputs.into_iter().enumerate() {
        let (s, v) = converse(&app, &key, voice_body(session, bytes, Some(declared), "mp3")).await;
        assert_eq!(s, 200, "{session}: {v}");
        let got = heard(&fake, i);
        assert!(is_hello(&got), "{session}: pocketsphinx heard {got:?}");
        assert!(v["messages"][1]["value"].as_str().unwrap().starts_with("data:audio/mpeg;base64,"));
        let part = stored_voice(&app, &key, session).await;
        assert_eq!(part["filename"], name, "{session}: {part}");
        assert!(is_hello(part["transcript"].as_str().unwrap()));
    }
}

/// Files in the attachments folder.
fn stored_files(app: &TestApp) -> usize {
    std::fs::read_dir(app.dir.path().join("attachments")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn the_bytes_decide_and_bad_audio_is_a_clear_400() {
    let (app, fake, key) = speaking_app("").await;
    // An MP3 declared as WAV, and one with no format at all: the bytes decide.
    for (session, declared) in [("mislabelled", Some("wav")), ("undeclared", None)] {
        let (s, v) = converse(&app, &key, voice_body(session, HELLO_MP3, declared, "wav")).await;
        assert_eq!(s, 200, "{v}");
        let part = stored_voice(&app, &key, session).await;
        assert_eq!((part["filename"].as_str(), part["mime_type"].as_str()), (Some("voice.mp3"), Some("audio/mpeg")));
    }
    assert!(is_hello(&heard(&fake, 0)) && is_hello(&heard(&fake, 1)));
    let files_before = stored_files(&app);

    let mut wideband = b"#!AMR-WB\n".to_vec();
    wideband.extend_from_slice(&[0x0C; 40]);
    let cases: [(&[u8], Option<&str>, &str); 6] = [
        (b"this is not audio at all, only text", Some("mp3"), "messages[0]: corrupt mp3 audio: "),
        (b"this is not audio at all, only text", None, "messages[0]: unrecognised audio format"),
        (b"#!SILK_V3\x05\x00abc", Some("wav"), "messages[0]: corrupt silk audio: "),
        (b"OggS\x00\x02garbage-garbage-garbage", Some("ogg"), "messages[0]: corrupt ogg audio: "),
        (&HELLO_AMR[..40], Some("amr"), "messages[0]: corrupt amr audio: "),
        (&wideband, Some("amr"), "messages[0]: unsupported amr audio: AMR-WB"),
    ];
    for (bytes, declared, want) in cases {
        let (s, b) = converse(&app, &key, voice_body("bad", bytes, declared, "wav")).await;
        assert_eq!(s, 400, "{want}: {b}");
        assert_eq!(b["status"], "error");
        let msg = b["message"].as_str().unwrap();
        assert!(msg.starts_with(want), "wanted {want:?}, got {msg:?}");
    }
    assert_eq!(fake.requests().len(), 2, "no bad request reached the model");
    assert_eq!(stored_files(&app), files_before, "and none kept its audio");

    // The decoded length is capped by [live] max_utterance_secs, whatever the format's size.
    let (app, _fake, key) = speaking_app("[live]\nmax_utterance_secs = 1\n").await;
    for (bytes, declared) in [(HELLO_MP3, "mp3"), (HELLO_AMR, "amr"), (HELLO_TENCENT_SILK, "silk")] {
        let (s, b) = converse(&app, &key, voice_body("long", bytes, Some(declared), "wav")).await;
        assert_error(s, &b, 400, "messages[0]: audio longer than 1 s");
    }
}

async fn live(app: &TestApp, key: &str) -> WsClient {
    ws_connect(app, &format!("/api/v1/live/ws?api_key={key}&username=u"), &[]).await
}

/// An utterance: the bytes in parts of `part` bytes, as a client streams them.
async fn speak(ws: &mut WsClient, stamp: &str, bytes: &[u8], part: usize) {
    ws.send(json!({"t": "start_speaking", "stamp": stamp})).await;
    for chunk in bytes.chunks(part) {
        ws.send(json!({"t": "speaking_part", "data": B64.encode(chunk)})).await;
    }
    ws.send(json!({"t": "end_speaking", "stamp": stamp})).await;
}

/// What the turn heard (its `user_msg`), read through its `end`.
async fn live_heard(ws: &mut WsClient) -> String {
    let frames = ws.until(|f| f["t"] == "end").await;
    let msg = frames.iter().find(|f| f["t"] == "user_msg").unwrap_or_else(|| panic!("no user_msg: {frames:?}"));
    msg["data"]["text"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn live_utterances_may_be_encoded_files_and_raw_pcm_still_works() {
    let fake = FakeLlm::start().await;
    // No TTS: the turns answer with bot_msg, and only hearing is under test.
    let app = spawn_toml(&format!("{}\n[tts]\ntype = \"none\"\n", fake.provider_toml("fake"))).await;
    let key = app.key(&["chat"]).await;
    let mut ws = live(&app, &key).await;
    let pcm = astrgate::audio::wav::samples_to_bytes(&astrgate::audio::wav::parse(HELLO_WAV).unwrap().samples);
    let utterances: [(&str, &[u8]); 4] =
        [("ogg", HELLO_OPUS_OGG), ("mp3", HELLO_MP3), ("webm", HELLO_OPUS_WEBM), ("pcm", &pcm)];
    for (i, (stamp, bytes)) in utterances.into_iter().enumerate() {
        speak(&mut ws, stamp, bytes, 1000).await;
        let text = live_heard(&mut ws).await;
        assert!(is_hello(&text), "{stamp}: pocketsphinx heard {text:?}");
        assert_eq!(heard(&fake, i), text, "{stamp}: the transcript reached the model");
    }
    // A corrupt file is named, the turn ends, and the socket goes on.
    speak(&mut ws, "bad", b"OggS\x00\x02garbage-garbage-garbage", 1000).await;
    let frames = ws.until(|f| f["t"] == "end").await;
    let err = &frames[frames.len() - 2];
    assert_eq!((err["t"].as_str(), err["code"].as_str()), (Some("error"), Some("INVALID_MESSAGE_FORMAT")), "{err}");
    assert!(err["data"].as_str().unwrap().starts_with("utterance: corrupt ogg audio: "), "{err}");
    ws.send(json!({"t": "text_input", "text": "still there?"})).await;
    assert!(ws.until(|f| f["t"] == "end").await.iter().any(|f| f["t"] == "bot_msg"));
    assert_eq!(fake.requests().len(), 5);

    // Encoded audio is small: its decoded length is what the cap measures.
    let app = spawn_toml(&format!("{}\n[live]\nmax_utterance_secs = 1\n", fake.provider_toml("fake"))).await;
    let key = app.key(&["chat"]).await;
    let mut ws = live(&app, &key).await;
    speak(&mut ws, "long", HELLO_MP3, 1000).await;
    let frames = ws.until(|f| f["t"] == "end").await;
    assert_eq!(
        frames[frames.len() - 2],
        json!({"t": "error", "data": "utterance: audio longer than 1 s", "code": "AUDIO_TOO_LONG"})
    );
}

#[tokio::test]
async fn record_attachments_in_mp3_amr_silk_and_ogg_are_transcribed() {
    let (app, fake, key) = speaking_app("").await;
    let files: [(&str, &str, &[u8]); 4] = [
        ("memo.mp3", "audio/mpeg", HELLO_MP3),
        ("memo.amr", "audio/amr", HELLO_AMR),
        // What a QQ bridge uploads: no type anyone knows.
        ("memo.silk", "application/octet-stream", HELLO_TENCENT_SILK),
        ("memo.ogg", "audio/ogg", HELLO_OPUS_OGG),
    ];
    let mut parts = vec![json!({"type": "plain", "text": "listen"})];
    for (name, mime, bytes) in files {
        let (s, b) = upload(&app, &key, name, mime, bytes.to_vec()).await;
        assert_eq!((s.as_u16(), b["data"]["type"].as_str()), (200, Some("record")), "{name}: {b}");
        parts.push(json!({"type": "record", "attachment_id": b["data"]["attachment_id"]}));
    }
    let frames = chat(&app, &key, json!({"username": "u", "message": parts})).await.collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    let content = fake.requests()[0]["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    // Only text parts, so the model gets them joined into one string.
    let content = content.as_str().unwrap();
    for name in ["memo.mp3", "memo.amr", "memo.silk", "memo.ogg"] {
        let at = content.find(&format!("[Voice message {name}, transcribed]\n")).unwrap_or_else(|| panic!("{content}"));
        let line = content[at..].lines().nth(1).unwrap_or_default();
        assert!(is_hello(line), "{name}: pocketsphinx heard {line:?}");
    }

    // A record that is not what its magic number says: a 400 naming it and its format.
    let mut broken = b"#!AMR\n".to_vec();
    broken.extend_from_slice(&[0x3C, 1, 2, 3]);
    let (_, b) = upload(&app, &key, "broken.amr", "audio/amr", broken).await;
    assert_eq!(b["data"]["type"], "record");
    let body = json!({"username": "u", "message": [{"type": "record", "attachment_id": b["data"]["attachment_id"]}]});
    let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&body)).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["message"].as_str().unwrap().starts_with("record broken.amr: corrupt amr audio: "), "{b}");
    assert_eq!(fake.requests().len(), 1);
}
