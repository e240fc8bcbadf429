//! Memory and encoding work bounded by what is sent, not by who receives it: each event is
//! encoded once per transport and view (not once per session), the replay buffer and the
//! session queues are bounded in bytes, and an over-limit `/ws` frame is refused from its
//! header. Against the real binary (its own `/metrics` and its RSS).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::binary::{Rowcast, scrape, value};
use crate::support::node::Node;
use crate::support::ws::WsClient;
use crate::support::{self, Db, token};

const SESSIONS: usize = 20;

/// Resident memory of process `pid`, in bytes (Linux `VmRSS`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

async fn encodings(rc: &Rowcast, transport: &str) -> f64 {
    let s = scrape(rc).await;
    value(
        &s,
        "rowcast_event_encodings_total",
        &[("transport", transport)],
    )
    .unwrap_or(0.0)
}

async fn emitted(rc: &Rowcast) -> f64 {
    let s = scrape(rc).await;
    s.samples
        .iter()
        .filter(|x| x.metric == "rowcast_events_emitted_total")
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Reads an SSE stream until it holds `n` `ticket.update` events.
async fn sse_reader(url: String, n: usize) -> usize {
    let res = reqwest::get(&url).await.expect("SSE request");
    assert_eq!(res.status(), 200);
    let mut res = res;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while text.matches("event: ticket.update\n").count() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, res.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("SSE stream ended early: {other:?}"),
        }
    }
    text.matches("event: ticket.update\n").count()
}

#[tokio::test]
async fn each_event_is_encoded_once_per_transport_not_per_session() {
    let db = Db::start().await;
    db.migrate(&db.config()).await;
    let rc = Rowcast::spawn(&db.url, &[]).await;
    // Every session is the same user in the same room: the same view of every event.
    let token = token("1", "agent");

    let mut ws = Vec::new();
    for _ in 0..SESSIONS {
        let (mut c, _) = WsClient::connect(&rc.ws_url(&format!("token={token}"))).await;
        c.join("tickets").await;
        ws.push(c);
    }
    let mut sio = Node::start(
        "sio_many.mjs",
        &[
            &rc.http(),
            &token,
            &SESSIONS.to_string(),
            "tickets",
            "ticket.update",
        ],
    );
    let ready = sio
        .next_where(30, |v: &Value| v["type"] == "ready" || v["type"] == "error")
        .await;
    assert_eq!(ready["type"], "ready", "{ready}");
    const EVENTS: usize = 3;
    let sse_url = format!("{}/events?rooms=tickets&token={token}", rc.http());
    let sse: Vec<_> = (0..SESSIONS)
        .map(|_| tokio::spawn(sse_reader(sse_url.clone(), EVENTS)))
        .collect();
    support::eventually(20, || async {
        let s = scrape(&rc).await;
        let n = value(&s, "rowcast_connections", &[("transport", "sse")])?;
        (n as usize == SESSIONS).then_some(())
    })
    .await;

    let before = [
        encodings(&rc, "websocket").await,
        encodings(&rc, "socketio").await,
        encodings(&rc, "sse").await,
    ];
    let pg = db.client().await;
    // Three rows, one update each (updates of one row in quick succession may coalesce).
    for id in 1..=EVENTS as i64 {
        pg.execute(
            "UPDATE tickets SET subject = 'encoded once' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    }
    // Every session receives every event.
    let mut got = Vec::new();
    for c in &mut ws {
        let mut seqs = Vec::new();
        for _ in 0..EVENTS {
            seqs.push(c.next_event().await["seq"].clone());
        }
        got.push(seqs);
    }
    assert!(got.windows(2).all(|w| w[0] == w[1]), "same events: {got:?}");
    let done = sio.next_where(30, |v: &Value| v["type"] == "done").await;
    assert_eq!(done["received"], SESSIONS, "{done}");
    for s in sse {
        assert_eq!(s.await.unwrap(), EVENTS);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (i, transport) in ["websocket", "sse"].into_iter().enumerate() {
        let i = if i == 1 { 2 } else { 0 };
        let made = encodings(&rc, transport).await - before[i];
        assert_eq!(
            made, EVENTS as f64,
            "{transport}: {EVENTS} events to {SESSIONS} sessions are encoded {EVENTS} times, not once per session"
        );
    }
    // The Socket.IO sockets leave once each has its first event: that one was encoded
    // once for all 20 (per socket it would be at least 20), later ones at most once each.
    let made = encodings(&rc, "socketio").await - before[1];
    assert!(
        (1.0..=EVENTS as f64).contains(&made),
        "socketio: {made} encodings for {SESSIONS} sockets"
    );
}

#[tokio::test]
async fn large_rows_with_no_client_keep_memory_within_the_replay_byte_budget() {
    let db = Db::start().await;
    db.migrate(&db.config()).await;
    let budget = 8 * 1024 * 1024;
    let rc = Rowcast::spawn(
        &db.url,
        &[
            ("ROWCAST_HUB_REPLAY_BUFFER_BYTES", &budget.to_string()),
            // A capture batch is read whole: 1,000 rows of 100 KB (the default) alone are
            // 100 MB in flight, whatever the hub keeps (docs/operations.md).
            ("ROWCAST_CAPTURE_BATCH_SIZE", "50"),
        ],
    )
    .await;
    let pg = db.client().await;
    // A first row warms up every path (connections, statements).
    pg.execute(
        "INSERT INTO kb_articles (title, body) VALUES ('warm', repeat('x', 100000))",
        &[],
    )
    .await
    .unwrap();
    support::eventually(20, || async { (emitted(&rc).await >= 1.0).then_some(()) }).await;
    let start = rss(rc.pid());

    const ROWS: i32 = 1500;
    for _ in 0..(ROWS / 50) {
        pg.execute(
            "INSERT INTO kb_articles (title, body)
             SELECT 'big ' || g, repeat(md5(g::text), 3125) FROM generate_series(1, 50) g",
            &[],
        )
        .await
        .unwrap();
    }
    support::eventually(60, || async {
        (emitted(&rc).await >= f64::from(ROWS) + 1.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = scrape(&rc).await;
    let held = value(&s, "rowcast_replay_buffer_bytes", &[]).expect("replay gauge");
    assert!(held <= budget as f64, "replay buffer holds {held} bytes");
    assert!(held > budget as f64 / 2.0, "and is used: {held} bytes");
    let grown = rss(rc.pid()).saturating_sub(start);
    eprintln!(
        "RSS grew by {} MB for {ROWS} rows of 100 KB",
        grown / 1_000_000
    );
    assert!(
        grown < 60_000_000,
        "RSS grew by {grown} bytes with an 8 MiB replay budget"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_large_rows_is_closed_after_its_queue_bytes() {
    let (db, server) = support::start_with(|c| {
        // The count limit alone would take 4,096 rows of 100 KB (400 MB) per session.
        c.hub.session_queue = 4096;
        c.hub.session_queue_bytes = 256 * 1024;
        c.capture.batch_size = 10;
    })
    .await;
    let token = server.token("1", "agent");
    let url = server.ws_url(&format!("token={token}"));
    let mut slow = WsClient::connect_small_buffer(server.addr, &url).await;
    slow.join("kb").await;

    const ROWS: i32 = 300;
    let pg = db.client().await;
    let started = Instant::now();
    for _ in 0..(ROWS / 10) {
        pg.execute(
            "INSERT INTO kb_articles (title, body, published)
             SELECT 'big ' || g, repeat(md5(g::text), 3125), true FROM generate_series(1, 10) g",
            &[],
        )
        .await
        .unwrap();
    }
    // Far less than the 10 s write timeout: the queue's bytes, not a stalled write, end it.
    tokio::time::sleep(Duration::from_secs(3)).await;
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
    assert!(
        events < ROWS as usize / 2,
        "cut off after about 256 KiB of queued rows (plus socket buffers): {events} of {ROWS} in {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn over_limit_frames_are_refused_from_their_header_with_frame_too_large() {
    let db = Db::start().await;
    db.migrate(&db.config()).await;
    let rc = Rowcast::spawn(&db.url, &[("ROWCAST_HUB_MAX_FRAME_BYTES", "65536")]).await;
    let url = rc.ws_url(&format!("token={}", token("1", "agent")));
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (c, _) = WsClient::connect(&url).await;
        clients.push(c);
    }
    let start = rss(rc.pid());
    // 900 KiB: under the old cut-off (16 × the limit), so it used to be buffered whole.
    let big = format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(900 * 1024)
    );
    let mut tasks = Vec::new();
    for c in clients {
        let big = big.clone();
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = c.stream.split();
            let sender = tokio::spawn(async move {
                let _ = tx.send(Message::Text(big.into())).await;
                tx
            });
            let mut error = None;
            let close = loop {
                match tokio::time::timeout(Duration::from_secs(15), rx.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        error = Some(serde_json::from_str::<Value>(&t).unwrap())
                    }
                    Ok(Some(Ok(Message::Close(frame)))) => break frame,
                    Ok(Some(Ok(_))) => {}
                    other => panic!("expected a close frame, got {other:?}"),
                }
            };
            sender.abort();
            (error, close)
        }));
    }
    let mut peak = 0;
    for t in tasks {
        let (error, close) = t.await.unwrap();
        peak = peak.max(rss(rc.pid()));
        let error = error.expect("an error frame before the close");
        assert_eq!(error["code"], "frame_too_large", "{error}");
        let close = close.expect("a close frame");
        assert_eq!(u16::from(close.code), 1009, "{close:?}");
        assert!(close.reason.contains("frame_too_large"), "{close:?}");
    }
    let grown = peak.max(rss(rc.pid())).saturating_sub(start);
    eprintln!(
        "RSS grew by {} MB for 50 frames of 900 KiB",
        grown / 1_000_000
    );
    assert!(grown < 30_000_000, "RSS grew by {grown} bytes");
}
