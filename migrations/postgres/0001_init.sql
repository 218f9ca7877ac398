-- astrgate schema for PostgreSQL, v1: the SQLite schema as of its migration 0005, in PostgreSQL's
-- types. Timestamps are BIGINT unix microseconds (UTC). Never edit an applied migration: add a
-- new numbered file instead.

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,   -- hex SHA-256 of the raw key
    key_prefix   TEXT NOT NULL,          -- first 12 chars of the raw key
    scopes       TEXT NOT NULL,          -- JSON array of scope names
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    username     TEXT                    -- the only username the key may act as, when set
);

CREATE TABLE sessions (
    session_id   TEXT PRIMARY KEY,
    platform_id  TEXT NOT NULL DEFAULT 'webchat',
    creator      TEXT NOT NULL,
    display_name TEXT,
    is_group     BOOLEAN NOT NULL DEFAULT FALSE,
    profile_id   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX sessions_by_creator ON sessions (creator, updated_at DESC);

CREATE TABLE messages (
    id                BIGSERIAL PRIMARY KEY,
    session_id        TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    platform_id       TEXT NOT NULL,
    sender_id         TEXT NOT NULL,
    sender_name       TEXT NOT NULL,
    content           TEXT NOT NULL,     -- JSON {"type":"user"|"bot","message":[parts],...}, kept as written
    llm_checkpoint_id TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX messages_by_session ON messages (session_id, id);
-- Replies being saved while they stream, found again by crash recovery.
CREATE INDEX messages_streaming ON messages (id) WHERE (content::jsonb ->> 'streaming') = 'true';

CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL,
    username    TEXT NOT NULL,
    status      TEXT NOT NULL,
    events      TEXT NOT NULL,           -- JSON array of the run's events
    created_at  BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    message_id  BIGINT,
    instance_id TEXT                     -- the instance running it (cluster mode)
);
CREATE INDEX runs_by_session ON runs (session_id);
CREATE INDEX runs_by_finished ON runs (finished_at);
CREATE INDEX runs_running ON runs (run_id) WHERE status = 'running';

CREATE TABLE attachments (
    attachment_id TEXT PRIMARY KEY,
    stored_name   TEXT NOT NULL UNIQUE,
    original_name TEXT NOT NULL,
    kind          TEXT NOT NULL,
    mime_type     TEXT NOT NULL,
    size          BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    owner         TEXT
);

-- Attachment bytes when they are kept in the database ([files] storage = "database"), in
-- chunks so that they stream in and out without holding a whole file in memory.
CREATE TABLE attachment_chunks (
    attachment_id TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    data          BYTEA NOT NULL,
    PRIMARY KEY (attachment_id, idx)
);

CREATE TABLE session_vars (
    session_id TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, key)
);
