//! rowcast's own schema and the capture triggers: `migrate`, `check`, and the catalog of
//! configured tables resolved against the live database.
//!
//! Migrations are numbered files in `sql/`, embedded in the binary and applied in one
//! transaction under an advisory lock, so concurrent `rowcast migrate` runs (many replicas
//! starting at once) serialize and all succeed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::{Client, GenericClient};

use crate::config::{CaptureMode, Config, TableConfig, TableKind};

/// Embedded migrations, applied in order. Never edit one that has shipped: add a new file.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "changes", include_str!("../sql/001_changes.sql")),
    (2, "webhooks", include_str!("../sql/002_webhooks.sql")),
    (
        3,
        "slot_positions",
        include_str!("../sql/003_slot_positions.sql"),
    ),
];

/// Key of the advisory lock that serializes `migrate` runs (any constant unique to rowcast).
const MIGRATE_LOCK: i64 = 0x726f_7763_6173_7401;

/// Trigger name installed on every captured table.
pub const TRIGGER: &str = "rowcast_capture";

/// NOTIFY channel used as a wake-up hint; the payload is always empty.
pub const WAKE_CHANNEL: &str = "rowcast_wake";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("the database does not match the configuration:\n  - {}", .0.join("\n  - "))]
    Mismatch(Vec<String>),
}

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
}

impl TableSpec {
    pub fn entity(&self) -> &str {
        &self.config.entity
    }
    pub fn kind(&self) -> TableKind {
        self.config.kind
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
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn split_name(table: &str) -> (&str, &str) {
    table.split_once('.').unwrap_or(("public", table))
}

/// Applies pending migrations and (re)installs capture triggers on every configured table;
/// removes rowcast triggers from tables no longer configured. Idempotent.
pub async fn migrate(client: &mut Client, config: &Config) -> Result<Vec<String>, SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await?;
    let mut report = Vec::new();
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS rowcast;
         CREATE TABLE IF NOT EXISTS rowcast.migrations (
            version int PRIMARY KEY, name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM rowcast.migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO rowcast.migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        report.push(format!("applied migration {version:03} {name}"));
    }
    let (catalog, mut problems) = resolve(&tx, &config.tables).await?;
    let mode = config.capture.mode;
    let mut publication = Vec::new();
    if mode == CaptureMode::Logical {
        problems.extend(logical_prerequisites(&tx).await?);
        for spec in &catalog.tables {
            match published_columns(&tx, spec).await? {
                Ok(cols) => publication.push(cols),
                Err(problem) => problems.push(problem),
            }
        }
    }
    if !problems.is_empty() {
        return Err(SchemaError::Mismatch(problems));
    }
    for spec in &catalog.tables {
        tx.batch_execute(&trigger_sql(spec, mode)).await?;
        report.push(match mode {
            CaptureMode::Triggers => format!("capture trigger installed on {}", spec.name),
            CaptureMode::Logical => format!(
                "delete/key-change trigger installed on {} (logical capture)",
                spec.name
            ),
        });
    }
    if mode == CaptureMode::Logical {
        report.push(set_publication(&tx, &config.capture.publication, &publication).await?);
    }
    let configured: Vec<String> = catalog.tables.iter().map(|t| t.name.clone()).collect();
    let stale = tx
        .query(
            "SELECT n.nspname || '.' || c.relname
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE t.tgname = $1 AND NOT (n.nspname || '.' || c.relname = ANY($2))",
            &[&TRIGGER, &configured],
        )
        .await?;
    for row in stale {
        let name: String = row.get(0);
        let (schema, table) = split_name(&name);
        tx.batch_execute(&format!(
            "DROP TRIGGER IF EXISTS {TRIGGER} ON {}.{}; DROP FUNCTION IF EXISTS rowcast.{}()",
            quote_ident(schema),
            quote_ident(table),
            quote_ident(&function_name(&name)),
        ))
        .await?;
        report.push(format!(
            "capture trigger removed from {name} (no longer configured)"
        ));
    }
    tx.commit().await?;
    match mode {
        CaptureMode::Logical => {
            if let Some(line) = create_slot(client, &config.capture.slot).await? {
                report.push(line);
            }
        }
        CaptureMode::Triggers => report
            .extend(drop_logical(client, &config.capture.slot, &config.capture.publication).await?),
    }
    Ok(report)
}

/// What logical capture needs from the server and from rowcast's role.
async fn logical_prerequisites<C: GenericClient>(
    client: &C,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut problems = Vec::new();
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('server_version_num')::int,
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await?;
    let (wal_level, version, replication): (String, i32, bool) =
        (row.get(0), row.get(1), row.get(2));
    if wal_level != "logical" {
        problems.push(format!(
            "capture.mode = \"logical\" needs wal_level = logical (it is {wal_level}): ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL"
        ));
    }
    if version < 150000 {
        problems.push(
            "capture.mode = \"logical\" needs PostgreSQL 15 or newer (publication column lists)"
                .into(),
        );
    }
    if !replication {
        problems.push(
            "capture.mode = \"logical\" needs a role with REPLICATION: ALTER ROLE <role> REPLICATION"
                .into(),
        );
    }
    Ok(problems)
}

/// The publication entry for one table: only the key and replica-identity columns are
/// published (rowcast loads the rows itself), so hidden columns never leave the server.
/// A table with no replica identity would refuse UPDATE and DELETE once published: that
/// is a problem to report, not something to create.
async fn published_columns<C: GenericClient>(
    client: &C,
    spec: &TableSpec,
) -> Result<Result<String, String>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT c.relreplident::text,
                    COALESCE((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                                FROM pg_index i
                                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                               WHERE i.indrelid = c.oid
                                 AND ((c.relreplident = 'i' AND i.indisreplident)
                                   OR (c.relreplident = 'd' AND i.indisprimary))), '{}')
               FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&spec.quoted],
        )
        .await?;
    let ident: String = row.get(0);
    let mut cols: Vec<String> = row.get(1);
    if ident == "f" {
        return Ok(Ok(spec.quoted.clone()));
    }
    if cols.is_empty() {
        return Ok(Err(format!(
            "table {}: logical capture needs a replica identity (a primary key, or REPLICA IDENTITY USING INDEX): without one, UPDATE and DELETE on a published table fail",
            spec.name
        )));
    }
    for k in &spec.key {
        if !cols.contains(&k.name) {
            cols.push(k.name.clone());
        }
    }
    let cols: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
    Ok(Ok(format!("{} ({})", spec.quoted, cols.join(", "))))
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug)]
pub struct Slot {
    /// Its output plugin; `None` for a physical slot.
    pub plugin: Option<String>,
    /// A connection streams it right now.
    pub active: bool,
}

/// The replication slot `name`, if it exists.
pub async fn slot<C: GenericClient>(
    client: &C,
    name: &str,
) -> Result<Option<Slot>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT plugin::text, active FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await?
        .map(|r| Slot {
            plugin: r.get(0),
            active: r.get(1),
        }))
}

async fn publication_exists<C: GenericClient>(
    client: &C,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await?
        .is_some())
}

/// Creates the publication or sets its tables.
async fn set_publication<C: GenericClient>(
    client: &C,
    name: &str,
    tables: &[String],
) -> Result<String, tokio_postgres::Error> {
    let exists = publication_exists(client, name).await?;
    let quoted = quote_ident(name);
    let list = tables.join(", ");
    let publish = "WITH (publish = 'insert, update, delete')";
    if tables.is_empty() {
        if exists {
            client
                .batch_execute(&format!("DROP PUBLICATION {quoted}"))
                .await?;
        }
        return Ok(format!("publication {name}: no tables"));
    }
    if exists {
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {quoted} SET TABLE {list}; ALTER PUBLICATION {quoted} SET (publish = 'insert, update, delete')"
            ))
            .await?;
        Ok(format!("publication {name} set to {list}"))
    } else {
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {quoted} FOR TABLE {list} {publish}"
            ))
            .await?;
        Ok(format!("publication {name} created for {list}"))
    }
}

/// Creates the logical replication slot if it does not exist (outside any transaction:
/// PostgreSQL refuses to create one in a transaction that wrote). Changes are kept for
/// rowcast from this moment on.
async fn create_slot(client: &Client, slot: &str) -> Result<Option<String>, tokio_postgres::Error> {
    if self::slot(client, slot).await?.is_some() {
        return Ok(None);
    }
    match client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
    {
        Ok(_) => Ok(Some(format!("replication slot {slot} created"))),
        // Another migrate created it a moment ago.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// In trigger mode, removes the slot and publication of an earlier logical setup: an
/// unused slot keeps every WAL segment from its position on, forever.
async fn drop_logical(
    client: &Client,
    slot: &str,
    publication: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut report = Vec::new();
    let logical = self::slot(client, slot)
        .await?
        .filter(|s| s.plugin.as_deref() == Some("pgoutput"));
    match logical.map(|s| s.active) {
        Some(false) => {
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await?;
            report.push(format!(
                "replication slot {slot} dropped (capture.mode = \"triggers\")"
            ));
        }
        Some(true) => report.push(format!(
            "replication slot {slot} is still in use by a logical-mode rowcast: drop it with SELECT pg_drop_replication_slot('{slot}') once that has stopped"
        )),
        None => {}
    }
    if publication_exists(client, publication).await? {
        client
            .batch_execute(&format!("DROP PUBLICATION {}", quote_ident(publication)))
            .await?;
        report.push(format!(
            "publication {publication} dropped (capture.mode = \"triggers\")"
        ));
    }
    Ok(report)
}

fn function_name(table: &str) -> String {
    format!("capture_{}", table.replace('.', "__"))
}

/// The trigger function for one table, generated with its key and hidden columns written
/// in: no dynamic SQL, no whole-row JSON except for deletes, and `pg_notify` only while a
/// consumer is parked (see `capture`). Every name is schema-qualified because the function
/// is `SECURITY DEFINER` (the application's role needs no rights on the rowcast schema).
///
/// In logical mode the WAL carries inserts and updates; the trigger fires only on deletes
/// and key-changing updates, to put the old row (hidden columns removed) into the stream
/// as a transactional logical message.
pub fn trigger_sql(spec: &TableSpec, mode: CaptureMode) -> String {
    let func = format!("rowcast.{}", quote_ident(&function_name(&spec.name)));
    let key = |rec: &str| {
        let cols: Vec<String> = spec
            .key
            .iter()
            .map(|k| format!("{rec}.{}", quote_ident(&k.name)))
            .collect();
        cols.join(", ")
    };
    let hidden: Vec<String> = spec
        .config
        .hidden
        .iter()
        .map(|h| h.replace('\'', "''"))
        .collect();
    let old_row = if hidden.is_empty() {
        "pg_catalog.to_jsonb(OLD)".to_string()
    } else {
        format!(
            "pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.-) '{{{}}}'::text[]",
            hidden.join(",")
        )
    };
    let name = spec.name.replace('\'', "''");
    if mode == CaptureMode::Logical {
        let key_cols: Vec<String> = spec.key.iter().map(|k| quote_ident(&k.name)).collect();
        return format!(
            r#"
CREATE OR REPLACE FUNCTION {func}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $rowcast$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF ROW({old_key}) IS NOT DISTINCT FROM ROW({new_key}) THEN
      RETURN NULL;
    END IF;
  END IF;
  PERFORM pg_catalog.pg_logical_emit_message(true, '{prefix}',
    pg_catalog.jsonb_build_object('t', '{name}', 'old', {old_row})::text);
  RETURN NULL;
END
$rowcast$;
REVOKE ALL ON FUNCTION {func}() FROM PUBLIC;
CREATE OR REPLACE TRIGGER {TRIGGER} AFTER DELETE OR UPDATE OF {key_cols} ON {table}
  FOR EACH ROW EXECUTE FUNCTION {func}();
"#,
            old_key = key("OLD"),
            new_key = key("NEW"),
            key_cols = key_cols.join(", "),
            table = spec.quoted,
            prefix = crate::capture::logical::MESSAGE_PREFIX,
        );
    }
    format!(
        r#"
CREATE OR REPLACE FUNCTION {func}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $rowcast$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF ROW({old_key}) IS DISTINCT FROM ROW({new_key}) THEN
      INSERT INTO rowcast.changes (op, tbl, pk, old)
      VALUES ('d', '{name}', pg_catalog.jsonb_build_array({old_key}), {old_row});
      INSERT INTO rowcast.changes (op, tbl, pk)
      VALUES ('i', '{name}', pg_catalog.jsonb_build_array({new_key}));
    ELSE
      INSERT INTO rowcast.changes (op, tbl, pk)
      VALUES ('u', '{name}', pg_catalog.jsonb_build_array({new_key}));
    END IF;
  ELSIF TG_OP = 'INSERT' THEN
    INSERT INTO rowcast.changes (op, tbl, pk)
    VALUES ('i', '{name}', pg_catalog.jsonb_build_array({new_key}));
  ELSE
    INSERT INTO rowcast.changes (op, tbl, pk, old)
    VALUES ('d', '{name}', pg_catalog.jsonb_build_array({old_key}), {old_row});
  END IF;
  IF pg_catalog.pg_sequence_last_value('rowcast.parked_until'::pg_catalog.regclass)
       OPERATOR(pg_catalog.>) pg_catalog.date_part('epoch', pg_catalog.now()) THEN
    PERFORM pg_catalog.pg_notify('{WAKE_CHANNEL}', '');
  END IF;
  RETURN NULL;
END
$rowcast$;
REVOKE ALL ON FUNCTION {func}() FROM PUBLIC;
CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION {func}();
"#,
        old_key = key("OLD"),
        new_key = key("NEW"),
        table = spec.quoted,
    )
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
        for r in tc.room.iter().chain(&tc.rooms) {
            if let Ok(t) = crate::route::RoomTemplate::parse(r) {
                for c in t.columns() {
                    needed.push(("room column", c.to_string()));
                }
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
                "table {name}: rowcast's database role lacks SELECT (GRANT SELECT ON {quoted} TO <role>)"
            ));
            ok = false;
        }
        if ok {
            let spec = TableSpec {
                config: tc.clone(),
                name: name.clone(),
                quoted,
                key,
                columns: columns.into_iter().map(|(n, _)| n).collect(),
            };
            catalog.push(spec);
        }
    }
    Ok((catalog, problems))
}

/// `rowcast check`: every problem between the configuration and the live database.
pub async fn check(client: &Client, config: &Config) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut problems = Vec::new();
    let schema_ok: bool = client
        .query_one("SELECT to_regclass('rowcast.migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !schema_ok {
        problems.push("rowcast's schema is not installed: run `rowcast migrate`".to_string());
    } else {
        let applied: Vec<i32> = client
            .query("SELECT version FROM rowcast.migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (v, name, _) in MIGRATIONS {
            if !applied.contains(v) {
                problems.push(format!(
                    "migration {v:03} {name} is not applied: run `rowcast migrate`"
                ));
            }
        }
        for (table, privilege) in [
            ("rowcast.changes", "SELECT"),
            ("rowcast.changes", "DELETE"),
            ("rowcast.cursors", "UPDATE"),
            ("rowcast.parked_until", "UPDATE"),
        ] {
            let ok: bool = client
                .query_one(
                    "SELECT has_table_privilege($1::text::regclass, $2)",
                    &[&table, &privilege],
                )
                .await?
                .get(0);
            if !ok {
                problems.push(format!(
                    "rowcast's database role lacks {privilege} on {table}"
                ));
            }
        }
    }
    let (catalog, table_problems) = resolve(client, &config.tables).await?;
    problems.extend(table_problems);
    if config.capture.mode == CaptureMode::Logical {
        problems.extend(check_logical(client, config, &catalog).await?);
    }
    for spec in &catalog.tables {
        let (schema, table) = split_name(&spec.name);
        let row = client
            .query_opt(
                "SELECT t.tgenabled::text, p.prosrc FROM pg_trigger t
                   JOIN pg_class c ON c.oid = t.tgrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_proc p ON p.oid = t.tgfoid
                  WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname = $3",
                &[&schema, &table, &TRIGGER],
            )
            .await?;
        match row {
            None => problems.push(format!(
                "table {}: capture trigger is missing: run `rowcast migrate`",
                spec.name
            )),
            Some(r) => {
                let enabled: String = r.get(0);
                let body: String = r.get(1);
                if enabled == "D" {
                    problems.push(format!("table {}: capture trigger is disabled", spec.name));
                }
                let expected = trigger_sql(spec, config.capture.mode);
                if !expected.contains(body.trim()) {
                    problems.push(format!(
                        "table {}: capture trigger is out of date (key or hidden columns changed): run `rowcast migrate`",
                        spec.name
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// `check` for logical capture: server settings, role, slot, publication and its tables.
async fn check_logical(
    client: &Client,
    config: &Config,
    catalog: &Catalog,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut problems = logical_prerequisites(client).await?;
    let (slot, publication) = (&config.capture.slot, &config.capture.publication);
    match self::slot(client, slot).await?.map(|s| s.plugin) {
        None => problems.push(format!(
            "replication slot {slot} does not exist: run `rowcast migrate`"
        )),
        Some(Some(p)) if p == "pgoutput" => {}
        Some(p) => problems.push(format!(
            "replication slot {slot} uses plugin {} instead of pgoutput: drop it, then run `rowcast migrate`",
            p.unwrap_or_else(|| "none (a physical slot)".into())
        )),
    }
    let published: Option<Vec<String>> = client
        .query_opt(
            "SELECT ARRAY(SELECT schemaname || '.' || tablename FROM pg_publication_tables
                           WHERE pubname = $1)
               FROM pg_publication WHERE pubname = $1",
            &[publication],
        )
        .await?
        .map(|r| r.get(0));
    match published {
        None => problems.push(format!(
            "publication {publication} does not exist: run `rowcast migrate`"
        )),
        Some(tables) => {
            for spec in &catalog.tables {
                if !tables.contains(&spec.name) {
                    problems.push(format!(
                        "table {}: not in publication {publication}: run `rowcast migrate`",
                        spec.name
                    ));
                }
            }
        }
    }
    let positions: bool = client
        .query_one(
            "SELECT to_regclass('rowcast.slot_positions') IS NOT NULL
                AND has_table_privilege('rowcast.slot_positions', 'UPDATE')
                AND has_table_privilege('rowcast.changes', 'INSERT')",
            &[],
        )
        .await?
        .get(0);
    if !positions {
        problems.push(
            "rowcast's database role lacks INSERT on rowcast.changes or UPDATE on rowcast.slot_positions (or migration 003 is missing): run `rowcast migrate` as the schema owner".into(),
        );
    }
    Ok(problems)
}
