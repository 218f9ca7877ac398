-- Per-key limits (JSON: requests_per_minute, concurrent_runs, tokens_per_day; NULL = unlimited)
-- and usage per key per UTC day, written in batches by the usage book (src/governance).
ALTER TABLE api_keys ADD COLUMN limits TEXT;
CREATE TABLE key_usage (
    key_id            TEXT NOT NULL,
    day               TEXT NOT NULL,          -- YYYY-MM-DD, UTC
    requests          INTEGER NOT NULL DEFAULT 0,
    runs              INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    audio_in_ms       INTEGER NOT NULL DEFAULT 0,
    audio_out_ms      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
);
