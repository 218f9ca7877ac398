//! The cost of authenticating a request: the in-process price of each step (API-key verification
//! from the cache and from SQLite, JWT verification, key hashing), and the HTTP-level latency of a
//! trivial authenticated endpoint next to an unauthenticated one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use astrgate::auth::Scope;
use astrgate::auth::api_key::{self, ApiKeys};
use astrgate::auth::jwt::JwtKeys;

use crate::stats::Samples;

pub struct AuthReport {
    pub verify_cached_ns: f64,
    pub verify_db_us: f64,
    pub jwt_ns: f64,
    pub sha256_ns: f64,
    pub http_key_p50_ms: f64,
    pub http_jwt_p50_ms: f64,
    pub http_none_p50_ms: f64,
}

fn per_call<F: FnMut()>(n: u32, mut f: F) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

pub async fn measure(http: &reqwest::Client, base: &str, key: &str, jwt: &str) -> anyhow::Result<AuthReport> {
    let dir = tempfile::tempdir()?;
    let store = astrgate::store::connect(&format!("sqlite://{}", dir.path().join("a.db").display())).await?;
    let cached = Arc::new(ApiKeys::new(store.clone(), Duration::from_secs(3600)));
    let (_, raw) = cached.create("bench", &Scope::ALL, None, None, Default::default(), "bench").await?;
    cached.verify(&raw).await?;
    let n = 200_000u32;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(cached.verify(&raw).await?);
    }
    let verify_cached_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    let uncached = ApiKeys::new(store, Duration::ZERO);
    let m = 5_000u32;
    let t = Instant::now();
    for _ in 0..m {
        std::hint::black_box(uncached.verify(&raw).await?);
    }
    let verify_db_us = t.elapsed().as_nanos() as f64 / f64::from(m) / 1000.0;
    let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
    let tok = keys.encode("astrgate", i64::MAX / 4);
    let jwt_ns = per_call(n, || {
        std::hint::black_box(keys.decode(&tok, 0).ok());
    })
    .as_nanos() as f64;
    let sha256_ns = per_call(n, || {
        std::hint::black_box(api_key::hash(&raw));
    })
    .as_nanos() as f64;

    async fn p50(http: &reqwest::Client, url: &str, auth: Option<&str>) -> anyhow::Result<f64> {
        let mut s = Samples::default();
        for _ in 0..2000 {
            let mut rb = http.get(url);
            if let Some(a) = auth {
                rb = rb.bearer_auth(a);
            }
            let t = Instant::now();
            let res = rb.send().await?;
            let _ = res.bytes().await?;
            s.push(t.elapsed());
        }
        Ok(s.pct_ms(50.0))
    }
    let bots = format!("{base}/api/v1/im/bots");
    Ok(AuthReport {
        verify_cached_ns,
        verify_db_us,
        jwt_ns,
        sha256_ns,
        http_key_p50_ms: p50(http, &bots, Some(key)).await?,
        http_jwt_p50_ms: p50(http, &bots, Some(jwt)).await?,
        http_none_p50_ms: p50(http, &format!("{base}/no-such-route"), None).await?,
    })
}
