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
//!
//! Beside the probes, every 250 ms the bench reads `pg_stat_replication`: WAL written but
//! not yet sent (the WAL sender's decoding, or a consumer not reading) and sent but not yet
//! confirmed (the consumer's writing; confirmations go out once a second). A last row runs
//! the same load with only `pg_recvlogical` streaming the slot to /dev/null: the WAL
//! sender's own lag on this machine, the floor under the logical row.

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

pub async fn run(seconds: u64, only: Option<CaptureMode>) {
    println!(
        "\n## sustained: pgbench flat out for {seconds} s (8 clients, single-row UPDATE) while rowcast consumes\n"
    );
    println!(
        "| capture | app TPS | events delivered | probes delivered | probe lag p50 ms | p99 ms | max ms | caught up after ms | rowcast CPU % | WAL not yet sent, max MB | sent, not yet confirmed, max MB | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut configs = Vec::new();
    for mode in [CaptureMode::Triggers, CaptureMode::Logical] {
        if only.is_none_or(|m| m == mode) {
            configs.push(one(mode, seconds).await);
        }
    }
    if only.is_none() {
        decoding_alone(seconds).await;
    }
    println!();
    for c in configs {
        println!("{c}");
    }
}

async fn one(mode: CaptureMode, seconds: u64) -> String {
    let pg = cpu_bound_cluster();
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
    // The one client takes every event of a table written at 10k+ per second on cores it
    // shares with pgbench: room for seconds of events, so that what is measured is
    // capture and not the slow-session limit (a session over it is closed, 4008).
    config.hub.session_queue = 1 << 20;
    config.hub.session_queue_bytes = 512 << 20;
    setup::migrate_now(&config).await;
    let rc = Rowcast::start(&config);
    let describe = setup::describe(&rc.config);
    let token = setup::token(&config);
    let mut ws = clients::ws(&rc.ws_url(&format!("token={token}&rooms=tickets"))).await;
    let reader = tokio::spawn(async move {
        let mut events = 0u64;
        let mut probes: HashMap<u64, f64> = HashMap::new();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = &m {
                setup::record_failure(format!("sustained: rowcast closed the client: {frame:?}"));
                break;
            }
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
    let wal = WalSampler::start(&pg).await;
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
    let wal = wal.stop().await;
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
    if let Some(path) = std::env::var_os("BENCH_DUMP") {
        // `key seconds_since_start lag_ms` per probe, to see when the slow ones happen.
        let start = commits.values().copied().fold(f64::INFINITY, f64::min);
        let mut rows: Vec<(u64, f64, f64)> = commits
            .iter()
            .filter_map(|(k, c)| first_at_or_after.get(k).map(|a| (*k, c, (a - c).max(0.0))))
            .map(|(k, c, l)| (k, (c - start) / 1000.0, l))
            .collect();
        rows.sort_by(|a, b| a.1.total_cmp(&b.1));
        let text: String = rows
            .iter()
            .map(|(k, at, l)| format!("{k} {at:.1} {l:.1}\n"))
            .collect();
        std::fs::write(path, text).expect("write BENCH_DUMP");
    }
    lag.sort_by(|a, b| a.total_cmp(b));
    let caught_up = arrived.get(&last).map(|a| a - stopped).unwrap_or(f64::NAN);
    let missing = commits.len() - 1 - lag.len();
    if missing > 0 {
        setup::record_failure(format!(
            "sustained {mode:?}: {missing} probes never arrived"
        ));
    }
    println!(
        "| {mode:?} | {tps:.0} | {events} | {} of {} ({coalesced} coalesced) | {:.1} | {:.1} | {:.1} | {caught_up:.0} | {cpu:.0} | {wal} | {} |",
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

/// A cluster as `capture-overhead`'s CPU-bound half: fsync on, commits not waiting for the
/// flush.
fn cpu_bound_cluster() -> PgTemp {
    PgTemp::start(PgTempOptions {
        fsync: true,
        settings: vec![("synchronous_commit".into(), "off".into())],
    })
    .expect("PostgreSQL")
}

/// Samples, every 250 ms, how far the WAL senders are behind: WAL written but not yet sent
/// (the sender's decoding) and sent but not yet confirmed (the consumer's writing). The
/// maxima over the run, in MB, per sender (there is one: rowcast's or `pg_recvlogical`).
struct WalSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(f64, f64)>,
}

impl WalSampler {
    async fn start(pg: &PgTemp) -> WalSampler {
        let db = setup::connect(&pg.url("postgres")).await;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut unsent, mut unconfirmed) = (0f64, 0f64);
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let rows = db
                    .query(
                        "SELECT (pg_current_wal_lsn() - sent_lsn)::float8, \
                                (sent_lsn - coalesce(flush_lsn, '0/0'))::float8 \
                           FROM pg_stat_replication",
                        &[],
                    )
                    .await
                    .unwrap_or_default();
                for r in rows {
                    unsent = unsent.max(r.get::<_, f64>(0) / 1e6);
                    unconfirmed = unconfirmed.max(r.get::<_, f64>(1) / 1e6);
                }
            }
            (unsent, unconfirmed)
        });
        WalSampler { stop, task }
    }

    /// The maxima, as the table's two cells.
    async fn stop(self) -> String {
        let _ = self.stop.send(());
        let (unsent, unconfirmed) = self.task.await.expect("sampler");
        format!("{unsent:.1} | {unconfirmed:.1}")
    }
}

/// The same load with only `pg_recvlogical` streaming a `pgoutput` slot to /dev/null: how
/// far the WAL sender alone falls behind on this machine, beside rowcast's logical row.
async fn decoding_alone(seconds: u64) {
    let pg = cpu_bound_cluster();
    let (db, mut config) = setup::database(&pg, TICKETS, false).await;
    config.capture.mode = CaptureMode::Logical;
    setup::migrate_now(&config).await;
    db.batch_execute("SELECT pg_create_logical_replication_slot('bench_discard', 'pgoutput')")
        .await
        .expect("slot");
    let mut recv = overhead::recvlogical(&pg, "bench_discard");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wal = WalSampler::start(&pg).await;
    let tps = tokio::task::block_in_place(|| overhead::pgbench(&pg, seconds));
    let stopped = Instant::now();
    let target: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    // Caught up: the sender has sent everything written before pgbench stopped.
    let caught_up = loop {
        let done: bool = db
            .query_one(
                "SELECT coalesce(bool_and(sent_lsn >= $1::text::pg_lsn), false) FROM pg_stat_replication",
                &[&target],
            )
            .await
            .expect("sent")
            .get(0);
        if done || stopped.elapsed() > Duration::from_secs(300) {
            break stopped.elapsed().as_millis();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let wal = wal.stop().await;
    let _ = recv.kill();
    let _ = recv.wait();
    println!(
        "| decoding alone (pg_recvlogical) | {tps:.0} | | | | | | {caught_up} | | {wal} | {} |",
        setup::load_avg()
    );
}
