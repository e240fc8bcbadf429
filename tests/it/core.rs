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
