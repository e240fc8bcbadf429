//! The outbox writer: turns change-log rows into deliveries exactly once per
//! (change, endpoint), whatever the number of replicas.
//!
//! One transaction locks the `outbox` cursor row (`FOR UPDATE SKIP LOCKED`: a replica that
//! finds it locked skips, another is enqueueing), reads the changes after it, enriches and
//! routes them, inserts the deliveries and advances the cursor, then commits. A crash does
//! both or neither; the unique (change, endpoint) constraint backs this up.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::WebhookError;
use super::deliveries::{self, NewDelivery};
use super::endpoints;
use crate::changelog;
use crate::enrich::{Enricher, LogRange};
use crate::retry::Backoff;

/// Least time between two steps while no endpoint is enabled.
const NO_ENDPOINTS_PAUSE: Duration = Duration::from_millis(250);

/// What one enqueue step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Another replica holds the cursor.
    Busy,
    /// Nothing new after the cursor.
    Idle,
    /// No endpoint is enabled: the cursor moved past every change without reading them.
    NoEndpoints,
    /// Read `changes` changes and inserted `deliveries` deliveries; `more`: the log may
    /// hold more after them.
    Wrote {
        changes: usize,
        deliveries: u64,
        more: bool,
    },
}

/// Runs one enqueue transaction (see the module docs). `mark` is where the previous step's
/// read ended inside a batch; it is updated once this step commits.
pub async fn step(
    pool: &Pool,
    enricher: &Enricher,
    batch: i64,
    mark: &mut Option<changelog::Mark>,
) -> Result<Step, WebhookError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(after) = changelog::lock_outbox(&*tx).await? else {
        return Ok(Step::Busy);
    };
    // With no endpoint the changes need not be read at all: move the cursor past the
    // newest one. (Its max is read before the endpoints, so every change it skips
    // committed before any endpoint existed.)
    let Some(newest) = changelog::newest_after(&*tx, after).await? else {
        return Ok(Step::Idle);
    };
    let routes = endpoints::routes(&*tx).await?;
    if routes.is_empty() {
        changelog::advance_outbox(&*tx, newest).await?;
        tx.commit().await?;
        *mark = None;
        return Ok(Step::NoEndpoints);
    }
    let page = enricher
        .events_after(&*tx, LogRange::after(after).with_mark(*mark), batch)
        .await?;
    let Some(last) = page.last else {
        return Ok(Step::Idle);
    };
    let mut new = Vec::new();
    for e in &page.events {
        for r in routes
            .iter()
            .filter(|r| r.wants(&e.event_type, e.recipient.as_deref()))
        {
            let Some(payload) = r.payload(e) else {
                continue;
            };
            new.push(NewDelivery {
                endpoint_id: r.id,
                change_seq: e.seq.0,
                event_type: e.event_type.clone(),
                payload: payload.get().to_string(),
            });
        }
    }
    let inserted = deliveries::enqueue(&*tx, &new).await?;
    if inserted < new.len() as u64 {
        // Only possible if two writers enqueued the same change: the constraint held.
        metrics::counter!("rowcast_webhook_enqueue_conflicts_total")
            .increment(new.len() as u64 - inserted);
        tracing::warn!(
            planned = new.len(),
            inserted,
            "some deliveries were already enqueued; the unique constraint kept them single"
        );
    }
    changelog::advance_outbox(&*tx, last).await?;
    tx.commit().await?;
    *mark = page.mark;
    metrics::counter!("rowcast_webhook_enqueued_total").increment(inserted);
    Ok(Step::Wrote {
        changes: page.rows,
        deliveries: inserted,
        more: page.more,
    })
}

/// Runs the writer until `stop`: woken by capture's `after_batch` and by a timer; after
/// writing it pokes `enqueued` so workers claim at once.
pub async fn run(
    pool: Pool,
    enricher: Enricher,
    batch: i64,
    interval: Duration,
    after_batch: Arc<Notify>,
    enqueued: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
        Duration::from_secs(30),
    );
    let mut mark = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = after_batch.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        // Drain: keep stepping while full batches come back.
        loop {
            match step(&pool, &enricher, batch, &mut mark).await {
                Ok(Step::Wrote {
                    deliveries, more, ..
                }) => {
                    backoff.reset();
                    if deliveries > 0 {
                        enqueued.notify_one();
                    }
                    if !more || stop.is_cancelled() {
                        break;
                    }
                }
                Ok(Step::Busy | Step::Idle) => {
                    backoff.reset();
                    break;
                }
                Ok(Step::NoEndpoints) => {
                    // Nothing to deliver to: moving the cursor once per pause instead of
                    // after every capture batch spares the database a transaction per
                    // batch. A change committed after an endpoint appears is still after
                    // the cursor, so the endpoint gets it on the next step.
                    backoff.reset();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(NO_ENDPOINTS_PAUSE.min(interval)) => {}
                    }
                    break;
                }
                Err(e) => {
                    let delay = backoff.after(&e);
                    metrics::counter!("rowcast_webhook_enqueue_errors_total").increment(1);
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), retry_in = ?delay, "webhook enqueue failed; will retry");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    break;
                }
            }
        }
    }
}
