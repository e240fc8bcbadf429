//! Resuming: what a client that reconnects with its last `seq` already has, and the one
//! catch-up driver every transport uses to send it what it missed, in order, before live
//! events.

use std::collections::HashSet;

use crate::event::{Position, User};
use crate::hub::{Delivery, Hub, ResumeError};

/// Events per catch-up page (the replay buffer or one read of the change log).
pub const CATCH_UP_PAGE: usize = 500;

/// A session's resume state.
///
/// Guarantee: with `since` set, each room's events after `since` reach the client once,
/// either from its catch-up (rooms joined since the connect, each caught up once) or live;
/// live deliveries at or before [`Resume::skip_through`] are the ones a catch-up already
/// sent.
#[derive(Debug, Default)]
pub struct Resume {
    since: Option<Position>,
    skip_through: Position,
    caught_up: HashSet<String>,
}

impl Resume {
    /// Resume state for a client that connected with `since` (or none).
    pub fn new(since: Option<Position>) -> Resume {
        Resume {
            since,
            skip_through: since.unwrap_or(Position::ZERO),
            caught_up: HashSet::new(),
        }
    }

    /// The position the client resumes after.
    pub fn since(&self) -> Option<Position> {
        self.since
    }

    /// Whether a live delivery at `seq` is new to the client.
    pub fn is_new(&self, seq: Position) -> bool {
        seq > self.skip_through
    }

    /// Live deliveries at or before `pos` were sent by a catch-up: skip them.
    pub fn skip_through(&mut self, pos: Position) {
        if pos > self.skip_through {
            self.skip_through = pos;
        }
    }

    /// Of `joined` rooms, those that still owe the client their missed events (each room
    /// once per connection; none when the client did not resume).
    pub fn owed(&mut self, joined: impl IntoIterator<Item = String>) -> Vec<String> {
        if self.since.is_none() {
            return Vec::new();
        }
        joined
            .into_iter()
            .filter(|r| self.caught_up.insert(r.clone()))
            .collect()
    }

    /// A room was left: joining it again catches it up again.
    pub fn forget(&mut self, room: &str) {
        self.caught_up.remove(room);
    }
}

/// Pages through the events of `rooms` in `(since, until]`, in log order.
#[derive(Debug)]
pub struct CatchUp {
    rooms: Vec<String>,
    after: Position,
    until: Position,
    done: bool,
}

impl CatchUp {
    pub fn new(rooms: Vec<String>, since: Position, until: Position) -> CatchUp {
        CatchUp {
            rooms,
            after: since,
            until,
            done: false,
        }
    }

    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    /// Where live events take over.
    pub fn until(&self) -> Position {
        self.until
    }

    /// The next page of what `user` missed, each event as the user receives it (the
    /// same per-row decision as live delivery), or `None` once everything is sent. An
    /// error ends the catch-up.
    pub async fn next(
        &mut self,
        hub: &Hub,
        user: &User,
    ) -> Option<Result<Vec<Delivery>, ResumeError>> {
        if self.done {
            return None;
        }
        let page = hub
            .catch_up_page(&self.rooms, user, self.after, self.until, CATCH_UP_PAGE)
            .await;
        match page {
            Ok((events, next)) => {
                match next {
                    Some(n) => self.after = n,
                    None => self.done = true,
                }
                Some(Ok(events))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// The resync notice for a catch-up that found the events after `since` pruned
    /// (up to `pruned`): the client refetches, then continues from [`CatchUp::until`].
    pub fn resync(&self, since: Position, pruned: Position) -> super::Resync {
        super::Resync::new(since, pruned, self.until, self.rooms.clone())
    }
}
