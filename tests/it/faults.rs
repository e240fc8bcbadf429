//! Fault injection: rowcast killed mid-burst.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{Db, process::Proc, ws::WsClient};

/// `kill -9` rowcast during a burst of writes, restart it: a client that resumes with its
/// last `seq` misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_nothing_for_resuming_clients() {
    let db = Db::start().await;
    let config = db.config();
    db.migrate(&config).await;
    let mut rc = Proc::start(&config, 0, &[]).await;
    let auth = rowcast::api::auth::Authenticator::from_config(&config.jwt).unwrap();
    let token = auth.issue("1", "agent", 600).unwrap();
    let (mut c, _) = WsClient::connect(&rc.ws_url(&format!("token={token}&rooms=tickets"))).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "joined");
    let url = db.url.clone();
    let writer = tokio::spawn(async move {
        let pg = crate::support::connect(&url).await;
        let mut ids = BTreeSet::new();
        for i in 0..400 {
            let id: i64 = pg
                .query_one(
                    "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3) RETURNING id",
                    &[&format!("burst-{i}")],
                )
                .await
                .unwrap()
                .get(0);
            ids.insert(id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ids
    });
    // Receive some, then kill rowcast in the middle of the burst.
    let mut seen = BTreeSet::new();
    let mut last = String::new();
    while seen.len() < 50 {
        let ev = c.next_event().await;
        seen.insert(ev["payload"]["id"].as_i64().unwrap());
        last = ev["seq"].as_str().unwrap().to_string();
    }
    rc.kill9();
    // Drain whatever was already in flight to us, then the connection is gone.
    while let Some(v) = c.maybe_json(200).await {
        if v["type"] == "event" {
            seen.insert(v["payload"]["id"].as_i64().unwrap());
            last = v["seq"].as_str().unwrap().to_string();
        }
    }
    let port = rc.port;
    drop(rc);
    let rc = Proc::start(&config, port, &[]).await;
    let want = writer.await.unwrap();
    let (mut c, _) =
        WsClient::connect(&rc.ws_url(&format!("token={token}&rooms=tickets&since={last}"))).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "joined");
    let mut prev: i64 = last.parse().unwrap();
    while !want.is_subset(&seen) {
        let ev = c.next_event().await;
        let seq: i64 = ev["seq"].as_str().unwrap().parse().unwrap();
        assert!(seq > prev, "in order, no duplicates ({prev} then {seq})");
        prev = seq;
        assert!(
            seen.insert(ev["payload"]["id"].as_i64().unwrap()),
            "no event twice"
        );
    }
    drop(rc);
}
