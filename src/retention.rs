//! Retention: one loop that keeps what rowcast stores from growing forever. Every
//! `retention.interval` it deletes, in batches of `retention.batch` so no statement holds
//! locks for long, change-log rows older than `retention.changes` (never past the webhook
//! outbox cursor: changes not yet enqueued stay) and delivered webhook deliveries older
//! than `retention.deliveries`. Dead letters (failed deliveries) are kept until replayed.

use std::time::Duration;

use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::changelog::{self, Cursor};
use crate::webhook::deliveries;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Change-log rows older than this are pruned; resuming from before them needs a resync.
    #[serde(with = "humantime_serde")]
    pub changes: Duration,
    /// Delivered webhook deliveries (and their attempts) older than this are pruned.
    #[serde(with = "humantime_serde")]
    pub deliveries: Duration,
    /// Rows deleted per pruning statement.
    pub batch: i64,
    /// How often pruning runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            changes: Duration::from_secs(24 * 3600),
            deliveries: Duration::from_secs(7 * 24 * 3600),
            batch: 5000,
            interval: Duration::from_secs(60),
        }
    }
}

impl RetentionConfig {
    /// What is wrong with this section, if anything.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.batch < 1 {
            problems.push("retention.batch must be at least 1".into());
        }
        problems
    }
}

#[derive(Debug, thiserror::Error)]
enum PruneError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// What one round deleted.
#[derive(Debug, Default)]
struct Pruned {
    changes: u64,
    deliveries: u64,
}

/// Runs until `stop`. A failed round is logged and retried at the next interval.
pub async fn run(config: RetentionConfig, pool: Pool, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.cancelled() => return,
        }
        let mut pruned = Pruned::default();
        let result = prune_round(&config, &pool, &stop, &mut pruned).await;
        if pruned.changes > 0 {
            metrics::counter!("rowcast_changes_pruned_total").increment(pruned.changes);
            tracing::info!(pruned = pruned.changes, "pruned old changes");
        }
        if pruned.deliveries > 0 {
            metrics::counter!("rowcast_webhook_deliveries_pruned_total")
                .increment(pruned.deliveries);
            tracing::info!(
                pruned = pruned.deliveries,
                "pruned delivered webhook deliveries"
            );
        }
        if let Err(e) = result {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "pruning failed; will retry");
        }
    }
}

async fn prune_round(
    config: &RetentionConfig,
    pool: &Pool,
    stop: &CancellationToken,
    pruned: &mut Pruned,
) -> Result<(), PruneError> {
    let client = pool.get().await?;
    let keep = changelog::cursor(&**client, Cursor::Outbox).await?;
    let age = config.changes.as_secs_f64();
    loop {
        let n = changelog::prune(&**client, age, keep, config.batch).await?;
        pruned.changes += n;
        if n < config.batch as u64 || stop.is_cancelled() {
            break;
        }
    }
    // Socket.IO sessions older than the change log cannot be recovered anyway.
    loop {
        let n = crate::recovery::prune(&**client, age, config.batch).await?;
        if n < config.batch as u64 || stop.is_cancelled() {
            break;
        }
    }
    let age = config.deliveries.as_secs_f64();
    loop {
        let n = deliveries::prune(&**client, age, config.batch).await?;
        pruned.deliveries += n;
        if n < config.batch as u64 || stop.is_cancelled() {
            return Ok(());
        }
        // Let other work in between batches.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
