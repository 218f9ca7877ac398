//! Audio formats: reading, writing and converting audio files. The lowest audio layer: used by
//! the STT and TTS providers and by the voice pipeline, it imports none of them.

pub mod wav;
