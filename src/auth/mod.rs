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

/// What authentication shares with the other instances of a cluster (implemented over Redis by
/// the app; absent for a single instance).
#[async_trait::async_trait]
pub trait Shared: Send + Sync {
    /// A key was revoked or deleted here: the other instances drop it from their caches.
    async fn key_changed(&self, key_id: &str);
    /// The dashboard account changed or logged out here: the others reload it.
    async fn account_changed(&self);
    /// Takes `delta` tokens from (or, negative, gives them back to) a token bucket shared by
    /// every instance: `Some((taken, tokens left))`, or `None` when the shared store is away
    /// (the caller then uses its own bucket).
    async fn take(&self, bucket: &str, burst: f64, per_sec: f64, delta: f64) -> Option<(bool, f64)>;
}

/// AstrBot 4.29.3's API-key scope vocabulary. astrgate routes require `chat`, `config`, `file`,
/// `im` or `provider`; the scopes of features astrgate does not have (`bot`, `persona`, `data`,
/// `plugin`, `mcp`, `skill`) are accepted, stored and shown, and grant nothing more. The
/// sub-scopes `chat:admin` and `config:edit_admin` need their parent and do not imply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Bot,
    Provider,
    Persona,
    Im,
    Config,
    Chat,
    Data,
    File,
    Plugin,
    Mcp,
    Skill,
    /// A key with it may act as the dashboard administrator's username.
    ChatAdmin,
    /// Kept for AstrBot's WebUI: astrgate has no editable `admins_id`.
    ConfigEditAdmin,
}

impl Scope {
    /// Every scope, in the order AstrBot's WebUI lists them.
    pub const ALL: [Scope; 13] = [
        Scope::Bot,
        Scope::Provider,
        Scope::Persona,
        Scope::Im,
        Scope::Config,
        Scope::ConfigEditAdmin,
        Scope::Chat,
        Scope::ChatAdmin,
        Scope::Data,
        Scope::File,
        Scope::Plugin,
        Scope::Mcp,
        Scope::Skill,
    ];

    /// A new key's scopes when the request names none (AstrBot's `DEFAULT_OPEN_API_SCOPES`).
    pub const DEFAULT: [Scope; 11] = [
        Scope::Bot,
        Scope::Provider,
        Scope::Persona,
        Scope::Im,
        Scope::Config,
        Scope::Chat,
        Scope::Data,
        Scope::File,
        Scope::Plugin,
        Scope::Mcp,
        Scope::Skill,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Bot => "bot",
            Scope::Provider => "provider",
            Scope::Persona => "persona",
            Scope::Im => "im",
            Scope::Config => "config",
            Scope::Chat => "chat",
            Scope::Data => "data",
            Scope::File => "file",
            Scope::Plugin => "plugin",
            Scope::Mcp => "mcp",
            Scope::Skill => "skill",
            Scope::ChatAdmin => "chat:admin",
            Scope::ConfigEditAdmin => "config:edit_admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Scopes a stored scope grants besides itself (`config` includes `bot` and `provider`).
    pub fn includes(self) -> &'static [Scope] {
        match self {
            Scope::Config => &[Scope::Bot, Scope::Provider],
            _ => &[],
        }
    }

    /// `scopes` of a key-creation request, with AstrBot's texts and order of checks: omitted →
    /// the default list; otherwise known names (duplicates collapse), sub-scopes only with their
    /// parent, and what a scope includes added (`config` → `bot`, `provider`).
    pub fn parse_list(v: Option<&serde_json::Value>) -> Result<Vec<Scope>, String> {
        use serde_json::Value;
        let list = match v {
            None | Some(Value::Null) => return Ok(Scope::DEFAULT.to_vec()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err("Invalid scopes".into()),
        };
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for item in list {
            match item.as_str().map(str::trim).and_then(Scope::parse) {
                Some(s) => out.push(s),
                None => bad.push(item.as_str().map(str::to_string).unwrap_or_else(|| item.to_string())),
            }
        }
        if !bad.is_empty() {
            return Err(format!("Invalid scopes: {}", bad.join(", ")));
        }
        if out.contains(&Scope::ConfigEditAdmin) && !out.contains(&Scope::Config) {
            return Err("config:edit_admin requires the config scope".into());
        }
        if out.contains(&Scope::ChatAdmin) && !out.contains(&Scope::Chat) {
            return Err("chat:admin requires the chat scope".into());
        }
        for s in out.clone() {
            out.extend(s.includes());
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|s| seen.insert(*s));
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
