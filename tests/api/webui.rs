//! What AstrBot's WebUI needs besides chat: its scope vocabulary on key creation and `chat:admin`,
//! the auth endpoints (setup status, logout revoking, account change), the layout and onboarding
//! endpoints, config routes, and serving a WebUI build at `/` with API routes winning.

use serde_json::{Value, json};

use crate::fake_llm::FakeLlm;
use crate::helpers::*;

#[tokio::test]
async fn astrbot_scopes_as_the_settings_page_sends_them() {
    let app = spawn_app().await;
    // The OpenAPI settings page's default selection and body.
    let body = json!({"name": "", "scopes": ["bot", "provider", "im", "chat", "file"], "expires_in_days": 30});
    let (s, b) = send(app.http.post(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt).json(&body)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["name"], "Untitled API Key");
    assert_eq!(b["data"]["scopes"], json!(["bot", "provider", "im", "chat", "file"]));
    let key = b["data"]["api_key"].as_str().unwrap().to_string();
    let (_, list) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert_eq!(list["data"][0]["scopes"], b["data"]["scopes"]);
    // `provider` lists providers; `bot` grants nothing more than astrgate has.
    let (s, _) = send(app.http.get(app.url("/api/v1/providers?capability=chat")).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    let only_bot = app.key(&["bot", "persona", "plugin", "mcp", "skill", "data"]).await;
    for path in ["/api/v1/chat/sessions?username=a", "/api/v1/configs", "/api/v1/providers", "/api/v1/im/bots"] {
        let (s, b) = send(app.http.get(app.url(path)).bearer_auth(&only_bot)).await;
        assert_error(s, &b, 403, "Insufficient API key scope");
    }
    // `config` includes `bot` and `provider`, stored and granted.
    let (s, b) =
        send(app.http.post(app.url("/api/apikey/create")).bearer_auth(&app.jwt).json(&json!({"scopes": ["config"]})))
            .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["scopes"], json!(["config", "bot", "provider"]));
    let config_key = b["data"]["api_key"].as_str().unwrap().to_string();
    let (s, _) = send(app.http.get(app.url("/api/v1/providers/schema")).bearer_auth(&config_key)).await;
    assert_eq!(s, 200);
    let (s, b) = send(
        app.http
            .post(app.url("/api/apikey/create"))
            .bearer_auth(&app.jwt)
            .json(&json!({"scopes": ["chat", "chat:admin", "chat"]})),
    )
    .await;
    assert_eq!((s.as_u16(), &b["data"]["scopes"]), (200, &json!(["chat", "chat:admin"])));
}

#[tokio::test]
async fn without_chat_admin_a_key_may_not_act_as_the_dashboard_user() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    let plain = app.key(&["chat"]).await;
    let admin = app.key(&["chat", "chat:admin"]).await;
    let body = json!({"message": "hi", "username": "astrgate"});
    let (s, b) = send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&plain).json(&body)).await;
    assert_error(s, &b, 403, "username is reserved for an AstrBot administrator");
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions/new?username=astrgate")).bearer_auth(&plain)).await;
    assert_error(s, &b, 403, "username is reserved for an AstrBot administrator");
    let frames = chat(&app, &admin, body).await.collect().await;
    assert_eq!(types(&frames).last().map(String::as_str), Some("end"), "chat:admin may");
    let frames = chat(&app, &plain, json!({"message": "hi", "username": "alice"})).await.collect().await;
    assert_eq!(types(&frames).last().map(String::as_str), Some("end"), "other names are fine");
}

#[tokio::test]
async fn setup_status_logout_and_account_change() {
    let app = spawn_app().await;
    let want = json!({"status": "ok", "message": null,
        "data": {"setup_required": false, "skip_default_password_auth": false, "password_upgrade_required": false}});
    for p in ["/api/auth/setup-status", "/api/v1/auth/setup-status"] {
        // Public, and never "Missing API key" (the WebUI would take us for an old backend).
        assert_eq!(send(app.http.get(app.url(p))).await.1, want);
    }
    let login =
        |u: &str, p: &str| app.http.post(app.url("/api/v1/auth/login")).json(&json!({"username": u, "password": p}));
    let (s, b) = send(login("astrgate", PASSWORD)).await;
    assert_eq!(s, 200, "{b}");
    let token = b["data"]["token"].as_str().unwrap().to_string();
    let me = |t: &str| app.http.get(app.url("/api/v1/api-keys")).bearer_auth(t.to_string());
    assert_eq!(send(me(&token)).await.0, 200);

    // Account change: AstrBot's texts, then the new credentials work and old tokens do not.
    let edit = |b: Value| app.http.patch(app.url("/api/v1/auth/account")).bearer_auth(&token).json(&b);
    let (s, b) =
        send(edit(json!({"password": "wrong", "new_password": "Abcdefg1", "confirm_password": "Abcdefg1"}))).await;
    assert_error(s, &b, 400, "原密码错误");
    let (_, b) = send(edit(json!({"password": PASSWORD}))).await;
    assert_eq!(b["message"], "新用户名和新密码不能同时为空");
    let (_, b) = send(edit(json!({"password": PASSWORD, "new_username": "ab"}))).await;
    assert_eq!(b["message"], "用户名长度至少3位");
    let (_, b) =
        send(edit(json!({"password": PASSWORD, "new_password": "Abcdefg1", "confirm_password": "Abcdefg2"}))).await;
    assert_eq!(b["message"], "两次输入的新密码不一致");
    let (_, b) =
        send(edit(json!({"password": PASSWORD, "new_password": "abcdefgh", "confirm_password": "abcdefgh"}))).await;
    assert_eq!(b["message"], "Password must include at least one uppercase letter");
    let (s, b) = send(edit(json!({"password": PASSWORD, "new_password": "Newpass12", "confirm_password": "Newpass12", "new_username": "operator"}))).await;
    assert_eq!(
        (s.as_u16(), &b),
        (200, &json!({"status": "ok", "message": "Updated account successfully", "data": {}}))
    );
    let (s, b) = send(me(&token)).await;
    assert_eq!(s, 401, "tokens issued before the change stop working: {b}");
    assert_eq!(send(login("astrgate", PASSWORD)).await.0, 401);
    let (s, b) = send(login("operator", "Newpass12")).await;
    assert_eq!((s.as_u16(), b["data"]["username"].as_str()), (200, Some("operator")), "{b}");
    let token = b["data"]["token"].as_str().unwrap().to_string();

    // Logout clears the cookie and revokes the token it was called with.
    let res = app.http.post(app.url("/api/auth/logout")).bearer_auth(&token).send().await.unwrap();
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("astrbot_dashboard_jwt=;"));
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok", "message": "已退出登录", "data": {}}));
    let (s, b) = send(me(&token)).await;
    assert_error(s, &b, 401, "Invalid token");
    // Anonymous logout is harmless.
    assert_eq!(send(app.http.post(app.url("/api/v1/auth/logout"))).await.0, 200);
}

#[tokio::test]
async fn layout_and_onboarding_endpoints() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!(
        "{}\n[[profiles]]\nid = \"default\"\n[[profiles]]\nid = \"alt\"\nname = \"Alt\"\n",
        fake.provider_toml("fake")
    ))
    .await;
    let j = &app.jwt;
    let get = |p: &str| app.http.get(app.url(p));
    for p in ["/api/v1/stats/versions", "/api/stat/versions"] {
        let (s, b) = send(get(p)).await;
        assert_eq!(s, 200, "public: {b}");
        assert_eq!(b["data"]["astrbot_version"], "4.29.3");
        assert_eq!(b["data"]["webui_version"], "v4.29.3");
    }
    for p in ["/api/v1/stats/start-time", "/api/stat/start-time"] {
        let (_, b) = send(get(p)).await;
        let t = b["data"]["start_time"].as_i64().unwrap();
        assert!((t - chrono::Utc::now().timestamp()).abs() < 600, "{b}");
    }
    let (s, b) = send(get("/api/v1/stats/version").bearer_auth(j)).await;
    assert_eq!(s, 200);
    assert_eq!((b["data"]["version"].as_str(), b["data"]["change_pwd_hint"].as_bool()), (Some("4.29.3"), Some(false)));
    assert_eq!(send(get("/api/stat/version").bearer_auth(j)).await.0, 200);
    let (_, b) = send(get("/api/v1/stats/first-notice?locale=zh-CN").bearer_auth(j)).await;
    assert_eq!(b["data"], json!({"content": null}));
    let (_, b) = send(get("/api/v1/updates/check").bearer_auth(j)).await;
    assert_eq!(b["status"], "success");
    assert_eq!(b["data"]["has_new_version"], false);
    let (_, b) = send(get("/api/v1/system-config").bearer_auth(j)).await;
    assert_eq!(b["data"]["config"]["platform"][0]["id"], "webchat");
    let (_, b) = send(get("/api/v1/providers/schema").bearer_auth(j)).await;
    assert_eq!(b["data"]["providers"][0]["provider_type"], "chat_completion");
    assert_eq!(b["data"]["providers"][0]["id"], "fake");
    assert!(!b.to_string().contains("sk-fake-upstream"), "provider keys never leave: {b}");
    let (_, b) = send(get("/api/v1/providers?capability=chat").bearer_auth(j)).await;
    assert_eq!(
        (b["data"]["providers"][0]["model"].as_str(), b["data"]["model_metadata"].is_object()),
        (Some("fake-model"), true)
    );
    let (_, b) = send(get("/api/v1/chat/projects").bearer_auth(j)).await;
    assert_eq!(b["data"], json!([]));
    let (_, b) = send(get("/api/v1/commands").bearer_auth(j)).await;
    assert_eq!(b["data"]["items"], json!([]));
    let (_, b) = send(get("/api/v1/config-profiles").bearer_auth(j)).await;
    let ids: Vec<&str> = b["data"]["info_list"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alt", "default"], "default last");
    let (_, b) = send(get("/api/v1/chat/configs").bearer_auth(j)).await;
    assert_eq!(b["data"]["info_list"][1]["id"], "default");
    let (_, b) = send(get("/api/v1/config-profiles/default").bearer_auth(j)).await;
    assert_eq!(b["data"]["config"]["agent_runner"]["runner_type"], "local");
    let (s, b) = send(get("/api/v1/config-profiles/nope").bearer_auth(j)).await;
    assert_error(s, &b, 404, "config_id not found: nope");
    // Dashboard-only for keys, whatever their scopes.
    let key = app.key(&["chat", "config", "file", "im", "provider"]).await;
    for p in ["/api/v1/stats/version", "/api/v1/updates/check", "/api/v1/system-config", "/api/v1/commands"] {
        let (s, b) = send(get(p).bearer_auth(&key)).await;
        assert_error(s, &b, 403, "Insufficient API key scope");
    }
    // What astrgate does not have is 404 for a logged-in page, never 401.
    for p in ["/api/v1/plugins", "/api/v1/stats", "/api/v1/knowledge-bases", "/api/v1/chat/threads/x"] {
        let (s, b) = send(get(p).bearer_auth(j)).await;
        assert_error(s, &b, 404, "Not Found");
    }
}

#[tokio::test]
async fn config_routes_bind_a_session_to_a_profile() {
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&format!(
        "{}\n[[profiles]]\nid = \"default\"\n[[profiles]]\nid = \"alt\"\nsystem_prompt = \"ALT PROMPT\"\n",
        fake.provider_toml("fake")
    ))
    .await;
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions/new")).bearer_auth(&app.jwt)).await;
    let sid = b["data"]["session_id"].as_str().unwrap().to_string();
    let umo = format!("webchat:FriendMessage:webchat!astrgate!{sid}");
    let put = |umo: &str, body: Value| {
        let enc: String = form_urlencoded::byte_serialize(umo.as_bytes()).collect();
        app.http.put(app.url(&format!("/api/v1/config-routes/{enc}"))).bearer_auth(&app.jwt).json(&body)
    };
    let (s, b) = send(put(&umo, json!({"config_id": "alt"}))).await;
    assert_eq!((s.as_u16(), &b), (200, &json!({"status": "ok", "message": "更新成功", "data": {}})));
    let (_, b) = send(app.http.get(app.url("/api/v1/config-routes")).bearer_auth(&app.jwt)).await;
    assert_eq!(b["data"]["routing"], json!({umo.clone(): "alt"}));
    chat(&app, &app.jwt, json!({"session_id": sid, "message": "hi"})).await.collect().await;
    assert!(fake.requests()[0].to_string().contains("ALT PROMPT"), "the bound profile answered");

    let (s, b) = send(put(&umo, json!({"config_id": "nope"}))).await;
    assert_error(s, &b, 400, "config_id not found: nope");
    let (s, b) = send(put(&umo, json!({}))).await;
    assert_error(s, &b, 400, "Missing key: config_id");
    let (s, b) = send(put("garbage", json!({"config_id": "alt"}))).await;
    assert_error(s, &b, 400, "Invalid umo: garbage");
    // Another user's session cannot be routed.
    let key = app.key(&["chat"]).await;
    let (_, b) = send(app.http.get(app.url("/api/v1/chat/sessions/new?username=bob")).bearer_auth(&key)).await;
    let bobs = b["data"]["session_id"].as_str().unwrap();
    let (s, b) =
        send(put(&format!("webchat:FriendMessage:webchat!astrgate!{bobs}"), json!({"config_id": "alt"}))).await;
    assert_error(s, &b, 403, "Permission denied");
    let (s, _) = send(put(&umo, json!({"config_id": "default"}))).await;
    assert_eq!(s, 200);
    let (_, b) = send(app.http.get(app.url("/api/v1/config-routes")).bearer_auth(&app.jwt)).await;
    assert_eq!(b["data"]["routing"], json!({}), "default unbinds");
}

/// A small WebUI build: an index, a hashed asset, the version file.
fn webui_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("index.html"),
        "<!doctype html><title>WebUI</title><script src=\"/assets/app.js\"></script>",
    )
    .unwrap();
    std::fs::create_dir(d.path().join("assets")).unwrap();
    std::fs::write(d.path().join("assets/app.js"), "console.log('hi')").unwrap();
    std::fs::write(d.path().join("assets/version"), "v9.9.9\n").unwrap();
    d
}

#[tokio::test]
async fn a_webui_build_is_served_at_the_root_and_api_routes_win() {
    let ui = webui_dir();
    let path = ui.path().to_path_buf();
    let app = spawn_with(move |c| c.dashboard.webui_dir = Some(path)).await;
    let get = |p: &str| app.http.get(app.url(p)).send();
    let res = get("/").await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(res.text().await.unwrap().contains("<title>WebUI</title>"));

    let res = get("/assets/app.js").await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().contains("javascript"));
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(res.text().await.unwrap(), "console.log('hi')");
    // Client-side routes fall back to the index; missing files do not.
    let res = get("/settings/openapi").await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<title>WebUI</title>"));
    let (s, b) = send(app.http.get(app.url("/assets/missing.js"))).await;
    assert_error(s, &b, 404, "Not Found");
    // Nothing outside the folder.
    for p in ["/../Cargo.toml", "/assets/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"] {
        let res = get(p).await.unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        assert!(!body.contains("root:") && !body.contains("[package]"), "{p}: {status} {body}");
    }
    // API paths stay the APIs' own: unknown ones are JSON 404s, known ones answer.
    let (s, b) = send(app.http.get(app.url("/api/v1/nothing-here"))).await;
    assert_error(s, &b, 404, "Not Found");
    let (s, b) = send(app.http.get(app.url("/api/v1/stats/versions"))).await;
    assert_eq!((s.as_u16(), b["data"]["webui_version"].as_str()), (200, Some("v9.9.9")), "the build's own version");
    assert_eq!(send(app.http.get(app.url("/healthz"))).await.0, 200);
    let (s, _) = send(app.http.post(app.url("/somewhere"))).await;
    assert_eq!(s, 404, "only reads are pages");
}

#[tokio::test]
async fn without_a_webui_dir_the_root_is_the_console_and_a_bad_dir_stops_the_start() {
    let app = spawn_app().await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = plain.get(app.url("/")).send().await.unwrap();
    assert_eq!((res.status().as_u16(), res.headers()["location"].to_str().unwrap()), (307, "/console/"));
    for path in ["/index.html", "/assets/x.js", "/settings"] {
        let (s, b) = send(app.http.get(app.url(path))).await;
        assert_error(s, &b, 404, "Not Found");
    }
    let mut cfg = astrgate::config::Config::from_toml("").unwrap();
    cfg.dashboard.webui_dir = Some(std::path::PathBuf::from("/nonexistent-webui"));
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("webui_dir") && err.contains("index.html"), "{err}");
}
