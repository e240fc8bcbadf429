//! Webhooks: endpoints, the exactly-once outbox, signed delivery with retries, the attempt
//! log, dead letters and replay.
//!
//! The flow: capture's `after_batch` wakes the [`outbox`] writer, which turns new changes
//! into rows of `rowcast.webhook_deliveries` under the durable `outbox` cursor; the
//! [`worker`] claims due rows under a lease and sends them through [`sender`] (signed by
//! [`sign`], guarded by [`ssrf`], retried per [`schedule`]). The HTTP surface is
//! `api::webhooks`; what it shows of an attempt (and to whom) is [`attempts`].

pub mod attempts;
mod config;
pub mod deliveries;
pub mod endpoints;
pub mod limit;
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

use crate::changelog;
use crate::enrich::Enricher;
use crate::event::Position;
use crate::retry::Retryable;
pub use config::WebhookConfig;

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

impl Retryable for WebhookError {
    /// Database and enrichment failures may pass; a client that cannot be built will not.
    fn is_retryable(&self) -> bool {
        match self {
            WebhookError::Db(e) => e.is_retryable(),
            WebhookError::Pool(e) => e.is_retryable(),
            WebhookError::Enrich(e) => e.is_retryable(),
            WebhookError::Client(_) => false,
        }
    }
}

/// What the API needs from the webhook machinery. Cheap to share.
pub struct Webhooks {
    pub guard: Arc<ssrf::Guard>,
    /// Wakes the worker when a delivery was enqueued or replayed through the API.
    pub wake: Arc<Notify>,
    /// How long a rotated-out secret keeps signing.
    pub secret_grace: Duration,
    /// Bounds each user's test sends (in this process).
    pub test_sends: limit::TestSendLimiter,
}

/// Initializes the outbox cursor at `start` (if absent) and spawns the outbox writer and
/// the delivery worker into `tracker`; all stop on `stop`. `grace` is how long requests in
/// flight may finish at shutdown.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    c: &WebhookConfig,
    pool: &Pool,
    enricher: Enricher,
    after_batch: Arc<Notify>,
    start: Position,
    grace: Duration,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<Arc<Webhooks>, WebhookError> {
    let client = pool.get().await?;
    changelog::init_outbox(&**client, start).await?;
    drop(client);
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
    tracker.spawn(worker.run(stop, grace));
    Ok(Arc::new(Webhooks {
        guard,
        wake,
        secret_grace: c.secret_grace,
        test_sends: limit::TestSendLimiter::new(c.test_sends_per_minute),
    }))
}
