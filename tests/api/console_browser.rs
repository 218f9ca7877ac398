//! The web console in Debian's Chromium (`tests/browser/console.mjs`, through Node's
//! playwright-core) against the real app with a scripted fake model: logging in, keys, chat with
//! streaming, reload, resume, stop, attachments, revoke, the audit log; and the Voice page with a fake microphone
//! speaking espeak-ng's voice to the offline pocketsphinx and espeak-ng. Then what the browser did
//! is checked against what the server holds. Also the markdown renderer's unit tests (Node's test
//! runner). `scripts/test.sh` installs Chromium, Node and playwright-core and sets
//! `CONSOLE_BROWSER_TESTS=1`; without it (a bare `cargo test`) these tests say so and pass.
//! `CONSOLE_SCREENSHOTS=<dir>` saves a screenshot of each page (scripts/console-screenshots.sh).

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{Chunk, FakeLlm, Reply, tokens};
use crate::helpers::*;

fn enabled() -> bool {
    let on = std::env::var_os("CONSOLE_BROWSER_TESTS").is_some();
    if !on {
        eprintln!("skipped: CONSOLE_BROWSER_TESTS is not set (scripts/test.sh sets it)");
    }
    on
}

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `node tests/browser/<args…>` and returns its summary line.
async fn node(app: &TestApp, args: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(format!("{ROOT}/tests/browser"))
        .args(args)
        .env("CONSOLE_USER", app.state.dashboard.username())
        .env("CONSOLE_PASSWORD", PASSWORD)
        .kill_on_drop(true);
    let out =
        tokio::time::timeout(Duration::from_secs(300), cmd.output()).await.expect("the browser run finished").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser run failed:\n{stdout}\n{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no summary ({e}):\n{stdout}\n{stderr}"));
    eprintln!("browser run: {}", summary.to_string().chars().take(2000).collect::<String>());
    summary
}

fn slow(words: &[&str], ms: u64) -> Reply {
    Reply::Chunks { chunks: tokens(words), delay: Duration::from_millis(ms), first_delay: Duration::ZERO }
}

const MARKDOWN: &[&str] = &[
    "Here is **bo",
    "ld** and `inline ",
    "code`.\n\n- first\n",
    "- second\n\nRead [the docs](https://example.com/docs), ",
    "not [this](javascript:alert(1)).\n\n",
    "<img src=x onerror=\"window.__xss=1\">",
];

const COUNT: &[&str] = &[
    "one ",
    "two ",
    "three ",
    "four ",
    "five ",
    "six ",
    "seven ",
    "eight ",
    "nine ",
    "ten ",
    "eleven ",
    "twelve ",
    "thirteen ",
    "fourteen ",
    "fifteen ",
    "sixteen ",
    "seventeen ",
    "eighteen ",
    "nineteen ",
    "twenty.",
];

#[tokio::test]
async fn the_console_in_chromium() {
    if !enabled() {
        return;
    }
    let fake = FakeLlm::start().await;
    // In the order the browser asks: the markdown reply, the reply that is resumed after a
    // reload, the reply that is stopped (it hangs after two pieces), then the echo of the
    // question with an attachment.
    fake.push(slow(MARKDOWN, 150));
    fake.push(slow(COUNT, 300));
    fake.push(Reply::HangAfter(tokens(&["Thinking about it", " very slowly"])));
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    let summary = node(&app, &["console.mjs", "main", &app.base]).await;
    assert_eq!(summary["ok"], true);

    // The stream was seen in pieces, and the resumed reply is whole: nothing lost, nothing doubled.
    assert!(summary["stream_states"].as_u64().unwrap() >= 3, "{summary}");
    assert_eq!(summary["resumed_text"], COUNT.concat().trim());
    // Four questions from the page reached the model, once each (the resume replayed, it did not
    // ask again), then the key's own chat.
    let asked: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r["messages"].as_array().unwrap().last().unwrap()["content"].to_string())
        .collect();
    assert_eq!(asked.len(), 5, "{asked:?}");
    assert!(asked[3].contains("pineapple"), "the attached file reached the model: {}", asked[3]);
    assert!(asked[4].contains("Hello from the key"), "{asked:?}");
    // Stop really stopped the model's stream.
    assert!(fake.wait_abandoned(Duration::from_secs(5)).await, "the stopped upstream request was not cancelled");

    // The browser's logout revoked every dashboard token issued before it, the test's own too.
    let (s, _) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&app.jwt)).await;
    assert_eq!(s, 401, "the logout revoked earlier tokens");
    let jwt = app.state.dashboard.issue(&app.state.dashboard.username());

    // The server holds what the browser showed.
    let sid = summary["session_id"].as_str().unwrap();
    let (s, d) =
        send(app.http.get(app.url(&format!("/api/v1/chat/sessions/{sid}?username=alice"))).bearer_auth(&jwt)).await;
    assert_eq!(s, 200, "{d}");
    let history = d["data"]["history"].as_array().unwrap();
    let texts: Vec<&str> = history.iter().map(|m| m["content"]["message"][0]["text"].as_str().unwrap_or("")).collect();
    assert_eq!(texts.len(), 8, "{texts:?}");
    assert_eq!(texts[0], "Show me markdown");
    assert_eq!(texts[1], MARKDOWN.concat());
    assert_eq!((texts[2], texts[3]), ("Count slowly", COUNT.concat().as_str()));
    assert_eq!(texts[4], "Think forever");
    assert_eq!(history[5]["content"]["interrupted"], true, "{}", history[5]);
    assert_eq!(history[6]["content"]["message"][1]["type"], "file");
    assert_eq!(history[6]["content"]["message"][1]["filename"], "notes.txt");

    let (_, keys) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(&jwt)).await;
    let key = keys["data"].as_array().unwrap().iter().find(|k| k["name"] == "browser-key").expect("the key is listed");
    assert_eq!(key["scopes"], json!(["chat", "file"]));
    assert_eq!(key["key_prefix"], summary["key_prefix"]);
    assert_eq!(key["is_revoked"], true);
    assert!(key["expires_at"].is_string(), "30 days");
    assert!(key["last_used_at"].is_string(), "the key was used over HTTP");

    // The Audit page showed the server's log, newest first: the key's revocation and creation,
    // the login and the failed login before it.
    let (_, log) = send(app.http.get(app.url("/api/v1/audit")).bearer_auth(&jwt)).await;
    let server: Vec<Value> = log["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!({"id": e["id"], "action": e["action"], "target": e["target"].as_str().unwrap_or("—")}))
        .collect();
    assert_eq!(Value::Array(server), summary["audit"]);
    assert_eq!(summary["audit"][0]["target"], key["key_id"]);
}

/// espeak-ng's "Hello world.", twice, over a quiet noise floor (pocketsphinx mishears speech that
/// starts from digital silence): 1 s of noise, the phrase, 4 s, the phrase, 3 s. As a 16-bit WAV at
/// espeak-ng's 22,050 Hz, for Chromium's fake microphone (which resamples it to its own rate).
fn microphone_wav(path: &std::path::Path) {
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "--stdout", "Hello world."])
        .output()
        .expect("espeak-ng is installed (scripts/test.sh installs it)");
    let speech = astrgate::audio::wav::parse(&out.stdout).unwrap();
    let rate = speech.sample_rate;
    let mut seed: u32 = 42;
    let mut level = 0.0f32;
    let mut noise = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let white = (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
        level = 0.97 * level + white;
        level * 22.0
    };
    let mut samples: Vec<i16> = Vec::new();
    let mut pad = |secs: f32, samples: &mut Vec<i16>| {
        for _ in 0..(secs * rate as f32) as usize {
            samples.push(noise() as i16);
        }
    };
    pad(1.0, &mut samples);
    samples.extend(&speech.samples);
    pad(4.0, &mut samples);
    samples.extend(&speech.samples);
    pad(3.0, &mut samples);
    let bytes = astrgate::audio::wav::samples_to_bytes(&samples);
    std::fs::write(path, astrgate::audio::wav::pcm16_to_wav(&bytes, rate, 1)).unwrap();
}

fn sentences(n: usize) -> Vec<Chunk> {
    (1..=n).map(|i| Chunk::Content(format!("This is sentence number {i} of a long answer. "))).collect()
}

#[tokio::test]
async fn the_voice_page_in_chromium_with_a_fake_microphone() {
    if !enabled() {
        return;
    }
    let fake = FakeLlm::start().await;
    // The first reply is long and slow, so the second utterance interrupts it; the second is
    // short and plays to its end; the typed turn's reply is long again, for the Interrupt button.
    fake.push(Reply::Chunks { chunks: sentences(14), delay: Duration::from_millis(500), first_delay: Duration::ZERO });
    fake.push(Reply::Chunks {
        chunks: tokens(&["You said hello."]),
        delay: Duration::ZERO,
        first_delay: Duration::ZERO,
    });
    fake.push(Reply::Chunks { chunks: sentences(14), delay: Duration::from_millis(500), first_delay: Duration::ZERO });
    // No [stt]/[tts]: the installed offline programs (pocketsphinx, espeak-ng) are the defaults.
    let app = spawn_toml(&fake.provider_toml("fake")).await;
    assert_eq!(app.state.agent.providers.stt().map(|s| s.name().to_string()).as_deref(), Some("pocketsphinx"));
    let wav = app.dir.path().join("microphone.wav");
    microphone_wav(&wav);
    let summary = node(&app, &["console.mjs", "voice", &app.base, wav.to_str().unwrap()]).await;
    assert_eq!(summary["ok"], true);

    // The page heard both utterances (pocketsphinx, through the browser's capture and our worklet).
    let heard: Vec<String> =
        summary["heard"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_lowercase()).collect();
    assert!(heard.len() >= 3, "{heard:?}");
    assert!(heard[0].contains("hello") && heard[1].contains("hello"), "pocketsphinx heard {heard:?}");
    assert_eq!(heard[2], "tell me a long story");
    assert!(summary["played"].as_u64().unwrap() >= 1);

    // The socket: our Live socket, opened with a socket token, never the login token.
    let url = summary["sockets"][0].as_str().unwrap();
    assert!(url.starts_with(&format!("ws://{}/api/v1/live-chat/ws?token=", app.addr)), "{url}");
    let token = url.split("token=").nth(1).unwrap();
    let (s, b) = send(app.http.get(app.url("/api/v1/api-keys")).bearer_auth(token)).await;
    assert_error(s, &b, 401, "Invalid token");

    // What was sent: utterances of 16-bit 16 kHz PCM in 20 ms frames; the barge-in and the button
    // each sent an interrupt; the server answered each with stop_play.
    let sent = summary["sent"].as_array().unwrap();
    let kinds: Vec<&str> = sent.iter().map(|f| f["t"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "start_speaking").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "end_speaking").count(), 2, "{kinds:?}");
    for f in sent.iter().filter(|f| f["t"] == "speaking_part") {
        assert_eq!(f["bytes"].as_u64().unwrap() % 640, 0, "whole 20 ms frames of 16 kHz s16le: {f}");
    }
    let first: u64 = sent
        .iter()
        .skip_while(|f| f["t"] != "start_speaking")
        .take_while(|f| f["t"] != "end_speaking")
        .filter_map(|f| f["bytes"].as_u64())
        .sum();
    let secs = first as f64 / 32_000.0;
    assert!((1.0..6.0).contains(&secs), "the first utterance was {secs} s of 16 kHz audio");
    assert!(kinds.iter().filter(|k| **k == "interrupt").count() >= 2, "{kinds:?}");
    let received = summary["received"].as_array().unwrap();
    assert!(received.iter().filter(|f| f["t"] == "stop_play").count() >= 2, "{received:?}");
    // Both interruptions stopped the model's stream, not only the sound.
    for _ in 0..100 {
        if fake.abandoned() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.abandoned() >= 2, "upstream streams cancelled: {}", fake.abandoned());

    // The turns are in the dashboard user's history, the interrupted ones marked so.
    let user = app.state.dashboard.username();
    let (_, list) = send(
        app.http.get(app.url(&format!("/api/v1/chat/sessions?username={user}&platform_id=live"))).bearer_auth(&app.jwt),
    )
    .await;
    assert_eq!(list["data"]["total"], 1, "{list}");
}

#[tokio::test]
async fn the_markdown_renderer_unit_tests() {
    if !enabled() {
        return;
    }
    let out = tokio::process::Command::new("node")
        .args(["--test", "markdown.test.mjs"])
        .current_dir(format!("{ROOT}/tests/browser"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
