//! The receiving half of every socket (see [`Receiver`]).

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::ws::{CLOSE_GOING_AWAY, CLOSE_IDLE, CLOSE_TOO_BIG, Outbox, is_too_big};

/// What the shared receive loop needs to know of a socket and its dialect.
pub struct Frames {
    /// Largest text frame handled (`[live] max_frame_bytes`).
    pub max_bytes: usize,
    /// Silence after which the socket is closed (`[live] idle_timeout_secs`).
    pub idle: Duration,
    pub shutdown: CancellationToken,
    /// An error frame of this dialect: (code, text).
    pub error: fn(&str, &str) -> Value,
    /// The code of a malformed frame.
    pub invalid: &'static str,
}

/// The one receive loop of every socket: [`Receiver::next`] reads client frames until the
/// client leaves, the writer gives up, the socket idles out or the server shuts down.
/// Malformed frames (binary, too large, not JSON, not an object) are answered here with an error
/// frame and the socket stays open (over twice the limit: an error frame, then close 1009);
/// every JSON object is handed over. The caller must not wait long on one (turns run in tasks).
pub struct Receiver {
    incoming: futures_util::stream::SplitStream<WebSocket>,
    out: Outbox,
    f: Frames,
}

impl Receiver {
    pub fn new(incoming: futures_util::stream::SplitStream<WebSocket>, out: Outbox, f: Frames) -> Self {
        Self { incoming, out, f }
    }

    /// The next client frame; `None` once the socket is done.
    pub async fn next(&mut self) -> Option<serde_json::Map<String, Value>> {
        let (out, f) = (&self.out, &self.f);
        loop {
            let msg = tokio::select! {
                _ = f.shutdown.cancelled() => {
                    out.close(CLOSE_GOING_AWAY, "server shutting down");
                    return None;
                }
                _ = out.gone() => return None,
                m = tokio::time::timeout(f.idle, self.incoming.next()) => match m {
                    Ok(m) => m,
                    Err(_) => {
                        out.close(CLOSE_IDLE.0, CLOSE_IDLE.1);
                        return None;
                    }
                },
            };
            let too_large = || format!("message too large (limit {} bytes)", f.max_bytes);
            let text = match msg {
                Some(Err(e)) if is_too_big(&e) => {
                    out.control(&(f.error)(f.invalid, &too_large()));
                    out.close(CLOSE_TOO_BIG, "message too large");
                    return None;
                }
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Binary(_))) => {
                    out.control(&(f.error)(f.invalid, "binary frames are not supported"));
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            if text.len() > f.max_bytes {
                out.control(&(f.error)(f.invalid, &too_large()));
                continue;
            }
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(o)) => return Some(o),
                Ok(_) => out.control(&(f.error)(f.invalid, "message must be an object")),
                Err(_) => out.control(&(f.error)(f.invalid, "message must be valid JSON")),
            }
        }
    }
}
