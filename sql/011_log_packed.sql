-- Logical capture writes each batch as one row: `rowcast.batches.changes` holds the
-- batch's changes as a JSON array, in `seq` order from `first_seq`, and nothing is written
-- to `rowcast.changes` for them. One heap tuple, two index entries and one compressed
-- value per batch instead of a tuple and an index entry per change: a fraction of the
-- database time and of the WAL (which the WAL sender reads back and decodes too).
--
-- Each element is an object: `at` (commit time, RFC 3339), `op` ('i', 'u', 'd'), `tbl`,
-- `pk` (key values as an array) and, when present, `old`, `data` and `withheld`, as the
-- columns of `rowcast.changes` of the same names. Large transactions written in chunks
-- (`capture.batch_size`) still write a row per change with its `seq`, as before.
ALTER TABLE rowcast.batches ADD COLUMN IF NOT EXISTS changes json;

-- lz4 where the server has it: faster than pglz at about the same ratio on JSON rows.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_settings
              WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
    ALTER TABLE rowcast.batches ALTER COLUMN changes SET COMPRESSION lz4;
  END IF;
END $$;

CREATE OR REPLACE VIEW rowcast.log AS
SELECT c.seq, c.id, c.at, c.op, c.tbl, c.pk, c.old,
       coalesce(c.data, c.data_json::jsonb) AS data, c.withheld
  FROM rowcast.changes c
 WHERE c.seq IS NOT NULL
UNION ALL
SELECT b.first_seq + pg_catalog.row_number() OVER (PARTITION BY b.batch ORDER BY c.id) - 1,
       c.id, c.at, c.op, c.tbl, c.pk, c.old, c.data, c.withheld
  FROM rowcast.batches b
  JOIN rowcast.changes c
    ON c.seq IS NULL AND c.id BETWEEN b.min_id AND b.max_id
   AND pg_catalog.pg_visible_in_snapshot(c.txid, b.snap)
   AND (b.prev IS NULL OR NOT pg_catalog.pg_visible_in_snapshot(c.txid, b.prev))
 WHERE b.snap IS NOT NULL
UNION ALL
SELECT b.first_seq + e.ord - 1, NULL::bigint, (e.c ->> 'at')::timestamptz,
       (e.c ->> 'op')::"char", e.c ->> 'tbl', (e.c -> 'pk')::jsonb, (e.c -> 'old')::jsonb,
       (e.c -> 'data')::jsonb, e.c ->> 'withheld'
  FROM rowcast.batches b,
       LATERAL pg_catalog.json_array_elements(b.changes) WITH ORDINALITY AS e(c, ord)
 WHERE b.changes IS NOT NULL;
