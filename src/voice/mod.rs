//! Voice: sentence segmentation, the speech worker (segmenter → TTS, pipelined), and the Live
//! protocol as a state machine.
//! Nothing here imports axum.

pub mod live;
pub mod segmenter;
pub mod speak;
