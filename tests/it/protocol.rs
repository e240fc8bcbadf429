//! Bad input on `/ws`: refused tokens, refused rooms, malformed frames — each answered
//! clearly, and other sessions keep working.

use serde_json::json;
use tokio_tungstenite::tungstenite;

use crate::support::{self, ws::WsClient};

async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401() {
    let (_db, server) = support::start().await;
    assert_eq!(refused_status(&server.ws_url("")).await, 401, "no token");
    let forged = rowcast::api::auth::Authenticator::from_config(&rowcast::config::JwtConfig {
        secret: Some("some-other-secret-of-length".into()),
        ..Default::default()
    })
    .unwrap()
    .issue("1", "admin", 600)
    .unwrap();
    assert_eq!(
        refused_status(&server.ws_url(&format!("token={forged}"))).await,
        401,
        "bad signature"
    );
    let expired = server.auth.issue("1", "agent", -600).unwrap();
    assert_eq!(
        refused_status(&server.ws_url(&format!("token={expired}"))).await,
        401,
        "expired"
    );
    assert_eq!(
        refused_status(&server.ws_url("token=not.a.jwt")).await,
        401,
        "garbage"
    );
    // The body says why.
    let (status, body) = server.ws_refusal(&expired).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(body["message"], "token expired");
    // A malformed `since` is a 400, before upgrading.
    let token = server.token("1", "agent");
    assert_eq!(
        refused_status(&server.ws_url(&format!("token={token}&since=yesterday"))).await,
        400
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_others_keep_working() {
    let (db, server) = support::start_with(|c| c.rooms = support::staff_rooms()).await;
    let (mut customer, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("3", "customer"))))
            .await;
    let (mut other, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    other.join("tickets").await;

    customer
        .send(json!({"type": "join", "room": "tickets", "id": 7}))
        .await;
    let e = customer.next_json().await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["room"].as_str()),
        (Some("error"), Some("forbidden"), Some("tickets"))
    );
    assert_eq!(e["id"], 7, "the client's id is echoed");
    customer
        .send(json!({"type": "join", "room": "no-such-room"}))
        .await;
    assert_eq!(customer.next_json().await.unwrap()["code"], "unknown_room");
    customer.join("kb").await;

    customer.send_text("{not json".into()).await;
    assert_eq!(customer.next_json().await.unwrap()["code"], "bad_json");
    customer
        .send(json!({"type": "subscribe", "room": "kb"}))
        .await;
    let e = customer.next_json().await.unwrap();
    assert_eq!(e["code"], "unknown_type");
    assert!(e["message"].as_str().unwrap().contains("subscribe"));
    customer.send(json!({"room": "kb"})).await;
    assert_eq!(customer.next_json().await.unwrap()["code"], "bad_request");
    customer.send(json!({"type": "join"})).await;
    assert_eq!(customer.next_json().await.unwrap()["code"], "bad_request");
    customer
        .send_text(format!(
            "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
            "x".repeat(70 * 1024)
        ))
        .await;
    let e = customer.next_json().await.unwrap();
    assert_eq!(e["code"], "frame_too_large", "{e}");
    customer
        .send(json!({"type": "auth", "token": "nope"}))
        .await;
    assert_eq!(customer.next_json().await.unwrap()["code"], "unauthorized");

    // The session survived all of it.
    customer.send(json!({"type": "ping", "id": "p1"})).await;
    let pong = customer.next_json().await.unwrap();
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_str()),
        (Some("pong"), Some("p1"))
    );
    let pg = db.client().await;
    pg.execute(
        "UPDATE kb_articles SET title = 'Still here' WHERE id = 1",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        customer.next_event().await["payload"]["data"]["title"],
        "Still here"
    );
    // And so did everyone else.
    pg.execute("UPDATE tickets SET status = 'solved' WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(
        other.next_event().await["payload"]["data"]["status"],
        "solved"
    );
    server.stop().await;
}

#[tokio::test]
async fn token_refresh_and_expiry() {
    let (_db, server) = support::start().await;
    let short = server.auth.issue("1", "agent", 2).unwrap();
    let (mut c, welcome) = WsClient::connect(&server.ws_url(&format!("token={short}"))).await;
    assert!(welcome["expires_at"].is_i64());
    // A token for somebody else is refused; a fresh one for the same user is accepted.
    c.send(json!({"type": "auth", "token": server.token("2", "admin")}))
        .await;
    assert_eq!(c.next_json().await.unwrap()["code"], "unauthorized");
    c.send(json!({"type": "auth", "token": server.auth.issue("1", "agent", 4).unwrap()}))
        .await;
    assert_eq!(c.next_json().await.unwrap()["type"], "authenticated");
    // Past the first token's expiry the session is still open.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "pong");
    // Once the refreshed token expires, the session is closed with 4401.
    assert!(c.maybe_json(4000).await.is_none());
    let frame = c.closed.clone().flatten().expect("a close frame");
    assert_eq!(u16::from(frame.code), 4401);
    server.stop().await;
}
