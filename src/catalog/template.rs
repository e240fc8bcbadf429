//! Room templates: a room name with `{column}` placeholders filled from the row, e.g.
//! `tickets:{ticket_id}`. Parsed once, when the catalog is built.

use serde_json::{Map, Value};

/// A parsed room template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Col(String),
}

/// Why a room template does not parse. Shown to the operator as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("room name is empty")]
    Empty,
    #[error("user:<id> rooms are reserved for notifications")]
    UserRoom,
    #[error("unclosed {{ in {0:?}")]
    Unclosed(String),
    #[error("unbalanced }} in {0:?}")]
    Unbalanced(String),
    #[error("{{{0}}} is not a column name")]
    BadColumn(String),
}

impl RoomTemplate {
    pub fn parse(s: &str) -> Result<RoomTemplate, TemplateError> {
        if s.is_empty() {
            return Err(TemplateError::Empty);
        }
        if s.starts_with("user:") {
            return Err(TemplateError::UserRoom);
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(s.to_string()))?
                + open;
            let col = &rest[open + 1..close];
            if col.is_empty() || !col.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TemplateError::BadColumn(col.to_string()));
            }
            parts.push(Part::Col(col.to_string()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(TemplateError::Unbalanced(s.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
