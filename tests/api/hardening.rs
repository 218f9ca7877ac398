//! Regression tests for the outside audit (issue 11): each drives the running app over real
//! TCP/HTTP/WebSocket with the attack that broke it.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// This process's resident set in KiB (nextest runs every test in a process of its own).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A client whose connections come from `ip` (any 127.x.y.z is loopback on Linux).
fn client_from(ip: IpAddr) -> reqwest::Client {
    astrgate::util::install_crypto_provider();
    reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(30)).build().unwrap()
}

/// Waits until the server closes `s` (EOF or reset); panics after `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept a silent connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
        }
    }
}

#[tokio::test]
async fn a_login_flood_from_many_addresses_keeps_memory_bounded_and_health_answering() {
    let app = spawn_with(|c| c.dashboard.login_failure_delay_ms = 50).await;
    // Warm up: one verification sizes the verifier's memory.
    let (s, _) = send(app.http.post(app.url("/api/auth/login")).json(&json!({"username": "x", "password": "y"}))).await;
    assert_eq!(s, 401);
    let before = rss_kib();

    let mut flood = tokio::task::JoinSet::new();
    for i in 0..150u8 {
        let c = client_from(IpAddr::from([127, 0, 1, i + 1]));
        for _ in 0..2 {
            let (c, url) = (c.clone(), app.url("/api/auth/login"));
            flood.spawn(async move {
                let res = c.post(url).json(&json!({"username": "astrgate", "password": "wrong"})).send().await.unwrap();
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                (status, body)
            });
        }
    }
    // /healthz keeps answering from another address while the flood runs.
    let health = client_from(IpAddr::from([127, 0, 2, 1]));
    let mut health_ok = 0;
    while !flood.is_empty() && health_ok < 50 {
        let (s, b) = send(health.get(app.url("/healthz"))).await;
        assert_eq!(s, 200, "{b}");
        health_ok += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut unauthorized = 0;
    let mut limited = 0;
    while let Some(r) = flood.join_next().await {
        let (status, body) = r.unwrap();
        match status {
            401 => unauthorized += 1,
            429 => {
                assert_eq!(body["message"], "验证尝试过于频繁，系统可能正在遭受暴力破解");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 256, "RSS grew by {grown_mib} MiB under the login flood");
    // The global failure budget (30) let only a few guesses through, whatever the addresses.
    assert!(unauthorized <= 40, "{unauthorized} guesses were checked");
    assert_eq!(unauthorized + limited, 300);
    assert!(health_ok > 0);
}

#[tokio::test]
async fn silent_and_slow_connections_are_closed_while_health_answers() {
    astrgate::server::raise_fd_limit();
    let app = spawn_with(|c| {
        c.server.header_read_timeout_secs = 2;
        c.server.max_connections_per_ip = 400;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // A slow-loris client: a header line every 300 ms never completes the head in time.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let dribble = tokio::spawn(async move {
        for i in 0..100 {
            if slow.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    });
    let health = client_from(IpAddr::from([127, 0, 0, 2]));
    let (s, b) = send(health.get(app.url("/healthz"))).await;
    assert_eq!(s, 200, "{b}");
    // The first 400 wait for the header timeout, the other 100 are over the per-address cap
    // and closed at once: all of them end.
    for s in &mut silent {
        closed_by_server(s, Duration::from_secs(60)).await;
    }
    assert!(dribble.await.unwrap(), "the slow-loris connection was never closed");
    let (s, _) = send(health.get(app.url("/healthz"))).await;
    assert_eq!(s, 200);
    drop(health);
    let counter = app.state.connections.clone();
    eventually(|| {
        let open = counter.open();
        async move { (open == 0).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_stalled_request_body_times_out() {
    let app = spawn_with(|c| c.server.request_body_timeout_secs = 1).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await
    .expect("the server waited for ever on a stalled body");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}
