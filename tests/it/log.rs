//! The change log's reads over every kind of batch, straight through `rowcast::changelog`
//! on a real PostgreSQL: packed batches (logical mode), a `seq` range of rows (a large
//! transaction's chunks) side by side, read whole, in small pages from anywhere inside a
//! batch, through the `rowcast.log` view, with a malformed batch skipped, and pruned.

use rowcast::changelog::{self, NewChange, Prepared};
use rowcast::event::{Op, Position};
use serde_json::json;

use crate::support::Db;

fn change(i: i64, op: Op) -> NewChange {
    NewChange {
        at: time::OffsetDateTime::now_utc(),
        op,
        table: "public.tickets".into(),
        pk: json!([i]),
        old: (op == Op::Delete).then(|| json!({"id": i, "subject": format!("was {i}")})),
        data: (op != Op::Delete)
            .then(|| json!({"id": i, "subject": format!("ticket \"{i}\""), "n": 1.25})),
        withheld: None,
    }
}

/// Reads everything after `after` in pages of `limit`, following each read's position and
/// mark; returns (position, pk) of every change.
async fn read_all(pg: &tokio_postgres::Client, after: i64, limit: i64) -> Vec<(i64, i64)> {
    let (mut after, mut mark, mut got) = (Position(after), None, Vec::new());
    for _ in 0..1000 {
        let read = changelog::read(pg, after, None, mark, limit, None)
            .await
            .unwrap();
        assert!(
            read.changes.len() as i64 <= limit,
            "a page holds at most {limit}"
        );
        got.extend(
            read.changes
                .iter()
                .map(|c| (c.pos.0, c.pk[0].as_i64().unwrap())),
        );
        let Some(last) = read.last else {
            return got;
        };
        (after, mark) = (last, read.mark);
    }
    panic!("the reads did not reach the end of the log");
}

#[tokio::test]
async fn packed_batches_read_whole_in_pages_and_through_the_view_and_are_pruned() {
    let db = Db::start().await;
    db.migrate(&db.config()).await;
    let pg = db.client().await;
    let prepared = Prepared::new(&pg).await.unwrap();

    // Packed batches of 5, 1 and 7 changes, a batch of rows (a chunk), another packed one.
    let mut want = Vec::new();
    let mut pk = 0;
    for (size, packed) in [(5, true), (1, true), (7, true), (3, false), (4, true)] {
        let rows: Vec<NewChange> = (0..size)
            .map(|i| {
                pk += 1;
                change(pk, [Op::Insert, Op::Update, Op::Delete][i % 3])
            })
            .collect();
        let seqs = match packed {
            true => changelog::append(&pg, &rows, &prepared).await.unwrap(),
            false => changelog::append_rows(&pg, &rows, &prepared).await.unwrap(),
        };
        assert_eq!(seqs.len(), size);
        want.extend(
            seqs.into_iter()
                .zip(rows.iter().map(|r| r.pk[0].as_i64().unwrap())),
        );
    }
    assert_eq!(want.len(), 20);
    let positions: Vec<i64> = want.iter().map(|w| w.0).collect();
    assert_eq!(
        positions,
        (positions[0]..positions[0] + 20).collect::<Vec<_>>(),
        "gap-free"
    );
    let base = positions[0] - 1;
    assert_eq!(
        db.count("SELECT count(*) FROM rowcast.changes").await,
        3,
        "only the chunk is a row each"
    );
    assert_eq!(db.count("SELECT count(*) FROM rowcast.batches").await, 5);

    // Whole, in pages of every size, and from every position (inside batches too).
    assert_eq!(read_all(&pg, base, 100).await, want);
    for limit in [1, 2, 3, 6] {
        assert_eq!(read_all(&pg, base, limit).await, want, "pages of {limit}");
    }
    for (i, (pos, _)) in want.iter().enumerate() {
        assert_eq!(read_all(&pg, *pos, 4).await, want[i + 1..], "after {pos}");
    }

    // Every column comes back as written, and the view shows the same.
    let read = changelog::read(&pg, Position(base), None, None, 100, None)
        .await
        .unwrap();
    let first = &read.changes[0];
    assert_eq!(
        (first.op, first.table.as_str()),
        (Op::Insert, "public.tickets")
    );
    assert_eq!(
        first.data,
        Some(json!({"id": 1, "subject": "ticket \"1\"", "n": 1.25}))
    );
    let delete = &read.changes[2];
    assert_eq!((delete.op, delete.data.clone()), (Op::Delete, None));
    assert_eq!(delete.old, Some(json!({"id": 3, "subject": "was 3"})));
    let view = pg
        .query(
            "SELECT seq, op::text, pk, data, old, at FROM rowcast.log ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(view.len(), 20);
    for (v, c) in view.iter().zip(&read.changes) {
        assert_eq!(v.get::<_, i64>(0), c.pos.0);
        assert_eq!(v.get::<_, String>(1), (c.op.code() as char).to_string());
        assert_eq!(v.get::<_, serde_json::Value>(2), c.pk);
        assert_eq!(v.get::<_, Option<serde_json::Value>>(3), c.data);
        assert_eq!(v.get::<_, Option<serde_json::Value>>(4), c.old);
        let at: time::OffsetDateTime = v.get(5);
        assert_eq!(
            at, c.at,
            "the view's time is the change's, to the microsecond"
        );
    }

    // A packed batch that is not a JSON array of changes is skipped, counted, and the read
    // goes on past it.
    pg.batch_execute(&format!(
        "SELECT setval('rowcast.change_seq', {b} + 22);
         INSERT INTO rowcast.batches (first_seq, last_seq, at, changes)
         VALUES ({b} + 21, {b} + 22, now(), '[{{\"op\": \"u\"}}, 1]');",
        b = base
    ))
    .await
    .unwrap();
    let after = changelog::append(&pg, &[change(99, Op::Update)], &prepared)
        .await
        .unwrap();
    assert_eq!(after, [base + 23]);
    assert_eq!(read_all(&pg, base + 20, 100).await, [(base + 23, 99)]);
    assert_eq!(read_all(&pg, base + 20, 1).await, [(base + 23, 99)]);

    // Retention deletes packed batches whole and counts their changes.
    let pruned = changelog::prune(&pg, 0.0, None, 1000).await.unwrap();
    assert_eq!(pruned, 20 + 2 + 1);
    assert_eq!(db.count("SELECT count(*) FROM rowcast.batches").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM rowcast.changes").await, 0);
    let cursor = db
        .count("SELECT seq FROM rowcast.cursors WHERE name = 'pruned'")
        .await;
    assert_eq!(cursor, base + 23);
}
