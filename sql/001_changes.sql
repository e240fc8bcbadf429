-- rowcast's own schema: the durable change log, cursors and capture wake-up state.
-- Applied by `rowcast migrate` inside one transaction under an advisory lock.

CREATE SCHEMA IF NOT EXISTS rowcast;

-- One row per captured row change, written by the capture triggers in the application's
-- own transaction. Its position is (xid, id): `xid` is the top-level transaction id, so a
-- reader that only consumes transactions older than the snapshot horizon
-- (pg_snapshot_xmin(pg_current_snapshot())) never skips a change committed out of id order.
CREATE TABLE IF NOT EXISTS rowcast.changes (
    xid  bigint      NOT NULL DEFAULT (pg_catalog.pg_current_xact_id()::text::bigint),
    id   bigserial   NOT NULL,
    at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    op   "char"      NOT NULL,            -- 'i' insert, 'u' update, 'd' delete
    tbl  text        NOT NULL,            -- schema-qualified table name
    pk   jsonb       NOT NULL,            -- key values, as a JSON array
    old  jsonb                            -- the old row (deletes only), hidden columns removed
);
CREATE INDEX IF NOT EXISTS changes_position ON rowcast.changes (xid, id);
ALTER TABLE rowcast.changes SET (autovacuum_vacuum_scale_factor = 0.05);

-- Durable positions: 'outbox' (webhook enqueue cursor, advanced in the same transaction
-- that writes deliveries) and 'pruned' (changes up to here were removed by retention).
CREATE TABLE IF NOT EXISTS rowcast.cursors (
    name       text        PRIMARY KEY,
    xid        bigint      NOT NULL,
    id         bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Consumers that are parked and want a NOTIFY when a change is written. Unlogged: it is
-- lost in a crash, which only means nobody is waiting (consumers re-register).
CREATE UNLOGGED TABLE IF NOT EXISTS rowcast.waiters (
    consumer   uuid        PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
