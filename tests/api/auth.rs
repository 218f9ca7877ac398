//! `/api/v1` authentication: every carrier, every 401/403 text, expiry, revocation, JWT access,
//! and deny-by-default checked against every operation in openapi.json.

use astrgate::auth::api_key;
use astrgate::store::{ApiKeyRecord, now_micros};
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn every_carrier_is_accepted() {
    let app = spawn_app().await;
    let key = app.key(&["config"]).await;
    let url = app.url("/api/v1/configs");
    let reqs = [
        app.http.get(&url).header("X-API-Key", &key),
        app.http.get(format!("{url}?api_key={key}")),
        app.http.get(format!("{url}?key={key}")),
        app.http.get(&url).bearer_auth(&key),
        app.http.get(&url).header("Authorization", format!("ApiKey {key}")),
    ];
    for req in reqs {
        let (status, body) = send(req).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["data"]["configs"][0]["id"], "default");
    }
}

#[tokio::test]
async fn missing_and_invalid_keys_are_401_with_astrbot_texts() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/configs");
    let (s, b) = send(app.http.get(&url)).await;
    assert_error(s, &b, 401, "Missing API key");
    let fake = api_key::generate();
    for req in [
        app.http.get(&url).header("X-API-Key", &fake),
        app.http.get(format!("{url}?api_key={fake}")),
        app.http.get(format!("{url}?key=garbage")),
        app.http.get(&url).bearer_auth(&fake),
        app.http.get(&url).bearer_auth("not-a-jwt-nor-a-key"),
        app.http.get(&url).header("Authorization", format!("ApiKey {fake}")),
    ] {
        let (s, b) = send(req).await;
        assert_error(s, &b, 401, "Invalid API key");
    }
    // A Bearer header hides the other carriers, as in AstrBot.
    let good = app.key(&["config"]).await;
    let (s, b) = send(app.http.get(&url).bearer_auth(&fake).header("X-API-Key", &good)).await;
    assert_error(s, &b, 401, "Invalid API key");
}

#[tokio::test]
async fn scope_is_enforced_with_403() {
    let app = spawn_app().await;
    let chat_only = app.key(&["chat"]).await;
    let (s, b) = send(app.http.get(app.url("/api/v1/configs")).bearer_auth(&chat_only)).await;
    assert_error(s, &b, 403, "Insufficient API key scope");
    let (s, b) = send(app.http.get(app.url("/api/v1/im/bots")).bearer_auth(&chat_only)).await;
    assert_error(s, &b, 403, "Insufficient API key scope");
    let im = app.key(&["im"]).await;
    let (s, b) = send(app.http.get(app.url("/api/v1/im/bots")).header("X-API-Key", &im)).await;
    assert_eq!(s, 200);
    assert_eq!(b, json!({"status": "ok", "message": null, "data": {"bot_ids": []}}));
}

#[tokio::test]
async fn revoked_and_expired_keys_are_invalid() {
    let app = spawn_app().await;
    let key = app.key(&["config"]).await;
    let url = app.url("/api/v1/configs");
    assert_eq!(send(app.http.get(&url).bearer_auth(&key)).await.0, 200);
    let (_, list) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    let id = list["data"][0]["key_id"].as_str().unwrap().to_string();
    let (s, _) = send(app.http.post(app.url(&format!("/api/v1/api-keys/{id}/revoke"))).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200);
    let (s, b) = send(app.http.get(&url).bearer_auth(&key)).await;
    assert_error(s, &b, 401, "Invalid API key");

    // A key whose expiry has passed (written straight to the store: we cannot wait a day).
    let raw = api_key::generate();
    let past = now_micros() - 1_000_000;
    let rec = ApiKeyRecord {
        key_id: "expired-key".into(),
        name: "old".into(),
        key_hash: api_key::hash(&raw),
        key_prefix: raw[..12].into(),
        scopes: vec!["config".into()],
        created_by: "test".into(),
        created_at: past - 10,
        updated_at: past - 10,
        last_used_at: None,
        expires_at: Some(past),
        revoked_at: None,
        username: None,
        limits: Default::default(),
    };
    app.state.store.insert_api_key(&rec).await.unwrap();
    let (s, b) = send(app.http.get(&url).header("X-API-Key", &raw)).await;
    assert_error(s, &b, 401, "Invalid API key");
    let (_, list) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    let expired = list["data"].as_array().unwrap().iter().find(|k| k["key_id"] == "expired-key").unwrap();
    assert_eq!(expired["is_expired"], true);
    let revoked = list["data"].as_array().unwrap().iter().find(|k| k["key_id"] == id.as_str()).unwrap();
    assert_eq!(revoked["is_revoked"], true);
    assert!(revoked["revoked_at"].is_string());
}

#[tokio::test]
async fn dashboard_jwt_has_full_access_and_expiry_is_401() {
    let app = spawn_app().await;
    for path in ["/api/v1/configs", "/api/v1/im/bots", "/api/v1/api-keys"] {
        let (s, b) = send(app.http.get(app.url(path)).bearer_auth(&app.jwt)).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    let expired = app.state.dashboard.jwt.encode("astrgate", chrono::Utc::now().timestamp() - 10);
    let (s, b) = send(app.http.get(app.url("/api/v1/configs")).bearer_auth(&expired)).await;
    assert_error(s, &b, 401, "Token expired");
    // Unlike AstrBot, a token that never expires is refused, even correctly signed.
    let no_exp = app.state.dashboard.jwt.encode_claims(&json!({"username": "astrgate"}));
    let (s, b) = send(app.http.get(app.url("/api/v1/configs")).bearer_auth(&no_exp)).await;
    assert_error(s, &b, 401, "Invalid token");
    // So is one of ours issued without the current token version.
    let unversioned = app.state.dashboard.jwt.encode("astrgate", i64::MAX / 2);
    let (s, b) = send(app.http.get(app.url("/api/v1/configs")).bearer_auth(&unversioned)).await;
    assert_error(s, &b, 401, "Invalid token");
    // A token signed with another secret is not ours: it is then tried as an API key.
    let forged = astrgate::auth::jwt::JwtKeys::new(b"other").encode("astrgate", i64::MAX / 2);
    let (s, b) = send(app.http.get(app.url("/api/v1/configs")).bearer_auth(&forged)).await;
    assert_error(s, &b, 401, "Invalid API key");
    // Signed by us but naming nobody: `Invalid token`, not a retry as an API key.
    let nobody = app.state.dashboard.jwt.encode_claims(&json!({"exp": i64::MAX / 2}));
    let (s, b) = send(app.http.get(app.url("/api/v1/configs")).bearer_auth(&nobody)).await;
    assert_error(s, &b, 401, "Invalid token");
    // The login cookie is a carrier too.
    let cookie = format!("astrbot_dashboard_jwt={}", app.jwt);
    assert_eq!(send(app.http.get(app.url("/api/v1/configs")).header("Cookie", cookie)).await.0, 200);
    let (s, b) = send(app.http.get(app.url("/api/v1/configs")).header("Cookie", "astrbot_dashboard_jwt=junk")).await;
    assert_error(s, &b, 401, "Invalid token");
}

#[tokio::test]
async fn api_keys_never_reach_key_management() {
    let app = spawn_app().await;
    let key = app.key(&["chat", "config", "file", "im"]).await;
    let url = app.url("/api/v1/api-keys");
    for req in [
        app.http.get(&url).bearer_auth(&key),
        app.http.get(&url).header("X-API-Key", &key),
        app.http.get(format!("{url}?api_key={key}")),
        app.http.post(&url).header("Authorization", format!("ApiKey {key}")).json(&json!({})),
    ] {
        let (s, b) = send(req).await;
        assert_error(s, &b, 403, "Insufficient API key scope");
    }
    let (s, b) = send(app.http.get(&url)).await;
    assert_error(s, &b, 401, "Missing API key");
    // The legacy dashboard routes speak the dashboard's texts.
    let (s, b) = send(app.http.get(app.url("/api/apikey/list")).bearer_auth(&key)).await;
    assert_error(s, &b, 401, "Token 无效");
    let (s, b) = send(app.http.get(app.url("/api/apikey/list")).header("X-API-Key", &key)).await;
    assert_error(s, &b, 401, "未授权");
    let expired = app.state.dashboard.jwt.encode("astrgate", 1);
    let (s, b) = send(app.http.get(app.url("/api/apikey/list")).bearer_auth(&expired)).await;
    assert_error(s, &b, 401, "Token 过期");
}

/// Every `/api/v1` operation in openapi.json declares its requirement in `x-astrgate-auth`; each
/// must refuse anonymous callers and callers lacking exactly that scope. A route mounted without
/// an authorisation layer fails here (it would answer 403 to anonymous callers, not 401).
#[tokio::test]
async fn every_documented_v1_operation_is_guarded() {
    let spec: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    let app = spawn_app().await;
    let scopes = ["chat", "config", "file", "im", "provider"];
    let mut keys = std::collections::HashMap::new();
    for s in scopes {
        // `config` includes `provider`, so a key without `provider` has neither.
        let others: Vec<&str> =
            scopes.iter().copied().filter(|x| *x != s && !(s == "provider" && *x == "config")).collect();
        keys.insert(s, app.key(&others).await);
    }
    let all = app.key(&scopes).await;
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") || path.starts_with("/api/v1/auth/") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let need =
                op["x-astrgate-auth"].as_str().unwrap_or_else(|| panic!("{method} {path} lacks x-astrgate-auth"));
            if need == "public" {
                continue;
            }
            let concrete = path
                .replace("{key_id}", "k")
                .replace("{session_id}", "s")
                .replace("{run_id}", "r")
                .replace("{message_id}", "1")
                .replace("{config_id}", "default")
                .replace("{umo}", "u")
                .replace("{attachment_id}", "a");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let ws = op.get("x-websocket").is_some();
            let anon = app.http.request(m.clone(), app.url(&concrete));
            let res = anon.send().await.unwrap();
            if ws {
                // WebSocket routes refuse plain HTTP before auth; their auth is tested in the WS tests.
                assert!(res.status().is_client_error(), "{method} {path}");
                continue;
            }
            assert_eq!(res.status(), 401, "{method} {path} must refuse anonymous callers");
            let wrong = if need == "dashboard" { &all } else { &keys[need] };
            let res = app.http.request(m, app.url(&concrete)).bearer_auth(wrong).send().await.unwrap();
            assert_eq!(res.status(), 403, "{method} {path} must refuse a key without {need}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} operations checked");
}

#[tokio::test]
async fn last_used_at_is_recorded_without_a_write_per_request() {
    let app = spawn_app().await;
    let key = app.key(&["config"]).await;
    let (_, list) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert_eq!(list["data"][0]["last_used_at"], Value::Null);
    for _ in 0..3 {
        assert_eq!(send(app.http.get(app.url("/api/v1/configs")).bearer_auth(&key)).await.0, 200);
    }
    // Still only in memory: the row is untouched until a flush.
    let rec = app.state.store.find_api_key_by_hash(&api_key::hash(&key)).await.unwrap().unwrap();
    assert_eq!(rec.last_used_at, None);
    // Listing flushes first, so it shows the use.
    let (_, list) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert!(list["data"][0]["last_used_at"].is_string(), "{list}");
}
