//! Sessions of the compat APIs (seed 004's stage `/chat`): their variables, and deleting them.
//! Each compat API keeps its sessions under its own prefix and platform and touches no other.

use super::Agent;
use super::errors::{SessionError, TurnError};

/// Variables one stage session may hold.
pub const MAX_VARS: usize = 256;

impl Agent {
    /// Refuses a session under a compat prefix that another API made.
    async fn check_compat(&self, session_id: &str, platform: &str) -> Result<(), SessionError> {
        match self.store.get_session(session_id).await? {
            Some(s) if s.platform_id != platform => Err(SessionError::NotYours),
            _ => Ok(()),
        }
    }

    /// Sets a variable (at most [`MAX_VARS`] per session).
    pub async fn set_session_var(&self, session_id: &str, key: &str, value: &str) -> Result<(), TurnError> {
        let vars = self.store.session_vars(session_id).await?;
        if vars.len() >= MAX_VARS && !vars.iter().any(|(k, _)| k == key) {
            return Err(TurnError::Invalid(format!("too many variables in this session (max {MAX_VARS})")));
        }
        self.store.set_session_var(session_id, key, value).await?;
        Ok(())
    }

    pub async fn session_vars(&self, session_id: &str) -> Result<Vec<(String, String)>, TurnError> {
        Ok(self.store.session_vars(session_id).await?)
    }

    /// Deletes a compat session's variables and history (stopping its run first).
    pub async fn delete_compat_session(&self, session_id: &str, platform: &str) -> Result<(), SessionError> {
        self.check_compat(session_id, platform).await?;
        self.delete_session_unchecked(session_id).await?;
        self.store.delete_session_vars(session_id).await?;
        Ok(())
    }
}
