//! `webhooks`: deliveries per second to a local receiver, and what the webhook outbox
//! costs the live WebSocket path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use rowcast::Settings as Config;
use rowcast::api::auth::Authenticator;
use rowcast::pgtemp::{PgTemp, PgTempOptions};

use crate::latency::{self, Via};
use crate::setup::{self, Rowcast};

/// A receiver on 127.0.0.1 that answers 204 and counts.
pub struct Receiver {
    pub url: String,
    pub received: Arc<AtomicU64>,
    pub first: Arc<OnceLock<Instant>>,
    pub last: Arc<std::sync::Mutex<Option<Instant>>>,
}

pub async fn receiver() -> Receiver {
    let received = Arc::new(AtomicU64::new(0));
    let first: Arc<OnceLock<Instant>> = Arc::default();
    let last: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let (c, f, l) = (received.clone(), first.clone(), last.clone());
    let app = Router::new().route(
        "/hook",
        post(move |_body: axum::body::Bytes| {
            let (c, f, l) = (c.clone(), f.clone(), l.clone());
            async move {
                let now = Instant::now();
                f.get_or_init(|| now);
                *l.lock().unwrap() = Some(now);
                c.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url,
        received,
        first,
        last,
    }
}

/// Creates an admin endpoint for `url` with the given event filters.
pub async fn subscribe(rc: &Rowcast, config: &Config, url: &str, events: &[&str]) {
    let admin = Authenticator::from_config(&config.jwt)
        .expect("jwt")
        .issue("2", "admin", 3600)
        .expect("token");
    let res = reqwest::Client::new()
        .post(format!("{}/api/webhooks", rc.base()))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "url": url, "event_types": events }))
        .send()
        .await
        .expect("create endpoint");
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

/// `n` ticket inserts in one statement → `n` deliveries to one `ticket.*` endpoint.
pub async fn throughput(n: i64) {
    println!("\n## webhooks: {n} deliveries to a local receiver (answers 204)\n");
    let pg = PgTemp::start(PgTempOptions::default()).expect("PostgreSQL");
    let (db, mut config) = setup::database(&pg, 10, true).await;
    // The receiver runs on loopback: allow it past the SSRF guard.
    config.webhook.allow_cidrs = vec!["127.0.0.0/8".parse().expect("network")];
    let rc = Rowcast::start(&config);
    println!("{}\n", setup::describe(&rc.config));
    let rx = receiver().await;
    subscribe(&rc, &config, &rx.url, &["ticket.*"]).await;
    let cpu0 = rc.cpu_secs();
    let started = Instant::now();
    db.execute(
        "INSERT INTO tickets (subject, requester_id) SELECT 'hook ' || g, 3 FROM generate_series(1, $1::int8) g",
        &[&n],
    )
    .await
    .expect("insert");
    let deadline = started + Duration::from_secs(300);
    let enqueued = loop {
        let c: i64 = db
            .query_one("SELECT count(*) FROM rowcast.webhook_deliveries", &[])
            .await
            .unwrap()
            .get(0);
        if c >= n {
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "only {c} of {n} enqueued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while rx.received.load(Ordering::Relaxed) < n as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} received",
            rx.received.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = loop {
        let c: i64 = db
            .query_one(
                "SELECT count(*) FROM rowcast.webhook_deliveries WHERE status = 'delivered'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if c >= n {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "only {c} of {n} recorded delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = rc.cpu_secs() - cpu0;
    let first = rx.first.get().copied().expect("a first delivery");
    let last = rx.last.lock().unwrap().expect("a last delivery");
    let sending = last.duration_since(first).as_secs_f64();
    let first_at = first.duration_since(started).as_secs_f64();
    println!(
        "| deliveries | all enqueued after s | first received after s | deliveries/s received | deliveries/s recorded delivered | rowcast CPU s | load |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {:.2} | {first_at:.2} | {:.0} | {:.0} | {cpu:.1} | {} |",
        enqueued.as_secs_f64(),
        n as f64 / sending,
        n as f64 / (recorded.as_secs_f64() - first_at),
        setup::load_avg()
    );
}

/// The live path (50 `/ws` clients × 200 updates/s) without and with an endpoint that
/// receives every event.
pub async fn enqueue_cost(seconds: u64) {
    println!("\n## webhooks: what the outbox costs the live path ({seconds} s per run)\n");
    latency::header();
    let without = latency::run(Via::Ws, 50, 200, seconds).await;
    latency::row(&without);
    let rx = receiver().await;
    let with = latency::run_with(Via::Ws, 50, 200, seconds, Some(&rx.url), |_| {}).await;
    latency::row(&with);
    latency::footer(&[without, with]);
    println!(
        "\n(second row: plus an admin endpoint subscribed to `*`; it received {} deliveries)",
        rx.received.load(Ordering::Relaxed)
    );
}
