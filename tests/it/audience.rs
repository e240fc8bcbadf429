//! Row-level audiences: the helpdesk frontend joins the same five rooms for every user, and
//! each user receives exactly the rows they may see — on every transport, on resume and
//! polling, with visibility transitions as events — and explain says why.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rowcast::config::CaptureMode;
use serde_json::{Value, json};

use crate::socketio::{connect, emit_ack, sio};
use crate::support::node::Node;
use crate::support::ws::WsClient;
use crate::support::{self, Server};

/// The rooms the frontend joins on connect, for every user.
const ROOMS: [&str; 5] = ["tickets", "comments", "users", "kb", "attachments"];

/// Text that only rows a customer (Carl, user 3) may not see carry: no frame he receives
/// may contain it.
const FORBIDDEN: &str = "secret-";

/// `(entity, id)` of an entity payload, `("notification", id)` of a notification.
fn key(payload: &Value) -> (String, String) {
    let entity = payload["entity"]
        .as_str()
        .unwrap_or("notification")
        .to_string();
    let id = match &payload["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (entity, id)
}

fn keys(items: &[(&str, i64)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(e, id)| (e.to_string(), id.to_string()))
        .collect()
}

/// One user's view of the stream on one transport, as the payloads they received.
#[allow(clippy::large_enum_variant)]
enum Viewer {
    Ws(WsClient),
    SocketIo(Node, String),
    Sse(Node),
    Poll {
        http: reqwest::Client,
        url: String,
        since: String,
    },
}

impl Viewer {
    /// Connects like the frontend: joins the five rooms (every join answered ok).
    async fn open(server: &Server, transport: &str, token: &str) -> Viewer {
        match transport {
            "ws" => {
                let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
                for room in ROOMS {
                    c.join(room).await;
                }
                Viewer::Ws(c)
            }
            "socket.io" => {
                let mut n = sio(server);
                let v = connect(&mut n, "s", json!({ "token": token })).await;
                assert_eq!(v["type"], "connect", "{v}");
                for (i, room) in ROOMS.iter().enumerate() {
                    let ack = emit_ack(&mut n, "s", "join", json!([room]), i as u64).await;
                    assert_eq!(ack["ok"], true, "join {room}: {ack}");
                }
                Viewer::SocketIo(n, "s".into())
            }
            "sse" => {
                let url = format!(
                    "{}/events?rooms={}&token={token}",
                    server.http(),
                    ROOMS.join(",")
                );
                let mut n = Node::start("sse.mjs", &[&url]);
                n.next_where(15, |v| v["type"] == "event" && v["event"] == "ready")
                    .await;
                Viewer::Sse(n)
            }
            "poll" => {
                let http = reqwest::Client::new();
                let url = format!(
                    "{}/api/changes?rooms={}&token={token}",
                    server.http(),
                    ROOMS.join(",")
                );
                let start: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
                assert_eq!(start["events"], json!([]), "{start}");
                Viewer::Poll {
                    http,
                    since: start["next"].as_str().unwrap().to_string(),
                    url,
                }
            }
            other => panic!("no transport {other}"),
        }
    }

    /// The next payloads received (a poll may give several at once).
    async fn next(&mut self) -> Vec<(String, Value)> {
        match self {
            Viewer::Ws(c) => {
                let ev = c.next_event().await;
                let room = ev["room"].as_str().unwrap_or_default();
                assert!(ROOMS.contains(&room) || room.starts_with("user:"), "{ev}");
                vec![(
                    ev["event"].as_str().unwrap().to_string(),
                    ev["payload"].clone(),
                )]
            }
            Viewer::SocketIo(n, id) => {
                let id = id.clone();
                let v = n
                    .next_where(20, move |v| v["id"] == id.as_str() && v["type"] == "event")
                    .await;
                vec![(
                    v["event"].as_str().unwrap().to_string(),
                    v["payload"].clone(),
                )]
            }
            Viewer::Sse(n) => {
                let v = n
                    .next_where(20, |v| v["type"] == "event" && v["event"] != "ready")
                    .await;
                vec![(v["event"].as_str().unwrap().to_string(), v["data"].clone())]
            }
            Viewer::Poll { http, url, since } => loop {
                let page: Value = http
                    .get(format!("{url}&since={since}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                *since = page["next"].as_str().unwrap().to_string();
                let events = page["events"].as_array().unwrap();
                if !events.is_empty() {
                    return events
                        .iter()
                        .map(|e| {
                            (
                                e["event"].as_str().unwrap().to_string(),
                                e["payload"].clone(),
                            )
                        })
                        .collect();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            },
        }
    }

    /// Everything received until the payload `until` matches, checking each one.
    async fn until(
        &mut self,
        what: &str,
        until: impl Fn(&Value) -> bool,
        check: impl Fn(&str, &Value),
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        loop {
            assert!(Instant::now() < deadline, "{what}: no end within 30 s");
            for (name, payload) in self.next().await {
                check(&name, &payload);
                let done = until(&payload);
                got.push(payload);
                if done {
                    return got;
                }
            }
        }
    }
}

/// The frontend's flow for a customer and an agent, on `/ws`, Socket.IO, SSE and polling:
/// every join is accepted; the customer receives their tickets, the public comment and
/// attachment on them, their own user row and published articles — and never another
/// customer's rows, an internal comment (or its attachment) or a draft.
#[tokio::test]
async fn each_user_receives_exactly_the_rows_they_may_see_on_every_transport() {
    let (db, server) = support::start().await;
    let carl = server.token("3", "customer");
    let ada = server.token("1", "agent");
    let mut viewers = Vec::new();
    for transport in ["ws", "socket.io", "sse", "poll"] {
        viewers.push((
            transport,
            "customer",
            Viewer::open(&server, transport, &carl).await,
        ));
        viewers.push((
            transport,
            "agent",
            Viewer::open(&server, transport, &ada).await,
        ));
    }
    let pg = db.client().await;
    let id = |sql: &'static str| {
        let pg = &pg;
        async move { pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    pg.batch_execute(
        "UPDATE tickets SET status = 'pending' WHERE id = 1;
         UPDATE tickets SET body = 'secret-cleo ticket' WHERE id = 2;",
    )
    .await
    .unwrap();
    let c_pub = id("INSERT INTO comments (ticket_id, author_id, body) VALUES (1, 1, 'a public reply') RETURNING id").await;
    let c_int = id("INSERT INTO comments (ticket_id, author_id, body, internal) VALUES (1, 1, 'secret-internal note', true) RETURNING id").await;
    let c_cleo = id("INSERT INTO comments (ticket_id, author_id, body) VALUES (2, 1, 'secret-cleo comment') RETURNING id").await;
    let a_pub = id("INSERT INTO attachments (ticket_id, filename, content_type, size_bytes) VALUES (1, 'screenshot.png', 'image/png', 10) RETURNING id").await;
    let a_int = pg
        .query_one(
            "INSERT INTO attachments (ticket_id, comment_id, filename, content_type, size_bytes)
             VALUES (1, $1, 'secret-internal.log', 'text/plain', 10) RETURNING id",
            &[&c_int],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    let a_cleo = id("INSERT INTO attachments (ticket_id, filename, content_type, size_bytes) VALUES (2, 'secret-cleo.pdf', 'application/pdf', 10) RETURNING id").await;
    pg.batch_execute(
        "UPDATE users SET name = 'Carl C.' WHERE id = 3;
         UPDATE users SET name = 'secret-cleo name' WHERE id = 4;",
    )
    .await
    .unwrap();
    let kb_pub = id("INSERT INTO kb_articles (title, body, published) VALUES ('Exporting data', 'Use Export.', true) RETURNING id").await;
    let kb_draft = id("INSERT INTO kb_articles (title, body, published) VALUES ('secret-draft', 'x', false) RETURNING id").await;
    pg.batch_execute("UPDATE tickets SET subject = 'the end' WHERE id = 3")
        .await
        .unwrap();

    let customer_sees = keys(&[
        ("ticket", 1),
        ("comment", c_pub),
        ("attachment", a_pub),
        ("user", 3),
        ("kb", kb_pub),
        ("ticket", 3),
    ]);
    let agent_sees = keys(&[
        ("ticket", 1),
        ("ticket", 2),
        ("comment", c_pub),
        ("comment", c_int),
        ("comment", c_cleo),
        ("attachment", a_pub),
        ("attachment", a_int),
        ("attachment", a_cleo),
        ("user", 3),
        ("user", 4),
        ("kb", kb_pub),
        ("kb", kb_draft),
        ("ticket", 3),
    ]);
    for (transport, who, viewer) in &mut viewers {
        let what = format!("{who} on {transport}");
        let customer = *who == "customer";
        let got = viewer
            .until(
                &what,
                |p| p["entity"] == "ticket" && p["data"]["subject"] == "the end",
                |name, p| {
                    let entity = p["entity"].as_str().unwrap_or_default();
                    assert_eq!(name, format!("{entity}.update"), "{what}: {p}");
                    assert!(p["data"].get("password_hash").is_none(), "{what}: {p}");
                    if customer {
                        assert!(!p.to_string().contains(FORBIDDEN), "{what} received {p}");
                    }
                },
            )
            .await;
        let received: BTreeSet<(String, String)> = got.iter().map(key).collect();
        let want = if customer {
            &customer_sees
        } else {
            &agent_sees
        };
        assert_eq!(&received, want, "{what}");
    }
    server.stop().await;
}

/// Visibility transitions: a ticket moved from one customer to another (the first gets a
/// removal carrying only the key, the second the whole ticket as an insert), a comment
/// made internal and public again, an article unpublished and published; a delete
/// reaches exactly those who could see the row.
#[tokio::test]
async fn rows_entering_and_leaving_a_view_are_events() {
    transitions(CaptureMode::Triggers).await;
}

/// The same with logical capture: the old values come through the trigger's message.
#[tokio::test]
async fn rows_entering_and_leaving_a_view_are_events_with_logical_capture() {
    transitions(CaptureMode::Logical).await;
}

async fn transitions(mode: CaptureMode) {
    let (db, server) = support::start_with(|c| c.capture.mode = mode).await;
    let connect = |sub: &str, role: &str| {
        let url = server.ws_url(&format!("token={}", server.token(sub, role)));
        async move {
            let (mut c, _) = WsClient::connect(&url).await;
            for room in ROOMS {
                c.join(room).await;
            }
            c
        }
    };
    let mut carl = connect("3", "customer").await;
    let mut cleo = connect("4", "customer").await;
    let mut ada = connect("1", "agent").await;
    let pg = db.client().await;

    // Ticket 1 goes from Carl to Cleo.
    pg.execute("UPDATE tickets SET requester_id = 4 WHERE id = 1", &[])
        .await
        .unwrap();
    let left = carl.next_event().await;
    assert_eq!(left["event"], "ticket.update");
    let p = &left["payload"];
    assert_eq!(
        (p["op"].as_str(), p["id"].as_i64()),
        (Some("delete"), Some(1))
    );
    assert_eq!(p["reason"], "no_longer_visible");
    assert_eq!(p["data"], json!({"id": 1}), "only the key: {p}");
    assert_eq!(p["old"], json!({"id": 1}), "only the key: {p}");
    assert!(!p.to_string().contains("Cannot log in"), "no content: {p}");
    let entered = cleo.next_event().await;
    let p = &entered["payload"];
    assert_eq!(
        (p["op"].as_str(), p["event"].as_str()),
        (Some("insert"), Some("ticket.created"))
    );
    assert_eq!(p["reason"], "now_visible");
    assert_eq!(p["data"]["subject"], "Cannot log in after password reset");
    assert_eq!(p["data"]["requester_id"], 4);
    let agent = ada.next_event().await;
    assert_eq!(
        agent["payload"]["op"], "update",
        "agents see every row: a plain update"
    );

    // A comment on Cleo's ticket 2 made internal, then public again.
    pg.execute("UPDATE comments SET internal = true WHERE id = 2", &[])
        .await
        .unwrap();
    let p = cleo.next_event().await["payload"].clone();
    assert_eq!(
        (p["entity"].as_str(), p["op"].as_str()),
        (Some("comment"), Some("delete"))
    );
    assert_eq!(p["data"], json!({"id": 2}));
    assert_eq!(ada.next_event().await["payload"]["op"], "update");
    pg.execute("UPDATE comments SET internal = false WHERE id = 2", &[])
        .await
        .unwrap();
    let p = cleo.next_event().await["payload"].clone();
    assert_eq!(
        (p["entity"].as_str(), p["op"].as_str()),
        (Some("comment"), Some("insert"))
    );
    assert_eq!(
        p["data"]["body"],
        "Attached the new registration certificate."
    );
    assert_eq!(ada.next_event().await["payload"]["op"], "update");

    // An article unpublished and published again: every customer sees both.
    pg.execute("UPDATE kb_articles SET published = false WHERE id = 1", &[])
        .await
        .unwrap();
    for c in [&mut carl, &mut cleo] {
        let p = c.next_event().await["payload"].clone();
        assert_eq!(
            (p["entity"].as_str(), p["op"].as_str()),
            (Some("kb"), Some("delete"))
        );
        assert_eq!(p["data"], json!({"id": 1}));
    }
    pg.execute("UPDATE kb_articles SET published = true WHERE id = 1", &[])
        .await
        .unwrap();
    for c in [&mut carl, &mut cleo] {
        let p = c.next_event().await["payload"].clone();
        assert_eq!(
            (p["entity"].as_str(), p["op"].as_str()),
            (Some("kb"), Some("insert"))
        );
        assert_eq!(p["data"]["title"], "Resetting your password");
    }
    for _ in 0..2 {
        assert_eq!(ada.next_event().await["payload"]["op"], "update");
    }

    // Carl's ticket 3 deleted: Carl and the agent hear of it (with the old row), Cleo not.
    pg.execute("DELETE FROM tickets WHERE id = 3", &[])
        .await
        .unwrap();
    let p = carl.next_event().await["payload"].clone();
    assert_eq!(
        (p["op"].as_str(), p["id"].as_i64()),
        (Some("delete"), Some(3))
    );
    assert_eq!(p["data"]["subject"], "Feature request: dark mode");
    assert_eq!(ada.next_event().await["payload"]["op"], "delete");
    // A last change Cleo may see: nothing else may have reached her before it.
    pg.execute("UPDATE tickets SET status = 'solved' WHERE id = 2", &[])
        .await
        .unwrap();
    let p = cleo.next_event().await["payload"].clone();
    assert_eq!(
        (p["id"].as_i64(), p["data"]["status"].as_str()),
        (Some(2), Some("solved"))
    );
    assert!(carl.maybe_json(300).await.is_none(), "Carl sees no more");
    server.stop().await;
}

/// Resume with `since` and polling with a customer's token are filtered the same way,
/// transitions included — from the replay buffer and from the change log.
#[tokio::test]
async fn resume_and_polling_are_filtered_like_live_delivery() {
    for replay_buffer in [4096, 0] {
        let (db, server) = support::start_with(|c| c.hub.replay_buffer = replay_buffer).await;
        let token = server.token("3", "customer");
        let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
        for room in ROOMS {
            c.join(room).await;
        }
        let pg = db.client().await;
        pg.execute("UPDATE tickets SET status = 'pending' WHERE id = 1", &[])
            .await
            .unwrap();
        let since = c.next_event().await["seq"].as_str().unwrap().to_string();
        drop(c);
        pg.batch_execute(
            "UPDATE tickets SET body = 'secret-cleo' WHERE id = 2;
             INSERT INTO comments (ticket_id, author_id, body, internal) VALUES (1, 1, 'secret-internal', true);
             UPDATE tickets SET requester_id = 4 WHERE id = 3;
             UPDATE tickets SET status = 'solved' WHERE id = 1;",
        )
        .await
        .unwrap();
        let want = |got: &[Value]| {
            let summary: Vec<(i64, String)> = got
                .iter()
                .map(|p| {
                    (
                        p["id"].as_i64().unwrap(),
                        p["op"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(
                summary,
                vec![(3, "delete".to_string()), (1, "update".to_string())],
                "Carl misses: ticket 3 leaving his view, then ticket 1 (buffer {replay_buffer})"
            );
            assert!(
                !got.iter().any(|p| p.to_string().contains(FORBIDDEN)),
                "{got:?}"
            );
            assert_eq!(got[0]["data"], json!({"id": 3}));
        };
        // Resume over /ws.
        let url = server.ws_url(&format!(
            "token={token}&since={since}&rooms={}",
            ROOMS.join(",")
        ));
        let (mut c, _) = WsClient::connect(&url).await;
        let mut got = Vec::new();
        while got.len() < 2 {
            let v = c.next_json().await.unwrap();
            if v["type"] == "event" {
                got.push(v["payload"].clone());
            }
        }
        want(&got);
        assert!(c.maybe_json(300).await.is_none(), "nothing else");
        // Polling from the same position.
        let page: Value = reqwest::get(format!(
            "{}/api/changes?rooms={}&since={since}&token={token}",
            server.http(),
            ROOMS.join(",")
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let got: Vec<Value> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"].clone())
            .collect();
        want(&got);
        server.stop().await;
    }
}

/// A rule that cannot be evaluated for one row withholds that row from the users it
/// concerns (the roles still get it), with a metric, and never stops delivery of the
/// other rows — even in the same transaction.
#[tokio::test]
async fn a_rule_that_fails_for_one_row_withholds_only_that_row() {
    let (db, server) = support::start_with(|c| {
        c.apply_defaults();
        let tickets = c.tables.iter_mut().find(|t| t.entity == "ticket").unwrap();
        // `subject` holds text; a rule comparing it with a number cannot be evaluated for
        // a subject that is not a number.
        tickets.audience.as_mut().unwrap().rows =
            Some("requester_id = $user and subject != 0".into());
    })
    .await;
    let connect = |sub: &str, role: &str| {
        let url = server.ws_url(&format!("token={}&rooms=tickets", server.token(sub, role)));
        async move { WsClient::connect(&url).await.0 }
    };
    let mut carl = connect("3", "customer").await;
    let mut ada = connect("1", "agent").await;
    assert_eq!(carl.next_json().await.unwrap()["type"], "joined");
    assert_eq!(ada.next_json().await.unwrap()["type"], "joined");
    let pg = db.client().await;
    pg.batch_execute(
        "BEGIN;
         UPDATE tickets SET subject = 'not a number' WHERE id = 1;
         UPDATE tickets SET subject = '33' WHERE id = 3;
         COMMIT;",
    )
    .await
    .unwrap();
    let p = carl.next_event().await["payload"].clone();
    assert_eq!(
        (p["id"].as_i64(), p["data"]["subject"].as_str()),
        (Some(3), Some("33"))
    );
    assert!(
        carl.maybe_json(300).await.is_none(),
        "ticket 1 is withheld from Carl"
    );
    let mut agent = BTreeSet::new();
    for _ in 0..2 {
        agent.insert(ada.next_event().await["payload"]["id"].as_i64().unwrap());
    }
    assert_eq!(agent, BTreeSet::from([1, 3]), "the agent gets both");
    let metrics = support::metrics_text(&server.http()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rowcast_audience_unresolved_total{table=\"public.tickets\"}")),
        "{metrics}"
    );
    server.stop().await;
}

/// Explain: for one change, the rooms, the audience and the rule's steps, and the
/// decision for a user who received it and one who did not.
#[tokio::test]
async fn explain_says_why_a_change_did_or_did_not_reach_a_user() {
    let (db, server) = support::start().await;
    let (mut c, _) = WsClient::connect(&server.ws_url(&format!(
        "token={}&rooms=comments",
        server.token("3", "customer")
    )))
    .await;
    assert_eq!(c.next_json().await.unwrap()["type"], "joined");
    let pg = db.client().await;
    pg.execute(
        "INSERT INTO comments (ticket_id, author_id, body) VALUES (1, 1, 'hello')",
        &[],
    )
    .await
    .unwrap();
    let seq = c.next_event().await["seq"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let explain = |user: &str, role: &str, token: String| {
        let url = format!(
            "{}/api/explain?seq={seq}&user={user}&role={role}",
            server.http()
        );
        let http = &http;
        async move {
            let res = http.get(url).bearer_auth(token).send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let admin = server.token("2", "admin");
    let (status, body) = explain("3", "customer", admin.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rooms"], json!(["comments", "tickets:1"]));
    assert_eq!(body["decision"]["receives"], true, "{body}");
    assert_eq!(body["decision"]["as"], "full");
    assert_eq!(body["audience"]["reach"], json!({"users": ["3"]}));
    assert_eq!(
        body["audience"]["rule"],
        "ticket_id -> public.tickets and internal = false"
    );
    let steps = body["audience"]["steps"].to_string();
    assert!(
        steps.contains("requester_id = $user") && steps.contains("internal = false"),
        "{steps}"
    );
    assert_eq!(
        body["sessions_on_this_replica"][0]["in_a_room_of_the_event"], true,
        "{body}"
    );
    let (_, body) = explain("4", "customer", admin.clone()).await;
    assert_eq!(body["decision"]["receives"], false, "{body}");
    assert!(
        body["decision"]["why"]
            .as_str()
            .unwrap()
            .contains("users 3"),
        "{body}"
    );
    let (_, body) = explain("9", "AGENT", admin.clone()).await;
    assert_eq!(
        body["decision"]["receives"], true,
        "roles compare case-insensitively: {body}"
    );
    // Admins only; a clear answer for a seq that has no event.
    let (status, _) = explain("3", "customer", server.token("1", "agent")).await;
    assert_eq!(status, 403);
    let url = format!("{}/api/explain?seq=999999&user=3", server.http());
    let res = http.get(url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), 404);
    server.stop().await;
}

/// An ORM-made schema (as Prisma writes it): quoted mixed-case names written as users
/// copy them (`public."Ticket"`), text and uuid ids, a composite key and a rule through
/// a composite foreign key, a notification table whose related row is always a ticket,
/// roles from an uppercase enum claim and from a boolean claim.
#[tokio::test]
async fn rules_work_on_an_orm_schema() {
    use rowcast::catalog::{AudienceConfig, TableConfig, TableKind};
    let db = support::Db::start().await;
    let pg = db.client().await;
    pg.batch_execute(
        r#"
        CREATE TYPE "Role" AS ENUM ('CUSTOMER', 'AGENT');
        CREATE TABLE "User" (id text PRIMARY KEY, email text NOT NULL, role "Role" NOT NULL,
                             "passwordHash" text NOT NULL);
        CREATE TABLE "Ticket" (id text PRIMARY KEY, subject text NOT NULL,
                               "requesterId" text NOT NULL REFERENCES "User"(id),
                               "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
        CREATE TABLE "Comment" (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                                "ticketId" text NOT NULL REFERENCES "Ticket"(id) ON DELETE CASCADE,
                                body text NOT NULL, internal boolean NOT NULL DEFAULT false);
        CREATE TABLE "Watch" ("ticketId" text REFERENCES "Ticket"(id), "userId" text REFERENCES "User"(id),
                              note text, PRIMARY KEY ("ticketId", "userId"));
        CREATE TABLE "TicketTag" ("ticketId" text REFERENCES "Ticket"(id), "tagId" bigint, label text,
                                  PRIMARY KEY ("ticketId", "tagId"));
        CREATE TABLE "TagNote" (id bigserial PRIMARY KEY, "ticketId" text, "tagId" bigint, body text,
                                FOREIGN KEY ("ticketId", "tagId") REFERENCES "TicketTag"("ticketId", "tagId"));
        CREATE TABLE "Notification" (id bigserial PRIMARY KEY, "userId" text NOT NULL REFERENCES "User"(id),
                                     message text NOT NULL, "ticketId" text REFERENCES "Ticket"(id));
        INSERT INTO "User" VALUES ('ckcarl', 'carl@x', 'CUSTOMER', 'secret-hash-1'),
                                  ('ckcleo', 'cleo@x', 'CUSTOMER', 'secret-hash-2'),
                                  ('ckada', 'ada@x', 'AGENT', 'secret-hash-3');
        "#,
    )
    .await
    .unwrap();
    let staff = || vec!["agent".to_string(), "admin".to_string()];
    let entity = |table: &str, entity: &str, rows: &str| TableConfig {
        table: table.into(),
        entity: entity.into(),
        kind: TableKind::Entity,
        room: Some(format!("{entity}s")),
        rooms: Vec::new(),
        hidden: Vec::new(),
        key: Vec::new(),
        recipient_column: None,
        related_type_column: None,
        related_id_column: None,
        related_table: None,
        audience: Some(AudienceConfig {
            roles: staff(),
            rows: Some(rows.into()),
        }),
    };
    let mut config = db.config();
    let mut users = entity("public.User", "user", "id = $user");
    users.hidden = vec!["passwordHash".into()];
    config.tables = vec![
        users,
        entity("public.\"Ticket\"", "ticket", "\"requesterId\" = $user"),
        entity(
            "public.Comment",
            "comment",
            "\"ticketId\" -> public.\"Ticket\" and internal = false",
        ),
        entity("public.\"Watch\"", "watch", "\"userId\" = $user"),
        entity("\"TicketTag\"", "tag", "\"ticketId\" -> public.Ticket"),
        entity(
            "public.TagNote",
            "tagnote",
            "(\"ticketId\", \"tagId\") -> public.TicketTag",
        ),
        TableConfig {
            kind: TableKind::Notification,
            room: None,
            recipient_column: Some("userId".into()),
            related_id_column: Some("ticketId".into()),
            related_table: Some("public.\"Ticket\"".into()),
            audience: None,
            ..entity("public.\"Notification\"", "notification", "")
        },
    ];
    config.rooms = ["users", "tickets", "comments", "watchs", "tags", "tagnotes"]
        .iter()
        .map(|r| {
            (
                r.to_string(),
                rowcast::catalog::RoomConfig {
                    roles: vec!["*".into()],
                },
            )
        })
        .collect();
    config
        .jwt
        .flag_roles
        .insert("isAdmin".into(), "admin".into());
    db.migrate(&config).await;
    let problems = rowcast::migrate::check(&pg, &config.tables, &config.capture)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let server = Server::start(config).await;
    let sign = |claims: Value| {
        let key = jsonwebtoken::EncodingKey::from_secret(support::SECRET.as_bytes()).unwrap();
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
        let mut claims = claims;
        claims["exp"] = json!(exp);
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let rooms = "users,tickets,comments,watchs,tags,tagnotes";
    let open = |token: String| {
        let url = server.ws_url(&format!("token={token}&rooms={rooms}"));
        async move {
            let (mut c, _) = WsClient::connect(&url).await;
            for _ in 0..6 {
                assert_eq!(c.next_json().await.unwrap()["type"], "joined");
            }
            c
        }
    };
    let mut carl = open(sign(json!({"sub": "ckcarl", "role": "CUSTOMER"}))).await;
    let mut ada = open(sign(json!({"sub": "ckada", "role": "AGENT"}))).await;
    let mut boss = open(sign(json!({"sub": "ckboss", "isAdmin": true}))).await;
    pg.batch_execute(
        r#"
        INSERT INTO "Ticket" (id, subject, "requesterId") VALUES ('tk1', 'printer', 'ckcarl'),
                                                                ('tk2', 'secret-cleo', 'ckcleo');
        INSERT INTO "Comment" ("ticketId", body) VALUES ('tk1', 'on it');
        INSERT INTO "Comment" ("ticketId", body, internal) VALUES ('tk1', 'secret-internal', true);
        INSERT INTO "Watch" VALUES ('tk1', 'ckcarl', 'mine'), ('tk2', 'ckcleo', 'secret-watch');
        INSERT INTO "TicketTag" VALUES ('tk1', 7, 'urgent'), ('tk2', 7, 'secret-tag');
        INSERT INTO "TagNote" ("ticketId", "tagId", body) VALUES ('tk1', 7, 'note'), ('tk2', 7, 'secret-note');
        INSERT INTO "Notification" ("userId", message, "ticketId") VALUES ('ckcarl', 'your ticket', 'tk1');
        UPDATE "User" SET email = 'carl@example' WHERE id = 'ckcarl';
        "#,
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 7 {
        let ev = carl.next_event().await;
        assert!(!ev.to_string().contains(FORBIDDEN), "{ev}");
        got.push(ev);
    }
    let names: Vec<(String, String)> = got
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                key(&e["payload"]).1,
            )
        })
        .collect();
    assert_eq!(names[0], ("ticket.update".to_string(), "tk1".to_string()));
    assert_eq!(names[1].0, "comment.update");
    assert_eq!(got[1]["payload"]["data"]["body"], "on it");
    assert_eq!(
        names[2],
        (
            "watch.update".to_string(),
            r#"["tk1","ckcarl"]"#.to_string()
        )
    );
    assert_eq!(
        names[3],
        ("tag.update".to_string(), r#"["tk1",7]"#.to_string())
    );
    assert_eq!(names[4].0, "tagnote.update");
    assert_eq!(got[4]["payload"]["data"]["body"], "note");
    let n = &got[5];
    assert_eq!(n["event"], "notification", "{n}");
    assert_eq!(
        n["payload"]["data"]["subject"], "printer",
        "the related ticket: {n}"
    );
    assert_eq!(names[6], ("user.update".to_string(), "ckcarl".to_string()));
    assert!(got[6]["payload"]["data"].get("passwordHash").is_none());
    assert!(
        carl.maybe_json(300).await.is_none(),
        "nothing else reaches Carl"
    );
    // Roles from an uppercase enum and from a boolean claim see every row.
    // 2 tickets, 2 comments, 2 watches, 2 tags, 2 tag notes, 1 user; not the notification.
    for c in [&mut ada, &mut boss] {
        for _ in 0..11 {
            let ev = c.next_event().await;
            assert_ne!(ev["event"], "notification", "not their notification");
        }
        assert!(c.maybe_json(300).await.is_none());
    }
    server.stop().await;
}

/// Rules are checked: a syntax error at start (with where), and by `rowcast check` (and
/// at serve) a rule naming a missing column, a table that is not configured, or a parent
/// reached without a foreign key.
#[tokio::test]
async fn bad_rules_are_reported_with_what_to_fix() {
    let db = support::Db::start().await;
    let mut config = db.config();
    config.apply_defaults();
    let rule = |c: &mut rowcast::Settings, entity: &str, rows: &str| {
        let t = c.tables.iter_mut().find(|t| t.entity == entity).unwrap();
        t.audience.as_mut().unwrap().rows = Some(rows.into());
    };
    let mut bad = config.clone();
    rule(&mut bad, "ticket", "requester_id = ");
    let err = bad.validate().unwrap_err().to_string();
    assert!(
        err.contains("table public.tickets: audience.rows") && err.contains("at character"),
        "{err}"
    );
    db.migrate(&config).await;
    rule(&mut config, "ticket", "nope = $user");
    rule(&mut config, "comment", "ticket_id -> public.users");
    rule(&mut config, "attachment", "ticket_id -> public.missing");
    rule(&mut config, "kb", "author_id -> public.tickets");
    let pg = db.client().await;
    let problems = rowcast::migrate::check(&pg, &config.tables, &config.capture)
        .await
        .unwrap()
        .join("\n");
    for needle in [
        "table public.tickets: audience.rows reads column \"nope\", which does not exist",
        "table public.comments: audience.rows follows ticket_id -> public.users, but there is no foreign key",
        "table public.attachments: audience.rows refers to public.missing, which is not a configured table",
        "table public.kb_articles: audience.rows refers to public.tickets, which has problems of its own",
    ] {
        assert!(
            problems.contains(needle),
            "missing {needle:?} in:\n{problems}"
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = rowcast::run(
        config.validate().unwrap(),
        listener,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no foreign key"), "serve refuses too: {err}");
}
