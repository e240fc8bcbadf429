//! SQL over `rowcast.changes` and `rowcast.batches` besides reading: positions,
//! appending (logical mode), retention.

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::event::{Op, Position};

/// The newest sequenced position after `after`, if there is one.
pub async fn newest_after<C: GenericClient>(
    client: &C,
    after: Position,
) -> Result<Option<Position>, tokio_postgres::Error> {
    let seq: Option<i64> = client
        .query_one(
            "SELECT max(last_seq) FROM rowcast.batches WHERE last_seq > $1",
            &[&after.0],
        )
        .await?
        .get(0);
    Ok(seq.map(Position))
}

/// The newest committed position: a consumer that starts here sees every change
/// sequenced from now on (any sequencing still in flight gets greater values).
pub async fn start_position<C: GenericClient>(
    client: &C,
) -> Result<Position, tokio_postgres::Error> {
    let seq: i64 = client
        .query_one(
            "SELECT GREATEST(
                (SELECT max(last_seq) FROM rowcast.batches),
                (SELECT max(seq) FROM rowcast.cursors), 0)",
            &[],
        )
        .await?
        .get(0);
    Ok(Position(seq))
}

/// Age in seconds of the oldest change not yet delivered past `after`: committed ones not
/// in a batch yet (trigger mode), or in a batch after `after`.
pub async fn oldest_unconsumed_age<C: GenericClient>(
    client: &C,
    after: Position,
) -> Result<f64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "WITH head AS (SELECT snap FROM rowcast.batches WHERE snap IS NOT NULL
                             ORDER BY batch DESC LIMIT 1)
             SELECT COALESCE(EXTRACT(EPOCH FROM now() - LEAST(
                (SELECT min(c.at) FROM rowcast.changes c, head h
                  WHERE c.seq IS NULL
                    AND (c.txid >= pg_catalog.pg_snapshot_xmax(h.snap)
                         OR c.txid = ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip(h.snap))))),
                (SELECT at FROM rowcast.batches WHERE last_seq > $1 ORDER BY last_seq LIMIT 1)
             ))::float8, 0)",
            &[&after.0],
        )
        .await?;
    Ok(row.get(0))
}

/// Deletes whole batches older than `max_age_secs` and not after `keep_after` (the
/// outbox cursor: changes it has not enqueued yet are kept), about `limit` changes at a
/// time, and records the newest deleted position in the `pruned` cursor. Returns how many
/// changes were deleted.
pub async fn prune<C: GenericClient>(
    client: &C,
    max_age_secs: f64,
    keep_after: Option<Position>,
    limit: i64,
) -> Result<u64, tokio_postgres::Error> {
    let keep = keep_after.unwrap_or(Position(i64::MAX));
    let row = client
        .query_one(
            &format!(
                "WITH old AS (
                    SELECT b.*, (sum(b.last_seq - b.first_seq + 1) OVER (ORDER BY b.last_seq))::int8 AS upto
                      FROM rowcast.batches b
                     WHERE b.last_seq <= $2::int8
                       AND b.at < now() - make_interval(secs => $1::float8)),
                 doomed AS (
                    SELECT * FROM old WHERE upto - (last_seq - first_seq + 1) < $3::int8),
                 gone_seq AS (
                    DELETE FROM rowcast.changes c USING doomed d
                     WHERE d.snap IS NULL AND c.seq BETWEEN d.first_seq AND d.last_seq
                    RETURNING 1),
                 gone_snap AS (
                    DELETE FROM rowcast.changes c USING doomed d
                     WHERE d.snap IS NOT NULL AND {}
                    RETURNING 1),
                 gone AS (
                    DELETE FROM rowcast.batches b USING doomed d WHERE b.batch = d.batch
                    RETURNING b.last_seq),
                 mark AS (
                    INSERT INTO rowcast.cursors (name, seq)
                    SELECT $4, max(last_seq) FROM gone HAVING max(last_seq) IS NOT NULL
                    ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
                     WHERE rowcast.cursors.seq < EXCLUDED.seq)
                 SELECT (SELECT count(*) FROM gone_seq) + (SELECT count(*) FROM gone_snap)",
                super::read::membership("d.min_id", "d.max_id", "d.snap", "d.prev", true)
            ),
            &[
                &max_age_secs,
                &keep.0,
                &limit.max(1),
                &super::Cursor::Pruned.name(),
            ],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// A change to append (logical mode), before it has a `seq`.
pub struct NewChange {
    pub at: time::OffsetDateTime,
    pub op: Op,
    pub table: String,
    pub pk: serde_json::Value,
    pub old: Option<serde_json::Value>,
    /// The row after the change (inserts and updates), hidden columns never included.
    pub data: Option<serde_json::Value>,
    /// Why the change carries no row (its table's shape changed).
    pub withheld: Option<String>,
}

/// Appends changes to the log in their order, each with the next `seq`, and records them
/// as one batch; returns the `seq`s in the same order.
pub async fn append<C: GenericClient>(
    client: &C,
    rows: impl Iterator<Item = NewChange>,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let mut cols = AppendColumns::default();
    for c in rows {
        cols.at.push(c.at);
        cols.op.push((c.op.code() as char).to_string());
        cols.tbl.push(c.table);
        cols.pk.push(c.pk);
        cols.old.push(c.old);
        cols.data.push(c.data);
        cols.withheld.push(c.withheld);
    }
    if cols.at.is_empty() {
        return Ok(Vec::new());
    }
    // `unnest` yields the rows in order, so `nextval` numbers them in order too.
    let mut seqs: Vec<i64> = client
        .query_typed(
            "WITH ins AS (
                INSERT INTO rowcast.changes (seq, at, op, tbl, pk, old, data, withheld, txid)
                SELECT nextval('rowcast.change_seq'), u.at, u.op::\"char\", u.tbl, u.pk, u.old,
                       u.data, u.withheld, NULL
                  FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[],
                              $6::jsonb[], $7::text[])
                       WITH ORDINALITY AS u(at, op, tbl, pk, old, data, withheld, ord)
                 ORDER BY u.ord
                RETURNING seq, at),
             batch AS (
                INSERT INTO rowcast.batches (first_seq, last_seq, at)
                SELECT min(seq), max(seq), min(at) FROM ins)
             SELECT seq FROM ins",
            &[
                (&cols.at, Type::TIMESTAMPTZ_ARRAY),
                (&cols.op, Type::TEXT_ARRAY),
                (&cols.tbl, Type::TEXT_ARRAY),
                (&cols.pk, Type::JSONB_ARRAY),
                (&cols.old, Type::JSONB_ARRAY),
                (&cols.data, Type::JSONB_ARRAY),
                (&cols.withheld, Type::TEXT_ARRAY),
            ],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

#[derive(Default)]
struct AppendColumns {
    at: Vec<time::OffsetDateTime>,
    op: Vec<String>,
    tbl: Vec<String>,
    pk: Vec<serde_json::Value>,
    old: Vec<Option<serde_json::Value>>,
    data: Vec<Option<serde_json::Value>>,
    withheld: Vec<Option<String>>,
}

/// Sets the old rows of deletes already in the log (by `seq`).
pub async fn fix_old_rows<C: GenericClient>(
    client: &C,
    fixes: Vec<(i64, serde_json::Value)>,
) -> Result<(), tokio_postgres::Error> {
    if fixes.is_empty() {
        return Ok(());
    }
    let (seqs, olds): (Vec<i64>, Vec<serde_json::Value>) = fixes.into_iter().unzip();
    client
        .execute(
            "UPDATE rowcast.changes c SET old = f.old
               FROM unnest($1::int8[], $2::jsonb[]) AS f(seq, old)
              WHERE c.seq = f.seq AND c.seq IS NOT NULL",
            &[&seqs, &olds],
        )
        .await?;
    Ok(())
}
