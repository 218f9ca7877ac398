//! A fast fake OpenAI-compatible upstream for benchmarks: `/v1/chat/completions` (streaming with
//! N tokens, each its own SSE event; zero or fixed per-token delay), `/v1/audio/transcriptions`
//! and `/v1/audio/speech` with fixed delays. Responses are precomputed once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Options {
    pub tokens: usize,
    pub token_delay: Duration,
    pub first_delay: Duration,
    pub stt_delay: Duration,
    pub tts_delay: Duration,
    /// Text the content tokens spell (split on spaces); `tok0 tok1 …` when absent.
    pub text: Option<String>,
}

struct Prepared {
    opts: Options,
    /// The whole streamed answer as one buffer (used when there is no per-token delay).
    stream_all: Bytes,
    /// One SSE event per token, then the tail (finish, usage, [DONE]).
    events: Vec<Bytes>,
    whole: Bytes,
    wav: Bytes,
}

fn prepare(opts: Options) -> Prepared {
    let words: Vec<String> = match &opts.text {
        Some(t) => t.split_inclusive(' ').map(str::to_string).collect(),
        None => {
            (0..opts.tokens).map(|i| if i + 1 < opts.tokens { format!("tok{i} ") } else { format!("tok{i}") }).collect()
        }
    };
    let mut events: Vec<Bytes> = words
        .iter()
        .map(|w| {
            let c = json!({"id": "b", "object": "chat.completion.chunk", "model": "fake", "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]});
            Bytes::from(format!("data: {c}\n\n"))
        })
        .collect();
    let n = words.len();
    let fin = json!({"id": "b", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let usage = json!({"id": "b", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}});
    events.push(Bytes::from(format!("data: {fin}\n\ndata: {usage}\n\ndata: [DONE]\n\n")));
    let stream_all = Bytes::from(events.iter().flat_map(|b| b.iter().copied()).collect::<Vec<u8>>());
    let content: String = words.concat();
    let whole = Bytes::from(
        json!({"id": "b", "object": "chat.completion", "model": "fake", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}})
        .to_string(),
    );
    let samples = vec![0u8; 3200];
    let wav = Bytes::from(astrgate::audio::wav::pcm16_to_wav(&samples, 16_000, 1));
    Prepared { opts, stream_all, events, whole, wav }
}

async fn completions(State(p): State<Arc<Prepared>>, body: Bytes) -> Response {
    let stream = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["stream"].as_bool()).unwrap_or(false);
    if !stream {
        tokio::time::sleep(p.opts.first_delay).await;
        return ([("content-type", "application/json")], p.whole.clone()).into_response();
    }
    let headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")];
    if p.opts.token_delay.is_zero() && p.opts.first_delay.is_zero() {
        return (headers, p.stream_all.clone()).into_response();
    }
    let p2 = p.clone();
    let s = futures_util::stream::unfold(0usize, move |i| {
        let p = p2.clone();
        async move {
            let ev = p.events.get(i)?.clone();
            let d = if i == 0 {
                p.opts.first_delay
            } else if i + 1 < p.events.len() {
                p.opts.token_delay
            } else {
                Duration::ZERO
            };
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
            Some((Ok::<Bytes, std::io::Error>(ev), i + 1))
        }
    });
    (headers, Body::from_stream(s)).into_response()
}

/// Waits exactly `d`: tokio's timer fires on a millisecond tick and so runs up to ~1 ms late,
/// which would count as astrgate's overhead in the Live scenario. The timer takes all but the
/// last 2 ms; the rest is waited out by yielding. (Not used between tokens: spinning there would
/// burn the CPU the load test measures.)
async fn exact_sleep(d: Duration) {
    let deadline = std::time::Instant::now() + d;
    if let Some(coarse) = d.checked_sub(Duration::from_millis(2)) {
        tokio::time::sleep(coarse).await;
    }
    while std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

async fn transcriptions(State(p): State<Arc<Prepared>>, _body: Bytes) -> Response {
    exact_sleep(p.opts.stt_delay).await;
    axum::Json(json!({"text": "hello world"})).into_response()
}

async fn speech(State(p): State<Arc<Prepared>>, _body: Bytes) -> Response {
    exact_sleep(p.opts.tts_delay).await;
    ([("content-type", "audio/wav")], p.wav.clone()).into_response()
}

pub fn router(opts: Options) -> Router {
    let p = Arc::new(prepare(opts));
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/speech", post(speech))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(p)
}

pub async fn serve(listen: SocketAddr, opts: Options) -> anyhow::Result<()> {
    let l = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("fake upstream on http://{}", l.local_addr()?);
    axum::serve(l, router(opts)).await?;
    Ok(())
}
