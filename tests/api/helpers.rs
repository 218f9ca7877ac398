//! `spawn_app()` and friends.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Once};

use astrgate::app::{AppState, Server};
use astrgate::config::Config;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "test-password-1";

#[allow(dead_code)]
pub struct TestApp {
    pub base: String,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// A valid dashboard JWT for the configured user.
    pub jwt: String,
    pub state: AppState,
    pub dir: Arc<TempDir>,
    server: Option<Server>,
}

fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            astrgate::telemetry::init(&astrgate::config::LoggingConfig {
                level: "debug".into(),
                format: "text".into(),
            });
        }
    });
}

/// The config every test starts from: temp data dir, known password, short delays.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::from_toml("").unwrap();
    c.data_dir = dir.to_path_buf();
    c.dashboard.password = Some(SecretString::from(PASSWORD));
    c.dashboard.login_failure_delay_ms = 20;
    c.server.shutdown_grace_secs = 3;
    c
}

/// A plain HTTP client (rustls needs its crypto provider installed first).
pub fn client() -> reqwest::Client {
    astrgate::util::install_crypto_provider();
    reqwest::Client::new()
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(f: impl FnOnce(&mut Config)) -> TestApp {
    spawn_in(Arc::new(tempfile::tempdir().unwrap()), f).await
}

/// Starts the app on a data dir that may already hold state (restart tests).
pub async fn spawn_in(dir: Arc<TempDir>, f: impl FnOnce(&mut Config)) -> TestApp {
    init_test_log();
    let mut cfg = test_config(dir.path());
    f(&mut cfg);
    let state = AppState::build(cfg, CancellationToken::new()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(state.clone(), listener).await.unwrap();
    let addr = server.addr;
    let jwt = state.dashboard.issue(&state.dashboard.username);
    TestApp { base: format!("http://{addr}"), addr, http: client(), jwt, state, dir, server: Some(server) }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Creates an API key through the dashboard endpoint and returns the raw key.
    pub async fn key(&self, scopes: &[&str]) -> String {
        let (status, body) = send(
            self.http
                .post(self.url("/api/v1/api-keys"))
                .bearer_auth(&self.jwt)
                .json(&json!({"name": "test", "scopes": scopes})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["api_key"].as_str().unwrap().to_string()
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// Sends and returns (status, JSON body). Panics when the body is not JSON.
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts AstrBot's error envelope with this status and message.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_message: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body, &json!({"status": "error", "message": want_message, "data": null}));
}
