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

/// The fake providers as a client sees them when it calls them directly, one request at a time
/// over a pooled connection, with the payloads a Live turn sends: a 1 s WAV to STT, a streamed
/// chat completion read to its end, one sentence to TTS.
pub struct ProvidersDirect {
    pub stt: Samples,
    pub llm: Samples,
    pub tts: Samples,
}

impl ProvidersDirect {
    /// Sum of the three medians: what a turn spends in the providers alone.
    pub fn total_p50_ms(&mut self) -> f64 {
        self.stt.pct_ms(50.0) + self.llm.pct_ms(50.0) + self.tts.pct_ms(50.0)
    }
}

pub async fn providers_direct(upstream: &str, n: usize) -> anyhow::Result<ProvidersDirect> {
    let client = crate::sse::client(1)?;
    let wav = astrgate::audio::wav::pcm16_to_wav(&[0u8; 32_000], 16_000, 1);
    let mut r = ProvidersDirect { stt: Samples::default(), llm: Samples::default(), tts: Samples::default() };
    for _ in 0..n {
        let form = reqwest::multipart::Form::new()
            .text("model", "whisper-1")
            .part("file", reqwest::multipart::Part::bytes(wav.clone()).file_name("audio.wav").mime_str("audio/wav")?);
        let stt = client.post(format!("{upstream}/audio/transcriptions")).multipart(form);
        r.stt.push(timed("STT", stt).await?);
        let llm = client
            .post(format!("{upstream}/chat/completions"))
            .json(&json!({"model": "fake", "stream": true, "messages": [{"role": "user", "content": "hello world"}]}));
        r.llm.push(timed("LLM", llm).await?);
        let tts = client
            .post(format!("{upstream}/audio/speech"))
            .json(&json!({"model": "tts-1", "input": "tok0 tok1 tok2.", "voice": "alloy", "response_format": "wav"}));
        r.tts.push(timed("TTS", tts).await?);
    }
    Ok(r)
}

/// Sends one request, reads its whole body, and returns how long that took.
async fn timed(what: &str, req: reqwest::RequestBuilder) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let res = req.send().await?;
    anyhow::ensure!(res.status().is_success(), "{what}: HTTP {}", res.status());
    res.bytes().await?;
    Ok(t0.elapsed())
}
