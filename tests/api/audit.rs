//! The audit log over real HTTP: logins, failed logins and key changes through both route
//! families, read back from `GET /api/v1/audit` newest first, paged, validated, guarded; the
//! client address under `trust_forwarded_for`; retention at start.

use std::sync::Arc;

use astrgate::store::{AuditEvent, now_micros};
use serde_json::{Value, json};

use crate::helpers::*;

const WRONG: &str = "Wr0ng-but-secret-password";

async fn login(app: &TestApp, path: &str, username: &str, password: &str, forwarded: Option<&str>) -> (u16, Value) {
    let mut req = app.http.post(app.url(path)).json(&json!({"username": username, "password": password}));
    if let Some(f) = forwarded {
        req = req.header("X-Forwarded-For", f);
    }
    let (s, b) = send(req).await;
    (s.as_u16(), b)
}

/// `GET /api/v1/audit` with a query, as the dashboard: (the whole body as text, its JSON).
async fn audit(app: &TestApp, token: &str, query: &str) -> (String, Value) {
    let res = app.http.get(app.url(&format!("/api/v1/audit{query}"))).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&v["status"], &v["message"]), (&json!("ok"), &Value::Null), "{v}");
    (text, v)
}

fn rows(v: &Value) -> Vec<(String, String, Value, Value)> {
    v["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
                e["target"].clone(),
                e["ip"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn logins_and_key_changes_through_both_route_families_are_listed_newest_first() {
    let app = spawn_app().await;
    let (s, _) = login(&app, "/api/auth/login", "astrgate", WRONG, None).await;
    assert_eq!(s, 401);
    let (s, b) = login(&app, "/api/v1/auth/login", "astrgate", PASSWORD, None).await;
    assert_eq!(s, 200, "{b}");
    let token = b["data"]["token"].as_str().unwrap().to_string();

    // Through /api/v1/api-keys…
    let (s, b) = send(
        app.http.post(app.url("/api/v1/api-keys")).bearer_auth(&token).json(&json!({"name": "v1", "scopes": ["chat"]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (k1, raw1) =
        (b["data"]["key_id"].as_str().unwrap().to_string(), b["data"]["api_key"].as_str().unwrap().to_string());
    let (s, _) = send(app.http.post(app.url(&format!("/api/v1/api-keys/{k1}/revoke"))).bearer_auth(&token)).await;
    assert_eq!(s, 200);
    let (s, _) = send(app.http.delete(app.url(&format!("/api/v1/api-keys/{k1}"))).bearer_auth(&token)).await;
    assert_eq!(s, 200);
    // …and through AstrBot WebUI's /api/apikey/*.
    let (s, b) =
        send(app.http.post(app.url("/api/apikey/create")).bearer_auth(&token).json(&json!({"name": "webui"}))).await;
    assert_eq!(s, 200, "{b}");
    let (k2, raw2) =
        (b["data"]["key_id"].as_str().unwrap().to_string(), b["data"]["api_key"].as_str().unwrap().to_string());
    for action in ["revoke", "delete"] {
        let (s, _) = send(
            app.http.post(app.url(&format!("/api/apikey/{action}"))).bearer_auth(&token).json(&json!({"key_id": k2})),
        )
        .await;
        assert_eq!(s, 200);
    }
    // A refused change is not an event.
    let (s, _) = send(app.http.post(app.url("/api/v1/api-keys/nope/revoke")).bearer_auth(&token)).await;
    assert_eq!(s, 404);

    let (text, v) = audit(&app, &token, "").await;
    let ip = json!("127.0.0.1");
    let user = "astrgate".to_string();
    assert_eq!(
        rows(&v),
        vec![
            ("api_key.delete".into(), user.clone(), json!(k2), ip.clone()),
            ("api_key.revoke".into(), user.clone(), json!(k2), ip.clone()),
            ("api_key.create".into(), user.clone(), json!(k2), ip.clone()),
            ("api_key.delete".into(), user.clone(), json!(k1), ip.clone()),
            ("api_key.revoke".into(), user.clone(), json!(k1), ip.clone()),
            ("api_key.create".into(), user.clone(), json!(k1), ip.clone()),
            ("login".into(), user.clone(), Value::Null, ip.clone()),
            ("login_failed".into(), user.clone(), Value::Null, ip.clone()),
        ]
    );
    let events = v["data"]["events"].as_array().unwrap();
    assert_eq!(events[5]["detail"], json!({"name": "v1", "scopes": ["chat"], "username": null}));
    assert_eq!(v["data"]["next_before"], Value::Null, "one page holds them all");
    let fields: Vec<&str> = events[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["id", "time", "actor", "action", "target", "ip", "detail"]);
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for e in events {
        let t = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).expect("an ISO-8601 time");
        assert!((chrono::Utc::now().timestamp() - t.timestamp()).abs() < 600, "{e}");
    }
    // Never a password, a key or a token.
    for secret in [WRONG, PASSWORD, raw1.as_str(), raw2.as_str(), token.as_str()] {
        assert!(!text.contains(secret), "the audit log shows a secret: {text}");
    }
}

#[tokio::test]
async fn pages_follow_before_and_bad_parameters_are_400() {
    let app = spawn_app().await;
    for _ in 0..5 {
        app.key(&["chat"]).await;
    }
    let (_, all) = audit(&app, &app.jwt, "").await;
    let all_ids: Vec<i64> =
        all["data"]["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(all_ids.len(), 5);

    let mut seen = Vec::new();
    let mut query = "?limit=2".to_string();
    let mut pages = 0;
    loop {
        let (_, v) = audit(&app, &app.jwt, &query).await;
        pages += 1;
        let page = v["data"]["events"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|e| e["id"].as_i64().unwrap()));
        match v["data"]["next_before"].as_i64() {
            Some(next) => {
                assert_eq!(Some(next), seen.last().copied(), "next_before is the page's oldest id");
                query = format!("?limit=2&before={next}");
            }
            None => break,
        }
    }
    assert_eq!((pages, seen), (3, all_ids.clone()), "every event once, in order, over three pages");
    let (_, v) = audit(&app, &app.jwt, &format!("?before={}", all_ids[4])).await;
    assert_eq!(v["data"]["events"], json!([]));

    for (query, message) in [
        ("?limit=0", "limit must be an integer from 1 to 500"),
        ("?limit=501", "limit must be an integer from 1 to 500"),
        ("?limit=ten", "limit must be an integer from 1 to 500"),
        ("?before=0", "before must be a positive integer (an event id)"),
        ("?before=abc", "before must be a positive integer (an event id)"),
    ] {
        let (s, b) = send(app.http.get(app.url(&format!("/api/v1/audit{query}"))).bearer_auth(&app.jwt)).await;
        assert_error(s, &b, 400, message);
    }
    let (_, v) = audit(&app, &app.jwt, "?limit=500").await;
    assert_eq!(v["data"]["events"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn only_the_dashboard_reads_the_audit_log() {
    let app = spawn_app().await;
    let key = app.key(&["chat", "config", "file", "im", "provider", "bot", "data"]).await;
    let (s, b) = send(app.http.get(app.url("/api/v1/audit")).bearer_auth(&key)).await;
    let (s2, b2) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&key)).await;
    assert_eq!((s.as_u16(), &b), (403, &b2), "the same refusal as the other dashboard-only routes");
    assert_eq!(s2, 403);
    let (s, b) = send(app.http.get(app.url("/api/v1/audit")).header("X-API-Key", &key)).await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = send(app.http.get(app.url("/api/v1/audit"))).await;
    let (_, b2) = send(app.http.get(app.url("/api/v1/api-keys"))).await;
    assert_eq!((s.as_u16(), &b), (401, &b2));
    assert_eq!(b["status"], "error");
}

/// Behind a trusted proxy the address is the proxy's rightmost `X-Forwarded-For` entry; the
/// username tried is cut to 128 characters; attempts the rate limiter refuses are not events.
#[tokio::test]
async fn failed_logins_carry_the_forwarded_address_and_a_cut_username() {
    let app = spawn_with(|c| c.server.trust_forwarded_for = true).await;
    let long = format!("{}{WRONG}", "u".repeat(200));
    let (s, _) = login(&app, "/api/v1/auth/login", &long, WRONG, Some("10.9.9.9, 198.51.100.23")).await;
    assert_eq!(s, 401);
    let (s, _) = login(&app, "/api/auth/login", "nobody", WRONG, Some("198.51.100.23")).await;
    assert_eq!(s, 401);
    let (s, _) = login(&app, "/api/auth/login", "nobody", WRONG, Some("198.51.100.23")).await;
    assert_eq!(s, 401);
    // The address's burst (3) is spent: this one is refused before its password is looked at.
    let (s, _) = login(&app, "/api/auth/login", "limited", WRONG, Some("198.51.100.23")).await;
    assert_eq!(s, 429);

    let (text, v) = audit(&app, &app.jwt, "").await;
    let got = rows(&v);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|r| r.0 == "login_failed" && r.3 == json!("198.51.100.23")), "{got:?}");
    assert_eq!(got[2].1, "u".repeat(128));
    assert!(!text.contains(WRONG) && !text.contains("limited"), "{text}");
}

/// Events older than `[audit] retention_days` are deleted when the server starts (and hourly).
#[tokio::test]
async fn retention_deletes_old_events_at_start() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_in(dir.clone(), |_| {}).await;
    let day = 86_400_000_000;
    let at = |days_ago: i64, actor: &str| AuditEvent {
        time: now_micros() - days_ago * day,
        actor: actor.into(),
        action: "login".into(),
        target: None,
        ip: None,
        detail: None,
    };
    app.state.store.insert_audit_events(&[at(45, "old"), at(20, "kept")]).await.unwrap();
    app.stop().await;

    let app = spawn_in(dir, |c| c.audit.retention_days = 30).await;
    let actors = eventually(|| async {
        let (_, v) = audit(&app, &app.jwt, "").await;
        let actors: Vec<String> = rows(&v).into_iter().map(|r| r.1).collect();
        (actors.len() == 1).then_some(actors)
    })
    .await;
    assert_eq!(actors, ["kept"]);
}

/// What is queued when the server stops is written before it ends (nothing reads the log first).
#[tokio::test]
async fn events_recorded_just_before_shutdown_are_written() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_in(dir.clone(), |_| {}).await;
    let (s, _) = login(&app, "/api/v1/auth/login", "astrgate", PASSWORD, None).await;
    assert_eq!(s, 200);
    app.key(&["chat"]).await;
    app.stop().await;
    let store =
        astrgate::store::connect(&format!("sqlite://{}", dir.path().join("astrgate.db").display())).await.unwrap();
    let actions: Vec<String> =
        store.list_audit_events(None, 10).await.unwrap().into_iter().map(|r| r.event.action).collect();
    assert_eq!(actions, ["api_key.create", "login"]);
    store.close().await;
}
