//! `spawn_app()` and friends.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Once};

use astrgate::app::{AppState, Server};
use astrgate::config::Config;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "test-password-1";

#[allow(dead_code)]
pub struct TestApp {
    pub base: String,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// A valid dashboard JWT for the configured user.
    pub jwt: String,
    pub state: AppState,
    pub dir: Arc<TempDir>,
    /// The metrics listener's address (`[metrics] listen`), when configured.
    pub metrics: Option<SocketAddr>,
    server: Option<Server>,
}

fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            astrgate::telemetry::init(&astrgate::config::LoggingConfig {
                level: "debug".into(),
                format: "text".into(),
            });
        }
    });
}

/// The config every test starts from: temp data dir, known password, short delays.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::from_toml("").unwrap();
    c.data_dir = dir.to_path_buf();
    c.dashboard.password = Some(SecretString::from(PASSWORD));
    c.dashboard.login_failure_delay_ms = 20;
    c.server.shutdown_grace_secs = 3;
    c
}

/// A plain HTTP client (rustls needs its crypto provider installed first).
pub fn client() -> reqwest::Client {
    astrgate::util::install_crypto_provider();
    reqwest::Client::new()
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// Starts the app with extra TOML (providers, profiles…) on top of the test defaults.
pub async fn spawn_toml(toml: &str) -> TestApp {
    let extra = Config::from_toml(toml).unwrap();
    spawn_with(move |c| {
        let (data_dir, dashboard, server) = (c.data_dir.clone(), c.dashboard.clone(), c.server.clone());
        *c = extra;
        c.data_dir = data_dir;
        c.dashboard = dashboard;
        c.server.shutdown_grace_secs = server.shutdown_grace_secs;
    })
    .await
}

pub async fn spawn_with(f: impl FnOnce(&mut Config)) -> TestApp {
    spawn_in(Arc::new(tempfile::tempdir().unwrap()), f).await
}

/// Starts the app on a data dir that may already hold state (restart tests).
pub async fn spawn_in(dir: Arc<TempDir>, f: impl FnOnce(&mut Config)) -> TestApp {
    init_test_log();
    let mut cfg = test_config(dir.path());
    f(&mut cfg);
    let state = AppState::build(cfg, CancellationToken::new()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(state.clone(), listener).await.unwrap();
    let (addr, metrics) = (server.addr, server.metrics_addr);
    let jwt = state.dashboard.issue(&state.dashboard.username());
    TestApp { base: format!("http://{addr}"), addr, http: client(), jwt, state, dir, metrics, server: Some(server) }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Creates an API key through the dashboard endpoint and returns the raw key.
    pub async fn key(&self, scopes: &[&str]) -> String {
        let (status, body) = send(
            self.http
                .post(self.url("/api/v1/api-keys"))
                .bearer_auth(&self.jwt)
                .json(&json!({"name": "test", "scopes": scopes})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["api_key"].as_str().unwrap().to_string()
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// Sends and returns (status, JSON body). Panics when the body is not JSON.
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts AstrBot's error envelope with this status and message.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_message: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body, &json!({"status": "error", "message": want_message, "data": null}));
}

/// One SSE frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<String>,
    #[allow(dead_code)]
    pub event: Option<String>,
    pub data: Value,
}

impl Frame {
    pub fn ty(&self) -> &str {
        self.data["type"].as_str().unwrap_or("")
    }
}

/// Reads an SSE response incrementally.
pub struct SseReader {
    pub res: reqwest::Response,
    buf: String,
    pub comments: Vec<String>,
}

impl SseReader {
    pub fn new(res: reqwest::Response) -> Self {
        Self { res, buf: String::new(), comments: Vec::new() }
    }

    /// The next frame with data; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let (mut id, mut event, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        self.comments.push(c.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap_or_else(|e| panic!("bad data {v:?}: {e}")));
                    }
                }
                if let Some(data) = data {
                    return Some(Frame { id, event, data });
                }
                continue;
            }
            match tokio::time::timeout(std::time::Duration::from_secs(20), self.res.chunk()).await.expect("SSE stalled")
            {
                Ok(Some(c)) => self.buf.push_str(std::str::from_utf8(&c).unwrap()),
                Ok(None) => return None,
                Err(e) => panic!("SSE read failed: {e}"),
            }
        }
    }

    pub async fn collect(mut self) -> Vec<Frame> {
        let mut v = Vec::new();
        while let Some(f) = self.next().await {
            v.push(f);
        }
        v
    }
}

/// POSTs to /api/v1/chat and returns the SSE reader (asserting an SSE response).
pub async fn chat(app: &TestApp, key: &str, body: Value) -> SseReader {
    let res = app.http.post(app.url("/api/v1/chat")).bearer_auth(key).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "text/event-stream; charset=utf-8");
    SseReader::new(res)
}

/// Starts `n` chats whose replies hang (the fake LLM says a word, then nothing) and waits until
/// the app counts them as active runs; they stay active while the app runs.
pub async fn hanging_chats(app: &TestApp, fake: &crate::fake_llm::FakeLlm, key: &str, n: usize) -> Vec<SseReader> {
    let mut readers = Vec::with_capacity(n);
    for i in 0..n {
        fake.push(crate::fake_llm::Reply::HangAfter(crate::fake_llm::text("thinking")));
        readers.push(chat(app, key, json!({"username": "u", "message": format!("hang {i}")})).await);
    }
    eventually(|| {
        let active = app.state.agent.runs.len();
        async move { (active == n).then_some(()) }
    })
    .await;
    readers
}

pub fn types(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.ty().to_string()).collect()
}

/// Polls until `f` returns Some, for at most 10 s.
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 10 s");
}

/// A WebSocket test client.
pub struct WsClient {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

/// Connects to `path` (with its query) on the app, with extra headers.
pub async fn ws_connect(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> WsClient {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}{}", app.addr, path).into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    WsClient { ws }
}

/// What a socket received next.
#[derive(Debug)]
pub enum WsEvent {
    Frame(Value),
    Closed(Option<(u16, String)>),
}

impl WsClient {
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        use futures_util::SinkExt;
        self.ws.send(tokio_tungstenite::tungstenite::Message::Text(s.into())).await.unwrap();
    }

    pub async fn event(&mut self) -> WsEvent {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let m =
                tokio::time::timeout(std::time::Duration::from_secs(30), self.ws.next()).await.expect("socket stalled");
            match m {
                None => return WsEvent::Closed(None),
                Some(Err(_)) => return WsEvent::Closed(None),
                Some(Ok(Message::Text(t))) => return WsEvent::Frame(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(f))) => {
                    return WsEvent::Closed(f.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next JSON frame (panics if the socket closes).
    pub async fn recv(&mut self) -> Value {
        match self.event().await {
            WsEvent::Frame(v) => v,
            WsEvent::Closed(c) => panic!("socket closed: {c:?}"),
        }
    }

    /// Frames up to and including the first one for which `done` is true.
    pub async fn until(&mut self, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.recv().await;
            let stop = done(&v);
            out.push(v);
            if stop {
                return out;
            }
        }
    }

    /// Expects an error frame followed by a close with `code` and `reason`.
    pub async fn expect_refusal(&mut self, code: u16, reason: &str) -> Value {
        let frame = self.recv().await;
        match self.event().await {
            WsEvent::Closed(Some((c, r))) => assert_eq!((c, r.as_str()), (code, reason)),
            other => panic!("expected a close, got {other:?}"),
        }
        frame
    }
}

/// A PostgreSQL database of its own for one test, dropped with it; `None` (the test prints
/// "skipped") when `TEST_POSTGRES_URL` is not set, as under a bare `cargo test`.
/// `scripts/test.sh` starts a server and always sets it.
pub struct PgDb {
    pub url: String,
    admin: String,
    name: String,
}

pub async fn fresh_postgres(test: &str) -> Option<PgDb> {
    use sqlx::Connection;
    let Ok(admin) = std::env::var("TEST_POSTGRES_URL") else {
        eprintln!("skipped: {test} needs TEST_POSTGRES_URL (scripts/test.sh sets it)");
        return None;
    };
    let name = format!("astrgate_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("TEST_POSTGRES_URL reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    let _ = conn.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin.clone());
    Some(PgDb { url: format!("{base}/{name}"), admin, name })
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Dropped from async tests: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                }
            });
        })
        .join();
    }
}

/// A TCP relay in front of Redis that a test can cut (every open connection dropped, new ones
/// refused) and restore: Redis "going down" and "coming back" for one test, without touching
/// the server the other tests share.
pub struct RedisProxy {
    pub url: String,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl RedisProxy {
    pub async fn start(target: &str) -> RedisProxy {
        let target = target.trim_start_matches("redis://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cut_rx = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        RedisProxy { url, up, cut }
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|g| *g += 1);
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Two instances of the app sharing one PostgreSQL database and one Redis (a key prefix of
/// their own), as behind a load balancer. `None` when the test servers are not configured.
pub struct Pair {
    pub a: TestApp,
    pub b: TestApp,
    pub proxy: RedisProxy,
    /// Kept so that the database lives (and is dropped) with the pair.
    pub db: PgDb,
    prefix: String,
    extra: Config,
}

pub async fn spawn_pair(test: &str, toml: &str) -> Option<Pair> {
    let Ok(redis) = std::env::var("TEST_REDIS_URL") else {
        eprintln!("skipped: {test} needs TEST_REDIS_URL (scripts/test.sh sets it)");
        return None;
    };
    let db = fresh_postgres(test).await?;
    let proxy = RedisProxy::start(&redis).await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let extra = Config::from_toml(toml).unwrap();
    let a = spawn_member(&extra, &db.url, &proxy.url, &prefix, "a").await;
    let b = spawn_member(&extra, &db.url, &proxy.url, &prefix, "b").await;
    Some(Pair { a, b, proxy, db, prefix, extra })
}

impl Pair {
    /// One more instance of the same cluster.
    pub async fn spawn_another(&self, name: &str) -> TestApp {
        spawn_member(&self.extra, &self.db.url, &self.proxy.url, &self.prefix, name).await
    }
}

/// One instance of a cluster on this database and Redis, under this key prefix.
pub async fn spawn_member(extra: &Config, db_url: &str, redis_url: &str, prefix: &str, name: &str) -> TestApp {
    let (extra, url, redis_url, prefix, name) =
        (extra.clone(), db_url.to_string(), redis_url.to_string(), prefix.to_string(), name.to_string());
    spawn_with(move |c| {
        let (data_dir, dashboard, server) = (c.data_dir.clone(), c.dashboard.clone(), c.server.clone());
        *c = extra;
        c.data_dir = data_dir;
        c.dashboard = dashboard;
        c.server.shutdown_grace_secs = server.shutdown_grace_secs;
        c.database_url = Some(url);
        c.database_max_connections = 4;
        c.redis_url = Some(redis_url);
        c.cluster.key_prefix = prefix;
        c.cluster.instance_id = Some(name);
        c.cluster.lease_ttl_secs = 3;
    })
    .await
}
