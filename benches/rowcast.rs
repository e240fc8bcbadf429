//! `cargo bench --bench rowcast -- <scenario> [options]`: end-to-end benchmarks that start
//! their own PostgreSQL and the real `rowcast` binary, and print a Markdown table.
//!
//! Scenarios:
//! - `capture-overhead`: pgbench single-row UPDATE, 8 clients — no triggers, triggers only,
//!   triggers with rowcast consuming.
//! - `latency`: N WebSocket clients in `tickets`, R updates/s — delivered ratio and
//!   commit→client latency percentiles.
//! - `all`: every scenario with its defaults.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rowcast::api::auth::Authenticator;
use rowcast::config::{Config, JwtConfig};
use rowcast::pgtemp::{PgTemp, PgTempOptions};

const SECRET: &str = "bench-secret-0123456789abcdef";

struct Args {
    scenario: String,
    clients: usize,
    rate: u64,
    seconds: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        scenario: "all".into(),
        clients: 50,
        rate: 200,
        seconds: 15,
    };
    let mut it = std::env::args().skip(1).filter(|s| s != "--bench");
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--clients" => a.clients = num("--clients") as usize,
            "--rate" => a.rate = num("--rate"),
            "--seconds" => a.seconds = num("--seconds"),
            s if !s.starts_with('-') => a.scenario = s.to_string(),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!("machine: {} cores, {}", num_cpus(), mem_total());
    match args.scenario.as_str() {
        "capture-overhead" => rt.block_on(capture_overhead(args.seconds)),
        "latency" => rt.block_on(latency(args.clients, args.rate, args.seconds)),
        "all" => {
            rt.block_on(capture_overhead(args.seconds));
            rt.block_on(latency(args.clients, args.rate, args.seconds));
        }
        other => panic!("unknown scenario {other}; see benches/rowcast.rs"),
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .map(|kb| format!("{} GiB RAM", kb.parse::<u64>().unwrap_or(0) / 1024 / 1024))
        .unwrap_or_default()
}

/// A database with the helpdesk schema and `tickets` rows, optionally migrated.
async fn database(pg: &PgTemp, tickets: i64, migrate: bool) -> (tokio_postgres::Client, Config) {
    let url = pg.url("postgres");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    rowcast::demo::load_helpdesk(&client, true)
        .await
        .expect("schema");
    client
        .execute(
            "INSERT INTO tickets (subject, requester_id) SELECT 'ticket ' || g, 3 FROM generate_series(1, $1::bigint) g",
            &[&tickets],
        )
        .await
        .expect("tickets");
    client
        .batch_execute("VACUUM ANALYZE")
        .await
        .expect("vacuum");
    let mut config = Config::default();
    config.apply_defaults();
    config.database_url = Some(url);
    config.jwt = JwtConfig {
        secret: Some(SECRET.into()),
        ..JwtConfig::default()
    };
    if migrate {
        let (mut c, conn) = tokio_postgres::connect(
            config.database_url.as_deref().unwrap(),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        tokio::spawn(conn);
        rowcast::schema::migrate(&mut c, &config)
            .await
            .expect("migrate");
    }
    (client, config)
}

/// The real binary, serving on a free port; killed on drop.
struct Rowcast {
    child: Child,
    port: u16,
}

impl Rowcast {
    fn start(config: &Config, extra_env: &[(&str, String)]) -> Rowcast {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rowcast"));
        cmd.arg("serve")
            .env("DATABASE_URL", config.database_url.as_deref().unwrap())
            .env("ROWCAST_JWT_SECRET", SECRET)
            .env("ROWCAST_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROWCAST_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start rowcast");
        let r = Rowcast { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rowcast did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .map(String::from)
            })
            .and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }
}

impl Drop for Rowcast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pgbench(pg: &PgTemp, seconds: u64) -> f64 {
    let script = pg.root().join("update.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 10000)\nUPDATE tickets SET updated_at = now() WHERE id = :id;\n",
    )
    .unwrap();
    let out = Command::new(pg.bin_dir().join("pgbench"))
        .args([
            "-n",
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg("-p")
        .arg(pg.port().to_string())
        .arg("-f")
        .arg(&script)
        .arg("postgres")
        .output()
        .expect("run pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// App write throughput without capture, with capture triggers, and with rowcast consuming.
async fn capture_overhead(seconds: u64) {
    println!(
        "\n## capture-overhead (pgbench single-row UPDATE, 8 clients, {seconds} s per run, fsync=on)\n"
    );
    let pg = PgTemp::start(PgTempOptions {
        fsync: true,
        settings: vec![("synchronous_commit".into(), "off".into())],
    })
    .expect("PostgreSQL");
    let (client, config) = database(&pg, 10_000, false).await;
    let mut results: Vec<(&str, Vec<f64>)> = vec![
        ("no capture", vec![]),
        ("triggers", vec![]),
        ("triggers + rowcast", vec![]),
    ];
    for round in 0..2 {
        client
            .batch_execute("DROP TRIGGER IF EXISTS rowcast_capture ON tickets")
            .await
            .ok();
        results[0].1.push(pgbench(&pg, seconds));
        let (mut c, conn) = tokio_postgres::connect(
            config.database_url.as_deref().unwrap(),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        rowcast::schema::migrate(&mut c, &config)
            .await
            .expect("migrate");
        results[1].1.push(pgbench(&pg, seconds));
        // Sequence and drop the backlog so rowcast starts from a clean log.
        client
            .batch_execute("TRUNCATE rowcast.changes; DELETE FROM rowcast.waiters")
            .await
            .unwrap();
        let rc = Rowcast::start(&config, &[]);
        std::thread::sleep(Duration::from_secs(1));
        results[2].1.push(pgbench(&pg, seconds));
        drop(rc);
        client
            .batch_execute("TRUNCATE rowcast.changes; DELETE FROM rowcast.waiters")
            .await
            .unwrap();
        eprintln!("round {} done", round + 1);
    }
    let base = mean(&results[0].1);
    println!("| setup | TPS (runs) | mean TPS | overhead |");
    println!("|---|---|---|---|");
    for (name, runs) in &results {
        let m = mean(runs);
        let runs: Vec<String> = runs.iter().map(|t| format!("{t:.0}")).collect();
        println!(
            "| {name} | {} | {m:.0} | {:.1}% |",
            runs.join(", "),
            (1.0 - m / base) * 100.0
        );
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// N WebSocket clients in `tickets`; R single-row updates per second for S seconds.
async fn latency(clients: usize, rate: u64, seconds: u64) {
    println!("\n## latency (/ws: {clients} clients, {rate} updates/s, {seconds} s)\n");
    let pg = PgTemp::start(PgTempOptions::default()).expect("PostgreSQL");
    let (client, config) = database(&pg, 1000, true).await;
    let rc = Rowcast::start(&config, &[]);
    let auth = Authenticator::from_config(&config.jwt).unwrap();
    let token = auth.issue("1", "agent", 3600).unwrap();
    let url = format!("ws://127.0.0.1:{}/ws?token={token}&rooms=tickets", rc.port);
    let commits: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        // welcome + joined
        for _ in 0..2 {
            ws.next().await;
        }
        let commits = commits.clone();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                let now = Instant::now();
                let Ok(text) = m.into_text() else { continue };
                let v: serde_json::Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let Some(k) = v["payload"]["data"]["subject"]
                    .as_str()
                    .and_then(|s| s.strip_prefix('b'))
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                let at = commits.lock().unwrap().get(&k).copied();
                if let Some(at) = at {
                    latencies
                        .lock()
                        .unwrap()
                        .push(now.duration_since(at).as_secs_f64() * 1000.0);
                }
            }
        }));
    }
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let stmt = client
        .prepare("UPDATE tickets SET subject = $1 WHERE id = $2")
        .await
        .unwrap();
    for k in 0..total {
        tick.tick().await;
        // Until the commit is acknowledged, latency counts from before the statement.
        commits.lock().unwrap().insert(k, Instant::now());
        client
            .execute(&stmt, &[&format!("b{k}"), &((k % 1000) as i64 + 1)])
            .await
            .unwrap();
        commits.lock().unwrap().insert(k, Instant::now());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rc.rss_mb();
    drop(rc);
    for t in tasks {
        t.abort();
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let expected = total as usize * clients;
    println!(
        "| clients | updates/s | events expected | delivered | ratio | p50 ms | p90 ms | p99 ms | max ms | rowcast RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {clients} | {rate} | {expected} | {} | {:.4} | {:.1} | {:.1} | {:.1} | {:.1} | {rss:.0} |",
        l.len(),
        l.len() as f64 / expected as f64,
        percentile(&l, 0.5),
        percentile(&l, 0.9),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
}
