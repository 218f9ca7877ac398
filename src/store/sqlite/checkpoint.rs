//! WAL checkpoints, mostly off the write path.
//!
//! SQLite's automatic checkpoint runs in the commit that takes the WAL past its threshold: that
//! commit copies every page the WAL changed since the last checkpoint back into the database and
//! fsyncs it before it returns. On the single writer connection that stalled every write queued
//! behind it, and every chat waiting for its message row: ~16 MiB of dirty pages flushed, 13–21 ms,
//! several times a second at a thousand turns per second (the c = 1 tail in docs/performance.md).
//!
//! This task checkpoints in `PASSIVE` mode on a connection of its own, shortly after writes
//! (the writer notifies it) and at most every [`GAP`]: it never waits for the writer or the
//! readers, and its copies and fsyncs happen on its own thread. The writer keeps SQLite's
//! automatic checkpoint, which is what lets the WAL start over (that needs a checkpoint that
//! caught up while no write was under way); by the time it fires, this task has already copied
//! and synced nearly every page, so it copies only the last few and syncs little.

use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::SqlitePool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The least time between two checkpoints. The shorter the gap, the fewer pages each checkpoint
/// copies and syncs, and the less a write waits behind those syncs: with two writes per chat,
/// c = 1 p99 was 29–34 ms at 1 s, 3.8–4.7 ms at 100 ms, 2.2–2.6 ms at 20 ms, 1.9–2.1 ms at 5 ms
/// and 1.3–1.5 ms at 2 ms (as on tmpfs, where syncs cost nothing); 1 ms and none at all bought
/// nothing more and cost CPU. Under constant writes the checkpoints follow one another as fast
/// as their syncs allow.
pub(super) const GAP: Duration = Duration::from_millis(2);

/// A checkpoint waits for this many committed batches after the last one (each notifies the
/// checkpointer)…
const MIN_BATCHES: u32 = 8;
/// …or for this long after the first, whichever comes first. Under load eight batches take a
/// few milliseconds; a Live conversation (two or three writes a turn) is checkpointed every
/// few turns instead of during each, which cost its turns ~0.35 ms of overhead at the median.
const MAX_DELAY: Duration = Duration::from_millis(200);

/// Checkpoints `pool`'s database after writes (`written` is notified after each batch) until
/// `closing` is cancelled, then once more.
pub(super) async fn run(pool: SqlitePool, written: Arc<Notify>, closing: CancellationToken) {
    let mut failing = false;
    loop {
        let mut stop = tokio::select! {
            _ = written.notified() => false,
            _ = closing.cancelled() => true,
        };
        // Wait for a few more batches (or for MAX_DELAY): a server writing now and then (a Live
        // conversation) is not checkpointed after every write, in the middle of its turns.
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        let mut batches = 1;
        while !stop && batches < MIN_BATCHES {
            tokio::select! {
                _ = written.notified() => batches += 1,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = closing.cancelled() => stop = true,
            }
        }
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            Ok(_) if failing => {
                tracing::info!("WAL checkpoints work again");
                failing = false;
            }
            Ok(_) => {}
            // Logged once per failing spell (a full disk fails every attempt until it clears).
            Err(e) if !failing => {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next write");
                failing = true;
            }
            Err(_) => {}
        }
        if stop {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(GAP) => {}
            _ = closing.cancelled() => {}
        }
    }
    pool.close().await;
}
