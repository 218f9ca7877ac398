//! The real binary: `keys create|list|revoke`, `check-config`, and `serve` with its logs and
//! SIGTERM handling.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_astrgate");

pub fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("astrgate.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[dashboard]\npassword = \"{PASSWORD}\"\nlogin_failure_delay_ms = 10\n[server]\nshutdown_grace_secs = 5\n{extra}",
        dir.join("data").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the CLI without blocking the test's runtime (which also runs the app under test: a
/// blocked runtime could hold the app's database transaction open while the CLI waits for it).
pub async fn astrgate(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn cli_keys_work_over_http() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let cfg = write_config(dir.path(), "");
    let out =
        astrgate(&cfg, &["keys", "create", "--name", "cli key", "--scopes", "config,im", "--expires-in-days", "3"])
            .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("abk_") && key.len() == 47, "last line is the key alone: {stdout:?}");

    let list = astrgate(&cfg, &["keys", "list"]).await;
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains(&key[..12]) && list.contains("cli key") && !list.contains(&key), "{list}");
    let key_id = list.split_whitespace().next().unwrap().to_string();

    // The app on the same data directory accepts the key.
    let app = spawn_in(dir.clone(), |c| c.data_dir = dir.path().join("data")).await;
    let (s, b) = send(app.http.get(app.url("/api/v1/im/bots")).header("X-API-Key", &key)).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"][0]["created_by"], "cli");
    // `config` includes `bot` and `provider`, stored after the given scopes as AstrBot does.
    assert_eq!(b["data"][0]["scopes"], serde_json::json!(["config", "im", "bot", "provider"]));

    let out = astrgate(&cfg, &["keys", "revoke", &key_id]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Another process revoked it; this instance sees it once its short cache entry lapses.
    app.state.keys.invalidate(&key_id);
    let (s, b) = send(app.http.get(app.url("/api/v1/im/bots")).header("X-API-Key", &key)).await;
    assert_error(s, &b, 401, "Invalid API key");
    // Both are in the audit log, by `cli`, with no address.
    let (s, b) = send(app.http.get(app.url("/api/v1/audit")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 200, "{b}");
    let events: Vec<(&str, &str, &str, &serde_json::Value)> = b["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap(), e["target"].as_str().unwrap(), &e["ip"]))
        .collect();
    let null = serde_json::Value::Null;
    assert_eq!(
        events,
        [("api_key.revoke", "cli", key_id.as_str(), &null), ("api_key.create", "cli", key_id.as_str(), &null)]
    );
    let out = astrgate(&cfg, &["keys", "revoke", "no-such-id"]).await;
    assert!(!out.status.success());
    let out = astrgate(&cfg, &["keys", "create", "--scopes", "chat,root"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid scopes: root"));
}

#[tokio::test]
async fn check_config_names_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[[providers]]\nid = \"p\"\nbase_url = \"http://x/v1\"\nmodel = \"m\"\napi_kye = \"oops\"\n",
    );
    let out = astrgate(&cfg, &["check-config"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api_kye"), "{err}");
    let good = write_config(dir.path(), "");
    let out = astrgate(&good, &["check-config"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok"));
    let out = astrgate(&dir.path().join("missing.toml"), &["check-config"]).await;
    assert_eq!(out.status.code(), Some(2));
}

/// Starts `astrgate serve` as a process, returns it, its address and its collected stderr.
pub async fn serve(config: &std::path::Path) -> (tokio::process::Child, String, Arc<Mutex<String>>) {
    serve_with(config, &["serve"], &[]).await
}

/// Starts the binary with `args` (after `--config`) and extra environment variables.
pub async fn serve_with(
    config: &std::path::Path,
    args: &[&str],
    env: &[(&str, String)],
) -> (tokio::process::Child, String, Arc<Mutex<String>>) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config").arg(config).args(args).envs(env.iter().map(|(k, v)| (k, v)));
    serve_command(cmd).await
}

/// Starts a command that runs the server (the binary, possibly under a wrapper such as
/// `prlimit`) and waits for its "listening" line; returns the child, the base URL and its log.
pub async fn serve_command(mut cmd: tokio::process::Command) -> (tokio::process::Child, String, Arc<Mutex<String>>) {
    let mut child =
        cmd.env_remove("RUST_LOG").stderr(Stdio::piped()).stdout(Stdio::null()).kill_on_drop(true).spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(i) = line.find("addr=") {
                let addr: String = line[i + 5..].chars().take_while(|c| !c.is_whitespace()).collect();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), rx).await.unwrap().unwrap();
    (child, format!("http://{addr}"), log)
}

pub async fn sigterm_and_wait(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits after SIGTERM").unwrap()
}

/// The log of a server that stopped cleanly, once its last line was read: the reader runs in a
/// task of its own and may still be behind when the process's exit is seen.
pub async fn final_log(log: &Arc<Mutex<String>>) -> String {
    eventually(|| async {
        let log = log.lock().unwrap().clone();
        log.contains("astrgate stopped").then_some(log)
    })
    .await
}

#[tokio::test]
async fn secrets_never_reach_the_logs_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let (mut child, base, log) = serve(&cfg).await;
    let http = client();
    let q_key = "abk_QUERYSECRETqueryqueryqueryqueryqueryqueryQS";
    let k_key = "abk_KEYPARAMSECRETkeykeykeykeykeykeykeykeyKSS";
    let h_key = "abk_HEADERSECRETheaderheaderheaderheaderheadH";
    let token = "eyJTOKENSECRET.payload.signature";
    let odd_a = "abk_ODDPARAMSECRETaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let odd_b = "abk_ODDHEADERSECRETbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let path_key = "abk_PATHSECRETcccccccccccccccccccccccccccccccc";
    for url in [
        // Keys under names no list of parameters would know, and in the path.
        format!("{base}/api/v1/configs?apikey={odd_a}&x-api-key={odd_b}"),
        format!("{base}/api/v1/chat/runs/{path_key}/stream?username=u"),
        format!("{base}/api/v1/configs?api_key={q_key}"),
        format!("{base}/api/v1/configs?username=bob&key={k_key}"),
        format!("{base}/api/live_chat/ws?token={token}"),
    ] {
        http.get(url).send().await.unwrap();
    }
    http.get(format!("{base}/api/v1/configs")).header("X-API-Key", h_key).send().await.unwrap();
    http.get(format!("{base}/api/v1/configs")).bearer_auth(token).send().await.unwrap();
    http.post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"username": "astrgate", "password": PASSWORD}))
        .send()
        .await
        .unwrap();

    let status = sigterm_and_wait(&mut child).await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let log = final_log(&log).await;
    assert!(log.contains("api_key=***"), "requests are logged with redacted queries:\n{log}");
    for secret in [
        q_key,
        k_key,
        h_key,
        token,
        odd_a,
        odd_b,
        path_key,
        "QUERYSECRET",
        "KEYPARAMSECRET",
        "TOKENSECRET",
        "ODDPARAMSECRET",
        "ODDHEADERSECRET",
        "PATHSECRET",
        PASSWORD,
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the logs:\n{log}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn login_status(base: &str, username: &str) -> u16 {
    client()
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn environment_and_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    // No subcommand means `serve`; the environment beats the file.
    let port = free_port();
    let env_data = dir.path().join("env-data");
    let (mut child, base, _log) = serve_with(
        &cfg,
        &[],
        &[
            ("ASTRGATE_LISTEN", format!("127.0.0.1:{port}")),
            ("ASTRGATE_DATA_DIR", env_data.display().to_string()),
            ("ASTRGATE_DASHBOARD__USERNAME", "env-admin".into()),
        ],
    )
    .await;
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    assert_eq!(login_status(&base, "env-admin").await, 200, "ASTRGATE_DASHBOARD__USERNAME applies");
    assert_eq!(login_status(&base, "astrgate").await, 401);
    assert!(sigterm_and_wait(&mut child).await.success());
    assert!(env_data.join("astrgate.db").exists(), "ASTRGATE_DATA_DIR holds the database");
    assert!(!dir.path().join("data").join("astrgate.db").exists(), "the file's data_dir was not used");

    // Flags beat both.
    let port = free_port();
    let flag_data = dir.path().join("flag-data");
    let (mut child, base, _log) = serve_with(
        &cfg,
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", &flag_data.display().to_string()],
        &[("ASTRGATE_LISTEN", "127.0.0.1:1".into())],
    )
    .await;
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    assert_eq!(client().get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    assert!(sigterm_and_wait(&mut child).await.success());
    assert!(flag_data.join("astrgate.db").exists());

    // `migrate` creates the schema at ASTRGATE_DATABASE_URL and exits; a key created there works.
    let db = dir.path().join("elsewhere").join("custom.db");
    let url = format!("sqlite://{}", db.display());
    let out = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("migrate")
        .env("ASTRGATE_DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(db.exists(), "migrate created {}", db.display());
    let out = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["keys", "create", "--name", "x"])
        .env("ASTRGATE_DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A bad value in the environment is named like a bad key in the file.
    let out = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .env("ASTRGATE_LIVE__NO_SUCH_KEY", "1")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"), "{}", String::from_utf8_lossy(&out.stderr));
}
