//! A key's shared counters for its limits: runs in progress (per instance, so a dead instance's
//! runs are forgotten with it) and tokens of the day. Every call answers `None` while Redis is
//! away; the caller then counts on its own.

use super::{COMMAND_TIMEOUT, Cluster, timeout};

/// Day counters outlive their day by one, for instances whose clocks differ.
const TOKENS_TTL_MS: u64 = 2 * 86_400_000;

impl Cluster {
    /// Takes one of `key_id`'s `limit` run slots: `Some(false)` when all are busy.
    pub async fn take_slot(&self, key_id: &str, limit: u32) -> Option<bool> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> = timeout(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                self.slot_take
                    .key(self.key(&format!("slots:{key_id}")))
                    .key(self.key("instances"))
                    .arg(self.instance_id())
                    .arg(limit)
                    .arg(self.settings.lease_ttl.as_millis() as u64)
                    .invoke_async(&mut conn),
            )
            .await,
        );
        self.answered(r, "run slots").map(|n| n == 1)
    }

    /// Gives back a slot [`Cluster::take_slot`] took.
    pub async fn give_slot(&self, key_id: &str) {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> = timeout(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                self.slot_give
                    .key(self.key(&format!("slots:{key_id}")))
                    .arg(self.instance_id())
                    .invoke_async(&mut conn),
            )
            .await,
        );
        self.answered(r, "run slots");
    }

    /// Adds `add` to `key_id`'s tokens of `day` (created from `stored`, the database's total,
    /// when Redis has none) and answers the total.
    pub async fn add_tokens(&self, key_id: &str, day: &str, stored: i64, add: i64) -> Option<i64> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> = timeout(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                self.tokens
                    .key(self.key(&format!("tokens:{key_id}:{day}")))
                    .arg(stored)
                    .arg(add)
                    .arg(TOKENS_TTL_MS)
                    .invoke_async(&mut conn),
            )
            .await,
        );
        self.answered(r, "token counters")
    }

    fn answered<T>(&self, r: redis::RedisResult<T>, what: &str) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "Redis unreachable: {what} are this instance's own");
                None
            }
        }
    }
}
