//! The sequencer's SQL (trigger mode): leadership, batches, parking.

use tokio_postgres::GenericClient;

use super::SEQUENCER_LOCK;
use crate::event::Position;

/// Tries to become the sequencer (session-level lock: held until this connection ends).
pub async fn try_lead<C: GenericClient>(client: &C) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SEQUENCER_LOCK])
        .await?
        .get(0))
}

/// A batch the sequencer recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticked {
    /// The positions of its changes: `first ..= last`.
    pub first: Position,
    pub last: Position,
}

/// One sequencer tick (`rowcast.tick()`, migration 007): every change committed since the
/// previous batch becomes the next batch, numbered after every earlier one and announced on
/// the sequenced channel, without writing to the changes themselves. Only the lock holder
/// calls this, one at a time, so readers of `seq > cursor` never skip a change. `None`:
/// nothing new.
pub async fn tick<C: GenericClient>(client: &C) -> Result<Option<Ticked>, tokio_postgres::Error> {
    Ok(client
        .query_typed_opt("SELECT first_seq, last_seq FROM rowcast.tick()", &[])
        .await?
        .map(|r| Ticked {
            first: Position(r.get(0)),
            last: Position(r.get(1)),
        }))
}

/// `(horizon, xmax)` of a fresh snapshot: every transaction below `horizon` has finished;
/// every transaction that starts from now on gets an id at or above `xmax`.
pub async fn snapshot_bounds<C: GenericClient>(
    client: &C,
) -> Result<(i64, i64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint
               FROM pg_current_snapshot() s",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Marks the sequencer as parked for `ttl_secs`: capture triggers NOTIFY until then.
/// `setval` is not transactional: every writer sees the mark at once.
pub async fn park<C: GenericClient>(
    client: &C,
    ttl_secs: f64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT setval('rowcast.parked_until', (date_part('epoch', now()) + $1::float8)::bigint)",
            &[&ttl_secs],
        )
        .await?;
    Ok(())
}

/// Removes the parked mark: the sequencer polls on its own again.
pub async fn unpark<C: GenericClient>(client: &C) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT setval('rowcast.parked_until', 0)", &[])
        .await?;
    Ok(())
}
