//! Webhook delivery throughput to a local receiver (ignored by default; run with
//! `cargo test --release --test it webhook_throughput -- --ignored --nocapture`).
//! `ROWCAST_BENCH_DELIVERIES` (default 10000) sets the number of deliveries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::json;

use crate::support::{self, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn webhook_throughput() {
    let n: i64 = std::env::var("ROWCAST_BENCH_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // A minimal receiver: count and answer 204.
    let received = Arc::new(AtomicU64::new(0));
    let first_at: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let (counter, first_seen) = (received.clone(), first_at.clone());
    let app = Router::new().route(
        "/hook",
        post(move |_body: axum::body::Bytes| {
            let (counter, first_seen) = (counter.clone(), first_seen.clone());
            async move {
                first_seen.get_or_init(Instant::now);
                counter.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (db, server) = support::start_with(|c| {
        c.webhook.allow_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let res = reqwest::Client::new()
        .post(format!("{}/api/webhooks", server.http()))
        .bearer_auth(server.token("2", "admin"))
        .json(&json!({ "url": url, "event_types": ["ticket.*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    let pg = db.client().await;
    let started = Instant::now();
    pg.execute(
        "INSERT INTO tickets (subject, requester_id) SELECT 'bench ' || g, 3 FROM generate_series(1, $1::int8) g",
        &[&n],
    )
    .await
    .unwrap();
    let inserted = started.elapsed();
    let enqueued = eventually(120, || async {
        let c: i64 = pg
            .query_one("SELECT count(*) FROM rowcast.webhook_deliveries", &[])
            .await
            .unwrap()
            .get(0);
        (c >= n).then(|| started.elapsed())
    })
    .await;
    loop {
        let got = received.load(Ordering::Relaxed);
        if got >= n as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {got} of {n} arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_sent = started.elapsed();
    let stored = eventually(60, || async {
        let c: i64 = pg
            .query_one(
                "SELECT count(*) FROM rowcast.webhook_deliveries WHERE status = 'delivered'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (c >= n).then(|| started.elapsed())
    })
    .await;
    let first = first_at
        .get()
        .map(|t| t.duration_since(started))
        .unwrap_or_default();
    let rate = n as f64 / (all_sent - first).as_secs_f64();
    let rate_stored = n as f64 / (stored - first).as_secs_f64();
    println!(
        "webhook_throughput: {n} deliveries; insert {inserted:?}; all enqueued at {enqueued:?}; \
         first received at {first:?}; all received at {all_sent:?}; all recorded delivered at {stored:?}"
    );
    println!(
        "webhook_throughput: {rate:.0} deliveries/s received, {rate_stored:.0} deliveries/s recorded as delivered"
    );
    server.stop().await;
}
