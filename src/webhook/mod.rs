//! Webhooks: endpoints, the exactly-once outbox, signed delivery with retries, the attempt
//! log, dead letters and replay.
//!
//! The flow: capture's `after_batch` wakes the [`outbox`] writer, which turns new changes
//! into rows of `rowcast.webhook_deliveries` under the durable `outbox` cursor; the
//! [`worker`] claims due rows under a lease and sends them through [`sender`] (signed by
//! [`sign`], guarded by [`ssrf`], retried per [`schedule`]). [`api`] is the HTTP surface.

pub mod api;
pub mod deliveries;
pub mod endpoints;
pub mod outbox;
pub mod schedule;
pub mod sender;
pub mod sign;
pub mod ssrf;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::enrich::Enricher;
use crate::event::Position;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("enrich: {0}")]
    Enrich(#[from] crate::enrich::EnrichError),
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl WebhookError {
    /// Database and enrichment failures pass; a client that cannot be built will not.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, WebhookError::Client(_))
    }
}

/// What the API needs from the webhook machinery. Cheap to share.
pub struct Webhooks {
    pub guard: Arc<ssrf::Guard>,
    /// Wakes the worker when a delivery was enqueued or replayed through the API.
    pub wake: Arc<Notify>,
}

/// Initializes the outbox cursor at `start` (if absent) and spawns the outbox writer, the
/// delivery worker and delivery retention into `tracker`; all stop on `stop`.
pub async fn start(
    config: &Arc<Config>,
    pool: &Pool,
    enricher: Enricher,
    after_batch: Arc<Notify>,
    start: Position,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<Arc<Webhooks>, WebhookError> {
    let client = pool.get().await?;
    outbox::init_cursor(&**client, start).await?;
    drop(client);
    let c = &config.webhook;
    let guard = Arc::new(ssrf::Guard::new(c.allow_cidrs.clone()));
    let sender = Arc::new(sender::Sender::new(c, guard.clone())?);
    let wake = Arc::new(Notify::new());
    tracker.spawn(outbox::run(
        pool.clone(),
        enricher,
        c.enqueue_batch,
        c.poll_interval,
        after_batch,
        wake.clone(),
        stop.clone(),
    ));
    let worker = worker::Worker {
        pool: pool.clone(),
        config: c.clone(),
        sender,
        wake: wake.clone(),
    };
    // Half the shutdown deadline for requests in flight, the rest to store their results.
    tracker.spawn(worker.run(stop.clone(), config.shutdown_timeout / 2));
    tracker.spawn(prune_loop(config.clone(), pool.clone(), stop));
    Ok(Arc::new(Webhooks { guard, wake }))
}

/// Retention: delivered deliveries (and their attempts) older than
/// `retention.deliveries`, in batches of `retention.batch`. Failed ones stay (dead letters).
async fn prune_loop(config: Arc<Config>, pool: Pool, stop: CancellationToken) {
    let age = config.retention.deliveries.as_secs_f64();
    let batch = config.retention.batch;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.retention.interval) => {}
            _ = stop.cancelled() => return,
        }
        let mut total = 0u64;
        let result: Result<(), WebhookError> = async {
            let client = pool.get().await?;
            loop {
                let n = deliveries::prune(&**client, age, batch).await?;
                total += n;
                if n < batch as u64 || stop.is_cancelled() {
                    return Ok(());
                }
                // Let other work in between batches.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        .await;
        if total > 0 {
            metrics::counter!("rowcast_webhook_deliveries_pruned_total").increment(total);
            tracing::info!(pruned = total, "pruned delivered webhook deliveries");
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "pruning webhook deliveries failed; will retry");
        }
    }
}
