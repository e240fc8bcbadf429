//! Durable positions in `rowcast.cursors`.

use tokio_postgres::GenericClient;

use crate::event::Position;

/// A named durable position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The webhook outbox has enqueued every change up to here; advanced in the same
    /// transaction that writes the deliveries.
    Outbox,
    /// Retention removed every change up to here: resuming from before it needs a resync.
    Pruned,
}

impl Cursor {
    /// The row's `name` in `rowcast.cursors`.
    pub fn name(self) -> &'static str {
        match self {
            Cursor::Outbox => "outbox",
            Cursor::Pruned => "pruned",
        }
    }
}

/// A durable cursor, if set.
pub async fn cursor<C: GenericClient>(
    client: &C,
    which: Cursor,
) -> Result<Option<Position>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT seq FROM rowcast.cursors WHERE name = $1",
            &[&which.name()],
        )
        .await?
        .map(|r| Position(r.get(0))))
}

/// Creates the outbox cursor at `start` if there is none, so webhooks cover every change
/// from the first start of rowcast on. Safe from many replicas at once.
pub async fn init_outbox<C: GenericClient>(
    client: &C,
    start: Position,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO rowcast.cursors (name, seq) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
            &[&Cursor::Outbox.name(), &start.0],
        )
        .await?;
    Ok(())
}

/// Locks the outbox cursor for the rest of the transaction and returns it; `None` when
/// another transaction holds it (`SKIP LOCKED`: that replica is enqueueing).
pub async fn lock_outbox<C: GenericClient>(
    client: &C,
) -> Result<Option<Position>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT seq FROM rowcast.cursors WHERE name = $1 FOR UPDATE SKIP LOCKED",
            &[&Cursor::Outbox.name()],
        )
        .await?
        .map(|r| Position(r.get(0))))
}

/// Moves the (locked) outbox cursor to `to`.
pub async fn advance_outbox<C: GenericClient>(
    client: &C,
    to: Position,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE rowcast.cursors SET seq = $2, updated_at = now() WHERE name = $1",
            &[&Cursor::Outbox.name(), &to.0],
        )
        .await?;
    Ok(())
}
