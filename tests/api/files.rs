//! Attachments: upload, download (Range, ETag, disposition), limits, hostile names and ids,
//! and attachments reaching the model; spoken replies as media out.

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Reply, text};
use crate::helpers::*;

const PNG: &[u8] = &[
    0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1, 8,
    6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89, 0, 0, 0, 0x0D, b'I', b'D', b'A', b'T', 0x78, 0x9C, 0x63, 0, 1, 0, 0, 5, 0, 1,
    0x0D, 0x0A, 0x2D, 0xB4, 0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82,
];

pub async fn upload(app: &TestApp, key: &str, name: &str, mime: &str, bytes: Vec<u8>) -> (reqwest::StatusCode, Value) {
    let form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_string()).mime_str(mime).unwrap());
    send(app.http.post(app.url("/api/v1/file")).bearer_auth(key).multipart(form)).await
}

fn attachment_files(app: &TestApp) -> Vec<String> {
    match std::fs::read_dir(app.state.config.data_dir.join("attachments")) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => vec![],
    }
}

#[tokio::test]
async fn a_multi_mib_binary_round_trips_byte_identical() {
    let app = spawn_app().await;
    let key = app.key(&["file"]).await;
    let data: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (s, b) = upload(&app, &key, "blob.bin", "application/octet-stream", data.clone()).await;
    assert_eq!(s, 200, "{b}");
    let id = b["data"]["attachment_id"].as_str().unwrap();
    assert_eq!(b["data"]["filename"], "blob.bin");
    assert_eq!(b["data"]["type"], "file");
    assert!(b["data"]["stored_filename"].as_str().unwrap().ends_with("_blob.bin"));
    let res =
        app.http.get(app.url(&format!("/api/v1/file?attachment_id={id}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    // Not a passive type: a download, never rendered in our origin.
    assert_eq!(h["content-disposition"], "attachment; filename=\"blob.bin\"; filename*=UTF-8''blob.bin");
    let etag = h["etag"].to_str().unwrap().to_string();
    let body = res.bytes().await.unwrap();
    assert!(body == data, "byte-identical");

    let res = app
        .http
        .get(app.url(&format!("/api/v1/file?attachment_id={id}")))
        .bearer_auth(&key)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], format!("bytes 1000-1999/{}", data.len()).as_str());
    assert!(res.bytes().await.unwrap() == data[1000..2000]);
    let res = app
        .http
        .get(app.url(&format!("/api/v1/file?attachment_id={id}")))
        .bearer_auth(&key)
        .header("Range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert!(res.bytes().await.unwrap() == data[data.len() - 10..]);
    let res = app
        .http
        .get(app.url(&format!("/api/v1/file?attachment_id={id}")))
        .bearer_auth(&key)
        .header("Range", "bytes=99999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(res.headers()["content-range"], format!("bytes */{}", data.len()).as_str());
    let res = app
        .http
        .get(app.url(&format!("/api/v1/file?attachment_id={id}")))
        .bearer_auth(&key)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
}

#[tokio::test]
async fn same_name_uploads_never_overwrite_each_other() {
    let app = spawn_app().await;
    let key = app.key(&["file"]).await;
    let (_, a) = upload(&app, &key, "a.png", "image/png", PNG.to_vec()).await;
    let mut other = PNG.to_vec();
    other.push(0);
    let (_, b) = upload(&app, &key, "a.png", "image/png", other.clone()).await;
    let (ida, idb) = (a["data"]["attachment_id"].as_str().unwrap(), b["data"]["attachment_id"].as_str().unwrap());
    assert_ne!(ida, idb);
    assert_ne!(a["data"]["stored_filename"], b["data"]["stored_filename"]);
    for (id, want) in [(ida, PNG.to_vec()), (idb, other)] {
        let res =
            app.http.get(app.url(&format!("/api/v1/file?attachment_id={id}"))).bearer_auth(&key).send().await.unwrap();
        assert_eq!(res.headers()["content-type"], "image/png");
        assert!(res.bytes().await.unwrap() == want);
    }
    assert_eq!(attachment_files(&app).len(), 2);
}

#[tokio::test]
async fn oversize_uploads_are_413_and_leave_nothing() {
    let app = spawn_with(|c| c.files.max_upload_bytes = 1024 * 1024).await;
    let key = app.key(&["file"]).await;
    // Streamed without a Content-Length, so the limit must be enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..48).map(|_| Ok(vec![7u8; 64 * 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let form = Form::new().part("file", Part::stream(body).file_name("big.bin"));
    match app.http.post(app.url("/api/v1/file")).bearer_auth(&key).multipart(form).send().await {
        Ok(res) => {
            assert_eq!(res.status(), 413);
            let b: Value = res.json().await.unwrap();
            assert_eq!(b, json!({"status": "error", "message": "File too large (limit 1048576 bytes)", "data": null}));
        }
        // The server may close the connection while the client is still sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    // With a Content-Length far beyond the limit, nothing is read at all.
    let (s, b) = upload(&app, &key, "huge.bin", "application/octet-stream", vec![1u8; 3 * 1024 * 1024]).await;
    assert_error(s, &b, 413, "File too large (limit 1048576 bytes)");
    assert!(attachment_files(&app).is_empty(), "no partial file remains: {:?}", attachment_files(&app));
    // Just under the limit is fine.
    let (s, _) = upload(&app, &key, "ok.bin", "application/octet-stream", vec![1u8; 1024 * 1024]).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn hostile_names_and_ids_cannot_escape_the_attachments_folder() {
    let app = spawn_app().await;
    let key = app.key(&["file"]).await;
    let (s, b) = upload(&app, &key, "../../../etc/evil.txt", "text/plain", b"x".to_vec()).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["filename"], "evil.txt");
    let stored = b["data"]["stored_filename"].as_str().unwrap();
    assert!(!stored.contains('/') && !stored.contains(".."));
    assert!(app.state.config.data_dir.join("attachments").join(stored).is_file());
    let (s, b) = upload(&app, &key, "..\\..\\win.ini", "text/plain", b"x".to_vec()).await;
    assert_eq!((s.as_u16(), b["data"]["filename"].as_str()), (200, Some("win.ini")));
    for id in ["../../etc/passwd", "..%2F..%2Fastrgate.db", "%00", "not-a-uuid", "00000000-0000-4000-8000-000000000000"]
    {
        let (s, b) = send(app.http.get(app.url(&format!("/api/v1/file?attachment_id={id}"))).bearer_auth(&key)).await;
        assert_error(s, &b, 404, "Attachment not found");
    }
    let (s, b) = send(app.http.get(app.url("/api/v1/file")).bearer_auth(&key)).await;
    assert_error(s, &b, 400, "Missing key: attachment_id");
    let (s, b) =
        send(app.http.post(app.url("/api/v1/file")).bearer_auth(&key).multipart(Form::new().text("other", "x"))).await;
    assert_error(s, &b, 400, "Missing key: file");
    let (s, b) = send(app.http.post(app.url("/api/v1/file")).bearer_auth(&key).json(&json!({}))).await;
    assert_eq!(s, 400);
    assert!(b["message"].as_str().unwrap().starts_with("Invalid multipart body"), "{b}");
}

#[tokio::test]
async fn the_type_comes_from_the_bytes() {
    let app = spawn_app().await;
    let key = app.key(&["file"]).await;
    let (_, b) = upload(&app, &key, "photo.txt", "text/plain", PNG.to_vec()).await;
    assert_eq!((b["data"]["type"].as_str(), b["data"]["mime_type"].as_str()), (Some("image"), Some("image/png")));
    let (_, b) = upload(&app, &key, "fake.png", "image/png", b"not an image".to_vec()).await;
    assert_eq!(b["data"]["type"], "file", "a claimed image that is not one is a plain file");
    let wav = astrgate::audio::wav::pcm16_to_wav(&[0u8; 3200], 16_000, 1);
    let (_, b) = upload(&app, &key, "voice.bin", "application/octet-stream", wav).await;
    assert_eq!(b["data"]["type"], "record");
}

#[tokio::test]
async fn attachments_reach_the_model() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!(
        "{}\n{}\n[files]\ninline_text_max_bytes = 200\n",
        fake.provider_toml("fake"),
        fake.audio_toml()
    ))
    .await;
    let key = app.key(&["chat", "file"]).await;
    let (_, img) = upload(&app, &key, "pixel.png", "image/png", PNG.to_vec()).await;
    let (_, code) = upload(&app, &key, "main.rs", "application/octet-stream", b"fn main() { milk(); }".to_vec()).await;
    let (_, big) = upload(&app, &key, "big.txt", "text/plain", "secret line\n".repeat(40).into_bytes()).await;
    let (_, txt) = upload(&app, &key, "notes.md", "text/markdown", b"# Notes\nremember the milk".to_vec()).await;
    // A legacy Word file: not a document astrgate reads, so it is named (PDFs are in documents.rs).
    let (_, doc) =
        upload(&app, &key, "paper.doc", "application/msword", b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1 old".to_vec()).await;
    let wav = astrgate::audio::wav::pcm16_to_wav(&[0u8; 3200], 16_000, 1);
    let (_, rec) = upload(&app, &key, "memo.wav", "audio/wav", wav.clone()).await;
    let id = |v: &Value| v["data"]["attachment_id"].as_str().unwrap().to_string();
    let frames = chat(
        &app,
        &key,
        json!({"username": "u", "message": [
            {"type": "plain", "text": "look"},
            {"type": "image", "attachment_id": id(&img)},
            {"type": "file", "attachment_id": id(&txt)},
            {"type": "file", "attachment_id": id(&doc)},
            {"type": "record", "attachment_id": id(&rec)},
            {"type": "file", "attachment_id": id(&code)},
            {"type": "file", "attachment_id": id(&big)},
        ]}),
    )
    .await
    .collect()
    .await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    let content = fake.requests()[0]["messages"][0]["content"].clone();
    let parts = content.as_array().unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
    assert_eq!(parts[1], json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}}));
    assert!(parts[2]["text"].as_str().unwrap().contains("remember the milk"), "text files are inlined");
    let named = parts[3]["text"].as_str().unwrap();
    assert!(
        named.contains("paper.doc") && named.contains("its content is not shown"),
        "other files are named: {named}"
    );
    assert!(parts[4]["text"].as_str().unwrap().contains("hello from the fake stt"), "voice is transcribed");
    assert!(parts[5]["text"].as_str().unwrap().contains("fn main() { milk(); }"), "source code is inlined");
    let big_part = parts[6]["text"].as_str().unwrap();
    assert!(big_part.contains("big.txt") && big_part.contains("480 bytes"), "{big_part}");
    assert!(!big_part.contains("secret line"), "a text file over the limit is named, not inlined");
    assert_eq!(fake.inner.transcribed.lock().unwrap().as_slice(), &[wav.len()]);
    // The stored user message keeps the parts, without paths.
    let sid = frames[0].data["session_id"].as_str().unwrap();
    let (_, h) =
        send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{sid}/messages?username=u"))).bearer_auth(&key))
            .await;
    let stored = &h["data"]["messages"][0]["content"]["message"];
    assert_eq!(stored[1]["type"], "image");
    assert_eq!(stored[1]["attachment_id"], id(&img).as_str());
    assert_eq!(stored[1]["filename"], "pixel.png");
}

#[tokio::test]
async fn a_record_without_stt_is_a_clear_error() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n[stt]\ntype = \"none\"\n", fake.provider_toml("fake"))).await;
    let key = app.key(&["chat", "file"]).await;
    let wav = astrgate::audio::wav::pcm16_to_wav(&[0u8; 320], 16_000, 1);
    let (_, rec) = upload(&app, &key, "memo.wav", "audio/wav", wav).await;
    let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(
        &json!({"username": "u", "message": [{"type": "record", "attachment_id": rec["data"]["attachment_id"]}]}),
    ))
    .await;
    assert_error(s, &b, 400, "No STT provider is configured: record attachments cannot be transcribed");
}

#[tokio::test]
async fn a_speaking_profile_sends_its_reply_as_a_record() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.speaking_toml()).await;
    let key = app.key(&["chat", "file"]).await;
    fake.push(Reply::Chunks {
        chunks: text("Spoken words."),
        delay: std::time::Duration::ZERO,
        first_delay: std::time::Duration::ZERO,
    });
    let frames = chat(&app, &key, json!({"username": "u", "message": "talk"})).await.collect().await;
    assert_eq!(types(&frames)[frames.len() - 5..], ["complete", "record", "attachment_saved", "message_saved", "end"]);
    let record = &frames[frames.len() - 4].data;
    assert!(record["data"].as_str().unwrap().starts_with("[RECORD]"));
    let att = &frames[frames.len() - 3].data["data"];
    assert_eq!(att["type"], "record");
    let res = app
        .http
        .get(app.url(&format!("/api/v1/file?attachment_id={}", att["id"].as_str().unwrap())))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "audio/x-wav");
    assert!(res.bytes().await.unwrap() == crate::fake_llm::fake_wav("Spoken words."));
    assert_eq!(fake.inner.speech_inputs.lock().unwrap().as_slice(), ["Spoken words."]);
    let sid = frames[0].data["session_id"].as_str().unwrap();
    let (_, h) =
        send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{sid}/messages?username=u"))).bearer_auth(&key))
            .await;
    assert_eq!(h["data"]["messages"][1]["content"]["message"][1]["type"], "record");
}

#[tokio::test]
async fn an_image_too_large_for_a_model_is_refused() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    let key = app.key(&["chat", "file"]).await;
    let mut big = PNG.to_vec();
    big.resize(21 * 1024 * 1024, 0);
    let (_, img) = upload(&app, &key, "huge.png", "image/png", big).await;
    assert_eq!(img["data"]["type"], "image");
    let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(
        &json!({"username": "u", "message": [{"type": "image", "attachment_id": img["data"]["attachment_id"]}]}),
    ))
    .await;
    assert_error(s, &b, 400, "image huge.png is too large to send to a model (max 20 MiB)");
    assert!(fake.requests().is_empty());
}
