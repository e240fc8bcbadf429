//! Socket.IO v4 at `/socket.io/` (socketioxide, default namespace): a thin adapter over a hub
//! [`Session`], so `socket.io-client` shares rooms, auth, payloads and resume with `/ws`.
//!
//! Handshake `auth: { token, since }` is checked by a connect middleware (refusals reach the
//! client as `connect_error`). Client events: `join` / `leave` (a room or an array, answered
//! through the acknowledgement). Server events: each event under its name (`ticket.update`,
//! `notification`, ...) with the contract payload, `resync_required`, and `rowcast:error`
//! right before the server disconnects a socket (too slow, token expired, resume failed).

mod head;
mod pending;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::EncodedPacket;
use socketioxide::{SendError, SocketError, SocketIo};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use socketioxide::extensions::RecoveryPid;
use uuid::Uuid;

use super::expiry_sleep;
use crate::api::AppState;
use crate::api::auth::AuthError;
use crate::event::Position;
use crate::hub::queue::Queue;
use crate::hub::{Delivery, MAX_ROOMS, ResumeError, Scope, Session, Transport};
use crate::protocol::{CatchUp, CloseReason, ErrorCode, Flow, Resume, Resync, rooms_arg};
use crate::recovery::{Outcome, Recovery};

pub use head::own_request_head;
pub use pending::{Pending, admit};

/// Where Socket.IO is served (socketioxide's default, set explicitly for
/// [`own_request_head`]).
const PATH: &str = "/socket.io";
/// How long one emit may wait for room in the socket's buffer before the client counts as
/// too slow.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while the socket's buffer is full (socketioxide has no async reserve).
const FULL_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait for the recovery lookup of a reconnect; then it is a fresh connect.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// `join` / `leave` requests waiting for the socket's task; more are refused with `busy`.
const PENDING_REQUESTS: usize = 16;
/// engine.io's WebSocket read buffer per socket (its default is 4 KiB). Clients only send
/// small join/leave requests; a longer frame still arrives whole, in several reads.
const WS_READ_BUFFER: usize = 1024;

/// Why a handshake was refused. The text is the `connect_error` message the client sees.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unauthorized: missing token; connect with io(url, {{ auth: {{ token: '<jwt>' }} }})")]
    MissingToken,
    #[error("unauthorized: {0}")]
    Auth(#[from] AuthError),
    #[error("bad_request: {0}")]
    BadHandshake(String),
    #[error("unavailable: the server is shutting down; reconnect")]
    ShuttingDown,
}

/// The Socket.IO layer for the server's router. Closes every Socket.IO connection (the
/// clients see a transport close and reconnect on their own) when `app.shutdown` fires.
pub fn layer(app: AppState, connect_timeout: Duration) -> SocketIoLayer {
    let hub = app.hub.config().clone();
    let (layer, io) = SocketIo::builder()
        .with_state(app.clone())
        .req_path(PATH)
        .connect_timeout(connect_timeout)
        .ping_interval(hub.ping_interval)
        .ws_read_buffer_size(WS_READ_BUFFER)
        // Clients only send small join/leave requests.
        .max_payload(hub.max_frame_bytes as u64)
        // Larger frames are refused from their header, before their payload is read (the
        // engine closes the connection).
        .ws_max_message_size(hub.ws_frame_limit())
        .ws_max_frame_size(hub.ws_frame_limit())
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        io.close().await;
    });
    layer
}

/// A join or leave request, answered by the socket's task so that the acknowledgement and
/// the catch-up are ordered with live events.
enum Request {
    Join(Vec<String>, AckSender),
    Leave(Vec<String>, AckSender),
}

/// The socket's pending join/leave requests, filled by its event handlers and drained in
/// order by its task; closed when the task ends (queued requests hold the socket, whose
/// handlers hold this queue: they must not outlive the task).
type Requests = Queue<Request>;

/// What the middleware prepared for the connect handler (taken exactly once).
struct Prepared {
    session: Session,
    /// `auth.since`, or the recovered offset: the client resumes after it.
    since: Option<Position>,
    /// The socket's recovery pid.
    pid: Uuid,
    /// A recovered session's rooms, to rejoin.
    rooms: Vec<String>,
    /// The recovery offset was pruned: `(offset, pruned)`.
    resync: Option<(Position, Position)>,
    requests: Arc<Requests>,
    gone: CancellationToken,
}

#[derive(Clone)]
struct PreparedSlot(Arc<Mutex<Option<Prepared>>>);

/// Connect middleware: verifies `auth.token` (or `Authorization: Bearer` / `?token=` on the
/// handshake request), reads `auth.since`, opens the hub session and registers the event
/// handlers before the client is told it is connected, so no early `join` is lost.
async fn authenticate(
    socket: SocketRef,
    State(app): State<AppState>,
    TryData(auth): TryData<Value>,
) -> Result<(), ConnectError> {
    if app.shutdown.is_cancelled() {
        return Err(ConnectError::ShuttingDown);
    }
    let auth = auth.unwrap_or(Value::Null);
    let token = match auth.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if !t.is_empty() => Some(t.as_str()),
        Some(_) => {
            return Err(ConnectError::BadHandshake(
                "auth.token must be a string (a JWT)".into(),
            ));
        }
    };
    let user = match token {
        Some(t) => app.auth.verify(t)?,
        None => {
            let parts = socket.req_parts();
            let query_token = parts.uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .filter(|t| !t.is_empty())
            });
            match app.auth.authenticate(&parts.headers, query_token) {
                Err(AuthError::Missing) => return Err(ConnectError::MissingToken),
                r => r?,
            }
        }
    };
    let mut since = match auth.get("since") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(
            s.parse::<Position>()
                .map_err(|e| ConnectError::BadHandshake(format!("auth.since: {e}")))?,
        ),
        Some(_) => {
            return Err(ConnectError::BadHandshake(
                "auth.since must be the `seq` string of the last event received".into(),
            ));
        }
    };
    // Connection-state recovery: socket.io-client sends back the pid of its CONNECT answer
    // and the last event's trailing `seq` (its offset). Anything unusable is a fresh connect.
    let recovering = app.hub.config().socketio_recovery;
    let recovery = match auth
        .get("pid")
        .and_then(Value::as_str)
        .filter(|_| recovering)
    {
        None => Outcome::Fresh,
        Some(pid) => {
            let offset = auth.get("offset").and_then(Value::as_str);
            let asked = app.recovery.recover(&user, pid, offset);
            match tokio::time::timeout(RECOVERY_TIMEOUT, asked).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), "Socket.IO recovery lookup failed: a fresh connect");
                    Outcome::Fresh
                }
                Err(_) => {
                    tracing::warn!("Socket.IO recovery lookup timed out: a fresh connect");
                    Outcome::Fresh
                }
            }
        }
    };
    let (pid, rooms, resync) = match recovery {
        Outcome::Recovered {
            pid,
            rooms,
            since: from,
        } => {
            since = Some(from);
            metrics::counter!("rowcast_socketio_recoveries_total", "outcome" => "recovered")
                .increment(1);
            (pid, rooms, None)
        }
        Outcome::Expired {
            since: from,
            pruned,
        } => {
            metrics::counter!("rowcast_socketio_recoveries_total", "outcome" => "expired")
                .increment(1);
            (Recovery::new_pid(), Vec::new(), Some((from, pruned)))
        }
        Outcome::Fresh => {
            if recovering && auth.get("pid").is_some() {
                metrics::counter!("rowcast_socketio_recoveries_total", "outcome" => "fresh")
                    .increment(1);
            }
            (Recovery::new_pid(), Vec::new(), None)
        }
    };
    // The CONNECT answer carries the pid (vendor/socketioxide, PATCHES.md): the same one
    // when the session is recovered, so the client's `socket.recovered` is true.
    if recovering {
        socket.extensions.insert(RecoveryPid(pid.to_string()));
    }

    let session = app.hub.open(user, Transport::SocketIo);
    let requests = Arc::new(Requests::new(PENDING_REQUESTS));
    let gone = CancellationToken::new();
    for (name, is_join) in [("join", true), ("leave", false)] {
        let tx = requests.clone();
        socket.on(
            name,
            async move |TryData(v): TryData<Value>, ack: AckSender| {
                let rooms = match v.ok().as_ref().and_then(rooms_arg) {
                    Some(r) => r,
                    None => {
                        let msg = format!(
                            "{name} takes a room name or an array of 1 to {MAX_ROOMS} room names"
                        );
                        let _ = ack.send(&refusal(ErrorCode::BadRequest, &msg));
                        return;
                    }
                };
                let req = if is_join {
                    Request::Join(rooms, ack)
                } else {
                    Request::Leave(rooms, ack)
                };
                if let Err(req) = tx.push(req) {
                    let (Request::Join(_, ack) | Request::Leave(_, ack)) = req;
                    let msg = "too many join/leave requests in flight; wait for their answers";
                    let _ = ack.send(&refusal(ErrorCode::Busy, msg));
                }
            },
        );
    }
    let on_gone = gone.clone();
    socket.on_disconnect(async move || on_gone.cancel());
    socket
        .extensions
        .insert(PreparedSlot(Arc::new(Mutex::new(Some(Prepared {
            session,
            since,
            pid,
            rooms,
            resync,
            requests,
            gone,
        })))));
    Ok(())
}

/// Connect handler: starts the socket's task.
async fn on_connect(
    socket: SocketRef,
    State(app): State<AppState>,
    Extension(slot): Extension<PreparedSlot>,
) {
    let prepared = slot.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    socket.extensions.remove::<PreparedSlot>();
    // Authenticated: the handshake no longer counts as pending (`http.max_pending_socketio`).
    if let Some(pending) = socket.req_parts().extensions.get::<pending::PendingSlot>() {
        pending.release();
    }
    let Some(p) = prepared else { return };
    Conn {
        socket,
        session: p.session,
        resume: Resume::new(p.since),
        pid: p.pid,
        recovery: app
            .hub
            .config()
            .socketio_recovery
            .then(|| app.recovery.clone()),
        requests: p.requests,
        gone: p.gone,
        shutdown: app.shutdown.clone(),
        last_sent: None,
    }
    .run(p.rooms, p.resync)
    .await
}

fn refusal(code: ErrorCode, message: &str) -> Value {
    json!({ "ok": false, "code": code, "error": message })
}

/// One connected socket: the only place that emits to it, so catch-up and live events stay
/// in order.
struct Conn {
    socket: SocketRef,
    session: Session,
    resume: Resume,
    /// The recovery pid, under which the socket's rooms are recorded.
    pid: Uuid,
    /// `None` when recovery is off (`hub.socketio_recovery`).
    recovery: Option<Arc<Recovery>>,
    requests: Arc<Requests>,
    /// Cancelled when the client disconnected.
    gone: CancellationToken,
    shutdown: CancellationToken,
    last_sent: Option<Position>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.requests.close();
    }
}

/// What one emit sends: data to encode for this socket, or a packet encoded once for all.
enum Out<'a, T: ?Sized> {
    Data(&'a T),
    Packet(&'a EncodedPacket),
}

/// Outcome of one emit.
enum Sent {
    Yes,
    /// The socket's buffer stayed full for [`WRITE_TIMEOUT`] or the session was kicked.
    TooSlow,
    /// The client is gone or the server is shutting down.
    Closed,
}

impl Conn {
    async fn run(mut self, rooms: Vec<String>, resync: Option<(Position, Position)>) {
        // Boxed, like the other rare paths below: keeps the idle per-socket task small.
        if let Flow::Stop = Box::pin(self.start(rooms, resync)).await {
            return;
        }
        let kicked = self.session.kicked.clone();
        let gone = self.gone.clone();
        let shutdown = self.shutdown.clone();
        let requests = self.requests.clone();
        loop {
            let expiry = expiry_sleep(&self.session.user);
            let flow = tokio::select! {
                biased;
                // 1. Shutdown: the layer closes every transport; clients reconnect elsewhere.
                _ = shutdown.cancelled() => Flow::Stop,
                // 2. The client left.
                _ = gone.cancelled() => Flow::Stop,
                // 3. Too slow: the hub dropped us from every room.
                _ = kicked.cancelled() => {
                    Box::pin(self.close_too_slow()).await;
                    Flow::Stop
                }
                // 4. Token lifetime.
                _ = expiry => {
                    Box::pin(self.close(CloseReason::TokenExpired)).await;
                    Flow::Stop
                }
                // 5. join / leave.
                r = requests.next() => match r {
                    Request::Join(rooms, ack) => Box::pin(self.join(rooms, ack)).await,
                    Request::Leave(rooms, ack) => self.leave(rooms, ack),
                },
                // 6. Live events.
                d = self.session.rx.next() => self.deliver(d).await,
            };
            if let Flow::Stop = flow {
                break;
            }
        }
    }

    /// Before live events: a recovered session rejoins its rooms, and a resuming one gets
    /// what its rooms (and its private room, live since the session opened) missed, in one
    /// ordered replay; an expired recovery is told to resync.
    async fn start(&mut self, rooms: Vec<String>, resync: Option<(Position, Position)>) -> Flow {
        if let Some((since, pruned)) = resync {
            let until = self.session.opened_at();
            let body = Resync::new(since, pruned, until, Vec::new());
            return self
                .emit_event("resync_required", &(&body, until.to_string()))
                .await;
        }
        let Some(since) = self.resume.since() else {
            return Flow::Continue;
        };
        let (results, h) = self.session.join_many(&rooms);
        let joined: Vec<String> = rooms
            .into_iter()
            .zip(results)
            .filter_map(|(room, r)| r.ok().map(|_| room))
            .collect();
        if !joined.is_empty() {
            self.record(h);
        }
        let user_room = self.session.user.room();
        let owed = self.resume.owed(std::iter::once(user_room).chain(joined));
        let flow = self.catch_up(owed, since, h).await;
        // As on `/ws`: the private room's queue may hold events up to `h` just replayed.
        self.resume.skip_through(h);
        flow
    }

    /// Records the socket's rooms for its recovery (at hub position `h`).
    fn record(&self, h: Position) {
        let Some(recovery) = &self.recovery else {
            return;
        };
        let user_room = self.session.user.room();
        let rooms: Vec<String> = self
            .session
            .rooms()
            .into_iter()
            .filter(|r| *r != user_room)
            .collect();
        recovery.record(self.pid, &self.session.user, rooms, h);
    }

    async fn deliver(&mut self, d: Delivery) -> Flow {
        if !self.resume.is_new(d.event.seq) {
            return Flow::Continue;
        }
        let flow = self.emit_delivery(&d).await;
        if let Flow::Continue = flow {
            self.last_sent = Some(d.event.seq);
        }
        flow
    }

    /// Joins rooms, answers through the ack, then sends what the new rooms missed if the
    /// client resumed (same rules as `/ws`).
    async fn join(&mut self, rooms: Vec<String>, ack: AckSender) -> Flow {
        let (results, h) = self.session.join_many(&rooms);
        let mut joined = Vec::new();
        let mut refused = Vec::new();
        for (room, result) in rooms.into_iter().zip(results) {
            match result {
                Ok(_) => joined.push(room),
                Err(e) => refused.push((room, e)),
            }
        }
        let answer = match refused.first() {
            None => json!({ "ok": true, "rooms": joined, "seq": h }),
            Some((room, e)) => json!({
                "ok": false,
                "code": ErrorCode::from(e),
                "error": e.to_string(),
                "room": room,
                "rooms": joined,
                "refused": refused.iter().map(|(r, e)| json!({
                    "room": r, "code": ErrorCode::from(e), "error": e.to_string()
                })).collect::<Vec<_>>(),
                "seq": h,
            }),
        };
        let _ = ack.send(&answer);
        if !joined.is_empty() {
            self.record(h);
        }
        let Some(since) = self.resume.since() else {
            return Flow::Continue;
        };
        let owed = self.resume.owed(joined);
        if owed.is_empty() {
            return Flow::Continue;
        }
        self.catch_up(owed, since, h).await
    }

    fn leave(&mut self, rooms: Vec<String>, ack: AckSender) -> Flow {
        if rooms.contains(&self.session.user.room()) {
            let _ = ack.send(&refusal(
                ErrorCode::Forbidden,
                "your private user room cannot be left",
            ));
            return Flow::Continue;
        }
        for room in &rooms {
            self.session.leave(room);
            self.resume.forget(room);
        }
        self.record(self.session.hub().position());
        let _ = ack.send(&json!({ "ok": true, "rooms": rooms }));
        Flow::Continue
    }

    /// Sends the events in `(since, until]` for `rooms`, page by page, in log order.
    async fn catch_up(&mut self, rooms: Vec<String>, since: Position, until: Position) -> Flow {
        let hub = self.session.hub().clone();
        let mut catch_up = CatchUp::new(rooms, since, until);
        // Boxed: keeps the idle per-socket future small.
        while let Some(page) = Box::pin(catch_up.next(&hub, &self.session.user)).await {
            match page {
                Ok(deliveries) => {
                    for d in deliveries {
                        if let Flow::Stop = self.emit_delivery(&d).await {
                            return Flow::Stop;
                        }
                        self.last_sent = Some(d.event.seq);
                    }
                }
                Err(ResumeError::ResyncRequired { since, pruned }) => {
                    // The offset moves on to where the client continues.
                    let resync = catch_up.resync(since, pruned);
                    let until = catch_up.until().to_string();
                    return self.emit_event("resync_required", &(&resync, until)).await;
                }
                Err(e @ ResumeError::Unavailable(_)) => {
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), "Socket.IO resume failed");
                    self.close(CloseReason::ResumeFailed).await;
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    /// Emits an event. With recovery on, its seq is the trailing string argument:
    /// socket.io-client keeps it as the offset it recovers from (listeners get the payload
    /// as their first argument, as before). The packet is encoded once for every socket
    /// that receives this event with the same view ([`Delivery::encoded`]).
    async fn emit_delivery(&mut self, d: &Delivery) -> Flow {
        let recovery = self.recovery.is_some();
        let socket = &self.socket;
        let packet = d.encoded(Transport::SocketIo, Scope::View, |d| {
            let encoded = if recovery {
                let args = (d.payload(), d.event.seq.to_string());
                socket.encode_event(&d.event.name, &args)
            } else {
                socket.encode_event(&d.event.name, d.payload())
            };
            encoded.map_err(|e| e.to_string())
        });
        match packet {
            Ok(packet) => {
                self.send_flow(&d.event.name, &Out::<()>::Packet(&packet))
                    .await
            }
            Err(e) => {
                tracing::error!(error = %e, event = %d.event.name, "cannot encode a Socket.IO event");
                Flow::Continue
            }
        }
    }

    async fn emit_event<T: Serialize + ?Sized>(&mut self, name: &str, data: &T) -> Flow {
        self.send_flow(name, &Out::Data(data)).await
    }

    async fn send_flow<T: Serialize + ?Sized>(&mut self, name: &str, out: &Out<'_, T>) -> Flow {
        match self.emit(name, out, true).await {
            Sent::Yes => Flow::Continue,
            Sent::TooSlow => {
                Box::pin(self.close_too_slow()).await;
                Flow::Stop
            }
            Sent::Closed => Flow::Stop,
        }
    }

    /// Emits without ever blocking the hub: while socketioxide's per-socket buffer is full
    /// the event waits here (and later ones in the bounded session queue, whose overflow
    /// kicks the session); a buffer full for [`WRITE_TIMEOUT`] counts as too slow.
    async fn emit<T: Serialize + ?Sized>(
        &self,
        name: &str,
        out: &Out<'_, T>,
        watch_kick: bool,
    ) -> Sent {
        match self.try_emit(name, out) {
            Some(sent) => sent,
            // Boxed: the waiting state stays out of the idle per-socket task.
            None => Box::pin(self.emit_when_room(name, out, watch_kick)).await,
        }
    }

    /// One emit attempt; `None` while the socket's buffer is full.
    fn try_emit<T: Serialize + ?Sized>(&self, name: &str, out: &Out<'_, T>) -> Option<Sent> {
        let sent = match out {
            Out::Data(data) => self.socket.emit(name, *data),
            Out::Packet(packet) => self.socket.emit_encoded(packet).map_err(SendError::Socket),
        };
        match sent {
            Ok(()) => Some(Sent::Yes),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => None,
            Err(SendError::Socket(_)) => Some(Sent::Closed),
            Err(SendError::Serialize(e)) => {
                tracing::error!(error = %e, event = name, "cannot encode a Socket.IO event");
                Some(Sent::Yes)
            }
        }
    }

    /// [`Self::emit`] while the socket's buffer is full: retries until there is room.
    async fn emit_when_room<T: Serialize + ?Sized>(
        &self,
        name: &str,
        out: &Out<'_, T>,
        watch_kick: bool,
    ) -> Sent {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            if Instant::now() >= deadline {
                return Sent::TooSlow;
            }
            tokio::select! {
                _ = tokio::time::sleep(FULL_BACKOFF) => {}
                _ = self.session.kicked.cancelled(), if watch_kick => return Sent::TooSlow,
                _ = self.gone.cancelled() => return Sent::Closed,
                _ = self.shutdown.cancelled() => return Sent::Closed,
            }
            if let Some(sent) = self.try_emit(name, out) {
                return sent;
            }
        }
    }

    async fn close_too_slow(&mut self) {
        self.close(CloseReason::TooSlow {
            last_sent: self.last_sent,
        })
        .await;
    }

    /// Tells the client why (`rowcast:error`), then disconnects it. Both packets need room
    /// in the socket's buffer; a client that never makes room is dropped by the engine.io
    /// heartbeat instead.
    async fn close(&mut self, reason: CloseReason) {
        let code = reason.code();
        tracing::debug!(session = self.session.id, code, "closing Socket.IO session");
        let message = reason.message(Transport::SocketIo);
        let body = json!({ "code": code, "message": message, "seq": self.last_sent });
        if let Sent::Closed = self.emit("rowcast:error", &Out::Data(&body), false).await {
            return;
        }
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            match self.socket.clone().disconnect() {
                Err(SocketError::InternalChannelFull) if Instant::now() < deadline => {}
                _ => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(FULL_BACKOFF) => {}
                _ = self.gone.cancelled() => return,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
