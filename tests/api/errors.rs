//! The envelope for routing errors: never a bare text or a framework default body.

use crate::helpers::*;

#[tokio::test]
async fn unknown_route_and_wrong_method_use_the_envelope() {
    let app = spawn_app().await;
    let (s, b) = send(app.http.get(app.url("/api/v1/does-not-exist"))).await;
    assert_error(s, &b, 404, "Not Found");
    let (s, b) = send(app.http.post(app.url("/nothing/here"))).await;
    assert_error(s, &b, 404, "Not Found");
    let (s, b) = send(app.http.put(app.url("/api/v1/configs"))).await;
    assert_error(s, &b, 405, "Method Not Allowed");
    let (s, b) = send(app.http.get(app.url("/api/auth/login"))).await;
    assert_error(s, &b, 405, "Method Not Allowed");
}

#[tokio::test]
async fn health_reports_the_database() {
    let app = spawn_app().await;
    let (s, b) = send(app.http.get(app.url("/healthz"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["status"], "ok");
    assert_eq!(b["data"]["status"], "ok");
}

#[tokio::test]
async fn hostile_json_gets_a_short_clear_400() {
    let app = spawn_app().await;
    let key = app.key(&["chat"]).await;
    let nested = format!("{{\"username\":\"u\",\"message\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(nested),
    )
    .await;
    assert_eq!(s, 400);
    let msg = b["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Invalid JSON body") && msg.contains("recursion limit exceeded") && msg.chars().count() < 400,
        "{msg}"
    );
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(b"{\"username\":\"u\",\"message\":\"\xff\"}".to_vec()),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) =
        send(app.http.post(app.url("/api/v1/chat")).bearer_auth(&key).header("content-type", "text/plain").body("{}"))
            .await;
    assert_error(s, &b, 400, "Invalid request body: expected Content-Type: application/json");
}

#[tokio::test]
async fn framework_rejections_use_the_envelope_too() {
    let app = spawn_app().await;
    // A body over the JSON limit on a handler that buffers raw bytes.
    let res = app
        .http
        .post(app.url("/api/v1/api-keys"))
        .bearer_auth(&app.jwt)
        .header("content-type", "application/json")
        .body(vec![b' '; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["content-type"], "application/json");
    let b: serde_json::Value = res.json().await.unwrap();
    assert_eq!((b["status"].as_str(), b["data"].is_null()), (Some("error"), true), "{b}");
    assert_eq!(b["message"], "Request body too large", "{b}");
    // A path segment that is not UTF-8.
    let key = app.key(&["chat"]).await;
    let (s, b) = send(app.http.get(app.url("/api/v1/chat/sessions/%FF/messages?username=u")).bearer_auth(&key)).await;
    assert_eq!((s.as_u16(), b["status"].as_str()), (400, Some("error")), "{b}");
    // Nothing was created by the oversized request.
    let (_, b) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert_eq!(b["data"].as_array().map(Vec::len), Some(1), "only the key made above: {b}");
}
