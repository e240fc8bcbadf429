//! The hub's configuration section (`[hub]`, `ROWCAST_HUB_*`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Events queued for one session before it counts as too slow and is closed (4008).
    pub session_queue: usize,
    /// Recent events kept in memory to serve resumes without a database query.
    pub replay_buffer: usize,
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
            replay_buffer: 4096,
            max_frame_bytes: 64 * 1024,
            ping_interval: Duration::from_secs(25),
            socketio_recovery: true,
        }
    }
}

impl HubConfig {
    /// What is wrong with this section, if anything.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.session_queue < 16 {
            problems.push("hub.session_queue must be at least 16".into());
        }
        problems
    }
}
