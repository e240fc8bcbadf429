//! Integration tests: a real PostgreSQL per test, rowcast in-process, real clients.

mod support;

mod core;
mod webhook_bench;
mod webhooks;
