//! AstrBot 4.29.3's own WebUI, from its PyPI wheel, driven in Debian's Chromium against the real
//! app (`tests/browser/webui.mjs`): log in, create a key on Settings → OpenAPI, chat on the ChatUI
//! page, reload. `scripts/test.sh` installs Chromium and playwright-core, downloads the wheel and
//! sets `ASTRBOT_WEBUI_DIST`; without it (a bare `cargo test`) this test says so and passes.

use std::time::Duration;

use serde_json::json;

use crate::fake_llm::FakeLlm;
use crate::helpers::*;

#[tokio::test]
async fn astrbot_webui_logs_in_creates_a_key_chats_and_reloads() {
    let Some(dist) = std::env::var_os("ASTRBOT_WEBUI_DIST") else {
        eprintln!("skipped: ASTRBOT_WEBUI_DIST is not set (scripts/test.sh sets it)");
        return;
    };
    let fake = FakeLlm::start().await;
    let extra = astrgate::config::Config::from_toml(&fake.provider_toml("fake")).unwrap();
    let app = spawn_with(move |c| {
        c.providers = extra.providers;
        c.dashboard.webui_dir = Some(dist.into());
    })
    .await;
    let root = env!("CARGO_MANIFEST_DIR");
    let run = tokio::process::Command::new("node")
        .arg(format!("{root}/tests/browser/webui.mjs"))
        .arg(&app.base)
        .arg(format!("{root}/openapi.json"))
        .env("WEBUI_USER", app.state.dashboard.username())
        .env("WEBUI_PASSWORD", PASSWORD)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run).await.expect("the browser run finished").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser run failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no summary ({e}):\n{stdout}\n{stderr}"));
    eprintln!("browser run: {summary}");

    // What the browser did is what the server holds.
    let (_, keys) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    let key = keys["data"].as_array().unwrap().iter().find(|k| k["name"] == "browser-key").expect("the key is listed");
    assert_eq!(key["scopes"], json!(["bot", "provider", "im", "chat", "file"]), "the page's default scopes");
    assert_eq!(key["key_prefix"], summary["key_prefix"]);
    assert!(key["expires_at"].is_string(), "the page's default expiry (30 days)");
    let sid = summary["session_id"].as_str().unwrap();
    let (s, d) = send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{sid}"))).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200, "{d}");
    let history = d["data"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{d}");
    assert_eq!(history[0]["content"]["message"][0]["text"], "hello from chromium");
    assert_eq!(history[1]["content"]["message"][0]["text"], "Echo: hello from chromium");
    assert_eq!(d["data"]["session"]["display_name"], "hello from chromium");
    // The page asked the chosen provider (the only one), with the question.
    assert!(fake.requests().iter().any(|r| r.to_string().contains("hello from chromium")));
}
