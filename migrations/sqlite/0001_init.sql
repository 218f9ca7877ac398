-- astrgate schema v1. Timestamps are INTEGER unix microseconds (UTC). Never edit an applied
-- migration: add a new numbered file instead.

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,   -- hex SHA-256 of the raw key
    key_prefix   TEXT NOT NULL,          -- first 12 chars of the raw key
    scopes       TEXT NOT NULL,          -- JSON array of scope names
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER
);

CREATE TABLE sessions (
    session_id   TEXT PRIMARY KEY,
    platform_id  TEXT NOT NULL DEFAULT 'webchat',
    creator      TEXT NOT NULL,
    display_name TEXT,
    is_group     INTEGER NOT NULL DEFAULT 0,
    profile_id   TEXT,                   -- persistent config_id binding; NULL = default profile
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX sessions_by_creator ON sessions (creator, updated_at DESC);

CREATE TABLE messages (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id        TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    platform_id       TEXT NOT NULL,
    sender_id         TEXT NOT NULL,
    sender_name       TEXT NOT NULL,
    content           TEXT NOT NULL,     -- JSON {"type":"user"|"bot","message":[parts],...}
    llm_checkpoint_id TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX messages_by_session ON messages (session_id, id);

CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL,
    username    TEXT NOT NULL,
    status      TEXT NOT NULL,
    events      TEXT NOT NULL,           -- JSON array of the run's events, written once at the end
    created_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL
);
CREATE INDEX runs_by_session ON runs (session_id);
CREATE INDEX runs_by_finished ON runs (finished_at);

CREATE TABLE attachments (
    attachment_id TEXT PRIMARY KEY,
    stored_name   TEXT NOT NULL UNIQUE,  -- file name under <data_dir>/attachments
    original_name TEXT NOT NULL,
    kind          TEXT NOT NULL,         -- image | record | video | file
    mime_type     TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE session_vars (
    session_id TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, key)
);
