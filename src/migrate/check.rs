//! `rowcast check`: every difference between the configuration and the live database.

use tokio_postgres::Client;

use super::logical::logical_prerequisites;
use super::triggers::{TRIGGER, trigger_sql};
use crate::capture::{CaptureConfig, CaptureMode};
use crate::catalog::{Catalog, Purpose, TableConfig, drift, resolve};
use crate::changelog;

/// `rowcast check`: every problem between the configuration and the live database.
pub async fn check(
    client: &Client,
    tables: &[TableConfig],
    capture: &CaptureConfig,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut problems = Vec::new();
    let schema_ok: bool = client
        .query_one("SELECT to_regclass('rowcast.migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    let pending = super::pending(client).await?;
    if !schema_ok {
        problems.push("rowcast's schema is not installed: run `rowcast migrate`".to_string());
    } else {
        for m in &pending {
            problems.push(format!(
                "migration {m} is not applied: run `rowcast migrate`"
            ));
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
    let (catalog, table_problems) = resolve(client, tables, Purpose::Install).await?;
    problems.extend(table_problems);
    if capture.mode == CaptureMode::Logical {
        problems.extend(check_logical(client, capture, &catalog).await?);
    }
    if schema_ok && pending.is_empty() {
        // Compared as rowcast serves them: a table with a renamed hidden column is withheld.
        let (serving, _) = resolve(client, tables, Purpose::Serve).await?;
        for (table, reason) in drift(client, &serving).await? {
            problems.push(format!("table {table}: rows withheld: {reason}"));
        }
    }
    for spec in &catalog.tables {
        let row = client
            .query_opt(
                "SELECT t.tgenabled::text, p.prosrc FROM pg_trigger t
                   JOIN pg_proc p ON p.oid = t.tgfoid
                  WHERE t.tgrelid = $1::text::regclass AND t.tgname = $2",
                &[&spec.quoted, &TRIGGER],
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
                let expected = trigger_sql(spec, capture.mode);
                if !expected.contains(body.trim()) {
                    problems.push(format!(
                        "table {}: capture trigger is out of date (key, hidden or audience columns changed): run `rowcast migrate`",
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
    capture: &CaptureConfig,
    catalog: &Catalog,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut problems = logical_prerequisites(client).await?;
    let (slot, publication) = (&capture.slot, &capture.publication);
    match changelog::slot(client, slot).await?.map(|s| s.plugin) {
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
