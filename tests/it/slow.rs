//! Slow clients: a `/ws` client that stops reading never delays the others and is closed
//! with 4008 once its bounded queue overflows.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, ws::WsClient};

/// Rows per insert statement and statements: ~6 MB of events, enough to fill the stalled
/// client's socket buffers so that its session queue overflows.
const ROWS: i32 = 20;
const STATEMENTS: usize = 80;

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4008_and_never_delays_others() {
    let (db, server) = support::start_with(|c| {
        c.hub.session_queue = 64;
        // Small capture batches: a burst never exceeds a reading client's queue.
        c.capture.batch_size = 20;
    })
    .await;
    let token = server.token("1", "agent");
    let url = server.ws_url(&format!("token={token}"));

    // The slow client joins, then never reads again (until the end). A small receive
    // buffer, so that the kernel does not absorb megabytes on its behalf.
    let mut slow = WsClient::connect_small_buffer(server.addr, &url).await;
    slow.join("tickets").await;
    let (mut fast, _) = WsClient::connect(&url).await;
    fast.join("tickets").await;

    let pg = db.client().await;
    let writer = tokio::spawn(async move {
        for _ in 0..STATEMENTS {
            pg.execute(
                "INSERT INTO tickets (subject, body, requester_id)
                 SELECT 'bulk ' || g, repeat('x', 4000), 3 FROM generate_series(1, $1::int) g",
                &[&ROWS],
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    });

    // The fast client receives every event promptly while the slow one stalls.
    let total = ROWS as usize * STATEMENTS;
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    for _ in 0..total {
        let v = fast.next_event().await;
        let committed = time::OffsetDateTime::parse(
            v["payload"]["committed_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let lag = time::OffsetDateTime::now_utc() - committed;
        worst = worst.max(Duration::try_from(lag).unwrap_or_default());
    }
    writer.await.unwrap();
    eprintln!(
        "fast client: {total} events in {:?}, worst commit→client latency {worst:?}",
        started.elapsed()
    );
    assert!(
        worst < Duration::from_secs(3),
        "a stalled client must not delay others: worst latency {worst:?}"
    );

    // The slow client reads again: some events, then close 4008 with a resume hint.
    let mut events = 0;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(15), slow.stream.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => events += 1,
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?} after {events} events"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 4008, "{close:?}");
    assert!(close.reason.contains("since="), "{close:?}");
    assert!(
        events < total,
        "the slow client was cut off ({events} of {total})"
    );
    server.stop().await;
}

/// Reads until the server closes the connection (EOF or reset) and returns what it sent,
/// or `None` if it is still open after `within`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|_| got)
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_request_headers_is_closed() {
    use tokio::io::AsyncWriteExt;
    let (_db, server) = support::start_with(|c| {
        c.http.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let started = Instant::now();
    // A partial request line, and one that sends nothing at all.
    let mut partial = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"GET /healthz HT").await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    for tcp in [&mut partial, &mut silent] {
        assert!(
            closed_within(tcp, Duration::from_secs(5)).await.is_some(),
            "the connection is still open after {:?}",
            started.elapsed()
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );

    // A client that sends its request in time is served as before.
    let mut ok = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut ok, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_get_503_until_one_closes() {
    use tokio::io::AsyncWriteExt;
    let (_db, server) = support::start_with(|c| {
        c.http.max_connections = 5;
    })
    .await;
    // Five open connections, one of them an upgraded WebSocket (it keeps its slot).
    let token = server.token("1", "agent");
    let (mut ws, _welcome) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the server accept them all before the sixth.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sixth = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let answer = closed_within(&mut sixth, Duration::from_secs(5))
        .await
        .expect("the sixth connection is answered and closed");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );

    // One closes: a new connection is served again.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    again
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut again, Duration::from_secs(5))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("rowcast_connections_refused_total{reason=\"max_connections\"}"),
        "{answer}"
    );
    // (The gauge is the process's: other tests' servers share it.)
    assert!(answer.contains("rowcast_connections_open "), "{answer}");
    // The WebSocket still works.
    ws.join("tickets").await;
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_stalls_after_its_headers_is_closed_when_idle() {
    use tokio::io::AsyncWriteExt;
    let (_db, server) = support::start_with(|c| {
        c.hub.ping_interval = Duration::from_millis(500);
        c.http.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let token = server.token("1", "agent");
    // A whole request head (so the header-read timeout is satisfied), then half the body
    // the handler waits for, then silence.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let body = r#"{"url":"https://example.com/hook"}"#;
    let head = format!(
        "PUT /api/webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body.as_bytes()[..10]).await.unwrap();
    let started = Instant::now();
    let answer = closed_within(&mut tcp, Duration::from_secs(8))
        .await
        .expect("the silent connection is closed");
    let took = started.elapsed();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        took >= Duration::from_millis(1800),
        "closed before idle_timeout: {took:?}"
    );
    let metrics = support::metrics_text(&server.http()).await;
    assert!(
        metrics.contains("rowcast_connections_timed_out_total{reason=\"idle\"}"),
        "{metrics}"
    );
    server.stop().await;
}

/// Opens an engine.io session over polling: the status, and the sid when it opened.
async fn eio_handshake(http: &str) -> (u16, Option<String>) {
    let r = reqwest::get(format!("{http}/socket.io/?EIO=4&transport=polling"))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let sid = body
        .strip_prefix('0')
        .and_then(|open| serde_json::from_str::<serde_json::Value>(open).ok())
        .and_then(|v| v["sid"].as_str().map(String::from));
    (status, sid)
}

#[tokio::test]
async fn handshakes_beyond_max_pending_socketio_get_503_until_one_connects_or_expires() {
    let (_db, server) = support::start_with(|c| {
        c.http.max_pending_socketio = 2;
        c.http.socketio_connect_timeout = Duration::from_secs(2);
    })
    .await;
    let http = server.http();
    let (s1, sid1) = eio_handshake(&http).await;
    let (s2, _) = eio_handshake(&http).await;
    assert_eq!((s1, s2), (200, 200));
    let (s3, _) = eio_handshake(&http).await;
    assert_eq!(s3, 503, "the third pending handshake is refused");

    // The first connects with a token: its slot is free again.
    let sid1 = sid1.expect("an engine.io open packet");
    let token = server.token("1", "agent");
    let client = reqwest::Client::new();
    let url = format!("{http}/socket.io/?EIO=4&transport=polling&sid={sid1}");
    let posted = client
        .post(&url)
        .body(format!(r#"40{{"token":"{token}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 200);
    let connected = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        connected.split('\x1e').any(|p| p.starts_with("40{")),
        "{connected}"
    );
    let (s4, _) = eio_handshake(&http).await;
    assert_eq!(s4, 200, "an authenticated connect gives its slot back");
    let (s5, _) = eio_handshake(&http).await;
    assert_eq!(s5, 503);

    // The others never connect: after the connect timeout their slots are free.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (s6, _) = eio_handshake(&http).await;
    assert_eq!(s6, 200, "an expired handshake gives its slot back");
    let metrics = support::metrics_text(&http).await;
    assert!(
        metrics.contains("rowcast_connections_refused_total{reason=\"pending_socketio\"}"),
        "{metrics}"
    );
    server.stop().await;
}
