//! SQL over `rowcast.changes` and `rowcast.batches` besides reading: positions,
//! appending (logical mode: packed batches, and a row per change for a large transaction's
//! chunks), retention.

use tokio_postgres::GenericClient;
use tokio_postgres::types::{ToSql, Type};

use super::Prepared;

use crate::event::{Change, Op, Position};

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
                    SELECT b.batch, b.first_seq, b.last_seq, b.snap, b.prev, b.min_id, b.max_id,
                           b.changes IS NOT NULL AS packed,
                           (sum(b.last_seq - b.first_seq + 1) OVER (ORDER BY b.last_seq))::int8 AS upto
                      FROM rowcast.batches b
                     WHERE b.last_seq <= $2::int8
                       AND b.at < now() - make_interval(secs => $1::float8)),
                 doomed AS (
                    SELECT * FROM old WHERE upto - (last_seq - first_seq + 1) < $3::int8),
                 gone_seq AS (
                    DELETE FROM rowcast.changes c USING doomed d
                     WHERE d.snap IS NULL AND NOT d.packed
                       AND c.seq BETWEEN d.first_seq AND d.last_seq
                    RETURNING 1),
                 gone_snap AS (
                    DELETE FROM rowcast.changes c USING doomed d
                     WHERE d.snap IS NOT NULL AND {}
                    RETURNING 1),
                 gone AS (
                    DELETE FROM rowcast.batches b USING doomed d WHERE b.batch = d.batch
                    RETURNING b.last_seq, CASE WHEN b.changes IS NULL THEN 0
                                               ELSE b.last_seq - b.first_seq + 1 END AS packed),
                 mark AS (
                    INSERT INTO rowcast.cursors (name, seq)
                    SELECT $4, max(last_seq) FROM gone HAVING max(last_seq) IS NOT NULL
                    ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
                     WHERE rowcast.cursors.seq < EXCLUDED.seq)
                 SELECT (SELECT count(*) FROM gone_seq) + (SELECT count(*) FROM gone_snap)
                      + (SELECT coalesce(sum(packed), 0) FROM gone)::int8",
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

impl NewChange {
    /// The change as the log holds it at `pos`.
    pub fn sequenced(self, pos: Position) -> Change {
        Change {
            pos,
            at: self.at,
            op: self.op,
            table: self.table,
            pk: self.pk,
            old: self.old,
            data: self.data,
            withheld: self.withheld,
        }
    }
}

/// The parameters of [`APPEND`]: the number of changes, the oldest change's time, the
/// packed changes.
pub(super) const APPEND_TYPES: [Type; 3] = [Type::INT8, Type::TIMESTAMPTZ, Type::JSON];

/// [`append`]'s statement, whose parameters are [`APPEND_TYPES`]: reserves the `seq`s and
/// records the batch with its changes packed.
pub(super) const APPEND: &str = "WITH s AS (
        SELECT pg_catalog.setval('rowcast.change_seq',
                                 pg_catalog.nextval('rowcast.change_seq') + $1 - 1) AS last)
     INSERT INTO rowcast.batches (first_seq, last_seq, at, changes)
     SELECT s.last - $1 + 1, s.last, $2, $3 FROM s
     RETURNING first_seq";

/// Appends changes to the log in their order, each with the next `seq`, as one packed
/// batch (one row of `rowcast.batches`, see [`super::packed`]); returns the `seq`s in the
/// same order. The caller is the only writer (it holds the slot position's lock). One
/// statement, prepared on `client`'s connection, which the caller may pipeline with what
/// follows it.
pub async fn append(
    client: &tokio_postgres::Client,
    rows: &[NewChange],
    prepared: &Prepared,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let Some(at) = rows.iter().map(|c| c.at).min() else {
        return Ok(Vec::new());
    };
    let n = rows.len() as i64;
    let packed = tokio_postgres::types::Json(super::packed::Pack(rows));
    let first: i64 = client
        .query_one(&prepared.append, &[&n, &at, &packed])
        .await?
        .get(0);
    Ok((first..first + n).collect())
}

/// From this many changes on, [`append_rows`] copies them in (`COPY … FROM STDIN BINARY`,
/// PostgreSQL's multi-row insert: about half the database time per row of the `INSERT`,
/// and less WAL) at the price of three more round trips, which only a large batch earns
/// back.
const COPY_FROM: usize = 64;

/// Appends changes to the log in their order as a row each, with the next `seq`, and
/// records them as one batch; returns the `seq`s in the same order. For a large
/// transaction's chunks, whose deletes [`fix_old_rows`] may still complete by `seq` before
/// the transaction commits. The caller is the only writer, and must await this before
/// sending anything else on `client`.
pub async fn append_rows(
    client: &tokio_postgres::Client,
    rows: &[NewChange],
    prepared: &Prepared,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    match rows.len() {
        0 => Ok(Vec::new()),
        n if n < COPY_FROM => insert(client, rows, prepared).await,
        _ => copy(client, rows).await,
    }
}

/// [`append_rows`] for a large batch: reserves the `seq`s, copies the rows in and records the
/// batch.
async fn copy(
    client: &tokio_postgres::Client,
    rows: &[NewChange],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    let n = rows.len() as i64;
    let count = [(&n as &(dyn tokio_postgres::types::ToSql + Sync), Type::INT8)];
    let reserve = client.query_typed(
        "SELECT pg_catalog.setval('rowcast.change_seq',
                pg_catalog.nextval('rowcast.change_seq') + $1 - 1) - $1 + 1",
        &count,
    );
    let sink = client.copy_in(
        "COPY rowcast.changes (seq, at, op, tbl, pk, old, data_json, withheld, txid)
           FROM STDIN (FORMAT binary)",
    );
    let (reserved, sink) = tokio::join!(reserve, sink);
    let first: i64 = reserved?[0].get(0);
    let writer = BinaryCopyInWriter::new(
        sink?,
        &[
            Type::INT8,
            Type::TIMESTAMPTZ,
            Type::CHAR,
            Type::TEXT,
            Type::JSONB,
            Type::JSONB,
            Type::JSON,
            Type::TEXT,
            Type::XID8,
        ],
    );
    futures_util::pin_mut!(writer);
    let at = rows.iter().map(|c| c.at).min().expect("not empty");
    for (c, seq) in rows.iter().zip(first..) {
        let op = c.op.code() as i8;
        writer
            .as_mut()
            .write(&[
                &seq,
                &c.at,
                &op,
                &c.table,
                &c.pk,
                &c.old,
                &c.data,
                &c.withheld,
                &NoTxid,
            ])
            .await?;
    }
    writer.finish().await?;
    let last = first + n - 1;
    client
        .execute_typed(
            "INSERT INTO rowcast.batches (first_seq, last_seq, at) VALUES ($1, $2, $3)",
            &[
                (&first, Type::INT8),
                (&last, Type::INT8),
                (&at, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
    Ok((first..=last).collect())
}

/// The `txid` of a change that carries its `seq`: none (only trigger-mode changes,
/// sequenced by their transaction's visibility, have one).
#[derive(Debug)]
struct NoTxid;

impl tokio_postgres::types::ToSql for NoTxid {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(tokio_postgres::types::IsNull::Yes)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::XID8
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The parameters of [`insert`]'s statement.
pub(super) const INSERT_TYPES: [Type; 7] = [
    Type::TIMESTAMPTZ_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::JSONB_ARRAY,
    Type::JSONB_ARRAY,
    Type::JSON_ARRAY,
    Type::TEXT_ARRAY,
];

/// [`insert`]'s statement, whose parameters are [`INSERT_TYPES`].
pub(super) const INSERT: &str = "WITH ins AS (
        INSERT INTO rowcast.changes (seq, at, op, tbl, pk, old, data_json, withheld, txid)
        SELECT nextval('rowcast.change_seq'), u.at, u.op::\"char\", u.tbl, u.pk, u.old,
               u.data, u.withheld, NULL
          FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[],
                      $6::json[], $7::text[])
               WITH ORDINALITY AS u(at, op, tbl, pk, old, data, withheld, ord)
         ORDER BY u.ord
        RETURNING seq, at),
     batch AS (
        INSERT INTO rowcast.batches (first_seq, last_seq, at)
        SELECT min(seq), max(seq), min(at) FROM ins)
     SELECT seq FROM ins";

/// [`append_rows`] for a small batch: one statement, prepared on `client`'s connection.
async fn insert(
    client: &tokio_postgres::Client,
    rows: &[NewChange],
    prepared: &Prepared,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let mut cols = AppendColumns::default();
    for c in rows {
        cols.at.push(c.at);
        cols.op.push((c.op.code() as char).to_string());
        cols.tbl.push(&c.table);
        cols.pk.push(&c.pk);
        cols.old.push(c.old.as_ref());
        cols.data.push(c.data.as_ref());
        cols.withheld.push(c.withheld.as_deref());
    }
    // `unnest` yields the rows in order, so `nextval` numbers them in order too.
    let params: [&(dyn ToSql + Sync); 7] = [
        &cols.at,
        &cols.op,
        &cols.tbl,
        &cols.pk,
        &cols.old,
        &cols.data,
        &cols.withheld,
    ];
    let mut seqs: Vec<i64> = client
        .query(&prepared.insert, &params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

#[derive(Default)]
struct AppendColumns<'a> {
    at: Vec<time::OffsetDateTime>,
    op: Vec<String>,
    tbl: Vec<&'a str>,
    pk: Vec<&'a serde_json::Value>,
    old: Vec<Option<&'a serde_json::Value>>,
    data: Vec<Option<&'a serde_json::Value>>,
    withheld: Vec<Option<&'a str>>,
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
