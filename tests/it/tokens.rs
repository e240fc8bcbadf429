//! What the token layer accepts is accepted everywhere, and what it refuses is refused
//! everywhere with the same reason: `nbf`, long `sub`s, and a token refresh that changes
//! the role (rooms checked again, rows decided for the new token).

use serde_json::{Value, json};

use crate::socketio::{connect, emit_ack, sio};
use crate::support::{self, SECRET, Server, ws::WsClient};

/// A token with `claims` (plus `exp` an hour ahead unless given), signed like the server's.
fn sign(mut claims: Value) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now + 3600);
    }
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// Status and JSON body of a GET with `Authorization: Bearer <token>`.
async fn get(server: &Server, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", server.http()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    // SSE streams answer 200 and keep going: read only the status and the first chunk.
    if status == 200 && path.starts_with("/events") {
        return (status, Value::Null);
    }
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every transport and the API refuse `token` with 401 and `message`.
async fn refused_everywhere(server: &Server, token: &str, message: &str) {
    let (status, body) = server.ws_refusal(token).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some(message)),
        "/ws {body}"
    );
    for path in ["/events?rooms=kb", "/api/changes?rooms=kb", "/api/webhook"] {
        let (status, body) = get(server, path, token).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (401, Some(message)),
            "{path} {body}"
        );
    }
    let mut n = sio(server);
    let v = connect(&mut n, "s", json!({"token": token})).await;
    assert_eq!(v["type"], "connect_error", "{v}");
    assert!(v["message"].as_str().unwrap().contains(message), "{v}");
    // A refresh to it is refused too, and the session goes on.
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    c.send(json!({"type": "auth", "token": token, "id": "r"}))
        .await;
    let e = c.next_json().await.unwrap();
    assert_eq!(
        (e["code"].as_str(), e["message"].as_str(), e["id"].as_str()),
        (Some("unauthorized"), Some(message), Some("r")),
        "{e}"
    );
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "pong");
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused_on_every_transport() {
    let (_db, server) = support::start().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let early = sign(json!({
        "sub": "1", "role": "agent", "nbf": now + 86_400, "exp": now + 2 * 86_400
    }));
    refused_everywhere(&server, &early, "invalid token: token not valid yet").await;
    // Within the leeway (5 s) a token from an issuer whose clock runs ahead is accepted.
    let skewed = sign(json!({"sub": "1", "role": "agent", "nbf": now + 2}));
    let (status, _) = get(&server, "/api/changes?rooms=kb", &skewed).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_long_sub_works_on_every_transport_and_an_over_long_one_is_refused() {
    let (db, server) = support::start().await;
    let pg = db.client().await;
    for len in [200, 1024] {
        let sub = "u".repeat(len);
        let token = sign(json!({"sub": sub, "role": "customer"}));
        let user_room = format!("user:{sub}");

        let (mut c, welcome) =
            WsClient::connect(&server.ws_url(&format!("token={token}&rooms=kb"))).await;
        assert_eq!(welcome["rooms"], json!([user_room]), "{len}");
        assert_eq!(c.next_json().await.unwrap()["type"], "joined");

        let (status, body) = get(&server, "/events?rooms=kb", &token).await;
        assert_eq!(status, 200, "SSE with a {len}-byte sub: {body}");
        let (status, body) = get(&server, "/api/changes?rooms=kb", &token).await;
        assert_eq!(status, 200, "polling with a {len}-byte sub: {body}");

        let mut n = sio(&server);
        let v = connect(&mut n, "s", json!({"token": token})).await;
        assert_eq!(v["type"], "connect", "Socket.IO with a {len}-byte sub: {v}");
        assert_eq!(
            emit_ack(&mut n, "s", "join", json!(["kb"]), 1).await["ok"],
            true
        );

        // Events arrive (the private room did not break the session).
        pg.execute(
            "UPDATE kb_articles SET title = $1 WHERE id = 1",
            &[&format!("long sub {len}")],
        )
        .await
        .unwrap();
        assert_eq!(
            c.next_event().await["payload"]["data"]["title"],
            format!("long sub {len}")
        );
        let ev = crate::socketio::next_event(&mut n, "s").await;
        assert_eq!(ev["payload"]["data"]["title"], format!("long sub {len}"));
    }
    let over = sign(json!({"sub": "u".repeat(1025), "role": "customer"}));
    refused_everywhere(
        &server,
        &over,
        "invalid token: `sub` is 1025 bytes long; at most 1024 are accepted",
    )
    .await;
    server.stop().await;
}

/// An agent's `/ws` session refreshed to a customer token: a room the customer may not
/// join is left (`left`, reason `access_revoked`) before `authenticated`; nothing from it
/// arrives afterwards, and other rooms keep working.
#[tokio::test]
async fn a_refresh_to_a_role_that_may_not_join_leaves_the_room() {
    let (db, server) = support::start_with(|c| c.rooms = support::staff_rooms()).await;
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("3", "agent")))).await;
    c.join("tickets").await;
    c.join("kb").await;
    c.send(json!({"type": "auth", "token": server.token("3", "customer"), "id": "r1"}))
        .await;
    let left = c.next_json().await.unwrap();
    assert_eq!(left["type"], "left", "{left}");
    assert_eq!(left["room"], "tickets", "{left}");
    assert_eq!(left["reason"], "access_revoked", "{left}");
    assert_eq!(left["id"], "r1", "{left}");
    assert!(
        left["message"].as_str().unwrap().contains("customer"),
        "{left}"
    );
    let done = c.next_json().await.unwrap();
    assert_eq!(done["type"], "authenticated", "{done}");
    // Rejoining is refused for the new role.
    c.send(json!({"type": "join", "room": "tickets"})).await;
    assert_eq!(c.next_json().await.unwrap()["code"], "forbidden");

    // The customer's own ticket changes, then a kb article: only the article arrives.
    let pg = db.client().await;
    pg.execute("UPDATE tickets SET status = 'pending' WHERE id = 1", &[])
        .await
        .unwrap();
    pg.execute(
        "UPDATE kb_articles SET title = 'After refresh' WHERE id = 1",
        &[],
    )
    .await
    .unwrap();
    let ev = c.next_event().await;
    assert_eq!(
        (ev["room"].as_str(), ev["event"].as_str()),
        (Some("kb"), Some("kb.update")),
        "{ev}"
    );

    // A refresh to another user is refused and changes nothing.
    c.send(json!({"type": "auth", "token": server.token("4", "customer")}))
        .await;
    let e = c.next_json().await.unwrap();
    assert_eq!(e["code"], "unauthorized", "{e}");
    assert!(e["message"].as_str().unwrap().contains("same user"), "{e}");
    server.stop().await;
}

/// In a room the new role may still join (customers join `tickets`, rows filtered), the
/// session stays, and from the refresh on only the rows the new token may see arrive.
#[tokio::test]
async fn a_refresh_to_a_role_with_fewer_rows_narrows_what_arrives() {
    let (db, server) = support::start().await;
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("3", "agent")))).await;
    c.join("tickets").await;
    let pg = db.client().await;
    // As an agent, somebody else's ticket arrives.
    pg.execute("UPDATE tickets SET status = 'open' WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(c.next_event().await["payload"]["id"], json!(2));

    c.send(json!({"type": "auth", "token": server.token("3", "customer")}))
        .await;
    let done = c.next_json().await.unwrap();
    assert_eq!(done["type"], "authenticated", "no room is left: {done}");
    // Ticket 2 (requested by user 4) changes, then ticket 3 (requested by user 3): only
    // ticket 3 arrives.
    pg.execute("UPDATE tickets SET status = 'solved' WHERE id = 2", &[])
        .await
        .unwrap();
    pg.execute("UPDATE tickets SET status = 'solved' WHERE id = 3", &[])
        .await
        .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["id"], json!(3), "{ev}");
    server.stop().await;
}
