//! Upstream resilience over real HTTP, against fake providers: API keys in turn, a key refused with
//! 429 or 401 cooling down, retries before the first token (5xx, a dropped connection, a stream
//! broken off before its first chunk), fallbacks (an unreachable provider, a first-token timeout;
//! never followed transitively) named in `agent_stats` and serving the OpenAI door, nothing asked
//! again once a token was streamed, and the configuration checks.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Reply, tokens};
use crate::helpers::*;
use crate::openai::{content_of, parsed, post, stream_lines};

/// A provider `id` at `base_url`, answering with model `<id>-model`.
fn provider(id: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[[providers]]\nid = \"{id}\"\nbase_url = \"{base_url}\"\nmodel = \"{id}-model\"\nidle_timeout_secs = 5\n{extra}"
    )
}

/// A URL where nothing listens (connections are refused).
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/v1", l.local_addr().unwrap())
}

/// The app with this configuration, and a key with scope `chat`.
async fn start(toml: &str) -> (TestApp, String) {
    let app = spawn_toml(toml).await;
    let key = app.key(&["chat"]).await;
    (app, key)
}

async fn turn(app: &TestApp, key: &str, body: Value) -> Vec<Frame> {
    chat(app, key, body).await.collect().await
}

fn ask(message: &str, provider: &str) -> Value {
    json!({"message": message, "username": "u", "selected_provider": provider})
}

/// The streamed reply, after checking the turn had no error.
fn reply(frames: &[Frame]) -> String {
    assert!(!frames.iter().any(|f| f.ty() == "error"), "{frames:?}");
    let done = frames.iter().find(|f| f.ty() == "complete").unwrap_or_else(|| panic!("no complete: {frames:?}"));
    done.data["data"].as_str().unwrap().to_string()
}

fn error_text(frames: &[Frame]) -> String {
    let e = frames.iter().find(|f| f.ty() == "error").unwrap_or_else(|| panic!("no error: {frames:?}"));
    e.data["data"].as_str().unwrap().to_string()
}

fn stats(frames: &[Frame]) -> Value {
    frames.iter().find(|f| f.ty() == "agent_stats").unwrap_or_else(|| panic!("no agent_stats: {frames:?}")).data["data"]
        .clone()
}

#[tokio::test]
async fn two_keys_take_turns() {
    let fake = FakeLlm::start().await;
    let (app, key) = start(&provider("p", &fake.base_url, "api_keys = [\"sk-a\", \"sk-b\"]\n")).await;
    for i in 0..4 {
        assert_eq!(reply(&turn(&app, &key, ask(&format!("q{i}"), "p")).await), format!("Echo: q{i}"));
    }
    assert_eq!(fake.keys_seen(), ["sk-a", "sk-b", "sk-a", "sk-b"]);
}

#[tokio::test]
async fn a_key_refused_with_429_or_401_cools_down() {
    let fake = FakeLlm::start().await;
    let toml = format!(
        "{}{}",
        provider("limited", &fake.base_url, "api_keys = [\"sk-a\", \"sk-b\"]\n"),
        provider("refused", &fake.base_url, "api_keys = [\"sk-c\", \"sk-d\"]\nretries = 0\n"),
    );
    let (app, key) = start(&toml).await;
    // sk-a is rate limited: the turn is asked again at once with sk-b, and sk-a rests for the
    // two minutes its Retry-After asks, so the next turns go to sk-b although it is sk-a's turn.
    let slow_down = json!({"error": {"message": "Rate limit reached for sk-a", "type": "requests"}});
    fake.push_for("sk-a", Reply::ErrorWith(429, vec![("retry-after", "120".into())], slow_down));
    for i in 0..3 {
        assert_eq!(reply(&turn(&app, &key, ask(&format!("q{i}"), "limited")).await), format!("Echo: q{i}"));
    }
    assert_eq!(fake.keys_seen(), ["sk-a", "sk-b", "sk-b", "sk-b"]);
    // A 401 without retries: that turn fails with the generic text, and the refused key rests.
    fake.push_for("sk-c", Reply::Error(401, json!({"error": {"message": "Incorrect API key provided: sk-c"}})));
    let frames = turn(&app, &key, ask("r0", "refused")).await;
    assert_eq!(
        error_text(&frames),
        "The model provider refused astrgate's credentials (provider authentication failed)"
    );
    assert!(!serde_json::to_string(&frames.iter().map(|f| &f.data).collect::<Vec<_>>()).unwrap().contains("sk-c"));
    for i in 1..3 {
        assert_eq!(reply(&turn(&app, &key, ask(&format!("r{i}"), "refused")).await), format!("Echo: r{i}"));
    }
    assert_eq!(fake.keys_seen()[4..], ["sk-c", "sk-d", "sk-d"]);
}

#[tokio::test]
async fn failures_before_the_first_token_are_retried() {
    let fake = FakeLlm::start().await;
    let toml = format!(
        "{}{}[[profiles]]\nid = \"default\"\ndefault = true\nprovider = \"p\"\n",
        provider("p", &fake.base_url, "default = true\n"),
        provider("once", &fake.base_url, "retries = 0\n"),
    );
    let (app, key) = start(&toml).await;
    // Twice 5xx, then the answer: with the default two retries the turn succeeds.
    fake.push(Reply::Error(500, json!({"error": {"message": "overloaded"}})));
    fake.push(Reply::Error(503, json!({"error": {"message": "overloaded"}})));
    assert_eq!(reply(&turn(&app, &key, ask("q1", "p")).await), "Echo: q1");
    assert_eq!(fake.requests().len(), 3);
    // A connection dropped before any answer, then a stream broken off before its first chunk.
    fake.push(Reply::Reset);
    fake.push(Reply::CutAfter(Vec::new()));
    assert_eq!(reply(&turn(&app, &key, ask("q2", "p")).await), "Echo: q2");
    assert_eq!(fake.requests().len(), 6);
    // Not streamed: the same.
    fake.push(Reply::Error(502, json!({"error": {"message": "bad gateway"}})));
    let body = json!({"message": "q3", "username": "u", "selected_provider": "p", "enable_streaming": false});
    let frames = turn(&app, &key, body).await;
    let plain: Vec<&str> =
        frames.iter().filter(|f| f.ty() == "plain").filter_map(|f| f.data["data"].as_str()).collect();
    assert_eq!(plain, ["Echo: q3"], "{frames:?}");
    assert_eq!(fake.requests().len(), 8);
    // The OpenAI door too, streamed (its role chunk is out before the retry) and whole.
    fake.push(Reply::CutAfter(Vec::new()));
    let hi = json!([{"role": "user", "content": "hi"}]);
    let lines = stream_lines(&app, &key, json!({"model": "default", "stream": true, "messages": hi})).await;
    assert_eq!(content_of(&parsed(&lines)), "Echo: hi");
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    fake.push(Reply::Error(500, json!({"error": {"message": "overloaded"}})));
    let (s, b) = post(&app, &key, json!({"model": "default", "messages": hi})).await;
    assert_eq!((s.as_u16(), &b["choices"][0]["message"]["content"]), (200, &json!("Echo: hi")), "{b}");
    assert_eq!(fake.requests().len(), 12);
    // Without retries the first 5xx is the answer.
    fake.push(Reply::Error(500, json!({"error": {"message": "overloaded"}})));
    let frames = turn(&app, &key, ask("q4", "once")).await;
    assert_eq!(error_text(&frames), "The model provider is unavailable (HTTP 500)");
    assert_eq!(fake.requests().len(), 13);
}

#[tokio::test]
async fn an_unreachable_provider_hands_the_turn_to_its_fallback() {
    let fake = FakeLlm::start().await;
    let dead = dead_url();
    let toml = format!(
        "{}{}{}{}{}[[profiles]]\nid = \"default\"\ndefault = true\nprovider = \"main\"\n",
        provider("main", &dead, "default = true\nretries = 1\nfallbacks = [\"backup\"]\n"),
        provider("backup", &fake.base_url, "api_key = \"sk-backup\"\n"),
        provider(
            "sleepy",
            &fake.base_url,
            "api_key = \"sk-sleepy\"\nfirst_token_timeout_secs = 1\nfallbacks = [\"backup\"]\n"
        ),
        provider("lonely", &dead, "retries = 0\nfallbacks = [\"gone\"]\n"),
        provider("gone", &dead, "retries = 0\nfallbacks = [\"backup\"]\n"),
    );
    let (app, key) = start(&toml).await;

    // Streamed: `agent_stats` names the provider and model that answered, and so does the
    // saved reply.
    let frames = turn(&app, &key, ask("q1", "main")).await;
    assert_eq!(reply(&frames), "Echo: q1");
    let st = stats(&frames);
    assert_eq!((&st["provider_id"], &st["model"]), (&json!("backup"), &json!("backup-model")), "{st}");
    assert!(st["token_usage"]["output"].as_u64().is_some(), "AstrBot's fields stay: {st}");
    assert_eq!(fake.requests()[0]["model"], "backup-model", "a fallback asks with its own model");
    assert_eq!(fake.keys_seen(), ["sk-backup"]);
    let sid = frames[0].data["session_id"].as_str().unwrap();
    let (_, h) =
        send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{sid}/messages?username=u"))).bearer_auth(&key))
            .await;
    assert_eq!(h["data"]["messages"][1]["content"]["agent_stats"]["provider_id"], "backup", "{h}");
    // Not streamed.
    let body = json!({"message": "q2", "username": "u", "selected_provider": "main", "enable_streaming": false});
    assert_eq!(stats(&turn(&app, &key, body).await)["provider_id"], "backup");

    // The OpenAI door: the answer keeps the model the client asked for.
    let hi = json!([{"role": "user", "content": "hi"}]);
    let (s, b) = post(&app, &key, json!({"model": "default", "messages": hi})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!((&b["model"], &b["choices"][0]["message"]["content"]), (&json!("default"), &json!("Echo: hi")));
    let lines = stream_lines(&app, &key, json!({"model": "main/any-model", "stream": true, "messages": hi})).await;
    let chunks = parsed(&lines);
    assert_eq!(content_of(&chunks), "Echo: hi");
    assert!(chunks.iter().all(|c| c["model"] == "main/any-model"), "{chunks:?}");
    assert_eq!(fake.requests().last().unwrap()["model"], "backup-model");
    assert_eq!(fake.requests().len(), 4);

    // A first-token timeout is not waited out twice on the same provider: the fallback answers.
    let late = Reply::Chunks { chunks: tokens(&["late"]), delay: Duration::ZERO, first_delay: Duration::from_secs(3) };
    fake.push_for("sk-sleepy", late);
    let frames = turn(&app, &key, ask("q3", "sleepy")).await;
    assert_eq!((reply(&frames), &stats(&frames)["provider_id"]), ("Echo: q3".to_string(), &json!("backup")));
    assert_eq!(fake.keys_seen()[4..], ["sk-sleepy", "sk-backup"]);

    // Only the asked provider's fallbacks are tried: `gone`'s own fallback is not followed.
    let frames = turn(&app, &key, ask("q4", "lonely")).await;
    assert!(error_text(&frames).starts_with("The model provider is unreachable"), "{frames:?}");
    assert_eq!(fake.requests().len(), 6, "backup was not asked");
}

#[tokio::test]
async fn an_error_after_the_first_token_is_neither_retried_nor_handed_over() {
    let (primary, backup) = (FakeLlm::start().await, FakeLlm::start().await);
    let toml = format!(
        "{}{}[[profiles]]\nid = \"default\"\ndefault = true\nprovider = \"main\"\n",
        provider("main", &primary.base_url, "default = true\nfallbacks = [\"backup\"]\n"),
        provider("backup", &backup.base_url, ""),
    );
    let (app, key) = start(&toml).await;
    primary.push(Reply::CutAfter(tokens(&["Par", "tial"])));
    let frames = turn(&app, &key, ask("q", "main")).await;
    assert_eq!(
        types(&frames),
        ["session_id", "user_message_saved", "run_started", "plain", "plain", "error", "message_saved", "end"]
    );
    assert_eq!(frames[5].data["code"], "UPSTREAM_INTERRUPTED");
    assert_eq!((primary.requests().len(), backup.requests().len()), (1, 0));
    // The OpenAI door alike: the partial answer, then the error chunk.
    primary.push(Reply::CutAfter(tokens(&["Half ", "an "])));
    let body = json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let lines = stream_lines(&app, &key, body).await;
    let chunks = parsed(&lines);
    assert_eq!(content_of(&chunks), "Half an ");
    assert_eq!(chunks.last().unwrap()["error"]["message"], "The model provider's stream broke off");
    assert!(!lines.iter().any(|l| l == "[DONE]"));
    assert_eq!((primary.requests().len(), backup.requests().len()), (2, 0));
}

#[tokio::test]
async fn check_config_refuses_two_kinds_of_key_and_unknown_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("api_key = \"sk-one-secret\"\napi_keys = [\"sk-two-secret\"]\n", "set either api_key or api_keys, not both"),
        ("fallbacks = [\"nope\"]\n", "providers[p].fallbacks refers to unknown provider \"nope\""),
        ("fallbacks = [\"p\"]\n", "must not name the provider itself"),
        ("retries = 11\n", "providers[p].retries must be at most 10"),
    ];
    for (extra, want) in cases {
        let cfg = crate::cli::write_config(dir.path(), &provider("p", "http://127.0.0.1:9/v1", extra));
        let out = crate::cli::astrgate(&cfg, &["check-config"]).await;
        assert_eq!(out.status.code(), Some(2), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("secret"), "no key is printed: {err}");
    }
}
