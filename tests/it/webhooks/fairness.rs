//! Fairness: receivers that never answer cannot starve other endpoints, the per-endpoint
//! bound holds over several replicas, and test sends are rate-limited per user.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rowcast::Settings as Config;
use serde_json::json;

use super::{Api, fast};
use crate::support::receiver::Receiver;
use crate::support::{Db, Server, eventually};

/// The leases one endpoint holds right now, at most (over all endpoints).
async fn most_leased(db: &Db) -> i64 {
    db.count(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM rowcast.webhook_deliveries
          WHERE locked_until > now() AND status = 'pending' GROUP BY endpoint_id) x",
    )
    .await
}

#[tokio::test]
async fn endpoints_that_never_answer_do_not_delay_another_endpoint() {
    // One real HTTP receiver that never answers (a path per endpoint), one that answers.
    let mut hold = Receiver::start(&["--hold-first", "1000000"]).await;
    let mut good = Receiver::start(&[]).await;
    let db = Db::start().await;
    let mut config: Config = db.config();
    fast(&mut config);
    config.webhook.concurrency = 16;
    config.webhook.per_endpoint_concurrency = 2;
    config.webhook.timeout = Duration::from_secs(3);
    config.webhook.lease = Duration::from_secs(5);
    db.migrate(&config).await;
    // Two replicas: the bound is the cluster's, not each process's.
    let a = Server::start(config.clone()).await;
    let b = Server::start(config.clone()).await;
    let api = Api::new(a.http());
    for u in 0..5 {
        let t = a.token(&format!("stuck{u}"), "customer");
        let secret = api.set_url(&t, &hold.url(&format!("/stuck/{u}"))).await;
        hold.add_secret(&secret).await;
    }
    // 5 users × 40 queued deliveries to receivers that never answer.
    let pg = db.client().await;
    pg.execute(
        "INSERT INTO rowcast.webhook_deliveries (id, endpoint_id, event_type, payload)
         SELECT gen_random_uuid(), e.id, 'notification.created', '{\"test\": true}'
           FROM rowcast.webhook_endpoints e, generate_series(1, 40)",
        &[],
    )
    .await
    .unwrap();
    // Both replicas fill what the bound allows: 2 per endpoint, 10 held requests.
    let mut held: HashMap<String, usize> = HashMap::new();
    let first = Instant::now();
    for _ in 0..10 {
        let r = hold.next().await;
        *held
            .entry(r["path"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        held.len(),
        5,
        "every stuck endpoint gets its share: {held:?}"
    );
    // Nothing more reaches them before the first requests time out (3 s).
    while first.elapsed() < Duration::from_millis(2500) {
        if let Some(r) = hold.maybe_next(100).await {
            panic!("a third request in flight to one endpoint: {r} (held {held:?})");
        }
        assert!(
            most_leased(&db).await <= 2,
            "more than 2 leases of one endpoint"
        );
    }

    // Another user's delivery goes out at once, well before any stuck request times out.
    let carl = a.token("3", "customer");
    let secret = api.set_url(&carl, &good.url("/fine")).await;
    good.add_secret(&secret).await;
    let sent = Instant::now();
    let id = Api::new(b.http()).test_send(&carl).await;
    let r = good.next().await;
    let took = sent.elapsed();
    assert_eq!(r["id"], json!(id));
    assert!(
        took < Duration::from_millis(1500),
        "another endpoint waited {took:?} behind receivers that never answer"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn test_sends_are_rate_limited_per_user_with_retry_after() {
    let db = Db::start().await;
    let mut config = db.config();
    fast(&mut config);
    config.webhook.test_sends_per_minute = 3;
    db.migrate(&config).await;
    let server = Server::start(config).await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    let cleo = server.token("4", "customer");
    let mut rx = Receiver::start(&[]).await;
    for t in [&carl, &cleo] {
        let secret = api.set_url(t, &rx.url("/limited")).await;
        rx.add_secret(&secret).await;
    }
    for _ in 0..3 {
        api.test_send(&carl).await;
    }
    let res = reqwest::Client::new()
        .post(format!("{}/api/webhook/test", server.http()))
        .bearer_auth(&carl)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("3 test sends a minute"),
        "{body}"
    );
    // Another user has their own allowance; nothing was enqueued for the refused send.
    api.test_send(&cleo).await;
    eventually(10, || async {
        let n = db
            .count("SELECT count(*) FROM rowcast.webhook_deliveries")
            .await;
        (n == 4).then_some(())
    })
    .await;
    server.stop().await;
}
