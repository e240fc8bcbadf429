//! The table mapping: which tables rowcast captures, what their events are called, which
//! rooms they go to, which columns never leave rowcast, and who may join which room.
//!
//! [`TableConfig`] and [`RoomConfig`] are what the configuration file says; [`resolve`]
//! checks them against the live database and yields a [`Catalog`] of [`TableSpec`]s with
//! their keys, columns and room templates parsed once. Everything downstream (capture,
//! routing, resume, webhooks) reads the catalog, never the raw configuration.

mod audience;
mod names;
mod resolve;
mod rows;
mod shape;
mod template;
mod types;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use audience::{AudienceConfig, EvalError, NoParents, Parents, Rule, RuleError, Step};
pub use names::{TableName, quote_ident};
pub use resolve::{AudienceSpec, Catalog, KeyColumn, Purpose, TableSpec, resolve};
pub use rows::by_keys as rows_by_keys;
pub use shape::{Withheld, drift, forget_installed, installed_visible, record_installed};
pub use template::{RoomTemplate, TemplateError, scalar_text};
pub use types::{TypeFacts, type_facts};

/// What a captured table is to rowcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Events `<entity>.update` to the entity's rooms.
    #[default]
    Entity,
    /// Events `notification` to `user:<recipient>`, carrying the related entity.
    Notification,
}

/// One `[[tables]]` entry of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table name, optionally schema-qualified (`public.tickets`); parts may be quoted as
    /// an ORM writes them (`public."Ticket"`). Names are matched exactly (case included).
    pub table: String,
    /// Entity name used in event names (`ticket` → `ticket.update`).
    pub entity: String,
    #[serde(default)]
    pub kind: TableKind,
    /// Room every event of this table goes to (entity tables).
    #[serde(default)]
    pub room: Option<String>,
    /// Further rooms built from the row, e.g. `tickets:{ticket_id}`.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Columns that never leave rowcast.
    #[serde(default)]
    pub hidden: Vec<String>,
    /// Key columns; default: the primary key.
    #[serde(default)]
    pub key: Vec<String>,
    /// Notifications: column holding the recipient user id.
    #[serde(default)]
    pub recipient_column: Option<String>,
    /// Notifications: column naming the related entity (`comment`, `ticket`, …).
    #[serde(default)]
    pub related_type_column: Option<String>,
    /// Notifications: column holding the related entity's key.
    #[serde(default)]
    pub related_id_column: Option<String>,
    /// Notifications whose related entity is always one table (no type column): that
    /// table, with `related_id_column` holding its key.
    #[serde(default)]
    pub related_table: Option<String>,
    /// Who receives the table's rows (see `audience` below); none: everyone who may join
    /// its rooms.
    #[serde(default)]
    pub audience: Option<AudienceConfig>,
}

impl TableConfig {
    /// The room templates as written: `room` first, then `rooms`.
    pub fn room_templates(&self) -> impl Iterator<Item = &String> {
        self.room.iter().chain(&self.rooms)
    }
}

/// One `[rooms.<name>]` entry: who may join the room (or every room matching `prefix:*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    /// Roles allowed to join; `*` means every signed-in user.
    pub roles: Vec<String>,
}

/// Checks the table mapping and room allow-lists on their own (no database); every problem
/// is listed.
pub fn validate(tables: &[TableConfig], rooms: &BTreeMap<String, RoomConfig>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut entities = std::collections::HashSet::new();
    for t in tables {
        let at = format!("table {}", t.table);
        if TableName::parse(&t.table).is_none() {
            problems.push(format!(
                "{at}: not a valid table name (write table, schema.table or schema.\"Table\")"
            ));
        }
        if !entities.insert(t.entity.clone()) {
            problems.push(format!("{at}: entity name {} is used twice", t.entity));
        }
        if t.entity.is_empty()
            || !t
                .entity
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            problems.push(format!("{at}: entity must be letters, digits or _"));
        }
        for c in t.hidden.iter().chain(&t.key) {
            if !is_ident(c) {
                problems.push(format!("{at}: {c:?} is not a valid column name"));
            }
        }
        match t.kind {
            TableKind::Entity => {
                if t.room.is_none() && t.rooms.is_empty() {
                    problems.push(format!("{at}: an entity table needs `room` or `rooms`"));
                }
            }
            TableKind::Notification => {
                if t.recipient_column.is_none() {
                    problems.push(format!(
                        "{at}: a notification table needs `recipient_column`"
                    ));
                }
                match (
                    &t.related_type_column,
                    &t.related_table,
                    &t.related_id_column,
                ) {
                    (None, None, None) | (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {}
                    (Some(_), Some(_), _) => problems.push(format!(
                        "{at}: set `related_type_column` (the related entity varies) or `related_table` (it is always one table), not both"
                    )),
                    (_, _, None) => problems.push(format!(
                        "{at}: `related_id_column` is needed with `related_type_column` or `related_table`"
                    )),
                    (None, None, Some(_)) => problems.push(format!(
                        "{at}: with `related_id_column`, set `related_type_column` or `related_table`"
                    )),
                }
                if let Some(r) = &t.related_table
                    && TableName::parse(r).is_none()
                {
                    problems.push(format!(
                        "{at}: related_table {r:?} is not a valid table name"
                    ));
                }
            }
        }
        for r in t.room_templates() {
            if let Err(e) = RoomTemplate::parse(r) {
                problems.push(format!("{at}: room {r:?}: {e}"));
            }
        }
        if let Some(a) = &t.audience {
            if let Some(rows) = &a.rows
                && let Err(e) = Rule::parse(rows)
            {
                problems.push(format!("{at}: audience.rows {rows:?}: {e}"));
            }
            if a.roles.iter().any(|r| r.is_empty() || r == "*") {
                problems.push(format!(
                    "{at}: audience.roles names roles that see every row (\"*\" and empty names are not roles)"
                ));
            }
            if t.kind == TableKind::Notification {
                problems.push(format!(
                    "{at}: a notification table needs no audience: its rows go to their recipient only"
                ));
            }
        }
    }
    for (room, rc) in rooms {
        if room.starts_with("user:") {
            problems.push(format!(
                "rooms.{room}: user rooms are private to their user and cannot be configured"
            ));
        }
        if rc.roles.is_empty() {
            problems.push(format!("rooms.{room}: roles is empty (nobody could join)"));
        }
    }
    problems
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Roles that see every row of the demo helpdesk's tables.
pub const STAFF: [&str; 2] = ["agent", "admin"];

/// The demo helpdesk mapping: what rowcast captures when the file names no tables.
/// Agents and admins see every row; anyone else (a customer) sees their own tickets, the
/// public comments and the attachments of those tickets, their own user row and the
/// published knowledge-base articles.
pub fn default_tables() -> Vec<TableConfig> {
    let entity =
        |table: &str, entity: &str, room: &str, rooms: &[&str], hidden: &[&str], rows: &str| {
            TableConfig {
                table: format!("public.{table}"),
                entity: entity.into(),
                kind: TableKind::Entity,
                room: Some(room.into()),
                rooms: rooms.iter().map(|s| s.to_string()).collect(),
                hidden: hidden.iter().map(|s| s.to_string()).collect(),
                key: Vec::new(),
                recipient_column: None,
                related_type_column: None,
                related_id_column: None,
                related_table: None,
                audience: Some(AudienceConfig {
                    roles: STAFF.iter().map(|s| s.to_string()).collect(),
                    rows: Some(rows.into()),
                }),
            }
        };
    vec![
        entity(
            "tickets",
            "ticket",
            "tickets",
            &["tickets:{id}"],
            &[],
            "requester_id = $user",
        ),
        entity(
            "comments",
            "comment",
            "comments",
            &["tickets:{ticket_id}"],
            &[],
            "ticket_id -> public.tickets and internal = false",
        ),
        entity(
            "users",
            "user",
            "users",
            &[],
            &["password_hash"],
            "id = $user",
        ),
        entity("kb_articles", "kb", "kb", &[], &[], "published = true"),
        entity(
            "attachments",
            "attachment",
            "attachments",
            &["tickets:{ticket_id}"],
            &[],
            "ticket_id -> public.tickets and (comment_id is null or comment_id -> public.comments)",
        ),
        TableConfig {
            table: "public.notifications".into(),
            entity: "notification".into(),
            kind: TableKind::Notification,
            room: None,
            rooms: Vec::new(),
            hidden: Vec::new(),
            key: Vec::new(),
            recipient_column: Some("user_id".into()),
            related_type_column: Some("related_type".into()),
            related_id_column: Some("related_id".into()),
            related_table: None,
            audience: None,
        },
    ]
}

/// The demo helpdesk allow-lists: every signed-in user may join every room; what arrives
/// is decided per row by the tables' audiences.
pub fn default_rooms() -> BTreeMap<String, RoomConfig> {
    [
        "tickets",
        "tickets:*",
        "comments",
        "attachments",
        "users",
        "kb",
    ]
    .into_iter()
    .map(|r| {
        (
            r.to_string(),
            RoomConfig {
                roles: vec!["*".into()],
            },
        )
    })
    .collect()
}
