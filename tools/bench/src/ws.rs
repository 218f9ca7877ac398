//! Idle WebSocket connections: open N Live sockets, hold them, and measure the server's RSS.

use std::time::Duration;

use crate::stats::rss_kib;

pub struct IdleReport {
    pub n: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
}

impl IdleReport {
    pub fn per_conn_kib(&self) -> f64 {
        (self.rss_after_kib.saturating_sub(self.rss_before_kib)) as f64 / self.n as f64
    }
}

pub async fn idle(ws_base: &str, key: &str, n: usize, pid: u32) -> anyhow::Result<IdleReport> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = rss_kib(pid)?;
    let mut conns = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for i in 0..n {
        let url = format!("{ws_base}/api/v1/live/ws?api_key={key}&username=idle{i}");
        pending.push(tokio::spawn(async move {
            tokio_tungstenite::connect_async_with_config(url, None, true).await.map(|(ws, _)| ws)
        }));
        // Bounded parallel connects.
        if pending.len() == 256 {
            for p in pending.drain(..) {
                conns.push(p.await??);
            }
        }
    }
    for p in pending {
        conns.push(p.await??);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_kib = rss_kib(pid)?;
    drop(conns);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(IdleReport { n, rss_before_kib, rss_after_kib })
}
