//! WebSocket plumbing shared by the chat and Live sockets: the writer task, upgrade settings and
//! the "accept, send an error frame, close 1008" authentication failure.
//!
//! One task owns the socket's sink. Everything else sends frames to it through two bounded
//! lanes: *control* (errors, pongs, `stop_play`, `end`: never waits, dropped if a client reads
//! nothing at all) and *data* (deltas, audio: senders wait, so a slow reader slows its own turn
//! instead of growing memory). Live-turn frames carry the turn generation they belong to;
//! bumping the generation (interrupt) makes the writer discard frames of the old turn still
//! queued, so no audio is ever played after `stop_play`. Other data frames (chat sends, pushes)
//! carry no generation and are never discarded.
//!
//! A client that stops reading without closing cannot hold the socket: each write has a
//! deadline (`[live] write_timeout_secs`); past it the writer gives up, and its `gone` token
//! ends the receive loop, which cancels the Live turn and frees the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

const CONTROL_LANE: usize = 32;
const DATA_LANE: usize = 16;
/// Policy violation, the close code AstrBot uses for authentication failures.
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// "Message too big": a frame larger than the socket will buffer.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// How long a refused client gets to take its error frame and close.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves an upgraded socket: its whole life is a task of the app's tracker (shutdown waits for
/// its close), counted in `astrgate_websockets_open` under its route template while it is open.
pub fn on_upgrade<F, Fut>(ws: WebSocketUpgrade, tasks: &TaskTracker, endpoint: &MatchedPath, serve: F) -> Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tasks, endpoint) = (tasks.clone(), endpoint.clone());
    ws.on_upgrade(move |socket| {
        tasks.track_future(async move {
            let _open = crate::metrics::SocketOpen::new(endpoint.as_str());
            serve(socket).await
        })
    })
}

/// Maps a failed upgrade (a plain HTTP request) onto our envelope. The socket buffers messages
/// up to twice `max_frame_bytes`: those between one and two times get an error frame from the
/// receive loop (the connection survives); larger ones end it (error frame, close 1009).
pub fn upgrade_or_426(
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    max_frame_bytes: usize,
) -> Result<WebSocketUpgrade, ApiError> {
    let max_message = max_frame_bytes.saturating_mul(2);
    match ws {
        Ok(ws) => Ok(ws
            // A small read buffer keeps idle sockets cheap; it grows for large messages.
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(4 * 1024 * 1024)
            .max_message_size(max_message)
            .max_frame_size(max_message)),
        Err(_) => Err(ApiError::new(StatusCode::UPGRADE_REQUIRED, "Expected a WebSocket upgrade")),
    }
}

enum Out {
    Frame(Message),
    Close(u16, String),
}

/// The sending side of a socket.
#[derive(Clone)]
pub struct Outbox {
    control: mpsc::Sender<Out>,
    data: mpsc::Sender<(Option<u64>, Message)>,
    generation: Arc<AtomicU64>,
    /// Cancelled when the writer has stopped: nothing more can reach the client.
    gone: CancellationToken,
}

impl Outbox {
    /// Queues a control frame without waiting (dropped if the client reads nothing).
    pub fn control(&self, v: &Value) {
        let _ = self.control.try_send(Out::Frame(Message::Text(Utf8Bytes::from(v.to_string()))));
    }

    /// Queues a frame of Live turn `generation`, waiting for room; false once the socket is gone.
    pub async fn turn_data(&self, generation: u64, v: &Value) -> bool {
        self.data.send((Some(generation), Message::Text(Utf8Bytes::from(v.to_string())))).await.is_ok()
    }

    /// Queues a data frame that belongs to no Live turn, waiting for room.
    pub async fn data(&self, v: &Value) -> bool {
        self.data.send((None, Message::Text(Utf8Bytes::from(v.to_string())))).await.is_ok()
    }

    /// Closes the socket after the control frames queued so far.
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.control.try_send(Out::Close(code, reason.to_string()));
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts a new turn generation: queued data frames of older ones are dropped.
    pub fn bump_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn is_closed(&self) -> bool {
        self.control.is_closed()
    }

    /// Resolves once the writer has stopped (closed, failed, or the client stopped reading).
    pub async fn gone(&self) {
        self.gone.cancelled().await
    }
}

/// Socket timing: the write deadline per frame, and how often the server pings; and the
/// tracker the writer task is spawned on.
#[derive(Debug, Clone)]
pub struct Timing {
    pub tasks: TaskTracker,
    pub write_timeout: Duration,
    /// A WebSocket Ping is sent after this long without any frame to the client, so that a live
    /// client (whose library answers pings by itself) always has something to answer.
    pub ping_interval: Duration,
}

/// Spawns the writer for `sink`; a frame that cannot be written within `write_timeout` ends it.
pub fn spawn_writer(mut sink: SplitSink<WebSocket, Message>, timing: Timing) -> (Outbox, JoinHandle<()>) {
    let write_timeout = timing.write_timeout;
    let (ctx, mut crx) = mpsc::channel::<Out>(CONTROL_LANE);
    let (dtx, mut drx) = mpsc::channel::<(Option<u64>, Message)>(DATA_LANE);
    let generation = Arc::new(AtomicU64::new(0));
    let gen_w = generation.clone();
    let gone = CancellationToken::new();
    let gone_w = gone.clone();
    let task = timing.tasks.spawn(async move {
        let _gone = gone_w.drop_guard();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + timing.ping_interval, timing.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let out = tokio::select! {
                biased;
                c = crx.recv() => match c {
                    Some(o) => o,
                    None => break,
                },
                _ = ping.tick() => Out::Frame(Message::Ping(bytes::Bytes::from_static(b"astrgate"))),
                d = drx.recv() => match d {
                    Some((None, m)) => Out::Frame(m),
                    Some((Some(g), m)) if g == gen_w.load(Ordering::SeqCst) => Out::Frame(m),
                    Some(_) => continue, // a frame of an interrupted turn
                    None => break,
                },
            };
            let (m, last) = match out {
                Out::Frame(m) => (m, false),
                Out::Close(code, reason) => {
                    (Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) })), true)
                }
            };
            match tokio::time::timeout(write_timeout, sink.send(m)).await {
                Ok(Ok(())) if !last => {}
                Ok(_) => break,
                Err(_) => {
                    tracing::info!(
                        timeout_secs = write_timeout.as_secs_f64(),
                        "WebSocket client stopped reading; closing"
                    );
                    // The peer is not reading, so a polite close could block as well.
                    return;
                }
            }
        }
        let _ = tokio::time::timeout(write_timeout, sink.close()).await;
    });
    (Outbox { control: ctx, data: dtx, generation, gone }, task)
}

/// Splits a socket into its incoming stream and an [`Outbox`].
pub fn split(
    socket: WebSocket,
    timing: Timing,
) -> (futures_util::stream::SplitStream<WebSocket>, Outbox, JoinHandle<()>) {
    let (sink, stream) = socket.split();
    let (out, task) = spawn_writer(sink, timing);
    (stream, out, task)
}

/// The close code and reason for a client that sent nothing (not even a pong) for
/// `[live] idle_timeout_secs`.
pub const CLOSE_IDLE: (u16, &str) = (CLOSE_GOING_AWAY, "idle timeout");

pub use super::ws_recv::{Frames, Receiver};

/// A Live session writes its frames through the socket's writer.
impl crate::voice::live::LiveSink for Outbox {
    fn control(&self, frame: crate::voice::live::LiveOut) {
        Outbox::control(self, &serde_json::to_value(frame).unwrap_or(Value::Null));
    }

    fn turn_frame(
        &self,
        generation: u64,
        frame: crate::voice::live::LiveOut,
    ) -> futures_util::future::BoxFuture<'_, bool> {
        Box::pin(async move { self.turn_data(generation, &serde_json::to_value(frame).unwrap_or(Value::Null)).await })
    }

    fn next_generation(&self) -> u64 {
        self.bump_generation()
    }
}

/// True when a read failed because the client's message is larger than the socket buffers
/// (twice `[live] max_frame_bytes`; frames between one and two times get an error frame and
/// the socket stays open).
pub fn is_too_big(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tungstenite::Error>())
        .is_some_and(|t| matches!(t, tungstenite::Error::Capacity(_)))
}

/// AstrBot's authentication failure on a socket: an error frame, then close 1008 with the reason.
pub async fn refuse(socket: WebSocket, frame: Value, reason: &str) {
    let timing = Timing {
        tasks: TaskTracker::new(),
        write_timeout: REFUSAL_WRITE_TIMEOUT,
        ping_interval: REFUSAL_WRITE_TIMEOUT,
    };
    let (_stream, out, writer) = split(socket, timing);
    out.control(&frame);
    out.close(CLOSE_POLICY, reason);
    drop(out);
    let _ = writer.await;
}

/// The headers without cookies. Sockets never authenticate by cookie: a browser sends the
/// dashboard cookie with cross-site WebSocket requests too (SameSite ignores ports), so a page on
/// another port of the same host could otherwise open a socket with dashboard rights.
pub fn without_cookies(h: &axum::http::HeaderMap) -> axum::http::HeaderMap {
    let mut h = h.clone();
    h.remove(axum::http::header::COOKIE);
    h
}
