//! Socket.IO connection-state recovery, backed by PostgreSQL so that it works on any
//! replica and across restarts (socket.io's own server keeps it in one process's memory,
//! for two minutes).
//!
//! Every socket gets a `pid` in its CONNECT answer; every event it receives carries its
//! `seq` as the trailing string argument, which socket.io-client keeps as its offset. The
//! rooms a socket is in are recorded under its pid in `rowcast.socketio_sessions` (writes
//! are batched: at most one statement every [`FLUSH_EVERY`]). A reconnect with
//! `{ pid, offset }` whose user matches the pid's gets the same pid back (the client's
//! `socket.recovered` is then true), its rooms rejoined and what it missed after `offset`
//! from the change log. The only SQL on that table is here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_postgres::GenericClient;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::changelog::{self, Cursor};
use crate::event::{Position, User};
use crate::retry::{Backoff, Retryable};

/// Recorded rooms reach the database at most this long after a join or leave.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// What a socket's pid stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    sub: String,
    rooms: Vec<String>,
    position: Position,
}

/// What a reconnect with a pid comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The session is back: the same pid, its rooms, and the position it resumes after.
    Recovered {
        pid: Uuid,
        rooms: Vec<String>,
        since: Position,
    },
    /// The pid is unknown, malformed or another user's, or the offset is malformed: an
    /// ordinary fresh connect.
    Fresh,
    /// The events after the offset were pruned: a fresh connect, told to resync.
    Expired { since: Position, pruned: Position },
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl Retryable for RecoveryError {
    fn is_retryable(&self) -> bool {
        match self {
            RecoveryError::Db(e) => e.is_retryable(),
            RecoveryError::Pool(e) => e.is_retryable(),
        }
    }
}

/// The recovery store of this process. Cheap to share.
pub struct Recovery {
    pool: Pool,
    /// Recorded, not yet written: the latest entry per pid.
    pending: Mutex<HashMap<Uuid, Entry>>,
    flush: Notify,
}

impl Recovery {
    /// The store, and its writer, which runs until `stop` (then writes what is pending).
    pub fn start(pool: Pool, stop: CancellationToken) -> (Arc<Recovery>, impl Future<Output = ()>) {
        let store = Arc::new(Recovery {
            pool,
            pending: Mutex::new(HashMap::new()),
            flush: Notify::new(),
        });
        let writer = store.clone().write_loop(stop);
        (store, writer)
    }

    /// A new pid for a fresh socket.
    pub fn new_pid() -> Uuid {
        Uuid::new_v4()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the rooms of socket `pid` (after a join or leave) and the hub position of
    /// that moment. Never waits: written within [`FLUSH_EVERY`].
    pub fn record(&self, pid: Uuid, user: &User, rooms: Vec<String>, position: Position) {
        let was_empty = {
            let mut pending = self.lock();
            let was_empty = pending.is_empty();
            pending.insert(
                pid,
                Entry {
                    sub: user.sub.clone(),
                    rooms,
                    position,
                },
            );
            was_empty
        };
        if was_empty {
            self.flush.notify_one();
        }
    }

    /// What a reconnect of `user` with `pid` and `offset` (both as the client sent them)
    /// recovers. A pending record of this process counts before the database's.
    pub async fn recover(
        &self,
        user: &User,
        pid: &str,
        offset: Option<&str>,
    ) -> Result<Outcome, RecoveryError> {
        let Ok(pid) = Uuid::parse_str(pid) else {
            return Ok(Outcome::Fresh);
        };
        let offset = match offset {
            None => None,
            Some(o) => match o.parse::<Position>() {
                Ok(p) => Some(p),
                Err(_) => return Ok(Outcome::Fresh),
            },
        };
        let pending = { self.lock().get(&pid).cloned() };
        let client = self.pool.get().await?;
        let entry = match pending {
            Some(e) => Some(e),
            None => lookup(&**client, pid).await?,
        };
        let Some(entry) = entry.filter(|e| e.sub == user.sub) else {
            return Ok(Outcome::Fresh);
        };
        // A client that never got an event resumes from where its last join left it.
        let since = offset.unwrap_or(entry.position);
        if let Some(pruned) = changelog::cursor(&**client, Cursor::Pruned).await?
            && since < pruned
        {
            return Ok(Outcome::Expired { since, pruned });
        }
        Ok(Outcome::Recovered {
            pid,
            rooms: entry.rooms,
            since,
        })
    }

    async fn write_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff =
            Backoff::new(FLUSH_EVERY, Duration::from_secs(5), Duration::from_secs(30));
        loop {
            let stopping = tokio::select! {
                _ = self.flush.notified() => false,
                _ = stop.cancelled() => true,
            };
            if !stopping {
                // Let the joins of a connect (a frontend sends several) come together.
                tokio::select! {
                    _ = tokio::time::sleep(FLUSH_EVERY) => {}
                    _ = stop.cancelled() => {}
                }
            }
            loop {
                let batch: Vec<(Uuid, Entry)> = {
                    let mut pending = self.lock();
                    let batch = pending.drain().collect();
                    // A reconnect storm's burst must not stay allocated.
                    if pending.capacity() > 1024 {
                        pending.shrink_to_fit();
                    }
                    batch
                };
                if batch.is_empty() {
                    break;
                }
                match self.write(&batch).await {
                    Ok(()) => {
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        // Put back what is not newer in the meantime, and try again.
                        {
                            let mut pending = self.lock();
                            for (pid, entry) in batch {
                                pending.entry(pid).or_insert(entry);
                            }
                        }
                        let delay = backoff.after(&e);
                        tracing::warn!(error = %crate::telemetry::error_chain(&e), retry_in = ?delay, "recording Socket.IO sessions failed; retrying");
                        if stop.is_cancelled() {
                            return;
                        }
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }

    async fn write(&self, batch: &[(Uuid, Entry)]) -> Result<(), RecoveryError> {
        let client = self.pool.get().await?;
        let pids: Vec<Uuid> = batch.iter().map(|(p, _)| *p).collect();
        let subs: Vec<&str> = batch.iter().map(|(_, e)| e.sub.as_str()).collect();
        // Arrays of arrays must be rectangular in PostgreSQL: the rooms travel as JSON.
        let rooms: Vec<serde_json::Value> = batch
            .iter()
            .map(|(_, e)| serde_json::json!(e.rooms))
            .collect();
        let positions: Vec<i64> = batch.iter().map(|(_, e)| e.position.0).collect();
        client
            .execute(
                "INSERT INTO rowcast.socketio_sessions (pid, sub, rooms, position)
                 SELECT u.pid, u.sub,
                        ARRAY(SELECT jsonb_array_elements_text(u.rooms)), u.position
                   FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::int8[]) AS u(pid, sub, rooms, position)
                 ON CONFLICT (pid) DO UPDATE
                    SET rooms = EXCLUDED.rooms, position = EXCLUDED.position, updated_at = now()",
                &[&pids, &subs, &rooms, &positions],
            )
            .await?;
        Ok(())
    }
}

async fn lookup<C: GenericClient>(
    client: &C,
    pid: Uuid,
) -> Result<Option<Entry>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT sub, rooms, position FROM rowcast.socketio_sessions WHERE pid = $1",
            &[&pid],
        )
        .await?
        .map(|r| Entry {
            sub: r.get(0),
            rooms: r.get(1),
            position: Position(r.get(2)),
        }))
}

/// Deletes up to `batch` sessions not updated for `age_secs` (retention). Returns how many.
pub async fn prune<C: GenericClient>(
    client: &C,
    age_secs: f64,
    batch: i64,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM rowcast.socketio_sessions WHERE pid IN (
                SELECT pid FROM rowcast.socketio_sessions
                 WHERE updated_at < now() - make_interval(secs => $1) LIMIT $2)",
            &[&age_secs, &batch],
        )
        .await
}
