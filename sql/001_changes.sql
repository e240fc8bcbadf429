-- rowcast's own schema: the durable change log, cursors and capture wake-up state.
-- Applied by `rowcast migrate` inside one transaction under an advisory lock.

CREATE SCHEMA IF NOT EXISTS rowcast;

-- One row per captured row change, written by the capture triggers in the application's
-- own transaction (`id` is handed out at insert time, so it is NOT commit order).
-- `seq` is stamped later by the sequencer (one rowcast replica at a time, elected with an
-- advisory lock) in serialized transactions, only on committed rows: every reader that
-- tails `seq > cursor` therefore sees a gap-free, identical order on every replica, and a
-- long-running transaction delays only its own changes.
CREATE SEQUENCE IF NOT EXISTS rowcast.change_seq;
CREATE TABLE IF NOT EXISTS rowcast.changes (
    id   bigserial   NOT NULL,
    seq  bigint,                          -- NULL until sequenced
    at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    op   "char"      NOT NULL,            -- 'i' insert, 'u' update, 'd' delete
    tbl  text        NOT NULL,            -- schema-qualified table name
    pk   jsonb       NOT NULL,            -- key values, as a JSON array
    old  jsonb                            -- the old row (deletes only), hidden columns removed
);
CREATE UNIQUE INDEX IF NOT EXISTS changes_seq ON rowcast.changes (seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS changes_unsequenced ON rowcast.changes (id) WHERE seq IS NULL;
ALTER TABLE rowcast.changes SET (autovacuum_vacuum_scale_factor = 0.05);

-- Durable positions: 'outbox' (webhook enqueue cursor, advanced in the same transaction
-- that writes deliveries) and 'pruned' (changes up to here were removed by retention).
CREATE TABLE IF NOT EXISTS rowcast.cursors (
    name       text        PRIMARY KEY,
    seq        bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Until when (unix seconds) the sequencer is parked and wants a NOTIFY for each change.
-- A sequence, not a table: triggers read it with pg_sequence_last_value(), a plain function
-- call (no query), and sequences are not transactional, so every writer — READ COMMITTED
-- or REPEATABLE READ — sees a change of it at once. A parked sequencer that dies stops
-- the NOTIFYs when its time runs out.
CREATE SEQUENCE IF NOT EXISTS rowcast.parked_until MINVALUE 0 START 0;
