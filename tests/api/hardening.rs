//! Regression tests for the outside audit (issue 11): each drives the running app over real
//! TCP/HTTP/WebSocket with the attack that broke it.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// This process's resident set in KiB (nextest runs every test in a process of its own).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A client whose connections come from `ip` (any 127.x.y.z is loopback on Linux).
fn client_from(ip: IpAddr) -> reqwest::Client {
    astrgate::util::install_crypto_provider();
    reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(30)).build().unwrap()
}

/// Waits until the server closes `s` (EOF or reset); panics after `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept a silent connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
        }
    }
}

#[tokio::test]
async fn a_login_flood_from_many_addresses_keeps_memory_bounded_and_health_answering() {
    let app = spawn_with(|c| c.dashboard.login_failure_delay_ms = 50).await;
    // Warm up: one verification sizes the verifier's memory.
    let (s, _) = send(app.http.post(app.url("/api/auth/login")).json(&json!({"username": "x", "password": "y"}))).await;
    assert_eq!(s, 401);
    let before = rss_kib();

    let mut flood = tokio::task::JoinSet::new();
    for i in 0..150u8 {
        let c = client_from(IpAddr::from([127, 0, 1, i + 1]));
        for _ in 0..2 {
            let (c, url) = (c.clone(), app.url("/api/auth/login"));
            flood.spawn(async move {
                let res = c.post(url).json(&json!({"username": "astrgate", "password": "wrong"})).send().await.unwrap();
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                (status, body)
            });
        }
    }
    // /healthz keeps answering from another address while the flood runs.
    let health = client_from(IpAddr::from([127, 0, 2, 1]));
    let mut health_ok = 0;
    while !flood.is_empty() && health_ok < 50 {
        let (s, b) = send(health.get(app.url("/healthz"))).await;
        assert_eq!(s, 200, "{b}");
        health_ok += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut unauthorized = 0;
    let mut limited = 0;
    while let Some(r) = flood.join_next().await {
        let (status, body) = r.unwrap();
        match status {
            401 => unauthorized += 1,
            429 => {
                assert_eq!(body["message"], "验证尝试过于频繁，系统可能正在遭受暴力破解");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 256, "RSS grew by {grown_mib} MiB under the login flood");
    // The global failure budget (30) let only a few guesses through, whatever the addresses.
    assert!(unauthorized <= 40, "{unauthorized} guesses were checked");
    assert_eq!(unauthorized + limited, 300);
    assert!(health_ok > 0);
}

#[tokio::test]
async fn silent_and_slow_connections_are_closed_while_health_answers() {
    astrgate::server::raise_fd_limit();
    let app = spawn_with(|c| {
        c.server.header_read_timeout_secs = 2;
        c.server.max_connections_per_ip = 400;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // A slow-loris client: a header line every 300 ms never completes the head in time.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let dribble = tokio::spawn(async move {
        for i in 0..100 {
            if slow.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    });
    let health = client_from(IpAddr::from([127, 0, 0, 2]));
    let (s, b) = send(health.get(app.url("/healthz"))).await;
    assert_eq!(s, 200, "{b}");
    // The first 400 wait for the header timeout, the other 100 are over the per-address cap
    // and closed at once: all of them end.
    for s in &mut silent {
        closed_by_server(s, Duration::from_secs(60)).await;
    }
    assert!(dribble.await.unwrap(), "the slow-loris connection was never closed");
    let (s, _) = send(health.get(app.url("/healthz"))).await;
    assert_eq!(s, 200);
    drop(health);
    let counter = app.state.connections.clone();
    eventually(|| {
        let open = counter.open();
        async move { (open == 0).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_stalled_request_body_times_out() {
    let app = spawn_with(|c| c.server.request_body_timeout_secs = 1).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await
    .expect("the server waited for ever on a stalled body");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn stored_html_and_svg_download_as_inert_attachments() {
    let app = spawn_app().await;
    let key = app.key(&["file"]).await;
    let cases = [
        ("report.html", "text/html", b"<html><script>fetch('/api/v1/api-keys')</script></html>".to_vec()),
        (
            "logo.svg",
            "image/svg+xml",
            b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".to_vec(),
        ),
    ];
    for (name, mime, bytes) in cases {
        let (s, b) = crate::files::upload(&app, &key, name, mime, bytes).await;
        assert_eq!(s, 200, "{b}");
        let id = b["data"]["attachment_id"].as_str().unwrap();
        // Even through the query-string carrier, the page cannot run in our origin.
        let res =
            app.http.get(app.url(&format!("/api/v1/file?attachment_id={id}&api_key={key}"))).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let h = res.headers();
        assert_eq!(h["content-type"], "application/octet-stream", "{name}");
        assert!(h["content-disposition"].to_str().unwrap().starts_with("attachment;"), "{name}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["content-security-policy"], "sandbox");
    }
    // Passive types stay inline, with the same protective headers.
    let (_, b) = crate::files::upload(&app, &key, "notes.txt", "text/plain", b"hello".to_vec()).await;
    let id = b["data"]["attachment_id"].as_str().unwrap();
    let res =
        app.http.get(app.url(&format!("/api/v1/file?attachment_id={id}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert!(res.headers()["content-disposition"].to_str().unwrap().starts_with("inline;"));
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn the_dashboard_cookie_cannot_be_used_across_sites() {
    let app = spawn_app().await;
    let cookie = format!("astrbot_dashboard_jwt={}", app.jwt);
    let body = r#"{"name":"x","scopes":["chat"]}"#;
    for path in ["/api/v1/api-keys", "/api/apikey/create"] {
        // A text/plain body is what a cross-site form or no-cors fetch can send: 415.
        let (s, b) = send(
            app.http.post(app.url(path)).header("Cookie", &cookie).header("Content-Type", "text/plain").body(body),
        )
        .await;
        assert_eq!(s, 415, "{path}: {b}");
        // Another origin (another port of the same host is another origin too): 403.
        for (h, v) in
            [("Origin", "http://evil.example"), ("Origin", "http://127.0.0.1:1"), ("Sec-Fetch-Site", "same-site")]
        {
            let (s, b) = send(
                app.http
                    .post(app.url(path))
                    .header("Cookie", &cookie)
                    .header("Content-Type", "application/json")
                    .header(h, v)
                    .body(body),
            )
            .await;
            assert_error(s, &b, 403, "Cross-site request refused");
        }
        // Our own origin, and clients that send no browser headers at all, still work.
        let origin = format!("http://{}", app.addr);
        let (s, b) = send(
            app.http
                .post(app.url(path))
                .header("Cookie", &cookie)
                .header("Content-Type", "application/json")
                .header("Origin", origin)
                .header("Sec-Fetch-Site", "same-origin")
                .body(body),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = send(
            app.http
                .post(app.url(path))
                .header("Cookie", &cookie)
                .header("Content-Type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    // Reads are not affected.
    let (s, _) = send(
        app.http.get(app.url("/api/v1/api-keys")).header("Cookie", &cookie).header("Origin", "http://evil.example"),
    )
    .await;
    assert_eq!(s, 200);
    // Bearer tokens are not cookies: no browser attaches them on its own.
    let (s, _) = send(
        app.http
            .post(app.url("/api/v1/api-keys"))
            .bearer_auth(&app.jwt)
            .header("Origin", "http://evil.example")
            .json(&json!({"scopes": ["chat"]})),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn attachments_belong_to_the_key_that_uploaded_them() {
    let llm = crate::fake_llm::FakeLlm::start().await;
    let app = spawn_toml(&llm.provider_toml("fake")).await;
    let owner = app.key(&["file", "chat", "im"]).await;
    let other = app.key(&["file", "chat", "im"]).await;
    let (_, b) = crate::files::upload(&app, &owner, "secret.txt", "text/plain", b"TOP-SECRET-CONTENT".to_vec()).await;
    let id = b["data"]["attachment_id"].as_str().unwrap().to_string();
    // The other key cannot download it, nor feed it to the model (even forcing a text name).
    let (s, b) = send(app.http.get(app.url(&format!("/api/v1/file?attachment_id={id}"))).bearer_auth(&other)).await;
    assert_error(s, &b, 404, "Attachment not found");
    let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&other).json(&json!({
        "username": "mallory",
        "message": [{"type": "file", "attachment_id": id, "filename": "x.txt"}, {"type": "plain", "text": "read it"}],
    })))
    .await;
    assert_error(s, &b, 400, &format!("attachment not found: {id}"));
    let (s, b) = send(app.http.post(app.url("/api/v1/im/message")).bearer_auth(&other).json(&json!({
        "umo": "webchat:FriendMessage:webchat!mallory!s1",
        "message": [{"type": "file", "attachment_id": id}],
    })))
    .await;
    assert_error(s, &b, 400, &format!("attachment not found: {id}"));
    assert!(llm.inner.requests.lock().unwrap().is_empty(), "nothing reached the model");
    // Its owner and the dashboard can.
    let frames = chat(
        &app,
        &owner,
        json!({"username": "alice", "message": [{"type": "file", "attachment_id": id}, {"type": "plain", "text": "read it"}]}),
    )
    .await
    .collect()
    .await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    let sent = llm.inner.requests.lock().unwrap()[0].to_string();
    assert!(sent.contains("TOP-SECRET-CONTENT"), "{sent}");
    let res =
        app.http.get(app.url(&format!("/api/v1/file?attachment_id={id}"))).bearer_auth(&app.jwt).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn inlining_follows_the_stored_type_not_the_clients_filename() {
    let llm = crate::fake_llm::FakeLlm::start().await;
    let app = spawn_toml(&llm.provider_toml("fake")).await;
    let key = app.key(&["file", "chat"]).await;
    let blob: Vec<u8> = b"BINARY-MARKER".iter().copied().chain((0..200u8).map(|i| i.wrapping_mul(37))).collect();
    let (_, b) = crate::files::upload(&app, &key, "blob.bin", "application/octet-stream", blob).await;
    let id = b["data"]["attachment_id"].as_str().unwrap();
    chat(&app, &key, json!({"username": "a", "message": [{"type": "file", "attachment_id": id, "filename": "x.txt"}]}))
        .await
        .collect()
        .await;
    let sent = llm.inner.requests.lock().unwrap()[0].to_string();
    assert!(!sent.contains("BINARY-MARKER"), "a binary file was inlined because the client called it x.txt: {sent}");
    assert!(sent.contains("its content is not shown"), "{sent}");
}

#[tokio::test]
async fn multipart_fields_other_than_file_are_capped_too() {
    let app = spawn_with(|c| c.files.max_upload_bytes = 1024 * 1024).await;
    let key = app.key(&["file"]).await;
    let junk = vec![b'j'; 3 * 1024 * 1024];
    let form = reqwest::multipart::Form::new()
        .part("junk", reqwest::multipart::Part::bytes(junk))
        .part("file", reqwest::multipart::Part::bytes(b"tiny".to_vec()).file_name("a.txt"));
    // No Content-Length shortcut: the body is streamed (chunked).
    let res = app.http.post(app.url("/api/v1/file")).bearer_auth(&key).multipart(form).send().await;
    match res {
        Ok(res) => {
            assert_eq!(res.status(), 413);
            let b: Value = res.json().await.unwrap();
            assert_eq!(b["status"], "error");
        }
        // The server may stop reading and close before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
}

#[tokio::test]
async fn a_key_bound_to_a_username_acts_only_as_that_user() {
    let app = spawn_app().await;
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/api-keys"))
            .bearer_auth(&app.jwt)
            .json(&json!({"name": "alice only", "scopes": ["chat"], "username": "alice"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["username"], "alice");
    let key = b["data"]["api_key"].as_str().unwrap().to_string();
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=bob")).bearer_auth(&key)).await;
    assert_error(s, &b, 403, "This API key is bound to another username");
    // Without a username it acts as its own.
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions")).bearer_auth(&key)).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = send(app.http.get(app.url("/api/v1/chat/sessions?username=alice")).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    let (s, b) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200);
    assert!(b["data"].as_array().unwrap().iter().any(|k| k["username"] == "alice"));
}

/// The resident set of another process, in KiB.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn large_conversation_media_is_bounded_in_memory() {
    let llm = crate::fake_llm::FakeLlm::start().await;
    llm.inner.forget_requests.store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::cli::write_config(
        dir.path(),
        &format!("[compat]\nrequire_api_key = false\n{}", llm.provider_toml("fake")),
    );
    let (mut child, base, _log) = crate::cli::serve(&cfg).await;
    let pid = child.id().unwrap();
    let http = client();
    // A real PNG header followed by 11 MiB: base64 makes the body ~15 MiB, under the 16 MiB limit.
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    png.extend((0..11 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let body = bytes::Bytes::from(
        json!({"session_id": "s", "user_id": "u", "messages": [{"type": "image", "value": b64}]}).to_string(),
    );
    drop((png, b64));
    let small = json!({"session_id": "warm", "user_id": "u", "messages": [{"type": "text", "value": "hi"}]});
    let res = http.post(format!("{base}/v1/conversation")).json(&small).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    let before = rss_of(pid);

    let mut peak = before;
    let mut served = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (http, base, body) = (http.clone(), base.clone(), body.clone());
        tasks.spawn(async move {
            // Each its own session, so none is refused as busy.
            let body = String::from_utf8(body.to_vec()).unwrap().replacen("\"s\"", &format!("\"s{i}\""), 1);
            let res = http
                .post(format!("{base}/v1/conversation"))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            (status, text)
        });
    }
    loop {
        peak = peak.max(rss_of(pid));
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            r = tasks.join_next() => {
                let (status, text) = r.unwrap().unwrap();
                // Those that waited too long for their turn are told to retry (a debug build is slow).
                if status == 503 {
                    assert!(text.contains("Too many large requests in progress"), "{text}");
                } else {
                    assert_eq!(status, 200, "{text}");
                    assert!(text.starts_with("data: {\"messages\""), "{text}");
                    served += 1;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_of(pid);
    let peak_mib = peak.saturating_sub(before) / 1024;
    let kept_mib = after.saturating_sub(before) / 1024;
    eprintln!("conversation media: {served} served, peak +{peak_mib} MiB, kept +{kept_mib} MiB");
    assert!(served >= 2, "only {served} of 8 were served");
    assert!(peak_mib < 400, "8 large requests at once raised RSS by {peak_mib} MiB");
    assert!(kept_mib < 300, "{kept_mib} MiB stayed after the requests");
    crate::cli::sigterm_and_wait(&mut child).await;
}

#[tokio::test]
async fn one_ownership_rule_for_both_umo_forms() {
    let app = spawn_app().await;
    let chat_key = app.key(&["chat"]).await;
    let im = app.key(&["im"]).await;
    let post = |umo: String| {
        app.http
            .post(app.url("/api/v1/im/message"))
            .bearer_auth(&im)
            .json(&json!({"umo": umo, "message": [{"type": "plain", "text": "pushed"}]}))
    };
    // A bare id nobody owns: 404, and nothing is left behind for whoever opens that id later.
    let (s, b) = send(post("webchat:FriendMessage:later".into())).await;
    assert_error(s, &b, 404, "Session not found");
    assert!(app.state.store.get_session("later").await.unwrap().is_none());
    // The prefixed form creates it for the user it names, then the bare form reaches it too.
    let (s, b) = send(post("webchat:FriendMessage:webchat!alice!s1".into())).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(app.state.store.get_session("s1").await.unwrap().unwrap().creator, "alice");
    let (s, b) = send(post("webchat:FriendMessage:s1".into())).await;
    assert_eq!(s, 200, "{b}");
    // Naming another owner is refused in the prefixed form.
    let (s, b) = send(post("webchat:FriendMessage:webchat!bob!s1".into())).await;
    assert_error(s, &b, 403, "session_id belongs to another username");
    // Session ids are capped at 128 characters and internal prefixes are reserved, everywhere.
    let long = "é".repeat(129);
    let (s, b) = send(post(format!("webchat:FriendMessage:webchat!alice!{long}"))).await;
    assert_error(s, &b, 400, "umo is too long (max 128 characters)");
    let (s, b) = send(post("webchat:FriendMessage:webchat!alice!stage!x".into())).await;
    assert_error(s, &b, 400, "umo uses a reserved prefix: stage!");
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&chat_key)
            .json(&json!({"username": "a", "message": "x", "session_id": long})),
    )
    .await;
    assert_error(s, &b, 400, "session_id is too long (max 128 characters)");
    for id in ["stage!victim", "conv!victim", "webchat_live!bob!1"] {
        let (s, b) = send(
            app.http
                .post(app.url("/api/v1/chat"))
                .bearer_auth(&chat_key)
                .json(&json!({"username": "a", "message": "x", "session_id": id})),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(b["message"].as_str().unwrap().starts_with("session_id uses a reserved prefix"), "{b}");
    }
    let (s, b) = send(
        app.http
            .get(app.url(&format!("/api/v1/chat/sessions/{}/messages?username=a", "x".repeat(300))))
            .bearer_auth(&chat_key),
    )
    .await;
    assert_error(s, &b, 404, "Session not found");
}

#[tokio::test]
async fn the_stage_api_touches_only_its_own_sessions() {
    let app = spawn_app().await;
    let key = app.key(&["chat"]).await;
    // A session stored under the stage prefix by someone else (possible before ids were reserved).
    let rec = astrgate::store::SessionRecord::new("stage!legacy", "webchat", "bob");
    app.state.store.create_session(&rec).await.unwrap();
    let (s, b) = send(
        app.http
            .delete(app.url("/delete_session"))
            .bearer_auth(&key)
            .json(&json!({"sessionId": "legacy", "timeStamp": "1"})),
    )
    .await;
    assert_error(s, &b, 403, "session_id belongs to another username");
    assert!(app.state.store.get_session("stage!legacy").await.unwrap().is_some(), "bob's session survived");
}

#[tokio::test]
async fn a_password_change_invalidates_earlier_dashboard_tokens() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_in(dir.clone(), |_| {}).await;
    let (s, b) =
        send(app.http.post(app.url("/api/auth/login")).json(&json!({"username": "astrgate", "password": PASSWORD})))
            .await;
    assert_eq!(s, 200);
    let token = b["data"]["token"].as_str().unwrap().to_string();
    assert!(app.state.dashboard.decode(&token).unwrap().exp > chrono::Utc::now().timestamp(), "tokens carry exp");
    app.stop().await;
    // Same password: the token survives the restart.
    let app = spawn_in(dir.clone(), |_| {}).await;
    assert_eq!(send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&token)).await.0, 200);
    app.stop().await;
    // New password: it does not, on any carrier.
    let app = spawn_in(dir, |c| c.dashboard.password = Some("a-brand-new-password".to_string().into())).await;
    let (s, b) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&token)).await;
    assert_error(s, &b, 401, "Invalid token");
    let (s, b) =
        send(app.http.get(app.url("/api/apikey/list")).header("Cookie", format!("astrbot_dashboard_jwt={token}")))
            .await;
    assert_error(s, &b, 401, "Token 无效");
    let mut ws = ws_connect(&app, &format!("/api/live_chat/ws?token={token}"), &[]).await;
    ws.expect_refusal(1008, "Invalid token").await;
}

#[test]
fn a_short_jwt_secret_is_refused() {
    let err = astrgate::config::Config::from_toml("[dashboard]\njwt_secret = \"short\"\n").err().unwrap().to_string();
    assert!(err.contains("at least 32 bytes"), "{err}");
    assert!(
        astrgate::config::Config::from_toml(&format!("[dashboard]\njwt_secret = \"{}\"\n", "k".repeat(32))).is_ok()
    );
}

#[tokio::test]
async fn upstream_error_text_never_reaches_clients() {
    let llm = crate::fake_llm::FakeLlm::start().await;
    let app = spawn_toml(&llm.provider_toml("fake")).await;
    let key = app.key(&["chat"]).await;
    let leak = "Incorrect API key provided: sk-live-ABCDEF****wxyz";
    let cases = [
        (401, "The model provider refused astrgate's credentials (provider authentication failed)"),
        (429, "The model provider is rate limiting requests (HTTP 429)"),
        (400, "The model provider rejected the request (HTTP 400)"),
        (502, "The model provider is unavailable (HTTP 502)"),
    ];
    for (status, text) in cases {
        llm.push(crate::fake_llm::Reply::Error(
            status,
            json!({"error": {"message": leak, "type": "invalid_request_error"}}),
        ));
        let frames = chat(&app, &key, json!({"username": "u", "message": "hi"})).await.collect().await;
        let err = frames.iter().find(|f| f.ty() == "error").unwrap();
        assert_eq!(err.data["data"], text);
        let all = serde_json::to_string(&frames.iter().map(|f| &f.data).collect::<Vec<_>>()).unwrap();
        assert!(!all.contains("sk-live") && !all.contains("Incorrect API key"), "{all}");
    }
    // Nor the stored history.
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions?username=u")).bearer_auth(&key)).await;
    for s in b["data"]["sessions"].as_array().unwrap() {
        let id = s["session_id"].as_str().unwrap();
        let (_, h) =
            send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{id}/messages?username=u"))).bearer_auth(&key))
                .await;
        assert!(!h.to_string().contains("sk-live"), "{h}");
    }
}

#[tokio::test]
async fn a_run_log_is_capped_by_bytes_as_well_as_events() {
    let llm = crate::fake_llm::FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n[runs]\nmax_log_bytes = 1048576\n", llm.provider_toml("fake"))).await;
    let key = app.key(&["chat"]).await;
    let big = "x".repeat(400 * 1024);
    llm.push(crate::fake_llm::Reply::Chunks {
        chunks: (0..20).map(|_| crate::fake_llm::Chunk::Content(big.clone())).collect(),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let frames = chat(&app, &key, json!({"username": "u", "message": "hi", "session_id": "big"})).await.collect().await;
    let err = frames.iter().find(|f| f.ty() == "error").expect("the reply is cut off");
    assert_eq!(err.data["code"], "RUN_LIMIT");
    let streamed: usize =
        frames.iter().filter(|f| f.ty() == "plain").map(|f| f.data["data"].as_str().unwrap().len()).sum();
    assert!(streamed <= 1024 * 1024, "{streamed} bytes streamed");
    let res =
        app.http.get(app.url("/api/v1/chat/sessions/big/messages?username=u")).bearer_auth(&key).send().await.unwrap();
    let page = res.bytes().await.unwrap();
    assert!(page.len() < 2 * 1024 * 1024, "one history page is {} bytes", page.len());
}

#[tokio::test]
async fn concurrent_runs_are_capped() {
    let llm = crate::fake_llm::FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n[runs]\nmax_active = 2\n", llm.provider_toml("fake"))).await;
    let key = app.key(&["chat"]).await;
    let _hanging = hanging_chats(&app, &llm, &key, 2).await;
    let res = app
        .http
        .post(app.url("/api/v1/chat"))
        .bearer_auth(&key)
        .json(&json!({"username": "u", "message": "three"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["message"], "Too many concurrent runs");
}

#[tokio::test]
async fn silent_websockets_are_pinged_then_closed() {
    let app = spawn_with(|c| {
        c.live.ping_interval_secs = 1;
        c.live.idle_timeout_secs = 3;
    })
    .await;
    let key = app.key(&["chat"]).await;
    // A client that reads nothing never answers the pings: closed as idle. (Raw TCP, so that no
    // client library answers the pings behind the test's back.)
    let mut dead = TcpStream::connect(app.addr).await.unwrap();
    let upgrade = format!(
        "GET /api/v1/chat/ws?api_key={key} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    dead.write_all(upgrade.as_bytes()).await.unwrap();
    // A client that keeps reading answers them (its library does) and stays connected.
    let mut alive = ws_connect(&app, &format!("/api/v1/live/ws?api_key={key}&username=u"), &[]).await;
    let reader = tokio::spawn(async move {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, alive.ws.next()).await {
            if let Ok(tokio_tungstenite::tungstenite::Message::Close(_)) = m {
                panic!("an active client was closed");
            }
        }
        alive
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut alive = reader.await.unwrap();
    alive.send(json!({"t": "ping"})).await;
    assert_eq!(alive.recv().await["t"], "pong");
    // Everything the server sent: the 101, pings, then a close frame 1001 "idle timeout", then EOF.
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), dead.read_to_end(&mut raw)).await.expect("closed").unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&raw));
    let close = [&[0x88u8, 14, 0x03, 0xE9][..], b"idle timeout"].concat();
    assert!(raw.windows(close.len()).any(|w| w == close), "no idle close frame in {raw:?}");
    assert!(raw.windows(2).any(|w| w == [0x89, 8]), "no ping before the close");
}

#[tokio::test]
async fn a_generated_password_goes_to_a_private_file_when_not_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("astrgate.toml");
    std::fs::write(&cfg, format!("listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n", data.display().to_string())).unwrap();
    let (mut child, base, log) = crate::cli::serve(&cfg).await;
    let file = data.join("dashboard-password.txt");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(password.len(), 24);
    let (s, _) = send(
        client().post(format!("{base}/api/auth/login")).json(&json!({"username": "astrgate", "password": password})),
    )
    .await;
    assert_eq!(s, 200);
    crate::cli::sigterm_and_wait(&mut child).await;
    let log = crate::cli::final_log(&log).await;
    assert!(log.contains("dashboard-password.txt"), "{log}");
    assert!(!log.contains(&password), "the password reached the log:\n{log}");
}

/// A small tmpfs for disk-full tests; unmounted (lazily) when dropped. `None` when this test
/// process may not mount (not root): the caller skips with a message.
pub struct SmallDisk {
    pub path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { path, _dir: dir })
    }

    /// Writes zeros until the disk is full.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let f = self.path.join("filler");
        let mut file = std::fs::File::create(&f).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        f
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test]
async fn a_full_disk_costs_no_model_call_and_health_reports_it() {
    let Some(disk) = SmallDisk::mount("6m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let llm = crate::fake_llm::FakeLlm::start().await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let data = disk.path.clone();
    let extra = astrgate::config::Config::from_toml(&llm.provider_toml("fake")).unwrap();
    let app = spawn_in(dir, move |c| {
        c.data_dir = data;
        c.providers = extra.providers;
    })
    .await;
    let key = app.key(&["chat"]).await;
    let frames =
        chat(&app, &key, json!({"username": "u", "message": "first", "session_id": "s"})).await.collect().await;
    assert_eq!(frames.last().unwrap().ty(), "end");
    assert_eq!(llm.requests().len(), 1);

    let filler = disk.fill();
    // Larger than the space the WAL already holds: a small write would reuse the WAL's pages once
    // the checkpointer copied them back, and succeed on a full disk.
    let big = format!("second {}", "x".repeat(400 * 1024));
    let frames = chat(&app, &key, json!({"username": "u", "message": big, "session_id": "s"})).await.collect().await;
    let err = frames.iter().find(|f| f.ty() == "error").expect("an error event");
    assert_eq!(err.data["data"], "Failed to save the message");
    assert_eq!(llm.requests().len(), 1, "the model was called although the question could not be saved");
    let (s, b) = send(app.http.get(app.url("/healthz"))).await;
    assert_error(s, &b, 503, "database writes are failing");

    // Space comes back: health recovers and chats work again.
    std::fs::remove_file(filler).unwrap();
    let (s, b) = send(app.http.get(app.url("/healthz"))).await;
    assert_eq!(s, 200, "{b}");
    let frames =
        chat(&app, &key, json!({"username": "u", "message": "third", "session_id": "s"})).await.collect().await;
    assert!(frames.iter().all(|f| f.ty() != "error"), "{:?}", types(&frames));
    assert_eq!(llm.requests().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn kill_9_mid_run_keeps_the_question_and_the_partial_reply() {
    let llm = crate::fake_llm::FakeLlm::start().await;
    let words: Vec<String> = (0..80).map(|i| format!("w{i} ")).collect();
    llm.push(crate::fake_llm::Reply::Chunks {
        chunks: words.iter().map(|w| crate::fake_llm::Chunk::Content(w.clone())).collect(),
        delay: Duration::from_millis(50),
        first_delay: Duration::ZERO,
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::cli::write_config(dir.path(), &llm.provider_toml("fake"));
    let (mut child, base, _log) = crate::cli::serve(&cfg).await;
    let http = client();
    let (s, b) =
        send(http.post(format!("{base}/api/v1/api-keys")).basic_auth("x", None::<&str>).json(&json!({}))).await;
    assert_eq!(s, 401, "{b}");
    let (_, login) =
        send(http.post(format!("{base}/api/auth/login")).json(&json!({"username": "astrgate", "password": PASSWORD})))
            .await;
    let jwt = login["data"]["token"].as_str().unwrap().to_string();
    let res = http
        .post(format!("{base}/api/v1/chat"))
        .bearer_auth(&jwt)
        .json(&json!({"message": "tell me a long story", "session_id": "story"}))
        .send()
        .await
        .unwrap();
    let run_id = res.headers()["x-run-id"].to_str().unwrap().to_string();
    let mut sse = SseReader::new(res);
    let mut seen = String::new();
    let started = std::time::Instant::now();
    // Read for a while (the reply is saved at least once a second), then kill -9 mid-reply.
    while started.elapsed() < Duration::from_millis(2500) {
        let f = sse.next().await.unwrap();
        if f.ty() == "plain" {
            seen.push_str(f.data["data"].as_str().unwrap());
        }
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    child.wait().await.unwrap();
    assert!(!seen.is_empty() && seen.len() < words.concat().len(), "killed mid-reply: {seen:?}");

    let (mut child, base, _log) = crate::cli::serve(&cfg).await;
    let (s, h) = send(http.get(format!("{base}/api/v1/chat/sessions/story/messages")).bearer_auth(&jwt)).await;
    assert_eq!(s, 200, "{h}");
    let msgs = h["data"]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{h}");
    assert_eq!(msgs[0]["content"]["message"][0]["text"], "tell me a long story");
    let bot = &msgs[1]["content"];
    assert_eq!(bot["interrupted"], true, "{bot}");
    assert!(bot.get("streaming").is_none(), "{bot}");
    let saved = bot["message"][0]["text"].as_str().unwrap();
    assert!(!saved.is_empty() && words.concat().starts_with(saved), "{saved:?}");
    // At most about a second was lost: everything seen up to a second before the kill is there.
    assert!(saved.len() + 25 * 4 >= seen.len(), "saved {} of {} bytes seen", saved.len(), seen.len());

    // The run can be resumed: it replays what was saved and ends like a stopped run.
    let res = http.get(format!("{base}/api/v1/chat/runs/{run_id}/stream")).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let frames = SseReader::new(res).collect().await;
    let tail: Vec<String> = types(&frames).into_iter().rev().take(3).collect();
    assert_eq!(tail, ["end", "message_saved", "complete"]);
    let complete = frames.iter().find(|f| f.ty() == "complete").unwrap();
    assert_eq!(complete.data["data"], saved);
    crate::cli::sigterm_and_wait(&mut child).await;
}

#[tokio::test]
async fn the_server_keeps_accepting_after_running_out_of_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::cli::write_config(dir.path(), "");
    // A hard limit the server cannot raise: a few dozen descriptors beyond its own.
    let mut cmd = tokio::process::Command::new("prlimit");
    cmd.arg("--nofile=64:64").arg("--").arg(crate::cli::BIN).arg("--config").arg(&cfg).arg("serve");
    cmd.env("ASTRGATE_SERVER__HEADER_READ_TIMEOUT_SECS", "2");
    let (mut child, base, log) = crate::cli::serve_command(cmd).await;
    let addr = base.trim_start_matches("http://").to_string();
    // More silent connections than descriptors: accept fails with EMFILE until the header
    // timeout frees some, then the backlog drains.
    let mut silent = Vec::new();
    for _ in 0..150 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    for s in &mut silent {
        closed_by_server(s, Duration::from_secs(60)).await;
    }
    // Descriptors are free again: the server answers as before.
    let (s, b) = send(client().get(format!("{base}/healthz"))).await;
    assert_eq!(s, 200, "{b}");
    crate::cli::sigterm_and_wait(&mut child).await;
    let log = crate::cli::final_log(&log).await;
    let warnings = log.matches("accepting connections failed").count();
    assert_eq!(warnings, 1, "EMFILE is logged once a minute, not per attempt:\n{log}");
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `s`; returns (status line, body).
async fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a response head: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a Content-Length");
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (head.lines().next().unwrap_or_default().to_string(), buf[head_end..head_end + len].to_vec())
}

#[tokio::test]
async fn request_heads_are_capped_and_a_connection_that_carried_an_upload_serves_on() {
    let app = spawn_app().await;
    // The read buffer, and so the request head, is capped at 16 KiB: 431 past it.
    let ok = app.http.get(app.url("/healthz")).header("x-pad", "a".repeat(12 * 1024)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let big = app.http.get(app.url("/healthz")).header("x-pad", "a".repeat(20 * 1024)).send().await.unwrap();
    assert_eq!(big.status(), 431);

    // A body many times that size arrives whole, and the same keep-alive connection answers the
    // next request.
    let key = app.key(&["file"]).await;
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let boundary = "b0undary-for-a-big-upload";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/file HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let (status, answer) = read_response(&mut s).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["data"]["size"], data.len());
    let id = v["data"]["attachment_id"].as_str().unwrap();
    s.write_all(
        format!("GET /api/v1/file?attachment_id={id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let (status, got) = read_response(&mut s).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(got == data, "the download differs from the upload");
}
