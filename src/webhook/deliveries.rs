//! SQL over `rowcast.webhook_deliveries` and `rowcast.webhook_attempts`: enqueue, claim
//! under a lease, record results in batches, list, replay, prune.

use serde::Serialize;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::attempts::{Attempt, AttemptOutcome};
use super::endpoints::rfc3339;

/// Where a delivery stands, as stored in `webhook_deliveries.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    Delivered,
    /// Every attempt of the schedule failed (or the receiver answered 410): a dead letter,
    /// kept until replayed.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A delivery to enqueue for one change and one endpoint.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub endpoint_id: Uuid,
    pub change_seq: i64,
    pub event_type: String,
    pub payload: String,
}

/// Inserts deliveries in one statement. A (change, endpoint) pair already present is left
/// alone (the unique constraint); returns how many rows were inserted.
pub async fn enqueue<C: GenericClient>(
    client: &C,
    new: &[NewDelivery],
) -> Result<u64, tokio_postgres::Error> {
    if new.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = new.iter().map(|_| Uuid::now_v7()).collect();
    let endpoints: Vec<Uuid> = new.iter().map(|d| d.endpoint_id).collect();
    let seqs: Vec<i64> = new.iter().map(|d| d.change_seq).collect();
    let types: Vec<&str> = new.iter().map(|d| d.event_type.as_str()).collect();
    let payloads: Vec<&str> = new.iter().map(|d| d.payload.as_str()).collect();
    client
        .execute(
            "INSERT INTO rowcast.webhook_deliveries
                (id, endpoint_id, change_seq, event_type, payload)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::text[])
             ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING",
            &[&ids, &endpoints, &seqs, &types, &payloads],
        )
        .await
}

/// Enqueues a delivery that belongs to no change (a test send); due now.
pub async fn enqueue_one<C: GenericClient>(
    client: &C,
    endpoint_id: Uuid,
    event_type: &str,
    payload: &str,
) -> Result<Uuid, tokio_postgres::Error> {
    let id = Uuid::now_v7();
    client
        .execute(
            "INSERT INTO rowcast.webhook_deliveries (id, endpoint_id, event_type, payload)
             VALUES ($1, $2, $3, $4)",
            &[&id, &endpoint_id, &event_type, &payload],
        )
        .await?;
    Ok(id)
}

/// A delivery claimed by a worker, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub payload: String,
    /// Attempts since (re)scheduling, before this one.
    pub tries: i32,
    pub url: String,
    pub secret: String,
    /// The previous secret while it is in its grace period.
    pub old_secret: Option<String>,
    pub lease: Uuid,
}

/// Key of the transaction advisory lock that serializes claims over the cluster, so the
/// per-endpoint bound counts every other replica's leases (next to `changelog`'s keys:
/// `0x726f_7763_6173_74xx` is "rowcast" and a number).
pub const CLAIM_LOCK: i64 = 0x726f_7763_6173_7403;

/// Claims up to `limit` due deliveries of enabled endpoints for `lease_secs`, fairly:
/// no endpoint gets more than `per_endpoint` deliveries leased at once, counting the
/// leases every worker of the cluster holds (claims are serialized by [`CLAIM_LOCK`], held
/// for one short transaction), and the claim takes endpoints round-robin (every endpoint's
/// oldest due delivery, then every endpoint's second, …), so an endpoint with a long
/// backlog or one that never answers cannot take the slots of the others. Every claim of
/// this call carries the same new lease id.
pub async fn claim(
    client: &mut tokio_postgres::Client,
    limit: i64,
    per_endpoint: i64,
    lease_secs: f64,
) -> Result<Vec<Claimed>, tokio_postgres::Error> {
    let lease = Uuid::new_v4();
    let tx = client.transaction().await?;
    // A statement of its own: the claim's snapshot must be taken after the lock, so it
    // sees the leases the previous holder committed.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK])
        .await?;
    let rows = tx
        .query(
            "WITH busy AS (
                SELECT endpoint_id, count(*) AS n FROM rowcast.webhook_deliveries
                 WHERE locked_until > now() AND status = 'pending'
                 GROUP BY endpoint_id),
             ready AS (
                SELECT c.id, c.rank, c.next_attempt_at
                  FROM rowcast.webhook_endpoints e
                  LEFT JOIN busy b ON b.endpoint_id = e.id
                  CROSS JOIN LATERAL (
                        SELECT d.id, d.next_attempt_at,
                               row_number() OVER (ORDER BY d.next_attempt_at, d.id) AS rank
                          FROM rowcast.webhook_deliveries d
                         WHERE d.endpoint_id = e.id AND d.status = 'pending'
                           AND d.next_attempt_at <= now()
                           AND (d.locked_until IS NULL OR d.locked_until <= now())
                         ORDER BY d.next_attempt_at, d.id
                         LIMIT greatest($4 - coalesce(b.n, 0), 0)) c
                 WHERE e.enabled),
             due AS (
                SELECT d.id FROM rowcast.webhook_deliveries d JOIN ready r ON r.id = d.id
                 ORDER BY r.rank, r.next_attempt_at, d.id LIMIT $1
                 FOR UPDATE OF d SKIP LOCKED),
             claimed AS (
                UPDATE rowcast.webhook_deliveries d
                   SET locked_until = now() + make_interval(secs => $2), lease = $3
                  FROM due WHERE d.id = due.id
                RETURNING d.id, d.endpoint_id, d.payload, d.tries)
             SELECT c.id, c.endpoint_id, c.payload, c.tries, e.url, e.secret,
                    CASE WHEN e.old_secret_expires_at > now() THEN e.old_secret END
               FROM claimed c JOIN rowcast.webhook_endpoints e ON e.id = c.endpoint_id",
            &[&limit, &lease_secs, &lease, &per_endpoint],
        )
        .await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            id: r.get(0),
            endpoint_id: r.get(1),
            payload: r.get(2),
            tries: r.get(3),
            url: r.get(4),
            secret: r.get(5),
            old_secret: r.get(6),
            lease,
        })
        .collect())
}

/// Gives claimed deliveries back without an attempt (shutdown, endpoint busy).
pub async fn release<C: GenericClient>(
    client: &C,
    claims: &[(Uuid, Uuid)],
) -> Result<(), tokio_postgres::Error> {
    if claims.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = claims.iter().map(|c| c.0).collect();
    let leases: Vec<Uuid> = claims.iter().map(|c| c.1).collect();
    client
        .execute(
            "UPDATE rowcast.webhook_deliveries d SET locked_until = NULL, lease = NULL
               FROM unnest($1::uuid[], $2::uuid[]) AS r(id, lease)
              WHERE d.id = r.id AND d.lease = r.lease",
            &[&ids, &leases],
        )
        .await?;
    Ok(())
}

/// The result of one attempt, as stored.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub delivery_id: Uuid,
    pub lease: Uuid,
    pub attempted_at: time::OffsetDateTime,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    pub response: Option<String>,
    /// Whether the address that answered is not globally reachable (see
    /// [`Attempt::private`]); `None` when nothing answered.
    pub private: Option<bool>,
    /// The delivery's status after this attempt.
    pub status: DeliveryStatus,
    pub tries: i32,
    /// Seconds until the next attempt (`retry` only).
    pub retry_in: Option<f64>,
}

/// Stores attempts and the deliveries' new states in one transaction's worth of two
/// statements. A delivery whose lease was taken over meanwhile keeps the newer claim's
/// state; its attempt is still logged.
pub async fn record<C: GenericClient>(
    client: &C,
    results: &[AttemptResult],
) -> Result<(), tokio_postgres::Error> {
    if results.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&AttemptResult) -> Option<String>| results.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = results.iter().map(|r| r.delivery_id).collect();
    let leases: Vec<Uuid> = results.iter().map(|r| r.lease).collect();
    let at: Vec<time::OffsetDateTime> = results.iter().map(|r| r.attempted_at).collect();
    let ms: Vec<i32> = results.iter().map(|r| r.duration_ms).collect();
    let codes: Vec<Option<i32>> = results.iter().map(|r| r.status_code).collect();
    let outcomes: Vec<&str> = results.iter().map(|r| r.outcome.as_str()).collect();
    let errors = col(|r| r.error.clone());
    let responses = col(|r| r.response.clone());
    let private: Vec<Option<bool>> = results.iter().map(|r| r.private).collect();
    let statuses: Vec<&str> = results.iter().map(|r| r.status.as_str()).collect();
    let tries: Vec<i32> = results.iter().map(|r| r.tries).collect();
    let retry_in: Vec<Option<f64>> = results.iter().map(|r| r.retry_in).collect();
    client
        .execute(
            "INSERT INTO rowcast.webhook_attempts
                (delivery_id, attempted_at, duration_ms, status_code, outcome, error, response,
                 private)
             SELECT u.* FROM unnest($1::uuid[], $2::timestamptz[], $3::int4[], $4::int4[],
                                    $5::text[], $6::text[], $7::text[], $8::bool[])
                          AS u(d, a, m, c, o, e, r, p)
              WHERE EXISTS (SELECT 1 FROM rowcast.webhook_deliveries x WHERE x.id = u.d)",
            &[
                &ids, &at, &ms, &codes, &outcomes, &errors, &responses, &private,
            ],
        )
        .await?;
    client
        .execute(
            "UPDATE rowcast.webhook_deliveries d SET
                status = r.status, tries = r.tries, attempts = d.attempts + 1,
                next_attempt_at = CASE WHEN r.retry_in IS NULL THEN d.next_attempt_at
                                       ELSE now() + make_interval(secs => r.retry_in) END,
                locked_until = NULL, lease = NULL,
                last_status_code = r.code, last_error = r.error, updated_at = now(),
                delivered_at = CASE WHEN r.status = 'delivered' THEN now() END
               FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::float8[],
                           $6::int4[], $7::text[]) AS r(id, lease, status, tries, retry_in, code, error)
              WHERE d.id = r.id AND d.lease = r.lease",
            &[&ids, &leases, &statuses, &tries, &retry_in, &codes, &errors],
        )
        .await?;
    Ok(())
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    /// `seq` of the change it carries (`null` for test sends).
    pub seq: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<Attempt>>,
}

impl Delivery {
    /// Blanks the response bodies a non-admin may not read (see [`Attempt::withhold`]).
    pub fn withhold_private_responses(&mut self) {
        for a in self.attempt_log.iter_mut().flatten() {
            a.withhold();
        }
    }
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, d.event_type, d.change_seq, \
     d.status, d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, \
     d.delivered_at";

fn delivery(r: &Row) -> Delivery {
    let seq: Option<i64> = r.get(3);
    let status: String = r.get(4);
    let status = DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending);
    Delivery {
        id: r.get(0),
        endpoint_id: r.get(1),
        event_type: r.get(2),
        seq: seq.map(|s| s.to_string()),
        next_attempt_at: (status == DeliveryStatus::Pending).then(|| rfc3339(r.get(6))),
        status,
        attempts: r.get(5),
        last_status_code: r.get(7),
        last_error: r.get(8),
        created_at: rfc3339(r.get(9)),
        delivered_at: r.get::<_, Option<time::OffsetDateTime>>(10).map(rfc3339),
        payload: None,
        attempt_log: None,
    }
}

/// Deliveries newest first, optionally of one status, endpoint, or user's endpoints only.
pub async fn list<C: GenericClient>(
    client: &C,
    owner: Option<&str>,
    status: Option<DeliveryStatus>,
    endpoint: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Delivery>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM rowcast.webhook_deliveries d
                   JOIN rowcast.webhook_endpoints e ON e.id = d.endpoint_id
                  WHERE ($1::text IS NULL OR e.user_id = $1)
                    AND ($2::text IS NULL OR d.status = $2)
                    AND ($3::uuid IS NULL OR d.endpoint_id = $3)
                  ORDER BY d.id DESC LIMIT $4"
            ),
            &[
                &owner,
                &status.map(DeliveryStatus::as_str),
                &endpoint,
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(delivery).collect())
}

/// One delivery with its payload and attempts, if visible to `owner` (`None`: admin).
/// One statement reads both, so the attempt log and the delivery's counters come from
/// the same snapshot even while a worker is recording an attempt.
pub async fn get<C: GenericClient>(
    client: &C,
    id: Uuid,
    owner: Option<&str>,
) -> Result<Option<Delivery>, tokio_postgres::Error> {
    let Some(row) = client
        .query_opt(
            &format!(
                "SELECT {DELIVERY_COLUMNS}, d.payload,
                        a.attempted_at, a.duration_ms, a.status_code, a.outcome, a.error, a.response,
                        a.private
                   FROM rowcast.webhook_deliveries d
                   JOIN rowcast.webhook_endpoints e ON e.id = d.endpoint_id
                   CROSS JOIN LATERAL (
                        SELECT array_agg(attempted_at ORDER BY id) AS attempted_at,
                               array_agg(duration_ms ORDER BY id) AS duration_ms,
                               array_agg(status_code ORDER BY id) AS status_code,
                               array_agg(outcome ORDER BY id) AS outcome,
                               array_agg(error ORDER BY id) AS error,
                               array_agg(response ORDER BY id) AS response,
                               array_agg(private ORDER BY id) AS private
                          FROM rowcast.webhook_attempts WHERE delivery_id = d.id) a
                  WHERE d.id = $1 AND ($2::text IS NULL OR e.user_id = $2)"
            ),
            &[&id, &owner],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut d = delivery(&row);
    let payload: String = row.get(11);
    d.payload = serde_json::from_str(&payload).ok();
    // `array_agg` over no rows is NULL: no attempts yet.
    let at: Vec<time::OffsetDateTime> = row.get::<_, Option<_>>(12).unwrap_or_default();
    let ms: Vec<i32> = row.get::<_, Option<_>>(13).unwrap_or_default();
    let codes: Vec<Option<i32>> = row.get::<_, Option<_>>(14).unwrap_or_default();
    let outcomes: Vec<String> = row.get::<_, Option<_>>(15).unwrap_or_default();
    let errors: Vec<Option<String>> = row.get::<_, Option<_>>(16).unwrap_or_default();
    let responses: Vec<Option<String>> = row.get::<_, Option<_>>(17).unwrap_or_default();
    let private: Vec<Option<bool>> = row.get::<_, Option<_>>(18).unwrap_or_default();
    d.attempt_log = Some(
        at.into_iter()
            .zip(ms)
            .zip(codes)
            .zip(outcomes)
            .zip(errors)
            .zip(responses)
            .zip(private)
            .map(
                |((((((at, ms), code), outcome), error), response), private)| Attempt {
                    attempted_at: rfc3339(at),
                    duration_ms: ms,
                    status_code: code,
                    outcome: AttemptOutcome::parse(&outcome),
                    error,
                    response,
                    response_withheld: None,
                    private,
                },
            )
            .collect(),
    );
    Ok(Some(d))
}

/// Schedules a delivery again now with a fresh retry schedule (a replay); a delivered or
/// failed one goes back to `pending`. A delivery in flight is left to its worker.
/// Returns `None` when not found (or not `owner`'s), `Some(false)` when in flight.
pub async fn retry<C: GenericClient>(
    client: &C,
    id: Uuid,
    owner: Option<&str>,
) -> Result<Option<bool>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "WITH target AS (
                SELECT d.id, d.locked_until > now() AS busy FROM rowcast.webhook_deliveries d
                  JOIN rowcast.webhook_endpoints e ON e.id = d.endpoint_id
                 WHERE d.id = $1 AND ($2::text IS NULL OR e.user_id = $2)),
             done AS (
                UPDATE rowcast.webhook_deliveries d
                   SET status = 'pending', tries = 0, next_attempt_at = now(), updated_at = now(),
                       delivered_at = NULL
                  FROM target t WHERE d.id = t.id AND NOT COALESCE(t.busy, false)
                RETURNING d.id)
             SELECT (SELECT count(*) FROM done) > 0 FROM target",
            &[&id, &owner],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Deletes up to `batch` delivered deliveries older than `age_secs` (their attempts go
/// with them). Returns how many.
pub async fn prune<C: GenericClient>(
    client: &C,
    age_secs: f64,
    batch: i64,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM rowcast.webhook_deliveries WHERE id IN (
                SELECT id FROM rowcast.webhook_deliveries
                 WHERE status = 'delivered' AND delivered_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            &[&age_secs, &batch],
        )
        .await
}

/// Deliveries by status, for the depth gauge.
pub async fn depth<C: GenericClient>(
    client: &C,
) -> Result<Vec<(DeliveryStatus, i64)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT status, count(*) FROM rowcast.webhook_deliveries GROUP BY status",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((DeliveryStatus::parse(r.get(0))?, r.get(1))))
        .collect())
}
