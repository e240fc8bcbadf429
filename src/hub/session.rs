//! A client's membership in the hub: its rooms and its bounded queue of deliveries.

use std::sync::Arc;

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
}

impl Delivery {
    pub(super) fn new(event: SharedEvent, room: u8, view: View) -> Delivery {
        Delivery { event, room, view }
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

    /// Replaces the session's credentials after a token refresh (same `sub` only).
    pub fn refresh(&mut self, user: User) -> Result<(), OtherUser> {
        if user.sub != self.user.sub {
            return Err(OtherUser);
        }
        self.hub.refresh(self.id, &user);
        self.user = user;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.close(self.id, self.transport);
    }
}
