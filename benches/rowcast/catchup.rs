//! `catchup`: E events are committed while a client is away (one transaction inserting E
//! tickets); once rowcast has captured them, the client reconnects to `/ws` with
//! `since=<its last seq>` → time until it has all E, in order.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rowcast::pgtemp::{PgTemp, PgTempOptions};
use tokio_tungstenite::tungstenite::Message;

use crate::clients;
use crate::setup::{self, Rowcast};

pub async fn run(events: i64) {
    println!("\n## catchup (/ws resume with `since`, {events} missed events)\n");
    let pg = PgTemp::start(PgTempOptions::default()).expect("PostgreSQL");
    let (db, config) = setup::database(&pg, 100, true).await;
    let rc = Rowcast::start(&config);
    println!("{}\n", setup::describe(&rc.config));
    let token = setup::token(&config);
    let plain = rc.ws_url(&format!("token={token}"));
    let since = clients::hub_position(&plain).await;
    db.execute(
        "INSERT INTO tickets (subject, requester_id) SELECT 'missed ' || g, 3 FROM generate_series(1, $1::bigint) g",
        &[&events],
    )
    .await
    .expect("insert");
    // Wait until rowcast has sequenced and published all of them.
    let deadline = Instant::now() + Duration::from_secs(120);
    while clients::hub_position(&plain).await < since + events {
        assert!(Instant::now() < deadline, "capture did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss0 = rc.rss_mb();
    let t0 = Instant::now();
    let url = rc.ws_url(&format!("token={token}&rooms=tickets&since={since}"));
    let mut ws = clients::ws(&url).await;
    let mut got = 0i64;
    let mut first = None;
    let mut last_seq = since;
    while got < events {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("catch-up stalled for 60 s");
        let Some(Ok(Message::Text(t))) = m else {
            panic!("connection ended after {got} events: {m:?}");
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("JSON");
        if v["type"] != "event" {
            continue;
        }
        let seq: i64 = v["seq"].as_str().and_then(|s| s.parse().ok()).expect("seq");
        assert!(seq > last_seq, "in order, no duplicates");
        last_seq = seq;
        got += 1;
        first.get_or_insert_with(|| t0.elapsed());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "| missed events | first event ms | all events s | events/s | rowcast RSS MB (before → after) | target ≤ 5 s | load |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {events} | {:.0} | {elapsed:.2} | {:.0} | {rss0:.0} → {:.0} | {} | {} |",
        first.unwrap_or_default().as_secs_f64() * 1000.0,
        events as f64 / elapsed,
        rc.rss_mb(),
        if elapsed <= 5.0 { "met" } else { "missed" },
        setup::load_avg(),
    );
}
