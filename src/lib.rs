//! rowcast: PostgreSQL row changes → WebSocket rooms (Socket.IO v4, plain JSON), SSE,
//! polling, and signed webhooks.
//!
//! The flow, one module per stage (dependencies run down this list):
//! app tables —trigger or slot→ [`changelog`] → [`capture`] → [`enrich`] (full rows) →
//! [`route`] (event names, payloads, rooms) → [`hub`] (rooms → sessions) →
//! [`protocol`] → [`transport`] (`/ws`, Socket.IO, SSE, polling); and the [`webhook`]
//! outbox. [`catalog`] is the table mapping every stage reads; [`migrate`] installs the
//! schema and triggers; [`api`] is the HTTP surface; [`server::run`] wires it together
//! (the CLI and the tests both call it).

pub mod api;
pub mod capture;
pub mod catalog;
pub mod changelog;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod enrich;
pub mod event;
pub mod hub;
pub mod listener;
pub mod migrate;
pub mod pgtemp;
pub mod protocol;
pub mod recovery;
pub mod retention;
pub mod retry;
pub mod route;
mod serde_ext;
pub mod server;
pub mod telemetry;
pub mod transport;
pub mod webhook;

pub use config::{Config, Settings};
pub use server::{RunError, run};
