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
