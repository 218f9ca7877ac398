//! The dashboard account: password verification, JWT issuing, the login limiter.
//!
//! The password comes from `[dashboard] password` (plain text or an argon2 PHC string). Without
//! one, the first start generates a password and stores only its argon2 hash; later starts reuse
//! the stored hash. The generated password is shown once: on the terminal when stderr is one,
//! otherwise (a service, a container) in `<data_dir>/dashboard-password.txt`, readable by the
//! owner only, whose path is logged — never in the log itself. The JWT secret is `[dashboard] jwt_secret` or
//! a random one generated once and kept in the database, so tokens survive restarts.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::jwt::JwtKeys;
use super::password::{self, VerifierPool, VerifyError};
use super::rate_limit::{Budget, LoginLimiter};
use crate::config::DashboardConfig;
use crate::store::Store;

const PASSWORD_HASH_KEY: &str = "dashboard_password_hash";
const JWT_SECRET_KEY: &str = "jwt_secret";

fn token_version(jwt: &JwtKeys, username: &str, material: &str, epoch: u64) -> String {
    jwt.digest(&[b"token-version", username.as_bytes(), material.as_bytes(), &epoch.to_le_bytes()])
}

/// The `use` claim of socket tokens.
pub const SOCKET_PURPOSE: &str = "socket";

/// How long a socket token opens a socket (the socket itself may then stay open).
pub const SOCKET_TOKEN_TTL_SECS: i64 = 60;

/// The file the generated password goes to when stderr is not a terminal.
pub const PASSWORD_FILE: &str = "dashboard-password.txt";

fn announce_password(username: &str, password: &str, data_dir: &std::path::Path) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        // Deliberately not a log line: shown once on the console, never in log files.
        eprintln!(
            "\n================================================================\n \
             astrgate generated the dashboard password for user {username:?}:\n\n     {password}\n\n \
             It is shown only this once; only its hash is stored.\n \
             Set [dashboard] password (or ASTRGATE_DASHBOARD__PASSWORD) to choose one.\n\
             ================================================================\n"
        );
        return;
    }
    let path = data_dir.join(PASSWORD_FILE);
    match write_private(&path, &format!("{password}\n")) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            username,
            "generated the dashboard password; it is in this file (owner-only); delete the file once you have it"
        ),
        Err(e) => tracing::error!(
            path = %path.display(),
            error = %e,
            "could not write the generated dashboard password; set [dashboard] password instead"
        ),
    }
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// The account as it stands: changed at run time by `PATCH /api/auth/account`, and every token
/// revoked by a logout.
#[derive(Debug, Clone)]
struct Account {
    username: String,
    password_hash: Arc<str>,
    /// Carried by every token we issue (`tv`); tokens with another version are refused.
    token_version: String,
}

/// An account changed through the API, kept in the database. It applies while the configured
/// account it replaced is unchanged: editing `[dashboard]` username or password in the
/// configuration takes the account back (how an operator resets a forgotten password).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    username: String,
    password_hash: String,
    /// A digest of the configured account this one replaced.
    replaces: String,
}

const ACCOUNT_KEY: &str = "dashboard_account";
const EPOCH_KEY: &str = "dashboard_token_epoch";

/// Why an account change was refused (AstrBot's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("原密码错误")]
    WrongPassword,
    #[error("新用户名和新密码不能同时为空")]
    NothingToChange,
    #[error("用户名长度至少3位")]
    UsernameTooShort,
    #[error("两次输入的新密码不一致")]
    Mismatch,
    #[error("{0}")]
    Weak(&'static str),
    #[error("password verification is busy")]
    Busy,
    #[error("saving the account failed")]
    Store,
}

/// AstrBot's password policy for a new dashboard password.
pub fn check_password_policy(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("Password cannot be empty");
    }
    if p.chars().count() < 8 {
        return Err("Password must be at least 8 characters long");
    }
    if !p.chars().any(|c| c.is_uppercase()) {
        return Err("Password must include at least one uppercase letter");
    }
    if !p.chars().any(|c| c.is_lowercase()) {
        return Err("Password must include at least one lowercase letter");
    }
    if !p.chars().any(|c| c.is_ascii_digit()) {
        return Err("Password must include at least one digit");
    }
    Ok(())
}

pub struct DashboardAuth {
    account: std::sync::RwLock<Account>,
    store: Arc<dyn Store>,
    /// Digest of the configured account (see [`StoredAccount`]).
    config_digest: String,
    /// The configured account: username, password hash, token-version material.
    configured: (String, String, String),
    /// Cluster mode: shared login limits, and account changes told to the other instances.
    shared: Option<Arc<dyn super::Shared>>,
    epoch: std::sync::atomic::AtomicU64,
    pub jwt: JwtKeys,
    pub limiter: LoginLimiter,
    /// Failed logins across all clients.
    pub failures: Budget,
    verifiers: VerifierPool,
    pub failure_delay: Duration,
    pub token_ttl: Duration,
    pub secure_cookie: bool,
}

impl DashboardAuth {
    pub async fn init(
        cfg: &DashboardConfig,
        store: Arc<dyn Store>,
        data_dir: &std::path::Path,
        shared: Option<Arc<dyn super::Shared>>,
    ) -> anyhow::Result<Self> {
        let store_ref = store.as_ref();
        let password_hash = match &cfg.password {
            Some(p) if password::is_phc_hash(p.expose_secret()) => p.expose_secret().to_string(),
            Some(p) => {
                let p = p.expose_secret().to_string();
                tokio::task::spawn_blocking(move || password::hash_password(&p))
                    .await?
                    .map_err(|e| anyhow::anyhow!("hashing the dashboard password: {e}"))?
            }
            None => match store_ref.get_setting(PASSWORD_HASH_KEY).await? {
                Some(h) => h,
                None => {
                    let generated = password::generate_password();
                    let g = generated.clone();
                    let h = tokio::task::spawn_blocking(move || password::hash_password(&g))
                        .await?
                        .map_err(|e| anyhow::anyhow!("hashing the dashboard password: {e}"))?;
                    let stored = store_ref.init_setting(PASSWORD_HASH_KEY, &h).await?;
                    if stored == h {
                        announce_password(&cfg.username, &generated, data_dir);
                    }
                    stored
                }
            },
        };
        let secret = match &cfg.jwt_secret {
            Some(s) => s.expose_secret().to_string(),
            None => store_ref.init_setting(JWT_SECRET_KEY, &crate::util::random_hex32()).await?,
        };
        let jwt = JwtKeys::new(secret.as_bytes());
        // The token version follows the account and the logout epoch: the configured password
        // text (stable across restarts, unlike its salted hash) or the stored hash. A new
        // password, a new username or a logout means a new version, and every token issued
        // before stops working.
        let material = match &cfg.password {
            Some(p) => p.expose_secret().to_string(),
            None => password_hash.clone(),
        };
        let config_digest = jwt.digest(&[b"configured-account", cfg.username.as_bytes(), material.as_bytes()]);
        let configured = (cfg.username.clone(), password_hash, material);
        let account = load_account(store_ref, &jwt, &config_digest, &configured).await?;
        Ok(Self {
            epoch: std::sync::atomic::AtomicU64::new(account.1),
            account: std::sync::RwLock::new(account.0),
            store,
            config_digest,
            configured,
            shared,
            jwt,
            limiter: LoginLimiter::new(cfg.login_rate_limit_burst, cfg.login_rate_limit_per_sec),
            failures: Budget::new(cfg.login_failure_budget, f64::from(cfg.login_failures_per_min) / 60.0),
            verifiers: VerifierPool::new(cfg.login_threads, Duration::from_millis(cfg.login_queue_wait_ms))?,
            failure_delay: Duration::from_millis(cfg.login_failure_delay_ms),
            token_ttl: Duration::from_secs(u64::from(cfg.token_ttl_days) * 86_400),
            secure_cookie: cfg.secure_cookie,
        })
    }

    /// Reads the account and the logout epoch again (another instance changed them).
    pub async fn reload(&self) -> crate::store::StoreResult<()> {
        let (account, epoch) =
            load_account(self.store.as_ref(), &self.jwt, &self.config_digest, &self.configured).await?;
        self.epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
        *self.account.write().unwrap_or_else(|p| p.into_inner()) = account;
        Ok(())
    }

    /// The per-address login bucket (before any work): the cluster's shared one when there is
    /// a cluster and Redis answers, else this instance's own.
    pub async fn admit(&self, ip: std::net::IpAddr) -> bool {
        let (burst, rate) = self.limiter.rates();
        if let Some(s) = &self.shared
            && let Some((taken, _)) = s.take(&format!("login:ip:{ip}"), burst, rate, 1.0).await
        {
            return taken;
        }
        self.limiter.try_acquire(ip)
    }

    /// Reserves a token of the global failed-login budget for one attempt (given back unless
    /// the attempt fails); `Err(seconds to wait)` when the budget is spent.
    pub async fn reserve_attempt(&self) -> Result<(), u64> {
        let (burst, rate) = self.failures.rates();
        if let Some(s) = &self.shared
            && let Some((taken, left)) = s.take("login:failures", burst, rate, 1.0).await
        {
            return if taken { Ok(()) } else { Err(((1.0 - left) / rate).ceil().max(1.0) as u64) };
        }
        if self.failures.try_take() { Ok(()) } else { Err(self.failures.retry_after_secs()) }
    }

    async fn refund_attempt(&self) {
        let (burst, rate) = self.failures.rates();
        if let Some(s) = &self.shared
            && s.take("login:failures", burst, rate, -1.0).await.is_some()
        {
            return;
        }
        self.failures.refund();
    }

    async fn tell_others(&self) {
        if let Some(s) = &self.shared {
            s.account_changed().await;
        }
    }

    /// Checks the credentials on the verifier pool. argon2 always runs, even for a wrong
    /// username, so timing does not reveal which part was wrong. The caller reserved one token
    /// of the global failure budget for this attempt; it is given back unless the attempt fails.
    pub async fn verify(&self, username: &str, password: &str) -> Result<bool, VerifyError> {
        let account = self.account();
        let result = self.verifiers.verify(password, account.password_hash.clone()).await;
        let ok = match result {
            Ok(pw_ok) => pw_ok && username == account.username,
            Err(e) => {
                self.refund_attempt().await;
                return Err(e);
            }
        };
        if ok {
            self.refund_attempt().await;
        }
        Ok(ok)
    }

    fn account(&self) -> Account {
        self.account.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The dashboard account's username.
    pub fn username(&self) -> String {
        self.account().username
    }

    /// A token for `username` valid for the configured lifetime.
    pub fn issue(&self, username: &str) -> String {
        let exp = chrono::Utc::now().timestamp() + self.token_ttl.as_secs() as i64;
        self.jwt.encode_versioned(username, exp, &self.account().token_version)
    }

    /// Checks a dashboard token for an HTTP request: signature, expiry, username, the current
    /// token version, and that it is a login token (a socket token is refused here).
    pub fn decode(&self, token: &str) -> Result<super::jwt::Claims, super::jwt::JwtError> {
        let claims = self.decode_any(token)?;
        if claims.purpose.is_some() {
            return Err(super::jwt::JwtError::Rejected);
        }
        Ok(claims)
    }

    /// Checks a token given to a `?token=` WebSocket: a login token or a socket token.
    pub fn decode_socket(&self, token: &str) -> Result<super::jwt::Claims, super::jwt::JwtError> {
        let claims = self.decode_any(token)?;
        match claims.purpose.as_deref() {
            None | Some(SOCKET_PURPOSE) => Ok(claims),
            Some(_) => Err(super::jwt::JwtError::Rejected),
        }
    }

    fn decode_any(&self, token: &str) -> Result<super::jwt::Claims, super::jwt::JwtError> {
        let claims = self.jwt.decode(token, chrono::Utc::now().timestamp())?;
        if claims.tv.as_deref() != Some(self.account().token_version.as_str()) {
            return Err(super::jwt::JwtError::Rejected);
        }
        Ok(claims)
    }

    /// A token that opens the `?token=` WebSockets for [`SOCKET_TOKEN_TTL_SECS`] and is refused by
    /// every HTTP route. Why: a socket token travels in a URL, where proxies may log it; the
    /// console therefore never puts its long-lived login token there.
    pub fn issue_socket(&self, username: &str) -> String {
        let exp = chrono::Utc::now().timestamp() + SOCKET_TOKEN_TTL_SECS;
        self.jwt.encode_for(username, exp, &self.account().token_version, SOCKET_PURPOSE)
    }

    /// Logs out: every token issued so far stops working (there is one account; its tokens are
    /// revoked together).
    pub async fn revoke_all(&self) -> crate::store::StoreResult<()> {
        let epoch = self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.store.put_setting(EPOCH_KEY, &epoch.to_string()).await?;
        {
            let mut a = self.account.write().unwrap_or_else(|p| p.into_inner());
            a.token_version = token_version(&self.jwt, &a.username, &a.password_hash, epoch);
        }
        self.tell_others().await;
        Ok(())
    }

    /// Changes the username and/or the password (AstrBot's rules and texts). Every token issued
    /// before stops working; the change is kept in the database (see [`StoredAccount`]).
    pub async fn change_account(
        &self,
        current: &str,
        new_username: Option<&str>,
        new_password: Option<&str>,
        confirm: Option<&str>,
    ) -> Result<(), AccountError> {
        let account = self.account();
        match self.verifiers.verify(current, account.password_hash.clone()).await {
            Ok(true) => {}
            Ok(false) => return Err(AccountError::WrongPassword),
            Err(_) => return Err(AccountError::Busy),
        }
        let new_username = new_username.map(str::trim).filter(|u| !u.is_empty());
        let new_password = new_password.filter(|p| !p.is_empty());
        if new_username.is_none() && new_password.is_none() {
            return Err(AccountError::NothingToChange);
        }
        if new_username.is_some_and(|u| u.chars().count() < 3) {
            return Err(AccountError::UsernameTooShort);
        }
        let password_hash = match new_password {
            Some(p) => {
                if confirm != Some(p) {
                    return Err(AccountError::Mismatch);
                }
                check_password_policy(p).map_err(AccountError::Weak)?;
                let p = p.to_string();
                tokio::task::spawn_blocking(move || password::hash_password(&p))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .ok_or(AccountError::Store)?
            }
            None => account.password_hash.to_string(),
        };
        let username = new_username.unwrap_or(&account.username).to_string();
        let stored = StoredAccount {
            username: username.clone(),
            password_hash: password_hash.clone(),
            replaces: self.config_digest.clone(),
        };
        let json = serde_json::to_string(&stored).map_err(|_| AccountError::Store)?;
        self.store.put_setting(ACCOUNT_KEY, &json).await.map_err(|_| AccountError::Store)?;
        let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        let token_version = token_version(&self.jwt, &username, &password_hash, epoch);
        *self.account.write().unwrap_or_else(|p| p.into_inner()) =
            Account { username, password_hash: password_hash.into(), token_version };
        self.tell_others().await;
        Ok(())
    }
}

/// The account as the database has it: the one changed through the API while it still
/// replaces the configured one, else the configured one; and the logout epoch.
async fn load_account(
    store: &dyn Store,
    jwt: &JwtKeys,
    config_digest: &str,
    (username, password_hash, material): &(String, String, String),
) -> crate::store::StoreResult<(Account, u64)> {
    let epoch: u64 = store.get_setting(EPOCH_KEY).await?.and_then(|e| e.parse().ok()).unwrap_or(0);
    let stored: Option<StoredAccount> =
        store.get_setting(ACCOUNT_KEY).await?.and_then(|v| serde_json::from_str(&v).ok());
    let (username, password_hash, material) = match stored {
        Some(a) if a.replaces == config_digest => (a.username, a.password_hash.clone(), a.password_hash),
        Some(_) => {
            tracing::warn!("the configured dashboard account changed: it replaces the one changed through the API");
            (username.clone(), password_hash.clone(), material.clone())
        }
        None => (username.clone(), password_hash.clone(), material.clone()),
    };
    let token_version = token_version(jwt, &username, &material, epoch);
    Ok((Account { username, password_hash: password_hash.into(), token_version }, epoch))
}
