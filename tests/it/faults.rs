//! Fault injection: rowcast killed mid-burst (`/ws` and Socket.IO clients resuming),
//! PostgreSQL crashing mid-stream.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::socketio::{connect_and_join_tickets, next_event};
use rowcast::pgtemp::PgTempOptions;

use crate::support::writer::Writer;
use crate::support::ws::{Received, WsClient};
use crate::support::{self, Db, Server, node::Node, process::Proc};

/// Inserts `n` tickets, one transaction each, 2 ms apart; returns their ids.
fn burst(url: String, n: usize) -> tokio::task::JoinHandle<BTreeSet<i64>> {
    tokio::spawn(async move {
        let pg = support::connect(&url).await;
        let mut ids = BTreeSet::new();
        for i in 0..n {
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
    })
}

/// `kill -9` rowcast during a burst of writes, restart it: a client that resumes with its
/// last `seq` misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_nothing_for_resuming_clients() {
    let db = Db::start().await;
    let config = db.config();
    db.migrate(&config).await;
    let mut rc = Proc::start(&config, 0, &[]).await;
    let token = support::token("1", "agent");
    let (mut c, _) = WsClient::connect(&rc.ws_url(&format!("token={token}&rooms=tickets"))).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "joined");
    let writer = burst(db.url.clone(), 400);
    // Receive some, then kill rowcast in the middle of the burst.
    let mut got = Received::default();
    c.receive_ids(&mut got, 50).await;
    rc.kill9();
    // Drain whatever was already in flight to us, then the connection is gone.
    c.drain_ids(&mut got).await;
    let port = rc.port;
    drop(rc);
    let rc = Proc::start(&config, port, &[]).await;
    let want = writer.await.unwrap();
    let last = &got.last;
    let (mut c, _) =
        WsClient::connect(&rc.ws_url(&format!("token={token}&rooms=tickets&since={last}"))).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "joined");
    c.resume_ids(&mut got, &want).await;
    drop(rc);
}

/// The same with the real npm `socket.io-client`: after `kill -9` and a restart, a socket
/// that connects with `auth.since` = its last `seq` gets every missed event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_socketio_client_resumes_with_since_and_misses_nothing() {
    let db = Db::start().await;
    let config = db.config();
    db.migrate(&config).await;
    let mut rc = Proc::start(&config, 0, &[]).await;
    let token = support::token("1", "agent");
    let mut n = Node::start("sio.mjs", &[&rc.http()]);
    connect_and_join_tickets(&mut n, "a", json!({"token": token}), 1).await;
    let writer = burst(db.url.clone(), 300);
    let mut seen = BTreeSet::new();
    let mut last = String::new();
    let mut take = |ev: &serde_json::Value, seen: &mut BTreeSet<i64>| {
        assert_eq!(ev["event"], "ticket.update", "{ev}");
        assert!(
            seen.insert(ev["payload"]["id"].as_i64().unwrap()),
            "no event twice"
        );
        last = ev["payload"]["seq"].as_str().unwrap().to_string();
    };
    while seen.len() < 40 {
        let ev = next_event(&mut n, "a").await;
        take(&ev, &mut seen);
    }
    rc.kill9();
    // What was already on the wire still arrives, then the socket reports the disconnect.
    loop {
        let v = n
            .next_where(15, |v| {
                v["id"] == "a" && (v["type"] == "event" || v["type"] == "disconnect")
            })
            .await;
        if v["type"] == "disconnect" {
            break;
        }
        take(&v, &mut seen);
    }
    let port = rc.port;
    drop(rc);
    let rc = Proc::start(&config, port, &[]).await;
    let want = writer.await.unwrap();
    connect_and_join_tickets(&mut n, "b", json!({"token": token, "since": last}), 2).await;
    let mut prev: i64 = last.parse().unwrap();
    while !want.is_subset(&seen) {
        let ev = next_event(&mut n, "b").await;
        let seq: i64 = ev["payload"]["seq"].as_str().unwrap().parse().unwrap();
        assert!(seq > prev, "in order, no duplicates ({prev} then {seq})");
        prev = seq;
        assert!(
            seen.insert(ev["payload"]["id"].as_i64().unwrap()),
            "no event twice"
        );
    }
    drop(rc);
}

/// PostgreSQL crashes (`pg_ctl stop -m immediate`: no checkpoint, crash recovery on start,
/// its connections cut) while a writer keeps committing: once it is back,
/// every acknowledged commit reaches a connected client. The cluster runs with
/// `synchronous_commit=on` (the throwaway default is off, and an asynchronous commit may
/// legitimately be lost in a crash, change row and all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_mid_stream_loses_no_committed_change() {
    let db = Db::start_with(PgTempOptions {
        fsync: false,
        settings: vec![("synchronous_commit".into(), "on".into())],
    })
    .await;
    let config = db.config();
    db.migrate(&config).await;
    let server = Server::start(config).await;
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    c.join("tickets").await;
    let writer = Writer::start(&db.url, "c");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = writer.committed();
    tokio::task::block_in_place(|| {
        db.pg.stop_server("immediate")?;
        db.pg.start_server()
    })
    .expect("crash and restart PostgreSQL");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let want = writer.stop().await;
    assert!(
        before > 10 && want.len() > before + 10,
        "the writer committed before ({before}) and after the crash ({})",
        want.len()
    );
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want.is_subset(&seen) {
        if Instant::now() > deadline {
            let missing: Vec<i64> = want.difference(&seen).copied().collect();
            panic!("{}", explain_missing(&db, &server, &missing).await);
        }
        if let Some(v) = c.maybe_json(500).await
            && v["type"] == "event"
        {
            seen.insert(v["payload"]["id"].as_i64().unwrap());
        }
    }
    server.stop().await;
}

/// What the log and the hub say about tickets a client never received.
async fn explain_missing(db: &Db, server: &Server, missing: &[i64]) -> String {
    let pg = db.client().await;
    let rows: Vec<String> = pg
        .query(
            "SELECT c.id, l.seq FROM rowcast.changes c LEFT JOIN rowcast.log l USING (id)
              WHERE c.tbl = 'public.tickets' AND (c.pk->>0)::bigint = ANY($1) ORDER BY c.id",
            &[&missing],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "id {} seq {:?}",
                r.get::<_, i64>(0),
                r.get::<_, Option<i64>>(1)
            )
        })
        .collect();
    let max: Option<i64> = pg
        .query_one("SELECT max(seq) FROM rowcast.log", &[])
        .await
        .unwrap()
        .get(0);
    let token = server.token("1", "agent");
    let (_, welcome) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    format!(
        "tickets {missing:?} never arrived; their change rows: {rows:?}; max seq in the log {max:?}; hub at {}",
        welcome["seq"]
    )
}
