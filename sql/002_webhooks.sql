-- Webhook endpoints, the outbox of deliveries and the attempt log.
-- Applied by `rowcast migrate` inside one transaction under an advisory lock.

-- Where webhooks go. A user's own endpoint (`user_id` set, at most one per user) receives
-- that user's notifications; admin endpoints (`user_id` NULL) receive the event types
-- their filters name (`ticket.*`, `notification.created`, `*`).
CREATE TABLE IF NOT EXISTS rowcast.webhook_endpoints (
    id                    uuid        PRIMARY KEY,
    user_id               text        UNIQUE,
    url                   text        NOT NULL,
    event_types           text[]      NOT NULL,
    description           text        NOT NULL DEFAULT '',
    enabled               boolean     NOT NULL DEFAULT true,
    disabled_reason       text,
    secret                text        NOT NULL,
    -- The secret replaced by the last rotation keeps signing (as a second signature)
    -- until `old_secret_expires_at`.
    old_secret            text,
    old_secret_expires_at timestamptz,
    created_by            text        NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at            timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- The outbox: one row per (change, endpoint), written in the same transaction that
-- advances the 'outbox' cursor. Test sends have no change (change_seq NULL).
CREATE TABLE IF NOT EXISTS rowcast.webhook_deliveries (
    id               uuid        PRIMARY KEY,
    endpoint_id      uuid        NOT NULL REFERENCES rowcast.webhook_endpoints (id) ON DELETE CASCADE,
    change_seq       bigint,
    event_type       text        NOT NULL,
    -- The exact bytes that are signed and sent, identical on every attempt.
    payload          text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Attempts since the delivery was (re)scheduled; selects the next retry delay.
    tries            int         NOT NULL DEFAULT 0,
    -- Attempts in total, replays included.
    attempts         int         NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- A worker holds the delivery until `locked_until`; `lease` identifies its claim so a
    -- worker whose lease ran out cannot overwrite a newer claim's result.
    locked_until     timestamptz,
    lease            uuid,
    last_status_code int,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    delivered_at     timestamptz,
    -- Exactly once per (change, endpoint), even if the enqueue logic were ever wrong.
    CONSTRAINT webhook_deliveries_once UNIQUE (change_seq, endpoint_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON rowcast.webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint
    ON rowcast.webhook_deliveries (endpoint_id, created_at DESC);
CREATE INDEX IF NOT EXISTS webhook_deliveries_delivered
    ON rowcast.webhook_deliveries (delivered_at) WHERE status = 'delivered';

-- Every attempt: when, how long, what came back (the first 4 KiB of the body).
CREATE TABLE IF NOT EXISTS rowcast.webhook_attempts (
    id           bigserial   PRIMARY KEY,
    delivery_id  uuid        NOT NULL REFERENCES rowcast.webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL,
    duration_ms  int         NOT NULL,
    status_code  int,
    outcome      text        NOT NULL,
    error        text,
    response     text
);
CREATE INDEX IF NOT EXISTS webhook_attempts_delivery ON rowcast.webhook_attempts (delivery_id, id);
