//! Application wiring: [`AppState`], start-up, background tasks and graceful shutdown.
//!
//! Shutdown is one [`CancellationToken`]: SIGINT/SIGTERM cancel it, the listener stops
//! accepting, open SSE/WebSocket streams and runs (which hold child tokens) wind down, spawned
//! work tracked by the [`TaskTracker`] gets `shutdown_grace_secs` to finish, and pending
//! `last_used_at` values are flushed last.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::Agent;
use crate::agent::profiles::Profiles;
use crate::agent::prompt::PromptBuilder;
use crate::audit::Audit;
use crate::auth::api_key::ApiKeys;
use crate::auth::dashboard::DashboardAuth;
use crate::config::Config;
use crate::providers::Providers;
use crate::store::{self, Store};

mod cluster;

/// Shared state handed to every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub keys: Arc<ApiKeys>,
    pub dashboard: Arc<DashboardAuth>,
    /// The audit log: logins, failed logins, API-key changes (`Audit::record`).
    pub audit: Arc<Audit>,
    /// The domain: turns, runs, sessions, profiles, providers, proactive messages.
    pub agent: Arc<Agent>,
    /// Cancelled on shutdown; long-lived tasks hold child tokens.
    pub shutdown: CancellationToken,
    /// Every spawned long task, so shutdown can wait for it.
    pub tasks: TaskTracker,
    /// Open connections, capped in all and per client address.
    pub connections: Arc<crate::server::ConnectionCounter>,
    /// Large `/v1/conversation` bodies being handled at once (`[compat] max_concurrent_large_bodies`).
    pub large_bodies: Arc<tokio::sync::Semaphore>,
    /// When this process started (Unix seconds), as AstrBot's `start_time`.
    pub started_at: i64,
}

impl axum::extract::FromRef<AppState> for crate::auth::AuthState {
    fn from_ref(s: &AppState) -> Self {
        crate::auth::AuthState {
            keys: s.keys.clone(),
            dashboard: s.dashboard.clone(),
            trust_forwarded_for: s.config.server.trust_forwarded_for,
            compat_requires_key: s.config.compat.require_api_key,
            governor: s.agent.governor.clone(),
        }
    }
}

impl AppState {
    /// Write deadline and ping interval of every WebSocket.
    pub fn socket_timing(&self) -> crate::http::ws::Timing {
        crate::http::ws::Timing {
            tasks: self.tasks.clone(),
            write_timeout: self.config.live.write_timeout(),
            ping_interval: self.config.live.ping_interval(),
        }
    }

    /// What authentication needs of this state.
    pub fn auth(&self) -> crate::auth::AuthState {
        axum::extract::FromRef::from_ref(self)
    }

    /// Opens the store and prepares every service.
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<AppState> {
        crate::util::install_crypto_provider();
        if config.metrics.listen.is_some() {
            crate::metrics::install();
        }
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let url = config.database_url();
        let store = store::connect_with(&url, config.database_max_connections)
            .await
            .with_context(|| format!("opening database {}", store::redact_url(&url)))?;
        let tasks = TaskTracker::new();
        let cluster = match &config.redis_url {
            Some(url) => Some(cluster::open(url, &config)?),
            None => None,
        };
        let notices = match &cluster {
            Some(c) => Some(c.start(&tasks, shutdown.clone()).await),
            None => None,
        };
        // Runs a crash left in flight are closed before anything else can touch their sessions
        // (in cluster mode: only those of instances that are gone).
        cluster::recover(store.as_ref(), cluster.as_deref(), config.cluster.lease_ttl_secs).await;
        let shared = cluster.as_ref().map(|c| Arc::new(cluster::AuthShared(c.clone())) as Arc<dyn crate::auth::Shared>);
        let keys = Arc::new(
            ApiKeys::new(store.clone(), Duration::from_secs(config.api_keys.cache_ttl_secs))
                .with_shared(shared.clone()),
        );
        let dashboard =
            Arc::new(DashboardAuth::init(&config.dashboard, store.clone(), &config.data_dir, shared).await?);
        let governor = crate::governance::Governor::with_refusal_hook(
            store.clone(),
            cluster.as_ref().map(|c| Arc::new(cluster::Counters(c.clone())) as Arc<dyn crate::governance::Shared>),
            tasks.clone(),
            crate::metrics::rate_limited,
        );
        let audit = Arc::new(Audit::new(store.clone(), config.audit.retention_days));
        let profiles = Arc::new(Profiles::from_config(&config));
        let providers = Arc::new(Providers::from_config(&config)?);
        let blobs = Arc::new(if config.attachments_in_database() {
            crate::attachments::Blobs::Database { store: store.clone(), tmp: config.data_dir.join("tmp") }
        } else {
            crate::attachments::Blobs::Local(config.data_dir.join("attachments"))
        });
        let prompt = Arc::new(PromptBuilder::new(blobs.clone(), &config.files));
        let platforms: std::collections::HashMap<_, _> = config
            .platforms
            .iter()
            .map(|p| crate::platforms::webhook::Webhook::new(p).map(|w| (p.id.clone(), w)))
            .collect::<Result<_, _>>()?;
        let agent = Arc::new(Agent {
            store: store.clone(),
            runs: Default::default(),
            providers,
            profiles,
            prompt,
            bus: Arc::default(),
            cluster: cluster.clone(),
            platforms: Arc::new(platforms),
            compat_profile_id: config.compat.profile.clone(),
            min_sentence_chars: config.live.min_sentence_chars,
            max_events: config.runs.max_events,
            max_log_bytes: config.runs.max_log_bytes,
            max_active: config.runs.max_active,
            audio: crate::agent::audio::AudioCodecs::new(config.live.max_utterance_secs),
            blobs,
            governor,
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        });
        let config_large = config.compat.max_concurrent_large_bodies;
        let connections = crate::server::ConnectionCounter::new(crate::server::Limits {
            header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
            max_connections: config.server.max_connections,
            max_connections_per_ip: config.server.max_connections_per_ip,
        });
        if let (Some(rx), Some(c)) = (notices, &cluster) {
            cluster::spawn_dispatcher(rx, agent.clone(), keys.clone(), dashboard.clone(), &tasks, shutdown.clone());
            cluster::spawn_sweeper(c.clone(), store.clone(), config.cluster.lease_ttl_secs, &tasks, shutdown.clone());
        }
        Ok(AppState {
            config,
            store,
            keys,
            dashboard,
            audit,
            agent,
            shutdown,
            tasks,
            connections,
            large_bodies: Arc::new(tokio::sync::Semaphore::new(config_large)),
            started_at: chrono::Utc::now().timestamp(),
        })
    }

    /// Starts periodic maintenance: batched `last_used_at` and usage writes, old-run purging, and
    /// the audit log's writer and purge.
    fn spawn_background(&self) {
        self.audit.start(&self.tasks);
        let s = self.clone();
        let every = Duration::from_secs(self.config.api_keys.usage_flush_secs.max(1));
        self.tasks.spawn(async move {
            let governor = &s.agent.governor;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = s.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                    _ = governor.book().full.notified() => {}
                }
                if let Err(e) = governor.flush().await {
                    tracing::warn!(error = %e, "writing key usage failed; kept for the next flush");
                }
            }
        });
        let s = self.clone();
        let every = Duration::from_secs(self.config.api_keys.last_used_flush_secs.max(1));
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = s.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = s.keys.flush_touches().await {
                            tracing::warn!(error = %e, "flushing api key last_used_at failed");
                        }
                    }
                }
            }
        });
        let s = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tokio::select! {
                    _ = s.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        let cutoff = store::now_micros() - (s.config.runs.retention_hours as i64) * 3_600_000_000;
                        match s.store.purge_runs(cutoff).await {
                            Ok(n) if n > 0 => tracing::info!(purged = n, "purged old runs"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "purging old runs failed"),
                        }
                    }
                }
            }
        });
    }
}

/// A running server: its address and the handle to stop it.
pub struct Server {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served (`[metrics] listen`, bound), when it is.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    join: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Binds `listener`, serves until the state's shutdown token is cancelled, then drains.
    pub async fn start(state: AppState, listener: TcpListener) -> anyhow::Result<Server> {
        let addr = listener.local_addr()?;
        let metrics_addr = match state.config.metrics.listen {
            Some(m) => Some(crate::http::metrics::start_listener(&state, m).await?),
            None => None,
        };
        state.spawn_background();
        let app = crate::http::router(state.clone());
        let s = state.clone();
        let join = tokio::spawn(async move {
            let connections = TaskTracker::new();
            crate::server::serve(listener, app, s.connections.clone(), s.shutdown.clone(), connections.clone()).await;
            let grace = Duration::from_secs(s.config.server.shutdown_grace_secs);
            connections.close();
            if tokio::time::timeout(grace, connections.wait()).await.is_err() {
                tracing::warn!("shutdown grace period elapsed; closing remaining connections");
            }
            // No request is left to record anything: what the audit log has queued is written.
            s.audit.close().await;
            s.tasks.close();
            if tokio::time::timeout(grace, s.tasks.wait()).await.is_err() {
                tracing::warn!("background tasks did not finish within the grace period");
            }
            if let Err(e) = s.keys.flush_touches().await {
                tracing::warn!(error = %e, "final last_used_at flush failed");
            }
            if let Err(e) = s.agent.governor.flush().await {
                tracing::warn!(error = %e, "final key usage flush failed");
            }
            s.store.close().await;
            Ok(())
        });
        Ok(Server { addr, metrics_addr, state, join })
    }

    /// Cancels and waits for the drain.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.shutdown.cancel();
        self.join.await.context("server task")?
    }

    /// Waits for the server to end on its own (signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.join.await.context("server task")?
    }
}

/// `astrgate serve`: binds, serves, and stops cleanly on SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let listen = config.listen;
    if !config.compat.require_api_key && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "[compat] require_api_key = false on a non-loopback address: /v1/conversation and /chat are open to anyone who can reach it");
    }
    if let Some(m) = config.metrics.listen.filter(|m| !m.ip().is_loopback()) {
        tracing::warn!(metrics.listen = %m, "[metrics] listen is not a loopback address: /metrics has no authentication");
    }
    crate::server::raise_fd_limit();
    let state = AppState::build(config, shutdown.clone()).await?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let server = Server::start(state, listener).await?;
    tracing::info!(addr = %server.addr, "astrgate listening");
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        shutdown.cancel();
    });
    server.wait().await?;
    tracing::info!("astrgate stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
