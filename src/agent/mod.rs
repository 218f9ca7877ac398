//! The agent pipeline: profiles, runs, events and history. Nothing here imports axum.

pub mod profiles;
