//! Routing: from an enriched row to the event a client or webhook sees — its name, its
//! payloads (one per `View` some user will get, each serialized once), its rooms and its
//! audience. Pure functions; no I/O.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

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
fn payload_id(pk: &Value) -> &Value {
    match pk.as_array() {
        Some(a) if a.len() == 1 => &a[0],
        _ => pk,
    }
}

/// The key as an object of the key columns (`{"id": 7}`), serialized from `pk` as it is.
struct KeyObject<'a> {
    spec: &'a TableSpec,
    pk: &'a Value,
}

impl Serialize for KeyObject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let values = self.pk.as_array().map_or(&[][..], Vec::as_slice);
        let mut pairs: Vec<(&str, &Value)> = self
            .spec
            .key
            .iter()
            .map(|k| k.name.as_str())
            .zip(values)
            .collect();
        // Sorted as a JSON object's keys are everywhere else in rowcast's output.
        pairs.sort_unstable_by_key(|(k, _)| *k);
        let mut m = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A payload's `data` or `old`.
#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Row(&'a Value),
    Key(KeyObject<'a>),
    Null,
}

/// An entity event's payload, serialized straight from the rows it borrows (fields in the
/// order of their names, as a JSON object's keys are everywhere else).
#[derive(Serialize)]
struct EntityPayload<'a> {
    committed_at: &'a str,
    data: Body<'a>,
    entity: &'a str,
    event: &'a str,
    id: &'a Value,
    old: Body<'a>,
    op: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    seq: Position,
    table: &'a str,
}

/// A notification event's payload (`{ notification, data }`).
#[derive(Serialize)]
struct NotificationPayload<'a> {
    committed_at: &'a str,
    data: Option<&'a Value>,
    event: &'a str,
    id: &'a Value,
    notification: &'a Value,
    op: &'a str,
    seq: Position,
}

/// What one coalesced change of a table became after enrichment.
pub struct Enriched<'a> {
    pub spec: &'a TableSpec,
    pub seq: Position,
    pub op: Op,
    pub pk: &'a Value,
    /// Current row (insert/update) or old row (delete), hidden columns removed.
    pub row: &'a Value,
    pub committed_at: time::OffsetDateTime,
    /// Notifications: the related entity, hidden columns removed.
    pub related: Option<&'a Value>,
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
    let rooms = rooms_for(spec, e.row);
    let key = || Body::Key(KeyObject { spec, pk: e.pk });
    let event_type = format!("{entity}.{}", e.op.past());
    let committed_at = rfc3339(e.committed_at);
    let payload = EntityPayload {
        committed_at: &committed_at,
        data: Body::Row(e.row),
        entity,
        event: &event_type,
        id: payload_id(e.pk),
        old: match e.op {
            Op::Insert => Body::Null,
            Op::Update => key(),
            Op::Delete => Body::Row(e.row),
        },
        op: e.op.as_str(),
        reason: None,
        seq: e.seq,
        table: &spec.name,
    };
    // Users whose view of the row changed get it as an insert (the whole row) or as a
    // removal carrying only the key, no content of the row they lost.
    let variants = match e.before {
        Some(_) => Variants {
            entered: Some(to_raw(&EntityPayload {
                event: &format!("{entity}.{}", Op::Insert.past()),
                op: Op::Insert.as_str(),
                old: Body::Null,
                reason: Some(ENTERED_VIEW),
                data: Body::Row(e.row),
                ..payload
            })),
            left: Some(to_raw(&EntityPayload {
                event: &format!("{entity}.{}", Op::Delete.past()),
                op: Op::Delete.as_str(),
                data: key(),
                old: key(),
                reason: Some(LEFT_VIEW),
                ..payload
            })),
            redacted: None,
        },
        None => Variants::default(),
    };
    let payload = to_raw(&payload);
    Event {
        seq: e.seq,
        name: format!("{entity}.update"),
        event_type,
        table: spec.name.clone(),
        rooms,
        recipient: None,
        payload,
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
    let committed_at = rfc3339(e.committed_at);
    let payload = NotificationPayload {
        committed_at: &committed_at,
        data: e.related,
        event: &event_type,
        id: payload_id(e.pk),
        notification: e.row,
        op: e.op.as_str(),
        seq: e.seq,
    };
    // A recipient who may not see the related row gets the notification without it.
    let related = e
        .related_audience
        .filter(|a| e.related.is_some() && a.reach != Reach::Everyone);
    let full = to_raw(&payload);
    let redacted = related.as_ref().map(|_| {
        to_raw(&NotificationPayload {
            data: None,
            ..payload
        })
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

fn to_raw<T: Serialize>(v: &T) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(v).expect("a payload always serializes")
}
