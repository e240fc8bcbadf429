//! `large-transaction`: logical capture of one transaction that updates N rows — the
//! sequencer's peak memory and the time until every change is in the log.

use std::time::{Duration, Instant};

use rowcast::config::CaptureMode;
use rowcast::pgtemp::{PgTemp, PgTempOptions};

use crate::setup::{self, Rowcast};

pub async fn run(rows: i64) {
    println!("\n## large-transaction (logical capture, one `UPDATE` of {rows} tickets)\n");
    let pg = PgTemp::start(PgTempOptions::default()).expect("PostgreSQL");
    let (client, mut config) = setup::database(&pg, rows, false).await;
    config.capture.mode = CaptureMode::Logical;
    setup::migrate_now(&config).await;
    let rc = Rowcast::start(&config, &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rc.rss_mb();
    let started = Instant::now();
    client
        .execute("UPDATE tickets SET status = 'pending'", &[])
        .await
        .expect("the large transaction");
    let committed = started.elapsed();
    let logged = loop {
        let n: i64 = client
            .query_one("SELECT count(*) FROM rowcast.changes WHERE op = 'u'", &[])
            .await
            .expect("count")
            .get(0);
        if n >= rows {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{n} of {rows} changes in the log after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "| rows | batch_size | RSS before MB | peak RSS MB | transaction committed s | all in the log s |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {rows} | {} | {before:.1} | {:.1} | {:.1} | {:.1} |",
        config.capture.batch_size,
        rc.peak_rss_mb(),
        committed.as_secs_f64(),
        logged.as_secs_f64()
    );
}
