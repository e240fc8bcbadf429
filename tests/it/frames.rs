//! The server's frames against the shared fixture `tests/fixtures/server-frames.json`, which
//! the JS client's tests (`client/test/frames.test.js`) read too: a real rowcast is made to
//! send every frame, event and acknowledgement the fixture lists, to real clients (the
//! tungstenite `/ws` client and the npm `socket.io-client`), and every one received must have
//! exactly the fixture's keys and types. A frame the fixture lacks fails, and so does a
//! fixture entry the server was never made to send.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::socketio::{connect, emit_ack, sio};
use crate::support::{self, Server, node::Node, ws::WsClient};

pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/server-frames.json"
);

/// The fixture and what was checked against it.
struct Fixture {
    v: Value,
    /// Entries received at least once: `ws/frames/welcome`, `events/ticket.update`, ...
    seen: BTreeSet<String>,
}

impl Fixture {
    fn load() -> Fixture {
        let text = std::fs::read_to_string(FIXTURE).expect("read the frame fixture");
        Fixture {
            v: serde_json::from_str(&text).expect("the frame fixture is JSON"),
            seen: BTreeSet::new(),
        }
    }

    /// The entry at `path` (`ws/frames/welcome`), if the fixture has it.
    fn entry(&self, path: &str) -> Option<&Value> {
        path.split('/')
            .try_fold(&self.v, |v, k| v.get(k))
            .filter(|e| e.is_object())
    }

    /// An entry's keys: its own, or those of its shape.
    fn keys<'a>(&'a self, entry: &'a Value) -> &'a Map<String, Value> {
        let keys = match entry.get("shape").and_then(Value::as_str) {
            Some(shape) => &self.v["shapes"][shape]["keys"],
            None => &entry["keys"],
        };
        keys.as_object()
            .unwrap_or_else(|| panic!("fixture entry without keys: {entry}"))
    }

    /// Whether `v` has type `spec` (`string`, `integer|null`, `array<string>`, `@shape`).
    fn conforms(&self, spec: &str, v: &Value) -> bool {
        spec.split('|').any(|alt| match alt.trim() {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            a if a.starts_with("array<") && a.ends_with('>') => v
                .as_array()
                .is_some_and(|xs| xs.iter().all(|x| self.conforms(&a[6..a.len() - 1], x))),
            a if a.starts_with('@') => {
                let shape = &self.v["shapes"][&a[1..]];
                assert!(shape.is_object(), "unknown shape {a} in the fixture");
                self.matches(self.keys(shape), v).is_ok()
            }
            other => panic!("unknown type {other:?} in the fixture"),
        })
    }

    /// `v` has exactly `keys`, each of its type.
    fn matches(&self, keys: &Map<String, Value>, v: &Value) -> Result<(), String> {
        let obj = v.as_object().ok_or_else(|| format!("not an object: {v}"))?;
        let want: BTreeSet<&String> = keys.keys().collect();
        let got: BTreeSet<&String> = obj.keys().collect();
        if want != got {
            return Err(format!(
                "keys {got:?}, the fixture has {want:?} (extra {:?}, missing {:?})",
                got.difference(&want).collect::<Vec<_>>(),
                want.difference(&got).collect::<Vec<_>>()
            ));
        }
        for (k, spec) in keys {
            let spec = spec.as_str().expect("a type is a string");
            if !self.conforms(spec, &obj[k]) {
                return Err(format!("{k} = {} is not {spec}", obj[k]));
            }
        }
        Ok(())
    }

    /// Checks `v` against the entry at `path` (keys, types, and `code` against its codes)
    /// and records the entry as seen.
    #[track_caller]
    fn check(&mut self, path: &str, v: &Value) {
        let entry = self
            .entry(path)
            .unwrap_or_else(|| panic!("the server sent {v}, which the fixture lacks ({path})"));
        if let Err(e) = self.matches(self.keys(entry), v) {
            panic!("{path}: {e}\nreceived: {v}");
        }
        if let Some(codes) = entry.get("codes").and_then(Value::as_array)
            && self.keys(entry).contains_key("code")
        {
            assert!(
                codes.contains(&v["code"]),
                "{path}: code {} is not among the fixture's {codes:?}",
                v["code"]
            );
        }
        self.seen.insert(path.to_string());
    }

    /// A `/ws` frame: its `type` names the entry; an event's payload must have the shape of
    /// its event name.
    #[track_caller]
    fn check_ws(&mut self, frame: &Value) {
        let kind = frame["type"]
            .as_str()
            .unwrap_or_else(|| panic!("a /ws frame without a string type: {frame}"));
        self.check(&format!("ws/frames/{kind}"), frame);
        if kind == "event" {
            let name = frame["event"].as_str().expect("event name");
            self.check(&format!("events/{name}"), &frame["payload"]);
            assert_eq!(frame["seq"], frame["payload"]["seq"], "{frame}");
        }
    }

    /// A Socket.IO event line of `tests/js/sio.mjs`: data events and control events.
    #[track_caller]
    fn check_sio_event(&mut self, line: &Value) {
        let name = line["event"].as_str().expect("event name");
        let counts = &self.v["socketio"]["args"];
        let args = counts
            .get(name)
            .or_else(|| counts.get("data"))
            .cloned()
            .expect("socketio/args in the fixture");
        assert_eq!(line["args"], args, "arguments of {name}: {line}");
        if args == 2 {
            let seq = line["payload"]["seq"]
                .as_str()
                .expect("a seq in the payload");
            assert_eq!(
                line["last"], seq,
                "the trailing argument is the seq: {line}"
            );
        }
        let path = if self.entry(&format!("events/{name}")).is_some() {
            format!("events/{name}")
        } else {
            format!("socketio/events/{name}")
        };
        self.check(&path, &line["payload"]);
    }

    /// A `connect_error` message: `<code>: <text>` with a code of the fixture.
    #[track_caller]
    fn check_connect_error(&mut self, line: &Value) {
        let entry = self
            .entry("socketio/connect_error")
            .expect("connect_error entry");
        let message = line["message"].as_str().expect("a message");
        let codes = entry["codes"].as_array().expect("codes");
        let code = message.split_once(": ").map(|(c, _)| c).unwrap_or("");
        assert!(
            codes.iter().any(|c| c == code),
            "connect_error {message:?} does not start with one of {codes:?} and \": \""
        );
        let v = json!({ "message": message });
        self.check("socketio/connect_error", &v);
    }

    /// A close code of `/ws`.
    fn check_close(&mut self, client: &WsClient) -> u16 {
        let frame = client
            .closed
            .clone()
            .flatten()
            .expect("the server closed with a close frame");
        let code = u16::from(frame.code);
        let path = format!("ws/close_codes/{code}");
        assert!(
            self.entry(&path).is_some(),
            "close code {code} ({}) is not in the fixture",
            frame.reason
        );
        self.seen.insert(path);
        code
    }

    /// Every entry of `section` (`ws/frames`) was received.
    #[track_caller]
    fn assert_all_seen(&self, section: &str) {
        let entries = self
            .entry(section)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("no {section} in the fixture"));
        let missing: Vec<&String> = entries
            .keys()
            .filter(|k| !self.seen.contains(&format!("{section}/{k}")))
            .collect();
        assert!(
            missing.is_empty(),
            "the fixture lists {section} {missing:?}, which the server was not made to send"
        );
    }
}

/// Frames until `pred` holds, each checked against the fixture; panics if the connection
/// closes first.
async fn ws_until(c: &mut WsClient, fx: &mut Fixture, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = c
            .next_json()
            .await
            .unwrap_or_else(|| panic!("closed while waiting: {:?}", c.closed));
        fx.check_ws(&v);
        if pred(&v) {
            return v;
        }
    }
}

/// Reads (and checks) frames until the server closes the connection.
async fn ws_until_closed(c: &mut WsClient, fx: &mut Fixture) -> u16 {
    while let Some(v) = c.next_json().await {
        fx.check_ws(&v);
    }
    fx.check_close(c)
}

/// A server whose change log is pruned 300 ms after the fact and that keeps no replay
/// buffer, so a resume from an old `since` gets `resync_required`.
async fn start() -> (support::Db, Server) {
    support::start_with(|c| {
        c.hub.replay_buffer = 0;
        c.retention.changes = Duration::from_millis(300);
        c.retention.interval = Duration::from_millis(100);
        c.retention.batch = 2;
    })
    .await
}

/// Rooms that receive every entity event of the helpdesk mapping.
const ROOMS: [&str; 5] = ["tickets", "comments", "users", "kb", "attachments"];

/// Commits one change of every mapped table and a notification for user 1; returns the
/// notification's id (updating it afterwards gives `notification.update`).
async fn provoke_events(db: &support::Db) -> i64 {
    let pg = db.client().await;
    pg.batch_execute(
        "INSERT INTO tickets (subject, requester_id) VALUES ('frames', 3);
         INSERT INTO comments (ticket_id, author_id, body) VALUES (1, 1, 'frames');
         UPDATE users SET name = 'Carl F.' WHERE id = 3;
         INSERT INTO kb_articles (title, body, published) VALUES ('frames', 'x', true);
         INSERT INTO attachments (ticket_id, filename, content_type, size_bytes)
              VALUES (1, 'frames.txt', 'text/plain', 5);",
    )
    .await
    .unwrap();
    pg.query_one(
        "INSERT INTO notifications (user_id, type, message, related_id, related_type)
         VALUES (1, 'frames', 'for the frames test', '1', 'ticket') RETURNING id",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn read_notification(db: &support::Db, id: i64) {
    db.client()
        .await
        .execute(
            "UPDATE notifications SET read_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
}

/// Commits changes, then waits until the log before them is pruned; returns the position
/// before them (a `since` too old to resume from).
async fn pruned_since(db: &support::Db, server: &Server) -> String {
    let token = server.token("1", "agent");
    let (c, welcome) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    let since = welcome["seq"].as_str().expect("seq").to_string();
    drop(c);
    db.client()
        .await
        .batch_execute(
            "INSERT INTO tickets (subject, requester_id)
             SELECT 'pruned ' || g, 3 FROM generate_series(1, 4) g",
        )
        .await
        .unwrap();
    support::wait_pruned_past(db, &since).await;
    since
}

#[test]
fn the_fixture_examples_have_their_entries_keys() {
    let fx = Fixture::load();
    let mut checked = 0;
    let mut visit = |path: String, entry: &Value| {
        if let Some(example) = entry.get("example") {
            if let Err(e) = fx.matches(fx.keys(entry), example) {
                panic!("{path}: the example does not match its keys: {e}");
            }
            if let Some(codes) = entry.get("codes").and_then(Value::as_array)
                && fx.keys(entry).contains_key("code")
            {
                assert!(codes.contains(&example["code"]), "{path}: example code");
            }
            checked += 1;
        }
    };
    for section in [
        "shapes",
        "events",
        "ws/frames",
        "socketio/events",
        "socketio/acks",
    ] {
        for (name, entry) in fx.entry(section).and_then(Value::as_object).unwrap() {
            visit(format!("{section}/{name}"), entry);
        }
    }
    assert!(checked >= 20, "only {checked} examples");
    let entry = fx.entry("socketio/connect_error").unwrap();
    let codes = entry["codes"].as_array().unwrap();
    for m in entry["examples"].as_array().unwrap() {
        let code = m.as_str().unwrap().split_once(": ").map(|(c, _)| c);
        assert!(
            codes.iter().any(|c| Some(c.as_str().unwrap()) == code),
            "connect_error example {m}"
        );
    }
}

#[tokio::test]
async fn every_ws_frame_matches_the_fixture() {
    let (db, server) = start().await;
    let mut fx = Fixture::load();
    let since = pruned_since(&db, &server).await;
    let token = server.token("1", "agent");

    // welcome, and joined (id null) for the rooms named at connect.
    let url = server.ws_url(&format!("token={token}&rooms={}", ROOMS.join(",")));
    let (mut c, welcome) = WsClient::connect(&url).await;
    fx.check_ws(&welcome);
    for _ in ROOMS {
        ws_until(&mut c, &mut fx, |v| v["type"] == "joined").await;
    }

    // Answers to requests, with and without an id.
    c.send(json!({"type": "join", "room": "tickets:1", "id": "j1"}))
        .await;
    let v = ws_until(&mut c, &mut fx, |v| v["type"] == "joined").await;
    assert_eq!(v["id"], "j1");
    c.send(json!({"type": "leave", "room": "tickets:1", "id": 7}))
        .await;
    ws_until(&mut c, &mut fx, |v| v["type"] == "left").await;
    for (frame, code) in [
        (
            json!({"type": "join", "room": "user:3", "id": "j2"}),
            "forbidden",
        ),
        (
            json!({"type": "join", "room": "no_such_room"}),
            "unknown_room",
        ),
        (json!({"type": "join"}), "bad_request"),
        (json!({"type": "hello"}), "unknown_type"),
        (
            json!({"type": "auth", "token": server.token("2", "admin")}),
            "unauthorized",
        ),
    ] {
        c.send(frame).await;
        let v = ws_until(&mut c, &mut fx, |v| v["type"] == "error").await;
        assert_eq!(v["code"], code, "{v}");
    }
    c.send_text("{not json".into()).await;
    let v = ws_until(&mut c, &mut fx, |v| v["type"] == "error").await;
    assert_eq!(v["code"], "bad_json", "{v}");
    c.send(json!({"type": "ping", "id": "p1"})).await;
    ws_until(&mut c, &mut fx, |v| v["type"] == "pong").await;
    c.send(json!({"type": "auth", "token": server.token("1", "agent"), "id": "a1"}))
        .await;
    ws_until(&mut c, &mut fx, |v| v["type"] == "authenticated").await;

    // Every event name, through the rooms and the private user room.
    let notification = provoke_events(&db).await;
    let mut names = BTreeSet::new();
    while names.len() < 6 {
        let v = ws_until(&mut c, &mut fx, |v| v["type"] == "event").await;
        names.insert(v["event"].as_str().unwrap().to_string());
    }
    read_notification(&db, notification).await;
    ws_until(&mut c, &mut fx, |v| v["event"] == "notification.update").await;
    c.send(json!({"type": "ping"})).await;
    let v = ws_until(&mut c, &mut fx, |v| v["type"] == "pong").await;
    assert!(v["seq"].is_string(), "{v}");

    // resync_required for a resume from before the pruned log.
    let url = server.ws_url(&format!("token={token}&since={since}&rooms=tickets"));
    let (mut r, welcome) = WsClient::connect(&url).await;
    fx.check_ws(&welcome);
    ws_until(&mut r, &mut fx, |v| v["type"] == "resync_required").await;

    // Close codes: the token expires (4401), the server shuts down (1001).
    let short = server.auth.issue("1", "agent", 2).unwrap();
    let (mut e, welcome) = WsClient::connect(&server.ws_url(&format!("token={short}"))).await;
    fx.check_ws(&welcome);
    assert_eq!(ws_until_closed(&mut e, &mut fx).await, 4401);
    server.stop().await;
    assert_eq!(ws_until_closed(&mut c, &mut fx).await, 1001);

    fx.assert_all_seen("ws/frames");
    fx.assert_all_seen("events");
    eprintln!("checked against the fixture: {:?}", fx.seen);
}

/// The next line of socket `id`, checked against the fixture if it is an event.
async fn sio_next(n: &mut Node, fx: &mut Fixture, id: &str) -> Value {
    let id = id.to_string();
    let v = n.next_where(15, move |v| v["id"] == id.as_str()).await;
    match v["type"].as_str() {
        Some("event") => fx.check_sio_event(&v),
        Some("connect_error") => fx.check_connect_error(&v),
        _ => {}
    }
    v
}

async fn sio_until(
    n: &mut Node,
    fx: &mut Fixture,
    id: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let v = sio_next(n, fx, id).await;
        if pred(&v) {
            return v;
        }
    }
}

/// Emits `event` with `args`; checks the acknowledgement against `socketio/acks/<kind>`.
async fn sio_ack(
    n: &mut Node,
    fx: &mut Fixture,
    id: &str,
    req: u64,
    event: &str,
    args: Value,
    kind: &str,
) -> Value {
    let ack = emit_ack(n, id, event, args, req).await;
    fx.check(&format!("socketio/acks/{kind}"), &ack);
    ack
}

#[tokio::test]
async fn every_socketio_event_and_ack_matches_the_fixture() {
    let (db, server) = start().await;
    let mut fx = Fixture::load();
    let since = pruned_since(&db, &server).await;
    let mut n = sio(&server);
    let token = server.token("1", "agent");

    // Refused handshakes.
    let expired = server.auth.issue("1", "agent", -3600).unwrap();
    for (id, auth) in [
        ("none", json!({})),
        ("bad", json!({"token": "not-a-jwt"})),
        ("old", json!({"token": expired})),
        ("since", json!({"token": token, "since": "yesterday"})),
    ] {
        let v = connect(&mut n, id, auth).await;
        assert_eq!(v["type"], "connect_error", "{id}: {v}");
        fx.check_connect_error(&v);
    }

    // Acknowledgements.
    let v = connect(&mut n, "a", json!({"token": token})).await;
    assert_eq!(v["type"], "connect", "{v}");
    let ack = sio_ack(&mut n, &mut fx, "a", 1, "join", json!([ROOMS]), "join_ok").await;
    assert_eq!(ack["rooms"], json!(ROOMS));
    let ack = sio_ack(
        &mut n,
        &mut fx,
        "a",
        2,
        "join",
        json!([["tickets:1", "user:3"]]),
        "join_refused",
    )
    .await;
    assert_eq!(ack["rooms"], json!(["tickets:1"]), "{ack}");
    assert_eq!(ack["refused"][0]["room"], "user:3", "{ack}");
    sio_ack(
        &mut n,
        &mut fx,
        "a",
        3,
        "leave",
        json!(["tickets:1"]),
        "leave_ok",
    )
    .await;
    let ack = sio_ack(&mut n, &mut fx, "a", 4, "join", json!([42]), "refused").await;
    assert_eq!(ack["code"], "bad_request", "{ack}");
    let ack = sio_ack(
        &mut n,
        &mut fx,
        "a",
        5,
        "leave",
        json!(["user:1"]),
        "refused",
    )
    .await;
    assert_eq!(ack["code"], "forbidden", "{ack}");

    // Every event name.
    let notification = provoke_events(&db).await;
    let mut names = BTreeSet::new();
    while names.len() < 6 {
        let v = sio_until(&mut n, &mut fx, "a", |v| v["type"] == "event").await;
        names.insert(v["event"].as_str().unwrap().to_string());
    }
    read_notification(&db, notification).await;
    sio_until(&mut n, &mut fx, "a", |v| {
        v["event"] == "notification.update"
    })
    .await;

    // resync_required after joining with an old `since`.
    let v = connect(&mut n, "r", json!({"token": token, "since": since})).await;
    assert_eq!(v["type"], "connect", "{v}");
    sio_ack(
        &mut n,
        &mut fx,
        "r",
        6,
        "join",
        json!(["tickets"]),
        "join_ok",
    )
    .await;
    sio_until(&mut n, &mut fx, "r", |v| v["event"] == "resync_required").await;

    // rowcast:error before the server disconnects a socket whose token expired.
    let short = server.auth.issue("1", "agent", 2).unwrap();
    let v = connect(&mut n, "e", json!({"token": short})).await;
    assert_eq!(v["type"], "connect", "{v}");
    let v = sio_until(&mut n, &mut fx, "e", |v| v["type"] == "event").await;
    assert_eq!(v["event"], "rowcast:error", "{v}");
    assert_eq!(v["payload"]["code"], "token_expired", "{v}");
    let v = sio_until(&mut n, &mut fx, "e", |v| v["type"] == "disconnect").await;
    assert_eq!(v["reason"], "io server disconnect", "{v}");

    // Every other line any socket received (set aside while waiting for others).
    for v in n.drain(0.5).await {
        match v["type"].as_str() {
            Some("event") => fx.check_sio_event(&v),
            Some("connect_error") => fx.check_connect_error(&v),
            _ => {}
        }
    }
    n.close_stdin();
    server.stop().await;
    fx.assert_all_seen("socketio/events");
    fx.assert_all_seen("socketio/acks");
    fx.assert_all_seen("events");
    assert!(fx.seen.contains("socketio/connect_error"));
    eprintln!("checked against the fixture: {:?}", fx.seen);
}
