//! Accepts TCP connections and serves HTTP/1.1 on them with the limits of `[http]`: a
//! deadline for a request's headers (`header_read_timeout`) and a ceiling on open
//! connections (`max_connections`). WebSocket upgrades (`/ws`, Socket.IO) keep their
//! connection's slot until the socket closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
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
        let io = TokioIo::new(Counted { tcp, _slot: slot });
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(io, service).with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
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

/// The TCP stream with its slot: hyper hands the stream to an upgraded WebSocket, so the
/// slot is released only when the socket itself is dropped.
struct Counted {
    tcp: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
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
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}
