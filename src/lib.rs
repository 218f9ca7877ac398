//! astrgate: a server that speaks AstrBot's developer Open API and Live voice protocol.
//!
//! Layout (see docs/architecture.md): `http` renders front doors; `auth` decides who may call;
//! `store` persists; `app` wires state, start-up and shutdown.

pub mod agent;
pub mod app;
pub mod attachments;
pub mod audio;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod compat;
pub mod config;
pub mod documents;
pub mod error;
pub mod governance;
pub mod http;
pub mod metrics;
pub mod platforms;
pub mod providers;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod util;
pub mod voice;
