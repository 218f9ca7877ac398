//! A chat run's events in Redis: appended by the instance that runs it, followed by any other
//! (a client resuming there). One stream per run, entry ids `0-<seq+1>`, so a follower reads
//! after any `Last-Event-ID` with no gap and no duplicate; the stream and its meta key expire
//! `run_stream_ttl_secs` after the last write.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{COMMAND_TIMEOUT, Cluster, FOLLOW_BLOCK_MS, timeout};

/// One run event as it travels through Redis.
pub struct StreamEvent {
    pub seq: u64,
    pub json: String,
    /// The run's last event.
    pub last: bool,
}

impl Cluster {
    /// Appends a run's events to its stream (idempotent: a retried batch adds nothing twice).
    pub async fn append_events(&self, run_id: &str, meta: &str, events: &[StreamEvent]) -> redis::RedisResult<()> {
        let mut inv = self.append.key(self.key(&format!("run:{run_id}")));
        inv.key(self.key(&format!("runmeta:{run_id}")));
        inv.arg(self.settings.run_stream_ttl.as_millis() as u64).arg(meta);
        for e in events {
            inv.arg(format!("0-{}", e.seq + 1)).arg(&e.json).arg(if e.last { "1" } else { "0" });
        }
        let mut conn = self.conn.clone();
        timeout(tokio::time::timeout(COMMAND_TIMEOUT * 3, inv.invoke_async::<i64>(&mut conn)).await).map(|_| ())
    }

    /// Follows a run's stream from event `from` on: its meta JSON and a receiver of event
    /// batches, ending after the run's last event (or when the stream expires, or Redis stays
    /// away). `Ok(None)`: no such stream. The follower holds a connection of its own (its reads
    /// block) and stops when `cancel` is cancelled or the receiver is dropped.
    pub async fn follow_run(
        self: &Arc<Self>,
        run_id: &str,
        from: u64,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> redis::RedisResult<Option<(String, mpsc::Receiver<Vec<StreamEvent>>)>> {
        let mut conn = self.conn.clone();
        let meta: Option<String> =
            timeout(tokio::time::timeout(COMMAND_TIMEOUT, conn.get(self.key(&format!("runmeta:{run_id}")))).await)?;
        let Some(meta) = meta else { return Ok(None) };
        let Ok(permit) = self.followers.clone().try_acquire_owned() else {
            return Err(redis::RedisError::from((redis::ErrorKind::Client, "too many remote followers")));
        };
        let (tx, rx) = mpsc::channel(8);
        let (client, key) = (self.client.clone(), self.key(&format!("run:{run_id}")));
        tasks.spawn(async move {
            let _permit = permit;
            follow(client, key, from, tx, cancel).await;
        });
        Ok(Some((meta, rx)))
    }
}

/// Reads a run stream after `0-<from>` and forwards batches until the last event.
async fn follow(
    client: redis::Client,
    key: String,
    from: u64,
    tx: mpsc::Sender<Vec<StreamEvent>>,
    cancel: CancellationToken,
) {
    use redis::streams::{StreamReadOptions, StreamReadReply};
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(Duration::from_millis(FOLLOW_BLOCK_MS as u64) + COMMAND_TIMEOUT * 2));
    let mut last = format!("0-{from}");
    let mut failures = 0u32;
    let mut conn = None;
    loop {
        if cancel.is_cancelled() || tx.is_closed() {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match client.get_multiplexed_async_connection_with_config(&config).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    failures += 1;
                    if failures > 30 {
                        return;
                    }
                    tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
                }
            },
        };
        let opts = StreamReadOptions::default().count(256).block(FOLLOW_BLOCK_MS);
        let (keys, ids) = ([key.as_str()], [last.as_str()]);
        let r: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
            _ = cancel.cancelled() => return,
            r = c.xread_options(&keys, &ids, &opts) => r,
        };
        match r {
            Ok(Some(reply)) => {
                failures = 0;
                let mut batch = Vec::new();
                let mut done = false;
                for id in reply.keys.into_iter().flat_map(|k| k.ids) {
                    let seq =
                        id.id.strip_prefix("0-").and_then(|n| n.parse::<u64>().ok()).and_then(|n| n.checked_sub(1));
                    let (Some(seq), Some(json)) = (seq, id.get::<String>("e")) else { continue };
                    let is_last = id.contains_key("x");
                    last = id.id.clone();
                    batch.push(StreamEvent { seq, json, last: is_last });
                    done |= is_last;
                }
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    return;
                }
                if done {
                    return;
                }
            }
            Ok(None) => {
                // Nothing new for a while: the stream may have expired (its run's instance died).
                let exists: redis::RedisResult<bool> = c.exists(&key).await;
                if let Ok(false) = exists {
                    return;
                }
            }
            Err(_) => {
                failures += 1;
                conn = None;
                if failures > 30 {
                    return;
                }
                tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
            }
        }
    }
}
