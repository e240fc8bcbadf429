//! SQL over `rowcast.changes` and `rowcast.cursors`: the only module that reads the log.

use tokio_postgres::GenericClient;
use tokio_postgres::Row;

use crate::event::{Change, Op, Position};

const COLUMNS: &str = "xid, id, at, op, tbl, pk, old";

fn change(row: &Row) -> Option<Change> {
    Some(Change {
        pos: Position {
            xid: row.get(0),
            id: row.get(1),
        },
        at: row.get(2),
        op: Op::from_code(row.get(3))?,
        table: row.get(4),
        pk: row.get(5),
        old: row.get(6),
    })
}

/// Changes after `after` of transactions that have all finished (older than the snapshot
/// horizon), in log order. Never returns a change that an earlier call could still have
/// been missing: nothing at or before the last returned position can appear later.
pub async fn read_after<C: GenericClient>(
    client: &C,
    after: Position,
    limit: i64,
) -> Result<Vec<Change>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM rowcast.changes
                  WHERE (xid, id) > ($1, $2)
                    AND xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                  ORDER BY xid, id LIMIT $3"
            ),
            &[&after.xid, &after.id, &limit],
        )
        .await?;
    Ok(rows.iter().filter_map(change).collect())
}

/// Changes in `(after, until]`, optionally only of `tables`, in log order. `until` must be
/// a position already handed out by [`read_after`], so the range is final.
pub async fn read_range<C: GenericClient>(
    client: &C,
    after: Position,
    until: Position,
    tables: Option<&[String]>,
    limit: i64,
) -> Result<Vec<Change>, tokio_postgres::Error> {
    let tables: Option<Vec<String>> = tables.map(|t| t.to_vec());
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM rowcast.changes
                  WHERE (xid, id) > ($1, $2) AND (xid, id) <= ($3, $4)
                    AND ($5::text[] IS NULL OR tbl = ANY($5))
                  ORDER BY xid, id LIMIT $6"
            ),
            &[
                &after.xid, &after.id, &until.xid, &until.id, &tables, &limit,
            ],
        )
        .await?;
    Ok(rows.iter().filter_map(change).collect())
}

/// The position just before every transaction that has not finished yet: a consumer that
/// starts here sees every change committed from now on.
pub async fn start_position<C: GenericClient>(
    client: &C,
) -> Result<Position, tokio_postgres::Error> {
    let horizon: i64 = client
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await?
        .get(0);
    Ok(Position {
        xid: horizon - 1,
        id: i64::MAX,
    })
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

/// Age in seconds of the oldest change after `after` (0 when there is none).
pub async fn oldest_unconsumed_age<C: GenericClient>(
    client: &C,
    after: Position,
) -> Result<f64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT COALESCE(EXTRACT(EPOCH FROM now() - (
                SELECT at FROM rowcast.changes WHERE (xid, id) > ($1, $2)
                 ORDER BY xid, id LIMIT 1))::float8, 0)",
            &[&after.xid, &after.id],
        )
        .await?;
    Ok(row.get(0))
}

/// A durable cursor (`outbox`, `pruned`), if set.
pub async fn cursor<C: GenericClient>(
    client: &C,
    name: &str,
) -> Result<Option<Position>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT xid, id FROM rowcast.cursors WHERE name = $1",
            &[&name],
        )
        .await?
        .map(|r| Position {
            xid: r.get(0),
            id: r.get(1),
        }))
}

/// Marks this consumer as parked: capture triggers will NOTIFY while the mark is fresh.
pub async fn park<C: GenericClient>(
    client: &C,
    consumer: uuid::Uuid,
    ttl_secs: f64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO rowcast.waiters (consumer, expires_at)
             VALUES ($1, now() + make_interval(secs => $2))
             ON CONFLICT (consumer) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            &[&consumer, &ttl_secs],
        )
        .await?;
    Ok(())
}

/// Removes the parked mark: this consumer polls on its own again.
pub async fn unpark<C: GenericClient>(
    client: &C,
    consumer: uuid::Uuid,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM rowcast.waiters WHERE consumer = $1",
            &[&consumer],
        )
        .await?;
    Ok(())
}

/// Deletes up to `batch` changes older than `max_age_secs` and not after `keep_after`
/// (the outbox cursor: changes it has not enqueued yet are kept), and records the newest
/// deleted position in the `pruned` cursor. Returns how many were deleted.
pub async fn prune<C: GenericClient>(
    client: &C,
    max_age_secs: f64,
    keep_after: Option<Position>,
    batch: i64,
) -> Result<u64, tokio_postgres::Error> {
    let keep = keep_after.unwrap_or(Position {
        xid: i64::MAX,
        id: i64::MAX,
    });
    let row = client
        .query_one(
            "WITH doomed AS (
                SELECT xid, id FROM rowcast.changes
                 WHERE at < now() - make_interval(secs => $1) AND (xid, id) <= ($2, $3)
                 ORDER BY xid, id LIMIT $4),
             gone AS (
                DELETE FROM rowcast.changes c USING doomed d
                 WHERE c.xid = d.xid AND c.id = d.id RETURNING c.xid, c.id),
             last AS (SELECT xid, id FROM gone ORDER BY xid DESC, id DESC LIMIT 1),
             mark AS (
                INSERT INTO rowcast.cursors (name, xid, id)
                SELECT 'pruned', xid, id FROM last
                ON CONFLICT (name) DO UPDATE SET xid = EXCLUDED.xid, id = EXCLUDED.id, updated_at = now()
                 WHERE (rowcast.cursors.xid, rowcast.cursors.id) < (EXCLUDED.xid, EXCLUDED.id))
             SELECT count(*) FROM gone",
            &[&max_age_secs, &keep.xid, &keep.id, &batch],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}
