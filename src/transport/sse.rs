//! Server-Sent Events at `GET /events?rooms=…`: a thin adapter over a hub [`Session`].
//!
//! Every event goes out as `id: <seq>`, `event: <name>`, `data: <payload>`, so a browser's
//! `EventSource` resumes on its own through `Last-Event-ID`. Refusals (401, 403, 400) are
//! answered before the stream starts. The stream ends after a `rowcast:error` event when
//! the client is too slow, its token expires or the server shuts down. Each event's block
//! is encoded once and the same bytes go to every stream that receives it with the same view.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::{StreamQuery, checked_rooms, expiry_sleep, parse_since};
use crate::api::{ApiError, AppState};
use crate::event::Position;
use crate::hub::{Delivery, ResumeError, Scope, Session, Transport};
use crate::protocol::{CatchUp, CloseReason, Resume};

/// `GET /events`: authenticates (401), checks every room (403) and `since` /
/// `Last-Event-ID` (400; the header wins), then streams what the rooms missed since then,
/// a `ready` event (`id` = the position live events continue from), and live events.
pub async fn handler(
    State(app): State<AppState>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = app.auth.authenticate(&headers, q.token.as_deref())?;
    let rooms = checked_rooms(&app, &user, q.rooms.as_deref())?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not valid text"))
        })
        .transpose()?;
    let since = match parse_since(last_event_id, "Last-Event-ID")? {
        Some(s) => Some(s),
        None => parse_since(q.since.as_deref(), "since")?,
    };
    let session = app.hub.open(user, Transport::Sse);
    let (results, until) = session.join_many(&rooms);
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        // The ACL passed a moment ago; only a session limit can refuse here.
        return Err(ApiError::forbidden(e.to_string()));
    }
    // Every room is caught up to `until` together (or, without `since`, starts there): live
    // deliveries at or before it are not new.
    let mut resume = Resume::new(since);
    resume.skip_through(until);
    let keep_alive = app.hub.config().ping_interval;
    let mut conn = Conn {
        session,
        resume,
        shutdown: app.shutdown.clone(),
        keep_alive,
        idle: Box::pin(tokio::time::sleep(keep_alive)),
        pending: VecDeque::new(),
        catch_up: since.map(|s| CatchUp::new(rooms.clone(), s, until)),
        rooms,
        live_after: until,
        ended: false,
    };
    if conn.catch_up.is_none() {
        conn.push_ready();
    }
    let stream = futures_util::stream::unfold(conn, |mut conn| async move {
        let ev = conn.next().await?;
        Some((Ok::<_, Infallible>(ev), conn))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// One SSE block: `id`, `event`, then `data` (one `data:` line per line of it).
fn block(id: Option<&str>, event: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + event.len() + 40);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// The comment sent after `hub.ping_interval` without anything else.
const KEEP_ALIVE: &[u8] = b":\n\n";

struct Conn {
    session: Session,
    resume: Resume,
    shutdown: CancellationToken,
    keep_alive: Duration,
    /// Fires after `keep_alive` without a write.
    idle: Pin<Box<Sleep>>,
    /// Encoded events ready to go out.
    pending: VecDeque<Bytes>,
    /// Resume still to serve.
    catch_up: Option<CatchUp>,
    rooms: Vec<String>,
    /// Where live events begin: the `ready` event's position.
    live_after: Position,
    ended: bool,
}

impl Conn {
    /// The next bytes to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<Bytes> {
        let block = self.next_block().await;
        let deadline = Instant::now() + self.keep_alive;
        self.idle.as_mut().reset(deadline);
        block
    }

    async fn next_block(&mut self) -> Option<Bytes> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.ended {
                return None;
            }
            if let Some(catch_up) = self.catch_up.take() {
                self.catch_up_page(catch_up).await;
                continue;
            }
            let expiry = expiry_sleep(&self.session.user);
            tokio::select! {
                biased;
                // 1. Shutdown: the client reconnects (elsewhere) with Last-Event-ID.
                _ = self.shutdown.cancelled() => self.end(CloseReason::ShuttingDown),
                // 2. Too slow: the hub dropped us from every room.
                _ = self.session.kicked.cancelled() => {
                    self.end(CloseReason::TooSlow { last_sent: None });
                }
                // 3. Token lifetime.
                _ = expiry => self.end(CloseReason::TokenExpired),
                // 4. Live events.
                d = self.session.rx.next() => {
                    if self.resume.is_new(d.event.seq) {
                        self.pending.push_back(event(&d));
                    }
                }
                // 5. Keep-alive.
                _ = self.idle.as_mut() => return Some(Bytes::from_static(KEEP_ALIVE)),
            }
        }
    }

    /// Queues the next page of the catch-up; after the last one, the `ready` event.
    async fn catch_up_page(&mut self, mut catch_up: CatchUp) {
        let hub = self.session.hub().clone();
        match catch_up.next(&hub, &self.session.user).await {
            None => self.push_ready(),
            Some(Ok(deliveries)) => {
                self.pending.extend(deliveries.iter().map(event));
                self.catch_up = Some(catch_up);
            }
            Some(Err(ResumeError::ResyncRequired { since, pruned })) => {
                let resync = catch_up.resync(since, pruned);
                self.pending.push_back(block(
                    Some(&catch_up.until().to_string()),
                    "resync_required",
                    &serde_json::to_string(&resync).expect("resync serializes"),
                ));
                self.push_ready();
            }
            Some(Err(e @ ResumeError::Unavailable(_))) => {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "SSE resume failed");
                self.end(CloseReason::ResumeFailed);
            }
        }
    }

    /// `ready`: live events follow; its `id` is the position to resume from.
    fn push_ready(&mut self) {
        let body = json!({
            "session": self.session.id.to_string(),
            "user": self.session.user.sub,
            "rooms": self.rooms,
            "seq": self.live_after,
            "expires_at": self.session.user.exp,
        });
        self.pending.push_back(block(
            Some(&self.live_after.to_string()),
            "ready",
            &body.to_string(),
        ));
    }

    /// Queues a `rowcast:error` event and ends the stream after it.
    fn end(&mut self, reason: CloseReason) {
        let body = json!({ "code": reason.code(), "message": reason.message(Transport::Sse) });
        self.pending
            .push_back(block(None, "rowcast:error", &body.to_string()));
        self.ended = true;
    }
}

/// An event's block, encoded once for every stream that receives it with the same view.
fn event(d: &Delivery) -> Bytes {
    d.encoded(Transport::Sse, Scope::View, |d| {
        block(
            Some(&d.event.seq.to_string()),
            &d.event.name,
            d.payload().get(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_server_sent_events() {
        assert_eq!(
            block(Some("7"), "ticket.update", r#"{"a":1}"#),
            Bytes::from_static(b"id: 7\nevent: ticket.update\ndata: {\"a\":1}\n\n")
        );
        assert_eq!(
            block(None, "x", "a\nb"),
            Bytes::from_static(b"event: x\ndata: a\ndata: b\n\n"),
            "one data line per line"
        );
    }
}
