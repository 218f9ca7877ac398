-- Runs are saved while they stream (status 'running', at least once a second), so that a crash
-- loses at most the last second: the reply message they write is remembered here, and both are
-- found again at start through these small partial indexes.
ALTER TABLE runs ADD COLUMN message_id INTEGER;
CREATE INDEX runs_running ON runs (run_id) WHERE status = 'running';
CREATE INDEX messages_streaming ON messages (id) WHERE json_extract(content, '$.streaming') = 1;
