//! The one integration-test binary: every test starts the real app on 127.0.0.1:0 with its own
//! data directory and talks to it over HTTP/WebSocket. Set TEST_LOG=1 to see the app's logs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_llm;
mod helpers;

mod api_keys;
mod audit;
mod auth;
mod browser;
mod chat;
mod cli;
mod cluster;
mod compat;
mod console;
mod console_browser;
mod dashboard;
mod dashboard_chat;
mod documents;
mod errors;
mod faults;
mod files;
mod governance;
mod hardening;
mod im;
mod live;
mod metrics;
mod openai;
mod openai_audio;
mod openai_sdk;
mod resilience;
mod store;
mod voice_formats;
mod webui;
mod ws;
