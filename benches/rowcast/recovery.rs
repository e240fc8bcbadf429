//! `recovery`: an unchanged npm `socket.io-client` in `tickets` disconnects; E events are
//! committed meanwhile (one transaction inserting E tickets); once rowcast has captured
//! them the client connects again and recovers its session through connection-state
//! recovery (`{ pid, offset }`) → time until it has all E, in order.

use std::time::{Duration, Instant};

use rowcast::pgtemp::{PgTemp, PgTempOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::clients;
use crate::setup::{self, Rowcast};

pub async fn run(events: i64) {
    println!("\n## recovery (Socket.IO connection-state recovery, {events} missed events)\n");
    let pg = PgTemp::start(PgTempOptions::default()).expect("PostgreSQL");
    let (db, config) = setup::database(&pg, 100, true).await;
    let rc = Rowcast::start(&config);
    println!("{}\n", setup::describe(&rc.config));
    let token = setup::token(&config);
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let mut child = Command::new("node")
        .arg(dir.join("recover.mjs"))
        .arg(rc.base())
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node recover.mjs (npm clients: cargo test installs them)");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut send = async |v: Value| {
        stdin
            .write_all(format!("{v}\n").as_bytes())
            .await
            .expect("to node");
    };
    let mut until = async |ty: &str| -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
                .await
                .expect("node answered within 120 s")
                .expect("read")
                .expect("node exited");
            let v: Value = serde_json::from_str(&line).expect("JSON");
            if v["type"] == ty {
                return v;
            }
        }
    };
    send(json!({"cmd": "connect", "id": "a", "auth": {"token": token}, "rooms": ["tickets"]}))
        .await;
    until("joined").await;
    db.execute("UPDATE tickets SET subject = 'seen' WHERE id = 1", &[])
        .await
        .expect("update");
    until("event").await;
    send(json!({"cmd": "pause", "id": "a"})).await;
    until("disconnect").await;
    let plain = rc.ws_url(&format!("token={token}"));
    let since = clients::hub_position(&plain).await;
    db.execute(
        "INSERT INTO tickets (subject, requester_id) SELECT 'missed ' || g, 3 FROM generate_series(1, $1::bigint) g",
        &[&events],
    )
    .await
    .expect("insert");
    let deadline = Instant::now() + Duration::from_secs(120);
    while clients::hub_position(&plain).await < since + events {
        assert!(Instant::now() < deadline, "capture did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send(json!({"cmd": "count", "id": "a", "n": events})).await;
    let t0 = Instant::now();
    send(json!({"cmd": "resume", "id": "a"})).await;
    let connected = until("connect").await;
    let counted = until("counted").await;
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "| missed events | recovered | in order | time to all (s) | events/s | rowcast RSS MB | load |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {events} | {} | {} | {elapsed:.2} | {:.0} | {:.0} | {} |",
        connected["recovered"],
        counted["ordered"],
        events as f64 / elapsed,
        rc.rss_mb(),
        setup::load_avg()
    );
    if connected["recovered"] != true || counted["ordered"] != true {
        setup::record_failure(format!("recovery: {connected} {counted}"));
    }
}
