//! SQL over `rowcast.webhook_endpoints`: users' own endpoints, admin endpoints with event
//! filters, secrets and their rotation. The only module that writes that table.

use serde::Serialize;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use serde_json::value::RawValue;

use super::sign;
use crate::event::{Event, User};

/// Filter given to a user's own endpoint: their notifications.
pub const USER_EVENT_TYPES: &[&str] = &["notification.created"];

/// An endpoint as the API shows it. `secret` only where the caller may see it.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub id: Uuid,
    /// Set for a user's own endpoint (`PUT /api/webhook`); `null` for admin endpoints.
    pub user_id: Option<String>,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// End of the grace period of the previous secret, while it still signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "id, user_id, url, event_types, description, enabled, disabled_reason, \
     secret, CASE WHEN old_secret_expires_at > now() THEN old_secret_expires_at END, created_at, updated_at";

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn endpoint(row: &Row) -> Endpoint {
    Endpoint {
        id: row.get(0),
        user_id: row.get(1),
        url: row.get(2),
        event_types: row.get(3),
        description: row.get(4),
        enabled: row.get(5),
        disabled_reason: row.get(6),
        secret: Some(row.get(7)),
        previous_secret_expires_at: row.get::<_, Option<time::OffsetDateTime>>(8).map(rfc3339),
        created_at: rfc3339(row.get(9)),
        updated_at: rfc3339(row.get(10)),
    }
}

/// Whether an event type matches a filter: exact, `*`, or a prefix pattern `ticket.*`.
pub fn matches(filter: &str, event_type: &str) -> bool {
    filter == "*"
        || filter == event_type
        || filter.strip_suffix(".*").is_some_and(|p| {
            event_type
                .strip_prefix(p)
                .is_some_and(|r| r.starts_with('.'))
        })
}

/// Checks filters given by an admin: non-empty, each `*`, `<name>.*` or `<name>.<op>`.
pub fn validate_filters(filters: &[String]) -> Result<(), String> {
    if filters.is_empty() {
        return Err("event_types is empty: give e.g. [\"ticket.*\"] or [\"*\"]".into());
    }
    for f in filters {
        let ok = f == "*"
            || f.split_once('.').is_some_and(|(a, b)| {
                let word = |s: &str| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                };
                word(a) && (b == "*" || word(b))
            });
        if !ok {
            return Err(format!(
                "{f:?} is not an event filter: use \"*\", \"ticket.*\" or \"ticket.updated\""
            ));
        }
    }
    Ok(())
}

/// What the outbox writer needs to route an event to an endpoint.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: Uuid,
    /// A user's own endpoint: that user, with the roles their token had when they set it.
    pub user: Option<User>,
    pub event_types: Vec<String>,
}

impl Route {
    /// A user's endpoint takes that user's events of its types; an admin endpoint takes
    /// every event its filters match.
    pub fn wants(&self, event_type: &str, recipient: Option<&str>) -> bool {
        let typed = self.event_types.iter().any(|f| matches(f, event_type));
        match &self.user {
            Some(user) => typed && recipient == Some(user.sub.as_str()),
            None => typed,
        }
    }

    /// The payload this endpoint receives, if any: a user's endpoint gets what that user
    /// would get on the live transports (a notification's related row only if they may see
    /// it); admin endpoints get events whole.
    pub fn payload<'e>(&self, event: &'e Event) -> Option<&'e RawValue> {
        match &self.user {
            Some(user) => event.view(user).map(|view| event.payload(view)),
            None => Some(&event.payload),
        }
    }
}

/// Enabled endpoints, for routing.
pub async fn routes<C: GenericClient>(client: &C) -> Result<Vec<Route>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, user_id, event_types, roles FROM rowcast.webhook_endpoints WHERE enabled",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Route {
            id: r.get(0),
            user: r.get::<_, Option<String>>(1).map(|sub| User {
                sub,
                roles: r.get(3),
                exp: None,
            }),
            event_types: r.get(2),
        })
        .collect())
}

/// The caller's own endpoint.
pub async fn get_user<C: GenericClient>(
    client: &C,
    user: &str,
) -> Result<Option<Endpoint>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM rowcast.webhook_endpoints WHERE user_id = $1"),
            &[&user],
        )
        .await?;
    Ok(row.as_ref().map(endpoint))
}

/// Sets the caller's endpoint URL: creates it with a new secret, or changes the URL of the
/// existing one (keeping its secret, re-enabling it). Returns the endpoint and whether it
/// was created.
pub async fn put_user<C: GenericClient>(
    client: &C,
    user: &User,
    url: &str,
) -> Result<(Endpoint, bool), tokio_postgres::Error> {
    let types: Vec<String> = USER_EVENT_TYPES.iter().map(|s| s.to_string()).collect();
    let row = client
        .query_one(
            &format!(
                "INSERT INTO rowcast.webhook_endpoints (id, user_id, url, event_types, secret, created_by, roles)
                 VALUES ($1, $2, $3, $4, $5, $2, $6)
                 ON CONFLICT (user_id) DO UPDATE
                    SET url = EXCLUDED.url, roles = EXCLUDED.roles, enabled = true,
                        disabled_reason = NULL, updated_at = now()
                 RETURNING {COLUMNS}, xmax = 0"
            ),
            &[
                &Uuid::now_v7(),
                &user.sub,
                &url,
                &types,
                &sign::new_secret(),
                &user.roles,
            ],
        )
        .await?;
    Ok((endpoint(&row), row.get(11)))
}

/// Removes the caller's endpoint and its deliveries. Returns whether one existed.
pub async fn delete_user<C: GenericClient>(
    client: &C,
    user: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .execute(
            "DELETE FROM rowcast.webhook_endpoints WHERE user_id = $1",
            &[&user],
        )
        .await?
        > 0)
}

/// Creates an admin endpoint with a new secret.
pub async fn create<C: GenericClient>(
    client: &C,
    url: &str,
    event_types: &[String],
    description: &str,
    created_by: &str,
) -> Result<Endpoint, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO rowcast.webhook_endpoints
                    (id, url, event_types, description, secret, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &url,
                &event_types,
                &description,
                &sign::new_secret(),
                &created_by,
            ],
        )
        .await?;
    Ok(endpoint(&row))
}

/// Every endpoint, newest first (secrets left out).
pub async fn list<C: GenericClient>(client: &C) -> Result<Vec<Endpoint>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM rowcast.webhook_endpoints ORDER BY created_at DESC"),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Endpoint {
            secret: None,
            ..endpoint(r)
        })
        .collect())
}

pub async fn get<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<Endpoint>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM rowcast.webhook_endpoints WHERE id = $1"),
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(endpoint))
}

/// Changes what is given; enabling clears the disabled reason.
pub async fn update<C: GenericClient>(
    client: &C,
    id: Uuid,
    url: Option<&str>,
    event_types: Option<&[String]>,
    description: Option<&str>,
    enabled: Option<bool>,
) -> Result<Option<Endpoint>, tokio_postgres::Error> {
    let types: Option<Vec<String>> = event_types.map(|t| t.to_vec());
    let row = client
        .query_opt(
            &format!(
                "UPDATE rowcast.webhook_endpoints SET
                    url = COALESCE($2, url),
                    event_types = COALESCE($3, event_types),
                    description = COALESCE($4, description),
                    enabled = COALESCE($5, enabled),
                    disabled_reason = CASE WHEN COALESCE($5, enabled) THEN NULL
                                           WHEN $5 IS NOT NULL THEN 'disabled by an admin'
                                           ELSE disabled_reason END,
                    updated_at = now()
                  WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &url, &types, &description, &enabled],
        )
        .await?;
    Ok(row.as_ref().map(endpoint))
}

pub async fn delete<C: GenericClient>(client: &C, id: Uuid) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .execute(
            "DELETE FROM rowcast.webhook_endpoints WHERE id = $1",
            &[&id],
        )
        .await?
        > 0)
}

/// Gives the endpoint a new secret; the old one keeps signing for `grace_secs`.
pub async fn rotate<C: GenericClient>(
    client: &C,
    id: Uuid,
    grace_secs: f64,
) -> Result<Option<Endpoint>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE rowcast.webhook_endpoints SET
                    old_secret = secret, secret = $2,
                    old_secret_expires_at = now() + make_interval(secs => $3),
                    updated_at = now()
                  WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &sign::new_secret(), &grace_secs],
        )
        .await?;
    Ok(row.as_ref().map(endpoint))
}

/// Disables endpoints that answered 410 Gone.
pub async fn disable_gone<C: GenericClient>(
    client: &C,
    ids: &[Uuid],
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE rowcast.webhook_endpoints
                SET enabled = false, updated_at = now(),
                    disabled_reason = 'the receiver answered 410 Gone at ' || now()::text
              WHERE id = ANY($1) AND enabled",
            &[&ids],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_and_validate() {
        assert!(matches("*", "ticket.updated"));
        assert!(matches("ticket.*", "ticket.updated"));
        assert!(!matches("ticket.*", "tickets.updated"));
        assert!(!matches("ticket.*", "notification.created"));
        assert!(matches("notification.created", "notification.created"));
        assert!(!matches("notification.created", "notification.updated"));
        assert!(validate_filters(&["ticket.*".into(), "*".into(), "kb.created".into()]).is_ok());
        assert!(validate_filters(&[]).is_err());
        assert!(validate_filters(&["ticket".into()]).is_err());
        assert!(validate_filters(&["ti cket.*".into()]).is_err());
        let user = Route {
            id: Uuid::nil(),
            user: Some(User {
                sub: "7".into(),
                roles: vec![],
                exp: None,
            }),
            event_types: vec!["notification.created".into()],
        };
        assert!(user.wants("notification.created", Some("7")));
        assert!(!user.wants("notification.created", Some("8")));
        assert!(!user.wants("ticket.created", None));
    }
}
