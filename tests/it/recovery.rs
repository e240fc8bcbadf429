//! Socket.IO connection-state recovery with an unchanged socket.io-client frontend (default
//! options, rooms joined on every connect): after a network drop, a `kill -9` and restart,
//! or a reconnect to another replica, the client recovers (`socket.recovered`) and gets
//! what it missed in order, exactly once; a tampered, foreign or expired recovery is an
//! ordinary fresh connect.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::binary::Rowcast;
use crate::support::node::Node;
use crate::support::proxy::Proxy;
use crate::support::{self, Db};

const ROOMS: [&str; 5] = ["tickets", "comments", "users", "kb", "attachments"];

fn client(base: &str) -> Node {
    Node::start("recover.mjs", &[base])
}

/// Connects socket `id` like the frontend (`transports`: `None` for the default, polling
/// then upgrade) and waits until its rooms are joined; returns the connect line.
async fn connect(n: &mut Node, id: &str, token: &str, transports: Option<&[&str]>) -> Value {
    let mut cmd = json!({"cmd": "connect", "id": id, "auth": {"token": token}, "rooms": ROOMS});
    if let Some(t) = transports {
        cmd["transports"] = json!(t);
    }
    n.send(cmd).await;
    let connected = next(n, id, "connect").await;
    joined(n, id).await;
    connected
}

async fn next(n: &mut Node, id: &str, ty: &'static str) -> Value {
    let id = id.to_string();
    n.next_where(30, move |v| v["id"] == id.as_str() && v["type"] == ty)
        .await
}

/// The acks of the joins of a (re)connect: every one ok.
async fn joined(n: &mut Node, id: &str) {
    let v = next(n, id, "joined").await;
    for ack in v["acks"].as_array().unwrap() {
        assert_eq!(ack["ok"], true, "{v}");
    }
}

/// `n` ticket events of socket `id` (subjects `prefix-0..n`), checked in order and each
/// once, with the seq as the trailing string argument.
async fn receive(node: &mut Node, id: &str, prefix: &str, n: usize) {
    let mut prev = 0i64;
    for i in 0..n {
        let ev = next(node, id, "event").await;
        assert_eq!(ev["event"], "ticket.update", "{ev}");
        assert_eq!(ev["args"], 2, "payload, then the seq: {ev}");
        assert_eq!(ev["last"], ev["payload"]["seq"], "{ev}");
        assert_eq!(
            ev["payload"]["data"]["subject"],
            format!("{prefix}-{i}"),
            "in order, each once"
        );
        let seq: i64 = ev["last"].as_str().unwrap().parse().unwrap();
        assert!(seq > prev);
        prev = seq;
    }
}

/// `n` new tickets, each its own transaction (distinct rows: no two changes coalesce).
async fn write(pg: &tokio_postgres::Client, prefix: &str, n: usize) {
    for i in 0..n {
        pg.execute(
            "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3)",
            &[&format!("{prefix}-{i}")],
        )
        .await
        .unwrap();
    }
}

async fn network_drop(transports: Option<&[&str]>) {
    let (db, server) = support::start().await;
    let mut n = client(&server.http());
    let token = server.token("1", "agent");
    let first = connect(&mut n, "a", &token, transports).await;
    assert_eq!(first["recovered"], false);
    let pid = first["pid"]
        .as_str()
        .expect("the CONNECT answer carries a pid")
        .to_string();
    let pg = db.client().await;
    write(&pg, "before", 1).await;
    receive(&mut n, "a", "before", 1).await;
    n.send(json!({"cmd": "drop", "id": "a"})).await;
    next(&mut n, "a", "disconnect").await;
    write(&pg, "missed", 100).await;
    let again = next(&mut n, "a", "connect").await;
    assert_eq!(again["recovered"], true, "{again}");
    assert_eq!(again["pid"], pid.as_str());
    // The 100 missed changes in order, exactly once, then live ones.
    receive(&mut n, "a", "missed", 100).await;
    joined(&mut n, "a").await;
    write(&pg, "live", 3).await;
    receive(&mut n, "a", "live", 3).await;
    assert!(n.maybe_next(0.5).await.is_none(), "no duplicates");
    server.stop().await;
}

/// A network drop with the npm client's default transports (polling, then the upgrade).
#[tokio::test]
async fn a_network_drop_loses_nothing_with_default_options() {
    network_drop(None).await;
}

/// The same with `transports: ["websocket"]`.
#[tokio::test]
async fn a_network_drop_loses_nothing_over_websocket_only() {
    network_drop(Some(&["websocket"])).await;
}

/// `kill -9` of rowcast and a restart on the same address: the client recovers from the
/// restarted process (the pid and its rooms are in PostgreSQL).
#[tokio::test]
async fn recovery_survives_kill_9_and_restart() {
    let db = Db::start().await;
    db.migrate(&db.config()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let env = [("ROWCAST_LISTEN", listen.as_str())];
    let rc = Rowcast::spawn(&db.url, &env).await;
    let mut n = client(&rc.http());
    let token = support::token("1", "agent");
    connect(&mut n, "a", &token, None).await;
    let pg = db.client().await;
    write(&pg, "before", 1).await;
    receive(&mut n, "a", "before", 1).await;
    // The rooms reach the database within 50 ms of the joins.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rc.kill_9();
    next(&mut n, "a", "disconnect").await;
    write(&pg, "missed", 100).await;
    let _rc = Rowcast::spawn(&db.url, &env).await;
    let again = next(&mut n, "a", "connect").await;
    assert_eq!(again["recovered"], true, "{again}");
    receive(&mut n, "a", "missed", 100).await;
    joined(&mut n, "a").await;
    write(&pg, "live", 2).await;
    receive(&mut n, "a", "live", 2).await;
}

/// Two rowcast processes on one database behind a proxy: the client's connection is cut
/// and it comes back through the proxy to the other one, which recovers its session.
#[tokio::test]
async fn recovery_works_on_another_replica() {
    let db = Db::start().await;
    db.migrate(&db.config()).await;
    let a = Rowcast::spawn(&db.url, &[]).await;
    let b = Rowcast::spawn(&db.url, &[]).await;
    let proxy = Proxy::start(a.addr).await;
    let mut n = client(&proxy.url());
    let token = support::token("1", "agent");
    connect(&mut n, "a", &token, Some(&["websocket"])).await;
    let pg = db.client().await;
    write(&pg, "before", 1).await;
    receive(&mut n, "a", "before", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.switch(b.addr);
    next(&mut n, "a", "disconnect").await;
    write(&pg, "missed", 100).await;
    let again = next(&mut n, "a", "connect").await;
    assert_eq!(
        again["recovered"], true,
        "recovered on the other replica: {again}"
    );
    receive(&mut n, "a", "missed", 100).await;
    joined(&mut n, "a").await;
    write(&pg, "live", 2).await;
    receive(&mut n, "a", "live", 2).await;
    drop((a, b));
}

/// A tampered pid, another user's pid and a malformed offset are ordinary fresh connects
/// (no foreign events; the app's own joins then work as always); an offset older than the
/// retained log is a fresh connect told to resync.
#[tokio::test]
async fn tampered_foreign_and_expired_recoveries_are_fresh_connects() {
    let (db, server) = support::start().await;
    let mut n = client(&server.http());
    let carl = connect(
        &mut n,
        "carl",
        &server.token("3", "customer"),
        Some(&["websocket"]),
    )
    .await;
    let carl_pid = carl["pid"].as_str().unwrap().to_string();
    connect(
        &mut n,
        "cleo",
        &server.token("4", "customer"),
        Some(&["websocket"]),
    )
    .await;
    let pg = db.client().await;
    pg.execute("UPDATE tickets SET status = 'pending' WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(next(&mut n, "cleo", "event").await["payload"]["id"], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let reconnect = async |n: &mut Node, set: Value| {
        let mut cmd = json!({"cmd": "set", "id": "cleo"});
        cmd.as_object_mut()
            .unwrap()
            .extend(set.as_object().unwrap().clone());
        n.send(cmd).await;
        n.send(json!({"cmd": "drop", "id": "cleo"})).await;
        next(n, "cleo", "disconnect").await;
        let c = next(n, "cleo", "connect").await;
        joined(n, "cleo").await;
        c
    };
    // Carl's pid presented by Cleo: not hers.
    let c = reconnect(&mut n, json!({"pid": carl_pid})).await;
    assert_eq!(c["recovered"], false, "another user's pid: {c}");
    assert_ne!(c["pid"], carl_pid.as_str(), "a new pid");
    // A pid that was never handed out.
    let c = reconnect(
        &mut n,
        json!({"pid": "6b1f5f4e-0d5c-4c3e-9a4b-0e4a1c2b3d4e"}),
    )
    .await;
    assert_eq!(c["recovered"], false, "unknown pid: {c}");
    let c = reconnect(&mut n, json!({"pid": "not-a-pid"})).await;
    assert_eq!(c["recovered"], false, "tampered pid: {c}");
    // Her own pid with a malformed offset.
    n.send(json!({"cmd": "info", "id": "cleo"})).await;
    let own = next(&mut n, "cleo", "info").await["pid"].clone();
    let c = reconnect(&mut n, json!({"pid": own, "offset": "12-x"})).await;
    assert_eq!(c["recovered"], false, "malformed offset: {c}");
    // Her own pid with an offset older than the retained log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    n.send(json!({"cmd": "info", "id": "cleo"})).await;
    let own = next(&mut n, "cleo", "info").await["pid"].clone();
    pg.execute(
        "INSERT INTO rowcast.cursors (name, seq) VALUES ('pruned', 1000000)
         ON CONFLICT (name) DO UPDATE SET seq = 1000000",
        &[],
    )
    .await
    .unwrap();
    n.send(json!({"cmd": "set", "id": "cleo", "pid": own, "offset": "1"}))
        .await;
    n.send(json!({"cmd": "drop", "id": "cleo"})).await;
    next(&mut n, "cleo", "disconnect").await;
    let c = next(&mut n, "cleo", "connect").await;
    assert_eq!(c["recovered"], false, "expired offset: {c}");
    let ev = next(&mut n, "cleo", "event").await;
    assert_eq!(ev["event"], "resync_required", "{ev}");
    assert_eq!(ev["payload"]["oldest"], "1000000");
    joined(&mut n, "cleo").await;
    // Nothing of Carl's ever reached Cleo.
    pg.execute("UPDATE tickets SET status = 'solved' WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(next(&mut n, "carl", "event").await["payload"]["id"], 1);
    assert!(
        n.maybe_next(0.5).await.is_none(),
        "Cleo gets no event of Carl's ticket"
    );
    server.stop().await;
}
