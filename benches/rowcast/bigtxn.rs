//! `large-transaction`: logical capture of one transaction that updates N rows — the
//! sequencer's peak memory and the time until every change is in the log.

use std::time::{Duration, Instant};

use rowcast::config::CaptureMode;
use rowcast::pgtemp::{PgTemp, PgTempOptions};

use crate::setup::{self, Rowcast};

/// `batch_size`: `capture.batch_size` (default: rowcast's default, 1000).
pub async fn run(rows: i64, batch_size: Option<i64>) {
    println!("\n## large-transaction (logical capture, one `UPDATE` of {rows} tickets)\n");
    let pg = PgTemp::start(PgTempOptions::default()).expect("PostgreSQL");
    let (client, mut config) = setup::database(&pg, rows, false).await;
    config.capture.mode = CaptureMode::Logical;
    if let Some(b) = batch_size {
        config.capture.batch_size = b;
    }
    setup::migrate_now(&config).await;
    let rc = Rowcast::start(&config);
    println!("{}\n", setup::describe(&rc.config));
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
    // What the running process did with its batch size: capture reads the log in batches
    // of at most `capture.batch_size` changes (rowcast_capture_batch_size, a histogram).
    let (batches, read) = capture_batches(&rc).await;
    println!(
        "| rows | capture.batch_size (running) | capture batches read | mean batch | RSS before MB | peak RSS MB | transaction committed s | all in the log s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {rows} | {} | {batches} | {:.0} | {before:.1} | {:.1} | {:.1} | {:.1} |",
        rc.config.capture.batch_size,
        read / batches.max(1) as f64,
        rc.peak_rss_mb(),
        committed.as_secs_f64(),
        logged.as_secs_f64()
    );
}

/// `rowcast_capture_batch_size`'s count and sum from `/metrics`, once every change of the
/// transaction has been read (the count stops growing).
async fn capture_batches(rc: &Rowcast) -> (i64, f64) {
    let http = reqwest::Client::new();
    let mut last = (0, 0.0);
    for _ in 0..600 {
        let text = http
            .get(format!("{}/metrics", rc.base()))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let now = (
            value("rowcast_capture_batch_size_count") as i64,
            value("rowcast_capture_batch_size_sum"),
        );
        if now.0 > 0 && now == last {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}
