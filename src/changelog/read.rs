//! Reading the log in `seq` order through `rowcast.batches`.
//!
//! A batch is one of three kinds:
//! - a packed batch (logical mode): its changes are in its own row, see [`super::packed`];
//! - a snapshot batch (trigger mode): the changes whose transaction is visible in its
//!   `snap` and not in its `prev`, numbered from `first_seq` in `id` order;
//! - a `seq` range whose changes carry their `seq` (a large transaction written in chunks,
//!   and changes stamped by earlier versions).
//!
//! The common read is one query: the whole batches after the position with their changes.
//! Otherwise a read finds the batches after its position (one query) and then reads their
//! changes (one query per batch, pipelined on the connection).

use std::sync::LazyLock;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row};

use super::Prepared;

use crate::event::{Change, Op, Position};

/// Columns of a change as every read selects them (after the `id`).
const COLUMNS: &str = "c.id, c.seq, c.at, c.op, c.tbl, c.pk, c.old,
    coalesce(c.data::text, c.data_json::text) AS data, c.withheld";

/// Batches looked at per read.
const BATCHES_PER_READ: i64 = 64;

/// Where a read stopped inside a snapshot batch: the change at `pos` is the row `id` of
/// batch `batch`. Passed to the next read, it continues there by key instead of counting
/// rows from the batch's start (a transaction of a million changes is one batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub pos: Position,
    batch: i64,
    id: i64,
}

/// What one read of the log returned.
#[derive(Debug, Default)]
pub struct Read {
    /// The well-formed changes, in `seq` order.
    pub changes: Vec<Change>,
    /// The position the read covered up to, malformed rows and gaps included: where the
    /// next read starts. `None` when there was nothing after the position.
    pub last: Option<Position>,
    /// Rows read, malformed ones included.
    pub rows: usize,
    /// Whether the log may hold more after `last` within the range asked for.
    pub more: bool,
    /// Pass to the next read that starts at `last`.
    pub mark: Option<Mark>,
}

/// A batch as `rowcast.batches` records it.
struct Batch {
    batch: i64,
    first: i64,
    last: i64,
    /// Its changes are packed into its row.
    packed: bool,
    /// Snapshot batches: (snap, prev, min id, max id).
    snapshot: Option<Snapshot>,
}

struct Snapshot {
    snap: String,
    prev: Option<String>,
    min_id: i64,
    max_id: i64,
}

/// One query of a read: the changes of one batch in `from ..= to`, at most `limit`.
struct Part<'b> {
    batch: &'b Batch,
    from: i64,
    to: i64,
    limit: i64,
    /// Snapshot batches: continue after this row id (from a [`Mark`]) instead of skipping.
    after_id: Option<i64>,
}

/// Sequenced changes in `(after, until]`, in `seq` order, at most `limit` rows; `mark` is
/// the previous read's, if it ended at `after`; `prepared` belongs to `client`'s connection.
pub async fn read<C: GenericClient>(
    client: &C,
    after: Position,
    until: Option<Position>,
    mark: Option<Mark>,
    limit: i64,
    prepared: Option<&Prepared>,
) -> Result<Read, tokio_postgres::Error> {
    let until = until.map_or(i64::MAX, |u| u.0);
    let limit = limit.max(1);
    if mark.is_none()
        && let Some(read) = read_whole_batches(client, after, until, limit, prepared).await?
    {
        return Ok(read);
    }
    let batches: Vec<Batch> = client
        .query_typed(
            "SELECT batch, first_seq, last_seq, snap::text, prev::text, min_id, max_id,
                    changes IS NOT NULL
               FROM rowcast.batches
              WHERE last_seq > $1 AND first_seq <= $2
              ORDER BY last_seq LIMIT $3",
            &[
                (&after.0, Type::INT8),
                (&until, Type::INT8),
                (&BATCHES_PER_READ, Type::INT8),
            ],
        )
        .await?
        .iter()
        .map(|r| Batch {
            batch: r.get(0),
            first: r.get(1),
            last: r.get(2),
            packed: r.get(7),
            snapshot: r.get::<_, Option<String>>(3).map(|snap| Snapshot {
                snap,
                prev: r.get(4),
                min_id: r.get::<_, Option<i64>>(5).unwrap_or(0),
                max_id: r.get::<_, Option<i64>>(6).unwrap_or(i64::MAX),
            }),
        })
        .collect();
    let mut parts = Vec::new();
    let mut budget = limit;
    for b in &batches {
        let from = (after.0 + 1).max(b.first);
        let to = until.min(b.last);
        if budget == 0 || from > to {
            break;
        }
        let take = budget.min(to - from + 1);
        let after_id = mark
            .filter(|m| m.batch == b.batch && m.pos.0 + 1 == from)
            .map(|m| m.id);
        parts.push(Part {
            batch: b,
            from,
            to,
            limit: take,
            after_id,
        });
        budget -= take;
    }
    let more = budget == 0 || batches.len() as i64 == BATCHES_PER_READ;
    let results =
        futures_util::future::try_join_all(parts.iter().map(|p| read_part(client, p))).await?;
    let mut read = Read {
        more,
        ..Read::default()
    };
    for (part, items) in parts.iter().zip(results) {
        let full = items.len() as i64 == part.limit;
        for item in items {
            read.rows += 1;
            read.last = Some(item.pos);
            read.mark = item.id.map(|id| Mark {
                pos: item.pos,
                batch: part.batch.batch,
                id,
            });
            read.changes.extend(item.change);
        }
        if !full {
            // The part's range held nothing more (a gap in a seq range, or a batch pruned
            // meanwhile): the read covers it to its end.
            read.last = Some(Position(part.to));
            read.mark = None;
        }
        if full && part.from + part.limit - 1 < part.to {
            break; // the budget ended inside this part
        }
    }
    Ok(read)
}

/// The parameters of [`read_whole_batches`]'s statement: after, limit, until, batches.
pub(super) const WHOLE_BATCHES_TYPES: [Type; 4] = [Type::INT8, Type::INT8, Type::INT8, Type::INT8];

/// The statement of [`read_whole_batches`], whose parameters are [`WHOLE_BATCHES_TYPES`].
pub(super) static WHOLE_BATCHES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH b AS (
            SELECT x.*,
                   (sum(x.last_seq - x.first_seq + 1) OVER (ORDER BY x.last_seq))::int8 AS upto,
                   min(x.first_seq) OVER () AS lowest
              FROM (SELECT * FROM rowcast.batches WHERE last_seq > $1 AND first_seq <= $3
                     ORDER BY last_seq LIMIT $4) x),
         w AS (
            SELECT b.*, b.lowest > $1 AND b.upto <= $2::int8 AND b.last_seq <= $3 AS whole
              FROM b)
         SELECT r.id, r.seq, r.at, r.op, r.tbl, r.pk, r.old, r.data, r.withheld,
                w.batch, w.first_seq, w.last_seq, w.whole, r.rn,
                CASE WHEN w.whole THEN w.changes::text END
           FROM w LEFT JOIN LATERAL (
                SELECT {COLUMNS}, row_number() OVER (ORDER BY c.id) AS rn
                  FROM rowcast.changes c
                 WHERE w.whole AND w.snap IS NOT NULL AND {}
                UNION ALL
                SELECT {COLUMNS}, NULL
                  FROM rowcast.changes c
                 WHERE w.whole AND w.snap IS NULL AND w.changes IS NULL
                   AND c.seq BETWEEN w.first_seq AND w.last_seq
           ) r ON true
          ORDER BY w.last_seq, r.rn, r.seq",
        membership("w.min_id", "w.max_id", "w.snap", "w.prev", true)
    )
});

/// The common case in one query: the batches after `after` when it is a batch boundary and
/// they fit in `limit`, with all their changes. `None` when that does not apply (`after` is
/// inside a batch, or the next batch is larger than `limit`): the caller reads by parts.
async fn read_whole_batches<C: GenericClient>(
    client: &C,
    after: Position,
    until: i64,
    limit: i64,
    prepared: Option<&Prepared>,
) -> Result<Option<Read>, tokio_postgres::Error> {
    let params: [(&(dyn ToSql + Sync), Type); 4] = [
        (&after.0, WHOLE_BATCHES_TYPES[0].clone()),
        (&limit, WHOLE_BATCHES_TYPES[1].clone()),
        (&until, WHOLE_BATCHES_TYPES[2].clone()),
        (&BATCHES_PER_READ, WHOLE_BATCHES_TYPES[3].clone()),
    ];
    let rows = match prepared {
        Some(p) => {
            client
                .query(&p.whole_batches, &params.map(|(v, _)| v))
                .await?
        }
        None => client.query_typed(&WHOLE_BATCHES, &params).await?,
    };
    if rows.is_empty() {
        return Ok(Some(Read::default()));
    }
    let mut read = Read::default();
    let mut batches = 0;
    let mut whole_batches = 0;
    let mut last_batch = None;
    for row in &rows {
        let batch: i64 = row.get(9);
        if last_batch != Some(batch) {
            last_batch = Some(batch);
            batches += 1;
            if row.get::<_, bool>(12) {
                whole_batches += 1;
                read.last = Some(Position(row.get(11)));
            }
        }
        if !row.get::<_, bool>(12) {
            continue;
        }
        if let Some(packed) = row.get::<_, Option<&str>>(14) {
            let (first, last) = (row.get(10), row.get(11));
            for item in unpacked(first, packed, first, last, usize::MAX) {
                read.rows += 1;
                read.changes.extend(item.change);
            }
            continue;
        }
        let Some(_) = row.get::<_, Option<i64>>(0) else {
            continue; // a batch whose changes were pruned meanwhile
        };
        let pos = match row.get::<_, Option<i64>>(13) {
            Some(rn) => Position(row.get::<_, i64>(10) + rn - 1),
            None => Position(row.get::<_, i64>(1)),
        };
        read.rows += 1;
        read.changes.extend(change(pos, row));
    }
    if whole_batches == 0 {
        return Ok(None);
    }
    read.more = whole_batches < batches || batches as i64 == BATCHES_PER_READ;
    Ok(Some(read))
}

/// A position of the log as a read found it.
struct Item {
    pos: Position,
    /// The change's row id (snapshot batches: where the next read may continue).
    id: Option<i64>,
    /// `None` when it is malformed (counted and logged already).
    change: Option<Change>,
}

/// The positions of one part, in `seq` order.
async fn read_part<C: GenericClient>(
    client: &C,
    part: &Part<'_>,
) -> Result<Vec<Item>, tokio_postgres::Error> {
    if part.batch.packed {
        let row = client
            .query_opt(
                "SELECT changes::text FROM rowcast.batches WHERE batch = $1",
                &[&part.batch.batch],
            )
            .await?;
        let Some(text) = row.as_ref().and_then(|r| r.get::<_, Option<&str>>(0)) else {
            return Ok(Vec::new()); // pruned meanwhile
        };
        let (from, to, limit) = (part.from, part.to, part.limit as usize);
        return Ok(unpacked(part.batch.first, text, from, to, limit));
    }
    let Some(s) = &part.batch.snapshot else {
        let rows = client
            .query_typed(
                &format!(
                    "SELECT {COLUMNS} FROM rowcast.changes c
                      WHERE c.seq >= $1 AND c.seq <= $2 ORDER BY c.seq LIMIT $3"
                ),
                &[
                    (&part.from, Type::INT8),
                    (&part.to, Type::INT8),
                    (&part.limit, Type::INT8),
                ],
            )
            .await?;
        return Ok(rows
            .iter()
            .map(|row| {
                let pos = Position(row.get(1));
                Item {
                    pos,
                    id: None,
                    change: change(pos, row),
                }
            })
            .collect());
    };
    let (after_id, skip) = match part.after_id {
        Some(id) => (id, 0),
        None => (s.min_id - 1, part.from - part.batch.first),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM rowcast.changes c
          WHERE {} AND c.id > $3
          ORDER BY c.id OFFSET $6 LIMIT $7",
        membership(
            "$1",
            "$2",
            "$4::text::pg_snapshot",
            "$5::text::pg_snapshot",
            s.prev.is_none()
        )
    );
    let rows = client
        .query_typed(
            &sql,
            &[
                (&s.min_id, Type::INT8),
                (&s.max_id, Type::INT8),
                (&after_id, Type::INT8),
                (&s.snap, Type::TEXT),
                (&s.prev, Type::TEXT),
                (&skip, Type::INT8),
                (&part.limit, Type::INT8),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .zip(part.from..)
        .map(|(row, seq)| Item {
            pos: Position(seq),
            id: Some(row.get(0)),
            change: change(Position(seq), row),
        })
        .collect())
}

/// The condition "change `c` belongs to the snapshot batch" whose id range is `min ..=
/// max`, snapshot `snap` and previous snapshot `prev` (SQL expressions; `prev` may be NULL,
/// for the first batch, when `prev_nullable`). The id and txid ranges only let the planner
/// use an index; the visibility tests decide.
pub(super) fn membership(
    min: &str,
    max: &str,
    snap: &str,
    prev: &str,
    prev_nullable: bool,
) -> String {
    let base = format!(
        "c.seq IS NULL AND c.id BETWEEN {min} AND {max}
            AND c.txid < pg_catalog.pg_snapshot_xmax({snap})
            AND pg_catalog.pg_visible_in_snapshot(c.txid, {snap})"
    );
    let newer = format!(
        "(c.txid >= pg_catalog.pg_snapshot_xmax({prev})
              OR c.txid = ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip({prev}))))
            AND NOT pg_catalog.pg_visible_in_snapshot(c.txid, {prev})"
    );
    if prev_nullable {
        format!("{base} AND ({prev} IS NULL OR ({newer}))")
    } else {
        format!("{base} AND {newer}")
    }
}

/// Counts and logs a change that cannot be read, which the read skips.
fn skip(pos: Position, table: Option<&str>, why: &str) -> Option<Change> {
    metrics::counter!("rowcast_changelog_malformed_total").increment(1);
    tracing::warn!(seq = %pos, table, "skipping a change-log row: {why}");
    None
}

/// The changes at `from ..= to`, at most `limit`, of a packed batch starting at `first`,
/// each with its position; `None` (counted and logged) for a malformed one. A value that
/// cannot be read at all is one malformed change at `from`.
fn unpacked(first: i64, text: &str, from: i64, to: i64, limit: usize) -> Vec<Item> {
    let item = |pos, change| Item {
        pos,
        id: None,
        change,
    };
    match super::packed::unpack(first, text) {
        Ok(changes) => changes
            .into_iter()
            .filter(|(pos, _)| pos.0 >= from && pos.0 <= to)
            .take(limit)
            .map(|(pos, c)| match c {
                Ok(c) => item(pos, Some(c)),
                Err((table, why)) => item(pos, skip(pos, table.as_deref(), &why)),
            })
            .collect(),
        Err(why) => vec![item(Position(from), skip(Position(from), None, &why))],
    }
}

/// A change-log row as a [`Change`]; `None` (counted and logged) when it is malformed.
fn change(pos: Position, row: &Row) -> Option<Change> {
    let code: i8 = row.get(3);
    let table: String = row.get(4);
    // The row as text: trigger mode's `data` (jsonb, printed as its binary form would be)
    // or logical mode's `data_json` (json: the text as written).
    let malformed = |why: String| skip(pos, Some(&table), &why);
    let data = match row.get::<_, Option<&str>>(7).map(serde_json::from_str) {
        None => None,
        Some(Ok(data)) => Some(data),
        Some(Err(e)) => return malformed(format!("its row is not JSON ({e})")),
    };
    let Some(op) = Op::from_code(code as u8) else {
        return malformed(format!("unknown op code {code}"));
    };
    Some(Change {
        pos,
        at: row.get(2),
        op,
        table,
        pk: row.get(5),
        old: row.get(6),
        data,
        withheld: row.get(8),
    })
}
