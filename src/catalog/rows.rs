//! Reading a captured table's rows by key: the one way rowcast addresses an application
//! row (changes written before the log carried rows, and values logical decoding does not
//! carry).

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use super::{TableSpec, quote_ident, scalar_text};

/// `SELECT <select> FROM <table> t` for the rows whose keys are in `pks` (JSON arrays of
/// key values). `select` is SQL over `t` and may use `$1`, bound to `first` when given.
pub async fn by_keys<C: GenericClient>(
    client: &C,
    spec: &TableSpec,
    select: &str,
    first: Option<&(dyn ToSql + Sync)>,
    pks: &[&Value],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let mut columns: Vec<Vec<String>> = vec![Vec::with_capacity(pks.len()); spec.key.len()];
    for pk in pks {
        let Some(vals) = pk.as_array() else { continue };
        for (i, col) in columns.iter_mut().enumerate() {
            col.push(vals.get(i).and_then(scalar_text).unwrap_or_default());
        }
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = first.into_iter().collect();
    let offset = params.len() + 1;
    for c in &columns {
        params.push(c);
    }
    client
        .query(&by_keys_sql(spec, select, offset), &params)
        .await
}

/// The query of [`by_keys`], key arrays from parameter `$offset` on.
fn by_keys_sql(spec: &TableSpec, select: &str, offset: usize) -> String {
    if let [k] = spec.key.as_slice() {
        return format!(
            "SELECT {select} FROM {} t WHERE t.{} = ANY(${offset}::text[]::{}[])",
            spec.quoted,
            quote_ident(&k.name),
            k.sql_type
        );
    }
    let casts: Vec<String> = spec
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("${}::text[]::{}[]", i + offset, k.sql_type))
        .collect();
    let names: Vec<String> = (0..spec.key.len()).map(|i| format!("k{i}")).collect();
    let on: Vec<String> = spec
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("t.{} = k.k{i}", quote_ident(&k.name)))
        .collect();
    format!(
        "SELECT {select} FROM {} t JOIN unnest({}) AS k({}) ON {}",
        spec.quoted,
        casts.join(", "),
        names.join(", "),
        on.join(" AND ")
    )
}
