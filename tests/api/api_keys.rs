//! API-key management through both route families, with AstrBot's bodies and texts.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn create_list_revoke_delete_v1() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/api-keys");
    let (s, b) = send(
        app.http
            .post(&url)
            .bearer_auth(&app.jwt)
            .json(&json!({"name": "my app", "scopes": ["chat", "file"], "expires_in_days": 30})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let created = &b["data"];
    let raw = created["api_key"].as_str().unwrap();
    assert_eq!(raw.len(), 47);
    assert!(raw.starts_with("abk_"));
    assert_eq!(created["key_prefix"], &raw[..12]);
    assert_eq!(created["name"], "my app");
    assert_eq!(created["scopes"], json!(["chat", "file"]));
    assert_eq!(created["created_by"], "astrgate");
    assert_eq!(created["is_revoked"], false);
    assert_eq!(created["is_expired"], false);
    assert!(created["expires_at"].is_string());
    let fields: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        [
            "key_id",
            "name",
            "key_prefix",
            "scopes",
            "created_by",
            "created_at",
            "updated_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "is_revoked",
            "is_expired",
            "limits",
            "api_key"
        ]
    );
    assert_eq!(
        created["limits"],
        json!({"requests_per_minute": null, "concurrent_runs": null, "tokens_per_day": null})
    );

    let res = app.http.get(&url).bearer_auth(&app.jwt).send().await.unwrap();
    let text = res.text().await.unwrap();
    assert!(!text.contains(raw), "the listing never shows the secret");
    assert!(!text.contains(&raw[12..]), "not even its tail");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["key_prefix"], &raw[..12]);
    assert!(list["data"][0].get("api_key").is_none());

    let id = created["key_id"].as_str().unwrap();
    let (s, b) = send(app.http.post(app.url(&format!("/api/v1/api-keys/{id}/revoke"))).bearer_auth(&app.jwt)).await;
    assert_eq!((s.as_u16(), b), (200, json!({"status": "ok", "message": null, "data": {}})));
    let (s, b) = send(app.http.delete(app.url(&format!("/api/v1/api-keys/{id}"))).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200, "{b}");
    let (_, list) = send(app.http.get(&url).bearer_auth(&app.jwt)).await;
    assert_eq!(list["data"], json!([]));
    let (s, b) = send(app.http.delete(app.url(&format!("/api/v1/api-keys/{id}"))).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 404, "API key not found");
    let (s, b) = send(app.http.post(app.url("/api/v1/api-keys/nope/revoke")).bearer_auth(&app.jwt)).await;
    assert_error(s, &b, 404, "API key not found");
}

#[tokio::test]
async fn legacy_routes_and_defaults() {
    let app = spawn_app().await;
    let (s, b) = send(app.http.post(app.url("/api/apikey/create")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200, "an empty body creates a default key: {b}");
    assert_eq!(b["data"]["name"], "Untitled API Key");
    assert_eq!(
        b["data"]["scopes"],
        json!(["bot", "provider", "persona", "im", "config", "chat", "data", "file", "plugin", "mcp", "skill"]),
        "AstrBot's default scopes"
    );
    assert_eq!(b["data"]["expires_at"], Value::Null);
    let id = b["data"]["key_id"].as_str().unwrap().to_string();
    let (_, list) = send(app.http.get(app.url("/api/apikey/list")).bearer_auth(&app.jwt)).await;
    assert_eq!(list["data"][0]["key_id"], id.as_str());
    let (s, b) = send(app.http.post(app.url("/api/apikey/revoke")).bearer_auth(&app.jwt).json(&json!({}))).await;
    assert_error(s, &b, 400, "Missing key: key_id");
    let (s, _) =
        send(app.http.post(app.url("/api/apikey/revoke")).bearer_auth(&app.jwt).json(&json!({"key_id": id}))).await;
    assert_eq!(s, 200);
    let (s, _) =
        send(app.http.post(app.url("/api/apikey/delete")).bearer_auth(&app.jwt).json(&json!({"key_id": id}))).await;
    assert_eq!(s, 200);
    let (s, b) =
        send(app.http.post(app.url("/api/apikey/delete")).bearer_auth(&app.jwt).json(&json!({"key_id": id}))).await;
    assert_error(s, &b, 404, "API key not found");
}

#[tokio::test]
async fn create_validation_errors() {
    let app = spawn_app().await;
    let cases = [
        (json!({"scopes": "chat"}), "Invalid scopes"),
        (json!({"scopes": ["chat", "admin"]}), "Invalid scopes: admin"),
        (json!({"scopes": []}), "At least one valid scope is required"),
        (json!({"scopes": ["foo", "*", "chat", "bar"]}), "Invalid scopes: foo, *, bar"),
        (json!({"scopes": ["chat:admin"]}), "chat:admin requires the chat scope"),
        (json!({"scopes": ["config:edit_admin", "chat:admin"]}), "config:edit_admin requires the config scope"),
        (json!({"expires_in_days": "x"}), "expires_in_days must be an integer"),
        (json!({"expires_in_days": -1}), "expires_in_days must be greater than 0"),
        (json!({"name": ["x"]}), "name must be a string"),
        (json!([1, 2]), "Invalid request payload"),
    ];
    for (body, msg) in cases {
        let (s, b) = send(app.http.post(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt).json(&body)).await;
        assert_error(s, &b, 400, msg);
    }
    let (s, b) = send(
        app.http
            .post(app.url("/api/v1/api-keys"))
            .bearer_auth(&app.jwt)
            .header("content-type", "application/json")
            .body("{\"name\":"),
    )
    .await;
    assert_eq!(s, 400);
    assert!(b["message"].as_str().unwrap().starts_with("Invalid JSON body"), "{b}");
    let (_, list) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert_eq!(list["data"], json!([]), "nothing was created by a bad request");
}
