//! Parking (trigger mode): while fewer than `capture.park_below` changes per second come
//! in, the sequencer sets `rowcast.parked_until`, and only while that time lies ahead do the
//! capture triggers call `pg_notify` — so the sequencer is woken by each commit at light
//! load (no poll between changes) and a busy application pays no NOTIFY lock at commit (the
//! sequencer then records a batch every `capture.active_poll`). Rates are measured over
//! windows of `capture.idle_after` ([`super::rate`]); the sequencer unparks at `park_below`
//! and parks again below half of it. Parking is race-free: after setting the mark, capture
//! keeps polling until every transaction that could have read the old value has finished.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::CaptureConfig;
use super::rate::Rate;
use crate::changelog;

/// The sequencer's parking state.
#[derive(Debug)]
pub(super) struct Park {
    state: Option<Parked>,
    /// Changes sequenced per second.
    rate: Rate,
    active_poll: Duration,
    idle_poll: Duration,
    park_below: f64,
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
            rate: Rate::new(config.idle_after),
            active_poll: config.active_poll,
            idle_poll: config.idle_poll,
            park_below: config.park_below,
        }
    }

    /// Whether NOTIFYs now cover every change (the mark is set and settled).
    pub(super) fn is_parked(&self) -> bool {
        self.state.as_ref().is_some_and(|p| p.settled)
    }

    /// `n` changes were sequenced. Unparks as soon as the rate reaches `park_below`.
    pub(super) async fn sequenced(
        &mut self,
        client: &Client,
        n: u64,
    ) -> Result<(), tokio_postgres::Error> {
        self.rate.add(n);
        if self.state.is_some() && self.rate.reached(self.park_below) {
            self.state = None;
            changelog::unpark(client).await?;
            tracing::debug!("busy: the sequencer polls");
        }
        Ok(())
    }

    /// How long to wait for a wake-up before reading the log again, after a read that found
    /// nothing new. Only the sequencer (`leader`) parks; other replicas are woken by the
    /// sequencer's NOTIFY after each batch and otherwise only check every `idle_poll`.
    pub(super) async fn next_wait(
        &mut self,
        client: &Client,
        leader: bool,
    ) -> Result<Duration, tokio_postgres::Error> {
        if !leader {
            return Ok(self.idle_poll);
        }
        match &mut self.state {
            None if self.rate.last() >= self.park_below / 2.0 => Ok(self.active_poll),
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
