//! The frames of a chat run's commonest events written straight into the SSE buffer, through
//! borrowed structs in the field order AstrBot's JSON has, instead of building a
//! `serde_json::Value` map (a string per key and a node per value) for each. Byte-identical to
//! [`super::sse::chat_event_json`]'s rendering, which stays the definition (tested below).

use serde::Serialize;

use crate::agent::events::{AgentEvent, AgentStats};
use crate::util::iso_utc;

#[derive(Serialize)]
struct SessionId<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    data: (),
    session_id: &'a str,
}

#[derive(Serialize)]
struct Saved<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    data: SavedIds<'a>,
}

#[derive(Serialize)]
struct SavedIds<'a> {
    id: i64,
    created_at: String,
    llm_checkpoint_id: &'a str,
}

#[derive(Serialize)]
struct Complete<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    data: &'a str,
    reasoning: &'a str,
    streaming: bool,
    message_id: &'a str,
}

#[derive(Serialize)]
struct End<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    data: &'static str,
    streaming: bool,
    message_id: &'a str,
}

#[derive(Serialize)]
struct Stats<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    data: StatsData<'a>,
}

#[derive(Serialize)]
struct StatsData<'a> {
    token_usage: TokenUsage,
    current_context_tokens: u64,
    start_time: f64,
    end_time: f64,
    time_to_first_token: f64,
    provider_id: &'a str,
    model: &'a str,
}

#[derive(Serialize)]
struct TokenUsage {
    input_other: u64,
    input_cached: u64,
    output: u64,
}

fn stats(s: &AgentStats) -> Stats<'_> {
    Stats {
        ty: "agent_stats",
        data: StatsData {
            token_usage: TokenUsage { input_other: s.input_other, input_cached: s.input_cached, output: s.output },
            current_context_tokens: s.current_context_tokens,
            start_time: s.start_time,
            end_time: s.end_time,
            time_to_first_token: s.time_to_first_token,
            provider_id: &s.provider_id,
            model: &s.model,
        },
    }
}

/// Appends the frame of `ev` when it is one of the events written here; false otherwise.
pub(super) fn write(out: &mut String, run_id: &str, seq: u64, ev: &AgentEvent) -> bool {
    let json = match ev {
        AgentEvent::SessionId { session_id } => {
            serde_json::to_string(&SessionId { ty: "session_id", data: (), session_id })
        }
        AgentEvent::UserMessageSaved { id, created_at, checkpoint } => serde_json::to_string(&Saved {
            ty: "user_message_saved",
            data: SavedIds { id: *id, created_at: iso_utc(*created_at), llm_checkpoint_id: checkpoint },
        }),
        AgentEvent::MessageSaved { id, created_at, checkpoint } => serde_json::to_string(&Saved {
            ty: "message_saved",
            data: SavedIds { id: *id, created_at: iso_utc(*created_at), llm_checkpoint_id: checkpoint },
        }),
        AgentEvent::Complete { text, reasoning } => serde_json::to_string(&Complete {
            ty: "complete",
            data: text,
            reasoning,
            streaming: true,
            message_id: run_id,
        }),
        AgentEvent::AgentStats { stats: s } => serde_json::to_string(&stats(s)),
        AgentEvent::End => serde_json::to_string(&End { ty: "end", data: "", streaming: false, message_id: run_id }),
        _ => return false,
    };
    let Ok(json) = json else { return false };
    use std::fmt::Write;
    let _ = write!(out, "id: {run_id}:{seq}\ndata: {json}\n\n");
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::sse::{chat_event_json, write_frame};

    #[test]
    fn direct_frames_equal_the_value_rendering() {
        let stats = AgentStats {
            input_other: 12,
            input_cached: 3,
            output: 20,
            current_context_tokens: 35,
            start_time: 1_764_000_000.123_456,
            end_time: 1_764_000_001.5,
            time_to_first_token: 0.000_812,
            provider_id: "p \"1\"".into(),
            model: "m/中".into(),
        };
        let events = [
            AgentEvent::SessionId { session_id: "s-\u{1}\"x".into() },
            AgentEvent::UserMessageSaved { id: 7, created_at: 1_764_000_000_123_456, checkpoint: "c-1".into() },
            AgentEvent::MessageSaved { id: -1, created_at: 0, checkpoint: String::new() },
            AgentEvent::Complete { text: "a\nb \\ \"c\" 中文".into(), reasoning: "r\t".into() },
            AgentEvent::Complete { text: String::new(), reasoning: String::new() },
            AgentEvent::AgentStats { stats: stats.clone() },
            AgentEvent::AgentStats { stats: AgentStats::default() },
            AgentEvent::End,
        ];
        for ev in &events {
            let mut direct = String::new();
            assert!(write(&mut direct, "r-1", 9, ev), "{ev:?} is written directly");
            let mut via = String::new();
            write_frame(&mut via, "r-1", 9, &chat_event_json("r-1", ev).unwrap_or_default());
            assert_eq!(direct, via, "{ev:?}");
        }
    }
}
