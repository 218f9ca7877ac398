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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_formats() {
        assert_eq!(iso_utc(1_795_289_214_362_395), "2026-11-21T19:26:54.362395+00:00");
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("hi", 5), "hi");
    }
}
