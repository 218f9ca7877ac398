//! Coordination between the parts of a running installation.
//!
//! [`SessionBus`] is the in-process fan-out of proactive messages: they reach every live
//! subscriber of a session (WebSocket `bind`s) on this instance. Channels are bounded broadcasts;
//! a subscriber that falls more than `CAPACITY` messages behind skips ahead instead of growing
//! memory. In cluster mode (`redis_url`), [`cluster::Cluster`] carries what instances must share
//! — session leases, run events, stops, pushes, key and account changes, login limits — and the
//! app hands what arrives from other instances to the same local fan-out.

pub mod cluster;
mod scripts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::store::Micros;

const CAPACITY: usize = 64;
/// Idle channels are swept when the map grows past this.
const SWEEP_AT: usize = 1024;

/// A message pushed into a session from outside a chat turn.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Push {
    pub session_id: String,
    pub message_id: i64,
    pub created_at: Micros,
    /// The stored bot message (`{"type":"bot","message":[parts],…}`).
    pub content: Value,
    pub text: String,
}

#[derive(Default)]
pub struct SessionBus {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Push>>>>,
}

impl SessionBus {
    pub fn subscribe(&self, session_id: &str) -> broadcast::Receiver<Arc<Push>> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        map.entry(session_id.to_string()).or_insert_with(|| broadcast::channel(CAPACITY).0).subscribe()
    }

    /// Delivers to current subscribers; returns how many there were.
    pub fn publish(&self, push: Push) -> usize {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = map.get(&push.session_id) else { return 0 };
        let key = push.session_id.clone();
        let n = tx.send(Arc::new(push)).unwrap_or(0);
        if n == 0 {
            map.remove(&key);
        }
        n
    }
}
