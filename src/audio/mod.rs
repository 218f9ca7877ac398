//! Audio formats: reading, writing and converting audio files. The lowest audio layer: used by
//! the STT and TTS providers, the voice pipeline, the agent and attachment typing, it imports none
//! of them.

pub mod codec;
pub mod wav;
