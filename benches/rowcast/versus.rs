//! `versus` and `versus-targets`: rowcast (trigger and logical capture) side by side with
//! the hand-made Node bridge in `benches/peer/bridge.mjs` (socket.io 4.8, node-postgres
//! `LISTEN` on a channel fed by a per-row `pg_notify` trigger, one `SELECT row_to_json(t)`
//! per notification, `io.to(room).emit`), driven by the same npm socket.io-client processes
//! and the same writer (`latency::write`: the commit time is noted when PostgreSQL
//! acknowledges each single-row UPDATE).
//!
//! The bridge runs twice: with the payload a hand-made bridge sends (`{op, table, data}`)
//! and with rowcast's exact event object and trailing seq argument, so that where the
//! clients are the bottleneck the comparison is of the servers and not of payload sizes.
//! Every run is on a fresh PostgreSQL; each row reports the server's and the clients' CPU.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rowcast::config::CaptureMode;
use rowcast::pgtemp::PgTemp;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::latency::{self, Outcome, Via};
use crate::setup;

/// What serves the clients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    Rowcast(CaptureMode),
    /// The Node bridge; `true`: with rowcast's exact payload.
    Peer {
        rowcast_payload: bool,
    },
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Rowcast(CaptureMode::Triggers) => "rowcast, triggers",
            Side::Rowcast(CaptureMode::Logical) => "rowcast, logical",
            Side::Peer {
                rowcast_payload: false,
            } => "Node bridge",
            Side::Peer {
                rowcast_payload: true,
            } => "Node bridge, rowcast's payload",
        }
    }
}

const SIDES: [Side; 4] = [
    Side::Rowcast(CaptureMode::Triggers),
    Side::Rowcast(CaptureMode::Logical),
    Side::Peer {
        rowcast_payload: false,
    },
    Side::Peer {
        rowcast_payload: true,
    },
];

/// The peer's capture: one NOTIFY per row with `{table, op, id}`.
const PEER_TRIGGER: &str = "
CREATE FUNCTION peer_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('peer_changes', json_build_object(
    'table', TG_TABLE_NAME, 'op', TG_OP, 'id', COALESCE(NEW.id, OLD.id))::text);
  RETURN NULL;
END $$;
CREATE TRIGGER peer_notify AFTER INSERT OR UPDATE OR DELETE ON tickets
  FOR EACH ROW EXECUTE FUNCTION peer_notify();";

pub struct Run {
    pub side: Side,
    pub o: Outcome,
}

fn header() {
    println!(
        "| server | clients | updates/s | events expected | delivered | ratio | p50 ms | p90 ms | p99 ms | max ms | server CPU % | clients CPU % | server RSS MB | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn row(r: &Run) {
    latency::row_named(r.side.name(), &r.o);
}

/// Every side at one load, one table.
pub async fn versus(clients: usize, rate: u64, seconds: u64) -> Vec<Run> {
    println!(
        "\n## versus: {clients} npm Socket.IO clients × {rate} updates/s ({seconds} s per run)\n"
    );
    header();
    let mut runs = Vec::new();
    for side in SIDES {
        let o = match side {
            Side::Rowcast(mode) => {
                latency::run_tweaked(Via::SocketIo, clients, rate, seconds, |c| {
                    c.capture.mode = mode
                })
                .await
            }
            Side::Peer { rowcast_payload } => peer(rowcast_payload, clients, rate, seconds).await,
        };
        let r = Run { side, o };
        row(&r);
        runs.push(r);
    }
    println!();
    for r in runs.iter().filter(|r| matches!(r.side, Side::Rowcast(_))) {
        println!("{}", r.o.config);
    }
    runs
}

/// The targets of issue 15, each load with every side, then a verdict table.
pub async fn targets(seconds: u64) {
    let mut verdicts = Vec::new();
    for (clients, rate, what) in [
        (50, 200, "p50 and p99 ≤ the peer's"),
        (1000, 20, "p50 ≤ the peer's"),
        (200, 500, "p99 ≤ 1/3 of the peer's, 100% delivered"),
    ] {
        let runs = versus(clients, rate, seconds).await;
        let get = |side: Side| runs.iter().find(|r| r.side == side).map(|r| &r.o);
        for peer_payload in [false, true] {
            let Some(peer) = get(Side::Peer {
                rowcast_payload: peer_payload,
            }) else {
                continue;
            };
            for mode in [CaptureMode::Triggers, CaptureMode::Logical] {
                let Some(ours) = get(Side::Rowcast(mode)) else {
                    continue;
                };
                let p = |o: &Outcome, q| setup::percentile(&o.lat, q);
                let all = ours.delivered == ours.expected;
                let met = match (clients, rate) {
                    (50, 200) => p(ours, 0.5) <= p(peer, 0.5) && p(ours, 0.99) <= p(peer, 0.99),
                    (1000, 20) => p(ours, 0.5) <= p(peer, 0.5),
                    _ => p(ours, 0.99) <= p(peer, 0.99) / 3.0 && all,
                };
                verdicts.push(format!(
                    "| {clients} × {rate}/s | {what} | {} vs {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} / {:.2} | {:.4} | {} |",
                    Side::Rowcast(mode).name(),
                    Side::Peer {
                        rowcast_payload: peer_payload
                    }
                    .name(),
                    p(ours, 0.5),
                    p(ours, 0.99),
                    p(peer, 0.5),
                    p(peer, 0.99),
                    p(ours, 0.5) / p(peer, 0.5).max(0.001),
                    p(ours, 0.99) / p(peer, 0.99).max(0.001),
                    ours.delivered as f64 / ours.expected.max(1) as f64,
                    if met { "met" } else { "missed" },
                ));
            }
        }
    }
    println!("\n## versus targets\n");
    println!(
        "| load | target | sides | rowcast p50 / p99 ms | peer p50 / p99 ms | ratio p50 / p99 | rowcast delivered | verdict |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for v in verdicts {
        println!("{v}");
    }
}

/// The bridge's directory, with its npm packages installed when missing.
fn peer_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peer");
    if !dir.join("node_modules/socket.io").exists() || !dir.join("node_modules/pg").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("cannot run `npm` (Node.js 18+ with npm)");
        assert!(status.success(), "npm ci in benches/peer failed");
    }
    dir
}

/// `node benches/peer/bridge.mjs` on a free port; killed on drop.
struct Bridge {
    child: Child,
    port: u16,
}

impl Bridge {
    async fn start(pg: &PgTemp, rowcast_payload: bool) -> Bridge {
        let dir = peer_dir();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
        let payload = if rowcast_payload {
            "rowcast"
        } else {
            "minimal"
        };
        let mut child = Command::new("node")
            .arg(dir.join("bridge.mjs"))
            .args([&port.to_string(), &url, payload])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run `node`");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the bridge is not ready within 30 s")
            .expect("read the bridge's output");
        assert_eq!(ready.as_deref(), Some("ready"), "bridge: {ready:?}");
        Bridge { child, port }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// One run of the bridge, measured like `latency::run_with` measures rowcast.
async fn peer(rowcast_payload: bool, clients: usize, rate: u64, seconds: u64) -> Outcome {
    let pg = PgTemp::start(latency::pg_options()).expect("PostgreSQL");
    let (db, config) = setup::database(&pg, latency::ROWS as i64, false).await;
    db.batch_execute(PEER_TRIGGER).await.expect("peer trigger");
    let bridge = Bridge::start(&pg, rowcast_payload).await;
    let token = setup::token(&config);
    let node = latency::node_clients(
        &format!("http://127.0.0.1:{}", bridge.port),
        &token,
        clients,
    )
    .await;
    let pids: Vec<u32> = node.iter().map(|n| n.pid()).collect();
    let clients_cpu = || pids.iter().map(|p| setup::cpu_secs(*p)).sum::<f64>();
    latency::warm_up(&db, rate).await;
    let (cpu0, client0) = (setup::cpu_secs(bridge.pid()), clients_cpu());
    let commits = latency::write(&db, rate, seconds).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_cpu = setup::cpu_secs(bridge.pid()) - cpu0;
    let client_cpu = clients_cpu() - client0;
    let rss_mb = setup::status_mb(bridge.pid(), "VmRSS:");
    let mut received = Vec::new();
    for n in node {
        received.extend(n.finish().await);
    }
    drop(bridge);
    let lat = latency::latencies(&commits, &received);
    Outcome {
        via: Via::SocketIo,
        clients,
        rate,
        expected: commits.len() * clients,
        delivered: lat.len(),
        lat,
        rss_mb,
        rowcast_cpu: server_cpu,
        client_cpu,
        seconds,
        config: String::new(),
    }
}
