//! rowcast's own schema and the capture set-up: `migrate` and `check`.
//!
//! Migrations are numbered files in `sql/`, embedded in the binary and applied in one
//! transaction under an advisory lock, so concurrent `rowcast migrate` runs (many replicas
//! starting at once) serialize and all succeed. The same transaction (re)installs the
//! capture triggers ([`triggers`]) and, in logical mode, the publication ([`logical`]);
//! the replication slot is created after it commits.

mod check;
mod logical;
mod triggers;

use tokio_postgres::Client;

use crate::capture::{CaptureConfig, CaptureMode};
use crate::catalog::{
    Purpose, TableConfig, TableName, forget_installed, quote_ident, record_installed, resolve,
};
use crate::changelog::MIGRATE_LOCK;

pub use check::check;
pub use triggers::{TRIGGER, trigger_sql};

/// Embedded migrations, applied in order. Never edit one that has shipped: add a new file.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "changes", include_str!("../../sql/001_changes.sql")),
    (2, "webhooks", include_str!("../../sql/002_webhooks.sql")),
    (
        3,
        "slot_positions",
        include_str!("../../sql/003_slot_positions.sql"),
    ),
    (
        4,
        "endpoint_roles",
        include_str!("../../sql/004_endpoint_roles.sql"),
    ),
    (
        5,
        "socketio_sessions",
        include_str!("../../sql/005_socketio_sessions.sql"),
    ),
    (7, "log_data", include_str!("../../sql/007_log_data.sql")),
    (
        8,
        "attempt_private",
        include_str!("../../sql/008_attempt_private.sql"),
    ),
    (
        9,
        "slot_advance",
        include_str!("../../sql/009_slot_advance.sql"),
    ),
    (10, "log_json", include_str!("../../sql/010_log_json.sql")),
    (
        11,
        "log_packed",
        include_str!("../../sql/011_log_packed.sql"),
    ),
];

/// The embedded migrations not applied to the database yet, as `NNN name` (all of them
/// when rowcast's schema is not installed at all).
pub async fn pending<C: tokio_postgres::GenericClient>(
    client: &C,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let installed: bool = client
        .query_one("SELECT to_regclass('rowcast.migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    let applied: Vec<i32> = if installed {
        client
            .query("SELECT version FROM rowcast.migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    Ok(MIGRATIONS
        .iter()
        .filter(|(v, _, _)| !applied.contains(v))
        .map(|(v, name, _)| format!("{v:03} {name}"))
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("the database does not match the configuration:\n  - {}", .0.join("\n  - "))]
    Mismatch(Vec<String>),
}

/// Applies pending migrations and (re)installs capture triggers on every configured table;
/// removes rowcast triggers from tables no longer configured. Idempotent.
pub async fn migrate(
    client: &mut Client,
    tables: &[TableConfig],
    capture: &CaptureConfig,
) -> Result<Vec<String>, MigrateError> {
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
    let (catalog, mut problems) = resolve(&tx, tables, Purpose::Install).await?;
    let mode = capture.mode;
    let mut publication = Vec::new();
    if mode == CaptureMode::Logical {
        problems.extend(logical::logical_prerequisites(&tx).await?);
        for spec in &catalog.tables {
            match logical::published_columns(&tx, spec).await? {
                Ok(cols) => publication.push(cols),
                Err(problem) => problems.push(problem),
            }
        }
    }
    if !problems.is_empty() {
        return Err(MigrateError::Mismatch(problems));
    }
    for spec in &catalog.tables {
        tx.batch_execute(&trigger_sql(spec, mode)).await?;
        record_installed(&tx, spec).await?;
        report.push(match mode {
            CaptureMode::Triggers => format!("capture trigger installed on {}", spec.name),
            CaptureMode::Logical => format!(
                "delete/key-change trigger installed on {} (logical capture)",
                spec.name
            ),
        });
    }
    if mode == CaptureMode::Logical {
        report.push(logical::set_publication(&tx, &capture.publication, &publication).await?);
    }
    let configured: Vec<String> = catalog.tables.iter().map(|t| t.name.clone()).collect();
    let stale = tx
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE t.tgname = $1 AND NOT (n.nspname || '.' || c.relname = ANY($2))",
            &[&TRIGGER, &configured],
        )
        .await?;
    for row in stale {
        let table = TableName {
            schema: row.get(0),
            table: row.get(1),
        };
        let name = table.to_string();
        tx.batch_execute(&format!(
            "DROP TRIGGER IF EXISTS {TRIGGER} ON {}; DROP FUNCTION IF EXISTS rowcast.{}()",
            table.quoted(),
            quote_ident(&triggers::function_name(&name)),
        ))
        .await?;
        forget_installed(&tx, &name).await?;
        report.push(format!(
            "capture trigger removed from {name} (no longer configured)"
        ));
    }
    tx.commit().await?;
    match mode {
        CaptureMode::Logical => {
            if let Some(line) = logical::create_slot(client, &capture.slot).await? {
                report.push(line);
            }
        }
        CaptureMode::Triggers => {
            report.extend(logical::drop_logical(client, &capture.slot, &capture.publication).await?)
        }
    }
    Ok(report)
}
