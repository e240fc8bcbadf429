//! The plain JSON WebSocket protocol at `/ws`: the session protocol as JSON text frames.
//!
//! Client frames: `join`, `leave`, `auth` (token refresh), `ping` ([`ClientFrame`]).
//! Server frames: `welcome`, `joined`, `left`, `event`, `error`, `pong`, `authenticated`,
//! `resync_required` ([`Notice`]). Close codes per [`CloseReason`]: 1001 server shutting
//! down, 4008 too slow, 4401 token expired, 1011 resume failed, 1009 frame too large (a
//! frame far over `hub.max_frame_bytes`, refused from its header).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{StreamQuery, expiry_sleep, parse_since, room_list};
use crate::api::{ApiError, AppState};
use crate::event::Position;
use crate::hub::{Delivery, ResumeError, Scope, Session, Transport};
use crate::protocol::{
    CatchUp, ClientFrame, CloseReason, ErrorCode, Flow, LeftReason, Notice, RESUME_FAILED, Resume,
};

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
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let user = app.auth.authenticate(&headers, q.token.as_deref())?;
    let since = parse_since(q.since.as_deref(), "since")?;
    let rooms: Vec<String> = room_list(q.rooms.as_deref()).map(String::from).collect();
    let limit = app.hub.config().ws_frame_limit();
    Ok(ws
        // Frames over the protocol limit are answered with an error frame; frames over it by
        // more than a quarter are refused by the WebSocket layer from their header, before
        // their payload is buffered, and the session is closed (1009).
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let session = app.hub.open(user, Transport::WebSocket);
            Conn {
                app,
                socket,
                session,
                resume: Resume::new(since),
                last_sent: None,
            }
            .run(rooms)
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

/// The `event` frame for one delivery, encoded once for every `/ws` session that receives
/// it through the same room with the same view.
pub fn shared_event_frame(d: &Delivery) -> Utf8Bytes {
    d.encoded(Transport::WebSocket, Scope::Room, |d| {
        Utf8Bytes::from(event_frame(d))
    })
}

/// The `event` frame for one delivery.
pub fn event_frame(d: &Delivery) -> String {
    serde_json::to_string(&EventFrame {
        kind: "event",
        event: &d.event.name,
        room: d.room(),
        seq: d.event.seq,
        payload: d.payload(),
    })
    .expect("event frames always serialize")
}

/// The tungstenite error behind an axum WebSocket error, if it is one.
fn ws_error(e: &axum::Error) -> Option<&tungstenite::Error> {
    let inner: &(dyn std::error::Error + 'static) = std::error::Error::source(e)?;
    inner.downcast_ref::<tungstenite::Error>()
}

/// Whether a read failed on a frame or message over the WebSocket limit.
fn is_too_large(e: &axum::Error) -> bool {
    matches!(
        ws_error(e),
        Some(tungstenite::Error::Capacity(
            tungstenite::error::CapacityError::MessageTooLong { .. }
        ))
    )
}

fn too_large_detail(e: &axum::Error) -> String {
    match ws_error(e) {
        Some(tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size,
            ..
        })) => format!("frame of {size} bytes is over the limit, refused unread"),
        _ => "frame over the limit, refused unread".into(),
    }
}

struct Conn {
    app: AppState,
    socket: WebSocket,
    session: Session,
    resume: Resume,
    last_sent: Option<Position>,
}

impl Conn {
    async fn run(mut self, rooms: Vec<String>) {
        let user_room = self.session.user.room();
        let welcome = Notice::Welcome {
            session: self.session.id.to_string(),
            user: &self.session.user.sub,
            roles: &self.session.user.roles,
            rooms: vec![user_room.clone()],
            seq: self.session.opened_at(),
            expires_at: self.session.user.exp,
        };
        if !self.send_notice(welcome.to_text()).await {
            return;
        }
        // The user room was joined by `open` (the welcome lists it); on resume it catches
        // up together with the rooms named at connect, in one ordered replay.
        let owed = self.resume.owed([user_room]);
        if let Flow::Stop = self.join(rooms, None, owed).await {
            return;
        }
        let shutdown = self.app.shutdown.clone();
        let kicked = self.session.kicked.clone();
        let mut ping = tokio::time::interval(self.app.hub.config().ping_interval);
        ping.reset();
        loop {
            let expiry = expiry_sleep(&self.session.user);
            let flow = tokio::select! {
                biased;
                // 1. Shutdown first: tell the client to reconnect elsewhere.
                _ = shutdown.cancelled() => {
                    self.close(CloseReason::ShuttingDown).await;
                    Flow::Stop
                }
                // 2. Too slow: the hub dropped us from every room.
                _ = kicked.cancelled() => {
                    self.close_too_slow().await;
                    Flow::Stop
                }
                // 3. Token lifetime.
                _ = expiry => {
                    self.close(CloseReason::TokenExpired).await;
                    Flow::Stop
                }
                // 4. Client frames.
                msg = self.socket.recv() => match msg {
                    Some(Ok(Message::Text(t))) => self.on_text(t.as_str()).await,
                    Some(Ok(Message::Binary(_))) => self.send_error(ErrorCode::BadRequest, "binary frames are not supported; send JSON text", None, None).await,
                    Some(Err(e)) if is_too_large(&e) => {
                        self.refuse_too_large(&e).await;
                        Flow::Stop
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Flow::Stop,
                    Some(Ok(_)) => Flow::Continue,
                },
                // 5. Live events.
                d = self.session.rx.next() => self.deliver(d).await,
                // 6. Keep-alive.
                _ = ping.tick() => Flow::from_sent(self.send(Message::Ping(Default::default())).await),
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
            let Some(d) = self.session.admit(d) else {
                continue;
            };
            if self.resume.is_new(d.event.seq) {
                frames.push(shared_event_frame(&d));
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
        let frame = match ClientFrame::parse(text, self.app.hub.config().max_frame_bytes) {
            Ok(f) => f,
            Err(e) => {
                return self
                    .send_error(e.code, &e.message, None, e.id.as_ref())
                    .await;
            }
        };
        match frame {
            ClientFrame::Join { rooms, id } => self.join(rooms, id.as_ref(), Vec::new()).await,
            ClientFrame::Leave { rooms, id } => {
                for room in rooms {
                    self.session.leave(&room);
                    self.resume.forget(&room);
                    let left = Notice::Left {
                        room: &room,
                        id: id.as_ref(),
                        reason: None,
                        message: None,
                    };
                    if !self.send_notice(left.to_text()).await {
                        return Flow::Stop;
                    }
                }
                Flow::Continue
            }
            ClientFrame::Auth { token, id } => {
                let refreshed = match self.app.auth.verify(&token) {
                    Ok(user) => self.session.refresh(user).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let refreshed = match refreshed {
                    Ok(r) => r,
                    Err(e) => {
                        return self
                            .send_error(ErrorCode::Unauthorized, &e, None, id.as_ref())
                            .await;
                    }
                };
                // Rooms the new token may not be in are left first, then the refresh is
                // confirmed: after `authenticated`, nothing of those rooms arrives.
                for (room, why) in &refreshed.left {
                    self.resume.forget(room);
                    let left = Notice::Left {
                        room,
                        id: id.as_ref(),
                        reason: Some(LeftReason::AccessRevoked),
                        message: Some(&why.to_string()),
                    };
                    if !self.send_notice(left.to_text()).await {
                        return Flow::Stop;
                    }
                }
                let done = Notice::Authenticated {
                    expires_at: self.session.user.exp,
                    id: id.as_ref(),
                };
                Flow::from_sent(self.send_notice(done.to_text()).await)
            }
            ClientFrame::Ping { id } => {
                let pong = Notice::Pong {
                    id: id.as_ref(),
                    seq: self.last_sent,
                };
                Flow::from_sent(self.send_notice(pong.to_text()).await)
            }
        }
    }

    /// Joins rooms, answers each, then sends what the new rooms (and `owed`, rooms that
    /// were joined before and still owe their catch-up) missed if the client resumed.
    async fn join(
        &mut self,
        rooms: Vec<String>,
        id: Option<&Value>,
        mut owed: Vec<String>,
    ) -> Flow {
        let (results, h) = self.session.join_many(&rooms);
        let mut joined = Vec::new();
        for (room, result) in rooms.into_iter().zip(results) {
            let sent = match &result {
                Ok(_) => {
                    let notice = Notice::Joined {
                        room: &room,
                        seq: h,
                        id,
                    };
                    self.send_notice(notice.to_text()).await
                }
                Err(e) => {
                    let f = self
                        .send_error(e.into(), &e.to_string(), Some(&room), id)
                        .await;
                    matches!(f, Flow::Continue)
                }
            };
            if !sent {
                return Flow::Stop;
            }
            if result.is_ok() {
                joined.push(room);
            }
        }
        owed.extend(self.resume.owed(joined));
        let user_room = self.session.user.room();
        let flow = match self.resume.since() {
            Some(since) if !owed.is_empty() => self.catch_up(owed.clone(), since, h).await,
            _ => Flow::Continue,
        };
        // The user room was live since the session opened, so its queue may already hold
        // events up to `h` that this catch-up just sent: skip those. Only the user room was
        // in the session before this join, so no other room's event is skipped.
        if owed.contains(&user_room) {
            self.resume.skip_through(h);
        }
        flow
    }

    async fn catch_up(&mut self, rooms: Vec<String>, since: Position, until: Position) -> Flow {
        let hub = self.session.hub().clone();
        let mut catch_up = CatchUp::new(rooms, since, until);
        while let Some(page) = catch_up.next(&hub, &self.session.user).await {
            match page {
                Ok(deliveries) => {
                    for d in deliveries {
                        if !self.send(Message::Text(shared_event_frame(&d))).await {
                            return Flow::Stop;
                        }
                        self.last_sent = Some(d.event.seq);
                    }
                }
                Err(ResumeError::ResyncRequired { since, pruned }) => {
                    let resync = catch_up.resync(since, pruned);
                    let text = Notice::ResyncRequired(&resync).to_text();
                    return Flow::from_sent(self.send_notice(text).await);
                }
                Err(e @ ResumeError::Unavailable(_)) => {
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), "resume failed");
                    self.send_error(ErrorCode::Unavailable, RESUME_FAILED, None, None)
                        .await;
                    self.close(CloseReason::ResumeFailed).await;
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    async fn send_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        room: Option<&str>,
        id: Option<&Value>,
    ) -> Flow {
        let frame = Notice::Error {
            code,
            message,
            room,
            id,
        };
        Flow::from_sent(self.send_notice(frame.to_text()).await)
    }

    /// Sends a notice encoded with [`Notice::to_text`].
    async fn send_notice(&mut self, text: String) -> bool {
        self.send(Message::Text(Utf8Bytes::from(text))).await
    }

    /// Sends text frames with one flush, unless the session is kicked or the write stalls.
    async fn send_all(&mut self, frames: Vec<Utf8Bytes>) -> bool {
        let kicked = self.session.kicked.clone();
        let socket = &mut self.socket;
        let write = async move {
            for f in frames {
                socket.feed(Message::Text(f)).await?;
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

    /// A frame over the WebSocket limit, refused from its header: its payload is never
    /// read, so the connection cannot go on. Says why (`frame_too_large`), then closes with
    /// 1009 without reading anything more.
    async fn refuse_too_large(&mut self, e: &axum::Error) {
        let max = self.app.hub.config().max_frame_bytes;
        let message = format!("{}; the limit is {max} bytes", too_large_detail(e));
        metrics::counter!("rowcast_frames_refused_total", "reason" => "too_large").increment(1);
        let _ = self
            .send_error(ErrorCode::FrameTooLarge, &message, None, None)
            .await;
        let frame = Message::Close(Some(CloseFrame {
            code: CloseReason::FrameTooLarge.ws_close_code(),
            reason: CloseReason::FrameTooLarge
                .message(Transport::WebSocket)
                .into(),
        }));
        let _ = tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(frame)).await;
        // The client's reply cannot be read (its unread payload comes first): give it a
        // moment to take the close frame before the connection is dropped.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn close_too_slow(&mut self) {
        self.close(CloseReason::TooSlow {
            last_sent: self.last_sent,
        })
        .await;
    }

    async fn close(&mut self, reason: CloseReason) {
        let frame = Message::Close(Some(CloseFrame {
            code: reason.ws_close_code(),
            reason: reason.message(Transport::WebSocket).into(),
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
