//! The fallbacks: SSE with the real `eventsource` client (Last-Event-ID resume) and the
//! polling API (auth, ACL, paging).

use serde_json::{Value, json};

use crate::support::{self, node::Node};

async fn insert_tickets(pg: &tokio_postgres::Client, n: usize, tag: &str) {
    for i in 0..n {
        pg.execute(
            "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3)",
            &[&format!("{tag} {i}")],
        )
        .await
        .unwrap();
    }
}

/// Reads `n` `ticket.update` events from an SSE script, returning `(id, payload)` pairs.
async fn sse_events(node: &mut Node, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = node
            .next_where(15, |v| v["type"] == "event" || v["type"] == "error")
            .await;
        assert_eq!(v["type"], "event", "{v}");
        if v["event"] == "ticket.update" {
            out.push((v["id"].as_str().unwrap().to_string(), v["data"].clone()));
        }
    }
    out
}

#[tokio::test]
async fn sse_with_eventsource_streams_events_and_resumes_from_last_event_id() {
    let (db, server) = support::start_with(|c| c.rooms = support::staff_rooms()).await;
    let token = server.token("1", "agent");
    let http = reqwest::Client::new();
    let url = format!("{}/events?rooms=tickets&token={token}", server.http());

    // Refusals come before the stream, as plain HTTP errors.
    let res = http
        .get(format!("{}/events?rooms=tickets", server.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http
        .get(format!(
            "{}/events?rooms=user:2&token={token}",
            server.http()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "forbidden", "{body}");
    let customer = server.token("3", "customer");
    let res = http
        .get(format!(
            "{}/events?rooms=tickets&token={customer}",
            server.http()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = http
        .get(&url)
        .header("Last-Event-ID", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    let mut live = Node::start("sse.mjs", &[&url]);
    let ready = live.next_where(15, |v| v["event"] == "ready").await;
    assert!(
        ready["id"].as_str().unwrap().parse::<u64>().is_ok(),
        "{ready}"
    );
    assert_eq!(ready["data"]["rooms"], json!(["user:1", "tickets"]));
    let pg = db.client().await;
    insert_tickets(&pg, 3, "first").await;
    let first = sse_events(&mut live, 3).await;
    for (id, payload) in &first {
        assert_eq!(payload["seq"], json!(id), "SSE id is the seq");
        assert_eq!(payload["op"], "insert");
    }
    // The client goes away after the first event; 5 more happen meanwhile.
    live.close_stdin();
    drop(live);
    insert_tickets(&pg, 5, "missed").await;

    // A new EventSource resuming from the first event's id gets the other 2 + the 5, in order.
    let mut resumed = Node::start("sse.mjs", &[&url, &first[0].0]);
    let got = sse_events(&mut resumed, 7).await;
    let subjects: Vec<&str> = got
        .iter()
        .map(|(_, p)| p["data"]["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "first 1", "first 2", "missed 0", "missed 1", "missed 2", "missed 3", "missed 4"
        ]
    );
    assert_eq!(got[0].0, first[1].0);
    let ready = resumed.next_where(15, |v| v["event"] == "ready").await;
    assert!(ready["id"].as_str().is_some());
    // Live events keep coming after the catch-up.
    insert_tickets(&pg, 1, "live").await;
    let live_ev = sse_events(&mut resumed, 1).await;
    assert_eq!(live_ev[0].1["data"]["subject"], "live 0");
    resumed.close_stdin();
    server.stop().await;
}

#[tokio::test]
async fn polling_pages_through_changes_with_auth_acl_and_errors() {
    let (db, server) = support::start_with(|c| c.rooms = support::staff_rooms()).await;
    let token = server.token("1", "agent");
    let http = reqwest::Client::new();
    let get = |q: String| {
        let http = http.clone();
        let url = format!("{}/api/changes?{q}", server.http());
        async move { http.get(url).send().await.unwrap() }
    };
    assert_eq!(get("rooms=tickets".into()).await.status(), 401);
    let res = get(format!("rooms=user:2&token={token}")).await;
    assert_eq!(res.status(), 403);
    let res = get(format!(
        "rooms=tickets&token={}",
        server.token("3", "customer")
    ))
    .await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    let res = get(format!("rooms=tickets&since=nope&token={token}")).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("seq"), "{body}");
    let res = get(format!("rooms=tickets&since=1-1&limit=0&token={token}")).await;
    assert_eq!(res.status(), 400);

    // Without since: where to start.
    let start: Value = get(format!("rooms=tickets&token={token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(start["events"], json!([]));
    assert_eq!(start["more"], false);
    let mut since = start["next"].as_str().unwrap().to_string();

    let pg = db.client().await;
    insert_tickets(&pg, 25, "poll").await;
    // Wait until rowcast has captured all 25.
    support::eventually(15, || {
        let q = format!("rooms=tickets&since={since}&limit=1000&token={token}");
        let get = &get;
        async move {
            let v: Value = get(q).await.json().await.unwrap();
            (v["events"].as_array().unwrap().len() == 25).then_some(())
        }
    })
    .await;

    // Pages of 10: 10, 10, 5, in order, no duplicates; Bearer auth works too.
    let mut subjects = Vec::new();
    let mut pages = 0;
    loop {
        let res = http
            .get(format!(
                "{}/api/changes?rooms=tickets&since={since}&limit=10",
                server.http()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        pages += 1;
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 10);
        for e in events {
            assert_eq!(e["event"], "ticket.update");
            assert_eq!(e["room"], "tickets");
            assert_eq!(e["seq"], e["payload"]["seq"]);
            subjects.push(
                e["payload"]["data"]["subject"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        since = page["next"].as_str().unwrap().to_string();
        if page["more"] == false {
            break;
        }
        assert!(pages < 10, "paging terminates");
    }
    let expected: Vec<String> = (0..25).map(|i| format!("poll {i}")).collect();
    assert_eq!(subjects, expected);
    assert!(pages >= 3, "limit=10 pages: {pages}");
    // Caught up: the next poll is empty and keeps the position.
    let v: Value = get(format!("rooms=tickets&since={since}&token={token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["events"], json!([]));
    assert_eq!(v["next"], json!(since));
    server.stop().await;
}
