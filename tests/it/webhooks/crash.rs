//! Crashes and replicas: kill -9 mid-request, graceful shutdown, two replicas enqueueing.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Api, fast, ms};
use crate::support::process::{Proc, free_port};
use crate::support::receiver::Receiver;
use crate::support::{Db, Server, eventually};

#[tokio::test]
async fn delivery_in_flight_when_rowcast_is_killed_is_retried_after_its_lease() {
    // The receiver holds the first request open and never answers it.
    let mut rx = Receiver::start(&["--hold-first", "1"]).await;
    let db = Db::start().await;
    let config = db.config();
    db.migrate(&config).await;
    let env = [
        ("ROWCAST_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8"),
        ("ROWCAST_WEBHOOK_TIMEOUT", "2s"),
        ("ROWCAST_WEBHOOK_LEASE", "3s"),
        ("ROWCAST_WEBHOOK_POLL_INTERVAL", "100ms"),
        ("ROWCAST_WEBHOOK_RETRY_SCHEDULE", "100ms,100ms"),
    ];
    let mut first = Proc::serve(&db.url, &env).await;
    let carl = crate::support::token("3", "customer");
    let api = Api::new(first.http());
    let secret = api.set_url(&carl, &rx.url("/slow")).await;
    rx.add_secret(&secret).await;
    let id = api.test_send(&carl).await;
    let held = rx.next().await;
    assert_eq!(
        (held["id"].as_str(), &held["answered"]),
        (Some(id.as_str()), &Value::Null)
    );
    let killed_at = Instant::now();
    first.kill9();

    let mut second = Proc::serve(&db.url, &env).await;
    let again = rx.next().await;
    assert_eq!(again["id"], json!(id), "the same delivery, same webhook-id");
    assert_eq!(again["answered"], 200);
    assert!(
        killed_at.elapsed() > Duration::from_millis(2000),
        "retried only once the 3 s lease ran out ({:?})",
        killed_at.elapsed()
    );
    let api = Api::new(second.http());
    let d = api.delivery_with_status(&carl, &id, "delivered").await;
    assert_eq!(d["attempts"], 1, "the killed attempt left no result: {d}");
    second.kill9();
}

#[tokio::test]
async fn shutdown_releases_a_request_still_in_flight_so_the_next_process_sends_it_at_once() {
    let mut rx = Receiver::start(&["--hold-first", "1"]).await;
    let db = Db::start().await;
    let mut config = db.config();
    fast(&mut config);
    // A lease far longer than the test: only a released lease lets the delivery go soon.
    config.webhook.timeout = Duration::from_secs(20);
    config.webhook.lease = Duration::from_secs(60);
    config.shutdown_timeout = Duration::from_secs(2);
    db.migrate(&config).await;
    let first = Server::start(config.clone()).await;
    let api = Api::new(first.http());
    let carl = first.token("3", "customer");
    let secret = api.set_url(&carl, &rx.url("/held")).await;
    rx.add_secret(&secret).await;
    let id = api.test_send(&carl).await;
    assert_eq!(rx.next().await["answered"], Value::Null);
    first.stop().await;
    let row = db
        .client()
        .await
        .query_one(
            "SELECT status, locked_until IS NULL, attempts FROM rowcast.webhook_deliveries WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let state: (String, bool, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        state,
        ("pending".to_string(), true, 0),
        "released, not lost"
    );
    let restarted = Instant::now();
    let second = Server::start(config).await;
    let again = rx.next().await;
    assert_eq!(
        (&again["id"], &again["answered"]),
        (&json!(id), &json!(200))
    );
    assert!(restarted.elapsed() < Duration::from_secs(15));
    Api::new(second.http())
        .delivery_with_status(&carl, &id, "delivered")
        .await;
    second.stop().await;
}

#[tokio::test]
async fn two_replicas_enqueue_each_change_exactly_once() {
    let db = Db::start().await;
    let mut config = db.config();
    fast(&mut config);
    // Deliveries go nowhere and wait an hour: this test is about the outbox.
    config.webhook.retry_schedule = vec![Duration::from_secs(3600)];
    db.migrate(&config).await;
    let a = Server::start(config.clone()).await;
    let b = Server::start(config.clone()).await;
    let admin = a.token("2", "admin");
    let nowhere = format!("http://127.0.0.1:{}/", free_port());
    for filter in ["*", "ticket.*"] {
        let (s, _) = Api::new(a.http())
            .post(
                "/api/webhooks",
                &admin,
                json!({ "url": nowhere, "event_types": [filter] }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut writers = Vec::new();
    for w in 0..8 {
        let pg = db.client().await;
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                pg.execute(
                    "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3)",
                    &[&format!("replica test {w}-{i}")],
                )
                .await
                .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    eventually(20, || async {
        let n = db
            .count("SELECT count(*) FROM rowcast.webhook_deliveries")
            .await;
        (n >= 400).then_some(())
    })
    .await;
    tokio::time::sleep(ms(500)).await;
    let total = db
        .count("SELECT count(*) FROM rowcast.webhook_deliveries")
        .await;
    assert_eq!(total, 400, "200 changes × 2 endpoints");
    let per_change = db
        .count(
            "SELECT count(*) FROM (SELECT change_seq FROM rowcast.webhook_deliveries
           GROUP BY 1 HAVING count(*) <> 2) x",
        )
        .await;
    assert_eq!(per_change, 0, "every change enqueued once per endpoint");
    a.stop().await;
    b.stop().await;
}
