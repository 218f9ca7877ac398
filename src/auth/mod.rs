//! Authentication and authorisation: API keys, dashboard JWTs, passwords, the login limiter,
//! and the request-level [`Caller`].
//!
//! Deny by default: an `/api/v1` handler can only obtain a [`Caller`] after the route's scope
//! check ran (see `caller.rs`); a route registered without a scope cannot authorise anyone.

pub mod api_key;
pub mod caller;
pub mod dashboard;
pub mod jwt;
pub mod password;
pub mod rate_limit;

use std::fmt;

pub use caller::{AuthState, Caller, UserError};

/// The four API-key scopes (AstrBot's original set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Chat,
    Config,
    File,
    Im,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Chat, Scope::Config, Scope::File, Scope::Im];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Config => "config",
            Scope::File => "file",
            Scope::Im => "im",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// `scopes` of a key-creation request, with AstrBot's texts: omitted → all four; otherwise
    /// a list of known names (duplicates collapse).
    pub fn parse_list(v: Option<&serde_json::Value>) -> Result<Vec<Scope>, String> {
        use serde_json::Value;
        let list = match v {
            None | Some(Value::Null) => return Ok(Scope::ALL.to_vec()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err("Invalid scopes".into()),
        };
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for item in list {
            match item.as_str().map(str::trim).and_then(Scope::parse) {
                Some(s) if !out.contains(&s) => out.push(s),
                Some(_) => {}
                None => bad.push(item.as_str().map(str::to_string).unwrap_or_else(|| item.to_string())),
            }
        }
        if !bad.is_empty() {
            return Err(format!("Invalid scopes: {}", bad.join(", ")));
        }
        if out.is_empty() {
            return Err("At least one valid scope is required".into());
        }
        Ok(out)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// AstrBot's error texts, verbatim.
pub mod texts {
    pub const MISSING_API_KEY: &str = "Missing API key";
    pub const INVALID_API_KEY: &str = "Invalid API key";
    pub const TOKEN_EXPIRED: &str = "Token expired";
    pub const INVALID_TOKEN: &str = "Invalid token";
    pub const INSUFFICIENT_SCOPE: &str = "Insufficient API key scope";
    /// Non-v1 dashboard routes (`/api/apikey/*`).
    pub const DASH_UNAUTHORIZED: &str = "未授权";
    pub const DASH_TOKEN_EXPIRED: &str = "Token 过期";
    pub const DASH_TOKEN_INVALID: &str = "Token 无效";
    pub const LOGIN_FAILED: &str = "用户名或密码错误";
    pub const LOGIN_RATE_LIMITED: &str = "验证尝试过于频繁，系统可能正在遭受暴力破解";
}
