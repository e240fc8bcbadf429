-- Logical capture (`capture.mode = "logical"`): how far each replication slot's changes
-- have been appended to rowcast.changes. Moved in the same transaction as the append, so
-- a transaction the slot sends again after a crash is recognised and skipped.
CREATE TABLE IF NOT EXISTS rowcast.slot_positions (
    slot       text        PRIMARY KEY,
    lsn        pg_lsn      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
