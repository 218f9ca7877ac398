-- The instance that runs a run (cluster mode names it; a single SQLite instance leaves it NULL),
-- and attachment bytes kept in the database ([files] storage = "database"), in chunks.
ALTER TABLE runs ADD COLUMN instance_id TEXT;
CREATE TABLE attachment_chunks (
    attachment_id TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    data          BLOB NOT NULL,
    PRIMARY KEY (attachment_id, idx)
);
