//! Logical capture (`capture.mode = "logical"`): the same events from a replication slot,
//! exactly once through kill -9 and PostgreSQL restarts, and migrate/check for the mode.

use std::time::Duration;

use rowcast::config::CaptureMode;
use rowcast::pgtemp::PgTempOptions;
use serde_json::json;

use crate::support::process::Proc;
use crate::support::writer::Writer;
use crate::support::ws::{Received, WsClient};
use crate::support::{self, Db};

fn logical(c: &mut rowcast::Settings) {
    c.capture.mode = CaptureMode::Logical;
}

/// A throwaway database migrated for logical capture, a rowcast process serving it, and an
/// agent's `/ws` client (with its token) joined to `tickets`.
async fn logical_process() -> (Db, rowcast::Settings, Proc, WsClient, String) {
    let db = Db::start().await;
    let mut config = db.config();
    logical(&mut config);
    db.migrate(&config).await;
    let rc = Proc::start(&config, 0, &[]).await;
    let token = support::token("1", "agent");
    let (mut c, _) = WsClient::connect(&rc.ws_url(&format!("token={token}&rooms=tickets"))).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "joined");
    (db, config, rc, c, token)
}

/// Inserts, updates, deletes (with the old row) and key changes on the demo tables, hidden
/// columns kept out of events and of the log, and notifications to their recipient only.
#[tokio::test]
async fn logical_capture_emits_every_change_without_hidden_columns() {
    let (db, server) = support::start_with(logical).await;
    let pg = db.client().await;
    let problems = rowcast::migrate::check(&pg, &server.config.tables, &server.config.capture)
        .await
        .unwrap();
    assert!(problems.is_empty(), "check after migrate: {problems:?}");
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    for room in ["tickets", "users", "kb"] {
        c.join(room).await;
    }
    let id: i64 = pg
        .query_one(
            "INSERT INTO tickets (subject, requester_id) VALUES ('Printer on fire', 3) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let ev = c.next_event().await;
    assert_eq!(ev["event"], "ticket.update");
    assert_eq!(ev["payload"]["event"], "ticket.created");
    assert_eq!(ev["payload"]["id"], json!(id));
    assert_eq!(ev["payload"]["data"]["subject"], "Printer on fire");
    pg.execute(
        "UPDATE tickets SET status = 'pending' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["event"], "ticket.updated");
    assert_eq!(ev["payload"]["data"]["status"], "pending");
    pg.execute("DELETE FROM tickets WHERE id = $1", &[&id])
        .await
        .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["event"], "ticket.deleted");
    assert_eq!(ev["payload"]["old"]["subject"], "Printer on fire", "{ev}");
    assert_eq!(ev["payload"]["old"]["status"], "pending", "{ev}");

    // Users: the hash never shows, not in events, not in the log.
    pg.execute(
        "INSERT INTO users (email, name, role, password_hash) VALUES ('l@x.example', 'L', 'customer', 'SECRET-HASH-1')",
        &[],
    )
    .await
    .unwrap();
    pg.execute(
        "UPDATE users SET password_hash = 'SECRET-HASH-2', name = 'Renamed' WHERE email = 'l@x.example'",
        &[],
    )
    .await
    .unwrap();
    pg.execute("DELETE FROM users WHERE email = 'l@x.example'", &[])
        .await
        .unwrap();
    let mut kinds: Vec<String> = Vec::new();
    while kinds.last().is_none_or(|k| k != "user.deleted") {
        assert!(kinds.len() < 3, "{kinds:?}");
        let ev = c.next_event().await;
        assert!(!ev.to_string().contains("SECRET-HASH"), "{ev}");
        assert!(!ev.to_string().contains("password_hash"), "{ev}");
        kinds.push(ev["payload"]["event"].as_str().unwrap().to_string());
        if ev["payload"]["event"] == "user.deleted" {
            assert_eq!(ev["payload"]["old"]["name"], "Renamed");
        }
    }
    // (The insert and the update coalesce when one batch holds both.)
    let leaked = db
        .count(
            "SELECT (SELECT count(*) FROM rowcast.changes
                      WHERE concat(old::text, pk::text, data::text, data_json::text) LIKE '%SECRET-HASH%')
                  + (SELECT count(*) FROM rowcast.batches WHERE changes::text LIKE '%SECRET-HASH%')",
        )
        .await;
    assert_eq!(leaked, 0);
    // Logical changes are packed into their batch's row, as the writer rendered them: no
    // row per change.
    let packed = db
        .count("SELECT count(*) FROM rowcast.log l JOIN rowcast.batches b ON l.seq BETWEEN b.first_seq AND b.last_seq WHERE b.changes IS NOT NULL AND l.data IS NOT NULL")
        .await;
    let rows = db.count("SELECT count(*) FROM rowcast.changes").await;
    assert!(
        packed > 0 && rows == 0,
        "{packed} changes packed, {rows} rows in rowcast.changes"
    );

    // A key change: the old key is deleted (with its old row), the new one inserted.
    let kb: i64 = pg
        .query_one(
            "INSERT INTO kb_articles (title, body) VALUES ('Moving', 'x') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(c.next_event().await["payload"]["event"], "kb.created");
    pg.execute(
        "UPDATE kb_articles SET id = 9000, title = 'Moved' WHERE id = $1",
        &[&kb],
    )
    .await
    .unwrap();
    let del = c.next_event().await;
    let ins = c.next_event().await;
    assert_eq!(del["payload"]["event"], "kb.deleted", "{del}");
    assert_eq!(del["payload"]["id"], json!(kb));
    assert_eq!(del["payload"]["old"]["title"], "Moving");
    assert_eq!(ins["payload"]["event"], "kb.created", "{ins}");
    assert_eq!(ins["payload"]["data"]["title"], "Moved");

    // A notification reaches its recipient with the related entity, and nobody else.
    let t3 = server.token("3", "customer");
    let (mut n3, _) = WsClient::connect(&server.ws_url(&format!("token={t3}"))).await;
    let comment: i64 = pg
        .query_one(
            "INSERT INTO comments (ticket_id, author_id, body) VALUES (1, 1, 'We are on it') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    pg.execute(
        "INSERT INTO notifications (user_id, type, message, related_id, related_type) VALUES (3, 'comment', 'New reply', $1::bigint::text, 'comment')",
        &[&comment],
    )
    .await
    .unwrap();
    let ev = n3.next_event().await;
    assert_eq!(ev["event"], "notification", "{ev}");
    assert_eq!(ev["payload"]["notification"]["message"], "New reply");
    assert_eq!(ev["payload"]["data"]["body"], "We are on it");
    assert!(
        c.maybe_json(300).await.is_none(),
        "agent sees no notification"
    );
    // The application's transactions wrote no log rows themselves (trigger mode's rows
    // start without a seq): every row came from the slot consumer, seq included.
    let unsequenced = db
        .count("SELECT count(*) FROM rowcast.changes WHERE seq IS NULL")
        .await;
    assert_eq!(unsequenced, 0);
    server.stop().await;
}

/// Transactions committing in the opposite order of their start: both delivered, in
/// commit order, and the open one holds nothing back.
#[tokio::test]
async fn logical_capture_follows_commit_order() {
    let (db, server) = support::start_with(logical).await;
    crate::core::commit_out_of_order(&db, &server).await;
    server.stop().await;
}

/// The WAL sender sends only WAL that is flushed, and with the application committing
/// asynchronously the WAL writer flushes it (here once every 10 s). The writer's own commits
/// flush it too: under a steady stream of commits each event arrives within a second, not
/// with the next 10-second flush. (The stream must be dense enough that commits land
/// between two writes of rowcast; a trickle waits for the WAL writer, as any logical
/// decoding client does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_writer_commits_flush_the_applications_asynchronous_wal() {
    let db = Db::start_with(PgTempOptions {
        fsync: false,
        settings: vec![
            ("synchronous_commit".into(), "off".into()),
            ("wal_writer_delay".into(), "10s".into()),
            ("wal_writer_flush_after".into(), "1GB".into()),
        ],
    })
    .await;
    let mut config = db.config();
    logical(&mut config);
    db.migrate(&config).await;
    let server = support::Server::start(config).await;
    let token = server.token("1", "agent");
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={token}&rooms=tickets"))).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "joined");
    // One session committing as fast as it can (to a table the client has not joined: it
    // receives only the probes).
    let stop = tokio_util::sync::CancellationToken::new();
    let steady = {
        let (pg, stop) = (db.client().await, stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                pg.execute("UPDATE users SET name = 'steady' WHERE id = 2", &[])
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let pg = db.client().await;
    // The first event may wait for the WAL writer's flush (10 s).
    pg.execute("UPDATE tickets SET subject = 'first' WHERE id = 1", &[])
        .await
        .unwrap();
    let first = c.maybe_json(15_000).await;
    assert_eq!(first.unwrap()["payload"]["data"]["subject"], "first");
    // Then ten probes 100 ms apart, well before the WAL writer's next flush: without the
    // writer's own flushes none would arrive before it.
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let probes = {
        let (pg, sent) = (db.client().await, sent.clone());
        tokio::spawn(async move {
            for i in 0..10 {
                sent.lock().unwrap().push(std::time::Instant::now());
                pg.execute(
                    "UPDATE tickets SET subject = $1 WHERE id = 1",
                    &[&format!("probe {i}")],
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let t0 = std::time::Instant::now();
    let mut lags = Vec::new();
    while let Some(ev) = c
        .maybe_json(3000u64.saturating_sub(t0.elapsed().as_millis() as u64))
        .await
    {
        let subject = ev["payload"]["data"]["subject"]
            .as_str()
            .unwrap_or_default();
        if let Some(i) = subject.strip_prefix("probe ") {
            let at = sent.lock().unwrap()[i.parse::<usize>().unwrap()];
            lags.push(at.elapsed());
        }
    }
    probes.await.unwrap();
    let fast = lags.iter().filter(|l| **l < Duration::from_secs(1)).count();
    assert!(
        fast >= 1,
        "no probe arrived within 1 s of its commit: {lags:?}"
    );
    stop.cancel();
    assert!(steady.await.unwrap() > 100);
    server.stop().await;
}

/// `kill -9` during a burst and a PostgreSQL restart during writes: a resuming client gets
/// every committed insert once, and the log holds each exactly once although the slot
/// sends the unacknowledged transactions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_capture_is_exactly_once_through_kill_9_and_postgres_restart() {
    let (db, config, mut rc, mut c, token) = logical_process().await;
    let writer = Writer::start(&db.url, "lw");
    let mut got = Received::default();
    c.receive_ids(&mut got, 40).await;
    rc.kill9();
    c.drain_ids(&mut got).await;
    let port = rc.port;
    drop(rc);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rc = Proc::start(&config, port, &[]).await;
    let last = &got.last;
    let (mut c, _) =
        WsClient::connect(&rc.ws_url(&format!("token={token}&rooms=tickets&since={last}"))).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "joined");
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| db.pg.restart()).expect("restart PostgreSQL");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let want = writer.stop().await;
    assert!(want.len() > 80, "the writer kept writing ({})", want.len());
    // rowcast keeps its sessions while it reconnects to PostgreSQL: events continue in order.
    c.resume_ids(&mut got, &want).await;
    let dups = db
        .count(
            "SELECT count(*) FROM (SELECT pk FROM rowcast.log
               WHERE tbl = 'public.tickets' AND op = 'i' GROUP BY pk HAVING count(*) > 1) d",
        )
        .await;
    assert_eq!(dups, 0, "each insert is in the log once");
    let logged = db
        .count("SELECT count(*) FROM rowcast.log WHERE tbl = 'public.tickets' AND op = 'i'")
        .await;
    assert_eq!(
        logged as usize,
        want.len(),
        "every committed insert is logged"
    );
    drop(rc);
}

/// Each write moves the stored position from where the writer left it, without reading it
/// first: a position moved behind its back (as another writer would) fails the write, which
/// rolls back; capture starts again from the stored position and the change is logged and
/// delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_capture_refuses_a_stored_position_moved_by_another_writer() {
    let (db, _config, rc, mut c, _token) = logical_process().await;
    let pg = db.client().await;
    let insert = "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3)";
    pg.execute(insert, &[&"before"]).await.unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["data"]["subject"], "before");
    let metric = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("rowcast_capture_errors_total "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let errors_before = metric(&support::metrics_text(&rc.http()).await);
    // Another writer moves the position (one byte on: still before the next commit).
    pg.execute(
        "UPDATE rowcast.slot_positions SET lsn = lsn + 1::numeric",
        &[],
    )
    .await
    .unwrap();
    pg.execute(insert, &[&"after"]).await.unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["data"]["subject"], "after");
    let errors_after = metric(&support::metrics_text(&rc.http()).await);
    assert!(
        errors_after > errors_before,
        "the write found the position moved and capture started again ({errors_before} → {errors_after})"
    );
    pg.execute(insert, &[&"later"]).await.unwrap();
    let ev = c.next_event().await;
    assert_eq!(
        ev["payload"]["data"]["subject"], "later",
        "one event each, in order"
    );
    let logged = db
        .count(
            "SELECT count(*) FROM rowcast.log
              WHERE tbl = 'public.tickets' AND data->>'subject' = 'after'",
        )
        .await;
    assert_eq!(logged, 1, "the change is in the log once");
    let stored_moved = db
        .count(
            "SELECT count(*) FROM rowcast.slot_positions
              WHERE lsn >= (SELECT confirmed_flush_lsn FROM pg_replication_slots
                             WHERE slot_name = 'rowcast')",
        )
        .await;
    assert_eq!(
        stored_moved, 1,
        "the stored position is at or past the acknowledged one"
    );
    drop(rc);
}

/// One transaction: 300 inserts, 100 updates, then one DELETE of 150 rows (whose old rows
/// come as messages at the end of the statement, after every row's delete).
const LARGE_TRANSACTION: &str = "BEGIN;
    INSERT INTO tickets (subject, requester_id)
         SELECT 'bulk ' || n, 3 FROM generate_series(1, 300) n;
    UPDATE tickets SET status = 'pending'
     WHERE id IN (SELECT id FROM tickets WHERE subject LIKE 'bulk %' ORDER BY id LIMIT 100);
    DELETE FROM tickets
     WHERE id IN (SELECT id FROM tickets WHERE subject LIKE 'bulk %' ORDER BY id DESC LIMIT 150);
    COMMIT";

/// A transaction larger than `capture.batch_size` is written in chunks before its commit
/// arrives (the sequencer holds one chunk, not the whole transaction): every change is in
/// the log once, in order, deletes with their old rows although those came after the
/// deletes were written, and clients get the deletes with their old rows. A large
/// transaction the slot sends again after it was written (at or before the stored
/// position) is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_capture_writes_a_large_transaction_in_chunks() {
    let db = Db::start().await;
    let mut config = db.config();
    logical(&mut config);
    db.migrate(&config).await;
    let small_batches = [("ROWCAST_CAPTURE_BATCH_SIZE", "50".to_string())];
    let rc = Proc::start(&config, 0, &small_batches).await;
    let token = support::token("1", "agent");
    let (mut c, _) = WsClient::connect(&rc.ws_url(&format!("token={token}&rooms=tickets"))).await;
    assert_eq!(c.next_json().await.unwrap()["type"], "joined");
    let pg = db.client().await;
    pg.batch_execute(LARGE_TRANSACTION).await.unwrap();

    let mut deleted = 0;
    while deleted < 150 {
        let ev = c.next_event().await;
        if ev["payload"]["event"] == "ticket.deleted" {
            let subject = ev["payload"]["old"]["subject"].as_str().unwrap_or_default();
            assert!(subject.starts_with("bulk "), "old row of a delete: {ev}");
            deleted += 1;
        }
    }
    let counts: Vec<(String, i64, i64)> = pg
        .query(
            "SELECT op::text, count(*), count(*) FILTER (WHERE old ? 'subject')
               FROM rowcast.log WHERE tbl = 'public.tickets' GROUP BY op ORDER BY op",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        counts,
        [
            ("d".to_string(), 150, 150),
            ("i".to_string(), 300, 0),
            ("u".to_string(), 100, 0)
        ],
        "each change once; every delete with its old row"
    );
    let out_of_order = db
        .count(
            "SELECT count(*) FROM (
               SELECT op, lag(op) OVER (PARTITION BY pk ORDER BY seq) AS before
                 FROM rowcast.log WHERE tbl = 'public.tickets') x
              WHERE (op = 'i' AND before IS NOT NULL) OR (op <> 'i' AND before IS NULL)",
        )
        .await;
    assert_eq!(out_of_order, 0, "per row: the insert first, in seq order");
    let metrics = support::metrics_text(&rc.http()).await;
    assert!(
        metrics.contains("rowcast_capture_large_transactions_total 1"),
        "the transaction was written in chunks: {}",
        metrics
            .lines()
            .filter(|l| l.contains("rowcast_capture"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(rc);

    // The slot sends a large transaction again: one committed while rowcast was down,
    // with the stored position moved past it as if it had been written before a crash.
    let logged_before = db.count("SELECT count(*) FROM rowcast.log").await;
    pg.batch_execute(LARGE_TRANSACTION).await.unwrap();
    pg.execute(
        "UPDATE rowcast.slot_positions SET lsn = pg_current_wal_insert_lsn()",
        &[],
    )
    .await
    .unwrap();
    let rc = Proc::start(&config, 0, &small_batches).await;
    pg.execute(
        "INSERT INTO tickets (subject, requester_id) VALUES ('after the replay', 3)",
        &[],
    )
    .await
    .unwrap();
    let logged: Vec<String> = support::eventually(30, || async {
        let rows = pg
            .query(
                "SELECT pk::text FROM rowcast.log ORDER BY seq OFFSET $1",
                &[&logged_before],
            )
            .await
            .unwrap();
        (!rows.is_empty()).then(|| rows.iter().map(|r| r.get(0)).collect())
    })
    .await;
    assert_eq!(
        logged.len(),
        1,
        "only the insert after the replayed transaction is logged: {logged:?}"
    );
    drop(rc);
}

/// `migrate` sets up the publication and the slot; `check` notices what is missing; going
/// back to trigger mode removes the slot (an idle slot would keep WAL forever); a server
/// without `wal_level = logical` gets a clear refusal.
#[tokio::test]
async fn logical_mode_migrate_check_and_switch_back() {
    let db = Db::start().await;
    let mut config = db.config();
    logical(&mut config);
    db.migrate(&config).await;
    let pg = db.client().await;
    let slot = rowcast::changelog::slot(&pg, "rowcast").await.unwrap();
    assert_eq!(slot.and_then(|s| s.plugin).as_deref(), Some("pgoutput"));
    let published: Vec<String> = pg
        .query(
            "SELECT tablename || ':' || array_to_string(attnames, ',') FROM pg_publication_tables
              WHERE pubname = 'rowcast' ORDER BY tablename",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        published.contains(&"users:id,email,name,role,created_at,updated_at".to_string()),
        "every column but the hidden password_hash is published: {published:?}"
    );
    assert_eq!(published.len(), 6, "{published:?}");
    // Migrating again is a no-op that succeeds.
    db.migrate(&config).await;
    assert!(
        rowcast::migrate::check(&pg, &config.tables, &config.capture)
            .await
            .unwrap()
            .is_empty()
    );
    pg.batch_execute("ALTER PUBLICATION rowcast DROP TABLE comments")
        .await
        .unwrap();
    pg.execute("SELECT pg_drop_replication_slot('rowcast')", &[])
        .await
        .unwrap();
    let problems = rowcast::migrate::check(&pg, &config.tables, &config.capture)
        .await
        .unwrap();
    let text = problems.join("\n");
    assert!(
        text.contains("replication slot rowcast does not exist"),
        "{text}"
    );
    assert!(
        text.contains("public.comments: not in publication rowcast"),
        "{text}"
    );
    db.migrate(&config).await;
    assert!(
        rowcast::migrate::check(&pg, &config.tables, &config.capture)
            .await
            .unwrap()
            .is_empty()
    );

    // Back to triggers: the slot and publication go, the full trigger comes back.
    let mut triggers = db.config();
    triggers.capture.mode = CaptureMode::Triggers;
    let mut client = db.client().await;
    let report = rowcast::migrate::migrate(&mut client, &triggers.tables, &triggers.capture)
        .await
        .unwrap()
        .join("\n");
    assert!(
        report.contains("replication slot rowcast dropped"),
        "{report}"
    );
    assert!(report.contains("publication rowcast dropped"), "{report}");
    let slots = db.count("SELECT count(*) FROM pg_replication_slots").await;
    assert_eq!(slots, 0);
    assert!(
        rowcast::migrate::check(&pg, &triggers.tables, &triggers.capture)
            .await
            .unwrap()
            .is_empty()
    );
    // Serving in logical mode without the slot is refused at start, with what to do.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = rowcast::run(
        config.clone().validate().unwrap(),
        listener,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("replication slot rowcast does not exist") && err.contains("rowcast migrate"),
        "{err}"
    );

    // A server with wal_level = replica: migrate refuses and says what to do.
    let replica = Db::start_with(PgTempOptions {
        settings: vec![("wal_level".into(), "replica".into())],
        ..Default::default()
    })
    .await;
    let mut config = replica.config();
    logical(&mut config);
    let mut client = replica.client().await;
    let err = rowcast::migrate::migrate(&mut client, &config.tables, &config.capture)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wal_level = logical") && err.contains("ALTER SYSTEM"),
        "{err}"
    );
}

/// As deployed: rowcast serves as its own non-superuser role with REPLICATION and a
/// password (SCRAM, and MD5 for older setups) on both its pool and its replication
/// connection, with only the grants the README lists.
#[tokio::test]
async fn logical_capture_as_a_password_role_with_replication() {
    let db = Db::start().await;
    let mut config = db.config();
    logical(&mut config);
    db.migrate(&config).await;
    let pg = db.client().await;
    pg.batch_execute(
        "CREATE ROLE rc_scram LOGIN REPLICATION PASSWORD 'scram-secret';
         SET password_encryption = 'md5';
         CREATE ROLE rc_md5 LOGIN REPLICATION PASSWORD 'md5-secret';
         RESET password_encryption;
         GRANT USAGE ON SCHEMA rowcast TO rc_scram, rc_md5;
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA rowcast TO rc_scram, rc_md5;
         GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA rowcast TO rc_scram, rc_md5;
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO rc_scram, rc_md5;",
    )
    .await
    .unwrap();
    let hba = db.pg.root().join("data").join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host replication postgres 127.0.0.1/32 trust\n\
         host all rc_scram 127.0.0.1/32 scram-sha-256\n\
         host replication rc_scram 127.0.0.1/32 scram-sha-256\n\
         host all rc_md5 127.0.0.1/32 md5\n\
         host replication rc_md5 127.0.0.1/32 md5\n",
    )
    .unwrap();
    pg.execute("SELECT pg_reload_conf()", &[]).await.unwrap();
    let port = db.pg.port();
    for (role, password, subject) in [
        ("rc_scram", "scram-secret", "seen with SCRAM"),
        ("rc_md5", "md5-secret", "seen with MD5"),
    ] {
        let mut config = config.clone();
        config.database_url = Some(format!(
            "postgres://{role}:{password}@127.0.0.1:{port}/postgres"
        ));
        let problems = {
            let c = support::connect(config.database_url.as_deref().unwrap()).await;
            rowcast::migrate::check(&c, &config.tables, &config.capture)
                .await
                .unwrap()
        };
        assert!(problems.is_empty(), "{role}: {problems:?}");
        let server = support::Server::start(config).await;
        let (mut c, _) =
            WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent"))))
                .await;
        c.join("tickets").await;
        pg.execute("UPDATE tickets SET subject = $1 WHERE id = 3", &[&subject])
            .await
            .unwrap();
        let ev = c.next_event().await;
        assert_eq!(ev["payload"]["data"]["subject"], subject, "{role}");
        let streaming: Vec<String> = pg
            .query("SELECT usename::text FROM pg_stat_replication", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(streaming, vec![role.to_string()]);
        server.stop().await;
        // The slot is free again before the next role takes it.
        support::eventually(10, || async {
            let active: bool = pg
                .query_one(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = 'rowcast'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (!active).then_some(())
        })
        .await;
    }
}

/// A failure that retrying cannot fix (here: the publication no longer lists the key
/// column) fails `/readyz` with its reason and what to do, and is retried slowly instead
/// of every few hundred milliseconds.
#[tokio::test]
async fn a_permanent_capture_failure_fails_readyz_with_its_reason_and_backs_off() {
    use crate::support::binary::{Rowcast, readyz, scrape, value};
    let db = Db::start().await;
    let mut config = db.config();
    logical(&mut config);
    db.migrate(&config).await;
    let rc = Rowcast::spawn(&db.url, &[("ROWCAST_CAPTURE_MODE", "logical")]).await;
    let pg = db.client().await;
    pg.batch_execute(
        "ALTER PUBLICATION rowcast SET TABLE public.tickets (subject);
         INSERT INTO tickets (subject, requester_id) VALUES ('undecodable', 3);",
    )
    .await
    .unwrap();
    let body = support::eventually(20, || async {
        let (status, body) = readyz(&rc).await;
        (status == 503 && body["capture_problem"].is_string()).then_some(body)
    })
    .await;
    let problem = body["capture_problem"].as_str().unwrap();
    assert!(
        problem.contains("does not list key column id of public.tickets")
            && problem.contains("rowcast migrate"),
        "{problem}"
    );
    let errors =
        |m: &prometheus_parse::Scrape| value(m, "rowcast_capture_errors_total", &[]).unwrap_or(0.0);
    let first = errors(&scrape(&rc).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = errors(&scrape(&rc).await);
    assert!(
        later - first <= 1.0,
        "a permanent failure is retried slowly: {} more attempts in 5 s",
        later - first
    );
    let (status, body) = readyz(&rc).await;
    assert_eq!(status, 503, "still failing: {body}");
}
