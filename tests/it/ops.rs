//! Operating the real binary: `/metrics` after traffic, what the logs of a full run may
//! contain, and SIGTERM (close 1001, exit 0 within the deadline).

use std::collections::HashMap;
use std::time::Duration;

use rowcast::event::Position;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::binary::{Rowcast, histogram_count, scrape, value};
use crate::support::ws::WsClient;
use crate::support::{Db, token};

/// The seeded helpdesk, migrated, and a connection string as role `rowcast_app` with
/// `password` (the throwaway cluster trusts local logins, so any password connects — what
/// matters is that the URL carries one).
async fn db_with_password(password: &str) -> (Db, String) {
    let db = Db::start().await;
    db.migrate(&db.config()).await;
    let pg = db.client().await;
    pg.batch_execute(&format!(
        "CREATE ROLE rowcast_app LOGIN SUPERUSER PASSWORD '{password}'"
    ))
    .await
    .unwrap();
    let url = db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://rowcast_app:{password}@"),
        1,
    );
    assert!(url.contains(password), "{url}");
    (db, url)
}

#[tokio::test]
async fn metrics_move_with_real_traffic() {
    let db = Db::start().await;
    db.migrate(&db.config()).await;
    let rc = Rowcast::spawn(&db.url, &[]).await;

    let before = scrape(&rc).await;
    // Series that exist before anything happened.
    assert_eq!(
        value(
            &before,
            "rowcast_connections",
            &[("transport", "websocket")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&before, "rowcast_slow_client_disconnects_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &before,
            "rowcast_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(
        before.docs.contains_key("rowcast_connections"),
        "HELP texts"
    );

    let (mut c, _) = WsClient::connect(&rc.ws_url(&format!("token={}", token("1", "agent")))).await;
    c.join("tickets").await;
    let pg = db.client().await;
    for status in ["pending", "open", "solved"] {
        pg.execute("UPDATE tickets SET status = $1 WHERE id = 1", &[&status])
            .await
            .unwrap();
        let ev = c.next_event().await;
        assert_eq!(ev["payload"]["data"]["status"], status);
    }

    let during = scrape(&rc).await;
    assert_eq!(
        value(
            &during,
            "rowcast_connections",
            &[("transport", "websocket")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&during, "rowcast_sessions", &[]), Some(1.0));
    assert_eq!(
        value(&during, "rowcast_joined_rooms", &[]),
        Some(1.0),
        "tickets (the private user room is not counted)"
    );
    let emitted = value(
        &during,
        "rowcast_events_emitted_total",
        &[("event", "ticket.update")],
    )
    .expect("events emitted by name");
    assert!(emitted >= 3.0, "ticket.update emitted {emitted}");
    assert!(histogram_count(&during, "rowcast_commit_to_emit_seconds") >= 3.0);
    assert!(histogram_count(&during, "rowcast_capture_batch_size") >= 1.0);
    let lag = value(&during, "rowcast_capture_lag_seconds", &[]).expect("capture lag");
    assert!((0.0..30.0).contains(&lag), "lag {lag}");

    drop(c);
    let after = crate::support::eventually(10, || async {
        let s = scrape(&rc).await;
        (value(&s, "rowcast_connections", &[("transport", "websocket")]) == Some(0.0)).then_some(s)
    })
    .await;
    assert_eq!(value(&after, "rowcast_joined_rooms", &[]), Some(0.0));
}

#[tokio::test]
async fn logs_of_a_full_run_are_json_and_hold_no_secret() {
    let password = "pw-Zq7Xv3Lr9Kd2";
    let hidden = "argon2id$hidden-4f1c9e77b2";
    let (db, url) = db_with_password(password).await;
    let mut rc = Rowcast::spawn(
        &url,
        &[
            ("ROWCAST_LOG_LEVEL", "debug"),
            ("ROWCAST_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8"),
            ("ROWCAST_WEBHOOK_RETRY_SCHEDULE", "100ms"),
        ],
    )
    .await;
    let token = token("1", "agent");
    // A webhook endpoint (its secret must never be logged) and a delivery that fails.
    let http = reqwest::Client::new();
    let endpoint: Value = http
        .put(format!("{}/api/webhook", rc.http()))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "url": format!("http://127.0.0.1:{}/hook", crate::support::process::free_port()) }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let whsec = endpoint["secret"]
        .as_str()
        .expect("the endpoint's secret")
        .to_string();
    assert!(whsec.starts_with("whsec_"), "{endpoint}");
    let sent = http
        .post(format!("{}/api/webhook/test", rc.http()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success());

    let (mut c, _) = WsClient::connect(&rc.ws_url(&format!("token={token}"))).await;
    c.join("users").await;
    c.join("tickets").await;
    // A bad token too: its refusal must not echo it.
    let bad = format!("{token}x");
    let refused = tokio_tungstenite::connect_async(rc.ws_url(&format!("token={bad}"))).await;
    assert!(refused.is_err(), "a badly signed token is refused");

    let pg = db.client().await;
    pg.execute(
        "UPDATE users SET password_hash = $1 WHERE id = 1",
        &[&hidden],
    )
    .await
    .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["event"], "user.update");
    assert!(!ev.to_string().contains(hidden), "hidden column sent: {ev}");
    pg.execute("UPDATE tickets SET priority = 'high' WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(c.next_event().await["event"], "ticket.update");
    reqwest::get(format!("{}/readyz", rc.http())).await.unwrap();

    rc.terminate();
    assert!(c.next_json().await.is_none(), "closed on shutdown");
    let (status, _) = rc.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");

    let logs = rc.logs();
    let signature = token.rsplit('.').next().unwrap();
    let mut messages: HashMap<String, usize> = HashMap::new();
    for line in &logs {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        *messages
            .entry(v["message"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        for (what, secret) in [
            ("the JWT", token.as_str()),
            ("the JWT signature", signature),
            ("the database password", password),
            ("a hidden column", hidden),
            ("the webhook secret", whsec.as_str()),
            (
                "the webhook secret's key",
                whsec.trim_start_matches("whsec_"),
            ),
        ] {
            assert!(
                !line.contains(secret),
                "{what} leaked into the logs: {line}"
            );
        }
    }
    // The run was logged at debug level: requests, the upgrade, capture, shutdown.
    for expected in [
        "rowcast serving",
        "http request",
        "capture connected",
        "stopped",
    ] {
        assert!(
            messages.contains_key(expected),
            "no {expected:?} line in {} lines: {messages:?}",
            logs.len()
        );
    }
    assert!(
        logs.iter()
            .any(|l| l.contains("\"path\":\"/ws\"") && !l.contains('?')),
        "the /ws request is logged by path only"
    );
}

#[tokio::test]
async fn sigterm_during_traffic_closes_clients_with_1001_and_exits_0() {
    let db = Db::start().await;
    db.migrate(&db.config()).await;
    let deadline = Duration::from_secs(5);
    let mut rc = Rowcast::spawn(&db.url, &[("ROWCAST_SHUTDOWN_TIMEOUT", "5s")]).await;
    let (mut c, _) = WsClient::connect(&rc.ws_url(&format!("token={}", token("1", "agent")))).await;
    c.join("tickets").await;
    // A second client that never reads again: it must not hold the shutdown past its deadline.
    let (_silent, _) =
        WsClient::connect(&rc.ws_url(&format!("token={}", token("2", "agent")))).await;

    // Traffic while the signal arrives.
    let url = db.url.clone();
    let writer = tokio::spawn(async move {
        let pg = crate::support::connect(&url).await;
        for i in 0..200 {
            let subject = format!("load {i}");
            if pg
                .execute("UPDATE tickets SET subject = $1 WHERE id = 1", &[&subject])
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let first = c.next_event().await;
    assert_eq!(first["event"], "ticket.update");

    rc.terminate();
    let mut last_seq = first["seq"].as_str().unwrap().to_string();
    while let Some(frame) = c.next_json().await {
        if frame["type"] == "event" {
            let seq = frame["seq"].as_str().unwrap().to_string();
            assert!(
                seq.parse::<Position>().unwrap() > last_seq.parse::<Position>().unwrap(),
                "events stay in order up to the close"
            );
            last_seq = seq;
        }
    }
    let close = c
        .closed
        .clone()
        .flatten()
        .expect("a close frame, not a dropped connection");
    assert_eq!(close.code, CloseCode::Away, "close code 1001: {close:?}");
    assert!(close.reason.contains("reconnect"), "{close:?}");

    let (status, took) = rc.wait_exit(deadline + Duration::from_secs(3)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        took <= deadline + Duration::from_secs(1),
        "exited {took:?} after SIGTERM; the deadline is {deadline:?}"
    );
    eprintln!("SIGTERM → exit 0 took {took:?} (deadline {deadline:?})");
    writer.abort();
    let logs = rc.logs().join("\n");
    assert!(logs.contains("shutting down"), "{logs}");
}
