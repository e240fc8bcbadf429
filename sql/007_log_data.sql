-- The log carries each change's data, written once, and trigger-mode changes are sequenced
-- in batches delimited by transaction snapshots instead of being rewritten with a `seq`.
--
-- Trigger mode: the capture trigger writes the row (`data`, hidden columns removed) and its
-- transaction (`txid`); `seq` stays NULL. The sequencer's `rowcast.tick()` takes a snapshot
-- and records one `rowcast.batches` row for every change committed since the previous
-- batch's snapshot: the changes whose transaction is visible in `snap` and not in `prev`,
-- numbered `first_seq ..= last_seq` in `id` order. Every change belongs to exactly one
-- batch whatever order transactions commit in, every reader derives the same numbering from
-- the batch row, and nothing is written per change after the application's insert.
--
-- Logical mode: the writer appends changes with `seq` already set and records the range of
-- each write as a batch without snapshots.

ALTER TABLE rowcast.changes
    ADD COLUMN IF NOT EXISTS data     jsonb,  -- the row after the change (inserts, updates)
    ADD COLUMN IF NOT EXISTS txid     xid8,   -- the writing transaction (trigger mode)
    ADD COLUMN IF NOT EXISTS withheld text;   -- why the change carries no row (see below)
ALTER TABLE rowcast.changes ALTER COLUMN txid SET DEFAULT pg_catalog.pg_current_xact_id();
CREATE INDEX IF NOT EXISTS changes_txid ON rowcast.changes (txid) WHERE seq IS NULL;

CREATE TABLE IF NOT EXISTS rowcast.batches (
    batch     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_seq bigint      NOT NULL,
    last_seq  bigint      NOT NULL,
    snap      pg_snapshot,            -- NULL: the changes carry their seq (logical mode)
    prev      pg_snapshot,            -- the previous batch's snap (NULL for the first)
    min_id    bigint,                 -- id range of the batch's changes (an index hint)
    max_id    bigint,
    at        timestamptz NOT NULL    -- the oldest change's `at`
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_last_seq ON rowcast.batches (last_seq);

-- Changes stamped by the sequencer of earlier versions are one batch with their seqs;
-- migrations run under a lock that waits for every open writer of rowcast.changes (ALTER
-- TABLE above), so no unstamped change of an earlier version is still being written.
UPDATE rowcast.changes c SET seq = s.seq
  FROM (SELECT id, pg_catalog.nextval('rowcast.change_seq') AS seq
          FROM (SELECT id FROM rowcast.changes WHERE seq IS NULL ORDER BY id) o) s
 WHERE c.id = s.id;
INSERT INTO rowcast.batches (first_seq, last_seq, at)
SELECT min(seq), max(seq), min(at) FROM rowcast.changes HAVING count(*) > 0;

-- Earlier versions' sequencers stamp `seq` on unsequenced changes: refuse that, so an old
-- replica still running during an upgrade cannot number a change twice.
CREATE OR REPLACE FUNCTION rowcast.refuse_restamping() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'rowcast.changes rows are sequenced in batches since migration 007: stop rowcast replicas older than this schema';
END $$;
DROP TRIGGER IF EXISTS refuse_restamping ON rowcast.changes;
CREATE TRIGGER refuse_restamping BEFORE UPDATE OF seq ON rowcast.changes
  FOR EACH ROW WHEN (OLD.seq IS NULL AND NEW.seq IS NOT NULL)
  EXECUTE FUNCTION rowcast.refuse_restamping();

-- One sequencer tick (trigger mode; only the holder of the sequencer lock calls it): the
-- changes committed since the previous batch become the next batch, announced on
-- rowcast_sequenced. Returns the batch, or nothing when there were none.
CREATE OR REPLACE FUNCTION rowcast.tick(
    OUT batch bigint, OUT first_seq bigint, OUT last_seq bigint, OUT n bigint)
RETURNS SETOF record LANGUAGE plpgsql AS $$
DECLARE
  cur  pg_snapshot := pg_catalog.pg_current_snapshot();
  prev pg_snapshot;
  lo bigint; hi bigint; oldest timestamptz;
BEGIN
  SELECT b.snap INTO prev FROM rowcast.batches b
   WHERE b.snap IS NOT NULL ORDER BY b.batch DESC LIMIT 1;
  IF prev IS NULL THEN
    SELECT count(*), min(c.id), max(c.id), min(c.at) INTO n, lo, hi, oldest
      FROM rowcast.changes c
     WHERE c.seq IS NULL AND c.txid < pg_catalog.pg_snapshot_xmax(cur)
       AND pg_catalog.pg_visible_in_snapshot(c.txid, cur);
  ELSE
    SELECT count(*), min(c.id), max(c.id), min(c.at) INTO n, lo, hi, oldest
      FROM rowcast.changes c
     -- Every transaction below xmin(prev) had ended when prev was taken: visible in prev
     -- if it committed. So the new ones lie in [xmin(prev), xmax(cur)): an index range,
     -- however long the log.
     WHERE c.seq IS NULL
       AND c.txid >= pg_catalog.pg_snapshot_xmin(prev)
       AND c.txid < pg_catalog.pg_snapshot_xmax(cur)
       AND pg_catalog.pg_visible_in_snapshot(c.txid, cur)
       AND NOT pg_catalog.pg_visible_in_snapshot(c.txid, prev);
  END IF;
  IF n = 0 THEN
    RETURN;
  END IF;
  last_seq := pg_catalog.setval('rowcast.change_seq',
                                pg_catalog.nextval('rowcast.change_seq') + n - 1);
  first_seq := last_seq - n + 1;
  INSERT INTO rowcast.batches AS b (first_seq, last_seq, snap, prev, min_id, max_id, at)
  VALUES (first_seq, last_seq, cur, prev, lo, hi, oldest)
  RETURNING b.batch INTO batch;
  PERFORM pg_catalog.pg_notify('rowcast_sequenced', last_seq::text);
  RETURN NEXT;
END $$;

-- What `rowcast migrate` installed on each captured table: its columns, visible and
-- hidden. A table whose live columns no longer match (a hidden column renamed or dropped,
-- a column added) is withheld until `rowcast migrate` runs again: the capture trigger
-- checks every row against the shape written into it and records a change without its
-- row (`withheld`), and rowcast compares the live tables with this list.
CREATE TABLE IF NOT EXISTS rowcast.tables (
    tbl          text        PRIMARY KEY,
    visible      text[]      NOT NULL,
    hidden       text[]      NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- The log as readers number it, for operators and tests: every change with its seq. It
-- numbers whole batches, so select a range (`WHERE seq > …`) on a large log.
CREATE OR REPLACE VIEW rowcast.log AS
SELECT c.seq, c.id, c.at, c.op, c.tbl, c.pk, c.old, c.data, c.withheld
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
