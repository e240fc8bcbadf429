//! The webhook HTTP API: a user's own endpoint (`/api/webhook`), admin endpoints
//! (`/api/webhooks`), and deliveries with their attempt logs and replay.
//!
//! Every route needs a JWT (`Authorization: Bearer`). Users see and replay only their own
//! endpoint's deliveries; admins (role `admin`) see all and manage `/api/webhooks`.
//! Response bodies from private addresses (allowed only by `webhook.allow_cidrs`) are shown
//! to admins only.

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::event::User;
use crate::webhook::deliveries::{self, DeliveryStatus};
use crate::webhook::endpoints;

/// Routes of the webhook API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/webhook", get(get_own).put(put_own).delete(delete_own))
        .route("/api/webhook/test", post(test_own))
        .route("/api/webhook/deliveries", get(list_deliveries))
        .route("/api/webhook/deliveries/{id}", get(get_delivery))
        .route("/api/webhook/deliveries/{id}/retry", post(retry_delivery))
        .route("/api/webhooks", get(list_endpoints).post(create_endpoint))
        .route(
            "/api/webhooks/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route("/api/webhooks/{id}/rotate", post(rotate_endpoint))
}

fn user(app: &AppState, headers: &HeaderMap) -> Result<User, ApiError> {
    Ok(app.auth.authenticate(headers, None)?)
}

fn admin(app: &AppState, headers: &HeaderMap) -> Result<User, ApiError> {
    let u = user(app, headers)?;
    if !u.is_admin() {
        return Err(ApiError::forbidden(
            "managing webhook endpoints needs the admin role",
        ));
    }
    Ok(u)
}

/// A JSON body, or a 4xx that says what is wrong with it.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|r| {
        let status = r.status();
        let code = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "unsupported_media_type"
        } else {
            "bad_request"
        };
        ApiError::new(status, code, r.body_text())
    })
}

fn uuid(s: &str) -> Result<Uuid, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{s:?} is not an id (a UUID)")))
}

async fn checked_url(app: &AppState, url: &str) -> Result<String, ApiError> {
    if url.len() > 2048 {
        return Err(ApiError::bad_request("url is longer than 2048 characters"));
    }
    let parsed = app
        .webhooks
        .guard
        .check_url(url.trim())
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "url_refused", e.to_string()))?;
    Ok(parsed.to_string())
}

fn db(e: impl std::error::Error + 'static) -> ApiError {
    ApiError::internal(e)
}

/// Lenient on purpose: a frontend may send more than `url` to `setWebhookUrl`.
#[derive(Deserialize)]
struct SetUrl {
    url: String,
}

/// `PUT /api/webhook {"url"}`: sets the caller's endpoint; answers it with its secret
/// (201 when created, 200 when the URL of the existing one changed; the secret stays).
async fn put_own(
    State(app): State<AppState>,
    headers: HeaderMap,
    b: Result<Json<SetUrl>, JsonRejection>,
) -> Result<Response, ApiError> {
    let u = user(&app, &headers)?;
    let req = body(b)?;
    let url = checked_url(&app, &req.url).await?;
    let client = app.pool.get().await.map_err(db)?;
    let (ep, created) = endpoints::put_user(&**client, &u, &url).await.map_err(db)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ep)).into_response())
}

async fn get_own(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<endpoints::Endpoint>, ApiError> {
    let u = user(&app, &headers)?;
    let client = app.pool.get().await.map_err(db)?;
    endpoints::get_user(&**client, &u.sub)
        .await
        .map_err(db)?
        .map(Json)
        .ok_or_else(no_endpoint)
}

fn no_endpoint() -> ApiError {
    ApiError::not_found("no webhook endpoint is set: PUT /api/webhook {\"url\": \"https://…\"}")
}

async fn delete_own(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let u = user(&app, &headers)?;
    let client = app.pool.get().await.map_err(db)?;
    if endpoints::delete_user(&**client, &u.sub)
        .await
        .map_err(db)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_endpoint())
    }
}

/// `POST /api/webhook/test`: enqueues a signed test `notification.created` to the
/// caller's endpoint; answers 202 with the delivery id to follow, or 429 with
/// `Retry-After` past `webhook.test_sends_per_minute`.
async fn test_own(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let u = user(&app, &headers)?;
    let client = app.pool.get().await.map_err(db)?;
    let ep = endpoints::get_user(&**client, &u.sub)
        .await
        .map_err(db)?
        .ok_or_else(no_endpoint)?;
    if let Err(wait) = app.webhooks.test_sends.take(&u.sub) {
        return Ok(rate_limited(app.webhooks.test_sends.per_minute(), wait));
    }
    let now = endpoints::rfc3339(time::OffsetDateTime::now_utc());
    let test_id = format!("test-{}", Uuid::now_v7());
    let payload = json!({
        "event": "notification.created",
        "op": "insert",
        "id": test_id,
        "seq": null,
        "test": true,
        "notification": {
            "id": test_id, "user_id": u.sub, "type": "webhook_test",
            "message": "Test notification from rowcast: your webhook endpoint works.",
            "related_id": null, "related_type": null, "created_at": now, "read_at": null,
        },
        "data": null,
        "committed_at": now,
    });
    let id = deliveries::enqueue_one(
        &**client,
        ep.id,
        "notification.created",
        &payload.to_string(),
    )
    .await
    .map_err(db)?;
    app.webhooks.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "delivery_id": id, "endpoint_id": ep.id, "status": "pending" })),
    )
        .into_response())
}

/// 429 with `Retry-After` in whole seconds (rounded up, so a client that waits that long
/// is let through).
fn rate_limited(per_minute: u32, wait: std::time::Duration) -> Response {
    let secs = (wait.as_secs_f64().ceil() as u64).max(1);
    let mut res = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("at most {per_minute} test sends a minute; try again in {secs} s"),
    )
    .into_response();
    res.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, secs.into());
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    status: Option<String>,
    endpoint_id: Option<Uuid>,
    limit: Option<i64>,
}

/// Admins see every endpoint's deliveries; users their own endpoint's.
fn owner(u: &User) -> Option<&str> {
    (!u.is_admin()).then_some(u.sub.as_str())
}

async fn list_deliveries(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = user(&app, &headers)?;
    let Query(q) = q.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status {s:?} is not one of pending, delivered, failed"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let client = app.pool.get().await.map_err(db)?;
    let list = deliveries::list(&**client, owner(&u), status, q.endpoint_id, limit)
        .await
        .map_err(db)?;
    Ok(Json(json!({ "deliveries": list })))
}

/// `GET /api/webhook/deliveries/{id}`: the delivery with its payload and attempt log; for
/// a non-admin, bodies not known to come from a public address are withheld.
async fn get_delivery(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<deliveries::Delivery>, ApiError> {
    let u = user(&app, &headers)?;
    let id = uuid(&id)?;
    let client = app.pool.get().await.map_err(db)?;
    let mut d = deliveries::get(&**client, id, owner(&u))
        .await
        .map_err(db)?
        .ok_or_else(|| ApiError::not_found("no such delivery"))?;
    // Bodies from addresses reachable only through `webhook.allow_cidrs` are for admins:
    // otherwise a user's endpoint would read internal services for them.
    if !u.is_admin() {
        d.withhold_private_responses();
    }
    Ok(Json(d))
}

/// `POST /api/webhook/deliveries/{id}/retry`: sends the delivery again now, with a fresh
/// retry schedule (a dead letter comes back to life; a delivered one is replayed).
async fn retry_delivery(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let u = user(&app, &headers)?;
    let id = uuid(&id)?;
    let client = app.pool.get().await.map_err(db)?;
    match deliveries::retry(&**client, id, owner(&u))
        .await
        .map_err(db)?
    {
        None => Err(ApiError::not_found("no such delivery")),
        Some(false) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_flight",
            "the delivery is being sent right now; look again in a moment",
        )),
        Some(true) => {
            app.webhooks.wake.notify_one();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "delivery_id": id, "status": "pending" })),
            )
                .into_response())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    url: String,
    event_types: Vec<String>,
    #[serde(default)]
    description: String,
}

async fn create_endpoint(
    State(app): State<AppState>,
    headers: HeaderMap,
    b: Result<Json<NewEndpoint>, JsonRejection>,
) -> Result<Response, ApiError> {
    let u = admin(&app, &headers)?;
    let req = body(b)?;
    endpoints::validate_filters(&req.event_types).map_err(ApiError::bad_request)?;
    let url = checked_url(&app, &req.url).await?;
    let client = app.pool.get().await.map_err(db)?;
    let ep = endpoints::create(&**client, &url, &req.event_types, &req.description, &u.sub)
        .await
        .map_err(db)?;
    Ok((StatusCode::CREATED, Json(ep)).into_response())
}

async fn list_endpoints(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin(&app, &headers)?;
    let client = app.pool.get().await.map_err(db)?;
    let list = endpoints::list(&**client).await.map_err(db)?;
    Ok(Json(json!({ "endpoints": list })))
}

async fn get_endpoint(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<endpoints::Endpoint>, ApiError> {
    admin(&app, &headers)?;
    let id = uuid(&id)?;
    let client = app.pool.get().await.map_err(db)?;
    endpoints::get(&**client, id)
        .await
        .map_err(db)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such endpoint"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointPatch {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

async fn update_endpoint(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<EndpointPatch>, JsonRejection>,
) -> Result<Json<endpoints::Endpoint>, ApiError> {
    admin(&app, &headers)?;
    let id = uuid(&id)?;
    let req = body(b)?;
    if let Some(t) = &req.event_types {
        endpoints::validate_filters(t).map_err(ApiError::bad_request)?;
    }
    let url = match &req.url {
        Some(u) => Some(checked_url(&app, u).await?),
        None => None,
    };
    let client = app.pool.get().await.map_err(db)?;
    endpoints::update(
        &**client,
        id,
        url.as_deref(),
        req.event_types.as_deref(),
        req.description.as_deref(),
        req.enabled,
    )
    .await
    .map_err(db)?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("no such endpoint"))
}

async fn delete_endpoint(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&app, &headers)?;
    let id = uuid(&id)?;
    let client = app.pool.get().await.map_err(db)?;
    if endpoints::delete(&**client, id).await.map_err(db)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such endpoint"))
    }
}

/// `POST /api/webhooks/{id}/rotate`: a new secret; the old one keeps signing (as a second
/// signature) for `webhook.secret_grace`.
async fn rotate_endpoint(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<endpoints::Endpoint>, ApiError> {
    admin(&app, &headers)?;
    let id = uuid(&id)?;
    let grace = app.webhooks.secret_grace.as_secs_f64();
    let client = app.pool.get().await.map_err(db)?;
    endpoints::rotate(&**client, id, grace)
        .await
        .map_err(db)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such endpoint"))
}
