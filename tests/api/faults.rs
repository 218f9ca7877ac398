//! Fault injection (issue 17): an upstream that resets, hangs or sends garbage, a client that
//! never reads, a disk that fills during an upload, PostgreSQL and Redis restarting under a
//! cluster. Each drives the running app over real HTTP and checks the frames, the bodies and
//! the store. The whole inventory, with the older tests, is in docs/security.md ("Fault
//! injection").

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fake_llm::{Chunk, FakeLlm, Reply, tokens};
use crate::hardening::rss_kib;
use crate::helpers::*;
use crate::openai::{assert_openai_error, openai_app, post};

async fn history(app: &TestApp, key: &str, session: &str) -> Vec<Value> {
    let url = app.url(&format!("/api/v1/chat/sessions/{session}/messages?username=u"));
    let (s, b) = send(app.http.get(url).bearer_auth(key)).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["messages"].as_array().unwrap().clone()
}

/// A chat run's frames, to its end; a run that never ends fails the test (a bound for
/// liveness, not a timing).
async fn run_to_end(app: &TestApp, key: &str, body: Value) -> Vec<Frame> {
    let frames = async { chat(app, key, body).await.collect().await };
    tokio::time::timeout(Duration::from_secs(60), frames).await.expect("the run never ended")
}

/// The error event of a chat run as (code, text), and the streamed text.
fn outcome(frames: &[Frame]) -> (Option<(String, String)>, String) {
    let err = frames.iter().find(|f| f.ty() == "error").map(|f| {
        (f.data["code"].as_str().unwrap_or("").to_string(), f.data["data"].as_str().unwrap_or("").to_string())
    });
    let text = frames.iter().filter(|f| f.ty() == "plain").map(|f| f.data["data"].as_str().unwrap()).collect();
    (err, text)
}

/// A streamed OpenAI completion as (its content, its last chunk, whether `[DONE]` came).
async fn openai_stream(app: &TestApp, key: &str) -> (String, Value, bool) {
    let body = json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let lines = crate::openai::stream_lines(app, key, body).await;
    let done = lines.iter().any(|l| l == "[DONE]");
    let chunks: Vec<Value> =
        lines.iter().filter(|l| *l != "[DONE]").map(|l| serde_json::from_str(l).unwrap()).collect();
    let content = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    (content, chunks.last().cloned().unwrap_or(Value::Null), done)
}

/// Waits until the fake counted `n` abandoned upstream requests in all.
async fn abandoned(fake: &FakeLlm, n: usize) {
    eventually(|| async { (fake.abandoned() >= n).then_some(()) }).await;
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_keeps_the_partial_reply_with_the_error() {
    let (app, fake, key) = openai_app("").await;
    // The fake's reset is a real RST: a raw client reading on gets ECONNRESET, not an end of file.
    fake.push(Reply::ResetAfter(tokens(&["x"])));
    let addr = fake.base_url.trim_start_matches("http://").trim_end_matches("/v1").to_string();
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    let body = r#"{"stream":true,"messages":[]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf)).await.expect("the fake answered") {
            Ok(0) => break None,
            Ok(_) => continue,
            Err(e) => break Some(e.kind()),
        }
    };
    assert_eq!(ended, Some(std::io::ErrorKind::ConnectionReset));

    // The chat door: what came before the reset is shown and saved, with the error.
    fake.push(Reply::ResetAfter(tokens(&["Par", "tial"])));
    let frames = run_to_end(&app, &key, json!({"message": "q", "username": "u", "session_id": "rst"})).await;
    assert_eq!(
        types(&frames),
        ["session_id", "user_message_saved", "run_started", "plain", "plain", "error", "message_saved", "end"]
    );
    let (err, text) = outcome(&frames);
    assert_eq!(
        (err, text.as_str()),
        (Some(("UPSTREAM_INTERRUPTED".into(), "The model provider's stream broke off".into())), "Partial")
    );
    let run_id = frames[2].data["data"]["run_id"].as_str().unwrap().to_string();
    // The run's record is written as the run ends.
    let run =
        eventually(|| async { app.state.store.get_run(&run_id).await.unwrap().filter(|r| r.status != "running") })
            .await;
    assert_eq!(run.status, "error");
    let h = history(&app, &key, "rst").await;
    assert_eq!(h[1]["content"]["message"][0]["text"], "Partial");
    assert_eq!(h[1]["content"]["error"], "The model provider's stream broke off");
    // The session is free at once.
    let frames = run_to_end(&app, &key, json!({"message": "again", "username": "u", "session_id": "rst"})).await;
    assert_eq!(outcome(&frames), (None, "Echo: again".to_string()));

    // The OpenAI door: the partial content, then an error chunk and no [DONE] (docs/api/openai.md).
    fake.push(Reply::ResetAfter(tokens(&["Half ", "an "])));
    let (content, last, done) = openai_stream(&app, &key).await;
    assert_eq!(content, "Half an ");
    assert!(!done);
    assert_eq!(
        last["error"],
        json!({"message": "The model provider's stream broke off", "type": "server_error", "param": null, "code": "upstream_error"})
    );
    eventually(|| async { (app.state.agent.runs.stateless() == 0).then_some(()) }).await;
}

/// A provider `fake` that must answer within 1 s and never pause for 1 s, and a default profile.
async fn impatient() -> (TestApp, FakeLlm, String) {
    let fake = FakeLlm::start().await;
    let toml = format!(
        "[[providers]]\nid = \"fake\"\nbase_url = \"{}\"\nmodel = \"m\"\nfirst_token_timeout_secs = 1\nidle_timeout_secs = 1\nretries = 0\n\
         [[profiles]]\nid = \"default\"\ndefault = true\n",
        fake.base_url
    );
    let app = spawn_toml(&toml).await;
    let key = app.key(&["chat"]).await;
    (app, fake, key)
}

#[tokio::test]
async fn an_upstream_that_hangs_times_out_and_frees_the_session() {
    let (app, fake, key) = impatient().await;
    let before_first = "The model provider did not answer within 1 s";
    let mid_stream = "The model provider stalled for 1 s mid-stream";
    let cases = [
        // No headers at all; headers and then nothing; a token and then nothing.
        (Reply::Silent, before_first, ""),
        (Reply::HangAfter(vec![]), before_first, ""),
        (Reply::HangAfter(tokens(&["half ", "way"])), mid_stream, "half way"),
    ];
    for (i, (reply, message, partial)) in cases.into_iter().enumerate() {
        fake.push(reply);
        // One session for all: each run must end and free it for the next.
        let frames =
            run_to_end(&app, &key, json!({"message": format!("q{i}"), "username": "u", "session_id": "hang"})).await;
        assert_eq!(outcome(&frames), (Some(("UPSTREAM_TIMEOUT".into(), message.into())), partial.to_string()), "{i}");
        assert_eq!(types(&frames).last().map(String::as_str), Some("end"));
        abandoned(&fake, i + 1).await;
        // Saved with the error; with no text at all the error is the text (history shows no empty reply).
        let h = history(&app, &key, "hang").await;
        let reply = &h[2 * i + 1]["content"];
        let shown = if partial.is_empty() { message } else { partial };
        assert_eq!((reply["error"].as_str(), reply["message"][0]["text"].as_str()), (Some(message), Some(shown)));
    }
    let frames = run_to_end(&app, &key, json!({"message": "ok?", "username": "u", "session_id": "hang"})).await;
    assert_eq!(outcome(&frames), (None, "Echo: ok?".to_string()));
    eventually(|| async { app.state.agent.runs.is_empty().then_some(()) }).await;

    // The OpenAI door: a whole answer that never comes is a 502 upstream_timeout; a stream that
    // stalls ends with an error chunk.
    fake.push(Reply::Silent);
    let (s, e) = post(&app, &key, json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_openai_error(s, &e, 502, "server_error", Some("upstream_timeout"));
    assert_eq!(e["error"]["message"], before_first);
    fake.push(Reply::HangAfter(tokens(&["half "])));
    let (content, last, done) = openai_stream(&app, &key).await;
    assert_eq!((content.as_str(), done), ("half ", false));
    assert_eq!(
        (last["error"]["code"].as_str(), last["error"]["message"].as_str()),
        (Some("upstream_timeout"), Some(mid_stream))
    );
    abandoned(&fake, 5).await;
    eventually(|| async { (app.state.agent.runs.stateless() == 0).then_some(()) }).await;
}

#[tokio::test]
async fn garbage_from_the_upstream_is_a_protocol_error_with_bounded_memory() {
    let (app, fake, key) = openai_app("").await;
    let unreadable = "The model provider sent an unreadable answer";
    let ok = |t: &str| format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": t}}]}));
    let mut binary = ok("fine ").into_bytes();
    binary.extend_from_slice(b"data: \xff\xfe\x00\x9f junk\n\n");
    let mut line = b"data: ".to_vec();
    line.extend(std::iter::repeat_n(b'a', 1024));
    line.push(b'\n');
    let cases: Vec<(&str, Reply, &str)> = vec![
        ("not JSON", Reply::Garbage(b"data: this is not json\n\n".to_vec()), ""),
        ("binary junk", Reply::Garbage(binary.clone()), "fine "),
        ("choices not a list", Reply::Garbage(b"data: {\"choices\": \"nope\"}\n\n".to_vec()), ""),
        ("an array", Reply::Garbage(b"data: [1, 2, 3]\n\n".to_vec()), ""),
        (
            "content a number",
            Reply::Garbage(
                format!("{}data: {{\"choices\":[{{\"delta\":{{\"content\":42}}}}]}}\n\n", ok("one ")).into_bytes(),
            ),
            "one ",
        ),
        // Endless: one line that never ends, and one event whose data lines never end.
        ("an endless line", Reply::Endless(vec![b'a'; 64 * 1024]), ""),
        ("an endless event", Reply::Endless(line.repeat(64)), ""),
    ];
    let before = rss_kib();
    let mut peak = before;
    for (i, (what, reply, partial)) in cases.into_iter().enumerate() {
        fake.push(reply);
        let frames = run_to_end(&app, &key, json!({"message": "q", "username": "u", "session_id": "junk"})).await;
        peak = peak.max(rss_kib());
        assert_eq!(
            outcome(&frames),
            (Some(("UPSTREAM_PROTOCOL".into(), unreadable.into())), partial.to_string()),
            "{what}"
        );
        assert_eq!(types(&frames).last().map(String::as_str), Some("end"), "{what}");
        let h = history(&app, &key, "junk").await;
        assert_eq!(h[2 * i + 1]["content"]["error"], unreadable, "{what}");
    }
    // The endless ones were dropped, not read to their (absent) end.
    abandoned(&fake, 2).await;
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "reading endless garbage grew RSS by {grown_mib} MiB");
    eventually(|| async { app.state.agent.runs.is_empty().then_some(()) }).await;

    // Endless events that each parse but say nothing are no progress: the first-token timeout ends them.
    let (app, fake, key) = impatient().await;
    for junk in [&b"data: {}\n\n"[..], b"data:\n\n", b": keep-alive\n\n"] {
        fake.push(Reply::Endless(junk.to_vec()));
        let frames = run_to_end(&app, &key, json!({"message": "q", "username": "u", "session_id": "empty"})).await;
        let want =
            (Some(("UPSTREAM_TIMEOUT".into(), "The model provider did not answer within 1 s".into())), String::new());
        assert_eq!(outcome(&frames), want, "{}", String::from_utf8_lossy(junk));
    }
    abandoned(&fake, 3).await;

    // The OpenAI door: a whole answer that is not JSON is a 502; a stream ends with an error chunk.
    let (app, fake, key) = openai_app("").await;
    fake.push(Reply::Garbage(b"data: this is not json\n\n".to_vec()));
    let (s, e) = post(&app, &key, json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_openai_error(s, &e, 502, "server_error", Some("upstream_error"));
    for (reply, partial) in [(Reply::Garbage(binary.clone()), "fine "), (Reply::Endless(vec![b'a'; 64 * 1024]), "")] {
        fake.push(reply);
        let (content, last, done) = openai_stream(&app, &key).await;
        assert_eq!((content.as_str(), done), (partial, false));
        let e = &last["error"];
        assert_eq!((e["code"].as_str(), e["message"].as_str()), (Some("upstream_error"), Some(unreadable)));
    }
    eventually(|| async { (app.state.agent.runs.stateless() == 0).then_some(()) }).await;
}

/// A raw HTTP/1.1 request on a socket with a small receive buffer, whose answer is never read.
async fn never_reading(app: &TestApp, method: &str, path: &str, key: &str, body: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(app.addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn clients_that_never_read_hold_no_memory_and_the_run_completes() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    let key = app.key(&["chat"]).await;
    // Warm up (the first run sizes the store's caches).
    let frames = run_to_end(&app, &key, json!({"message": "warm", "username": "u", "session_id": "warm"})).await;
    assert_eq!(outcome(&frames).0, None);
    // 3 MiB of reply (under runs.max_log_bytes), in 64 KiB tokens.
    let piece: String = "0123456789abcdef".repeat(4096);
    let n = 48;
    fake.push(Reply::Chunks {
        chunks: (0..n).map(|_| Chunk::Content(piece.clone())).collect(),
        delay: Duration::from_millis(5),
        first_delay: Duration::ZERO,
    });
    let before = rss_kib();
    let body = json!({"message": "talk", "username": "u", "session_id": "deaf"}).to_string();
    let mut clients = vec![never_reading(&app, "POST", "/api/v1/chat", &key, &body).await];
    let run = eventually(|| async { app.state.agent.runs.active_for_session("deaf") }).await;
    let run_id = run.run_id.clone();
    drop(run);
    // Sixty-three more follow the same run and never read either.
    for _ in 0..63 {
        let path = format!("/api/v1/chat/runs/{run_id}/stream?username=u");
        clients.push(never_reading(&app, "GET", &path, &key, "").await);
    }
    let mut peak = before;
    let saved = loop {
        peak = peak.max(rss_kib());
        if let Some(r) = app.state.store.get_run(&run_id).await.unwrap()
            && r.status != "running"
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(saved.status, "done");
    let h = history(&app, &key, "deaf").await;
    let text = h[1]["content"]["message"][0]["text"].as_str().unwrap();
    assert_eq!(text.len(), piece.len() * n, "the whole reply is saved");
    // The session is free while they still hang on.
    let frames = run_to_end(&app, &key, json!({"message": "next", "username": "u", "session_id": "deaf"})).await;
    assert_eq!(outcome(&frames), (None, "Echo: next".to_string()));
    let grown_mib = peak.max(rss_kib()).saturating_sub(before) / 1024;
    eprintln!("64 clients that never read a 3 MiB reply: RSS +{grown_mib} MiB at the peak");
    // Each holds one rendered window (plus hyper's buffer), never a rendered copy of the reply:
    // with a copy per client (its `complete` frame) RSS grew by over 300 MiB here.
    assert!(grown_mib < 256, "RSS grew by {grown_mib} MiB");
    drop(clients);
}

/// The attachments under `dir`, and the attachment rows.
async fn stored_uploads(app: &TestApp, dir: &std::path::Path) -> (Vec<String>, usize) {
    let files = match std::fs::read_dir(dir.join("attachments")) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => vec![],
    };
    let rows = app.state.store.export_rows(astrgate::store::Table::Attachments, 0, 1000).await.unwrap();
    let astrgate::store::Rows::Attachments(rows) = rows else { panic!("attachment rows expected") };
    (files, rows.len())
}

#[tokio::test]
async fn a_disk_filling_during_an_upload_is_507_and_leaves_nothing() {
    let Some(disk) = crate::hardening::SmallDisk::mount("8m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data: PathBuf = disk.path.clone();
    let dir = data.clone();
    let app = spawn_with(move |c| c.data_dir = dir).await;
    let key = app.key(&["file"]).await;
    let (s, b) = crate::files::upload(&app, &key, "small.txt", "text/plain", b"before".to_vec()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(stored_uploads(&app, &data).await.1, 1);

    // About a mebibyte left: a 3 MiB upload fills the disk half way through.
    let filler = disk.fill();
    let keep = std::fs::metadata(&filler).unwrap().len() - 1024 * 1024;
    std::fs::OpenOptions::new().write(true).open(&filler).unwrap().set_len(keep).unwrap();
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (s, b) = crate::files::upload(&app, &key, "big.bin", "application/octet-stream", big.clone()).await;
    assert_error(s, &b, 507, "Not enough storage space for the upload");
    let (files, rows) = stored_uploads(&app, &data).await;
    assert_eq!((files.len(), rows), (1, 1), "no partial file, no row: {files:?}");

    // Space returns: the same upload succeeds and reads back whole.
    std::fs::remove_file(&filler).unwrap();
    let (s, b) = crate::files::upload(&app, &key, "big.bin", "application/octet-stream", big.clone()).await;
    assert_eq!(s, 200, "{b}");
    let id = b["data"]["attachment_id"].as_str().unwrap();
    let res =
        app.http.get(app.url(&format!("/api/v1/file?attachment_id={id}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap().as_ref(), &big[..]);
    app.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn run(cmd: &mut tokio::process::Command) {
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A PostgreSQL server of the test's own, so that it can be stopped and started again: initdb
/// into a temporary directory as scripts/test.sh does (as the `postgres` user when root, since
/// initdb refuses root). `None` when no PostgreSQL is installed.
struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl OwnPostgres {
    async fn start() -> Option<OwnPostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("bin/initdb").exists())
            .max_by_key(|e| e.file_name().to_string_lossy().parse::<u32>().unwrap_or(0))?
            .path()
            .join("bin");
        let as_postgres = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|u| u.split_whitespace().next() == Some("0"));
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            run(tokio::process::Command::new("chown").arg("postgres").arg(dir.path())).await;
        }
        let pg = OwnPostgres { dir, bin, port: free_port(), as_postgres };
        run(pg.cmd("initdb").arg("-D").arg(pg.data()).args([
            "-U",
            "astrgate",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))
        .await;
        pg.up().await;
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    fn cmd(&self, program: &str) -> tokio::process::Command {
        let mut c = if self.as_postgres {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            tokio::process::Command::new(self.bin.join(program))
        };
        c.stdout(std::process::Stdio::null());
        c
    }

    fn url(&self) -> String {
        format!("postgres://astrgate@127.0.0.1:{}/postgres", self.port)
    }

    async fn up(&self) {
        let opts =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("pg.log");
        run(self.cmd("pg_ctl").arg("-D").arg(self.data()).arg("-l").arg(log).args(["-w", "start", "-o", &opts])).await;
    }

    /// Stops the server the hard way (`-m immediate`: no shutdown checkpoint, like a crash).
    async fn down(&self) {
        run(self.cmd("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"])).await;
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let mut c = if self.as_postgres {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
                c
            } else {
                std::process::Command::new(self.bin.join("pg_ctl"))
            };
            let _ = c.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]).output();
        }
    }
}

/// A redis-server of the test's own on a fixed port, killed with SIGKILL and started again on
/// the same port (empty: it saves nothing). `None` when redis-server is not installed.
struct OwnRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    async fn start() -> Option<OwnRedis> {
        tokio::process::Command::new("redis-server").arg("--version").output().await.ok()?;
        let mut r = OwnRedis { port: free_port(), child: None };
        r.up().await;
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn up(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually(|| async {
            let mut s = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"+PONG\r\n").then_some(())
        })
        .await;
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    async fn get(&self, key: &str) -> Option<String> {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw", "GET", key])
            .output()
            .await
            .unwrap();
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|v| !v.is_empty())
    }
}

/// A client whose requests give up after 30 s: a request during an outage must end before.
fn patient() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

#[tokio::test]
async fn postgresql_restarting_loses_nothing_and_the_pool_reconnects() {
    let Some(pg) = OwnPostgres::start().await else {
        eprintln!("skipped: no PostgreSQL server is installed (/usr/lib/postgresql/*/bin)");
        return;
    };
    let Some(redis) = OwnRedis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let fake = FakeLlm::start().await;
    let extra = astrgate::config::Config::from_toml(&fake.provider_toml("fake")).unwrap();
    let app = spawn_member(&extra, &pg.url(), &redis.url(), "pgrestart", "a").await;
    let key = app.key(&["chat"]).await;
    for m in ["one", "two"] {
        let frames = run_to_end(&app, &key, json!({"message": m, "username": "u", "session_id": "kept"})).await;
        assert_eq!(outcome(&frames).0, None);
    }

    pg.down().await;
    // Requests during the outage fail with a clear 503 (after the pool's wait), none hangs.
    let http = patient();
    let res =
        http.get(app.url("/api/v1/chat/sessions/kept/messages?username=u")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.headers()["retry-after"], "5");
    let (s, b) = (res.status(), res.json::<Value>().await.unwrap());
    assert_error(s, &b, 503, "Database unavailable");
    let chat_now = json!({"message": "lost?", "username": "u", "session_id": "new"});
    let (s, b) = send(http.post(app.url("/api/v1/chat")).bearer_auth(&key).json(&chat_now)).await;
    assert_error(s, &b, 503, "Database unavailable");
    let (s, b) = send(http.get(app.url("/healthz"))).await;
    assert_error(s, &b, 503, "database unavailable");
    assert!(fake.requests().len() == 2, "nothing reached the model during the outage");

    // Back, without restarting astrgate: the pool reconnects, and nothing committed was lost.
    pg.up().await;
    eventually(|| async {
        let (s, _) = send(app.http.get(app.url("/healthz"))).await;
        (s == 200).then_some(())
    })
    .await;
    let frames = run_to_end(&app, &key, json!({"message": "three", "username": "u", "session_id": "kept"})).await;
    assert_eq!(outcome(&frames), (None, "Echo: three".to_string()));
    let h = history(&app, &key, "kept").await;
    let texts: Vec<&str> = h.iter().map(|m| m["content"]["message"][0]["text"].as_str().unwrap_or("")).collect();
    assert_eq!(texts, ["one", "Echo: one", "two", "Echo: two", "three", "Echo: three"]);
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions/new/messages?username=u")).bearer_auth(&key)).await;
    assert_error(s, &b, 404, "Session not found");
}

#[tokio::test]
async fn redis_restarting_keeps_leases_notices_and_data() {
    let Some(pg) = OwnPostgres::start().await else {
        eprintln!("skipped: no PostgreSQL server is installed (/usr/lib/postgresql/*/bin)");
        return;
    };
    let Some(mut redis) = OwnRedis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let fake = FakeLlm::start().await;
    let extra = astrgate::config::Config::from_toml(&fake.provider_toml("fake")).unwrap();
    let a = spawn_member(&extra, &pg.url(), &redis.url(), "rr", "a").await;
    let b = spawn_member(&extra, &pg.url(), &redis.url(), "rr", "b").await;
    let key = a.key(&["chat"]).await;
    let frames = run_to_end(&a, &key, json!({"message": "before", "username": "u", "session_id": "old"})).await;
    assert_eq!(outcome(&frames).0, None);
    // A run in flight on A holds the session's lease.
    fake.push(Reply::HangAfter(tokens(&["Hello ", "there"])));
    let mut sse = chat(&a, &key, json!({"message": "q", "username": "u", "session_id": "live"})).await;
    let mut plain = 0;
    while plain < 2 {
        if sse.next().await.unwrap().ty() == "plain" {
            plain += 1;
        }
    }
    let lease = redis.get("rr:lease:live").await.unwrap();
    assert!(lease.starts_with("a|"), "{lease}");

    // Redis dies (SIGKILL) and comes back empty on the same port.
    redis.kill().await;
    redis.up().await;
    assert_eq!(redis.get("rr:lease:live").await, None, "the restarted Redis starts empty");
    for app in [&a, &b] {
        eventually(|| async {
            let (_, h) = send(app.http.get(app.url("/healthz"))).await;
            (h["data"]["status"] == "ok" && h["data"]["redis"] == "ok").then_some(())
        })
        .await;
    }
    // A puts the lease of its run back, so B still refuses a second run of the session.
    let lease = eventually(|| async { redis.get("rr:lease:live").await }).await;
    assert!(lease.starts_with("a|") && lease.ends_with("|running"), "{lease}");
    let (s, body) = send(
        b.http
            .post(b.url("/api/v1/chat"))
            .bearer_auth(&key)
            .json(&json!({"message": "again", "username": "u", "session_id": "live"})),
    )
    .await;
    assert_error(s, &body, 409, "Session is busy");
    // Both subscribe to notices again; a stop sent to B reaches the run on A.
    eventually(|| async {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "--raw", "PUBSUB", "NUMSUB", "rr:ctl"])
            .output()
            .await
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).lines().nth(1) == Some("2")).then_some(())
    })
    .await;
    let (s, body) = send(b.http.post(b.url("/api/v1/chat/sessions/live/stop?username=u")).bearer_auth(&key)).await;
    assert_eq!((s.as_u16(), &body["data"]), (200, &json!({"stopped_count": 1})));
    let rest = sse.collect().await;
    assert_eq!(types(&rest), ["complete", "message_saved", "end"]);
    // Nothing committed was lost: both turns are in the database, read through either instance.
    for app in [&a, &b] {
        let h = history(app, &key, "old").await;
        assert_eq!(h[1]["content"]["message"][0]["text"], "Echo: before");
        let h = history(app, &key, "live").await;
        assert_eq!(
            (h[1]["content"]["message"][0]["text"].as_str(), h[1]["content"]["interrupted"].as_bool()),
            (Some("Hello there"), Some(true))
        );
    }
    // And the session is free again, on the other instance too.
    let frames = run_to_end(&b, &key, json!({"message": "after", "username": "u", "session_id": "live"})).await;
    assert_eq!(outcome(&frames), (None, "Echo: after".to_string()));
}
