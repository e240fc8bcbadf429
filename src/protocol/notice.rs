//! What the server tells a client besides events: notices, error codes, close reasons.

use serde::Serialize;
use serde_json::Value;

use crate::event::Position;
use crate::hub::{JoinError, Transport};

/// A stable, machine-readable error code (error frames, acknowledgements, `rowcast:error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Forbidden,
    UnknownRoom,
    TooManyRooms,
    BadJson,
    BadRequest,
    UnknownType,
    FrameTooLarge,
    Unauthorized,
    Unavailable,
    Busy,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownRoom => "unknown_room",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Busy => "busy",
        }
    }
}

impl From<&JoinError> for ErrorCode {
    fn from(e: &JoinError) -> ErrorCode {
        match e {
            JoinError::UnknownRoom(_) => ErrorCode::UnknownRoom,
            JoinError::Forbidden(_) => ErrorCode::Forbidden,
            JoinError::BadName => ErrorCode::BadRequest,
            JoinError::TooManyRooms(_) => ErrorCode::TooManyRooms,
        }
    }
}

/// The answer to a resume whose events were pruned: refetch, then continue from `seq`.
#[derive(Debug, Clone, Serialize)]
pub struct Resync {
    /// The position the client asked to resume after.
    pub since: Position,
    /// The newest pruned position: the log starts after it.
    pub oldest: Position,
    /// Where the client continues from.
    pub seq: Position,
    pub rooms: Vec<String>,
    pub message: &'static str,
}

impl Resync {
    pub fn new(since: Position, oldest: Position, seq: Position, rooms: Vec<String>) -> Resync {
        Resync {
            since,
            oldest,
            seq,
            rooms,
            message: "events you missed were pruned: refetch your data, then continue from `seq`",
        }
    }
}

/// A `/ws` server frame other than `event`. (Socket.IO and SSE send the same bodies under
/// their own event names.)
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice<'a> {
    /// The first frame: the session is already in its private room.
    Welcome {
        session: String,
        user: &'a str,
        roles: &'a [String],
        rooms: Vec<String>,
        seq: Position,
        expires_at: Option<i64>,
    },
    /// A room was joined; events after `seq` arrive live.
    Joined {
        room: &'a str,
        seq: Position,
        id: Option<&'a Value>,
    },
    /// A room was left: on the client's `leave` (no `reason`), or by the server with a
    /// [`LeftReason`] and a message saying why.
    Left {
        room: &'a str,
        id: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<LeftReason>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'a str>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        room: Option<&'a str>,
        id: Option<&'a Value>,
    },
    /// The answer to `ping`, with the last `seq` sent.
    Pong {
        id: Option<&'a Value>,
        seq: Option<Position>,
    },
    /// A token refresh was accepted.
    Authenticated {
        expires_at: Option<i64>,
        id: Option<&'a Value>,
    },
    ResyncRequired(&'a Resync),
}

impl Notice<'_> {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("notices always serialize")
    }
}

/// Why the server took a session out of a room (`left` frame's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    /// A token refresh gave credentials that may not join the room (`access_revoked`): the
    /// session stays open in its other rooms; rejoining is refused until a token that may.
    AccessRevoked,
}

/// What a client whose missed events could not be loaded is told (before the close).
pub const RESUME_FAILED: &str = "missed events could not be loaded; reconnect to retry";

/// Why the server ends a session, said the same way on every transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down: reconnect (elsewhere) and resume.
    ShuttingDown,
    /// The session's queue overflowed: reconnect and resume after `last_sent`.
    TooSlow { last_sent: Option<Position> },
    /// The token's lifetime is over: reconnect with a new token.
    TokenExpired,
    /// Missed events could not be loaded: reconnect to retry.
    ResumeFailed,
    /// A client frame far over `hub.max_frame_bytes` was refused from its header (`/ws`).
    FrameTooLarge,
}

impl CloseReason {
    /// The code in `rowcast:error` and SSE's `rowcast:error`.
    pub fn code(self) -> &'static str {
        match self {
            CloseReason::ShuttingDown => "shutting_down",
            CloseReason::TooSlow { .. } => "too_slow",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::ResumeFailed => ErrorCode::Unavailable.as_str(),
            CloseReason::FrameTooLarge => ErrorCode::FrameTooLarge.as_str(),
        }
    }

    /// The WebSocket close code of `/ws`.
    pub fn ws_close_code(self) -> u16 {
        match self {
            CloseReason::ShuttingDown => 1001,
            CloseReason::TooSlow { .. } => 4008,
            CloseReason::TokenExpired => 4401,
            CloseReason::ResumeFailed => 1011,
            CloseReason::FrameTooLarge => 1009,
        }
    }

    /// What the client is told, with the transport's way of resuming.
    pub fn message(self, transport: Transport) -> String {
        match (self, transport) {
            (CloseReason::ShuttingDown, _) => "server shutting down; reconnect".into(),
            (CloseReason::TooSlow { last_sent }, Transport::WebSocket) => match last_sent {
                Some(seq) => format!("too slow: reconnect with since={seq}"),
                None => "too slow: reconnect with since=<last seq>".into(),
            },
            (CloseReason::TooSlow { last_sent }, Transport::SocketIo) => match last_sent {
                Some(seq) => format!("too slow: reconnect with auth.since = \"{seq}\""),
                None => "too slow: reconnect with auth.since = <last seq>".into(),
            },
            (CloseReason::TooSlow { .. }, Transport::Sse) => {
                "too slow: reconnect with Last-Event-ID".into()
            }
            (CloseReason::TokenExpired, _) => "token expired; reconnect with a new token".into(),
            (CloseReason::ResumeFailed, Transport::WebSocket) => "resume failed; reconnect".into(),
            (CloseReason::ResumeFailed, _) => RESUME_FAILED.into(),
            (CloseReason::FrameTooLarge, _) => {
                "frame_too_large: frame over hub.max_frame_bytes; reconnect and send smaller frames"
                    .into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notices_have_the_documented_fields() {
        let id = json!(7);
        let v: Value = serde_json::from_str(
            &Notice::Joined {
                room: "tickets",
                seq: Position(3),
                id: Some(&id),
            }
            .to_text(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "joined", "room": "tickets", "seq": "3", "id": 7})
        );
        let v: Value = serde_json::from_str(
            &Notice::Left {
                room: "tickets",
                id: None,
                reason: Some(LeftReason::AccessRevoked),
                message: Some("m"),
            }
            .to_text(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "left", "room": "tickets", "id": null, "reason": "access_revoked", "message": "m"})
        );
        let r = Resync::new(Position(1), Position(5), Position(9), vec!["kb".into()]);
        let v: Value = serde_json::from_str(&Notice::ResyncRequired(&r).to_text()).unwrap();
        assert_eq!(v["type"], "resync_required");
        assert_eq!(v["oldest"], "5");
        let v: Value = serde_json::from_str(
            &Notice::Error {
                code: ErrorCode::FrameTooLarge,
                message: "m",
                room: None,
                id: None,
            }
            .to_text(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "code": "frame_too_large", "message": "m", "room": null, "id": null})
        );
    }
}
