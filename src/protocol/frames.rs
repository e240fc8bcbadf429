//! Client requests, decoded: `/ws` text frames and the room arguments of Socket.IO's
//! `join` / `leave`.

use serde_json::Value;

use super::ErrorCode;
use crate::hub::MAX_ROOMS;

/// A request from a `/ws` client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `{"type":"join","room":"tickets"}` (or `"room": [..]`, or `"rooms"`).
    Join {
        rooms: Vec<String>,
        id: Option<Value>,
    },
    /// `{"type":"leave","room":..}`.
    Leave {
        rooms: Vec<String>,
        id: Option<Value>,
    },
    /// `{"type":"auth","token":"<jwt>"}`: token refresh.
    Auth { token: String, id: Option<Value> },
    /// `{"type":"ping"}`.
    Ping { id: Option<Value> },
}

/// Why a frame was refused: answered with an `error` frame, the session stays open.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `id`, echoed in the answer.
    pub id: Option<Value>,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>, id: Option<Value>) -> FrameError {
        FrameError {
            code,
            message: message.into(),
            id,
        }
    }
}

impl ClientFrame {
    /// Decodes a text frame of at most `max_bytes`.
    pub fn parse(text: &str, max_bytes: usize) -> Result<ClientFrame, FrameError> {
        if text.len() > max_bytes {
            let msg = format!(
                "frame of {} bytes is over the limit of {max_bytes} bytes",
                text.len()
            );
            return Err(FrameError::new(ErrorCode::FrameTooLarge, msg, None));
        }
        let v: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return Err(FrameError::new(
                    ErrorCode::BadRequest,
                    "a frame must be a JSON object",
                    None,
                ));
            }
            Err(e) => {
                return Err(FrameError::new(
                    ErrorCode::BadJson,
                    format!("frame is not valid JSON: {e}"),
                    None,
                ));
            }
        };
        let id = v.get("id").cloned();
        let rooms = || -> Option<Vec<String>> {
            let r = v.get("room").or_else(|| v.get("rooms"))?;
            match r {
                Value::String(s) => Some(vec![s.clone()]),
                Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from)).collect(),
                _ => None,
            }
            .filter(|r| !r.is_empty())
        };
        match v.get("type").and_then(Value::as_str) {
            Some("join") => match rooms() {
                Some(rooms) => Ok(ClientFrame::Join { rooms, id }),
                None => Err(FrameError::new(
                    ErrorCode::BadRequest,
                    "join needs `room`: a room name or an array of names",
                    id,
                )),
            },
            Some("leave") => match rooms() {
                Some(rooms) => Ok(ClientFrame::Leave { rooms, id }),
                None => Err(FrameError::new(
                    ErrorCode::BadRequest,
                    "leave needs `room`: a room name or an array of names",
                    id,
                )),
            },
            Some("auth") => match v.get("token").and_then(Value::as_str) {
                Some(token) => Ok(ClientFrame::Auth {
                    token: token.to_string(),
                    id,
                }),
                None => Err(FrameError::new(
                    ErrorCode::BadRequest,
                    "auth needs `token`",
                    id,
                )),
            },
            Some("ping") => Ok(ClientFrame::Ping { id }),
            Some(other) => Err(FrameError::new(
                ErrorCode::UnknownType,
                format!("unknown message type {other:?}; expected join, leave, auth or ping"),
                id,
            )),
            None => Err(FrameError::new(
                ErrorCode::BadRequest,
                "a frame needs a string `type`",
                id,
            )),
        }
    }
}

/// The rooms of a Socket.IO `join` / `leave`: a room name or an array of 1 to
/// [`MAX_ROOMS`] names. socket.io-client sends the arguments as an array, so
/// `emit('join', x)` arrives as `[x]`.
pub fn rooms_arg(v: &Value) -> Option<Vec<String>> {
    let v = match v {
        Value::Array(a) if a.len() == 1 => &a[0],
        other => other,
    };
    let rooms: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(String::from))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    (!rooms.is_empty() && rooms.len() <= MAX_ROOMS).then_some(rooms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_decode_or_say_what_is_wrong() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"join","room":"tickets","id":1}"#, 100),
            Ok(ClientFrame::Join {
                rooms: vec!["tickets".into()],
                id: Some(json!(1))
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"leave","rooms":["a","b"]}"#, 100),
            Ok(ClientFrame::Leave {
                rooms: vec!["a".into(), "b".into()],
                id: None
            })
        );
        let code = |t: &str| ClientFrame::parse(t, 40).unwrap_err().code;
        assert_eq!(code("[1]"), ErrorCode::BadRequest);
        assert_eq!(code("{"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"join","room":[]}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"nope"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"auth"}"#), ErrorCode::BadRequest);
        assert_eq!(code(&format!("{:60}", "{}")), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn rooms_are_a_name_or_an_array() {
        assert_eq!(rooms_arg(&json!("tickets")), Some(vec!["tickets".into()]));
        assert_eq!(rooms_arg(&json!(["tickets"])), Some(vec!["tickets".into()]));
        assert_eq!(
            rooms_arg(&json!([["tickets", "kb"]])),
            Some(vec!["tickets".into(), "kb".into()])
        );
        assert_eq!(rooms_arg(&json!([[]])), None);
        assert_eq!(rooms_arg(&json!([42])), None);
        assert_eq!(rooms_arg(&json!({"room": "x"})), None);
    }
}
