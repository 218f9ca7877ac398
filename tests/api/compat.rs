//! The older APIs on the same pipeline: stage-coded `/chat` and `/v1/conversation`.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::fake_llm::{Chunk, FakeLlm, Reply, fake_wav, tokens};
use crate::helpers::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

async fn setup(extra: &str) -> (TestApp, FakeLlm, String) {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n{extra}", fake.provider_toml("fake"))).await;
    let key = app.key(&["chat"]).await;
    (app, fake, key)
}

/// Named SSE events of a stage stream, as (event, data).
async fn stage_stream(app: &TestApp, key: &str, body: Value) -> (Vec<(String, Value)>, String) {
    let res = app.http.post(app.url("/chat?stream=true")).bearer_auth(key).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream; charset=utf-8");
    let raw = res.text().await.unwrap();
    let events = raw
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let ev = b.lines().find_map(|l| l.strip_prefix("event: ")).unwrap().to_string();
            let data = b.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (ev, serde_json::from_str(data).unwrap())
        })
        .collect();
    (events, raw)
}

#[tokio::test]
async fn stage_stream_finds_a_tag_split_across_three_deltas() {
    let (app, fake, key) = setup("").await;
    fake.push(Reply::Chunks {
        chunks: tokens(&["<sta", "te>30", "01</state>您好，", "请问发生了什么情况？"]),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let (events, raw) =
        stage_stream(&app, &key, json!({"sessionId": "call-1", "timeStamp": "202503310303", "text": "发生了交通事故"}))
            .await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"stage_code"));
    assert_eq!(names.last(), Some(&"done"));
    assert!(names[1..names.len() - 1].iter().all(|n| *n == "text_delta"), "{names:?}");
    assert_eq!(events[0].1, json!({"nextStageCode": "1002", "nextStage": "通话中"}), "3001 is remapped to 1002");
    let text: String =
        events.iter().filter(|(e, _)| e == "text_delta").map(|(_, d)| d["text"].as_str().unwrap()).collect();
    assert_eq!(text, "您好，请问发生了什么情况？");
    assert_eq!(events.last().unwrap().1, json!({"status": "completed"}));
    assert!(!raw.contains("state>"), "the tag never leaks: {raw}");
    // Byte for byte as the seed's `json.dumps(data, ensure_ascii=False)` writes them.
    assert!(
        raw.starts_with("event: stage_code\ndata: {\"nextStageCode\": \"1002\", \"nextStage\": \"通话中\"}\n\n"),
        "{raw}"
    );
    assert!(raw.ends_with("event: done\ndata: {\"status\": \"completed\"}\n\n"), "{raw}");
    // The model saw the user's text; the turn is in the history of the stage session.
    assert_eq!(fake.requests()[0]["messages"].as_array().unwrap().last().unwrap()["content"], "发生了交通事故");
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=stage")).bearer_auth(&key)).await;
    assert_eq!(b["data"]["sessions"][0]["session_id"], "stage!call-1");
    assert_eq!(b["data"]["sessions"][0]["platform_id"], "stage");
}

#[tokio::test]
async fn stage_codes_remap_and_unknown_codes() {
    let (app, fake, key) = setup("[stage]\nremap = { \"9\" = \"0000\" }\nnames = { \"0000\" = \"bye\" }\n").await;
    fake.push(Reply::Chunks {
        chunks: tokens(&["<state>9</state>", "Goodbye."]),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let (events, _) = stage_stream(&app, &key, json!({"sessionId": "s", "timeStamp": 1, "text": "bye"})).await;
    assert_eq!(events[0].1, json!({"nextStageCode": "0000", "nextStage": "bye"}));
    fake.push(Reply::Chunks {
        chunks: tokens(&["<state>7777</state>Hm"]),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let (events, _) = stage_stream(&app, &key, json!({"sessionId": "s2", "timeStamp": "t", "text": "?"})).await;
    assert_eq!(events[0].1, json!({"nextStageCode": "7777", "nextStage": ""}), "unknown codes pass through, unnamed");
    // Default tables (the rest of the seed's remap is unit-tested in compat/mod.rs): 2020 → 0002.
    let (app, fake, key) = setup("").await;
    fake.push(Reply::Chunks {
        chunks: tokens(&["<state>2020</state>", "转人工"]),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let (events, _) = stage_stream(&app, &key, json!({"sessionId": "x", "timeStamp": "t", "text": "?"})).await;
    assert_eq!(events[0].1, json!({"nextStageCode": "0002", "nextStage": "语义无法识别转接人工"}));
}

#[tokio::test]
async fn stage_non_stream_shape_and_errors() {
    let (app, fake, key) = setup("").await;
    fake.push(Reply::Chunks {
        chunks: tokens(&["<state>1002</state>", "请描述", "一下现场"]),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let (s, b) = send(
        app.http
            .post(app.url("/chat"))
            .bearer_auth(&key)
            .json(&json!({"sessionId": "n1", "timeStamp": "202501010000", "text": "hi"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"sessionId": "n1", "timeStamp": "202501010000", "nextStageCode": "1002", "nextStage": "通话中", "text": "请描述一下现场"})
    );
    fake.push(Reply::Chunks { chunks: tokens(&["no tag here"]), delay: Duration::ZERO, first_delay: Duration::ZERO });
    let (_, b) = send(
        app.http
            .post(app.url("/chat"))
            .bearer_auth(&key)
            .json(&json!({"sessionId": "n2", "timeStamp": "t", "text": "hi"})),
    )
    .await;
    assert_eq!((b["nextStageCode"].as_str(), b["text"].as_str()), (Some(""), Some("no tag here")));
    fake.push(Reply::Error(503, json!({"error": {"message": "upstream down"}})));
    let (events, _) = stage_stream(&app, &key, json!({"sessionId": "n3", "timeStamp": "t", "text": "hi"})).await;
    assert_eq!(
        events,
        vec![("error".to_string(), json!({"msg": "The model provider is unavailable (HTTP 503)", "code": "500"}))]
    );
    fake.push(Reply::Error(503, json!({"error": {"message": "upstream down"}})));
    let (s, b) = send(
        app.http
            .post(app.url("/chat"))
            .bearer_auth(&key)
            .json(&json!({"sessionId": "n4", "timeStamp": "t", "text": "hi"})),
    )
    .await;
    assert_error(s, &b, 502, "The model provider is unavailable (HTTP 503)");
    let cases = [
        (json!({"timeStamp": "t", "text": "x"}), "Missing key: sessionId"),
        (json!({"sessionId": "s", "text": "x"}), "Missing key: timeStamp"),
        (json!({"sessionId": "s", "timeStamp": "t"}), "Missing key: text"),
        (json!({"sessionId": "s", "timeStamp": "t", "text": " "}), "text is empty"),
        (json!({"sessionId": 5, "timeStamp": "t", "text": "x"}), "Invalid request body: sessionId must be a string"),
        (
            json!({"sessionId": "s", "timeStamp": ["t"], "text": "x"}),
            "Invalid request body: timeStamp must be a string",
        ),
    ];
    for (body, msg) in cases {
        let (s, b) = send(app.http.post(app.url("/chat")).bearer_auth(&key).json(&body)).await;
        assert_error(s, &b, 400, msg);
    }
}

#[tokio::test]
async fn session_variables_reach_the_model() {
    let (app, fake, key) =
        setup("[[profiles]]\nid = \"agent\"\nsystem_prompt = \"Plate: {{hphm1}}. Caller: {{name}}.\"\n").await;
    let set = |k: &str, v: Value| json!({"sessionId": "a1002", "timeStamp": "202503310303", "key": k, "value": v});
    let (s, b) =
        send(app.http.post(app.url("/set_info")).bearer_auth(&key).json(&set("hphm1", json!("沪A8939")))).await;
    assert_eq!(s, 200);
    assert_eq!(b, json!({"code": 200, "msg": "success", "sessionId": "a1002", "timeStamp": "202503310303"}));
    send(app.http.post(app.url("/set_info")).bearer_auth(&key).json(&set("name", json!("张三")))).await;
    let (_, b) = send(
        app.http
            .post(app.url("/get_info"))
            .bearer_auth(&key)
            .json(&json!({"sessionId": "a1002", "timeStamp": "202503310303"})),
    )
    .await;
    assert_eq!(b["data"], json!({"hphm1": "沪A8939", "name": "张三"}));
    let _ = send(
        app.http
            .post(app.url("/chat"))
            .bearer_auth(&key)
            .json(&json!({"sessionId": "a1002", "timeStamp": "t", "text": "hi"})),
    )
    .await;
    assert_eq!(
        fake.requests()[0]["messages"][0],
        json!({"role": "system", "content": "Plate: 沪A8939. Caller: 张三."})
    );

    let (s, b) = send(
        app.http
            .delete(app.url("/delete_session"))
            .bearer_auth(&key)
            .json(&json!({"sessionId": "a1002", "timeStamp": "t"})),
    )
    .await;
    assert_eq!((s.as_u16(), b["msg"].as_str()), (200, Some("success")));
    let (_, b) = send(
        app.http.post(app.url("/get_info")).bearer_auth(&key).json(&json!({"sessionId": "a1002", "timeStamp": "t"})),
    )
    .await;
    assert_eq!(b["data"], json!({}));
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=stage")).bearer_auth(&key)).await;
    assert_eq!(b["data"]["total"], 0, "the conversation is gone too");
    let (s, b) = send(
        app.http
            .post(app.url("/set_info"))
            .bearer_auth(&key)
            .json(&json!({"sessionId": "a", "timeStamp": "t", "value": "x"})),
    )
    .await;
    assert_error(s, &b, 400, "Missing key: key");
    let (s, _) =
        send(app.http.post(app.url("/set_info")).bearer_auth(&key).json(&set("big", json!("x".repeat(70_000))))).await;
    assert_eq!(s, 413);
}

#[tokio::test]
async fn compat_apis_need_a_chat_key_unless_opened() {
    let (app, _fake, _key) = setup("").await;
    let body = json!({"sessionId": "s", "timeStamp": "t", "text": "hi"});
    let (s, b) = send(app.http.post(app.url("/chat")).json(&body)).await;
    assert_error(s, &b, 401, "Missing API key");
    let im = app.key(&["im"]).await;
    let (s, b) = send(app.http.post(app.url("/v1/conversation")).header("X-API-Key", &im).json(&json!({}))).await;
    assert_error(s, &b, 403, "Insufficient API key scope");
    let (open, _fake, _) = setup("[compat]\nrequire_api_key = false\n").await;
    let (s, b) = send(open.http.post(open.url("/chat")).json(&body)).await;
    assert_eq!(s, 200, "{b}");
}

async fn conversation(app: &TestApp, key: &str, body: Value) -> Value {
    let res = app.http.post(app.url("/v1/conversation")).bearer_auth(key).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let raw = res.text().await.unwrap();
    let line = raw.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("no data frame in {raw:?}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn conversation_text_in_text_out_and_history() {
    let (app, fake, key) = setup("").await;
    let v = conversation(&app, &key, json!({"session_id": "friend-1", "user_id": "233", "group_id": "444", "nickname": "路人甲", "messages": [{"type": "text", "value": "你好?"}]})).await;
    assert_eq!(v, json!({"messages": [{"type": "text", "value": "Echo: 你好?"}]}));
    assert_eq!(fake.requests()[0]["messages"][0]["content"], "你好?");
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=233")).bearer_auth(&key)).await;
    let s = &b["data"]["sessions"][0];
    assert_eq!((s["session_id"].as_str(), s["platform_id"].as_str()), (Some("conv!friend-1"), Some("conversation")));
    let (_, h) =
        send(app.http.get(app.url("/api/v1/chat/sessions/conv!friend-1/messages?username=233")).bearer_auth(&key))
            .await;
    assert_eq!(h["data"]["messages"][0]["content"]["nickname"], "路人甲");
    // A second turn carries the first.
    let _ = conversation(
        &app,
        &key,
        json!({"session_id": "friend-1", "user_id": 233, "messages": [{"type": "text", "value": "再见"}]}),
    )
    .await;
    assert_eq!(fake.requests()[1]["messages"].as_array().unwrap().len(), 3);
    // Provider failures come back as a message plus an error object.
    fake.push(Reply::Error(500, json!({"error": {"message": "boom"}})));
    let v = conversation(
        &app,
        &key,
        json!({"session_id": "friend-2", "user_id": "1", "messages": [{"type": "text", "value": "x"}]}),
    )
    .await;
    assert_eq!(v["error"]["code"], "UPSTREAM_ERROR");
    assert_eq!(v["messages"][0]["value"], "The model provider is unavailable (HTTP 500)");
}

#[tokio::test]
async fn conversation_voice_in_and_voice_out_with_espeak() {
    let (app, fake, key) = setup("[[profiles]]\nid = \"voice\"\ntts = true\n").await;
    fake.push(Reply::Chunks {
        chunks: vec![Chunk::Content("Nice to hear you.".into())],
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    use std::io::Write;
    let mut child = std::process::Command::new("espeak-ng")
        .args(["--stdout", "--stdin", "-v", "en-us"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello world").unwrap();
    let wav = child.wait_with_output().unwrap().stdout;
    let v = conversation(&app, &key, json!({"session_id": "v1", "user_id": "u", "messages": [{"type": "voice", "value": B64.encode(&wav), "format": "wav"}], "prefered_format": "wav"})).await;
    let heard =
        fake.requests()[0]["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
    assert!(heard.contains("hello"), "pocketsphinx heard {heard:?}");
    assert_eq!(v["messages"][0], json!({"type": "text", "value": "Nice to hear you."}));
    let voice = &v["messages"][1];
    assert_eq!(voice["type"], "voice");
    assert_eq!(voice["format"], "wav");
    let url = voice["value"].as_str().unwrap();
    let audio = B64.decode(url.strip_prefix("data:audio/wav;base64,").expect("a WAV data URL")).unwrap();
    assert!(astrgate::audio::wav::parse(&audio).unwrap().duration_secs() > 0.5, "real speech from espeak-ng");
    // The stored user message describes the voice as its attachment record does.
    let (_, h) =
        send(app.http.get(app.url("/api/v1/chat/sessions/conv!v1/messages?username=u")).bearer_auth(&key)).await;
    let part = &h["data"]["messages"][0]["content"]["message"][0];
    assert_eq!(part["type"], "record");
    let rec = app.state.store.get_attachment(part["attachment_id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (part["filename"].as_str(), part["mime_type"].as_str()),
        (Some("voice.wav"), Some(rec.mime_type.as_str()))
    );
    assert!(part["transcript"].as_str().unwrap().contains("hello"));
    // Ogg cannot be produced: a clear 400 naming what can (tests/api/voice_formats.rs: the rest).
    let (s, b) = send(app.http.post(app.url("/v1/conversation")).bearer_auth(&key).json(&json!({"session_id": "v2", "user_id": "u", "messages": [{"type": "text", "value": "x"}], "prefered_format": "ogg"}))).await;
    assert_error(
        s,
        &b,
        400,
        "prefered_format \"ogg\" is not supported: astrgate has no ogg encoder; supported formats: wav, mp3, silk, amr",
    );
}

#[tokio::test]
async fn conversation_images_and_bad_inputs() {
    let (app, fake, key) = setup("").await;
    let png: Vec<u8> = vec![
        0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1,
        8, 6, 0, 0, 0,
    ];
    let _ = conversation(&app, &key, json!({"session_id": "img", "user_id": "u", "messages": [{"type": "text", "value": "what is this"}, {"type": "image", "value": B64.encode(&png)}]})).await;
    let content = &fake.requests()[0]["messages"][0]["content"];
    assert_eq!(content[1]["image_url"]["url"], format!("data:image/png;base64,{}", B64.encode(&png)));
    let cases = [
        (json!({"user_id": "u", "messages": [{"type": "text", "value": "x"}]}), "Missing key: session_id"),
        (json!({"session_id": "s", "messages": [{"type": "text", "value": "x"}]}), "Missing key: user_id"),
        (json!({"session_id": "s", "user_id": "u"}), "Missing key: messages"),
        (json!({"session_id": "s", "user_id": "u", "messages": []}), "messages must not be empty"),
        (json!({"session_id": "s", "user_id": "u", "messages": "hi"}), "messages must be a list"),
        (
            json!({"session_id": "s", "user_id": "u", "messages": [{"type": "image", "value": "@@@"}]}),
            "messages[0].value is not valid base64",
        ),
        (
            json!({"session_id": "s", "user_id": "u", "messages": [{"type": "image", "value": B64.encode(b"plain text")}]}),
            "messages[0] is not a recognised image",
        ),
        (
            json!({"session_id": "s", "user_id": "u", "messages": [{"type": "video", "value": "x"}]}),
            "messages[0].type must be text, image or voice, got \"video\"",
        ),
        (
            json!({"session_id": "s", "user_id": "u", "messages": [{"type": "text"}]}),
            "messages[0].value must be a string",
        ),
    ];
    for (body, msg) in cases {
        let (s, b) = send(app.http.post(app.url("/v1/conversation")).bearer_auth(&key).json(&body)).await;
        assert_error(s, &b, 400, msg);
    }
}

/// Files in the attachments folder (media of accepted requests only).
fn stored_files(app: &TestApp) -> usize {
    std::fs::read_dir(app.dir.path().join("attachments")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn conversation_rejects_every_bad_input_and_keeps_nothing() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.speaking_toml()).await;
    let key = app.key(&["chat"]).await;
    let png = B64.encode([0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R']);
    let wav = B64.encode(fake_wav("hi"));
    let base = |messages: Value| json!({"session_id": "s", "user_id": "u", "messages": messages});
    let mut too_many = Vec::new();
    too_many.resize(33, json!({"type": "text", "value": "x"}));
    let cases = [
        (base(json!([{"type": "text", "value": "   "}])), 400, "Message content is empty".to_string()),
        (
            json!({"session_id": "s".repeat(129), "user_id": "u", "messages": [{"type": "text", "value": "x"}]}),
            400,
            "session_id or user_id is too long".into(),
        ),
        (
            json!({"session_id": ["s"], "user_id": "u", "messages": [{"type": "text", "value": "x"}]}),
            400,
            "Invalid request body: session_id must be a string".into(),
        ),
        (base(Value::Array(too_many)), 400, "too many messages (max 32)".into()),
        (
            json!({"session_id": "s", "user_id": "u", "messages": [{"type": "text", "value": "x"}], "prefered_format": "flac"}),
            400,
            "prefered_format \"flac\" is not supported: astrgate has no flac encoder; supported formats: wav, mp3, silk, amr"
                .into(),
        ),
        // A good image, then a bad part: the image must not be kept.
        (
            base(json!([{"type": "image", "value": png}, {"type": "image", "value": "!!"}])),
            400,
            "messages[1].value is not valid base64".into(),
        ),
    ];
    for (body, status, msg) in cases {
        let (s, b) = send(app.http.post(app.url("/v1/conversation")).bearer_auth(&key).json(&body)).await;
        assert_error(s, &b, status, &msg);
    }
    // Speech that says nothing is an error, not an empty turn; nothing is kept either.
    *fake.inner.transcript.lock().unwrap() = Some("  ".into());
    let body = base(json!([{"type": "image", "value": png}, {"type": "voice", "value": wav, "format": "wav"}]));
    let (s, b) = send(app.http.post(app.url("/v1/conversation")).bearer_auth(&key).json(&body)).await;
    assert_error(s, &b, 400, "messages[1]: no speech was recognised");
    assert_eq!(stored_files(&app), 0, "a rejected request keeps no media");
    assert!(fake.requests().is_empty(), "no rejected request reached the model");
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=u")).bearer_auth(&key)).await;
    assert_eq!(b["data"]["total"], 0, "and no session: {b}");

    // Without STT, voice is refused by name.
    let app = spawn_toml(&format!("{}\n[stt]\ntype = \"none\"\n", fake.provider_toml("fake"))).await;
    let key = app.key(&["chat"]).await;
    let (s, b) = send(
        app.http
            .post(app.url("/v1/conversation"))
            .bearer_auth(&key)
            .json(&base(json!([{"type": "voice", "value": wav}]))),
    )
    .await;
    assert_error(s, &b, 400, "No STT provider is configured: voice messages cannot be transcribed");

    // Without any LLM provider, both APIs answer 503 and store nothing.
    let app = spawn_toml("").await;
    let key = app.key(&["chat"]).await;
    let (s, b) = send(
        app.http
            .post(app.url("/v1/conversation"))
            .bearer_auth(&key)
            .json(&base(json!([{"type": "text", "value": "x"}]))),
    )
    .await;
    assert_error(s, &b, 503, "No LLM provider is configured");
    let (s, b) = send(
        app.http
            .post(app.url("/chat"))
            .bearer_auth(&key)
            .json(&json!({"sessionId": "s", "timeStamp": "t", "text": "x"})),
    )
    .await;
    assert_error(s, &b, 503, "No LLM provider is configured");
}

#[tokio::test]
async fn session_variables_reject_bad_input_and_keep_what_was_accepted() {
    let (app, _fake, key) = setup("").await;
    let post = |path: &str, body: Value| app.http.post(app.url(path)).bearer_auth(&key).json(&body);
    let (s, _) =
        send(post("/set_info", json!({"sessionId": "v", "timeStamp": "t", "key": "plate", "value": "沪A1"}))).await;
    assert_eq!(s, 200);
    let cases = [
        (json!({"sessionId": "v", "timeStamp": "t", "key": "k"}), 400, "Missing key: value".to_string()),
        (
            json!({"sessionId": "v", "timeStamp": "t", "key": "k", "value": ["x"]}),
            400,
            "Invalid request body: value must be a string".into(),
        ),
        (
            json!({"sessionId": "v", "timeStamp": "t", "key": "k".repeat(129), "value": "x"}),
            400,
            "key is too long (max 128 characters)".into(),
        ),
        (
            json!({"sessionId": "v", "timeStamp": "t", "key": "k", "value": "x".repeat(65 * 1024)}),
            413,
            "value is too large (max 65536 characters)".into(),
        ),
        (
            json!({"sessionId": "v".repeat(129), "timeStamp": "t", "key": "k", "value": "x"}),
            400,
            "sessionId is too long (max 128 characters)".into(),
        ),
        (json!({"sessionId": "v", "timeStamp": "t", "value": "x"}), 400, "Missing key: key".into()),
        (
            json!({"sessionId": "v", "timeStamp": {}, "key": "k", "value": "x"}),
            400,
            "Invalid request body: timeStamp must be a string".into(),
        ),
    ];
    for (body, status, msg) in cases {
        let (s, b) = send(post("/set_info", body)).await;
        assert_error(s, &b, status, &msg);
    }
    for path in ["/get_info", "/delete_session"] {
        let req = |body: Value| {
            let r = if path == "/get_info" { app.http.post(app.url(path)) } else { app.http.delete(app.url(path)) };
            r.bearer_auth(&key).json(&body)
        };
        let (s, b) = send(req(json!({"timeStamp": "t"}))).await;
        assert_error(s, &b, 400, "Missing key: sessionId");
        let (s, b) = send(req(json!({"sessionId": "v"}))).await;
        assert_error(s, &b, 400, "Missing key: timeStamp");
        let (s, b) = send(req(json!(["v"]))).await;
        assert_error(s, &b, 400, "Invalid request body: expected a JSON object");
    }
    // A session holds at most 256 variables; replacing one is always allowed.
    for i in 1..256 {
        let (s, _) =
            send(post("/set_info", json!({"sessionId": "v", "timeStamp": "t", "key": format!("k{i}"), "value": i})))
                .await;
        assert_eq!(s, 200, "variable {i}");
    }
    let (s, b) =
        send(post("/set_info", json!({"sessionId": "v", "timeStamp": "t", "key": "one-more", "value": "x"}))).await;
    assert_error(s, &b, 400, "too many variables in this session (max 256)");
    let (s, _) =
        send(post("/set_info", json!({"sessionId": "v", "timeStamp": "t", "key": "plate", "value": "沪A2"}))).await;
    assert_eq!(s, 200);
    // Nothing accepted was lost to the rejected requests.
    let (_, b) = send(post("/get_info", json!({"sessionId": "v", "timeStamp": "t"}))).await;
    let data = b["data"].as_object().unwrap();
    assert_eq!(data.len(), 256);
    assert_eq!((data["plate"].as_str(), data["k7"].as_str()), (Some("沪A2"), Some("7")));
}
