//! The official `openai` Python SDK driving the real app (`tests/openai/sdk_check.py`):
//! models.list, streaming chat with usage, non-streaming chat, a speech → transcription round trip
//! with the offline defaults, and the SDK's exceptions for a bad key and an unknown model.
//! `scripts/test.sh` installs the SDK into a virtualenv and sets `OPENAI_SDK_PYTHON` to its
//! python; without it (a bare `cargo test`) this test says so and passes.

use std::time::Duration;

use crate::fake_llm::FakeLlm;
use crate::helpers::*;

#[tokio::test]
async fn the_official_openai_python_sdk_works_against_astrgate() {
    let Some(python) = std::env::var_os("OPENAI_SDK_PYTHON") else {
        eprintln!("skipped: OPENAI_SDK_PYTHON is not set (scripts/test.sh sets it)");
        return;
    };
    let fake = FakeLlm::start().await;
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    assert!(app.state.agent.providers.stt().is_some() && app.state.agent.providers.tts().is_some());
    let key = app.key(&["chat"]).await;
    let script = format!("{}/tests/openai/sdk_check.py", env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new(python).arg(script).arg(&app.base).arg(&key).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(180), run).await.expect("the SDK run finished").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK check failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no summary ({e}):\n{stdout}\n{stderr}"));
    eprintln!("openai SDK run: {summary}");
    assert_eq!(summary["stream"]["text"], "Echo: streamed from the sdk");
    assert_eq!(summary["whole"], "Echo: whole from the sdk");
    // What the SDK sent reached the upstream: the stream asked for usage, the parameters passed.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2, "the two chats, and nothing for the refused requests");
    assert_eq!(reqs[0]["temperature"], 0.3);
    assert_eq!(reqs[0]["stream_options"]["include_usage"], true);
    assert_eq!((reqs[1]["model"].as_str(), reqs[1]["max_tokens"].as_u64()), (Some("fake-model"), Some(32)));
}
