//! Admission of new engine.io sessions: at most `http.max_pending_socketio` handshakes may
//! wait for their authenticated Socket.IO connect at once. A slot is taken by a handshake
//! (`/socket.io/?EIO=...` without `sid`) and given back by the socket's authenticated
//! connect, or at the latest after `http.socketio_connect_timeout`, when engine.io drops a
//! socket that never connected. Beyond the cap new handshakes get 503.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::PATH;
use crate::api::HttpConfig;

/// The pending handshakes of one server.
#[derive(Clone)]
pub struct Pending {
    open: Arc<AtomicUsize>,
    max: usize,
    timeout: Duration,
}

impl Pending {
    pub fn new(config: &HttpConfig) -> Pending {
        Pending {
            open: Arc::new(AtomicUsize::new(0)),
            max: config.max_pending_socketio,
            timeout: config.socketio_connect_timeout,
        }
    }
}

/// A handshake's slot, in its request's extensions (engine.io keeps them with the socket).
#[derive(Clone)]
pub struct PendingSlot(Arc<Mutex<Option<Taken>>>);

impl PendingSlot {
    /// Gives the slot back (once; later calls do nothing).
    pub fn release(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

pub struct Taken(Arc<AtomicUsize>);

impl Drop for Taken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request that opens a new engine.io session.
fn is_handshake(req: &Request) -> bool {
    let path = req.uri().path();
    if !(path == PATH || path.starts_with(&format!("{PATH}/"))) {
        return false;
    }
    let keys = || {
        req.uri()
            .query()
            .unwrap_or("")
            .split('&')
            .map(|kv| kv.split('=').next().unwrap_or(""))
    };
    keys().any(|k| k == "EIO") && !keys().any(|k| k == "sid")
}

/// Middleware (outside the Socket.IO layer): takes a slot for each new handshake or
/// answers 503.
pub async fn admit(State(p): State<Pending>, mut req: Request, next: Next) -> Response {
    if !is_handshake(&req) {
        return next.run(req).await;
    }
    let taken = p
        .open
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < p.max).then_some(n + 1)
        })
        .is_ok();
    if !taken {
        metrics::counter!("rowcast_connections_refused_total", "reason" => "pending_socketio")
            .increment(1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            "too many Socket.IO handshakes waiting for their connect; retry later",
        )
            .into_response();
    }
    let slot = PendingSlot(Arc::new(Mutex::new(Some(Taken(p.open.clone())))));
    let timer = slot.clone();
    tokio::spawn(async move {
        tokio::time::sleep(p.timeout).await;
        timer.release();
    });
    req.extensions_mut().insert(slot);
    next.run(req).await
}
