//! A client's membership in the hub: its rooms and its bounded queue of deliveries.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use super::queue::Queue;
use super::{Hub, JoinError, SessionId, Transport};
use serde_json::value::RawValue;

use crate::event::{Position, SharedEvent, User, View};

/// One event for one session: the room it came through and how this session's user
/// receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: SharedEvent,
    room: u8,
    pub view: View,
    /// The event's wire encodings, shared by every session it is delivered to.
    frames: Arc<Frames>,
}

/// What a transport's encoding of an event depends on besides the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The frame names the room the event came through (`/ws`).
    Room,
    /// The frame is the same whatever the room (Socket.IO, SSE).
    View,
}

const VIEWS: usize = 4;
const TRANSPORTS: usize = 3;

fn view_index(view: View) -> usize {
    match view {
        View::Full => 0,
        View::Entered => 1,
        View::Left => 2,
        View::Redacted => 3,
    }
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::WebSocket => 0,
        Transport::SocketIo => 1,
        Transport::Sse => 2,
    }
}

/// One event's encodings, made at most once per transport, view and (for [`Scope::Room`])
/// room, by whichever session needs one first; the others send the same bytes.
pub(super) struct Frames {
    slots: Box<[OnceLock<Box<dyn Any + Send + Sync>>]>,
    rooms: usize,
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let made = self.slots.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("Frames").field("made", &made).finish()
    }
}

impl Frames {
    /// Slots for an event that goes to `rooms` rooms.
    pub(super) fn new(rooms: usize) -> Arc<Frames> {
        let rooms = rooms.min(u8::MAX as usize);
        let n = TRANSPORTS * (rooms + 1) * VIEWS;
        Arc::new(Frames {
            slots: (0..n).map(|_| OnceLock::new()).collect(),
            rooms,
        })
    }

    fn slot(
        &self,
        t: Transport,
        scope: Scope,
        room: u8,
        view: View,
    ) -> Option<&OnceLock<Box<dyn Any + Send + Sync>>> {
        let r = match scope {
            Scope::Room => usize::from(room).min(self.rooms),
            Scope::View => self.rooms,
        };
        let i = (transport_index(t) * (self.rooms + 1) + r) * VIEWS + view_index(view);
        self.slots.get(i)
    }
}

impl Delivery {
    pub(super) fn new(event: SharedEvent, room: u8, view: View, frames: Arc<Frames>) -> Delivery {
        Delivery {
            event,
            room,
            view,
            frames,
        }
    }

    /// This delivery as `transport` writes it, encoded by `encode` only if no other session
    /// of that transport (with the same view and, for [`Scope::Room`], room) has needed it
    /// yet: the bytes are shared (`T` is cheap to clone, e.g. `bytes::Bytes`). Counted in
    /// `rowcast_event_encodings_total{transport}`.
    pub fn encoded<T>(
        &self,
        transport: Transport,
        scope: Scope,
        encode: impl FnOnce(&Delivery) -> T,
    ) -> T
    where
        T: Clone + Send + Sync + 'static,
    {
        let count = || {
            metrics::counter!("rowcast_event_encodings_total", "transport" => transport.as_str())
                .increment(1);
        };
        let Some(slot) = self.frames.slot(transport, scope, self.room, self.view) else {
            count();
            return encode(self);
        };
        let mut encode = Some(encode);
        let made = slot.get_or_init(|| match encode.take() {
            Some(f) => {
                count();
                Box::new(f(self))
            }
            None => Box::new(()),
        });
        if let Some(t) = made.downcast_ref::<T>() {
            return t.clone();
        }
        // Made as another type (no transport does that): encode anew. `encode` is still
        // there, as the slot was not made here.
        count();
        match encode.take() {
            Some(f) => f(self),
            None => unreachable!("a slot made by this call holds a T"),
        }
    }

    /// What this delivery counts towards its session's `hub.session_queue_bytes`: its
    /// payload and name, plus the queue entry itself.
    pub fn weight(&self) -> usize {
        self.payload().get().len() + self.event.name.len() + std::mem::size_of::<Delivery>()
    }

    pub fn room(&self) -> &str {
        &self.event.rooms[self.room as usize]
    }

    /// The payload this session receives.
    pub fn payload(&self) -> &RawValue {
        self.event.payload(self.view)
    }
}

/// Why a token refresh was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a refreshed token must be for the same user")]
pub struct OtherUser;

/// What a token refresh changed: the rooms the new credentials may not be in, which the
/// session has left, each with the reason the ACL gives.
#[derive(Debug, Default)]
pub struct Refreshed {
    pub left: Vec<(String, JoinError)>,
}

/// Deliveries already queued when the credentials changed, decided for the old ones.
struct Redecide {
    /// Queued deliveries at or before this position were decided for the old credentials.
    through: Position,
    /// Rooms left at the refresh: their queued deliveries are dropped.
    left: Vec<String>,
}

/// A client's membership in the hub. Dropping it leaves every room.
pub struct Session {
    pub id: SessionId,
    pub user: User,
    pub transport: Transport,
    hub: Arc<Hub>,
    /// Live deliveries, bounded.
    pub rx: Arc<Queue<Delivery>>,
    /// Cancelled when the session fell too far behind and must close (4008).
    pub kicked: CancellationToken,
    opened_at: Position,
    redecide: Option<Redecide>,
}

impl Session {
    pub(super) fn new(
        id: SessionId,
        user: User,
        transport: Transport,
        hub: Arc<Hub>,
        rx: Arc<Queue<Delivery>>,
        kicked: CancellationToken,
        opened_at: Position,
    ) -> Session {
        Session {
            id,
            user,
            transport,
            hub,
            rx,
            kicked,
            opened_at,
            redecide: None,
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The position the hub was at when the session opened: events after it reach the
    /// private user room live.
    pub fn opened_at(&self) -> Position {
        self.opened_at
    }

    /// Joins rooms at once. Returns each room's outcome (`Ok(true)` newly joined) and the
    /// position `H` after which events arrive live.
    pub fn join_many(&self, rooms: &[String]) -> (Vec<Result<bool, JoinError>>, Position) {
        self.hub.join_many(self.id, &self.user, rooms)
    }

    /// Leaves a room; `false` if the session was not in it. The own user room cannot be left.
    pub fn leave(&self, room: &str) -> bool {
        if room == self.user.room() {
            return false;
        }
        self.hub.leave(self.id, room)
    }

    /// Rooms the session is in, sorted.
    pub fn rooms(&self) -> Vec<String> {
        self.hub.rooms_of(self.id)
    }

    /// Replaces the session's credentials after a token refresh (same `sub` only; a token
    /// for another user is refused and changes nothing). Every joined room is checked again
    /// against the new credentials and left if they may not join it; rows are decided for the
    /// new credentials from now on, including deliveries already queued ([`Session::admit`]).
    /// The one refresh rule of every transport.
    pub fn refresh(&mut self, user: User) -> Result<Refreshed, OtherUser> {
        if user.sub != self.user.sub {
            return Err(OtherUser);
        }
        let (left, through) = self.hub.refresh(self.id, &user);
        self.user = user;
        let mut rooms: Vec<String> = left.iter().map(|(r, _)| r.clone()).collect();
        if let Some(previous) = self.redecide.take() {
            rooms.extend(previous.left);
            rooms.sort();
            rooms.dedup();
        }
        self.redecide = Some(Redecide {
            through,
            left: rooms,
        });
        Ok(Refreshed { left })
    }

    /// A live delivery as this session receives it now: the same delivery, unless it was
    /// queued before a token refresh, in which case it is decided again for the current
    /// credentials (dropped when they may not see the row or left its room).
    pub fn admit(&mut self, d: Delivery) -> Option<Delivery> {
        match &self.redecide {
            Some(r) if d.event.seq <= r.through => {
                if r.left.iter().any(|room| room == d.room()) {
                    return None;
                }
                let view = d.event.view(&self.user)?;
                Some(Delivery::new(d.event, d.room, view, d.frames))
            }
            Some(_) => {
                // The queue is in log order: everything decided for the old credentials
                // has gone by.
                self.redecide = None;
                Some(d)
            }
            None => Some(d),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.close(self.id, self.transport);
    }
}
