//! Events carry the row the log holds for each change, as of its commit and written once:
//! logical capture renders decoded tuples exactly as `to_jsonb` does (every type of an
//! application schema, unchanged TOASTed values included), trigger mode writes each change
//! once, and a row deleted later still arrives as it was.

use rowcast::catalog::{RoomConfig, TableConfig};
use rowcast::config::CaptureMode;
use serde_json::Value;

use crate::support::ws::WsClient;
use crate::support::{self, Db, Server};

/// An ORM-style table (quoted mixed-case names, a text key) with a column of every kind
/// `to_jsonb` renders differently.
const KINDS: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (x int, label text);
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE "Kinds" (
    "kindId"  text PRIMARY KEY,
    "Mood"    mood,
    ints      int[],
    words     text[],
    grid      int[][],
    doc       jsonb,
    raw       json,
    amount    numeric(12, 2),
    ratio     float8,
    small     float4,
    big       int8,
    flag      boolean,
    at_local  timestamp,
    at_zone   timestamptz,
    stamps    timestamptz[],
    day       date,
    clock     time,
    clock_tz  timetz,
    span      interval,
    blob      bytea,
    uid       uuid,
    addr      inet,
    price     money,
    duo       pair,
    duos      pair[],
    pos       positive,
    spans     int4range,
    letter    char(3),
    body      text
);
ALTER TABLE "Kinds" ALTER COLUMN body SET STORAGE EXTERNAL;
"#;

/// Rows with ordinary values, edge values and NULLs.
const ROWS: &str = r#"
INSERT INTO "Kinds" VALUES
 ('a', 'happy', '{1,2,3}', '{plain,"with space","quote\"d",NULL,"NULL"}', '{{1,2},{3,4}}',
  '{"n": 1.5, "list": [true, null], "s": "x"}', '{"b": 2, "a": [1, 2]}', 1234.50, 0.1, 1.5,
  9007199254740993, true, '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.5+05:30',
  '{"2024-01-01 00:00:00+00", "2024-06-01 12:00:00-07"}', '2024-02-29', '13:14:15',
  '13:14:15+02', '1 year 2 mons 3 days 04:05:06', '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '192.168.0.1/24', 12.34, ROW(1, 'one'), ARRAY[ROW(2, 'two')::pair, ROW(3, 'a "q"')::pair], 7,
  '[1,5)', 'ab', 'short'),
 ('b', NULL, '{}', '{}', NULL, 'null', '[]', NULL, 'NaN', '-Infinity', -1, false, 'infinity',
  '-infinity', NULL, '0044-03-15 BC', NULL, NULL, NULL, '\x', NULL, NULL, NULL, NULL, NULL, NULL,
  'empty', NULL, NULL),
 ('c', 'sad', '[0:1]={7,8}', '{"{braces}", "a,b"}', NULL, '{"deep": {"x": [[1]]}}', '"str"',
  -0.01, 1e300, 3.4e38, 0, NULL, '1999-12-31 23:59:59', '1999-12-31 23:59:59.999999+00', '{}',
  'infinity', '00:00:00', '00:00:00-03:30', '-1 days', '\xdeadbeef', NULL, '::1', -5.00,
  ROW(NULL, NULL), '{}', 1, 'empty', 'x', NULL);
"#;

fn kinds_table(config: &mut rowcast::Settings, mode: CaptureMode) {
    config.capture.mode = mode;
    config.tables.push(TableConfig {
        table: r#"public."Kinds""#.into(),
        entity: "kind".into(),
        kind: Default::default(),
        room: Some("kinds".into()),
        rooms: vec![],
        hidden: vec![],
        key: vec![],
        recipient_column: None,
        related_type_column: None,
        related_id_column: None,
        related_table: None,
        audience: None,
    });
    config.rooms.insert(
        "kinds".into(),
        RoomConfig {
            roles: vec!["*".into()],
        },
    );
}

/// Every value of every row arrives exactly as `to_jsonb` renders it, in both modes; an
/// update that leaves a TOASTed value alone still carries it.
#[tokio::test]
async fn rows_render_exactly_like_to_jsonb_in_both_modes() {
    for mode in [CaptureMode::Logical, CaptureMode::Triggers] {
        let db = Db::start().await;
        db.client().await.batch_execute(KINDS).await.unwrap();
        let mut config = db.config();
        kinds_table(&mut config, mode);
        db.migrate(&config).await;
        let server = Server::start(config).await;
        let token = server.token("1", "agent");
        let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
        c.join("kinds").await;
        let pg = db.client().await;
        pg.batch_execute(ROWS).await.unwrap();
        // A TOASTed value, stored out of line, then an update that does not touch it: the
        // stream marks it unchanged and carries no value.
        pg.batch_execute(
            r#"UPDATE "Kinds" SET body = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 4000) g)
                WHERE "kindId" = 'b';
               UPDATE "Kinds" SET flag = true WHERE "kindId" = 'b';"#,
        )
        .await
        .unwrap();
        // Changes to one row read together may be coalesced: read until every row is there
        // as of its last change.
        let mut got: std::collections::BTreeMap<String, Value> = Default::default();
        while got.len() < 3 || got["b"]["flag"] != true {
            let ev = c.next_event().await;
            got.insert(
                ev["payload"]["id"].as_str().unwrap().to_string(),
                ev["payload"]["data"].clone(),
            );
        }
        for row in pg
            .query(r#"SELECT "kindId", to_jsonb(k) FROM "Kinds" k"#, &[])
            .await
            .unwrap()
        {
            let (id, want): (String, Value) = (row.get(0), row.get(1));
            let have = got
                .get(&id)
                .unwrap_or_else(|| panic!("no event for row {id}"));
            for (column, value) in want.as_object().unwrap() {
                assert_eq!(
                    have.get(column),
                    Some(value),
                    "{mode:?}: row {id}, column {column}"
                );
            }
            assert_eq!(have, &want, "{mode:?}: row {id}");
        }
        let body = got["b"]["body"].as_str().unwrap_or_default();
        assert_eq!(body.len(), 128_000, "{mode:?}: the unchanged TOASTed body");
        server.stop().await;
    }
}

/// Trigger mode writes each change once: the sequencer never updates a change row, and
/// events still come in commit order with consecutive seqs, each with its own row.
#[tokio::test]
async fn trigger_mode_writes_each_change_once() {
    let (db, server) = support::start().await;
    let token = server.token("1", "agent");
    let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    c.join("tickets").await;
    let pg = db.client().await;
    for i in 0..50 {
        pg.execute(
            "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3)",
            &[&format!("s{i}")],
        )
        .await
        .unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < 50 {
        let ev = c.next_event().await;
        seqs.push(ev["seq"].as_str().unwrap().parse::<i64>().unwrap());
        assert_eq!(
            ev["payload"]["data"]["subject"],
            format!("s{}", seqs.len() - 1),
            "each event carries its own row, in commit order"
        );
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let updated: i64 = pg
        .query_one(
            "SELECT n_tup_upd + n_tup_hot_upd FROM pg_stat_user_tables
              WHERE schemaname = 'rowcast' AND relname = 'changes'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(updated, 0, "no change row was rewritten");
    server.stop().await;
}

/// A resume reads each change's row from the log as of its commit: an update of a row
/// deleted since still arrives with the row as it was, then the delete.
#[tokio::test]
async fn a_resume_gets_rows_as_of_their_commit_even_when_deleted_since() {
    for mode in [CaptureMode::Triggers, CaptureMode::Logical] {
        let (db, server) = support::start_with(|c| {
            c.capture.mode = mode;
            c.hub.replay_buffer = 0;
        })
        .await;
        let token = server.token("1", "agent");
        let (c, welcome) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
        let since = welcome["seq"].as_str().unwrap().to_string();
        drop(c);
        let pg = db.client().await;
        let id: i64 = pg
            .query_one(
                "INSERT INTO tickets (subject, requester_id) VALUES ('first', 3) RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        pg.execute(
            "UPDATE tickets SET subject = 'second' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
        // More changes than a catch-up page between the update and the delete (of a table the
        // resume does not ask for): they are read in different pages, never coalesced.
        pg.batch_execute(
            "INSERT INTO kb_articles (title, body, author_id) SELECT 'kb ' || g, '', 1 FROM generate_series(1, 600) g",
        )
        .await
        .unwrap();
        pg.execute("DELETE FROM tickets WHERE id = $1", &[&id])
            .await
            .unwrap();
        // Once the live tail has passed them all, a resume reads them from the log (the
        // replay buffer is off), page by page.
        let newest: i64 = support::eventually(10, || async {
            let row = pg
                .query_one("SELECT count(*), max(seq) FROM rowcast.log", &[])
                .await
                .unwrap();
            let (n, max): (i64, Option<i64>) = (row.get(0), row.get(1));
            max.filter(|_| n >= 603)
        })
        .await;
        support::eventually(10, || async {
            let ready: Value = reqwest::get(format!("{}/readyz", server.http()))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let at: i64 = ready["position"].as_str()?.parse().ok()?;
            (at >= newest).then_some(())
        })
        .await;
        let url = server.ws_url(&format!("token={token}&since={since}&rooms=tickets"));
        let (mut c, _) = WsClient::connect(&url).await;
        // The insert and update (coalesced when read together) carry the row as they left it;
        // without the log's rows, that row was gone when read and only the delete arrived.
        let mut seen = Vec::new();
        loop {
            let ev = c.next_event().await;
            let p = &ev["payload"];
            let row = if p["op"] == "delete" {
                &p["old"]
            } else {
                &p["data"]
            };
            seen.push((
                p["op"].as_str().unwrap().to_string(),
                row["subject"].clone(),
            ));
            if p["op"] == "delete" {
                break;
            }
        }
        assert!(
            seen.len() >= 2,
            "{mode:?}: more than the delete arrived: {seen:?}"
        );
        let before_delete = &seen[seen.len() - 2];
        assert!(
            ["insert", "update"].contains(&before_delete.0.as_str()) && before_delete.1 == "second",
            "{mode:?}: {seen:?}"
        );
        assert_eq!(seen.last().unwrap().1, "second", "{mode:?}: {seen:?}");
        server.stop().await;
    }
}
