//! The chat endpoints of AstrBot's WebUI (the ChatUI's `/api/v1/chat/sessions…`, `/api/v1/files`)
//! and its older `/api/chat/*` router, driven as the WebUI and astrbotmcp drive them: shapes and
//! texts from AstrBot 4.29.3's dashboard, and the owner checks.

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Reply, text};
use crate::helpers::*;

async fn setup() -> (TestApp, FakeLlm) {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    (app, fake)
}

/// `GET /api/v1/chat/sessions/new` as the dashboard user: the new session's id.
async fn new_session(app: &TestApp) -> String {
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions/new")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["platform_id"], "webchat");
    b["data"]["session_id"].as_str().unwrap().to_string()
}

/// The body the 4.29.3 ChatUI sends.
fn webui_body(session: &str, text: &str) -> Value {
    json!({
        "session_id": session,
        "message": [{"type": "plain", "text": text}],
        "flags": {"enable_inline_genui": true, "enable_default_system_prompt": true,
                  "enable_streaming": true, "enable_reasoning": true},
        "locale": "zh-CN",
        "selected_provider": "fake",
        "selected_model": "fake-model",
        "_skip_user_history": false,
    })
}

async fn detail(app: &TestApp, session: &str) -> Value {
    let url = app.url(&format!("/api/v1/chat/sessions/{session}?page=1&page_size=50"));
    let (s, b) = send(app.http.get(url).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200, "{b}");
    b["data"].clone()
}

#[tokio::test]
async fn the_chatui_flow_new_send_history_rename_list() {
    let (app, fake) = setup().await;
    let sid = new_session(&app).await;
    fake.push(Reply::Chunks { chunks: text("Hi there"), delay: Default::default(), first_delay: Default::default() });
    let frames = chat(&app, &app.jwt, webui_body(&sid, "hello")).await.collect().await;
    let t = types(&frames);
    assert_eq!(t.first().map(String::as_str), Some("session_id"));
    assert!(t.contains(&"user_message_saved".to_string()) && t.ends_with(&["message_saved".into(), "end".into()]));
    let complete = frames.iter().find(|f| f.ty() == "complete").unwrap();
    assert_eq!(complete.data["data"], "Hi there");
    // The provider and model the page picked reached the upstream.
    assert_eq!(fake.requests()[0]["model"], "fake-model");

    let d = detail(&app, &sid).await;
    assert_eq!(d["session"]["session_id"], sid.as_str());
    assert_eq!(d["session"]["creator"], "astrgate");
    assert_eq!(d["session"]["display_name"], "hello", "an empty session is titled by its first message");
    assert_eq!((d["total"].as_i64(), d["page"].as_i64(), d["page_size"].as_i64()), (Some(2), Some(1), Some(50)));
    assert_eq!(d["has_more"], false);
    assert_eq!(d["is_running"], false);
    assert_eq!(d["active_runs"], json!([]));
    assert_eq!(d["threads"], json!([]));
    let h = d["history"].as_array().unwrap();
    assert_eq!(h[0]["content"], json!({"type": "user", "message": [{"type": "plain", "text": "hello"}]}));
    assert_eq!((h[0]["sender_id"].as_str(), h[0]["user_id"].as_str()), (Some("astrgate"), Some(sid.as_str())));
    assert_eq!(h[1]["content"]["type"], "bot");
    assert_eq!(h[1]["content"]["message"][0], json!({"type": "plain", "text": "Hi there"}));
    assert_eq!(h[0]["llm_checkpoint_id"], h[1]["llm_checkpoint_id"], "a turn shares one checkpoint");
    assert!(h[0]["created_at"].as_str().unwrap().ends_with("+00:00"));
    let saved = frames.iter().find(|f| f.ty() == "user_message_saved").unwrap();
    assert_eq!(saved.data["data"]["id"], h[0]["id"], "the event names the stored row");

    // Rename, then the sidebar's paginated list shows it first.
    let url = app.url(&format!("/api/v1/chat/sessions/{sid}"));
    let (s, b) = send(app.http.patch(&url).bearer_auth(&app.jwt).json(&json!({"display_name": "  My chat "}))).await;
    assert_eq!((s.as_u16(), &b), (200, &json!({"status": "ok", "message": null, "data": {}})));
    let other = new_session(&app).await;
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions?page=1&page_size=30")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!((b["data"]["page"].as_i64(), b["data"]["page_size"].as_i64()), (Some(1), Some(30)));
    assert_eq!(b["data"]["total"], 2);
    let ids: Vec<&str> =
        b["data"]["sessions"].as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [other.as_str(), sid.as_str()], "newest first");
    assert_eq!(b["data"]["sessions"][1]["display_name"], "My chat");
    // Without paging a dashboard user gets the plain list.
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions")).bearer_auth(&app.jwt)).await;
    assert_eq!(b["data"].as_array().map(Vec::len), Some(2), "{b}");

    // Pages: page 1 holds the newest rows.
    let (_, b) =
        send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{sid}?page=1&page_size=1"))).bearer_auth(&app.jwt))
            .await;
    assert_eq!(b["data"]["history"][0]["content"]["type"], "bot");
    assert_eq!(b["data"]["has_more"], true);
    let (s, b) =
        send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{sid}?page_size=5000"))).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 400, "page_size must be an integer between 1 and 1000");
}

#[tokio::test]
async fn edit_then_answer_again_and_regenerate() {
    let (app, fake) = setup().await;
    let sid = new_session(&app).await;
    chat(&app, &app.jwt, webui_body(&sid, "first question")).await.collect().await;
    let h = detail(&app, &sid).await["history"].clone();
    let (q_id, a_id) = (h[0]["id"].as_i64().unwrap(), h[1]["id"].as_i64().unwrap());
    let base = format!("/api/v1/chat/sessions/{sid}/messages");

    // Only the latest user message may be edited; the bot answer is not a question.
    let edit = |id: String, content: Value| {
        app.http.patch(app.url(&format!("{base}/{id}"))).bearer_auth(&app.jwt).json(&json!({"content": content}))
    };
    let (s, b) = send(edit(a_id.to_string(), json!({"type": "bot", "message": []}))).await;
    assert_error(s, &b, 400, "Only user messages can be edited");
    let (s, b) = send(edit("abc".into(), json!({"type": "user", "message": []}))).await;
    assert_error(s, &b, 400, "invalid literal for int() with base 10: 'abc'");
    let (s, b) = send(edit("999999".into(), json!({"type": "user", "message": []}))).await;
    assert_error(s, &b, 404, "Message 999999 not found");
    let (s, b) =
        send(edit(q_id.to_string(), json!({"type": "bot", "message": [{"type": "plain", "text": "x"}]}))).await;
    assert_error(s, &b, 400, "Message type cannot be changed");

    let new_content = json!({"type": "user", "message": [{"type": "plain", "text": "second question"}]});
    let (s, b) = send(edit(q_id.to_string(), new_content.clone())).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["data"]["needs_regenerate"].as_bool(), b["data"]["truncated_after_message"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(b["data"]["message"]["content"], new_content);
    let checkpoint = b["data"]["message"]["llm_checkpoint_id"].as_str().unwrap().to_string();
    assert_ne!(Some(checkpoint.as_str()), h[0]["llm_checkpoint_id"].as_str(), "a new checkpoint");
    assert_eq!(detail(&app, &sid).await["total"], 1, "the old answer is gone");

    // The WebUI then asks for the answer without saving the question again.
    let mut body = webui_body(&sid, "second question");
    body["_skip_user_history"] = json!(true);
    body["_llm_checkpoint_id"] = json!(checkpoint);
    let frames = chat(&app, &app.jwt, body).await.collect().await;
    assert!(!types(&frames).contains(&"user_message_saved".to_string()), "{:?}", types(&frames));
    let h = detail(&app, &sid).await["history"].clone();
    assert_eq!(h.as_array().map(Vec::len), Some(2));
    assert_eq!(h[0]["content"]["message"][0]["text"], "second question");
    assert_eq!(h[1]["llm_checkpoint_id"].as_str(), Some(checkpoint.as_str()));
    let last = fake.requests().last().unwrap().clone();
    let users: Vec<&Value> = last["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "user").collect();
    assert_eq!(users.len(), 1, "the edited question reaches the model once: {last}");

    // Regenerate: the answer's id; the question's id is refused.
    let answer_id = h[1]["id"].as_i64().unwrap();
    let regen = |id: String| app.http.post(app.url(&format!("{base}/{id}/regenerate"))).bearer_auth(&app.jwt);
    let (s, b) = send(regen(h[0]["id"].to_string())).await;
    assert_error(s, &b, 400, "Only bot messages can be regenerated");
    let (s, b) = send(regen("x".into())).await;
    assert_error(s, &b, 400, "Invalid key: message_id");
    fake.push(Reply::Chunks {
        chunks: text("A better answer"),
        delay: Default::default(),
        first_delay: Default::default(),
    });
    let res = regen(answer_id.to_string())
        .json(&json!({"selected_provider": "fake", "flags": {"enable_streaming": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream; charset=utf-8");
    let frames = SseReader::new(res).collect().await;
    let t = types(&frames);
    assert!(
        !t.contains(&"user_message_saved".to_string()) && t.ends_with(&["message_saved".into(), "end".into()]),
        "{t:?}"
    );
    let h = detail(&app, &sid).await["history"].clone();
    assert_eq!(h.as_array().map(Vec::len), Some(2));
    assert_eq!(h[1]["content"]["message"][0]["text"], "A better answer");
    assert_ne!(h[1]["id"].as_i64(), Some(answer_id));
}

#[tokio::test]
async fn owner_checks_and_batch_delete() {
    let (app, _fake) = setup().await;
    // A session of another user ("bob", through a key), and one of the dashboard user.
    let key = app.key(&["chat"]).await;
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions/new?username=bob")).bearer_auth(&key)).await;
    let bobs = b["data"]["session_id"].as_str().unwrap().to_string();
    let mine = new_session(&app).await;

    let url = |p: &str| app.url(&format!("/api/v1/chat/sessions/{bobs}{p}"));
    let (s, b) = send(app.http.get(url("")).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 403, "Permission denied");
    let (s, b) = send(app.http.patch(url("")).bearer_auth(&app.jwt).json(&json!({"display_name": "x"}))).await;
    assert_error(s, &b, 403, "Permission denied");
    let (s, b) = send(
        app.http
            .patch(url("/messages/1"))
            .bearer_auth(&app.jwt)
            .json(&json!({"content": {"type": "user", "message": []}})),
    )
    .await;
    assert_error(s, &b, 403, "Permission denied");
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions/nope")).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 404, "Session nope not found");
    let long = "x".repeat(5000);
    let (s, b) = send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{long}"))).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 404, &format!("Session {} not found", "x".repeat(128)));
    // The key acting as bob sees it; acting as someone else does not.
    let (s, _) = send(app.http.get(url("?username=bob")).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    let (s, b) = send(app.http.get(url("?username=eve")).bearer_auth(&key)).await;
    assert_error(s, &b, 403, "Permission denied");

    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat/sessions/batch-delete"))
            .bearer_auth(&app.jwt)
            .json(&json!({"session_ids": [mine, bobs, "nope"]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"],
        json!({"deleted_count": 1, "failed_count": 2, "failed_items": [
            {"session_id": bobs, "reason": "permission denied"}, {"session_id": "nope", "reason": "not found"}]})
    );
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat/sessions/batch-delete"))
            .bearer_auth(&app.jwt)
            .json(&json!({"session_ids": []})),
    )
    .await;
    assert_error(s, &b, 400, "Missing or invalid key: session_ids");
    let (s, _) = send(app.http.get(url("?username=bob")).bearer_auth(&key)).await;
    assert_eq!(s, 200, "bob's session survived");
}

#[tokio::test]
async fn chatui_attachments_upload_and_download_by_id_and_name() {
    let (app, fake) = setup().await;
    let form = Form::new()
        .part("file", Part::bytes(b"%notes\nhello".to_vec()).file_name("n.txt").mime_str("text/plain").unwrap());
    let (s, b) = send(app.http.post(app.url("/api/v1/files")).bearer_auth(&app.jwt).multipart(form)).await;
    assert_eq!(s, 200, "{b}");
    let id = b["data"]["attachment_id"].as_str().unwrap().to_string();
    let stored = b["data"]["stored_filename"].as_str().unwrap().to_string();
    assert_eq!((b["data"]["filename"].as_str(), b["data"]["type"].as_str()), (Some("n.txt"), Some("file")));
    for path in [
        format!("/api/v1/files/{id}/content"),
        format!("/api/v1/files/{id}"),
        format!("/api/v1/files/content?filename={stored}"),
    ] {
        let res = app.http.get(app.url(&path)).bearer_auth(&app.jwt).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert_eq!(res.bytes().await.unwrap().as_ref(), b"%notes\nhello", "{path}");
    }
    // Another key's view: indistinguishable from nothing.
    let key = app.key(&["file"]).await;
    let (s, b) = send(app.http.get(app.url(&format!("/api/v1/files/{id}/content"))).bearer_auth(&key)).await;
    assert_error(s, &b, 404, "Attachment not found");
    let (s, b) =
        send(app.http.get(app.url(&format!("/api/v1/files/content?filename={stored}"))).bearer_auth(&key)).await;
    assert_error(s, &b, 404, "File access error");
    let (s, b) =
        send(app.http.get(app.url("/api/v1/files/content?filename=..%2Fastrgate.db")).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 400, "Invalid file path");
    let (s, b) = send(app.http.get(app.url("/api/v1/files/content")).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 400, "Missing key: filename");

    // The attachment goes into a ChatUI message as the WebUI references it.
    let sid = new_session(&app).await;
    let mut body = webui_body(&sid, "summarise");
    body["message"].as_array_mut().unwrap().push(json!({"type": "file", "attachment_id": id, "filename": "n.txt"}));
    chat(&app, &app.jwt, body).await.collect().await;
    let sent = fake.requests()[0].to_string();
    assert!(sent.contains("hello"), "the file's text reached the model: {sent}");
}

#[tokio::test]
async fn the_legacy_chat_router_serves_astrbotmcp() {
    let (app, fake) = setup().await;
    let j = &app.jwt;
    // Only dashboard tokens: an API key is not one.
    let key = app.key(&["chat"]).await;
    let (s, b) = send(app.http.get(app.url("/api/chat/sessions")).bearer_auth(&key)).await;
    assert_error(s, &b, 401, "Token 无效");
    let (s, b) = send(app.http.get(app.url("/api/chat/sessions"))).await;
    assert_error(s, &b, 401, "未授权");

    let (s, b) = send(app.http.get(app.url("/api/chat/new_session")).bearer_auth(j)).await;
    assert_eq!(s, 200, "{b}");
    let sid = b["data"]["session_id"].as_str().unwrap().to_string();

    let post = |p: &str| app.http.post(app.url(p)).bearer_auth(j);
    let (s, b) = send(post("/api/chat/send").header("content-type", "application/json").body("nope")).await;
    assert_error(s, &b, 400, "Missing JSON body");
    let (s, b) = send(post("/api/chat/send").json(&json!({"message": "hi"}))).await;
    assert_error(s, &b, 400, "Missing key: session_id or conversation_id");
    let (s, b) = send(post("/api/chat/send").json(&json!({"message": "hi", "session_id": ""}))).await;
    assert_error(s, &b, 400, "session_id is empty");
    let (s, b) = send(post("/api/chat/send").json(&json!({"session_id": sid}))).await;
    assert_error(s, &b, 400, "Missing key: message or files");
    fake.push(Reply::Chunks {
        chunks: text("legacy reply"),
        delay: Default::default(),
        first_delay: Default::default(),
    });
    let res = post("/api/chat/send").json(&json!({"message": "hi", "session_id": sid})).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream; charset=utf-8");
    let frames = SseReader::new(res).collect().await;
    assert_eq!(frames.iter().find(|f| f.ty() == "complete").unwrap().data["data"], "legacy reply");

    let (s, b) = send(app.http.get(app.url("/api/chat/sessions")).bearer_auth(j)).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"][0]["session_id"], sid.as_str(), "a plain list: {b}");
    let (s, b) = send(app.http.get(app.url(&format!("/api/chat/get_session?session_id={sid}"))).bearer_auth(j)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["data"]["page"].as_i64(), b["data"]["page_size"].as_i64(), b["data"]["total"].as_i64()),
        (Some(1), Some(1000), Some(2))
    );
    let (s, b) = send(app.http.get(app.url("/api/chat/get_session")).bearer_auth(j)).await;
    assert_error(s, &b, 400, "Missing key: session_id");

    let (s, b) = send(post("/api/chat/update_session_display_name").json(&json!({"session_id": sid}))).await;
    assert_error(s, &b, 400, "Missing key: display_name");
    let (s, b) =
        send(post("/api/chat/update_session_display_name").json(&json!({"session_id": sid, "display_name": ""}))).await;
    assert_eq!(s, 200, "an empty name is allowed: {b}");
    let (s, b) = send(post("/api/chat/stop").json(&json!({"session_id": sid}))).await;
    assert_eq!((s.as_u16(), &b["data"]), (200, &json!({"stopped_count": 0})));
    let (s, b) = send(post("/api/chat/stop").json(&json!({}))).await;
    assert_error(s, &b, 400, "Missing key: session_id");
    let (s, b) = send(post("/api/chat/batch_delete_sessions").json(&json!([1]))).await;
    assert_error(s, &b, 400, "Invalid JSON body: expected object");

    // Files: upload, by stored name, by id.
    let form =
        Form::new().part("file", Part::bytes(b"abc".to_vec()).file_name("a.txt").mime_str("text/plain").unwrap());
    let (s, b) = send(post("/api/chat/post_file").multipart(form)).await;
    assert_eq!(s, 200, "{b}");
    let (id, stored) = (b["data"]["attachment_id"].as_str().unwrap(), b["data"]["stored_filename"].as_str().unwrap());
    for p in [format!("/api/chat/get_file?filename={stored}"), format!("/api/chat/get_attachment?attachment_id={id}")] {
        let res = app.http.get(app.url(&p)).bearer_auth(j).send().await.unwrap();
        assert_eq!(res.status(), 200, "{p}");
        assert_eq!(res.bytes().await.unwrap().as_ref(), b"abc");
    }

    // The deleting GET: refused from another site with the cookie, accepted from ours.
    let cookie = format!("astrbot_dashboard_jwt={j}");
    let del = app.url(&format!("/api/chat/delete_session?session_id={sid}"));
    let (s, b) = send(app.http.get(&del).header("cookie", &cookie).header("sec-fetch-site", "cross-site")).await;
    assert_error(s, &b, 403, "Cross-site request refused");
    let (s, b) = send(app.http.get(&del).header("cookie", &cookie).header("sec-fetch-site", "same-origin")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send(app.http.get(app.url(&format!("/api/chat/get_session?session_id={sid}"))).bearer_auth(j)).await;
    assert_error(s, &b, 404, &format!("Session {sid} not found"));
}
