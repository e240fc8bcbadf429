-- Logical capture: the writer moves its slot's stored position in the same pipeline as the
-- append and the COMMIT (one round trip per batch) instead of reading it under a lock
-- first. It states where the position must still be: a position anyone else moved aborts
-- the transaction (serialization_failure) instead of committing a batch the log may hold
-- already, and the writer starts again from the stored position.
CREATE OR REPLACE FUNCTION rowcast.advance_slot_position(
    p_slot text, p_expected bigint, p_lsn bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE rowcast.slot_positions
     SET lsn = '0/0'::pg_lsn + p_lsn::numeric, updated_at = pg_catalog.now()
   WHERE slot = p_slot AND lsn = '0/0'::pg_lsn + p_expected::numeric;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'the stored position of replication slot % is no longer %: another writer moved it', p_slot, '0/0'::pg_lsn + p_expected::numeric
      USING ERRCODE = 'serialization_failure';
  END IF;
END $$;
