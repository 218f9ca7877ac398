//! A fake OpenAI-compatible upstream: a real HTTP server on 127.0.0.1:0 speaking the
//! `/v1/chat/completions` wire format (SSE chunks, usage, `[DONE]`, error bodies with headers such
//! as `Retry-After`, dropped connections). Each test scripts its replies — for every request, or
//! for the requests carrying one API key (`Authorization: Bearer <key>`); by default it echoes the
//! last user message as 20 tokens.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub enum Chunk {
    Content(String),
    Reasoning(String),
    /// A `tool_calls` delta (an array of partial calls), sent as it is.
    ToolCalls(Value),
}

#[derive(Clone, Debug)]
pub enum Reply {
    /// A streamed answer (or the same content as one JSON answer when the client did not stream).
    Chunks { chunks: Vec<Chunk>, delay: Duration, first_delay: Duration },
    /// The stream breaks off (connection aborted) after these chunks.
    CutAfter(Vec<Chunk>),
    /// Sends these chunks, then stays silent until the client goes away.
    HangAfter(Vec<Chunk>),
    /// An HTTP error with this body.
    Error(u16, Value),
    /// An HTTP error with these headers (`retry-after`…) and body.
    ErrorWith(u16, Vec<(&'static str, String)>, Value),
    /// The connection is dropped before any chunk (the client sees it reset or broken off).
    Reset,
    /// Sends these chunks, then resets the TCP connection (an RST, not a clean close).
    ResetAfter(Vec<Chunk>),
    /// A 200 `text/event-stream` whose body is exactly these bytes, then a clean end.
    Garbage(Vec<u8>),
    /// A 200 `text/event-stream` repeating these bytes until the client goes away.
    Endless(Vec<u8>),
    /// Never answers, not even with headers, until the client goes away.
    Silent,
}

pub fn text(s: &str) -> Vec<Chunk> {
    vec![Chunk::Content(s.to_string())]
}

pub fn tokens(words: &[&str]) -> Vec<Chunk> {
    words.iter().map(|w| Chunk::Content(w.to_string())).collect()
}

#[derive(Default)]
pub struct Inner {
    pub requests: Mutex<Vec<Value>>,
    script: Mutex<VecDeque<Reply>>,
    /// Replies for the requests of one API key, before the common script.
    key_scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    /// Streams the client abandoned before their end.
    pub abandoned: AtomicUsize,
    pub abandoned_notify: Notify,
    pub auth_headers: Mutex<Vec<Option<String>>>,
    /// Texts sent to /audio/speech, in order.
    pub speech_inputs: Mutex<Vec<String>>,
    /// Delay before each /audio/speech answer.
    pub speech_delay: Mutex<Duration>,
    /// What /audio/transcriptions answers (default "hello from the fake stt").
    pub transcript: Mutex<Option<String>>,
    /// Sizes of the files sent to /audio/transcriptions.
    pub transcribed: Mutex<Vec<usize>>,
    /// Speech requests cancelled before they were answered.
    pub speech_abandoned: AtomicUsize,
    /// Extra silence (bytes of PCM) appended to each speech answer, for tests that need big audio.
    pub speech_padding: AtomicUsize,
    /// Do not keep request bodies (memory tests send huge ones).
    pub forget_requests: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
pub struct FakeLlm {
    pub base_url: String,
    pub inner: Arc<Inner>,
}

impl FakeLlm {
    pub async fn start() -> FakeLlm {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = app.into_make_service_with_connect_info::<Conn>();
        tokio::spawn(async move { axum::serve(ResettableListener(listener), app).await.unwrap() });
        FakeLlm { base_url: format!("http://{addr}/v1"), inner }
    }

    /// Queues a reply for the next request.
    pub fn push(&self, r: Reply) {
        self.inner.script.lock().unwrap().push_back(r);
    }

    /// Queues a reply for the next request made with API key `key`.
    pub fn push_for(&self, key: &str, r: Reply) {
        self.inner.key_scripts.lock().unwrap().entry(key.to_string()).or_default().push_back(r);
    }

    /// The API key of each chat completion request, in order (`-` without one).
    pub fn keys_seen(&self) -> Vec<String> {
        let auth = self.inner.auth_headers.lock().unwrap();
        auth.iter().map(|h| h.as_deref().and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("-").to_string()).collect()
    }

    pub fn requests(&self) -> Vec<Value> {
        self.inner.requests.lock().unwrap().clone()
    }

    pub fn abandoned(&self) -> usize {
        self.inner.abandoned.load(Ordering::SeqCst)
    }

    /// Waits until a stream was abandoned by the client (the upstream request was cancelled).
    pub async fn wait_abandoned(&self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            loop {
                let n = self.inner.abandoned_notify.notified();
                if self.abandoned() > 0 {
                    return;
                }
                n.await;
            }
        })
        .await
        .is_ok()
    }

    /// TOML for OpenAI-compatible STT and TTS pointing here.
    pub fn audio_toml(&self) -> String {
        format!(
            "[stt]\ntype = \"openai\"\nbase_url = \"{0}\"\napi_key = \"sk-stt\"\n[tts]\ntype = \"openai\"\nbase_url = \"{0}\"\napi_key = \"sk-tts\"\n",
            self.base_url
        )
    }

    /// TOML for a provider, STT and TTS pointing here, and a default profile that speaks.
    pub fn speaking_toml(&self) -> String {
        format!("{}\n{}\n[[profiles]]\nid = \"voice\"\ntts = true\n", self.provider_toml("fake"), self.audio_toml())
    }

    /// TOML for a provider pointing here. It is asked once per request (`retries = 0`), so a
    /// scripted error is the answer; the resilience tests configure their own.
    pub fn provider_toml(&self, id: &str) -> String {
        format!(
            "[[providers]]\nid = \"{id}\"\nbase_url = \"{}\"\napi_key = \"sk-fake-upstream\"\nmodel = \"fake-model\"\nidle_timeout_secs = 5\nretries = 0\n",
            self.base_url
        )
    }
}

fn last_user_text(body: &Value) -> String {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let last = msgs.iter().rev().find(|m| m["role"] == "user").cloned().unwrap_or(Value::Null);
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

fn default_reply(body: &Value) -> Reply {
    let words = format!("Echo: {}", last_user_text(body));
    let chunks = words.split_inclusive(' ').map(|w| Chunk::Content(w.to_string())).collect();
    Reply::Chunks { chunks, delay: Duration::ZERO, first_delay: Duration::ZERO }
}

fn chunk_json(c: &Chunk) -> String {
    let delta = match c {
        Chunk::Content(t) => json!({"content": t}),
        Chunk::Reasoning(t) => json!({"reasoning_content": t}),
        Chunk::ToolCalls(v) => json!({"tool_calls": v}),
    };
    format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "fake-model", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    )
}

fn usage_of(chunks: &[Chunk]) -> Value {
    json!({"prompt_tokens": 10, "completion_tokens": chunks.len(), "total_tokens": 10 + chunks.len(), "prompt_tokens_details": {"cached_tokens": 2}})
}

/// Counts the stream as abandoned if dropped before its natural end.
struct Guard {
    inner: Arc<Inner>,
    finished: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.abandoned.fetch_add(1, Ordering::SeqCst);
            self.inner.abandoned_notify.notify_waiters();
        }
    }
}

enum Step {
    Send(String, Duration),
    Fail,
    Hang,
    Reset(Conn),
}

async fn completions(
    State(inner): State<Arc<Inner>>,
    axum::extract::ConnectInfo(conn): axum::extract::ConnectInfo<Conn>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let mut body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if inner.forget_requests.load(Ordering::SeqCst) {
        // Keep the shape the default reply reads, without the (huge) content.
        body = json!({"stream": body["stream"], "messages": [{"role": "user", "content": "media"}]});
    }
    inner.requests.lock().unwrap().push(body.clone());
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap_or("").to_string());
    inner.auth_headers.lock().unwrap().push(auth.clone());
    let key = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("").to_string();
    let keyed = inner.key_scripts.lock().unwrap().get_mut(&key).and_then(VecDeque::pop_front);
    let reply = keyed.or_else(|| inner.script.lock().unwrap().pop_front()).unwrap_or_else(|| default_reply(&body));
    let stream = body["stream"].as_bool().unwrap_or(false);
    let (chunks, delay, first_delay, tail) = match reply {
        Reply::Error(status, v) => {
            return (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(v)).into_response();
        }
        Reply::ErrorWith(status, headers, v) => {
            let mut res = (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(v)).into_response();
            for (k, v) in headers {
                res.headers_mut().insert(k, v.parse().unwrap());
            }
            return res;
        }
        Reply::Reset => {
            // A body that fails before its first byte: the server drops the connection.
            let s = futures_util::stream::once(async { Err::<Bytes, _>(std::io::Error::other("reset")) });
            return Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(s)).unwrap();
        }
        Reply::Chunks { chunks, delay, first_delay } => (chunks, delay, first_delay, None),
        Reply::CutAfter(chunks) => (chunks, Duration::ZERO, Duration::ZERO, Some(Step::Fail)),
        Reply::HangAfter(chunks) => (chunks, Duration::ZERO, Duration::ZERO, Some(Step::Hang)),
        Reply::ResetAfter(chunks) => (chunks, Duration::ZERO, Duration::ZERO, Some(Step::Reset(conn))),
        Reply::Garbage(bytes) => return event_stream(futures_util::stream::iter([Ok(Bytes::from(bytes))])),
        Reply::Endless(piece) => {
            let guard = Guard { inner: inner.clone(), finished: false };
            let piece = Bytes::from(piece);
            return event_stream(futures_util::stream::repeat_with(move || {
                let _ = &guard;
                Ok(piece.clone())
            }));
        }
        Reply::Silent => {
            let _guard = Guard { inner: inner.clone(), finished: false };
            return std::future::pending::<Response>().await;
        }
    };
    let finish = if chunks.iter().any(|c| matches!(c, Chunk::ToolCalls(_))) { "tool_calls" } else { "stop" };
    if !stream {
        // A client that gives up while the answer is being "generated" counts as abandoned.
        let mut guard = Guard { inner: inner.clone(), finished: false };
        tokio::time::sleep(first_delay).await;
        guard.finished = true;
        let content: String =
            chunks.iter().filter_map(|c| if let Chunk::Content(t) = c { Some(t.as_str()) } else { None }).collect();
        let reasoning: String =
            chunks.iter().filter_map(|c| if let Chunk::Reasoning(t) = c { Some(t.as_str()) } else { None }).collect();
        let mut message = json!({"role": "assistant", "content": content});
        if !reasoning.is_empty() {
            message["reasoning_content"] = json!(reasoning);
        }
        // The deltas merged into whole calls, as OpenAI answers them unstreamed.
        let mut calls: Vec<Value> = Vec::new();
        for piece in
            chunks.iter().filter_map(|c| if let Chunk::ToolCalls(Value::Array(a)) = c { Some(a) } else { None })
        {
            for d in piece {
                let i = d["index"].as_u64().unwrap_or(0) as usize;
                if calls.len() <= i {
                    calls.resize(i + 1, json!({"function": {"arguments": ""}}));
                }
                let call = &mut calls[i];
                for k in ["id", "type"] {
                    if let Some(v) = d.get(k) {
                        call[k] = v.clone();
                    }
                }
                if let Some(n) = d["function"].get("name") {
                    call["function"]["name"] = n.clone();
                }
                let args = format!(
                    "{}{}",
                    call["function"]["arguments"].as_str().unwrap_or(""),
                    d["function"]["arguments"].as_str().unwrap_or("")
                );
                call["function"]["arguments"] = json!(args);
            }
        }
        if !calls.is_empty() {
            message["content"] = Value::Null;
            message["tool_calls"] = json!(calls);
        }
        return axum::Json(json!({"id": "c1", "object": "chat.completion", "model": "fake-model", "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage_of(&chunks)})).into_response();
    }
    let mut steps: VecDeque<Step> = VecDeque::new();
    for (i, c) in chunks.iter().enumerate() {
        steps.push_back(Step::Send(chunk_json(c), if i == 0 { first_delay } else { delay }));
    }
    match tail {
        Some(t) => steps.push_back(t),
        None => {
            let fin = json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]});
            // Usage only when asked for, as OpenAI does.
            let usage = if body["stream_options"]["include_usage"] == json!(true) {
                let u =
                    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage_of(&chunks)});
                format!("data: {u}\n\n")
            } else {
                String::new()
            };
            steps.push_back(Step::Send(format!("data: {fin}\n\n{usage}data: [DONE]\n\n"), Duration::ZERO));
        }
    }
    let guard = Guard { inner: inner.clone(), finished: false };
    let s = futures_util::stream::unfold((steps, guard), |(mut steps, mut guard)| async move {
        match steps.pop_front() {
            None => {
                guard.finished = true;
                drop(guard);
                None
            }
            Some(Step::Send(text, delay)) => {
                tokio::time::sleep(delay).await;
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(text)), (steps, guard)))
            }
            Some(Step::Fail) => {
                // Let the client read what was sent: an abort resets the socket and would discard it.
                tokio::time::sleep(Duration::from_millis(100)).await;
                guard.finished = true;
                Some((Err(std::io::Error::other("cut")), (steps, guard)))
            }
            Some(Step::Hang) => {
                std::future::pending::<()>().await;
                None
            }
            Some(Step::Reset(conn)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                guard.finished = true;
                // The failed body makes the server drop the connection, which the flag turns into an RST.
                conn.0.store(true, Ordering::SeqCst);
                Some((Err(std::io::Error::other("reset")), (steps, guard)))
            }
        }
    });
    event_stream(s)
}

fn event_stream(s: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static) -> Response {
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(s)).unwrap()
}

/// A connection's reset flag: set, the connection is closed with an RST (SO_LINGER 0) when dropped.
#[derive(Clone, Default)]
pub struct Conn(Arc<std::sync::atomic::AtomicBool>);

struct ResettableListener(tokio::net::TcpListener);

struct ResettableIo {
    tcp: tokio::net::TcpStream,
    conn: Conn,
}

impl axum::serve::Listener for ResettableListener {
    type Io = ResettableIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (ResettableIo, std::net::SocketAddr) {
        loop {
            if let Ok((tcp, addr)) = self.0.accept().await {
                return (ResettableIo { tcp, conn: Conn::default() }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ResettableListener>> for Conn {
    fn connect_info(stream: axum::serve::IncomingStream<'_, ResettableListener>) -> Conn {
        stream.io().conn.clone()
    }
}

impl Drop for ResettableIo {
    fn drop(&mut self) {
        if self.conn.0.load(Ordering::SeqCst) {
            // A zero linger never blocks: the close sends an RST at once.
            #[allow(deprecated)]
            let _ = self.tcp.set_linger(Some(Duration::ZERO));
        }
    }
}

impl tokio::io::AsyncRead for ResettableIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ResettableIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The WAV the fake TTS returns for `text`: 0.1 s of tone whose first samples spell the text length.
pub fn fake_wav(text: &str) -> Vec<u8> {
    let mut samples: Vec<i16> = (0..1600).map(|i| ((i as f32 / 8.0).sin() * 8000.0) as i16).collect();
    samples[0] = text.chars().count() as i16;
    astrgate::audio::wav::pcm16_to_wav(&astrgate::audio::wav::samples_to_bytes(&samples), 16_000, 1)
}

struct SpeechGuard {
    inner: Arc<Inner>,
    done: bool,
}

impl Drop for SpeechGuard {
    fn drop(&mut self) {
        if !self.done {
            self.inner.speech_abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn speech(State(inner): State<Arc<Inner>>, axum::Json(body): axum::Json<Value>) -> Response {
    let text = body["input"].as_str().unwrap_or("").to_string();
    inner.speech_inputs.lock().unwrap().push(text.clone());
    let delay = *inner.speech_delay.lock().unwrap();
    let padding = inner.speech_padding.load(Ordering::SeqCst);
    // Headers at once, audio after the delay: a client that gives up drops the body stream,
    // which the guard counts.
    let guard = SpeechGuard { inner: inner.clone(), done: false };
    let s = futures_util::stream::unfold(Some((guard, text)), move |st| async move {
        let (mut guard, text) = st?;
        tokio::time::sleep(delay).await;
        guard.done = true;
        drop(guard);
        let wav = if padding == 0 {
            fake_wav(&text)
        } else {
            let wav = astrgate::audio::wav::parse(&fake_wav(&text)).unwrap();
            let mut pcm = astrgate::audio::wav::samples_to_bytes(&wav.samples);
            pcm.resize(pcm.len() + padding, 0);
            astrgate::audio::wav::pcm16_to_wav(&pcm, 16_000, 1)
        };
        Some((Ok::<Bytes, std::io::Error>(Bytes::from(wav)), None))
    });
    Response::builder().header("content-type", "audio/wav").body(Body::from_stream(s)).unwrap()
}

async fn transcriptions(State(inner): State<Arc<Inner>>, mut mp: axum::extract::Multipart) -> Response {
    let mut size = 0;
    let mut model = String::new();
    while let Ok(Some(f)) = mp.next_field().await {
        match f.name() {
            Some("file") => size = f.bytes().await.map(|b| b.len()).unwrap_or(0),
            Some("model") => model = f.text().await.unwrap_or_default(),
            _ => {}
        }
    }
    assert!(!model.is_empty(), "the model field is sent");
    inner.transcribed.lock().unwrap().push(size);
    let text = inner.transcript.lock().unwrap().clone().unwrap_or_else(|| "hello from the fake stt".into());
    axum::Json(json!({"text": text})).into_response()
}
