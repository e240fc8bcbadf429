//! Routing: from an enriched row to the event a client or webhook sees — its name, its
//! payloads (one per `View` some user will get, each serialized once), its rooms and its
//! audience. Pure functions; no I/O.

use serde_json::{Map, Value, json};

use crate::catalog::{TableSpec, scalar_text};
use crate::event::{Audience, Event, Op, Position, Reach, Variants};

/// The `reason` of a removal: the row left the user's view.
pub const LEFT_VIEW: &str = "no_longer_visible";
/// The `reason` of an insert sent because the row entered the user's view.
pub const ENTERED_VIEW: &str = "now_visible";

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The key as the payload's `id`: the value for a one-column key, an array otherwise.
fn payload_id(pk: &Value) -> Value {
    match pk.as_array() {
        Some(a) if a.len() == 1 => a[0].clone(),
        _ => pk.clone(),
    }
}

fn key_object(spec: &TableSpec, pk: &Value) -> Value {
    let mut m = Map::new();
    if let Some(a) = pk.as_array() {
        for (k, v) in spec.key.iter().zip(a) {
            m.insert(k.name.clone(), v.clone());
        }
    }
    Value::Object(m)
}

/// What one coalesced change of a table became after enrichment.
pub struct Enriched<'a> {
    pub spec: &'a TableSpec,
    pub seq: Position,
    pub op: Op,
    pub pk: &'a Value,
    /// Current row (insert/update) or old row (delete), hidden columns removed.
    pub row: Value,
    pub committed_at: time::OffsetDateTime,
    /// Notifications: the related entity, hidden columns removed.
    pub related: Option<Value>,
    /// Who may receive it; for a delete, who could see the row.
    pub audience: Audience,
    /// An update that changed who sees the row: who could see it before.
    pub before: Option<Reach>,
    /// Notifications: who may see `related`.
    pub related_audience: Option<Audience>,
}

/// Builds the event for an entity table: `<entity>.update` to the entity's rooms.
pub fn entity_event(e: Enriched<'_>) -> Event {
    let spec = e.spec;
    let entity = spec.entity();
    let rooms = rooms_for(spec, &e.row);
    let old = match e.op {
        Op::Insert => Value::Null,
        Op::Update => key_object(spec, e.pk),
        Op::Delete => e.row.clone(),
    };
    let event_type = format!("{entity}.{}", e.op.past());
    let payload = json!({
        "event": event_type,
        "op": e.op.as_str(),
        "entity": entity,
        "table": spec.name,
        "id": payload_id(e.pk),
        "seq": e.seq,
        "data": e.row,
        "old": old,
        "committed_at": rfc3339(e.committed_at),
    });
    // Users whose view of the row changed get it as an insert (the whole row) or as a
    // removal carrying only the key, no content of the row they lost.
    let variants = match e.before {
        Some(_) => {
            let id = payload_id(e.pk);
            let key = key_object(spec, e.pk);
            Variants {
                entered: Some(to_raw(&json!({
                    "event": format!("{entity}.{}", Op::Insert.past()),
                    "op": Op::Insert.as_str(),
                    "entity": entity,
                    "table": spec.name,
                    "id": id,
                    "seq": e.seq,
                    "data": e.row,
                    "old": Value::Null,
                    "reason": ENTERED_VIEW,
                    "committed_at": rfc3339(e.committed_at),
                }))),
                left: Some(to_raw(&json!({
                    "event": format!("{entity}.{}", Op::Delete.past()),
                    "op": Op::Delete.as_str(),
                    "entity": entity,
                    "table": spec.name,
                    "id": id,
                    "seq": e.seq,
                    "data": key,
                    "old": key,
                    "reason": LEFT_VIEW,
                    "committed_at": rfc3339(e.committed_at),
                }))),
                redacted: None,
            }
        }
        None => Variants::default(),
    };
    Event {
        seq: e.seq,
        name: format!("{entity}.update"),
        event_type,
        table: spec.name.clone(),
        rooms,
        recipient: None,
        payload: to_raw(&payload),
        committed_at: e.committed_at,
        audience: e.audience,
        before: e.before,
        related: None,
        variants,
    }
}

/// Builds a notification event: `notification` (created) or `notification.update`, to
/// `user:<recipient>` only, carrying `{ notification, data }`.
pub fn notification_event(e: Enriched<'_>) -> Event {
    let spec = e.spec;
    let recipient = spec
        .config
        .recipient_column
        .as_deref()
        .and_then(|c| e.row.get(c))
        .and_then(scalar_text);
    let event_type = format!("notification.{}", e.op.past());
    let has_data = e.related.is_some();
    let mut payload = json!({
        "event": event_type,
        "op": e.op.as_str(),
        "id": payload_id(e.pk),
        "seq": e.seq,
        "notification": e.row,
        "data": e.related.unwrap_or(Value::Null),
        "committed_at": rfc3339(e.committed_at),
    });
    // A recipient who may not see the related row gets the notification without it.
    let related = e
        .related_audience
        .filter(|a| has_data && a.reach != Reach::Everyone);
    let full = to_raw(&payload);
    let redacted = related.as_ref().map(|_| {
        payload["data"] = Value::Null;
        to_raw(&payload)
    });
    Event {
        seq: e.seq,
        name: if e.op == Op::Insert {
            "notification".into()
        } else {
            "notification.update".into()
        },
        event_type,
        table: spec.name.clone(),
        rooms: recipient.iter().map(|r| format!("user:{r}")).collect(),
        audience: Audience {
            roles: std::sync::Arc::from(Vec::new()),
            reach: recipient.clone().map_or(Reach::Nobody, Reach::user),
        },
        recipient,
        payload: full,
        committed_at: e.committed_at,
        before: None,
        related,
        variants: Variants {
            redacted,
            ..Variants::default()
        },
    }
}

fn rooms_for(spec: &TableSpec, row: &Value) -> Vec<String> {
    let Some(obj) = row.as_object() else {
        return Vec::new();
    };
    let mut rooms = Vec::new();
    for tpl in &spec.templates {
        if let Some(r) = tpl.render(obj)
            && !rooms.contains(&r)
        {
            rooms.push(r);
        }
    }
    rooms
}

fn to_raw(v: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(v).expect("a JSON value always serializes")
}
