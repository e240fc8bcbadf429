-- Attempt-log privacy, and the indexes of the fair claim.
--
-- `private`: whether the address the attempt connected to is one the SSRF guard refuses
-- unless the operator allows it (`webhook.allow_cidrs`): true for a receiver reached only
-- through the allow-list (or whose address is unknown), false for a public one, NULL when
-- no HTTP response came back or the attempt was recorded before this migration. The API
-- shows the response body of an attempt whose `private` is not false to admins only, so a
-- user cannot read internal services through their own webhook's attempt log.
ALTER TABLE rowcast.webhook_attempts ADD COLUMN IF NOT EXISTS private boolean;

-- The claim takes each endpoint's oldest due deliveries (round-robin over endpoints) and
-- counts each endpoint's live leases (the per-endpoint bound): one index for each, the
-- second small (only deliveries claimed and not yet recorded carry `locked_until`).
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint_due
    ON rowcast.webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_leased
    ON rowcast.webhook_deliveries (endpoint_id, locked_until) WHERE locked_until IS NOT NULL;
