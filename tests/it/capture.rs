//! Capture under faults: PostgreSQL restarts, rowcast restarts, wake-ups, replicas.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rowcast::pgtemp::PgTempOptions;

use crate::support::writer::Writer;
use crate::support::{self, Server, ws::WsClient};

/// `pg_ctl restart` while writes continue: every committed change is delivered afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_loses_no_committed_change() {
    let (db, server) = support::start().await;
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    c.join("tickets").await;
    let writer = Writer::start(&db.url, "w");
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| db.pg.restart()).expect("restart PostgreSQL");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let want = writer.stop().await;
    assert!(
        want.len() > 50,
        "the writer kept writing ({} inserts)",
        want.len()
    );
    c.receive_all(&want, 20).await;
    server.stop().await;
}

/// rowcast stops, changes happen, a new rowcast starts: a client resuming with its last
/// `seq` gets exactly what it missed, in order.
#[tokio::test]
async fn rowcast_restart_with_resume_loses_nothing() {
    let (db, server) = support::start().await;
    let token = server.token("1", "agent");
    let (mut c, _) = WsClient::connect(&server.ws_url(&format!("token={token}"))).await;
    c.join("tickets").await;
    let pg = db.client().await;
    pg.execute("UPDATE tickets SET status = 'pending' WHERE id = 1", &[])
        .await
        .unwrap();
    let last = c.next_event().await["seq"].as_str().unwrap().to_string();
    let config = server.config.clone();
    server.stop().await;
    drop(c);
    for i in 0..20 {
        pg.execute(
            "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3)",
            &[&format!("missed-{i}")],
        )
        .await
        .unwrap();
    }
    let server = Server::start(config).await;
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={token}&since={last}&rooms=tickets")))
            .await;
    let joined = c.next_json().await.unwrap();
    assert_eq!(joined["type"], "joined");
    let mut prev: i64 = last.parse().unwrap();
    for i in 0..20 {
        let ev = c.next_event().await;
        assert_eq!(ev["payload"]["data"]["subject"], format!("missed-{i}"));
        let seq: i64 = ev["seq"].as_str().unwrap().parse().unwrap();
        assert!(seq > prev, "in order");
        prev = seq;
    }
    assert!(c.maybe_json(300).await.is_none(), "no duplicates");
    pg.execute("UPDATE tickets SET status = 'solved' WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(
        c.next_event().await["payload"]["data"]["status"],
        "solved",
        "then live events"
    );
    server.stop().await;
}

/// Triggers NOTIFY only while capture is parked, that is while fewer than
/// `capture.park_below` changes come per second: a quiet rowcast wakes at once (well before
/// its safety poll), and a busy application soon pays no NOTIFY at commit.
#[tokio::test]
async fn notify_only_while_parked() {
    let (db, server) = support::start_with(|c| {
        c.capture.idle_after = Duration::from_millis(300);
        c.capture.idle_poll = Duration::from_secs(10);
        c.capture.park_below = 100.0;
    })
    .await;
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    c.join("tickets").await;
    let pg = db.client().await;
    // A listener of our own counts the wake-up notifications.
    let (listener, mut conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let notes = Arc::new(Mutex::new(0usize));
    let counter = notes.clone();
    tokio::spawn(async move {
        let mut s = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = s.next().await {
            if let tokio_postgres::AsyncMessage::Notification(_) = m {
                *counter.lock().unwrap() += 1;
            }
        }
    });
    listener.batch_execute("LISTEN rowcast_wake").await.unwrap();
    // Wait until the sequencer is parked and settled: from then on only a NOTIFY (or the
    // 10 s safety poll) wakes it.
    let ready = format!("{}/readyz", server.http());
    support::eventually(10, || async {
        let body: serde_json::Value = reqwest::get(&ready).await.ok()?.json().await.ok()?;
        (body["capture_parked"] == true).then_some(())
    })
    .await;
    let t0 = Instant::now();
    pg.execute("UPDATE tickets SET status = 'pending' WHERE id = 1", &[])
        .await
        .unwrap();
    c.next_event().await;
    let woke = t0.elapsed();
    assert!(
        woke < Duration::from_secs(2),
        "woken by NOTIFY, not the 10 s safety poll ({woke:?})"
    );
    support::eventually(5, || async { (*notes.lock().unwrap() >= 1).then_some(()) }).await;
    // A burst far above 100 changes/s: the sequencer unparks after ~30 to 60 changes (100/s
    // over the 300 ms window, counted as it sequences them: more when it runs behind the
    // writer on a loaded machine), and from then on commits pay no NOTIFY.
    let burst = |from: usize| {
        let pg = &pg;
        async move {
            for i in from..from + 200 {
                pg.execute(
                    "UPDATE tickets SET subject = $1 WHERE id = 2",
                    &[&format!("burst {i}")],
                )
                .await
                .unwrap();
            }
        }
    };
    let before = *notes.lock().unwrap();
    burst(0).await;
    let first = *notes.lock().unwrap() - before;
    burst(200).await;
    let second = *notes.lock().unwrap() - before - first;
    assert!(
        first < 200 && second <= 5,
        "NOTIFYs at well above park_below: {first} for the first 200 transactions, \
         {second} for the next 200"
    );
    loop {
        let ev = c.next_event().await;
        if ev["payload"]["data"]["subject"] == "burst 399" {
            break;
        }
    }
    server.stop().await;
}

/// Unparked (changes come faster than `park_below`), the sequencer records one batch per
/// `active_poll`, not one per round trip: a busy application's commits are sequenced in
/// few transactions, and every one of them is still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparked_sequencer_records_one_batch_per_active_poll() {
    busy_capture_records_one_batch_per_active_poll(|_| {}).await;
}

/// The same for the logical writer: from `park_below` changes per second on, its writes
/// (a transaction each) are `active_poll` apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_logical_writer_writes_once_per_active_poll() {
    busy_capture_records_one_batch_per_active_poll(|c| {
        c.capture.mode = rowcast::config::CaptureMode::Logical
    })
    .await;
}

async fn busy_capture_records_one_batch_per_active_poll(
    tweak: impl FnOnce(&mut rowcast::Settings),
) {
    // Commits flush the WAL at once (with `synchronous_commit = off` the WAL writer would
    // flush it every 200 ms, and logical decoding would batch them by itself).
    let db = support::Db::start_with(PgTempOptions {
        fsync: false,
        settings: vec![("synchronous_commit".into(), "on".into())],
    })
    .await;
    let mut config = db.config();
    config.capture.idle_after = Duration::from_millis(300);
    config.capture.park_below = 50.0;
    config.capture.active_poll = Duration::from_millis(100);
    tweak(&mut config);
    db.migrate(&config).await;
    let server = Server::start(config).await;
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    c.join("tickets").await;
    let pg = db.client().await;
    // An insert every ~5 ms: well above 50 changes/s, so capture is busy (and the
    // trigger-mode sequencer unparks).
    let writer = Writer::start(&db.url, "busy");
    let ready = format!("{}/readyz", server.http());
    support::eventually(20, || async {
        let body: serde_json::Value = reqwest::get(&ready).await.ok()?.json().await.ok()?;
        (writer.committed() > 200 && body["capture_parked"] == false).then_some(())
    })
    .await;
    let last_batch = "SELECT coalesce(max(batch), 0) FROM rowcast.batches";
    let (b0, c0): (i64, usize) = (
        pg.query_one(last_batch, &[]).await.unwrap().get(0),
        writer.committed(),
    );
    let t0 = Instant::now();
    // For these 2 s a second writer commits as fast as it can (up to 1,500 updates): a
    // sequencer ticking back to back would find a change on nearly every tick.
    let fast = db.client().await;
    let mut updates = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        if updates < 1500 {
            fast.execute(
                "UPDATE tickets SET subject = $1 WHERE id = 2",
                &[&format!("fast {updates}")],
            )
            .await
            .unwrap();
            updates += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let b1: i64 = pg.query_one(last_batch, &[]).await.unwrap().get(0);
    let (elapsed, written) = (t0.elapsed(), writer.committed() - c0 + updates);
    let want = writer.stop().await;
    let batches = (b1 - b0) as f64;
    let most = elapsed.as_secs_f64() / 0.1 + 3.0;
    assert!(
        batches <= most && batches >= 5.0,
        "{batches} batches in {elapsed:?} for {written} commits (one per 100 ms: at most {most})"
    );
    c.receive_all(&want, 20).await;
    server.stop().await;
}

/// Two replicas on one database: one sequences, both deliver the same seqs; when the
/// sequencer stops the other takes over.
#[tokio::test]
async fn replicas_agree_and_fail_over() {
    replicas_agree_and_fail_over_with(|_| {}).await;
}

/// The same with logical capture: the sequencer streams the slot, and the survivor takes
/// the slot over.
#[tokio::test]
async fn replicas_agree_and_fail_over_with_logical_capture() {
    replicas_agree_and_fail_over_with(|c| c.capture.mode = rowcast::config::CaptureMode::Logical)
        .await;
}

async fn replicas_agree_and_fail_over_with(tweak: impl FnOnce(&mut rowcast::Settings)) {
    let (db, a) = support::start_with(tweak).await;
    let b = Server::start(a.config.clone()).await;
    let token = a.token("1", "agent");
    let (mut ca, _) = WsClient::connect(&a.ws_url(&format!("token={token}"))).await;
    let (mut cb, _) = WsClient::connect(&b.ws_url(&format!("token={token}"))).await;
    ca.join("tickets").await;
    cb.join("tickets").await;
    let pg = db.client().await;
    for i in 0..20 {
        pg.execute(
            "UPDATE tickets SET subject = $1 WHERE id = 1 + $2::bigint % 3",
            &[&format!("r{i}"), &(i as i64)],
        )
        .await
        .unwrap();
    }
    // Each replica coalesces the changes of one row within the batches it happens to read,
    // so the two may deliver different subsets of the seqs; but every seq either delivers
    // names the change the log has at that seq, in order, and both end at the last change
    // of every row.
    let last: i64 = support::eventually(10, || async {
        let r = pg
            .query_one(
                // Every change row is numbered (packed changes have no row of their own).
                "SELECT (SELECT count(*) FROM rowcast.changes) - count(id), max(seq), count(*)
                   FROM rowcast.log",
                &[],
            )
            .await
            .unwrap();
        (r.get::<_, i64>(0) == 0 && r.get::<_, i64>(2) >= 20).then(|| r.get::<_, i64>(1))
    })
    .await;
    let log: std::collections::HashMap<i64, serde_json::Value> = pg
        .query("SELECT seq, pk->0 FROM rowcast.log", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut last_of_row = std::collections::BTreeMap::new();
    for (seq, id) in &log {
        let e = last_of_row.entry(id.to_string()).or_insert(*seq);
        *e = (*e).max(*seq);
    }
    for client in [&mut ca, &mut cb] {
        let mut prev = 0i64;
        let mut ends = std::collections::BTreeMap::new();
        loop {
            let e = client.next_event().await;
            let seq: i64 = e["seq"].as_str().unwrap().parse().unwrap();
            assert!(seq > prev, "in log order: {seq} after {prev}");
            prev = seq;
            assert_eq!(
                log.get(&seq),
                Some(&e["payload"]["id"]),
                "seq {seq} names the change the log has at that seq"
            );
            ends.insert(e["payload"]["id"].to_string(), seq);
            if seq >= last {
                break;
            }
        }
        assert_eq!(ends, last_of_row, "every row ends at its last change");
    }
    let leaders: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                AND ((classid::bigint << 32) | objid::bigint) = $1",
            &[&rowcast::changelog::SEQUENCER_LOCK],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaders, 1, "exactly one sequencer");
    // Stop both one after the other; the survivor keeps delivering.
    a.stop().await;
    pg.execute(
        "UPDATE tickets SET subject = 'after failover' WHERE id = 1",
        &[],
    )
    .await
    .unwrap();
    loop {
        let e = cb.next_event().await;
        if e["payload"]["data"]["subject"] == "after failover" {
            break;
        }
    }
    b.stop().await;
}

/// A change-log row rowcast cannot read (an unknown op code) is counted, logged once and
/// passed: capture moves past it at once instead of reading it again forever, and the
/// changes after it are delivered.
#[tokio::test]
async fn a_malformed_log_row_is_counted_once_and_passed() {
    use crate::support::binary::{Rowcast, readyz, scrape, value};
    let db = support::Db::start().await;
    db.migrate(&db.config()).await;
    let rc = Rowcast::spawn(&db.url, &[]).await;
    let (mut c, _) =
        WsClient::connect(&rc.ws_url(&format!("token={}", support::token("1", "agent")))).await;
    c.join("tickets").await;
    let pg = db.client().await;
    pg.execute(
        "INSERT INTO rowcast.changes (op, tbl, pk) VALUES ('x', 'public.tickets', '[1]')",
        &[],
    )
    .await
    .unwrap();
    let bad: i64 = support::eventually(10, || async {
        pg.query_opt("SELECT seq FROM rowcast.log WHERE op = 'x'", &[])
            .await
            .unwrap()
            .map(|r| r.get::<_, i64>(0))
    })
    .await;
    // Nothing follows it, yet capture's position moves past it.
    support::eventually(10, || async {
        let (_, body) = readyz(&rc).await;
        let at: i64 = body["position"].as_str()?.parse().ok()?;
        (at >= bad).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = scrape(&rc).await;
    assert_eq!(
        value(&metrics, "rowcast_changelog_malformed_total", &[]),
        Some(1.0),
        "counted once, not on every poll"
    );
    let logged = rc
        .logs()
        .iter()
        .filter(|l| l.contains("unknown op code"))
        .count();
    assert_eq!(logged, 1, "logged once");
    pg.execute("UPDATE tickets SET status = 'pending' WHERE id = 1", &[])
        .await
        .unwrap();
    let ev = c.next_event().await;
    assert_eq!(ev["payload"]["data"]["status"], "pending");
    let (status, body) = readyz(&rc).await;
    assert_eq!(status, 200, "{body}");
}

/// Replicas do not poll on the live path: with a 30 s safety poll, the replica that does not
/// sequence still delivers each change at once, woken by the sequencer's NOTIFY per batch.
#[tokio::test]
async fn replicas_are_woken_by_the_sequencer_not_by_polling() {
    let (db, a) = support::start_with(|c| c.capture.idle_poll = Duration::from_secs(30)).await;
    let b = Server::start(a.config.clone()).await;
    let token = a.token("1", "agent");
    let (mut ca, _) = WsClient::connect(&a.ws_url(&format!("token={token}"))).await;
    let (mut cb, _) = WsClient::connect(&b.ws_url(&format!("token={token}"))).await;
    ca.join("tickets").await;
    cb.join("tickets").await;
    let pg = db.client().await;
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let subject = format!("woken {i}");
        let t0 = Instant::now();
        pg.execute("UPDATE tickets SET subject = $1 WHERE id = 1", &[&subject])
            .await
            .unwrap();
        for c in [&mut ca, &mut cb] {
            let ev = c.next_event().await;
            assert_eq!(ev["payload"]["data"]["subject"], subject.as_str());
        }
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "both replicas deliver at once, not on a poll ({took:?})"
        );
    }
    a.stop().await;
    b.stop().await;
}
