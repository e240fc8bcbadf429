//! rowcast: PostgreSQL row changes → WebSocket rooms (Socket.IO v4, plain JSON), SSE,
//! polling, and signed webhooks.
//!
//! The flow: app tables —trigger→ `rowcast.changes` → [`capture`] → [`enrich`] →
//! [`route`] → [`hub`] (sessions) and the webhook outbox. [`run`] wires it together; the
//! CLI and the tests both call it.

pub mod api;
pub mod capture;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod enrich;
pub mod event;
pub mod hub;
pub mod pgtemp;
pub mod route;
pub mod schema;
pub mod server;
pub mod telemetry;
pub mod webhook;

pub use config::Config;
pub use server::{RunError, run};
