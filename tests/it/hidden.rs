//! Hidden columns fail closed: a table whose columns changed since `rowcast migrate` (a
//! hidden column renamed or dropped, a column added or renamed) is withheld — no event, no
//! log row carries its data, `/readyz` names it with the reason, `rowcast check` fails —
//! in both capture modes, until the columns match again or `migrate` installs the new shape.

use rowcast::config::CaptureMode;
use serde_json::Value;

use crate::support::ws::WsClient;
use crate::support::{self, Server};

/// `/readyz` of `server`: (status, body).
async fn readyz(server: &Server) -> (u16, Value) {
    let res = reqwest::get(format!("{}/readyz", server.http()))
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Waits until `/readyz` reports `table` withheld; returns the reason.
async fn withheld(server: &Server, table: &str) -> String {
    support::eventually(15, || async {
        let (status, body) = readyz(server).await;
        let reason = body["withheld_tables"][table].as_str()?.to_string();
        (status == 503).then_some(reason)
    })
    .await
}

/// Every frame for `ms`, as text.
async fn frames_for(c: &mut WsClient, ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(v) = c.maybe_json(ms).await {
        out.push(v.to_string());
    }
    out
}

/// A hidden column renamed while rowcast runs: the secret under its new name reaches no
/// client and no log row, other tables keep flowing, `/readyz` and `check` say why, and
/// renaming it back makes the table flow again.
#[tokio::test]
async fn a_renamed_hidden_column_is_withheld_in_both_modes() {
    for mode in [CaptureMode::Triggers, CaptureMode::Logical] {
        let (db, server) = support::start_with(|c| c.capture.mode = mode).await;
        let token = server.token("1", "agent");
        let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
        c.join("users").await;
        c.join("tickets").await;
        let pg = db.client().await;
        pg.batch_execute("ALTER TABLE users RENAME COLUMN password_hash TO pw_hash")
            .await
            .unwrap();
        if mode == CaptureMode::Logical {
            // The publication follows the column, not its name: nothing secret is sent
            // meanwhile; the table is withheld once rowcast compares the shapes.
            withheld(&server, "public.users").await;
        }
        pg.batch_execute(
            "UPDATE users SET name = 'after rename', pw_hash = 'SECRET-RENAMED' WHERE id = 2;
             UPDATE tickets SET subject = 'still flowing' WHERE id = 1;",
        )
        .await
        .unwrap();
        let frames = frames_for(&mut c, 1500).await;
        assert!(
            frames.iter().any(|f| f.contains("still flowing")),
            "{mode:?}: other tables keep flowing: {frames:?}"
        );
        assert!(
            !frames.iter().any(|f| f.contains("SECRET-RENAMED")
                || f.contains("pw_hash")
                || f.contains("after rename")),
            "{mode:?}: nothing of the withheld table is sent: {frames:?}"
        );
        let leaked = db
            .count(
                "SELECT (SELECT count(*) FROM rowcast.changes
                          WHERE concat(data::text, data_json::text, old::text) LIKE '%SECRET-RENAMED%')
                      + (SELECT count(*) FROM rowcast.batches WHERE changes::text LIKE '%SECRET-RENAMED%')",
            )
            .await;
        assert_eq!(leaked, 0, "{mode:?}: the secret is not in the log");
        let reason = withheld(&server, "public.users").await;
        assert!(reason.contains("password_hash"), "{mode:?}: {reason}");
        let problems = rowcast::migrate::check(&pg, &server.config.tables, &server.config.capture)
            .await
            .unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("public.users") && p.contains("withheld")),
            "{mode:?}: check fails: {problems:?}"
        );

        pg.batch_execute("ALTER TABLE users RENAME COLUMN pw_hash TO password_hash")
            .await
            .unwrap();
        support::eventually(15, || async {
            (readyz(&server).await.0 == 200).then_some(())
        })
        .await;
        pg.batch_execute("UPDATE users SET name = 'back again' WHERE id = 2")
            .await
            .unwrap();
        let ev = loop {
            let ev = c.next_event().await;
            if ev["payload"]["data"]["name"] == "back again" {
                break ev;
            }
        };
        assert!(ev["payload"]["data"].get("password_hash").is_none(), "{ev}");
        server.stop().await;
    }
}

/// A column added to a captured table might be a new secret: its rows are withheld, also
/// after a restart (rowcast starts, withholding the table), until the configuration says
/// what to do with it and `migrate` installs it. In logical mode a renamed visible column
/// withholds the table as well.
#[tokio::test]
async fn added_or_renamed_columns_withhold_until_migrate() {
    let (db, server) = support::start().await;
    let pg = db.client().await;
    pg.batch_execute(
        "ALTER TABLE users ADD COLUMN api_token text;
         UPDATE users SET api_token = 'TOKEN-1', name = 'with token' WHERE id = 2;",
    )
    .await
    .unwrap();
    let reason = withheld(&server, "public.users").await;
    assert!(reason.contains("api_token"), "{reason}");
    let mut config = server.config.clone();
    server.stop().await;
    let server = Server::start_unready(config.clone()).await;
    let reason = withheld(&server, "public.users").await;
    assert!(reason.contains("api_token"), "after a restart: {reason}");
    server.stop().await;
    for t in config
        .tables
        .iter_mut()
        .filter(|t| t.table.ends_with("users"))
    {
        t.hidden.push("api_token".into());
    }
    db.migrate(&config).await;
    let server = Server::start(config.clone()).await;
    support::eventually(15, || async {
        (readyz(&server).await.0 == 200).then_some(())
    })
    .await;
    let token = server.token("1", "agent");
    let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    c.join("users").await;
    pg.batch_execute("UPDATE users SET api_token = 'TOKEN-2', name = 'hidden token' WHERE id = 2")
        .await
        .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["data"]["name"], "hidden token");
    assert!(ev["payload"]["data"].get("api_token").is_none(), "{ev}");
    server.stop().await;

    // Logical mode: a visible column renamed is a relation `migrate` did not install.
    let (db, server) = support::start_with(|c| c.capture.mode = CaptureMode::Logical).await;
    let token = server.token("1", "agent");
    let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    c.join("kb").await;
    let pg = db.client().await;
    pg.batch_execute(
        "ALTER TABLE kb_articles RENAME COLUMN title TO headline;
         UPDATE kb_articles SET headline = 'renamed column' WHERE id = 1;",
    )
    .await
    .unwrap();
    let frames = frames_for(&mut c, 1500).await;
    assert!(
        !frames.iter().any(|f| f.contains("renamed column")),
        "{frames:?}"
    );
    let reason = withheld(&server, "public.kb_articles").await;
    assert!(reason.contains("headline"), "{reason}");
    server.stop().await;
}
