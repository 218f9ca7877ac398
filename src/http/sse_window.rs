//! SSE text rendered a window at a time: whole events up to about 64 KiB per chunk, and a
//! frame whose text is as long as the whole reply (`complete`, a whole `plain` message) written
//! a window of its text at a time. A client that reads slowly, or never, holds one window (and
//! its socket's buffers), never a rendered copy of the run's log.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::sse::{push_json_chars, push_json_str, write_event};
use crate::agent::events::{AgentEvent, SeqEvent};

/// At most about this much SSE text is rendered ahead of what a client has taken: a client
/// that reads slowly, or never, holds one such chunk (and its socket's buffers), not a rendered
/// copy of the run's log.
const CHUNK_BYTES: usize = 64 * 1024;

/// The frame of an event whose text can be as long as the whole reply (`complete`, a whole
/// `plain` message), as its opening, then each long string with the JSON that follows it.
fn long_frame(ev: &AgentEvent) -> Option<(&'static str, [(&str, &'static str); 2])> {
    match ev {
        AgentEvent::Complete { text, reasoning } if text.len() + reasoning.len() > CHUNK_BYTES => Some((
            "{\"type\":\"complete\",\"data\":\"",
            [(text, "\",\"reasoning\":\""), (reasoning, "\",\"streaming\":true,\"message_id\":")],
        )),
        AgentEvent::Message { text, reasoning } if text.len() > CHUNK_BYTES => {
            let glue = if *reasoning {
                "\",\"streaming\":false,\"chain_type\":\"reasoning\",\"message_id\":"
            } else {
                "\",\"streaming\":false,\"chain_type\":null,\"message_id\":"
            };
            Some(("{\"type\":\"plain\",\"data\":\"", [(text, glue), ("", "")]))
        }
        _ => None,
    }
}

/// A long frame being written a window of its text at a time: which string, and where in it.
struct Long {
    ev: Arc<AgentEvent>,
    field: usize,
    at: usize,
}

impl Long {
    /// Writes about `budget` bytes more; true once the frame is whole.
    fn write(&mut self, out: &mut String, budget: usize, run_id: &str) -> bool {
        let Some((_, fields)) = long_frame(&self.ev) else { return true };
        let (s, glue) = fields[self.field];
        let mut end = (self.at + budget.max(1)).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        push_json_chars(out, &s[self.at..end]);
        self.at = end;
        if end < s.len() {
            return false;
        }
        out.push_str(glue);
        if self.field == 0 && !fields[1].1.is_empty() {
            (self.field, self.at) = (1, 0);
            return false;
        }
        push_json_str(out, run_id);
        out.push_str("}\n\n");
        true
    }
}

/// What a client has yet to be sent: events received (shared pointers into the run's log) and
/// a long frame begun.
pub(super) struct Pending {
    events: VecDeque<SeqEvent>,
    long: Option<Long>,
    run_id: String,
}

impl Pending {
    pub(super) fn new(events: VecDeque<SeqEvent>, run_id: String) -> Self {
        Pending { events, long: None, run_id }
    }

    pub(super) fn extend(&mut self, more: impl IntoIterator<Item = SeqEvent>) {
        self.events.extend(more);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.long.is_none()
    }

    /// Renders the next chunk: whole events up to about `CHUNK_BYTES`, long ones in windows.
    pub(super) fn render(&mut self) -> Bytes {
        use std::fmt::Write;
        let mut out = String::with_capacity(CHUNK_BYTES + 1024);
        while out.len() < CHUNK_BYTES {
            if let Some(long) = &mut self.long {
                let budget = CHUNK_BYTES - out.len();
                if long.write(&mut out, budget, &self.run_id) {
                    self.long = None;
                }
                continue;
            }
            let Some((seq, ev)) = self.events.pop_front() else { break };
            match long_frame(&ev) {
                Some((opening, _)) => {
                    let _ = write!(out, "id: {}:{seq}\ndata: {opening}", self.run_id);
                    self.long = Some(Long { ev, field: 0, at: 0 });
                }
                None => write_event(&mut out, &self.run_id, seq, &ev),
            }
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::sse::{chat_event_json, write_frame};

    #[test]
    fn long_frames_are_written_in_windows_exactly_as_whole_ones() {
        let long: String = "长文本 \"quoted\" \n".repeat(CHUNK_BYTES / 4);
        let events = [
            AgentEvent::Complete { text: long.clone(), reasoning: "thought".into() },
            AgentEvent::Complete { text: "short".into(), reasoning: long.clone() },
            AgentEvent::Message { text: long.clone(), reasoning: false },
            AgentEvent::Message { text: long.clone(), reasoning: true },
            AgentEvent::End,
        ];
        let mut whole = String::new();
        for (seq, ev) in events.iter().enumerate() {
            write_frame(&mut whole, "r-1", seq as u64, &chat_event_json("r-1", ev).unwrap_or_default());
        }
        let events = events.into_iter().enumerate().map(|(seq, ev)| (seq as u64, Arc::new(ev))).collect();
        let mut pending = Pending { events, long: None, run_id: "r-1".into() };
        let mut chunks = Vec::new();
        while !pending.is_empty() {
            chunks.push(pending.render());
        }
        assert!(chunks.len() > 8, "{} chunks", chunks.len());
        // A window of text grows by its escapes only.
        assert!(chunks.iter().all(|c| c.len() < 2 * CHUNK_BYTES), "chunks stay near the window");
        assert_eq!(String::from_utf8(chunks.concat()).unwrap_or_default(), whole);
    }
}
