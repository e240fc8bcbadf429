//! Routing: from an enriched row to the event a client or webhook sees — its name, payload
//! and rooms. Pure functions; no I/O.

use serde_json::{Map, Value, json};

use crate::event::{Event, Op, Position};
use crate::schema::TableSpec;

/// A room name with `{column}` placeholders filled from the row, e.g. `tickets:{ticket_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Col(String),
}

impl RoomTemplate {
    pub fn parse(s: &str) -> Result<RoomTemplate, String> {
        if s.is_empty() {
            return Err("room name is empty".into());
        }
        if s.starts_with("user:") {
            return Err("user:<id> rooms are reserved for notifications".into());
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed {{ in {s:?}"))?
                + open;
            let col = &rest[open + 1..close];
            if col.is_empty() || !col.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("{{{col}}} is not a column name"));
            }
            parts.push(Part::Col(col.to_string()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unbalanced }} in {s:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(RoomTemplate { parts })
    }

    /// Columns the template reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Col(c) => Some(c.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Whether some row could render to `room` (literal parts match around the columns).
    pub fn may_render(&self, room: &str) -> bool {
        let mut rest = room;
        let mut after_col = false;
        for p in &self.parts {
            match p {
                Part::Lit(l) if after_col => match rest.find(l.as_str()) {
                    Some(i) if i > 0 => rest = &rest[i + l.len()..],
                    _ => return false,
                },
                Part::Lit(l) => match rest.strip_prefix(l.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                },
                Part::Col(_) => after_col = true,
            }
            if let Part::Lit(_) = p {
                after_col = false;
            }
        }
        if after_col {
            !rest.is_empty()
        } else {
            rest.is_empty()
        }
    }

    /// The room for this row, or `None` when a column it needs is null or absent.
    pub fn render(&self, row: &Map<String, Value>) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Col(c) => out.push_str(&scalar_text(row.get(c)?)?),
            }
        }
        Some(out)
    }
}

/// Text of a JSON scalar as used in room names and user ids (`7`, `"7"` → `7`).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

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
    Event {
        seq: e.seq,
        name: format!("{entity}.update"),
        event_type,
        table: spec.name.clone(),
        rooms,
        recipient: None,
        payload: to_raw(&payload),
        committed_at: e.committed_at,
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
    let payload = json!({
        "event": event_type,
        "op": e.op.as_str(),
        "id": payload_id(e.pk),
        "seq": e.seq,
        "notification": e.row,
        "data": e.related.unwrap_or(Value::Null),
        "committed_at": rfc3339(e.committed_at),
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
        recipient,
        payload: to_raw(&payload),
        committed_at: e.committed_at,
    }
}

fn rooms_for(spec: &TableSpec, row: &Value) -> Vec<String> {
    let Some(obj) = row.as_object() else {
        return Vec::new();
    };
    let mut rooms = Vec::new();
    for t in spec.config.room.iter().chain(&spec.config.rooms) {
        if let Ok(tpl) = RoomTemplate::parse(t)
            && let Some(r) = tpl.render(obj)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_from_rows() {
        let t = RoomTemplate::parse("tickets:{ticket_id}").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), vec!["ticket_id"]);
        let row = json!({"ticket_id": 7, "x": null});
        assert_eq!(t.render(row.as_object().unwrap()), Some("tickets:7".into()));
        let t2 = RoomTemplate::parse("t:{x}").unwrap();
        assert_eq!(t2.render(row.as_object().unwrap()), None);
        assert!(RoomTemplate::parse("a:{b").is_err());
        assert!(RoomTemplate::parse("a:{}").is_err());
        assert!(RoomTemplate::parse("user:{id}").is_err());
        assert!(t.may_render("tickets:7"));
        assert!(!t.may_render("tickets:"));
        assert!(!t.may_render("tickets"));
        assert!(!t.may_render("comments:7"));
        assert_eq!(
            RoomTemplate::parse("tickets").unwrap().render(&Map::new()),
            Some("tickets".into())
        );
    }
}
