//! SQL over `rowcast.changes`: reading in `seq` order, appending (logical mode), retention.

use tokio_postgres::GenericClient;
use tokio_postgres::Row;

use crate::event::{Change, Op, Position};

const COLUMNS: &str = "seq, at, op, tbl, pk, old";

/// What one read of the log returned.
#[derive(Debug, Default)]
pub struct Read {
    /// The well-formed changes, in `seq` order.
    pub changes: Vec<Change>,
    /// The position of the last row read, malformed or not: where the next read starts.
    pub last: Option<Position>,
    /// Rows read, malformed ones included.
    pub rows: usize,
}

impl Read {
    fn from_rows(rows: &[Row]) -> Read {
        let mut read = Read {
            changes: Vec::with_capacity(rows.len()),
            last: None,
            rows: rows.len(),
        };
        for row in rows {
            let pos = Position(row.get(0));
            read.last = Some(pos);
            let code: i8 = row.get(2);
            match Op::from_code(code as u8) {
                Some(op) => read.changes.push(Change {
                    pos,
                    at: row.get(1),
                    op,
                    table: row.get(3),
                    pk: row.get(4),
                    old: row.get(5),
                }),
                None => {
                    let table: String = row.get(3);
                    metrics::counter!("rowcast_changelog_malformed_total").increment(1);
                    tracing::warn!(seq = %pos, table, op = code, "skipping a change-log row with an unknown op code");
                }
            }
        }
        read
    }
}

/// Sequenced changes after `after`, in `seq` order, at most `limit` rows.
pub async fn read_after<C: GenericClient>(
    client: &C,
    after: Position,
    limit: i64,
) -> Result<Read, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM rowcast.changes
                  WHERE seq > $1 ORDER BY seq LIMIT $2"
            ),
            &[&after.0, &limit],
        )
        .await?;
    Ok(Read::from_rows(&rows))
}

/// Changes in `(after, until]`, optionally only of `tables`, in `seq` order.
pub async fn read_range<C: GenericClient>(
    client: &C,
    after: Position,
    until: Position,
    tables: Option<&[String]>,
    limit: i64,
) -> Result<Read, tokio_postgres::Error> {
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
    Ok(Read::from_rows(&rows))
}

/// The newest sequenced position after `after`, if there is one.
pub async fn newest_after<C: GenericClient>(
    client: &C,
    after: Position,
) -> Result<Option<Position>, tokio_postgres::Error> {
    let seq: Option<i64> = client
        .query_one(
            "SELECT max(seq) FROM rowcast.changes WHERE seq > $1",
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
                (SELECT max(seq) FROM rowcast.changes),
                (SELECT max(seq) FROM rowcast.cursors), 0)",
            &[],
        )
        .await?
        .get(0);
    Ok(Position(seq))
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
                SELECT $4, max(seq) FROM gone HAVING max(seq) IS NOT NULL
                ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
                 WHERE rowcast.cursors.seq < EXCLUDED.seq)
             SELECT count(*) FROM gone",
            &[
                &max_age_secs,
                &keep.0,
                &batch,
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
}

/// Appends changes to the log in their order, each with the next `seq`; returns the
/// `seq`s in the same order.
pub async fn append<C: GenericClient>(
    client: &C,
    rows: impl Iterator<Item = NewChange>,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let (mut at, mut op, mut tbl, mut pk, mut old) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in rows {
        at.push(c.at);
        op.push((c.op.code() as char).to_string());
        tbl.push(c.table);
        pk.push(c.pk);
        old.push(c.old);
    }
    if at.is_empty() {
        return Ok(Vec::new());
    }
    // `unnest` yields the rows in order, so `nextval` numbers them in order too.
    let mut seqs: Vec<i64> = client
        .query(
            "INSERT INTO rowcast.changes (seq, at, op, tbl, pk, old)
             SELECT nextval('rowcast.change_seq'), u.at, u.op::\"char\", u.tbl, u.pk, u.old
               FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[])
                    WITH ORDINALITY AS u(at, op, tbl, pk, old, ord)
              ORDER BY u.ord
             RETURNING seq",
            &[&at, &op, &tbl, &pk, &old],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
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
