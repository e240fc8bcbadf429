//! Capture: tails the change log and hands enriched events to the hub, never skipping one.
//!
//! One replica at a time is the *sequencer* (session advisory lock): it stamps committed
//! changes with `seq` in serialized transactions (`log::sequence`). Every replica tails
//! `seq > position`, so all see one gap-free order, and an open transaction delays only its
//! own changes. The log is the truth and NOTIFY only a hint. While changes keep coming,
//! capture polls every `active_poll`; after `idle_after` of quiet the sequencer *parks*: it
//! sets `rowcast.parked_until`, and only then do capture triggers call `pg_notify` (so a
//! busy application pays no NOTIFY lock at commit). Parking is race-free: after setting
//! the mark, capture keeps polling until every transaction that could have read the old
//! value has finished. A safety poll every `idle_poll` covers lost notifications (a
//! reconnect). After any reconnect it
//! reads the log from its in-memory position, so a PostgreSQL restart loses nothing.
//!
//! In logical mode (`capture.mode = "logical"`) the sequencer does not stamp trigger rows:
//! it streams the replication slot into the log with `seq` already set (`logical`), and
//! every batch it writes wakes the readers, so nobody polls or parks.

pub mod log;
pub mod logical;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::config::{CaptureConfig, CaptureMode};
use crate::enrich::Enricher;
use crate::event::{Event, Position};
use crate::hub::Hub;
use crate::schema::{Catalog, WAKE_CHANNEL};

/// Where capture stands, for `/readyz` and `/metrics`.
#[derive(Debug)]
pub struct CaptureStatus {
    pub connected: AtomicBool,
    /// Milliseconds since process start of the last successful read of the log.
    last_read_ms: AtomicU64,
    /// Age of the oldest unconsumed change, in milliseconds.
    lag_ms: AtomicU64,
    position: Mutex<Position>,
    started: Instant,
}

impl CaptureStatus {
    pub fn new(position: Position) -> CaptureStatus {
        CaptureStatus {
            connected: AtomicBool::new(false),
            last_read_ms: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            position: Mutex::new(position),
            started: Instant::now(),
        }
    }

    fn mark_read(&self, position: Position) {
        self.last_read_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        *self.position.lock().unwrap_or_else(|p| p.into_inner()) = position;
    }

    fn set_lag(&self, secs: f64) {
        self.lag_ms.store((secs * 1000.0) as u64, Ordering::Relaxed);
        metrics::gauge!("rowcast_capture_lag_seconds").set(secs);
    }

    /// Time since the log was last read successfully.
    pub fn since_last_read(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_read_ms.load(Ordering::Relaxed)))
    }

    /// Age of the oldest change not yet consumed.
    pub fn lag(&self) -> Duration {
        Duration::from_millis(self.lag_ms.load(Ordering::Relaxed))
    }

    pub fn position(&self) -> Position {
        *self.position.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Receives every batch of events in log order. The hub is the main sink; the outbox
/// writer is woken through `after_batch`.
pub struct Capture {
    pub config: CaptureConfig,
    pub database_url: String,
    pub tls: crate::db::Tls,
    /// CA for the replication connection of logical mode (the pool's `database_ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
    pub catalog: Arc<Catalog>,
    pub enricher: Enricher,
    pub hub: Arc<Hub>,
    pub status: Arc<CaptureStatus>,
    /// Poked after each published batch (wakes the webhook outbox writer).
    pub after_batch: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
enum CaptureError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("enrich: {0}")]
    Enrich(#[from] crate::enrich::EnrichError),
    #[error("logical capture: {0}")]
    Logical(#[from] logical::LogicalError),
}

impl Capture {
    /// Runs until `shutdown` is cancelled, reconnecting with backoff on any error.
    pub async fn run(self, start: Position, shutdown: CancellationToken) {
        let mut position = start;
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let result = tokio::select! {
                r = self.session(&mut position, &shutdown) => r,
                _ = shutdown.cancelled() => Ok(()),
            };
            self.status.connected.store(false, Ordering::Relaxed);
            if shutdown.is_cancelled() {
                return;
            }
            match result {
                Ok(()) => return,
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), retry_in = ?delay, %position, "capture interrupted; reconnecting");
                    metrics::counter!("rowcast_capture_errors_total").increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// One database connection's worth of capture. Returns on error.
    async fn session(
        &self,
        position: &mut Position,
        shutdown: &CancellationToken,
    ) -> Result<(), CaptureError> {
        let (mut client, mut connection) =
            tokio_postgres::connect(&self.database_url, self.tls.clone()).await?;
        let wake = Arc::new(Notify::new());
        let conn_wake = wake.clone();
        let lost = CancellationToken::new();
        let conn_lost = lost.clone();
        // The connection must be polled by us to see notifications (a pooled one drops them).
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => conn_wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "capture connection ended");
                        break;
                    }
                }
            }
            conn_lost.cancel();
        });
        let _driver = AbortOnDrop(driver);
        client
            .batch_execute(&format!(
                "LISTEN {WAKE_CHANNEL}; LISTEN {}",
                log::SEQUENCED_CHANNEL
            ))
            .await?;
        self.status.connected.store(true, Ordering::Relaxed);
        tracing::info!(%position, "capture connected");

        let mut leader = false;
        let mut last_lead_try: Option<Instant> = None;
        let mut last_activity = Instant::now();
        let mut parked: Option<ParkState> = None;
        let mut last_lag_check = Instant::now() - Duration::from_secs(60);
        let logical = self.config.mode == CaptureMode::Logical;
        let mut consumer: Option<AbortOnDrop<Result<(), logical::LogicalError>>> = None;
        loop {
            // The sequencer role moves to whichever replica gets the lock first; a replica
            // whose connection dies loses it with the connection.
            if !leader && last_lead_try.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                leader = log::try_lead(&client).await?;
                last_lead_try = Some(Instant::now());
                if leader {
                    tracing::info!("this replica sequences changes");
                }
                metrics::gauge!("rowcast_capture_sequencer").set(if leader { 1.0 } else { 0.0 });
            }
            let mut progressed = false;
            if leader && !logical {
                let n = log::sequence(&mut client, self.config.batch_size).await?;
                progressed = n > 0;
            }
            if leader && logical {
                // The sequencer streams the slot into the log; its end ends this session
                // (and so the lock), and the retry starts it again.
                match &consumer {
                    None => {
                        consumer = Some(AbortOnDrop(tokio::spawn(
                            logical::SlotConsumer {
                                config: self.config.clone(),
                                database_url: self.database_url.clone(),
                                tls: self.tls.clone(),
                                ca_file: self.ca_file.clone(),
                                catalog: self.catalog.clone(),
                                wake: wake.clone(),
                            }
                            .run(),
                        )));
                    }
                    Some(h) if h.0.is_finished() => {
                        let mut h = consumer.take().expect("checked");
                        let result = (&mut h.0).await;
                        return Err(match result {
                            Ok(Err(e)) => e.into(),
                            Ok(Ok(())) | Err(_) => logical::LogicalError::Ended.into(),
                        });
                    }
                    Some(_) => {}
                }
            }
            let changes = log::read_after(&client, *position, self.config.batch_size).await?;
            self.status.mark_read(*position);
            if let Some(first) = changes.first() {
                let age = (time::OffsetDateTime::now_utc() - first.at)
                    .as_seconds_f64()
                    .max(0.0);
                self.status.set_lag(age);
                let upto = changes.last().map(|c| c.pos).unwrap_or(*position);
                metrics::histogram!("rowcast_capture_batch_size").record(changes.len() as f64);
                let events = self.enricher.enrich(&changes).await?;
                record_lag(&events);
                self.hub.publish(events, upto);
                self.after_batch.notify_one();
                *position = upto;
                self.status.mark_read(*position);
                progressed = true;
            }
            if progressed {
                if parked.take().is_some() {
                    log::unpark(&client).await?;
                }
                last_activity = Instant::now();
                continue;
            }
            if last_lag_check.elapsed() > Duration::from_secs(1) {
                let age = log::oldest_unconsumed_age(&client, *position).await?;
                self.status.set_lag(age);
                if logical {
                    let retained = logical::retained_bytes(&client, &self.config.slot).await?;
                    metrics::gauge!("rowcast_capture_slot_retained_bytes").set(retained);
                }
                last_lag_check = Instant::now();
            }
            // Nothing new. Keep polling while recently active; otherwise wait for a wake-up:
            // the sequencer parks (application triggers NOTIFY it); other replicas are
            // woken by the sequencer's NOTIFY after each batch.
            let wait = if logical {
                // Every batch the slot consumer writes is announced (a NOTIFY, and `wake`
                // in this process): no polling needed, only the safety poll.
                self.config.idle_poll
            } else if last_activity.elapsed() < self.config.idle_after {
                self.config.active_poll
            } else if !leader {
                self.config.idle_poll
            } else {
                match &mut parked {
                    None => {
                        let ttl = (self.config.idle_poll.as_secs_f64() * 10.0).max(30.0);
                        log::park(&client, ttl).await?;
                        let (_, xmax) = log::snapshot_bounds(&client).await?;
                        parked = Some(ParkState {
                            armed_after: xmax,
                            settled: false,
                            refreshed: Instant::now(),
                            ttl,
                        });
                        self.config.active_poll
                    }
                    Some(p) if !p.settled => {
                        // Writers that started before we registered may not notify: poll
                        // until every one of them has finished.
                        let (horizon, _) = log::snapshot_bounds(&client).await?;
                        p.settled = horizon >= p.armed_after;
                        self.config.active_poll
                    }
                    Some(p) => {
                        if p.refreshed.elapsed().as_secs_f64() > p.ttl / 3.0 {
                            log::park(&client, p.ttl).await?;
                            p.refreshed = Instant::now();
                        }
                        self.config.idle_poll
                    }
                }
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = lost.cancelled() => {}
                _ = shutdown.cancelled() => {
                    let _ = log::unpark(&client).await;
                    return Ok(());
                }
            }
            if lost.is_cancelled() {
                // Surface the connection error through a query.
                client.simple_query("SELECT 1").await?;
            }
        }
    }
}

struct ParkState {
    /// Transactions with ids at or above this saw our registration.
    armed_after: i64,
    /// Every transaction below `armed_after` has finished.
    settled: bool,
    refreshed: Instant,
    ttl: f64,
}

struct AbortOnDrop<T = ()>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Commit → emit lag of each event.
fn record_lag(events: &[Event]) {
    let now = time::OffsetDateTime::now_utc();
    for e in events {
        let lag = (now - e.committed_at).as_seconds_f64().max(0.0);
        metrics::histogram!("rowcast_commit_to_emit_seconds").record(lag);
    }
}
