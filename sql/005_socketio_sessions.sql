-- Socket.IO connection-state recovery: each socket's `pid` (sent in its CONNECT answer),
-- whose session it is and the rooms it is in, so that a socket.io-client that reconnects
-- with `{ pid, offset }` — to this replica or another, before or after a restart — gets
-- its rooms back and what it missed after `offset` from the change log. `position` is the
-- hub position of the last join: where a client that never received an event resumes.
-- Rows older than `retention.changes` are pruned (the change log is gone by then anyway).
CREATE TABLE IF NOT EXISTS rowcast.socketio_sessions (
    pid        uuid        PRIMARY KEY,
    sub        text        NOT NULL,
    rooms      text[]      NOT NULL,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX IF NOT EXISTS socketio_sessions_updated ON rowcast.socketio_sessions (updated_at);
