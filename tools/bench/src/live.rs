//! One Live turn's own overhead: from `end_speaking` to the first `response` frame, minus the fake
//! providers' fixed latencies (STT + TTS; the fake LLM answers at once). Turns run one after
//! another on one socket.

use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::stats::Samples;

pub struct LiveReport {
    pub turns: usize,
    pub first_audio: Samples,
    pub interrupt: Samples,
}

async fn next_frame<S>(ws: &mut S) -> anyhow::Result<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("socket closed"),
        }
    }
}

pub async fn overhead(ws_base: &str, key: &str, turns: usize) -> anyhow::Result<LiveReport> {
    let url = format!("{ws_base}/api/v1/live/ws?api_key={key}&username=live-bench");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let pcm = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 32_000]); // 1 s of silence
    let mut first_audio = Samples::default();
    for i in 0..turns {
        ws.send(Message::Text(json!({"t": "start_speaking", "stamp": i}).to_string().into())).await?;
        ws.send(Message::Text(json!({"t": "speaking_part", "data": pcm}).to_string().into())).await?;
        let t0 = Instant::now();
        ws.send(Message::Text(json!({"t": "end_speaking", "stamp": i}).to_string().into())).await?;
        let mut got = false;
        loop {
            let f = next_frame(&mut ws).await?;
            if f["t"] == "response" && !got {
                first_audio.push(t0.elapsed());
                got = true;
            }
            if f["t"] == "error" {
                anyhow::bail!("turn {i}: {f}");
            }
            if f["t"] == "metrics" && f["data"].get("wav_to_tts_total_time").is_some() {
                break;
            }
        }
        anyhow::ensure!(got, "turn {i} produced no audio");
    }
    // Interrupt latency: `interrupt` sent while the reply is being spoken → `stop_play` received.
    let mut interrupt = Samples::default();
    for _ in 0..turns.min(50) {
        ws.send(Message::Text(json!({"t": "text_input", "text": "talk"}).to_string().into())).await?;
        loop {
            let f = next_frame(&mut ws).await?;
            if f["t"] == "bot_delta_chunk" || f["t"] == "metrics" && f["data"].get("wav_to_tts_total_time").is_some() {
                break;
            }
        }
        let t0 = Instant::now();
        ws.send(Message::Text(json!({"t": "interrupt"}).to_string().into())).await?;
        let mut stopped = false;
        loop {
            let f = next_frame(&mut ws).await?;
            if f["t"] == "stop_play" {
                interrupt.push(t0.elapsed());
                stopped = true;
            }
            if f["t"] == "end" || f["t"] == "metrics" && f["data"].get("wav_to_tts_total_time").is_some() {
                break;
            }
        }
        if !stopped {
            // The turn ended before the interrupt arrived; nothing to measure this time.
            continue;
        }
    }
    Ok(LiveReport { turns, first_audio, interrupt })
}
