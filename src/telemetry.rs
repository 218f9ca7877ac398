//! Logging: a `tracing` subscriber (text or JSON) and the helpers that keep secrets out of it.
//!
//! Request spans record the method, the path and a *redacted* query string; headers are never
//! logged (and `Authorization`, `Cookie`, `X-API-Key` are additionally marked sensitive), so
//! neither keys nor tokens reach the logs whichever carrier a client uses.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::LoggingConfig;

/// Query parameters whose values are replaced by `***` before logging.
const SECRET_PARAMS: &[&str] = &["api_key", "key", "token", "access_token", "password", "secret"];

/// Installs the global subscriber. `RUST_LOG` overrides `logging.level`.
pub fn init(cfg: &LoggingConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let registry = tracing_subscriber::registry().with(filter);
    let res = if cfg.format == "json" {
        registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init()
    } else {
        registry.with(fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr)).try_init()
    };
    // A subscriber may already be installed (tests); keep the existing one.
    drop(res);
}

/// The query string with secret values masked; `""` when there is none. Values of the known
/// secret parameters are replaced whole; anything that looks like an API key or a JWT is masked
/// wherever it appears, whatever the parameter is called.
pub fn redact_query(query: Option<&str>) -> String {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            out.append_pair(&mask_secrets(&k), "***");
        } else {
            out.append_pair(&mask_secrets(&k), &mask_secrets(&v));
        }
    }
    out.finish()
}

/// `text` with every API key (`abk_…`) and every JWT (`eyJ….….…`) replaced by `***`.
pub fn mask_secrets(text: &str) -> String {
    let b = text.as_bytes();
    let token_char = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        // Only at the start of a token, so "xabk_" inside a word is left alone too.
        let at_start = i == 0 || !token_char(b[i - 1]);
        let end = if !at_start {
            None
        } else if b[i..].starts_with(b"abk_") {
            let n = b[i + 4..].iter().take_while(|c| token_char(**c)).count();
            (n > 0).then_some(i + 4 + n)
        } else if b[i..].starts_with(b"eyJ") {
            jwt_end(b, i)
        } else {
            None
        };
        match end {
            Some(e) => {
                out.push_str(&text[copied..i]);
                out.push_str("***");
                i = e;
                copied = e;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// The end of a JWT starting at `i` (three dot-separated base64url segments), if there is one.
fn jwt_end(b: &[u8], mut i: usize) -> Option<usize> {
    let seg = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    for part in 0..3 {
        let n = b[i..].iter().take_while(|c| seg(**c)).count();
        if n == 0 && part < 2 {
            return None;
        }
        i += n;
        if part < 2 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        let r = redact_query(Some("username=bob&api_key=abk_SECRET&key=abk_X&token=eyJ.a.b&ct=live"));
        assert_eq!(r, "username=bob&api_key=***&key=***&token=***&ct=live");
        assert!(!redact_query(Some("API_KEY=abk_s")).contains("abk_s"));
        assert_eq!(redact_query(None), "");
        let r = redact_query(Some("apikey=abk_AAAA1234&x-api-key=abk_BBBB-_9&note=eyJhbGc.eyJ1c2Vy.sig"));
        assert_eq!(r, "apikey=***&x-api-key=***&note=***");
        assert_eq!(mask_secrets("/api/v1/runs/abk_SECRET/x"), "/api/v1/runs/***/x");
        assert_eq!(mask_secrets("plain eyJ text, habk_x and abk_"), "plain eyJ text, habk_x and abk_");
        assert_eq!(mask_secrets("t=eyJa.eyJb."), "t=***");
    }
}
