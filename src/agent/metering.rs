//! The agent's side of governance: each run and each socket turn of an API key is admitted by
//! the [`crate::governance::Governor`] (the key's limits) and its usage recorded.

use super::Agent;
use super::errors::TurnError;
use super::runs::ActiveSlot;
use crate::auth::Caller;
use crate::governance::RunPermit;

/// A stateless request's admission: a slot among `[runs] max_active`, and the key's run slot.
pub struct StatelessSlot {
    _active: ActiveSlot,
    pub meter: Option<RunPermit>,
}

impl Agent {
    /// A run about to start for `caller`: the key's `concurrent_runs` and `tokens_per_day`
    /// (nothing for the dashboard).
    pub async fn admit_run(&self, caller: &Caller) -> Result<Option<RunPermit>, TurnError> {
        match caller.account() {
            Some((key_id, limits)) => Ok(Some(self.governor.admit_run(key_id, limits).await?)),
            None => Ok(None),
        }
    }

    /// A request a socket makes for `caller` (each turn it starts): the key's
    /// `requests_per_minute`.
    pub async fn admit_request(&self, caller: &Caller) -> Result<(), TurnError> {
        if let Some((key_id, limits)) = caller.account() {
            self.governor.admit_request(key_id, limits).await?;
        }
        Ok(())
    }

    /// Counts a stateless request among the active runs (`[runs] max_active`) and the key's
    /// runs while the slot lives.
    pub async fn admit_stateless(&self, caller: &Caller) -> Result<StatelessSlot, TurnError> {
        let active = self.runs.admit(self.max_active)?;
        let meter = self.admit_run(caller).await?;
        Ok(StatelessSlot { _active: active, meter })
    }

    /// Audio heard from and spoken to `caller`, in milliseconds.
    pub fn record_audio(&self, caller: &Caller, in_ms: i64, out_ms: i64) {
        if let Some((key_id, _)) = caller.account() {
            self.governor.record(
                key_id,
                crate::store::UsageCounts { audio_in_ms: in_ms, audio_out_ms: out_ms, ..Default::default() },
            );
        }
    }
}

/// The length of a 16 kHz mono 16-bit WAV (as made for STT), in milliseconds.
pub fn wav_ms(wav: &[u8]) -> i64 {
    crate::audio::wav::parse(wav).map(|w| (w.duration_secs() * 1000.0).round() as i64).unwrap_or(0)
}
