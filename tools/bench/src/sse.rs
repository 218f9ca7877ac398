//! Closed-loop SSE load: `concurrency` workers each send a request, read its stream to the end,
//! and send the next, until the time is up. The same load runs against the upstream directly and
//! through astrgate, in one invocation, so the two can be compared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::stats::Samples;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `POST <upstream>/chat/completions` (OpenAI SSE).
    Direct,
    /// `POST <astrgate>/api/v1/chat` (AstrBot SSE).
    Astrgate,
    /// `POST <astrgate>/v1/chat/completions` (OpenAI SSE, stateless).
    OpenAi,
}

pub struct Report {
    pub target: Target,
    pub concurrency: usize,
    pub secs: f64,
    pub ok: usize,
    pub errors: usize,
    pub first_event: Samples,
    pub first_token: Samples,
    pub total: Samples,
}

impl Report {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

struct Worker {
    first_event: Samples,
    first_token: Samples,
    total: Samples,
    ok: usize,
    errors: usize,
}

async fn one(
    client: &reqwest::Client,
    target: Target,
    url: &str,
    key: &str,
    user: &str,
    provider: Option<&str>,
    w: &mut Worker,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let req = match target {
        Target::Direct => client.post(url).json(&json!({"model": "fake", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Hello"}]})),
        Target::Astrgate => client.post(url).bearer_auth(key).json(&match provider {
            Some(p) => json!({"username": user, "message": "Hello", "selected_provider": p}),
            None => json!({"username": user, "message": "Hello"}),
        }),
        // The default profile, or any model on the chosen provider (the fake ignores it).
        Target::OpenAi => client.post(url).bearer_auth(key).json(&json!({
            "model": provider.map(|p| format!("{p}/bench")).unwrap_or_else(|| "default".into()),
            "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Hello"}],
        })),
    };
    let mut res = req.send().await?;
    anyhow::ensure!(res.status().is_success(), "HTTP {}", res.status());
    let mut first_event = None;
    let mut first_token = None;
    let mut done = false;
    let mut tail = Vec::<u8>::new();
    while let Some(chunk) = res.chunk().await? {
        let now = t0.elapsed();
        tail.extend_from_slice(&chunk);
        if first_event.is_none() && tail.windows(5).any(|w| w == b"data:") {
            first_event = Some(now);
        }
        if first_token.is_none() {
            let token_marker: &[u8] = match target {
                Target::Direct => b"\"content\"",
                Target::Astrgate => b"\"type\":\"plain\"",
                // Not the first chunk, `{"role":"assistant","content":""}`.
                Target::OpenAi => b"\"delta\":{\"content\"",
            };
            if tail.windows(token_marker.len()).any(|w| w == token_marker) {
                first_token = Some(now);
            }
        }
        let end_marker: &[u8] = match target {
            Target::Direct | Target::OpenAi => b"[DONE]",
            Target::Astrgate => b"\"type\":\"end\"",
        };
        if tail.windows(end_marker.len()).any(|w| w == end_marker) {
            done = true;
        }
        // Keep only a short tail: markers can straddle chunks.
        if tail.len() > 64 {
            tail.drain(..tail.len() - 64);
        }
    }
    anyhow::ensure!(done, "stream ended early");
    w.first_event.push(first_event.unwrap_or_default());
    w.first_token.push(first_token.unwrap_or_default());
    w.total.push(t0.elapsed());
    w.ok += 1;
    Ok(())
}

pub async fn run(
    client: reqwest::Client,
    target: Target,
    url: String,
    key: String,
    provider: Option<String>,
    concurrency: usize,
    duration: Duration,
) -> Report {
    let deadline = Instant::now() + duration;
    let url = Arc::new(url);
    let key = Arc::new(key);
    let provider = Arc::new(provider);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let (client, url, key, provider) = (client.clone(), url.clone(), key.clone(), provider.clone());
        tasks.push(tokio::spawn(async move {
            let mut w = Worker {
                first_event: Samples::default(),
                first_token: Samples::default(),
                total: Samples::default(),
                ok: 0,
                errors: 0,
            };
            let user = format!("bench-{i}");
            while Instant::now() < deadline {
                if let Err(e) = one(&client, target, &url, &key, &user, provider.as_deref(), &mut w).await {
                    w.errors += 1;
                    if w.errors <= 3 {
                        eprintln!("worker {i}: {e:#}");
                    }
                }
            }
            w
        }));
    }
    let mut r = Report {
        target,
        concurrency,
        secs: 0.0,
        ok: 0,
        errors: 0,
        first_event: Samples::default(),
        first_token: Samples::default(),
        total: Samples::default(),
    };
    for t in tasks {
        if let Ok(w) = t.await {
            r.ok += w.ok;
            r.errors += w.errors;
            r.first_event.extend(w.first_event);
            r.first_token.extend(w.first_token);
            r.total.extend(w.total);
        }
    }
    r.secs = start.elapsed().as_secs_f64();
    r
}

pub fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    astrgate::util::install_crypto_provider();
    Ok(reqwest::Client::builder().pool_max_idle_per_host(concurrency * 2).tcp_nodelay(true).http1_only().build()?)
}
