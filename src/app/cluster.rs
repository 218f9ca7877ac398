//! Cluster mode wiring: opening the Redis coordination, crash recovery that closes only what
//! instances that are gone left behind, and the dispatcher that applies what other instances
//! announce (a stop, a push, a key or account change) to this instance's services.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::Agent;
use crate::agent::checkpoint::{self, Scope};
use crate::auth::api_key::ApiKeys;
use crate::auth::dashboard::DashboardAuth;
use crate::bus::cluster::{Cluster, Notice, Settings};
use crate::config::Config;
use crate::store::{Store, now_micros};

/// Prepares the cluster connection (Redis may be down at start: the instance starts anyway).
pub fn open(url: &str, config: &Config) -> anyhow::Result<Arc<Cluster>> {
    let c = &config.cluster;
    let instance_id = c.instance_id.clone().unwrap_or_else(|| {
        let mut r = [0u8; 4];
        crate::util::fill_random(&mut r);
        format!("{}-{}", hex::encode(r), std::process::id())
    });
    let settings = Settings {
        redis_url: url.to_string(),
        key_prefix: c.key_prefix.clone(),
        instance_id,
        lease_ttl: Duration::from_secs(c.lease_ttl_secs),
        run_stream_ttl: Duration::from_secs(c.run_stream_ttl_secs),
        max_followers: c.max_remote_followers,
    };
    Cluster::new(settings).map_err(|e| anyhow::anyhow!("redis_url {}: {e}", crate::store::redact_url(url)))
}

/// Closes runs and replies left in flight: all of them for a single instance; in cluster mode
/// only those of instances whose heartbeat has lapsed (and not saved for a lease TTL), and
/// nothing at all while Redis is away (then nobody can tell who is gone).
pub async fn recover(store: &dyn Store, cluster: Option<&Cluster>, lease_ttl_secs: u64) {
    let result = match cluster {
        None => checkpoint::recover(store, Scope::All).await,
        Some(c) => match c.live_instances() {
            Some(live) => {
                let idle_before = now_micros() - (lease_ttl_secs as i64) * 1_000_000;
                checkpoint::recover(store, Scope::DeadInstances { live: &live, idle_before }).await
            }
            None => {
                tracing::warn!("Redis unreachable: runs left by stopped instances are closed once it is back");
                return;
            }
        },
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "closing runs left in flight failed");
    }
}

/// Repeats [`recover`] every two lease TTLs: an instance that dies leaves its runs to the others.
pub fn spawn_sweeper(
    cluster: Arc<Cluster>,
    store: Arc<dyn Store>,
    lease_ttl_secs: u64,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(lease_ttl_secs * 2));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => recover(store.as_ref(), Some(&cluster), lease_ttl_secs).await,
            }
        }
    });
}

/// Applies the other instances' notices here.
pub fn spawn_dispatcher(
    mut rx: mpsc::Receiver<Notice>,
    agent: Arc<Agent>,
    keys: Arc<ApiKeys>,
    dashboard: Arc<DashboardAuth>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    tasks.spawn(async move {
        loop {
            let notice = tokio::select! {
                _ = shutdown.cancelled() => break,
                n = rx.recv() => n,
            };
            let Some(notice) = notice else { break };
            match notice {
                Notice::Stop { session_id } => {
                    let n = agent.stop_local(&session_id);
                    tracing::debug!(session.id = %session_id, stopped = n, "stop from another instance");
                }
                Notice::Push { push } => agent.deliver_push(push),
                Notice::KeyChanged { key_id } => keys.invalidate(&key_id),
                Notice::AccountChanged => reload(&dashboard).await,
                Notice::Resynced => {
                    // Notices may have been missed: nothing cached may be trusted.
                    keys.clear_cache();
                    reload(&dashboard).await;
                }
            }
        }
    });
}

async fn reload(dashboard: &DashboardAuth) {
    if let Err(e) = dashboard.reload().await {
        tracing::error!(error = %e, "reloading the dashboard account failed");
    }
}

/// Authentication's view of the cluster.
pub struct AuthShared(pub Arc<Cluster>);

#[async_trait::async_trait]
impl crate::auth::Shared for AuthShared {
    async fn key_changed(&self, key_id: &str) {
        self.0.notify(Notice::KeyChanged { key_id: key_id.to_string() }).await;
    }

    async fn account_changed(&self) {
        self.0.notify(Notice::AccountChanged).await;
    }

    async fn take(&self, bucket: &str, burst: f64, per_sec: f64, delta: f64) -> Option<(bool, f64)> {
        self.0.take_bucket(bucket, burst, per_sec, delta).await
    }
}

/// Governance's view of the cluster: keys' buckets, run slots and day tokens.
pub struct Counters(pub Arc<Cluster>);

#[async_trait::async_trait]
impl crate::governance::Shared for Counters {
    async fn take(&self, name: &str, burst: f64, per_sec: f64) -> Option<(bool, f64)> {
        self.0.take_bucket(name, burst, per_sec, 1.0).await
    }

    async fn take_slot(&self, key_id: &str, limit: u32) -> Option<bool> {
        self.0.take_slot(key_id, limit).await
    }

    async fn give_slot(&self, key_id: &str) {
        self.0.give_slot(key_id).await
    }

    async fn add_tokens(&self, key_id: &str, day: &str, stored: i64, add: i64) -> Option<i64> {
        self.0.add_tokens(key_id, day, stored, add).await
    }
}
