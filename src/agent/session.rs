//! Rules for session ids chosen by clients.
//!
//! Every front door stores its sessions in one table, and some keep theirs under an internal
//! prefix (`stage!`, `conv!`, `webchat_live!`) owned by a fixed or derived owner. A client that
//! picks its own session id could otherwise reach into another front door's sessions (a chat key
//! deleting a stage session through `/delete_session`), so those prefixes are reserved: only the
//! front door that owns a prefix creates ids with it. Ids are at most 128 characters everywhere.

/// Longest session id, in characters.
pub const MAX_SESSION_ID_CHARS: usize = 128;

/// Prefixes only astrgate itself gives to session ids.
pub const RESERVED_PREFIXES: [&str; 3] = ["stage!", "conv!", "webchat_live!"];

/// Why a client-chosen session id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionIdError {
    #[error("{0} is too long (max 128 characters)")]
    TooLong(&'static str),
    #[error("{0} uses a reserved prefix: {1}")]
    Reserved(&'static str, &'static str),
}

/// Checks a session id a client chose; `field` names it in the error (`session_id`, `umo`…).
pub fn check_client_id(field: &'static str, id: &str) -> Result<(), SessionIdError> {
    if id.chars().count() > MAX_SESSION_ID_CHARS {
        return Err(SessionIdError::TooLong(field));
    }
    if let Some(p) = RESERVED_PREFIXES.iter().find(|p| id.starts_with(**p)) {
        return Err(SessionIdError::Reserved(field, p));
    }
    Ok(())
}

/// True when `id` cannot name any session (over the length cap): lookups answer "not found"
/// without touching the store.
pub fn impossible(id: &str) -> bool {
    id.chars().count() > MAX_SESSION_ID_CHARS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert_eq!(check_client_id("session_id", "abc"), Ok(()));
        assert_eq!(check_client_id("session_id", &"é".repeat(128)), Ok(()));
        assert_eq!(check_client_id("session_id", &"é".repeat(129)), Err(SessionIdError::TooLong("session_id")));
        assert_eq!(
            check_client_id("session_id", "stage!x").map_err(|e| e.to_string()),
            Err("session_id uses a reserved prefix: stage!".into())
        );
        assert!(check_client_id("umo", "webchat_live!u!1").is_err());
        assert!(check_client_id("x", "conv!1").is_err());
    }
}
