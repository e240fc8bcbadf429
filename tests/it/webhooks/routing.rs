//! Who receives what: a user's endpoint its notifications, admin endpoints what their
//! filters name; secret rotation, disabling, 410 Gone.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Api, fast};
use crate::support::receiver::Receiver;
use crate::support::{self, eventually};

#[tokio::test]
async fn user_endpoint_gets_only_its_notifications_and_admin_filter_gets_tickets() {
    let mut rx = Receiver::start(&[]).await;
    let (db, server) = support::start_with(fast).await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    let admin = server.token("2", "admin");

    let (s, ep) = api
        .put("/api/webhook", &carl, json!({ "url": rx.url("/carl") }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    let secret = ep["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(ep["event_types"], json!(["notification.created"]));
    // Setting it again keeps the secret.
    let (s, again) = api
        .put("/api/webhook", &carl, json!({ "url": rx.url("/carl") }))
        .await;
    assert_eq!((s, &again["secret"]), (StatusCode::OK, &ep["secret"]));
    let (s, got) = api.get("/api/webhook", &carl).await;
    assert_eq!((s, &got["url"]), (StatusCode::OK, &json!(rx.url("/carl"))));
    rx.add_secret(&secret).await;

    let (s, adm) = api
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": rx.url("/admin"), "event_types": ["ticket.*"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{adm}");
    rx.add_secret(adm["secret"].as_str().unwrap()).await;

    let pg = db.client().await;
    pg.batch_execute(
        "INSERT INTO notifications (user_id, type, message, related_id, related_type)
              VALUES (3, 'comment_on_ticket', 'Ada replied', '1', 'comment');
         INSERT INTO notifications (user_id, type, message, related_id, related_type)
              VALUES (4, 'comment_on_ticket', 'For Cleo', '1', 'comment');
         INSERT INTO tickets (subject, requester_id) VALUES ('Webhook me', 3);
         UPDATE tickets SET status = 'solved' WHERE id = 2;
         INSERT INTO kb_articles (title, body) VALUES ('Not for the admin hook', '...');",
    )
    .await
    .unwrap();

    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(rx.next().await);
    }
    got.sort_by_key(|r| {
        (
            r["path"].as_str().unwrap().to_string(),
            r["body"]["event"].to_string(),
        )
    });
    let carl_req = got
        .iter()
        .find(|r| r["path"] == "/carl")
        .expect("carl's notification");
    let b = &carl_req["body"];
    assert_eq!(b["event"], "notification.created");
    assert_eq!(b["notification"]["user_id"], 3);
    assert_eq!(b["notification"]["message"], "Ada replied");
    assert_eq!(b["data"]["id"], 1, "the related comment: {b}");
    assert_eq!(carl_req["content_type"], "application/json");
    let admin_events: HashSet<String> = got
        .iter()
        .filter(|r| r["path"] == "/admin")
        .map(|r| r["body"]["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        admin_events,
        HashSet::from(["ticket.created".to_string(), "ticket.updated".to_string()])
    );
    // The outbox holds exactly these: nothing for Cleo's notification or the kb article.
    let pending_cursor = eventually(10, || async {
        let n = db
            .count("SELECT count(*) FROM rowcast.webhook_deliveries")
            .await;
        (n >= 3).then_some(n)
    })
    .await;
    assert_eq!(pending_cursor, 3);
    assert!(rx.maybe_next(300).await.is_none(), "nothing else is sent");

    // A test send reaches the caller's endpoint, signed, with the delivery id as webhook-id.
    let id = api.test_send(&carl).await;
    let t = rx.next().await;
    assert_eq!(
        (t["path"].as_str(), t["id"].as_str()),
        (Some("/carl"), Some(id.as_str()))
    );
    assert_eq!(t["body"]["event"], "notification.created");
    assert_eq!(t["body"]["test"], true);
    // Users see only their deliveries; admins see all.
    let (_, mine) = api.get("/api/webhook/deliveries", &carl).await;
    assert_eq!(mine["deliveries"].as_array().unwrap().len(), 2);
    let (_, all) = api.get("/api/webhook/deliveries", &admin).await;
    assert_eq!(all["deliveries"].as_array().unwrap().len(), 4);
    server.stop().await;
}

#[tokio::test]
async fn rotated_secret_keeps_signing_and_gone_disables_the_endpoint() {
    let (db, server) = support::start_with(fast).await;
    let api = Api::new(server.http());
    let admin = server.token("2", "admin");
    let mut rx = Receiver::start(&[]).await;
    let (s, ep) = api
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": rx.url("/rotated"), "event_types": ["ticket.created"], "description": "ops" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let old = ep["secret"].as_str().unwrap().to_string();
    let id = ep["id"].as_str().unwrap().to_string();
    let (s, rotated) = api
        .post(&format!("/api/webhooks/{id}/rotate"), &admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    assert!(rotated["previous_secret_expires_at"].is_string());
    // The receiver knows only the old secret: the second signature still verifies.
    rx.add_secret(&old).await;
    let pg = db.client().await;
    pg.execute(
        "INSERT INTO tickets (subject, requester_id) VALUES ('rotated', 3)",
        &[],
    )
    .await
    .unwrap();
    let r = rx.next().await;
    assert_eq!(
        r["signature"].as_str().unwrap().split(' ').count(),
        2,
        "{r}"
    );
    // Disabled endpoints get nothing; listing hides secrets.
    let (s, patched) = api
        .call(
            Method::PATCH,
            &format!("/api/webhooks/{id}"),
            Some(&admin),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!((s, &patched["enabled"]), (StatusCode::OK, &json!(false)));
    pg.execute(
        "INSERT INTO tickets (subject, requester_id) VALUES ('while disabled', 3)",
        &[],
    )
    .await
    .unwrap();
    assert!(rx.maybe_next(700).await.is_none());
    let (_, list) = api.get("/api/webhooks", &admin).await;
    assert!(list["endpoints"][0].get("secret").is_none(), "{list}");

    // A receiver that answers 410 Gone disables its endpoint; the delivery is failed.
    let mut gone = Receiver::start(&["--status", "410"]).await;
    let (_, ep) = api
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": gone.url("/gone"), "event_types": ["ticket.*"] }),
        )
        .await;
    gone.add_secret(ep["secret"].as_str().unwrap()).await;
    let gone_id = ep["id"].as_str().unwrap().to_string();
    pg.execute(
        "INSERT INTO tickets (subject, requester_id) VALUES ('gone', 3)",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(gone.next().await["answered"], 410);
    let ep = eventually(10, || async {
        let (_, ep) = api.get(&format!("/api/webhooks/{gone_id}"), &admin).await;
        (ep["enabled"] == false).then_some(ep)
    })
    .await;
    assert!(
        ep["disabled_reason"].as_str().unwrap().contains("410"),
        "{ep}"
    );
    let (_, failed) = api
        .get(
            &format!("/api/webhook/deliveries?status=failed&endpoint_id={gone_id}"),
            &admin,
        )
        .await;
    assert_eq!(
        failed["deliveries"].as_array().unwrap().len(),
        1,
        "{failed}"
    );
    server.stop().await;
}

/// A notification's `data` is only a row its recipient may see, on the live transports
/// and on the recipient's webhook alike: their own ticket's comment yes; a comment on
/// another customer's ticket, an internal comment, or another notification: `data` null.
#[tokio::test]
async fn notification_data_is_only_a_row_the_recipient_may_see() {
    let mut rx = Receiver::start(&[]).await;
    let (db, server) = support::start_with(fast).await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    let secret = api.set_url(&carl, &rx.url("/carl")).await;
    rx.add_secret(&secret).await;
    let (mut live, _) =
        crate::support::ws::WsClient::connect(&server.ws_url(&format!("token={carl}"))).await;
    let pg = db.client().await;
    // Comment 1 is on Carl's ticket 1; comment 2 on Cleo's ticket 2; comment 3 internal.
    pg.batch_execute(
        "INSERT INTO comments (ticket_id, author_id, body, internal) VALUES (1, 1, 'internal', true);
         INSERT INTO notifications (user_id, type, message, related_id, related_type) VALUES
            (3, 'comment_on_ticket', 'own', '1', 'comment'),
            (3, 'comment_on_ticket', 'other', '2', 'comment'),
            (3, 'comment_on_ticket', 'internal', '3', 'comment'),
            (3, 'mention', 'notification', '1', 'notification');",
    )
    .await
    .unwrap();
    let mut by_message = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let ev = live.next_event().await;
        assert_eq!(ev["event"], "notification");
        let p = ev["payload"].clone();
        by_message.insert(
            p["notification"]["message"].as_str().unwrap().to_string(),
            p["data"].clone(),
        );
    }
    assert_eq!(
        by_message["own"]["body"],
        "Could you try again? I re-issued the link."
    );
    for m in ["other", "internal", "notification"] {
        assert_eq!(
            by_message[m],
            serde_json::Value::Null,
            "{m}: {by_message:?}"
        );
    }
    let mut hooked = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let r = rx.next().await;
        let b = &r["body"];
        hooked.insert(
            b["notification"]["message"].as_str().unwrap().to_string(),
            b["data"].clone(),
        );
    }
    assert_eq!(
        hooked, by_message,
        "the webhook gets what the live transports got"
    );
    server.stop().await;
}
