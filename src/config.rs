//! Configuration: defaults ← TOML file ← `ASTRGATE_*` environment, then [`Config::validate`].
//!
//! Owns the shape of `astrgate.toml`. Unknown keys are rejected (serde `deny_unknown_fields`), so a
//! typo is an error naming the key instead of a silently ignored setting. Secrets are
//! [`SecretString`] so they never show up in `Debug` output or logs.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// Environment variables read by the config loader start with this prefix; `__` separates sections.
pub const ENV_PREFIX: &str = "ASTRGATE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("config file not found: {0}")]
    Missing(PathBuf),
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Load(Box::new(e))
    }
}

/// The whole configuration. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds to.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database, attachments and temporary files.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://…` (the default, `sqlite://<data_dir>/astrgate.db`) or
    /// `postgres://user:password@host/db` (several instances can share it).
    #[serde(default)]
    pub database_url: Option<String>,
    /// Connections each instance keeps to PostgreSQL at most (SQLite ignores it).
    #[serde(default = "default_db_connections")]
    pub database_max_connections: u32,
    /// `redis://[:password@]host:port[/db]`: turns on cluster mode (several instances sharing a
    /// PostgreSQL `database_url`). Env `ASTRGATE_REDIS_URL`.
    #[serde(default)]
    pub redis_url: Option<String>,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub dashboard: DashboardConfig,
    #[serde(default)]
    pub api_keys: ApiKeysConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
    #[serde(default)]
    pub runs: RunsConfig,
    #[serde(default)]
    pub files: FilesConfig,
    #[serde(default)]
    pub stt: Option<SttConfig>,
    #[serde(default)]
    pub tts: Option<TtsConfig>,
    #[serde(default)]
    pub platforms: Vec<PlatformConfig>,
    #[serde(default)]
    pub live: LiveConfig,
    #[serde(default)]
    pub compat: CompatConfig,
    #[serde(default)]
    pub stage: StageConfig,
    #[serde(default)]
    pub openai: OpenAiConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

fn default_db_connections() -> u32 {
    16
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6185))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

/// `[cluster]`: cluster mode, with `redis_url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Every Redis key starts with this (several installations can share one Redis).
    pub key_prefix: String,
    /// This instance's name among the others; a random one per start when unset.
    pub instance_id: Option<String>,
    /// A session's lease (its one active run) lapses this long after its instance stops
    /// renewing it (the instance died); also how long an instance counts as alive after its
    /// last heartbeat.
    pub lease_ttl_secs: u64,
    /// A run's events stay in Redis, for resuming from any instance, this long after the last one.
    pub run_stream_ttl_secs: u64,
    /// Clients following a run of another instance at once (each holds a Redis connection).
    pub max_remote_followers: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            key_prefix: "astrgate".into(),
            instance_id: None,
            lease_ttl_secs: 15,
            run_stream_ttl_secs: 600,
            max_remote_followers: 256,
        }
    }
}

/// `[dashboard]`: the single dashboard account and its JWTs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    #[serde(deserialize_with = "lenient_string")]
    pub username: String,
    /// Plain password or an argon2 PHC string (`$argon2id$…`). When absent, the first start
    /// generates one, prints it once and stores only its hash.
    #[serde(deserialize_with = "lenient_secret_opt")]
    pub password: Option<SecretString>,
    /// HS256 secret for dashboard JWTs. Generated and persisted in the database when absent.
    #[serde(deserialize_with = "lenient_secret_opt")]
    pub jwt_secret: Option<SecretString>,
    /// Lifetime of a dashboard JWT.
    pub token_ttl_days: u32,
    /// Fixed delay before a failed login is answered.
    pub login_failure_delay_ms: u64,
    /// Per-client-IP token bucket for the login endpoints.
    pub login_rate_limit_burst: u32,
    pub login_rate_limit_per_sec: f64,
    /// Failed logins allowed in a burst across all clients, and refilled per minute. When spent,
    /// every login is refused (429) until the budget refills: guessing stays slow however many
    /// addresses an attacker has. Tokens already issued keep working.
    pub login_failure_budget: u32,
    pub login_failures_per_min: u32,
    /// Threads verifying passwords (argon2id, 19 MiB each); at most twice as many logins are
    /// admitted at once, the rest wait up to `login_queue_wait_ms` and then get 429.
    pub login_threads: usize,
    pub login_queue_wait_ms: u64,
    /// Set the `Secure` attribute on the login cookie (turn on behind HTTPS).
    pub secure_cookie: bool,
    /// A built single-page dashboard (such as AstrBot's WebUI, `astrbot/dashboard/dist` in its
    /// wheel) served at `/`; API routes always win. Must contain `index.html`.
    pub webui_dir: Option<std::path::PathBuf>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            username: "astrgate".into(),
            password: None,
            jwt_secret: None,
            token_ttl_days: 7,
            login_failure_delay_ms: 3000,
            login_rate_limit_burst: 3,
            login_rate_limit_per_sec: 1.0,
            login_failure_budget: 30,
            login_failures_per_min: 30,
            login_threads: 2,
            login_queue_wait_ms: 2000,
            secure_cookie: false,
            webui_dir: None,
        }
    }
}

/// `[api_keys]`: caching of key lookups, batching of `last_used_at` and usage, new keys' limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    /// How long a verified key stays in the in-memory cache. Revocation on this instance is
    /// immediate; other instances sharing the database see it within this time.
    pub cache_ttl_secs: u64,
    /// `last_used_at` is written in one batch at this interval instead of on every request.
    pub last_used_flush_secs: u64,
    /// Usage per key per day is added up in memory and written at this interval.
    pub usage_flush_secs: u64,
    /// The limits a new key gets for every field its create request does not name.
    pub default_limits: crate::store::Limits,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self { cache_ttl_secs: 10, last_used_flush_secs: 10, usage_flush_secs: 5, default_limits: Default::default() }
    }
}

/// `[audit]`: the audit log of logins, failed logins and API-key changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Events older than this many days are deleted (checked at start and hourly); `0` keeps
    /// them forever.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

/// `[server]`: HTTP behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// An SSE comment `: heartbeat` is sent after this many idle seconds.
    pub sse_keepalive_secs: u64,
    /// On SIGTERM/SIGINT, open streams and runs get this long to finish before exit.
    pub shutdown_grace_secs: u64,
    /// Largest accepted JSON body.
    pub max_json_body_bytes: usize,
    /// Use the first `X-Forwarded-For` address as the client IP (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// A connection must send a complete request head within this time, both after connecting
    /// and while a keep-alive connection waits for its next request (the keep-alive idle
    /// timeout). Slow clients dribbling bytes do not reset it.
    pub header_read_timeout_secs: u64,
    /// A request body that sends nothing for this long is abandoned (408).
    pub request_body_timeout_secs: u64,
    /// Open connections (including WebSockets) in all; more are closed at once.
    pub max_connections: usize,
    /// Open connections from one client address; 0 = no cap (behind a reverse proxy every
    /// client has the proxy's address).
    pub max_connections_per_ip: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            sse_keepalive_secs: 10,
            shutdown_grace_secs: 10,
            max_json_body_bytes: 2 * 1024 * 1024,
            trust_forwarded_for: false,
            header_read_timeout_secs: 10,
            request_body_timeout_secs: 30,
            max_connections: 16_384,
            max_connections_per_ip: 512,
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: "text".into() }
    }
}

/// `[[providers]]`: an OpenAI-compatible chat completions endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
    /// Only `openai` (any OpenAI-compatible `/v1/chat/completions`).
    #[serde(rename = "type", default = "default_provider_type")]
    pub kind: String,
    /// Base URL including the version segment, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    #[serde(default, deserialize_with = "lenient_secret_opt")]
    pub api_key: Option<SecretString>,
    /// Several keys, used in turn (instead of `api_key`); a key answered with 429 or 401 cools
    /// down (`Retry-After` when the provider sends one).
    #[serde(default, deserialize_with = "lenient_secrets")]
    pub api_keys: Vec<SecretString>,
    #[serde(deserialize_with = "lenient_string")]
    pub model: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Longest wait for the first streamed token (or the whole non-streamed answer).
    #[serde(default = "default_first_token_timeout")]
    pub first_token_timeout_secs: u64,
    /// Longest silence between two streamed chunks.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// How PDF attachments reach this provider: their extracted text (`text`, any model), or the
    /// PDF itself as an OpenAI `file` content part (`file`, for providers that read PDFs).
    #[serde(default)]
    pub pdf_input: PdfInput,
    /// Further attempts on this provider after a connect error, 429 or 5xx before the first
    /// token (exponential backoff with jitter). At most [`MAX_PROVIDER_RETRIES`].
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Provider ids tried in order, each with its own model and retries, when this one fails
    /// before the first token. Only this list is followed (a fallback's own is not).
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// The most `[[providers]] retries` can be.
pub const MAX_PROVIDER_RETRIES: u32 = 10;

fn default_retries() -> u32 {
    2
}

/// `[[providers]] pdf_input`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PdfInput {
    /// The text of each page, extracted on the server (`pdftotext`), as a text part.
    #[default]
    Text,
    /// The PDF as `{"type":"file","file":{"filename","file_data":"data:application/pdf;base64,…"}}`.
    File,
}

fn default_provider_type() -> String {
    "openai".into()
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_first_token_timeout() -> u64 {
    60
}
fn default_idle_timeout() -> u64 {
    60
}

/// `[[profiles]]`: named agent profiles (AstrBot calls them configs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string_opt")]
    pub name: Option<String>,
    #[serde(default)]
    pub system_prompt: String,
    /// Provider id; the default provider when absent.
    #[serde(default)]
    pub provider: Option<String>,
    /// Model; the provider's model when absent.
    #[serde(default, deserialize_with = "lenient_string_opt")]
    pub model: Option<String>,
    /// How many past turns (user + bot pairs) are sent to the model.
    #[serde(default = "default_history_turns")]
    pub history_turns: u32,
    /// Streaming default when the request does not say.
    #[serde(default = "default_true")]
    pub streaming: bool,
    /// Speak replies with the TTS provider.
    #[serde(default)]
    pub tts: bool,
    /// Forward reasoning deltas as `chain_type: "reasoning"`.
    #[serde(default = "default_true")]
    pub show_reasoning: bool,
    #[serde(default)]
    pub default: bool,
}

fn default_history_turns() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

/// `[runs]`: the run registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunsConfig {
    /// Hard cap on events one run may produce (bounds the replay buffer).
    pub max_events: usize,
    /// Hard cap on the text one run may stream (its log, its saved reply and a history page all
    /// stay below it); past it the reply is cut off with an error event.
    pub max_log_bytes: usize,
    /// Runs active at once across the server; more get 429 `Too many concurrent runs`.
    pub max_active: usize,
    /// Finished runs stay resumable from the store for this long.
    pub retention_hours: u64,
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self { max_events: 50_000, max_log_bytes: 4 * 1024 * 1024, max_active: 512, retention_hours: 24 }
    }
}

/// `[files]`: attachments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Largest upload; larger bodies get 413 while streaming.
    pub max_upload_bytes: u64,
    /// Text-like attachments are inlined into the prompt up to this many bytes.
    pub inline_text_max_bytes: usize,
    /// Most text taken from one document (PDF, docx, xlsx, pptx, ODF, HTML); longer text is cut
    /// and the cut is marked for the model.
    pub document_text_max_bytes: usize,
    /// Largest document file whose text is extracted; larger ones are refused (400).
    pub document_max_bytes: u64,
    /// Longest one extraction may take; slower documents are refused (400).
    pub document_timeout_secs: u64,
    /// Documents read at once across the server (each PDF is a process of up to 512 MiB of
    /// address space); more wait up to `document_timeout_secs`, then get 503.
    pub document_max_concurrent: usize,
    /// Where attachment bytes live: `local` (`<data_dir>/attachments`) or `database` (chunks
    /// in the database: any instance serves any attachment). Unset: `local` with SQLite,
    /// `database` with PostgreSQL.
    pub storage: Option<String>,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 128 * 1024 * 1024,
            inline_text_max_bytes: 64 * 1024,
            document_text_max_bytes: 64 * 1024,
            document_max_bytes: 64 * 1024 * 1024,
            document_timeout_secs: 30,
            document_max_concurrent: 2,
            storage: None,
        }
    }
}

/// `[stt]`: speech to text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SttConfig {
    /// `openai`, `pocketsphinx` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_secret_opt")]
    pub api_key: Option<SecretString>,
    #[serde(default, deserialize_with = "lenient_string_opt")]
    pub model: Option<String>,
    /// Path of the `pocketsphinx` program.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default = "default_provider_timeout")]
    pub timeout_secs: u64,
}

/// `[tts]`: text to speech.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsConfig {
    /// `openai`, `espeak-ng` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_secret_opt")]
    pub api_key: Option<SecretString>,
    #[serde(default, deserialize_with = "lenient_string_opt")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient_string_opt")]
    pub voice: Option<String>,
    /// Path of the `espeak-ng` program.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default = "default_provider_timeout")]
    pub timeout_secs: u64,
}

fn default_provider_timeout() -> u64 {
    60
}

/// `[[platforms]]`: outbound proactive-message targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
    /// Only `webhook`.
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(default, deserialize_with = "lenient_secret_opt")]
    pub secret: Option<SecretString>,
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
}

fn default_webhook_attempts() -> u32 {
    3
}
fn default_webhook_timeout() -> u64 {
    10
}

/// `[live]`: the Live voice WebSocket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Longest utterance accepted, in seconds of 16 kHz mono PCM.
    pub max_utterance_secs: u32,
    /// Largest WebSocket message accepted.
    pub max_frame_bytes: usize,
    /// Shortest sentence handed to TTS (shorter ones are merged with the next).
    pub min_sentence_chars: usize,
    /// A WebSocket client that takes longer than this to accept one frame is disconnected.
    pub write_timeout_secs: f64,
    /// The server pings every socket this often (clients answer pings by themselves).
    pub ping_interval_secs: u64,
    /// A socket that sends nothing, not even a pong, for this long is closed (1001).
    pub idle_timeout_secs: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_utterance_secs: 60,
            max_frame_bytes: 4 * 1024 * 1024,
            min_sentence_chars: 10,
            write_timeout_secs: 30.0,
            ping_interval_secs: 30,
            idle_timeout_secs: 90,
        }
    }
}

impl LiveConfig {
    pub fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(self.write_timeout_secs).unwrap_or(std::time::Duration::from_secs(30))
    }

    pub fn idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn ping_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ping_interval_secs)
    }
}

/// `[compat]`: the older `/v1/conversation` and stage-coded `/chat` APIs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// Require an API key with scope `chat`. Turn off only for loopback deployments.
    pub require_api_key: bool,
    /// Profile used by these APIs; the default profile when absent.
    pub profile: Option<String>,
    /// Largest `/v1/conversation` body (images and voice arrive base64-encoded in the JSON).
    pub max_body_bytes: usize,
    /// `/v1/conversation` requests over 1 MiB handled at once; more wait up to 10 s, then 503.
    /// Peak memory of these requests is about 5 × `max_body_bytes` each.
    pub max_concurrent_large_bodies: usize,
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self { require_api_key: true, profile: None, max_body_bytes: 16 * 1024 * 1024, max_concurrent_large_bodies: 2 }
    }
}

/// `[openai]`: the OpenAI-compatible front door (`/v1/chat/completions`, `/v1/audio/*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiConfig {
    /// Largest `/v1/chat/completions` body (images arrive base64-encoded in the JSON). Requests
    /// over 1 MiB share `[compat] max_concurrent_large_bodies` with `/v1/conversation`.
    pub max_body_bytes: usize,
    /// Largest audio file `/v1/audio/transcriptions` takes (OpenAI's limit is 25 MB); its
    /// decoded length is capped by `[live] max_utterance_secs`.
    pub max_audio_bytes: usize,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self { max_body_bytes: 16 * 1024 * 1024, max_audio_bytes: 25 * 1024 * 1024 }
    }
}

/// `[metrics]`: Prometheus metrics, served at `GET /metrics` on a listener of their own.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where the metrics listener binds (`127.0.0.1:9464`); unset = no listener and nothing
    /// recorded. Env `ASTRGATE_METRICS__LISTEN`.
    pub listen: Option<SocketAddr>,
}

/// `[stage]`: the stage-code table of the `/chat` API.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StageConfig {
    /// Code → code remapping applied to the model's `<state>` tag. Replaces the built-in table when set.
    pub remap: Option<BTreeMap<String, String>>,
    /// Code → display name. Replaces the built-in table when set.
    pub names: Option<BTreeMap<String, String>>,
}

impl Config {
    /// Loads defaults ← `path` (if given) ← environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::new();
        if let Some(p) = path {
            if !p.exists() {
                return Err(ConfigError::Missing(p.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(p));
        }
        fig = fig.merge(env_provider());
        let cfg: Config = fig.extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string (used by tests and `check-config`), without the environment.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = Figment::new().merge(Toml::string(text)).extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether attachment bytes are kept in the database (`[files] storage`, by default with
    /// PostgreSQL).
    pub fn attachments_in_database(&self) -> bool {
        match self.files.storage.as_deref() {
            Some(s) => s == "database",
            None => crate::store::Backend::of(&self.database_url()) == Some(crate::store::Backend::Postgres),
        }
    }

    /// The effective database URL.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("astrgate.db").display()),
        }
    }

    /// Cross-field checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if crate::store::Backend::of(&self.database_url()).is_none() {
            return bad(format!(
                "database_url must start with sqlite:// or postgres://, got {}",
                crate::store::redact_url(&self.database_url())
            ));
        }
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") {
                return bad(format!("redis_url must start with redis://, got {}", crate::store::redact_url(url)));
            }
            if crate::store::Backend::of(&self.database_url()) != Some(crate::store::Backend::Postgres) {
                return bad(
                    "redis_url (cluster mode) needs a postgres:// database_url that every instance shares".into()
                );
            }
            let c = &self.cluster;
            if c.key_prefix.is_empty()
                || c.lease_ttl_secs < 3
                || c.run_stream_ttl_secs == 0
                || c.max_remote_followers == 0
            {
                return bad("cluster: key_prefix must not be empty, lease_ttl_secs at least 3, run_stream_ttl_secs and max_remote_followers at least 1".into());
            }
        }
        if let Some(st) = &self.files.storage
            && !matches!(st.as_str(), "local" | "database")
        {
            return bad(format!("files.storage must be \"local\" or \"database\", got {st:?}"));
        }
        if let Some(m) = self.metrics.listen
            && m.port() != 0
            && m.port() == self.listen.port()
            && (m.ip() == self.listen.ip() || m.ip().is_unspecified() || self.listen.ip().is_unspecified())
        {
            return bad(format!("metrics.listen {m} is the server's own address (listen = {})", self.listen));
        }
        if self.database_max_connections == 0 {
            return bad("database_max_connections must be at least 1".into());
        }
        if self.dashboard.username.trim().is_empty() {
            return bad("dashboard.username must not be empty".into());
        }
        if self.dashboard.login_rate_limit_burst == 0 || self.dashboard.login_rate_limit_per_sec <= 0.0 {
            return bad("dashboard login rate limit must be positive".into());
        }
        if let Some(secret) = &self.dashboard.jwt_secret
            && secret.expose_secret().len() < 32
        {
            return bad("dashboard.jwt_secret must be at least 32 bytes (or leave it unset to generate one)".into());
        }
        if self.dashboard.login_failure_budget == 0 || self.dashboard.login_failures_per_min == 0 {
            return bad("dashboard.login_failure_budget and login_failures_per_min must be at least 1".into());
        }
        if self.dashboard.login_threads == 0 {
            return bad("dashboard.login_threads must be at least 1".into());
        }
        if let Some(dir) = &self.dashboard.webui_dir
            && !dir.join("index.html").is_file()
        {
            return bad(format!("dashboard.webui_dir {} has no index.html", dir.display()));
        }
        if self.openai.max_body_bytes < 1024 || self.openai.max_audio_bytes < 1024 {
            return bad("openai.max_body_bytes and openai.max_audio_bytes must be at least 1024".into());
        }
        if !matches!(self.logging.format.as_str(), "text" | "json") {
            return bad(format!("logging.format must be \"text\" or \"json\", got {:?}", self.logging.format));
        }
        let mut ids = HashSet::new();
        let mut defaults = 0;
        for p in &self.providers {
            if p.id.trim().is_empty() {
                return bad("providers[].id must not be empty".into());
            }
            if !ids.insert(p.id.as_str()) {
                return bad(format!("duplicate provider id: {}", p.id));
            }
            if p.kind != "openai" {
                return bad(format!("providers[{}].type must be \"openai\", got {:?}", p.id, p.kind));
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return bad(format!("providers[{}].base_url must be an http(s) URL", p.id));
            }
            if p.default {
                defaults += 1;
            }
            if p.api_key.is_some() && !p.api_keys.is_empty() {
                return bad(format!("providers[{}]: set either api_key or api_keys, not both", p.id));
            }
            if p.api_keys.iter().any(|k| k.expose_secret().trim().is_empty()) {
                return bad(format!("providers[{}].api_keys must not contain an empty key", p.id));
            }
            if p.retries > MAX_PROVIDER_RETRIES {
                return bad(format!("providers[{}].retries must be at most {MAX_PROVIDER_RETRIES}", p.id));
            }
        }
        if defaults > 1 {
            return bad("at most one provider may have default = true".into());
        }
        for p in &self.providers {
            let mut seen = HashSet::new();
            for f in &p.fallbacks {
                if f == &p.id {
                    return bad(format!("providers[{}].fallbacks must not name the provider itself", p.id));
                }
                if !ids.contains(f.as_str()) {
                    return bad(format!("providers[{}].fallbacks refers to unknown provider {f:?}", p.id));
                }
                if !seen.insert(f.as_str()) {
                    return bad(format!("providers[{}].fallbacks names {f:?} twice", p.id));
                }
                // The prompt is built once, for the provider asked: its PDF parts must suit the fallback.
                if p.pdf_input == PdfInput::File
                    && self.providers.iter().any(|q| &q.id == f && q.pdf_input != PdfInput::File)
                {
                    return bad(format!(
                        "providers[{}] sends PDFs as files (pdf_input = \"file\"), so its fallback {f:?} must too",
                        p.id
                    ));
                }
            }
        }
        let mut pids = HashSet::new();
        let mut pdefaults = 0;
        for p in &self.profiles {
            if p.id.trim().is_empty() {
                return bad("profiles[].id must not be empty".into());
            }
            if !pids.insert(p.id.as_str()) {
                return bad(format!("duplicate profile id: {}", p.id));
            }
            if let Some(prov) = &p.provider
                && !ids.contains(prov.as_str())
            {
                return bad(format!("profiles[{}].provider refers to unknown provider {:?}", p.id, prov));
            }
            if p.default {
                pdefaults += 1;
            }
        }
        if pdefaults > 1 {
            return bad("at most one profile may have default = true".into());
        }
        // `default` is how the API names the default profile; another profile cannot take it.
        let default_idx = self.profiles.iter().position(|p| p.default).unwrap_or(0);
        for (i, p) in self.profiles.iter().enumerate() {
            if i != default_idx && (p.id == "default" || p.name.as_deref().map(str::trim) == Some("default")) {
                return bad(format!(
                    "profiles[{}]: id and name \"default\" are reserved for the default profile",
                    p.id
                ));
            }
        }
        if let Some(stt) = &self.stt
            && !matches!(stt.kind.as_str(), "openai" | "pocketsphinx" | "none")
        {
            return bad(format!("stt.type must be openai, pocketsphinx or none, got {:?}", stt.kind));
        }
        if let Some(tts) = &self.tts
            && !matches!(tts.kind.as_str(), "openai" | "espeak-ng" | "none")
        {
            return bad(format!("tts.type must be openai, espeak-ng or none, got {:?}", tts.kind));
        }
        for (what, c) in [
            ("stt", self.stt.as_ref().map(|s| (&s.kind, &s.base_url))),
            ("tts", self.tts.as_ref().map(|t| (&t.kind, &t.base_url))),
        ] {
            if let Some((kind, url)) = c
                && kind == "openai"
                && url.is_none()
            {
                return bad(format!("{what}.base_url is required for type openai"));
            }
        }
        let mut plat = HashSet::new();
        for p in &self.platforms {
            if p.kind != "webhook" {
                return bad(format!("platforms[{}].type must be \"webhook\", got {:?}", p.id, p.kind));
            }
            if p.id == "webchat" || !plat.insert(p.id.as_str()) {
                return bad(format!("duplicate or reserved platform id: {}", p.id));
            }
            if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                return bad(format!("platforms[{}].url must be an http(s) URL", p.id));
            }
            if p.max_attempts == 0 {
                return bad(format!("platforms[{}].max_attempts must be at least 1", p.id));
            }
        }
        if let Some(profile) = &self.compat.profile
            && !pids.contains(profile.as_str())
        {
            return bad(format!("compat.profile refers to unknown profile {profile:?}"));
        }
        if self.server.header_read_timeout_secs == 0 || self.server.request_body_timeout_secs == 0 {
            return bad("server timeouts must be at least 1 second".into());
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections must be at least 1".into());
        }
        if self.compat.max_concurrent_large_bodies == 0 {
            return bad("compat.max_concurrent_large_bodies must be at least 1".into());
        }
        let f = &self.files;
        if f.document_text_max_bytes < 1024 || f.document_timeout_secs == 0 || f.document_max_concurrent == 0 {
            return bad(
                "files.document_text_max_bytes must be at least 1024, document_timeout_secs and document_max_concurrent at least 1"
                    .into(),
            );
        }
        if self.runs.max_events < 16 {
            return bad("runs.max_events must be at least 16".into());
        }
        if self.runs.max_log_bytes < 4096 || self.runs.max_active == 0 {
            return bad("runs.max_log_bytes must be at least 4096 and runs.max_active at least 1".into());
        }
        if self.live.ping_interval_secs == 0 || self.live.idle_timeout_secs <= self.live.ping_interval_secs {
            return bad("live.ping_interval_secs must be at least 1 and below live.idle_timeout_secs".into());
        }
        if !(self.live.write_timeout_secs.is_finite() && self.live.write_timeout_secs > 0.0) {
            return bad("live.write_timeout_secs must be a positive number".into());
        }
        Ok(())
    }
}

/// `ASTRGATE_LISTEN`, `ASTRGATE_DATA_DIR`, `ASTRGATE_DATABASE_URL` and `ASTRGATE_<SECTION>__<KEY>`.
fn env_provider() -> Env {
    // ASTRGATE_CONFIG names the file itself and is not a config key.
    Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"])
}

// Figment parses environment values as TOML-like values, so `ASTRGATE_DASHBOARD__PASSWORD=12345`
// arrives as an integer. Free-form strings accept any scalar and keep its text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    S(String),
    I(i64),
    U(u64),
    F(f64),
    B(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::U(u) => u.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }
    }
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Scalar::deserialize(d)?.into_string())
}

fn lenient_string_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(Scalar::into_string))
}

fn lenient_secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(Vec::<Scalar>::deserialize(d)?.into_iter().map(|s| SecretString::from(s.into_string())).collect())
}

fn lenient_secret_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| SecretString::from(s.into_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::from_toml("").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:6185");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.database_url(), "sqlite://./data/astrgate.db");
        assert_eq!(c.dashboard.token_ttl_days, 7);
        assert_eq!(c.audit.retention_days, 90);
        let c = Config::from_toml("[audit]\nretention_days = 0\n").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.audit.retention_days, 0, "0 keeps the audit log forever");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml("[dashboard]\nusername = \"a\"\npasword = \"x\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("pasword"), "{err}");
        let err = Config::from_toml("lissen = \"1.2.3.4:5\"\n").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("lissen"), "{err}");
    }

    #[test]
    fn pdf_input_is_text_or_file() {
        let provider = "[[providers]]\nid = \"p\"\nbase_url = \"http://x/v1\"\nmodel = \"m\"\n";
        let c = Config::from_toml(provider).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.providers[0].pdf_input, PdfInput::Text);
        let c = Config::from_toml(&format!("{provider}pdf_input = \"file\"\n")).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.providers[0].pdf_input, PdfInput::File);
        let err = Config::from_toml(&format!("{provider}pdf_input = \"pdf\"\n")).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("pdf_input") && err.contains("`text` or `file`"), "{err}");
    }

    #[test]
    fn document_limits_are_checked() {
        let err = Config::from_toml("[files]\ndocument_max_concurrent = 0\n").err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("document_max_concurrent"));
    }

    #[test]
    fn numeric_secrets_are_strings() {
        let c = Config::from_toml("[dashboard]\npassword = 12345678\n").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.dashboard.password.as_ref().map(|s| s.expose_secret().to_string()), Some("12345678".into()));
    }

    #[test]
    fn profile_must_name_a_known_provider() {
        let err = Config::from_toml("[[profiles]]\nid = \"a\"\ndefault = true\n[[profiles]]\nid = \"default\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("reserved for the default profile"), "{err}");
        let err = Config::from_toml("[[profiles]]\nid = \"a\"\n[[profiles]]\nid = \"b\"\nname = \"default\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("reserved for the default profile"), "{err}");
        let err = Config::from_toml("[[profiles]]\nid = \"p\"\nprovider = \"nope\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn provider_keys_retries_and_fallbacks_are_checked() {
        let p = |id: &str, extra: &str| {
            format!("[[providers]]\nid = \"{id}\"\nbase_url = \"http://x/v1\"\nmodel = \"m\"\n{extra}")
        };
        let err = |toml: String| Config::from_toml(&toml).err().map(|e| e.to_string()).unwrap_or_default();
        let c =
            Config::from_toml(&format!("{}{}", p("a", "api_keys = [\"k1\", 2]\nfallbacks = [\"b\"]\n"), p("b", "")))
                .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            c.providers[0].api_keys.iter().map(|k| k.expose_secret().to_string()).collect::<Vec<_>>(),
            ["k1", "2"]
        );
        assert_eq!((c.providers[0].retries, c.providers[1].retries), (2, 2));
        assert_eq!(c.providers[0].fallbacks, ["b"]);
        assert!(!format!("{:?}", c.providers[0]).contains("k1"), "keys never show in Debug");
        let e = err(p("a", "api_key = \"k\"\napi_keys = [\"k2\"]\n"));
        assert!(e.contains("either api_key or api_keys"), "{e}");
        assert!(err(p("a", "api_keys = [\" \"]\n")).contains("empty key"));
        assert!(err(p("a", "retries = 11\n")).contains("retries must be at most 10"));
        let e = err(p("a", "fallbacks = [\"nope\"]\n"));
        assert!(e.contains("fallbacks refers to unknown provider \"nope\""), "{e}");
        assert!(err(p("a", "fallbacks = [\"a\"]\n")).contains("must not name the provider itself"));
        let e = err(format!("{}{}", p("a", "fallbacks = [\"b\", \"b\"]\n"), p("b", "")));
        assert!(e.contains("names \"b\" twice"), "{e}");
    }
}
