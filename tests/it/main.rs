//! Integration tests: a real PostgreSQL per test, rowcast in-process, real clients.

mod support;

mod capture;
mod client;
mod core;
mod demo;
mod faults;
mod protocol;
mod schema;
