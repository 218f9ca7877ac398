//! Proactive-message targets: the built-in `webchat` (history + live subscribers, handled in
//! `http/im.rs`) and configured `[[platforms]]` of type `webhook`.

pub mod webhook;
