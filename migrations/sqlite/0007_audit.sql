-- The audit log (governance): logins, failed logins and API-key changes. One row per event,
-- written in batches by the audit service; read newest first by id; purged by time
-- (`[audit] retention_days`). `actor` is the dashboard username, `cli`, or the username a failed
-- login tried (cut to 128 characters; never a password). `detail` is a small JSON object or NULL.
CREATE TABLE audit_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    time   INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    ip     TEXT,
    detail TEXT
);
CREATE INDEX audit_events_by_time ON audit_events (time);
