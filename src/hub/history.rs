//! Where the hub gets events older than its replay buffer: a [`History`] (the change log,
//! see `enrich::LogHistory`). The hub itself never talks to the database.

use std::future::Future;
use std::pin::Pin;

use crate::event::{Event, Position};

/// Why missed events could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(
        "events after {since} were pruned (oldest kept after {pruned}): refetch and continue from the current seq"
    )]
    ResyncRequired { since: Position, pruned: Position },
    #[error("could not read missed events: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// One page read from history: events in log order (not yet filtered by room) and the
/// position to continue after, `None` when `(after, until]` is exhausted.
pub struct HistoryPage {
    pub events: Vec<Event>,
    pub next: Option<Position>,
}

pub type HistoryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<HistoryPage, ResumeError>> + Send + 'a>>;

/// Events from before the replay buffer.
///
/// Guarantee expected of an implementation: pages come in log order and together cover
/// every event in `(after, until]` that may reach `rooms` (more is fine: the hub filters by
/// room); an `after` older than what is retained is [`ResumeError::ResyncRequired`].
pub trait History: Send + Sync {
    fn page<'a>(
        &'a self,
        rooms: &'a [String],
        after: Position,
        until: Position,
        limit: usize,
    ) -> HistoryFuture<'a>;
}
