//! `replicas [--rate R] [--seconds S]`: the database work rowcast does per change with one
//! replica and with three on the same database, from `pg_stat_statements`.
//!
//! The replicas connect as their own role (`bench_rowcast`), so their statements are told
//! apart from the writer's (and from the capture triggers', which run as the table owner).
//! Each replica serves one `/ws` client in `tickets`; the writer makes R single-row updates
//! per second for S seconds (default 500/s for 15 s), each its own transaction. Reported
//! per change: statements, execution time and rows the replicas' statements returned or
//! touched, and the statements that took the most time.

use std::time::Duration;

use futures_util::StreamExt;
use rowcast::pgtemp::{PgTemp, PgTempOptions};

use crate::clients;
use crate::latency;
use crate::setup::{self, Rowcast};

const ROLE: &str = "bench_rowcast";

pub async fn run(rate: u64, seconds: u64) {
    println!(
        "\n## replicas: database work per change, 1 vs 3 replicas ({rate} updates/s for {seconds} s, pg_stat_statements)\n"
    );
    println!(
        "| replicas | changes | statements per change | exec µs per change | rows per change | events delivered per client | load |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut breakdowns = Vec::new();
    for replicas in [1usize, 3] {
        breakdowns.push((replicas, one(replicas, rate, seconds).await));
    }
    for (replicas, lines) in breakdowns {
        println!("\nStatements of {replicas} replica(s), by execution time:\n");
        println!("| statement | calls per change | rows per change | µs per change |");
        println!("|---|---|---|---|");
        for l in lines {
            println!("{l}");
        }
    }
}

async fn one(replicas: usize, rate: u64, seconds: u64) -> Vec<String> {
    let pg = PgTemp::start(PgTempOptions {
        fsync: false,
        settings: vec![
            (
                "shared_preload_libraries".into(),
                "pg_stat_statements".into(),
            ),
            ("pg_stat_statements.track".into(), "all".into()),
        ],
    })
    .expect("PostgreSQL");
    let (db, mut config) = setup::database(&pg, latency::ROWS as i64, true).await;
    db.batch_execute(&format!(
        "CREATE EXTENSION pg_stat_statements; CREATE ROLE {ROLE} LOGIN SUPERUSER"
    ))
    .await
    .expect("pg_stat_statements and the replicas' role");
    config.database_url = Some(format!(
        "postgres://{ROLE}@127.0.0.1:{}/postgres",
        pg.port()
    ));
    let token = setup::token(&config);
    let mut servers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..replicas {
        let rc = Rowcast::start(&config);
        let mut ws = clients::ws(&rc.ws_url(&format!("token={token}&rooms=tickets"))).await;
        readers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() && clients::bench_key(m.to_text().unwrap_or("")).is_some() {
                    n += 1;
                }
            }
            n
        }));
        servers.push(rc);
    }
    latency::warm_up(&db, rate).await;
    db.batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .expect("reset");
    let commits = latency::write(&db, rate, seconds).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changes = commits.len() as f64;
    let per = |r: &tokio_postgres::Row| -> (f64, f64, f64) {
        (
            r.get::<_, f64>(0) / changes,
            r.get::<_, f64>(1) * 1000.0 / changes,
            r.get::<_, f64>(2) / changes,
        )
    };
    let total = db
        .query_one(
            "SELECT coalesce(sum(calls), 0)::float8, coalesce(sum(total_exec_time), 0)::float8,
                    coalesce(sum(rows), 0)::float8
               FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
              WHERE r.rolname = $1",
            &[&ROLE],
        )
        .await
        .expect("pg_stat_statements");
    let (calls, us, rows) = per(&total);
    let top: Vec<String> = db
        .query(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 100), calls::float8,
                    total_exec_time, rows::float8
               FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
              WHERE r.rolname = $1 ORDER BY total_exec_time DESC LIMIT 8",
            &[&ROLE],
        )
        .await
        .expect("pg_stat_statements")
        .iter()
        .map(|r| {
            let q: String = r.get(0);
            let (c, ms, n): (f64, f64, f64) = (r.get(1), r.get(2), r.get(3));
            format!(
                "| `{}` | {:.3} | {:.3} | {:.2} |",
                q.replace('|', "\\|"),
                c / changes,
                n / changes,
                ms * 1000.0 / changes
            )
        })
        .collect();
    drop(servers);
    let mut delivered = Vec::new();
    for r in readers {
        delivered.push(r.await.unwrap_or(0).to_string());
    }
    println!(
        "| {replicas} | {changes} | {calls:.2} | {us:.1} | {rows:.2} | {} | {} |",
        delivered.join(", "),
        setup::load_avg()
    );
    top
}
