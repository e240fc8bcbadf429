//! Where capture stands, for `/readyz`, `/metrics` and the tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::CaptureConfig;
use crate::catalog::Withheld;
use crate::event::Position;

/// Shared between the capture task (writer) and the health endpoints (readers).
#[derive(Debug)]
pub struct CaptureStatus {
    connected: AtomicBool,
    /// The sequencer is parked: capture triggers NOTIFY it and it polls only on its slow
    /// timer (trigger mode).
    parked: AtomicBool,
    /// Milliseconds since process start of the last successful read of the log.
    last_read_ms: AtomicU64,
    /// Age of the oldest unconsumed change, in milliseconds.
    lag_ms: AtomicU64,
    position: Mutex<Position>,
    /// A failure that retrying will not fix (the operator must act), until capture works
    /// again.
    problem: Mutex<Option<String>>,
    started: Instant,
    /// `/readyz` fails when the log was not read for this long.
    read_bound: Duration,
    /// `/readyz` fails above this lag.
    max_lag: Duration,
    /// Tables whose rows are withheld (their columns changed since `rowcast migrate`).
    withheld: Arc<Withheld>,
}

/// What `/readyz` reports about capture.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptureHealth {
    pub capture_connected: bool,
    pub capture_reading: bool,
    pub capture_lag_seconds: f64,
    pub max_lag_seconds: f64,
    pub position: Position,
    /// Trigger mode: the sequencer of this replica is parked (capture triggers NOTIFY it).
    pub capture_parked: bool,
    /// Why capture cannot work until the operator acts, if it cannot.
    pub capture_problem: Option<String>,
    /// Tables whose rows are withheld, with the reason (their columns no longer match what
    /// `rowcast migrate` installed).
    pub withheld_tables: BTreeMap<String, String>,
}

impl CaptureHealth {
    pub fn ok(&self) -> bool {
        self.capture_connected
            && self.capture_reading
            && self.capture_lag_seconds < self.max_lag_seconds
            && self.capture_problem.is_none()
            && self.withheld_tables.is_empty()
    }
}

impl CaptureStatus {
    pub fn new(
        position: Position,
        config: &CaptureConfig,
        withheld: Arc<Withheld>,
    ) -> CaptureStatus {
        CaptureStatus {
            connected: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            last_read_ms: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            position: Mutex::new(position),
            problem: Mutex::new(None),
            started: Instant::now(),
            read_bound: (config.idle_poll * 5).max(Duration::from_secs(5)),
            max_lag: config.max_lag,
            withheld,
        }
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub(super) fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::Relaxed);
    }

    /// Whether the sequencer of this replica is parked right now (trigger mode): from here
    /// on only a capture trigger's NOTIFY, or the slow `idle_poll`, wakes it.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    pub(super) fn mark_read(&self, position: Position) {
        self.last_read_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        *self.position.lock().unwrap_or_else(|p| p.into_inner()) = position;
    }

    pub(super) fn set_lag(&self, secs: f64) {
        self.lag_ms.store((secs * 1000.0) as u64, Ordering::Relaxed);
        metrics::gauge!("rowcast_capture_lag_seconds").set(secs);
    }

    pub(super) fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
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

    /// The state `/readyz` reports.
    pub fn health(&self) -> CaptureHealth {
        CaptureHealth {
            capture_connected: self.connected.load(Ordering::Relaxed),
            capture_reading: self.since_last_read() < self.read_bound,
            capture_lag_seconds: self.lag().as_secs_f64(),
            max_lag_seconds: self.max_lag.as_secs_f64(),
            position: self.position(),
            capture_parked: self.is_parked(),
            capture_problem: self
                .problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            withheld_tables: self.withheld.all(),
        }
    }
}
