-- Saving a message marks its session as updated, inside the same statement: a message insert is
-- one statement (one round trip) instead of an insert plus an update.
CREATE TRIGGER messages_touch_session AFTER INSERT ON messages
BEGIN
    UPDATE sessions SET updated_at = NEW.created_at WHERE session_id = NEW.session_id;
END;
