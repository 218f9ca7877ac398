//! Proactive messages: webchat history and live subscribers, webhook delivery with signatures,
//! retries and failures, AstrBot's error texts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Reply, tokens};
use crate::helpers::*;

#[derive(Default)]
struct Receiver {
    hits: Mutex<Vec<(HeaderMap, Bytes)>>,
    /// Answer this status for the first N requests, then 200.
    fail_first: AtomicUsize,
    fail_status: AtomicUsize,
}

async fn receiver() -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver::default());
    let rr = r.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let r = rr.clone();
            async move {
                r.hits.lock().unwrap().push((headers, body));
                if r.fail_first.load(Ordering::SeqCst) > 0 {
                    r.fail_first.fetch_sub(1, Ordering::SeqCst);
                    return axum::http::StatusCode::from_u16(r.fail_status.load(Ordering::SeqCst) as u16).unwrap();
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, r)
}

async fn im(app: &TestApp, key: &str, body: Value) -> (reqwest::StatusCode, Value) {
    send(app.http.post(app.url("/api/v1/im/message")).bearer_auth(key).json(&body)).await
}

#[tokio::test]
async fn a_webchat_message_lands_in_history_and_on_an_open_stream() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    let chat_key = app.key(&["chat"]).await;
    let im_key = app.key(&["im"]).await;
    fake.push(Reply::HangAfter(tokens(&["thinking"])));
    let mut sse = chat(&app, &chat_key, json!({"username": "alice", "message": "hi", "session_id": "s1"})).await;
    while sse.next().await.unwrap().ty() != "plain" {}

    let (s, b) = im(&app, &im_key, json!({"umo": "webchat:FriendMessage:s1", "message": "Your order shipped"})).await;
    assert_eq!(s, 200, "{b}");
    let pushed = sse.next().await.unwrap();
    assert_eq!(pushed.data["type"], "complete");
    assert_eq!(pushed.data["chain_type"], "proactive");
    assert_eq!(pushed.data["data"], "Your order shipped");
    let (s, _) =
        send(app.http.post(app.url("/api/v1/chat/sessions/s1/stop?username=alice")).bearer_auth(&chat_key)).await;
    assert_eq!(s, 200);
    let _ = sse.collect().await;

    // The alias path works too, with parts.
    let (s, _) = send(app.http.post(app.url("/api/v1/im/messages")).bearer_auth(&im_key).json(
        &json!({"umo": "webchat:FriendMessage:webchat!alice!s1", "message": [{"type": "plain", "text": "second"}]}),
    ))
    .await;
    assert_eq!(s, 200);
    let (_, h) =
        send(app.http.get(app.url("/api/v1/chat/sessions/s1/messages?username=alice")).bearer_auth(&chat_key)).await;
    let msgs = h["data"]["messages"].as_array().unwrap();
    let proactive: Vec<&Value> = msgs.iter().filter(|m| m["content"]["proactive"] == true).collect();
    assert_eq!(proactive.len(), 2);
    assert_eq!(proactive[0]["content"]["message"], json!([{"type": "plain", "text": "Your order shipped"}]));
    assert_eq!(proactive[0]["sender_id"], "bot");
    // Another user's session is refused when the umo names its owner.
    let (s, b) = im(&app, &im_key, json!({"umo": "webchat:FriendMessage:webchat!mallory!s1", "message": "x"})).await;
    assert_error(s, &b, 403, "session_id belongs to another username");
}

#[tokio::test]
async fn a_message_to_a_new_session_is_kept_for_the_user_it_names() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    let key = app.key(&["chat", "im"]).await;
    // A bare id that does not exist has no owner to create it for (docs/api/im.md).
    let (s, _) = im(&app, &key, json!({"umo": "webchat:FriendMessage:fresh", "message": "welcome!"})).await;
    assert_eq!(s, 404);
    let (s, _) = im(&app, &key, json!({"umo": "webchat:FriendMessage:webchat!bob!fresh", "message": "welcome!"})).await;
    assert_eq!(s, 200);
    let (s, _) =
        send(app.http.get(app.url("/api/v1/chat/sessions/fresh/messages?username=alice")).bearer_auth(&key)).await;
    assert_eq!(s, 403, "the session is bob's");
    let _ =
        chat(&app, &key, json!({"username": "bob", "message": "hello", "session_id": "fresh"})).await.collect().await;
    let (_, h) =
        send(app.http.get(app.url("/api/v1/chat/sessions/fresh/messages?username=bob")).bearer_auth(&key)).await;
    assert_eq!(h["data"]["messages"][0]["content"]["message"][0]["text"], "welcome!");
    assert_eq!(h["data"]["messages"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn errors_use_astrbot_texts() {
    // (The provider is never reached: every request here is refused before a model is asked.)
    let app = spawn_toml(
        "[[platforms]]\nid = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n\
         [[providers]]\nid = \"p\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n",
    )
    .await;
    let key = app.key(&["im"]).await;
    // The session exists, so only the message itself can be wrong below.
    app.state.store.create_session(&astrgate::store::SessionRecord::new("s", "webchat", "u")).await.unwrap();
    let cases = [
        (json!({"message": "x"}), "Missing key: umo"),
        (json!({"umo": "webchat:FriendMessage:s", "message": null}), "Missing key: message"),
        (json!({"umo": "webchat:FriendMessage:s"}), "message must be a string or list"),
        (json!({"umo": "webchat", "message": "x"}), "Invalid umo: not enough values to unpack (expected 3, got 1)"),
        (json!({"umo": "webchat:Nope:s", "message": "x"}), "Invalid umo: 'Nope' is not a valid MessageType"),
        (
            json!({"umo": "telegram:FriendMessage:s", "message": "x"}),
            "Bot not found or not running for platform: telegram",
        ),
        (json!({"umo": "webchat:FriendMessage:s", "message": [1]}), "message part must be an object"),
        (
            json!({"umo": "webchat:FriendMessage:s", "message": [{"type": "sticker"}]}),
            "unsupported message part type: sticker",
        ),
        (json!({"umo": "webchat:FriendMessage:s", "message": [{"type": "image"}]}), "image part missing attachment_id"),
        (
            json!({"umo": "webchat:FriendMessage:s", "message": [{"type": "image", "attachment_id": "nope"}]}),
            "attachment not found: nope",
        ),
        (json!({"umo": "webchat:FriendMessage:s", "message": [{"type": "reply"}]}), "reply part missing message_id"),
        (
            json!({"umo": "webchat:FriendMessage:s", "message": "   "}),
            "Message content is empty (reply only is not allowed)",
        ),
    ];
    for (body, msg) in cases {
        let (s, b) = im(&app, &key, body).await;
        assert_error(s, &b, 400, msg);
    }
    let (s, b) = send(app.http.get(app.url("/api/v1/im/bots")).bearer_auth(&key)).await;
    assert_eq!((s.as_u16(), &b["data"]), (200, &json!({"bot_ids": ["hook"]})));
    // An attachment whose file has gone from disk: named by its stored name, never by a path.
    let file_key = app.key(&["file", "im", "chat"]).await;
    let (_, up) = crate::files::upload(&app, &file_key, "gone.txt", "text/plain", b"soon gone".to_vec()).await;
    let id = up["data"]["attachment_id"].as_str().unwrap().to_string();
    let rec = app.state.store.get_attachment(&id).await.unwrap().unwrap();
    std::fs::remove_file(app.dir.path().join("attachments").join(&rec.stored_name)).unwrap();
    let want = format!("file not found: {}", rec.stored_name);
    let part = json!([{"type": "file", "attachment_id": id}]);
    let (s, b) = im(&app, &file_key, json!({"umo": "webchat:FriendMessage:s", "message": part})).await;
    assert_error(s, &b, 400, &want);
    let (s, b) = send(
        app.http.post(app.url("/api/v1/chat")).bearer_auth(&file_key).json(&json!({"username": "u", "message": part})),
    )
    .await;
    assert_error(s, &b, 400, &want);
}

#[tokio::test]
async fn webhook_delivery_is_signed() {
    let (url, recv) = receiver().await;
    let app = spawn_toml(&format!(
        "[[platforms]]\nid = \"shop\"\ntype = \"webhook\"\nurl = \"{url}\"\nsecret = \"hook-secret\"\n"
    ))
    .await;
    let key = app.key(&["im"]).await;
    let (s, b) = im(
        &app,
        &key,
        json!({"umo": "shop:GroupMessage:room-7", "message": [{"type": "plain", "text": "Sale starts now"}]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let hits = recv.hits.lock().unwrap();
    assert_eq!(hits.len(), 1);
    let (headers, body) = &hits[0];
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["text"], "Sale starts now");
    assert_eq!(payload["session_id"], "room-7");
    assert_eq!(payload["message_type"], "GroupMessage");
    assert_eq!(payload["umo"], "shop:GroupMessage:room-7");
    let ts: i64 = headers["x-astrgate-timestamp"].to_str().unwrap().parse().unwrap();
    // Verify like a receiver would: HMAC-SHA256(secret, "<ts>.<body>").
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["x-astrgate-signature"], want.as_str());
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
}

#[tokio::test]
async fn webhook_failures_are_retried_then_502() {
    let (url, recv) = receiver().await;
    recv.fail_status.store(503, Ordering::SeqCst);
    recv.fail_first.store(1, Ordering::SeqCst);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let app = spawn_toml(&format!(
        "[[platforms]]\nid = \"flaky\"\ntype = \"webhook\"\nurl = \"{url}\"\nmax_attempts = 3\n[[platforms]]\nid = \"down\"\ntype = \"webhook\"\nurl = \"{dead}\"\nmax_attempts = 2\n"
    ))
    .await;
    let key = app.key(&["im"]).await;
    let (s, _) = im(&app, &key, json!({"umo": "flaky:FriendMessage:u1", "message": "x"})).await;
    assert_eq!(s, 200, "a 503 is retried and the second attempt succeeds");
    {
        let hits = recv.hits.lock().unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(
            hits[0].0["x-astrgate-delivery"], hits[1].0["x-astrgate-delivery"],
            "one delivery id across retries"
        );
    }
    let (s, b) = im(&app, &key, json!({"umo": "down:FriendMessage:u1", "message": "x"})).await;
    assert_eq!(s, 502);
    assert!(b["message"].as_str().unwrap().starts_with("Failed to send message: webhook unreachable"), "{b}");

    recv.fail_status.store(400, Ordering::SeqCst);
    recv.fail_first.store(5, Ordering::SeqCst);
    let before = recv.hits.lock().unwrap().len();
    let (s, b) = im(&app, &key, json!({"umo": "flaky:FriendMessage:u1", "message": "x"})).await;
    assert_error(s, &b, 502, "Failed to send message: webhook answered HTTP 400");
    assert_eq!(recv.hits.lock().unwrap().len() - before, 1, "a 4xx is not retried");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
