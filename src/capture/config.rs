//! Capture's configuration section (`[capture]`, `ROWCAST_CAPTURE_*`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where capture reads changes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// Row triggers write each change to `rowcast.changes` in the application's transaction.
    Triggers,
    /// A logical replication slot (`pgoutput`): the application's transactions write nothing
    /// extra; rowcast appends the decoded changes to `rowcast.changes` in batches.
    Logical,
}

impl CaptureMode {
    /// The name used in configuration files and `ROWCAST_CAPTURE_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Triggers => "triggers",
            CaptureMode::Logical => "logical",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// How changes are captured: `triggers` (row triggers append to `rowcast.changes`) or
    /// `logical` (logical decoding of the WAL through a replication slot; needs
    /// `wal_level = logical` and a role with REPLICATION).
    pub mode: CaptureMode,
    /// Replication slot used by `logical` mode (created by `rowcast migrate`).
    pub slot: String,
    /// Publication used by `logical` mode (created by `rowcast migrate`).
    pub publication: String,
    /// Most change-log rows read and enriched at once.
    pub batch_size: i64,
    /// Under load (at least `park_below` changes per second) how often the sequencer
    /// records a batch: the unparked trigger-mode tick, the logical writer's write (one
    /// transaction per interval, however many commits it covers). Also the trigger-mode
    /// poll while parking settles.
    #[serde(with = "humantime_serde")]
    pub active_poll: Duration,
    /// Window over which the sequencer measures the change rate.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Trigger mode: while fewer changes than this come per second the sequencer is parked
    /// (each commit's NOTIFY wakes it, no poll between changes); above it the triggers stop
    /// notifying and the sequencer records a batch every `active_poll`. It parks again
    /// below half of it. Logical mode: from this rate on, writes are `active_poll` apart.
    pub park_below: f64,
    /// Safety poll while parked (a NOTIFY can be lost; the log cannot).
    #[serde(with = "humantime_serde")]
    pub idle_poll: Duration,
    /// `/readyz` fails when the oldest unconsumed change is older than this.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: CaptureMode::Triggers,
            slot: "rowcast".into(),
            publication: "rowcast".into(),
            batch_size: 1000,
            active_poll: Duration::from_millis(5),
            idle_after: Duration::from_millis(500),
            park_below: 2000.0,
            idle_poll: Duration::from_secs(1),
            max_lag: Duration::from_secs(30),
        }
    }
}

impl CaptureConfig {
    /// What is wrong with this section, if anything.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (what, name) in [
            ("capture.slot", &self.slot),
            ("capture.publication", &self.publication),
        ] {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                problems.push(format!(
                    "{what} {name:?} must be 1-63 lowercase letters, digits or _"
                ));
            }
        }
        if !(self.park_below >= 0.0 && self.park_below.is_finite()) {
            problems.push(
                "capture.park_below must be a number of changes per second, 0 or more".into(),
            );
        }
        if self.batch_size < 1 || self.batch_size > 100_000 {
            problems.push("capture.batch_size must be between 1 and 100000".into());
        }
        problems
    }
}
