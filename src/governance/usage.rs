//! Usage per key per UTC day, added up in memory and written in batches.
//!
//! Requests and runs are counted when they are admitted, tokens and audio when a run ends.
//! [`UsageBook::flush`] (every `[api_keys] usage_flush_secs`, and at shutdown) adds the pending
//! counts to the store's rows in one transaction; rows are added to, never overwritten, so
//! several instances flushing into one database add up. Reads merge the store's rows with
//! what this instance has not written yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{Store, StoreResult, UsageCounts, UsageRow};

/// Pending (key, day) rows past which a flush is due at once rather than at the next tick
/// (keys are made by the operator, so this is reached only if flushes keep failing).
const MAX_PENDING: usize = 10_000;

pub struct UsageBook {
    store: Arc<dyn Store>,
    pending: Mutex<HashMap<(String, String), UsageCounts>>,
    /// Wakes the flusher early when the pending map grows large.
    pub full: tokio::sync::Notify,
}

impl UsageBook {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, pending: Mutex::new(HashMap::new()), full: tokio::sync::Notify::new() }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), UsageCounts>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `counts` to `key_id`'s usage today.
    pub fn add(&self, key_id: &str, counts: &UsageCounts) {
        let day = super::today();
        let mut p = self.pending();
        match p.get_mut(&(key_id.to_string(), day.clone())) {
            Some(c) => c.add(counts),
            None => {
                p.insert((key_id.to_string(), day), *counts);
                if p.len() >= MAX_PENDING {
                    self.full.notify_one();
                }
            }
        }
    }

    /// Writes what is pending; on failure it stays pending for the next flush.
    pub async fn flush(&self) -> StoreResult<()> {
        let batch: Vec<UsageRow> = std::mem::take(&mut *self.pending())
            .into_iter()
            .map(|((key_id, day), counts)| UsageRow { key_id, day, counts })
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.add_usage(&batch).await {
            let mut p = self.pending();
            for r in batch {
                p.entry((r.key_id, r.day)).or_default().add(&r.counts);
            }
            return Err(e);
        }
        Ok(())
    }

    /// A key's usage from `from_day` to `to_day` (inclusive): the store's rows plus what is
    /// pending here, by day, oldest first.
    pub async fn range(&self, key_id: &str, from_day: &str, to_day: &str) -> StoreResult<Vec<UsageRow>> {
        let mut by_day: std::collections::BTreeMap<String, UsageCounts> =
            self.store.key_usage(key_id, from_day, to_day).await?.into_iter().map(|r| (r.day, r.counts)).collect();
        for ((k, day), c) in self.pending().iter() {
            if k == key_id && day.as_str() >= from_day && day.as_str() <= to_day {
                by_day.entry(day.clone()).or_default().add(c);
            }
        }
        Ok(by_day.into_iter().map(|(day, counts)| UsageRow { key_id: key_id.to_string(), day, counts }).collect())
    }

    /// A key's total for one day.
    pub async fn day_total(&self, key_id: &str, day: &str) -> StoreResult<UsageCounts> {
        let rows = self.range(key_id, day, day).await?;
        Ok(rows.into_iter().next().map(|r| r.counts).unwrap_or_default())
    }
}
