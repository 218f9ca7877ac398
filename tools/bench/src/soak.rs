//! The soak: for a fixed time, a running astrgate gets a steady mix of work — long-lived SSE chats,
//! socket churn, uploads and downloads, OpenAI-door completions — while its RSS is sampled. Every
//! outcome is checked; failures are counted by kind. The verdict (RSS flat after the warm-up, no
//! error) is computed in [`crate::soak_report`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::soak_report::{Report, Sample};
use crate::stats::rss_kib;

/// What to run, and for how long.
pub struct Options {
    pub astrgate: String,
    pub key: String,
    pub pid: u32,
    pub duration: Duration,
    pub warmup: Duration,
    pub sample_every: Duration,
    /// SSE chats in flight at all times.
    pub chats: usize,
    /// Turns a chat worker sends in one session before it starts a new one.
    pub turns_per_session: usize,
    /// Socket-churn workers (each opens, uses and closes one socket at a time).
    pub churn: usize,
    pub churn_pause: Duration,
    pub uploaders: usize,
    pub upload_pause: Duration,
    pub openai_pause: Duration,
    /// After the load, the server is sampled until its open file descriptors are back near the
    /// idle level, for at most this long. astrgate closes idle upstream connections after 90 s,
    /// checked on a timer of that period, so that can take up to three minutes.
    pub settle: Duration,
    /// Largest upload, in bytes (the smallest is 4 KiB).
    pub max_upload: usize,
}

/// How long any one operation may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// Full error texts printed per kind (the rest are only counted).
const PRINT_PER_KIND: u64 = 3;

/// Successes by operation and failures by operation and reason.
#[derive(Default)]
pub struct Tally {
    ok: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    pub chats_done: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

impl Tally {
    fn ok(&self, op: &'static str) {
        *self.ok.lock().unwrap().entry(op).or_default() += 1;
    }
    fn fail(&self, op: &'static str, e: &Failure) {
        let n = {
            let mut m = self.errors.lock().unwrap();
            let n = m.entry(format!("{op}: {}", e.kind)).or_default();
            *n += 1;
            *n
        };
        if n <= PRINT_PER_KIND {
            eprintln!("soak: {op} failed: {} ({})", e.kind, e.detail);
        }
    }
    pub fn ok_counts(&self) -> BTreeMap<&'static str, u64> {
        self.ok.lock().unwrap().clone()
    }
    pub fn error_counts(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap().clone()
    }
    pub fn errors_total(&self) -> u64 {
        self.errors.lock().unwrap().values().sum()
    }
}

/// A failed operation: a stable `kind` to count by, and the full text for the log.
pub struct Failure {
    kind: String,
    detail: String,
}

fn fail(kind: impl Into<String>) -> Failure {
    let kind = kind.into();
    Failure { detail: kind.clone(), kind }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connect failed"
        } else if e.is_body() || e.is_decode() {
            "body broke off"
        } else {
            "request failed"
        };
        Failure { kind: kind.into(), detail: format!("{e:#}") }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Failure {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as E;
        let kind = match &e {
            E::Http(r) => format!("upgrade refused (HTTP {})", r.status()),
            E::Io(_) => "socket I/O error".into(),
            E::ConnectionClosed | E::AlreadyClosed => "socket closed".into(),
            E::Protocol(_) => "WebSocket protocol error".into(),
            _ => "WebSocket error".into(),
        };
        Failure { kind, detail: e.to_string() }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure { kind: format!("I/O error ({:?})", e.kind()), detail: e.to_string() }
    }
}

/// `f`, failed when it takes longer than [`OP_TIMEOUT`].
async fn bounded<T>(f: impl std::future::Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(fail(format!("no answer within {} s", OP_TIMEOUT.as_secs()))))
}

/// Runs `f` under [`OP_TIMEOUT`] and tallies its outcome as `op`.
async fn checked(tally: &Tally, op: &'static str, f: impl std::future::Future<Output = Result<(), Failure>>) {
    match bounded(f).await {
        Ok(()) => tally.ok(op),
        Err(e) => tally.fail(op, &e),
    }
}

fn status_ok(res: &reqwest::Response) -> Result<(), Failure> {
    if res.status().is_success() { Ok(()) } else { Err(fail(format!("HTTP {}", res.status().as_u16()))) }
}

/// The event types of one AstrBot chat stream (SSE or socket frames), checked at the end: a
/// session id, content, `complete`, then `end`, and no `error`.
#[derive(Default)]
struct ChatCheck {
    session_id: Option<String>,
    plain: usize,
    complete: bool,
    end: bool,
    error: Option<String>,
}

impl ChatCheck {
    fn event(&mut self, v: &Value) {
        match v["type"].as_str().unwrap_or("") {
            "session_id" => self.session_id = v["session_id"].as_str().map(str::to_string),
            "plain" => self.plain += 1,
            "complete" => self.complete = true,
            "end" => self.end = true,
            "error" => {
                self.error.get_or_insert_with(|| v["code"].as_str().unwrap_or("no code").to_string());
            }
            _ => {}
        }
    }
    fn verdict(self) -> Result<String, Failure> {
        if let Some(code) = self.error {
            return Err(fail(format!("error event {code}")));
        }
        if !self.end {
            return Err(fail("no end event"));
        }
        if !self.complete {
            return Err(fail("no complete event"));
        }
        if self.plain == 0 {
            return Err(fail("no content"));
        }
        self.session_id.ok_or_else(|| fail("no session_id event"))
    }
}

/// Reads an SSE body to its end, handing every `data:` payload to `on_data`.
async fn read_sse(mut res: reqwest::Response, mut on_data: impl FnMut(&str)) -> Result<(), Failure> {
    let mut buf = Vec::<u8>::new();
    while let Some(chunk) = res.chunk().await? {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                on_data(data.trim_start());
            }
        }
    }
    Ok(())
}

/// One `POST /api/v1/chat` turn, read to `end`; returns the session id.
async fn sse_chat(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    user: &str,
    session: Option<&str>,
) -> Result<String, Failure> {
    let mut body = json!({"username": user, "message": "Hello, how are you today?"});
    if let Some(s) = session {
        body["session_id"] = json!(s);
    }
    let res = http.post(format!("{base}/api/v1/chat")).bearer_auth(key).json(&body).send().await?;
    status_ok(&res)?;
    let mut check = ChatCheck::default();
    let mut unreadable = false;
    read_sse(res, |d| match serde_json::from_str::<Value>(d) {
        Ok(v) => check.event(&v),
        Err(_) => unreadable = true,
    })
    .await?;
    if unreadable {
        return Err(fail("unreadable event"));
    }
    let sid = check.verdict()?;
    if session.is_some_and(|s| s != sid) {
        return Err(fail("answered in another session"));
    }
    Ok(sid)
}

async fn chat_worker(opts: Arc<Options>, tally: Arc<Tally>, http: reqwest::Client, i: usize, deadline: Instant) {
    // Spread the first requests over a few seconds so the workers do not move in lockstep.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..5000))).await;
    let user = format!("soak-{i}");
    let mut session: Option<String> = None;
    let mut turns = 0;
    while Instant::now() < deadline {
        let (op, reuse) = match &session {
            Some(s) if turns < opts.turns_per_session => ("SSE chat, reused session", Some(s.clone())),
            _ => ("SSE chat, new session", None),
        };
        match bounded(sse_chat(&http, &opts.astrgate, &opts.key, &user, reuse.as_deref())).await {
            Ok(sid) => {
                tally.ok(op);
                tally.chats_done.fetch_add(1, Ordering::Relaxed);
                turns = if reuse.is_some() { turns + 1 } else { 1 };
                session = Some(sid);
            }
            Err(e) => {
                tally.fail(op, &e);
                session = None;
                // Do not spin on a failing server.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_open(base: &str, key: &str, user: &str) -> Result<Ws, Failure> {
    let url = format!("{}/api/v1/chat/ws?api_key={key}&username={user}", base.replacen("http", "ws", 1));
    Ok(tokio_tungstenite::connect_async_with_config(url, None, true).await?.0)
}

/// Closes a socket the polite way: a close frame, then everything up to the server's close.
async fn ws_close(mut ws: Ws) -> Result<(), Failure> {
    ws.close(None).await?;
    while let Some(m) = ws.next().await {
        match m {
            Ok(_) => {}
            Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn next_json(ws: &mut Ws) -> Result<Value, Failure> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).map_err(|_| fail("unreadable frame")),
            Some(Ok(Message::Close(_))) | None => return Err(fail("socket closed by the server")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Opens `/api/v1/chat/ws`, sends one turn, reads it to `end`, closes; returns the session id.
async fn ws_chat(base: &str, key: &str, user: &str, session: Option<&str>) -> Result<String, Failure> {
    let mut ws = ws_open(base, key, user).await?;
    let mut send = json!({"t": "send", "username": user, "message": "Hello over a socket", "message_id": "m1"});
    if let Some(s) = session {
        send["session_id"] = json!(s);
    }
    ws.send(Message::Text(send.to_string().into())).await?;
    let mut check = ChatCheck::default();
    loop {
        let v = next_json(&mut ws).await?;
        check.event(&v);
        if v["type"] == "end" || v["type"] == "error" {
            break;
        }
    }
    ws_close(ws).await?;
    check.verdict()
}

/// Opens `/api/v1/chat/ws`, checks a ping is answered, closes.
async fn ws_ping(base: &str, key: &str, user: &str) -> Result<(), Failure> {
    let mut ws = ws_open(base, key, user).await?;
    ws.send(Message::Text(json!({"t": "ping"}).to_string().into())).await?;
    let v = next_json(&mut ws).await?;
    if v["type"] != "pong" {
        return Err(fail("no pong"));
    }
    ws_close(ws).await
}

/// A TCP connection opened and closed without a byte sent.
async fn tcp_touch(host: &str) -> Result<(), Failure> {
    drop(tokio::net::TcpStream::connect(host).await?);
    Ok(())
}

/// `GET /healthz` on a connection of its own, closed after the answer.
async fn fresh_health(base: &str) -> Result<(), Failure> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).http1_only().build()?;
    let res = http.get(format!("{base}/healthz")).header("connection", "close").send().await?;
    status_ok(&res)?;
    res.bytes().await?;
    Ok(())
}

async fn churn_worker(opts: Arc<Options>, tally: Arc<Tally>, i: usize, deadline: Instant) {
    let user = format!("soak-ws-{i}");
    let host = opts.astrgate.trim_start_matches("http://").to_string();
    let mut session: Option<String> = None;
    let mut turns = 0;
    let mut n = i;
    while Instant::now() < deadline {
        let base = &opts.astrgate;
        match n % 4 {
            0 => {
                let reuse = session.clone().filter(|_| turns < opts.turns_per_session);
                match bounded(ws_chat(base, &opts.key, &user, reuse.as_deref())).await {
                    Ok(sid) => {
                        tally.ok("WebSocket chat turn (open, send, read to end, close)");
                        tally.chats_done.fetch_add(1, Ordering::Relaxed);
                        turns = if reuse.is_some() { turns + 1 } else { 1 };
                        session = Some(sid);
                    }
                    Err(e) => {
                        tally.fail("WebSocket chat turn (open, send, read to end, close)", &e);
                        session = None;
                    }
                }
            }
            1 => checked(&tally, "WebSocket open, ping, close", ws_ping(base, &opts.key, &user)).await,
            2 => checked(&tally, "TCP connect and close, no request", tcp_touch(&host)).await,
            _ => checked(&tally, "GET /healthz on a new connection", fresh_health(base)).await,
        }
        n += 1;
        tokio::time::sleep(opts.churn_pause).await;
    }
}

/// Uploads `body` as a multipart `file`; returns the attachment id.
async fn upload(http: &reqwest::Client, base: &str, key: &str, body: Vec<u8>) -> Result<String, Failure> {
    let size = body.len();
    let part = reqwest::multipart::Part::bytes(body).file_name("soak.bin").mime_str("application/octet-stream")?;
    let form = reqwest::multipart::Form::new().part("file", part);
    let res = http.post(format!("{base}/api/v1/file")).bearer_auth(key).multipart(form).send().await?;
    status_ok(&res)?;
    let v: Value = res.json().await?;
    if v["data"]["size"].as_u64() != Some(size as u64) {
        return Err(fail("stored size differs"));
    }
    v["data"]["attachment_id"].as_str().map(str::to_string).ok_or_else(|| fail("no attachment_id"))
}

async fn download(http: &reqwest::Client, base: &str, key: &str, id: &str, want: &[u8]) -> Result<u64, Failure> {
    // Attachment ids are uuids: nothing to escape.
    let res = http.get(format!("{base}/api/v1/file?attachment_id={id}")).bearer_auth(key).send().await?;
    status_ok(&res)?;
    let got = res.bytes().await?;
    if got != want {
        return Err(fail("downloaded bytes differ"));
    }
    Ok(got.len() as u64)
}

async fn upload_worker(opts: Arc<Options>, tally: Arc<Tally>, http: reqwest::Client, deadline: Instant) {
    let mut n = 0u64;
    while Instant::now() < deadline {
        // Log-uniform between 4 KiB and `max_upload`: mostly small files, some large ones.
        let (lo, hi) = (4096f64.ln(), (opts.max_upload.max(4096) as f64).ln());
        let size = (lo + fastrand::f64() * (hi - lo)).exp() as usize;
        let mut body = vec![0u8; size];
        fastrand::fill(&mut body);
        match bounded(upload(&http, &opts.astrgate, &opts.key, body.clone())).await {
            Ok(id) => {
                tally.ok("upload (POST /api/v1/file, 4 KiB to max)");
                tally.bytes_up.fetch_add(size as u64, Ordering::Relaxed);
                // Every other upload is downloaded again and compared.
                if n.is_multiple_of(2) {
                    checked(&tally, "download (GET /api/v1/file), bytes compared", async {
                        let got = download(&http, &opts.astrgate, &opts.key, &id, &body).await?;
                        tally.bytes_down.fetch_add(got, Ordering::Relaxed);
                        Ok(())
                    })
                    .await;
                }
            }
            Err(e) => tally.fail("upload (POST /api/v1/file, 4 KiB to max)", &e),
        }
        n += 1;
        tokio::time::sleep(opts.upload_pause).await;
    }
}

/// `/v1/chat/completions`, streamed (to `[DONE]`, with content) or whole.
async fn openai(http: &reqwest::Client, base: &str, key: &str, stream: bool) -> Result<(), Failure> {
    let body = json!({"model": "default", "stream": stream, "messages": [{"role": "user", "content": "Hello"}]});
    let res = http.post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(&body).send().await?;
    status_ok(&res)?;
    if !stream {
        let v: Value = res.json().await?;
        return match v["choices"][0]["message"]["content"].as_str() {
            Some(c) if !c.is_empty() => Ok(()),
            _ => Err(fail("no content")),
        };
    }
    let (mut content, mut done, mut bad) = (false, false, false);
    read_sse(res, |d| {
        if d == "[DONE]" {
            done = true;
        } else {
            match serde_json::from_str::<Value>(d) {
                Ok(v) if v.get("error").is_some() => bad = true,
                Ok(v) => content |= v["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()),
                Err(_) => bad = true,
            }
        }
    })
    .await?;
    match (bad, content, done) {
        (true, ..) => Err(fail("error or unreadable chunk")),
        (_, false, _) => Err(fail("no content")),
        (_, _, false) => Err(fail("no [DONE]")),
        _ => Ok(()),
    }
}

async fn openai_worker(opts: Arc<Options>, tally: Arc<Tally>, http: reqwest::Client, deadline: Instant) {
    let mut stream = true;
    while Instant::now() < deadline {
        let op = if stream { "POST /v1/chat/completions, streamed" } else { "POST /v1/chat/completions, whole" };
        checked(&tally, op, openai(&http, &opts.astrgate, &opts.key, stream)).await;
        stream = !stream;
        tokio::time::sleep(opts.openai_pause).await;
    }
}

fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

fn sample(pid: u32, start: Instant, tally: &Tally) -> anyhow::Result<Sample> {
    Ok(Sample {
        at: start.elapsed(),
        rss_kib: rss_kib(pid)?,
        fds: fd_count(pid),
        chats: tally.chats_done.load(Ordering::Relaxed),
        errors: tally.errors_total(),
    })
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let opts = Arc::new(opts);
    let tally = Arc::new(Tally::default());
    astrgate::util::install_crypto_provider();
    let long = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.chats * 2)
        .tcp_nodelay(true)
        .http1_only()
        .timeout(OP_TIMEOUT)
        .build()?;
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut samples = vec![sample(opts.pid, start, &tally)?];
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..opts.chats {
        workers.spawn(chat_worker(opts.clone(), tally.clone(), long.clone(), i, deadline));
    }
    for i in 0..opts.churn {
        workers.spawn(churn_worker(opts.clone(), tally.clone(), i, deadline));
    }
    for _ in 0..opts.uploaders {
        workers.spawn(upload_worker(opts.clone(), tally.clone(), long.clone(), deadline));
    }
    workers.spawn(openai_worker(opts.clone(), tally.clone(), long.clone(), deadline));

    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + opts.sample_every, opts.sample_every);
    eprintln!("soak: {} s; RSS every {} s", opts.duration.as_secs(), opts.sample_every.as_secs());
    loop {
        tick.tick().await;
        let s = sample(opts.pid, start, &tally)?;
        eprintln!(
            "soak: t = {:>4} s  RSS {:>7.1} MiB  fds {:>5}  chats {:>8}  errors {}",
            s.at.as_secs(),
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.chats,
            s.errors
        );
        samples.push(s);
        if Instant::now() + Duration::from_millis(500) >= deadline {
            break;
        }
    }
    // Workers stop at the deadline, after the operation in hand (each bounded by OP_TIMEOUT).
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r {
            anyhow::bail!("a soak worker panicked: {e}");
        }
    }
    let drained = start.elapsed();
    // What the server keeps once the load is gone and our pooled connections are closed.
    drop(long);
    eprintln!("soak: load stopped; waiting up to {} s for the connections to close", opts.settle.as_secs());
    let idle_fds = samples[0].fds;
    let settled_by = Instant::now() + opts.settle;
    let after = loop {
        tokio::time::sleep(opts.sample_every).await;
        let s = sample(opts.pid, start, &tally)?;
        eprintln!("soak: t = {:>4} s  RSS {:>7.1} MiB  fds {:>5}", s.at.as_secs(), s.rss_kib as f64 / 1024.0, s.fds);
        if crate::soak_report::fds_returned(idle_fds, s.fds) || Instant::now() >= settled_by {
            break s;
        }
    };
    Ok(Report {
        opts_duration: opts.duration,
        warmup: opts.warmup,
        drained,
        samples,
        after,
        ok: tally.ok_counts(),
        errors: tally.error_counts(),
        bytes_up: tally.bytes_up.load(Ordering::Relaxed),
        bytes_down: tally.bytes_down.load(Ordering::Relaxed),
    })
}

/// The mix, in words, for the report.
pub fn describe(o: &Options, upstream: &str) -> String {
    format!(
        "Load, all at once for the whole run: **{chats} SSE chats** in flight at all times (`POST /api/v1/chat`, each read to `end` and checked for `session_id`, content, `complete`, `end` and no `error`; each of {chats} users sends {turns} turns in one session, then starts a new one); **socket churn** from {churn} workers, each one at a time with {cp} ms between: a WebSocket to `/api/v1/chat/ws` opened, one turn sent and read to `end`, closed (sessions reused the same way); a WebSocket opened, pinged, closed; a TCP connection opened and closed without a byte; `GET /healthz` on a connection of its own; **uploads** from {up} workers with {upp} ms between: `POST /api/v1/file` multipart of 4 KiB to {max} KiB of random bytes (log-uniform sizes), every other one downloaded again with `GET /api/v1/file` and compared byte for byte; and `POST /v1/chat/completions` every {op} ms, streamed and whole in turn. Every operation has {t} s to finish. The fake upstream {upstream}.",
        chats = o.chats,
        turns = o.turns_per_session,
        churn = o.churn,
        cp = o.churn_pause.as_millis(),
        up = o.uploaders,
        upp = o.upload_pause.as_millis(),
        max = o.max_upload / 1024,
        op = o.openai_pause.as_millis(),
        t = OP_TIMEOUT.as_secs(),
    )
}
