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

pub struct DashboardAuth {
    pub username: String,
    password_hash: Arc<str>,
    pub jwt: JwtKeys,
    /// Carried by every token we issue (`tv`); tokens with another version are refused.
    token_version: String,
    pub limiter: LoginLimiter,
    /// Failed logins across all clients.
    pub failures: Budget,
    verifiers: VerifierPool,
    pub failure_delay: Duration,
    pub token_ttl: Duration,
    pub secure_cookie: bool,
}

impl DashboardAuth {
    pub async fn init(cfg: &DashboardConfig, store: &dyn Store, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let password_hash = match &cfg.password {
            Some(p) if password::is_phc_hash(p.expose_secret()) => p.expose_secret().to_string(),
            Some(p) => {
                let p = p.expose_secret().to_string();
                tokio::task::spawn_blocking(move || password::hash_password(&p))
                    .await?
                    .map_err(|e| anyhow::anyhow!("hashing the dashboard password: {e}"))?
            }
            None => match store.get_setting(PASSWORD_HASH_KEY).await? {
                Some(h) => h,
                None => {
                    let generated = password::generate_password();
                    let g = generated.clone();
                    let h = tokio::task::spawn_blocking(move || password::hash_password(&g))
                        .await?
                        .map_err(|e| anyhow::anyhow!("hashing the dashboard password: {e}"))?;
                    let stored = store.init_setting(PASSWORD_HASH_KEY, &h).await?;
                    if stored == h {
                        announce_password(&cfg.username, &generated, data_dir);
                    }
                    stored
                }
            },
        };
        let secret = match &cfg.jwt_secret {
            Some(s) => s.expose_secret().to_string(),
            None => store.init_setting(JWT_SECRET_KEY, &crate::util::random_hex32()).await?,
        };
        let jwt = JwtKeys::new(secret.as_bytes());
        // The token version follows the password: the configured text (stable across restarts,
        // unlike its salted hash) or the stored hash. A new password means a new version, and
        // every token issued before stops working.
        let material = match &cfg.password {
            Some(p) => p.expose_secret().to_string(),
            None => password_hash.clone(),
        };
        let token_version = jwt.digest(&[b"token-version", cfg.username.as_bytes(), material.as_bytes()]);
        Ok(Self {
            username: cfg.username.clone(),
            password_hash: password_hash.into(),
            token_version,
            jwt,
            limiter: LoginLimiter::new(cfg.login_rate_limit_burst, cfg.login_rate_limit_per_sec),
            failures: Budget::new(cfg.login_failure_budget, f64::from(cfg.login_failures_per_min) / 60.0),
            verifiers: VerifierPool::new(cfg.login_threads, Duration::from_millis(cfg.login_queue_wait_ms))?,
            failure_delay: Duration::from_millis(cfg.login_failure_delay_ms),
            token_ttl: Duration::from_secs(u64::from(cfg.token_ttl_days) * 86_400),
            secure_cookie: cfg.secure_cookie,
        })
    }

    /// Checks the credentials on the verifier pool. argon2 always runs, even for a wrong
    /// username, so timing does not reveal which part was wrong. The caller reserved one token
    /// of the global failure budget for this attempt; it is given back unless the attempt fails.
    pub async fn verify(&self, username: &str, password: &str) -> Result<bool, VerifyError> {
        let result = self.verifiers.verify(password, self.password_hash.clone()).await;
        let ok = match result {
            Ok(pw_ok) => pw_ok && username == self.username,
            Err(e) => {
                self.failures.refund();
                return Err(e);
            }
        };
        if ok {
            self.failures.refund();
        }
        Ok(ok)
    }

    /// A token for `username` valid for the configured lifetime.
    pub fn issue(&self, username: &str) -> String {
        let exp = chrono::Utc::now().timestamp() + self.token_ttl.as_secs() as i64;
        self.jwt.encode_versioned(username, exp, &self.token_version)
    }

    /// Checks a dashboard token: signature, expiry, username, and the current token version.
    pub fn decode(&self, token: &str) -> Result<super::jwt::Claims, super::jwt::JwtError> {
        let claims = self.jwt.decode(token, chrono::Utc::now().timestamp())?;
        if claims.tv.as_deref() != Some(self.token_version.as_str()) {
            return Err(super::jwt::JwtError::Rejected);
        }
        Ok(claims)
    }
}
