//! The configured tables checked against the live database: keys, columns, room columns
//! and privileges. The only SQL on PostgreSQL's system catalogs about captured tables.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::GenericClient;

use super::{RoomTemplate, TableConfig, TableKind};

/// A key column and its SQL type (as `format_type` prints it).
#[derive(Debug, Clone)]
pub struct KeyColumn {
    pub name: String,
    pub sql_type: String,
}

/// A configured table checked against the database.
#[derive(Debug)]
pub struct TableSpec {
    pub config: TableConfig,
    /// `schema.table`, as written to `rowcast.changes.tbl`.
    pub name: String,
    /// `"schema"."table"`, safe to splice into SQL.
    pub quoted: String,
    pub key: Vec<KeyColumn>,
    pub columns: Vec<String>,
    /// `room` then `rooms`, parsed.
    pub templates: Vec<RoomTemplate>,
}

impl TableSpec {
    /// A spec for `config` (already validated: its templates parse).
    pub fn new(
        config: TableConfig,
        name: String,
        quoted: String,
        key: Vec<KeyColumn>,
        columns: Vec<String>,
    ) -> TableSpec {
        let templates = config
            .room_templates()
            .filter_map(|t| RoomTemplate::parse(t).ok())
            .collect();
        TableSpec {
            config,
            name,
            quoted,
            key,
            columns,
            templates,
        }
    }
    pub fn entity(&self) -> &str {
        &self.config.entity
    }
    pub fn kind(&self) -> TableKind {
        self.config.kind
    }
    /// Whether an event of this table could go to any of `rooms`.
    pub fn may_reach(&self, rooms: &[String]) -> bool {
        match self.kind() {
            TableKind::Notification => rooms.iter().any(|r| r.starts_with("user:")),
            TableKind::Entity => self
                .templates
                .iter()
                .any(|t| rooms.iter().any(|r| t.may_render(r))),
        }
    }
}

/// The resolved tables, by name and by entity.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tables: Vec<Arc<TableSpec>>,
    by_name: HashMap<String, usize>,
    by_entity: HashMap<String, usize>,
}

impl Catalog {
    /// Adds a resolved table.
    pub fn push(&mut self, spec: TableSpec) {
        self.by_name.insert(spec.name.clone(), self.tables.len());
        self.by_entity
            .insert(spec.config.entity.clone(), self.tables.len());
        self.tables.push(Arc::new(spec));
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<TableSpec>> {
        self.by_name.get(name).map(|&i| &self.tables[i])
    }

    /// Looks up a notification's `related_type`: an entity name (`comment`), a table name
    /// (`comments`, `public.comments`) or a singular table name (`kb_article`).
    pub fn by_related_type(&self, related: &str) -> Option<&Arc<TableSpec>> {
        if let Some(&i) = self.by_entity.get(related) {
            return Some(&self.tables[i]);
        }
        self.tables.iter().find(|t| {
            let short = t.name.rsplit('.').next().unwrap_or(&t.name);
            t.name == related || short == related || short.strip_suffix('s') == Some(related)
        })
    }

    /// Names of the tables whose events can reach any of `rooms`.
    pub fn tables_for_rooms(&self, rooms: &[String]) -> Vec<String> {
        self.tables
            .iter()
            .filter(|t| t.may_reach(rooms))
            .map(|t| t.name.clone())
            .collect()
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `schema.table` → (`schema`, `table`); a bare name is in `public`.
pub fn split_name(table: &str) -> (&str, &str) {
    table.split_once('.').unwrap_or(("public", table))
}

/// Resolves every configured table against the database. Returns the catalog of the tables
/// that resolved and a list of problems (missing tables, keys, columns, privileges).
pub async fn resolve<C: GenericClient>(
    client: &C,
    tables: &[TableConfig],
) -> Result<(Catalog, Vec<String>), tokio_postgres::Error> {
    let mut catalog = Catalog::default();
    let mut problems = Vec::new();
    for tc in tables {
        let (schema, table) = split_name(&tc.table);
        let name = format!("{schema}.{table}");
        let quoted = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let oid = client
            .query_opt(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&schema, &table],
            )
            .await?
            .map(|r| r.get::<_, u32>(0));
        let Some(oid) = oid else {
            problems.push(format!(
                "table {name} does not exist (entity {})",
                tc.entity
            ));
            continue;
        };
        let columns: Vec<(String, String)> = client
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
                  WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let type_of = |c: &str| columns.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
        let key: Vec<KeyColumn> = if tc.key.is_empty() {
            client
                .query(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                       FROM pg_index i
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                      WHERE i.indrelid = $1 AND i.indisprimary
                      ORDER BY array_position(i.indkey::int2[], a.attnum)",
                    &[&oid],
                )
                .await?
                .iter()
                .map(|r| KeyColumn {
                    name: r.get(0),
                    sql_type: r.get(1),
                })
                .collect()
        } else {
            tc.key
                .iter()
                .filter_map(|k| {
                    type_of(k).map(|t| KeyColumn {
                        name: k.clone(),
                        sql_type: t,
                    })
                })
                .collect()
        };
        let mut ok = true;
        if key.is_empty() {
            problems.push(format!(
                "table {name} has no primary key: add one, or set `key = [\"col\"]` in its [[tables]] entry"
            ));
            ok = false;
        } else if !tc.key.is_empty() && key.len() != tc.key.len() {
            problems.push(format!(
                "table {name}: a configured key column does not exist"
            ));
            ok = false;
        }
        let mut needed: Vec<(&str, String)> = Vec::new();
        for h in &tc.hidden {
            needed.push(("hidden column", h.clone()));
        }
        for (what, c) in [
            ("recipient_column", &tc.recipient_column),
            ("related_type_column", &tc.related_type_column),
            ("related_id_column", &tc.related_id_column),
        ] {
            if let Some(c) = c {
                needed.push((what, c.clone()));
            }
        }
        let spec = TableSpec::new(
            tc.clone(),
            name.clone(),
            quoted,
            key,
            columns.iter().map(|(n, _)| n.clone()).collect(),
        );
        for t in &spec.templates {
            for c in t.columns() {
                needed.push(("room column", c.to_string()));
            }
        }
        for (what, c) in needed {
            if type_of(&c).is_none() {
                problems.push(format!("table {name}: {what} {c:?} does not exist"));
                ok = false;
            }
        }
        let can_select: bool = client
            .query_one("SELECT has_table_privilege($1::oid, 'SELECT')", &[&oid])
            .await?
            .get(0);
        if !can_select {
            problems.push(format!(
                "table {name}: rowcast's database role lacks SELECT (GRANT SELECT ON {} TO <role>)",
                spec.quoted
            ));
            ok = false;
        }
        if ok {
            catalog.push(spec);
        }
    }
    Ok((catalog, problems))
}
