//! Voice: sentence segmentation, the speech worker (segmenter → TTS, pipelined), WAV helpers.
//! Nothing here imports axum.

pub mod segmenter;
pub mod speak;
pub mod wav;
