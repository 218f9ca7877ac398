//! The audit log's statements, written once for both backends: `QueryBuilder` gives each its own
//! placeholders (`?` or `$n`), so SQLite and PostgreSQL only execute what is built here.

use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::{AuditEvent, AuditRecord, Micros, StoreResult};

/// Rows per `INSERT`: 7 variables each stays far below SQLite's 32,766 and PostgreSQL's 65,535.
pub(super) const ROWS_PER_INSERT: usize = 500;

const COLUMNS: &str = "id, time, actor, action, target, ip, detail";

/// One multi-row `INSERT` of `rows` (at most [`ROWS_PER_INSERT`]). With `Some(id)` the rows keep
/// their ids and one that exists is left as it is (copy-db); with `None` the database numbers
/// them, in the order given.
pub(super) fn insert<'e, DB>(
    rows: impl IntoIterator<Item = (Option<i64>, &'e AuditEvent)>,
) -> StoreResult<QueryBuilder<DB>>
where
    DB: Database,
    DB::Arguments: Default,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    let rows = rows
        .into_iter()
        .map(|(id, e)| Ok((id, e, e.detail.as_ref().map(serde_json::to_string).transpose()?)))
        .collect::<StoreResult<Vec<_>>>()?;
    let with_ids = rows.iter().any(|(id, _, _)| id.is_some());
    let mut q = QueryBuilder::new(if with_ids {
        format!("INSERT INTO audit_events ({COLUMNS}) ")
    } else {
        "INSERT INTO audit_events (time, actor, action, target, ip, detail) ".to_string()
    });
    q.push_values(rows, |mut b, (id, e, detail)| {
        if with_ids {
            b.push_bind(id);
        }
        b.push_bind(e.time)
            .push_bind(e.actor.clone())
            .push_bind(e.action.clone())
            .push_bind(e.target.clone())
            .push_bind(e.ip.clone())
            .push_bind(detail);
    });
    if with_ids {
        q.push(" ON CONFLICT (id) DO NOTHING");
    }
    Ok(q)
}

/// Newest first: at most `limit` events, below the id `before` when given.
pub(super) fn list<DB>(before: Option<i64>, limit: i64) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM audit_events"));
    if let Some(before) = before {
        q.push(" WHERE id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    q
}

/// Removes the events recorded before `before`.
pub(super) fn purge<DB>(before: Micros) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("DELETE FROM audit_events WHERE time < ");
    q.push_bind(before);
    q
}

/// A stored row back into a record.
pub(super) fn from_row<'r, R>(r: &'r R) -> StoreResult<AuditRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let detail: Option<String> = r.try_get("detail")?;
    Ok(AuditRecord {
        id: r.try_get("id")?,
        event: AuditEvent {
            time: r.try_get("time")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            ip: r.try_get("ip")?,
            detail: detail.as_deref().map(serde_json::from_str).transpose()?,
        },
    })
}
