//! Accepts TCP connections and serves HTTP/1.1 on them with the limits of `[http]`: a
//! deadline for a request's headers (`header_read_timeout`), a ceiling on open
//! connections (`max_connections`) and a limit on silence (`idle_timeout`: no byte read or
//! written). WebSocket upgrades (`/ws`, Socket.IO) keep their connection's slot until the
//! socket closes; their liveness is the hub's pings, not `idle_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::HttpConfig;

/// The answer to a connection beyond `max_connections`, written before closing it.
const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// Serves `app` on `listener` until `shutdown` is cancelled: then stops accepting, asks
/// every connection to finish its request in flight (graceful shutdown) and returns once
/// they have. Upgraded connections (WebSockets) are no longer HTTP and close on their own.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let max = config.max_connections;
    let idle = config.idle_timeout;
    loop {
        let tcp = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of file descriptors and the like: wait, as axum::serve did.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        // TCP_NODELAY: an event written while the client has not yet acknowledged the
        // previous one would otherwise wait for its delayed ACK (40 ms on Linux) under
        // Nagle's algorithm; that was the p99 of the latency benchmark (docs/benchmarks.md).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Some(slot) = Slot::take(&open, max) else {
            metrics::counter!("rowcast_connections_refused_total", "reason" => "max_connections")
                .increment(1);
            tracing::debug!(max, "connection refused: max_connections reached");
            connections.spawn(refuse(tcp));
            continue;
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Counted {
            tcp,
            activity: activity.clone(),
            _slot: slot,
        });
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(io, service).with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let mut draining = false;
            // The connection future ends when the connection closes or is upgraded (the
            // WebSocket then owns the stream): only HTTP is subject to `idle_timeout`.
            let result = loop {
                tokio::select! {
                    r = conn.as_mut() => break r,
                    _ = shutdown.cancelled(), if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = tokio::time::sleep_until(activity.last() + idle) => {
                        if activity.last() + idle <= Instant::now() {
                            timed_out("idle");
                            return;
                        }
                    }
                }
            };
            match result {
                Err(e) if e.is_timeout() => timed_out("header_read"),
                Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
                Ok(()) => {}
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A connection closed by one of our deadlines: `header_read` (no complete request head in
/// `header_read_timeout`) or `idle` (nothing read or written in `idle_timeout`).
fn timed_out(reason: &'static str) {
    metrics::counter!("rowcast_connections_timed_out_total", "reason" => reason).increment(1);
    tracing::debug!(reason, "connection closed: timed out");
}

/// Errors of one connection (the client went away before we accepted it): not the
/// listener's.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// 503 and close, without reading the request: the client learns why and may retry.
async fn refuse(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(REFUSED).await?;
        tcp.shutdown().await
    })
    .await;
}

/// One of `max_connections`, held as long as its connection (and, after an upgrade, its
/// WebSocket) is open.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|n| {
            metrics::gauge!("rowcast_connections_open").set((n + 1) as f64);
            Slot(open.clone())
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("rowcast_connections_open").set((before - 1) as f64);
    }
}

/// When a connection last read or wrote a byte.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The TCP stream with its slot and its activity: hyper hands the stream to an upgraded
/// WebSocket, so the slot is released only when the socket itself is dropped.
struct Counted {
    tcp: TcpStream,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}
