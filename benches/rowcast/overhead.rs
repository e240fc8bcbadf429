//! `capture-overhead`: app write throughput (pgbench, single-row UPDATE, 8 clients) with no
//! capture, with the capture triggers, and with the triggers while rowcast consumes.

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
pub async fn run(seconds: u64) {
    println!(
        "\n## capture-overhead (pgbench single-row UPDATE, 8 clients, {seconds} s per run, fsync=on)\n"
    );
    let pg = PgTemp::start(PgTempOptions {
        fsync: true,
        settings: vec![("synchronous_commit".into(), "off".into())],
    })
    .expect("PostgreSQL");
    let (client, config) = setup::database(&pg, 10_000, false).await;
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
