//! Prometheus metrics over HTTP: the layer that counts and times every request of the main
//! router (by route template), and the metrics listener (`[metrics] listen`) that serves
//! `GET /metrics` and nothing else. What is recorded, and where, is in [`crate::metrics`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::app::AppState;

/// Connections the metrics listener serves at once (scrapers; more are closed at once).
const MAX_CONNECTIONS: usize = 64;

/// Adds the request metrics to `app` when `[metrics] listen` is set; without it the router is
/// left as it is, so requests pay nothing.
pub fn layer(app: Router<AppState>, state: &AppState) -> Router<AppState> {
    if state.config.metrics.listen.is_some() { app.layer(from_fn(track)) } else { app }
}

/// Counts and times one request under its route template (the router has matched the route
/// when this runs; a request that matched none is [`crate::metrics::UNMATCHED`]).
async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let res = next.run(req).await;
    crate::metrics::http_request(
        route.as_ref().map_or(crate::metrics::UNMATCHED, MatchedPath::as_str),
        method.as_str(),
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}

/// The metrics listener's routes: `GET /metrics`, and 404 for every other path.
pub fn listener_router() -> Router {
    Router::new().route("/metrics", get(scrape)).fallback(|| async { (StatusCode::NOT_FOUND, "Not Found\n") })
}

async fn scrape() -> Response {
    match crate::metrics::render() {
        Some(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics are not recording\n").into_response(),
    }
}

/// Binds `[metrics] listen` and serves it on the app's task tracker until shutdown; returns the
/// bound address.
pub async fn start_listener(state: &AppState, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding metrics.listen {addr}"))?;
    let bound = listener.local_addr()?;
    let counter = crate::server::ConnectionCounter::new(crate::server::Limits {
        header_read_timeout: Duration::from_secs(state.config.server.header_read_timeout_secs),
        max_connections: MAX_CONNECTIONS,
        max_connections_per_ip: 0,
    });
    let (shutdown, grace) = (state.shutdown.clone(), Duration::from_secs(state.config.server.shutdown_grace_secs));
    state.tasks.spawn(async move {
        let connections = TaskTracker::new();
        crate::server::serve(listener, listener_router(), counter, shutdown, connections.clone()).await;
        connections.close();
        let _ = tokio::time::timeout(grace, connections.wait()).await;
    });
    tracing::info!(addr = %bound, "metrics listening (GET /metrics)");
    Ok(bound)
}
