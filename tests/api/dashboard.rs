//! Dashboard login: tokens, failure delay, rate limit, cookie, restart persistence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

async fn login(
    app: &TestApp,
    path: &str,
    username: &str,
    password: &str,
) -> (reqwest::StatusCode, Value, Option<String>) {
    let res =
        app.http.post(app.url(path)).json(&json!({"username": username, "password": password})).send().await.unwrap();
    let status = res.status();
    let cookie = res.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string());
    (status, res.json().await.unwrap(), cookie)
}

#[tokio::test]
async fn login_returns_a_working_token_on_both_paths() {
    let app = spawn_app().await;
    for path in ["/api/auth/login", "/api/v1/auth/login"] {
        let (s, b, cookie) = login(&app, path, "astrgate", PASSWORD).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["status"], "ok");
        assert_eq!(b["data"]["username"], "astrgate");
        let token = b["data"]["token"].as_str().unwrap();
        let claims = app.state.dashboard.decode(token).unwrap();
        let exp = claims.exp - chrono::Utc::now().timestamp();
        assert!((7 * 86_400 - 60..=7 * 86_400).contains(&exp), "exp in {exp}s");
        let cookie = cookie.unwrap();
        assert!(
            cookie.starts_with(&format!("astrbot_dashboard_jwt={token};")) && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let (s, _) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(token)).await;
        assert_eq!(s, 200);
    }
}

#[tokio::test]
async fn wrong_credentials_are_401_after_the_fixed_delay() {
    let app = spawn_with(|c| c.dashboard.login_failure_delay_ms = 300).await;
    let t = Instant::now();
    let (s, b, cookie) = login(&app, "/api/auth/login", "astrgate", "wrong").await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_error(s, &b, 401, "用户名或密码错误");
    assert!(cookie.is_none());
    let (s, b, _) = login(&app, "/api/auth/login", "someone", PASSWORD).await;
    assert_error(s, &b, 401, "用户名或密码错误");
    let (s, b) = send(app.http.post(app.url("/api/auth/login")).body("{not json")).await;
    assert_error(s, &b, 400, "Invalid request payload");
}

#[tokio::test]
async fn login_is_rate_limited_per_client() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let (s, _, _) = login(&app, "/api/v1/auth/login", "astrgate", "wrong").await;
        assert_eq!(s, 401);
    }
    // Burst of 3 spent: even the right password is refused now.
    let (s, b, _) = login(&app, "/api/v1/auth/login", "astrgate", PASSWORD).await;
    assert_error(s, &b, 429, "验证尝试过于频繁，系统可能正在遭受暴力破解");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _, _) = login(&app, "/api/v1/auth/login", "astrgate", PASSWORD).await;
    assert_eq!(s, 200, "one token refills per second");
}

#[tokio::test]
async fn a_restart_keeps_keys_and_the_jwt_secret() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_in(dir.clone(), |_| {}).await;
    let key = app.key(&["config"]).await;
    let (_, b, _) = login(&app, "/api/auth/login", "astrgate", PASSWORD).await;
    let token = b["data"]["token"].as_str().unwrap().to_string();
    app.stop().await;

    let app = spawn_in(dir, |_| {}).await;
    let (s, _) = send(app.http.get(app.url("/api/v1/configs")).bearer_auth(&key)).await;
    assert_eq!(s, 200, "the key survives a restart");
    let (s, _) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&token)).await;
    assert_eq!(s, 200, "the JWT secret survives a restart");
}

#[tokio::test]
async fn a_generated_password_is_stored_hashed_and_reused() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_in(dir.clone(), |c| c.dashboard.password = None).await;
    let stored = app.state.store.get_setting("dashboard_password_hash").await.unwrap().unwrap();
    assert!(stored.starts_with("$argon2id$"), "only the hash is stored");
    app.stop().await;
    let app = spawn_in(dir, |c| c.dashboard.password = None).await;
    assert_eq!(app.state.store.get_setting("dashboard_password_hash").await.unwrap().unwrap(), stored);
    let (s, _, _) = login(&app, "/api/auth/login", "astrgate", PASSWORD).await;
    assert_eq!(s, 401, "the test password is not the generated one");
}
