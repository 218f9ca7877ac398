//! Two instances sharing PostgreSQL and Redis, as behind one load balancer: whatever instance
//! a request lands on, resume, stop, busy, proactive pushes, key revocation, login and
//! attachments behave as on one instance; and Redis going away and coming back. Each test has
//! its own database and Redis key prefix; they need `TEST_POSTGRES_URL` and `TEST_REDIS_URL`
//! (`scripts/test.sh` starts both servers) and print "skipped" without them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Reply, tokens};
use crate::helpers::*;

fn slow(words: &[String], delay_ms: u64) -> Reply {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    Reply::Chunks { chunks: tokens(&w), delay: Duration::from_millis(delay_ms), first_delay: Duration::ZERO }
}

async fn history(app: &TestApp, key: &str, session: &str) -> Vec<Value> {
    let url = app.url(&format!("/api/v1/chat/sessions/{session}/messages?username=u"));
    let (s, b) = send(app.http.get(url).bearer_auth(key)).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["messages"].as_array().unwrap().clone()
}

/// The sequence number of a frame's `id: <run_id>:<seq>`.
fn seq(f: &Frame) -> u64 {
    f.id.as_deref().and_then(|i| i.rsplit_once(':')).and_then(|(_, s)| s.parse().ok()).unwrap()
}

#[tokio::test]
async fn a_run_on_one_instance_resumes_on_the_other_without_gap_or_duplicate() {
    let fake = FakeLlm::start().await;
    let Some(p) = spawn_pair("cluster resume", &fake.provider_toml("fake")).await else { return };
    let key = p.a.key(&["chat"]).await;
    let words: Vec<String> = (0..30).map(|i| format!("w{i} ")).collect();
    fake.push(slow(&words, 30));
    let mut sse = chat(&p.a, &key, json!({"message": "q", "username": "u", "session_id": "res"})).await;
    let mut got = Vec::new();
    while got.len() < 8 {
        got.push(sse.next().await.unwrap());
    }
    drop(sse);
    let run_id = got[2].data["data"]["run_id"].as_str().unwrap().to_string();
    let last = got.last().unwrap().id.clone().unwrap();
    // The client comes back through the load balancer and lands on the other instance.
    let res =
        p.b.http
            .get(p.b.url(&format!("/api/v1/chat/runs/{run_id}/stream?username=u")))
            .bearer_auth(&key)
            .header("Last-Event-ID", &last)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 200);
    let rest = SseReader::new(res).collect().await;
    let mut all = got.clone();
    all.extend(rest.iter().cloned());
    let seqs: Vec<u64> = all.iter().map(seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "no gap, no duplicate: {seqs:?}");
    let text: String = all.iter().filter(|f| f.ty() == "plain").map(|f| f.data["data"].as_str().unwrap()).collect();
    assert_eq!(text, words.concat());
    assert_eq!(types(&rest).last().map(String::as_str), Some("end"));
    // Another user cannot follow it, from either instance.
    let res =
        p.b.http
            .get(p.b.url(&format!("/api/v1/chat/runs/{run_id}/stream?username=mallory")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 403);
    // Once over, it replays from the other instance too (Redis or the database).
    let res =
        p.b.http
            .get(p.b.url(&format!("/api/v1/chat/runs/{run_id}/stream?username=u")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
    let replay = SseReader::new(res).collect().await;
    assert_eq!(replay.len(), all.len());
}

#[tokio::test]
async fn stop_and_busy_work_across_instances() {
    let fake = FakeLlm::start().await;
    let Some(p) = spawn_pair("cluster stop", &fake.provider_toml("fake")).await else { return };
    let key = p.a.key(&["chat"]).await;
    fake.push(Reply::HangAfter(tokens(&["Hello ", "there"])));
    let mut sse = chat(&p.a, &key, json!({"message": "q", "username": "u", "session_id": "st"})).await;
    let mut plain = 0;
    while plain < 2 {
        if sse.next().await.unwrap().ty() == "plain" {
            plain += 1;
        }
    }
    // One active run per session, whichever instance is asked.
    let res =
        p.b.http
            .post(p.b.url("/api/v1/chat"))
            .bearer_auth(&key)
            .json(&json!({"message": "again", "username": "u", "session_id": "st"}))
            .send()
            .await
            .unwrap();
    let (s, b) = (res.status(), res.json::<Value>().await.unwrap());
    assert_error(s, &b, 409, "Session is busy");
    // The session detail on B shows the run A is executing.
    let (_, d) = send(p.b.http.get(p.b.url("/api/v1/chat/sessions/st?username=u")).bearer_auth(&key)).await;
    assert_eq!(d["data"]["is_running"], true, "{d}");

    // Stop sent to B stops the run on A within a second.
    let t = Instant::now();
    let (s, b) = send(p.b.http.post(p.b.url("/api/v1/chat/sessions/st/stop?username=u")).bearer_auth(&key)).await;
    assert_eq!((s.as_u16(), &b["data"]), (200, &json!({"stopped_count": 1})));
    assert!(fake.wait_abandoned(Duration::from_secs(1)).await, "the upstream request on A was dropped");
    let rest = sse.collect().await;
    assert!(t.elapsed() < Duration::from_secs(1), "stopped after {:?}", t.elapsed());
    assert_eq!(types(&rest), ["complete", "message_saved", "end"]);
    let h = history(&p.b, &key, "st").await;
    assert_eq!(h[1]["content"]["interrupted"], true, "{h:?}");
    assert_eq!(h[1]["content"]["message"][0]["text"], "Hello there");
    // The session is free again, on both instances.
    fake.push(Reply::Chunks { chunks: tokens(&["ok"]), delay: Duration::ZERO, first_delay: Duration::ZERO });
    let frames =
        chat(&p.b, &key, json!({"message": "next", "username": "u", "session_id": "st"})).await.collect().await;
    assert_eq!(types(&frames).last().map(String::as_str), Some("end"));
    let (_, b) = send(p.a.http.post(p.a.url("/api/v1/chat/sessions/st/stop?username=u")).bearer_auth(&key)).await;
    assert_eq!(b["data"], json!({"stopped_count": 0}));
}

#[tokio::test]
async fn proactive_messages_reach_sockets_and_streams_on_the_other_instance() {
    let fake = FakeLlm::start().await;
    let Some(p) = spawn_pair("cluster push", &fake.provider_toml("fake")).await else { return };
    let chat_key = p.a.key(&["chat"]).await;
    let im_key = p.a.key(&["im"]).await;
    // A socket bound on B, a chat streaming on A; the push is sent to B.
    let mut ws = ws_connect(&p.b, &format!("/api/v1/live/ws?api_key={chat_key}&username=u&ct=chat"), &[]).await;
    ws.send(json!({"t": "bind", "session_id": "pu"})).await;
    assert_eq!(ws.recv().await["type"], "session_bound");
    fake.push(Reply::HangAfter(tokens(&["thinking"])));
    let mut sse = chat(&p.a, &chat_key, json!({"username": "u", "message": "hi", "session_id": "pu"})).await;
    while sse.next().await.unwrap().ty() != "plain" {}
    let (s, b) = send(
        p.b.http
            .post(p.b.url("/api/v1/im/message"))
            .bearer_auth(&im_key)
            .json(&json!({"umo": "webchat:FriendMessage:pu", "message": "Your order shipped"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let pushed = ws.recv().await;
    assert_eq!(
        (pushed["chain_type"].as_str(), pushed["data"].as_str()),
        (Some("proactive"), Some("Your order shipped"))
    );
    assert_eq!(ws.recv().await["type"], "message_saved");
    // …and the stream open on the other instance shows it too (the push went to B, the run is on A).
    let on_stream = sse.next().await.unwrap();
    assert_eq!(
        (on_stream.data["chain_type"].as_str(), on_stream.data["data"].as_str()),
        (Some("proactive"), Some("Your order shipped"))
    );
    // Sent to A this time, with the socket on B.
    let (s, _) = send(
        p.a.http
            .post(p.a.url("/api/v1/im/message"))
            .bearer_auth(&im_key)
            .json(&json!({"umo": "webchat:FriendMessage:pu", "message": "second"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ws.recv().await["data"], "second");
    let (s, _) = send(p.a.http.post(p.a.url("/api/v1/chat/sessions/pu/stop?username=u")).bearer_auth(&chat_key)).await;
    assert_eq!(s, 200);
    let _ = sse.collect().await;
}

#[tokio::test]
async fn keys_and_login_are_shared_across_instances() {
    let Some(p) = spawn_pair("cluster auth", "").await else { return };
    // A token minted by A works on B (the JWT secret lives in the database).
    let (s, b) = send(p.b.http.get(p.b.url("/api/v1/api-keys")).bearer_auth(&p.a.jwt)).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) =
        send(p.a.http.post(p.a.url("/api/auth/login")).json(&json!({"username": "astrgate", "password": PASSWORD})))
            .await;
    assert_eq!(s, 200, "{b}");
    let token = b["data"]["token"].as_str().unwrap().to_string();
    let (s, _) = send(p.b.http.get(p.b.url("/api/v1/api-keys")).bearer_auth(&token)).await;
    assert_eq!(s, 200);

    // Revoking on A: B refuses the key within a second (its cache is dropped, not left to expire).
    let key = p.a.key(&["im"]).await;
    let (s, _) = send(p.b.http.get(p.b.url("/api/v1/im/bots")).header("X-API-Key", &key)).await;
    assert_eq!(s, 200, "B has the key cached now");
    let (_, list) = send(p.a.http.get(p.a.url("/api/v1/api-keys")).bearer_auth(&p.a.jwt)).await;
    let key_id = list["data"][0]["key_id"].as_str().unwrap().to_string();
    let t = Instant::now();
    let (s, _) = send(p.a.http.post(p.a.url(&format!("/api/v1/api-keys/{key_id}/revoke"))).bearer_auth(&p.a.jwt)).await;
    assert_eq!(s, 200);
    loop {
        let (s, _) = send(p.b.http.get(p.b.url("/api/v1/im/bots")).header("X-API-Key", &key)).await;
        if s == 401 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1), "B still accepts the revoked key after {:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Deleting works the same way.
    let key2 = p.a.key(&["im"]).await;
    let (s, _) = send(p.b.http.get(p.b.url("/api/v1/im/bots")).header("X-API-Key", &key2)).await;
    assert_eq!(s, 200);
    let (_, list) = send(p.a.http.get(p.a.url("/api/v1/api-keys")).bearer_auth(&p.a.jwt)).await;
    let id2 = list["data"].as_array().unwrap().iter().find(|k| k["revoked_at"].is_null()).unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = Instant::now();
    let (s, _) = send(p.a.http.delete(p.a.url(&format!("/api/v1/api-keys/{id2}"))).bearer_auth(&p.a.jwt)).await;
    assert_eq!(s, 200);
    loop {
        let (s, _) = send(p.b.http.get(p.b.url("/api/v1/im/bots")).header("X-API-Key", &key2)).await;
        if s == 401 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1), "B still accepts the deleted key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The login limiter is shared: the burst (3 per address, 1 a second after) is spent across
    // both instances, where two limiters of their own would let all six through.
    let mut statuses = Vec::new();
    for app in [&p.a, &p.b, &p.a, &p.b, &p.a, &p.b] {
        let (s, _) = send(
            app.http
                .post(app.url("/api/auth/login"))
                .json(&json!({"username": "astrgate", "password": "wrong-password"})),
        )
        .await;
        statuses.push(s.as_u16());
    }
    assert!(statuses.iter().filter(|s| **s != 429).count() <= 4, "{statuses:?}");
    assert!(statuses.contains(&401), "{statuses:?}");

    // Logging out on A ends the tokens on B too.
    let (s, _) = send(p.a.http.post(p.a.url("/api/auth/logout")).bearer_auth(&token)).await;
    assert_eq!(s, 200);
    eventually(|| async {
        let (s, _) = send(p.b.http.get(p.b.url("/api/v1/api-keys")).bearer_auth(&token)).await;
        (s == 401).then_some(())
    })
    .await;
}

#[tokio::test]
async fn redis_going_away_and_coming_back() {
    let fake = FakeLlm::start().await;
    let Some(p) = spawn_pair("cluster redis down", &fake.provider_toml("fake")).await else { return };
    let key = p.a.key(&["chat"]).await;
    let (_, h) = send(p.a.http.get(p.a.url("/healthz"))).await;
    assert_eq!((h["data"]["status"].as_str(), h["data"]["redis"].as_str()), (Some("ok"), Some("ok")), "{h}");

    // A run in flight when Redis goes away goes on and is saved.
    let words: Vec<String> = (0..20).map(|i| format!("d{i} ")).collect();
    fake.push(slow(&words, 40));
    let sse = chat(&p.a, &key, json!({"message": "q", "username": "u", "session_id": "down1"})).await;
    p.proxy.down();
    let h = eventually(|| async {
        let (s, h) = send(p.a.http.get(p.a.url("/healthz"))).await;
        (s == 200 && h["data"]["status"] == "degraded").then_some(h)
    })
    .await;
    assert_eq!(h["data"]["redis"], "unavailable");
    assert!(h["data"]["redis_down_since"].is_string(), "{h}");
    let frames = sse.collect().await;
    assert_eq!(types(&frames).last().map(String::as_str), Some("end"));
    let text: String = frames.iter().filter(|f| f.ty() == "plain").map(|f| f.data["data"].as_str().unwrap()).collect();
    assert_eq!(text, words.concat());
    // New runs are served too (each instance guards its own sessions meanwhile).
    fake.push(Reply::Chunks {
        chunks: tokens(&["still ", "here"]),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let frames =
        chat(&p.b, &key, json!({"message": "q", "username": "u", "session_id": "down2"})).await.collect().await;
    assert!(frames.iter().any(|f| f.ty() == "complete" && f.data["data"] == "still here"), "{frames:?}");
    // Logins still work (each instance's own limiter).
    let (s, _) =
        send(p.b.http.post(p.b.url("/api/auth/login")).json(&json!({"username": "astrgate", "password": PASSWORD})))
            .await;
    assert_eq!(s, 200);

    // Redis returns: both instances report it and cross-instance work resumes.
    p.proxy.up();
    for app in [&p.a, &p.b] {
        eventually(|| async {
            let (_, h) = send(app.http.get(app.url("/healthz"))).await;
            (h["data"]["status"] == "ok" && h["data"]["redis"] == "ok").then_some(())
        })
        .await;
    }
    fake.push(Reply::HangAfter(tokens(&["again"])));
    let mut sse = chat(&p.a, &key, json!({"message": "q", "username": "u", "session_id": "back"})).await;
    while sse.next().await.unwrap().ty() != "plain" {}
    let (_, b) = send(p.b.http.post(p.b.url("/api/v1/chat/sessions/back/stop?username=u")).bearer_auth(&key)).await;
    assert_eq!(b["data"], json!({"stopped_count": 1}));
    let rest = sse.collect().await;
    assert_eq!(types(&rest).last().map(String::as_str), Some("end"));
}

#[tokio::test]
async fn attachments_are_served_by_any_instance_without_a_shared_disk() {
    let fake = FakeLlm::start().await;
    let Some(p) = spawn_pair("cluster attachments", &fake.provider_toml("fake")).await else { return };
    let key = p.a.key(&["chat", "file"]).await;
    // Larger than one stored chunk (256 KiB), so it streams in and out in pieces.
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let (s, b) = crate::files::upload(&p.a, &key, "data.bin", "application/octet-stream", big.clone()).await;
    assert_eq!(s, 200, "{b}");
    let id = b["data"]["attachment_id"].as_str().unwrap().to_string();
    assert!(!p.a.dir.path().join("attachments").exists(), "PostgreSQL mode writes no attachment files");
    let res =
        p.b.http.get(p.b.url(&format!("/api/v1/file?attachment_id={id}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "700000");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &big[..], "the other instance serves every byte");
    // A range across a chunk boundary.
    let res =
        p.b.http
            .get(p.b.url(&format!("/api/v1/file?attachment_id={id}")))
            .bearer_auth(&key)
            .header("Range", "bytes=262000-262300")
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &big[262_000..=262_300]);

    // A text file uploaded to B reaches the model in a chat on A.
    let (s, b) =
        crate::files::upload(&p.b, &key, "notes.txt", "text/plain", b"the secret word is cobalt".to_vec()).await;
    assert_eq!(s, 200, "{b}");
    let notes = b["data"]["attachment_id"].as_str().unwrap().to_string();
    fake.push(Reply::Chunks { chunks: tokens(&["ok"]), delay: Duration::ZERO, first_delay: Duration::ZERO });
    let frames = chat(
        &p.a,
        &key,
        json!({"username": "u", "message": [{"type": "plain", "text": "read"}, {"type": "file", "attachment_id": notes}]}),
    )
    .await
    .collect()
    .await;
    assert_eq!(types(&frames).last().map(String::as_str), Some("end"));
    let asked = fake.requests().last().cloned().unwrap();
    assert!(asked.to_string().contains("the secret word is cobalt"), "{asked}");
}

#[tokio::test]
async fn recovery_closes_only_what_instances_that_are_gone_left() {
    use astrgate::store::{NewMessage, RunRecord, SessionRecord, now_micros};
    let fake = FakeLlm::start().await;
    let Some(p) = spawn_pair("cluster recovery", &fake.provider_toml("fake")).await else { return };
    let key = p.a.key(&["chat"]).await;
    // A live run on A, long enough to be saved as `running` with a streaming reply.
    let words: Vec<String> = (0..60).map(|i| format!("l{i} ")).collect();
    fake.push(slow(&words, 80));
    let sse = chat(&p.a, &key, json!({"message": "q", "username": "u", "session_id": "live"})).await;
    // What a crashed instance left: a run and a streaming reply, last saved a minute ago.
    let store = p.a.state.store.clone();
    store.create_session(&SessionRecord::new("ghost-s", "webchat", "u")).await.unwrap();
    let (mid, _) = store
        .insert_message(&NewMessage {
            session_id: "ghost-s".into(),
            platform_id: "webchat".into(),
            sender_id: "bot".into(),
            sender_name: "bot".into(),
            content: json!({"type": "bot", "message": [{"type": "plain", "text": "half"}], "streaming": true, "instance": "ghost"}),
            llm_checkpoint_id: Some("ck".into()),
        })
        .await
        .unwrap();
    let old = now_micros() - 60_000_000;
    store
        .insert_run(&RunRecord {
            run_id: "ghost-run".into(),
            session_id: "ghost-s".into(),
            username: "u".into(),
            status: "running".into(),
            events: r#"[{"event":"session_id","session_id":"ghost-s"},"half"]"#.into(),
            created_at: old,
            finished_at: old,
            message_id: Some(mid),
            instance_id: Some("ghost".into()),
        })
        .await
        .unwrap();
    // Wait until A has saved its own run as running.
    let a_run = eventually(|| async {
        let (runs, _) = store.in_flight().await.unwrap();
        runs.into_iter().find(|r| r.instance_id.as_deref() == Some("a"))
    })
    .await;
    // The ghost's reply was last saved more than a lease TTL (3 s here) ago; A's is saved every
    // second while it streams.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    // A third instance starts: it closes the ghost's run, and leaves A's alone.
    let c = p.spawn_another("c").await;
    let ghost = store.get_run("ghost-run").await.unwrap().unwrap();
    assert_eq!(ghost.status, "interrupted");
    let m = store.get_message(mid).await.unwrap().unwrap();
    assert_eq!((m.content["interrupted"].as_bool(), m.content.get("streaming")), (Some(true), None), "{}", m.content);
    assert_eq!(
        store.get_run(&a_run.run_id).await.unwrap().unwrap().status,
        "running",
        "A is alive: its run is not closed"
    );
    // A's run ends normally, whole and not interrupted.
    let frames = sse.collect().await;
    let text: String = frames.iter().filter(|f| f.ty() == "plain").map(|f| f.data["data"].as_str().unwrap()).collect();
    assert_eq!(text, words.concat());
    let h = history(&c, &key, "live").await;
    assert_eq!(h[1]["content"]["message"][0]["text"], words.concat().as_str());
    assert!(h[1]["content"].get("interrupted").is_none() && h[1]["content"].get("instance").is_none(), "{}", h[1]);
}
