//! A Live API client: speaks one utterance (a WAV file, or a phrase synthesised with espeak-ng)
//! or sends text, prints every frame, and writes each spoken sentence to `reply-N.wav`.
//!
//! ```bash
//! cargo run --example live_client -- --key abk_… --say "hello world"
//! cargo run --example live_client -- --key abk_… --wav question.wav
//! cargo run --example live_client -- --key abk_… --text "What can you do?"
//! ```
//!
//! Options: `--url` (default `ws://127.0.0.1:6185`), `--user` (default `alice`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Args {
    url: String,
    key: String,
    user: String,
    wav: Option<String>,
    say: Option<String>,
    text: Option<String>,
}

fn args() -> Args {
    let mut a = Args { url: "ws://127.0.0.1:6185".into(), user: "alice".into(), ..Default::default() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val(),
            "--key" => a.key = val(),
            "--user" => a.user = val(),
            "--wav" => a.wav = Some(val()),
            "--say" => a.say = Some(val()),
            "--text" => a.text = Some(val()),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(!a.key.is_empty(), "--key abk_… is required (an API key with scope chat)");
    a
}

/// 16 kHz mono s16le PCM from a WAV file's bytes.
fn pcm_of(wav: &[u8]) -> Vec<u8> {
    let w = astrgate::audio::wav::parse(wav).expect("a 16-bit PCM WAV file");
    astrgate::audio::wav::samples_to_bytes(&astrgate::audio::wav::to_mono(&w, 16_000))
}

fn espeak(phrase: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("espeak-ng")
        .args(["--stdout", "--stdin", "-v", "en-us"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("espeak-ng installed");
    child.stdin.take().unwrap().write_all(phrase.as_bytes()).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[tokio::main]
async fn main() {
    let a = args();
    let url = format!("{}/api/v1/live/ws?api_key={}&username={}", a.url.trim_end_matches('/'), a.key, a.user);
    let (mut ws, _) = // TCP_NODELAY: a small frame right after a large one must not wait for a delayed ACK.
    tokio_tungstenite::connect_async_with_config(url, None, true).await.expect("connect");
    let b64 = base64::engine::general_purpose::STANDARD;

    if let Some(text) = &a.text {
        ws.send(Message::Text(json!({"t": "text_input", "text": text}).to_string().into())).await.unwrap();
    } else {
        let wav = match (&a.wav, &a.say) {
            (Some(path), _) => std::fs::read(path).expect("read the WAV file"),
            (None, Some(phrase)) => espeak(phrase),
            (None, None) => espeak("hello world"),
        };
        let pcm = pcm_of(&wav);
        ws.send(Message::Text(json!({"t": "start_speaking", "stamp": "utt-1"}).to_string().into())).await.unwrap();
        // 200 ms of audio per frame, as a streaming microphone would send it.
        for chunk in pcm.chunks(6400) {
            ws.send(Message::Text(json!({"t": "speaking_part", "data": b64.encode(chunk)}).to_string().into()))
                .await
                .unwrap();
        }
        ws.send(Message::Text(json!({"t": "end_speaking", "stamp": "utt-1"}).to_string().into())).await.unwrap();
    }

    let mut n = 0;
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(t) = msg else { continue };
        let f: Value = serde_json::from_str(&t).unwrap();
        match f["t"].as_str().unwrap_or("") {
            "response" => {
                n += 1;
                let audio = b64.decode(f["data"].as_str().unwrap()).unwrap();
                let name = format!("reply-{n}.wav");
                std::fs::write(&name, &audio).unwrap();
                println!("response      {} bytes → {name}", audio.len());
            }
            "bot_delta_chunk" => println!("delta         {:?}", f["data"]["text"].as_str().unwrap_or("")),
            "bot_text_chunk" => println!("sentence      {:?}", f["data"]["text"].as_str().unwrap_or("")),
            "user_msg" => println!("heard         {:?}", f["data"]["text"].as_str().unwrap_or("")),
            "bot_msg" => println!("reply (text)  {:?}", f["data"]["text"].as_str().unwrap_or("")),
            "metrics" => println!("metrics       {}", f["data"]),
            "error" => println!("error         {} ({})", f["data"], f["code"]),
            "end" => {
                println!("end");
                // A successful turn sends one last metrics frame after `end`; wait briefly for it.
                if let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(std::time::Duration::from_millis(500), ws.next()).await
                {
                    println!("metrics       {t}");
                }
                break;
            }
            other => println!("{other:<13} {f}"),
        }
    }
    let _ = ws.close(None).await;
}
