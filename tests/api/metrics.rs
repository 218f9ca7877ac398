//! Prometheus metrics (`[metrics] listen`): the listener of its own, and what real traffic records,
//! read back through the official Python `prometheus_client` text parser
//! (`tests/prometheus/parse.py`, run by the virtualenv's python that `scripts/test.sh` names in
//! `PROM_PARSER_PYTHON`; without it the parsing test says so and passes).
//!
//! The registry is the process's: other apps of this binary may record into it at the same time,
//! so the tests compare scrapes taken before and after their traffic and assert increases.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Reply, text};
use crate::helpers::*;

const METRICS_TOML: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A username no label may ever show.
const USER: &str = "metrics-user-7";

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String, String) {
    let res = client().get(format!("http://{addr}{path}")).send().await.unwrap();
    let status = res.status();
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ct, res.text().await.unwrap())
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug)]
struct Family {
    name: String,
    kind: String,
    samples: Vec<Sample>,
}

/// `GET /metrics`, parsed by Python's `prometheus_client`.
async fn scrape(python: &std::ffi::OsStr, app: &TestApp) -> Vec<Family> {
    let (status, ct, body) = get(app.metrics.unwrap(), "/metrics").await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, PROMETHEUS_TEXT));
    let script = format!("{}/tests/prometheus/parse.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body.as_bytes()).await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "the parser refused the text:\n{}\n{body}", String::from_utf8_lossy(&out.stderr));
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Family {
            name: f["name"].as_str().unwrap().to_string(),
            kind: f["type"].as_str().unwrap().to_string(),
            samples: f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap().to_string(),
                    labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                    value: s["value"].as_f64().unwrap(),
                })
                .collect(),
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// How much `name{labels}` grew between two scrapes.
fn grew(before: &[Family], after: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(after, name, labels) - value(before, name, labels)
}

/// Every label value of the `route` label.
fn routes(families: &[Family]) -> BTreeSet<String> {
    families.iter().flat_map(|f| &f.samples).filter_map(|s| s.labels.get("route").cloned()).collect()
}

/// Each family's type and the label names of its samples (`le` aside).
const SHAPES: &[(&str, &str, &[&str])] = &[
    ("astrgate_http_requests", "counter", &["method", "route", "status"]),
    ("astrgate_http_request_duration_seconds", "histogram", &["method", "route"]),
    ("astrgate_chat_first_token_seconds", "histogram", &["door"]),
    ("astrgate_llm_tokens", "counter", &["kind", "model", "provider"]),
    ("astrgate_upstream_errors", "counter", &["kind", "provider"]),
    ("astrgate_runs_active", "gauge", &[]),
    ("astrgate_websockets_open", "gauge", &["endpoint"]),
    ("astrgate_live_stage_seconds", "histogram", &["stage"]),
    ("astrgate_rate_limited", "counter", &["reason"]),
];

/// Families with no series yet are not rendered: `all` once every one has some.
fn check_shapes(families: &[Family], all: bool) {
    let names: BTreeSet<&str> = families.iter().map(|f| f.name.as_str()).collect();
    let want: BTreeSet<&str> = SHAPES.iter().map(|s| s.0).collect();
    assert!(names.is_subset(&want), "unknown metric families: {names:?}");
    if all {
        assert_eq!(names, want, "the metric families");
    }
    for f in families {
        let (_, kind, labels) = SHAPES.iter().find(|s| s.0 == f.name).unwrap();
        assert_eq!(&f.kind, kind, "{}", f.name);
        for s in &f.samples {
            let mut got: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            if s.name.ends_with("_bucket") {
                assert!(s.labels.contains_key("le"), "{s:?}");
                got.retain(|k| *k != "le");
            }
            assert_eq!(&got, labels, "the labels of {s:?}");
        }
    }
}

#[tokio::test]
async fn real_traffic_is_counted_under_route_templates_without_secrets() {
    let Some(python) = std::env::var_os("PROM_PARSER_PYTHON") else {
        eprintln!("skipped: PROM_PARSER_PYTHON is not set (scripts/test.sh sets it)");
        return;
    };
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!(
        "{}\n{}\n{METRICS_TOML}[runs]\nmax_active = 2\n",
        fake.provider_toml("fake"),
        fake.audio_toml()
    ))
    .await;
    let key = app.key(&["chat"]).await;
    let before = scrape(&python, &app).await;
    check_shapes(&before, false);

    // An SSE chat through the fake LLM.
    let frames = chat(&app, &key, json!({"username": USER, "message": "hello"})).await.collect().await;
    assert_eq!(types(&frames).last().map(String::as_str), Some("end"));
    let session_id = frames[0].data["session_id"].as_str().unwrap().to_string();
    // The OpenAI door: whole, streamed, and a model no configuration names.
    for (model, stream) in [("fake/fake-model", false), ("fake/fake-model", true), ("fake/made-up-model", false)] {
        let res = app
            .http
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body = res.text().await.unwrap();
        assert!(body.contains(if stream { "data: [DONE]" } else { "\"usage\"" }), "{body}");
    }
    // Paths with a query and with an id; one that matches no route.
    let (s, _) =
        send(app.http.get(app.url(&format!("/api/v1/chat/sessions?x=1&username={USER}"))).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    let messages = format!("/api/v1/chat/sessions/{session_id}/messages?username={USER}");
    let (s, _) = send(app.http.get(app.url(&messages)).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    let res = app.http.get(app.url("/definitely/not/a/route")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    // The provider refuses a request.
    fake.push(Reply::Error(400, json!({"error": {"message": "bad request"}})));
    let frames = chat(&app, &key, json!({"username": USER, "message": "fail"})).await.collect().await;
    assert!(types(&frames).contains(&"error".to_string()), "{:?}", types(&frames));

    // Two sockets open at once (the key in the chat socket's query), one of them a Live turn.
    let mut chat_ws = ws_connect(&app, &format!("/api/v1/chat/ws?api_key={key}"), &[]).await;
    chat_ws.send(json!({"t": "ping"})).await;
    assert_eq!(chat_ws.recv().await["type"], "pong");
    let mut live = ws_connect(&app, &format!("/api/v1/live/ws?api_key={key}&username={USER}"), &[]).await;
    fake.push(Reply::Chunks {
        chunks: text("Hello there. Bye now."),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    crate::live::speak(&mut live, &[0u8; 6400]).await;
    let frames = crate::live::turn(&mut live).await;
    assert!(frames.iter().any(|f| f["t"] == "response"), "the reply was spoken");
    let open = scrape(&python, &app).await;
    assert!(value(&open, "astrgate_websockets_open", &[("endpoint", "/api/v1/chat/ws")]) >= 1.0);
    assert!(value(&open, "astrgate_websockets_open", &[("endpoint", "/api/v1/live/ws")]) >= 1.0);
    drop((chat_ws, live));

    // A login flood.
    let mut refused = 0.0;
    for _ in 0..8 {
        let res = app
            .http
            .post(app.url("/api/auth/login"))
            .json(&json!({"username": "astrgate", "password": "wrong"}))
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            refused += 1.0;
        }
    }
    assert!(refused >= 1.0, "the flood was limited");
    // `[runs] max_active`: two runs hang, a third request is refused.
    eventually(|| {
        let idle = app.state.agent.runs.is_empty() && app.state.agent.runs.stateless() == 0;
        async move { idle.then_some(()) }
    })
    .await;
    let _hanging = hanging_chats(&app, &fake, &key, 2).await;
    let res = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "fake/fake-model", "messages": [{"role": "user", "content": "three"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    // A key's own limit: its one request a minute is spent, the next is refused.
    let body = json!({"name": "one a minute", "scopes": ["chat"], "limits": {"requests_per_minute": 1}});
    let (s, b) = send(app.http.post(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt).json(&body)).await;
    assert_eq!(s, 200, "{b}");
    let slow = b["data"]["api_key"].as_str().unwrap().to_string();
    let sessions = app.url("/api/v1/chat/sessions?username=u");
    assert_eq!(app.http.get(&sessions).bearer_auth(&slow).send().await.unwrap().status(), 200);
    assert_eq!(app.http.get(&sessions).bearer_auth(&slow).send().await.unwrap().status(), 429);

    let after = scrape(&python, &app).await;
    check_shapes(&after, true);
    let req = "astrgate_http_requests_total";
    assert!(grew(&before, &after, req, &[("route", "/api/v1/chat"), ("method", "POST"), ("status", "200")]) >= 4.0);
    assert!(
        grew(&before, &after, req, &[("route", "/v1/chat/completions"), ("method", "POST"), ("status", "200")]) >= 3.0
    );
    assert!(grew(&before, &after, req, &[("route", "/v1/chat/completions"), ("status", "429")]) >= 1.0);
    assert!(grew(&before, &after, req, &[("route", "/api/v1/chat/sessions"), ("status", "200")]) >= 1.0);
    let messages_route = "/api/v1/chat/sessions/{session_id}/messages";
    assert!(grew(&before, &after, req, &[("route", messages_route), ("method", "GET"), ("status", "200")]) >= 1.0);
    assert!(grew(&before, &after, req, &[("route", "unmatched"), ("method", "GET"), ("status", "404")]) >= 1.0);
    assert!(grew(&before, &after, req, &[("route", "/api/v1/chat/ws"), ("status", "101")]) >= 1.0);
    assert!(grew(&before, &after, req, &[("route", "/api/auth/login"), ("status", "429")]) >= refused);
    let duration = "astrgate_http_request_duration_seconds_count";
    assert!(grew(&before, &after, duration, &[("route", "/api/v1/chat"), ("method", "POST")]) >= 4.0);
    let inf = [("route", "/api/v1/chat"), ("method", "POST"), ("le", "+Inf")];
    assert_eq!(
        value(&after, "astrgate_http_request_duration_seconds_bucket", &inf),
        value(&after, duration, &[("route", "/api/v1/chat"), ("method", "POST")]),
        "the +Inf bucket holds every observation"
    );

    let first = "astrgate_chat_first_token_seconds_count";
    assert!(grew(&before, &after, first, &[("door", "sse_chat")]) >= 1.0);
    assert!(grew(&before, &after, first, &[("door", "openai")]) >= 3.0);
    assert!(grew(&before, &after, first, &[("door", "live")]) >= 1.0);
    let tokens = "astrgate_llm_tokens_total";
    let fake_model = [("provider", "fake"), ("model", "fake-model")];
    // The fake reports 10 prompt tokens per request: the SSE chat, two OpenAI requests, the Live turn.
    assert!(grew(&before, &after, tokens, &[fake_model[0], fake_model[1], ("kind", "prompt")]) >= 40.0);
    assert!(grew(&before, &after, tokens, &[fake_model[0], fake_model[1], ("kind", "completion")]) >= 4.0);
    assert!(grew(&before, &after, tokens, &[("provider", "fake"), ("model", "other"), ("kind", "prompt")]) >= 10.0);
    let errors = "astrgate_upstream_errors_total";
    assert!(grew(&before, &after, errors, &[("provider", "fake"), ("kind", "http_4xx")]) >= 1.0);
    let stage = "astrgate_live_stage_seconds_count";
    for s in ["stt", "first_token", "first_audio"] {
        assert!(grew(&before, &after, stage, &[("stage", s)]) >= 1.0, "live stage {s}");
    }
    let limited = "astrgate_rate_limited_total";
    assert!(grew(&before, &after, limited, &[("reason", "login")]) >= refused);
    assert!(grew(&before, &after, limited, &[("reason", "max_active")]) >= 1.0);
    assert!(grew(&before, &after, limited, &[("reason", "rate")]) >= 1.0);
    assert!(value(&after, "astrgate_runs_active", &[]) >= 2.0, "the two hanging runs are active");

    // Route labels are templates: every one is a documented path (or `unmatched`); no raw path,
    // id or query reached a label.
    let spec: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    let documented: BTreeSet<String> = spec["paths"].as_object().unwrap().keys().cloned().collect();
    for route in routes(&after) {
        assert!(route == "unmatched" || documented.contains(&route.replace("{*", "{")), "route label {route}");
    }
    assert!(routes(&after).contains(messages_route));
    // No label carries a secret, a user or a client-chosen model.
    let values: Vec<&String> = after.iter().flat_map(|f| &f.samples).flat_map(|s| s.labels.values()).collect();
    let jwt = app.state.dashboard.issue(&app.state.dashboard.username());
    for secret in [key.as_str(), &app.jwt, &jwt, "sk-fake-upstream", "sk-stt", "sk-tts", USER, &session_id, "made-up"] {
        assert!(!values.iter().any(|v| v.contains(secret)), "a label holds {secret}");
    }
    assert!(!values.iter().any(|v| v.contains('?')), "a label holds a query");
}

#[tokio::test]
async fn the_metrics_listener_serves_only_metrics_and_stops_with_the_app() {
    let app = spawn_toml(METRICS_TOML).await;
    let addr = app.metrics.expect("the metrics listener is bound");
    assert_ne!(addr, app.addr);
    assert_eq!(get(app.addr, "/healthz").await.0, StatusCode::OK);
    let (status, ct, body) = get(addr, "/metrics").await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, PROMETHEUS_TEXT));
    assert!(body.contains("# TYPE astrgate_http_requests_total counter\n"), "{body}");
    let healthz = r#"astrgate_http_requests_total{route="/healthz",method="GET",status="200"} "#;
    assert!(body.lines().any(|l| l.starts_with(healthz)), "{body}");
    assert!(body.lines().any(|l| l.starts_with("astrgate_runs_active ")), "{body}");
    for path in ["/", "/metrics/", "/metrics/x", "/healthz", "/api/v1/chat"] {
        assert_eq!(get(addr, path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    let res = client().post(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    // The main listener does not serve them.
    let (_, _, main) = get(app.addr, "/metrics").await;
    assert!(!main.contains("astrgate_"), "{main}");
    // The listener is a task of the app: it stops with it.
    app.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the metrics listener still accepts");
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    assert_eq!(astrgate::config::Config::from_toml("").unwrap().metrics.listen, None);
    let app = spawn_app().await;
    assert_eq!(app.metrics, None, "no metrics listener without [metrics] listen");
    let (status, _, body) = get(app.addr, "/metrics").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains("astrgate_"), "{body}");
    // A metrics address that is the server's own is refused.
    let err =
        astrgate::config::Config::from_toml("listen = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"0.0.0.0:9000\"\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("metrics.listen"), "{err}");
}
