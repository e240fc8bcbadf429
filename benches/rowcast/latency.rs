//! `latency`: N clients in `tickets` (over `/ws` or the real npm `socket.io-client`), R
//! single-row updates per second for S seconds → delivered ratio and commit→client latency.
//!
//! The writer notes each update's commit time (the moment PostgreSQL acknowledged the
//! commit) as wall-clock epoch milliseconds; clients note the receive time on the same clock
//! (Rust `SystemTime` here, `performance.timeOrigin + performance.now()` in node). Latency
//! is receive minus commit; the rare event that arrives before the acknowledgement counts
//! as 0.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use rowcast::pgtemp::{PgTemp, PgTempOptions};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{self, NodeClients};
use crate::setup::{self, Rowcast};

/// Rows the writer cycles through (an update's key is distinct within any capture batch).
const ROWS: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Via {
    Ws,
    SocketIo,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Ws => "/ws",
            Via::SocketIo => "Socket.IO (npm socket.io-client)",
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
}

pub fn header() {
    println!(
        "| transport | clients | updates/s | events expected | delivered | ratio | p50 ms | p90 ms | p99 ms | max ms | rowcast CPU % | clients CPU % | rowcast RSS MB | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

pub fn row(o: &Outcome) {
    let l = &o.lat;
    println!(
        "| {} | {} | {} | {} | {} | {:.4} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {} |",
        o.via.name(),
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

/// One run on a fresh PostgreSQL and rowcast.
pub async fn run(via: Via, clients: usize, rate: u64, seconds: u64) -> Outcome {
    let pg = PgTemp::start(PgTempOptions::default()).expect("PostgreSQL");
    let (db, config) = setup::database(&pg, ROWS as i64, true).await;
    let rc = Rowcast::start(&config, &[]);
    let token = setup::token(&config);
    let url = rc.ws_url(&format!("token={token}&rooms=tickets"));

    let mut ws_tasks = Vec::new();
    let mut node = None;
    match via {
        Via::Ws => {
            let conns = clients::many(clients, 32, |_| clients::ws(&url)).await;
            for mut ws in conns {
                ws_tasks.push(tokio::spawn(async move {
                    let mut got: Vec<(u64, f64)> = Vec::new();
                    while let Some(Ok(m)) = ws.next().await {
                        let t = setup::epoch_ms();
                        if let Message::Text(text) = m
                            && let Some(k) = clients::bench_key(text.as_str())
                        {
                            got.push((k, t));
                        }
                    }
                    got
                }));
            }
        }
        Via::SocketIo => {
            node = Some(NodeClients::start(&rc.base(), &token, clients, "tickets").await);
        }
    }

    let client_pid = node.as_ref().map_or(std::process::id(), NodeClients::pid);
    let (cpu0, client0) = (rc.cpu_secs(), setup::cpu_secs(client_pid));
    let perf = setup::Perf::attach(rc.pid());
    let commits = write(&db, rate, seconds).await;
    drop(perf);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rowcast_cpu = rc.cpu_secs() - cpu0;
    let client_cpu = setup::cpu_secs(client_pid) - client0;
    let rss_mb = rc.rss_mb();

    let received: Vec<(u64, f64)> = match node {
        Some(n) => n.finish().await,
        None => {
            // Closing rowcast ends every client's stream; each task returns what it saw.
            drop(rc);
            let mut all = Vec::new();
            for t in ws_tasks {
                all.extend(t.await.unwrap_or_default());
            }
            all
        }
    };
    let mut lat: Vec<f64> = received
        .iter()
        .filter_map(|(k, t)| commits.get(k).map(|c| (t - c).max(0.0)))
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
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
    }
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
