//! Webhooks end to end: the API, the outbox, signed delivery to a real receiver that
//! verifies with the npm `standardwebhooks` library, retries, dead letters, replay, crash
//! recovery, several replicas, and the SSRF guard.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use rowcast::Config;
use serde_json::{Value, json};

use crate::support::process::{Process, free_port};
use crate::support::receiver::Receiver;
use crate::support::{self, Db, Server, eventually};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Loopback allowed (the receiver is local), short retries, quick polling.
fn fast(c: &mut Config) {
    c.webhook.allow_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
    c.webhook.retry_schedule = vec![ms(100), ms(100), ms(100)];
    c.webhook.poll_interval = ms(50);
    c.webhook.timeout = Duration::from_secs(2);
    c.webhook.lease = Duration::from_secs(4);
}

/// Calls rowcast's API as a user.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String) -> Api {
        Api {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("rowcast answers");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// Sets the caller's endpoint; returns its secret.
    async fn set_url(&self, token: &str, url: &str) -> String {
        let (s, ep) = self.put("/api/webhook", token, json!({ "url": url })).await;
        assert!(s.is_success(), "{s} {ep}");
        ep["secret"].as_str().expect("secret").to_string()
    }

    /// Sends a test notification; returns the delivery id.
    async fn test_send(&self, token: &str) -> String {
        let (s, b) = self.post("/api/webhook/test", token, json!({})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        b["delivery_id"].as_str().unwrap().to_string()
    }

    /// Waits until the delivery has `status`; returns it with its attempt log.
    #[track_caller]
    fn delivery_with_status<'a>(
        &'a self,
        token: &'a str,
        id: &'a str,
        status: &'a str,
    ) -> impl Future<Output = Value> + 'a {
        eventually(20, move || async move {
            let (s, d) = self
                .get(&format!("/api/webhook/deliveries/{id}"), token)
                .await;
            (s == StatusCode::OK && d["status"] == status).then_some(d)
        })
    }
}

async fn count(db: &Db, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn user_endpoint_gets_only_its_notifications_and_admin_filter_gets_tickets() {
    let mut rx = Receiver::start(&[]).await;
    let (db, server) = support::start_with(fast).await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    let admin = server.token("2", "admin");

    let (s, ep) = api
        .put("/api/webhook", &carl, json!({ "url": rx.url("/carl") }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    let secret = ep["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(ep["event_types"], json!(["notification.created"]));
    // Setting it again keeps the secret.
    let (s, again) = api
        .put("/api/webhook", &carl, json!({ "url": rx.url("/carl") }))
        .await;
    assert_eq!((s, &again["secret"]), (StatusCode::OK, &ep["secret"]));
    let (s, got) = api.get("/api/webhook", &carl).await;
    assert_eq!((s, &got["url"]), (StatusCode::OK, &json!(rx.url("/carl"))));
    rx.add_secret(&secret).await;

    let (s, adm) = api
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": rx.url("/admin"), "event_types": ["ticket.*"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{adm}");
    rx.add_secret(adm["secret"].as_str().unwrap()).await;

    let pg = db.client().await;
    pg.batch_execute(
        "INSERT INTO notifications (user_id, type, message, related_id, related_type)
              VALUES (3, 'comment_on_ticket', 'Ada replied', '1', 'comment');
         INSERT INTO notifications (user_id, type, message, related_id, related_type)
              VALUES (4, 'comment_on_ticket', 'For Cleo', '1', 'comment');
         INSERT INTO tickets (subject, requester_id) VALUES ('Webhook me', 3);
         UPDATE tickets SET status = 'solved' WHERE id = 2;
         INSERT INTO kb_articles (title, body) VALUES ('Not for the admin hook', '...');",
    )
    .await
    .unwrap();

    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(rx.next().await);
    }
    got.sort_by_key(|r| {
        (
            r["path"].as_str().unwrap().to_string(),
            r["body"]["event"].to_string(),
        )
    });
    let carl_req = got
        .iter()
        .find(|r| r["path"] == "/carl")
        .expect("carl's notification");
    let b = &carl_req["body"];
    assert_eq!(b["event"], "notification.created");
    assert_eq!(b["notification"]["user_id"], 3);
    assert_eq!(b["notification"]["message"], "Ada replied");
    assert_eq!(b["data"]["id"], 1, "the related comment: {b}");
    assert_eq!(carl_req["content_type"], "application/json");
    let admin_events: HashSet<String> = got
        .iter()
        .filter(|r| r["path"] == "/admin")
        .map(|r| r["body"]["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        admin_events,
        HashSet::from(["ticket.created".to_string(), "ticket.updated".to_string()])
    );
    // The outbox holds exactly these: nothing for Cleo's notification or the kb article.
    let pending_cursor = eventually(10, || async {
        let n = count(&db, "SELECT count(*) FROM rowcast.webhook_deliveries").await;
        (n >= 3).then_some(n)
    })
    .await;
    assert_eq!(pending_cursor, 3);
    assert!(rx.maybe_next(300).await.is_none(), "nothing else is sent");

    // A test send reaches the caller's endpoint, signed, with the delivery id as webhook-id.
    let id = api.test_send(&carl).await;
    let t = rx.next().await;
    assert_eq!(
        (t["path"].as_str(), t["id"].as_str()),
        (Some("/carl"), Some(id.as_str()))
    );
    assert_eq!(t["body"]["event"], "notification.created");
    assert_eq!(t["body"]["test"], true);
    // Users see only their deliveries; admins see all.
    let (_, mine) = api.get("/api/webhook/deliveries", &carl).await;
    assert_eq!(mine["deliveries"].as_array().unwrap().len(), 2);
    let (_, all) = api.get("/api/webhook/deliveries", &admin).await;
    assert_eq!(all["deliveries"].as_array().unwrap().len(), 4);
    server.stop().await;
}

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
    assert!(
        log[0]["response"]
            .as_str()
            .unwrap()
            .contains("failing on purpose")
    );
    assert!(log[0]["duration_ms"].as_i64().is_some());
    let (_, list) = api
        .get("/api/webhook/deliveries?status=delivered", &carl)
        .await;
    assert_eq!(list["deliveries"][0]["id"], json!(id));
    let metrics = reqwest::get(format!("{}/metrics", server.http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let n = count(&db, "SELECT count(*) FROM rowcast.webhook_attempts").await;
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
        let failed_once = count(
            &db,
            "SELECT count(*) FROM rowcast.webhook_deliveries WHERE status = 'pending' AND attempts >= 1",
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
        let n = count(
            &db,
            "SELECT count(*) FROM rowcast.webhook_deliveries WHERE status = 'delivered'",
        )
        .await;
        (n == 20).then_some(())
    })
    .await;
    server.stop().await;
}

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
    let first = Process::serve(&db.url, &env).await;
    let auth = rowcast::api::auth::Authenticator::from_config(&config.jwt).unwrap();
    let carl = auth.issue("3", "customer", 3600).unwrap();
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
    first.kill9().await;

    let second = Process::serve(&db.url, &env).await;
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
    second.kill9().await;
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
        let n = count(&db, "SELECT count(*) FROM rowcast.webhook_deliveries").await;
        (n >= 400).then_some(())
    })
    .await;
    tokio::time::sleep(ms(500)).await;
    let total = count(&db, "SELECT count(*) FROM rowcast.webhook_deliveries").await;
    assert_eq!(total, 400, "200 changes × 2 endpoints");
    let per_change = count(
        &db,
        "SELECT count(*) FROM (SELECT change_xid, change_id FROM rowcast.webhook_deliveries
           GROUP BY 1, 2 HAVING count(*) <> 2) x",
    )
    .await;
    assert_eq!(per_change, 0, "every change enqueued once per endpoint");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn internal_urls_are_refused_when_set_and_when_connecting() {
    // No allow-list: the default.
    let (db, server) = support::start().await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    for (url, reason) in [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://localhost/", "resolves to 127.0.0.1, a loopback"),
        ("http://hooks.localhost/", "local name"),
        ("http://[::1]:8080/", "loopback"),
        ("http://100.64.1.1/", "carrier-grade NAT"),
        ("ftp://example.com/", "only http and https"),
        ("not a url", "not a valid URL"),
    ] {
        let (s, b) = api.put("/api/webhook", &carl, json!({ "url": url })).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {b}");
        let message = b["message"].as_str().unwrap();
        assert!(message.contains(reason), "{url}: {message}");
    }
    // Bad bodies and missing tokens get clear 4xx answers.
    let (s, b) = api.put("/api/webhook", &carl, json!({ "uri": "x" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(b["message"].as_str().unwrap().contains("url"), "{b}");
    let raw = reqwest::Client::new()
        .put(format!("{}/api/webhook", server.http()))
        .bearer_auth(&carl)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let (s, b) = api
        .call(
            Method::PUT,
            "/api/webhook",
            None,
            Some(json!({ "url": "https://example.com/" })),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = api
        .post(
            "/api/webhooks",
            &carl,
            json!({ "url": "https://example.com/", "event_types": ["*"] }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = api
        .post(
            "/api/webhooks",
            &server.token("2", "admin"),
            json!({ "url": "https://example.com/", "event_types": ["tickets"] }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // A URL that got into the table anyway (or a name re-pointed after the check) is
    // refused at connection time: by the resolver for names, by the literal check for IPs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pg = db.client().await;
    for (user, url) in [
        ("3", format!("http://localhost:{port}/")),
        ("4", format!("http://127.0.0.1:{port}/")),
    ] {
        pg.execute(
            "INSERT INTO rowcast.webhook_endpoints (id, user_id, url, event_types, secret, created_by)
             VALUES (gen_random_uuid(), $1, $2, '{notification.created}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'test')",
            &[&user, &url],
        )
        .await
        .unwrap();
        let token = server.token(user, "customer");
        let id = api.test_send(&token).await;
        let d = eventually(10, || async {
            let (_, d) = api
                .get(&format!("/api/webhook/deliveries/{id}"), &token)
                .await;
            (d["attempts"].as_i64() >= Some(1)).then_some(d)
        })
        .await;
        let error = d["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("loopback"), "{url}: {d}");
    }
    let accepted = tokio::time::timeout(ms(200), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "nothing connected to the internal address"
    );
    server.stop().await;
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
async fn rotated_secret_keeps_signing_and_gone_disables_the_endpoint() {
    let (db, server) = support::start_with(fast).await;
    let api = Api::new(server.http());
    let admin = server.token("2", "admin");
    let mut rx = Receiver::start(&[]).await;
    let (s, ep) = api
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": rx.url("/rotated"), "event_types": ["ticket.created"], "description": "ops" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let old = ep["secret"].as_str().unwrap().to_string();
    let id = ep["id"].as_str().unwrap().to_string();
    let (s, rotated) = api
        .post(&format!("/api/webhooks/{id}/rotate"), &admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    assert!(rotated["previous_secret_expires_at"].is_string());
    // The receiver knows only the old secret: the second signature still verifies.
    rx.add_secret(&old).await;
    let pg = db.client().await;
    pg.execute(
        "INSERT INTO tickets (subject, requester_id) VALUES ('rotated', 3)",
        &[],
    )
    .await
    .unwrap();
    let r = rx.next().await;
    assert_eq!(
        r["signature"].as_str().unwrap().split(' ').count(),
        2,
        "{r}"
    );
    // Disabled endpoints get nothing; listing hides secrets.
    let (s, patched) = api
        .call(
            Method::PATCH,
            &format!("/api/webhooks/{id}"),
            Some(&admin),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!((s, &patched["enabled"]), (StatusCode::OK, &json!(false)));
    pg.execute(
        "INSERT INTO tickets (subject, requester_id) VALUES ('while disabled', 3)",
        &[],
    )
    .await
    .unwrap();
    assert!(rx.maybe_next(700).await.is_none());
    let (_, list) = api.get("/api/webhooks", &admin).await;
    assert!(list["endpoints"][0].get("secret").is_none(), "{list}");

    // A receiver that answers 410 Gone disables its endpoint; the delivery is failed.
    let mut gone = Receiver::start(&["--status", "410"]).await;
    let (_, ep) = api
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": gone.url("/gone"), "event_types": ["ticket.*"] }),
        )
        .await;
    gone.add_secret(ep["secret"].as_str().unwrap()).await;
    let gone_id = ep["id"].as_str().unwrap().to_string();
    pg.execute(
        "INSERT INTO tickets (subject, requester_id) VALUES ('gone', 3)",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(gone.next().await["answered"], 410);
    let ep = eventually(10, || async {
        let (_, ep) = api.get(&format!("/api/webhooks/{gone_id}"), &admin).await;
        (ep["enabled"] == false).then_some(ep)
    })
    .await;
    assert!(
        ep["disabled_reason"].as_str().unwrap().contains("410"),
        "{ep}"
    );
    let (_, failed) = api
        .get(
            &format!("/api/webhook/deliveries?status=failed&endpoint_id={gone_id}"),
            &admin,
        )
        .await;
    assert_eq!(
        failed["deliveries"].as_array().unwrap().len(),
        1,
        "{failed}"
    );
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
        let left = count(&db, "SELECT count(*) FROM rowcast.webhook_deliveries").await;
        let attempts = count(&db, "SELECT count(*) FROM rowcast.webhook_attempts").await;
        (left == 1 && attempts == 4).then_some(())
    })
    .await;
    server.stop().await;
}
