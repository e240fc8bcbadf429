//! The configured tables checked against the live database: keys, columns, room columns
//! and privileges. The only SQL on PostgreSQL's system catalogs about captured tables.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio_postgres::GenericClient;

use super::{EvalError, Parents, RoomTemplate, Rule, Step, TableConfig, TableKind, TableName};
use crate::event::{Audience, Reach};

/// A key column and its SQL type (as `format_type` prints it).
#[derive(Debug, Clone)]
pub struct KeyColumn {
    pub name: String,
    pub sql_type: String,
}

/// A table's audience rules, parsed.
#[derive(Debug, Clone)]
pub struct AudienceSpec {
    /// Roles that see every row, lowercase.
    pub roles: Arc<[String]>,
    /// Which rows everyone else sees; `None`: none.
    pub rule: Option<Rule>,
    /// The columns the rule reads: their old values are captured with every change that
    /// changes them, so a row leaving a user's view can be told apart.
    pub columns: Vec<String>,
    /// The rule's `col -> table` references: (columns, the table as written).
    pub parents: Vec<(Vec<String>, String)>,
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
    /// `None`: everyone who may join the table's rooms sees every row.
    pub audience: Option<AudienceSpec>,
}

impl TableSpec {
    /// A spec for `config` (already validated: its templates and rules parse).
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
        let audience = config.audience.as_ref().map(|a| {
            let rule = a.rows.as_deref().and_then(|r| Rule::parse(r).ok());
            AudienceSpec {
                roles: a.roles.iter().map(|r| r.to_lowercase()).collect(),
                columns: rule.as_ref().map(Rule::columns).unwrap_or_default(),
                parents: rule.as_ref().map(Rule::parents).unwrap_or_default(),
                rule,
            }
        });
        TableSpec {
            config,
            name,
            quoted,
            key,
            columns,
            templates,
            audience,
        }
    }

    /// The columns whose old values changes carry (those the audience rule reads).
    pub fn rule_columns(&self) -> &[String] {
        self.audience.as_ref().map_or(&[], |a| &a.columns)
    }

    /// The rule's references to parent rows: (columns, the parent table as written).
    pub fn parent_refs(&self) -> &[(Vec<String>, String)] {
        self.audience.as_ref().map_or(&[], |a| &a.parents)
    }

    /// Who (besides the all-seeing roles) sees `row`: everyone for a table without an
    /// audience, nobody for one with roles only, else what its rule says.
    pub fn reach(
        &self,
        row: &Map<String, Value>,
        parents: &dyn Parents,
        trace: Option<&mut Vec<Step>>,
    ) -> Result<Reach, EvalError> {
        match &self.audience {
            None => Ok(Reach::Everyone),
            Some(AudienceSpec { rule: None, .. }) => Ok(Reach::Nobody),
            Some(AudienceSpec {
                rule: Some(rule), ..
            }) => rule.reach(row, parents, trace),
        }
    }

    /// The audience of a row with `reach`.
    pub fn audience(&self, reach: Reach) -> Audience {
        Audience {
            roles: self
                .audience
                .as_ref()
                .map(|a| a.roles.clone())
                .unwrap_or_else(|| Arc::from(Vec::new())),
            reach,
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
    /// Tables whose rows are withheld right now (see [`super::drift`]).
    pub withheld: Arc<super::Withheld>,
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

    /// The table with `name` as written to `rowcast.changes.tbl` (`schema.table`).
    pub fn by_name(&self, name: &str) -> Option<&Arc<TableSpec>> {
        self.by_name.get(name).map(|&i| &self.tables[i])
    }

    /// The table a configuration names (`tickets`, `public.tickets`, `public."Ticket"`).
    pub fn lookup(&self, written: &str) -> Option<&Arc<TableSpec>> {
        self.by_name(&TableName::parse(written)?.to_string())
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

/// What a table is resolved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `migrate` and `check`: the configuration must match the live table exactly.
    Install,
    /// Serving: a configured hidden column missing from the live table (renamed, dropped)
    /// does not stop rowcast; the table is withheld instead (see [`super::drift`]).
    Serve,
}

/// Resolves every configured table against the database. Returns the catalog of the tables
/// that resolved and a list of problems (missing tables, keys, columns, privileges).
pub async fn resolve<C: GenericClient>(
    client: &C,
    tables: &[TableConfig],
    purpose: Purpose,
) -> Result<(Catalog, Vec<String>), tokio_postgres::Error> {
    let mut catalog = Catalog::default();
    let mut problems = Vec::new();
    let mut oids = HashMap::new();
    for tc in tables {
        let Some(written) = TableName::parse(&tc.table) else {
            problems.push(format!("table {}: not a valid table name", tc.table));
            continue;
        };
        let (schema, table) = (written.schema.as_str(), written.table.as_str());
        let name = written.to_string();
        let quoted = written.quoted();
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
        if purpose == Purpose::Install {
            for h in &tc.hidden {
                needed.push(("hidden column", h.clone()));
            }
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
        for c in spec.rule_columns() {
            if type_of(c).is_none() {
                problems.push(format!(
                    "table {name}: audience.rows reads column {c:?}, which does not exist"
                ));
                ok = false;
            } else if tc.hidden.contains(c) {
                problems.push(format!(
                    "table {name}: audience.rows reads hidden column {c:?}; rules may only read columns that leave rowcast"
                ));
                ok = false;
            }
        }
        if ok {
            oids.insert(name, oid);
            catalog.push(spec);
        }
    }
    problems.extend(check_references(client, &catalog, tables, &oids).await?);
    Ok((catalog, problems))
}

/// What the tables' references to each other need: every `col -> table` of a rule names a
/// configured table through a foreign key on its key, and no chain of them comes back to
/// where it started; a notification's `related_table` is configured.
async fn check_references<C: GenericClient>(
    client: &C,
    catalog: &Catalog,
    tables: &[TableConfig],
    oids: &HashMap<String, u32>,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut problems = Vec::new();
    let configured = |written: &str| {
        let name = TableName::parse(written);
        tables
            .iter()
            .any(|t| TableName::parse(&t.table).is_some() && TableName::parse(&t.table) == name)
    };
    let missing = |spec: &TableSpec, what: &str, table: &str| {
        if configured(table) {
            format!(
                "table {}: {what} {table}, which has problems of its own (see above)",
                spec.name
            )
        } else {
            format!(
                "table {}: {what} {table}, which is not a configured table (add it to [[tables]])",
                spec.name
            )
        }
    };
    for spec in &catalog.tables {
        if let Some(related) = &spec.config.related_table
            && catalog.lookup(related).is_none()
        {
            problems.push(missing(spec, "related_table is", related));
        }
        let Some(rule) = spec.audience.as_ref().and_then(|a| a.rule.as_ref()) else {
            continue;
        };
        for (columns, table) in rule.parents() {
            let Some(parent) = catalog.lookup(&table) else {
                problems.push(missing(spec, "audience.rows refers to", &table));
                continue;
            };
            if parent.key.len() != columns.len() {
                problems.push(format!(
                    "table {}: audience.rows refers to {} through {} column(s) ({}), but its key has {}",
                    spec.name,
                    parent.name,
                    columns.len(),
                    columns.join(", "),
                    parent.key.len()
                ));
                continue;
            }
            let fk: bool = client
                .query_one(
                    "SELECT EXISTS (
                        SELECT 1 FROM pg_constraint c
                         WHERE c.contype = 'f' AND c.conrelid = $1 AND c.confrelid = $2
                           AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                                  FROM unnest(c.conkey) WITH ORDINALITY AS k(n, ord)
                                  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n)
                               = $3::text[])",
                    &[&oids[&spec.name], &oids[&parent.name], &columns],
                )
                .await?
                .get(0);
            if !fk {
                problems.push(format!(
                    "table {}: audience.rows follows {} -> {}, but there is no foreign key from {} ({}) to {}",
                    spec.name,
                    columns.join(", "),
                    parent.name,
                    spec.name,
                    columns.join(", "),
                    parent.name
                ));
            }
        }
    }
    // A chain of parent references must end.
    for spec in &catalog.tables {
        let mut path = vec![spec.name.clone()];
        if let Some(cycle) = find_cycle(catalog, spec, &mut path) {
            problems.push(format!(
                "table {}: audience rules refer to each other in a circle: {}",
                spec.name,
                cycle.join(" -> ")
            ));
        }
    }
    Ok(problems)
}

fn find_cycle(catalog: &Catalog, spec: &TableSpec, path: &mut Vec<String>) -> Option<Vec<String>> {
    let rule = spec.audience.as_ref()?.rule.as_ref()?;
    for (_, table) in rule.parents() {
        let Some(parent) = catalog.lookup(&table) else {
            continue;
        };
        if path.first() == Some(&parent.name) {
            let mut cycle = path.clone();
            cycle.push(parent.name.clone());
            return Some(cycle);
        }
        if path.contains(&parent.name) || path.len() > 8 {
            continue;
        }
        path.push(parent.name.clone());
        if let Some(c) = find_cycle(catalog, parent, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}
