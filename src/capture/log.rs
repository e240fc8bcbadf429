//! SQL over `rowcast.changes` and `rowcast.cursors`: the only module that reads the log.

use tokio_postgres::GenericClient;
use tokio_postgres::Row;

use crate::event::{Change, Op, Position};

const COLUMNS: &str = "seq, at, op, tbl, pk, old";

/// Key of the session advisory lock held by the one replica that sequences changes.
pub const SEQUENCER_LOCK: i64 = 0x726f_7763_6173_7402;

/// NOTIFY channel on which the sequencer announces new sequenced changes.
pub const SEQUENCED_CHANNEL: &str = "rowcast_sequenced";

fn change(row: &Row) -> Option<Change> {
    Some(Change {
        pos: Position(row.get(0)),
        at: row.get(1),
        op: Op::from_code(row.get(2))?,
        table: row.get(3),
        pk: row.get(4),
        old: row.get(5),
    })
}

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

/// Sequenced changes after `after`, in `seq` order.
pub async fn read_after<C: GenericClient>(
    client: &C,
    after: Position,
    limit: i64,
) -> Result<Vec<Change>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM rowcast.changes
                  WHERE seq > $1 ORDER BY seq LIMIT $2"
            ),
            &[&after.0, &limit],
        )
        .await?;
    Ok(rows.iter().filter_map(change).collect())
}

/// Changes in `(after, until]`, optionally only of `tables`, in `seq` order.
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
                  WHERE seq > $1 AND seq <= $2 AND ($3::text[] IS NULL OR tbl = ANY($3))
                  ORDER BY seq LIMIT $4"
            ),
            &[&after.0, &until.0, &tables, &limit],
        )
        .await?;
    Ok(rows.iter().filter_map(change).collect())
}

/// The newest committed position: a consumer that starts here sees every change
/// sequenced from now on (any sequencing still in flight gets greater values).
pub async fn start_position<C: GenericClient>(
    client: &C,
) -> Result<Position, tokio_postgres::Error> {
    let seq: i64 = client
        .query_one(
            "SELECT GREATEST(
                (SELECT max(seq) FROM rowcast.changes),
                (SELECT max(seq) FROM rowcast.cursors), 0)",
            &[],
        )
        .await?
        .get(0);
    Ok(Position(seq))
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

/// Age in seconds of the oldest change not yet delivered past `after`: unsequenced ones
/// (their transaction committed, or is still open) or sequenced after `after`.
pub async fn oldest_unconsumed_age<C: GenericClient>(
    client: &C,
    after: Position,
) -> Result<f64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT COALESCE(EXTRACT(EPOCH FROM now() - LEAST(
                (SELECT at FROM rowcast.changes WHERE seq IS NULL ORDER BY id LIMIT 1),
                (SELECT at FROM rowcast.changes WHERE seq > $1 ORDER BY seq LIMIT 1)))::float8, 0)",
            &[&after.0],
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
        .query_opt("SELECT seq FROM rowcast.cursors WHERE name = $1", &[&name])
        .await?
        .map(|r| Position(r.get(0))))
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

/// Deletes up to `batch` sequenced changes older than `max_age_secs` and not after
/// `keep_after` (the outbox cursor: changes it has not enqueued yet are kept), and records
/// the newest deleted position in the `pruned` cursor. Returns how many were deleted.
pub async fn prune<C: GenericClient>(
    client: &C,
    max_age_secs: f64,
    keep_after: Option<Position>,
    batch: i64,
) -> Result<u64, tokio_postgres::Error> {
    let keep = keep_after.unwrap_or(Position(i64::MAX));
    let row = client
        .query_one(
            "WITH doomed AS (
                SELECT seq FROM rowcast.changes
                 WHERE seq IS NOT NULL AND seq <= $2 AND at < now() - make_interval(secs => $1)
                 ORDER BY seq LIMIT $3),
             gone AS (
                DELETE FROM rowcast.changes c USING doomed d WHERE c.seq = d.seq RETURNING c.seq),
             mark AS (
                INSERT INTO rowcast.cursors (name, seq)
                SELECT 'pruned', max(seq) FROM gone HAVING max(seq) IS NOT NULL
                ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
                 WHERE rowcast.cursors.seq < EXCLUDED.seq)
             SELECT count(*) FROM gone",
            &[&max_age_secs, &keep.0, &batch],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}
