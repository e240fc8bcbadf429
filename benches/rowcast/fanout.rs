//! `fanout`: N `/ws` clients in one room; a burst of E updates of distinct rows in one
//! transaction → events delivered per second until every client
//! has every event. E is chosen so that each size delivers about one million events.
//! A size whose deliveries do not all arrive before the deadline is no measurement: its
//! row says `TIMED OUT, n of m delivered` and the bench exits with status 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rowcast::pgtemp::{PgTemp, PgTempOptions};
use tokio_tungstenite::tungstenite::Message;

use crate::clients;
use crate::setup::{self, Rowcast};

const DELIVERIES: usize = 1_000_000;
/// How long every delivery of one size may take (`--seconds` overrides it).
const DEADLINE: Duration = Duration::from_secs(60);

pub async fn run(sizes: &[usize], deadline_secs: Option<u64>) {
    let deadline = deadline_secs.map_or(DEADLINE, Duration::from_secs);
    println!(
        "\n## fanout (/ws, every client in `tickets`, ~1M deliveries per size, deadline {} s)\n",
        deadline.as_secs()
    );
    let pg = PgTemp::start(PgTempOptions::default()).expect("PostgreSQL");
    let (db, config) = setup::database(&pg, 1000, true).await;
    println!("{}\n", setup::describe(&config));
    println!(
        "| clients | events | deliveries expected | delivered | closed as too slow | seconds | deliveries/s | rowcast CPU s | bench clients CPU s | rowcast RSS MB | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (round, &n) in sizes.iter().enumerate() {
        let events = (DELIVERIES / n).clamp(1, 1000);
        let rc = Rowcast::start(&config);
        let token = setup::token(&config);
        let url = rc.ws_url(&format!("token={token}&rooms=tickets"));
        let conns = clients::many(n, 64, |_| clients::ws(&url)).await;
        let delivered = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for mut ws in conns {
            let delivered = delivered.clone();
            let closed = closed.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(m)) = ws.next().await {
                    match m {
                        Message::Text(t) if t.as_str().starts_with("{\"type\":\"event\"") => {
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Message::Close(Some(f)) if u16::from(f.code) == 4008 => {
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let expected = (n * events) as u64;
        let (cpu_rc, cpu_me) = (rc.cpu_secs(), setup::own_cpu_secs());
        let perf = setup::Perf::attach(rc.pid());
        let t0 = Instant::now();
        // One transaction updating E distinct rows: the burst reaches rowcast at once, so
        // the measurement is capture + enrich + fan-out + client reads, not commit speed.
        db.execute(
            "UPDATE tickets SET subject = 'f' || $1::text || '-' || id WHERE id <= $2",
            &[&round.to_string(), &(events as i64)],
        )
        .await
        .expect("update");
        let mut elapsed = t0.elapsed();
        while delivered.load(Ordering::Relaxed) < expected && t0.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
            elapsed = t0.elapsed();
        }
        drop(perf);
        let got = delivered.load(Ordering::Relaxed);
        let (cpu_rc, cpu_me) = (rc.cpu_secs() - cpu_rc, setup::own_cpu_secs() - cpu_me);
        let rss = rc.rss_mb();
        let closed = closed.load(Ordering::Relaxed);
        // A run in which not every delivery arrived measured nothing: say so, never a rate.
        let rate = if got >= expected {
            format!("{:.0}", got as f64 / elapsed.as_secs_f64())
        } else {
            let what = format!(
                "TIMED OUT, {got} of {expected} delivered ({closed} clients closed as too slow)"
            );
            setup::record_failure(format!(
                "fanout {n} clients: {what} within {} s",
                deadline.as_secs()
            ));
            format!("**{what}**")
        };
        println!(
            "| {n} | {events} | {expected} | {got} | {closed} | {:.2} | {rate} | {cpu_rc:.1} | {cpu_me:.1} | {rss:.0} | {} |",
            elapsed.as_secs_f64(),
            setup::load_avg(),
        );
        drop(rc);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}
