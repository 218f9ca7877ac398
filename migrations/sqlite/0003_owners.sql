-- Attachments record who uploaded (or generated) them: `key:<key_id>` or `user:<dashboard user>`.
-- NULL for attachments stored before this migration (they stay usable as before).
ALTER TABLE attachments ADD COLUMN owner TEXT;
-- An API key may be bound to one username: it can then act only as that user.
ALTER TABLE api_keys ADD COLUMN username TEXT;
