//! Resume after reconnect: exactly the missed events, in order, on Socket.IO and `/ws`;
//! `resync_required` once the missed events were pruned.

use std::time::Duration;

use serde_json::json;

use crate::socketio::{connect_and_join_tickets, next_event, sio};
use crate::support::{self, ws::WsClient};

/// Commits `n` ticket changes, one transaction each: inserts of new rows, then updates of
/// `existing` rows. Every change touches a different row: changes to one row that are read
/// together are coalesced into one event carrying the latest state.
async fn commit_changes(pg: &tokio_postgres::Client, n: usize, existing: &[i64]) {
    let updates = existing.len().min(n);
    for i in 0..n - updates {
        pg.execute(
            "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3)",
            &[&format!("missed {i}")],
        )
        .await
        .unwrap();
    }
    for id in &existing[..updates] {
        pg.execute("UPDATE tickets SET priority = 'high' WHERE id = $1", &[id])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn reconnect_with_since_gets_exactly_the_100_missed_events_on_socketio_and_ws() {
    // A small replay buffer: most of the 100 must come from the change log.
    let (db, server) = support::start_with(|c| c.hub.replay_buffer = 30).await;
    let token = server.token("1", "agent");
    let pg = db.client().await;

    // An observer that stays connected: the reference list of seqs.
    let (mut observer, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    observer.join("tickets").await;
    let mut n = sio(&server);
    connect_and_join_tickets(&mut n, "a", json!({"token": token}), 1).await;
    let (mut ws, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    ws.join("tickets").await;

    // 40 rows that exist before the disconnect (updated while the clients are away).
    let existing: Vec<i64> = pg
        .query(
            "INSERT INTO tickets (subject, requester_id) SELECT 'before ' || g, 3 FROM generate_series(1, 40) g RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut first = String::new();
    for _ in 0..40 {
        first = observer.next_event().await["seq"]
            .as_str()
            .unwrap()
            .to_string();
        let sio_seq = next_event(&mut n, "a").await["payload"]["seq"].clone();
        let ws_seq = ws.next_event().await["seq"].clone();
        assert_eq!(sio_seq, json!(first));
        assert_eq!(ws_seq, json!(first));
    }

    // Both disconnect; 100 changes are committed meanwhile.
    n.send(json!({"cmd": "close", "id": "a"})).await;
    drop(ws);
    commit_changes(&pg, 100, &existing).await;
    let mut expected = Vec::new();
    for _ in 0..100 {
        expected.push(
            observer.next_event().await["seq"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }

    // Socket.IO: auth { token, since } then join → exactly those 100, in order.
    connect_and_join_tickets(&mut n, "b", json!({"token": token, "since": first}), 2).await;
    let mut got = Vec::new();
    for _ in 0..100 {
        let v = next_event(&mut n, "b").await;
        assert_eq!(v["event"], "ticket.update", "{v}");
        got.push(v["payload"]["seq"].as_str().unwrap().to_string());
    }
    assert_eq!(got, expected, "Socket.IO resume");
    while let Some(v) = n.maybe_next(0.5).await {
        assert!(
            !(v["id"] == "b" && v["type"] == "event"),
            "nothing after the 100 (no duplicates): {v}"
        );
    }

    // /ws: ?since=…&rooms=tickets → the same 100.
    let url = server.ws_url(&format!("token={token}&since={first}&rooms=tickets"));
    let (mut ws, _) = WsClient::connect(&url).await;
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(ws.next_event().await["seq"].as_str().unwrap().to_string());
    }
    assert_eq!(got, expected, "/ws resume");
    while let Some(v) = ws.maybe_json(500).await {
        assert_ne!(v["type"], "event", "no duplicates after the 100: {v}");
    }
    n.close_stdin();
    server.stop().await;
}

#[tokio::test]
async fn since_older_than_the_retained_log_gets_resync_required_everywhere() {
    let (db, server) = support::start_with(|c| {
        c.hub.replay_buffer = 0;
        c.retention.changes = Duration::from_millis(300);
        c.retention.interval = Duration::from_millis(100);
        c.retention.batch = 2;
    })
    .await;
    let token = server.token("1", "agent");
    let http = reqwest::Client::new();
    let start: serde_json::Value = http
        .get(format!(
            "{}/api/changes?rooms=tickets&token={token}",
            server.http()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let since = start["next"].as_str().unwrap().to_string();
    let pg = db.client().await;
    commit_changes(&pg, 6, &[]).await;
    // Pruning runs in batches of 2 until the log is empty and the cursor is past `since`.
    support::wait_pruned_past(&db, &since).await;

    // Polling: 410.
    let res = http
        .get(format!(
            "{}/api/changes?rooms=tickets&since={since}&token={token}",
            server.http()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 410);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "resync_required", "{body}");
    assert!(body["next"].is_string());

    // /ws: a resync_required frame.
    let url = server.ws_url(&format!("token={token}&since={since}&rooms=tickets"));
    let (mut ws, _) = WsClient::connect(&url).await;
    let frame = loop {
        let v = ws.next_json().await.expect("frame");
        if v["type"] == "resync_required" {
            break v;
        }
        assert_ne!(v["type"], "event", "no events from a pruned range: {v}");
    };
    assert_eq!(frame["since"], json!(since));

    // Socket.IO: a resync_required event after the join.
    let mut n = sio(&server);
    connect_and_join_tickets(&mut n, "a", json!({"token": token, "since": since}), 1).await;
    let v = n
        .next_where(15, |v| {
            v["type"] == "event" && v["event"] == "resync_required"
        })
        .await;
    assert_eq!(v["payload"]["since"], json!(since), "{v}");
    n.close_stdin();
    server.stop().await;
}
