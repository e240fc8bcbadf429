//! `capture-overhead`: app write throughput (pgbench, single-row UPDATE, 8 clients) with no
//! capture, with the capture triggers, with the triggers while rowcast consumes, and with
//! logical decoding while rowcast consumes.

use std::process::Command;
use std::time::Duration;

use rowcast::pgtemp::{PgTemp, PgTempOptions};

use crate::setup::{self, Rowcast, mean};

pub fn pgbench(pg: &PgTemp, seconds: u64) -> f64 {
    let script = pg.root().join("update.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 10000)\nUPDATE tickets SET updated_at = now() WHERE id = :id;\n",
    )
    .expect("write the pgbench script");
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

/// App write throughput without capture, with the capture triggers (as generated, and
/// without the parked check), and with rowcast consuming; with
/// `synchronous_commit` off (CPU-bound) and on (PostgreSQL's default: commit waits for the
/// WAL flush).
pub async fn run(seconds: u64, only: Option<&str>) {
    for sync in ["off", "on"] {
        if only.is_none_or(|o| o == sync) {
            one(seconds, sync).await;
        }
    }
}

async fn one(seconds: u64, sync: &str) {
    println!(
        "\n## capture-overhead (pgbench single-row UPDATE, 8 clients, {seconds} s per run, fsync=on, synchronous_commit={sync})\n"
    );
    let statements = std::env::var_os("BENCH_STATEMENTS").is_some();
    let mut settings = vec![("synchronous_commit".to_string(), sync.to_string())];
    if statements {
        settings.push((
            "shared_preload_libraries".into(),
            "pg_stat_statements".into(),
        ));
        settings.push(("pg_stat_statements.track".into(), "all".into()));
    }
    let pg = PgTemp::start(PgTempOptions {
        fsync: true,
        settings,
    })
    .expect("PostgreSQL");
    let (client, config) = setup::database(&pg, 10_000, false).await;
    if statements {
        client
            .batch_execute("CREATE EXTENSION pg_stat_statements")
            .await
            .expect("pg_stat_statements");
    }
    let mut breakdown = Vec::new();
    let mut trigger_breakdown = Vec::new();
    let mut results: Vec<(&str, Vec<(f64, f64)>)> = vec![
        ("no capture", vec![]),
        ("triggers", vec![]),
        ("triggers without the parked check", vec![]),
        ("triggers + rowcast consuming", vec![]),
        ("logical decoding only (pg_recvlogical discards)", vec![]),
        ("logical decoding + rowcast consuming", vec![]),
    ];
    let mut rowcast_cpu = Vec::new();
    let mut logical_cpu = Vec::new();
    let mut logical_config = config.clone();
    logical_config.capture.mode = rowcast::config::CaptureMode::Logical;
    let clean =
        "TRUNCATE rowcast.changes, rowcast.batches; SELECT setval('rowcast.parked_until', 0)";
    for round in 0..2 {
        client
            .batch_execute("DROP TRIGGER IF EXISTS rowcast_capture ON tickets")
            .await
            .ok();
        results[0].1.push(measured(&pg, &client, seconds).await);
        setup::migrate_now(&config).await;
        results[1].1.push(measured(&pg, &client, seconds).await);
        client.batch_execute(clean).await.expect("clean");
        without_parked_check(&client).await;
        results[2].1.push(measured(&pg, &client, seconds).await);
        client.batch_execute(clean).await.expect("clean");
        setup::migrate_now(&config).await;
        let (run, cpu, lines) =
            consuming(&pg, &client, &config, seconds, statements && round == 0).await;
        results[3].1.push(run);
        rowcast_cpu.push(cpu);
        trigger_breakdown.extend(lines);
        client.batch_execute(clean).await.expect("clean");
        // Logical decoding: the capture trigger is replaced by the delete/key-change one
        // (it does not fire on these updates) and rowcast streams the slot.
        setup::migrate_now(&logical_config).await;
        // What decoding itself costs the server: a client that streams the slot (same
        // publication, pgoutput) and throws the changes away.
        // (rowcast's own slot is created afresh afterwards, so that it does not start with
        // this run's changes as a backlog.)
        client
            .batch_execute(
                "SELECT pg_drop_replication_slot('rowcast');
                 SELECT pg_create_logical_replication_slot('bench_discard', 'pgoutput')",
            )
            .await
            .expect("slot");
        let mut discard = recvlogical(&pg, "bench_discard");
        std::thread::sleep(Duration::from_secs(1));
        results[4].1.push(measured(&pg, &client, seconds).await);
        let _ = discard.kill();
        let _ = discard.wait();
        std::thread::sleep(Duration::from_millis(500));
        client
            .batch_execute("SELECT pg_drop_replication_slot('bench_discard')")
            .await
            .expect("drop slot");
        setup::migrate_now(&logical_config).await;
        let (run, cpu, lines) = consuming(
            &pg,
            &client,
            &logical_config,
            seconds,
            statements && round == 0,
        )
        .await;
        results[5].1.push(run);
        logical_cpu.push(cpu);
        breakdown.extend(lines);
        client.batch_execute(clean).await.expect("clean");
        // Back to trigger mode (drops the slot once the stopped rowcast has let it go).
        std::thread::sleep(Duration::from_secs(1));
        setup::migrate_now(&config).await;
        eprintln!("round {} done", round + 1);
    }
    let tps = |runs: &[(f64, f64)]| mean(&runs.iter().map(|r| r.0).collect::<Vec<_>>());
    let base = tps(&results[0].1);
    println!("| setup | TPS (runs) | mean TPS | overhead | WAL bytes per transaction |");
    println!("|---|---|---|---|---|");
    for (name, runs) in &results {
        let m = tps(runs);
        let wal = mean(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
        let runs: Vec<String> = runs.iter().map(|t| format!("{:.0}", t.0)).collect();
        println!(
            "| {name} | {} | {m:.0} | {:.1}% | {wal:.0} |",
            runs.join(", "),
            (1.0 - m / base) * 100.0,
        );
    }
    println!(
        "\nrowcast used {:.0}% of one core while consuming with triggers, {:.0}% with logical decoding.",
        mean(&rowcast_cpu),
        mean(&logical_cpu)
    );
    println!(
        "\n{}\n{}",
        setup::describe(&config),
        setup::describe(&logical_config)
    );
    for (what, lines) in [("the triggers", trigger_breakdown), ("the slot", breakdown)] {
        if lines.is_empty() {
            continue;
        }
        println!(
            "\nDatabase time by statement while rowcast consumed {what} (first round, `BENCH_STATEMENTS=1`):\n"
        );
        println!("| statement | calls | rows | total ms | µs per row |");
        println!("|---|---|---|---|---|");
        for line in lines {
            println!("{line}");
        }
    }
}

/// One measured run while rowcast consumes with `config`: its TPS and WAL, rowcast's CPU
/// (% of one core) and, when `statements`, the run's statement breakdown.
async fn consuming(
    pg: &PgTemp,
    client: &tokio_postgres::Client,
    config: &rowcast::Settings,
    seconds: u64,
    statements: bool,
) -> ((f64, f64), f64, Vec<String>) {
    let rc = Rowcast::start(config);
    std::thread::sleep(Duration::from_secs(1));
    let cpu = rc.cpu_secs();
    if statements {
        client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await
            .expect("reset");
    }
    let run = measured(pg, client, seconds).await;
    let lines = match statements {
        true => statement_times(client).await,
        false => Vec::new(),
    };
    let cpu = (rc.cpu_secs() - cpu) / seconds as f64 * 100.0;
    (run, cpu, lines)
}

/// The ten statements that took the most execution time since the last reset, as table rows.
async fn statement_times(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 90), calls, rows, total_exec_time
               FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10",
            &[],
        )
        .await
        .expect("pg_stat_statements")
        .iter()
        .map(|r| {
            let (q, calls, rows, ms): (String, i64, i64, f64) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            format!(
                "| `{}` | {calls} | {rows} | {ms:.0} | {:.1} |",
                q.replace('|', "\\|"),
                ms * 1000.0 / rows.max(1) as f64
            )
        })
        .collect()
}

/// `pg_recvlogical` streaming `slot` (publication `rowcast`) to /dev/null.
pub fn recvlogical(pg: &PgTemp, slot: &str) -> std::process::Child {
    Command::new(pg.bin_dir().join("pg_recvlogical"))
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "--slot",
            slot,
        ])
        .arg("-p")
        .arg(pg.port().to_string())
        .args([
            "--start",
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=rowcast",
            "-f",
            "/dev/null",
        ])
        .spawn()
        .expect("run pg_recvlogical")
}

/// One pgbench run: TPS and the WAL written per transaction (by everyone, rowcast included).
async fn measured(pg: &PgTemp, client: &tokio_postgres::Client, seconds: u64) -> (f64, f64) {
    let lsn = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8";
    let before: f64 = client.query_one(lsn, &[]).await.expect("lsn").get(0);
    let tps = tokio::task::block_in_place(|| pgbench(pg, seconds));
    let after: f64 = client.query_one(lsn, &[]).await.expect("lsn").get(0);
    (tps, (after - before) / (tps * seconds as f64).max(1.0))
}

/// Regenerates the tickets capture function without its `rowcast.parked_until` check (and
/// so without wake-up NOTIFYs), to measure what the check costs.
async fn without_parked_check(client: &tokio_postgres::Client) {
    let def: String = client
        .query_one(
            "SELECT pg_get_functiondef(tgfoid) FROM pg_trigger
              WHERE tgname = 'rowcast_capture' AND tgrelid = 'public.tickets'::regclass",
            &[],
        )
        .await
        .expect("capture function")
        .get(0);
    let start = def
        .find("  IF pg_catalog.pg_sequence_last_value('rowcast.parked_until'")
        .expect("parked check");
    let end = start + def[start..].find("END IF;").expect("END IF") + "END IF;".len();
    let stripped = format!("{}{}", &def[..start], &def[end..]);
    client
        .batch_execute(&stripped)
        .await
        .expect("replace function");
}
