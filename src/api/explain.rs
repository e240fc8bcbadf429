//! `GET /api/explain?seq=…&user=…&role=…` (admins): why one change did or did not reach a
//! user — the rooms it went to, its audience and the rule conditions that decided it, the
//! decision for that user, and the user's sessions on this replica.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::event::{Event, Position, Reach, User, View};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    seq: String,
    user: String,
    /// The user's role(s), comma-separated.
    #[serde(default)]
    role: String,
}

#[derive(Serialize)]
struct Decision {
    receives: bool,
    /// `full`, `entered` (the row became visible: sent as an insert), `left` (it stopped
    /// being visible: a removal with the key only), `redacted` (a notification without its
    /// related row), or null.
    #[serde(rename = "as")]
    view: Option<&'static str>,
    why: String,
}

fn view_name(v: View) -> &'static str {
    match v {
        View::Full => "full",
        View::Entered => "entered",
        View::Left => "left",
        View::Redacted => "redacted",
    }
}

fn reach_json(r: &Reach) -> Value {
    match r {
        Reach::Nobody => json!("nobody"),
        Reach::Everyone => json!("everyone"),
        Reach::Users(u) => json!({ "users": u }),
    }
}

fn decide(event: &Event, user: &User) -> Decision {
    let view = event.view(user);
    let by_role = event.audience.by_role(user);
    let why = if by_role {
        format!(
            "role {} sees every row of {}",
            user.roles
                .iter()
                .find(|r| event.audience.roles.contains(r))
                .map(String::as_str)
                .unwrap_or(""),
            event.table
        )
    } else {
        match view {
            Some(View::Full) => format!(
                "the row's audience ({}) admits {}",
                event.audience.reach, user.sub
            ),
            Some(View::Entered) => format!(
                "the change made the row visible to {}: before {}, now {}",
                user.sub,
                event
                    .before
                    .as_ref()
                    .map_or_else(|| "-".into(), Reach::to_string),
                event.audience.reach
            ),
            Some(View::Left) => format!(
                "the change made the row leave {}'s view: before {}, now {}",
                user.sub,
                event
                    .before
                    .as_ref()
                    .map_or_else(|| "-".into(), Reach::to_string),
                event.audience.reach
            ),
            Some(View::Redacted) => {
                "the recipient may not see the related row: data is null".into()
            }
            None => format!(
                "neither a role ({}) nor the row's audience ({}) admits {}",
                if event.audience.roles.is_empty() {
                    "none".to_string()
                } else {
                    event.audience.roles.join(", ")
                },
                event.audience.reach,
                user.sub
            ),
        }
    };
    Decision {
        receives: view.is_some(),
        view: view.map(view_name),
        why,
    }
}

/// `GET /api/explain`: see the module docs.
pub async fn explain(
    State(app): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ExplainQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = app.auth.authenticate(&headers, None)?;
    if !caller.is_admin() {
        return Err(ApiError::forbidden("explain needs the admin role"));
    }
    let Query(q) = q.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let seq: Position = q
        .seq
        .parse()
        .map_err(|e| ApiError::bad_request(format!("seq: {e}")))?;
    let user = User {
        sub: q.user.clone(),
        roles: q
            .role
            .split(',')
            .map(|r| r.trim().to_lowercase())
            .filter(|r| !r.is_empty())
            .collect(),
        exp: None,
    };
    let client = app.pool.get().await.map_err(ApiError::internal)?;
    let rebuilt = app
        .enricher
        .explain(&**client, seq)
        .await
        .map_err(ApiError::internal)?;
    drop(client);
    let live = app.hub.replayed(seq);
    let (event, explanation, source): (&Event, _, &str) = match (&live, &rebuilt) {
        (Some(ev), r) => (ev.as_ref(), r.as_ref().map(|(_, x)| x), "replay buffer"),
        (None, Some((ev, x))) => (ev, Some(x), "change log (rows as they are now)"),
        (None, None) => {
            return Err(ApiError::not_found(format!(
                "no event at seq {seq}: it was pruned, coalesced with a later change of its row, or its row is gone"
            )));
        }
    };
    let sessions: Vec<Value> = app
        .hub
        .sessions_of(&user.sub)
        .into_iter()
        .map(|(transport, rooms)| {
            let in_room = rooms.iter().any(|r| event.rooms.contains(r));
            json!({ "transport": transport.as_str(), "rooms": rooms, "in_a_room_of_the_event": in_room })
        })
        .collect();
    Ok(Json(json!({
        "seq": seq,
        "source": source,
        "table": event.table,
        "event": event.name,
        "event_type": event.event_type,
        "rooms": event.rooms,
        "audience": {
            "roles": event.audience.roles,
            "reach": reach_json(&event.audience.reach),
            "before": event.before.as_ref().map(reach_json),
            "rule": explanation.and_then(|x| x.rule.clone()),
            "steps": explanation.map(|x| &x.steps),
            "steps_before": explanation.map(|x| &x.before).filter(|b| !b.is_empty()),
        },
        "user": { "sub": user.sub, "roles": user.roles },
        "decision": decide(event, &user),
        "sessions_on_this_replica": sessions,
    })))
}
