//! Retries, dead letters and replay, a receiver that is down, retention of delivered rows.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Api, fast, ms};
use crate::support::process::free_port;
use crate::support::receiver::Receiver;
use crate::support::{self, eventually};

#[tokio::test]
async fn failing_receiver_gets_the_delivery_on_the_third_attempt() {
    let mut rx = Receiver::start(&["--fail-first", "2"]).await;
    let (_db, server) = support::start_with(fast).await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    let secret = api.set_url(&carl, &rx.url("/hook")).await;
    rx.add_secret(&secret).await;
    let id = api.test_send(&carl).await;
    let answers: Vec<Value> = vec![
        rx.next().await["answered"].clone(),
        rx.next().await["answered"].clone(),
        rx.next().await["answered"].clone(),
    ];
    assert_eq!(answers, vec![json!(500), json!(500), json!(200)]);
    let d = api.delivery_with_status(&carl, &id, "delivered").await;
    assert_eq!(d["attempts"], 3);
    let log = d["attempt_log"].as_array().unwrap();
    let codes: Vec<&Value> = log.iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, vec![&json!(500), &json!(500), &json!(200)]);
    let outcomes: Vec<&str> = log.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["retry", "retry", "delivered"]);
    // The receiver is on 127.0.0.1, reached only through the allow-list: its owner sees
    // status codes and timing but not the bodies; an admin sees them.
    for a in log {
        assert_eq!(a["response"], Value::Null, "{a}");
        assert_eq!(a["response_withheld"], "private_address", "{a}");
        assert!(a["duration_ms"].as_i64().is_some(), "{a}");
    }
    let (s, d) = api
        .get(
            &format!("/api/webhook/deliveries/{id}"),
            &server.token("2", "admin"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let log = d["attempt_log"].as_array().unwrap();
    assert!(
        log[0]["response"]
            .as_str()
            .unwrap()
            .contains("failing on purpose"),
        "{d}"
    );
    assert_eq!(log[2]["response"], "ok", "{d}");
    assert!(
        log.iter().all(|a| a.get("response_withheld").is_none()),
        "{d}"
    );
    let (_, list) = api
        .get("/api/webhook/deliveries?status=delivered", &carl)
        .await;
    assert_eq!(list["deliveries"][0]["id"], json!(id));
    let metrics = support::metrics_text(&server.http()).await;
    for name in [
        "rowcast_webhook_attempts_total{outcome=\"retry\"}",
        "rowcast_webhook_attempts_total{outcome=\"delivered\"}",
        "rowcast_webhook_attempt_duration_seconds_bucket",
        "rowcast_webhook_outbox_depth{status=\"pending\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    server.stop().await;
}

#[tokio::test]
async fn dead_letter_is_replayed_on_request() {
    let (db, server) = support::start_with(fast).await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    let nobody = format!("http://127.0.0.1:{}/hook", free_port());
    let secret = api.set_url(&carl, &nobody).await;
    let id = api.test_send(&carl).await;
    let d = api.delivery_with_status(&carl, &id, "failed").await;
    assert_eq!(d["attempts"], 4, "1 + 3 retries: {d}");
    assert!(d["last_error"].as_str().unwrap().contains("onnect"), "{d}");
    // Another user cannot see or replay it; an admin can see it.
    let cleo = server.token("4", "customer");
    let (s, _) = api
        .get(&format!("/api/webhook/deliveries/{id}"), &cleo)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .post(
            &format!("/api/webhook/deliveries/{id}/retry"),
            &cleo,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .get(
            &format!("/api/webhook/deliveries/{id}"),
            &server.token("2", "admin"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let mut rx = Receiver::start(&["--secret", &secret]).await;
    assert_eq!(api.set_url(&carl, &rx.url("/hook")).await, secret);
    let (s, b) = api
        .post(
            &format!("/api/webhook/deliveries/{id}/retry"),
            &carl,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(rx.next().await["id"], json!(id));
    let d = api.delivery_with_status(&carl, &id, "delivered").await;
    assert_eq!(d["attempts"], 5);
    let n = db
        .count("SELECT count(*) FROM rowcast.webhook_attempts")
        .await;
    assert_eq!(n, 5);
    server.stop().await;
}

#[tokio::test]
async fn deliveries_wait_while_the_receiver_is_down() {
    let rx = Receiver::start(&[]).await;
    let port = rx.port.to_string();
    let (db, server) = support::start_with(|c| {
        fast(c);
        c.webhook.retry_schedule = [100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000]
            .map(ms)
            .to_vec();
    })
    .await;
    let api = Api::new(server.http());
    let admin = server.token("2", "admin");
    let (s, ep) = api
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": rx.url("/down"), "event_types": ["ticket.*"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let secret = ep["secret"].as_str().unwrap().to_string();
    rx.kill().await;

    let pg = db.client().await;
    for i in 0..20 {
        pg.execute(
            "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3)",
            &[&format!("while down {i}")],
        )
        .await
        .unwrap();
    }
    eventually(15, || async {
        let failed_once = db.count("SELECT count(*) FROM rowcast.webhook_deliveries WHERE status = 'pending' AND attempts >= 1",
        )
        .await;
        (failed_once == 20).then_some(())
    })
    .await;

    let mut rx = Receiver::start(&["--port", &port, "--secret", &secret]).await;
    let mut ids = HashSet::new();
    let mut subjects = HashSet::new();
    while ids.len() < 20 {
        let r = rx.next().await;
        ids.insert(r["id"].as_str().unwrap().to_string());
        subjects.insert(r["body"]["data"]["subject"].as_str().unwrap().to_string());
    }
    assert_eq!(subjects.len(), 20);
    eventually(10, || async {
        let n = db
            .count("SELECT count(*) FROM rowcast.webhook_deliveries WHERE status = 'delivered'")
            .await;
        (n == 20).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn delivered_deliveries_are_pruned_and_dead_letters_kept() {
    let (db, server) = support::start_with(|c| {
        fast(c);
        c.retention.deliveries = ms(1);
        c.retention.interval = ms(200);
        c.retention.batch = 2;
    })
    .await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    let mut rx = Receiver::start(&[]).await;
    let secret = api.set_url(&carl, &rx.url("/prune")).await;
    rx.add_secret(&secret).await;
    for _ in 0..5 {
        api.test_send(&carl).await;
    }
    for _ in 0..5 {
        rx.next().await;
    }
    let cleo = server.token("4", "customer");
    api.set_url(&cleo, &format!("http://127.0.0.1:{}/", free_port()))
        .await;
    let dead = api.test_send(&cleo).await;
    api.delivery_with_status(&cleo, &dead, "failed").await;
    eventually(10, || async {
        let left = db
            .count("SELECT count(*) FROM rowcast.webhook_deliveries")
            .await;
        let attempts = db
            .count("SELECT count(*) FROM rowcast.webhook_attempts")
            .await;
        (left == 1 && attempts == 4).then_some(())
    })
    .await;
    server.stop().await;
}
