//! `POST /api/v1/chat` against a scripted fake upstream: event order and shapes, history,
//! reasoning, non-streaming, provider failures, disconnects, stop, resume, validation.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{Chunk, FakeLlm, Reply, text, tokens};
use crate::helpers::*;

async fn setup(extra: &str) -> (TestApp, FakeLlm, String) {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n{extra}", fake.provider_toml("fake"))).await;
    let key = app.key(&["chat"]).await;
    (app, fake, key)
}

fn slow(words: &[&str], delay_ms: u64) -> Reply {
    Reply::Chunks { chunks: tokens(words), delay: Duration::from_millis(delay_ms), first_delay: Duration::ZERO }
}

async fn history(app: &TestApp, key: &str, session: &str, user: &str) -> Value {
    let (s, b) = send(
        app.http.get(app.url(&format!("/api/v1/chat/sessions/{session}/messages?username={user}"))).bearer_auth(key),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["data"]["messages"].clone()
}

#[tokio::test]
async fn streams_astrbot_events_in_order() {
    let (app, fake, key) = setup("").await;
    let words: Vec<String> = (0..20).map(|i| if i < 19 { format!("tok{i} ") } else { format!("tok{i}") }).collect();
    fake.push(Reply::Chunks {
        chunks: words.iter().map(|w| Chunk::Content(w.clone())).collect(),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let res = app
        .http
        .post(app.url("/api/v1/chat"))
        .header("X-API-Key", &key)
        .json(&json!({"message": "Hello", "username": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    let frames = SseReader::new(res).collect().await;
    let t = types(&frames);
    let mut want = vec!["session_id", "user_message_saved", "run_started"];
    want.extend(std::iter::repeat_n("plain", 20));
    want.extend(["agent_stats", "complete", "message_saved", "end"]);
    assert_eq!(t, want);

    let session_id = frames[0].data["session_id"].as_str().unwrap().to_string();
    assert_eq!(frames[0].data, json!({"type": "session_id", "data": null, "session_id": session_id}));
    assert!(uuid::Uuid::parse_str(&session_id).is_ok(), "a uuid session id is generated");
    let run_id = frames[2].data["data"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        frames[2].data,
        json!({"type": "run_started", "data": {"run_id": run_id}, "streaming": false, "message_id": run_id})
    );
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.id.as_deref(), Some(format!("{run_id}:{i}").as_str()), "every frame carries id run:seq");
    }
    assert_eq!(
        frames[3].data,
        json!({"type": "plain", "data": "tok0 ", "streaming": true, "chain_type": null, "message_id": run_id})
    );
    let deltas: String =
        frames.iter().filter(|f| f.ty() == "plain").map(|f| f.data["data"].as_str().unwrap()).collect();
    let complete = frames.iter().find(|f| f.ty() == "complete").unwrap();
    assert_eq!(complete.data["data"], deltas.as_str());
    assert_eq!(complete.data["reasoning"], "");
    assert_eq!(complete.data["streaming"], true);
    let stats = &frames.iter().find(|f| f.ty() == "agent_stats").unwrap().data["data"];
    assert_eq!(stats["token_usage"], json!({"input_other": 8, "input_cached": 2, "output": 20}));
    assert_eq!(stats["current_context_tokens"], 10);
    assert!(stats["end_time"].as_f64().unwrap() >= stats["start_time"].as_f64().unwrap());
    let saved_user = &frames[1].data["data"];
    let saved_bot = &frames[frames.len() - 2].data["data"];
    assert_eq!(saved_user["llm_checkpoint_id"], saved_bot["llm_checkpoint_id"]);
    assert!(saved_bot["id"].as_i64().unwrap() > saved_user["id"].as_i64().unwrap());
    assert!(saved_user["created_at"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(
        frames.last().unwrap().data,
        json!({"type": "end", "data": "", "streaming": false, "message_id": run_id})
    );

    // The upstream got the model, the message and our key; the history holds both turns.
    let req = &fake.requests()[0];
    assert_eq!(req["model"], "fake-model");
    assert_eq!(req["stream"], true);
    assert_eq!(req["messages"], json!([{"role": "user", "content": "Hello"}]));
    assert_eq!(fake.inner.auth_headers.lock().unwrap()[0].as_deref(), Some("Bearer sk-fake-upstream"));
    let h = history(&app, &key, &session_id, "alice").await;
    assert_eq!(h[0]["content"], json!({"type": "user", "message": [{"type": "plain", "text": "Hello"}]}));
    assert_eq!(h[1]["content"]["message"], json!([{"type": "plain", "text": deltas}]));
    assert_eq!(h[1]["sender_id"], "bot");
}

#[tokio::test]
async fn the_second_turn_sends_the_first_to_the_model() {
    let (app, fake, key) = setup("[[profiles]]\nid = \"p\"\nsystem_prompt = \"You are terse.\"\n").await;
    fake.push(Reply::Chunks { chunks: text("First answer."), delay: Duration::ZERO, first_delay: Duration::ZERO });
    let frames = chat(&app, &key, json!({"message": "first question", "username": "alice", "session_id": "s-1"}))
        .await
        .collect()
        .await;
    assert_eq!(frames[0].data["session_id"], "s-1");
    let frames2 = chat(&app, &key, json!({"message": "second question", "username": "alice", "session_id": "s-1"}))
        .await
        .collect()
        .await;
    assert_eq!(frames2.last().unwrap().ty(), "end");
    let reqs = fake.requests();
    assert_eq!(
        reqs[1]["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "second question"},
        ])
    );
    // conversation_id is accepted as the deprecated alias.
    let frames3 = chat(&app, &key, json!({"message": "third", "username": "alice", "conversation_id": "s-1"}))
        .await
        .collect()
        .await;
    assert_eq!(frames3[0].data["session_id"], "s-1");
    assert_eq!(history(&app, &key, "s-1", "alice").await.as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn reasoning_streams_as_its_own_chain() {
    let (app, fake, key) = setup("").await;
    fake.push(Reply::Chunks {
        chunks: vec![
            Chunk::Reasoning("think ".into()),
            Chunk::Reasoning("hard".into()),
            Chunk::Content("Answer".into()),
        ],
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let frames = chat(&app, &key, json!({"message": "q", "username": "u"})).await.collect().await;
    let reasoning: Vec<&Value> =
        frames.iter().filter(|f| f.data["chain_type"] == "reasoning").map(|f| &f.data["data"]).collect();
    assert_eq!(reasoning, [&json!("think "), &json!("hard")]);
    let complete = frames.iter().find(|f| f.ty() == "complete").unwrap();
    assert_eq!(complete.data["data"], "Answer");
    assert_eq!(complete.data["reasoning"], "think hard");
    let sid = frames[0].data["session_id"].as_str().unwrap();
    let h = history(&app, &key, sid, "u").await;
    assert_eq!(h[1]["content"]["reasoning"], "think hard");
}

#[tokio::test]
async fn non_streaming_mode_sends_whole_messages() {
    let (app, fake, key) = setup("").await;
    fake.push(Reply::Chunks {
        chunks: vec![Chunk::Reasoning("hmm".into()), Chunk::Content("Whole reply".into())],
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let frames = chat(&app, &key, json!({"message": "q", "username": "u", "flags": {"enable_streaming": false}}))
        .await
        .collect()
        .await;
    assert_eq!(
        types(&frames),
        ["session_id", "user_message_saved", "run_started", "agent_stats", "plain", "plain", "message_saved", "end"]
    );
    let run_id = frames[2].data["message_id"].as_str().unwrap();
    assert_eq!(
        frames[4].data,
        json!({"type": "plain", "data": "hmm", "streaming": false, "chain_type": "reasoning", "message_id": run_id})
    );
    assert_eq!(
        frames[5].data,
        json!({"type": "plain", "data": "Whole reply", "streaming": false, "chain_type": null, "message_id": run_id})
    );
    assert_eq!(fake.requests()[0]["stream"], false);
    // The deprecated top-level flag works too.
    let frames =
        chat(&app, &key, json!({"message": "q", "username": "u", "enable_streaming": false})).await.collect().await;
    assert!(!types(&frames).contains(&"complete".to_string()));
}

#[tokio::test]
async fn upstream_error_becomes_an_error_event_and_is_saved() {
    let (app, fake, key) = setup("").await;
    fake.push(Reply::Error(500, json!({"error": {"message": "model overloaded", "type": "server_error"}})));
    let frames = chat(&app, &key, json!({"message": "q", "username": "u"})).await.collect().await;
    assert_eq!(types(&frames), ["session_id", "user_message_saved", "run_started", "error", "message_saved", "end"]);
    let err = &frames[3].data;
    assert_eq!(err["data"], "The model provider is unavailable (HTTP 500)");
    assert_eq!(err["code"], "UPSTREAM_ERROR");
    let sid = frames[0].data["session_id"].as_str().unwrap();
    let h = history(&app, &key, sid, "u").await;
    assert_eq!(h[1]["content"]["error"], "The model provider is unavailable (HTTP 500)");
    assert_eq!(
        h[1]["content"]["message"][0]["text"], "The model provider is unavailable (HTTP 500)",
        "never an empty reply"
    );
    // A failed turn is not sent back to the model as context.
    let _ = chat(&app, &key, json!({"message": "again", "username": "u", "session_id": sid})).await.collect().await;
    assert_eq!(
        fake.requests()[1]["messages"],
        json!([{"role": "user", "content": "q"}, {"role": "user", "content": "again"}])
    );
}

#[tokio::test]
async fn a_stream_cut_mid_way_is_an_error_with_the_partial_reply_saved() {
    let (app, fake, key) = setup("").await;
    fake.push(Reply::CutAfter(tokens(&["Par", "tial"])));
    let frames = chat(&app, &key, json!({"message": "q", "username": "u"})).await.collect().await;
    assert_eq!(
        types(&frames),
        ["session_id", "user_message_saved", "run_started", "plain", "plain", "error", "message_saved", "end"]
    );
    assert_eq!(frames[5].data["code"], "UPSTREAM_INTERRUPTED");
    let sid = frames[0].data["session_id"].as_str().unwrap();
    let h = history(&app, &key, sid, "u").await;
    assert_eq!(h[1]["content"]["message"][0]["text"], "Partial");
    assert!(h[1]["content"]["error"].as_str().unwrap().contains("broke off"));
}

#[tokio::test]
async fn a_client_that_leaves_does_not_stop_the_run() {
    let (app, fake, key) = setup("").await;
    let words: Vec<String> = (0..10).map(|i| format!("w{i} ")).collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    fake.push(slow(&w, 40));
    let mut sse = chat(&app, &key, json!({"message": "q", "username": "u", "session_id": "leave"})).await;
    loop {
        if sse.next().await.unwrap().ty() == "plain" {
            break;
        }
    }
    drop(sse);
    let full: String = words.concat();
    let saved = eventually(|| async {
        let h = history(&app, &key, "leave", "u").await;
        h.get(1).map(|m| m["content"]["message"][0]["text"].clone())
    })
    .await;
    assert_eq!(saved, full.as_str());
    assert_eq!(fake.abandoned(), 0, "the upstream stream was read to its end");
}

#[tokio::test]
async fn stop_cancels_the_upstream_request_at_once() {
    let (app, fake, key) = setup("").await;
    fake.push(Reply::HangAfter(tokens(&["Hello ", "there"])));
    let mut sse = chat(&app, &key, json!({"message": "q", "username": "u", "session_id": "st"})).await;
    let mut seen = Vec::new();
    while seen.iter().filter(|t: &&String| *t == "plain").count() < 2 {
        seen.push(sse.next().await.unwrap().ty().to_string());
    }
    let (s, b) = send(app.http.post(app.url("/api/v1/chat/sessions/st/stop?username=u")).bearer_auth(&key)).await;
    assert_eq!((s.as_u16(), &b["data"]), (200, &json!({"stopped_count": 1})));
    assert!(fake.wait_abandoned(Duration::from_secs(2)).await, "the upstream request was dropped");
    let rest = sse.collect().await;
    assert_eq!(types(&rest), ["complete", "message_saved", "end"]);
    assert_eq!(rest[0].data["data"], "Hello there");
    let h = history(&app, &key, "st", "u").await;
    assert_eq!(h[1]["content"]["interrupted"], true);
    assert_eq!(h[1]["content"]["message"][0]["text"], "Hello there");
    let (_, b) = send(app.http.post(app.url("/api/v1/chat/sessions/st/stop?username=u")).bearer_auth(&key)).await;
    assert_eq!(b["data"], json!({"stopped_count": 0}));
    let (s, b) = send(app.http.post(app.url("/api/v1/chat/sessions/st/stop?username=mallory")).bearer_auth(&key)).await;
    assert_error(s, &b, 403, "session_id belongs to another username");
}

#[tokio::test]
async fn a_dropped_client_resumes_with_last_event_id_and_misses_nothing() {
    let (app, fake, key) = setup("").await;
    let words: Vec<String> = (0..12).map(|i| format!("r{i} ")).collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    fake.push(slow(&w, 30));
    let mut sse = chat(&app, &key, json!({"message": "q", "username": "u"})).await;
    let mut got = Vec::new();
    while got.len() < 6 {
        got.push(sse.next().await.unwrap());
    }
    drop(sse);
    let run_id = got[2].data["data"]["run_id"].as_str().unwrap().to_string();
    let last = got.last().unwrap().id.clone().unwrap();
    let res = app
        .http
        .get(app.url(&format!("/api/v1/chat/runs/{run_id}/stream?username=u")))
        .bearer_auth(&key)
        .header("Last-Event-ID", &last)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    got.extend(SseReader::new(res).collect().await);
    let ids: Vec<String> = got.iter().map(|f| f.id.clone().unwrap()).collect();
    let want: Vec<String> = (0..ids.len()).map(|i| format!("{run_id}:{i}")).collect();
    assert_eq!(ids, want, "every event exactly once, in order");
    assert_eq!(got.last().unwrap().ty(), "end");
    let deltas: String = got.iter().filter(|f| f.ty() == "plain").map(|f| f.data["data"].as_str().unwrap()).collect();
    assert_eq!(deltas, words.concat());

    // Finished: the store replays, honouring Last-Event-ID too.
    let res = app
        .http
        .get(app.url(&format!("/api/v1/chat/runs/{run_id}/stream?username=u&last_event_id={run_id}:{}", ids.len() - 3)))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let tail = SseReader::new(res).collect().await;
    assert_eq!(types(&tail), ["message_saved", "end"]);
    let res = app
        .http
        .get(app.url(&format!("/api/v1/chat/runs/{run_id}/stream?username=u")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(SseReader::new(res).collect().await.len(), ids.len());
    let (s, b) =
        send(app.http.get(app.url(&format!("/api/v1/chat/runs/{run_id}/stream?username=eve"))).bearer_auth(&key)).await;
    assert_error(s, &b, 403, "run_id belongs to another username");
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/runs/nope/stream?username=u")).bearer_auth(&key)).await;
    assert_error(s, &b, 404, "Chat run is unavailable");
    let (s, b) = send(
        app.http
            .get(app.url(&format!("/api/v1/chat/runs/{run_id}/stream?username=u")))
            .bearer_auth(&key)
            .header("Last-Event-ID", "garbage"),
    )
    .await;
    assert_error(s, &b, 400, "Invalid Last-Event-ID");
}

#[tokio::test]
async fn validation_errors_use_astrbot_texts() {
    let (app, fake, key) =
        setup("[[profiles]]\nid = \"main\"\n[[profiles]]\nid = \"a\"\nname = \"Twin\"\n[[profiles]]\nid = \"b\"\nname = \"Twin\"\n")
            .await;
    let cases = [
        (json!({"message": "hi"}), "Missing key: username"),
        (json!({"message": "hi", "username": "  "}), "username is empty"),
        (json!({"message": "hi", "username": 5}), "Invalid request body: username must be a string"),
        (json!({"username": "u"}), "Missing key: message or files"),
        (json!({"username": "u", "message": ""}), "Message content is empty (reply only is not allowed)"),
        (
            json!({"username": "u", "message": [{"type": "reply", "message_id": 1}]}),
            "Message content is empty (reply only is not allowed)",
        ),
        (json!({"username": "u", "message": 42}), "message must be a string or list"),
        (
            json!({"username": "u", "message": "hi", "session_id": 5}),
            "Invalid request body: session_id must be a string",
        ),
        (json!({"username": "u", "message": "hi", "config_id": "missing"}), "config_id not found: missing"),
        (json!({"username": "u", "message": "hi", "config_name": " "}), "config_name is empty"),
        (json!({"username": "u", "message": "hi", "config_name": "NotExists"}), "config_name not found: NotExists"),
        (
            json!({"username": "u", "message": "hi", "config_name": "Twin"}),
            "config_name is ambiguous, please use config_id: Twin",
        ),
        (json!({"username": "u", "message": "hi", "selected_provider": "nope"}), "selected_provider not found: nope"),
        (
            json!({"username": "u", "message": [{"type": "image", "attachment_id": "no-such"}]}),
            "attachment not found: no-such",
        ),
        (
            json!({"username": "u", "message": [{"type": "plain", "text": "x"}, {"type": "reply", "message_id": 999}]}),
            "reply message not found: 999",
        ),
        (json!(["not", "an", "object"]), "Invalid request body: expected a JSON object"),
    ];
    for (body, msg) in cases {
        let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&body)).await;
        assert_error(s, &b, 400, msg);
    }
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body("{\"message\":"),
    )
    .await;
    assert_eq!(s, 400);
    assert!(b["message"].as_str().unwrap().starts_with("Invalid JSON body"), "{b}");
    let big = "x".repeat(3 * 1024 * 1024);
    let (s, b) =
        send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&json!({"username": "u", "message": big})))
            .await;
    assert_error(s, &b, 413, "Request body too large");
    assert!(fake.requests().is_empty(), "nothing reached the model");
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=u")).bearer_auth(&key)).await;
    assert_eq!(b["data"]["total"], 0, "no session was created by a rejected request");
}

#[tokio::test]
async fn another_users_session_is_refused() {
    let (app, _fake, key) = setup("").await;
    let _ = chat(&app, &key, json!({"message": "mine", "username": "alice", "session_id": "private"}))
        .await
        .collect()
        .await;
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&key)
            .json(&json!({"message": "hi", "username": "bob", "session_id": "private"})),
    )
    .await;
    assert_error(s, &b, 403, "session_id belongs to another username");
    for (method, path) in [
        ("GET", "/api/v1/chat/sessions/private/messages?username=bob"),
        ("DELETE", "/api/v1/chat/sessions/private?username=bob"),
    ] {
        let (s, b) = send(app.http.request(method.parse().unwrap(), app.url(path)).bearer_auth(&key)).await;
        assert_error(s, &b, 403, "session_id belongs to another username");
    }
    let (s, b) =
        send(app.http.get(app.url("/api/v1/chat/sessions/nope/messages?username=bob")).bearer_auth(&key)).await;
    assert_error(s, &b, 404, "Session not found");
    // Bob cannot quote Alice's messages either.
    let h = history(&app, &key, "private", "alice").await;
    let alice_msg = h[0]["id"].as_i64().unwrap();
    let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&json!({"username": "bob", "message": [{"type": "plain", "text": "x"}, {"type": "reply", "message_id": alice_msg}]}))).await;
    assert_error(s, &b, 400, &format!("reply message not found: {alice_msg}"));
    let (s, _) = send(app.http.delete(app.url("/api/v1/chat/sessions/private?username=alice")).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    let (s, _) =
        send(app.http.get(app.url("/api/v1/chat/sessions/private/messages?username=alice")).bearer_auth(&key)).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_reply_part_quotes_history() {
    let (app, fake, key) = setup("").await;
    let _ =
        chat(&app, &key, json!({"message": "the original", "username": "u", "session_id": "q"})).await.collect().await;
    let h = history(&app, &key, "q", "u").await;
    let bot_id = h[1]["id"].as_i64().unwrap();
    let _ = chat(&app, &key, json!({"username": "u", "session_id": "q", "message": [{"type": "reply", "message_id": bot_id}, {"type": "plain", "text": "what?"}]})).await.collect().await;
    let last = fake.requests()[1]["messages"].as_array().unwrap().last().unwrap().clone();
    let content = last["content"].as_str().unwrap();
    assert!(content.contains("Echo: the original") && content.ends_with("what?"), "{content}");
}

#[tokio::test]
async fn profiles_bind_to_sessions_persistently() {
    let (app, fake, key) = setup(
        "[[profiles]]\nid = \"main\"\nname = \"Main\"\nsystem_prompt = \"main prompt\"\ndefault = true\n\
         [[profiles]]\nid = \"pirate\"\nname = \"Pirate\"\nsystem_prompt = \"talk like a pirate\"\nmodel = \"pirate-model\"\n",
    )
    .await;
    let cfg_key = app.key(&["config"]).await;
    let (_, b) = send(app.http.get(app.url("/api/v1/configs")).bearer_auth(&cfg_key)).await;
    assert_eq!(
        b["data"]["configs"],
        json!([
            {"id": "pirate", "name": "Pirate", "path": "profiles.pirate", "is_default": false},
            {"id": "default", "name": "default", "path": "profiles.main", "is_default": true},
        ])
    );
    let _ = chat(&app, &key, json!({"message": "a", "username": "u", "session_id": "p1", "config_id": "pirate"}))
        .await
        .collect()
        .await;
    let _ = chat(&app, &key, json!({"message": "b", "username": "u", "session_id": "p1"})).await.collect().await;
    let _ = chat(&app, &key, json!({"message": "c", "username": "u", "session_id": "p1", "config_name": "default"}))
        .await
        .collect()
        .await;
    let _ =
        chat(&app, &key, json!({"message": "d", "username": "u", "session_id": "p1", "selected_model": "override"}))
            .await
            .collect()
            .await;
    let r = fake.requests();
    assert_eq!(r[0]["messages"][0]["content"], "talk like a pirate");
    assert_eq!(r[0]["model"], "pirate-model");
    assert_eq!(r[1]["messages"][0]["content"], "talk like a pirate", "the binding persists");
    assert_eq!(r[2]["messages"][0]["content"], "main prompt");
    assert_eq!(r[3]["messages"][0]["content"], "main prompt");
    assert_eq!(r[3]["model"], "override");
}

/// A session whose id the server makes is created with the question, in one write: it is there
/// afterwards with its creator, title and chosen profile, and the question in it.
#[tokio::test]
async fn a_new_session_is_created_with_its_first_message_and_profile() {
    let (app, fake, key) = setup(
        "[[profiles]]\nid = \"main\"\nname = \"Main\"\nsystem_prompt = \"main prompt\"\ndefault = true\n\
         [[profiles]]\nid = \"pirate\"\nname = \"Pirate\"\nsystem_prompt = \"talk like a pirate\"\n",
    )
    .await;
    let frames = chat(&app, &key, json!({"message": "ahoy there", "username": "u", "config_id": "pirate"}))
        .await
        .collect()
        .await;
    assert_eq!(types(&frames).last().map(String::as_str), Some("end"), "{:?}", types(&frames));
    let sid = frames[0].data["session_id"].as_str().unwrap().to_string();
    let _ = chat(&app, &key, json!({"message": "again", "username": "u", "session_id": sid})).await.collect().await;
    let r = fake.requests();
    assert_eq!(r[1]["messages"][0]["content"], "talk like a pirate", "the profile chosen at creation is bound");
    assert!(r[1]["messages"].to_string().contains("ahoy there"), "the question is in the history: {}", r[1]);
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=u")).bearer_auth(&key)).await;
    assert_eq!(s, 200, "{b}");
    let sessions = b["data"]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["session_id"], sid.as_str());
    assert_eq!(sessions[0]["creator"], "u");
    assert_eq!(sessions[0]["display_name"], "ahoy there");
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=other")).bearer_auth(&key)).await;
    assert_eq!((s.as_u16(), b["data"]["total"].as_i64()), (200, Some(0)));
}

#[tokio::test]
async fn sessions_are_listed_per_user_with_pagination() {
    let (app, _fake, key) = setup("").await;
    for s in ["s1", "s2", "s3"] {
        let _ = chat(&app, &key, json!({"message": format!("hello {s}"), "username": "alice", "session_id": s}))
            .await
            .collect()
            .await;
    }
    let _ = chat(&app, &key, json!({"message": "x", "username": "bob", "session_id": "b1"})).await.collect().await;
    let (s, b) =
        send(app.http.get(app.url("/api/v1/chat/sessions?username=alice&page_size=2")).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    let d = &b["data"];
    assert_eq!((d["page"].as_i64(), d["page_size"].as_i64(), d["total"].as_i64()), (Some(1), Some(2), Some(3)));
    let ids: Vec<&str> = d["sessions"].as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["s3", "s2"], "newest first");
    let first = &d["sessions"][0];
    assert_eq!(first["platform_id"], "webchat");
    assert_eq!(first["creator"], "alice");
    assert_eq!(first["is_group"], 0);
    assert_eq!(first["display_name"], "hello s3");
    let (_, b) =
        send(app.http.get(app.url("/api/v1/chat/sessions?username=alice&page=2&page_size=2")).bearer_auth(&key)).await;
    assert_eq!(b["data"]["sessions"].as_array().unwrap().len(), 1);
    let (_, b) =
        send(app.http.get(app.url("/api/v1/chat/sessions?username=alice&page=0&page_size=1000")).bearer_auth(&key))
            .await;
    assert_eq!((b["data"]["page"].as_i64(), b["data"]["page_size"].as_i64()), (Some(1), Some(100)));
    let (_, b) =
        send(app.http.get(app.url("/api/v1/chat/sessions?username=alice&platform_id=other")).bearer_auth(&key)).await;
    assert_eq!(b["data"]["total"], 0);
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=alice&page=x")).bearer_auth(&key)).await;
    assert_error(s, &b, 400, "page and page_size must be integers");
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions")).bearer_auth(&key)).await;
    assert_error(s, &b, 400, "Missing key: username");
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=%20")).bearer_auth(&key)).await;
    assert_error(s, &b, 400, "username is empty");

    let (_, b) = send(
        app.http
            .get(app.url("/api/v1/chat/sessions/s1/messages?username=alice&page_size=1&order=desc"))
            .bearer_auth(&key),
    )
    .await;
    assert_eq!(b["data"]["total"], 2);
    assert_eq!(b["data"]["messages"][0]["sender_id"], "bot");
}

#[tokio::test]
async fn the_dashboard_jwt_can_chat_as_itself() {
    let (app, _fake, _key) = setup("").await;
    let res = app
        .http
        .post(app.url("/api/v1/chat"))
        .bearer_auth(&app.jwt)
        .json(&json!({"message": "hi", "session_id": "dash"}))
        .send()
        .await
        .unwrap();
    let frames = SseReader::new(res).collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions")).bearer_auth(&app.jwt)).await;
    assert_eq!(b["data"][0]["creator"], "astrgate", "a JWT without username gets its own sessions as a plain list");
}

#[tokio::test]
async fn a_busy_session_is_409_and_no_provider_is_503() {
    let (app, fake, key) = setup("").await;
    fake.push(Reply::HangAfter(tokens(&["..."])));
    let mut sse = chat(&app, &key, json!({"message": "q", "username": "u", "session_id": "busy"})).await;
    while sse.next().await.unwrap().ty() != "plain" {}
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&key)
            .json(&json!({"message": "q2", "username": "u", "session_id": "busy"})),
    )
    .await;
    assert_error(s, &b, 409, "Session is busy");
    let (s, _) = send(app.http.post(app.url("/api/v1/chat/sessions/busy/stop?username=u")).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    let _ = sse.collect().await;

    let bare = spawn_app().await;
    let k = bare.key(&["chat"]).await;
    let (s, b) =
        send(bare.http.post(bare.url("/api/v1/chat")).bearer_auth(&k).json(&json!({"message": "q", "username": "u"})))
            .await;
    assert_error(s, &b, 503, "No LLM provider is configured");
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_alive() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n[server]\nsse_keepalive_secs = 1\n", fake.provider_toml("fake"))).await;
    let key = app.key(&["chat"]).await;
    fake.push(Reply::Chunks { chunks: text("late"), delay: Duration::ZERO, first_delay: Duration::from_millis(2300) });
    let mut sse = chat(&app, &key, json!({"message": "q", "username": "u"})).await;
    while sse.next().await.is_some() {}
    assert!(sse.comments.iter().any(|c| c == "heartbeat"), "{:?}", sse.comments);
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_saves_the_partial_reply() {
    let (app, fake, key) = setup("").await;
    fake.push(Reply::HangAfter(tokens(&["half ", "way"])));
    let mut sse = chat(&app, &key, json!({"message": "q", "username": "u", "session_id": "down"})).await;
    let mut n = 0;
    while n < 2 {
        if sse.next().await.unwrap().ty() == "plain" {
            n += 1;
        }
    }
    let store = app.state.store.clone();
    let stopping = tokio::spawn(app.stop());
    let rest = sse.collect().await;
    assert_eq!(types(&rest), ["complete", "message_saved", "end"]);
    tokio::time::timeout(Duration::from_secs(10), stopping).await.unwrap().unwrap();
    let msgs = store.recent_messages("down", 10).await.unwrap();
    assert_eq!(msgs[1].content["message"][0]["text"], "half way");
    assert_eq!(msgs[1].content["interrupted"], true);
}

#[tokio::test]
async fn the_next_turn_may_start_as_soon_as_end_arrives() {
    let (app, fake, key) = setup("").await;
    for i in 0..10 {
        let frames = chat(&app, &key, json!({"message": format!("n{i}"), "username": "u", "session_id": "quick"}))
            .await
            .collect()
            .await;
        assert_eq!(frames.last().unwrap().ty(), "end", "turn {i}");
    }
    // Stopped, then immediately asked again: the stopped run is let finish saving, not a 409.
    fake.push(Reply::HangAfter(tokens(&["..."])));
    let mut sse = chat(&app, &key, json!({"message": "long", "username": "u", "session_id": "quick"})).await;
    while sse.next().await.unwrap().ty() != "plain" {}
    send(app.http.post(app.url("/api/v1/chat/sessions/quick/stop?username=u")).bearer_auth(&key)).await;
    let frames =
        chat(&app, &key, json!({"message": "again", "username": "u", "session_id": "quick"})).await.collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end");
}

#[tokio::test]
async fn hostile_numbers_and_part_counts_are_refused_cleanly() {
    let (app, _fake, key) = setup("").await;
    let frames = chat(&app, &key, json!({"message": "x", "username": "u"})).await.collect().await;
    let run_id = frames[2].data["data"]["run_id"].as_str().unwrap().to_string();
    let res = app
        .http
        .get(app.url(&format!("/api/v1/chat/runs/{run_id}/stream?username=u")))
        .bearer_auth(&key)
        .header("Last-Event-ID", format!("{run_id}:18446744073709551615"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(SseReader::new(res).collect().await.is_empty(), "nothing after the last possible event");
    let (s, _) =
        send(app.http.get(app.url("/api/v1/chat/sessions?username=u&page=9223372036854775807")).bearer_auth(&key))
            .await;
    assert_eq!(s, 200);
    let parts: Vec<Value> = (0..65).map(|_| json!({"type": "plain", "text": "x"})).collect();
    let (s, b) = send(
        app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&json!({"username": "u", "message": parts})),
    )
    .await;
    assert_error(s, &b, 400, "too many message parts (max 64)");
    let files: Vec<Value> = (0..17).map(|i| json!(format!("id-{i}"))).collect();
    let (s, b) =
        send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&json!({"username": "u", "files": files})))
            .await;
    assert_error(s, &b, 400, "too many attachments (max 16)");
}

#[tokio::test]
async fn provider_timeouts_and_unreachable_upstreams_are_error_events() {
    let fake = FakeLlm::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let toml = format!(
        "[[providers]]\nid = \"slow\"\nbase_url = \"{}\"\nmodel = \"m\"\nfirst_token_timeout_secs = 1\nidle_timeout_secs = 1\ndefault = true\n\
         [[providers]]\nid = \"dead\"\nbase_url = \"{dead}\"\nmodel = \"m\"\nconnect_timeout_secs = 2\n",
        fake.base_url
    );
    let app = spawn_toml(&toml).await;
    let key = app.key(&["chat"]).await;
    let error_of = |frames: &[Frame]| {
        frames.iter().find(|f| f.ty() == "error").map(|f| (f.data["code"].clone(), f.data["data"].clone()))
    };

    fake.push(Reply::Chunks { chunks: text("late"), delay: Duration::ZERO, first_delay: Duration::from_millis(1500) });
    let frames = chat(&app, &key, json!({"message": "q", "username": "u"})).await.collect().await;
    assert_eq!(
        error_of(&frames),
        Some((json!("UPSTREAM_TIMEOUT"), json!("The model provider did not answer within 1 s")))
    );

    fake.push(Reply::Chunks {
        chunks: tokens(&["one ", "two"]),
        delay: Duration::from_millis(1500),
        first_delay: Duration::ZERO,
    });
    let frames = chat(&app, &key, json!({"message": "q", "username": "u"})).await.collect().await;
    assert_eq!(
        error_of(&frames),
        Some((json!("UPSTREAM_TIMEOUT"), json!("The model provider stalled for 1 s mid-stream")))
    );
    assert_eq!(frames.iter().filter(|f| f.ty() == "plain").count(), 1, "what arrived before the stall is kept");

    let frames =
        chat(&app, &key, json!({"message": "q", "username": "u", "selected_provider": "dead"})).await.collect().await;
    let (code, msg) = error_of(&frames).unwrap();
    assert_eq!(code, "UPSTREAM_UNREACHABLE");
    assert!(msg.as_str().unwrap().starts_with("The model provider is unreachable"), "{msg}");
    assert!(!msg.as_str().unwrap().contains("127.0.0.1"), "the upstream URL is not echoed: {msg}");
    assert_eq!(frames.last().unwrap().ty(), "end");
}

#[tokio::test]
async fn profile_settings_shape_the_turn() {
    let (app, fake, key) = setup(
        "[[profiles]]\nid = \"terse\"\nsystem_prompt = \"be terse\"\nhistory_turns = 1\nstreaming = false\nshow_reasoning = false\n",
    )
    .await;
    let msg = |m: &str| json!({"message": m, "username": "u", "session_id": "p"});
    for m in ["one", "two"] {
        let _ = chat(&app, &key, msg(m)).await.collect().await;
    }
    fake.push(Reply::Chunks {
        chunks: vec![Chunk::Reasoning("thinking hard".into()), Chunk::Content("three!".into())],
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let frames = chat(&app, &key, msg("three")).await.collect().await;
    let r = fake.requests();
    // history_turns = 1: the system prompt, the last turn only, then the new message.
    let sent: Vec<(String, String)> = r[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_string(), m["content"].as_str().unwrap().to_string()))
        .collect();
    let roles: Vec<&str> = sent.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{sent:?}");
    assert_eq!((sent[1].1.as_str(), sent[3].1.as_str()), ("two", "three"));
    // streaming = false: the model is asked for one JSON answer and the client gets whole messages.
    assert!(r.iter().all(|q| q["stream"] == false));
    assert!(!types(&frames).contains(&"complete".to_string()));
    // show_reasoning = false: the reasoning is not shown.
    let plains: Vec<&Value> = frames.iter().filter(|f| f.data["type"] == "plain").map(|f| &f.data).collect();
    assert_eq!(plains.len(), 1, "{plains:?}");
    assert_eq!(plains[0]["data"], "three!");
    // A request can still ask for streaming.
    let frames = chat(
        &app,
        &key,
        json!({"message": "four", "username": "u", "session_id": "p", "flags": {"enable_streaming": true}}),
    )
    .await
    .collect()
    .await;
    assert!(types(&frames).contains(&"complete".to_string()));
    assert_eq!(fake.requests()[3]["stream"], true);
    // An upstream error in non-streaming mode is an `error` event and a saved record too.
    fake.push(Reply::Error(503, json!({"error": {"message": "busy upstream"}})));
    let frames = chat(&app, &key, msg("five")).await.collect().await;
    assert_eq!(types(&frames), ["session_id", "user_message_saved", "run_started", "error", "message_saved", "end"]);
    assert_eq!(frames[3].data["data"], "The model provider is unavailable (HTTP 503)");
}
