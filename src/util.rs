//! Small helpers shared across modules.

use chrono::{DateTime, Local, SecondsFormat, Utc};

use crate::store::Micros;

/// Installs rustls' ring provider as the process default (idempotent). HTTP clients need it.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Fills `buf` from the operating system's RNG.
pub fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // No OS randomness means no safe keys, salts or secrets: stop rather than continue weakly.
        tracing::error!(error = %e, "OS random number generator failed");
        std::process::abort();
    }
}

/// 32 random bytes as 64 hex characters.
pub fn random_hex32() -> String {
    let mut b = [0u8; 32];
    fill_random(&mut b);
    hex::encode(b)
}

/// ISO-8601 UTC with microseconds and `+00:00`, as AstrBot prints history timestamps.
pub fn iso_utc(us: Micros) -> String {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// ISO-8601 in the server's local offset, as AstrBot prints API-key timestamps.
pub fn iso_local(us: Micros) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .with_timezone(&Local)
        .to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// Seconds since the epoch as a float, as AstrBot's `agent_stats` times.
pub fn epoch_secs_f64(us: Micros) -> f64 {
    us as f64 / 1e6
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Truncates to at most `max` characters (not bytes).
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A JSON integer as JSON Schema (and pydantic's lax mode) counts them: `5` and `5.0` alike,
/// never `5.5`. Whole floats beyond 2^53 are not exact, so they are not integers here.
pub fn json_i64(v: &serde_json::Value) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT).map(|f| f as i64))
}

/// [`json_i64`] for values that must not be negative.
pub fn json_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| json_i64(v).and_then(|n| u64::try_from(n).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_integers_include_whole_floats() {
        use serde_json::json;
        assert_eq!(json_i64(&json!(5)), Some(5));
        assert_eq!(json_i64(&json!(-5.0)), Some(-5));
        assert_eq!(json_i64(&json!(5.5)), None);
        assert_eq!(json_i64(&json!("5")), None);
        assert_eq!(json_i64(&json!(1e300)), None);
        assert_eq!(json_u64(&json!(9006.0)), Some(9006));
        assert_eq!(json_u64(&json!(-1.0)), None);
        assert_eq!(json_u64(&json!(u64::MAX)), Some(u64::MAX));
    }

    #[test]
    fn iso_formats() {
        assert_eq!(iso_utc(1_795_289_214_362_395), "2026-11-21T19:26:54.362395+00:00");
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("hi", 5), "hi");
    }
}
