//! The web console over HTTP: where it is served, the headers of its pages and files, and the
//! socket-token endpoint it uses for the Live socket (auth, CSRF, what the token opens and what
//! it does not). The console in a browser is `console_browser.rs`.

use base64::Engine;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::*;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     media-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; worker-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap()
}

fn assert_page_headers(h: &HeaderMap, cache: &str) {
    assert_eq!(header(h, "content-security-policy"), CSP);
    assert_eq!(header(h, "content-security-policy"), astrgate::http::console::CONSOLE_CSP);
    assert_eq!(header(h, "x-frame-options"), "DENY");
    assert_eq!(header(h, "x-content-type-options"), "nosniff");
    assert_eq!(header(h, "referrer-policy"), "no-referrer");
    assert_eq!(header(h, "cache-control"), cache);
    assert_eq!(header(h, "cross-origin-opener-policy"), "same-origin");
    assert!(header(h, "permissions-policy").starts_with("microphone=(self)"));
    assert!(header(h, "etag").starts_with('"'));
}

#[tokio::test]
async fn the_console_is_served_with_its_headers() {
    let app = spawn_app().await;
    let c = no_redirects();

    // Without a WebUI, `/` is the console; `/console` gets its slash.
    let res = c.get(app.url("/")).send().await.unwrap();
    assert_eq!((res.status().as_u16(), header(res.headers(), "location")), (307, "/console/"));
    let res = c.get(app.url("/console")).send().await.unwrap();
    assert_eq!((res.status().as_u16(), header(res.headers(), "location")), (308, "/console/"));

    let res = c.get(app.url("/console/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(res.headers(), "content-type"), "text/html; charset=utf-8");
    assert_page_headers(res.headers(), "no-store");
    let etag = header(res.headers(), "etag").to_string();
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="js/main.js"></script>"#), "{html}");
    for name in ["Chat", "Voice", "API keys", "Usage", "Audit"] {
        assert!(html.contains(&format!(">{name}</a>")), "nav link {name}");
    }
    assert!(!CSP.contains("unsafe-inline") && !CSP.contains("unsafe-eval"));

    // Every script and style the page and its modules name is served, with the same headers.
    for path in ["/console/js/main.js", "/console/js/pcm-worklet.js", "/console/console.css", "/console/favicon.svg"] {
        let res = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_page_headers(res.headers(), "no-cache");
        let ct = header(res.headers(), "content-type");
        let want = if path.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else if path.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "image/svg+xml"
        };
        assert_eq!(ct, want, "{path}");
    }

    // Revalidation: the same ETag is 304 without a body.
    let res = c.get(app.url("/console/")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(res.status(), 304);
    assert_page_headers(res.headers(), "no-store");
    assert!(res.bytes().await.unwrap().is_empty());
    let res = c.head(app.url("/console/js/api.js")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    // Nothing else is served from there; API paths stay JSON; other methods are refused.
    for path in ["/console/js/nope.js", "/console/%2e%2e/Cargo.toml", "/console/../Cargo.toml", "/console/index.htm"] {
        let (s, b) = send(c.get(app.url(path))).await;
        assert_error(s, &b, 404, "Not Found");
    }
    let (s, b) = send(c.get(app.url("/api/nope"))).await;
    assert_error(s, &b, 404, "Not Found");
    let (s, b) = send(c.post(app.url("/console/")).json(&json!({}))).await;
    assert_error(s, &b, 405, "Method Not Allowed");
    let (s, b) = send(c.post(app.url("/"))).await;
    assert_error(s, &b, 404, "Not Found");
}

#[tokio::test]
async fn with_a_webui_at_the_root_the_console_stays_at_console() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<html>the webui</html>").unwrap();
    let path = dir.path().to_path_buf();
    let app = spawn_with(move |c| c.dashboard.webui_dir = Some(path)).await;
    let c = no_redirects();
    let res = c.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "<html>the webui</html>");
    let res = c.get(app.url("/console/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_page_headers(res.headers(), "no-store");
    assert!(res.text().await.unwrap().contains("js/main.js"));
}

/// Logs in as a browser does and returns the cookie header value.
async fn cookie(app: &TestApp) -> String {
    let res = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": app.state.dashboard.username(), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let set = header(res.headers(), "set-cookie").to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    set.split(';').next().unwrap().to_string()
}

async fn mint(app: &TestApp, req: reqwest::RequestBuilder) -> (u16, Value, HeaderMap) {
    let _ = app;
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body: Value = res.json().await.unwrap();
    (status, body, headers)
}

#[tokio::test]
async fn socket_tokens_are_for_the_dashboard_from_our_own_origin() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/auth/socket-token");
    let cookie = cookie(&app).await;

    let (s, b, _) = mint(&app, app.http.post(&url)).await;
    assert_eq!((s, &b), (401, &json!({"status": "error", "message": "Missing API key", "data": null})));
    let key = app.key(&["chat", "config", "file", "im", "provider", "chat:admin"]).await;
    let (s, b, _) = mint(&app, app.http.post(&url).bearer_auth(&key)).await;
    assert_eq!((s, b["message"].as_str()), (403, Some("Insufficient API key scope")), "API keys never mint");

    // The page's own request: cookie, same origin, no body (or JSON).
    let origin = app.base.clone();
    let same = || {
        app.http.post(&url).header("cookie", &cookie).header("origin", &origin).header("sec-fetch-site", "same-origin")
    };
    let (s, b, h) = mint(&app, same()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["expires_in"], 60);
    assert_eq!(header(&h, "cache-control"), "no-store");
    let token = b["data"]["token"].as_str().unwrap().to_string();
    let (s, _, _) = mint(&app, same().json(&json!({}))).await;
    assert_eq!(s, 200);

    // Another origin (another port of the same host included) cannot have one made with the cookie.
    let evil = app.http.post(&url).header("cookie", &cookie);
    let (s, b, _) = mint(&app, evil.header("origin", "http://127.0.0.1:1")).await;
    assert_eq!((s, b["message"].as_str()), (403, Some("Cross-site request refused")));
    let (s, b, _) =
        mint(&app, app.http.post(&url).header("cookie", &cookie).header("sec-fetch-site", "cross-site")).await;
    assert_eq!((s, b["message"].as_str()), (403, Some("Cross-site request refused")));
    let plain = app.http.post(&url).header("cookie", &cookie).header("content-type", "text/plain").body("{}");
    let (s, _, _) = mint(&app, plain).await;
    assert_eq!(s, 415, "a form-like body is refused");
    // A Bearer dashboard token (not sent by browsers on their own) needs no origin check.
    let (s, _, _) = mint(&app, app.http.post(&url).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200);

    // What it is: {username, exp ≈ now + 60, tv, use: "socket"}.
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["use"], "socket");
    assert_eq!(claims["username"], app.state.dashboard.username().as_str());
    let left = claims["exp"].as_i64().unwrap() - chrono::Utc::now().timestamp();
    assert!((55..=60).contains(&left), "{left}");
}

#[tokio::test]
async fn a_socket_token_opens_the_dashboard_sockets_and_no_http_route() {
    let app = spawn_app().await;
    let (_, b) = send(app.http.post(app.url("/api/v1/auth/socket-token")).bearer_auth(&app.jwt)).await;
    let token = b["data"]["token"].as_str().unwrap().to_string();

    // It opens the `?token=` sockets: the unified socket answers a chat ping, the Live one
    // answers a malformed frame with an error frame and stays open.
    let mut ws = ws_connect(&app, &format!("/api/v1/unified-chat/ws?token={token}"), &[]).await;
    ws.send(json!({"ct": "chat", "t": "ping"})).await;
    assert_eq!(ws.recv().await, json!({"ct": "chat", "type": "pong"}));
    let mut live = ws_connect(&app, &format!("/api/v1/live-chat/ws?token={token}"), &[]).await;
    live.send(json!({"t": "nonsense"})).await;
    let f = live.recv().await;
    assert_eq!((f["t"].as_str(), f["code"].as_str()), (Some("error"), Some("INVALID_MESSAGE_FORMAT")), "{f}");
    let mut legacy = ws_connect(&app, &format!("/api/live_chat/ws?token={token}"), &[]).await;
    legacy.send(json!({"t": "nonsense"})).await;
    assert_eq!(legacy.recv().await["code"], "INVALID_MESSAGE_FORMAT");

    // It is refused by every HTTP route, whichever carrier brings it.
    let (s, b) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&token)).await;
    assert_error(s, &b, 401, "Invalid token");
    let (s, b) =
        send(app.http.get(app.url("/api/v1/chat/sessions")).header("cookie", format!("astrbot_dashboard_jwt={token}")))
            .await;
    assert_error(s, &b, 401, "Invalid token");
    let (s, b) = send(app.http.get(app.url("/api/apikey/list")).bearer_auth(&token)).await;
    assert_error(s, &b, 401, "Token 无效");
    let (s, b) = send(app.http.post(app.url("/api/v1/auth/socket-token")).bearer_auth(&token)).await;
    assert_error(s, &b, 401, "Invalid token");
    // Nor is it an API-key credential for the Open API socket.
    let mut ws = ws_connect(&app, "/api/v1/live/ws?username=a", &[("authorization", &format!("Bearer {token}"))]).await;
    ws.expect_refusal(1008, "Invalid token").await;
    // A logout with it revokes nothing.
    send(app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&token)).await;
    assert_eq!(send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await.0, 200);

    // Expired: refused at the upgrade. (Re-signed with the server's key and its own version.)
    let payload = token.split('.').nth(1).unwrap();
    let mut claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["exp"] = json!(chrono::Utc::now().timestamp() - 1);
    let expired = app.state.dashboard.jwt.encode_claims(&claims);
    let mut ws = ws_connect(&app, &format!("/api/v1/live-chat/ws?token={expired}"), &[]).await;
    ws.expect_refusal(1008, "Token expired").await;
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 60);
    claims["use"] = json!("something-else");
    let other = app.state.dashboard.jwt.encode_claims(&claims);
    let mut ws = ws_connect(&app, &format!("/api/v1/live-chat/ws?token={other}"), &[]).await;
    ws.expect_refusal(1008, "Invalid token").await;

    // A logout with the login token revokes socket tokens too.
    send(app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&app.jwt)).await;
    let mut ws = ws_connect(&app, &format!("/api/v1/live-chat/ws?token={token}"), &[]).await;
    ws.expect_refusal(1008, "Invalid token").await;
}
