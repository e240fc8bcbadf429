//! Parking (trigger mode): after `idle_after` of quiet the sequencer sets
//! `rowcast.parked_until`, and only while that time lies ahead do the capture triggers call
//! `pg_notify` — so a busy application pays no NOTIFY lock at commit. Parking is race-free:
//! after setting the mark, capture keeps polling until every transaction that could have
//! read the old value has finished.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::CaptureConfig;
use crate::changelog;

/// The sequencer's parking state.
#[derive(Debug)]
pub(super) struct Park {
    state: Option<Parked>,
    last_activity: Instant,
    active_poll: Duration,
    idle_after: Duration,
    idle_poll: Duration,
}

#[derive(Debug)]
struct Parked {
    /// Transactions with ids at or above this saw our registration.
    armed_after: i64,
    /// Every transaction below `armed_after` has finished: NOTIFYs now cover every change.
    settled: bool,
    refreshed: Instant,
    ttl: f64,
}

impl Park {
    pub(super) fn new(config: &CaptureConfig) -> Park {
        Park {
            state: None,
            last_activity: Instant::now(),
            active_poll: config.active_poll,
            idle_after: config.idle_after,
            idle_poll: config.idle_poll,
        }
    }

    /// Whether NOTIFYs now cover every change (the mark is set and settled).
    pub(super) fn is_parked(&self) -> bool {
        self.state.as_ref().is_some_and(|p| p.settled)
    }

    /// Something happened: poll actively again, and unpark if parked.
    pub(super) async fn active(&mut self, client: &Client) -> Result<(), tokio_postgres::Error> {
        self.last_activity = Instant::now();
        if self.state.take().is_some() {
            changelog::unpark(client).await?;
        }
        Ok(())
    }

    /// How long to wait for a wake-up before reading the log again, parking the sequencer
    /// once it has been quiet for `idle_after`. Only the sequencer (`leader`) parks; other
    /// replicas are woken by the sequencer's NOTIFY after each batch.
    pub(super) async fn next_wait(
        &mut self,
        client: &Client,
        leader: bool,
    ) -> Result<Duration, tokio_postgres::Error> {
        if self.last_activity.elapsed() < self.idle_after {
            return Ok(self.active_poll);
        }
        if !leader {
            return Ok(self.idle_poll);
        }
        match &mut self.state {
            None => {
                let ttl = (self.idle_poll.as_secs_f64() * 10.0).max(30.0);
                changelog::park(client, ttl).await?;
                let (_, xmax) = changelog::snapshot_bounds(client).await?;
                self.state = Some(Parked {
                    armed_after: xmax,
                    settled: false,
                    refreshed: Instant::now(),
                    ttl,
                });
                Ok(self.active_poll)
            }
            Some(p) if !p.settled => {
                // Writers that started before we registered may not notify: poll until
                // every one of them has finished.
                let (horizon, _) = changelog::snapshot_bounds(client).await?;
                p.settled = horizon >= p.armed_after;
                Ok(self.active_poll)
            }
            Some(p) => {
                if p.refreshed.elapsed().as_secs_f64() > p.ttl / 3.0 {
                    changelog::park(client, p.ttl).await?;
                    p.refreshed = Instant::now();
                }
                Ok(self.idle_poll)
            }
        }
    }
}
