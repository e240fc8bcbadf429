//! Integration tests: a real PostgreSQL per test, rowcast in-process, real clients.

mod support;

mod audience;
mod bytes;
mod capture;
mod client;
mod core;
mod demo;
mod fallback;
mod faults;
mod frames;
mod helm;
mod hidden;
mod log;
mod logical;
mod ops;
mod protocol;
mod recovery;
mod resume;
mod rows;
mod schema;
mod slow;
mod socketio;
mod tls;
mod tokens;
mod webhooks;
