//! Socket.IO v4 at `/socket.io/` (socketioxide, default namespace): a thin adapter over a hub
//! [`Session`], so `socket.io-client` shares rooms, auth, payloads and resume with `/ws`.
//!
//! Handshake `auth: { token, since }` is checked by a connect middleware (refusals reach the
//! client as `connect_error`). Client events: `join` / `leave` (a room or an array, answered
//! through the acknowledgement). Server events: each event under its name (`ticket.update`,
//! `notification`, ...) with the contract payload, `resync_required`, and `rowcast:error`
//! right before the server disconnects a socket (too slow, token expired, resume failed).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::OriginalUri;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri};
use bytes::BytesMut;
use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SendError, SocketError, SocketIo};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::Queue;
use super::{Delivery, MAX_ROOMS, ResumeError, Session, Transport};
use crate::api::AppState;
use crate::api::auth::AuthError;
use crate::event::Position;

/// Where Socket.IO is served (socketioxide's default, set explicitly for
/// [`own_request_head`]).
const PATH: &str = "/socket.io";
/// How long one emit may wait for room in the socket's buffer before the client counts as
/// too slow.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while the socket's buffer is full (socketioxide has no async reserve).
const FULL_BACKOFF: Duration = Duration::from_millis(10);
/// `join` / `leave` requests waiting for the socket's task; more are refused with `busy`.
const PENDING_REQUESTS: usize = 16;
/// engine.io's WebSocket read buffer per socket (its default is 4 KiB). Clients only send
/// small join/leave requests; a longer frame still arrives whole, in several reads.
const WS_READ_BUFFER: usize = 1024;
/// Events per catch-up page.
const CATCH_UP_PAGE: usize = 500;

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

/// The Socket.IO layer for `crate::server::router`. Closes every Socket.IO connection (the
/// clients see a transport close and reconnect on their own) when `app.shutdown` fires.
pub fn layer(app: AppState) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder()
        .with_state(app.clone())
        .req_path(PATH)
        .ping_interval(app.config.hub.ping_interval)
        .ws_read_buffer_size(WS_READ_BUFFER)
        // Clients only send small join/leave requests.
        .max_payload(app.config.hub.max_frame_bytes as u64)
        .ws_max_message_size(app.config.hub.max_frame_bytes.saturating_mul(16))
        .ws_max_frame_size(app.config.hub.max_frame_bytes.saturating_mul(16))
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        io.close().await;
    });
    layer
}

/// Middleware for the Socket.IO path (outside [`layer`]): gives the request's URI and header
/// values one small allocation of their own.
///
/// hyper parses them as slices of the connection's HTTP/1 read buffer (8–16 KiB), and
/// engine.io keeps the head of the request that opened a socket for the socket's whole
/// life (`SocketRef::req_parts`): without the copy every Socket.IO connection pins that
/// buffer after the upgrade (docs/benchmarks.md, "memory").
pub async fn own_request_head(req: axum::extract::Request) -> axum::extract::Request {
    if !req.uri().path().starts_with(PATH) {
        return req;
    }
    let (mut parts, body) = req.into_parts();
    own_head(&mut parts);
    axum::extract::Request::from_parts(parts, body)
}

fn own_head(parts: &mut Parts) {
    let uri = parts.uri.to_string();
    // axum's router keeps a clone of the URI as it arrived (for `OriginalUri`).
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map(|o| o.0.to_string())
        .unwrap_or_default();
    let values: usize = parts.headers.values().map(HeaderValue::len).sum();
    let mut buf = BytesMut::with_capacity(uri.len() + original.len() + values);
    buf.extend_from_slice(uri.as_bytes());
    buf.extend_from_slice(original.as_bytes());
    for v in parts.headers.values() {
        buf.extend_from_slice(v.as_bytes());
    }
    let buf = buf.freeze();
    if let Ok(owned) = Uri::from_maybe_shared(buf.slice(..uri.len())) {
        parts.uri = owned;
    }
    let mut at = uri.len();
    if !original.is_empty() {
        let end = at + original.len();
        if let Ok(owned) = Uri::from_maybe_shared(buf.slice(at..end)) {
            parts.extensions.insert(OriginalUri(owned));
        }
        at = end;
    }
    // `values` and `values_mut` visit the same values in the same order.
    for v in parts.headers.values_mut() {
        let end = at + v.len();
        if let Ok(mut owned) = HeaderValue::from_maybe_shared(buf.slice(at..end)) {
            owned.set_sensitive(v.is_sensitive());
            *v = owned;
        }
        at = end;
    }
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
    let since = match auth.get("since") {
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

    let mut session = app.hub.open(user, Transport::SocketIo);
    if let Some(s) = since {
        session.set_resume(s);
    }
    let requests = Arc::new(Requests::new(PENDING_REQUESTS));
    let gone = CancellationToken::new();
    for (name, is_join) in [("join", true), ("leave", false)] {
        let tx = requests.clone();
        socket.on(
            name,
            async move |TryData(v): TryData<Value>, ack: AckSender| {
                let rooms = match v.ok().as_ref().and_then(parse_rooms) {
                    Some(r) => r,
                    None => {
                        let msg = format!(
                            "{name} takes a room name or an array of 1 to {MAX_ROOMS} room names"
                        );
                        let _ = ack.send(&refusal("bad_request", &msg));
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
                    let _ = ack.send(&refusal("busy", msg));
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
    let Some(p) = prepared else { return };
    Conn {
        socket,
        session: p.session,
        requests: p.requests,
        gone: p.gone,
        shutdown: app.shutdown.clone(),
        caught_up: HashSet::new(),
        last_sent: None,
    }
    .run()
    .await
}

/// A room name or an array of room names.
fn parse_rooms(v: &Value) -> Option<Vec<String>> {
    // socket.io-client sends the arguments as an array: `emit('join', x)` arrives as `[x]`.
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

fn refusal(code: &str, message: &str) -> Value {
    json!({ "ok": false, "code": code, "error": message })
}

/// One connected socket: the only place that emits to it, so catch-up and live events stay
/// in order.
struct Conn {
    socket: SocketRef,
    session: Session,
    requests: Arc<Requests>,
    /// Cancelled when the client disconnected.
    gone: CancellationToken,
    shutdown: CancellationToken,
    /// Rooms that already received their resume catch-up.
    caught_up: HashSet<String>,
    last_sent: Option<Position>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.requests.close();
    }
}

enum Flow {
    Continue,
    Stop,
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
    async fn run(mut self) {
        // The private user room was joined when the session opened: on resume it misses
        // exactly the events up to that moment.
        if let Some(since) = self.session.resume_point() {
            let user_room = format!("user:{}", self.session.user.sub);
            self.caught_up.insert(user_room.clone());
            let until = self.session.opened_at();
            // Boxed, like the other rare paths below: keeps the idle per-socket task small.
            let caught_up = Box::pin(self.catch_up(vec![user_room], since, until)).await;
            if let Flow::Stop = caught_up {
                return;
            }
        }
        let kicked = self.session.kicked.clone();
        let gone = self.gone.clone();
        let shutdown = self.shutdown.clone();
        let requests = self.requests.clone();
        loop {
            let expiry = super::ws::expiry_sleep(&self.session);
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
                    let msg = "token expired; reconnect with a new token";
                    Box::pin(self.close("token_expired", msg.into())).await;
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

    async fn deliver(&mut self, d: Delivery) -> Flow {
        if !self.session.is_new(&d) {
            return Flow::Continue;
        }
        let flow = self.emit_event(&d.event.name, &*d.event.payload).await;
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
                "code": e.code(),
                "error": e.to_string(),
                "room": room,
                "rooms": joined,
                "refused": refused.iter().map(|(r, e)| json!({
                    "room": r, "code": e.code(), "error": e.to_string()
                })).collect::<Vec<_>>(),
                "seq": h,
            }),
        };
        let _ = ack.send(&answer);
        let Some(since) = self.session.resume_point() else {
            return Flow::Continue;
        };
        let fresh: Vec<String> = joined
            .into_iter()
            .filter(|r| self.caught_up.insert(r.clone()))
            .collect();
        if fresh.is_empty() {
            return Flow::Continue;
        }
        self.catch_up(fresh, since, h).await
    }

    fn leave(&mut self, rooms: Vec<String>, ack: AckSender) -> Flow {
        let user_room = format!("user:{}", self.session.user.sub);
        if rooms.contains(&user_room) {
            let _ = ack.send(&refusal(
                "forbidden",
                "your private user room cannot be left",
            ));
            return Flow::Continue;
        }
        for room in &rooms {
            self.session.leave(room);
            self.caught_up.remove(room);
        }
        let _ = ack.send(&json!({ "ok": true, "rooms": rooms }));
        Flow::Continue
    }

    /// Sends the events in `(since, until]` for `rooms`, page by page, in log order.
    async fn catch_up(&mut self, rooms: Vec<String>, since: Position, until: Position) -> Flow {
        let hub = self.session.hub().clone();
        let mut after = since;
        loop {
            // Boxed: keeps the idle per-socket future small.
            let page = Box::pin(hub.catch_up_page(&rooms, after, until, CATCH_UP_PAGE)).await;
            match page {
                Ok((events, next)) => {
                    for (ev, _) in events {
                        if let Flow::Stop = self.emit_event(&ev.name, &*ev.payload).await {
                            return Flow::Stop;
                        }
                        self.last_sent = Some(ev.seq);
                    }
                    match next {
                        Some(n) => after = n,
                        None => return Flow::Continue,
                    }
                }
                Err(ResumeError::ResyncRequired { since, pruned }) => {
                    let body = json!({
                        "since": since,
                        "oldest": pruned,
                        "seq": until,
                        "rooms": rooms,
                        "message": "events you missed were pruned: refetch your data, then continue from `seq`",
                    });
                    return self.emit_event("resync_required", &body).await;
                }
                Err(e @ ResumeError::Db(_)) => {
                    tracing::warn!(error = %e, "Socket.IO resume failed");
                    let msg = "missed events could not be loaded; reconnect to retry";
                    self.close("unavailable", msg.into()).await;
                    return Flow::Stop;
                }
            }
        }
    }

    async fn emit_event<T: Serialize + ?Sized>(&mut self, name: &str, data: &T) -> Flow {
        match self.emit(name, data, true).await {
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
    async fn emit<T: Serialize + ?Sized>(&self, name: &str, data: &T, watch_kick: bool) -> Sent {
        match self.try_emit(name, data) {
            Some(sent) => sent,
            // Boxed: the waiting state stays out of the idle per-socket task.
            None => Box::pin(self.emit_when_room(name, data, watch_kick)).await,
        }
    }

    /// One emit attempt; `None` while the socket's buffer is full.
    fn try_emit<T: Serialize + ?Sized>(&self, name: &str, data: &T) -> Option<Sent> {
        match self.socket.emit(name, data) {
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
        data: &T,
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
            if let Some(sent) = self.try_emit(name, data) {
                return sent;
            }
        }
    }

    async fn close_too_slow(&mut self) {
        let message = match self.last_sent {
            Some(seq) => format!("too slow: reconnect with auth.since = \"{seq}\""),
            None => "too slow: reconnect with auth.since = <last seq>".to_string(),
        };
        self.close("too_slow", message).await;
    }

    /// Tells the client why (`rowcast:error`), then disconnects it. Both packets need room
    /// in the socket's buffer; a client that never makes room is dropped by the engine.io
    /// heartbeat instead.
    async fn close(&mut self, code: &str, message: String) {
        tracing::debug!(session = self.session.id, code, "closing Socket.IO session");
        let body = json!({ "code": code, "message": message, "seq": self.last_sent });
        if let Sent::Closed = self.emit("rowcast:error", &body, false).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_head_is_copied_unchanged() {
        let req = axum::http::Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket&token=abc")
            .header("host", "127.0.0.1:8080")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        let original = OriginalUri(parts.uri.clone());
        parts.extensions.insert(original);
        parts
            .headers
            .get_mut("sec-websocket-key")
            .unwrap()
            .set_sensitive(true);
        let before = parts.clone();
        own_head(&mut parts);
        assert_eq!(parts.uri, before.uri);
        assert_eq!(
            parts.uri.query(),
            Some("EIO=4&transport=websocket&token=abc")
        );
        assert_eq!(parts.extensions.get::<OriginalUri>().unwrap().0, before.uri);
        assert_eq!(parts.headers, before.headers);
        let multi: Vec<_> = parts.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
        assert!(parts.headers["sec-websocket-key"].is_sensitive());
    }

    /// The point of the copy: nothing in the head still refers to the buffer it was parsed
    /// from (hyper's read buffer), so the buffer is freed once the request is handled.
    #[test]
    fn the_copied_head_does_not_hold_the_read_buffer() {
        let (path, host) = ("/socket.io/?EIO=4&transport=websocket", "localhost");
        let mut read_buffer = vec![0u8; 16 * 1024];
        read_buffer[..path.len()].copy_from_slice(path.as_bytes());
        read_buffer[path.len()..path.len() + host.len()].copy_from_slice(host.as_bytes());
        let read_buffer = bytes::Bytes::from(read_buffer);
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        parts.uri = Uri::from_maybe_shared(read_buffer.slice(..path.len())).unwrap();
        parts.extensions.insert(OriginalUri(parts.uri.clone()));
        let host_value = read_buffer.slice(path.len()..path.len() + host.len());
        let host_value = HeaderValue::from_maybe_shared(host_value).unwrap();
        parts.headers.insert("host", host_value);
        assert!(!read_buffer.is_unique());
        own_head(&mut parts);
        assert!(
            read_buffer.is_unique(),
            "a copied part still refers to the buffer"
        );
        assert_eq!(parts.uri, path);
        assert_eq!(parts.extensions.get::<OriginalUri>().unwrap().0, path);
        assert_eq!(parts.headers["host"], host);
    }

    #[test]
    fn rooms_are_a_name_or_an_array() {
        assert_eq!(parse_rooms(&json!("tickets")), Some(vec!["tickets".into()]));
        assert_eq!(
            parse_rooms(&json!(["tickets"])),
            Some(vec!["tickets".into()])
        );
        assert_eq!(
            parse_rooms(&json!([["tickets", "kb"]])),
            Some(vec!["tickets".into(), "kb".into()])
        );
        assert_eq!(parse_rooms(&json!([[]])), None);
        assert_eq!(parse_rooms(&json!([42])), None);
        assert_eq!(parse_rooms(&json!({"room": "x"})), None);
    }
}
