//! The plain JSON WebSocket protocol at `/ws`: a thin adapter over a hub [`Session`].
//!
//! Client frames: `join`, `leave`, `auth` (token refresh), `ping`. Server frames: `welcome`,
//! `joined`, `left`, `event`, `error`, `pong`, `authenticated`, `resync_required`.
//! Close codes: 1001 server shutting down, 4008 too slow, 4401 token expired.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Delivery, ResumeError, Session, Transport};
use crate::api::{ApiError, AppState};
use crate::event::{Position, SharedEvent};

pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_TOO_SLOW: u16 = 4008;
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;

/// A write that takes longer than this means the client is gone or stalled.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer per connection. tungstenite zero-fills the whole free buffer before every
/// socket read, including the one that finds nothing after each delivered event: at the
/// default 128 KiB that memset was 29% of rowcast's CPU at 200 clients × 500 events/s, and
/// it kept 128 KiB resident per idle connection. Clients send small frames; a larger frame
/// still arrives whole (the buffer reserves its full length).
const READ_BUFFER: usize = 4 * 1024;
/// Most queued events written with one flush.
const MAX_BATCH: usize = 64;

/// `GET /ws`: authenticates the upgrade request (401 before upgrading) and runs the session.
pub async fn handler(
    State(app): State<AppState>,
    Query(q): Query<super::StreamQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let user = app.auth.authenticate(&headers, q.token.as_deref())?;
    let since = super::poll::parse_since(q.since.as_deref(), "since")?;
    let rooms: Vec<String> = q
        .rooms
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect();
    let max = app.config.hub.max_frame_bytes;
    Ok(ws
        // Frames above the protocol limit are answered with an error frame; only frames far
        // above it are cut off by the WebSocket layer itself.
        .max_message_size(max.saturating_mul(16))
        .max_frame_size(max.saturating_mul(16))
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let session = app.hub.open(user, Transport::WebSocket);
            Conn {
                app,
                socket,
                session,
                caught_up: HashSet::new(),
                last_sent: None,
            }
            .run(since, rooms)
            .await
        })
        .into_response())
}

#[derive(Serialize)]
struct EventFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'a str,
    room: &'a str,
    seq: Position,
    payload: &'a RawValue,
}

/// The `event` frame for one delivery.
pub fn event_frame(event: &SharedEvent, room: &str) -> String {
    serde_json::to_string(&EventFrame {
        kind: "event",
        event: &event.name,
        room,
        seq: event.seq,
        payload: &event.payload,
    })
    .expect("event frames always serialize")
}

struct Conn {
    app: AppState,
    socket: WebSocket,
    session: Session,
    /// Rooms that already received their resume catch-up.
    caught_up: HashSet<String>,
    last_sent: Option<Position>,
}

enum Flow {
    Continue,
    Stop,
}

impl Conn {
    async fn run(mut self, since: Option<Position>, rooms: Vec<String>) {
        let user_room = format!("user:{}", self.session.user.sub);
        if let Some(s) = since {
            self.session.set_resume(s);
        }
        let welcome = json!({
            "type": "welcome",
            "session": self.session.id.to_string(),
            "user": self.session.user.sub,
            "roles": self.session.user.roles,
            "rooms": [user_room],
            "seq": self.session.opened_at(),
            "expires_at": self.session.user.exp,
        });
        if !self.send_json(welcome).await {
            return;
        }
        // The user room was joined by `open` (the welcome lists it); on resume it catches
        // up together with the rooms named at connect, in one ordered replay.
        let mut catch_up = Vec::new();
        if since.is_some() {
            self.caught_up.insert(user_room.clone());
            catch_up.push(user_room);
        }
        if let Flow::Stop = self.join(rooms, None, catch_up).await {
            return;
        }
        let shutdown = self.app.shutdown.clone();
        let kicked = self.session.kicked.clone();
        let mut ping = tokio::time::interval(self.app.config.hub.ping_interval);
        ping.reset();
        loop {
            let expiry = expiry_sleep(&self.session);
            let flow = tokio::select! {
                biased;
                // 1. Shutdown first: tell the client to reconnect elsewhere.
                _ = shutdown.cancelled() => {
                    self.close(CLOSE_GOING_AWAY, "server shutting down; reconnect").await;
                    Flow::Stop
                }
                // 2. Too slow: the hub dropped us from every room.
                _ = kicked.cancelled() => {
                    self.close_too_slow().await;
                    Flow::Stop
                }
                // 3. Token lifetime.
                _ = expiry => {
                    self.close(CLOSE_TOKEN_EXPIRED, "token expired; reconnect with a new token").await;
                    Flow::Stop
                }
                // 4. Client frames.
                msg = self.socket.recv() => match msg {
                    Some(Ok(Message::Text(t))) => self.on_text(t.as_str()).await,
                    Some(Ok(Message::Binary(_))) => self.send_error("bad_request", "binary frames are not supported; send JSON text", None, None).await,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Flow::Stop,
                    Some(Ok(_)) => Flow::Continue,
                },
                // 5. Live events.
                d = self.session.rx.next() => self.deliver(d).await,
                // 6. Keep-alive.
                _ = ping.tick() => {
                    if self.send(Message::Ping(Default::default())).await { Flow::Continue } else { Flow::Stop }
                }
            };
            if let Flow::Stop = flow {
                break;
            }
        }
    }

    /// Sends `first` and whatever else is already queued (up to [`MAX_BATCH`]) in one write:
    /// one syscall per batch instead of one per event, which was most of rowcast's CPU at
    /// hundreds of clients.
    async fn deliver(&mut self, first: Delivery) -> Flow {
        let mut batch = vec![first];
        self.session.rx.take_into(&mut batch, MAX_BATCH - 1);
        let mut frames = Vec::with_capacity(batch.len());
        let mut last = None;
        for d in batch {
            if self.session.is_new(&d) {
                frames.push(event_frame(&d.event, d.room()));
                last = Some(d.event.seq);
            }
        }
        if frames.is_empty() {
            return Flow::Continue;
        }
        if self.send_all(frames).await {
            self.last_sent = last;
            Flow::Continue
        } else {
            // A write stalled until the hub kicked us: still say why (4008), so the client
            // resumes instead of seeing a reset.
            if self.session.kicked.is_cancelled() {
                self.close_too_slow().await;
            }
            Flow::Stop
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        if text.len() > self.app.config.hub.max_frame_bytes {
            let msg = format!(
                "frame of {} bytes is over the limit of {} bytes",
                text.len(),
                self.app.config.hub.max_frame_bytes
            );
            return self.send_error("frame_too_large", &msg, None, None).await;
        }
        let v: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return self
                    .send_error("bad_request", "a frame must be a JSON object", None, None)
                    .await;
            }
            Err(e) => {
                return self
                    .send_error(
                        "bad_json",
                        &format!("frame is not valid JSON: {e}"),
                        None,
                        None,
                    )
                    .await;
            }
        };
        let id = v.get("id").cloned();
        let rooms = |v: &Value| -> Option<Vec<String>> {
            let r = v.get("room").or_else(|| v.get("rooms"))?;
            match r {
                Value::String(s) => Some(vec![s.clone()]),
                Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from)).collect(),
                _ => None,
            }
        };
        match v.get("type").and_then(Value::as_str) {
            Some("join") => match rooms(&v) {
                Some(r) if !r.is_empty() => self.join(r, id, Vec::new()).await,
                _ => {
                    self.send_error(
                        "bad_request",
                        "join needs `room`: a room name or an array of names",
                        None,
                        id,
                    )
                    .await
                }
            },
            Some("leave") => match rooms(&v) {
                Some(r) if !r.is_empty() => {
                    for room in r {
                        self.session.leave(&room);
                        self.caught_up.remove(&room);
                        if !self
                            .send_json(json!({"type": "left", "room": room, "id": id}))
                            .await
                        {
                            return Flow::Stop;
                        }
                    }
                    Flow::Continue
                }
                _ => {
                    self.send_error(
                        "bad_request",
                        "leave needs `room`: a room name or an array of names",
                        None,
                        id,
                    )
                    .await
                }
            },
            Some("auth") => {
                match v.get("token").and_then(Value::as_str) {
                    Some(token) => match self.app.auth.verify(token) {
                        Ok(user) => match self.session.refresh(user) {
                            Ok(()) => {
                                let exp = self.session.user.exp;
                                if self.send_json(json!({"type": "authenticated", "expires_at": exp, "id": id})).await {
                                Flow::Continue
                            } else {
                                Flow::Stop
                            }
                            }
                            Err(e) => self.send_error("unauthorized", &e, None, id).await,
                        },
                        Err(e) => {
                            self.send_error("unauthorized", &e.to_string(), None, id)
                                .await
                        }
                    },
                    None => {
                        self.send_error("bad_request", "auth needs `token`", None, id)
                            .await
                    }
                }
            }
            Some("ping") => {
                if self
                    .send_json(json!({"type": "pong", "id": id, "seq": self.last_sent}))
                    .await
                {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
            Some(other) => {
                let msg =
                    format!("unknown message type {other:?}; expected join, leave, auth or ping");
                self.send_error("unknown_type", &msg, None, id).await
            }
            None => {
                self.send_error("bad_request", "a frame needs a string `type`", None, id)
                    .await
            }
        }
    }

    /// Joins rooms, answers each, then sends what the new rooms missed if the client resumed.
    async fn join(
        &mut self,
        rooms: Vec<String>,
        id: Option<Value>,
        mut fresh: Vec<String>,
    ) -> Flow {
        let (results, h) = self.session.join_many(&rooms);
        for (room, result) in rooms.into_iter().zip(results) {
            let joined = result.is_ok();
            let ok = match result {
                Ok(_) => {
                    self.send_json(json!({"type": "joined", "room": room, "seq": h, "id": id}))
                        .await
                }
                Err(e) => {
                    let f = self
                        .send_error(e.code(), &e.to_string(), Some(&room), id.clone())
                        .await;
                    matches!(f, Flow::Continue)
                }
            };
            if !ok {
                return Flow::Stop;
            }
            if joined
                && self.session.resume_point().is_some()
                && self.caught_up.insert(room.clone())
            {
                fresh.push(room);
            }
        }
        let user_room = format!("user:{}", self.session.user.sub);
        let flow = match self.session.resume_point() {
            Some(since) if !fresh.is_empty() => self.catch_up(fresh.clone(), since, h).await,
            _ => Flow::Continue,
        };
        // The user room was live since the session opened, so its queue may already hold
        // events up to `h` that this catch-up just sent: skip those. Only the user room was
        // in the session before this join, so no other room's event is skipped.
        if fresh.contains(&user_room) {
            self.session.skip_through(h);
        }
        flow
    }

    async fn catch_up(&mut self, rooms: Vec<String>, since: Position, until: Position) -> Flow {
        let hub = self.session.hub().clone();
        let mut after = since;
        let result = loop {
            match hub.catch_up_page(&rooms, after, until, 1000).await {
                Ok((events, next)) => {
                    for (ev, room) in events {
                        let frame = event_frame(&ev, &ev.rooms[room]);
                        if !self.send(Message::Text(frame.into())).await {
                            return Flow::Stop;
                        }
                        self.last_sent = Some(ev.seq);
                    }
                    match next {
                        Some(n) => after = n,
                        None => break Ok(()),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(ResumeError::ResyncRequired { since, pruned }) => {
                let frame = json!({
                    "type": "resync_required",
                    "since": since,
                    "oldest": pruned,
                    "seq": until,
                    "rooms": rooms,
                    "message": "events you missed were pruned: refetch your data, then continue from `seq`",
                });
                if self.send_json(frame).await {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
            Err(e @ ResumeError::Db(_)) => {
                tracing::warn!(error = %e, "resume failed");
                self.send_error(
                    "unavailable",
                    "missed events could not be loaded; reconnect to retry",
                    None,
                    None,
                )
                .await;
                self.close(1011, "resume failed; reconnect").await;
                Flow::Stop
            }
        }
    }

    async fn send_error(
        &mut self,
        code: &str,
        message: &str,
        room: Option<&str>,
        id: Option<Value>,
    ) -> Flow {
        let frame =
            json!({"type": "error", "code": code, "message": message, "room": room, "id": id});
        if self.send_json(frame).await {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    async fn send_json(&mut self, v: Value) -> bool {
        self.send(Message::Text(Utf8Bytes::from(v.to_string())))
            .await
    }

    /// Sends text frames with one flush, unless the session is kicked or the write stalls.
    async fn send_all(&mut self, frames: Vec<String>) -> bool {
        let kicked = self.session.kicked.clone();
        let socket = &mut self.socket;
        let write = async move {
            for f in frames {
                socket.feed(Message::Text(f.into())).await?;
            }
            socket.flush().await
        };
        tokio::select! {
            r = tokio::time::timeout(WRITE_TIMEOUT, write) => matches!(r, Ok(Ok(()))),
            _ = kicked.cancelled() => false,
        }
    }

    /// Sends a frame unless the session is kicked or the write stalls.
    async fn send(&mut self, msg: Message) -> bool {
        let kicked = self.session.kicked.clone();
        tokio::select! {
            r = tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(msg)) => matches!(r, Ok(Ok(()))),
            _ = kicked.cancelled() => false,
        }
    }

    async fn close_too_slow(&mut self) {
        let reason = match self.last_sent {
            Some(seq) => format!("too slow: reconnect with since={seq}"),
            None => "too slow: reconnect with since=<last seq>".to_string(),
        };
        self.close(CLOSE_TOO_SLOW, &reason).await;
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(frame)).await;
        // Wait briefly for the client's close reply so the close frame is not cut off.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = self.socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Sleeps until the session's token expires.
pub(crate) fn expiry_sleep(session: &Session) -> tokio::time::Sleep {
    let secs = session
        .user
        .seconds_left()
        .unwrap_or(u64::MAX / 4)
        .min(86_400 * 365);
    tokio::time::sleep(Duration::from_secs(secs))
}
