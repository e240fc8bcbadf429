//! Hidden columns fail closed: what `rowcast migrate` installed on each captured table (its
//! columns, visible and hidden, in `rowcast.tables`) against the live table and the running
//! configuration. A table whose columns changed since (a hidden column renamed or dropped,
//! a column added or renamed) is *withheld*: the capture triggers and the logical decoder
//! record its changes without their rows, `/readyz` fails naming it, and `rowcast check`
//! fails, until the configuration is updated and `rowcast migrate` runs again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio_postgres::GenericClient;

use super::{Catalog, TableSpec};

/// The tables withheld right now, with the reason. Shared by capture (which keeps it up to
/// date), enrichment (which never loads a withheld table's rows) and `/readyz`.
#[derive(Debug, Default)]
pub struct Withheld(Mutex<BTreeMap<String, String>>);

impl Withheld {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every withheld table with its reason.
    pub fn all(&self) -> BTreeMap<String, String> {
        self.lock().clone()
    }

    /// Replaces the set; logs each table that starts or stops being withheld.
    pub fn replace(&self, now: BTreeMap<String, String>) {
        let mut current = self.lock();
        for (table, reason) in &now {
            if current.get(table) != Some(reason) {
                tracing::error!(table, reason, "withholding the rows of a table");
            }
        }
        for table in current.keys() {
            if !now.contains_key(table) {
                tracing::info!(table, "a withheld table matches what was installed again");
            }
        }
        metrics::gauge!("rowcast_withheld_tables").set(now.len() as f64);
        *current = now;
    }
}

/// Records what `migrate` installs on `spec`'s table: its live columns, and which of them
/// are hidden.
pub async fn record_installed<C: GenericClient>(
    client: &C,
    spec: &TableSpec,
) -> Result<(), tokio_postgres::Error> {
    let hidden = &spec.config.hidden;
    let visible: Vec<&String> = spec
        .columns
        .iter()
        .filter(|c| !hidden.contains(c))
        .collect();
    client
        .execute(
            "INSERT INTO rowcast.tables (tbl, visible, hidden) VALUES ($1, $2, $3)
             ON CONFLICT (tbl) DO UPDATE
                SET visible = EXCLUDED.visible, hidden = EXCLUDED.hidden, installed_at = now()",
            &[&spec.name, &visible, hidden],
        )
        .await?;
    Ok(())
}

/// The visible columns `migrate` installed, by table.
pub async fn installed_visible<C: GenericClient>(
    client: &C,
) -> Result<HashMap<String, Vec<String>>, tokio_postgres::Error> {
    Ok(client
        .query("SELECT tbl, visible FROM rowcast.tables", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Forgets a table `migrate` no longer captures.
pub async fn forget_installed<C: GenericClient>(
    client: &C,
    table: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute("DELETE FROM rowcast.tables WHERE tbl = $1", &[&table])
        .await?;
    Ok(())
}

/// Every table of `catalog` whose live columns or configured hidden columns differ from
/// what `migrate` installed, with the reason.
pub async fn drift<C: GenericClient>(
    client: &C,
    catalog: &Catalog,
) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    let names: Vec<&str> = catalog.tables.iter().map(|t| t.name.as_str()).collect();
    let quoted: Vec<&str> = catalog.tables.iter().map(|t| t.quoted.as_str()).collect();
    let rows = client
        .query(
            "SELECT t.name, i.visible, i.hidden,
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                           WHERE a.attrelid = to_regclass(t.quoted) AND a.attnum > 0
                             AND NOT a.attisdropped ORDER BY a.attnum)
               FROM unnest($1::text[], $2::text[]) AS t(name, quoted)
               LEFT JOIN rowcast.tables i ON i.tbl = t.name",
            &[&names, &quoted],
        )
        .await?;
    let mut out = BTreeMap::new();
    for row in rows {
        let name: String = row.get(0);
        let Some(spec) = catalog.by_name(&name) else {
            continue;
        };
        let installed: Option<(Vec<String>, Vec<String>)> = row
            .get::<_, Option<Vec<String>>>(1)
            .zip(row.get::<_, Option<Vec<String>>>(2));
        let live: Vec<String> = row.get(3);
        if let Some(reason) = compare(spec, installed.as_ref(), &live) {
            out.insert(name, reason);
        }
    }
    Ok(out)
}

/// Why a table with `installed` (visible, hidden) and `live` columns is withheld, if it is.
fn compare(
    spec: &TableSpec,
    installed: Option<&(Vec<String>, Vec<String>)>,
    live: &[String],
) -> Option<String> {
    let Some((visible, hidden)) = installed else {
        return Some(
            "not installed by this version's `rowcast migrate`: run `rowcast migrate`".into(),
        );
    };
    let mut configured = spec.config.hidden.clone();
    let mut installed_hidden = hidden.clone();
    configured.sort();
    installed_hidden.sort();
    if configured != installed_hidden {
        return Some(format!(
            "the configuration hides {configured:?} but `rowcast migrate` installed {installed_hidden:?}: run `rowcast migrate` with this configuration, then restart rowcast"
        ));
    }
    if let Some(h) = hidden.iter().find(|h| !live.contains(h)) {
        return Some(format!(
            "hidden column {h:?} is missing from the table (renamed or dropped): its rows are withheld until the configuration names the column as it is now and `rowcast migrate` runs"
        ));
    }
    if let Some(c) = live
        .iter()
        .find(|c| !visible.contains(c) && !hidden.contains(c))
    {
        return Some(format!(
            "column {c:?} was added or renamed since `rowcast migrate`: its rows are withheld until `rowcast migrate` runs (list the column in hidden if it must never leave the database)"
        ));
    }
    None
}
