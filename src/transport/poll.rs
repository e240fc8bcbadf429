//! Plain polling at `GET /api/changes?rooms=…&since=…&limit=…`: pages of the events the
//! caller's rooms received after `since`, from the replay buffer or the change log.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::{checked_rooms, parse_since};
use crate::api::{ApiError, AppState};
use crate::event::Position;
use crate::hub::ResumeError;

/// Events per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page; larger `limit`s are clamped to it.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct PollQuery {
    token: Option<String>,
    rooms: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
struct PolledEvent<'a> {
    event: &'a str,
    room: &'a str,
    seq: Position,
    payload: &'a RawValue,
}

/// `GET /api/changes`. Without `since`: no events and `next` = the current position (start
/// here). With `since`: up to `limit` events after it, in log order, and `next` to pass as
/// the following `since`; `more: true` means the next page is ready now.
/// 410 `resync_required` when `since` is older than the retained log.
pub async fn handler(
    State(app): State<AppState>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = app.auth.authenticate(&headers, q.token.as_deref())?;
    let rooms = checked_rooms(&app, &user, q.rooms.as_deref())?;
    let since = parse_since(q.since.as_deref(), "since")?;
    let limit = match q.limit.as_deref().filter(|l| !l.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(MAX_LIMIT),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}, not {l:?}"
                )));
            }
        },
    };
    let until = app.hub.position();
    let Some(since) = since else {
        return Ok(
            axum::Json(json!({ "events": [], "next": until, "more": false })).into_response(),
        );
    };
    let (events, next) = match app
        .hub
        .catch_up_page(&rooms, &user, since, until, limit)
        .await
    {
        Ok(page) => page,
        Err(ResumeError::ResyncRequired { since, pruned }) => {
            let body = json!({
                "error": "resync_required",
                "message": format!(
                    "events after {since} were pruned (oldest kept after {pruned}): refetch your data, then poll with since={until}"
                ),
                "next": until,
            });
            return Ok((StatusCode::GONE, axum::Json(body)).into_response());
        }
        Err(e @ ResumeError::Unavailable(_)) => return Err(ApiError::internal(e)),
    };
    let polled: Vec<PolledEvent> = events
        .iter()
        .map(|d| PolledEvent {
            event: &d.event.name,
            room: d.room(),
            seq: d.event.seq,
            payload: d.payload(),
        })
        .collect();
    // A client ahead of this replica (it polled another one) keeps its own position.
    let (next, more) = match next {
        Some(n) => (n, true),
        None => (until.max(since), false),
    };
    Ok(axum::Json(json!({ "events": polled, "next": next, "more": more })).into_response())
}
