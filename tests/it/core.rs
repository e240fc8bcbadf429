//! The core pipeline: capture → enrich → route → `/ws`.

use serde_json::json;

use crate::support::{self, ws::WsClient};

#[tokio::test]
async fn ticket_insert_update_delete_reach_the_tickets_room() {
    let (db, server) = support::start().await;
    let token = server.token("1", "agent");
    let (mut c, welcome) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    assert_eq!(welcome["rooms"], json!(["user:1"]));
    c.join("tickets").await;
    let pg = db.client().await;
    let id: i64 = pg
        .query_one("INSERT INTO tickets (subject, requester_id) VALUES ('Printer on fire', 3) RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    let ev = c.next_event().await;
    assert_eq!(ev["event"], "ticket.update");
    assert_eq!(ev["room"], "tickets");
    let p = &ev["payload"];
    assert_eq!(p["event"], "ticket.created");
    assert_eq!(p["op"], "insert");
    assert_eq!(p["entity"], "ticket");
    assert_eq!(p["table"], "public.tickets");
    assert_eq!(p["id"], json!(id));
    assert_eq!(p["data"]["subject"], "Printer on fire");
    assert_eq!(p["data"]["status"], "open");
    assert_eq!(p["seq"], ev["seq"]);
    assert!(p["committed_at"].as_str().unwrap().contains('T'));

    pg.execute(
        "UPDATE tickets SET status = 'pending' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["event"], "ticket.updated");
    assert_eq!(ev["payload"]["data"]["status"], "pending");
    assert_eq!(ev["payload"]["old"], json!({"id": id}));

    pg.execute("DELETE FROM tickets WHERE id = $1", &[&id])
        .await
        .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["event"], "ticket.deleted");
    assert_eq!(ev["payload"]["op"], "delete");
    assert_eq!(ev["payload"]["old"]["subject"], "Printer on fire");
    server.stop().await;
}

/// Every demo table: the right event name, room and full row; never a hidden column.
#[tokio::test]
async fn every_demo_table_emits_full_rows_without_hidden_columns() {
    let (db, server) = support::start().await;
    let token = server.token("1", "agent");
    let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    for room in ["tickets", "comments", "users", "kb", "attachments"] {
        c.join(room).await;
    }
    let pg = db.client().await;
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "INSERT INTO users (email, name, role, password_hash) VALUES ('new@x.example', 'New', 'customer', 'SECRET-HASH-1') RETURNING id",
            "user.update",
            "users",
            "user.created",
        ),
        (
            "INSERT INTO comments (ticket_id, author_id, body) VALUES (1, 1, 'hello') RETURNING id",
            "comment.update",
            "comments",
            "comment.created",
        ),
        (
            "INSERT INTO kb_articles (title, body) VALUES ('How to', 'Do it') RETURNING id",
            "kb.update",
            "kb",
            "kb.created",
        ),
        (
            "INSERT INTO attachments (ticket_id, filename, content_type, size_bytes) VALUES (1, 'a.png', 'image/png', 10) RETURNING id",
            "attachment.update",
            "attachments",
            "attachment.created",
        ),
    ];
    for (sql, name, room, kind) in cases {
        let id: i64 = pg.query_one(*sql, &[]).await.unwrap().get(0);
        let ev = c.next_event().await;
        assert_eq!(ev["event"], *name, "{ev}");
        assert_eq!(ev["room"], *room, "{ev}");
        assert_eq!(ev["payload"]["event"], *kind, "{ev}");
        assert_eq!(ev["payload"]["data"]["id"], json!(id), "{ev}");
        assert!(!ev.to_string().contains("password_hash"), "{ev}");
    }
    // Updates and deletes of users never show the hash either, old row included.
    pg.execute("UPDATE users SET password_hash = 'SECRET-HASH-2', name = 'Renamed' WHERE email = 'new@x.example'", &[])
        .await
        .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["event"], "user.updated");
    assert_eq!(ev["payload"]["data"]["name"], "Renamed");
    pg.execute("DELETE FROM users WHERE email = 'new@x.example'", &[])
        .await
        .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["event"], "user.deleted");
    assert_eq!(ev["payload"]["old"]["name"], "Renamed");
    let all = ev.to_string();
    assert!(
        !all.contains("SECRET-HASH") && !all.contains("password_hash"),
        "{all}"
    );
    // The hidden value is not even stored in rowcast's log.
    let leaked = db
        .count("SELECT count(*) FROM rowcast.changes WHERE old::text LIKE '%SECRET-HASH%'")
        .await;
    assert_eq!(leaked, 0);
    server.stop().await;
}

/// Comments also reach the ticket's own room; several updates in one transaction coalesce.
#[tokio::test]
async fn finer_rooms_and_coalescing() {
    let (db, server) = support::start().await;
    let token = server.token("1", "agent");
    let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    c.join("tickets:2").await;
    let mut pg = db.client().await;
    pg.execute(
        "INSERT INTO comments (ticket_id, author_id, body) VALUES (1, 1, 'other ticket')",
        &[],
    )
    .await
    .unwrap();
    pg.execute(
        "INSERT INTO comments (ticket_id, author_id, body) VALUES (2, 1, 'this ticket')",
        &[],
    )
    .await
    .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["room"], "tickets:2");
    assert_eq!(ev["payload"]["data"]["body"], "this ticket");
    let tx = pg.transaction().await.unwrap();
    for status in ["pending", "solved", "closed"] {
        tx.execute("UPDATE tickets SET status = $1 WHERE id = 2", &[&status])
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["event"], "ticket.update");
    assert_eq!(ev["payload"]["data"]["status"], "closed");
    assert!(
        c.maybe_json(500).await.is_none(),
        "three updates of one row in one batch make one event"
    );
    server.stop().await;
}

/// A notification reaches only its recipient, with the related comment as `data`.
#[tokio::test]
async fn notifications_reach_only_their_recipient() {
    let (db, server) = support::start().await;
    let (mut carl, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("3", "customer"))))
            .await;
    let (mut cleo, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("4", "customer"))))
            .await;
    let (mut agent, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    agent.join("tickets").await;
    // Nobody may join someone else's user room.
    agent.send(json!({"type": "join", "room": "user:3"})).await;
    let err = agent.next_json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "forbidden");
    assert_eq!(err["room"], "user:3");

    let mut pg = db.client().await;
    let tx = pg.transaction().await.unwrap();
    let comment_id: i64 = tx
        .query_one("INSERT INTO comments (ticket_id, author_id, body) VALUES (1, 1, 'Reset done') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    tx.execute(
        "INSERT INTO notifications (user_id, type, message, related_id, related_type)
         VALUES (3, 'comment_on_ticket', 'Ada replied', $1, 'comment')",
        &[&comment_id.to_string()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let ev = carl.next_event().await;
    assert_eq!(ev["event"], "notification");
    assert_eq!(ev["room"], "user:3");
    let p = &ev["payload"];
    assert_eq!(p["event"], "notification.created");
    assert_eq!(p["notification"]["type"], "comment_on_ticket");
    assert_eq!(p["notification"]["related_type"], "comment");
    assert_eq!(p["data"]["id"], json!(comment_id));
    assert_eq!(p["data"]["body"], "Reset done");

    pg.execute(
        "UPDATE notifications SET read_at = now() WHERE user_id = 3 AND read_at IS NULL",
        &[],
    )
    .await
    .unwrap();
    let ev = carl.next_event().await;
    assert_eq!(ev["event"], "notification.update");
    assert_eq!(ev["payload"]["event"], "notification.updated");
    assert!(ev["payload"]["notification"]["read_at"].is_string());

    // Cleo and the agent saw nothing of it (the agent is in no comments room either).
    assert!(cleo.maybe_json(400).await.is_none());
    assert!(agent.maybe_json(100).await.is_none());
    server.stop().await;
}

/// Two transactions that commit in the opposite order of their change ids: both are
/// delivered, and the one still open does not hold back the one that committed.
#[tokio::test]
async fn out_of_order_commits_are_not_skipped_or_blocked() {
    let (db, server) = support::start().await;
    commit_out_of_order(&db, &server).await;
    // The log confirms the interleaving: A's change id is lower, but it is in a later batch
    // (the one whose snapshot first saw A committed), and the changes were written once:
    // neither carries a seq of its own.
    let rows = db
        .client()
        .await
        .query(
            "SELECT c.id, c.seq,
                    (SELECT b.batch FROM rowcast.batches b
                      WHERE b.snap IS NOT NULL AND pg_visible_in_snapshot(c.txid, b.snap)
                        AND (b.prev IS NULL OR NOT pg_visible_in_snapshot(c.txid, b.prev)))
               FROM rowcast.changes c WHERE tbl = 'public.tickets' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let (a_id, a_seq, a_batch): (i64, Option<i64>, i64) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    let (b_id, b_seq, b_batch): (i64, Option<i64>, i64) =
        (rows[1].get(0), rows[1].get(1), rows[1].get(2));
    assert!(
        a_id < b_id && a_batch > b_batch,
        "the test did interleave (a: id {a_id}, batch {a_batch}; b: id {b_id}, batch {b_batch})"
    );
    assert_eq!((a_seq, b_seq), (None, None), "changes are not rewritten");
    server.stop().await;
}

/// Transaction A writes first (lower change id) and stays open; B writes later and commits
/// first. B's event arrives while A is still open, then A's, with the greater `seq`.
pub async fn commit_out_of_order(db: &support::Db, server: &support::Server) {
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    c.join("tickets").await;
    let mut a = db.client().await;
    let mut b = db.client().await;
    let ta = a.transaction().await.unwrap();
    ta.execute("UPDATE tickets SET subject = 'from A' WHERE id = 2", &[])
        .await
        .unwrap();
    let tb = b.transaction().await.unwrap();
    tb.execute("UPDATE tickets SET subject = 'from B' WHERE id = 1", &[])
        .await
        .unwrap();
    tb.commit().await.unwrap();
    let ev = c.next_event().await;
    assert_eq!(
        ev["payload"]["data"]["subject"], "from B",
        "B is delivered while A is still open"
    );
    // Let capture poll many times past B before A commits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    ta.commit().await.unwrap();
    let ev2 = c.next_event().await;
    assert_eq!(
        ev2["payload"]["data"]["subject"], "from A",
        "A's change must not be skipped"
    );
    let (sa, sb): (i64, i64) = (
        ev2["seq"].as_str().unwrap().parse().unwrap(),
        ev["seq"].as_str().unwrap().parse().unwrap(),
    );
    assert!(sa > sb, "seq follows delivery order: {sb} then {sa}");
}
