-- Logical capture writes each change's row as `json` (`data_json`), not `jsonb`: the
-- writer renders it already, and PostgreSQL then stores the text as it comes instead of
-- parsing it into jsonb's tree (and printing it back for every reader). Trigger mode keeps
-- `data` (jsonb: the trigger's `to_jsonb(NEW)` minus hidden columns). A change carries at
-- most one of the two.
ALTER TABLE rowcast.changes
    ADD COLUMN IF NOT EXISTS data_json json;  -- the row after the change (logical mode)

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
 WHERE b.snap IS NOT NULL;
