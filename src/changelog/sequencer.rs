//! The sequencer's SQL (trigger mode): leadership, stamping `seq`, parking.

use tokio_postgres::GenericClient;

use super::{SEQUENCED_CHANNEL, SEQUENCER_LOCK};

/// Tries to become the sequencer (session-level lock: held until this connection ends).
pub async fn try_lead<C: GenericClient>(client: &C) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SEQUENCER_LOCK])
        .await?
        .get(0))
}

/// Stamps up to `limit` committed, unsequenced changes with the next `seq` values, in
/// change-id order, and announces them. Only the lock holder calls this, one transaction
/// at a time on one connection, so a later call's values are greater than every value an
/// earlier call committed: readers of `seq > cursor` never skip one. Returns how many.
pub async fn sequence(
    client: &mut tokio_postgres::Client,
    limit: i64,
) -> Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE rowcast.changes c SET seq = s.seq
               FROM (SELECT id, nextval('rowcast.change_seq') AS seq
                       FROM (SELECT id FROM rowcast.changes WHERE seq IS NULL ORDER BY id LIMIT $1) o) s
              WHERE c.id = s.id AND c.seq IS NULL",
            &[&limit],
        )
        .await?;
    if n > 0 {
        tx.batch_execute(&format!("NOTIFY {SEQUENCED_CHANNEL}"))
            .await?;
    }
    tx.commit().await?;
    Ok(n)
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
