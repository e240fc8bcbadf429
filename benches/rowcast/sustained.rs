//! `sustained [--seconds S]`: pgbench flat out (8 clients, single-row UPDATE of 10,000
//! tickets) for S seconds (default 60) while rowcast consumes, in both capture modes.
//!
//! The cluster runs with `fsync=on` and `synchronous_commit=off` (the CPU-bound half of
//! `capture-overhead`: the most writes per second this machine makes).
//!
//! Lag is measured with probes: every 200 ms the bench updates one more ticket that pgbench
//! never touches (`subject = 'p<k>'`) and notes the commit time; a `/ws` client in
//! `tickets` notes when each probe's event arrives. A probe's lag is arrival minus commit:
//! capture, sequencing, reading and delivery together (an upper bound of the capture lag).
//! Events come in commit order, so when the probe written after pgbench stopped arrives,
//! everything pgbench wrote is in the log and delivered: "caught up after" is that arrival
//! minus the moment pgbench stopped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rowcast::config::CaptureMode;
use rowcast::pgtemp::{PgTemp, PgTempOptions};
use tokio_tungstenite::tungstenite::Message;

use crate::clients;
use crate::overhead;
use crate::setup::{self, Rowcast};

const TICKETS: i64 = 10_000;

/// The probe's key in an event's text (`"subject":"p<k>"`), without parsing the JSON.
fn probe_key(text: &str) -> Option<u64> {
    let at = text.find("\"subject\":\"p")? + "\"subject\":\"p".len();
    let digits = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

pub async fn run(seconds: u64) {
    println!(
        "\n## sustained: pgbench flat out for {seconds} s (8 clients, single-row UPDATE) while rowcast consumes\n"
    );
    println!(
        "| capture | app TPS | events delivered | probes delivered | probe lag p50 ms | p99 ms | max ms | caught up after ms | rowcast CPU % | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut configs = Vec::new();
    for mode in [CaptureMode::Triggers, CaptureMode::Logical] {
        configs.push(one(mode, seconds).await);
    }
    println!();
    for c in configs {
        println!("{c}");
    }
}

async fn one(mode: CaptureMode, seconds: u64) -> String {
    // As `capture-overhead`'s CPU-bound half: fsync on, commits not waiting for the flush.
    let pg = PgTemp::start(PgTempOptions {
        fsync: true,
        settings: vec![("synchronous_commit".into(), "off".into())],
    })
    .expect("PostgreSQL");
    let (db, mut config) = setup::database(&pg, TICKETS, false).await;
    let probe: i64 = db
        .query_one(
            "INSERT INTO tickets (subject, requester_id) VALUES ('probe', 3) RETURNING id",
            &[],
        )
        .await
        .expect("probe row")
        .get(0);
    assert!(probe > TICKETS, "the probe row is outside pgbench's ids");
    config.capture.mode = mode;
    setup::migrate_now(&config).await;
    let rc = Rowcast::start(&config);
    let describe = setup::describe(&rc.config);
    let token = setup::token(&config);
    let mut ws = clients::ws(&rc.ws_url(&format!("token={token}&rooms=tickets"))).await;
    let reader = tokio::spawn(async move {
        let mut events = 0u64;
        let mut probes: HashMap<u64, f64> = HashMap::new();
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(text) = m else { continue };
            let t = setup::epoch_ms();
            events += 1;
            if let Some(k) = probe_key(text.as_str()) {
                probes.insert(k, t);
                if k == u64::MAX / 2 {
                    break;
                }
            }
        }
        (events, probes)
    });

    let cpu0 = rc.cpu_secs();
    let probe_db = setup::connect(&pg.url("postgres")).await;
    let probes = tokio::spawn(async move {
        let stmt = probe_db
            .prepare("UPDATE tickets SET subject = $1 WHERE id = $2")
            .await
            .expect("prepare");
        let mut commits = HashMap::new();
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut k = 0u64;
        while started.elapsed() < Duration::from_secs(seconds) {
            tick.tick().await;
            probe_db
                .execute(&stmt, &[&format!("p{k}"), &probe])
                .await
                .expect("probe");
            commits.insert(k, setup::epoch_ms());
            k += 1;
        }
        commits
    });
    // pgbench blocks this worker thread; the probes run on the runtime's other one.
    let tps = tokio::task::block_in_place(|| overhead::pgbench(&pg, seconds));
    let stopped = setup::epoch_ms();
    let mut commits = probes.await.expect("probes");
    // The last probe, after every pgbench transaction committed.
    let last = u64::MAX / 2;
    db.execute(
        "UPDATE tickets SET subject = $1 WHERE id = $2",
        &[&format!("p{last}"), &probe],
    )
    .await
    .expect("last probe");
    commits.insert(last, setup::epoch_ms());
    let (events, arrived) = tokio::time::timeout(Duration::from_secs(300), reader)
        .await
        .expect("the last probe did not arrive within 300 s")
        .expect("reader");
    let cpu = (rc.cpu_secs() - cpu0) / seconds as f64 * 100.0;
    // Two probes in one capture batch are one event (the row's later state): a probe counts
    // as delivered when it or a later one arrived.
    let mut first_at_or_after: HashMap<u64, f64> = HashMap::new();
    let mut keys: Vec<u64> = commits.keys().copied().collect();
    keys.sort_unstable();
    let mut soonest = f64::INFINITY;
    for k in keys.iter().rev() {
        if let Some(a) = arrived.get(k) {
            soonest = soonest.min(*a);
        }
        if soonest.is_finite() {
            first_at_or_after.insert(*k, soonest);
        }
    }
    let coalesced = commits.len() - arrived.len().min(commits.len());
    let mut lag: Vec<f64> = commits
        .iter()
        .filter(|(k, _)| **k != last)
        .filter_map(|(k, c)| first_at_or_after.get(k).map(|a| (a - c).max(0.0)))
        .collect();
    lag.sort_by(|a, b| a.total_cmp(b));
    let caught_up = arrived.get(&last).map(|a| a - stopped).unwrap_or(f64::NAN);
    let missing = commits.len() - 1 - lag.len();
    if missing > 0 {
        setup::record_failure(format!(
            "sustained {mode:?}: {missing} probes never arrived"
        ));
    }
    println!(
        "| {mode:?} | {tps:.0} | {events} | {} of {} ({coalesced} coalesced) | {:.1} | {:.1} | {:.1} | {caught_up:.0} | {cpu:.0} | {} |",
        lag.len(),
        commits.len() - 1,
        setup::percentile(&lag, 0.5),
        setup::percentile(&lag, 0.99),
        lag.last().copied().unwrap_or(f64::NAN),
        setup::load_avg(),
    );
    drop(rc);
    describe
}
