//! Delivery workers: claim due deliveries under a lease, send them signed, record every
//! attempt, and reschedule, fail or disable as the answer says.
//!
//! One claim loop per process takes up to `batch` due deliveries at a time (never more
//! than free slots of `concurrency`), a task per delivery sends it, and one writer task
//! stores results in batches. Fairness is the claim's: at most `per_endpoint_concurrency`
//! deliveries of one endpoint are leased at once over the whole cluster, and endpoints are
//! taken round-robin (see [`deliveries::claim`]), so a receiver that never answers holds
//! that many slots for `timeout` at most and every other endpoint keeps being served. Guarantee: at least once. A process that dies releases nothing; its leases
//! run out (`lease` > `timeout`) and another worker sends the delivery again with the same
//! `webhook-id`, so receivers can deduplicate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::attempts::AttemptOutcome;
use super::deliveries::{self, AttemptResult, Claimed, DeliveryStatus};
use super::schedule::{Next, Schedule, parse_retry_after};
use super::sender::{Sender, Sent};
use super::{WebhookConfig, WebhookError, endpoints};
use crate::retry::Backoff;

/// The retry policy of the worker's own database work (claims, storing results).
fn db_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
}

/// What a delivery task hands to the result writer.
enum Outcome {
    Attempted {
        result: AttemptResult,
        gone: Option<Uuid>,
    },
    /// Not attempted (shutdown): give the lease back.
    Released { id: Uuid, lease: Uuid },
}

/// The delivery worker of one process.
pub struct Worker {
    pub pool: Pool,
    pub config: WebhookConfig,
    pub sender: Arc<Sender>,
    /// Poked when deliveries were enqueued or replayed.
    pub wake: Arc<Notify>,
}

impl Worker {
    /// Runs until `stop`. In-flight requests then get `grace` to finish; the rest are
    /// released. Returns once every result is stored, or after another `grace / 2` if the
    /// database is not taking them (those leases simply run out: sent again later).
    pub async fn run(self, stop: CancellationToken, grace: Duration) {
        let (result_tx, result_rx) = mpsc::channel::<Outcome>(4096);
        let hard = CancellationToken::new();
        // Results stored free their endpoints' leases: the claim loop tries again then, not
        // only on an enqueue or after `poll_interval` (a claim bounded by
        // `per_endpoint_concurrency` takes less than it has slots for).
        let stored = Arc::new(Notify::new());
        let writer = tokio::spawn(write_results(
            self.pool.clone(),
            result_rx,
            hard.clone(),
            stored.clone(),
        ));
        let depth = tokio::spawn(report_depth(self.pool.clone(), stop.clone()));
        let tasks = TaskTracker::new();
        self.claim_loop(&stop, &hard, &tasks, &result_tx, &stored)
            .await;
        drop(result_tx);
        tasks.close();
        let in_flight = tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, "finishing in-flight webhook deliveries");
        }
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            // Requests still running: cut them and release their leases.
            hard.cancel();
            tasks.wait().await;
        }
        let mut writer = writer;
        if tokio::time::timeout(grace / 2, &mut writer).await.is_err() {
            // The database is not taking results: stop retrying (the leases run out).
            hard.cancel();
            let _ = writer.await;
        }
        let _ = depth.await;
    }

    async fn claim_loop(
        &self,
        stop: &CancellationToken,
        hard: &CancellationToken,
        tasks: &TaskTracker,
        result_tx: &mpsc::Sender<Outcome>,
        stored: &Notify,
    ) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let schedule = Arc::new(Schedule::new(
            self.config.retry_schedule.clone(),
            self.config.max_retry_after,
        ));
        let mut backoff = db_backoff();
        loop {
            let first = tokio::select! {
                biased;
                // 1. Shutdown: stop claiming.
                _ = stop.cancelled() => return,
                // 2. A free slot.
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let mut permits = vec![first];
            while (permits.len() as i64) < self.config.batch {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let claimed = match self.claim(permits.len() as i64).await {
                Ok(c) => {
                    backoff.reset();
                    c
                }
                Err(e) => {
                    let delay = backoff.after(&e);
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), retry_in = ?delay, "claiming webhook deliveries failed");
                    drop(permits);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            let full = claimed.len() == permits.len();
            for d in claimed {
                let Some(slot) = permits.pop() else { break };
                tasks.spawn(deliver(Delivery {
                    d,
                    slot,
                    sender: self.sender.clone(),
                    schedule: schedule.clone(),
                    result_tx: result_tx.clone(),
                    stop: stop.clone(),
                    hard: hard.clone(),
                }));
            }
            drop(permits);
            if !full {
                // Nothing more is due (or its endpoints are at their bound): wait for an
                // enqueue, stored results (leases freed) or the next retry time.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = stored.notified() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
    }

    async fn claim(&self, limit: i64) -> Result<Vec<Claimed>, WebhookError> {
        let mut client = self.pool.get().await?;
        let per_endpoint = self.config.per_endpoint_concurrency as i64;
        let lease = self.config.lease.as_secs_f64();
        Ok(deliveries::claim(&mut client, limit, per_endpoint, lease).await?)
    }
}

/// Sets the outbox depth gauge (deliveries by status) every 5 s until `stop`.
async fn report_depth(pool: Pool, stop: CancellationToken) {
    loop {
        if let Ok(client) = pool.get().await
            && let Ok(depth) = deliveries::depth(&**client).await
        {
            for status in DeliveryStatus::ALL {
                let n = depth.iter().find(|(s, _)| *s == status).map_or(0, |d| d.1);
                metrics::gauge!("rowcast_webhook_outbox_depth", "status" => status.as_str())
                    .set(n as f64);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Everything one delivery task owns.
struct Delivery {
    d: Claimed,
    /// A slot of the overall cap, held for the whole task.
    slot: OwnedSemaphorePermit,
    sender: Arc<Sender>,
    schedule: Arc<Schedule>,
    result_tx: mpsc::Sender<Outcome>,
    stop: CancellationToken,
    hard: CancellationToken,
}

async fn deliver(job: Delivery) {
    let Delivery {
        d,
        slot,
        sender,
        schedule,
        result_tx,
        stop,
        hard,
    } = job;
    let release = Outcome::Released {
        id: d.id,
        lease: d.lease,
    };
    if stop.is_cancelled() {
        let _ = result_tx.send(release).await;
        return;
    }
    let attempted_at = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    metrics::gauge!("rowcast_webhook_in_flight").increment(1.0);
    let sent = tokio::select! {
        s = sender.send(&d) => Some(s),
        _ = hard.cancelled() => None,
    };
    metrics::gauge!("rowcast_webhook_in_flight").decrement(1.0);
    let Some(sent) = sent else {
        let _ = result_tx.send(release).await;
        return;
    };
    let elapsed = started.elapsed();
    metrics::histogram!("rowcast_webhook_attempt_duration_seconds").record(elapsed.as_secs_f64());
    let outcome = classify(&d, &schedule, sent, attempted_at, elapsed);
    if let Outcome::Attempted { result, .. } = &outcome {
        metrics::counter!("rowcast_webhook_attempts_total", "outcome" => result.outcome.as_str())
            .increment(1);
    }
    let _ = result_tx.send(outcome).await;
    drop(slot);
}

/// Turns what the receiver did into the stored result and the delivery's next state.
fn classify(
    d: &Claimed,
    schedule: &Schedule,
    sent: Sent,
    attempted_at: time::OffsetDateTime,
    elapsed: Duration,
) -> Outcome {
    let tries = d.tries + 1;
    let mut result = AttemptResult {
        delivery_id: d.id,
        lease: d.lease,
        attempted_at,
        duration_ms: elapsed.as_millis().min(i32::MAX as u128) as i32,
        status_code: None,
        outcome: AttemptOutcome::Delivered,
        error: None,
        response: None,
        private: None,
        status: DeliveryStatus::Delivered,
        tries,
        retry_in: None,
    };
    let mut gone = None;
    let retry_after = match sent {
        Sent::Response {
            status,
            retry_after,
            body,
            private,
        } => {
            result.status_code = Some(i32::from(status));
            result.response = Some(body);
            result.private = Some(private);
            if (200..300).contains(&status) {
                return Outcome::Attempted { result, gone };
            }
            if status == 410 {
                result.outcome = AttemptOutcome::Gone;
                result.status = DeliveryStatus::Failed;
                result.error = Some("the receiver answered 410 Gone: endpoint disabled".into());
                gone = Some(d.endpoint_id);
                return Outcome::Attempted { result, gone };
            }
            result.error = Some(format!("the receiver answered HTTP {status}"));
            retry_after.as_deref().and_then(parse_retry_after)
        }
        Sent::Failed(error) => {
            result.error = Some(error);
            None
        }
    };
    match schedule.after_failure(tries as usize, retry_after) {
        Next::RetryIn(delay) => {
            result.outcome = AttemptOutcome::Retry;
            result.status = DeliveryStatus::Pending;
            result.retry_in = Some(delay.as_secs_f64());
        }
        Next::GiveUp => {
            result.outcome = AttemptOutcome::Failed;
            result.status = DeliveryStatus::Failed;
        }
    }
    Outcome::Attempted { result, gone }
}

/// Stores results in batches until every sender is gone. A failed write is retried (the
/// deliveries stay leased meanwhile) until `hard` stop; after that it is dropped and the
/// leases run out, so the deliveries are sent again: at least once.
async fn write_results(
    pool: Pool,
    mut rx: mpsc::Receiver<Outcome>,
    hard: CancellationToken,
    stored: Arc<Notify>,
) {
    let mut buf = Vec::with_capacity(512);
    while rx.recv_many(&mut buf, 512).await > 0 {
        let mut results = Vec::new();
        let mut released = Vec::new();
        let mut gone = Vec::new();
        for o in buf.drain(..) {
            match o {
                Outcome::Attempted { result, gone: g } => {
                    results.push(result);
                    gone.extend(g);
                }
                Outcome::Released { id, lease } => released.push((id, lease)),
            }
        }
        let mut backoff = db_backoff();
        loop {
            let written: Result<(), WebhookError> = async {
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                deliveries::record(&*tx, &results).await?;
                deliveries::release(&*tx, &released).await?;
                if !gone.is_empty() {
                    endpoints::disable_gone(&*tx, &gone).await?;
                    tracing::warn!(endpoints = ?gone, "webhook endpoints answered 410 Gone; disabled");
                }
                tx.commit().await?;
                Ok(())
            }
            .await;
            match written {
                Ok(()) => {
                    stored.notify_one();
                    break;
                }
                Err(e) if hard.is_cancelled() => {
                    tracing::warn!(error = %e, results = results.len(), "dropping webhook results at shutdown; their leases will run out and they will be sent again");
                    break;
                }
                Err(e) => {
                    let delay = backoff.after(&e);
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), retry_in = ?delay, "storing webhook results failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
