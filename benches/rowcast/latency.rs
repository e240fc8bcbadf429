//! `latency`: N clients in `tickets` (over `/ws` or the real npm `socket.io-client`), R
//! single-row updates per second for S seconds → delivered ratio and commit→client latency.
//!
//! The writer notes each update's commit time (the moment PostgreSQL acknowledged the
//! commit) as wall-clock epoch milliseconds; clients note the receive time on the same clock
//! (Rust `SystemTime` here, `performance.timeOrigin + performance.now()` in node). Latency
//! is receive minus commit; the rare event that arrives before the acknowledgement counts
//! as 0. One second of uncounted warm-up traffic comes first.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rowcast::pgtemp::{PgTemp, PgTempOptions};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{self, NodeClients};
use crate::setup::{self, Rowcast};

/// Sockets per node process.
const NODE_CLIENTS: usize = 100;

/// Rows the writer cycles through (an update's key is distinct within any capture batch).
pub const ROWS: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Via {
    Ws,
    SocketIo,
    /// Socket.IO spoken by Rust clients in this process (engine.io v4 wire protocol): tells
    /// rowcast's share of the Socket.IO latency from node's.
    SocketIoWire,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Ws => "/ws",
            Via::SocketIo => "Socket.IO (npm socket.io-client)",
            Via::SocketIoWire => "Socket.IO (Rust wire clients)",
        }
    }
}

pub struct Outcome {
    pub via: Via,
    pub clients: usize,
    pub rate: u64,
    pub expected: usize,
    pub delivered: usize,
    /// Sorted latencies in ms.
    pub lat: Vec<f64>,
    pub rss_mb: f64,
    pub rowcast_cpu: f64,
    /// CPU seconds of the clients (node, or this process for `/ws`).
    pub client_cpu: f64,
    pub seconds: u64,
    /// The settings rowcast ran with ([`setup::describe`]).
    pub config: String,
}

pub fn header() {
    println!(
        "| transport | clients | updates/s | events expected | delivered | ratio | p50 ms | p90 ms | p99 ms | max ms | rowcast CPU % | clients CPU % | rowcast RSS MB | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

pub fn row(o: &Outcome) {
    row_named(o.via.name(), o);
}

/// [`row`] with `name` in the first column (e.g. which server ran).
pub fn row_named(name: &str, o: &Outcome) {
    let l = &o.lat;
    println!(
        "| {} | {} | {} | {} | {} | {:.4} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {} |",
        name,
        o.clients,
        o.rate,
        o.expected,
        o.delivered,
        o.delivered as f64 / o.expected.max(1) as f64,
        setup::percentile(l, 0.5),
        setup::percentile(l, 0.9),
        setup::percentile(l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        o.rowcast_cpu / o.seconds.max(1) as f64 * 100.0,
        o.client_cpu / o.seconds.max(1) as f64 * 100.0,
        o.rss_mb,
        setup::load_avg(),
    );
}

/// Below a table of rows: the settings each run's rowcast ran with.
pub fn footer(outcomes: &[Outcome]) {
    let mut seen = Vec::new();
    for o in outcomes {
        if !seen.contains(&&o.config) {
            seen.push(&o.config);
        }
    }
    println!();
    for c in seen {
        println!("{c}");
    }
}

/// One run on a fresh PostgreSQL and rowcast.
pub async fn run(via: Via, clients: usize, rate: u64, seconds: u64) -> Outcome {
    run_with(via, clients, rate, seconds, None, |_| {}).await
}

/// [`run`] with a change to rowcast's configuration.
pub async fn run_tweaked(
    via: Via,
    clients: usize,
    rate: u64,
    seconds: u64,
    tweak: impl FnOnce(&mut setup::Config),
) -> Outcome {
    run_with(via, clients, rate, seconds, None, tweak).await
}

/// [`run`], optionally with an admin webhook endpoint subscribed to every event (`*`)
/// delivering to `webhook` — to see what enqueueing and delivering costs the live path.
pub async fn run_with(
    via: Via,
    clients: usize,
    rate: u64,
    seconds: u64,
    webhook: Option<&str>,
    tweak: impl FnOnce(&mut setup::Config),
) -> Outcome {
    let options = pg_options();
    let pg = PgTemp::start(options).expect("PostgreSQL");
    let (db, mut config) = setup::database(&pg, ROWS as i64, false).await;
    // `BENCH_CAPTURE=logical`: the same run with logical capture instead of triggers.
    if std::env::var("BENCH_CAPTURE").as_deref() == Ok("logical") {
        config.capture.mode = rowcast::config::CaptureMode::Logical;
    }
    if webhook.is_some() {
        // The receiver runs on loopback: allow it past the SSRF guard.
        config.webhook.allow_cidrs = vec!["127.0.0.0/8".parse().expect("network")];
    }
    tweak(&mut config);
    setup::migrate_now(&config).await;
    let rc = Rowcast::start(&config);
    let config_line = setup::describe(&rc.config);
    if let Some(url) = webhook {
        crate::webhooks::subscribe(&rc, &config, url, &["*"]).await;
    }
    let token = setup::token(&config);
    let url = rc.ws_url(&format!("token={token}&rooms=tickets"));

    let mut ws_tasks = Vec::new();
    let mut node: Vec<NodeClients> = Vec::new();
    match via {
        Via::Ws | Via::SocketIoWire => {
            let port = rc.port;
            let conns = if via == Via::Ws {
                clients::many(clients, 32, |_| clients::ws(&url)).await
            } else {
                clients::many(clients, 32, |_| clients::socketio(port, &token, "tickets")).await
            };
            for mut ws in conns {
                ws_tasks.push(tokio::spawn(async move {
                    let mut got: Vec<(u64, f64)> = Vec::new();
                    while let Some(Ok(m)) = ws.next().await {
                        let t = setup::epoch_ms();
                        let Message::Text(text) = m else { continue };
                        if let Some(k) = clients::bench_key(text.as_str()) {
                            got.push((k, t));
                        } else if text.as_str() == "2" {
                            // engine.io ping
                            let _ = ws.send(Message::Text("3".into())).await;
                        }
                    }
                    got
                }));
            }
        }
        Via::SocketIo => node = node_clients(&rc.base(), &token, clients).await,
    }

    let client_pids: Vec<u32> = if node.is_empty() {
        vec![std::process::id()]
    } else {
        node.iter().map(NodeClients::pid).collect()
    };
    let clients_cpu = || client_pids.iter().map(|p| setup::cpu_secs(*p)).sum::<f64>();
    // Warm-up (JIT in node, first allocations, connection pools): one second of the same
    // traffic whose events are not counted (their subject does not start with `b`).
    warm_up(&db, rate).await;
    let (cpu0, client0) = (rc.cpu_secs(), clients_cpu());
    let perf = setup::Perf::attach(rc.pid());
    let statements = statements_wanted();
    if statements {
        db.batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
        )
        .await
        .expect("pg_stat_statements");
    }
    let commits = write(&db, rate, seconds).await;
    if statements {
        print_statements(&db).await;
    }
    drop(perf);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rowcast_cpu = rc.cpu_secs() - cpu0;
    let client_cpu = clients_cpu() - client0;
    let rss_mb = rc.rss_mb();

    let mut received: Vec<(u64, f64)> = Vec::new();
    if node.is_empty() {
        // Closing rowcast ends every client's stream; each task returns what it saw.
        drop(rc);
        for t in ws_tasks {
            received.extend(t.await.unwrap_or_default());
        }
    } else {
        for n in node {
            received.extend(n.finish().await);
        }
    }
    if let Some(path) = std::env::var_os("BENCH_DUMP") {
        // `key commit_ms receive_ms` per received event, to see when the slow ones happen.
        let text: String = received
            .iter()
            .filter_map(|(k, t)| commits.get(k).map(|c| format!("{k} {c:.3} {t:.3}\n")))
            .collect();
        std::fs::write(path, text).expect("write BENCH_DUMP");
    }
    let lat = latencies(&commits, &received);
    Outcome {
        via,
        clients,
        rate,
        expected: commits.len() * clients,
        delivered: lat.len(),
        lat,
        rss_mb,
        rowcast_cpu,
        client_cpu,
        seconds,
        config: config_line,
    }
}

/// The throwaway cluster of a latency run: `fsync=off` (a flush costs nothing) and
/// `synchronous_commit=on`, PostgreSQL's default — commits wait for the WAL flush, so
/// logical decoding sees each commit at once. `BENCH_SYNC_COMMIT=off` shows the other case:
/// the WAL sender then decodes a commit only once the WAL writer flushed it (up to
/// `wal_writer_delay`, 200 ms, later).
pub fn pg_options() -> PgTempOptions {
    let mut options = PgTempOptions::default();
    let sync = std::env::var("BENCH_SYNC_COMMIT").unwrap_or_else(|_| "on".into());
    options.settings.push(("synchronous_commit".into(), sync));
    if statements_wanted() {
        for (name, value) in [
            ("shared_preload_libraries", "pg_stat_statements"),
            ("pg_stat_statements.track", "all"),
            ("pg_stat_statements.track_planning", "on"),
        ] {
            options.settings.push((name.into(), value.into()));
        }
    }
    options
}

/// `BENCH_STATEMENTS=1`: the run's statements (`pg_stat_statements`, planning included),
/// printed after the measured writes.
fn statements_wanted() -> bool {
    std::env::var_os("BENCH_STATEMENTS").is_some()
}

/// The 15 statements that took the server longest during the measured writes.
async fn print_statements(db: &tokio_postgres::Client) {
    let rows = db
        .query(
            "SELECT calls, plans, mean_plan_time, mean_exec_time,
                    total_plan_time + total_exec_time,
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 120)
               FROM pg_stat_statements
              WHERE query NOT LIKE '%pg_stat_statements%'
              ORDER BY total_plan_time + total_exec_time DESC LIMIT 15",
            &[],
        )
        .await
        .expect("pg_stat_statements");
    println!("\n| calls | plans | plan ms (mean) | run ms (mean) | total ms | statement |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.1} | `{}` |",
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, f64>(2),
            r.get::<_, f64>(3),
            r.get::<_, f64>(4),
            r.get::<_, String>(5).replace('|', "\\|"),
        );
    }
    println!();
}

/// Receive minus commit time of every received bench key, sorted (ms).
pub fn latencies(commits: &HashMap<u64, f64>, received: &[(u64, f64)]) -> Vec<f64> {
    let mut lat: Vec<f64> = received
        .iter()
        .filter_map(|(k, t)| commits.get(k).map(|c| (t - c).max(0.0)))
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    lat
}

/// `clients` npm Socket.IO clients of `base` in `tickets`: one node process per
/// NODE_CLIENTS sockets (a browser tab holds one socket, and a single event loop parsing
/// every client's frames would measure node's queueing).
pub async fn node_clients(base: &str, token: &str, clients: usize) -> Vec<NodeClients> {
    let procs = clients.div_ceil(NODE_CLIENTS);
    let mut node = Vec::with_capacity(procs);
    for i in 0..procs {
        let n = clients / procs + usize::from(i < clients % procs);
        node.push(NodeClients::start(base, token, n, "tickets").await);
    }
    node
}

pub async fn warm_up(db: &tokio_postgres::Client, rate: u64) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for k in 0..rate {
        tick.tick().await;
        db.execute(
            "UPDATE tickets SET subject = $1 WHERE id = $2",
            &[&format!("w{k}"), &((k % ROWS) as i64 + 1)],
        )
        .await
        .expect("update");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// `rate` single-row updates per second for `seconds`, each its own transaction; returns
/// each key's commit time (epoch ms).
pub async fn write(db: &tokio_postgres::Client, rate: u64, seconds: u64) -> HashMap<u64, f64> {
    let total = rate * seconds;
    let stmt = db
        .prepare("UPDATE tickets SET subject = $1 WHERE id = $2")
        .await
        .expect("prepare");
    let mut commits = HashMap::with_capacity(total as usize);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for k in 0..total {
        tick.tick().await;
        db.execute(&stmt, &[&format!("b{k}"), &((k % ROWS) as i64 + 1)])
            .await
            .expect("update");
        commits.insert(k, setup::epoch_ms());
    }
    commits
}
