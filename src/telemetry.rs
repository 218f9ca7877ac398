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

/// The query string with secret values masked; `""` when there is none.
pub fn redact_query(query: Option<&str>) -> String {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            out.append_pair(&k, "***");
        } else {
            out.append_pair(&k, &v);
        }
    }
    out.finish()
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
    }
}
