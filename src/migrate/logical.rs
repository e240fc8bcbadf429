//! Logical capture's server-side setup: prerequisites, the publication (with column lists)
//! and the replication slot; and their removal when switching back to triggers.

use tokio_postgres::{Client, GenericClient};

use crate::catalog::{TableSpec, quote_ident};
use crate::changelog;

/// What logical capture needs from the server and from rowcast's role.
pub(super) async fn logical_prerequisites<C: GenericClient>(
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

/// The publication entry for one table: every column but the hidden ones (a column list,
/// so hidden columns never leave the server, and columns added later are not published
/// until `migrate` runs again). A table with no replica identity would refuse UPDATE and
/// DELETE once published, and one whose identity is FULL publishes every column: those are
/// problems to report, not something to create.
pub(super) async fn published_columns<C: GenericClient>(
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
    let identity: Vec<String> = row.get(1);
    let hidden = &spec.config.hidden;
    if ident == "f" {
        if hidden.is_empty() {
            return Ok(Ok(spec.quoted.clone()));
        }
        return Ok(Err(format!(
            "table {}: REPLICA IDENTITY FULL publishes every column, hidden ones too: give it a primary key or REPLICA IDENTITY USING INDEX",
            spec.name
        )));
    }
    if identity.is_empty() {
        return Ok(Err(format!(
            "table {}: logical capture needs a replica identity (a primary key, or REPLICA IDENTITY USING INDEX): without one, UPDATE and DELETE on a published table fail",
            spec.name
        )));
    }
    if let Some(c) = identity.iter().find(|c| hidden.contains(c)) {
        return Ok(Err(format!(
            "table {}: hidden column {c:?} is part of the replica identity, which every change publishes",
            spec.name
        )));
    }
    let cols: Vec<String> = spec
        .columns
        .iter()
        .filter(|c| !hidden.contains(c))
        .map(|c| quote_ident(c))
        .collect();
    Ok(Ok(format!("{} ({})", spec.quoted, cols.join(", "))))
}

pub(super) async fn publication_exists<C: GenericClient>(
    client: &C,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await?
        .is_some())
}

/// Creates the publication or sets its tables.
pub(super) async fn set_publication<C: GenericClient>(
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
pub(super) async fn create_slot(
    client: &Client,
    slot: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    if changelog::slot(client, slot).await?.is_some() {
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
pub(super) async fn drop_logical(
    client: &Client,
    slot: &str,
    publication: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut report = Vec::new();
    let logical = changelog::slot(client, slot)
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
