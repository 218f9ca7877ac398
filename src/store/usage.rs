//! The per-key usage statements, written once for both backends (like [`super::audit`]):
//! `QueryBuilder` gives each its own placeholders, so SQLite and PostgreSQL only execute them.

use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::{StoreResult, UsageCounts, UsageRow};

/// Adds `r` to the stored row of its key and day, creating it: used by the usage book's flush and
/// by `copy-db`. One row per statement: a multi-row upsert may not touch one row twice in
/// PostgreSQL.
pub(super) fn add<DB>(r: &UsageRow) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let c = &r.counts;
    let mut q = QueryBuilder::new(
        "INSERT INTO key_usage (key_id, day, requests, runs, prompt_tokens, completion_tokens, audio_in_ms, audio_out_ms) ",
    );
    q.push_values([r], |mut b, r| {
        b.push_bind(r.key_id.clone())
            .push_bind(r.day.clone())
            .push_bind(c.requests)
            .push_bind(c.runs)
            .push_bind(c.prompt_tokens)
            .push_bind(c.completion_tokens)
            .push_bind(c.audio_in_ms)
            .push_bind(c.audio_out_ms);
    });
    q.push(
        " ON CONFLICT (key_id, day) DO UPDATE SET requests = key_usage.requests + excluded.requests,
       runs = key_usage.runs + excluded.runs, prompt_tokens = key_usage.prompt_tokens + excluded.prompt_tokens,
       completion_tokens = key_usage.completion_tokens + excluded.completion_tokens,
       audio_in_ms = key_usage.audio_in_ms + excluded.audio_in_ms, audio_out_ms = key_usage.audio_out_ms + excluded.audio_out_ms",
    );
    q
}

/// A key's rows from `from_day` to `to_day` (both included, `YYYY-MM-DD`), oldest first.
pub(super) fn range<DB>(key_id: &str, from_day: &str, to_day: &str) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT * FROM key_usage WHERE key_id = ");
    q.push_bind(key_id.to_string())
        .push(" AND day >= ")
        .push_bind(from_day.to_string())
        .push(" AND day <= ")
        .push_bind(to_day.to_string());
    q.push(" ORDER BY day");
    q
}

/// A stored row back into a record.
pub(super) fn from_row<'r, R>(r: &'r R) -> StoreResult<UsageRow>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(UsageRow {
        key_id: r.try_get("key_id")?,
        day: r.try_get("day")?,
        counts: UsageCounts {
            requests: r.try_get("requests")?,
            runs: r.try_get("runs")?,
            prompt_tokens: r.try_get("prompt_tokens")?,
            completion_tokens: r.try_get("completion_tokens")?,
            audio_in_ms: r.try_get("audio_in_ms")?,
            audio_out_ms: r.try_get("audio_out_ms")?,
        },
    })
}
