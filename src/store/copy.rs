//! Moving an installation from one database to another (`astrgate copy-db`): every table is read
//! in pages in primary-key order and written to the destination with its ids kept, then the row
//! counts of both sides are compared.

use super::{
    ApiKeyRecord, AttachmentRecord, AuditRecord, Micros, RunRecord, SessionRecord, Store, StoreResult, UsageRow,
};
use crate::store::MessageRecord;

/// The tables, in an order that satisfies foreign keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Settings,
    ApiKeys,
    Sessions,
    Messages,
    Runs,
    Attachments,
    AttachmentChunks,
    SessionVars,
    KeyUsage,
    AuditEvents,
}

impl Table {
    pub const ALL: [Table; 10] = [
        Table::Settings,
        Table::ApiKeys,
        Table::Sessions,
        Table::Messages,
        Table::Runs,
        Table::Attachments,
        Table::AttachmentChunks,
        Table::SessionVars,
        Table::KeyUsage,
        Table::AuditEvents,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Settings => "settings",
            Table::ApiKeys => "api_keys",
            Table::Sessions => "sessions",
            Table::Messages => "messages",
            Table::Runs => "runs",
            Table::Attachments => "attachments",
            Table::AttachmentChunks => "attachment_chunks",
            Table::SessionVars => "session_vars",
            Table::KeyUsage => "key_usage",
            Table::AuditEvents => "audit_events",
        }
    }

    /// The primary key, which pages are read in order of.
    pub fn order_by(self) -> &'static str {
        match self {
            Table::Settings => "key",
            Table::ApiKeys => "key_id",
            Table::Sessions => "session_id",
            Table::Messages => "id",
            Table::Runs => "run_id",
            Table::Attachments => "attachment_id",
            Table::AttachmentChunks => "attachment_id, idx",
            Table::SessionVars => "session_id, key",
            Table::KeyUsage => "key_id, day",
            Table::AuditEvents => "id",
        }
    }

    /// Rows per page: chunks are up to [`CHUNK_BYTES`] each, the rest are small.
    fn page(self) -> i64 {
        match self {
            Table::AttachmentChunks => 16,
            Table::Runs => 200,
            _ => 1000,
        }
    }
}

/// Bytes per stored attachment chunk.
pub const CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct SettingRow {
    pub key: String,
    pub value: String,
    pub updated_at: Micros,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    pub attachment_id: String,
    pub idx: i32,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VarRow {
    pub session_id: String,
    pub key: String,
    pub value: String,
    pub updated_at: Micros,
}

/// A page of one table.
#[derive(Debug, Clone)]
pub enum Rows {
    Settings(Vec<SettingRow>),
    ApiKeys(Vec<ApiKeyRecord>),
    Sessions(Vec<SessionRecord>),
    Messages(Vec<MessageRecord>),
    Runs(Vec<RunRecord>),
    Attachments(Vec<AttachmentRecord>),
    Chunks(Vec<ChunkRow>),
    SessionVars(Vec<VarRow>),
    KeyUsage(Vec<UsageRow>),
    AuditEvents(Vec<AuditRecord>),
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Rows::Settings(v) => v.len(),
            Rows::ApiKeys(v) => v.len(),
            Rows::Sessions(v) => v.len(),
            Rows::Messages(v) => v.len(),
            Rows::Runs(v) => v.len(),
            Rows::Attachments(v) => v.len(),
            Rows::Chunks(v) => v.len(),
            Rows::SessionVars(v) => v.len(),
            Rows::KeyUsage(v) => v.len(),
            Rows::AuditEvents(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One table's row counts after a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub table: Table,
    pub source: i64,
    pub destination: i64,
}

/// Why a copy did not happen or did not check out.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the destination already holds data ({0} has rows); copy into an empty database")]
    NotEmpty(&'static str),
    #[error("row counts differ after the copy: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

/// Copies every table of `from` into `to`, which must be empty, then compares row counts.
/// `progress` is told each table as it is done.
pub async fn copy_all(
    from: &dyn Store,
    to: &dyn Store,
    mut progress: impl FnMut(&Counted),
) -> Result<Vec<Counted>, CopyError> {
    for t in Table::ALL {
        if to.count_rows(t).await? > 0 {
            return Err(CopyError::NotEmpty(t.name()));
        }
    }
    let mut counts = Vec::new();
    for t in Table::ALL {
        copy_table(from, to, t).await?;
        if t == Table::Messages {
            // SQLite's insert trigger moved each session's updated_at to its newest message:
            // the sessions again (an upsert of updated_at) put the copied values back.
            copy_table(from, to, Table::Sessions).await?;
        }
        let c = Counted { table: t, source: from.count_rows(t).await?, destination: to.count_rows(t).await? };
        progress(&c);
        counts.push(c);
    }
    to.finish_import().await?;
    let bad: Vec<String> = counts
        .iter()
        .filter(|c| c.source != c.destination)
        .map(|c| format!("{} {} → {}", c.table.name(), c.source, c.destination))
        .collect();
    if !bad.is_empty() {
        return Err(CopyError::Mismatch(bad.join(", ")));
    }
    Ok(counts)
}

async fn copy_table(from: &dyn Store, to: &dyn Store, t: Table) -> StoreResult<()> {
    let mut offset = 0;
    loop {
        let rows = from.export_rows(t, offset, t.page()).await?;
        if rows.is_empty() {
            return Ok(());
        }
        offset += rows.len() as i64;
        to.import_rows(&rows).await?;
    }
}
