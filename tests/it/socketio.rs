//! Socket.IO v4 with the real `socket.io-client`: auth, join acks, events, notifications,
//! and many concurrent clients.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, Server, node::Node};

/// Connects socket `id` and returns the `connect` or `connect_error` line.
pub async fn connect(n: &mut Node, id: &str, auth: Value) -> Value {
    n.send(json!({"cmd": "connect", "id": id, "auth": auth}))
        .await;
    let id = id.to_string();
    n.next_where(15, move |v| {
        v["id"] == id.as_str() && (v["type"] == "connect" || v["type"] == "connect_error")
    })
    .await
}

/// Emits `event` with `args` and returns the acknowledgement.
pub async fn emit_ack(n: &mut Node, id: &str, event: &str, args: Value, req: u64) -> Value {
    n.send(json!({"cmd": "emit", "id": id, "event": event, "args": args, "req": req}))
        .await;
    let id = id.to_string();
    let line = n
        .next_where(15, move |v| {
            v["id"] == id.as_str() && v["type"] == "ack" && v["req"] == req
        })
        .await;
    line["ack"].clone()
}

/// Connects socket `id` with `auth` and joins `tickets` (acknowledgement request `req`):
/// both must succeed.
pub async fn connect_and_join_tickets(n: &mut Node, id: &str, auth: Value, req: u64) {
    let v = connect(n, id, auth).await;
    assert_eq!(v["type"], "connect", "{v}");
    assert_eq!(
        emit_ack(n, id, "join", json!(["tickets"]), req).await["ok"],
        true
    );
}

/// The next event of socket `id` (any name), skipping other sockets' lines.
pub async fn next_event(n: &mut Node, id: &str) -> Value {
    let id = id.to_string();
    n.next_where(15, move |v| v["id"] == id.as_str() && v["type"] == "event")
        .await
}

pub fn sio(server: &Server) -> Node {
    Node::start("sio.mjs", &[&server.http()])
}

#[tokio::test]
async fn socketio_auth_join_acks_events_and_private_notifications() {
    let (db, server) = support::start_with(|c| c.rooms = support::staff_rooms()).await;
    let mut n = sio(&server);

    // Refused handshakes reach the client as connect_error with a clear message.
    let v = connect(&mut n, "none", json!({})).await;
    assert_eq!(v["type"], "connect_error");
    assert!(
        v["message"].as_str().unwrap().contains("missing token"),
        "{v}"
    );
    let v = connect(&mut n, "bad", json!({"token": "not-a-jwt"})).await;
    assert_eq!(v["type"], "connect_error");
    assert!(
        v["message"].as_str().unwrap().contains("invalid token"),
        "{v}"
    );
    let expired = server.auth.issue("1", "agent", -3600).unwrap();
    let v = connect(&mut n, "old", json!({"token": expired})).await;
    assert_eq!(v["type"], "connect_error");
    assert!(
        v["message"].as_str().unwrap().contains("token expired"),
        "{v}"
    );
    let v = connect(
        &mut n,
        "since",
        json!({"token": server.token("1", "agent"), "since": "yesterday"}),
    )
    .await;
    assert_eq!(v["type"], "connect_error");
    assert!(
        v["message"].as_str().unwrap().starts_with("bad_request"),
        "{v}"
    );

    // An agent, the customer who gets the notification, and another customer.
    for (id, sub, role) in [
        ("agent", "1", "agent"),
        ("carl", "3", "customer"),
        ("cleo", "4", "customer"),
    ] {
        let v = connect(&mut n, id, json!({"token": server.token(sub, role)})).await;
        assert_eq!(v["type"], "connect", "{id}: {v}");
    }
    let ack = emit_ack(&mut n, "agent", "join", json!(["tickets"]), 1).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = emit_ack(&mut n, "agent", "join", json!([["comments", "kb"]]), 2).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["rooms"], json!(["comments", "kb"]));
    let ack = emit_ack(&mut n, "agent", "join", json!(["user:3"]), 3).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["code"], "forbidden");
    assert!(ack["error"].as_str().unwrap().contains("private"), "{ack}");
    let ack = emit_ack(&mut n, "carl", "join", json!(["tickets"]), 4).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["code"], "forbidden");
    let ack = emit_ack(&mut n, "carl", "join", json!([42]), 5).await;
    assert_eq!(ack["code"], "bad_request", "{ack}");

    // INSERT / UPDATE / DELETE arrive as `ticket.update` with the contract payload.
    let pg = db.client().await;
    let id: i64 = pg
        .query_one("INSERT INTO tickets (subject, requester_id) VALUES ('Socket.IO works', 3) RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    let mut seqs = Vec::new();
    for (op, event) in [
        ("insert", "ticket.created"),
        ("update", "ticket.updated"),
        ("delete", "ticket.deleted"),
    ] {
        // One change at a time: changes to one row inside one capture batch are coalesced.
        match op {
            "update" => pg
                .execute("UPDATE tickets SET status = 'solved' WHERE id = $1", &[&id])
                .await
                .unwrap(),
            "delete" => pg
                .execute("DELETE FROM tickets WHERE id = $1", &[&id])
                .await
                .unwrap(),
            _ => 0,
        };
        let v = next_event(&mut n, "agent").await;
        assert_eq!(v["event"], "ticket.update", "{v}");
        let p = &v["payload"];
        assert_eq!(p["op"], op, "{p}");
        assert_eq!(p["event"], event);
        assert_eq!(p["entity"], "ticket");
        assert_eq!(p["table"], "public.tickets");
        assert_eq!(p["id"], json!(id));
        assert!(p["committed_at"].is_string());
        seqs.push(p["seq"].as_str().unwrap().to_string());
        if op == "update" {
            assert_eq!(p["data"]["status"], "solved");
        }
        if op == "delete" {
            assert_eq!(p["old"]["subject"], "Socket.IO works");
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[0] != w[1]),
        "distinct seqs: {seqs:?}"
    );

    // A comment and its notification for Carl (user 3): only Carl gets `notification`.
    let comment_id: i64 = pg
        .query_one("INSERT INTO comments (ticket_id, author_id, body) VALUES (1, 1, 'Fixed it for you') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    pg.execute(
        "INSERT INTO notifications (user_id, type, message, related_id, related_type) VALUES (3, 'comment_on_ticket', 'Ada replied', $1, 'comment')",
        &[&comment_id.to_string()],
    )
    .await
    .unwrap();
    let v = next_event(&mut n, "carl").await;
    assert_eq!(v["event"], "notification", "{v}");
    assert_eq!(v["payload"]["notification"]["type"], "comment_on_ticket");
    assert_eq!(v["payload"]["notification"]["message"], "Ada replied");
    assert_eq!(v["payload"]["data"]["id"], json!(comment_id));
    assert_eq!(v["payload"]["data"]["body"], "Fixed it for you");
    let v = next_event(&mut n, "agent").await;
    assert_eq!(v["event"], "comment.update", "{v}");
    // Cleo's first event is her own notification, not Carl's.
    pg.execute(
        "INSERT INTO notifications (user_id, type, message) VALUES (4, 'ticket_solved', 'for Cleo')",
        &[],
    )
    .await
    .unwrap();
    let v = next_event(&mut n, "cleo").await;
    assert_eq!(v["payload"]["notification"]["message"], "for Cleo", "{v}");

    // Leave: no more ticket events for the agent.
    let ack = emit_ack(&mut n, "agent", "leave", json!(["tickets"]), 6).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = emit_ack(&mut n, "agent", "leave", json!(["user:1"]), 7).await;
    assert_eq!(ack["ok"], false, "{ack}");
    pg.execute(
        "INSERT INTO tickets (subject, requester_id) VALUES ('after leave', 3)",
        &[],
    )
    .await
    .unwrap();
    pg.execute(
        "INSERT INTO kb_articles (title, body) VALUES ('marker', 'x')",
        &[],
    )
    .await
    .unwrap();
    let v = next_event(&mut n, "agent").await;
    assert_eq!(v["event"], "kb.update", "ticket event after leave: {v}");
    n.close_stdin();
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_socketio_clients_join_and_all_receive_an_event() {
    const N: usize = 1000;
    let (db, server) = support::start().await;
    let token = server.token("1", "agent");
    let started = Instant::now();
    let mut n = Node::start(
        "sio_many.mjs",
        &[
            &server.http(),
            &token,
            &N.to_string(),
            "tickets",
            "ticket.update",
        ],
    );
    let ready = n
        .next_where(60, |v| v["type"] == "ready" || v["type"] == "error")
        .await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let connected_in = started.elapsed();
    db.client()
        .await
        .execute(
            "INSERT INTO tickets (subject, requester_id) VALUES ('to everyone', 3)",
            &[],
        )
        .await
        .unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        n.next_where(30, |v| v["type"] == "done"),
    )
    .await
    .expect("all clients receive the event within 30 s");
    assert_eq!(done["received"], json!(N), "{done}");
    eprintln!(
        "{N} Socket.IO clients: connected and joined in {:?}, event delivered to all in {} ms",
        connected_in, done["elapsed_ms"]
    );
    server.stop().await;
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A Socket.IO connection spoken on the wire (engine.io v4 over WebSocket, no polling
/// first), connected to the default namespace, and the packets other than the
/// connect answer that came meanwhile (engine.io pings the socket at once). It answers
/// nothing on its own.
async fn raw_socketio(server: &Server, token: &str) -> (RawWs, Vec<String>) {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        server.http().replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect /socket.io/");
    let open = raw_text(&mut ws).await;
    assert!(open.starts_with('0'), "engine.io open packet: {open}");
    ws.send(Message::Text(
        format!("40{}", json!({ "token": token })).into(),
    ))
    .await
    .unwrap();
    let mut other = Vec::new();
    loop {
        let t = raw_text(&mut ws).await;
        if t.starts_with("40") {
            return (ws, other);
        }
        assert!(!t.starts_with("44"), "Socket.IO connect refused: {t}");
        other.push(t);
    }
}

/// The next packet that starts with `prefix`, answering engine.io pings on the way.
async fn raw_answering_until(ws: &mut RawWs, prefix: &str) -> String {
    loop {
        let t = raw_text(ws).await;
        if t == "2" {
            ws.send(Message::Text("3".into())).await.unwrap();
        } else if t.starts_with(prefix) {
            return t;
        }
    }
}

async fn raw_text(ws: &mut RawWs) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a packet within 15 s")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// A Socket.IO connection opened the way `socket.io-client` does by default: an engine.io
/// session over HTTP long polling, the Socket.IO connect over polling (pings that come
/// meanwhile answered when `answer`), then the upgrade to WebSocket (`2probe`, `3probe`,
/// `5`).
async fn raw_socketio_upgraded(server: &Server, token: &str, answer: bool) -> RawWs {
    let http = reqwest::Client::new();
    let polling = format!("{}/socket.io/?EIO=4&transport=polling", server.http());
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(&url).send().await.unwrap().text().await.unwrap() }
    };
    let open = get(polling.clone()).await;
    let open: Value = serde_json::from_str(open.strip_prefix('0').expect("open packet")).unwrap();
    let sid = open["sid"].as_str().unwrap().to_string();
    let session = format!("{polling}&sid={sid}");
    let post = |body: String| {
        let (http, url) = (http.clone(), session.clone());
        async move {
            let r = http.post(&url).body(body).send().await.unwrap();
            assert!(r.status().is_success(), "polling POST: {}", r.status());
        }
    };
    post(format!("40{}", json!({ "token": token }))).await;
    'connect: loop {
        let body = get(session.clone()).await;
        for packet in body.split('\u{1e}') {
            if packet == "2" && answer {
                post("3".into()).await;
            } else if packet.starts_with("40") {
                break 'connect;
            } else {
                assert!(!packet.starts_with("44"), "Socket.IO connect: {packet}");
            }
        }
    }
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        server.http().replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::Text("2probe".into())).await.unwrap();
    assert_eq!(raw_text(&mut ws).await, "3probe");
    ws.send(Message::Text("5".into())).await.unwrap();
    ws
}

/// Reads a client that never answers until its connection ends: what it received, and
/// when the connection ended.
async fn watch_silent(
    mut ws: RawWs,
    mut seen: Vec<String>,
    started: Instant,
) -> (Vec<String>, Duration) {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("the silent client is closed within 60 s")
        {
            Some(Ok(Message::Text(t))) => seen.push(t.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    (seen, started.elapsed())
}

/// engine.io's heartbeat over WebSocket, for a session opened over WebSocket and for one
/// opened over polling and upgraded (whose heartbeat moves to the WebSocket writer at the
/// upgrade): a client that answers the server's pings is pinged every interval and stays;
/// one that does not answer gets no further ping and is closed, with engine.io's close
/// packet, once the ping timeout (engine.io's 20 s) has passed. The answering clients
/// still receive events after.
#[tokio::test]
async fn socketio_heartbeat_keeps_answering_clients_and_closes_silent_ones() {
    let (db, server) = support::start_with(|c| c.hub.ping_interval = Duration::from_secs(1)).await;
    let token = server.token("1", "agent");
    let (mut direct, early) = raw_socketio(&server, &token).await;
    for t in early {
        assert_eq!(t, "2", "only a ping comes before the connect answer");
        direct.send(Message::Text("3".into())).await.unwrap();
    }
    let upgraded = raw_socketio_upgraded(&server, &token, true).await;
    let mut answering = [("direct", direct), ("upgraded", upgraded)];

    let started = Instant::now();
    let (silent_direct, early) = raw_socketio(&server, &token).await;
    let silent_direct = tokio::spawn(watch_silent(silent_direct, early, started));
    let silent_upgraded = raw_socketio_upgraded(&server, &token, false).await;
    let silent_upgraded = tokio::spawn(watch_silent(silent_upgraded, vec![], started));

    let mut pings = [0; 2];
    while !(silent_direct.is_finished() && silent_upgraded.is_finished()) {
        for ((name, ws), pings) in answering.iter_mut().zip(&mut pings) {
            match tokio::time::timeout(Duration::from_millis(50), ws.next()).await {
                Err(_) => {}
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                    *pings += 1;
                    ws.send(Message::Text("3".into())).await.unwrap();
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("the answering {name} client lost its connection: {other:?}"),
            }
        }
    }
    let (seen, closed_after) = silent_direct.await.unwrap();
    assert_eq!(
        seen,
        ["2", "1"],
        "the silent client gets one ping, then engine.io's close packet"
    );
    assert!(
        closed_after >= Duration::from_secs(15),
        "closed after {closed_after:?}, before the ping timeout"
    );
    let (seen, closed_after) = silent_upgraded.await.unwrap();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("1"),
        "the silent upgraded client ends with engine.io's close packet: {seen:?}"
    );
    assert!(
        seen.iter().filter(|t| *t == "2").count() <= 1,
        "no ping after an unanswered one: {seen:?}"
    );
    assert!(
        closed_after >= Duration::from_secs(15),
        "upgraded: closed after {closed_after:?}, before the ping timeout"
    );
    for ((name, _), pings) in answering.iter().zip(pings) {
        assert!(
            pings >= 10,
            "{name}: {pings} pings in {closed_after:?} at a 1 s interval"
        );
    }

    for (_, ws) in &mut answering {
        ws.send(Message::Text(r#"421["join","tickets"]"#.into()))
            .await
            .unwrap();
        let ack = raw_answering_until(ws, "431").await;
        assert!(ack.contains(r#""ok":true"#), "join: {ack}");
    }
    db.client()
        .await
        .execute(
            "INSERT INTO tickets (subject, requester_id) VALUES ('still here', 3)",
            &[],
        )
        .await
        .unwrap();
    for (name, ws) in &mut answering {
        let event = raw_answering_until(ws, r#"42["ticket.update""#).await;
        assert!(event.contains("still here"), "{name}: {event}");
    }
    server.stop().await;
}

/// The npm client over long polling, and over polling upgraded to WebSocket (its default),
/// through several heartbeats: both stay connected and receive events.
#[tokio::test]
async fn socketio_over_polling_and_after_an_upgrade_receives_events() {
    let (db, server) = support::start_with(|c| c.hub.ping_interval = Duration::from_secs(1)).await;
    let mut n = sio(&server);
    let token = server.token("1", "agent");
    for (id, transports) in [
        ("polling", json!(["polling"])),
        ("upgraded", json!(["polling", "websocket"])),
    ] {
        n.send(
            json!({"cmd": "connect", "id": id, "auth": {"token": token}, "transports": transports}),
        )
        .await;
        let v = n
            .next_where(15, move |v| {
                v["id"] == id && (v["type"] == "connect" || v["type"] == "connect_error")
            })
            .await;
        assert_eq!(v["type"], "connect", "{id}: {v}");
        assert_eq!(
            emit_ack(&mut n, id, "join", json!(["tickets"]), 1).await["ok"],
            true
        );
    }
    let pg = db.client().await;
    for round in 0..2 {
        // Three ping intervals without traffic, then an event.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let subject = format!("round {round}");
        pg.execute(
            "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3)",
            &[&subject],
        )
        .await
        .unwrap();
        for id in ["polling", "upgraded"] {
            let v = next_event(&mut n, id).await;
            assert_eq!(v["event"], "ticket.update", "{id}: {v}");
            assert_eq!(
                v["payload"]["data"]["subject"],
                subject.as_str(),
                "{id}: {v}"
            );
        }
    }
    n.close_stdin();
    server.stop().await;
}
