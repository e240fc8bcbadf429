//! The hub: rooms → sessions, fan-out with bounded per-session queues, and resume.
//!
//! Every transport (`/ws`, Socket.IO, SSE) is a thin adapter over a [`Session`]. The hub
//! never blocks on a client: `publish` pushes into bounded queues ([`queue::Queue`]), and a
//! session whose queue is full is removed from its rooms and told to close (WebSocket
//! 4008); the client resumes from its last `seq`. Membership changes and publishing share one lock, so a join observes a
//! position `H` such that every event after `H` reaches the session's queue and every event
//! up to `H` must come from [`Hub::catch_up_page`].

pub mod acl;
pub mod poll;
pub mod queue;
pub mod socketio;
pub mod sse;
pub mod ws;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::api::auth::AuthUser;
use crate::capture::log;
use crate::config::{HubConfig, TableKind};
use crate::enrich::Enricher;
use crate::event::{Event, Position, SharedEvent};
use crate::route::RoomTemplate;
pub use acl::{Acl, JoinError};
use queue::Queue;

/// Query string of the streaming endpoints (`/ws`, `/events`): the token (or an
/// `Authorization` header), comma-separated rooms joined at connect (one ordered catch-up
/// for all of them) and the position to resume after.
#[derive(Debug, serde::Deserialize)]
pub struct StreamQuery {
    token: Option<String>,
    rooms: Option<String>,
    since: Option<String>,
}

/// Most rooms one session may be in.
pub const MAX_ROOMS: usize = 100;

pub type SessionId = u64;

/// One event for one session, with the room it came through.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: SharedEvent,
    room: u8,
}

impl Delivery {
    pub fn room(&self) -> &str {
        &self.event.rooms[self.room as usize]
    }
}

/// Why a resume could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(
        "events after {since} were pruned (oldest kept after {pruned}): refetch and continue from the current seq"
    )]
    ResyncRequired { since: Position, pruned: Position },
    #[error("could not read missed events: {0}")]
    Db(String),
}

/// Transport of a session, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    SocketIo,
    Sse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::SocketIo => "socketio",
            Transport::Sse => "sse",
        }
    }
}

struct Entry {
    tx: Arc<Queue<Delivery>>,
    rooms: HashSet<Arc<str>>,
    kick: CancellationToken,
}

struct State {
    /// Every event at or before this position has been published.
    position: Position,
    sessions: HashMap<SessionId, Entry>,
    rooms: HashMap<Arc<str>, HashSet<SessionId>>,
    /// The most recent events, to serve resumes without the database.
    replay: VecDeque<SharedEvent>,
    /// Every event after this position is in `replay`.
    replay_floor: Position,
}

/// Rooms, sessions and the live event stream of this replica.
pub struct Hub {
    state: Mutex<State>,
    config: HubConfig,
    acl: Acl,
    enricher: Option<Enricher>,
    next_id: AtomicU64,
}

impl Hub {
    /// A hub starting at `position` (nothing at or before it will be published).
    /// `enricher` serves resumes older than the replay buffer from the database.
    pub fn new(config: HubConfig, acl: Acl, enricher: Option<Enricher>, position: Position) -> Hub {
        Hub {
            state: Mutex::new(State {
                position,
                sessions: HashMap::new(),
                rooms: HashMap::new(),
                replay: VecDeque::new(),
                replay_floor: position,
            }),
            config,
            acl,
            enricher,
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// The position up to which events have been published.
    pub fn position(&self) -> Position {
        self.lock().position
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Publishes events (in log order) and advances the hub to `upto`. Never blocks:
    /// a session whose queue is full is kicked instead.
    pub fn publish(&self, events: Vec<Event>, upto: Position) {
        let mut st = self.lock();
        let st = &mut *st;
        let mut kicked: Vec<SessionId> = Vec::new();
        let mut seen: HashSet<SessionId> = HashSet::new();
        for ev in events {
            let ev = Arc::new(ev);
            metrics::counter!("rowcast_events_emitted_total", "event" => ev.name.clone())
                .increment(1);
            seen.clear();
            for (idx, room) in ev.rooms.iter().enumerate().take(u8::MAX as usize) {
                let Some(members) = st.rooms.get(room.as_str()) else {
                    continue;
                };
                for sid in members {
                    if ev.rooms.len() > 1 && !seen.insert(*sid) {
                        continue;
                    }
                    let Some(entry) = st.sessions.get(sid) else {
                        continue;
                    };
                    let d = Delivery {
                        event: ev.clone(),
                        room: idx as u8,
                    };
                    if entry.tx.push(d).is_err() {
                        kicked.push(*sid);
                    }
                }
            }
            if self.config.replay_buffer > 0 {
                st.replay.push_back(ev);
                while st.replay.len() > self.config.replay_buffer {
                    if let Some(old) = st.replay.pop_front() {
                        st.replay_floor = old.seq;
                    }
                }
            }
        }
        if upto > st.position {
            st.position = upto;
        }
        if st.replay.is_empty() {
            st.replay_floor = st.position;
        }
        for sid in kicked {
            if let Some(entry) = st.sessions.get_mut(&sid) {
                if !entry.kick.is_cancelled() {
                    metrics::counter!("rowcast_slow_client_disconnects_total").increment(1);
                    tracing::info!(session = sid, "session too slow: queue full, closing it");
                }
                entry.kick.cancel();
                for room in entry.rooms.drain() {
                    if !room.starts_with("user:") {
                        metrics::gauge!("rowcast_joined_rooms").decrement(1.0);
                    }
                    if let Some(m) = st.rooms.get_mut(&room) {
                        m.remove(&sid);
                    }
                }
            }
        }
    }

    /// Opens a session for an authenticated user, joined to `user:<sub>`.
    pub fn open(self: &Arc<Self>, user: AuthUser, transport: Transport) -> Session {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let rx = Arc::new(Queue::new(self.config.session_queue));
        let tx = rx.clone();
        let kick = CancellationToken::new();
        let user_room: Arc<str> = Arc::from(format!("user:{}", user.sub));
        let position = {
            let mut st = self.lock();
            st.sessions.insert(
                id,
                Entry {
                    tx,
                    rooms: HashSet::from([user_room.clone()]),
                    kick: kick.clone(),
                },
            );
            st.rooms.entry(user_room.clone()).or_default().insert(id);
            st.position
        };
        metrics::gauge!("rowcast_connections", "transport" => transport.as_str()).increment(1.0);
        Session {
            id,
            user,
            transport,
            hub: self.clone(),
            rx,
            kicked: kick,
            opened_at: position,
            resume: None,
            skip_through: Position::ZERO,
        }
    }

    fn join_locked(
        &self,
        st: &mut State,
        id: SessionId,
        user: &AuthUser,
        room: &str,
    ) -> Result<bool, JoinError> {
        self.acl.check(user, room)?;
        let entry = st
            .sessions
            .get_mut(&id)
            .ok_or(JoinError::Forbidden("session closed".into()))?;
        if entry.kick.is_cancelled() {
            return Err(JoinError::Forbidden("session is closing".into()));
        }
        if entry.rooms.iter().any(|r| &**r == room) {
            return Ok(false);
        }
        if entry.rooms.len() >= MAX_ROOMS {
            return Err(JoinError::TooManyRooms(MAX_ROOMS));
        }
        let room: Arc<str> = Arc::from(room);
        entry.rooms.insert(room.clone());
        st.rooms.entry(room).or_default().insert(id);
        metrics::gauge!("rowcast_joined_rooms").increment(1.0);
        Ok(true)
    }

    fn leave_locked(st: &mut State, id: SessionId, room: &str) -> bool {
        let Some(entry) = st.sessions.get_mut(&id) else {
            return false;
        };
        let removed = entry.rooms.remove(room);
        if removed {
            if let Some(m) = st.rooms.get_mut(room) {
                m.remove(&id);
                if m.is_empty() {
                    st.rooms.remove(room);
                }
            }
            metrics::gauge!("rowcast_joined_rooms").decrement(1.0);
        }
        removed
    }

    fn close(&self, id: SessionId, transport: Transport) {
        let mut st = self.lock();
        if let Some(entry) = st.sessions.remove(&id) {
            for room in entry.rooms {
                if !room.starts_with("user:") {
                    metrics::gauge!("rowcast_joined_rooms").decrement(1.0);
                }
                if let Some(m) = st.rooms.get_mut(&room) {
                    m.remove(&id);
                    if m.is_empty() {
                        st.rooms.remove(&room);
                    }
                }
            }
            metrics::gauge!("rowcast_connections", "transport" => transport.as_str())
                .decrement(1.0);
        }
    }

    /// One page of the events in `(after, until]` that go to any of `rooms`, in log order,
    /// and the position to continue after (`None` when the range is exhausted).
    /// `rooms` must already have passed the ACL for the caller.
    pub async fn catch_up_page(
        &self,
        rooms: &[String],
        after: Position,
        until: Position,
        limit: usize,
    ) -> Result<(Vec<(SharedEvent, usize)>, Option<Position>), ResumeError> {
        if after >= until || rooms.is_empty() {
            return Ok((Vec::new(), None));
        }
        let wanted: HashSet<&str> = rooms.iter().map(String::as_str).collect();
        let pick = |ev: &Event| ev.rooms.iter().position(|r| wanted.contains(r.as_str()));
        {
            let st = self.lock();
            if after >= st.replay_floor {
                let mut out = Vec::new();
                let mut next = None;
                for ev in st.replay.iter().filter(|e| e.seq > after && e.seq <= until) {
                    if out.len() >= limit {
                        next = out.last().map(|(e, _): &(SharedEvent, usize)| e.seq);
                        break;
                    }
                    if let Some(i) = pick(ev) {
                        out.push((ev.clone(), i));
                    }
                }
                return Ok((out, next));
            }
        }
        let Some(enricher) = &self.enricher else {
            return Ok((Vec::new(), None));
        };
        let db = |e: &dyn std::fmt::Display| ResumeError::Db(e.to_string());
        let client = enricher.pool().get().await.map_err(|e| db(&e))?;
        if let Some(pruned) = log::cursor(&**client, "pruned").await.map_err(|e| db(&e))?
            && after < pruned
        {
            return Err(ResumeError::ResyncRequired {
                since: after,
                pruned,
            });
        }
        let tables = tables_for_rooms(enricher, rooms);
        let batch = limit.clamp(1, 10_000) as i64;
        let changes = log::read_range(&**client, after, until, Some(&tables), batch)
            .await
            .map_err(|e| db(&e))?;
        drop(client);
        let next = (changes.len() as i64 == batch)
            .then(|| changes.last().map(|c| c.pos))
            .flatten();
        let events = enricher.enrich(&changes).await.map_err(|e| db(&e))?;
        let out = events
            .into_iter()
            .filter_map(|ev| pick(&ev).map(|i| (Arc::new(ev), i)))
            .collect();
        Ok((out, next))
    }
}

/// Tables whose events can reach any of `rooms` (to read less of the log on resume).
fn tables_for_rooms(enricher: &Enricher, rooms: &[String]) -> Vec<String> {
    enricher
        .catalog()
        .tables
        .iter()
        .filter(|t| match t.kind() {
            TableKind::Notification => rooms.iter().any(|r| r.starts_with("user:")),
            TableKind::Entity => t.config.room.iter().chain(&t.config.rooms).any(|tpl| {
                RoomTemplate::parse(tpl).is_ok_and(|tpl| rooms.iter().any(|r| tpl.may_render(r)))
            }),
        })
        .map(|t| t.name.clone())
        .collect()
}

/// A client's membership in the hub. Dropping it leaves every room.
pub struct Session {
    pub id: SessionId,
    pub user: AuthUser,
    pub transport: Transport,
    hub: Arc<Hub>,
    /// Live deliveries, bounded.
    pub rx: Arc<Queue<Delivery>>,
    /// Cancelled when the session fell too far behind and must close (4008).
    pub kicked: CancellationToken,
    opened_at: Position,
    /// The client's last seen `seq`, when it resumed.
    resume: Option<Position>,
    /// Live deliveries at or before this position are already known to the client.
    skip_through: Position,
}

impl Session {
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The position the hub was at when the session opened.
    pub fn opened_at(&self) -> Position {
        self.opened_at
    }

    /// The client resumes after `since`: rooms joined from now on first receive what they
    /// missed since then; live events the client already has are skipped.
    pub fn set_resume(&mut self, since: Position) {
        self.resume = Some(since);
        self.skip_through = since;
    }

    /// Raises the floor below which live deliveries are skipped (already sent by a catch-up).
    pub fn skip_through(&mut self, pos: Position) {
        if pos > self.skip_through {
            self.skip_through = pos;
        }
    }

    pub fn resume_point(&self) -> Option<Position> {
        self.resume
    }

    /// Whether a live delivery is new to the client.
    pub fn is_new(&self, d: &Delivery) -> bool {
        d.event.seq > self.skip_through
    }

    /// Joins rooms at once. Returns each room's outcome (`Ok(true)` newly joined) and the
    /// position `H` after which events arrive live.
    pub fn join_many(&self, rooms: &[String]) -> (Vec<Result<bool, JoinError>>, Position) {
        let mut st = self.hub.lock();
        let results = rooms
            .iter()
            .map(|r| self.hub.join_locked(&mut st, self.id, &self.user, r))
            .collect();
        (results, st.position)
    }

    /// Joins one room; see [`Session::join_many`].
    pub fn join(&self, room: &str) -> (Result<bool, JoinError>, Position) {
        let (mut r, h) = self.join_many(&[room.to_string()]);
        (r.remove(0), h)
    }

    /// Leaves a room; `false` if the session was not in it. The own user room cannot be left.
    pub fn leave(&self, room: &str) -> bool {
        if room == format!("user:{}", self.user.sub) {
            return false;
        }
        Hub::leave_locked(&mut self.hub.lock(), self.id, room)
    }

    /// Rooms the session is in.
    pub fn rooms(&self) -> Vec<String> {
        let st = self.hub.lock();
        let mut rooms: Vec<String> = st
            .sessions
            .get(&self.id)
            .map(|e| e.rooms.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default();
        rooms.sort();
        rooms
    }

    /// Replaces the session's credentials after a token refresh (same `sub` only).
    pub fn refresh(&mut self, user: AuthUser) -> Result<(), String> {
        if user.sub != self.user.sub {
            return Err("a refreshed token must be for the same user".into());
        }
        self.user = user;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.close(self.id, self.transport);
    }
}
