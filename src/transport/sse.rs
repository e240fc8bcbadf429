//! Server-Sent Events at `GET /events?rooms=…`: a thin adapter over a hub [`Session`].
//!
//! Every event goes out as `id: <seq>`, `event: <name>`, `data: <payload>`, so a browser's
//! `EventSource` resumes on its own through `Last-Event-ID`. Refusals (401, 403, 400) are
//! answered before the stream starts. The stream ends after a `rowcast:error` event when
//! the client is too slow, its token expires or the server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{StreamQuery, checked_rooms, expiry_sleep, parse_since};
use crate::api::{ApiError, AppState};
use crate::event::Position;
use crate::hub::{Delivery, ResumeError, Session, Transport};
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
    let mut conn = Conn {
        session,
        resume,
        shutdown: app.shutdown.clone(),
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
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(app.hub.config().ping_interval))
        .into_response())
}

struct Conn {
    session: Session,
    resume: Resume,
    shutdown: CancellationToken,
    /// Events ready to go out.
    pending: VecDeque<SseEvent>,
    /// Resume still to serve.
    catch_up: Option<CatchUp>,
    rooms: Vec<String>,
    /// Where live events begin: the `ready` event's position.
    live_after: Position,
    ended: bool,
}

impl Conn {
    /// The next event to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<SseEvent> {
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
                self.pending.push_back(
                    SseEvent::default()
                        .id(catch_up.until().to_string())
                        .event("resync_required")
                        .data(serde_json::to_string(&resync).expect("resync serializes")),
                );
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
        self.pending.push_back(
            SseEvent::default()
                .id(self.live_after.to_string())
                .event("ready")
                .data(body.to_string()),
        );
    }

    /// Queues a `rowcast:error` event and ends the stream after it.
    fn end(&mut self, reason: CloseReason) {
        let body = json!({ "code": reason.code(), "message": reason.message(Transport::Sse) });
        self.pending.push_back(
            SseEvent::default()
                .event("rowcast:error")
                .data(body.to_string()),
        );
        self.ended = true;
    }
}

fn event(d: &Delivery) -> SseEvent {
    SseEvent::default()
        .id(d.event.seq.to_string())
        .event(&d.event.name)
        .data(d.payload().get())
}
