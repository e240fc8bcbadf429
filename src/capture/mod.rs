//! Capture: tails the change log and hands enriched events to a [`Sink`], never skipping one.
//!
//! One replica at a time is the *sequencer* (session advisory lock). In trigger mode it
//! records batches of committed changes (`changelog::tick`), each numbered after every
//! earlier one, without rewriting a change; in logical mode it streams the replication slot
//! into the log with `seq` already set ([`logical`]), and its own reader takes each batch
//! the writer committed from memory (`changelog::Handoff`), reading the log only after a
//! gap. Every replica tails `seq > position`,
//! so all see one gap-free order, and an open transaction delays only its own changes. The
//! log is the truth and NOTIFY only a hint: the sequencer announces every batch on the
//! sequenced channel, so the other replicas never poll on the live path (a safety read every
//! `idle_poll` covers a lost notification). The trigger-mode sequencer itself is woken by
//! the capture triggers' NOTIFY while changes come slowly ([`park`]) and records a batch
//! every `active_poll` while they come fast. After any reconnect it reads the log from its
//! in-memory position, so a PostgreSQL restart loses nothing.
//!
//! Every few seconds capture compares the captured tables' live columns with what
//! `rowcast migrate` installed (`catalog::drift`): a table that changed is withheld.
//!
//! Failures end the session and are retried with the shared policy (`crate::retry`); one
//! that needs an operator (a publication without the key column, a missing privilege) is
//! shown in `/readyz` until capture works again.

mod config;
mod leader;
pub mod logical;
mod park;
mod rate;
mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client};
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::changelog::{self, SEQUENCED_CHANNEL, WAKE_CHANNEL};
use crate::enrich::{EnrichError, Enricher, LogRange};
use crate::event::{Event, Position};
use crate::retry::{Backoff, Retryable};
pub use config::{CaptureConfig, CaptureMode};
use leader::{Leader, SlotTask};
use park::Park;
pub use status::{CaptureHealth, CaptureStatus};

/// Longest wait between attempts while capture fails in a way that needs an operator.
const PERMANENT_RETRY: Duration = Duration::from_secs(30);
/// A session that has run this long without failing clears a reported problem.
const PROBLEM_CLEARED_AFTER: Duration = PERMANENT_RETRY;
/// How often the captured tables' live columns are compared with what was installed.
const SHAPE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Where capture delivers events.
///
/// Guarantee: `publish` is called with consecutive batches in log order; after it returns
/// for `upto`, capture never publishes an event at or before `upto` again (in this
/// process). Implementations must not block: capture waits for them.
pub trait Sink: Send + Sync {
    fn publish(&self, events: Vec<Event>, upto: Position);
}

/// The capture task of one replica.
pub struct Capture {
    pub config: CaptureConfig,
    pub database_url: String,
    pub tls: crate::db::Tls,
    /// CA for the replication connection of logical mode (the pool's `database_ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
    pub catalog: Arc<Catalog>,
    pub enricher: Enricher,
    pub sink: Arc<dyn Sink>,
    pub status: Arc<CaptureStatus>,
    /// Logical mode: the batches this replica's slot consumer wrote, read from memory.
    pub handoff: Arc<changelog::Handoff>,
}

#[derive(Debug, thiserror::Error)]
enum CaptureError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("enrich: {0}")]
    Enrich(#[from] EnrichError),
    #[error("logical capture: {0}")]
    Logical(#[from] logical::LogicalError),
}

impl Retryable for CaptureError {
    fn is_retryable(&self) -> bool {
        match self {
            CaptureError::Db(e) => e.is_retryable(),
            CaptureError::Enrich(e) => e.is_retryable(),
            CaptureError::Logical(e) => e.is_retryable(),
        }
    }
}

/// The wait between two reads of the log ended because of …
enum Woken {
    /// a NOTIFY, or the wait's timer;
    Read,
    /// the connection ending;
    Lost,
    /// the shutdown.
    Shutdown,
}

/// Capture's own connection, with its notifications (a pooled connection drops them).
struct Listener {
    client: Client,
    wake: Arc<Notify>,
    /// Set once this replica sequences: every batch announced on the sequenced channel is
    /// then its own (its tick's NOTIFY, or its slot writer's, which also pokes `wake`), so
    /// those notifications no longer wake it for a read that would find nothing.
    sequencing: Arc<AtomicBool>,
    lost: CancellationToken,
    /// The log's hot read, prepared on this connection.
    reads: changelog::Prepared,
    _driver: AbortOnDrop,
}

impl Listener {
    async fn connect(capture: &Capture) -> Result<Listener, tokio_postgres::Error> {
        let (client, mut connection) = crate::db::session(&capture.database_url)?
            .connect(capture.tls.clone())
            .await?;
        let wake = Arc::new(Notify::new());
        let conn_wake = wake.clone();
        let sequencing = Arc::new(AtomicBool::new(false));
        let own = sequencing.clone();
        let lost = CancellationToken::new();
        let conn_lost = lost.clone();
        // The connection must be polled by us to see notifications.
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n))
                        if n.channel() == SEQUENCED_CHANNEL && own.load(Ordering::Relaxed) => {}
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
        client
            .batch_execute(&format!(
                "LISTEN {WAKE_CHANNEL}; LISTEN {SEQUENCED_CHANNEL}"
            ))
            .await?;
        let reads = changelog::Prepared::new(&client).await?;
        Ok(Listener {
            client,
            wake,
            sequencing,
            lost,
            reads,
            _driver: AbortOnDrop(driver),
        })
    }

    /// Waits up to `wait` for a NOTIFY (or `wake` poked in this process).
    async fn wait(&self, wait: Duration, shutdown: &CancellationToken) -> Woken {
        tokio::select! {
            _ = self.wake.notified() => Woken::Read,
            _ = tokio::time::sleep(wait) => Woken::Read,
            _ = self.lost.cancelled() => Woken::Lost,
            _ = shutdown.cancelled() => Woken::Shutdown,
        }
    }
}

impl Capture {
    /// Runs until `shutdown` is cancelled, reconnecting per the retry policy on any error.
    pub async fn run(self, start: Position, shutdown: CancellationToken) {
        let mut position = start;
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            PERMANENT_RETRY,
        );
        loop {
            let result = tokio::select! {
                r = self.session(&mut position, &mut backoff, &shutdown) => r,
                _ = shutdown.cancelled() => Ok(()),
            };
            self.status.set_connected(false);
            self.status.set_parked(false);
            if shutdown.is_cancelled() {
                return;
            }
            let Err(e) = result else { return };
            let delay = backoff.after(&e);
            let error = crate::telemetry::error_chain(&e);
            if e.is_retryable() {
                tracing::warn!(%error, retry_in = ?delay, %position, "capture interrupted; reconnecting");
            } else {
                tracing::error!(%error, retry_in = ?delay, %position, "capture cannot continue until this is fixed; retrying slowly");
                self.status.set_problem(Some(error));
            }
            metrics::counter!("rowcast_capture_errors_total").increment(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One database connection's worth of capture. Returns on error.
    async fn session(
        &self,
        position: &mut Position,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Result<(), CaptureError> {
        let conn = Listener::connect(self).await?;
        let connected_at = Instant::now();
        self.status.set_connected(true);
        tracing::info!(%position, "capture connected");
        let logical = self.config.mode == CaptureMode::Logical;
        let mut leader = Leader::default();
        let mut slot: Option<SlotTask> = None;
        let mut park = Park::new(&self.config);
        let mut last_lag_check: Option<Instant> = None;
        let mut last_shape_check: Option<Instant> = None;
        // Where the last read ended inside a batch (continue by key, not by counting).
        let mut mark = None;
        loop {
            let lead = leader.refresh(&conn.client).await?;
            conn.sequencing.store(lead, Ordering::Relaxed);
            if lead && logical {
                // The sequencer streams the slot into the log; its end ends this session
                // (and so the lock), and the retry starts it again.
                leader::supervise_slot(&mut slot, || self.slot_consumer(&conn.wake))?;
            }
            // Trigger mode: the tick and the read go out together (one round trip): the
            // read sees the batch the tick recorded.
            let tick = async {
                match lead && !logical {
                    true => changelog::tick(&conn.client).await,
                    false => Ok(None),
                }
            };
            let turn = Instant::now();
            let (ticked, read) = tokio::join!(tick, self.tail(&conn, position, &mut mark));
            let read = read?;
            let ticked = ticked?;
            if let Some(t) = ticked {
                park.sequenced(&conn.client, (t.last.0 - t.first.0 + 1) as u64)
                    .await?;
            }
            // The log was read: the next failure starts from the shortest delay. A problem
            // that needed an operator counts as fixed once a session outlives the retry
            // delay (a failure that recurs at once keeps it in `/readyz`).
            backoff.reset();
            if connected_at.elapsed() > PROBLEM_CLEARED_AFTER {
                self.status.set_problem(None);
            }
            if last_shape_check.is_none_or(|t| t.elapsed() > SHAPE_CHECK_EVERY) {
                let drift = crate::catalog::drift(&conn.client, &self.catalog).await?;
                self.catalog.withheld.replace(drift);
                last_shape_check = Some(Instant::now());
            }
            // Read again at once while the log may hold more than was read. The unparked
            // trigger-mode sequencer (no NOTIFY announces commits) ticks again
            // `active_poll` after this turn began: one batch, one transaction and one
            // announcement per interval instead of one per round trip, which would take
            // the busy application's database time for batches of a few changes.
            // Otherwise every new batch is announced, and a notification that came during
            // this read ends the wait below at once.
            let busy = lead && !logical && !park.is_parked();
            if read.more {
                self.status.set_parked(park.is_parked());
                continue;
            }
            let wait = if busy && (ticked.is_some() || read.progressed) {
                self.config.active_poll.saturating_sub(turn.elapsed())
            } else {
                if last_lag_check.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    self.check_lag(&conn.client, *position).await?;
                    last_lag_check = Some(Instant::now());
                }
                // Nothing new. In logical mode every batch the slot consumer writes is
                // announced (a NOTIFY, and `wake` in this process); other replicas are
                // woken by the sequencer's NOTIFY after each batch: only the safety poll.
                if logical {
                    self.config.idle_poll
                } else {
                    park.next_wait(&conn.client, lead).await?
                }
            };
            self.status.set_parked(park.is_parked());
            if wait.is_zero() {
                continue;
            }
            match conn.wait(wait, shutdown).await {
                Woken::Read => {}
                Woken::Shutdown => {
                    let _ = changelog::unpark(&conn.client).await;
                    return Ok(());
                }
                // Surface the connection's error through a query.
                Woken::Lost => {
                    conn.client.simple_query("SELECT 1").await?;
                }
            }
        }
    }

    /// Reads the next batch after `position` and publishes it.
    async fn tail(
        &self,
        conn: &Listener,
        position: &mut Position,
        mark: &mut Option<changelog::Mark>,
    ) -> Result<Tailed, CaptureError> {
        let page = match self.handoff.take(*position) {
            Some(written) => self.enricher.events(written).await?,
            None => {
                let range = LogRange::after(*position)
                    .with_mark(*mark)
                    .prepared(&conn.reads);
                self.enricher
                    .events_after(&conn.client, range, self.config.batch_size)
                    .await?
            }
        };
        self.status.mark_read(*position);
        let Some(upto) = page.last else {
            return Ok(Tailed::default());
        };
        if let Some(first) = page.first_at {
            let age = (time::OffsetDateTime::now_utc() - first)
                .as_seconds_f64()
                .max(0.0);
            self.status.set_lag(age);
        }
        metrics::histogram!("rowcast_capture_batch_size").record(page.rows as f64);
        record_lag(&page.events);
        self.sink.publish(page.events, upto);
        *position = upto;
        *mark = page.mark;
        self.status.mark_read(upto);
        Ok(Tailed {
            progressed: true,
            // A batch taken from the handoff may have been followed by another already.
            more: page.more || self.handoff.has_next(upto),
        })
    }

    /// Updates the lag gauge (and, in logical mode, the WAL the slot retains).
    async fn check_lag(&self, client: &Client, position: Position) -> Result<(), CaptureError> {
        let age = changelog::oldest_unconsumed_age(client, position).await?;
        self.status.set_lag(age);
        if self.config.mode == CaptureMode::Logical {
            let retained = changelog::retained_bytes(client, &self.config.slot).await?;
            metrics::gauge!("rowcast_capture_slot_retained_bytes").set(retained);
        }
        Ok(())
    }

    fn slot_consumer(&self, wake: &Arc<Notify>) -> logical::SlotConsumer {
        logical::SlotConsumer {
            config: self.config.clone(),
            database_url: self.database_url.clone(),
            tls: self.tls.clone(),
            ca_file: self.ca_file.clone(),
            catalog: self.catalog.clone(),
            wake: wake.clone(),
            handoff: self.handoff.clone(),
        }
    }
}

/// What one [`Capture::tail`] did.
#[derive(Debug, Default)]
struct Tailed {
    /// It published a batch (its position moved).
    progressed: bool,
    /// The log may hold more right after it.
    more: bool,
}

/// A task aborted when this handle is dropped.
struct AbortOnDrop<T = ()>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Commit → emit lag of each event.
fn record_lag(events: &[Event]) {
    let now = time::OffsetDateTime::now_utc();
    let histogram = metrics::histogram!("rowcast_commit_to_emit_seconds");
    for e in events {
        histogram.record((now - e.committed_at).as_seconds_f64().max(0.0));
    }
}
