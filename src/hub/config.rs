//! The hub's configuration section (`[hub]`, `ROWCAST_HUB_*`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Events queued for one session before it counts as too slow and is closed (4008).
    pub session_queue: usize,
    /// Bytes of events queued for one session before it counts as too slow, like
    /// `session_queue` (a single event larger than this is still queued when the queue is
    /// empty). Queued events are shared by every session that receives them; each
    /// session's queued bytes still count towards its own limit.
    pub session_queue_bytes: usize,
    /// Recent events kept in memory to serve resumes without a database query.
    pub replay_buffer: usize,
    /// Bytes of events the replay buffer holds at most: the oldest are evicted first, and
    /// older resumes are served from the log.
    pub replay_buffer_bytes: usize,
    /// Largest client frame accepted on `/ws`.
    pub max_frame_bytes: usize,
    /// Interval of WebSocket pings sent by the server.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Socket.IO connection-state recovery: a `pid` in every CONNECT answer, each event's
    /// `seq` as its trailing argument, rooms recorded for recovery. Off: plain Socket.IO
    /// (clients resume only with `auth.since`).
    pub socketio_recovery: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            session_queue: 4096,
            session_queue_bytes: 1024 * 1024,
            replay_buffer: 4096,
            replay_buffer_bytes: 32 * 1024 * 1024,
            max_frame_bytes: 64 * 1024,
            ping_interval: Duration::from_secs(25),
            socketio_recovery: true,
        }
    }
}

/// Smallest `hub.session_queue_bytes`.
pub const MIN_SESSION_QUEUE_BYTES: usize = 16 * 1024;

impl HubConfig {
    /// The WebSocket frame and message limit: `max_frame_bytes` plus a quarter. Frames up
    /// to it are read and answered with `frame_too_large` (the session stays open); larger
    /// ones are refused from their header, before their payload is buffered (close 1009).
    pub fn ws_frame_limit(&self) -> usize {
        self.max_frame_bytes
            .saturating_add(self.max_frame_bytes / 4)
            .max(1024)
    }

    /// What is wrong with this section, if anything.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.session_queue < 16 {
            problems.push("hub.session_queue must be at least 16".into());
        }
        if self.session_queue_bytes < MIN_SESSION_QUEUE_BYTES {
            problems.push(format!(
                "hub.session_queue_bytes must be at least {MIN_SESSION_QUEUE_BYTES} (bytes of events queued per session)"
            ));
        }
        problems
    }
}
