//! Leadership: which replica sequences (trigger mode) or streams the slot (logical mode).
//! A session advisory lock, so a replica whose connection dies loses it with the
//! connection and another takes over within a second.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::AbortOnDrop;
use super::logical::{LogicalError, SlotConsumer};
use crate::changelog;

/// This connection's claim on the sequencer lock.
#[derive(Debug, Default)]
pub(super) struct Leader {
    held: bool,
    last_try: Option<Instant>,
}

impl Leader {
    /// Tries for the lock at most once a second while not holding it. Returns whether this
    /// replica is the sequencer.
    pub(super) async fn refresh(&mut self, client: &Client) -> Result<bool, tokio_postgres::Error> {
        if !self.held
            && self
                .last_try
                .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.held = changelog::try_lead(client).await?;
            self.last_try = Some(Instant::now());
            if self.held {
                tracing::info!("this replica sequences changes");
            }
            metrics::gauge!("rowcast_capture_sequencer").set(if self.held { 1.0 } else { 0.0 });
        }
        Ok(self.held)
    }
}

/// The slot consumer task of the sequencer replica (logical mode).
pub(super) type SlotTask = AbortOnDrop<Result<(), LogicalError>>;

/// Starts the slot consumer if it is not running; an ended one ends the session with its
/// error (the caller reconnects, and the retry starts a new one).
pub(super) fn supervise_slot(
    task: &mut Option<SlotTask>,
    consumer: impl FnOnce() -> SlotConsumer,
) -> Result<(), LogicalError> {
    match task {
        None => {
            *task = Some(AbortOnDrop(tokio::spawn(consumer().run())));
            Ok(())
        }
        Some(h) if h.0.is_finished() => {
            let mut h = task.take().expect("checked");
            // A finished task's result is ready: `now_or_never` takes it without waiting.
            let result = futures_util::FutureExt::now_or_never(&mut h.0);
            Err(match result {
                Some(Ok(Err(e))) => e,
                _ => LogicalError::Ended,
            })
        }
        Some(_) => Ok(()),
    }
}
