//! Rendering runs as AstrBot SSE: `id: <run_id>:<seq>` + `data: <json>` per event, a `: heartbeat`
//! comment after idle time, and the headers AstrBot sends plus `X-Accel-Buffering: no`.
//!
//! The body follows a [`Subscription`]: a client that disconnects only drops its cursor; the run
//! goes on and is saved. Events available together are written in one chunk, of at most about
//! 64 KiB: a client that does not read holds that much, whatever the run's length.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::sse_window::Pending;
use crate::agent::events::AgentEvent;
use crate::agent::runs::Subscription;
use crate::util::iso_utc;

/// AstrBot's JSON for one event of a chat run; `None` for events this front door does not show.
pub fn chat_event_json(run_id: &str, ev: &AgentEvent) -> Option<Value> {
    Some(match ev {
        AgentEvent::SessionId { session_id } => json!({"type": "session_id", "data": null, "session_id": session_id}),
        AgentEvent::UserMessageSaved { id, created_at, checkpoint } => json!({
            "type": "user_message_saved",
            "data": {"id": id, "created_at": iso_utc(*created_at), "llm_checkpoint_id": checkpoint},
        }),
        AgentEvent::RunStarted => {
            json!({"type": "run_started", "data": {"run_id": run_id}, "streaming": false, "message_id": run_id})
        }
        AgentEvent::Delta { text, reasoning } => json!({
            "type": "plain", "data": text, "streaming": true,
            "chain_type": if *reasoning { json!("reasoning") } else { Value::Null }, "message_id": run_id,
        }),
        AgentEvent::Message { text, reasoning } => json!({
            "type": "plain", "data": text, "streaming": false,
            "chain_type": if *reasoning { json!("reasoning") } else { Value::Null }, "message_id": run_id,
        }),
        AgentEvent::AgentStats { stats } => json!({
            "type": "agent_stats",
            "data": {
                "token_usage": {"input_other": stats.input_other, "input_cached": stats.input_cached, "output": stats.output},
                "current_context_tokens": stats.current_context_tokens,
                "start_time": stats.start_time,
                "end_time": stats.end_time,
                "time_to_first_token": stats.time_to_first_token,
                "provider_id": stats.provider_id,
                "model": stats.model,
            },
        }),
        AgentEvent::Complete { text, reasoning } => {
            json!({"type": "complete", "data": text, "reasoning": reasoning, "streaming": true, "message_id": run_id})
        }
        AgentEvent::Media { media } => {
            let tag = match media.kind.as_str() {
                "image" => "IMAGE",
                "record" => "RECORD",
                "video" => "VIDEO",
                _ => "FILE",
            };
            let data = if media.kind == "file" {
                format!("[FILE]{}|{}", media.stored_name, media.original_name)
            } else {
                format!("[{tag}]{}", media.stored_name)
            };
            json!({"type": media.kind, "data": data, "streaming": false, "message_id": run_id})
        }
        AgentEvent::AttachmentSaved { attachment_id, kind } => {
            json!({"type": "attachment_saved", "data": {"id": attachment_id, "type": kind}})
        }
        AgentEvent::MessageSaved { id, created_at, checkpoint } => json!({
            "type": "message_saved",
            "data": {"id": id, "created_at": iso_utc(*created_at), "llm_checkpoint_id": checkpoint},
        }),
        AgentEvent::Error { message, code } => {
            json!({"type": "error", "data": message, "code": code, "streaming": false, "message_id": run_id})
        }
        AgentEvent::Proactive { text, message_id } => json!({
            "type": "complete", "data": text, "chain_type": "proactive", "streaming": false,
            "message_id": run_id, "history_id": message_id,
        }),
        AgentEvent::End => json!({"type": "end", "data": "", "streaming": false, "message_id": run_id}),
        AgentEvent::Audio { .. } | AgentEvent::TtsStats { .. } => return None,
    })
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    push_json_chars(out, s);
    out.push('"');
}

/// Appends `s` escaped as inside a JSON string literal (as serde_json escapes it).
pub(super) fn push_json_chars(out: &mut String, s: &str) {
    use std::fmt::Write;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Appends the SSE frame of one event. Deltas — most of the traffic — and the events every turn
/// has (`sse_frames.rs`) are written directly; the rest go through [`chat_event_json`].
pub fn write_event(out: &mut String, run_id: &str, seq: u64, ev: &AgentEvent) {
    use std::fmt::Write;
    match ev {
        AgentEvent::Delta { text, reasoning } => {
            let _ = write!(out, "id: {run_id}:{seq}\ndata: {{\"type\":\"plain\",\"data\":");
            push_json_str(out, text);
            out.push_str(if *reasoning {
                ",\"streaming\":true,\"chain_type\":\"reasoning\",\"message_id\":"
            } else {
                ",\"streaming\":true,\"chain_type\":null,\"message_id\":"
            });
            push_json_str(out, run_id);
            out.push_str("}\n\n");
        }
        other => {
            if !super::sse_frames::write(out, run_id, seq, other)
                && let Some(v) = chat_event_json(run_id, other)
            {
                write_frame(out, run_id, seq, &v);
            }
        }
    }
}

/// Appends one SSE frame.
pub fn write_frame(out: &mut String, run_id: &str, seq: u64, data: &Value) {
    use std::fmt::Write;
    let _ = write!(out, "id: {run_id}:{seq}\ndata: {data}\n\n");
}

/// How long events followed by a store write wait for the event it produces before they are sent
/// on their own.
const HOLD: Duration = Duration::from_millis(10);

fn sse_headers(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// An SSE response following `sub` until its run ends. The events there already, and those
/// that follow within microseconds, are gathered first so they leave with the headers.
pub async fn stream_run(mut sub: Subscription, keepalive: Duration) -> Response {
    let run_id = sub.run_id().to_string();
    let run_header = HeaderValue::from_str(&run_id).ok();
    let mut batch = Vec::new();
    sub.recv_now(&mut batch);
    gather(&mut sub, &mut batch).await;
    let mut pending = Pending::new(Default::default(), run_id);
    pending.extend(batch.drain(..));
    let stream =
        futures_util::stream::unfold((sub, pending, batch), move |(mut sub, mut pending, mut batch)| async move {
            if pending.is_empty() {
                let more = tokio::select! {
                    more = sub.recv(&mut batch) => more,
                    _ = tokio::time::sleep(keepalive) => {
                        let beat = Bytes::from_static(b": heartbeat\n\n");
                        return Some((Ok::<Bytes, Infallible>(beat), (sub, pending, batch)));
                    }
                };
                if !more {
                    return None;
                }
                gather(&mut sub, &mut batch).await;
                pending.extend(batch.drain(..));
            }
            let chunk = pending.render();
            Some((Ok(chunk), (sub, pending, batch)))
        });
    let mut res = Response::new(Body::from_stream(stream));
    sse_headers(&mut res);
    if let Some(v) = run_header {
        res.headers_mut().insert("x-run-id", v);
    }
    res
}

/// Adds to `batch` the events that follow its last within microseconds, so they leave in one
/// write instead of several (each a syscall and a TCP segment on both sides): events before a
/// store write wait for the event it produces (up to [`HOLD`]), and a burst of deltas gets one
/// yield to finish arriving. Not before the model is called: that wait can be long.
async fn gather(sub: &mut Subscription, batch: &mut Vec<crate::agent::events::SeqEvent>) {
    while batch.last().is_some_and(|(_, e)| e.precedes_save()) {
        if !matches!(tokio::time::timeout(HOLD, sub.recv(batch)).await, Ok(true)) {
            break;
        }
    }
    if !batch.last().is_some_and(|(_, e)| e.precedes_model()) {
        tokio::task::yield_now().await;
        sub.recv_now(batch);
    }
}

/// An SSE response replaying a finished run's stored events after `after` (exclusive),
/// rendered a chunk at a time as the client reads.
pub fn replay_events(run_id: &str, events: Vec<AgentEvent>, from: u64) -> Response {
    let events =
        events.into_iter().enumerate().skip(from as usize).map(|(seq, ev)| (seq as u64, Arc::new(ev))).collect();
    let pending = Pending::new(events, run_id.to_string());
    let stream = futures_util::stream::unfold(pending, |mut pending| async move {
        if pending.is_empty() {
            return None;
        }
        let chunk = pending.render();
        Some((Ok::<Bytes, Infallible>(chunk), pending))
    });
    let mut res = Response::new(Body::from_stream(stream));
    sse_headers(&mut res);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_frames_equal_the_value_rendering() {
        for text in ["plain", "quote \" and \\ slash", "ctl \u{1}\n\t\r", "中文 ✓"] {
            for reasoning in [false, true] {
                let ev = AgentEvent::Delta { text: text.into(), reasoning };
                let mut direct = String::new();
                write_event(&mut direct, "r-1", 7, &ev);
                let mut via = String::new();
                write_frame(&mut via, "r-1", 7, &chat_event_json("r-1", &ev).unwrap_or_default());
                assert_eq!(direct, via);
                let data = direct.lines().nth(1).unwrap_or_default().trim_start_matches("data: ");
                assert_eq!(serde_json::from_str::<Value>(data).ok(), chat_event_json("r-1", &ev));
            }
        }
    }
}
