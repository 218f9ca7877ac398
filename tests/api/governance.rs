//! Per-key limits and usage: `limits` on create, list and `PATCH /api/v1/api-keys/{key_id}`,
//! enforcement on the HTTP, OpenAI and socket front doors (429 with AstrBot's envelope, OpenAI
//! error objects, error frames on an open socket), usage per key per day, and the same limits
//! shared by two instances of a cluster.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Reply, tokens};
use crate::helpers::*;

/// Creates a key with `limits` and returns (raw key, key id).
async fn limited_key(app: &TestApp, scopes: &[&str], limits: Value) -> (String, String) {
    let body = json!({"name": "limited", "scopes": scopes, "limits": limits});
    let (s, b) = send(app.http.post(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt).json(&body)).await;
    assert_eq!(s, 200, "{b}");
    (b["data"]["api_key"].as_str().unwrap().to_string(), b["data"]["key_id"].as_str().unwrap().to_string())
}

/// A reply that streams slowly enough to keep a run busy while the test acts.
fn slow_reply() -> Reply {
    let words: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    Reply::Chunks { chunks: tokens(&w), delay: Duration::from_millis(50), first_delay: Duration::ZERO }
}

async fn usage(app: &TestApp, key_id: &str, query: &str) -> Value {
    let (s, b) =
        send(app.http.get(app.url(&format!("/api/v1/api-keys/{key_id}/usage{query}"))).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200, "{b}");
    b["data"].clone()
}

/// An OpenAI chat completion with `key`, answered as it comes.
async fn completion(app: &TestApp, key: &str) -> reqwest::Response {
    let body = json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]});
    app.http.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap()
}

fn sessions_url(app: &TestApp) -> String {
    app.url("/api/v1/chat/sessions?username=u")
}

#[tokio::test]
async fn limits_are_set_on_create_listed_and_patched() {
    let app = spawn_toml("[api_keys]\ndefault_limits = { requests_per_minute = 100 }\n").await;
    // Defaults fill what the request does not name; the request's fields win.
    let (_, id) = limited_key(&app, &["chat"], json!({"tokens_per_day": 5000})).await;
    let (s, b) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200);
    let listed = b["data"].as_array().unwrap().iter().find(|k| k["key_id"] == id.as_str()).unwrap().clone();
    assert_eq!(listed["limits"], json!({"requests_per_minute": 100, "concurrent_runs": null, "tokens_per_day": 5000}));
    // AstrBot's WebUI route takes them too; `null` means unlimited.
    let (s, b) = send(
        app.http
            .post(app.url("/api/apikey/create"))
            .bearer_auth(&app.jwt)
            .json(&json!({"name": "webui", "limits": null})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["limits"],
        json!({"requests_per_minute": null, "concurrent_runs": null, "tokens_per_day": null})
    );

    // PATCH merges: named fields change (null = unlimited), the others stay.
    let url = app.url(&format!("/api/v1/api-keys/{id}"));
    let patch = json!({"name": "renamed", "limits": {"concurrent_runs": 3, "requests_per_minute": null}});
    let (s, b) = send(app.http.patch(&url).bearer_auth(&app.jwt).json(&patch)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["name"], "renamed");
    assert_eq!(b["data"]["limits"], json!({"requests_per_minute": null, "concurrent_runs": 3, "tokens_per_day": 5000}));
    assert!(b["data"].get("api_key").is_none(), "the secret is never shown again");
    // Audited, with what changed.
    let (s, b) = send(app.http.get(app.url("/api/v1/audit?limit=1")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200, "{b}");
    let ev = &b["data"]["events"][0];
    assert_eq!(
        (ev["action"].as_str(), ev["target"].as_str(), ev["actor"].as_str()),
        (Some("api_key.update"), Some(id.as_str()), Some("astrgate"))
    );
    assert_eq!(ev["detail"]["limits"]["concurrent_runs"], 3, "{ev}");
    assert_eq!(ev["detail"]["name"], "renamed");

    // Bad input: clear errors, nothing changed.
    for (body, text) in [
        (
            json!({"limits": {"requests_per_minute": 0}}),
            "limits.requests_per_minute must be null or an integer from 1 to 1000000",
        ),
        (
            json!({"limits": {"tokens_per_day": "many"}}),
            "limits.tokens_per_day must be null or an integer from 1 to 1000000000000",
        ),
        (json!({"limits": {"per_hour": 5}}), "Unknown limit: per_hour"),
        (json!({"limits": [1]}), "limits must be an object"),
        (json!({"scopes": ["chat"]}), "Unknown field: scopes"),
        (json!({"name": 7}), "name must be a string"),
        (json!([]), "Invalid request payload"),
    ] {
        let (s, b) = send(app.http.patch(&url).bearer_auth(&app.jwt).json(&body)).await;
        assert_error(s, &b, 400, text);
    }
    let (s, b) = send(app.http.patch(&url).bearer_auth(&app.jwt).body("{oops")).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) =
        send(app.http.patch(app.url("/api/v1/api-keys/nope")).bearer_auth(&app.jwt).json(&json!({"name": "x"}))).await;
    assert_error(s, &b, 404, "API key not found");
    let (s, b) = send(app.http.get(app.url("/api/v1/api-keys/nope/usage")).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 404, "API key not found");
    // Dashboard JWT only: a key, however broad, cannot change limits (its own included).
    let (raw, _) = limited_key(&app, &["chat", "config", "file", "im"], json!(null)).await;
    let (s, b) = send(app.http.patch(&url).bearer_auth(&raw).json(&json!({"limits": null}))).await;
    assert_error(s, &b, 403, "Insufficient API key scope");
    let (s, b) = send(app.http.get(app.url(&format!("/api/v1/api-keys/{id}/usage"))).bearer_auth(&raw)).await;
    assert_error(s, &b, 403, "Insufficient API key scope");
    let (s, b) = send(app.http.get(app.url("/api/v1/api-keys/nope/usage?days=0")).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 400, "days must be an integer from 1 to 366");

    let (s, b) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200);
    let after = b["data"].as_array().unwrap().iter().find(|k| k["key_id"] == id.as_str()).unwrap().clone();
    assert_eq!(after["limits"]["concurrent_runs"], 3, "unchanged by the refused patches");
}

#[tokio::test]
async fn requests_per_minute_answers_429_with_retry_after_on_every_door() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    let (key, id) = limited_key(&app, &["chat"], json!({"requests_per_minute": 2})).await;
    for _ in 0..2 {
        let (s, b) = send(app.http.get(sessions_url(&app)).bearer_auth(&key)).await;
        assert_eq!(s, 200, "{b}");
    }
    let res = app.http.get(sessions_url(&app)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "Retry-After {wait}");
    let b: Value = res.json().await.unwrap();
    assert_eq!(b, json!({"status": "error", "message": "Rate limit exceeded", "data": null}));
    // The OpenAI door shows it as OpenAI does.
    let res = completion(&app, &key).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["error"]["code"], "rate_limit_exceeded");
    assert_eq!(b["error"]["type"], "requests");
    assert_eq!(b["error"]["message"], "Rate limit exceeded");
    // Other keys and the dashboard are not affected.
    let other = app.key(&["chat"]).await;
    let (s, _) = send(app.http.get(sessions_url(&app)).bearer_auth(&other)).await;
    assert_eq!(s, 200);
    // Raising the limit takes effect at once.
    let patch = json!({"limits": {"requests_per_minute": 1000}});
    let (s, b) =
        send(app.http.patch(app.url(&format!("/api/v1/api-keys/{id}"))).bearer_auth(&app.jwt).json(&patch)).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send(app.http.get(sessions_url(&app)).bearer_auth(&key)).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn a_socket_turn_over_the_rate_gets_an_error_frame_and_the_socket_stays_open() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n[tts]\ntype = \"none\"\n", fake.provider_toml("fake"))).await;
    // The upgrade is one request, each turn another.
    let (key, _) = limited_key(&app, &["chat"], json!({"requests_per_minute": 2})).await;
    let bearer = format!("Bearer {key}");
    let mut ws = ws_connect(&app, "/api/v1/chat/ws", &[("authorization", bearer.as_str())]).await;
    ws.send(json!({"username": "u", "message": "one", "message_id": "m-1", "session_id": "rate-ws"})).await;
    let frames = ws.until(|f| f["type"] == "end").await;
    assert!(frames.iter().any(|f| f["type"] == "complete"), "{frames:?}");
    ws.send(json!({"username": "u", "message": "two", "message_id": "m-2", "session_id": "rate-ws"})).await;
    let refused = ws.until(|f| f["type"] == "error").await;
    let last = refused.last().unwrap();
    assert_eq!(last["code"], "RATE_LIMITED", "{refused:?}");
    assert_eq!(last["data"], "Rate limit exceeded");
    assert_eq!(last["message_id"], "m-2");
    // Still open: it answers a ping.
    ws.send(json!({"t": "ping"})).await;
    assert_eq!(ws.until(|f| f["type"] == "pong").await.last().unwrap()["type"], "pong");
}

#[tokio::test]
async fn concurrent_runs_are_capped_per_key_and_freed_when_a_run_ends() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    let (key, _) = limited_key(&app, &["chat"], json!({"concurrent_runs": 1})).await;
    fake.push(slow_reply());
    let mut first = chat(&app, &key, json!({"message": "long", "username": "u", "session_id": "c1"})).await;
    // Wait until it is running.
    while first.next().await.unwrap().ty() != "plain" {}
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&key)
            .json(&json!({"message": "x", "username": "u", "session_id": "c2"})),
    )
    .await;
    assert_error(s, &b, 429, "Too many concurrent runs");
    let res = completion(&app, &key).await;
    assert_eq!(res.status(), 429);
    let b: Value = res.json().await.unwrap();
    assert_eq!(
        (b["error"]["code"].as_str(), b["error"]["message"].as_str()),
        (Some("rate_limit_exceeded"), Some("Too many concurrent runs"))
    );
    // A different key runs meanwhile.
    let other = app.key(&["chat"]).await;
    let frames = chat(&app, &other, json!({"message": "free", "username": "v"})).await.collect().await;
    assert!(types(&frames).contains(&"complete".to_string()), "{frames:?}");
    // When the run ends, its slot is free again.
    let rest = first.collect().await;
    assert_eq!(types(&rest).last().map(String::as_str), Some("end"));
    let frames = eventually(|| async {
        let res = app
            .http
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&key)
            .json(&json!({"message": "again", "username": "u", "session_id": "c3"}))
            .send()
            .await
            .unwrap();
        if res.status() == 200 { Some(SseReader::new(res).collect().await) } else { None }
    })
    .await;
    assert!(types(&frames).contains(&"complete".to_string()));
}

#[tokio::test]
async fn the_day_token_quota_refuses_runs_once_spent_and_usage_adds_up() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n[api_keys]\nusage_flush_secs = 1\n", fake.provider_toml("fake"))).await;
    // The fake reports 10 prompt tokens and one completion token per chunk.
    let (key, id) = limited_key(&app, &["chat"], json!({"tokens_per_day": 25})).await;
    fake.push(Reply::Chunks { chunks: tokens(&["a ", "b ", "c"]), delay: Duration::ZERO, first_delay: Duration::ZERO });
    let frames = chat(&app, &key, json!({"message": "one", "username": "u"})).await.collect().await;
    assert!(types(&frames).contains(&"complete".to_string()), "{frames:?}");
    // 13 tokens used: one more run is admitted (26 ≥ 25 after it), then none.
    let body = json!({"model": "default", "messages": [{"role": "user", "content": "two"}]});
    fake.push(Reply::Chunks { chunks: tokens(&["d ", "e ", "f"]), delay: Duration::ZERO, first_delay: Duration::ZERO });
    let (s, b) = send(app.http.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&body)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["usage"]["total_tokens"], 13);
    let (s, b) = send(
        app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&json!({"message": "three", "username": "u"})),
    )
    .await;
    assert_error(s, &b, 429, "Token quota exceeded");
    let res = app.http.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&wait), "until the next UTC midnight: {wait}");
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["error"]["type"], "insufficient_quota");
    assert_eq!(b["error"]["code"], "insufficient_quota");
    assert_eq!(fake.requests().len(), 2, "refused runs never reach the upstream");

    // Usage: 4 requests (the last two refused at the run, still requests), 2 runs, 20 + 6 tokens.
    let u = usage(&app, &id, "?days=3").await;
    assert_eq!(u["key_id"], id.as_str());
    assert_eq!((u["requests"].as_i64(), u["runs"].as_i64()), (Some(4), Some(2)), "{u}");
    assert_eq!((u["prompt_tokens"].as_i64(), u["completion_tokens"].as_i64()), (Some(20), Some(6)), "{u}");
    assert_eq!(u["total_tokens"], 26);
    assert_eq!(u["limits"]["tokens_per_day"], 25);
    let days = u["days"].as_array().unwrap();
    assert_eq!(days.len(), 3, "every day of the window, oldest first");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(days[2]["date"], today.as_str());
    assert_eq!((days[2]["prompt_tokens"].as_i64(), days[0]["requests"].as_i64()), (Some(20), Some(0)));
    // Written in batches: after the flush the store holds the same numbers.
    let stored = eventually(|| async {
        let rows = app.state.store.key_usage(&id, &today, &today).await.unwrap();
        rows.first().filter(|r| r.counts.runs == 2).map(|r| r.counts)
    })
    .await;
    assert_eq!((stored.requests, stored.prompt_tokens, stored.completion_tokens), (4, 20, 6));
    assert_eq!(usage(&app, &id, "").await["days"].as_array().unwrap().len(), 30, "30 days by default");
}

#[tokio::test]
async fn audio_in_and_out_are_counted_per_key() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!("{}\n{}", fake.provider_toml("fake"), fake.audio_toml())).await;
    let (key, id) = limited_key(&app, &["chat"], json!(null)).await;
    let res = app
        .http
        .post(app.url("/v1/audio/speech"))
        .bearer_auth(&key)
        .json(&json!({"model": "tts-1", "input": "hello there", "voice": "alloy", "response_format": "wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let spoken = res.bytes().await.unwrap();
    let wav = crate::fake_llm::fake_wav("one two three");
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part("file", reqwest::multipart::Part::bytes(wav).file_name("a.wav").mime_str("audio/wav").unwrap());
    let (s, b) = send(app.http.post(app.url("/v1/audio/transcriptions")).bearer_auth(&key).multipart(form)).await;
    assert_eq!(s, 200, "{b}");
    let u = usage(&app, &id, "?days=1").await;
    assert_eq!(u["runs"], 2, "{u}");
    assert!(u["audio_in_seconds"].as_f64().unwrap() > 0.0, "{u}");
    assert!(u["audio_out_seconds"].as_f64().unwrap() > 0.0, "{u}");
    // What was spoken is what was counted (a 16-bit mono WAV).
    let secs = (spoken.len() - 44) as f64 / 2.0 / f64::from(u32::from_le_bytes(spoken[24..28].try_into().unwrap()));
    assert!((u["audio_out_seconds"].as_f64().unwrap() - secs).abs() < 0.01, "{u} vs {secs}");
}

#[tokio::test]
async fn two_instances_share_every_limit() {
    let fake = FakeLlm::start().await;
    let Some(p) = spawn_pair("cluster limits", &fake.provider_toml("fake")).await else { return };
    // requests_per_minute: two requests on A empty the bucket B draws from too.
    let (key, _) = limited_key(&p.a, &["chat"], json!({"requests_per_minute": 2})).await;
    for app in [&p.a, &p.a] {
        let (s, b) = send(app.http.get(sessions_url(app)).bearer_auth(&key)).await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = send(p.b.http.get(sessions_url(&p.b)).bearer_auth(&key)).await;
    assert_error(s, &b, 429, "Rate limit exceeded");

    // concurrent_runs: a run on A holds the key's only slot on B as well.
    let (key, _) = limited_key(&p.a, &["chat"], json!({"concurrent_runs": 1})).await;
    fake.push(slow_reply());
    let mut first = chat(&p.a, &key, json!({"message": "long", "username": "u", "session_id": "x1"})).await;
    while first.next().await.unwrap().ty() != "plain" {}
    let body = json!({"message": "x", "username": "u", "session_id": "x2"});
    let (s, b) = send(p.b.http.post(p.b.url("/api/v1/chat")).bearer_auth(&key).json(&body)).await;
    assert_error(s, &b, 429, "Too many concurrent runs");
    first.collect().await;
    let frames = eventually(|| async {
        let res = p.b.http.post(p.b.url("/api/v1/chat")).bearer_auth(&key).json(&body).send().await.unwrap();
        if res.status() == 200 { Some(SseReader::new(res).collect().await) } else { None }
    })
    .await;
    assert!(types(&frames).contains(&"complete".to_string()), "the slot came back when A's run ended");

    // tokens_per_day: tokens spent on A count on B.
    let (key, _) = limited_key(&p.a, &["chat"], json!({"tokens_per_day": 12})).await;
    let frames = chat(&p.a, &key, json!({"message": "spend", "username": "u"})).await.collect().await;
    assert!(types(&frames).contains(&"complete".to_string()));
    let (s, b) = eventually(|| async {
        let r = send(
            p.b.http.post(p.b.url("/api/v1/chat")).bearer_auth(&key).json(&json!({"message": "more", "username": "u"})),
        )
        .await;
        (r.0 == 429).then_some(r)
    })
    .await;
    assert_error(s, &b, 429, "Token quota exceeded");
}
