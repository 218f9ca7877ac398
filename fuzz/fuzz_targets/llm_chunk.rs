//! The upstream's chunk parsers (providers/llm.rs): any `data:` payload of a streamed answer is
//! nothing, `[DONE]`, a chunk's events, or an error — never a panic — and a chunk's events agree
//! with a plain `serde_json::Value` reading of the same payload (below). Any body is a whole
//! answer or an error.
#![no_main]

use std::collections::VecDeque;

use astrgate::providers::llm::{LlmError, LlmEvent, Payload, parse_completion, parse_stream_data};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// A non-empty string field.
fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// The events a chunk holds, read from its JSON value.
fn reference(v: &Value) -> Vec<LlmEvent> {
    let mut out = Vec::new();
    if let Some(choice) = v["choices"].as_array().and_then(|c| c.first()) {
        let delta = &choice["delta"];
        if let Some(r) = text(delta, "reasoning_content").or_else(|| text(delta, "reasoning")) {
            out.push(LlmEvent::Reasoning(r));
        }
        if let Some(c) = text(delta, "content") {
            out.push(LlmEvent::Content(c));
        }
        if let Some(t) = delta.get("tool_calls").filter(|t| !t.is_null()) {
            out.push(LlmEvent::ToolCalls(t.clone()));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            out.push(LlmEvent::Finish(f.to_string()));
        }
    }
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        let n = |x: &Value| x.as_u64().unwrap_or(0);
        out.push(LlmEvent::Usage(astrgate::providers::llm::Usage {
            prompt_tokens: n(&u["prompt_tokens"]),
            completion_tokens: n(&u["completion_tokens"]),
            cached_tokens: n(&u["prompt_tokens_details"]["cached_tokens"]),
        }));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = parse_completion(data) {
        let v: Value = serde_json::from_slice(data).expect("a whole answer is JSON");
        assert_eq!(c.content, v["choices"][0]["message"]["content"].as_str().unwrap_or_default());
    }
    let Ok(payload) = std::str::from_utf8(data) else { return };
    let mut out = VecDeque::new();
    let parsed = parse_stream_data(payload, &mut out);
    let trimmed = payload.trim();
    match parsed {
        Ok(Payload::Empty) => assert!(trimmed.is_empty() && out.is_empty()),
        Ok(Payload::Done) => assert!(trimmed == "[DONE]" && out.is_empty()),
        Ok(Payload::Chunk { finished }) => {
            // A field the parser does not read is skipped unread: it may hold what a `Value` cannot
            // (`{"x":4e999}`, a number out of range), which leaves nothing to compare with.
            let Ok(v) = serde_json::from_str::<Value>(trimmed) else { return };
            let events: Vec<LlmEvent> = out.into_iter().collect();
            assert_eq!(events, reference(&v), "{trimmed}");
            assert_eq!(finished, events.iter().any(|e| matches!(e, LlmEvent::Finish(_))));
        }
        Err(LlmError::Upstream { status: 200, .. }) => {
            let v: Value = serde_json::from_str(trimmed).expect("an error chunk is JSON");
            assert!(!v["error"].is_null(), "{trimmed}");
            assert!(out.is_empty());
        }
        Err(LlmError::Protocol(_)) => assert!(out.is_empty()),
        Err(other) => panic!("a payload cannot be {other:?}"),
    }
});
