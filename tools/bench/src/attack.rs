//! Unauthenticated attacks from the outside audit, measured: a flood of wrong logins from many
//! loopback addresses, and hundreds of connections that never send a byte. For each: what the
//! server's RSS did, how long `/healthz` took meanwhile, and how the server got rid of them.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::stats::{Samples, rss_kib};

pub struct LoginFlood {
    pub logins: usize,
    pub addresses: usize,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_after_kib: u64,
    pub unauthorized: usize,
    pub limited: usize,
    pub health: Samples,
    pub elapsed: Duration,
}

pub struct SilentConns {
    pub n: usize,
    pub all_closed_after: Duration,
    pub health: Samples,
}

fn client_from(ip: IpAddr) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(60)).build()?)
}

/// Polls `/healthz` from its own address every 20 ms until `done`, recording each latency.
async fn probe_health(base: String, done: tokio_util::sync::CancellationToken) -> anyhow::Result<Samples> {
    let http = client_from(IpAddr::from([127, 0, 2, 1]))?;
    let mut s = Samples::default();
    while !done.is_cancelled() {
        let t = Instant::now();
        let res = http.get(format!("{base}/healthz")).send().await?;
        anyhow::ensure!(res.status().is_success(), "/healthz answered {}", res.status());
        s.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(s)
}

/// `logins` wrong logins at once, spread over `addresses` loopback addresses.
pub async fn login_flood(base: &str, pid: u32, logins: usize, addresses: usize) -> anyhow::Result<LoginFlood> {
    let rss_before_kib = rss_kib(pid)?;
    let done = tokio_util::sync::CancellationToken::new();
    let health = tokio::spawn(probe_health(base.to_string(), done.clone()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..logins {
        let a = i % addresses;
        let ip = IpAddr::from([127, 0, 1 + (a / 250) as u8, 1 + (a % 250) as u8]);
        let http = client_from(ip)?;
        let url = format!("{base}/api/auth/login");
        tasks.spawn(async move {
            let body = serde_json::json!({"username": "astrgate", "password": "not the password"});
            http.post(url).json(&body).send().await.map(|r| r.status().as_u16())
        });
    }
    let (mut unauthorized, mut limited, mut peak) = (0, 0, rss_before_kib);
    loop {
        peak = peak.max(rss_kib(pid)?);
        tokio::select! {
            r = tasks.join_next() => match r {
                None => break,
                Some(r) => match r?? {
                    401 => unauthorized += 1,
                    429 => limited += 1,
                    other => anyhow::bail!("a wrong login answered {other}"),
                },
            },
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    let elapsed = started.elapsed();
    done.cancel();
    let health = health.await??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(LoginFlood {
        logins,
        addresses,
        rss_before_kib,
        rss_peak_kib: peak,
        rss_after_kib: rss_kib(pid)?,
        unauthorized,
        limited,
        health,
        elapsed,
    })
}

/// `n` TCP connections that never send a byte: how long until the server has closed them all,
/// and `/healthz` meanwhile.
pub async fn silent_connections(base: &str, addr: &str, n: usize) -> anyhow::Result<SilentConns> {
    use tokio::io::AsyncReadExt;
    let done = tokio_util::sync::CancellationToken::new();
    let health = tokio::spawn(probe_health(base.to_string(), done.clone()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        tasks.spawn(async move {
            let mut buf = [0u8; 64];
            // Ends at EOF or reset: the server closed it.
            while let Ok(k) = s.read(&mut buf).await {
                if k == 0 {
                    break;
                }
            }
            Instant::now()
        });
    }
    let mut last = started;
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = tasks.join_next().await {
            last = last.max(r?);
        }
        anyhow::Ok(())
    })
    .await;
    done.cancel();
    anyhow::ensure!(all.is_ok(), "silent connections were still open after 120 s");
    Ok(SilentConns { n, all_closed_after: last - started, health: health.await?? })
}
