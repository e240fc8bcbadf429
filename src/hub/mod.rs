//! The hub: rooms → sessions, fan-out with bounded per-session queues, and the replay
//! buffer that serves resumes. No database and no capture in here: events arrive through
//! [`Hub::publish`], older ones come from a [`History`].
//!
//! Every transport (`/ws`, Socket.IO, SSE) is a thin adapter over a [`Session`]. The hub
//! never blocks on a client: `publish` pushes into bounded queues ([`queue::Queue`]), and a
//! session whose queue is full is removed from its rooms and told to close (WebSocket
//! 4008); the client resumes from its last `seq`. Queues and the replay buffer are bounded
//! in events and in bytes (`hub.session_queue_bytes`, `hub.replay_buffer_bytes`). Each
//! event is encoded once per transport and view ([`Delivery::encoded`]) and the same bytes
//! go to every session. Membership changes and publishing share
//! one lock, so a join observes a position `H` such that every event after `H` reaches the
//! session's queue and every event up to `H` must come from [`Hub::catch_up_page`].

pub mod acl;
mod config;
mod history;
pub mod queue;
mod rooms;
mod session;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::event::{Event, Position, SharedEvent, User};
pub use acl::{Acl, JoinError};
pub use config::HubConfig;
pub use history::{History, HistoryFuture, HistoryPage, ResumeError};
use queue::Queue;
use rooms::Members;
use session::Frames;
pub use session::{Delivery, OtherUser, Refreshed, Scope, Session};

/// Most rooms one session may be in.
pub const MAX_ROOMS: usize = 100;

pub type SessionId = u64;

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
    /// Whose session it is: events are decided per user (`Event::view`).
    user: User,
    transport: Transport,
}

struct State {
    /// Every event at or before this position has been published.
    position: Position,
    sessions: HashMap<SessionId, Entry>,
    rooms: HashMap<Arc<str>, Members>,
    /// The most recent events, to serve resumes without the database.
    replay: VecDeque<SharedEvent>,
    /// Sum of [`event_bytes`] over `replay`.
    replay_bytes: usize,
    /// Every event after this position is in `replay`.
    replay_floor: Position,
}

impl State {
    /// Takes session `id` out of `room`'s members, dropping the room's entry once it is
    /// empty. The one place a membership ends (leave, close, kick).
    fn remove_member(&mut self, id: SessionId, user: &User, room: &Arc<str>) {
        if !room.starts_with("user:") {
            metrics::gauge!("rowcast_joined_rooms").decrement(1.0);
        }
        if let Some(m) = self.rooms.get_mut(room) {
            m.remove(id, user);
            if m.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// Takes session `id` out of every room it is in (the session itself stays).
    fn detach(&mut self, id: SessionId) {
        let (rooms, user): (Vec<Arc<str>>, User) = match self.sessions.get_mut(&id) {
            Some(entry) => (entry.rooms.drain().collect(), entry.user.clone()),
            None => return,
        };
        for room in &rooms {
            self.remove_member(id, &user, room);
        }
    }
}

/// What an event in the replay buffer counts towards `hub.replay_buffer_bytes`: its
/// payloads (every view), names and rooms, and the event itself.
fn event_bytes(ev: &Event) -> usize {
    let variants = [
        &ev.variants.entered,
        &ev.variants.left,
        &ev.variants.redacted,
    ];
    ev.payload.get().len()
        + variants
            .iter()
            .map(|v| v.as_ref().map_or(0, |p| p.get().len()))
            .sum::<usize>()
        + ev.name.len()
        + ev.event_type.len()
        + ev.table.len()
        + ev.rooms.iter().map(|r| r.len() + 24).sum::<usize>()
        + std::mem::size_of::<Event>()
}

/// Rooms, sessions and the live event stream of this replica.
pub struct Hub {
    state: Mutex<State>,
    config: HubConfig,
    acl: Acl,
    history: Option<Arc<dyn History>>,
    next_id: AtomicU64,
}

impl Hub {
    /// A hub starting at `position` (nothing at or before it will be published).
    /// `history` serves resumes older than the replay buffer.
    pub fn new(
        config: HubConfig,
        acl: Acl,
        history: Option<Arc<dyn History>>,
        position: Position,
    ) -> Hub {
        Hub {
            state: Mutex::new(State {
                position,
                sessions: HashMap::new(),
                rooms: HashMap::new(),
                replay: VecDeque::new(),
                replay_bytes: 0,
                replay_floor: position,
            }),
            config,
            acl,
            history,
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

    /// The event at `seq` if the replay buffer still holds it.
    pub fn replayed(&self, seq: Position) -> Option<SharedEvent> {
        let st = self.lock();
        st.replay.iter().find(|e| e.seq == seq).cloned()
    }

    /// The open sessions of user `sub`: each one's transport and rooms.
    pub fn sessions_of(&self, sub: &str) -> Vec<(Transport, Vec<String>)> {
        let st = self.lock();
        let mut out: Vec<(Transport, Vec<String>)> = st
            .sessions
            .values()
            .filter(|e| e.user.sub == sub)
            .map(|e| {
                let mut rooms: Vec<String> = e.rooms.iter().map(|r| r.to_string()).collect();
                rooms.sort();
                (e.transport, rooms)
            })
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// Number of rooms with at least one member (each user's private room included).
    pub fn room_count(&self) -> usize {
        self.lock().rooms.len()
    }

    /// Publishes events (in log order) and advances the hub to `upto`. Never blocks:
    /// a session whose queue is full is kicked instead.
    pub fn publish(&self, events: Vec<Event>, upto: Position) {
        let mut st = self.lock();
        let st = &mut *st;
        let mut kicked: Vec<SessionId> = Vec::new();
        let mut seen: HashSet<SessionId> = HashSet::new();
        let keep = self.config.replay_buffer > 0 && self.config.replay_buffer_bytes > 0;
        for ev in events {
            let ev = Arc::new(ev);
            metrics::counter!("rowcast_events_emitted_total", "event" => ev.name.clone())
                .increment(1);
            seen.clear();
            // Made when the first session takes the event; shared by all of them.
            let mut frames: Option<Arc<Frames>> = None;
            for (idx, room) in ev.rooms.iter().enumerate().take(u8::MAX as usize) {
                let Some(members) = st.rooms.get(room.as_str()) else {
                    continue;
                };
                // Only the sessions the audience may admit are visited; each is decided
                // once per event (a session can be found by role and by user).
                members.candidates(&ev, |sid| {
                    if !seen.insert(sid) {
                        return;
                    }
                    let Some(entry) = st.sessions.get(&sid) else {
                        return;
                    };
                    let Some(view) = ev.view(&entry.user) else {
                        return;
                    };
                    let frames = frames.get_or_insert_with(|| Frames::new(ev.rooms.len()));
                    let d = Delivery::new(ev.clone(), idx as u8, view, frames.clone());
                    if entry.tx.push(d).is_err() {
                        kicked.push(sid);
                    }
                });
            }
            if keep {
                st.replay_bytes += event_bytes(&ev);
                st.replay.push_back(ev);
                // The oldest go first, by count and by bytes (an event larger than the
                // whole budget is not kept at all).
                while st.replay.len() > self.config.replay_buffer
                    || st.replay_bytes > self.config.replay_buffer_bytes
                {
                    let Some(old) = st.replay.pop_front() else {
                        break;
                    };
                    st.replay_bytes = st.replay_bytes.saturating_sub(event_bytes(&old));
                    st.replay_floor = old.seq;
                }
            }
        }
        if upto > st.position {
            st.position = upto;
        }
        if st.replay.is_empty() {
            st.replay_floor = st.position;
            st.replay_bytes = 0;
        }
        metrics::gauge!("rowcast_replay_buffer_bytes").set(st.replay_bytes as f64);
        for sid in kicked {
            let Some(entry) = st.sessions.get(&sid) else {
                continue;
            };
            if !entry.kick.is_cancelled() {
                metrics::counter!("rowcast_slow_client_disconnects_total").increment(1);
                tracing::info!(session = sid, "session too slow: queue full, closing it");
            }
            entry.kick.cancel();
            st.detach(sid);
        }
    }

    /// Opens a session for an authenticated user, joined to `user:<sub>`.
    pub fn open(self: &Arc<Self>, user: User, transport: Transport) -> Session {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let rx = Arc::new(Queue::with_bytes(
            self.config.session_queue,
            self.config.session_queue_bytes,
            Delivery::weight,
        ));
        let tx = rx.clone();
        let kick = CancellationToken::new();
        let user_room: Arc<str> = Arc::from(user.room());
        let position = {
            let mut st = self.lock();
            st.sessions.insert(
                id,
                Entry {
                    tx,
                    rooms: HashSet::from([user_room.clone()]),
                    kick: kick.clone(),
                    user: user.clone(),
                    transport,
                },
            );
            st.rooms
                .entry(user_room.clone())
                .or_default()
                .insert(id, &user);
            st.position
        };
        metrics::gauge!("rowcast_connections", "transport" => transport.as_str()).increment(1.0);
        Session::new(id, user, transport, self.clone(), rx, kick, position)
    }

    fn join_locked(
        &self,
        st: &mut State,
        id: SessionId,
        user: &User,
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
        st.rooms.entry(room).or_default().insert(id, user);
        metrics::gauge!("rowcast_joined_rooms").increment(1.0);
        Ok(true)
    }

    fn join_many(
        &self,
        id: SessionId,
        user: &User,
        rooms: &[String],
    ) -> (Vec<Result<bool, JoinError>>, Position) {
        let mut st = self.lock();
        let results = rooms
            .iter()
            .map(|r| self.join_locked(&mut st, id, user, r))
            .collect();
        (results, st.position)
    }

    fn leave(&self, id: SessionId, room: &str) -> bool {
        let mut st = self.lock();
        let Some((room, user)) = st
            .sessions
            .get_mut(&id)
            .and_then(|e| Some((e.rooms.take(room)?, e.user.clone())))
        else {
            return false;
        };
        st.remove_member(id, &user, &room);
        true
    }

    /// New credentials for session `id` (a token refresh): later events are decided for
    /// `user`, its rooms index it by its new roles, and every room the new credentials may
    /// not join is left (returned with the reason). Returns the position through which
    /// events were decided for the old credentials.
    fn refresh(&self, id: SessionId, user: &User) -> (Vec<(String, JoinError)>, Position) {
        let mut st = self.lock();
        let st = &mut *st;
        let position = st.position;
        let Some(entry) = st.sessions.get_mut(&id) else {
            return (Vec::new(), position);
        };
        let old = std::mem::replace(&mut entry.user, user.clone());
        let mut revoked = Vec::new();
        entry.rooms.retain(|room| match self.acl.check(user, room) {
            Ok(()) => true,
            Err(e) => {
                revoked.push((room.clone(), e));
                false
            }
        });
        for room in &entry.rooms {
            if let Some(m) = st.rooms.get_mut(room) {
                m.remove(id, &old);
                m.insert(id, user);
            }
        }
        let mut left = Vec::with_capacity(revoked.len());
        for (room, e) in revoked {
            st.remove_member(id, &old, &room);
            left.push((room.to_string(), e));
        }
        left.sort_by(|a, b| a.0.cmp(&b.0));
        (left, position)
    }

    fn rooms_of(&self, id: SessionId) -> Vec<String> {
        let st = self.lock();
        let mut rooms: Vec<String> = st
            .sessions
            .get(&id)
            .map(|e| e.rooms.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default();
        rooms.sort();
        rooms
    }

    fn close(&self, id: SessionId, transport: Transport) {
        let mut st = self.lock();
        if st.sessions.contains_key(&id) {
            st.detach(id);
            st.sessions.remove(&id);
            metrics::gauge!("rowcast_connections", "transport" => transport.as_str())
                .decrement(1.0);
        }
    }

    /// One page of the events in `(after, until]` that go to any of `rooms` and that
    /// `user` may see, in log order, each as the user receives it, and the position to
    /// continue after (`None` when the range is exhausted). `rooms` must already have
    /// passed the ACL. The same per-row decision as live delivery (`Event::view`).
    pub async fn catch_up_page(
        &self,
        rooms: &[String],
        user: &User,
        after: Position,
        until: Position,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<Position>), ResumeError> {
        if after >= until || rooms.is_empty() {
            return Ok((Vec::new(), None));
        }
        let wanted: HashSet<&str> = rooms.iter().map(String::as_str).collect();
        let pick = |ev: &SharedEvent| {
            let room = ev.rooms.iter().position(|r| wanted.contains(r.as_str()))?;
            let view = ev.view(user)?;
            Some(Delivery::new(
                ev.clone(),
                room.min(u8::MAX as usize) as u8,
                view,
                Frames::new(ev.rooms.len()),
            ))
        };
        {
            let st = self.lock();
            if after >= st.replay_floor {
                // A page covers `limit` events of the buffer, whether or not the user
                // may see them, so a page's work is bounded.
                let mut out: Vec<Delivery> = Vec::new();
                let mut next = None;
                let mut scanned: Option<Position> = None;
                let range = st.replay.iter().filter(|e| e.seq > after && e.seq <= until);
                for (count, ev) in range.enumerate() {
                    if count >= limit {
                        next = scanned;
                        break;
                    }
                    scanned = Some(ev.seq);
                    out.extend(pick(ev));
                }
                return Ok((out, next));
            }
        }
        let Some(history) = &self.history else {
            return Ok((Vec::new(), None));
        };
        let page = history.page(rooms, after, until, limit).await?;
        let out = page
            .events
            .into_iter()
            .filter_map(|ev| pick(&Arc::new(ev)))
            .collect();
        Ok((out, page.next))
    }
}

#[cfg(test)]
mod tests;
