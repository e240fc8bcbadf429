-- The roles of the user who set a user's own endpoint (PUT /api/webhook), from their token:
-- a notification's related row goes to that endpoint only if those roles (or the user's
-- own id) may see it, as on the live transports.
ALTER TABLE rowcast.webhook_endpoints ADD COLUMN IF NOT EXISTS roles text[] NOT NULL DEFAULT '{}';
