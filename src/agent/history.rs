//! Turning stored history into the model's messages.

use serde_json::{Value, json};

use super::input::message_text;
use crate::store::MessageRecord;

/// System prompt, then past turns (failed replies left out), then the new user content.
pub fn model_messages(system_prompt: &str, history: &[MessageRecord], user: Value) -> Vec<Value> {
    let mut out = Vec::with_capacity(history.len() + 2);
    if !system_prompt.trim().is_empty() {
        out.push(json!({"role": "system", "content": system_prompt}));
    }
    for m in history {
        let role = match m.content["type"].as_str() {
            Some("user") => "user",
            Some("bot") if m.content.get("error").is_none() => "assistant",
            _ => continue,
        };
        let text = message_text(&m.content);
        if !text.is_empty() {
            out.push(json!({"role": role, "content": text}));
        }
    }
    out.push(json!({"role": "user", "content": user}));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(content: Value) -> MessageRecord {
        MessageRecord {
            id: 1,
            session_id: "s".into(),
            platform_id: "webchat".into(),
            sender_id: "u".into(),
            sender_name: "u".into(),
            content,
            llm_checkpoint_id: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn history_order_and_failed_replies() {
        let h = vec![
            rec(json!({"type": "user", "message": [{"type": "plain", "text": "hi"}]})),
            rec(json!({"type": "bot", "message": [{"type": "plain", "text": "hello"}]})),
            rec(json!({"type": "user", "message": [{"type": "plain", "text": "again"}]})),
            rec(json!({"type": "bot", "message": [{"type": "plain", "text": "boom"}], "error": "boom"})),
        ];
        let m = model_messages("be nice", &h, json!("now"));
        let roles: Vec<&str> = m.iter().map(|x| x["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "user"]);
        assert_eq!(m[4]["content"], "now");
    }
}
