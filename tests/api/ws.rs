//! `/api/v1/chat/ws` and the chat mode of the unified sockets.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Reply, tokens};
use crate::helpers::*;

async fn setup() -> (TestApp, FakeLlm, String) {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n[tts]\ntype = \"none\"\n", fake.provider_toml("fake"))).await;
    let key = app.key(&["chat"]).await;
    (app, fake, key)
}

#[tokio::test]
async fn chat_ws_refuses_bad_credentials_with_an_error_frame_and_1008() {
    let (app, _fake, _key) = setup().await;
    let file_only = app.key(&["file"]).await;
    let fake_key = astrgate::auth::api_key::generate();
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 3] = [
        ("/api/v1/chat/ws".into(), vec![], "Missing API key"),
        (format!("/api/v1/chat/ws?api_key={fake_key}"), vec![], "Invalid API key"),
        ("/api/v1/chat/ws".into(), vec![("x-api-key", file_only.as_str())], "Insufficient API key scope"),
    ];
    for (path, headers, reason) in cases {
        let mut ws = ws_connect(&app, &path, &headers).await;
        let frame = ws.expect_refusal(1008, reason).await;
        assert_eq!(frame, json!({"type": "error", "code": "UNAUTHORIZED", "data": reason}));
    }
    // A plain HTTP request gets our envelope, not a framework default.
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/ws"))).await;
    assert_error(s, &b, 426, "Expected a WebSocket upgrade");
}

#[tokio::test]
async fn chat_ws_streams_a_turn_with_its_message_id() {
    let (app, fake, key) = setup().await;
    fake.push(Reply::Chunks { chunks: tokens(&["Hi ", "there"]), delay: Duration::ZERO, first_delay: Duration::ZERO });
    let bearer = format!("Bearer {key}");
    let mut ws = ws_connect(&app, "/api/v1/chat/ws", &[("authorization", bearer.as_str())]).await;
    ws.send(json!({"t": "ping"})).await;
    assert_eq!(ws.recv().await, json!({"type": "pong"}));
    ws.send(json!({"username": "alice", "message": "hello", "message_id": "m-1", "session_id": "ws-s"})).await;
    let frames = ws.until(|f| f["type"] == "end").await;
    let t: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(t, ["session_id", "run_started", "plain", "plain", "agent_stats", "complete", "message_saved", "end"]);
    assert_eq!(frames[0], json!({"type": "session_id", "data": null, "session_id": "ws-s", "message_id": "m-1"}));
    for f in &frames[1..] {
        if f.get("message_id").is_some() {
            assert_eq!(f["message_id"], "m-1");
        }
    }
    assert_eq!(frames[5]["data"], "Hi there");
    assert_eq!(frames[6]["session_id"], "ws-s");
    assert!(frames[6]["data"]["id"].is_i64());
    // The same session is in the history, as for SSE.
    let (_, h) =
        send(app.http.get(app.url("/api/v1/chat/sessions/ws-s/messages?username=alice")).bearer_auth(&key)).await;
    assert_eq!(h["data"]["total"], 2);
}

#[tokio::test]
async fn chat_ws_multiplexes_sends_and_survives_bad_frames() {
    let (app, _fake, key) = setup().await;
    let mut ws = ws_connect(&app, &format!("/api/v1/chat/ws?key={key}"), &[]).await;
    // Replies echo their own request, so either arrival order at the upstream is fine.
    ws.send(json!({"username": "u", "message": "alpha one", "message_id": "A", "session_id": "sa"})).await;
    ws.send(json!({"username": "u", "message": "beta two", "message_id": "B", "session_id": "sb"})).await;
    let mut ends = std::collections::HashSet::new();
    let mut text: std::collections::HashMap<String, String> = Default::default();
    while ends.len() < 2 {
        let f = ws.recv().await;
        let mid = f["message_id"].as_str().unwrap_or_default().to_string();
        if f["type"] == "plain" {
            text.entry(mid.clone()).or_default().push_str(f["data"].as_str().unwrap());
        }
        if f["type"] == "end" {
            ends.insert(mid);
        }
    }
    assert_eq!(text["A"], "Echo: alpha one");
    assert_eq!(text["B"], "Echo: beta two");

    ws.send_text("{not json").await;
    assert_eq!(
        ws.recv().await,
        json!({"type": "error", "code": "INVALID_MESSAGE", "data": "message must be valid JSON"})
    );
    ws.send(json!([1, 2])).await;
    assert_eq!(ws.recv().await["data"], "message must be an object");
    ws.send(json!({"t": "dance"})).await;
    assert_eq!(
        ws.recv().await,
        json!({"type": "error", "code": "INVALID_MESSAGE", "data": "Unsupported message type: dance"})
    );
    let cases = [
        (json!({"message": "x", "message_id": "e1"}), "BAD_USER", "Missing key: username"),
        (json!({"username": "u", "message_id": "e2"}), "INVALID_MESSAGE", "Missing key: message"),
        (
            json!({"username": "u", "message": "x", "config_id": "nope", "message_id": "e3"}),
            "CONFIG_ERROR",
            "config_id not found: nope",
        ),
        (
            json!({"username": "intruder", "message": "x", "session_id": "sa", "message_id": "e4"}),
            "SESSION_ERROR",
            "session_id belongs to another username",
        ),
        (
            json!({"username": "u", "message": "", "message_id": "e5"}),
            "INVALID_MESSAGE",
            "Message content is empty (reply only is not allowed)",
        ),
    ];
    for (frame, code, msg) in cases {
        ws.send(frame.clone()).await;
        let f = ws.recv().await;
        assert_eq!(
            (f["type"].as_str(), f["code"].as_str(), f["data"].as_str()),
            (Some("error"), Some(code), Some(msg)),
            "{frame}"
        );
        assert_eq!(f["message_id"], frame["message_id"]);
    }
    ws.send(json!({"t": "ping"})).await;
    assert_eq!(ws.recv().await, json!({"type": "pong"}), "the connection survived");
}

#[tokio::test]
async fn unified_chat_mode_sends_binds_and_interrupts() {
    let (app, fake, key) = setup().await;
    let im_key = app.key(&["im"]).await;
    let mut ws = ws_connect(&app, &format!("/api/v1/live/ws?api_key={key}&username=carol&ct=chat"), &[]).await;
    ws.send(json!({"t": "send", "message": "not a list", "message_id": "x"})).await;
    assert_eq!(
        ws.recv().await,
        json!({"ct": "chat", "t": "error", "data": "message must be list", "code": "INVALID_MESSAGE_FORMAT", "message_id": "x"})
    );

    ws.send(
        json!({"t": "send", "message": [{"type": "plain", "text": "hello"}], "message_id": "c1", "session_id": "uc"}),
    )
    .await;
    let frames = ws.until(|f| f["type"] == "end").await;
    assert!(frames.iter().all(|f| f["ct"] == "chat" && f["message_id"] == "c1"), "{frames:?}");
    let t: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(t.first(), Some(&"session_id"));
    assert!(t.contains(&"user_message_saved") && t.contains(&"complete") && t.contains(&"message_saved"));
    let complete = frames.iter().find(|f| f["type"] == "complete").unwrap();
    assert_eq!(complete["data"], "Echo: hello");

    ws.send(json!({"ct": "chat", "t": "bind"})).await;
    assert_eq!(ws.recv().await["data"], "session_id is required");
    ws.send(json!({"t": "bind", "session_id": "uc"})).await;
    let bound = ws.recv().await;
    assert_eq!(bound["type"], "session_bound");
    assert!(bound["message_id"].as_str().unwrap().starts_with("ws_sub_"));
    let (s, _) = send(
        app.http
            .post(app.url("/api/v1/im/message"))
            .bearer_auth(&im_key)
            .json(&json!({"umo": "webchat:FriendMessage:uc", "message": "ping from the shop"})),
    )
    .await;
    assert_eq!(s, 200);
    let pushed = ws.recv().await;
    assert_eq!(
        (pushed["type"].as_str(), pushed["chain_type"].as_str(), pushed["data"].as_str()),
        (Some("complete"), Some("proactive"), Some("ping from the shop"))
    );
    assert_eq!(pushed["message_id"], bound["message_id"]);
    assert_eq!(ws.recv().await["type"], "message_saved");

    // Another user's session cannot be bound.
    let _ =
        chat(&app, &key, json!({"username": "dave", "message": "mine", "session_id": "dave-s"})).await.collect().await;
    ws.send(json!({"t": "bind", "session_id": "dave-s"})).await;
    let f = ws.recv().await;
    assert_eq!(
        (f["code"].as_str(), f["data"].as_str()),
        (Some("SESSION_ERROR"), Some("session_id belongs to another username"))
    );

    // Interrupt stops the run for real.
    fake.push(Reply::HangAfter(tokens(&["partial"])));
    ws.send(
        json!({"t": "send", "message": [{"type": "plain", "text": "long"}], "message_id": "c2", "session_id": "uc"}),
    )
    .await;
    ws.until(|f| f["type"] == "plain").await;
    ws.send(json!({"t": "interrupt", "message_id": "c2"})).await;
    let frames = ws.until(|f| f["type"] == "end").await;
    assert!(
        frames.iter().any(|f| f
            == &json!({"ct": "chat", "t": "error", "data": "INTERRUPTED", "code": "INTERRUPTED", "message_id": "c2"})),
        "{frames:?}"
    );
    assert!(fake.wait_abandoned(Duration::from_secs(2)).await, "the upstream request was cancelled");
}

#[tokio::test]
async fn dashboard_sockets_take_a_jwt_token() {
    let (app, _fake, _key) = setup().await;
    for path in ["/api/unified_chat/ws", "/api/v1/unified-chat/ws", "/api/live_chat/ws", "/api/v1/live-chat/ws"] {
        let mut ws = ws_connect(&app, path, &[]).await;
        let f = ws.expect_refusal(1008, "Missing authentication token").await;
        assert_eq!(f, json!({"t": "error", "code": "UNAUTHORIZED", "data": "Missing authentication token"}));
    }
    let expired = app.state.dashboard.jwt.encode("astrgate", 1);
    let mut ws = ws_connect(&app, &format!("/api/unified_chat/ws?token={expired}"), &[]).await;
    ws.expect_refusal(1008, "Token expired").await;
    let mut ws = ws_connect(&app, "/api/unified_chat/ws?token=garbage", &[]).await;
    ws.expect_refusal(1008, "Invalid token").await;
    // The `/api/v1/…` aliases take a valid token too.
    for path in ["/api/v1/unified-chat/ws", "/api/v1/live-chat/ws"] {
        let mut ws = ws_connect(&app, &format!("{path}?token={}", app.jwt), &[]).await;
        ws.send(json!({"t": "text_input", "text": "via the alias"})).await;
        let frames = ws.until(|f| f["t"] == "end").await;
        assert!(frames.iter().any(|f| f["t"] == "bot_msg"), "{path}: {frames:?}");
    }

    let mut ws = ws_connect(&app, &format!("/api/unified_chat/ws?token={}", app.jwt), &[]).await;
    ws.send(json!({"ct": "chat", "t": "send", "message": [{"type": "plain", "text": "hey"}], "message_id": "j1"}))
        .await;
    let frames = ws.until(|f| f["type"] == "end").await;
    let sid = frames[0]["session_id"].as_str().unwrap();
    assert!(sid.starts_with("webchat_live!astrgate!"), "the connection's session is the default: {sid}");
    ws.send(json!({"t": "text_input", "text": "live over the unified socket"})).await;
    let live: Vec<Value> = ws.until(|f| f["t"] == "end").await;
    assert!(live.iter().any(|f| f["t"] == "bot_msg"), "{live:?}");
}

#[tokio::test]
async fn a_live_turn_does_not_silence_chat_sends_on_the_same_socket() {
    let (app, fake, _key) = setup().await;
    fake.push(Reply::Chunks {
        chunks: tokens(&["slow ", "chat ", "reply"]),
        delay: Duration::from_millis(80),
        first_delay: Duration::ZERO,
    });
    let mut ws = ws_connect(&app, &format!("/api/unified_chat/ws?token={}", app.jwt), &[]).await;
    ws.send(json!({"ct": "chat", "t": "send", "message": [{"type": "plain", "text": "one"}], "message_id": "c1", "session_id": "mixed"})).await;
    ws.until(|f| f["type"] == "plain").await;
    // A Live turn starts (and is interrupted) while the chat send is still streaming.
    ws.send(json!({"t": "text_input", "text": "live"})).await;
    ws.send(json!({"t": "interrupt"})).await;
    let frames = ws.until(|f| f["ct"] == "chat" && f["type"] == "end").await;
    let chat_text: String = frames
        .iter()
        .filter(|f| f["ct"] == "chat" && f["type"] == "plain")
        .map(|f| f["data"].as_str().unwrap())
        .collect();
    assert_eq!(chat_text, "chat reply", "the chat send's frames were all delivered");
    assert!(frames.iter().any(|f| f["ct"] == "chat" && f["type"] == "message_saved"));
}

#[tokio::test]
async fn sockets_ignore_the_dashboard_cookie() {
    let (app, _fake, _key) = setup().await;
    let cookie = format!("astrbot_dashboard_jwt={}", app.jwt);
    for path in ["/api/v1/chat/ws", "/api/v1/live/ws?username=u"] {
        let mut ws = ws_connect(&app, path, &[("cookie", cookie.as_str())]).await;
        ws.expect_refusal(1008, "Missing API key").await;
    }
}

#[tokio::test]
async fn bind_claims_a_session_for_its_user_only() {
    let (app, _fake, key) = setup().await;
    let im_key = app.key(&["im"]).await;
    // An unowned session (made by a proactive message before sessions always had an owner) is
    // claimed by the first bind.
    app.state.store.create_session(&astrgate::store::SessionRecord::new("order-123", "webchat", "")).await.unwrap();
    let (s, _) = send(
        app.http
            .post(app.url("/api/v1/im/message"))
            .bearer_auth(&im_key)
            .json(&json!({"umo": "webchat:FriendMessage:order-123", "message": "hi"})),
    )
    .await;
    assert_eq!(s, 200);
    let mut bob = ws_connect(&app, &format!("/api/v1/live/ws?api_key={key}&username=bob&ct=chat"), &[]).await;
    bob.send(json!({"t": "bind", "session_id": "order-123"})).await;
    assert_eq!(bob.recv().await["type"], "session_bound");
    let mut alice = ws_connect(&app, &format!("/api/v1/live/ws?api_key={key}&username=alice&ct=chat"), &[]).await;
    alice.send(json!({"t": "bind", "session_id": "order-123"})).await;
    assert_eq!(alice.recv().await["code"], "SESSION_ERROR");
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&key)
            .json(&json!({"username": "alice", "message": "x", "session_id": "order-123"})),
    )
    .await;
    assert_error(s, &b, 403, "session_id belongs to another username");
    // Binding a session that does not exist yet makes it the binder's.
    alice.send(json!({"t": "bind", "session_id": "alice-future"})).await;
    assert_eq!(alice.recv().await["type"], "session_bound");
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=alice")).bearer_auth(&key)).await;
    assert_eq!(b["data"]["sessions"][0]["session_id"], "alice-future");
}
