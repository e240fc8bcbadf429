//! The transports: `/ws` (plain JSON WebSocket), Socket.IO v4, Server-Sent Events and
//! polling. Each decodes requests into the session protocol (`crate::protocol`), runs a
//! hub session, and encodes what the protocol says into its wire format; none of them
//! decides anything the others would have to repeat. This module holds the request
//! checks they share.

pub mod poll;
pub mod socketio;
pub mod sse;
pub mod ws;

use std::time::Duration;

use axum::http::StatusCode;

use crate::api::{ApiError, AppState};
use crate::event::{Position, User};
use crate::hub::{JoinError, MAX_ROOMS};
use crate::protocol::ErrorCode;

/// Query string of the streaming endpoints (`/ws`, `/events`): the token (or an
/// `Authorization` header), comma-separated rooms joined at connect (one ordered catch-up
/// for all of them) and the position to resume after.
#[derive(Debug, serde::Deserialize)]
pub struct StreamQuery {
    token: Option<String>,
    rooms: Option<String>,
    since: Option<String>,
}

/// The names of a comma-separated `rooms` parameter (blanks dropped).
fn room_list(rooms: Option<&str>) -> impl Iterator<Item = &str> {
    rooms
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

/// The requested rooms (comma-separated) plus the caller's own `user:<sub>` room, each
/// allowed by the ACL; the first refused room answers 403 (400 for a malformed name).
pub fn checked_rooms(
    app: &AppState,
    user: &User,
    rooms: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let mut out = vec![user.room()];
    for room in room_list(rooms) {
        if out.iter().any(|r| r == room) {
            continue;
        }
        if let Err(e) = app.hub.acl().check(user, room) {
            let status = match e {
                JoinError::BadName => StatusCode::BAD_REQUEST,
                _ => StatusCode::FORBIDDEN,
            };
            return Err(ApiError::new(
                status,
                ErrorCode::from(&e).as_str(),
                format!("room {room:?}: {e}"),
            ));
        }
        out.push(room.to_string());
        if out.len() > MAX_ROOMS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_ROOMS} rooms per request"
            )));
        }
    }
    Ok(out)
}

/// An optional `seq` from a query parameter or header named `what`.
pub fn parse_since(value: Option<&str>, what: &str) -> Result<Option<Position>, ApiError> {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Position>()
                .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
        })
        .transpose()
}

/// Sleeps until `user`'s token expires.
pub fn expiry_sleep(user: &User) -> tokio::time::Sleep {
    let secs = user
        .seconds_left()
        .unwrap_or(u64::MAX / 4)
        .min(86_400 * 365);
    tokio::time::sleep(Duration::from_secs(secs))
}
