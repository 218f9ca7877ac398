//! The OpenAI-compatible front door over real HTTP: `/v1/models`, `/v1/chat/completions`
//! (whole and streamed: chunks, usage, pass-through parameters, tools, images, attachments, every
//! error class, a stream cut by the upstream, a client that leaves, 32 streams at once).
//! The audio routes are in `openai_audio.rs`, the official SDK in `openai_sdk.rs`.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fake_llm::{Chunk, FakeLlm, Reply, text, tokens};
use crate::helpers::*;

/// A 1×1 PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49,
    0x44, 0x41, 0x54, 0x78, 0xDA, 0x63, 0xFC, 0xCF, 0xC0, 0x50, 0x0F, 0x00, 0x04, 0x85, 0x01, 0x80, 0x84, 0xA9, 0x8C,
    0x21, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// A provider `fake` and two profiles: `default` (no system prompt) and `pirate` (its own
/// system prompt and model).
pub async fn openai_app(extra: &str) -> (TestApp, FakeLlm, String) {
    let fake = FakeLlm::start().await;
    let toml = format!(
        "{}\n[[profiles]]\nid = \"default\"\ndefault = true\n[[profiles]]\nid = \"pirate\"\nsystem_prompt = \"Talk like a pirate.\"\nmodel = \"pirate-model\"\n{extra}",
        fake.provider_toml("fake")
    );
    let app = spawn_toml(&toml).await;
    let key = app.key(&["chat"]).await;
    (app, fake, key)
}

pub async fn post(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    send(app.http.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&body)).await
}

/// Asserts an OpenAI error object.
pub fn assert_openai_error(status: StatusCode, body: &Value, want: u16, kind: &str, code: Option<&str>) {
    assert_eq!(status.as_u16(), want, "{body}");
    let e = &body["error"];
    assert_eq!(e["type"], kind, "{body}");
    assert_eq!(e["code"], json!(code), "{body}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(e.get("param").is_some(), "param is always present: {body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "only `error`: {body}");
}

/// The `data:` payloads of a streamed answer, raw (`[DONE]` included).
pub async fn stream_lines(app: &TestApp, key: &str, body: Value) -> Vec<String> {
    let res = app.http.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream; charset=utf-8");
    let text = tokio::time::timeout(Duration::from_secs(20), res.text()).await.unwrap().unwrap();
    text.split("\n\n").filter_map(|b| b.strip_prefix("data: ")).map(str::to_string).collect()
}

pub fn parsed(lines: &[String]) -> Vec<Value> {
    lines.iter().filter(|l| *l != "[DONE]").map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn content_of(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn models_lists_profiles_and_provider_models_for_any_key() {
    let (app, _fake, _) = openai_app("").await;
    // Any valid key, whatever its scopes.
    let key = app.key(&["file"]).await;
    let (s, b) = send(app.http.get(app.url("/v1/models")).bearer_auth(&key)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["object"], "list");
    let ids: Vec<&str> = b["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["default", "pirate", "fake/fake-model", "fake/pirate-model"]);
    for m in b["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "fake");
        assert!(m["created"].as_i64().unwrap() > 1_600_000_000);
    }
    // One model; the `/` of provider/model needs no escaping.
    let (s, m) = send(app.http.get(app.url("/v1/models/fake/fake-model")).bearer_auth(&key)).await;
    assert_eq!((s.as_u16(), m["id"].as_str()), (200, Some("fake/fake-model")), "{m}");
    let (s, e) = send(app.http.get(app.url("/v1/models/nope")).bearer_auth(&key)).await;
    assert_openai_error(s, &e, 404, "invalid_request_error", Some("model_not_found"));
    // A dashboard JWT works too; nothing, or a bad key, does not.
    let (s, _) = send(app.http.get(app.url("/v1/models")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200);
    let (s, e) = send(app.http.get(app.url("/v1/models"))).await;
    assert_openai_error(s, &e, 401, "invalid_request_error", Some("invalid_api_key"));
    let bad = format!("abk_{}", "x".repeat(43));
    let (s, e) = send(app.http.get(app.url("/v1/models")).bearer_auth(&bad)).await;
    assert_openai_error(s, &e, 401, "invalid_request_error", Some("invalid_api_key"));
    assert_eq!(e["error"]["message"], "Invalid API key");
    // The dashboard cookie is no credential on this front door.
    let cookie = format!("astrbot_dashboard_jwt={}", app.jwt);
    let (s, e) = send(app.http.get(app.url("/v1/models")).header("cookie", cookie)).await;
    assert_openai_error(s, &e, 401, "invalid_request_error", Some("invalid_api_key"));
}

#[tokio::test]
async fn a_whole_completion_is_openai_shaped_with_the_profiles_system_prompt() {
    let (app, fake, key) = openai_app("").await;
    fake.push(Reply::Chunks {
        chunks: tokens(&["Ahoy", " there"]),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    let body = json!({"model": "pirate", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Arr?"},
        {"role": "user", "content": "Hello again", "name": "ann"}
    ]});
    let (s, b) = post(&app, &key, body).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], "pirate", "the model as the request named it");
    assert_eq!(b["choices"][0]["message"], json!({"role": "assistant", "content": "Ahoy there"}));
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    assert_eq!(b["choices"][0]["index"], 0);
    assert_eq!(
        b["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 2}})
    );
    // The upstream got the profile's model, its system prompt first, and the conversation as sent.
    let up = &fake.requests()[0];
    assert_eq!(up["model"], "pirate-model");
    assert_eq!(up["stream"], false);
    assert_eq!(
        up["messages"],
        json!([
            {"role": "system", "content": "Talk like a pirate."},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Arr?"},
            {"role": "user", "content": "Hello again", "name": "ann"}
        ])
    );
    // Stateless: nothing was stored as a session.
    let (_, sessions) = send(app.http.get(app.url("/api/v1/chat/sessions?username=ann")).bearer_auth(&app.jwt)).await;
    assert_eq!(sessions["data"]["total"], 0, "{sessions}");
    // provider/model: that provider and model, no profile prompt.
    let (s, b) =
        post(&app, &key, json!({"model": "fake/other-model", "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!((s.as_u16(), b["model"].as_str()), (200, Some("fake/other-model")), "{b}");
    let up = &fake.requests()[1];
    assert_eq!(up["model"], "other-model");
    assert_eq!(up["messages"], json!([{"role": "user", "content": "Hi"}]));
}

#[tokio::test]
async fn a_stream_has_one_id_a_role_chunk_deltas_a_finish_and_usage_when_asked() {
    let (app, fake, key) = openai_app("").await;
    let body = json!({"model": "default", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "one two three"}]});
    let lines = stream_lines(&app, &key, body).await;
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    let chunks = parsed(&lines);
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for c in &chunks {
        assert_eq!(c["id"], id, "one id for every chunk");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "default");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(content_of(&chunks), "Echo: one two three");
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 2]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"]["total_tokens"], 10 + 4);
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], 4);
    assert!(chunks[..n - 1].iter().all(|c| c["usage"].is_null() && c.get("usage").is_some()));
    assert!(chunks[..n - 2].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
    // The upstream was asked to stream and to report usage.
    let up = &fake.requests()[0];
    assert_eq!((up["stream"].as_bool(), up["stream_options"]["include_usage"].as_bool()), (Some(true), Some(true)));

    // Without include_usage: no usage chunk, no `usage` key.
    let body = json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let chunks = parsed(&stream_lines(&app, &key, body).await);
    assert!(chunks.iter().all(|c| c.get("usage").is_none() && !c["choices"].as_array().unwrap().is_empty()));
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    // Usage is still asked for (and accounted), whatever the client asked.
    assert_eq!(fake.requests()[1]["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn parameters_reach_the_upstream_unchanged_and_win_over_the_providers() {
    let fake = FakeLlm::start().await;
    let toml = format!("{}max_tokens = 50\ntemperature = 0.2\n", fake.provider_toml("fake"));
    let app = spawn_toml(&toml).await;
    let key = app.key(&["chat"]).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let params = json!({
        "temperature": 0.7, "top_p": 0.9, "max_completion_tokens": 64, "stop": ["\n\n", "END"], "seed": 42,
        "presence_penalty": 0.5, "frequency_penalty": -0.5, "response_format": {"type": "json_object"},
        "user": "user-7", "tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false, "logit_bias": {"50256": -100}, "reasoning_effort": "low",
    });
    let mut body = json!({"model": "default", "messages": [{"role": "user", "content": "hi"}], "n": 1,
                          "some_unknown_field": true});
    for (k, v) in params.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, b) = post(&app, &key, body).await;
    assert_eq!(s, 200, "{b}");
    let up = &fake.requests()[0];
    for (k, v) in params.as_object().unwrap() {
        assert_eq!(&up[k], v, "{k} passed unchanged");
    }
    assert!(up.get("max_tokens").is_none(), "the request's max_completion_tokens replaces the provider's max_tokens");
    assert!(up.get("n").is_none() && up.get("some_unknown_field").is_none(), "{up}");
    // Without them, the provider's defaults apply.
    post(&app, &key, json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})).await;
    let up = &fake.requests()[1];
    assert_eq!(
        (up["max_tokens"].as_u64(), up["temperature"].as_f64().map(|t| (t * 10.0).round())),
        (Some(50), Some(2.0))
    );
}

fn tool_call_chunks() -> Vec<Chunk> {
    vec![
        Chunk::ToolCalls(json!([{"index": 0, "id": "call_1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": ""}}])),
        Chunk::ToolCalls(json!([{"index": 0, "function": {"arguments": "{\"city\":"}}])),
        Chunk::ToolCalls(json!([{"index": 0, "function": {"arguments": "\"Paris\"}"}}])),
    ]
}

#[tokio::test]
async fn tool_calls_come_back_unchanged_streamed_and_whole() {
    let (app, fake, key) = openai_app("").await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    fake.push(Reply::Chunks { chunks: tool_call_chunks(), delay: Duration::ZERO, first_delay: Duration::ZERO });
    let body = json!({"model": "default", "stream": true, "tools": tools,
                      "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let chunks = parsed(&stream_lines(&app, &key, body).await);
    let deltas: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect::<Vec<_>>();
    let sent: Vec<Value> =
        tool_call_chunks().into_iter().map(|c| if let Chunk::ToolCalls(v) = c { v } else { unreachable!() }).collect();
    assert_eq!(deltas, sent.iter().collect::<Vec<_>>());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");

    // The whole answer, and the conversation going on with the tool's result.
    fake.push(Reply::Chunks { chunks: tool_call_chunks(), delay: Duration::ZERO, first_delay: Duration::ZERO });
    let (s, b) = post(
        &app,
        &key,
        json!({"model": "default", "tools": tools,
                                        "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let m = &b["choices"][0]["message"];
    assert_eq!(m["content"], Value::Null);
    assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");
    let follow = json!({"model": "default", "tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": m["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 °C"}
    ]});
    let (s, _) = post(&app, &key, follow.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(fake.requests()[2]["messages"], follow["messages"], "tool messages pass unchanged");
}

#[tokio::test]
async fn image_parts_and_attachments_reach_the_model() {
    let (app, fake, key) = openai_app("").await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
    let data_url = format!("data:image/png;base64,{b64}");
    let content = json!([
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]);
    let (s, b) =
        post(&app, &key, json!({"model": "default", "messages": [{"role": "user", "content": content}]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(fake.requests()[0]["messages"][0]["content"], content, "image parts passed as sent");

    // Bad images are 400s naming the part.
    for (url, needle) in [
        ("http://example.com/cat.png", "https://"),
        ("data:image/png;base64,%%%", "base64"),
        ("data:image/png;base64,aGVsbG8=", "does not hold an image"),
    ] {
        let content = json!([{"type": "image_url", "image_url": {"url": url}}]);
        let (s, e) =
            post(&app, &key, json!({"model": "default", "messages": [{"role": "user", "content": content}]})).await;
        assert_openai_error(s, &e, 400, "invalid_request_error", None);
        assert_eq!(e["error"]["param"], "messages[0].content[0].image_url.url");
        assert!(e["error"]["message"].as_str().unwrap().contains(needle), "{e}");
    }

    // An uploaded attachment, by file_id: the caller's own only.
    let owner = app.key(&["chat", "file"]).await;
    let (_, up) = crate::files::upload(&app, &owner, "dot.png", "image/png", PNG.to_vec()).await;
    let id = up["data"]["attachment_id"].as_str().unwrap();
    let content = json!([{"type": "text", "text": "and this?"}, {"type": "file", "file": {"file_id": id}}]);
    let body = json!({"model": "default", "messages": [{"role": "user", "content": content}]});
    let (s, b) = post(&app, &owner, body.clone()).await;
    assert_eq!(s, 200, "{b}");
    let sent = &fake.requests()[1]["messages"][0]["content"];
    assert_eq!(sent[0], json!({"type": "text", "text": "and this?"}));
    assert_eq!(sent[1]["image_url"]["url"], json!(data_url), "the attachment as a data URL");
    let (s, e) = post(&app, &key, body).await;
    assert_openai_error(s, &e, 400, "invalid_request_error", None);
    assert_eq!(e["error"]["message"], format!("attachment not found: {id}"));
}

#[tokio::test]
async fn every_error_class_is_an_openai_error_object() {
    let (app, fake, key) = openai_app("[runs]\nmax_active = 1\n[openai]\nmax_body_bytes = 4096\n").await;
    let hi = json!([{"role": "user", "content": "hi"}]);
    // 400s, with the parameter named.
    for (body, param) in [
        (json!({"messages": hi}), "model"),
        (json!({"model": "default"}), "messages"),
        (json!({"model": "default", "messages": []}), "messages"),
        (json!({"model": "default", "messages": hi, "n": 2}), "n"),
        (json!({"model": "default", "messages": hi, "temperature": "hot"}), "temperature"),
        (json!({"model": "default", "messages": hi, "stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"model": "default", "messages": hi, "functions": []}), "functions"),
        (json!({"model": "default", "messages": hi, "logprobs": true}), "logprobs"),
        (json!({"model": "default", "messages": [{"role": "robot", "content": "x"}]}), "messages[0].role"),
        (json!({"model": "default", "messages": [{"role": "user"}]}), "messages[0].content"),
        (
            json!({"model": "default", "messages": [{"role": "user", "content": [{"type": "video"}]}]}),
            "messages[0].content[0]",
        ),
    ] {
        let (s, e) = post(&app, &key, body).await;
        assert_openai_error(s, &e, 400, "invalid_request_error", None);
        assert_eq!(e["error"]["param"], param, "{e}");
    }
    assert_eq!(fake.requests().len(), 0, "nothing invalid reached the upstream");
    let res = app.http.post(app.url("/v1/chat/completions")).bearer_auth(&key).body("{not json").send().await.unwrap();
    let (s, e) = (res.status(), res.json::<Value>().await.unwrap());
    assert_openai_error(s, &e, 400, "invalid_request_error", None);
    // 413 over [openai] max_body_bytes.
    let big = json!({"model": "default", "messages": [{"role": "user", "content": "x".repeat(8000)}]});
    let (s, e) = post(&app, &key, big).await;
    assert_openai_error(s, &e, 413, "invalid_request_error", Some("request_too_large"));
    // 401, 403, 404.
    let (s, e) = post(&app, "abk_not-a-key", json!({"model": "default", "messages": hi})).await;
    assert_openai_error(s, &e, 401, "invalid_request_error", Some("invalid_api_key"));
    let no_chat = app.key(&["file"]).await;
    let (s, e) = post(&app, &no_chat, json!({"model": "default", "messages": hi})).await;
    assert_openai_error(s, &e, 403, "permission_error", Some("insufficient_scope"));
    let (s, e) = post(&app, &key, json!({"model": "gpt-nope", "messages": hi})).await;
    assert_openai_error(s, &e, 404, "invalid_request_error", Some("model_not_found"));
    assert_eq!(e["error"]["param"], "model");
    let (s, e) = post(&app, &key, json!({"model": "nope/some-model", "messages": hi})).await;
    assert_openai_error(s, &e, 404, "invalid_request_error", Some("model_not_found"));
    // 429: runs.max_active is 1 and a stream holds it.
    fake.push(Reply::HangAfter(text("wait")));
    let mut held = SseReader::new(
        app.http
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "default", "stream": true, "messages": hi}))
            .send()
            .await
            .unwrap(),
    );
    held.next().await.unwrap();
    let res = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "default", "messages": hi}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let (s, e) = (res.status(), res.json::<Value>().await.unwrap());
    assert_openai_error(s, &e, 429, "requests", Some("rate_limit_exceeded"));
    // So is an AstrBot chat turn meanwhile: one limit for both.
    let (s, _) =
        send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&json!({"username": "u", "message": "x"})))
            .await;
    assert_eq!(s, 429);
    drop(held);
    assert!(fake.wait_abandoned(Duration::from_secs(5)).await);
    eventually(|| async { (app.state.agent.runs.stateless() == 0).then_some(()) }).await;
    // 502 and 503: the upstream's failure with a generic message, its own text only in the log.
    fake.push(Reply::Error(500, json!({"error": {"message": "secret upstream detail sk-live-1234"}})));
    let (s, e) = post(&app, &key, json!({"model": "default", "messages": hi})).await;
    assert_openai_error(s, &e, 502, "server_error", Some("upstream_error"));
    assert!(!e.to_string().contains("sk-live") && !e.to_string().contains("secret"), "{e}");
    fake.push(Reply::Error(429, json!({"error": {"message": "slow down"}})));
    let body = json!({"model": "default", "stream": true, "messages": hi});
    let res = app.http.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(res.headers()["retry-after"], "5");
    let (s, e) = (res.status(), res.json::<Value>().await.unwrap());
    assert_openai_error(s, &e, 503, "server_error", Some("upstream_unavailable"));
}

#[tokio::test]
async fn no_provider_is_a_503_and_an_unreachable_one_too() {
    let app = spawn_toml("[[providers]]\nid = \"gone\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n").await;
    let key = app.key(&["chat"]).await;
    let (s, e) = post(&app, &key, json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_openai_error(s, &e, 503, "server_error", Some("upstream_unavailable"));
    let app = spawn_app().await;
    let key = app.key(&["chat"]).await;
    let (s, e) = post(&app, &key, json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_openai_error(s, &e, 503, "server_error", Some("not_configured"));
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_ends_with_an_error_chunk_and_no_done() {
    let (app, fake, key) = openai_app("").await;
    fake.push(Reply::CutAfter(tokens(&["Half ", "an "])));
    let body = json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let lines = stream_lines(&app, &key, body).await;
    assert!(!lines.iter().any(|l| l == "[DONE]"), "{lines:?}");
    let chunks = parsed(&lines);
    assert_eq!(content_of(&chunks), "Half an ");
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["type"], "server_error", "{last}");
    assert_eq!(last["error"]["code"], "upstream_error");
    assert_eq!(last["error"]["message"], "The model provider's stream broke off");
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_at_once() {
    let (app, fake, key) = openai_app("").await;
    // Streamed: the client reads the first token and goes.
    fake.push(Reply::HangAfter(text("first")));
    let body = json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let res = app.http.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
    let mut sse = SseReader::new(res);
    sse.next().await.unwrap();
    assert_eq!(sse.next().await.unwrap().data["choices"][0]["delta"]["content"], "first");
    drop(sse);
    assert!(fake.wait_abandoned(Duration::from_secs(2)).await, "the upstream request was dropped");
    eventually(|| async { (app.state.agent.runs.stateless() == 0).then_some(()) }).await;

    // Whole: the client gives up while the model is still answering.
    let before = fake.abandoned();
    fake.push(Reply::Chunks { chunks: text("late"), delay: Duration::ZERO, first_delay: Duration::from_secs(30) });
    let body = json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]});
    let r = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.is_err(), "the client timed out");
    eventually(|| async { (fake.abandoned() > before).then_some(()) }).await;
    eventually(|| async { (app.state.agent.runs.stateless() == 0).then_some(()) }).await;
}

#[tokio::test]
async fn thirty_two_concurrent_streams_do_not_mix() {
    let (app, fake, key) = openai_app("").await;
    let _ = &fake;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (http, url, key) = (app.http.clone(), app.url("/v1/chat/completions"), key.clone());
        tasks.push(tokio::spawn(async move {
            let words: Vec<String> = (0..12).map(|w| format!("s{i}w{w}")).collect();
            let body = json!({"model": "default", "stream": true, "stream_options": {"include_usage": true},
                              "messages": [{"role": "user", "content": words.join(" ")}]});
            let text = http.post(url).bearer_auth(key).json(&body).send().await.unwrap().text().await.unwrap();
            let lines: Vec<String> =
                text.split("\n\n").filter_map(|b| b.strip_prefix("data: ")).map(str::to_string).collect();
            (words.join(" "), lines)
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (asked, lines) = t.await.unwrap();
        assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
        let chunks = parsed(&lines);
        assert_eq!(content_of(&chunks), format!("Echo: {asked}"), "each stream has its own answer, whole");
        let id = chunks[0]["id"].as_str().unwrap().to_string();
        assert!(chunks.iter().all(|c| c["id"] == id.as_str()));
        assert!(ids.insert(id), "ids are unique");
        assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 13);
    }
    assert_eq!(app.state.agent.runs.stateless(), 0);
}

#[tokio::test]
async fn shutdown_ends_an_open_stream_with_an_error_chunk() {
    let (app, fake, key) = openai_app("").await;
    fake.push(Reply::HangAfter(text("thinking")));
    let body = json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let res = app.http.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
    let mut sse = SseReader::new(res);
    sse.next().await.unwrap();
    assert_eq!(sse.next().await.unwrap().data["choices"][0]["delta"]["content"], "thinking");
    app.state.shutdown.cancel();
    let last = sse.next().await.expect("an error chunk");
    assert_eq!(last.data["error"]["code"], "shutting_down", "{:?}", last.data);
    assert!(sse.next().await.is_none(), "the stream ends, without [DONE]");
    assert!(fake.wait_abandoned(Duration::from_secs(2)).await, "the upstream request was dropped");
}
